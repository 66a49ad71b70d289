// Services through the whole cluster with real processes (cluster_fixture.h): secrets reach only
// the node whose task uses them, with their exact bytes; updates roll the tasks; logs come back
// through the node port; a killed node's tasks move; a restarted manager or agent leaves no
// duplicate and no orphan.
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>

#include <fmt/format.h>

#include <boost/json.hpp>

#include <cstring>
#include <iterator>
#include <set>
#include <sstream>

#include "cluster_fixture.h"
#include "coffer/net/http.h"

using namespace coffer;
using namespace coffer::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

bool alive(std::int64_t pid) {
    return process_alive(pid);
}
std::int64_t container_pid(const json::object& task) {
    return task_pid(task);
}

std::string id_of(const json::object& o) {
    return std::string(o.at("ID").as_string());
}

// The secret ids a task mounts, from its spec.
std::vector<std::string> task_secret_ids(const json::object& task) {
    std::vector<std::string> ids;
    auto* secrets = task.at("Spec").at("ContainerSpec").as_object().if_contains("Secrets");
    if (secrets && secrets->is_array())
        for (auto& s : secrets->as_array()) ids.emplace_back(s.at("SecretID").as_string());
    return ids;
}

// Mount points of secret tmpfs mounts in a process's mount table.
std::vector<std::string> secret_mounts(int pid) {
    std::vector<std::string> points;
    for (auto& m : mountinfo(pid))
        if (m.source == "coffer-secrets") points.push_back(m.mount_point);
    return points;
}

// Every mount point, in any process on the host, under dir.
std::vector<std::string> mounts_anywhere_under(const fs::path& dir) {
    std::vector<std::string> found;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator("/proc", ec)) {
        auto name = e.path().filename().string();
        if (name.find_first_not_of("0123456789") != std::string::npos) continue;
        for (auto& m : mountinfo(std::stoi(name)))
            if (m.mount_point.starts_with(dir.string() + "/"))
                found.push_back(fmt::format("pid {}: {} ({})", name, m.mount_point, m.source));
    }
    return found;
}

class Cluster : public ClusterTest {
  protected:
    CliResult create_secret(const std::string& name, const std::string& bytes) {
        auto r = cli({"secret", "create", name, "-"}, bytes);
        EXPECT_EQ(r.status, 0) << r.err;
        return r;
    }
    CliResult create_service(const std::string& name, std::vector<std::string> options) {
        std::vector<std::string> args{"service", "create", "--name", name};
        args.insert(args.end(), options.begin(), options.end());
        args.push_back("busybox");
        auto printer = secret_printer();
        args.insert(args.end(), printer.begin(), printer.end());
        auto r = cli(args);
        EXPECT_EQ(r.status, 0) << r.err;
        return r;
    }
    // What the task printed, read through the logs path (API -> node port -> agent).
    std::map<std::string, std::string> printed(const std::string& task) {
        std::map<std::string, std::string> found;
        wait_until(
            [&] {
                auto r = cli({"service", "logs", task});
                found = parse_printer(r.out);
                // Everything the task prints, not a log read while it was still printing.
                return r.status == 0 && found.contains("PRINTED");
            },
            20s);
        found.erase("PRINTED");
        return found;
    }
};

// Each node's task sees exactly its own secret, with its exact bytes, and the
// other node never receives it.
TEST_F(Cluster, ATaskOnANodeReceivesOnlyItsOwnSecrets) {
    auto bytes_a = random_bytes(48), bytes_b = random_bytes(48);
    create_secret("sa", bytes_a);
    create_secret("sb", bytes_b);
    create_service("svc-a", {"--constraint", "node.hostname==node-a", "--secret", "sa"});
    create_service("svc-b", {"--constraint", "node.hostname==node-b", "--secret", "sb"});
    ASSERT_TRUE(wait_converged("svc-a", 1, a_->node_id())) << a_->err();
    ASSERT_TRUE(wait_converged("svc-b", 1, b_->node_id())) << b_->err();
    auto task_a = running("svc-a").at(0), task_b = running("svc-b").at(0);

    // Through `coffer service logs`: the listing and the bytes the task read.
    auto seen_a = printed(id_of(task_a));
    EXPECT_EQ(seen_a["SECRETS"], "sa");
    EXPECT_EQ(seen_a["sa"], hex(bytes_a));
    EXPECT_EQ(seen_a.size(), 2u);
    auto seen_b = printed(id_of(task_b));
    EXPECT_EQ(seen_b["SECRETS"], "sb");
    EXPECT_EQ(seen_b["sb"], hex(bytes_b));
    EXPECT_EQ(seen_b.size(), 2u);
    // The same from the agent's own log file.
    EXPECT_EQ(parse_printer(a_->task_log(id_of(task_a)))["sa"], hex(bytes_a));

    // From outside, through the containers' roots: exactly one file each, exact bytes.
    auto pid_a = container_pid(task_a), pid_b = container_pid(task_b);
    ASSERT_TRUE(alive(pid_a) && alive(pid_b)) << pid_a << " " << pid_b;
    auto files_a = read_dir(fmt::format("/proc/{}/root/run/secrets", pid_a));
    ASSERT_EQ(files_a.size(), 1u);
    EXPECT_TRUE(files_a["sa"] == bytes_a);
    auto files_b = read_dir(fmt::format("/proc/{}/root/run/secrets", pid_b));
    ASSERT_EQ(files_b.size(), 1u);
    EXPECT_TRUE(files_b["sb"] == bytes_b);

    // node-b never had sa. (1) The manager's assignments to node-b are its tasks in
    // assigned..running and the secrets they reference (docs/design.md, "Dispatcher"): none of
    // node-b's tasks references sa.
    auto sa_id = secret_id("sa");
    ASSERT_FALSE(sa_id.empty());
    auto filter = fmt::format(R"({{"node":{{"{}":true}}}})", b_->node_id());
    auto on_b = get("/tasks?filters=" + net::percent_encode(filter));
    ASSERT_TRUE(on_b.is_array());
    ASSERT_FALSE(on_b.as_array().empty());
    for (auto& t : on_b.as_array())
        for (auto& id : task_secret_ids(t.as_object()))
            EXPECT_NE(id, sa_id) << id_of(t.as_object());
    // (2) The agent keeps every secret of its set in its memory while the set holds it: sa's
    // bytes are in node-a's agent (control: the scan finds them) and nowhere in node-b's.
    EXPECT_TRUE(memory_contains(a_->pid(), bytes_a)) << "control: the scan must find a held secret";
    EXPECT_TRUE(memory_contains(b_->pid(), bytes_b));
    EXPECT_FALSE(memory_contains(b_->pid(), bytes_a)) << "node-b's agent holds sa";
    // (3) node-b's mount table: every secret tmpfs is its own task's and holds only sb.
    auto mounts_b = secret_mounts(b_->pid());
    EXPECT_FALSE(mounts_b.empty());
    for (auto& point : mounts_b) {
        EXPECT_NE(point.find(id_of(task_b)), std::string::npos) << point;
        auto files = read_dir(fmt::format("/proc/{}/root{}", b_->pid(), point));
        EXPECT_EQ(files.size(), 1u) << point;
        for (auto& [name, bytes] : files) {
            EXPECT_EQ(name, "sb");
            EXPECT_FALSE(bytes == bytes_a);
        }
    }
    // And the host's table shows no secret mount at all.
    EXPECT_TRUE(secret_mounts(1).empty());
}

// `service update --secret-add/--secret-rm` rolls the task; the new one sees the new set; a
// secret in use cannot be removed.
TEST_F(Cluster, SecretAddAndRmRollTheTaskAndAnInUseSecretIsNotRemoved) {
    auto bytes_1 = random_bytes(32), bytes_2 = random_bytes(40);
    create_secret("s1", bytes_1);
    create_secret("s2", bytes_2);
    create_service("web", {"--constraint", "node.hostname==node-a", "--secret", "s1"});
    ASSERT_TRUE(wait_converged("web", 1, a_->node_id())) << a_->err();
    auto first = running("web").at(0);
    EXPECT_EQ(printed(id_of(first))["SECRETS"], "s1");

    auto update = cli({"service", "update", "--secret-rm", "s1", "--secret-add",
                       "source=s2,target=renamed", "web"});
    ASSERT_EQ(update.status, 0) << update.err;
    ASSERT_TRUE(wait_until(
        [&] {
            auto r = running("web");
            return r.size() == 1 && id_of(r[0]) != id_of(first);
        },
        60s))
        << a_->err();
    ASSERT_TRUE(wait_converged("web", 1, a_->node_id()));
    auto second = running("web").at(0);
    auto seen = printed(id_of(second));
    EXPECT_EQ(seen["SECRETS"], "renamed");
    EXPECT_EQ(seen["renamed"], hex(bytes_2));
    EXPECT_FALSE(seen.contains("s1"));
    auto files = read_dir(fmt::format("/proc/{}/root/run/secrets", container_pid(second)));
    ASSERT_EQ(files.size(), 1u);
    EXPECT_TRUE(files["renamed"] == bytes_2);
    // The old task is gone: its container, and its secret mount from the agent's table.
    EXPECT_TRUE(wait_until([&] { return !alive(container_pid(first)); }));
    for (auto& point : secret_mounts(a_->pid()))
        EXPECT_EQ(point.find(id_of(first)), std::string::npos) << point;
    // s1's bytes left node-a's agent with the last task that used them.
    EXPECT_TRUE(wait_until([&] { return !memory_contains(a_->pid(), bytes_1); }));

    auto in_use = cli({"secret", "rm", "s2"});
    EXPECT_EQ(in_use.status, 1);
    EXPECT_NE(in_use.err.find("secret 's2' is in use by the following service: web"),
              std::string::npos)
        << in_use.err;
    EXPECT_FALSE(secret_id("s2").empty());
    auto unused = cli({"secret", "rm", "s1"});
    EXPECT_EQ(unused.status, 0) << unused.err;

    // Adding a second secret: both appear.
    create_secret("s3", "three");
    ASSERT_EQ(cli({"service", "update", "--secret-add", "s3", "web"}).status, 0);
    ASSERT_TRUE(wait_until(
        [&] {
            auto r = running("web");
            return r.size() == 1 && id_of(r[0]) != id_of(second);
        },
        60s))
        << a_->err();
    auto third = printed(id_of(running("web").at(0)));
    EXPECT_EQ(third["SECRETS"], "renamed s3");
    EXPECT_EQ(third["s3"], hex("three"));
}

// The logs path with the real agent: coffer and, when installed, the docker CLI.
TEST_F(Cluster, ServiceLogsComeFromTheAgentsThroughTheNodePort) {
    create_secret("s", "logged");
    create_service("multi", {"--replicas", "2", "--secret", "s"});
    ASSERT_TRUE(wait_converged("multi", 2)) << a_->err() << b_->err();
    std::set<std::string> nodes;
    for (auto& t : running("multi")) nodes.emplace(t.at("NodeID").as_string());
    EXPECT_EQ(nodes.size(), 2u) << "spread over both nodes";

    // One line per task from each node.
    std::string out;
    ASSERT_TRUE(wait_until(
        [&] {
            auto r = cli({"service", "logs", "multi"});
            out = r.out;
            std::size_t lines = 0;
            for (auto at = out.find("SECRET s 6c6f67676564"); at != std::string::npos;
                 at = out.find("SECRET s 6c6f67676564", at + 1))
                ++lines;
            return r.status == 0 && lines == 2;
        },
        20s))
        << out;

    if (run_program({"sh", "-c", "command -v docker"}).status != 0) {
        fmt::print("docker CLI not installed: docker service logs not checked\n");
        return;
    }
    TempDir config;
    auto docker =
        run_program({"docker", "service", "logs", "multi"}, "",
                    {"DOCKER_HOST=" + daemon_->host(), "DOCKER_CONFIG=" + config.path().string()});
    EXPECT_EQ(docker.status, 0) << docker.err;
    auto text = docker.out + docker.err;
    EXPECT_NE(text.find("SECRET s 6c6f67676564"), std::string::npos) << text;
    EXPECT_NE(text.find("multi.1."), std::string::npos) << text;
    EXPECT_NE(text.find("multi.2."), std::string::npos) << text;
}

// A node killed mid-task: down, and its task placed on the other node.
TEST_F(Cluster, AKilledNodesTasksMoveToTheOtherNode) {
    create_secret("s", "moving");
    create_service("web", {"--replicas", "2", "--secret", "s"});
    ASSERT_TRUE(wait_converged("web", 2)) << a_->err() << b_->err();
    json::object on_a;
    for (auto& t : running("web"))
        if (t.at("NodeID").as_string() == a_->node_id()) on_a = t;
    ASSERT_FALSE(on_a.empty()) << "spread: one task on node-a";
    auto pid = container_pid(on_a);
    ASSERT_TRUE(alive(pid));

    auto killed = std::chrono::steady_clock::now();
    a_->kill9();
    // The node is gone with everything it ran: its containers too.
    auto cleaned = a_->cleanup();
    EXPECT_TRUE(cleaned.ok()) << cleaned.describe();
    EXPECT_TRUE(wait_until([&] { return !alive(pid); }));
    EXPECT_TRUE(mounts_anywhere_under(a_->run).empty());

    ASSERT_TRUE(wait_node_state(a_->node_id(), "down", 20s));
    ASSERT_TRUE(wait_converged("web", 2, b_->node_id())) << b_->err();
    fmt::print("[ figure ] kill9_to_rescheduled_s = {:.2f}\n",
               std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count());
    for (auto& t : tasks("web")) {
        if (id_of(t) == id_of(on_a)) {
            EXPECT_EQ(t.at("DesiredState").as_string(), "shutdown");
        }
    }
    for (auto& t : running("web")) EXPECT_EQ(printed(id_of(t))["s"], hex("moving"));
}

// A manager restart leaves running tasks alone: same tasks, same containers; the cluster
// reconverges.
TEST_F(Cluster, ManagerRestartKeepsTasksRunningAndReconverges) {
    create_secret("s", "kept");
    create_service("web", {"--replicas", "2", "--secret", "s"});
    ASSERT_TRUE(wait_converged("web", 2)) << a_->err() << b_->err();
    std::map<std::string, std::int64_t> before;
    for (auto& t : running("web")) before[id_of(t)] = container_pid(t);

    int st = daemon_->terminate();
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << st;
    start_manager();
    ASSERT_TRUE(wait_node_state(a_->node_id(), "ready", 30s)) << a_->err();
    ASSERT_TRUE(wait_node_state(b_->node_id(), "ready", 30s)) << b_->err();
    ASSERT_TRUE(wait_converged("web", 2));
    // The agents sent their complete status: the same tasks, the same processes.
    std::map<std::string, std::int64_t> after;
    for (auto& t : running("web")) after[id_of(t)] = container_pid(t);
    EXPECT_EQ(after, before);
    for (auto& [id, pid] : before) EXPECT_TRUE(alive(pid)) << id;
    EXPECT_TRUE(a_->running() && b_->running());
    auto ls = cli({"service", "ls"});
    EXPECT_NE(ls.out.find("2/2"), std::string::npos) << ls.out;
    // And the restarted manager keeps scheduling: a new service runs.
    create_service("later", {"--constraint", "node.hostname==node-b"});
    EXPECT_TRUE(wait_converged("later", 1, b_->node_id()));
}

// An agent restart: what it ran is stopped and its mounts gone, the service runs again on it
// with one task for its slot, and nothing of the old task is left anywhere.
TEST_F(Cluster, AgentRestartReconcilesWithoutDuplicatesOrOrphanMounts) {
    create_secret("s", "restarted");
    create_service("web", {"--constraint", "node.hostname==node-a", "--secret", "s"});
    ASSERT_TRUE(wait_converged("web", 1, a_->node_id())) << a_->err();
    auto first = running("web").at(0);
    auto first_pid = container_pid(first);
    ASSERT_FALSE(secret_mounts(a_->pid()).empty());

    auto st = a_->stop();
    ASSERT_TRUE(st) << "the agent did not stop on SIGTERM";
    EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << *st;
    EXPECT_FALSE(alive(first_pid)) << "SIGTERM stops the agent's tasks";
    EXPECT_TRUE(mounts_anywhere_under(a_->run).empty());

    a_->start();  // its stored identity
    ASSERT_TRUE(wait_node_state(a_->node_id(), "ready")) << a_->err();
    ASSERT_TRUE(wait_converged("web", 1, a_->node_id())) << a_->err();
    auto now = running("web").at(0);
    auto pid = container_pid(now);
    ASSERT_TRUE(alive(pid));
    EXPECT_EQ(printed(id_of(now))["s"], hex("restarted"));

    // One task per slot, in the manager and on the node: the agent's table holds the secret
    // mount of the running task only, and no other process on the host has one below the run
    // directory but the agent and that task's container.
    auto mounts = secret_mounts(a_->pid());
    EXPECT_FALSE(mounts.empty());
    for (auto& point : mounts) EXPECT_NE(point.find(id_of(now)), std::string::npos) << point;
    for (auto& line : mounts_anywhere_under(a_->run))
        EXPECT_TRUE(line.starts_with(fmt::format("pid {}:", a_->pid())) ||
                    line.find(id_of(now)) != std::string::npos)
            << line;
    EXPECT_TRUE(secret_mounts(1).empty());
    // Stable: no second task appears for the slot.
    EXPECT_FALSE(wait_until([&] { return running("web").size() != 1; }, 3s));
}

// An agent started before its manager listens (a machine that boots first) keeps trying to
// join and joins once the manager is up; a refusal is not tried again.
TEST_F(Cluster, AnAgentStartedBeforeItsManagerJoinsOnceItListens) {
    auto worker = token();
    int st = daemon_->terminate();
    ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << st;

    auto c_ns = node_namespace("e2c");
    auto early = make_agent(*c_ns, "node-c");
    early->start(worker);
    ASSERT_TRUE(
        wait_until([&] { return early->err().find("trying again") != std::string::npos; }, 30s))
        << early->err();
    EXPECT_TRUE(early->running());
    EXPECT_TRUE(early->node_id().empty());

    start_manager();
    if (HasFatalFailure()) return;
    ASSERT_TRUE(wait_until([&] { return !early->node_id().empty(); }, 30s)) << early->err();
    EXPECT_TRUE(wait_node_state(early->node_id(), "ready")) << early->err();
    EXPECT_EQ(early->err().find(worker), std::string::npos) << "the token is never logged";

    // A token the manager does not take ends the agent at once, without a retry.
    auto bad = worker.substr(0, worker.size() - 4) + "AAAA";
    if (bad == worker) bad = worker.substr(0, worker.size() - 4) + "BBBB";
    NodeAgent refused(*b_ns_, dir_.path() / "node-d", "node-d", listen_);
    refused.start(bad);
    auto ended = refused.exited(30s);
    ASSERT_TRUE(ended) << refused.err();
    EXPECT_TRUE(WIFEXITED(*ended) && WEXITSTATUS(*ended) == 1) << *ended << refused.err();
    EXPECT_EQ(refused.err().find("trying again"), std::string::npos) << refused.err();
}

}  // namespace

// A node tells the manager what it has: the CPUs its agent may run on and the host's memory, as
// `docker node inspect` (or the API) shows them.
TEST_F(Cluster, ANodeReportsItsCpusAndMemory) {
    cpu_set_t set;
    CPU_ZERO(&set);
    ASSERT_EQ(::sched_getaffinity(a_->pid(), sizeof set, &set), 0);
    auto cpus = std::to_string(static_cast<std::int64_t>(CPU_COUNT(&set)) * 1'000'000'000);
    std::string memory;
    std::istringstream meminfo(read_file("/proc/meminfo"));
    for (std::string key, unit; meminfo >> key;) {
        std::int64_t kib = 0;
        meminfo >> kib;
        std::getline(meminfo, unit);
        if (key == "MemTotal:") memory = std::to_string(kib * 1024);
    }
    ASSERT_FALSE(memory.empty());
    auto expected = cpus + " " + memory + "\n";
    std::string shown;
    EXPECT_TRUE(wait_until([&] {
        if (have_docker()) {
            shown = run_program({"docker", "node", "inspect", "--format",
                                 "{{.Description.Resources.NanoCPUs}} "
                                 "{{.Description.Resources.MemoryBytes}}",
                                 "node-a"},
                                "",
                                {"DOCKER_HOST=" + daemon_->host(),
                                 "DOCKER_CONFIG=" + (dir_.path() / "dc").string()})
                        .out;
        } else {
            auto node = get("/nodes/" + a_->node_id());
            if (!node.is_object()) return false;
            const auto& r = node.at("Description").at("Resources");
            shown =
                fmt::format("{} {}\n", r.at("NanoCPUs").as_int64(), r.at("MemoryBytes").as_int64());
        }
        return shown == expected;
    })) << shown
        << " != " << expected;
}

// Configs travel and mount as secrets do: the file is at its target (an absolute path, or under
// / for a relative one), with its bytes, owner and mode, on a read-only mount; the task prints
// what it sees.
TEST_F(Cluster, AConfigIsMountedReadOnlyAtItsTargetWithItsOwnerAndMode) {
    ASSERT_EQ(cli({"config", "create", "app", "-"}, "listen 8080\n").status, 0);
    ASSERT_EQ(cli({"config", "create", "plain", "-"}, "plain-bytes").status, 0);
    auto r = cli({"service", "create", "--name", "conf", "--constraint", "node.hostname==node-a",
                  "--config", "source=app,target=/etc/app.conf,uid=1000,gid=1001,mode=0440",
                  "--config", "plain", "busybox", "sh", "-c",
                  "trap 'exit 0' TERM; "
                  "echo CONTENT $(cat /etc/app.conf); "
                  "echo STAT $(stat -c %u:%g:%a /etc/app.conf); "
                  "echo MOUNT $(grep ' /etc/app.conf ' /proc/self/mountinfo); "
                  "(echo x >> /etc/app.conf) 2>/dev/null && echo WRITE ok || echo WRITE refused; "
                  "echo PLAIN $(cat /plain) $(stat -c %u:%g:%a /plain); "
                  "echo PRINTED; "
                  "while :; do sleep 3600 & wait $!; done"});
    ASSERT_EQ(r.status, 0) << r.err;
    ASSERT_TRUE(wait_converged("conf", 1, a_->node_id())) << a_->err();
    auto task = id_of(running("conf").at(0));

    std::map<std::string, std::string> seen;
    ASSERT_TRUE(wait_until(
        [&] {
            auto logs = cli({"service", "logs", task});
            seen.clear();
            std::istringstream in(logs.out);
            for (std::string line; std::getline(in, line);)
                for (auto key : {"CONTENT", "STAT", "MOUNT", "WRITE", "PLAIN", "PRINTED"})
                    if (auto at = line.find(std::string(key)); at != std::string::npos) {
                        auto rest = line.substr(at + std::strlen(key));
                        seen[key] = rest.empty() ? rest : rest.substr(1);
                        break;
                    }
            return seen.contains("PRINTED");
        },
        20s))
        << a_->task_log(task);
    EXPECT_EQ(seen["CONTENT"], "listen 8080");
    EXPECT_EQ(seen["STAT"], "1000:1001:440");
    EXPECT_EQ(seen["WRITE"], "refused");
    EXPECT_EQ(seen["PLAIN"], "plain-bytes 0:0:444");
    // mountinfo: "<id> <parent> <dev> <root> <mount point> <options> ...": mounted read-only.
    std::istringstream fields(seen["MOUNT"]);
    std::vector<std::string> f{std::istream_iterator<std::string>(fields), {}};
    ASSERT_GE(f.size(), 6u) << seen["MOUNT"];
    EXPECT_EQ(f[4], "/etc/app.conf");
    EXPECT_TRUE(f[5] == "ro" || f[5].starts_with("ro,")) << seen["MOUNT"];

    // From outside, through the container's root: the same bytes.
    auto files = read_dir(fmt::format("/proc/{}/root/etc", container_pid(running("conf").at(0))));
    EXPECT_EQ(files["app.conf"], "listen 8080\n");
    // In use: not removable.
    EXPECT_EQ(cli({"config", "rm", "app"}).status, 1);
    EXPECT_EQ(cli({"service", "rm", "conf"}).status, 0);
}
