#include <openssl/pem.h>
#include <openssl/ssl.h>

#include <boost/asio/ssl/host_name_verification.hpp>

#include "tls_context.h"
#include "tls_stream.h"

namespace coffer::nodeconn::detail {
namespace asio = boost::asio;

namespace {

Error tls_error(std::string_view what, const boost::system::error_code& ec) {
    return make_error(Errc::invalid_argument, fmt::format("{}: {}", what, ec.message()));
}

std::shared_ptr<ssl::context> tls13(ssl::context::method method) {
    auto ctx = std::make_shared<ssl::context>(method);
    SSL_CTX* native = ctx->native_handle();
    SSL_CTX_set_min_proto_version(native, TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(native, TLS1_3_VERSION);
    // No session tickets or resumption: every connection proves its certificate afresh, so a
    // removed node's session cannot be resumed.
    SSL_CTX_set_options(native, SSL_OP_NO_TICKET);
    // Plaintext (secrets among it) is wiped from OpenSSL's record buffer as it is read out.
    SSL_CTX_set_options(native, SSL_OP_CLEANSE_PLAINTEXT);
    SSL_CTX_set_num_tickets(native, 0);
    SSL_CTX_set_session_cache_mode(native, SSL_SESS_CACHE_OFF);
    return ctx;
}

Result<void> trust(ssl::context& ctx, std::string_view ca_pem) {
    boost::system::error_code ec;
    ctx.add_certificate_authority(asio::buffer(ca_pem.data(), ca_pem.size()), ec);
    if (ec) return tls_error("load CA bundle", ec);
    return {};
}

Result<void> identity(ssl::context& ctx, const Credentials& credentials) {
    boost::system::error_code ec;
    ctx.use_certificate_chain(
        asio::buffer(credentials.cert_chain_pem.data(), credentials.cert_chain_pem.size()), ec);
    if (ec) return tls_error("load certificate", ec);
    ctx.use_private_key(asio::buffer(credentials.key_pem.data(), credentials.key_pem.size()),
                        ssl::context::pem, ec);
    if (ec) return tls_error("load private key", ec);
    if (SSL_CTX_check_private_key(ctx.native_handle()) != 1)
        return make_error(Errc::invalid_argument, "private key does not match certificate");
    // The chain sent is the credentials' own (leaf, then a cross-signed certificate during a root
    // rotation), never one OpenSSL completes from our CA bundle: that would add the root, which
    // the peer verifies against its own bundle anyway, and which the peer keeps parsed for the
    // connection's life (3.5 KiB per session on the manager).
    SSL_CTX_set_mode(ctx.native_handle(), SSL_MODE_NO_AUTO_CHAIN);
    return {};
}

}  // namespace

Result<std::shared_ptr<ssl::context>> server_context(const Credentials& credentials) {
    auto ctx = tls13(ssl::context::tls_server);
    if (auto r = identity(*ctx, credentials); !r) return std::move(r).error();
    if (auto r = trust(*ctx, credentials.ca_bundle_pem); !r) return std::move(r).error();
    ctx->set_verify_mode(ssl::verify_peer);
    // OpenSSL's default on a server, made explicit: a client certificate must be one for TLS
    // clients, so the manager's own (serverAuth only) cannot open a session.
    SSL_CTX_set_purpose(ctx->native_handle(), X509_PURPOSE_SSL_CLIENT);
    watch_client_hello(ctx->native_handle());
    return ctx;
}

namespace {

// The manager's certificate must be for a TLS server and carry its name: a node's certificate
// (clientAuth only, no such name) is refused during the handshake.
void verify_manager(ssl::context& ctx) {
    ctx.set_verify_mode(ssl::verify_peer);
    SSL_CTX_set_purpose(ctx.native_handle(), X509_PURPOSE_SSL_SERVER);
    ctx.set_verify_callback(ssl::host_name_verification(manager_name));
}

}  // namespace

Result<std::shared_ptr<ssl::context>> client_context(const Credentials& credentials) {
    auto ctx = tls13(ssl::context::tls_client);
    if (auto r = identity(*ctx, credentials); !r) return std::move(r).error();
    if (auto r = trust(*ctx, credentials.ca_bundle_pem); !r) return std::move(r).error();
    verify_manager(*ctx);
    return ctx;
}

Result<std::shared_ptr<ssl::context>> join_context(std::string_view pinned_ca_pem) {
    auto ctx = tls13(ssl::context::tls_client);
    if (pinned_ca_pem.empty()) {
        ctx->set_verify_mode(ssl::verify_none);
        return ctx;
    }
    if (auto r = trust(*ctx, pinned_ca_pem); !r) return std::move(r).error();
    verify_manager(*ctx);
    return ctx;
}

std::string peer_chain_pem(SSL* ssl, bool server_side) {
    std::string out;
    auto append = [&](X509* cert) {
        BIO* bio = BIO_new(BIO_s_mem());
        if (bio == nullptr) return;
        if (PEM_write_bio_X509(bio, cert) == 1) {
            char* data = nullptr;
            long len = BIO_get_mem_data(bio, &data);
            out.append(data, static_cast<std::size_t>(len));
        }
        BIO_free(bio);
    };
    X509* leaf = SSL_get0_peer_certificate(ssl);
    if (leaf == nullptr) return out;
    append(leaf);
    // On the server side the peer's chain excludes its leaf; on the client side it includes it.
    STACK_OF(X509)* chain = SSL_get_peer_cert_chain(ssl);
    for (int i = server_side ? 0 : 1; chain != nullptr && i < sk_X509_num(chain); ++i)
        append(sk_X509_value(chain, i));
    return out;
}

}  // namespace coffer::nodeconn::detail
