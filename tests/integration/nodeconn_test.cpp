// The node port over loopback: join, sessions, and everything it must refuse.
#include <unistd.h>

#include <gtest/gtest.h>
#include <openssl/ssl.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/string.hpp>

#include <fmt/format.h>

#include <condition_variable>
#include <cstdio>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "coffer/crypto/random.h"
#include "coffer/nodeconn/client.h"
#include "coffer/nodeconn/server.h"
#include "coffer/pki/ca.h"
#include "coffer/pki/node_key.h"
#include "harness.h"

using namespace coffer;
using namespace coffer::nodeconn;
using namespace std::chrono_literals;
namespace asio = boost::asio;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using Steady = std::chrono::steady_clock;

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);
constexpr auto deadline = 10s;

std::string str(const crypto::SecureBuffer& b) {
    return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

crypto::SecureBuffer message(std::string_view text) {
    return crypto::SecureBuffer::copy_of(text);
}

const pki::CertificateAuthority& cluster_ca() {
    static const auto ca = pki::CertificateAuthority::create_root();
    return ca;
}

Credentials issue(const pki::CertificateAuthority& ca, std::string id, pki::Role role,
                  std::string cluster = "cluster1") {
    auto key = pki::NodeKey::generate();
    auto cert = ca.issue(key.csr_pem, {std::move(id), role, std::move(cluster)});
    return {cert.value(), std::move(key.key_pem), ca.certificate_pem()};
}

// The manager's server credentials.
Credentials manager_credentials(const pki::CertificateAuthority& ca, std::string_view id,
                                std::string_view cluster = "cluster1") {
    auto key = pki::NodeKey::generate();
    auto cert = ca.issue_manager_server(key.csr_pem, id, cluster);
    return {cert.value(), std::move(key.key_pem), ca.certificate_pem()};
}

// What a session end saw, for the test thread to wait on with a deadline.
struct Observed {
    std::mutex m;
    std::condition_variable cv;
    std::deque<Message> messages;
    std::vector<std::shared_ptr<Session>> opened;
    std::vector<std::string> closed;  // why

    SessionHandlers handlers() {
        return {
            [this](const std::shared_ptr<Session>& s) {
                std::lock_guard l(m);
                opened.push_back(s);
                cv.notify_all();
            },
            [this](const std::shared_ptr<Session>&, Message msg) {
                std::lock_guard l(m);
                messages.push_back(std::move(msg));
                cv.notify_all();
            },
            [this](const std::shared_ptr<Session>&, const Error& why) {
                std::lock_guard l(m);
                closed.push_back(why.message);
                cv.notify_all();
            },
        };
    }

    template <typename Pred>
    bool wait(Pred pred) {
        std::unique_lock l(m);
        return cv.wait_for(l, deadline, [&] { return pred(); });
    }
    std::shared_ptr<Session> first_opened() {
        std::lock_guard l(m);
        return opened.empty() ? nullptr : opened.front();
    }
};

Limits fast_limits() {
    Limits l;
    l.handshake_timeout = 500ms;
    l.idle_timeout = 2s;
    l.max_message_bytes = 64 * 1024;
    return l;
}

class NodePort : public ::testing::Test {
  protected:
    void SetUp() override { start(fast_limits()); }

    void start(Limits limits,
               std::size_t max_unverified = ServerOptions{}.max_unverified_connections,
               const std::function<void(ServerOptions&)>& adjust = {}) {
        limits_ = limits;
        worker_token_ = std::make_unique<pki::JoinToken>(
            pki::JoinToken::generate(cluster_ca().certificate_pem()));
        ServerOptions options;
        options.cluster_id = "cluster1";
        options.limits = limits;
        options.max_unverified_connections = max_unverified;
        if (adjust) adjust(options);
        ServerHandlers handlers;
        handlers.on_join = [this](JoinRequest req) -> Result<JoinResponse> {
            ++joins_;
            if (!req.token.matches(*worker_token_))
                return make_error(Errc::unauthenticated,
                                  "A valid join token is necessary to join this cluster");
            auto id = crypto::random_id();
            auto cert = cluster_ca().issue(req.csr_pem, {id, pki::Role::worker, "cluster1"});
            if (!cert) return std::move(cert).error();
            return JoinResponse{id, *cert, cluster_ca().certificate_pem()};
        };
        handlers.authorize = [this](const pki::NodeIdentity& id) -> Result<void> {
            std::lock_guard l(removed_mutex_);
            if (id.node_id == removed_)
                return make_error(Errc::permission_denied,
                                  fmt::format("node {} was removed from the cluster", id.node_id));
            return {};
        };
        handlers.session = server_seen_.handlers();
        auto server = NodeServer::start(std::move(options),
                                        manager_credentials(cluster_ca(), "manager1"), handlers);
        ASSERT_TRUE(server) << server.error().message;
        server_ = std::move(*server);
    }

    Endpoint endpoint() const { return {"127.0.0.1", server_->port()}; }

    Result<JoinResponse> join_as_worker(pki::NodeKey& key) {
        return join(endpoint(), worker_token_->text(), key.csr_pem, limits_);
    }

    Credentials joined_worker() {
        auto key = pki::NodeKey::generate();
        auto r = join_as_worker(key);
        EXPECT_TRUE(r) << r.error().message;
        return {r->certificate_pem, std::move(key.key_pem), r->ca_bundle_pem};
    }

    Limits limits_;
    std::unique_ptr<pki::JoinToken> worker_token_;
    std::atomic<int> joins_{0};
    std::mutex removed_mutex_;
    std::string removed_;
    Observed server_seen_;
    std::unique_ptr<NodeServer> server_;
};

// A hand-made client for what the real one never does.
struct RawOutcome {
    bool connected = false;
    bool handshake_ok = false;
    unsigned status = 0;              // HTTP status of the answer, 0 when none
    bool closed_by_server = false;    // the server ended the connection
    Steady::duration closed_after{};  // since connect
    std::string received;             // everything the server sent
};

enum class Send { nothing, garbage, upgrade_request };

// Connects; optionally speaks TLS with ctx; sends `what` (with TLS, `request` instead of the
// plain upgrade request when given); reads until the server closes.
RawOutcome raw_client(std::uint16_t port, ssl::context* ctx, Send what, std::string request = {}) {
    asio::io_context ioc;
    RawOutcome out;
    asio::co_spawn(
        ioc,
        [&]() -> asio::awaitable<void> {
            tcp::socket socket(ioc);
            auto [ec] = co_await socket.async_connect({asio::ip::make_address("127.0.0.1"), port},
                                                      use_tuple);
            if (ec) co_return;
            out.connected = true;
            auto start = Steady::now();
            char buf[4096];
            std::string received;
            if (ctx == nullptr) {
                if (what == Send::garbage)
                    co_await asio::async_write(socket, asio::buffer("\x16\x03\x01garbage\r\n\r\n"),
                                               use_tuple);
                for (;;) {
                    auto [e, n] = co_await socket.async_read_some(asio::buffer(buf), use_tuple);
                    if (e) break;
                }
            } else {
                ssl::stream<tcp::socket&> tls(socket, *ctx);
                auto [he] = co_await tls.async_handshake(ssl::stream_base::client, use_tuple);
                out.handshake_ok = !he;
                if (!he && what == Send::upgrade_request) {
                    std::string req = !request.empty()
                                          ? request
                                          : "GET /session HTTP/1.1\r\nHost: "
                                            "coffer-manager\r\nUpgrade: websocket\r\n"
                                            "Connection: Upgrade\r\nSec-WebSocket-Key: "
                                            "dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                            "Sec-WebSocket-Version: 13\r\n\r\n";
                    co_await asio::async_write(tls, asio::buffer(req), use_tuple);
                }
                for (;;) {
                    auto [e, n] = co_await tls.async_read_some(asio::buffer(buf), use_tuple);
                    if (e) break;
                    received.append(buf, n);
                }
            }
            out.closed_by_server = true;
            out.closed_after = Steady::now() - start;
            if (received.rfind("HTTP/1.1 ", 0) == 0) out.status = std::stoul(received.substr(9, 3));
            out.received = std::move(received);
        },
        asio::detached);
    ioc.run_for(deadline);
    return out;
}

std::unique_ptr<ssl::context> tls_client(int max_version, const Credentials* creds = nullptr) {
    auto ctx = std::make_unique<ssl::context>(ssl::context::tls_client);
    SSL_CTX_set_max_proto_version(ctx->native_handle(), max_version);
    ctx->set_verify_mode(ssl::verify_none);
    if (creds != nullptr) {
        ctx->use_certificate_chain(asio::buffer(creds->cert_chain_pem));
        ctx->use_private_key(asio::buffer(creds->key_pem.data(), creds->key_pem.size()),
                             ssl::context::pem);
    }
    return ctx;
}

}  // namespace

TEST_F(NodePort, JoinsAndExchangesMessagesBothWays) {
    auto key = pki::NodeKey::generate();
    auto joined = join_as_worker(key);
    ASSERT_TRUE(joined) << joined.error().message;
    EXPECT_TRUE(pki::key_matches_certificate(key.key_pem, joined->certificate_pem));
    EXPECT_EQ(joined->ca_bundle_pem, cluster_ca().certificate_pem());

    Observed client_seen;
    auto client = NodeClient::connect(
        endpoint(), {joined->certificate_pem, std::move(key.key_pem), joined->ca_bundle_pem},
        client_seen.handlers(), limits_);
    ASSERT_TRUE(client) << client.error().message;
    EXPECT_EQ((*client)->session()->peer().node_id, "manager1");
    EXPECT_EQ((*client)->session()->peer().role, pki::Role::manager);

    ASSERT_TRUE((*client)->session()->send(message(R"({"type":"status","task":"t1"})")));
    ASSERT_TRUE(server_seen_.wait([&] { return !server_seen_.messages.empty(); }));
    auto at_server = server_seen_.first_opened();
    ASSERT_TRUE(at_server);
    EXPECT_EQ(at_server->peer().node_id, joined->node_id);
    EXPECT_EQ(at_server->peer().role, pki::Role::worker);
    EXPECT_EQ(server_seen_.messages.front().type, "status");
    EXPECT_EQ(server_->session_count(), 1u);

    // A secret-carrying assignment from the manager, built and sent from secure memory.
    ASSERT_TRUE(at_server->send(message(R"({"type":"assign","secret":"aHVudGVyMg=="})")));
    ASSERT_TRUE(client_seen.wait([&] { return !client_seen.messages.empty(); }));
    EXPECT_EQ(client_seen.messages.front().type, "assign");
    auto doc = SecureJson::parse(client_seen.messages.front().json);
    ASSERT_TRUE(doc);
    EXPECT_EQ(doc->value().at("secret").as_string(), "aHVudGVyMg==");

    client->reset();
    ASSERT_TRUE(server_seen_.wait([&] { return !server_seen_.closed.empty(); }));
    EXPECT_TRUE(coffer::test::wait_until([&] { return server_->session_count() == 0; }, deadline));
}

// Messages from a few bytes to the size limit, hundreds queued at once both ways: records
// written in parts as the socket fills, small frames joined into one record, and a read and a
// write pending together at each end. Every message arrives whole and in order.
TEST_F(NodePort, CarriesLargeMessagesAndManyInFlightBothWays) {
    Observed client_seen;
    auto client = NodeClient::connect(endpoint(), joined_worker(), client_seen.handlers(), limits_);
    ASSERT_TRUE(client) << client.error().message;
    ASSERT_TRUE(server_seen_.wait([&] { return !server_seen_.opened.empty(); }));
    auto at_server = server_seen_.first_opened();
    auto body = [](int i) {
        std::size_t size = (static_cast<std::size_t>(i) * 7919) % (60 * 1024);
        return fmt::format(R"({{"type":"bulk","n":{},"pad":"{}"}})", i,
                           std::string(size, static_cast<char>('a' + i % 26)));
    };
    constexpr std::size_t count = 200;
    for (std::size_t i = 0; i < count; ++i) {
        ASSERT_TRUE(at_server->send(message(body(static_cast<int>(i)))));
        ASSERT_TRUE((*client)->session()->send(message(body(static_cast<int>(i)))));
    }
    ASSERT_TRUE(client_seen.wait([&] { return client_seen.messages.size() == count; }));
    ASSERT_TRUE(server_seen_.wait([&] { return server_seen_.messages.size() == count; }));
    for (std::size_t i = 0; i < count; ++i) {
        EXPECT_EQ(str(client_seen.messages[i].json), body(static_cast<int>(i))) << i;
        EXPECT_EQ(str(server_seen_.messages[i].json), body(static_cast<int>(i))) << i;
    }
    std::lock_guard l(server_seen_.m);
    EXPECT_TRUE(server_seen_.closed.empty());
}

TEST_F(NodePort, JoinRefusesAWrongSecret) {
    auto text = str(worker_token_->text());
    text.back() = text.back() == '0' ? '1' : '0';
    auto key = pki::NodeKey::generate();
    auto r = join(endpoint(), message(text), key.csr_pem, limits_);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, Errc::unauthenticated);
    EXPECT_NE(r.error().message.find("A valid join token is necessary"), std::string::npos);
    EXPECT_EQ(r.error().message.find(text.substr(text.size() - 25)), std::string::npos);
}

TEST_F(NodePort, JoinRefusesAManagerWhoseCaDoesNotMatchTheToken) {
    auto other = pki::CertificateAuthority::create_root();
    auto token = pki::JoinToken::generate(other.certificate_pem());
    auto key = pki::NodeKey::generate();
    auto r = join(endpoint(), token.text(), key.csr_pem, limits_);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message, "manager's CA does not match the join token");
    EXPECT_EQ(joins_, 0);  // the token never left the node
}

TEST_F(NodePort, JoinRefusesAMalformedToken) {
    auto key = pki::NodeKey::generate();
    auto r = join(endpoint(), message("COFFERTKN-1-short-secret"), key.csr_pem, limits_);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, Errc::invalid_argument);
    EXPECT_EQ(joins_, 0);
}

TEST_F(NodePort, JoinRefusesAMalformedHostnameBeforeTheHandler) {
    auto worker = worker_token_->text();
    for (std::string bad : {std::string("evil host"), std::string("node/a"), std::string("a\nb"),
                            std::string("caf\xc3\xa9"), std::string(254, 'a')}) {
        auto key = pki::NodeKey::generate();
        auto r = join(endpoint(), worker, key.csr_pem, limits_, bad);
        ASSERT_FALSE(r) << bad;
        EXPECT_EQ(r.error().code, Errc::invalid_argument) << bad;
        EXPECT_NE(r.error().message.find("hostname must be 1-253 characters"), std::string::npos)
            << r.error().message;
    }
    EXPECT_EQ(joins_, 0);
    auto key = pki::NodeKey::generate();
    EXPECT_TRUE(join(endpoint(), worker, key.csr_pem, limits_, std::string(253, 'a')));
    EXPECT_TRUE(join(endpoint(), worker, key.csr_pem, limits_, "Node-1.example_a"));
}

// A node of another protocol version is told so by name, on its join and on its session, and
// not handed messages it would misread.
TEST_F(NodePort, RefusesAnotherProtocolVersionByName) {
    constexpr std::string_view why =
        "node protocol version 7 is not supported by this manager (supports 1)";
    auto key = pki::NodeKey::generate();
    auto body =
        fmt::format(R"({{"version":7,"token":"{}","csr":{}}})",
                    std::string_view(reinterpret_cast<const char*>(worker_token_->text().data()),
                                     worker_token_->text().size()),
                    boost::json::serialize(boost::json::string(key.csr_pem)));
    auto join_v7 =
        raw_client(server_->port(), tls_client(TLS1_3_VERSION).get(), Send::upgrade_request,
                   fmt::format("POST /join HTTP/1.1\r\nHost: coffer-manager\r\n"
                               "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
                               body.size(), body));
    EXPECT_EQ(join_v7.status, 400u);
    EXPECT_NE(join_v7.received.find(why), std::string::npos) << join_v7.received;
    EXPECT_EQ(joins_, 0);

    auto node = joined_worker();
    auto session_v7 =
        raw_client(server_->port(), tls_client(TLS1_3_VERSION, &node).get(), Send::upgrade_request,
                   "GET /session HTTP/1.1\r\nHost: coffer-manager\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\nCoffer-Node-Protocol: 7\r\n\r\n");
    EXPECT_EQ(session_v7.status, 400u);
    EXPECT_NE(session_v7.received.find(why), std::string::npos) << session_v7.received;
    // The real client announces its version and is let in.
    Observed client_seen;
    auto client = NodeClient::connect(endpoint(), std::move(node), client_seen.handlers(), limits_);
    ASSERT_TRUE(client) << client.error().message;
}

// The manager's server certificate is for a TLS server only: presented by a client, the
// handshake fails, so a leaked manager key could not open a node's session either.
TEST_F(NodePort, TheManagersCertificateCannotOpenASession) {
    auto manager = manager_credentials(cluster_ca(), "manager2");
    auto raw = raw_client(server_->port(), tls_client(TLS1_3_VERSION, &manager).get(),
                          Send::upgrade_request);
    EXPECT_NE(raw.status, 101u);
    Observed seen;
    auto client = NodeClient::connect(endpoint(), std::move(manager), seen.handlers(), limits_);
    EXPECT_FALSE(client);
    EXPECT_EQ(server_->session_count(), 0u);
    EXPECT_TRUE(server_seen_.opened.empty());
}

// A manager of another cluster under the same CA is not ours.
TEST_F(NodePort, ANodeRefusesTheManagerOfAnotherCluster) {
    auto worker = joined_worker();
    ServerOptions options;
    options.cluster_id = "cluster2";
    options.limits = limits_;
    auto other = NodeServer::start(std::move(options),
                                   manager_credentials(cluster_ca(), "manager9", "cluster2"), {});
    ASSERT_TRUE(other) << other.error().message;
    Observed seen;
    auto client = NodeClient::connect({"127.0.0.1", (*other)->port()}, std::move(worker),
                                      seen.handlers(), limits_);
    ASSERT_FALSE(client);
    EXPECT_EQ(client.error().code, Errc::permission_denied) << client.error().message;
    EXPECT_NE(client.error().message.find("another cluster"), std::string::npos)
        << client.error().message;
}

TEST_F(NodePort, RefusesTls12Clients) {
    auto ctx = tls_client(TLS1_2_VERSION);
    auto out = raw_client(server_->port(), ctx.get(), Send::upgrade_request);
    EXPECT_TRUE(out.connected);
    EXPECT_FALSE(out.handshake_ok);
    EXPECT_EQ(out.status, 0u);
    // TLS 1.3 with the same client goes through (to be refused for lack of a certificate).
    auto ok = raw_client(server_->port(), tls_client(TLS1_3_VERSION).get(), Send::upgrade_request);
    EXPECT_TRUE(ok.handshake_ok);
}

TEST_F(NodePort, SessionNeedsAClientCertificate) {
    auto out = raw_client(server_->port(), tls_client(TLS1_3_VERSION).get(), Send::upgrade_request);
    EXPECT_TRUE(out.handshake_ok);
    EXPECT_EQ(out.status, 401u);
    EXPECT_EQ(server_->session_count(), 0u);
}

TEST_F(NodePort, RefusesCertificatesOfAForeignCa) {
    auto foreign_ca = pki::CertificateAuthority::create_root();
    auto foreign = issue(foreign_ca, "intruder", pki::Role::worker);
    auto raw = raw_client(server_->port(), tls_client(TLS1_3_VERSION, &foreign).get(),
                          Send::upgrade_request);
    EXPECT_NE(raw.status, 101u);
    EXPECT_NE(raw.status, 200u);

    // The real client, trusting our CA for the manager but holding a foreign certificate.
    foreign.ca_bundle_pem = cluster_ca().certificate_pem();
    Observed seen;
    auto client = NodeClient::connect(endpoint(), std::move(foreign), seen.handlers(), limits_);
    EXPECT_FALSE(client);
    EXPECT_EQ(server_->session_count(), 0u);
    EXPECT_TRUE(server_seen_.opened.empty());
}

TEST_F(NodePort, RefusesAnotherClustersCertificateFromTheSameCa) {
    auto other = issue(cluster_ca(), "node9", pki::Role::worker, "cluster2");
    auto out = raw_client(server_->port(), tls_client(TLS1_3_VERSION, &other).get(),
                          Send::upgrade_request);
    EXPECT_EQ(out.status, 403u);
}

TEST_F(NodePort, ClosesHalfOpenAndGarbageConnectionsAndKeepsServing) {
    auto silent = raw_client(server_->port(), nullptr, Send::nothing);
    EXPECT_TRUE(silent.closed_by_server);
    EXPECT_GE(silent.closed_after, limits_.handshake_timeout - 50ms);
    EXPECT_LT(silent.closed_after, deadline);

    auto garbage = raw_client(server_->port(), nullptr, Send::garbage);
    EXPECT_TRUE(garbage.closed_by_server);
    EXPECT_LT(garbage.closed_after, deadline);

    // TLS done, then silence: the same deadline covers the request.
    auto mute = raw_client(server_->port(), tls_client(TLS1_3_VERSION).get(), Send::nothing);
    EXPECT_TRUE(mute.handshake_ok);
    EXPECT_TRUE(mute.closed_by_server);
    EXPECT_GE(mute.closed_after, limits_.handshake_timeout - 100ms);

    auto key = pki::NodeKey::generate();
    EXPECT_TRUE(join_as_worker(key));
}

// Connections that never finish their handshake fill the allowance: new ones are closed at
// once, the open session goes on, and when they go, connections are served again.
TEST_F(NodePort, ClosesNewConnectionsWhileTooManyAreUnverified) {
    server_.reset();
    auto limits = fast_limits();
    limits.handshake_timeout = 60s;  // the silent connections stay until the test closes them
    start(limits, 3);
    Observed client_seen;
    auto client = NodeClient::connect(endpoint(), joined_worker(), client_seen.handlers(), limits_);
    ASSERT_TRUE(client) << client.error().message;

    asio::io_context ioc;
    std::vector<tcp::socket> silent;
    for (int i = 0; i < 3; ++i) {
        silent.emplace_back(ioc);
        silent.back().connect({asio::ip::make_address("127.0.0.1"), server_->port()});
    }
    auto refused = raw_client(server_->port(), nullptr, Send::nothing);
    EXPECT_TRUE(refused.closed_by_server) << "a fourth unverified connection was kept";

    ASSERT_TRUE((*client)->session()->send(message(R"({"type":"status"})")));
    EXPECT_TRUE(server_seen_.wait([&] { return !server_seen_.messages.empty(); }));

    for (auto& s : silent) s.close();
    EXPECT_TRUE(coffer::test::wait_until(
        [&] {
            auto key = pki::NodeKey::generate();
            return static_cast<bool>(join_as_worker(key));
        },
        deadline));
}

// A connection has hello_timeout to send its ClientHello; once it has, the rest of the handshake
// and the request have handshake_timeout.
TEST_F(NodePort, ClosesAConnectionWithoutAClientHelloAtTheHelloDeadline) {
    server_.reset();
    auto limits = fast_limits();
    limits.handshake_timeout = 3s;
    start(limits, ServerOptions{}.max_unverified_connections,
          [](ServerOptions& o) { o.hello_timeout = 300ms; });
    auto silent = raw_client(server_->port(), nullptr, Send::nothing);
    EXPECT_TRUE(silent.closed_by_server);
    EXPECT_GE(silent.closed_after, 300ms - 50ms);
    EXPECT_LT(silent.closed_after, limits.handshake_timeout);

    auto mute = raw_client(server_->port(), tls_client(TLS1_3_VERSION).get(), Send::nothing);
    EXPECT_TRUE(mute.handshake_ok);
    EXPECT_TRUE(mute.closed_by_server);
    EXPECT_GE(mute.closed_after, limits.handshake_timeout - 100ms);
}

// What this process writes to stderr (the log) while it lives.
class StderrCapture {
  public:
    StderrCapture() : file_(std::tmpfile()), saved_(::dup(STDERR_FILENO)) {
        ::fflush(stderr);
        ::dup2(::fileno(file_), STDERR_FILENO);
    }
    ~StderrCapture() {
        restore();
        std::fclose(file_);
    }
    void restore() {
        if (saved_ < 0) return;
        ::dup2(saved_, STDERR_FILENO);
        ::close(saved_);
        saved_ = -1;
    }
    std::string text() const {
        std::string out;
        std::rewind(file_);
        char buf[4096];
        for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, file_)) > 0;) out.append(buf, n);
        return out;
    }

  private:
    std::FILE* file_;
    int saved_;
};

std::size_t count_of(std::string_view text, std::string_view what) {
    std::size_t n = 0;
    for (auto at = text.find(what); at != std::string_view::npos; at = text.find(what, at + 1)) ++n;
    return n;
}

// Joins that succeed cost nothing; past its burst of refused joins, a source's joins are refused
// (429) before the handler sees them, a right token included.
TEST_F(NodePort, RefusesJoinsPastTheRateOfRefusalsOfTheirSource) {
    server_.reset();
    start(fast_limits(), ServerOptions{}.max_unverified_connections, [](ServerOptions& o) {
        o.join_burst = 3;
        o.join_interval = std::chrono::hours(1);
    });
    for (int i = 0; i < 5; ++i) {
        auto key = pki::NodeKey::generate();
        auto r = join_as_worker(key);
        EXPECT_TRUE(r) << r.error().message;
    }
    auto wrong = pki::JoinToken::generate(cluster_ca().certificate_pem());
    for (int i = 0; i < 3; ++i) {
        auto key = pki::NodeKey::generate();
        auto r = join(endpoint(), wrong.text(), key.csr_pem, limits_);
        ASSERT_FALSE(r);
        EXPECT_EQ(r.error().code, Errc::unauthenticated);
    }
    auto key = pki::NodeKey::generate();
    auto refused = join_as_worker(key);
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().code, Errc::unavailable);
    EXPECT_NE(refused.error().message.find("too many refused joins"), std::string::npos)
        << refused.error().message;
    EXPECT_EQ(joins_, 8);
}

// A flood of refused joins is one log line at once and one with the count when the interval ends.
TEST_F(NodePort, CountsRefusedJoinsIntoOneLineAnInterval) {
    server_.reset();
    start(fast_limits(), ServerOptions{}.max_unverified_connections,
          [](ServerOptions& o) { o.refusal_log_interval = 300ms; });
    StderrCapture captured;
    auto wrong = pki::JoinToken::generate(cluster_ca().certificate_pem());
    for (int i = 0; i < 12; ++i) {
        auto key = pki::NodeKey::generate();
        auto r = join(endpoint(), wrong.text(), key.csr_pem, limits_);
        ASSERT_FALSE(r);
        EXPECT_EQ(r.error().code, Errc::unauthenticated);
    }
    EXPECT_EQ(count_of(captured.text(), "join refused from 127.0.0.1"), 1u) << captured.text();
    EXPECT_TRUE(coffer::test::wait_until(
        [&] { return count_of(captured.text(), "join refused from 127.0.0.1: 11 more") == 1; },
        deadline));
    captured.restore();
    EXPECT_EQ(count_of(captured.text(), "join refused"), 2u) << captured.text();
}

// A manager that accepts and then says nothing: the node gives up at its deadline and says so.
TEST(NodeClient, GivesUpOnASilentManagerAtItsDeadline) {
    asio::io_context ioc;
    tcp::acceptor acceptor(ioc, {asio::ip::make_address("127.0.0.1"), 0});
    tcp::socket held(ioc);
    acceptor.async_accept(held, [](boost::system::error_code) {});
    std::thread io([&] { ioc.run(); });
    Limits limits = fast_limits();
    limits.handshake_timeout = 300ms;
    auto key = pki::NodeKey::generate();
    auto token = pki::JoinToken::generate(cluster_ca().certificate_pem());
    auto start = Steady::now();
    auto r =
        join({"127.0.0.1", acceptor.local_endpoint().port()}, token.text(), key.csr_pem, limits);
    auto took = Steady::now() - start;
    io.join();
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, Errc::unavailable);
    EXPECT_NE(r.error().message.find("TLS handshake with 127.0.0.1"), std::string::npos)
        << r.error().message;
    EXPECT_NE(r.error().message.find("timed out"), std::string::npos) << r.error().message;
    EXPECT_GE(took, limits.handshake_timeout);
    EXPECT_LT(took, deadline);
}

TEST_F(NodePort, HeartbeatsKeepAQuietSessionOpen) {
    server_.reset();
    auto limits = fast_limits();
    limits.idle_timeout = 300ms;  // pings after 150ms of quiet
    start(limits);
    Observed client_seen;
    auto client = NodeClient::connect(endpoint(), joined_worker(), client_seen.handlers(), limits);
    ASSERT_TRUE(client) << client.error().message;
    ASSERT_TRUE(server_seen_.wait([&] { return !server_seen_.opened.empty(); }));
    auto at_server = server_seen_.first_opened();
    // Several idle timeouts pass in heartbeats alone, and neither side gives up.
    EXPECT_TRUE(coffer::test::wait_until(
        [&] { return at_server->heartbeats() >= 6 && (*client)->session()->heartbeats() >= 6; },
        deadline));
    EXPECT_FALSE(at_server->closed());
    EXPECT_FALSE((*client)->session()->closed());
    std::lock_guard l(server_seen_.m);
    EXPECT_TRUE(server_seen_.closed.empty());
}

TEST_F(NodePort, ClosesSessionsOnOversizeOrMalformedMessages) {
    for (const std::string& bad : {std::string(100 * 1024, ' '), std::string("not json"),
                                   std::string(R"({"kind":"no type"})")}) {
        Observed client_seen;
        auto client =
            NodeClient::connect(endpoint(), joined_worker(), client_seen.handlers(), limits_);
        ASSERT_TRUE(client) << client.error().message;
        ASSERT_TRUE((*client)->session()->send(message(bad)));
        EXPECT_TRUE(client_seen.wait([&] { return !client_seen.closed.empty(); }));
        EXPECT_TRUE(
            coffer::test::wait_until([&] { return server_->session_count() == 0; }, deadline));
    }
    std::lock_guard l(server_seen_.m);
    EXPECT_TRUE(server_seen_.messages.empty());
}

TEST_F(NodePort, RemovedNodeIsCutOffAndCannotReconnect) {
    auto creds = joined_worker();
    auto again = creds.clone();
    Observed client_seen;
    auto client =
        NodeClient::connect(endpoint(), std::move(creds), client_seen.handlers(), limits_);
    ASSERT_TRUE(client);
    ASSERT_TRUE(server_seen_.wait([&] { return !server_seen_.opened.empty(); }));
    auto node_id = server_seen_.first_opened()->peer().node_id;
    {
        std::lock_guard l(removed_mutex_);
        removed_ = node_id;
    }
    server_->close_sessions(node_id);
    EXPECT_TRUE(client_seen.wait([&] { return !client_seen.closed.empty(); }));
    Observed second;
    auto refused = NodeClient::connect(endpoint(), std::move(again), second.handlers(), limits_);
    EXPECT_FALSE(refused);
}
