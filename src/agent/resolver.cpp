// The resolver's server: one thread polls the listeners (UDP and TCP on each gateway address),
// the TCP connections and the queries forwarded upstream. Nothing blocks it: every socket is
// non-blocking, every connection and forward has a deadline, and their numbers are bounded.
#include "coffer/agent/resolver.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

#include "coffer/base/log.h"
#include "coffer/base/unique_fd.h"

namespace coffer::agent {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr const char* category = "resolver";
constexpr std::size_t max_upstreams = 3;
constexpr auto upstream_timeout = 2s;  // per upstream server; Docker waits 4 s
constexpr std::size_t max_forwards = 256;
constexpr std::size_t max_tcp_connections = 64;
constexpr auto tcp_idle_timeout = 5s;
constexpr auto tcp_lifetime = 30s;
constexpr std::size_t max_tcp_output = 256 * 1024;
constexpr std::size_t max_datagrams_per_wake = 64;
constexpr std::size_t max_message = 65535;

struct Upstream {
    sockaddr_storage addr{};
    socklen_t len = 0;
    std::string text;
};

std::optional<Upstream> parse_upstream(const std::string& s) {
    Upstream u;
    u.text = s;
    std::string host = s;
    std::uint16_t port = 53;
    auto set_port = [&port](std::string_view p) {
        if (p.empty() || p.size() > 5) return false;
        unsigned v = 0;
        for (char c : p) {
            if (c < '0' || c > '9') return false;
            v = v * 10 + static_cast<unsigned>(c - '0');
        }
        if (v == 0 || v > 65535) return false;
        port = static_cast<std::uint16_t>(v);
        return true;
    };
    if (!s.empty() && s.front() == '[') {
        auto close = s.find(']');
        if (close == std::string::npos) return std::nullopt;
        host = s.substr(1, close - 1);
        if (close + 1 < s.size() && (s[close + 1] != ':' || !set_port(s.substr(close + 2))))
            return std::nullopt;
    } else if (std::count(s.begin(), s.end(), ':') == 1) {
        auto colon = s.find(':');
        host = s.substr(0, colon);
        if (!set_port(s.substr(colon + 1))) return std::nullopt;
    }
    auto* v4 = reinterpret_cast<sockaddr_in*>(&u.addr);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&u.addr);
    if (::inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        u.len = sizeof(sockaddr_in);
    } else if (::inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        u.len = sizeof(sockaddr_in6);
    } else {
        return std::nullopt;
    }
    return u;
}

Result<UniqueFd> bind_socket(const std::string& address, int type) {
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(53);
    if (::inet_pton(AF_INET, address.c_str(), &sa.sin_addr) != 1)
        return make_error(Errc::invalid_argument, fmt::format("not an IPv4 address: {}", address));
    UniqueFd fd(::socket(AF_INET, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    const char* kind = type == SOCK_STREAM ? "tcp" : "udp";
    auto fail = [&](const char* what) {
        return make_error(Errc::unavailable, fmt::format("{} {}/{}:53: {}", what, kind, address,
                                                         std::strerror(errno)));
    };
    if (!fd) return fail("socket");
    int one = 1;
    // The address may reach its bridge after this (or be taken off and put back): bind anyway.
    if (::setsockopt(fd.get(), IPPROTO_IP, IP_FREEBIND, &one, sizeof one) != 0)
        return fail("IP_FREEBIND");
    if (type == SOCK_STREAM &&
        ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0)
        return fail("SO_REUSEADDR");
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) return fail("bind");
    if (type == SOCK_STREAM && ::listen(fd.get(), 64) != 0) return fail("listen");
    return fd;
}

std::uint32_t source_of(const sockaddr_storage& ss) {
    if (ss.ss_family != AF_INET) return 0;
    return ntohl(reinterpret_cast<const sockaddr_in*>(&ss)->sin_addr.s_addr);
}

}  // namespace

struct Resolver::Impl {
    struct Listener {
        std::string network_id;
        UniqueFd udp, tcp;
    };
    // Where an answer goes: a UDP asker through the listener it wrote to, or a TCP connection.
    struct Target {
        std::string listener;  // the gateway address (the key of listeners)
        sockaddr_storage client{};
        socklen_t client_len = 0;
        std::uint64_t conn = 0;  // nonzero: a TCP connection's id
    };
    struct Forward {
        UniqueFd fd;
        dns::Query query;  // with the id sent upstream
        std::uint16_t client_id = 0;
        std::vector<std::uint8_t> packet;
        std::size_t server = 0;
        Clock::time_point deadline;
        Target target;
    };
    struct Conn {
        UniqueFd fd;
        std::string listener;
        std::string network_id;
        std::uint32_t source = 0;
        std::vector<std::uint8_t> in, out;
        Clock::time_point created, last;
    };

    std::vector<Upstream> upstream;
    UniqueFd wake;
    std::atomic<bool> stopping{false};

    std::mutex mu;  // guards the three below, shared with set()
    std::shared_ptr<const NameTable> table = std::make_shared<NameTable>();
    std::map<std::string, Listener> listeners;  // by gateway address
    std::vector<Listener> retired;              // closed by the loop, which may be polling them

    // The loop's own.
    std::map<std::uint64_t, Conn> conns;
    std::uint64_t next_conn = 1;
    std::vector<std::unique_ptr<Forward>> forwards;
    std::minstd_rand rng{std::random_device{}()};
    std::mt19937 id_rng{std::random_device{}()};

    std::thread thread;

    void run();
    void serve(const NameTable& t, const std::string& network_id, std::uint32_t source,
               std::span<const std::uint8_t> packet, Target target);
    void deliver(const Target& target, std::span<const std::uint8_t> reply);
    void start_forward(std::unique_ptr<Forward> f);
    void forward_done(Forward& f, std::span<const std::uint8_t> reply);
    void read_udp(const NameTable& t, const std::string& key, const std::string& network, int fd);
    void accept_tcp(const std::string& key, const std::string& network, int fd);
    void read_conn(const NameTable& t, std::uint64_t id);
    void read_forward(Forward& f);
};

Resolver::Resolver()
    : Resolver([] {
          std::ifstream in("/etc/resolv.conf");
          std::stringstream s;
          s << in.rdbuf();
          return nameservers_from(s.str());
      }()) {}

Resolver::Resolver(std::vector<std::string> upstream) : impl_(std::make_unique<Impl>()) {
    for (const auto& u : upstream) {
        if (impl_->upstream.size() == max_upstreams) break;
        if (auto p = parse_upstream(u))
            impl_->upstream.push_back(*p);
        else
            log::warn(category, "ignoring upstream nameserver {}: not an address", u);
    }
    impl_->wake = UniqueFd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!impl_->wake) throw_errno("eventfd for the resolver");
    impl_->thread = std::thread([impl = impl_.get()] { impl->run(); });
}

Resolver::~Resolver() {
    impl_->stopping = true;
    std::uint64_t one = 1;
    (void)!::write(impl_->wake.get(), &one, sizeof one);
    impl_->thread.join();
}

Result<void> Resolver::set(const nodeproto::NetworksMessage& m) {
    auto table = std::make_shared<const NameTable>(m);
    std::map<std::string, std::string> wanted;  // gateway -> network id
    for (const auto& n : m.networks)
        if (!n.gateway.empty()) wanted.emplace(n.gateway, n.id);

    std::lock_guard lock(impl_->mu);
    auto& listeners = impl_->listeners;
    std::map<std::string, Impl::Listener> fresh;
    for (const auto& [address, network] : wanted) {
        if (listeners.contains(address)) continue;
        auto udp = bind_socket(address, SOCK_DGRAM);
        if (!udp) return std::move(udp).error().context("resolver");
        auto tcp = bind_socket(address, SOCK_STREAM);
        if (!tcp) return std::move(tcp).error().context("resolver");
        fresh.emplace(address, Impl::Listener{network, std::move(*udp), std::move(*tcp)});
    }
    for (auto it = listeners.begin(); it != listeners.end();) {
        auto w = wanted.find(it->first);
        if (w == wanted.end()) {
            impl_->retired.push_back(std::move(it->second));
            it = listeners.erase(it);
        } else {
            it->second.network_id = w->second;
            ++it;
        }
    }
    listeners.merge(fresh);
    impl_->table = std::move(table);
    std::uint64_t one = 1;
    (void)!::write(impl_->wake.get(), &one, sizeof one);
    return {};
}

void Resolver::Impl::run() {
    std::vector<pollfd> fds;
    // What each pollfd is: 0 wake, 1 udp listener, 2 tcp listener, 3 connection, 4 forward.
    struct Slot {
        int kind;
        std::string key;
        std::uint64_t conn = 0;
        Forward* forward = nullptr;
    };
    std::vector<Slot> slots;
    while (!stopping) {
        std::shared_ptr<const NameTable> t;
        std::vector<Listener> closing;
        {
            std::lock_guard lock(mu);
            closing.swap(retired);
            t = table;
        }
        closing.clear();

        // Deadlines: connections idle or too old, forwards unanswered.
        auto now = Clock::now();
        for (auto it = conns.begin(); it != conns.end();) {
            if (now - it->second.last > tcp_idle_timeout || now - it->second.created > tcp_lifetime)
                it = conns.erase(it);
            else
                ++it;
        }
        for (std::size_t i = 0; i < forwards.size(); ++i) {
            if (forwards[i]->deadline <= now) {
                auto f = std::move(forwards[i]);
                forwards.erase(forwards.begin() + static_cast<std::ptrdiff_t>(i--));
                ++f->server;
                start_forward(std::move(f));
            }
        }

        fds.clear();
        slots.clear();
        fds.push_back({wake.get(), POLLIN, 0});
        slots.push_back({0, {}});
        {
            std::lock_guard lock(mu);
            for (auto& [key, l] : listeners) {
                fds.push_back({l.udp.get(), POLLIN, 0});
                slots.push_back({1, key});
                fds.push_back({l.tcp.get(), POLLIN, 0});
                slots.push_back({2, key});
            }
        }
        for (auto& [id, c] : conns) {
            short events = POLLIN;
            if (!c.out.empty()) events |= POLLOUT;
            fds.push_back({c.fd.get(), events, 0});
            slots.push_back({3, {}, id});
        }
        Clock::time_point next = now + 1s;
        for (auto& f : forwards) {
            fds.push_back({f->fd.get(), POLLIN, 0});
            slots.push_back({4, {}, 0, f.get()});
            next = std::min(next, f->deadline);
        }
        for (auto& [id, c] : conns) next = std::min(next, c.last + tcp_idle_timeout);
        auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count();
        int rc = ::poll(fds.data(), fds.size(), static_cast<int>(std::max<long long>(wait, 0) + 1));
        if (rc < 0) {
            if (errno == EINTR) continue;
            log::error(category, "poll: {}", std::strerror(errno));
            std::this_thread::sleep_for(100ms);
            continue;
        }
        if (rc == 0) continue;

        for (std::size_t i = 0; i < fds.size(); ++i) {
            if (fds[i].revents == 0) continue;
            const Slot& s = slots[i];
            switch (s.kind) {
                case 0: {
                    std::uint64_t v;
                    (void)!::read(wake.get(), &v, sizeof v);
                    break;
                }
                case 1:
                case 2: {
                    std::unique_lock lock(mu);
                    auto it = listeners.find(s.key);
                    if (it == listeners.end()) break;
                    // Listeners are only ever added to or moved out of the map under mu, and
                    // closed by this thread: the one found stays open while it is used here.
                    std::string network = it->second.network_id;
                    int fd = s.kind == 1 ? it->second.udp.get() : it->second.tcp.get();
                    lock.unlock();
                    if (s.kind == 1)
                        read_udp(*t, s.key, network, fd);
                    else
                        accept_tcp(s.key, network, fd);
                    break;
                }
                case 3: {
                    auto it = conns.find(s.conn);
                    if (it == conns.end()) break;
                    Conn& c = it->second;
                    bool alive = true;
                    if (fds[i].revents & POLLOUT) {
                        ssize_t n = ::send(c.fd.get(), c.out.data(), c.out.size(), MSG_NOSIGNAL);
                        if (n > 0)
                            c.out.erase(c.out.begin(), c.out.begin() + n);
                        else if (n < 0 && errno != EAGAIN && errno != EINTR)
                            alive = false;
                    }
                    if (alive && (fds[i].revents & (POLLIN | POLLHUP | POLLERR))) {
                        read_conn(*t, s.conn);
                        alive = conns.contains(s.conn);
                        if (!alive) break;
                    }
                    if (!alive) conns.erase(it);
                    break;
                }
                case 4: {
                    for (std::size_t k = 0; k < forwards.size(); ++k) {
                        if (forwards[k].get() != s.forward) continue;
                        read_forward(*forwards[k]);
                        break;
                    }
                    break;
                }
            }
        }
        // Forwards that ended while reading (answered, or moved to their next server).
        std::erase_if(forwards, [](const std::unique_ptr<Forward>& f) { return !f->fd; });
    }
}

void Resolver::Impl::read_udp(const NameTable& t, const std::string& key,
                              const std::string& network, int fd) {
    std::uint8_t buf[dns::max_udp_size + 1];
    for (std::size_t i = 0; i < max_datagrams_per_wake; ++i) {
        Target target;
        target.listener = key;
        target.client_len = sizeof target.client;
        ssize_t n = ::recvfrom(fd, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&target.client),
                               &target.client_len);
        if (n < 0) return;  // EAGAIN, or an error that poll reports again
        if (static_cast<std::size_t>(n) > dns::max_udp_size) continue;  // larger than any query
        serve(t, network, source_of(target.client),
              std::span<const std::uint8_t>(buf, static_cast<std::size_t>(n)), std::move(target));
    }
}

void Resolver::Impl::accept_tcp(const std::string& key, const std::string& network, int fd) {
    for (std::size_t i = 0; i < max_datagrams_per_wake; ++i) {
        sockaddr_storage peer{};
        socklen_t len = sizeof peer;
        UniqueFd conn(
            ::accept4(fd, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (!conn) return;
        if (conns.size() >= max_tcp_connections) {
            log::debug(category, "tcp connection refused: {} open", conns.size());
            continue;  // closed at once: the backlog never fills with the excess
        }
        Conn c;
        c.fd = std::move(conn);
        c.listener = key;
        c.network_id = network;
        c.source = source_of(peer);
        c.created = c.last = Clock::now();
        conns.emplace(next_conn++, std::move(c));
    }
}

void Resolver::Impl::read_conn(const NameTable& t, std::uint64_t id) {
    Conn& c = conns.at(id);
    std::uint8_t buf[16384];
    ssize_t n = ::recv(c.fd.get(), buf, sizeof buf, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        conns.erase(id);
        return;
    }
    if (n < 0) return;
    c.last = Clock::now();
    c.in.insert(c.in.end(), buf, buf + n);
    while (c.in.size() >= 2) {
        std::size_t len = (std::size_t{c.in[0]} << 8) | c.in[1];
        if (len < dns::header_size) {  // no query is this short: a broken stream
            conns.erase(id);
            return;
        }
        if (c.in.size() < 2 + len) break;
        std::vector<std::uint8_t> msg(c.in.begin() + 2, c.in.begin() + 2 + static_cast<long>(len));
        c.in.erase(c.in.begin(), c.in.begin() + 2 + static_cast<long>(len));
        Target target;
        target.listener = c.listener;
        target.conn = id;
        serve(t, c.network_id, c.source, msg, std::move(target));
        if (!conns.contains(id)) return;
        if (c.out.size() > max_tcp_output) {  // a client that asks but does not read
            conns.erase(id);
            return;
        }
    }
}

void Resolver::Impl::serve(const NameTable& t, const std::string& network_id, std::uint32_t source,
                           std::span<const std::uint8_t> packet, Target target) {
    auto parsed = dns::parse_query(packet);
    const dns::Query& q = parsed.query;
    switch (parsed.status) {
        case dns::Parsed::Status::drop:
            return;
        case dns::Parsed::Status::formerr:
            deliver(target, dns::build_header_reply(q, dns::Rcode::formerr));
            return;
        case dns::Parsed::Status::notimp:
            deliver(target, dns::build_header_reply(q, dns::Rcode::notimp));
            return;
        case dns::Parsed::Status::ok:
            break;
    }
    std::size_t max_size = target.conn ? max_message : q.udp_size;
    auto reply = [&](dns::Rcode rcode, std::span<const dns::Ipv4> addrs, std::uint32_t ttl) {
        deliver(target, dns::build_reply(q, rcode, addrs, ttl, max_size));
    };
    auto a = t.lookup(network_id, source, q.plain ? std::string_view(q.name) : std::string_view{});
    switch (a.kind) {
        case NameTable::Answer::Kind::refused:
            reply(dns::Rcode::refused, {}, 0);
            return;
        case NameTable::Answer::Kind::found:
            // A name of ours: A records; any other type (AAAA, MX, ...) has no data.
            if (q.qtype != dns::type_a || q.qclass != dns::class_in) a.addresses.clear();
            std::shuffle(a.addresses.begin(), a.addresses.end(), rng);
            reply(dns::Rcode::noerror, a.addresses, a.ttl);
            return;
        case NameTable::Answer::Kind::unknown:
            break;
    }
    // As Docker: a task on internal networks only is not given the node's resolvers.
    if (!a.forward || upstream.empty()) {
        reply(dns::Rcode::servfail, {}, 0);
        return;
    }
    if (forwards.size() >= max_forwards) {
        reply(dns::Rcode::refused, {}, 0);
        return;
    }
    auto f = std::make_unique<Forward>();
    f->query = q;
    f->client_id = q.id;
    f->query.id = static_cast<std::uint16_t>(id_rng());
    f->packet.assign(packet.begin(), packet.end());
    f->packet[0] = static_cast<std::uint8_t>(f->query.id >> 8);
    f->packet[1] = static_cast<std::uint8_t>(f->query.id & 0xff);
    f->target = std::move(target);
    start_forward(std::move(f));
}

void Resolver::Impl::start_forward(std::unique_ptr<Forward> f) {
    for (; f->server < upstream.size(); ++f->server) {
        const Upstream& u = upstream[f->server];
        f->fd = UniqueFd(::socket(u.addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
        if (!f->fd) continue;
        // Connected: only the server's datagrams reach the socket; its random port and the new
        // id make a forged answer unlikely to be taken.
        if (::connect(f->fd.get(), reinterpret_cast<const sockaddr*>(&u.addr), u.len) != 0 ||
            ::send(f->fd.get(), f->packet.data(), f->packet.size(), 0) < 0) {
            log::debug(category, "forward to {}: {}", u.text, std::strerror(errno));
            f->fd.reset();
            continue;
        }
        f->deadline = Clock::now() + upstream_timeout;
        forwards.push_back(std::move(f));
        return;
    }
    dns::Query q = f->query;
    q.id = f->client_id;
    deliver(f->target, dns::build_reply(q, dns::Rcode::servfail, {}, 0, dns::min_udp_size));
}

void Resolver::Impl::read_forward(Forward& f) {
    std::vector<std::uint8_t> buf(max_message);
    ssize_t n = ::recv(f.fd.get(), buf.data(), buf.size(), 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        n = 0;  // refused (ICMP): try the next server
    }
    buf.resize(static_cast<std::size_t>(n));
    if (n > 0 && !dns::reply_matches(buf, f.query)) return;  // not the answer: keep waiting
    forward_done(f, buf);
}

void Resolver::Impl::forward_done(Forward& f, std::span<const std::uint8_t> reply) {
    std::uint8_t rcode = reply.size() >= dns::header_size ? (reply[3] & 0x0f) : 0xff;
    f.fd.reset();  // removed from forwards by the loop
    if (rcode == static_cast<std::uint8_t>(dns::Rcode::servfail) ||
        rcode == static_cast<std::uint8_t>(dns::Rcode::refused) || rcode == 0xff) {
        // As Docker: the next server may know better.
        auto next = std::make_unique<Forward>(std::move(f));
        ++next->server;
        start_forward(std::move(next));
        return;
    }
    std::vector<std::uint8_t> out(reply.begin(), reply.end());
    out[0] = static_cast<std::uint8_t>(f.client_id >> 8);
    out[1] = static_cast<std::uint8_t>(f.client_id & 0xff);
    deliver(f.target, out);
}

void Resolver::Impl::deliver(const Target& target, std::span<const std::uint8_t> reply) {
    if (target.conn) {
        auto it = conns.find(target.conn);
        if (it == conns.end()) return;  // gone meanwhile
        auto& out = it->second.out;
        out.push_back(static_cast<std::uint8_t>(reply.size() >> 8));
        out.push_back(static_cast<std::uint8_t>(reply.size() & 0xff));
        out.insert(out.end(), reply.begin(), reply.end());
        return;
    }
    int fd = -1;
    {
        std::lock_guard lock(mu);
        auto it = listeners.find(target.listener);
        if (it != listeners.end()) fd = it->second.udp.get();
    }
    if (fd < 0) return;
    (void)::sendto(fd, reply.data(), reply.size(), MSG_DONTWAIT,
                   reinterpret_cast<const sockaddr*>(&target.client), target.client_len);
}

}  // namespace coffer::agent
