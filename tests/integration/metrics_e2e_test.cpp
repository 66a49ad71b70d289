// Metrics through the whole cluster (cluster_fixture.h): cofferd and both agents serve
// --metrics-addr in their namespaces; scraped during a service's life, every documented name is
// there and the counters move: deliveries and sessions on the manager, task starts, teardowns,
// tasks and secrets held on the agent that runs the task; /health on each; the agents' JSON log
// lines parse.
#include <fmt/format.h>

#include <boost/json.hpp>

#include "cluster_fixture.h"
#include "metrics_scrape.h"

using namespace coffer;
using namespace coffer::test;
using namespace std::chrono_literals;
namespace json = boost::json;

namespace {

constexpr const char* metrics_address = "127.0.0.1:9464";

class MetricsE2E : public ClusterTest {
  protected:
    MetricsE2E() {
        manager_args_ = {"--metrics-addr", metrics_address, "--log-format", "json"};
        agent_args_ = {"--metrics-addr", metrics_address, "--log-format", "json"};
    }

    // GET path from the listener in ns (each program listens on loopback in its namespace).
    HttpAnswer get_in(const NetworkNamespace& ns, const std::string& path) {
        auto argv = ns.enter();
        argv.insert(argv.end(), {"curl", "-s", "-i", "--max-time", "10",
                                 fmt::format("http://{}{}", metrics_address, path)});
        return parse_http_answer(run_program(argv).out);
    }
    Exposition scrape(const NetworkNamespace& ns) {
        auto a = get_in(ns, "/metrics");
        EXPECT_EQ(a.status, 200) << a.head;
        auto e = parse_exposition(a.body);
        EXPECT_TRUE(e.bad_lines.empty()) << e.bad_lines.front();
        return e;
    }
    static void expect_documented(const Exposition& e, const std::string& program) {
        auto documented = documented_metrics(program);
        ASSERT_GE(documented.size(), 5u) << program;
        for (const auto& [name, type] : documented) {
            auto it = e.types.find(name);
            ASSERT_NE(it, e.types.end()) << program << ": " << name << " is not served";
            EXPECT_EQ(it->second, type) << name;
        }
        for (const auto& [name, type] : e.types)
            EXPECT_TRUE(documented.count(name)) << program << ": " << name << " is undocumented";
    }
};

TEST_F(MetricsE2E, ScrapedDuringAServiceLife) {
    expect_documented(scrape(*manager_ns_), "cofferd");
    expect_documented(scrape(*a_ns_), "coffer-agent");
    auto manager = scrape(*manager_ns_);
    EXPECT_EQ(manager.value("coffer_node_sessions"), 2);
    EXPECT_EQ(manager.value(R"(coffer_nodes{state="ready"})"), 2);
    auto before = scrape(*a_ns_);
    EXPECT_EQ(before.value("coffer_agent_session_connected"), 1);
    EXPECT_EQ(before.value("coffer_agent_secrets_held"), 0);
    EXPECT_EQ(before.value(R"(coffer_agent_tasks{state="running"})"), 0);

    ASSERT_EQ(cli({"secret", "create", "metered_secret", "-"}, "s3cr3t").status, 0);
    std::vector<std::string> args{
        "service",  "create",         "--name",       "metered",
        "--secret", "metered_secret", "--constraint", "node.hostname==node-a",
        "busybox"};
    auto printer = secret_printer();
    args.insert(args.end(), printer.begin(), printer.end());
    auto created = cli(args);
    ASSERT_EQ(created.status, 0) << created.err;
    ASSERT_TRUE(wait_converged("metered", 1, a_->node_id())) << a_->err();

    Exposition agent;
    // The status reaches the manager once the task runs; the runner's histogram has it then.
    ASSERT_TRUE(wait_until([&] {
        agent = scrape(*a_ns_);
        return agent.value(R"(coffer_agent_tasks{state="running"})") == 1;
    }));
    EXPECT_EQ(agent.value(R"(coffer_agent_task_start_duration_seconds_count{result="started"})"),
              1);
    EXPECT_GT(agent.value(R"(coffer_agent_task_start_duration_seconds_sum{result="started"})"), 0);
    EXPECT_EQ(agent.value("coffer_agent_secrets_held"), 1);
    EXPECT_GT(agent.value(R"(coffer_secure_memory_bytes{kind="in_use"})"), 0);
    manager = scrape(*manager_ns_);
    EXPECT_GE(manager.value("coffer_secret_deliveries_total"), 1);
    EXPECT_EQ(manager.value(R"(coffer_tasks{state="running"})"), 1);
    EXPECT_EQ(manager.value(R"(coffer_api_requests_total{method="POST",)"
                            R"(route="/services/create",code="201"})"),
              1);
    // The other node ran nothing.
    EXPECT_EQ(scrape(*b_ns_).value(R"(coffer_agent_tasks{state="running"})"), 0);

    ASSERT_EQ(cli({"service", "rm", "metered"}).status, 0);
    ASSERT_TRUE(wait_until([&] {
        agent = scrape(*a_ns_);
        return agent.value("coffer_agent_task_teardown_duration_seconds_count") == 1;
    })) << a_->err();
    ASSERT_TRUE(wait_until([&] { return scrape(*a_ns_).value("coffer_agent_secrets_held") == 0; }));

    // Neither the secret's name nor the service's appears anywhere.
    for (auto* ns : {manager_ns_.get(), a_ns_.get()}) {
        auto text = get_in(*ns, "/metrics").body;
        EXPECT_EQ(text.find("metered"), std::string::npos);
    }
}

TEST_F(MetricsE2E, HealthFollowsTheSessionAndTheManager) {
    auto manager = get_in(*manager_ns_, "/health");
    EXPECT_EQ(manager.status, 200) << manager.head;
    EXPECT_EQ(json::parse(manager.body), json::parse(R"({"status":"ok"})"));
    auto agent = get_in(*a_ns_, "/health");
    EXPECT_EQ(agent.status, 200) << agent.head;
    EXPECT_EQ(json::parse(agent.body), json::parse(R"({"status":"ok"})"));

    // Without its manager the agent is unhealthy, and healthy again once it reconnects.
    daemon_->terminate();
    ASSERT_TRUE(wait_until([&] { return get_in(*a_ns_, "/health").status == 503; }, 30s));
    EXPECT_EQ(json::parse(get_in(*a_ns_, "/health").body),
              json::parse(R"({"status":"disconnected"})"));
    EXPECT_EQ(scrape(*a_ns_).value("coffer_agent_session_connected"), 0);
    start_manager();
    ASSERT_TRUE(wait_until([&] { return get_in(*a_ns_, "/health").status == 200; }, 30s));
}

TEST_F(MetricsE2E, AgentLogLinesAreJson) {
    auto lines = lines_of(a_->err());
    ASSERT_GE(lines.size(), 2u);
    for (const auto& line : lines) {
        boost::system::error_code ec;
        auto v = json::parse(line, ec);
        ASSERT_FALSE(ec) << line;
        ASSERT_TRUE(v.is_object()) << line;
        for (auto key : {"time", "level", "category", "message"})
            ASSERT_TRUE(v.as_object().contains(key)) << key << " in " << line;
    }
}

}  // namespace
