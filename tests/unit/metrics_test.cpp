#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "coffer/base/metrics.h"
#include "coffer/base/metrics_server.h"
#include "coffer/base/unique_fd.h"

using namespace coffer::metrics;

namespace {

bool contains(const std::string& text, std::string_view line) {
    return text.find(std::string(line) + "\n") != std::string::npos;
}

// One request to 127.0.0.1:port, the whole answer (the server closes after it).
std::string ask(std::uint16_t port, std::string_view request) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
        ::close(fd);
        return "connect failed";
    }
    (void)!::write(fd, request.data(), request.size());
    std::string out;
    char buf[4096];
    for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) out.append(buf, n);
    ::close(fd);
    return out;
}

}  // namespace

TEST(Metrics, CounterAndGaugeExposedWithHelpAndType) {
    Registry r;
    auto& c = r.counter("coffer_things_total", "Things done.");
    auto& g = r.gauge("coffer_things_now", "Things\\ held\nnow.");
    c.inc();
    c.inc(4);
    g.add(3);
    g.sub();
    auto text = r.expose();
    EXPECT_TRUE(contains(text, "# HELP coffer_things_total Things done.")) << text;
    EXPECT_TRUE(contains(text, "# TYPE coffer_things_total counter")) << text;
    EXPECT_TRUE(contains(text, "coffer_things_total 5")) << text;
    EXPECT_TRUE(contains(text, "# HELP coffer_things_now Things\\\\ held\\nnow.")) << text;
    EXPECT_TRUE(contains(text, "# TYPE coffer_things_now gauge")) << text;
    EXPECT_TRUE(contains(text, "coffer_things_now 2")) << text;
}

TEST(Metrics, SameNameAndShapeGivesTheSameMetric) {
    Registry r;
    auto& a = r.counter("coffer_a_total", "A.");
    auto& b = r.counter("coffer_a_total", "A.");
    EXPECT_EQ(&a, &b);
    EXPECT_THROW(r.gauge("coffer_a_total", "A."), std::invalid_argument);
    EXPECT_THROW(r.counter_family("coffer_a_total", "A.", {"x"}), std::invalid_argument);
}

TEST(Metrics, BadNamesAreRefused) {
    Registry r;
    EXPECT_THROW(r.counter("9lives", "x"), std::invalid_argument);
    EXPECT_THROW(r.counter("has-dash", "x"), std::invalid_argument);
    EXPECT_THROW(r.counter_family("ok_total", "x", {"__reserved"}), std::invalid_argument);
    EXPECT_THROW(r.counter_family("ok2_total", "x", {"a:b"}), std::invalid_argument);
    EXPECT_THROW(r.histogram_family("ok_seconds", "x", {"le"}, size_buckets(), 1),
                 std::invalid_argument);
}

TEST(Metrics, LabelValuesAreEscaped) {
    Registry r;
    auto& f = r.counter_family("coffer_requests_total", "Requests.", {"route", "code"});
    f.with({"/a\"b\\c\nd", "200"}).inc(2);
    auto text = r.expose();
    EXPECT_TRUE(contains(text, R"(coffer_requests_total{route="/a\"b\\c\nd",code="200"} 2)"))
        << text;
    EXPECT_EQ(escape_label_value("plain"), "plain");
    EXPECT_EQ(escape_label_value("a\\b"), "a\\\\b");
    EXPECT_EQ(escape_label_value("\"q\""), "\\\"q\\\"");
    EXPECT_EQ(escape_label_value("l1\nl2"), "l1\\nl2");
    EXPECT_EQ(escape_help("say \"hi\"\\\n"), "say \"hi\"\\\\\\n");
}

TEST(Metrics, FamilyChildIsStableAndNeedsEveryLabel) {
    Registry r;
    auto& f = r.counter_family("coffer_x_total", "X.", {"a", "b"});
    auto& one = f.with({"1", "2"});
    auto& again = f.with({"1", "2"});
    EXPECT_EQ(&one, &again);
    EXPECT_NE(&one, &f.with({"1", "3"}));
    EXPECT_THROW(f.with({"1"}), std::invalid_argument);
    EXPECT_EQ(r.expose().find("coffer_x_total{a=\"1\",b=\"2\"} 0\n") != std::string::npos, true);
}

TEST(Metrics, HistogramBucketsAreCumulativeInSeconds) {
    Registry r;
    auto& h = r.histogram_family("coffer_op_duration_seconds", "Op.", {"op"}, duration_buckets(),
                                 nanoseconds_per_second)
                  .with({"write"});
    h.observe(std::chrono::microseconds(50));   // <= 0.0001
    h.observe(std::chrono::microseconds(100));  // == 0.0001, inclusive
    h.observe(std::chrono::milliseconds(3));    // <= 0.005
    h.observe(std::chrono::seconds(100));       // +Inf only
    auto text = r.expose();
    EXPECT_TRUE(contains(text, "# TYPE coffer_op_duration_seconds histogram")) << text;
    EXPECT_TRUE(contains(text, R"(coffer_op_duration_seconds_bucket{op="write",le="0.0001"} 2)"))
        << text;
    EXPECT_TRUE(contains(text, R"(coffer_op_duration_seconds_bucket{op="write",le="0.0025"} 2)"))
        << text;
    EXPECT_TRUE(contains(text, R"(coffer_op_duration_seconds_bucket{op="write",le="0.005"} 3)"))
        << text;
    EXPECT_TRUE(contains(text, R"(coffer_op_duration_seconds_bucket{op="write",le="30"} 3)"))
        << text;
    EXPECT_TRUE(contains(text, R"(coffer_op_duration_seconds_bucket{op="write",le="+Inf"} 4)"))
        << text;
    EXPECT_TRUE(contains(text, R"(coffer_op_duration_seconds_count{op="write"} 4)")) << text;
    EXPECT_TRUE(contains(text, R"(coffer_op_duration_seconds_sum{op="write"} 100.00315)")) << text;
}

TEST(Metrics, SizeHistogramKeepsIntegers) {
    Registry r;
    auto& h = r.histogram("coffer_group_size", "Sizes.", size_buckets(), 1);
    h.observe(1);
    h.observe(3);
    h.observe(300);
    auto text = r.expose();
    EXPECT_TRUE(contains(text, R"(coffer_group_size_bucket{le="1"} 1)")) << text;
    EXPECT_TRUE(contains(text, R"(coffer_group_size_bucket{le="2"} 1)")) << text;
    EXPECT_TRUE(contains(text, R"(coffer_group_size_bucket{le="4"} 2)")) << text;
    EXPECT_TRUE(contains(text, R"(coffer_group_size_bucket{le="+Inf"} 3)")) << text;
    EXPECT_TRUE(contains(text, "coffer_group_size_sum 304")) << text;
}

TEST(Metrics, CollectorsReportAtScrapeAndGoWithTheirRegistration) {
    Registry r;
    int calls = 0;
    {
        auto reg =
            r.collector("coffer_tasks", "Tasks by state.", Type::gauge, {"state"}, [&](Sink& s) {
                ++calls;
                s.sample({"running"}, 3);
                s.sample({"failed"}, 0.5);
                s.sample({"too", "many"}, 1);  // left out
            });
        auto text = r.expose();
        EXPECT_EQ(calls, 1);
        EXPECT_TRUE(contains(text, "# TYPE coffer_tasks gauge")) << text;
        EXPECT_TRUE(contains(text, R"(coffer_tasks{state="running"} 3)")) << text;
        EXPECT_TRUE(contains(text, R"(coffer_tasks{state="failed"} 0.5)")) << text;
        EXPECT_EQ(text.find("many"), std::string::npos) << text;
    }
    auto text = r.expose();
    EXPECT_EQ(calls, 1);
    EXPECT_EQ(text.find("coffer_tasks{"), std::string::npos) << text;
    // A collector family takes no children, and the other way round.
    auto reg = r.collector("coffer_c", "C.", Type::counter, {}, [](Sink& s) { s.sample({}, 1); });
    EXPECT_THROW(r.counter("coffer_c", "C."), std::invalid_argument);
    r.counter("coffer_d", "D.");
    EXPECT_THROW((void)r.collector("coffer_d", "D.", Type::counter, {}, [](Sink&) {}),
                 std::invalid_argument);
}

TEST(Metrics, ConcurrentUpdatesAreAllCounted) {
    Registry r;
    auto& f = r.counter_family("coffer_par_total", "P.", {"t"});
    auto& h = r.histogram("coffer_par_seconds", "P.", duration_buckets(), nanoseconds_per_second);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&, t] {
            for (int i = 0; i < 10000; ++i) {
                f.with({t % 2 ? "odd" : "even"}).inc();
                h.observe(std::uint64_t(i));
            }
        });
    for (auto& t : threads) t.join();
    auto text = r.expose();
    EXPECT_TRUE(contains(text, R"(coffer_par_total{t="even"} 20000)")) << text;
    EXPECT_TRUE(contains(text, R"(coffer_par_total{t="odd"} 20000)")) << text;
    EXPECT_TRUE(contains(text, "coffer_par_seconds_count 40000")) << text;
}

TEST(MetricsServer, ServesMetricsAndHealthOverHttp) {
    bool healthy = true;
    Server server("127.0.0.1:0", standard_routes([&] {
                      return healthy ? Answer{200, "", R"({"status":"ok"})"}
                                     : Answer{503, "", R"({"status":"locked"})"};
                  }));
    ASSERT_NE(server.port(), 0);
    EXPECT_EQ(server.address(), "127.0.0.1:" + std::to_string(server.port()));
    registry().counter("coffer_unit_test_total", "Only in this test.").inc(7);

    auto metrics = ask(server.port(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_TRUE(metrics.starts_with("HTTP/1.1 200 OK\r\n")) << metrics;
    EXPECT_NE(metrics.find("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
              std::string::npos)
        << metrics;
    EXPECT_NE(metrics.find("\r\n\r\n# HELP"), std::string::npos) << metrics;
    EXPECT_NE(metrics.find("\ncoffer_unit_test_total 7\n"), std::string::npos) << metrics;

    auto health = ask(server.port(), "GET /health HTTP/1.0\r\n\r\n");
    EXPECT_TRUE(health.starts_with("HTTP/1.1 200 OK\r\n")) << health;
    EXPECT_NE(health.find("Content-Type: application/json\r\n"), std::string::npos) << health;
    EXPECT_TRUE(health.ends_with("\r\n\r\n{\"status\":\"ok\"}")) << health;
    healthy = false;
    health = ask(server.port(), "GET /health?x=1 HTTP/1.1\r\n\r\n");
    EXPECT_TRUE(health.starts_with("HTTP/1.1 503 Service Unavailable\r\n")) << health;
    EXPECT_TRUE(health.ends_with("{\"status\":\"locked\"}")) << health;

    auto head = ask(server.port(), "HEAD /health HTTP/1.1\r\n\r\n");
    EXPECT_TRUE(head.starts_with("HTTP/1.1 503")) << head;
    EXPECT_TRUE(head.ends_with("\r\n\r\n")) << head;

    auto post = ask(server.port(), "POST /metrics HTTP/1.1\r\n\r\n");
    EXPECT_TRUE(post.starts_with("HTTP/1.1 405")) << post;
    EXPECT_TRUE(ask(server.port(), "GET /secrets HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
    EXPECT_TRUE(ask(server.port(), "nonsense\r\n\r\n").starts_with("HTTP/1.1 400"));
    EXPECT_TRUE(ask(server.port(), "GET /" + std::string(9000, 'a')).starts_with("HTTP/1.1 431"));
    // The limit is 8 KiB whether or not the head's end came with the bytes past it.
    auto long_head = "GET /health HTTP/1.1\r\nX-Pad: " + std::string(8500, 'a') + "\r\n\r\n";
    EXPECT_TRUE(ask(server.port(), long_head).starts_with("HTTP/1.1 431"));
    auto within = "GET /health HTTP/1.1\r\nX-Pad: " + std::string(8000, 'a') + "\r\n\r\n";
    EXPECT_TRUE(ask(server.port(), within).starts_with("HTTP/1.1 503"));
}

TEST(MetricsServer, SilentClientDoesNotBlockOthers) {
    Server server("127.0.0.1:0", standard_routes([] { return Answer{200, "", "{}"}; }));
    int idle = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(server.port());
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(idle, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    (void)!::write(idle, "GET /hea", 8);  // and nothing more
    auto start = std::chrono::steady_clock::now();
    EXPECT_TRUE(ask(server.port(), "GET /health HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
    ::close(idle);

    // Far more half-sent requests than the server keeps: each new connection takes the place of
    // the oldest such one, and a health check is answered at once, not after their deadline.
    std::vector<coffer::UniqueFd> silent;
    for (int i = 0; i < 200; ++i) {
        coffer::UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        ASSERT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
        (void)!::write(fd.get(), "GET /hea", 8);
        silent.push_back(std::move(fd));
    }
    start = std::chrono::steady_clock::now();
    EXPECT_TRUE(ask(server.port(), "GET /health HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
}

TEST(MetricsServer, BadAddressesAreRefused) {
    auto routes = [] { return standard_routes([] { return Answer{}; }); };
    EXPECT_THROW(Server("localhost:9100", routes()), std::runtime_error);
    EXPECT_THROW(Server("127.0.0.1", routes()), std::runtime_error);
    EXPECT_THROW(Server("127.0.0.1:99999", routes()), std::runtime_error);
    Server taken("127.0.0.1:0", routes());
    EXPECT_THROW(Server("127.0.0.1:" + std::to_string(taken.port()), routes()), std::runtime_error);
    Server v6("[::1]:0", routes());
    EXPECT_EQ(v6.address(), "[::1]:" + std::to_string(v6.port()));
}
