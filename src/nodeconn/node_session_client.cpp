// The node's side: joining with a token, and opening the session.
#include <openssl/ssl.h>
#include <poll.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/span_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>

#include <atomic>
#include <future>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "coffer/base/log.h"
#include "coffer/nodeconn/client.h"
#include "coffer/nodeconn/forward.h"
#include "coffer/nodeproto/join.h"
#include "coffer/nodeproto/version.h"
#include "coffer/pki/token.h"
#include "http.h"
#include "node_session.h"
#include "tls_context.h"

namespace coffer::nodeconn {

using namespace detail;
namespace json = boost::json;
namespace websocket = beast::websocket;

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

Error net_error(std::string_view what, const boost::system::error_code& ec) {
    return make_error(Errc::unavailable, fmt::format("{}: {}", what, ec.message()));
}

// A failure on a stream whose deadline closed it says so, not what the closing did to the call.
Error net_error(std::string_view what, const boost::system::error_code& ec,
                const TlsStream& stream) {
    if (stream.timed_out())
        return make_error(Errc::unavailable, fmt::format("{}: timed out", what));
    return net_error(what, ec);
}

// TCP connect and TLS handshake, under one deadline that stays armed for what follows.
asio::awaitable<Result<std::unique_ptr<TlsStream>>> open_tls(const Endpoint& to, ssl::context& ctx,
                                                             const Limits& limits) {
    auto executor = co_await asio::this_coro::executor;
    tcp::resolver resolver(executor);
    auto [rec, results] =
        co_await resolver.async_resolve(to.host, std::to_string(to.port), use_tuple);
    if (rec) co_return net_error(fmt::format("resolve {}", to.host), rec);
    auto stream = std::make_unique<TlsStream>(executor, ctx);
    stream->expires_after(limits.handshake_timeout);
    auto where = fmt::format("{}:{}", to.host, to.port);
    if (auto [ec, ep] = co_await asio::async_connect(stream->socket(), results, use_tuple); ec)
        co_return net_error(fmt::format("connect to {}", where), ec, *stream);
    // Small messages both ways (handshake flights, the upgrade, heartbeats): without this, Nagle
    // and the peer's delayed ACK hold each one back by up to 40 ms.
    boost::system::error_code nodelay_ec;
    stream->socket().set_option(tcp::no_delay(true), nodelay_ec);
    // SNI: the name the manager's certificate is verified against.
    SSL_set_tlsext_host_name(stream->native_handle(), manager_name);
    if (auto [ec] = co_await stream->async_handshake(ssl::stream_base::client, use_tuple); ec)
        co_return net_error(fmt::format("TLS handshake with {}", where), ec, *stream);
    co_return stream;
}

// One request, one response (Connection: close). The body is borrowed from secure memory.
asio::awaitable<Result<Response>> exchange(TlsStream& stream, http::verb verb,
                                           std::string_view target, std::span<const char> body,
                                           const Limits& limits) {
    http::request<http::span_body<const char>> req{verb, target, 11};
    req.set(http::field::host, manager_name);
    req.set(http::field::content_type, "application/json");
    req.keep_alive(false);
    req.body() = body;
    req.prepare_payload();
    if (auto [ec, n] = co_await http::async_write(stream, req, use_tuple); ec)
        co_return net_error(fmt::format("send {}", target), ec, stream);
    SecureFlatBuffer buffer;
    http::response_parser<SecureBody> parser;
    parser.header_limit(max_header_bytes);
    parser.body_limit(limits.max_request_bytes);
    if (auto [ec, n] = co_await http::async_read(stream, buffer, parser, use_tuple); ec)
        co_return net_error(fmt::format("read the answer to {}", target), ec, stream);
    co_await stream.async_shutdown(use_tuple);
    co_return parser.release();
}

Errc code_for(http::status status) {
    switch (status) {
        case http::status::bad_request:
            return Errc::invalid_argument;
        case http::status::unauthorized:
            return Errc::unauthenticated;
        case http::status::forbidden:
            return Errc::permission_denied;
        case http::status::not_found:
            return Errc::not_found;
        case http::status::conflict:
            return Errc::already_exists;
        case http::status::payload_too_large:
            return Errc::too_large;
        case http::status::service_unavailable:
        case http::status::too_many_requests:
            return Errc::unavailable;
        default:
            return Errc::internal;
    }
}

// The manager's {"message"} for a failed request.
Error failure(const Response& res) {
    auto text = crypto::SecureBuffer::copy_of(body_view(res));
    auto doc = SecureJson::parse(text);
    std::string message = fmt::format("manager answered {}", res.result_int());
    if (doc && doc->value().is_object())
        if (const auto* m = doc->value().as_object().if_contains("message"); m && m->is_string())
            message = std::string(m->get_string());
    return make_error(code_for(res.result()), std::move(message));
}

// The manager's refusal of the WebSocket upgrade, with its {"message"} when it sent one.
Error refusal(const websocket::response_type& res) {
    boost::system::error_code ec;
    auto doc = json::parse(res.body(), ec);
    std::string message = fmt::format("manager answered {}", res.result_int());
    if (doc.is_object())
        if (const auto* m = doc.as_object().if_contains("message"); m && m->is_string())
            message = std::string(m->get_string());
    return make_error(code_for(res.result()), std::move(message));
}

asio::awaitable<Result<JoinResponse>> join_flow(const Endpoint& to, const pki::JoinToken& token,
                                                const crypto::SecureBuffer& token_text,
                                                std::string_view csr_pem, const Limits& limits,
                                                std::string_view hostname) {
    // 1. The CA bundle, over TLS that trusts nothing yet: the token's digest decides.
    auto open_ctx = join_context({});
    if (!open_ctx) co_return std::move(open_ctx).error();
    std::string ca_bundle;
    {
        auto stream = co_await open_tls(to, **open_ctx, limits);
        if (!stream) co_return std::move(stream).error();
        auto res = co_await exchange(**stream, http::verb::get, "/ca", {}, limits);
        if (!res) co_return std::move(res).error();
        if (res->result() != http::status::ok) co_return failure(*res).context("fetch CA");
        ca_bundle = std::string(body_view(*res));
    }
    if (!token.pins(ca_bundle))
        co_return make_error(Errc::permission_denied, "manager's CA does not match the join token");

    // 2. Token and CSR, over TLS that verifies the manager against the pinned CA.
    auto pinned_ctx = join_context(ca_bundle);
    if (!pinned_ctx) co_return std::move(pinned_ctx).error().context("pinned CA");
    auto stream = co_await open_tls(to, **pinned_ctx, limits);
    if (!stream) co_return std::move(stream).error();
    auto body =
        nodeproto::encode(nodeproto::JoinRequest{nodeproto::protocol_version, token_text.clone(),
                                                 std::string(csr_pem), std::string(hostname)});
    auto res = co_await exchange(**stream, http::verb::post, "/join",
                                 {reinterpret_cast<const char*>(body.data()), body.size()}, limits);
    if (!res) co_return std::move(res).error();
    if (res->result() != http::status::ok) co_return failure(*res).context("join");

    auto answer = nodeproto::decode_join_answer(body_view(*res));
    if (!answer)
        co_return make_error(Errc::internal, fmt::format("join: {}", answer.error().message));
    // The certificate must chain to the CA we pinned.
    if (auto v = pki::verify_chain(answer->certificate, ca_bundle); !v)
        co_return std::move(v).error().context("join: issued certificate");
    co_return JoinResponse{std::move(answer->node_id), std::move(answer->certificate),
                           std::move(answer->ca_bundle)};
}

}  // namespace

Result<JoinResponse> join(const Endpoint& manager, const crypto::SecureBuffer& token_text,
                          std::string_view csr_pem, const Limits& limits,
                          std::string_view hostname) {
    auto token = pki::JoinToken::parse(
        std::string_view(reinterpret_cast<const char*>(token_text.data()), token_text.size()));
    if (!token) return std::move(token).error();
    asio::io_context ioc;
    std::optional<Result<JoinResponse>> result;
    asio::co_spawn(
        ioc,
        [&]() -> asio::awaitable<void> {
            result.emplace(
                co_await join_flow(manager, *token, token_text, csr_pem, limits, hostname));
        },
        [&](std::exception_ptr e) {
            if (!e) return;
            try {
                std::rethrow_exception(e);
            } catch (const std::exception& x) {
                result.emplace(make_error(Errc::internal, fmt::format("join: {}", x.what())));
            }
        });
    ioc.run();
    if (!result) return make_error(Errc::internal, "join: did not complete");
    return std::move(*result);
}

namespace {

// A connection to the leader kept for the next request, and since when it has been idle.
struct IdleStream {
    std::unique_ptr<TlsStream> stream;
    std::chrono::steady_clock::time_point since;
};

// Whether an idle connection still looks open: nothing to read (no close, no stray bytes).
bool still_open(TlsStream& stream) {
    pollfd p{stream.socket().native_handle(), POLLIN, 0};
    return ::poll(&p, 1, 0) == 0;
}

// What one forwarded request needs, owned: its answer may be settled before it ends
// (abandoned).
struct ForwardJob {
    Endpoint to;
    crypto::SecureBuffer key;
    std::string method, target, content_type, peer;
    crypto::SecureBuffer envelope;
    std::chrono::milliseconds timeout{}, answer_timeout{};
    Forwarder::Done done;
    // Set once done ran: before the exchange ends only when it was abandoned.
    std::atomic<bool> settled{false};

    // done runs once, whoever settles first, and is released at once: what it holds (the
    // caller's server's handles) must not outlive the caller, while the exchange of an abandoned
    // request may go on until its deadlines.
    void settle(Result<net::Response> r) {
        if (settled.exchange(true)) return;
        auto once = std::move(done);
        done = nullptr;
        once(std::move(r));
    }
};

}  // namespace

struct Forwarder::Impl {
    explicit Impl(std::shared_ptr<ssl::context> c)
        : ctx(std::move(c)), work(asio::make_work_guard(ioc)), thread([this] { ioc.run(); }) {}
    ~Impl() {
        work.reset();
        ioc.stop();
        thread.join();
        idle.clear();  // closes them
    }

    // A kept connection to `to` that still looks open, or none.
    std::unique_ptr<TlsStream> take(const Endpoint& to) {
        std::lock_guard lock(mu);
        auto now = std::chrono::steady_clock::now();
        while (!idle.empty()) {
            auto kept = std::move(idle.back());
            idle.pop_back();
            if (kept.stream && now - kept.since < forward_idle_timeout / 3 && kept_for == to &&
                still_open(*kept.stream))
                return std::move(kept.stream);
        }
        return nullptr;
    }
    void give_back(const Endpoint& to, std::unique_ptr<TlsStream> stream) {
        std::lock_guard lock(mu);
        if (!(kept_for == to)) idle.clear();
        kept_for = to;
        if (idle.size() < max_idle)
            idle.push_back({std::move(stream), std::chrono::steady_clock::now()});
    }

    asio::awaitable<void> run(std::shared_ptr<ForwardJob> job);
    asio::awaitable<Result<net::Response>> exchange(ForwardJob& job, TlsStream& stream,
                                                    bool& reusable);

    static constexpr std::size_t max_idle = 64;
    std::shared_ptr<ssl::context> ctx;
    asio::io_context ioc;
    asio::executor_work_guard<asio::io_context::executor_type> work;
    std::mutex mu;
    Endpoint kept_for;             // under mu: the leader the idle connections go to
    std::vector<IdleStream> idle;  // under mu
    // The requests sent and not yet ended, by number.
    std::uint64_t next_job = 0;                                 // under mu
    std::map<std::uint64_t, std::shared_ptr<ForwardJob>> jobs;  // under mu
    std::thread thread;  // last: runs ioc, which uses the above
};

// One request, with the proof of this connection, and its answer on stream. reusable: set when
// the connection may carry another.
asio::awaitable<Result<net::Response>> Forwarder::Impl::exchange(ForwardJob& job, TlsStream& stream,
                                                                 bool& reusable) {
    reusable = false;
    http::request<http::span_body<const char>> req{http::string_to_verb(job.method), job.target,
                                                   11};
    req.set(http::field::host, manager_name);
    if (!job.content_type.empty()) req.set(http::field::content_type, job.content_type);
    {
        auto binding = forward_binding(stream.native_handle());
        if (!binding) co_return std::move(binding).error();
        req.set(forward_proof_header, forward_proof(job.key, *binding));
    }
    if (!job.peer.empty()) req.set(forward_peer_header, job.peer);
    req.keep_alive(true);
    req.body() = {reinterpret_cast<const char*>(job.envelope.data()), job.envelope.size()};
    req.prepare_payload();
    stream.expires_after(job.timeout);
    // Not sent whole, the request cannot have run: it may be sent again.
    if (auto [ec, n] = co_await http::async_write(stream, req, use_tuple); ec)
        co_return make_error(Errc::unavailable,
                             fmt::format("send the request to the leading manager {}:{}: {}",
                                         job.to.host, job.to.port, ec.message()));
    // The leader answers once the API has: as long as the request takes there.
    stream.expires_after(job.answer_timeout);
    SecureFlatBuffer buffer;
    http::response_parser<SecureBody> parser;
    parser.header_limit(max_header_bytes);
    parser.body_limit(forward_answer_bytes);
    if (auto [ec, n] = co_await http::async_read(stream, buffer, parser, use_tuple); ec)
        co_return make_error(
            Errc::internal, fmt::format("the leading manager {}:{} did not answer: {}", job.to.host,
                                        job.to.port, ec.message()));
    auto res = parser.release();
    if (res.result() == http::status::unauthorized && res.count(forward_refused_header) > 0) {
        auto refused = failure(res).context("the leading manager refused this manager");
        refused.code = Errc::unauthenticated;
        co_return refused;
    }
    net::Response out;
    out.status = res.result_int();
    out.content_type = std::string(res[http::field::content_type]);
    for (const auto& f : res) {
        auto name = f.name_string();
        if (beast::iequals(name, "Content-Type") || beast::iequals(name, "Content-Length") ||
            beast::iequals(name, "Connection") || beast::iequals(name, "Server") ||
            beast::iequals(name, "Api-Version") || beast::iequals(name, "Date"))
            continue;
        out.headers.emplace_back(std::string(name), std::string(f.value()));
    }
    auto body = body_view(res);
    if (!body.empty()) out.secure_body = crypto::SecureBuffer::copy_of(body);
    // Nothing may wait in the buffer past the answer: the next answer starts clean.
    reusable = res.keep_alive() && buffer.size() == 0;
    stream.expires_never();
    co_return out;
}

asio::awaitable<void> Forwarder::Impl::run(std::shared_ptr<ForwardJob> job) {
    auto settle = [&](Result<net::Response> r) { job->settle(std::move(r)); };
    bool reusable = false;
    // A kept connection first. The leader closes one only when it has been idle for longer than
    // a kept one may be, and one found closed is not used: a failure on it is the leader's.
    if (auto kept = take(job->to)) {
        auto r = co_await exchange(*job, *kept, reusable);
        if (r && reusable && !job->settled) give_back(job->to, std::move(kept));
        co_return settle(std::move(r));
    }
    Limits limits;
    limits.handshake_timeout = job->timeout;
    auto stream = co_await open_tls(job->to, *ctx, limits);
    if (!stream) co_return settle(std::move(stream).error());
    auto r = co_await exchange(*job, **stream, reusable);
    if (r && reusable && !job->settled) give_back(job->to, std::move(*stream));
    settle(std::move(r));
}

Forwarder::Forwarder(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Forwarder::~Forwarder() = default;

Result<std::unique_ptr<Forwarder>> Forwarder::make(std::string_view ca_bundle_pem) {
    if (ca_bundle_pem.empty()) return make_error(Errc::internal, "no cluster CA to verify with");
    auto ctx = join_context(ca_bundle_pem);
    if (!ctx) return std::move(ctx).error().context("the cluster CA");
    return std::unique_ptr<Forwarder>(new Forwarder(std::make_unique<Impl>(std::move(*ctx))));
}

void Forwarder::send(const Endpoint& leader, const crypto::SecureBuffer& key,
                     const net::Request& request, std::chrono::milliseconds timeout,
                     std::chrono::milliseconds answer_timeout, Done done) const {
    if (http::string_to_verb(request.method) == http::verb::unknown)
        return done(make_error(Errc::invalid_argument,
                               fmt::format("method {} is not forwarded", request.method)));
    auto job = std::make_shared<ForwardJob>();
    job->to = leader;
    job->key = key.clone();
    job->method = request.method;
    job->target =
        fmt::format("{}{}", forward_prefix, request.target.empty() ? "/" : request.target);
    job->content_type = request.content_type;
    if (request.peer)
        job->peer =
            fmt::format("{} {} {}", request.peer->uid, request.peer->gid, request.peer->pid);
    job->envelope = forward_envelope(request);
    job->timeout = timeout;
    job->answer_timeout = answer_timeout;
    job->done = std::move(done);
    std::uint64_t number = 0;
    {
        std::lock_guard lock(impl_->mu);
        number = impl_->next_job++;
        impl_->jobs.emplace(number, job);
    }
    asio::co_spawn(
        impl_->ioc, impl_->run(job), [impl = impl_.get(), job, number](std::exception_ptr e) {
            if (e) {
                try {
                    std::rethrow_exception(e);
                } catch (const std::exception& x) {
                    job->settle(make_error(Errc::internal, fmt::format("forward: {}", x.what())));
                }
            }
            std::lock_guard lock(impl->mu);
            impl->jobs.erase(number);
        });
}

void Forwarder::abandon_all() const {
    std::vector<std::shared_ptr<ForwardJob>> all;
    {
        std::lock_guard lock(impl_->mu);
        for (const auto& [number, job] : impl_->jobs) all.push_back(job);
    }
    for (const auto& job : all)
        job->settle(make_error(Errc::internal, "abandoned: this manager stopped forwarding"));
}

std::size_t Forwarder::in_flight() const {
    std::lock_guard lock(impl_->mu);
    return impl_->jobs.size();
}

void Forwarder::drop_idle() const {
    std::vector<IdleStream> dropped;
    std::lock_guard lock(impl_->mu);
    dropped.swap(impl_->idle);
}

class NodeClient::Impl {
  public:
    Impl(Endpoint to, Credentials credentials, SessionHandlers handlers, const Limits& limits)
        : to_(std::move(to)),
          credentials_(std::move(credentials)),
          handlers_(std::move(handlers)),
          limits_(limits) {}

    ~Impl() {
        if (session_) session_->close();
        if (thread_.joinable()) thread_.join();
        if (session_) session_->drop_stream();
    }

    // Who waits for the session to open; touched on the I/O thread only.
    struct Opening {
        std::promise<Result<void>> promise;
        bool settled = false;
        void settle(Result<void> r) {
            if (!std::exchange(settled, true)) promise.set_value(std::move(r));
        }
    };

    asio::awaitable<void> run(std::shared_ptr<ssl::context> ctx, std::string cluster_id,
                              std::shared_ptr<Opening> opened);

    Endpoint to_;
    Credentials credentials_;
    SessionHandlers handlers_;  // borrowed by the session: declared before what runs it
    Limits limits_;
    asio::io_context ioc_;
    std::shared_ptr<SessionImpl> session_;
    std::shared_ptr<Session> public_session_;
    std::thread thread_;
};

asio::awaitable<void> NodeClient::Impl::run(std::shared_ptr<ssl::context> ctx,
                                            std::string cluster_id,
                                            std::shared_ptr<Opening> opened) {
    auto fail = [&](Error e) { opened->settle(std::move(e)); };
    auto stream = co_await open_tls(to_, *ctx, limits_);
    if (!stream) co_return fail(std::move(stream).error());
    // The handshake checked the chain, the server use and the manager's name; the whole of the
    // manager's identity and the cluster are checked here again, in one place.
    auto chain = peer_chain_pem((*stream)->native_handle(), false);
    auto verified = pki::verify_manager_certificate(chain, credentials_.ca_bundle_pem, cluster_id);
    if (!verified) co_return fail(std::move(verified).error().context("manager certificate"));
    pki::NodeIdentity manager{
        verified->common_name,           pki::Role::manager,
        verified->organization,          verified->not_after,
        std::move(verified->public_key), std::move(verified->issuer_public_key)};

    WsStream ws(std::move(**stream));
    configure(ws, limits_);
    ws.set_option(websocket::stream_base::decorator([](websocket::request_type& req) {
        req.set(nodeproto::version_header, std::to_string(nodeproto::protocol_version));
    }));
    websocket::response_type upgrade;
    if (auto [ec] = co_await ws.async_handshake(upgrade, manager_name, "/session", use_tuple); ec) {
        // A refusal (401, 403: this node was removed) is an answer, not a network failure: its
        // code tells the node whether trying again can help.
        if (ec == websocket::error::upgrade_declined && upgrade.result_int() != 0)
            co_return fail(refusal(upgrade).context("open session"));
        co_return fail(net_error("open session", ec));
    }
    auto session =
        std::make_shared<SessionImpl>(std::move(ws), std::move(manager), limits_, handlers_, ctx);
    session_ = session;
    public_session_ = session;
    opened->settle(Result<void>{});
    co_await session->run();
}

NodeClient::NodeClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
NodeClient::~NodeClient() = default;

Result<std::unique_ptr<NodeClient>> NodeClient::connect(const Endpoint& manager,
                                                        Credentials credentials,
                                                        SessionHandlers handlers,
                                                        const Limits& limits) {
    auto own = pki::read_certificate(credentials.cert_chain_pem);
    if (!own) return std::move(own).error().context("node certificate");
    auto ctx = client_context(credentials);
    if (!ctx) return std::move(ctx).error().context("node certificate");
    auto impl =
        std::make_unique<Impl>(manager, std::move(credentials), std::move(handlers), limits);
    auto opened = std::make_shared<Impl::Opening>();
    auto done = opened->promise.get_future();
    asio::co_spawn(asio::make_strand(impl->ioc_),
                   impl->run(std::move(*ctx), own->organization, opened),
                   [opened](std::exception_ptr e) {
                       if (!e) return;
                       try {
                           std::rethrow_exception(e);
                       } catch (const std::exception& x) {
                           log::error("nodeconn", "session failed: {}", x.what());
                       }
                       opened->settle(make_error(Errc::internal, "session failed"));
                   });
    auto* ioc = &impl->ioc_;
    impl->thread_ = std::thread([ioc] { ioc->run(); });
    auto r = done.get();
    if (!r) return std::move(r).error();
    return std::unique_ptr<NodeClient>(new NodeClient(std::move(impl)));
}

const std::shared_ptr<Session>& NodeClient::session() const noexcept {
    return impl_->public_session_;
}

}  // namespace coffer::nodeconn
