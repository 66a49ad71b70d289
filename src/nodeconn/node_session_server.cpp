// The manager's node port: TLS 1.3 accept, then one HTTP request per connection (GET /ca,
// POST /join) or a WebSocket upgrade to a session.
#include <openssl/ssl.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "coffer/base/log.h"
#include "coffer/base/sync.h"
#include "coffer/nodeconn/forward.h"
#include "coffer/nodeconn/server.h"
#include "coffer/nodeproto/join.h"
#include "coffer/nodeproto/version.h"
#include "guard.h"
#include "http.h"
#include "node_session.h"
#include "tls_context.h"

namespace coffer::nodeconn {

using namespace detail;
namespace json = boost::json;
namespace websocket = beast::websocket;

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

struct Reply {
    http::status status = http::status::ok;
    std::string body;
    std::string_view content_type = "application/json";
};

// One admitted connection that has not yet presented a cluster certificate, counted (in total
// and for its source) from accept until it does or ends.
class Unverified {
  public:
    Unverified(Admission& admission, std::string source)
        : admission_(&admission), source_(std::move(source)) {}
    Unverified(Unverified&& other) noexcept
        : admission_(std::exchange(other.admission_, nullptr)), source_(std::move(other.source_)) {}
    Unverified& operator=(Unverified&&) = delete;
    ~Unverified() { release(); }
    void release() noexcept {
        if (admission_ != nullptr) std::exchange(admission_, nullptr)->release(source_);
    }
    const std::string& source() const noexcept { return source_; }

  private:
    Admission* admission_;
    std::string source_;
};

// Completion of a connection's coroutines.
void log_failure(std::exception_ptr e) {
    if (!e) return;
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& x) {
        log::error("nodeconn", "connection failed: {}", x.what());
    }
}

Reply error_reply(const Error& e) {
    return {static_cast<http::status>(http_status(e.code)),
            json::serialize(json::object{{"message", e.message}})};
}

}  // namespace

class NodeServer::Impl {
  public:
    Impl(ServerOptions options, ServerHandlers handlers, std::shared_ptr<ssl::context> tls,
         std::string ca_bundle)
        : options_(std::move(options)),
          handlers_(std::move(handlers)),
          tls_(std::move(tls), std::move(ca_bundle)),
          admission_(options_.max_unverified_connections, options_.max_unverified_per_source),
          join_rate_(options_.join_burst, options_.join_interval),
          refusals_("nodeconn", options_.refusal_log_interval),
          join_pool_(options_.join_threads == 0 ? 1 : options_.join_threads),
          acceptor_(asio::make_strand(ioc_)) {
        if (handlers_.forward_api != nullptr && handlers_.check_forward)
            forward_pool_.emplace(std::max<std::size_t>(handlers_.forward_threads, 1));
    }

    ~Impl() { shutdown(); }

    Result<void> listen();
    void shutdown();
    asio::awaitable<void> accept_loop();
    asio::awaitable<void> flush_refusals();
    asio::awaitable<void> serve(tcp::socket socket, Unverified unverified);
    // Runs a session that serve() registered, and forgets it when it ends.
    asio::awaitable<void> hold(std::shared_ptr<SessionImpl> session);
    asio::awaitable<Reply> join(const Request& req, std::string remote, const std::string& source);
    // A standby manager's API requests (forward.h): the first's header read, its body not yet;
    // then the following ones on the same connection.
    asio::awaitable<void> forward(TlsStream& stream, SecureFlatBuffer& buffer,
                                  http::request_parser<SecureBody>& first, const std::string& peer,
                                  Unverified& unverified);
    // The API's answer to a forwarded request.
    asio::awaitable<net::Response> call_forward_api(TlsStream& stream, net::Request& request);
    Result<pki::NodeIdentity> session_peer(SSL* ssl);

    ServerOptions options_;
    ServerHandlers handlers_;  // borrowed by every session: declared before what runs them
    // The current context and the CA bundle it trusts, swapped together.
    Sync<std::pair<std::shared_ptr<ssl::context>, std::string>> tls_;
    std::mutex sessions_mutex_;
    std::condition_variable sessions_changed_;
    std::map<const SessionImpl*, std::weak_ptr<SessionImpl>> sessions_;  // under sessions_mutex_
    std::uint16_t port_ = 0;
    // Used by connections until the I/O context is gone: declared before it.
    Admission admission_;
    JoinRate join_rate_;
    RefusalLog refusals_;
    asio::io_context ioc_;
    asio::thread_pool join_pool_;
    std::optional<asio::thread_pool> forward_pool_;  // when forwarded requests are served
    tcp::acceptor acceptor_;
    std::vector<std::thread> threads_;
    bool stopped_ = false;
};

Result<void> NodeServer::Impl::listen() {
    boost::system::error_code ec;
    auto address = asio::ip::make_address(options_.address, ec);
    if (ec)
        return make_error(Errc::invalid_argument, fmt::format("bad address {}", options_.address));
    tcp::endpoint endpoint(address, options_.port);
    if (acceptor_.open(endpoint.protocol(), ec); !ec)
        if (acceptor_.set_option(tcp::acceptor::reuse_address(true), ec); !ec)
            if (acceptor_.bind(endpoint, ec); !ec)
                acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec)
        return make_error(Errc::unavailable, fmt::format("listen on {}:{}: {}", options_.address,
                                                         options_.port, ec.message()));
    port_ = acceptor_.local_endpoint().port();
    asio::co_spawn(acceptor_.get_executor(), accept_loop(), asio::detached);
    asio::co_spawn(acceptor_.get_executor(), flush_refusals(), asio::detached);
    for (std::size_t i = 0; i < std::max<std::size_t>(options_.io_threads, 1); ++i)
        threads_.emplace_back([this] { ioc_.run(); });
    log::info("nodeconn", "node port listening on {}:{}", options_.address, port_);
    return {};
}

void NodeServer::Impl::shutdown() {
    if (stopped_) return;
    stopped_ = true;
    asio::post(acceptor_.get_executor(), [this] {
        boost::system::error_code ignored;
        acceptor_.close(ignored);
    });
    {
        // Sessions get the closing handshake's time to end, then whatever is left (handshakes
        // in progress, peers that do not answer) is cut off.
        std::unique_lock lock(sessions_mutex_);
        for (auto& [_, weak] : sessions_)
            if (auto s = weak.lock()) s->close();
        sessions_changed_.wait_for(lock, options_.limits.handshake_timeout,
                                   [this] { return sessions_.empty(); });
    }
    ioc_.stop();
    for (auto& t : threads_) t.join();
    join_pool_.join();
    if (forward_pool_) forward_pool_->join();
    refusals_.flush({}, true);
    std::lock_guard lock(sessions_mutex_);
    for (auto& [_, weak] : sessions_)
        if (auto s = weak.lock()) s->drop_stream();
}

asio::awaitable<void> NodeServer::Impl::flush_refusals() {
    asio::steady_timer timer(acceptor_.get_executor());
    for (;;) {
        timer.expires_after(
            std::max(options_.refusal_log_interval / 4, std::chrono::milliseconds(100)));
        if (auto [ec] = co_await timer.async_wait(use_tuple); ec) co_return;
        refusals_.flush();
    }
}

asio::awaitable<void> NodeServer::Impl::accept_loop() {
    for (;;) {
        tcp::socket socket(asio::make_strand(ioc_));
        auto [ec] = co_await acceptor_.async_accept(socket, use_tuple);
        if (ec == asio::error::operation_aborted || !acceptor_.is_open()) co_return;
        if (ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space ||
            ec == asio::error::no_memory) {
            // Accepting again at once would fail again at once: the connection waits in the
            // backlog until something is released.
            log::warn("nodeconn", "accept: {}; accepting again in 100 ms", ec.message());
            asio::steady_timer pause(acceptor_.get_executor(), std::chrono::milliseconds(100));
            co_await pause.async_wait(use_tuple);
            continue;
        }
        if (ec) {
            log::warn("nodeconn", "accept: {}", ec.message());
            continue;
        }
        boost::system::error_code remote_ec;
        auto remote = socket.remote_endpoint(remote_ec);
        if (remote_ec) continue;  // gone already; the socket closes here
        auto source = source_of(remote.address());
        auto verdict = admission_.admit(source);
        if (verdict != Admission::Verdict::admitted) {
            auto why = verdict == Admission::Verdict::full
                           ? fmt::format("{} connections have not presented a certificate",
                                         options_.max_unverified_connections)
                           : fmt::format(
                                 "it holds {} connections that have not presented a "
                                 "certificate while the node port is busy",
                                 admission_.count(source));
            refusals_.refused(log::Level::warn, "connection refused", source, why);
            boost::system::error_code ignored;
            socket.close(ignored);
            continue;
        }
        // See the client: small messages must not wait for a delayed ACK.
        boost::system::error_code nodelay_ec;
        socket.set_option(tcp::no_delay(true), nodelay_ec);
        auto executor = socket.get_executor();
        asio::co_spawn(executor,
                       serve(std::move(socket), Unverified(admission_, std::move(source))),
                       log_failure);
    }
}

asio::awaitable<void> NodeServer::Impl::serve(tcp::socket socket, Unverified unverified) {
    boost::system::error_code ec;
    auto remote = socket.remote_endpoint(ec);
    std::string peer =
        ec ? "unknown" : fmt::format("{}:{}", remote.address().to_string(), remote.port());
    auto tls = tls_.read()->first;
    TlsStream stream(std::move(socket), *tls);
    // A short deadline for the ClientHello, then one for the rest of the TLS handshake and the
    // whole request: a peer that connects and sends nothing, or trickles, is dropped when it
    // passes.
    stream.expires_after(std::min(options_.hello_timeout, options_.limits.handshake_timeout));
    stream.after_client_hello(options_.limits.handshake_timeout);
    if (auto [e] = co_await stream.async_handshake(ssl::stream_base::server, use_tuple); e) {
        log::debug("nodeconn", "{}: TLS handshake: {}", peer, e.message());
        co_return;
    }
    // A client that proved a certificate of the cluster CA no longer takes the room kept for
    // connections that have not.
    if (SSL_get0_peer_certificate(stream.native_handle()) != nullptr &&
        SSL_get_verify_result(stream.native_handle()) == X509_V_OK)
        unverified.release();
    SecureFlatBuffer buffer;
    http::request_parser<SecureBody> parser;
    parser.header_limit(max_header_bytes);
    // The body's limit depends on the target, known once the header is read: a forwarded
    // request's may be as large as an API request's (the header alone never reads it).
    parser.body_limit(std::max(options_.limits.max_request_bytes, forward_request_bytes));
    if (auto [e, n] = co_await http::async_read_header(stream, buffer, parser, use_tuple); e) {
        log::debug("nodeconn", "{}: read request: {}", peer, e.message());
        co_return;
    }
    if (parser.get().target().starts_with(forward_prefix) && forward_pool_) {
        co_await forward(stream, buffer, parser, peer, unverified);
        co_return;
    }
    if (auto length = parser.content_length();
        length && *length > options_.limits.max_request_bytes) {
        log::debug("nodeconn", "{}: read request: body limit exceeded", peer);
        co_return;
    }
    parser.body_limit(options_.limits.max_request_bytes);
    if (!parser.is_done())
        if (auto [e, n] = co_await http::async_read(stream, buffer, parser, use_tuple); e) {
            log::debug("nodeconn", "{}: read request: {}", peer, e.message());
            co_return;
        }
    Request& req = parser.get();
    const auto target = req.target();

    Reply reply;
    if (target == "/session" && websocket::is_upgrade(req)) {
        auto id = session_peer(stream.native_handle());
        if (id)
            if (auto v = nodeproto::check_version_header(req[nodeproto::version_header]); !v)
                id = std::move(v).error();
        if (id) {
            WsStream ws(std::move(stream));
            configure(ws, options_.limits);
            if (auto [e] = co_await ws.async_accept(req, use_tuple); e) {
                log::debug("nodeconn", "{}: WebSocket accept: {}", peer, e.message());
                co_return;
            }
            unverified.release();
            auto executor = ws.get_executor();  // the connection's strand
            auto session = std::make_shared<SessionImpl>(std::move(ws), std::move(*id),
                                                         options_.limits, handlers_.session, tls);
            {
                std::lock_guard lock(sessions_mutex_);
                sessions_.emplace(session.get(), session);
            }
            log::info("nodeconn", "node {} connected from {}", session->peer().node_id, peer);
            // The session runs in a coroutine of its own, and this one ends: its frame, the
            // upgrade request and its buffers are not kept for the session's life.
            asio::co_spawn(executor, hold(std::move(session)), log_failure);
            co_return;
        }
        reply = error_reply(id.error());
    } else if (target == "/ca" && req.method() == http::verb::get) {
        reply = {http::status::ok, tls_.read()->second, "application/x-pem-file"};
    } else if (target == "/join" && req.method() == http::verb::post) {
        reply = co_await join(req, peer, unverified.source());
    } else {
        reply = error_reply(make_error(Errc::not_found, "not found"));
    }

    http::response<http::string_body> res{reply.status, req.version()};
    res.set(http::field::content_type, reply.content_type);
    res.keep_alive(false);
    res.body() = std::move(reply.body);
    res.prepare_payload();
    if (auto [e, n] = co_await http::async_write(stream, res, use_tuple); e) co_return;
    co_await stream.async_shutdown(use_tuple);
}

asio::awaitable<void> NodeServer::Impl::forward(TlsStream& stream, SecureFlatBuffer& buffer,
                                                http::request_parser<SecureBody>& first,
                                                const std::string& peer, Unverified& unverified) {
    const std::string source = unverified.source();
    // Writes an answer; true when the connection stays open for the next request.
    auto answer = [&](const net::Response& r, bool keep_alive,
                      bool refused = false) -> asio::awaitable<bool> {
        http::response<SecureBody> res{static_cast<http::status>(r.status), 11};
        if (!r.content_type.empty()) res.set(http::field::content_type, r.content_type);
        for (const auto& [name, value] : r.headers) res.set(name, value);
        if (refused) res.set(forward_refused_header, "proof");
        res.keep_alive(keep_alive);
        const auto& secure = r.secure_body;
        std::string_view body =
            secure.empty()
                ? std::string_view(r.body)
                : std::string_view(reinterpret_cast<const char*>(secure.data()), secure.size());
        if (!body.empty()) {
            auto out = res.body().prepare(body.size());
            asio::buffer_copy(out, asio::buffer(body.data(), body.size()));
            res.body().commit(body.size());
        }
        res.prepare_payload();
        stream.expires_after(options_.limits.handshake_timeout);
        if (auto [e, n] = co_await http::async_write(stream, res, use_tuple); e) co_return false;
        if (keep_alive) co_return true;
        co_await stream.async_shutdown(use_tuple);
        co_return false;
    };
    // A request refused for its proof: its body is read first (within the forwarded request's
    // limit), else closing with it unread would reset the connection and lose the answer to a
    // standby whose key is out of date (it reads the new key on this answer and sends the request
    // again). False when the body did not come.
    auto read_refused_body =
        [&](http::request_parser<SecureBody>& parser) -> asio::awaitable<bool> {
        if (parser.is_done()) co_return true;
        parser.body_limit(forward_request_bytes);
        stream.expires_after(options_.limits.handshake_timeout);
        auto [e, n] = co_await http::async_read(stream, buffer, parser, use_tuple);
        co_return !e;
    };
    if (!join_rate_.allow(source)) {
        refusals_.refused(log::Level::warn, "forwarded request refused", source,
                          "too many refused joins and forwards from this source");
        co_await answer(
            net::Response::error(make_error(
                Errc::unavailable, "too many refused requests from this address; try again later")),
            false);
        co_return;
    }
    // Every request carries the proof (of this connection): a request on a kept connection
    // after the forwarding key was rotated is refused, and the standby reads the new key.
    auto binding = forward_binding(stream.native_handle());
    if (!binding || !handlers_.check_forward(*binding, first.get()[forward_proof_header])) {
        join_rate_.refused(source);
        refusals_.refused(log::Level::warn, "forwarded request refused", source,
                          "no proof of the managers' forwarding key");
        if (!co_await read_refused_body(first)) co_return;
        co_await answer(
            net::Response::error(make_error(Errc::unauthenticated,
                                            "a forwarded request needs a manager of this cluster "
                                            "(the proof of the managers' forwarding key)")),
            false, true);
        co_return;
    }
    unverified.release();
    std::optional<http::request_parser<SecureBody>> next;
    for (auto* parser = &first;;) {
        // Authenticated: the body may be as large as an API request's.
        parser->body_limit(forward_request_bytes);
        stream.expires_after(options_.limits.handshake_timeout);
        if (!parser->is_done())
            if (auto [e, n] = co_await http::async_read(stream, buffer, *parser, use_tuple); e) {
                log::debug("nodeconn", "{}: read forwarded request: {}", peer, e.message());
                co_return;
            }
        const auto& req = parser->get();
        const bool keep_alive = req.keep_alive();
        net::Request request;
        request.received = std::chrono::steady_clock::now();
        request.method = std::string(req.method_string());
        auto target = std::string_view(req.target());
        target = target.starts_with(forward_prefix) ? target.substr(forward_prefix.size())
                                                    : std::string_view{};
        net::parse_target(target, request);
        request.content_type = std::string(req[http::field::content_type]);
        if (auto who = req[forward_peer_header]; !who.empty()) {
            net::Peer p;
            if (std::sscanf(std::string(who).c_str(), "%u %u %d", &p.uid, &p.gid, &p.pid) == 3)
                request.peer = p;
        }
        std::optional<net::Response> result;
        {
            auto envelope = crypto::SecureBuffer::copy_of(body_view(req));
            if (auto opened = open_forward_envelope(envelope, request); !opened)
                result.emplace(net::Response::error(opened.error()));
        }
        if (!result && (request.path.empty() || request.path.front() != '/'))
            result.emplace(net::Response::error(make_error(Errc::not_found, "not found")));
        if (!result) {
            log::debug("nodeconn", "{}: forwarded {} {}", peer, request.method, request.path);
            result.emplace(co_await call_forward_api(stream, request));
        }
        if (!co_await answer(*result, keep_alive)) co_return;
        // The next request on this connection, within the idle time a standby keeps it for;
        // meanwhile the connection holds no buffer.
        if (buffer.size() == 0) buffer.shrink_to_fit();
        next.emplace();
        parser = &*next;
        parser->header_limit(max_header_bytes);
        stream.expires_after(forward_idle_timeout);
        if (auto [e, n] = co_await http::async_read_header(stream, buffer, *parser, use_tuple); e)
            co_return;
        if (!handlers_.check_forward(*binding, parser->get()[forward_proof_header])) {
            if (!co_await read_refused_body(*parser)) co_return;
            log::info("nodeconn",
                      "{}: a forwarded request on a kept connection no longer holds the proof "
                      "(the forwarding key was rotated): the connection is closed",
                      peer);
            co_await answer(net::Response::error(make_error(
                                Errc::unauthenticated,
                                "the managers' forwarding key changed: connect again with the new "
                                "one")),
                            false, true);
            co_return;
        }
    }
}

asio::awaitable<net::Response> NodeServer::Impl::call_forward_api(TlsStream& stream,
                                                                  net::Request& request) {
    // No deadline while the API works: the standby waits as its own client does.
    stream.expires_never();
    auto& api = *handlers_.forward_api;
    if (api.asynchronous(request)) {
        // Answered when a shared resource is ready (a group commit): no thread waits for it.
        co_return co_await asio::async_initiate<decltype(asio::use_awaitable), void(net::Response)>(
            [&](auto handler) {
                auto shared = std::make_shared<decltype(handler)>(std::move(handler));
                api.handle_async(request, [shared](net::Response r) {
                    auto executor = asio::get_associated_executor(*shared);
                    asio::post(executor, [shared, r = std::move(r)]() mutable {
                        std::move (*shared)(std::move(r));
                    });
                });
            },
            asio::use_awaitable);
    }
    // It may block (store writes, waits on nodes): it runs on the forward pool, and this
    // coroutine resumes on its strand when it is done.
    std::optional<net::Response> result;
    co_await asio::co_spawn(
        *forward_pool_,
        [&]() -> asio::awaitable<void> {
            try {
                result.emplace(api.handle(request));
            } catch (const std::exception& e) {
                log::error("nodeconn", "forwarded {} {}: {}", request.method, request.path,
                           e.what());
                result.emplace(net::Response::error(make_error(Errc::internal, "internal error")));
            }
            co_return;
        },
        asio::use_awaitable);
    co_return std::move(*result);
}

asio::awaitable<void> NodeServer::Impl::hold(std::shared_ptr<SessionImpl> session) {
    co_await session->run();
    {
        std::lock_guard lock(sessions_mutex_);
        sessions_.erase(session.get());
    }
    sessions_changed_.notify_all();
    log::info("nodeconn", "node {} disconnected", session->peer().node_id);
}

Result<pki::NodeIdentity> NodeServer::Impl::session_peer(SSL* ssl) {
    // The handshake already refused certificates that do not verify; here a certificate is
    // required at all, and must name a node of this cluster that may connect.
    if (SSL_get0_peer_certificate(ssl) == nullptr || SSL_get_verify_result(ssl) != X509_V_OK)
        return make_error(Errc::unauthenticated, "a client certificate is required");
    auto chain = peer_chain_pem(ssl, true);
    auto id = pki::verify_node_certificate(chain, tls_.read()->second, options_.cluster_id);
    if (!id) return std::move(id).error();
    if (handlers_.authorize)
        if (auto ok = handlers_.authorize(*id); !ok) return std::move(ok).error();
    return id;
}

asio::awaitable<Reply> NodeServer::Impl::join(const Request& req, std::string remote,
                                              const std::string& source) {
    auto refuse = [&](Error e) {
        join_rate_.refused(source);
        refusals_.refused(log::Level::info, "join refused", source, e.message);
        return error_reply(e);
    };
    if (!join_rate_.allow(source)) {
        refusals_.refused(log::Level::warn, "join refused", source,
                          "too many refused joins from this source");
        co_return Reply{
            http::status::too_many_requests,
            json::serialize(json::object{
                {"message", "too many refused joins from this address; try again later"}})};
    }
    auto body = nodeproto::decode_join_request(crypto::SecureBuffer::copy_of(body_view(req)));
    if (!body) co_return refuse(std::move(body).error());
    auto token = pki::JoinToken::parse(
        std::string_view(reinterpret_cast<const char*>(body->token.data()), body->token.size()));
    if (!token) co_return refuse(token.error());
    if (!handlers_.on_join)
        co_return error_reply(make_error(Errc::unavailable, "joining is disabled"));
    JoinRequest join_req{std::move(*token), std::move(body->csr), std::move(remote),
                         std::move(body->hostname)};
    // The handler may block (it writes the store): it runs on the join pool, and this coroutine
    // resumes on its strand when it is done.
    std::optional<Result<JoinResponse>> result;
    co_await asio::co_spawn(
        join_pool_,
        [&]() -> asio::awaitable<void> {
            try {
                result.emplace(handlers_.on_join(std::move(join_req)));
            } catch (const std::exception& e) {
                log::error("nodeconn", "join handler failed: {}", e.what());
                result.emplace(make_error(Errc::internal, "internal error"));
            }
            co_return;
        },
        asio::use_awaitable);
    if (!*result) co_return refuse(result->error());
    const auto& r = result->value();
    co_return Reply{http::status::ok, nodeproto::encode(nodeproto::JoinAnswer{
                                          r.node_id, r.certificate_pem, r.ca_bundle_pem})};
}

NodeServer::NodeServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
NodeServer::~NodeServer() = default;

Result<std::unique_ptr<NodeServer>> NodeServer::start(ServerOptions options,
                                                      Credentials credentials,
                                                      ServerHandlers handlers) {
    auto tls = server_context(credentials);
    if (!tls) return std::move(tls).error().context("node port");
    auto impl = std::make_unique<Impl>(std::move(options), std::move(handlers), std::move(*tls),
                                       std::move(credentials.ca_bundle_pem));
    if (auto r = impl->listen(); !r) return std::move(r).error();
    return std::unique_ptr<NodeServer>(new NodeServer(std::move(impl)));
}

std::uint16_t NodeServer::port() const noexcept {
    return impl_->port_;
}

Result<void> NodeServer::update_credentials(Credentials credentials) {
    auto tls = server_context(credentials);
    if (!tls) return std::move(tls).error().context("node port");
    *impl_->tls_.lock() = {std::move(*tls), std::move(credentials.ca_bundle_pem)};
    return {};
}

void NodeServer::close_sessions(std::string_view node_id) {
    std::lock_guard lock(impl_->sessions_mutex_);
    for (auto& [_, weak] : impl_->sessions_)
        if (auto s = weak.lock(); s && s->peer().node_id == node_id) s->close();
}

std::size_t NodeServer::session_count() const {
    std::lock_guard lock(impl_->sessions_mutex_);
    return impl_->sessions_.size();
}

}  // namespace coffer::nodeconn
