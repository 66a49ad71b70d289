// `service logs` end to end: cofferd-test with two nodes, fake agents, and a test node transport
// whose nodes answer each task's log with three generated lines ("line N of task ID"); read with
// the coffer CLI and the docker CLI.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <cstdlib>
#include <map>
#include <sstream>

#include "coffer/net/http_client.h"
#include "harness.h"

using namespace coffer;
using namespace coffer::test;
namespace json = boost::json;

namespace {

class ServiceLogs : public ::testing::Test {
  protected:
    void start(const std::string& down = "") {
        const char* hooked = std::getenv("COFFERD_TEST");
        if (hooked == nullptr)
            GTEST_SKIP() << "COFFERD_TEST (the cofferd-test executable) is not set";
        ::setenv("COFFERD", hooked, 1);
        ::setenv("COFFER_TEST_NODES", "node-a,node-b", 1);
        ::setenv("COFFER_TEST_AGENTS", "1", 1);
        ::setenv("COFFER_TEST_LOGS", "1", 1);
        ::setenv("COFFER_TEST_LOGS_DOWN", down.c_str(), 1);
        daemon_ = std::make_unique<Daemon>(dir_.path() / "data", dir_.path() / "coffer.sock");
        ASSERT_TRUE(daemon_->ready());
        env_ = {"DOCKER_HOST=" + daemon_->host(), "DOCKER_CONFIG=" + (dir_.path() / "dc").string()};
    }
    void TearDown() override {
        daemon_.reset();
        ::unsetenv("COFFER_TEST_LOGS");
        ::unsetenv("COFFER_TEST_LOGS_DOWN");
    }

    CliResult cli(std::vector<std::string> args) {
        args.insert(args.begin(), {"service", "logs"});
        return coffer_cli(daemon_->host(), args);
    }
    CliResult docker(std::vector<std::string> args) {
        args.insert(args.begin(), {"docker", "service", "logs"});
        return run_program(args, "", env_);
    }
    json::value get(const std::string& target) {
        auto c = net::HttpClient::connect(daemon_->host());
        EXPECT_TRUE(c.ok());
        auto r = (*c)->request("GET", target);
        EXPECT_TRUE(r.ok());
        EXPECT_EQ(r->status, 200) << r->body;
        return json::parse(r->body);
    }
    // Creates web with two replicas (one per node) and waits until both run.
    void create_web() {
        auto c = net::HttpClient::connect(daemon_->host());
        ASSERT_TRUE(c.ok());
        auto body = json::serialize(json::object{
            {"Name", "web"},
            {"TaskTemplate",
             json::object{{"ContainerSpec", json::object{{"Image", "localbusybox:1"}}}}},
            {"Mode", json::object{{"Replicated", json::object{{"Replicas", 2}}}}}});
        auto r = (*c)->request("POST", "/services/create",
                               {reinterpret_cast<const std::uint8_t*>(body.data()), body.size()});
        ASSERT_TRUE(r.ok());
        ASSERT_EQ(r->status, 201) << r->body;
        ASSERT_TRUE(wait_until([&] {
            int running = 0;
            auto tasks = get("/tasks");
            for (const auto& t : tasks.as_array())
                if (t.at("Status").at("State") == "running") ++running;
            return running == 2;
        }));
    }
    // What `service logs web` prints for each task: "web.SLOT.ID12@HOST    | line N of task ID".
    std::vector<std::string> expected(int first_line, bool task_ids = true) {
        std::map<std::string, std::string> hosts;
        auto nodes = get("/nodes");
        auto tasks = get("/tasks");
        for (const auto& n : nodes.as_array())
            hosts[std::string(n.at("ID").as_string())] =
                std::string(n.at("Description").at("Hostname").as_string());
        std::map<std::int64_t, std::vector<std::string>> by_slot;
        for (const auto& t : tasks.as_array()) {
            std::string id(t.at("ID").as_string());
            auto slot = t.at("Slot").as_int64();
            auto label = fmt::format("web.{}{}@{}", slot, task_ids ? "." + id.substr(0, 12) : "",
                                     hosts[std::string(t.at("NodeID").as_string())]);
            for (int i = first_line; i <= 3; ++i)
                by_slot[slot].push_back(fmt::format("{}    | line {} of task {}", label, i, id));
        }
        std::vector<std::string> out;
        for (auto& [slot, lines] : by_slot) out.insert(out.end(), lines.begin(), lines.end());
        return out;
    }
    std::string task_on(const std::string& host) {
        std::string node_id;
        auto nodes = get("/nodes");
        auto tasks = get("/tasks");
        for (const auto& n : nodes.as_array())
            if (n.at("Description").at("Hostname") == host.c_str())
                node_id = std::string(n.at("ID").as_string());
        for (const auto& t : tasks.as_array())
            if (t.at("NodeID") == node_id.c_str()) return std::string(t.at("ID").as_string());
        return "";
    }

    TempDir dir_;
    std::unique_ptr<Daemon> daemon_;
    std::vector<std::string> env_;
};

}  // namespace

TEST_F(ServiceLogs, CofferCliPrintsEachLineBehindItsTask) {
    start();
    create_web();
    auto all = cli({"web"});
    ASSERT_EQ(all.status, 0) << all.err;
    EXPECT_EQ(lines_of(all.out), expected(1));
    EXPECT_EQ(all.err, "");

    auto last = cli({"--tail", "1", "web"});
    ASSERT_EQ(last.status, 0) << last.err;
    EXPECT_EQ(lines_of(last.out), expected(3));

    auto no_ids = cli({"--no-task-ids", "-n", "2", "web"});
    ASSERT_EQ(no_ids.status, 0) << no_ids.err;
    EXPECT_EQ(lines_of(no_ids.out), expected(2, false));

    auto task = task_on("node-a");
    auto one = cli({"--raw", task});
    ASSERT_EQ(one.status, 0) << one.err;
    EXPECT_EQ(one.out,
              fmt::format("line 1 of task {0}\nline 2 of task {0}\nline 3 of task {0}\n", task));

    auto full = cli({"--no-trunc", "--tail", "1", task});
    ASSERT_EQ(full.status, 0) << full.err;
    EXPECT_NE(full.out.find("." + task + "@node-a    | line 3 of task "), std::string::npos)
        << full.out;

    auto missing = cli({"nosuch"});
    EXPECT_EQ(missing.status, 1);
    EXPECT_EQ(missing.err, "Error: no such task or service: nosuch\n");
    auto negative = cli({"--tail", "-1", "web"});
    EXPECT_EQ(negative.status, 1);
    EXPECT_NE(negative.err.find("negative tail values not supported"), std::string::npos)
        << negative.err;
    auto stamps = cli({"--timestamps", "web"});
    EXPECT_EQ(stamps.status, 1);
    EXPECT_NE(stamps.err.find("timestamps are not supported"), std::string::npos) << stamps.err;
}

TEST_F(ServiceLogs, DockerCliPrintsTheSameLines) {
    if (!have_docker()) GTEST_SKIP() << "no docker CLI on this machine";
    start();
    create_web();
    auto all = docker({"web"});
    ASSERT_EQ(all.status, 0) << all.err;
    EXPECT_EQ(lines_of(all.out), expected(1));
    EXPECT_EQ(all.out, cli({"web"}).out);

    auto last = docker({"--tail", "1", "--no-task-ids", "web"});
    ASSERT_EQ(last.status, 0) << last.err;
    EXPECT_EQ(lines_of(last.out), expected(3, false));

    auto task = task_on("node-b");
    auto raw = docker({"--raw", task});
    ASSERT_EQ(raw.status, 0) << raw.err;
    EXPECT_EQ(raw.out,
              fmt::format("line 1 of task {0}\nline 2 of task {0}\nline 3 of task {0}\n", task));

    auto missing = docker({"nosuch"});
    EXPECT_EQ(missing.status, 1);
    EXPECT_NE(missing.err.find("no such task or service: nosuch"), std::string::npos)
        << missing.err;
}

TEST_F(ServiceLogs, UnreachableNodeIsReportedAfterWhatCouldBeRead) {
    start("node-b");
    create_web();
    auto a = task_on("node-a");
    auto r = cli({"--raw", "web"});
    EXPECT_EQ(r.status, 1);
    EXPECT_EQ(r.out,
              fmt::format("line 1 of task {0}\nline 2 of task {0}\nline 3 of task {0}\n", a));
    EXPECT_NE(r.err.find("incomplete log stream"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(" is not available"), std::string::npos) << r.err;

    if (!have_docker()) return;
    auto d = docker({"--raw", "web"});
    EXPECT_EQ(d.status, 1);
    EXPECT_EQ(d.out, r.out);
    EXPECT_NE(d.err.find("incomplete log stream"), std::string::npos) << d.err;
}
