// Load generator for cofferd's API over its unix socket: secret create and inspect with 1 and
// 16 concurrent clients (one keep-alive connection each), reporting ops/s and p50/p99 latency.
//
//   bench-loadgen --cofferd build/src/cofferd/cofferd [--ops 20000] [--seconds 5] [--skip-inspect]
//
// Starts its own cofferd on a fresh data directory (synchronous writes, as in production), or
// uses a running one with --host unix:///path.
#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
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

// Runs requests from `clients` connections until `ops` were answered or `seconds` passed. Every
// connection is multiplexed on one thread (epoll, raw HTTP/1.1):
// the generator's own cost stays small, so the figures measure cofferd rather than the client.
// make(i) gives request i's bytes; ok(status line) says whether the answer is a success.
template <typename Make>
Stats run_epoll(const std::string& path, int clients, std::size_t ops, double seconds, Make make,
                std::string_view expect) {
    struct Conn {
        int fd = -1;
        std::string out, in;
        std::size_t sent = 0;
        Clock::time_point t0;
    };
    Stats s;
    int ep = ::epoll_create1(EPOLL_CLOEXEC);
    std::vector<Conn> conns(static_cast<std::size_t>(clients));
    std::size_t next = 0, inflight = 0;
    auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
    auto start = Clock::now();
    // Writes what is left of c's request; asks for EPOLLOUT only while some remains.
    auto flush = [&](Conn& c, std::size_t index) {
        while (c.sent < c.out.size()) {
            ssize_t w = ::write(c.fd, c.out.data() + c.sent, c.out.size() - c.sent);
            if (w <= 0) break;
            c.sent += static_cast<std::size_t>(w);
        }
        epoll_event ev{};
        ev.events = EPOLLIN | (c.sent < c.out.size() ? EPOLLOUT : 0u);
        ev.data.u64 = index;
        ::epoll_ctl(ep, EPOLL_CTL_MOD, c.fd, &ev);
    };
    auto issue = [&](Conn& c, std::size_t index) {
        if (next >= ops || Clock::now() > deadline) return;
        c.out = make(next++);
        c.sent = 0;
        c.in.clear();
        c.t0 = Clock::now();
        ++inflight;
        flush(c, index);
    };
    for (std::size_t i = 0; i < conns.size(); ++i) {
        auto& c = conns[i];
        c.fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
        if (::connect(c.fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
            ++s.errors;
            continue;
        }
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = i;
        ::epoll_ctl(ep, EPOLL_CTL_ADD, c.fd, &ev);
        issue(c, i);
    }
    std::vector<epoll_event> events(conns.size());
    char buf[65536];
    while (inflight > 0) {
        int n = ::epoll_wait(ep, events.data(), static_cast<int>(events.size()), 1000);
        if (n == 0 && Clock::now() > deadline + std::chrono::seconds(10)) break;  // server stuck
        for (int e = 0; e < n; ++e) {
            auto index = events[static_cast<std::size_t>(e)].data.u64;
            auto& c = conns[index];
            if (events[static_cast<std::size_t>(e)].events & EPOLLOUT) flush(c, index);
            for (;;) {
                ssize_t r = ::read(c.fd, buf, sizeof buf);
                if (r <= 0) break;
                c.in.append(buf, static_cast<std::size_t>(r));
            }
            auto head_end = c.in.find("\r\n\r\n");
            if (head_end == std::string::npos) continue;
            std::size_t length = 0;
            if (auto cl = c.in.find("Content-Length: "); cl != std::string::npos && cl < head_end)
                length = std::strtoul(c.in.c_str() + cl + 16, nullptr, 10);
            if (c.in.size() < head_end + 4 + length) continue;
            s.latencies_ms.push_back(
                std::chrono::duration<double, std::milli>(Clock::now() - c.t0).count());
            if (c.in.compare(9, expect.size(), expect) != 0) ++s.errors;  // "HTTP/1.1 201 ..."
            --inflight;
            issue(c, index);
        }
    }
    s.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    for (auto& c : conns)
        if (c.fd >= 0) ::close(c.fd);
    ::close(ep);
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
    std::vector<int> client_counts{1, 16};
    app.add_option("--cofferd", cofferd, "cofferd binary to start on a temporary data directory");
    app.add_option("--host", host, "Use a running cofferd (unix:///path) instead");
    app.add_option("--ops", ops, "Operations per scenario (at most)")->capture_default_str();
    app.add_option("--seconds", seconds, "Time per scenario (at most)")->capture_default_str();
    app.add_option("--value-bytes", value_bytes, "Secret size")->capture_default_str();
    app.add_option("--clients", client_counts, "Concurrent clients per scenario")
        ->capture_default_str();
    bool skip_inspect = false;
    app.add_flag("--skip-inspect", skip_inspect, "Only the create scenarios");
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

    auto path = host.substr(host.rfind("unix://", 0) == 0 ? 7 : 0);
    for (int clients : client_counts) {
        auto s = run_epoll(
            path, clients, ops, seconds,
            [&](std::size_t i) {
                auto body = fmt::format(R"({{"Name":"b{}-{}-{}","Labels":{{}},"Data":"{}"}})",
                                        run_id, clients, i, data_b64);
                return fmt::format(
                    "POST /v1.41/secrets/create HTTP/1.1\r\nHost: coffer\r\n"
                    "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
                    body.size(), body);
            },
            "201");
        for (std::size_t i = 0; i < s.latencies_ms.size();
             i += std::max<std::size_t>(1, s.latencies_ms.size() / 64))
            names.push_back(fmt::format("b{}-{}-{}", run_id, clients, i));
        report("create", clients, std::move(s));
    }
    for (int clients : skip_inspect ? std::vector<int>{} : client_counts) {
        auto s = run_epoll(
            path, clients, ops * 3, seconds,
            [&](std::size_t i) {
                return fmt::format("GET /v1.41/secrets/{} HTTP/1.1\r\nHost: coffer\r\n\r\n",
                                   names[i % names.size()]);
            },
            "200");
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
