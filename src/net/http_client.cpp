#include "coffer/net/http_client.h"

#include <openssl/ssl.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <optional>

#include "coffer/crypto/secure_allocator.h"

namespace coffer::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using local = asio::local::stream_protocol;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

struct HttpClient::Impl {
    enum class Kind { unix_socket, plain, tls };
    Kind kind = Kind::unix_socket;
    std::string path;        // unix
    std::string host, port;  // plain, tls
    std::string label;       // for messages
    std::chrono::milliseconds io_timeout{0};
    asio::io_context ioc;
    local::socket socket{ioc};
    std::optional<ssl::context> tls_context;
    std::optional<beast::tcp_stream> tcp_stream;
    std::optional<ssl::stream<beast::tcp_stream>> tls_stream;
    beast::flat_buffer buffer;
    bool connected = false;
    std::uint64_t body_limit = 64 * 1024 * 1024;

    beast::tcp_stream& lowest() { return tls_stream ? tls_stream->next_layer() : *tcp_stream; }

    // Runs one asynchronous operation to its end, within io_timeout (TCP and TLS streams).
    template <typename Start>
    error_code run(Start&& start) {
        error_code result = asio::error::would_block;
        lowest().expires_after(io_timeout);
        start([&result](error_code ec, auto&&...) { result = ec; });
        ioc.restart();
        ioc.run();
        return result;
    }

    Result<void> open() {
        buffer.clear();
        if (kind == Kind::unix_socket) {
            error_code ec;
            socket = local::socket(ioc);
            socket.connect(local::endpoint(path), ec);
            if (ec)
                return make_error(
                    Errc::unavailable,
                    fmt::format("cannot connect to cofferd at unix://{}: {}", path, ec.message()));
            connected = true;
            return {};
        }
        error_code ec;
        tcp::resolver resolver(ioc);
        auto endpoints = resolver.resolve(host, port, ec);
        if (ec)
            return make_error(Errc::unavailable,
                              fmt::format("cannot resolve {}: {}", label, ec.message()));
        tls_stream.reset();
        tcp_stream.reset();
        if (kind == Kind::tls)
            tls_stream.emplace(ioc, *tls_context);
        else
            tcp_stream.emplace(ioc);
        ec = run([&](auto handler) { lowest().async_connect(endpoints, handler); });
        if (ec)
            return make_error(Errc::unavailable,
                              fmt::format("cannot connect to {}: {}", label, ec.message()));
        if (kind == Kind::tls) {
            error_code parse;
            (void)asio::ip::make_address(host, parse);
            // SNI for a name; either way the certificate must name the host.
            if (parse && !::SSL_set_tlsext_host_name(tls_stream->native_handle(), host.c_str()))
                return make_error(Errc::internal, fmt::format("TLS to {}: SNI", label));
            tls_stream->set_verify_mode(ssl::verify_peer);
            tls_stream->set_verify_callback(ssl::host_name_verification(host));
            ec = run([&](auto handler) {
                tls_stream->async_handshake(ssl::stream_base::client, handler);
            });
            if (ec)
                return make_error(Errc::unavailable,
                                  fmt::format("TLS handshake with {}: {}", label, ec.message()));
        }
        connected = true;
        return {};
    }

    void close() {
        connected = false;
        error_code ignored;
        if (kind == Kind::unix_socket)
            socket.close(ignored);
        else
            lowest().socket().close(ignored);
    }

    template <typename Request>
    error_code exchange(Request& req, http::response_parser<http::string_body>& parser) {
        error_code ec;
        if (kind == Kind::unix_socket) {
            http::write(socket, req, ec);
            if (!ec) http::read(socket, buffer, parser, ec);
            return ec;
        }
        auto both = [&](auto& stream) {
            ec = run([&](auto handler) { http::async_write(stream, req, handler); });
            if (!ec)
                ec = run([&](auto handler) { http::async_read(stream, buffer, parser, handler); });
        };
        if (tls_stream)
            both(*tls_stream);
        else
            both(*tcp_stream);
        return ec;
    }
};

HttpClient::HttpClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpClient::~HttpClient() = default;

void HttpClient::set_body_limit(std::uint64_t bytes) noexcept {
    impl_->body_limit = bytes;
}

namespace {

// "HOST:PORT" or "[V6]:PORT" into its parts.
bool split_host_port(std::string_view where, std::string& host, std::string& port) {
    auto colon = where.rfind(':');
    if (colon == std::string_view::npos || colon + 1 == where.size()) return false;
    host = std::string(where.substr(0, colon));
    port = std::string(where.substr(colon + 1));
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
        host = host.substr(1, host.size() - 2);
    if (host.empty() || host.find('/') != std::string::npos) return false;
    return port.find_first_not_of("0123456789") == std::string::npos && port.size() <= 5;
}

}  // namespace

Result<std::unique_ptr<HttpClient>> HttpClient::connect(std::string_view host, const ClientTls* tls,
                                                        std::chrono::milliseconds io_timeout) {
    auto impl = std::make_unique<Impl>();
    impl->io_timeout = io_timeout;
    auto bad = [&] {
        return make_error(Errc::invalid_argument,
                          fmt::format("unsupported host {}: expected unix:///path, "
                                      "http://HOST:PORT or https://HOST:PORT",
                                      host));
    };
    if (host.starts_with("unix://")) {
        impl->path = std::string(host.substr(7));
    } else if (host.starts_with("/")) {
        impl->path = std::string(host);
    } else if (host.starts_with("http://") || host.starts_with("https://")) {
        bool secure = host.starts_with("https://");
        auto rest = host.substr(secure ? 8 : 7);
        if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
        if (!split_host_port(rest, impl->host, impl->port)) return bad();
        impl->label = std::string(host);
        impl->kind = secure ? Impl::Kind::tls : Impl::Kind::plain;
        if (secure) {
            auto& ctx = impl->tls_context.emplace(ssl::context::tls_client);
            ctx.set_options(ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                            ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
            error_code ec;
            auto fail = [&](std::string_view what, const std::string& file) {
                return make_error(Errc::invalid_argument, fmt::format("TLS to {}: {} {}: {}", host,
                                                                      what, file, ec.message()));
            };
            if (tls == nullptr || tls->ca_file.empty())
                ctx.set_default_verify_paths(ec);
            else
                ctx.load_verify_file(tls->ca_file, ec);
            if (ec) return fail("CA file", tls ? tls->ca_file : std::string("(system)"));
            if (tls != nullptr && tls->cert_file.empty() != tls->key_file.empty())
                return make_error(Errc::invalid_argument,
                                  fmt::format("TLS to {}: a client certificate needs its key, "
                                              "and a key its certificate",
                                              host));
            if (tls != nullptr && !tls->cert_file.empty()) {
                if (ctx.use_certificate_chain_file(tls->cert_file, ec); ec)
                    return fail("certificate", tls->cert_file);
                if (ctx.use_private_key_file(tls->key_file, ssl::context::pem, ec); ec)
                    return fail("key", tls->key_file);
            }
        }
    } else {
        return bad();
    }
    if (auto r = impl->open(); !r) return std::move(r).error();
    return std::unique_ptr<HttpClient>(new HttpClient(std::move(impl)));
}

Result<ClientResponse> HttpClient::request(std::string_view method, std::string_view target,
                                           std::span<const std::uint8_t> body,
                                           std::string_view content_type,
                                           const SecretHeader* secret) {
    auto& im = *impl_;
    // One retry on a connection the server closed while idle (keep-alive expiry).
    for (int attempt = 0; attempt < 2; ++attempt) {
        if (!im.connected)
            if (auto r = im.open(); !r) return std::move(r).error();
        // The fields in secure memory: a secret header's value is copied there only.
        http::request<http::span_body<const std::uint8_t>,
                      http::basic_fields<crypto::SecureAllocator<char>>>
            req{http::string_to_verb(method), target, 11};
        req.set(http::field::host, im.kind == Impl::Kind::unix_socket ? "coffer" : im.host);
        req.set(http::field::user_agent, "coffer-cli");
        if (secret != nullptr)
            req.set(secret->name,
                    std::string_view(reinterpret_cast<const char*>(secret->value.data()),
                                     secret->value.size()));
        if (!body.empty() || method == "POST") {
            req.set(http::field::content_type, content_type);
            req.body() = body;
        }
        req.keep_alive(true);
        req.prepare_payload();
        http::response_parser<http::string_body> parser;
        parser.body_limit(im.body_limit);
        parser.skip(method == "HEAD");
        auto ec = im.exchange(req, parser);
        if (ec) {
            im.close();
            if (attempt == 0 &&
                (ec == http::error::end_of_stream || ec == asio::error::broken_pipe ||
                 ec == asio::error::connection_reset || ec == ssl::error::stream_truncated))
                continue;
            return make_error(
                Errc::unavailable,
                fmt::format("request {} {}: {}", method, target,
                            ec == beast::error::timeout
                                ? fmt::format("no answer within {} ms", im.io_timeout.count())
                                : ec.message()));
        }
        auto msg = parser.release();
        ClientResponse out;
        out.status = static_cast<int>(msg.result_int());
        for (const auto& f : msg) {
            std::string name(f.name_string());
            for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            out.headers.emplace(std::move(name), std::string(f.value()));
        }
        out.body = std::move(msg.body());
        if (!msg.keep_alive()) im.close();
        return out;
    }
    return make_error(Errc::unavailable, "connection closed");
}

}  // namespace coffer::net
