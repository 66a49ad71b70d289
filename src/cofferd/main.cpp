// cofferd: the manager daemon. Options, wiring, run.
#include <netinet/in.h>
#include <signal.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <sodium.h>

#include <charconv>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "coffer/base/log.h"
#include "coffer/base/unique_fd.h"
#include "coffer/base/process.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/manager/api.h"
#include "coffer/manager/manager.h"
#include "coffer/manager/node_port.h"
#include "coffer/net/http_server.h"
#include "coffer/pki/secure_heap.h"
#ifdef COFFER_TEST_HOOKS
#include "test_hooks.h"
#endif

namespace {

using coffer::Result;
using coffer::manager::NodePort;

struct ListenAddress {
    std::string address;
    std::uint16_t port = 0;
};

// "ADDRESS:PORT", "[V6ADDRESS]:PORT". The address itself is checked when binding.
Result<ListenAddress> parse_listen(std::string_view text) {
    auto bad = [&] {
        return coffer::make_error(coffer::Errc::invalid_argument,
                                  fmt::format("--listen {}: expected ADDRESS:PORT", text));
    };
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos || colon == 0) return bad();
    auto host = text.substr(0, colon), port = text.substr(colon + 1);
    if (host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    unsigned value = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (host.empty() || port.empty() || ec != std::errc() || end != port.data() + port.size() || value > 65535)
        return bad();
    return ListenAddress{std::string(host), static_cast<std::uint16_t>(value)};
}

// A locked manager starts its node port only at unlock; refuse a port that is taken now, at
// start, rather than fail later where no one sees it.
Result<void> probe_listen(const ListenAddress& where) {
    sockaddr_storage sa{};
    socklen_t len = 0;
    auto* v4 = reinterpret_cast<sockaddr_in*>(&sa);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&sa);
    if (::inet_pton(AF_INET, where.address.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(where.port);
        len = sizeof(*v4);
    } else if (::inet_pton(AF_INET6, where.address.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(where.port);
        len = sizeof(*v6);
    } else {
        return coffer::make_error(coffer::Errc::invalid_argument, fmt::format("bad address {}", where.address));
    }
    coffer::UniqueFd fd(::socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    int on = 1;
    if (!fd || ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
        ::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), len) != 0 || ::listen(fd.get(), 1) != 0)
        return coffer::make_error(coffer::Errc::unavailable, fmt::format("listen on {}:{}: {}", where.address,
                                                                         where.port, std::strerror(errno)));
    return {};
}

// The node port exists from the moment the store is unlocked (at start, or when `coffer cluster
// unlock` succeeds) until shutdown.
class NodePortSlot {
public:
    NodePortSlot(coffer::manager::Manager& manager, ListenAddress where)
        : manager_(manager), where_(std::move(where)) {}

    Result<void> start() {
        std::lock_guard lock(mutex_);
        if (stopped_ || port_) return {};
        auto port = NodePort::start(manager_, {.address = where_.address, .port = where_.port});
        if (!port) return std::move(port).error();
        coffer::log::info("manager", "node port on {}:{}", where_.address, (*port)->port());
        port_ = std::move(*port);
        return {};
    }
    // Closes every node session; later start()s do nothing.
    void stop() {
        std::lock_guard lock(mutex_);
        stopped_ = true;
        port_.reset();
    }

private:
    coffer::manager::Manager& manager_;
    ListenAddress where_;
    std::mutex mutex_;
    bool stopped_ = false;
    std::unique_ptr<NodePort> port_;
};

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"cofferd: the coffer manager"};
    std::string data_dir = "/var/lib/coffer";
    std::string socket = "/run/coffer/coffer.sock";
    std::string log_spec = "info";
    std::string listen = "0.0.0.0:4243";
    bool autolock = false;
    app.add_option("--data-dir", data_dir, "Data directory (created 0700)")->capture_default_str();
    app.add_option("--socket", socket, "Unix socket for the API (mode 0660)")->capture_default_str();
    app.add_option("--listen", listen, "Node port (ADDRESS:PORT): nodes join and keep their sessions here")
        ->capture_default_str();
    app.add_flag("--autolock", autolock,
                 "At first start: protect the store with an unlock key shown once and never stored");
    app.add_option("--log-level", log_spec, "Log levels: LEVEL[,CATEGORY=LEVEL...]")->capture_default_str();
    CLI11_PARSE(app, argc, argv);

    coffer::log::configure(log_spec);
    auto listen_at = parse_listen(listen);
    if (!listen_at) {
        std::fprintf(stderr, "cofferd: %s\n", listen_at.error().message.c_str());
        return 1;
    }
    try {
        coffer::harden_process();
        // A descriptor per node session and per API connection.
        auto descriptors = coffer::raise_descriptor_limit();
        coffer::crypto::init();
        if (auto r = coffer::pki::init_secure_heap(); !r)
            coffer::log::warn("manager", "{}: private keys use ordinary memory", r.error().message);
        ::umask(077);
        ::signal(SIGPIPE, SIG_IGN);

        auto opened = coffer::manager::Manager::open({.data_dir = data_dir, .autolock = autolock});
        if (!opened) {
            std::fprintf(stderr, "cofferd: %s\n", opened.error().message.c_str());
            return 1;
        }
        auto& manager = *opened->manager;
        if (opened->new_unlock_key) {
            const auto& k = *opened->new_unlock_key;
            std::string line(reinterpret_cast<const char*>(k.data()), k.size());
            std::printf("coffer is autolocked. The unlock key, shown this once and stored nowhere:\n\n"
                        "    %s\n\nEvery restart needs it: `coffer cluster unlock`.\n", line.c_str());
            std::fflush(stdout);
            sodium_memzero(line.data(), line.size());
        }
        NodePortSlot node_port(manager, *listen_at);
        if (manager.locked()) {
            coffer::log::warn("manager", "store is locked: run `coffer cluster unlock`");
            if (auto r = probe_listen(*listen_at); !r) {
                std::fprintf(stderr, "cofferd: node port: %s\n", r.error().message.c_str());
                return 1;
            }
            manager.on_unlocked([&node_port] {
                if (auto r = node_port.start(); !r)
                    coffer::log::error("manager", "node port: {}", r.error().message);
            });
        } else if (auto r = node_port.start(); !r) {
            std::fprintf(stderr, "cofferd: %s\n", r.error().message.c_str());
            return 1;
        }

        coffer::manager::Api api(manager);
        coffer::net::HttpServer server({.socket_path = socket, .headers = coffer::manager::api_headers()},
                                       api);
        coffer::log::info("manager", "serving on unix://{} (data in {}; up to {} open descriptors)", socket,
                          data_dir, descriptors);
#ifdef COFFER_TEST_HOOKS
        auto hooks = coffer::testhooks::start(manager);
#endif
        server.run(true);
        // The nodes' sessions end before the manager's registries go.
        manager.on_unlocked(nullptr);
        node_port.stop();
        coffer::log::info("manager", "stopped");
    } catch (const std::exception& e) {
        std::fprintf(stderr, "cofferd: %s\n", e.what());
        return 1;
    }
    return 0;
}
