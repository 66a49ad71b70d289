// Health checks through the whole cluster with real processes (cluster_fixture.h), driven by the
// docker CLI: a task with a health check stays starting until a probe run inside it (the OCI
// runtime's exec) succeeds, then runs; one whose probe keeps failing is killed, fails as an
// unhealthy container and is replaced; the image's HEALTHCHECK counts unless --no-healthcheck;
// a start-first update keeps the old task until the new one is healthy. What a probe sees is
// changed from inside the container (a file in its mount namespace), never by waiting.
#include <fmt/format.h>

#include <boost/json.hpp>

#include <fstream>

#include "cluster_fixture.h"

using namespace coffer;
using namespace coffer::test;
using namespace std::chrono_literals;
namespace json = boost::json;

namespace {

std::string str(const json::object& o, std::initializer_list<const char*> path) {
    const json::value* v = nullptr;
    const json::object* at = &o;
    for (auto* key : path) {
        v = at ? at->if_contains(key) : nullptr;
        if (v == nullptr) return "";
        at = v->is_object() ? &v->as_object() : nullptr;
    }
    return v->is_string() ? std::string(v->as_string()) : "";
}

std::string state(const json::object& t) {
    return str(t, {"Status", "State"});
}
std::string health(const json::object& t) {
    return str(t, {"Status", "ContainerStatus", "Health", "Status"});
}
std::string id_of(const json::object& t) {
    return str(t, {"ID"});
}

class Health : public ClusterTest {
  protected:
    void SetUp() override {
        ClusterTest::SetUp();
        if (HasFatalFailure() || IsSkipped()) return;
        if (!have_docker()) GTEST_SKIP() << "the docker CLI is not installed";
    }

    CliResult docker(std::vector<std::string> args) {
        return run_program(
            args, "",
            {"DOCKER_HOST=" + daemon_->host(), "DOCKER_CONFIG=" + docker_config_.path().string()});
    }
    void docker_ok(std::vector<std::string> args) {
        args.insert(args.begin(), "docker");
        auto r = docker(args);
        ASSERT_EQ(r.status, 0) << fmt::format("{}\n{}", r.out, r.err);
    }

    // The task (of any state) that matches, waiting for one up to within.
    std::optional<json::object> wait_task(const std::string& service,
                                          const std::function<bool(const json::object&)>& pred,
                                          std::chrono::milliseconds within = 60s) {
        std::optional<json::object> found;
        wait_until(
            [&] {
                for (auto& t : tasks(service))
                    if (pred(t)) {
                        found = t;
                        return true;
                    }
                return false;
            },
            within);
        return found;
    }
    std::optional<json::object> task(const std::string& id) {
        auto v = get("/tasks/" + id);
        if (!v.is_object()) return std::nullopt;
        return v.as_object();
    }

    // Runs a command in the task's container's mount namespace (the host's nsenter, the
    // image's busybox).
    void in_task(const json::object& t, std::vector<std::string> command) {
        auto pid = task_pid(t);
        ASSERT_GT(pid, 0) << json::serialize(t);
        std::vector<std::string> argv{"nsenter", "-t", std::to_string(pid), "-m", "--"};
        argv.insert(argv.end(), command.begin(), command.end());
        auto r = run_program(argv);
        ASSERT_EQ(r.status, 0) << r.err;
    }

    // Imports the test image whose config has a HEALTHCHECK into node-a's store.
    void import_healthcheck_image() {
        auto r = run_program({agent_program(), "--data-dir", a_->data.string(), "image", "import",
                              image_layout().string(), "healthcheck"});
        ASSERT_EQ(r.status, 0) << r.err;
    }

    TempDir docker_config_;
};

// --health-cmd runs in the task; until it succeeds the task is starting, then running and healthy.
TEST_F(Health, ATaskIsStartingUntilItsCheckSucceedsThenRunning) {
    docker_ok({"service", "create", "--detach", "--name", "web", "--health-cmd", "test -f /tmp/ok",
               "--health-interval", "1s", "--health-start-period", "5m", "busybox", "sleep",
               "100000"});
    // Failures within the start period do not count: it stays starting, with its container.
    auto t = wait_task("web", [](auto& x) {
        return state(x) == "starting" && health(x) == "starting" && task_pid(x) > 0;
    });
    ASSERT_TRUE(t) << json::serialize(get("/tasks"));
    EXPECT_TRUE(process_alive(task_pid(*t)));

    in_task(*t, {"touch", "/tmp/ok"});
    auto healthy = wait_task("web", [&](auto& x) {
        return id_of(x) == id_of(*t) && state(x) == "running" && health(x) == "healthy";
    });
    ASSERT_TRUE(healthy) << json::serialize(get("/tasks"));
    EXPECT_EQ(task_pid(*healthy), task_pid(*t)) << "the same container, not a new one";
    auto ps = docker({"docker", "service", "ps", "--no-trunc", "web"});
    EXPECT_NE(ps.out.find("Running"), std::string::npos) << ps.out << ps.err;
}

// A check that fails `retries` times in a row once the task was healthy: the task is killed, fails
// as an unhealthy container (with the probe's own output), and the restart policy replaces it.
TEST_F(Health, AnUnhealthyTaskFailsAndIsReplaced) {
    docker_ok({"service", "create", "--detach", "--name", "flaky", "--health-cmd",
               "test -f /tmp/ok || { echo no-ok-file; exit 1; }", "--health-interval", "1s",
               "--health-retries", "2", "--restart-delay", "1s", "busybox", "sh", "-c",
               "touch /tmp/ok; exec sleep 100000"});
    auto first = wait_task("flaky", [](auto& t) {
        return state(t) == "running" && health(t) == "healthy" && task_pid(t) > 0;
    });
    ASSERT_TRUE(first) << json::serialize(get("/tasks"));
    auto pid = task_pid(*first);

    in_task(*first, {"rm", "/tmp/ok"});
    std::optional<json::object> failed;
    ASSERT_TRUE(wait_until(
        [&] {
            failed = task(id_of(*first));
            return failed && state(*failed) == "failed";
        },
        60s))
        << json::serialize(get("/tasks"));
    auto err = str(*failed, {"Status", "Err"});
    EXPECT_NE(err.find("unhealthy container"), std::string::npos) << err;
    EXPECT_NE(err.find("no-ok-file"), std::string::npos) << "the last probe's output: " << err;
    EXPECT_EQ(health(*failed), "unhealthy");
    EXPECT_TRUE(wait_until([&] { return !process_alive(pid); }, 30s)) << "the container is gone";

    // Its replacement (in the same slot) touches the file again and becomes healthy.
    auto next = wait_task("flaky", [&](auto& t) {
        return id_of(t) != id_of(*first) && state(t) == "running" && health(t) == "healthy";
    });
    ASSERT_TRUE(next) << json::serialize(get("/tasks"));
    EXPECT_EQ(next->at("Slot"), first->at("Slot"));
    auto ps = docker({"docker", "service", "ps", "--no-trunc", "flaky"});
    EXPECT_NE(ps.out.find("unhealthy container"), std::string::npos) << ps.out << ps.err;
}

// The image's HEALTHCHECK (test -f /tmp/healthy, every second, 2 retries) runs without any
// --health-* flag; --no-healthcheck turns it off.
TEST_F(Health, TheImagesHealthcheckRunsUnlessDisabled) {
    import_healthcheck_image();
    if (HasFatalFailure()) return;
    const std::vector<std::string> on_a{"--constraint", "node.hostname==node-a", "--restart-delay",
                                        "1s"};
    auto create = [&](const std::string& name, std::vector<std::string> flags,
                      std::vector<std::string> command) {
        std::vector<std::string> args{"service", "create", "--detach", "--name", name};
        args.insert(args.end(), on_a.begin(), on_a.end());
        args.insert(args.end(), flags.begin(), flags.end());
        args.push_back("healthcheck");
        args.insert(args.end(), command.begin(), command.end());
        docker_ok(args);
    };
    create("passes", {}, {"sh", "-c", "touch /tmp/healthy; exec sleep 100000"});
    create("fails", {}, {"sleep", "100000"});
    create("unchecked", {"--no-healthcheck"}, {"sleep", "100000"});
    if (HasFatalFailure()) return;

    auto passes = wait_task(
        "passes", [](auto& t) { return state(t) == "running" && health(t) == "healthy"; });
    EXPECT_TRUE(passes) << json::serialize(get("/tasks"));
    auto fails = wait_task("fails", [](auto& t) { return state(t) == "failed"; });
    ASSERT_TRUE(fails) << json::serialize(get("/tasks"));
    EXPECT_NE(str(*fails, {"Status", "Err"}).find("unhealthy container"), std::string::npos)
        << json::serialize(*fails);
    auto unchecked = wait_task("unchecked", [](auto& t) { return state(t) == "running"; });
    ASSERT_TRUE(unchecked) << json::serialize(get("/tasks"));
    EXPECT_EQ(health(*unchecked), "") << "no health check, no health";
    // Spec: Test ["NONE"], as the docker CLI sends it.
    auto spec = get("/services/unchecked");
    EXPECT_NE(json::serialize(spec).find(R"("Healthcheck":{"Test":["NONE"]})"), std::string::npos)
        << json::serialize(spec);
}

// A start-first update starts the new task and stops the old one only once the new one is
// healthy (running); until then both are there.
TEST_F(Health, AStartFirstUpdateWaitsForTheNewTaskToBeHealthy) {
    docker_ok({"service", "create", "--detach", "--name", "roll", "--update-order", "start-first",
               "--health-cmd", "test -f /tmp/ok", "--health-interval", "1s",
               "--health-start-period", "5m", "busybox", "sh", "-c",
               "touch /tmp/ok; exec sleep 100000"});
    auto old = wait_task("roll", [](auto& t) { return state(t) == "running"; });
    ASSERT_TRUE(old) << json::serialize(get("/tasks"));

    // The new spec's task never makes the file itself.
    docker_ok({"service", "update", "--detach", "--args", "sleep 100001", "roll"});
    auto fresh = wait_task("roll", [&](auto& t) {
        return id_of(t) != id_of(*old) && state(t) == "starting" && task_pid(t) > 0;
    });
    ASSERT_TRUE(fresh) << json::serialize(get("/tasks"));
    auto still = task(id_of(*old));
    ASSERT_TRUE(still);
    EXPECT_EQ(state(*still), "running") << "the old task runs while the new one is starting";
    EXPECT_EQ(str(*still, {"DesiredState"}), "running");
    EXPECT_TRUE(process_alive(task_pid(*old)));

    in_task(*fresh, {"touch", "/tmp/ok"});
    std::optional<json::object> ended;
    ASSERT_TRUE(wait_until(
        [&] {
            ended = task(id_of(*old));
            return ended && state(*ended) == "shutdown";
        },
        60s))
        << json::serialize(get("/tasks"));
    auto now = task(id_of(*fresh));
    ASSERT_TRUE(now);
    EXPECT_EQ(state(*now), "running");
    EXPECT_EQ(health(*now), "healthy");
    // The old task's end was reported after the new one ran.
    EXPECT_GE(str(*ended, {"Status", "Timestamp"}), str(*now, {"Status", "Timestamp"}));
}

// A probe that outlives its timeout is killed and counts as a failure: the check goes on (the
// next probe runs) and the task ends unhealthy with Docker's words for it.
TEST_F(Health, AProbePastItsTimeoutIsKilledAndCountsAsAFailure) {
    docker_ok({"service", "create", "--detach", "--name", "slow", "--health-cmd", "sleep 100000",
               "--health-timeout", "300ms", "--health-interval", "1s", "--health-retries", "2",
               "--restart-condition", "none", "busybox", "sleep", "100000"});
    auto failed = wait_task("slow", [](auto& t) { return state(t) == "failed"; });
    ASSERT_TRUE(failed) << json::serialize(get("/tasks"));
    auto err = str(*failed, {"Status", "Err"});
    EXPECT_NE(err.find("unhealthy container: Health check exceeded timeout (300ms)"),
              std::string::npos)
        << err;
}

// A compose file's healthcheck: (docker stack deploy) is the service's Healthcheck, and runs.
TEST_F(Health, AComposeHealthcheckRunsInTheStacksTask) {
    auto file = dir_.path() / "stack.yml";
    std::ofstream(file) << R"(version: "3.8"
services:
  app:
    image: busybox
    command: ["sh", "-c", "touch /tmp/ok; exec sleep 100000"]
    healthcheck:
      test: ["CMD", "test", "-f", "/tmp/ok"]
      interval: 1s
      timeout: 2s
      retries: 2
)";
    docker_ok({"stack", "deploy", "--resolve-image", "never", "-c", file.string(), "st"});
    auto spec = get("/services/st_app");
    EXPECT_NE(json::serialize(spec).find(R"("Test":["CMD","test","-f","/tmp/ok"])"),
              std::string::npos)
        << json::serialize(spec);
    auto t = wait_task("st_app",
                       [](auto& x) { return state(x) == "running" && health(x) == "healthy"; });
    EXPECT_TRUE(t) << json::serialize(get("/tasks"));
}

}  // namespace
