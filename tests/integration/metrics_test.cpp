// cofferd --metrics-addr: the documented metrics in the text format, counters that move with the
// API's work, /health as the store and the lock say, and --log-format json.
#include <fcntl.h>

#include <boost/json.hpp>

#include <chrono>
#include <filesystem>
#include <thread>

#include "coffer/base/process.h"
#include "coffer/base/unique_fd.h"
#include "manager_fixture.h"
#include "metrics_scrape.h"

namespace coffer::test {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;

class Metrics : public ManagerTest {
  protected:
    void SetUp() override {
        port_ = free_port();
        start({"--metrics-addr", "127.0.0.1:" + std::to_string(port_)});
    }

    Exposition scrape() {
        auto a = http_get(port_, "/metrics");
        EXPECT_EQ(a.status, 200) << a.head;
        EXPECT_NE(a.head.find("Content-Type: text/plain; version=0.0.4"), std::string::npos)
            << a.head;
        auto e = parse_exposition(a.body);
        EXPECT_TRUE(e.bad_lines.empty()) << e.bad_lines.front();
        return e;
    }

    std::uint16_t port_ = 0;
};

TEST_F(Metrics, EveryDocumentedManagerMetricIsServed) {
    auto documented = documented_metrics("cofferd");
    ASSERT_GE(documented.size(), 10u) << "docs/metrics.md lists too few cofferd metrics";
    auto e = scrape();
    for (const auto& [name, type] : documented) {
        auto it = e.types.find(name);
        ASSERT_NE(it, e.types.end()) << name << " is documented but not served";
        EXPECT_EQ(it->second, type) << name;
    }
    // And nothing served is undocumented.
    for (const auto& [name, type] : e.types) EXPECT_TRUE(documented.count(name)) << name;
}

TEST_F(Metrics, SecretCreateMovesRequestAndStoreMetrics) {
    const std::string created =
        R"(coffer_api_requests_total{method="POST",route="/secrets/create",code="201"})";
    const std::string inspected =
        R"(coffer_api_requests_total{method="GET",route="/secrets/{id}",code="200"})";
    const std::string missing =
        R"(coffer_api_requests_total{method="GET",route="/secrets/{id}",code="404"})";
    auto before = scrape();
    double writes = before.value("coffer_store_write_duration_seconds_count");
    double groups = before.value("coffer_store_group_commit_size_count");
    ASSERT_GE(writes, 0);
    ASSERT_GE(groups, 0);
    EXPECT_EQ(before.value(created), -1);

    for (auto name : {"metrics_db_password", "metrics_api_key"})
        ASSERT_EQ(cli({"secret", "create", name, "-"}, "bytes").status, 0);
    ASSERT_EQ(request("GET", "/v1.41/secrets/metrics_db_password").status, 200);
    ASSERT_EQ(request("GET", "/secrets/no_such_secret_name").status, 404);

    auto after = scrape();
    EXPECT_EQ(after.value(created), 2);
    EXPECT_EQ(after.value(inspected), 1);
    EXPECT_EQ(after.value(missing), 1);
    EXPECT_EQ(after.value(R"(coffer_api_request_duration_seconds_count{method="POST",)"
                          R"(route="/secrets/create"})"),
              2);
    EXPECT_GE(after.value("coffer_store_write_duration_seconds_count"), writes + 1);
    EXPECT_GE(after.value("coffer_store_group_commit_size_count"), groups + 1);
    EXPECT_EQ(after.value("coffer_store_group_commit_size_sum") -
                  before.value("coffer_store_group_commit_size_sum"),
              2);
    EXPECT_EQ(after.value("coffer_secrets"), 2);
    EXPECT_GT(after.value(R"(coffer_secure_memory_bytes{kind="pool"})"), 0);
    EXPECT_EQ(after.value("coffer_manager_locked"), 0);
    EXPECT_EQ(after.value(R"(coffer_tasks{state="running"})"), 0);

    // No secret's name or id in any label: routes are templates.
    auto text = http_get(port_, "/metrics").body;
    auto id = cli({"secret", "inspect", "--format", "{{.ID}}", "metrics_db_password"}).out;
    id = id.substr(0, id.find('\n'));
    ASSERT_FALSE(id.empty());
    for (auto word : {std::string("metrics_db_password"), std::string("metrics_api_key"),
                      std::string("no_such_secret_name"), id})
        EXPECT_EQ(text.find(word), std::string::npos) << word;
}

TEST_F(Metrics, RotationsAreCounted) {
    // Every change is listed, at 0, before the first.
    auto before = scrape();
    for (auto change : {"rotate", "rollback", "unchanged"})
        EXPECT_EQ(before.value(
                      fmt::format(R"(coffer_secret_version_changes_total{{change="{}"}})", change)),
                  0)
            << change;
    ASSERT_EQ(cli({"secret", "create", "rotated", "-"}, "one").status, 0);
    ASSERT_EQ(cli({"secret", "rotate", "rotated", "-"}, "two").status, 0);
    ASSERT_EQ(cli({"secret", "rollback", "rotated"}).status, 0);
    auto e = scrape();
    EXPECT_EQ(e.value(R"(coffer_secret_version_changes_total{change="rotate"})"), 1);
    EXPECT_EQ(e.value(R"(coffer_secret_version_changes_total{change="rollback"})"), 1);
    EXPECT_EQ(e.value(R"(coffer_api_requests_total{method="POST",route="/secrets/{id}/rotate",)"
                      R"(code="200"})"),
              1);
}

TEST_F(Metrics, UnknownPathsShareOneRoute) {
    ASSERT_EQ(request("GET", "/containers/some_container_name/json").status, 404);
    ASSERT_EQ(request("GET", "/not/a/docker/path").status, 404);
    auto e = scrape();
    EXPECT_EQ(e.value(R"(coffer_api_requests_total{method="GET",route="unmatched",code="404"})"),
              2);
}

TEST_F(Metrics, HealthIsOkWhenUnlockedAndServedApartFromTheApi) {
    auto h = http_get(port_, "/health");
    EXPECT_EQ(h.status, 200) << h.head;
    EXPECT_EQ(json::parse(h.body), json::parse(R"({"status":"ok"})"));
    EXPECT_EQ(http_get(port_, "/secrets").status, 404);
    // Docker's /_ping stays on the API socket, as it was.
    auto ping = request("GET", "/_ping");
    EXPECT_EQ(ping.status, 200);
    EXPECT_EQ(ping.body, "OK");
}

TEST_F(Metrics, LockedManagerIsUnhealthyUntilUnlocked) {
    daemon_.reset();
    fs::remove_all(dir_.path() / "data");
    auto key_file = dir_.path() / "unlock.key";
    start({"--autolock", "--unlock-key-file", key_file.string(), "--metrics-addr",
           "127.0.0.1:" + std::to_string(port_)});
    auto key = read_file(key_file);
    key = key.substr(0, key.find('\n'));
    daemon_->terminate();
    start({"--metrics-addr", "127.0.0.1:" + std::to_string(port_)});

    auto h = http_get(port_, "/health");
    EXPECT_EQ(h.status, 503) << h.head;
    EXPECT_EQ(json::parse(h.body), json::parse(R"({"status":"locked"})"));
    EXPECT_EQ(scrape().value("coffer_manager_locked"), 1);

    auto unlocked = request("POST", "/swarm/unlock", R"({"UnlockKey":")" + key + R"("})");
    ASSERT_EQ(unlocked.status, 200) << unlocked.body;
    EXPECT_EQ(http_get(port_, "/health").status, 200);
    EXPECT_EQ(scrape().value("coffer_manager_locked"), 0);
}

TEST_F(Metrics, MetricsAddressInUseStopsTheStart) {
    // This fixture's cofferd holds port_: a second one is refused and says why.
    TempDir other;
    auto r = run_program({cofferd_path(), "--data-dir", (other.path() / "data").string(),
                          "--socket", (other.path() / "s.sock").string(), "--listen", "127.0.0.1:0",
                          "--metrics-addr", "127.0.0.1:" + std::to_string(port_)});
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.err.find("metrics address 127.0.0.1:" + std::to_string(port_)), std::string::npos)
        << r.err;
}

// --log-format json: every line cofferd writes to standard error is one JSON object with time,
// level, category and message.
TEST(LogFormat, JsonLinesParse) {
    TempDir dir;
    auto err_path = dir.path() / "err";
    UniqueFd err(::open(err_path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    ASSERT_TRUE(err);
    auto socket = dir.path() / "s.sock";
    auto child =
        Child::spawn({.argv = {cofferd_path(), "--data-dir", (dir.path() / "data").string(),
                               "--socket", socket.string(), "--listen", "127.0.0.1:0",
                               "--log-level", "debug", "--log-format", "json"},
                      .stderr_fd = err.get()});
    auto host = "unix://" + socket.string();
    ASSERT_TRUE(wait_until([&] { return coffer_cli(host, {"secret", "ls"}).status == 0; }));
    ASSERT_EQ(coffer_cli(host, {"secret", "create", "logged", "-"}, "x").status, 0);
    child.signal(SIGTERM);
    child.wait();
    auto lines = lines_of(read_file(err_path));
    ASSERT_GE(lines.size(), 3u);
    for (const auto& line : lines) {
        boost::system::error_code ec;
        auto v = json::parse(line, ec);
        ASSERT_FALSE(ec) << line;
        ASSERT_TRUE(v.is_object()) << line;
        const auto& o = v.as_object();
        EXPECT_EQ(o.size(), 4u) << line;
        for (auto key : {"time", "level", "category", "message"})
            ASSERT_TRUE(o.contains(key) && o.at(key).is_string()) << key << " in " << line;
        EXPECT_TRUE(std::string_view(o.at("time").as_string()).ends_with("Z")) << line;
    }
}

}  // namespace
}  // namespace coffer::test
