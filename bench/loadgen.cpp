// Load generator for cofferd's API over its unix socket: secret create and inspect with 1 and
// 16 concurrent clients (one keep-alive connection each), reporting ops/s and p50/p99 latency.
//
//   bench-loadgen --cofferd build/src/cofferd/cofferd [--ops 20000] [--seconds 5]
//
// Starts its own cofferd on a fresh data directory (synchronous writes, as in production), or
// uses a running one with --host unix:///path.
#include <signal.h>
#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "coffer/base/process.h"
#include "coffer/net/http_client.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

struct Stats {
    std::vector<double> latencies_ms;
    double seconds = 0;
    std::size_t errors = 0;
};

double percentile(std::vector<double>& v, double p) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    auto idx = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
    return v[std::min(idx, v.size() - 1)];
}

// Runs op(client, thread, i) from `clients` threads until `ops` operations or `seconds` passed.
template <typename Op>
Stats run(const std::string& host, int clients, std::size_t ops, double seconds, Op op) {
    std::atomic<std::size_t> next{0};
    std::vector<std::vector<double>> lat(static_cast<std::size_t>(clients));
    std::atomic<std::size_t> errors{0};
    auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
    auto start = Clock::now();
    std::vector<std::thread> threads;
    for (int t = 0; t < clients; ++t) {
        threads.emplace_back([&, t] {
            auto c = coffer::net::HttpClient::connect(host);
            if (!c) {
                ++errors;
                return;
            }
            for (;;) {
                auto i = next++;
                if (i >= ops || Clock::now() > deadline) break;
                auto t0 = Clock::now();
                bool ok = op(**c, t, i);
                lat[static_cast<std::size_t>(t)].push_back(
                    std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
                if (!ok) ++errors;
            }
        });
    }
    for (auto& th : threads) th.join();
    Stats s;
    s.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    for (auto& l : lat) s.latencies_ms.insert(s.latencies_ms.end(), l.begin(), l.end());
    s.errors = errors;
    return s;
}

void report(const char* name, int clients, Stats s) {
    auto n = s.latencies_ms.size();
    double p50 = percentile(s.latencies_ms, 0.50), p99 = percentile(s.latencies_ms, 0.99);
    std::printf("%-8s clients=%-3d ops=%-7zu ops/s=%-9.0f p50=%.3fms p99=%.3fms errors=%zu\n", name,
                clients, n, static_cast<double>(n) / s.seconds, p50, p99, s.errors);
    std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"cofferd load generator"};
    std::string cofferd, host;
    std::size_t ops = 20000;
    double seconds = 5;
    std::size_t value_bytes = 32;
    app.add_option("--cofferd", cofferd, "cofferd binary to start on a temporary data directory");
    app.add_option("--host", host, "Use a running cofferd (unix:///path) instead");
    app.add_option("--ops", ops, "Operations per scenario (at most)")->capture_default_str();
    app.add_option("--seconds", seconds, "Time per scenario (at most)")->capture_default_str();
    app.add_option("--value-bytes", value_bytes, "Secret size")->capture_default_str();
    CLI11_PARSE(app, argc, argv);
    if (cofferd.empty() == host.empty()) {
        std::fprintf(stderr, "give exactly one of --cofferd or --host\n");
        return 2;
    }

    std::string dir;
    coffer::Child daemon;
    if (!cofferd.empty()) {
        std::string tmpl = (fs::temp_directory_path() / "coffer-bench-XXXXXX").string();
        if (!::mkdtemp(tmpl.data())) return 1;
        dir = tmpl;
        host = "unix://" + dir + "/coffer.sock";
        daemon = coffer::Child::spawn({.argv = {cofferd, "--data-dir", dir + "/data", "--socket",
                                                dir + "/coffer.sock", "--log-level", "warn"}});
        auto until = Clock::now() + std::chrono::seconds(20);
        for (;;) {
            auto c = coffer::net::HttpClient::connect(host);
            if (c && (*c)->request("GET", "/_ping").ok()) break;
            if (Clock::now() > until) {
                std::fprintf(stderr, "cofferd did not start\n");
                return 1;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
    }

    // "A"*n base64 would be compressible; use varied bytes (base64 of a counter pattern).
    std::string data_b64;
    for (std::size_t i = 0; data_b64.size() < (value_bytes + 2) / 3 * 4; ++i)
        data_b64 += "QUJD"[i % 4];
    auto run_id = std::to_string(::getpid());
    std::vector<std::string> names;

    for (int clients : {1, 16}) {
        auto s = run(host, clients, ops, seconds, [&](coffer::net::HttpClient& c, int, std::size_t i) {
            auto body = fmt::format(R"({{"Name":"b{}-{}-{}","Labels":{{}},"Data":"{}"}})", run_id,
                                    clients, i, data_b64);
            auto r = c.request("POST", "/v1.41/secrets/create",
                               {reinterpret_cast<const std::uint8_t*>(body.data()), body.size()});
            return r && r->status == 201;
        });
        for (std::size_t i = 0; i < s.latencies_ms.size(); i += std::max<std::size_t>(1, s.latencies_ms.size() / 64))
            names.push_back(fmt::format("b{}-{}-{}", run_id, clients, i));
        report("create", clients, std::move(s));
    }
    for (int clients : {1, 16}) {
        auto s = run(host, clients, ops * 3, seconds, [&](coffer::net::HttpClient& c, int, std::size_t i) {
            auto r = c.request("GET", "/v1.41/secrets/" + names[i % names.size()]);
            return r && r->status == 200;
        });
        report("inspect", clients, std::move(s));
    }

    if (daemon.running()) {
        daemon.signal(SIGTERM);
        daemon.wait_for(std::chrono::seconds(20));
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
    return 0;
}
