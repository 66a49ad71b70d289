#include "etcd_fixture.h"

#include <fcntl.h>
#include <signal.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <fstream>

#include "coffer/base/error.h"

namespace coffer::test {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

constexpr auto start_deadline = 30s;
constexpr auto stop_deadline = 10s;

std::string member_name(int i) {
    return fmt::format("m{}", i);
}

}  // namespace

EtcdCluster::EtcdCluster(fs::path dir, Options o) : dir_(std::move(dir)), options_(o) {
    try {
        fs::create_directories(dir_ / "data");
        if (options_.tls)
            if (error_ = make_certificates(); !error_.empty()) return;
        for (int i = 0; i < options_.members; ++i) {
            client_ports_.push_back(free_port());
            peer_ports_.push_back(free_port());
        }
        children_.resize(static_cast<std::size_t>(options_.members));
        for (int i = 0; i < options_.members; ++i) {
            // Members of a new cluster wait for each other: start them all, then wait.
            if (error_ = start(i); !error_.empty() && error_ != "starting") return;
        }
        error_.clear();
        for (int i = 0; i < options_.members; ++i) {
            std::string why;
            if (!wait_until([&] { return (why = healthy(i)).empty(); }, start_deadline)) {
                error_ =
                    fmt::format("etcd member {} did not become healthy: {}\n{}", i, why, logs());
                return;
            }
        }
    } catch (const std::exception& e) {
        error_ = e.what();
    }
}

EtcdCluster::~EtcdCluster() {
    for (auto& c : children_) stop_child(c, stop_deadline);
    std::error_code ec;
    fs::remove_all(dir_, ec);
}

std::vector<std::string> EtcdCluster::endpoints() const {
    std::vector<std::string> out;
    for (auto p : client_ports_)
        out.push_back(fmt::format("{}://127.0.0.1:{}", options_.tls ? "https" : "http", p));
    return out;
}

std::string EtcdCluster::endpoints_csv() const {
    return fmt::format("{}", fmt::join(endpoints(), ","));
}

std::string EtcdCluster::make_certificates() {
    auto tls = dir_ / "tls";
    fs::create_directories(tls);
    if (auto e = make_test_ca(tls, "coffer test etcd CA"); !e.empty()) return e;
    // The members' certificate serves clients and is also etcd's own client certificate: its
    // JSON gateway reaches its gRPC server with it, which --client-cert-auth checks.
    if (auto e = sign_test_certificate(tls, "server", "127.0.0.1",
                                       "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                       "extendedKeyUsage=serverAuth,clientAuth\n");
        !e.empty())
        return e;
    return sign_test_certificate(tls, "client", "cofferd", "extendedKeyUsage=clientAuth\n");
}

std::string EtcdCluster::start(int member) {
    auto i = static_cast<std::size_t>(member);
    auto data = data_root() / member_name(member);
    bool existing = fs::exists(data / "member");
    std::vector<std::string> initial;
    for (int m = 0; m < options_.members; ++m)
        initial.push_back(fmt::format("{}=http://127.0.0.1:{}", member_name(m),
                                      peer_ports_[static_cast<std::size_t>(m)]));
    auto client_url = endpoints()[i];
    std::vector<std::string> argv{
        "etcd",
        "--name",
        member_name(member),
        "--data-dir",
        data.string(),
        "--listen-client-urls",
        client_url,
        "--advertise-client-urls",
        client_url,
        "--listen-peer-urls",
        fmt::format("http://127.0.0.1:{}", peer_ports_[i]),
        "--initial-advertise-peer-urls",
        fmt::format("http://127.0.0.1:{}", peer_ports_[i]),
        "--initial-cluster",
        fmt::format("{}", fmt::join(initial, ",")),
        "--initial-cluster-state",
        existing ? "existing" : "new",
        "--initial-cluster-token",
        fmt::format("coffer-test-{}", peer_ports_[0]),
        "--logger",
        "zap",
        "--log-level",
        "warn",
        // Quick elections: a killed leader is replaced within a second or two.
        "--heartbeat-interval",
        "50",
        "--election-timeout",
        "500",
    };
    if (options_.max_txn_ops > 0)
        argv.insert(argv.end(), {"--max-txn-ops", std::to_string(options_.max_txn_ops)});
    if (options_.max_request_bytes > 0)
        argv.insert(argv.end(),
                    {"--max-request-bytes", std::to_string(options_.max_request_bytes)});
    if (options_.tls)
        argv.insert(argv.end(), {"--cert-file", (dir_ / "tls" / "server.crt").string(),
                                 "--key-file", (dir_ / "tls" / "server.key").string(),
                                 "--client-cert-auth", "--trusted-ca-file", ca().string()});
    argv.insert(argv.begin(), options_.enter.begin(), options_.enter.end());
    UniqueFd log(::open((dir_ / (member_name(member) + ".log")).c_str(),
                        O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
    if (!log) return "open the member's log";
    children_[i] = Child::spawn({.argv = argv, .stdout_fd = log.get(), .stderr_fd = log.get()});
    if (!existing) return "starting";  // a new cluster answers once enough members run
    std::string why;
    if (!wait_until([&] { return (why = healthy(member)).empty() || exited(children_[i]); },
                    start_deadline) ||
        !why.empty())
        return fmt::format("etcd member {} did not come back: {}\n{}", member, why, logs());
    return "";
}

void EtcdCluster::kill(int member) {
    auto& c = children_[static_cast<std::size_t>(member)];
    if (!c.running()) return;
    c.signal(SIGKILL);
    c.wait();
}

std::string EtcdCluster::healthy(int member) const {
    std::vector<std::string> argv{"etcdctl", "--endpoints",
                                  endpoints()[static_cast<std::size_t>(member)],
                                  "--command-timeout", "2s"};
    if (options_.tls)
        argv.insert(argv.end(), {"--cacert", ca().string(), "--cert", client_cert().string(),
                                 "--key", client_key().string()});
    argv.insert(argv.end(), {"endpoint", "health"});
    argv.insert(argv.begin(), options_.enter.begin(), options_.enter.end());
    try {
        auto r = run_command(argv);
        return r.ok() ? "" : r.describe();
    } catch (const std::exception& e) {
        return e.what();
    }
}

CommandResult EtcdCluster::etcdctl(const std::vector<std::string>& args) const {
    std::vector<std::string> argv{"etcdctl", "--endpoints", endpoints_csv(), "--command-timeout",
                                  "5s"};
    if (options_.tls)
        argv.insert(argv.end(), {"--cacert", ca().string(), "--cert", client_cert().string(),
                                 "--key", client_key().string()});
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.begin(), options_.enter.begin(), options_.enter.end());
    return run_command(argv);
}

std::string EtcdCluster::logs() const {
    std::string out;
    for (int i = 0; i < options_.members; ++i)
        out += fmt::format("---- etcd {}\n{}", member_name(i),
                           read_file(dir_ / (member_name(i) + ".log")));
    return out;
}

}  // namespace coffer::test
