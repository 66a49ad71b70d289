// The coffer-agent program runs what a manager assigns: an in-process node port stands for the
// manager and sends the dispatcher's own assignment messages; the agent runs real runc
// containers with their secrets. Runs as root.
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <boost/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <sstream>

#include "coffer/agent/image_store.h"
#include "coffer/agent/runner.h"
#include "coffer/base/log.h"
#include "coffer/base/mount.h"
#include "coffer/base/process.h"
#include "coffer/crypto/encoding.h"
#include "coffer/crypto/random.h"
#include "coffer/manager/dispatcher.h"
#include "coffer/nodeconn/server.h"
#include "coffer/nodeproto/session.h"
#include "coffer/pki/ca.h"
#include "coffer/pki/node_key.h"
#include "coffer/pki/token.h"
#include "harness.h"
#include "test_node_port.h"

using namespace coffer;
using namespace std::chrono_literals;
namespace json = boost::json;

namespace {

constexpr auto deadline = 30s;

std::string str(const crypto::SecureBuffer& b) {
    return std::string(b.data(), b.data() + b.size());
}

// A directory under /var/tmp (overlay layers need a real filesystem), unmounted below and
// removed on destruction, also when a test fails.

// The manager's node port: lets workers join, records what nodes send.
class Manager : public test::TestNodePort {
  public:
    using TestNodePort::send;
    bool send(const manager::AssignmentMessage& m) { return send(m.to_json()); }
};

manager::AssignmentChange secret(std::string id, std::string name, std::string_view bytes) {
    manager::AssignmentChange c;
    c.is_secret = true;
    c.id = id;
    c.version = 1;  // what a task without recorded versions holds, as the dispatcher sends it
    c.secret = manager::AssignmentChange::Secret{std::move(id), std::move(name),
                                                 crypto::SecureBuffer::copy_of(bytes)};
    return c;
}

manager::AssignmentChange task(std::string id, std::vector<std::string> command,
                               std::vector<model::SecretReference> secrets = {}) {
    model::Task t;
    t.meta.id = id;
    t.service_id = "svc1";
    t.slot = 1;
    t.spec.container.image = "busybox";
    t.spec.container.command = std::move(command);
    t.spec.container.stop_grace_period = 500'000'000;  // sleep as pid 1 ignores SIGTERM
    t.spec.container.secrets = std::move(secrets);
    manager::AssignmentChange c;
    c.id = std::move(id);
    c.task = std::move(t);
    return c;
}

manager::AssignmentChange removal(std::string id, bool is_secret) {
    manager::AssignmentChange c;
    c.action = manager::AssignmentChange::Action::remove;
    c.is_secret = is_secret;
    c.id = std::move(id);
    if (is_secret) c.version = 1;  // as secret() sends it
    return c;
}

manager::AssignmentMessage message(bool complete, std::uint64_t seq,
                                   std::vector<manager::AssignmentChange> changes) {
    manager::AssignmentMessage m;
    m.complete = complete;
    m.sequence = seq;
    m.changes = std::move(changes);
    return m;
}

// A task id unique across runs (cgroups are host-wide).
std::string task_id(std::string_view what) {
    return fmt::format("{}-{}", what, crypto::random_base36(8, 12));
}

bool has_secret_mount(const std::string& pid) {
    for (auto& m : read_mountinfo(pid))
        if (m.source == "coffer-secrets") return true;
    return false;
}

class AgentProgram : public ::testing::Test {
  protected:
    void SetUp() override {
        program = test::env_or("COFFER_AGENT", "");
        if (program.empty()) GTEST_SKIP() << "COFFER_AGENT is not set";
        if (::geteuid() != 0) GTEST_SKIP() << "needs root (containers, mounts)";
        crypto::init();
        manager = std::make_unique<Manager>();
    }
    void TearDown() override {
        if (agent.running()) {
            agent.signal(SIGTERM);
            if (!agent.wait_for(deadline)) agent = Child();  // SIGKILL and reap
        }
        // Whatever a failed test left: containers, mounts, cgroups, bundles.
        if (!program.empty() && ::geteuid() == 0)
            (void)run_command({program, "--data-dir", data(), "--run-dir", run(), "cleanup"});
        manager.reset();
    }

    std::string data() const { return work.path() + "/data"; }
    std::string run() const { return work.path() + "/run"; }

    void import_images() {
        auto layout = work.path() + "/layout";
        auto r = run_command(
            {test::env_or("COFFER_MAKE_TEST_IMAGES", "tests/integration/make-test-images"),
             layout});
        ASSERT_TRUE(r.ok()) << r.describe();
        agent::ImageStore store(data() + "/images");
        auto imported = store.import(layout);
        ASSERT_TRUE(imported) << imported.error().message;
    }

    void start_agent(std::vector<std::string> extra = {}) {
        Child::Options o;
        o.argv = {program,
                  "--data-dir",
                  data(),
                  "--run-dir",
                  run(),
                  "--manager",
                  manager->address(),
                  "--log-level",
                  test::env_or("COFFER_LOG", "warn")};
        o.argv.insert(o.argv.end(), extra.begin(), extra.end());
        o.env = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "COFFER_JOIN_TOKEN=" + manager->token()};
        agent = Child::spawn(o);
        ASSERT_TRUE(test::wait_until([&] { return manager->sessions() == 1; }, deadline));
    }

    int stop_agent() {
        agent.signal(SIGTERM);
        auto status = agent.wait_for(deadline);
        EXPECT_TRUE(status) << "the agent did not exit after SIGTERM";
        return status.value_or(-1);
    }

    std::string logs(std::string_view request, std::string_view task, int tail) {
        EXPECT_TRUE(manager->send(nodeproto::encode(
            nodeproto::LogsRequest{std::string(request), std::string(task),
                                   static_cast<std::uint64_t>(tail), std::nullopt})));
        json::object answer;
        EXPECT_TRUE(test::wait_until(
            [&] {
                for (auto& m : manager->of_type("logs"))
                    if (m.at("request").is_string() && m.at("request").get_string() == request) {
                        answer = m;
                        return true;
                    }
                return false;
            },
            deadline));
        if (auto* e = answer.if_contains("error")) return "error: " + std::string(e->as_string());
        auto bytes = crypto::base64_decode_secure(answer.at("data").as_string());
        return bytes ? str(*bytes) : "bad base64";
    }

    std::string program;
    test::MountDir work;
    std::unique_ptr<Manager> manager;
    Child agent;
};

TEST_F(AgentProgram, RunsAssignedTasksWithTheirSecretsAndStopsThem) {
    import_images();
    start_agent();
    const std::string secret_bytes = "s3cr3t \t value\x01!";
    auto web = task_id("web"), orphan = task_id("orphan");
    std::vector<manager::AssignmentChange> changes;
    changes.push_back(secret("sec1", "db_pass", secret_bytes));
    changes.push_back(
        task(web, {"sh", "-c", "cat /run/secrets/db_pass; echo; echo ready; exec sleep 600"},
             {{"sec1", "db_pass", "", "0", "0", 0400}}));
    // Its secret is never sent: rejected, nothing started.
    changes.push_back(task(orphan, {"true"}, {{"sec-missing", "api_key", "", "0", "0", 0444}}));
    ASSERT_TRUE(manager->send(message(true, 1, std::move(changes))));

    ASSERT_TRUE(test::wait_until([&] { return manager->last_state(web) == "running"; }, deadline))
        << manager->last_state(web) << " " << manager->last_status(web).err;
    ASSERT_TRUE(
        test::wait_until([&] { return manager->last_state(orphan) == "rejected"; }, deadline));
    EXPECT_NE(manager->last_status(orphan).err.find("api_key"), std::string::npos);

    // The first status after the complete set is the resynchronisation: every task, complete:true.
    auto statuses = manager->status_messages();
    ASSERT_FALSE(statuses.empty());
    EXPECT_TRUE(statuses.front().complete);
    EXPECT_EQ(statuses.front().statuses.size(), 2u);
    // The states only move forward, from preparing to running.
    auto states = manager->states(web);
    EXPECT_EQ(states.front(), "preparing");
    EXPECT_TRUE(std::is_sorted(
        states.begin(), states.end(), [](const std::string& a, const std::string& b) {
            auto rank = [](const std::string& s) {
                return s == "preparing" ? 0 : s == "starting" ? 1 : s == "running" ? 2 : 3;
            };
            return rank(a) < rank(b);
        }));
    auto running = manager->last_status(web);
    ASSERT_TRUE(running.container);
    EXPECT_GT(running.container->pid, 0);
    EXPECT_EQ(running.container->container_id, web);

    // The secret's exact bytes, as the task read them, through a logs request.
    ASSERT_TRUE(test::wait_until(
        [&] { return logs(fmt::format("r{}", ::rand()), web, 0).ends_with("ready\n"); }, deadline));
    EXPECT_EQ(logs("all", web, 0), secret_bytes + "\nready\n");
    EXPECT_EQ(logs("tail1", web, 1), "ready\n");
    EXPECT_EQ(logs("unknown", "nosuchtask", 0).rfind("error: ", 0), 0u);

    // The secret mount is in the agent's namespace only.
    auto agent_pid = std::to_string(agent.pid());
    EXPECT_TRUE(has_secret_mount(agent_pid));
    EXPECT_FALSE(has_secret_mount("1"));

    // Removed: stopped with its grace period, reported shutdown, its mount gone.
    ASSERT_TRUE(manager->send(message(false, 2, [&] {
        std::vector<manager::AssignmentChange> c;
        c.push_back(removal(web, false));
        c.push_back(removal(orphan, false));
        c.push_back(removal("sec1", true));
        return c;
    }())));
    ASSERT_TRUE(test::wait_until([&] { return manager->last_state(web) == "shutdown"; }, deadline))
        << manager->last_state(web);
    // Shut down means the secret mount is gone; the bundle follows right after.
    EXPECT_FALSE(has_secret_mount(agent_pid));
    EXPECT_TRUE(test::wait_until([&] { return !std::filesystem::exists(run() + "/tasks/" + web); },
                                 deadline));
    // Its log stays readable for the manager.
    EXPECT_EQ(logs("after", web, 0), secret_bytes + "\nready\n");

    auto status = stop_agent();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

TEST_F(AgentProgram, StopsEveryTaskOnSigtermAndLeavesNothing) {
    import_images();
    start_agent();
    auto a = task_id("a"), b = task_id("b");
    std::vector<manager::AssignmentChange> changes;
    changes.push_back(secret("sec1", "k", "bytes"));
    changes.push_back(task(a, {"sleep", "600"}, {{"sec1", "k", "", "0", "0", 0444}}));
    changes.push_back(task(b, {"sleep", "600"}));
    ASSERT_TRUE(manager->send(message(true, 1, std::move(changes))));
    ASSERT_TRUE(test::wait_until(
        [&] { return manager->last_state(a) == "running" && manager->last_state(b) == "running"; },
        deadline));
    auto status = stop_agent();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
    EXPECT_TRUE(list_dir(run() + "/runtime", true).empty());  // no container state left
    EXPECT_TRUE(list_dir(run() + "/tasks").empty());
    EXPECT_TRUE(mounts_under(work.path()).empty());
    for (auto& h : {"memory", "pids", "cpu", "unified", ""})
        for (auto& id : {a, b})
            EXPECT_FALSE(std::filesystem::exists(
                fmt::format("/sys/fs/cgroup/{}{}/{}", h, agent::Runner::cgroup_parent(run()), id)));
}

TEST_F(AgentProgram, BenchmarkModeRunsNoProcessButWritesTheSecretFiles) {
    start_agent({"--benchmark-noop-executor"});
    std::vector<manager::AssignmentChange> changes;
    changes.push_back(secret("sec1", "k", "bytes"));
    changes.push_back(task("noop-1", {"sleep", "600"}, {{"sec1", "k", "", "0", "0", 0444}}));
    ASSERT_TRUE(manager->send(message(true, 1, std::move(changes))));
    ASSERT_TRUE(
        test::wait_until([&] { return manager->last_state("noop-1") == "running"; }, deadline));
    EXPECT_TRUE(manager->status_messages().front().complete);
    // Light enough for hundreds of agents on one machine: a handful of threads.
    std::map<std::string, std::string> proc;
    std::istringstream proc_status(test::read_file(fmt::format("/proc/{}/status", agent.pid())));
    for (std::string line; std::getline(proc_status, line);)
        if (auto colon = line.find(':'); colon != std::string::npos)
            proc[line.substr(0, colon)] = line.substr(colon + 1);
    RecordProperty("agent_threads", proc["Threads"]);
    RecordProperty("agent_rss_anon", proc["RssAnon"]);
    std::printf("benchmark-mode agent: threads%s, VmRSS%s (anonymous%s, file%s)\n",
                proc["Threads"].c_str(), proc["VmRSS"].c_str(), proc["RssAnon"].c_str(),
                proc["RssFile"].c_str());
    EXPECT_LE(std::stoi(proc["Threads"]), 8);
    // No process and no bundle, but the task's secret file on a tmpfs of its own in the agent's
    // mount namespace (reached through the agent's root), never in the host's table.
    EXPECT_FALSE(std::filesystem::exists(run() + "/tasks/noop-1"));
    const auto files = run() + "/noop-tasks/noop-1";
    const auto in_agent = fmt::format("/proc/{}/root{}", agent.pid(), files);
    EXPECT_EQ(test::read_file(in_agent + "/run/k"), "bytes");
    auto secret_mounts = [&](const std::string& pid) {
        std::vector<std::string> out;
        for (auto& m : read_mountinfo(pid))
            if (m.source == "coffer-secrets") out.push_back(m.mount_point);
        return out;
    };
    EXPECT_EQ(secret_mounts(std::to_string(agent.pid())), std::vector<std::string>{files});
    EXPECT_EQ(secret_mounts("self"), std::vector<std::string>{});
    ASSERT_TRUE(manager->send(message(false, 2, [] {
        std::vector<manager::AssignmentChange> c;
        c.push_back(removal("noop-1", false));
        c.push_back(removal("sec1", true));
        return c;
    }())));
    ASSERT_TRUE(
        test::wait_until([&] { return manager->last_state("noop-1") == "shutdown"; }, deadline));
    EXPECT_EQ(secret_mounts(std::to_string(agent.pid())), std::vector<std::string>{});
    EXPECT_FALSE(std::filesystem::exists(in_agent));
    auto status = stop_agent();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

}  // namespace
