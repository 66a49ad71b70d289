#include "coffer/base/metrics_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstring>
#include <list>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

#include "coffer/base/error.h"
#include "coffer/base/log.h"
#include "coffer/base/metrics.h"
#include "coffer/base/unique_fd.h"

namespace coffer::metrics {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t head_limit = 8 * 1024;
constexpr std::size_t max_connections = 64;
constexpr auto connection_deadline = std::chrono::seconds(10);

struct Connection {
    UniqueFd fd;
    Clock::time_point deadline;
    std::string in;
    std::string out;  // the response, once the request head is in
    std::size_t sent = 0;
};

std::string_view reason(int status) {
    switch (status) {
        case 200:
            return "OK";
        case 400:
            return "Bad Request";
        case 404:
            return "Not Found";
        case 405:
            return "Method Not Allowed";
        case 431:
            return "Request Header Fields Too Large";
        case 503:
            return "Service Unavailable";
        default:
            return "Internal Server Error";
    }
}

std::string response(const Answer& a, bool head) {
    auto out = fmt::format(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n"
        "Connection: close\r\n\r\n",
        a.status, reason(a.status), a.content_type, a.body.size());
    if (!head) out += a.body;
    return out;
}

Answer plain(int status, std::string_view text) {
    return Answer{status, "text/plain; charset=utf-8", fmt::format("{}\n", text)};
}

}  // namespace

struct Server::Impl {
    Server::Routes routes;
    UniqueFd listener;
    UniqueFd wake;  // an eventfd: the destructor's stop
    std::string bound;
    std::uint16_t port = 0;
    std::thread thread;

    void bind(std::string_view listen);
    void run();
    Answer answer(std::string_view head, bool& is_head) const;
};

void Server::Impl::bind(std::string_view listen) {
    auto bad = [&](std::string_view why) {
        return std::runtime_error(fmt::format("metrics address {}: {}", listen, why));
    };
    auto colon = listen.rfind(':');
    if (colon == std::string_view::npos || colon == 0) throw bad("expected ADDRESS:PORT");
    auto host = listen.substr(0, colon), port_text = listen.substr(colon + 1);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
        host = host.substr(1, host.size() - 2);
    unsigned value = 0;
    auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), value);
    if (port_text.empty() || ec != std::errc() || end != port_text.data() + port_text.size() ||
        value > 65535)
        throw bad("expected ADDRESS:PORT");
    std::string host_text(host);
    sockaddr_storage sa{};
    socklen_t len = 0;
    auto* v4 = reinterpret_cast<sockaddr_in*>(&sa);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&sa);
    if (::inet_pton(AF_INET, host_text.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(static_cast<std::uint16_t>(value));
        len = sizeof(*v4);
    } else if (::inet_pton(AF_INET6, host_text.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(static_cast<std::uint16_t>(value));
        len = sizeof(*v6);
    } else {
        throw bad("not an IPv4 or IPv6 address");
    }
    listener.reset(::socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    int on = 1;
    if (!listener || ::setsockopt(listener.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
        ::bind(listener.get(), reinterpret_cast<sockaddr*>(&sa), len) != 0 ||
        ::listen(listener.get(), 64) != 0)
        throw bad(std::strerror(errno));
    len = sizeof sa;
    if (::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&sa), &len) != 0)
        throw bad(std::strerror(errno));
    port = ntohs(sa.ss_family == AF_INET ? v4->sin_port : v6->sin6_port);
    bound = sa.ss_family == AF_INET ? fmt::format("{}:{}", host_text, port)
                                    : fmt::format("[{}]:{}", host_text, port);
    wake.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!wake) throw bad(fmt::format("eventfd: {}", std::strerror(errno)));
}

// The answer to a complete request head: "METHOD TARGET HTTP/1.x", the rest ignored.
Answer Server::Impl::answer(std::string_view head, bool& is_head) const {
    auto line = head.substr(0, head.find_first_of("\r\n"));
    auto sp1 = line.find(' ');
    auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || !line.substr(sp2 + 1).starts_with("HTTP/1."))
        return plain(400, "malformed request");
    auto method = line.substr(0, sp1);
    auto target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    auto path = target.substr(0, target.find('?'));
    is_head = method == "HEAD";
    for (const auto& [route, handler] : routes) {
        if (route != path) continue;
        if (method != "GET" && !is_head) return plain(405, "only GET and HEAD");
        try {
            return handler();
        } catch (const std::exception& e) {
            log::warn("metrics", "{}: {}", route, e.what());
            return plain(500, "internal error");
        }
    }
    return plain(404, "not found");
}

void Server::Impl::run() {
    std::list<Connection> connections;
    std::vector<pollfd> fds;
    for (;;) {
        auto now = Clock::now();
        // Connections past their deadline are dropped (a slow or silent peer).
        connections.remove_if([&](const Connection& c) { return c.deadline <= now; });
        fds.clear();
        fds.push_back({wake.get(), POLLIN, 0});
        fds.push_back({listener.get(), POLLIN, 0});
        auto next = now + connection_deadline;
        for (const auto& c : connections) {
            fds.push_back({c.fd.get(), static_cast<short>(c.out.empty() ? POLLIN : POLLOUT), 0});
            next = std::min(next, c.deadline);
        }
        auto wait = std::chrono::ceil<std::chrono::milliseconds>(next - now).count();
        int n = ::poll(fds.data(), fds.size(), static_cast<int>(std::max<std::int64_t>(wait, 0)));
        if (n < 0 && errno != EINTR) {
            log::error("metrics", "poll: {}", std::strerror(errno));
            return;
        }
        if (n <= 0) continue;
        if (fds[0].revents != 0) return;
        if (fds[1].revents & POLLIN) {
            // At the cap, a new connection takes the place of the oldest one still sending its
            // request: idle or half-sent connections cannot keep a scrape or a health check out
            // (a real client sends its request at once). The one it replaces is dropped on the
            // next turn, so that the list stays in step with fds until then.
            constexpr auto evicted = Clock::time_point::min();
            std::size_t active = 0;
            for (const auto& c : connections) active += c.deadline != evicted ? 1 : 0;
            for (int accepted = 0; accepted < 64; ++accepted) {
                UniqueFd fd(
                    ::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
                if (!fd) break;
                if (active >= max_connections) {
                    auto victim = std::find_if(connections.begin(), connections.end(),
                                               [&](const Connection& c) {
                                                   return c.deadline != evicted && c.out.empty();
                                               });
                    if (victim == connections.end()) continue;  // all answering: refused
                    victim->deadline = evicted;
                    --active;
                }
                connections.push_back(
                    {std::move(fd), Clock::now() + connection_deadline, {}, {}, 0});
                ++active;
            }
        }
        std::size_t i = 2;
        for (auto it = connections.begin(); it != connections.end() && i < fds.size(); ++i) {
            auto& c = *it;
            auto revents = fds[i].revents;
            bool done = false;
            if (revents & (POLLERR | POLLNVAL)) {
                done = true;
            } else if (c.out.empty() && (revents & (POLLIN | POLLHUP))) {
                char buf[2048];
                auto got = ::read(c.fd.get(), buf, sizeof buf);
                if (got <= 0) {
                    done = got == 0 || (errno != EAGAIN && errno != EINTR);
                } else {
                    c.in.append(buf, static_cast<std::size_t>(got));
                    auto end = c.in.find("\r\n\r\n");
                    if (end == std::string::npos) end = c.in.find("\n\n");
                    bool is_head = false;
                    // Past the limit, with or without its end: refused at the byte it says.
                    if ((end == std::string::npos ? c.in.size() : end) > head_limit) {
                        c.out = response(plain(431, "request head too large"), false);
                    } else if (end != std::string::npos) {
                        auto a = answer(c.in, is_head);
                        c.out = response(a, is_head);
                    }
                }
            } else if (!c.out.empty() && (revents & POLLOUT)) {
                auto put =
                    ::send(c.fd.get(), c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
                if (put > 0) c.sent += static_cast<std::size_t>(put);
                done = c.sent == c.out.size() || (put < 0 && errno != EAGAIN && errno != EINTR);
                if (c.sent == c.out.size()) ::shutdown(c.fd.get(), SHUT_WR);
            }
            it = done ? connections.erase(it) : std::next(it);
        }
    }
}

Server::Server(std::string_view listen, Routes routes) : impl_(std::make_unique<Impl>()) {
    impl_->routes = std::move(routes);
    impl_->bind(listen);
    impl_->thread = std::thread([impl = impl_.get()] { impl->run(); });
}

Server::~Server() {
    std::uint64_t one = 1;
    (void)!::write(impl_->wake.get(), &one, sizeof one);
    impl_->thread.join();
}

std::uint16_t Server::port() const noexcept {
    return impl_->port;
}

std::string Server::address() const {
    return impl_->bound;
}

Server::Routes standard_routes(std::function<Answer()> health) {
    Server::Routes routes;
    routes.emplace_back("/metrics", [] {
        return Answer{200, exposition_content_type, registry().expose()};
    });
    routes.emplace_back("/health", [health = std::move(health)] {
        auto a = health();
        a.content_type = "application/json";
        return a;
    });
    return routes;
}

}  // namespace coffer::metrics
