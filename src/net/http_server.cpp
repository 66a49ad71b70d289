#include "coffer/net/http_server.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <list>
#include <mutex>
#include <thread>
#include <tuple>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/basic_stream.hpp>
#include <boost/beast/http.hpp>

#include "coffer/base/error.h"
#include "coffer/base/log.h"
#include "secure_body.h"

namespace coffer::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using local = asio::local::stream_protocol;
using Stream = beast::basic_stream<local>;
using boost::system::error_code;
constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);

struct HttpServer::Impl {
    ServerOptions opts;
    Service& service;
    asio::io_context ioc;
    asio::thread_pool workers;
    local::acceptor acceptor;
    std::optional<asio::signal_set> signals;
    std::atomic<bool> stopping{false};

    // Live connections, so stop() can close idle ones. Guarded by mutex.
    std::mutex mutex;
    std::list<Stream*> streams;

    Impl(ServerOptions o, Service& s)
        : opts(std::move(o)),
          service(s),
          ioc(static_cast<int>(opts.io_threads)),
          workers(opts.worker_threads),
          acceptor(ioc) {}

    void bind();
    asio::awaitable<void> accept_loop();
    asio::awaitable<void> session(local::socket socket);
    asio::awaitable<Response> dispatch(Request& req);
    void shutdown();
};

namespace {

// True when something accepts connections on path (another live server).
bool socket_in_use(const std::string& path) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    bool in_use = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    ::close(fd);
    return in_use;
}

// The server's and the handler's headers, the content type, keep-alive and the length.
template <class Body>
void set_head(http::response<Body>& res, const ServerOptions& opts, const Response& resp,
              bool keep_alive) {
    for (const auto& [k, v] : opts.headers) res.set(k, v);
    for (const auto& [k, v] : resp.headers) res.set(k, v);
    if (!resp.content_type.empty()) res.set(http::field::content_type, resp.content_type);
    res.keep_alive(keep_alive);
    res.prepare_payload();
}

Response status_response(int status, std::string_view message) {
    return Response::error(
        Error{status == 413 ? Errc::too_large : Errc::invalid_argument, std::string(message)});
}

}  // namespace

void HttpServer::Impl::bind() {
    auto path = opts.socket_path.string();
    if (path.size() >= sizeof(sockaddr_un::sun_path))
        throw std::runtime_error(fmt::format("socket path too long: {}", path));
    if (opts.socket_path.has_parent_path())
        std::filesystem::create_directories(opts.socket_path.parent_path());
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            throw std::runtime_error(fmt::format("{} exists and is not a socket", path));
        if (socket_in_use(path))
            throw std::runtime_error(fmt::format("another server is listening on {}", path));
        ::unlink(path.c_str());
    }
    acceptor.open(local());
    // The socket is created with the final mode: no window where it is more open than asked.
    mode_t old = ::umask(static_cast<mode_t>(~opts.socket_mode & 0777));
    error_code ec;
    acceptor.bind(local::endpoint(path), ec);
    ::umask(old);
    if (ec) throw std::runtime_error(fmt::format("bind {}: {}", path, ec.message()));
    if (::chmod(path.c_str(), opts.socket_mode) != 0) throw_errno(fmt::format("chmod {}", path));
    acceptor.listen(asio::socket_base::max_listen_connections);
}

asio::awaitable<void> HttpServer::Impl::accept_loop() {
    for (;;) {
        auto [ec, socket] = co_await acceptor.async_accept(asio::make_strand(ioc), tuple_awaitable);
        if (ec) {
            if (stopping || ec == asio::error::operation_aborted) co_return;
            log::warn("http", "accept: {}", ec.message());
            continue;
        }
        auto ex = socket.get_executor();
        asio::co_spawn(ex, session(std::move(socket)), asio::detached);
    }
}

asio::awaitable<Response> HttpServer::Impl::dispatch(Request& req) {
    if (service.asynchronous(req)) {
        // done may run on any thread: it hands the response over through this connection's
        // strand and wakes the coroutine by cancelling a timer that never expires on its own.
        struct Handoff {
            explicit Handoff(const asio::any_io_executor& ex) : timer(ex) {}
            asio::steady_timer timer;
            std::optional<Response> response;
        };
        auto ex = co_await asio::this_coro::executor;
        auto handoff = std::make_shared<Handoff>(ex);
        handoff->timer.expires_at(asio::steady_timer::time_point::max());
        service.handle_async(req, [handoff, ex](Response r) {
            asio::post(ex, [handoff, r = std::move(r)]() mutable {
                handoff->response = std::move(r);
                handoff->timer.cancel();
            });
        });
        while (!handoff->response) co_await handoff->timer.async_wait(tuple_awaitable);
        co_return std::move(*handoff->response);
    }
    if (!service.blocking(req)) co_return service.handle(req);
    // Run the handler on the worker pool; resume on this connection's strand.
    co_return co_await asio::co_spawn(
        workers, [&]() -> asio::awaitable<Response> { co_return service.handle(req); },
        asio::use_awaitable);
}

asio::awaitable<void> HttpServer::Impl::session(local::socket socket) {
    std::optional<Peer> peer;
    ucred cred{};
    socklen_t len = sizeof(cred);
    if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 &&
        len == sizeof(cred))
        peer = Peer{cred.uid, cred.gid, cred.pid};
    Stream stream(std::move(socket));
    std::list<Stream*>::iterator self;
    {
        std::lock_guard lock(mutex);
        if (stopping) co_return;
        self = streams.insert(streams.end(), &stream);
    }
    detail::SecureFlatBuffer buffer(opts.header_limit + opts.body_limit);
    for (;;) {
        // Header fields in secure memory too: X-Registry-Auth carries registry credentials.
        http::request_parser<detail::SecureBody, crypto::SecureAllocator<char>> parser;
        parser.header_limit(static_cast<std::uint32_t>(opts.header_limit));
        parser.body_limit(opts.body_limit);
        stream.expires_after(opts.idle_timeout);
        auto [ec, n] = co_await http::async_read(stream, buffer, parser, tuple_awaitable);
        Response resp;
        bool keep_alive = false;
        unsigned version = 11;
        if (ec == http::error::body_limit) {
            resp = status_response(
                413, fmt::format("request body exceeds the limit of {} bytes", opts.body_limit));
        } else if (ec == http::error::header_limit) {
            resp = status_response(431, "request header too large");
            resp.status = 431;
        } else if (ec && ec.category() == make_error_code(http::error::bad_target).category() &&
                   ec != http::error::end_of_stream && ec != http::error::partial_message) {
            resp = status_response(400, fmt::format("malformed request: {}", ec.message()));
        } else if (ec) {
            break;  // closed, timed out, reset
        } else {
            auto msg = parser.release();
            keep_alive = msg.keep_alive() && !stopping;
            version = msg.version();
            Request req;
            req.received = std::chrono::steady_clock::now();
            req.peer = peer;
            req.method = std::string(msg.method_string());
            parse_target(msg.target(), req);
            req.content_type = std::string(msg[http::field::content_type]);
            req.body = std::move(msg.body().buffer);
            if (auto auth = msg["X-Registry-Auth"]; !auth.empty()) {
                req.registry_auth = crypto::SecureBuffer(auth.size());
                std::memcpy(req.registry_auth.data(), auth.data(), auth.size());
            }
            try {
                resp = co_await dispatch(req);
            } catch (const std::exception& e) {
                log::error("http", "{} {}: {}", req.method, req.path, e.what());
                resp = Response::error(Error{Errc::internal, "internal error"});
            }
            if (req.method == "HEAD") {
                resp.body.clear();
                resp.secure_body = {};
            }
        }

        const auto status = static_cast<http::status>(resp.status);
        error_code wec;
        stream.expires_after(std::chrono::seconds(30));
        if (!resp.secure_body.empty()) {
            // Secret bytes: written from secure memory, wiped when res goes out of scope.
            http::response<detail::SecureBody> res{status, version};
            res.body().size = resp.secure_body.size();
            res.body().buffer = std::move(resp.secure_body);
            set_head(res, opts, resp, keep_alive);
            std::tie(wec, std::ignore) = co_await http::async_write(stream, res, tuple_awaitable);
        } else {
            http::response<http::string_body> res{status, version};
            res.body() = std::move(resp.body);
            set_head(res, opts, resp, keep_alive);
            std::tie(wec, std::ignore) = co_await http::async_write(stream, res, tuple_awaitable);
        }
        if (wec || !keep_alive) break;
    }
    {
        std::lock_guard lock(mutex);
        streams.erase(self);
    }
    error_code ignored;
    stream.socket().shutdown(local::socket::shutdown_both, ignored);
    stream.socket().close(ignored);
}

void HttpServer::Impl::shutdown() {
    if (stopping.exchange(true)) return;
    asio::post(ioc, [this] {
        error_code ignored;
        acceptor.close(ignored);
        if (signals) signals->cancel(ignored);
        std::lock_guard lock(mutex);
        // Connections waiting for a request are closed; one in a handler finishes its answer
        // (keep-alive is off once stopping) and closes itself.
        for (auto* s : streams) {
            // Runs on the connection's strand; the connection may have ended meanwhile (it
            // leaves the list, on that strand, before its stream is destroyed): only a stream
            // still listed is touched.
            asio::post(s->get_executor(), [this, s] {
                std::lock_guard relock(mutex);
                if (std::find(streams.begin(), streams.end(), s) != streams.end())
                    s->expires_after(std::chrono::milliseconds(0));
            });
        }
    });
}

HttpServer::HttpServer(ServerOptions options, Service& service)
    : impl_(std::make_unique<Impl>(std::move(options), service)) {
    impl_->bind();
}

HttpServer::~HttpServer() {
    impl_->workers.join();
    error_code ignored;
    impl_->acceptor.close(ignored);
    ::unlink(impl_->opts.socket_path.c_str());
}

void HttpServer::stop() {
    impl_->shutdown();
}

void HttpServer::run(bool handle_signals) {
    auto& ioc = impl_->ioc;
    if (handle_signals) {
        impl_->signals.emplace(ioc, SIGTERM, SIGINT);
        impl_->signals->async_wait([this](const error_code& ec, int sig) {
            if (ec) return;
            log::info("http", "signal {}: draining", sig);
            impl_->shutdown();
        });
    }
    asio::co_spawn(asio::make_strand(ioc), impl_->accept_loop(), asio::detached);
    std::vector<std::thread> threads;
    for (unsigned i = 1; i < impl_->opts.io_threads; ++i)
        threads.emplace_back([&ioc] { ioc.run(); });
    ioc.run();
    for (auto& t : threads) t.join();
    impl_->workers.join();
}

}  // namespace coffer::net
