#include "coffer/net/http_client.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include "coffer/crypto/secure_allocator.h"

namespace coffer::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using local = asio::local::stream_protocol;

struct HttpClient::Impl {
    std::string path;
    asio::io_context ioc;
    local::socket socket{ioc};
    beast::flat_buffer buffer;
    bool connected = false;
    std::uint64_t body_limit = 64 * 1024 * 1024;

    Result<void> open() {
        boost::system::error_code ec;
        socket = local::socket(ioc);
        socket.connect(local::endpoint(path), ec);
        if (ec)
            return make_error(
                Errc::unavailable,
                fmt::format("cannot connect to cofferd at unix://{}: {}", path, ec.message()));
        connected = true;
        buffer.clear();
        return {};
    }
};

HttpClient::HttpClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpClient::~HttpClient() = default;

void HttpClient::set_body_limit(std::uint64_t bytes) noexcept {
    impl_->body_limit = bytes;
}

Result<std::unique_ptr<HttpClient>> HttpClient::connect(std::string_view host) {
    auto impl = std::make_unique<Impl>();
    if (host.starts_with("unix://"))
        impl->path = std::string(host.substr(7));
    else if (host.starts_with("/"))
        impl->path = std::string(host);
    else
        return make_error(Errc::invalid_argument,
                          fmt::format("unsupported host {}: expected unix:///path", host));
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
        req.set(http::field::host, "coffer");
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
        boost::system::error_code ec;
        http::write(im.socket, req, ec);
        http::response_parser<http::string_body> parser;
        parser.body_limit(im.body_limit);
        parser.skip(method == "HEAD");
        if (!ec) http::read(im.socket, im.buffer, parser, ec);
        if (ec) {
            im.connected = false;
            boost::system::error_code ignored;
            im.socket.close(ignored);
            if (attempt == 0 &&
                (ec == http::error::end_of_stream || ec == asio::error::broken_pipe ||
                 ec == asio::error::connection_reset))
                continue;
            return make_error(Errc::unavailable,
                              fmt::format("request {} {}: {}", method, target, ec.message()));
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
        if (!msg.keep_alive()) {
            im.connected = false;
            boost::system::error_code ignored;
            im.socket.close(ignored);
        }
        return out;
    }
    return make_error(Errc::unavailable, "connection closed");
}

}  // namespace coffer::net
