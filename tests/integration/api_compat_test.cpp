// The docker CLI's cluster commands against cofferd-test (two registered nodes and fake agents
// that report every assigned task running): rollback, swarm update, the manager as a node, and
// what the commands coffer does not serve print.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <string>
#include <vector>

#include "coffer/net/http_client.h"
#include "harness.h"
#include "hooked_daemon.h"

using namespace coffer;
using namespace coffer::test;
namespace json = boost::json;

namespace {

class ApiCompat : public HookedDaemonTest {
  protected:
    void SetUp() override {
        if (!have_docker()) GTEST_SKIP() << "no docker CLI on this machine";
        start_daemon();
    }

    json::value get(const std::string& target) {
        auto c = net::HttpClient::connect(daemon_->host());
        EXPECT_TRUE(c.ok());
        if (!c.ok()) return nullptr;
        auto r = (*c)->request("GET", target, {});
        EXPECT_TRUE(r.ok());
        if (!r.ok()) return nullptr;
        EXPECT_EQ(r->status, 200) << r->body;
        return json::parse(r->body);
    }
    // The service's tasks the orchestrator still wants running.
    json::array running_tasks(const std::string& service) {
        auto filters =
            json::serialize(json::object{{"service", json::object{{service, true}}},
                                         {"desired-state", json::object{{"running", true}}}});
        std::string escaped;
        for (char ch : filters) {
            if (std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_')
                escaped += ch;
            else
                escaped += fmt::format("%{:02X}", static_cast<unsigned char>(ch));
        }
        auto v = get("/tasks?filters=" + escaped);
        return v.is_array() ? v.as_array() : json::array{};
    }
    // Every running task of the service runs this container spec, and the slots are all filled.
    bool tasks_run(const std::string& service, std::size_t replicas, const std::string& image,
                   const std::string& env, const std::string& arg) {
        auto tasks = running_tasks(service);
        if (tasks.size() != replicas) return false;
        for (const auto& t : tasks) {
            const auto& c = t.at("Spec").at("ContainerSpec").as_object();
            if (t.at("Status").at("State") != "running" || c.at("Image") != image.c_str())
                return false;
            auto* e = c.if_contains("Env");
            if (e == nullptr || e->as_array() != json::array{json::string(env)}) return false;
            auto* a = c.if_contains("Args");
            if (a == nullptr || a->as_array().size() < 2 || a->as_array()[1] != arg.c_str())
                return false;
        }
        return true;
    }
    std::string inspect(const std::string& what, const std::string& format) {
        auto r = docker({"inspect", "--format", format, what});
        EXPECT_EQ(r.status, 0) << r.err;
        return r.out.empty() ? r.out : r.out.substr(0, r.out.size() - 1);
    }
};

TEST_F(ApiCompat, ServiceRollbackRestoresThePreviousSpecInTheTasks) {
    auto created = docker({"service", "create", "--detach", "--no-resolve-image", "--name", "web",
                           "--replicas", "2", "--env", "A=1", "--update-monitor", "200ms",
                           "--rollback-monitor", "200ms", "--rollback-parallelism", "2",
                           "localbusybox:1", "sleep", "3600"});
    ASSERT_EQ(created.status, 0) << created.err;
    ASSERT_TRUE(wait_until([&] { return tasks_run("web", 2, "localbusybox:1", "A=1", "3600"); }));

    auto updated = docker({"service", "update", "--no-resolve-image", "--image", "localbusybox:2",
                           "--env-add", "A=2", "--args", "sleep 7200", "web"});
    ASSERT_EQ(updated.status, 0) << updated.err;
    ASSERT_TRUE(wait_until([&] { return tasks_run("web", 2, "localbusybox:2", "A=2", "7200"); }));

    // The CLI waits for the rollback to converge, as with Swarm.
    auto rolled = docker({"service", "rollback", "web"});
    ASSERT_EQ(rolled.status, 0) << rolled.err;
    EXPECT_NE(rolled.out.find("rollback: manually requested rollback"), std::string::npos)
        << rolled.out;
    EXPECT_NE(rolled.out.find("converged"), std::string::npos) << rolled.out;
    EXPECT_TRUE(tasks_run("web", 2, "localbusybox:1", "A=1", "3600"));
    EXPECT_EQ(inspect("web",
                      "{{.Spec.TaskTemplate.ContainerSpec.Image}} "
                      "{{.Spec.TaskTemplate.ContainerSpec.Env}} "
                      "{{.Spec.TaskTemplate.ContainerSpec.Args}}"),
              "localbusybox:1 [A=1] [sleep 3600]");
    // Swarm keeps the spec rolled away from as PreviousSpec.
    EXPECT_EQ(inspect("web", "{{.PreviousSpec.TaskTemplate.ContainerSpec.Image}}"),
              "localbusybox:2");
    EXPECT_EQ(inspect("web", "{{.UpdateStatus.State}}|{{.UpdateStatus.Message}}"),
              "rollback_completed|rollback completed");
    // The slots' history: old, new, old again.
    auto ps = docker({"service", "ps", "--format", "{{.Image}} {{.DesiredState}}", "--filter",
                      "name=web.1", "web"});
    EXPECT_EQ(lines_of(ps.out),
              (std::vector<std::string>{"localbusybox:1 Running", "localbusybox:2 Shutdown",
                                        "localbusybox:1 Shutdown"}))
        << ps.out;

    // `service update --rollback` sends the same request: back to the other spec.
    auto again = docker({"service", "update", "--rollback", "web"});
    ASSERT_EQ(again.status, 0) << again.err;
    EXPECT_TRUE(tasks_run("web", 2, "localbusybox:2", "A=2", "7200"));
    EXPECT_EQ(inspect("web", "{{.PreviousSpec.TaskTemplate.ContainerSpec.Image}}"),
              "localbusybox:1");
}

TEST_F(ApiCompat, RollbackWithoutAPreviousSpecIsRefused) {
    auto created = docker({"service", "create", "--detach", "--no-resolve-image", "--name", "solo",
                           "localbusybox:1"});
    ASSERT_EQ(created.status, 0) << created.err;
    auto id = created.out.substr(0, created.out.size() - 1);
    auto version = inspect("solo", "{{.Version.Index}}");
    auto r = docker({"service", "rollback", "solo"});
    EXPECT_EQ(r.status, 1);
    EXPECT_EQ(r.err,
              "Error response from daemon: service " + id + " does not have a previous spec\n");
    EXPECT_EQ(inspect("solo", "{{.Version.Index}}"), version);
    EXPECT_EQ(inspect("solo", "{{.UpdateStatus}}"), "<nil>");
}

TEST_F(ApiCompat, SwarmUpdateHonoursTheTaskHistoryLimitAndRefusesWhatCofferCannotSet) {
    EXPECT_EQ(docker({"info", "--format",
                      "{{.Swarm.Cluster.Spec.Orchestration.TaskHistoryRetentionLimit}}"})
                  .out,
              "5\n");
    ASSERT_EQ(docker({"service", "create", "--detach", "--no-resolve-image", "--name", "web",
                      "--update-monitor", "100ms", "localbusybox:1"})
                  .status,
              0);
    // Four tasks in the slot: the first and three forced replacements.
    for (int i = 0; i < 3; ++i) {
        auto r = docker({"service", "update", "--force", "--no-resolve-image", "web"});
        ASSERT_EQ(r.status, 0) << r.err;
    }
    auto slot_tasks = [&] { return lines_of(docker({"service", "ps", "-q", "web"}).out).size(); };
    ASSERT_EQ(slot_tasks(), 4u);

    auto set = docker({"swarm", "update", "--task-history-limit", "2"});
    ASSERT_EQ(set.status, 0) << set.err;
    EXPECT_EQ(set.out, "Swarm updated.\n");
    EXPECT_EQ(docker({"info", "--format",
                      "{{.Swarm.Cluster.Spec.Orchestration.TaskHistoryRetentionLimit}}"})
                  .out,
              "2\n");
    // The ended tasks beyond the limit leave the store.
    EXPECT_TRUE(wait_until([&] { return slot_tasks() == 2u; })) << slot_tasks();
    EXPECT_EQ(
        lines_of(docker({"service", "ps", "--filter", "desired-state=running", "-q", "web"}).out)
            .size(),
        1u);

    auto version = docker({"swarm", "inspect", "--format", "{{.Version.Index}}"}).out;
    for (auto [flag, value, field] :
         {std::tuple{"--dispatcher-heartbeat", "10s", "Dispatcher.HeartbeatPeriod"},
          std::tuple{"--snapshot-interval", "5000", "Raft.SnapshotInterval"},
          std::tuple{"--max-snapshots", "3", "Raft.KeepOldSnapshots"}}) {
        auto r = docker({"swarm", "update", flag, value});
        EXPECT_EQ(r.status, 1) << flag;
        EXPECT_NE(r.err.find(std::string(field) + " cannot be set"), std::string::npos) << r.err;
    }
    // Refused updates changed nothing.
    EXPECT_EQ(docker({"swarm", "inspect", "--format", "{{.Version.Index}}"}).out, version);
    // The values coffer has are accepted as they are.
    auto same = docker({"swarm", "update", "--dispatcher-heartbeat", "2s"});
    EXPECT_EQ(same.status, 0) << same.err;

    // The limit is stored: a restarted cofferd keeps it.
    daemon_.reset();
    start_daemon();
    EXPECT_EQ(docker({"info", "--format",
                      "{{.Swarm.Cluster.Spec.Orchestration.TaskHistoryRetentionLimit}}"})
                  .out,
              "2\n");
}

TEST_F(ApiCompat, TheManagerIsANodeOfTheCluster) {
    auto id = docker({"info", "--format", "{{.Swarm.NodeID}}"}).out;
    ASSERT_EQ(id.size(), 26u) << id;
    id.pop_back();
    EXPECT_EQ(docker({"info", "--format",
                      "{{.Swarm.Nodes}} {{.Swarm.Managers}} {{.Swarm.ControlAvailable}} "
                      "{{.Swarm.NodeAddr}}"})
                  .out,
              "3 1 true 127.0.0.1\n");
    auto cpus = docker({"info", "--format", "{{.NCPU}} {{.MemTotal}}"}).out;
    EXPECT_NE(cpus.substr(0, 2), "0 ") << cpus;
    auto managers = docker({"info", "--format",
                            "{{range .Swarm.RemoteManagers}}{{.NodeID}} "
                            "{{.Addr}}{{end}}"})
                        .out;
    ASSERT_TRUE(managers.starts_with(id + " 127.0.0.1:")) << managers;
    auto addr = managers.substr(id.size() + 1, managers.size() - id.size() - 2);

    EXPECT_EQ(docker({"node", "inspect", "self", "--format",
                      "{{.ID}} {{.Spec.Role}} {{.Spec.Availability}} {{.Status.State}} "
                      "{{.ManagerStatus.Leader}} {{.ManagerStatus.Addr}}"})
                  .out,
              id + " manager drain ready true " + addr + "\n");
    auto ls = docker({"node", "ls", "--format", "{{.Hostname}} {{.Self}} {{.ManagerStatus}}"});
    EXPECT_EQ(lines_of(ls.out).size(), 3u) << ls.out;
    EXPECT_NE(ls.out.find(" true Leader"), std::string::npos) << ls.out;
    EXPECT_NE(ls.out.find("node-a false"), std::string::npos) << ls.out;
    EXPECT_EQ(docker({"node", "ls", "-q", "--filter", "role=manager"}).out, id + "\n");

    auto token = docker({"swarm", "join-token", "-q", "worker"}).out;
    ASSERT_TRUE(token.starts_with("COFFERTKN-1-")) << token;
    auto join = docker({"swarm", "join-token", "worker"});
    EXPECT_EQ(join.status, 0) << join.err;
    EXPECT_EQ(join.out,
              "To add a worker to this swarm, run the following command:\n\n"
              "    docker swarm join --token " +
                  token.substr(0, token.size() - 1) + " " + addr + "\n\n");

    // What cannot apply to cofferd's entry is refused, and says why.
    auto active = docker({"node", "update", "--availability", "active", id});
    EXPECT_EQ(active.status, 1);
    EXPECT_NE(active.err.find("runs no tasks"), std::string::npos) << active.err;
    EXPECT_NE(active.err.find("coffer-agent join"), std::string::npos) << active.err;
    auto demote = docker({"node", "demote", id});
    EXPECT_EQ(demote.status, 1);
    EXPECT_NE(demote.err.find("its role cannot change"), std::string::npos) << demote.err;
    auto rm = docker({"node", "rm", "--force", id});
    EXPECT_EQ(rm.status, 1);
    EXPECT_NE(rm.err.find("cannot be removed"), std::string::npos) << rm.err;
    EXPECT_EQ(docker({"node", "update", "--availability", "drain", id}).status, 0);
    EXPECT_EQ(lines_of(docker({"node", "ls", "-q"}).out).size(), 3u);

    // The scheduler never sees it: a task for managers only stays pending (no agent joined with
    // the manager token), one for workers runs on an agent.
    ASSERT_EQ(docker({"service", "create", "--detach", "--no-resolve-image", "--name", "mgr",
                      "--constraint", "node.role==manager", "localbusybox:1"})
                  .status,
              0);
    ASSERT_EQ(docker({"service", "create", "--detach", "--no-resolve-image", "--name", "wrk",
                      "--constraint", "node.role==worker", "localbusybox:1"})
                  .status,
              0);
    ASSERT_TRUE(wait_until([&] {
        return docker({"service", "ps", "--format", "{{.CurrentState}}", "wrk"})
            .out.starts_with("Running");
    }));
    auto pending = running_tasks("mgr");
    ASSERT_EQ(pending.size(), 1u);
    EXPECT_EQ(pending[0].at("Status").at("State"), "pending");
    const auto* node = pending[0].as_object().if_contains("NodeID");
    EXPECT_TRUE(node == nullptr || *node == "") << json::serialize(pending[0]);
    EXPECT_EQ(docker({"node", "ps", "-q", "self"}).out, "");
}

TEST_F(ApiCompat, UnservedCommandsSayWhatCofferDoesInstead) {
    struct Case {
        std::vector<std::string> args;
        std::string says;
    };
    for (const auto& c : std::vector<Case>{
             {{"system", "df"}, "GET /system/df is not served"},
             {{"swarm", "init"}, "use `coffer-agent join` to add a node"},
             {{"swarm", "join", "--token", "x", "127.0.0.1:2377"}, "use `coffer-agent join`"},
             {{"swarm", "leave", "--force"}, "cannot leave it"},
             {{"container", "ls"}, "cofferd runs no containers"},
             {{"run", "--rm", "localbusybox:1", "true"}, "cofferd runs no containers"},
             {{"image", "ls"}, "cofferd keeps no images"},
             {{"plugin", "ls"}, "cofferd has no plugins"},
         }) {
        auto r = docker(c.args);
        EXPECT_NE(r.status, 0) << c.args[0] << " " << c.args[1];
        EXPECT_NE(r.err.find("Error response from daemon: coffer: "), std::string::npos) << r.err;
        EXPECT_NE(r.err.find(c.says), std::string::npos) << r.err;
        EXPECT_EQ(r.err.find("page not found"), std::string::npos) << r.err;
    }
}

}  // namespace
