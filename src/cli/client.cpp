#include "client.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include "coffer/crypto/secure_allocator.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/model/json.h"

namespace coffer::cli {

namespace json = boost::json;

namespace {

Errc errc_for(int status) {
    switch (status) {
        case 400:
            return Errc::invalid_argument;
        case 401:
            return Errc::unauthenticated;
        case 403:
            return Errc::permission_denied;
        case 404:
            return Errc::not_found;
        case 409:
            return Errc::conflict;
        case 413:
            return Errc::too_large;
        case 503:
            return Errc::unavailable;
        default:
            return Errc::internal;
    }
}

// The answer when its status is 2xx; otherwise an Error with the server's {"message"}.
Result<net::ClientResponse> checked(Result<net::ClientResponse> r) {
    if (!r) return std::move(r).error();
    if (r->status >= 200 && r->status < 300) return r;
    std::string message = r->body;
    if (auto v = model::parse_json(r->body); v && v->is_object())
        if (auto* m = v->as_object().if_contains("message"); m && m->is_string())
            message = std::string(m->as_string());
    if (message.empty()) message = fmt::format("request failed with status {}", r->status);
    return make_error(errc_for(r->status), std::move(message));
}

// A 2xx answer's body as JSON (null when empty).
Result<json::value> json_of(Result<net::ClientResponse> r) {
    if (!r) return std::move(r).error();
    if (r->body.empty()) return json::value(nullptr);
    auto v = model::parse_json(r->body);
    if (!v)
        return make_error(Errc::internal, "malformed answer from cofferd: " + v.error().message);
    return std::move(*v);
}

std::span<const std::uint8_t> bytes_of(std::string_view text) {
    return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

// One request with a secret header, on a connection of its own. net::HttpClient sends no extra
// headers, and its fields would hold the value in ordinary memory: these live in secure memory,
// and Beast writes the value from there to the socket.
Result<net::ClientResponse> request_with_header(std::string_view host, std::string_view method,
                                                std::string_view target,
                                                std::span<const std::uint8_t> body,
                                                const SecretHeader& header) {
    namespace asio = boost::asio;
    namespace http = boost::beast::http;
    using local = asio::local::stream_protocol;
    std::string path;
    if (host.starts_with("unix://"))
        path = std::string(host.substr(7));
    else if (host.starts_with("/"))
        path = std::string(host);
    else
        return make_error(Errc::invalid_argument,
                          fmt::format("unsupported host {}: expected unix:///path", host));
    asio::io_context ioc;
    local::socket socket(ioc);
    boost::system::error_code ec;
    socket.connect(local::endpoint(path), ec);
    if (ec)
        return make_error(
            Errc::unavailable,
            fmt::format("cannot connect to cofferd at unix://{}: {}", path, ec.message()));
    http::request<http::span_body<const std::uint8_t>,
                  http::basic_fields<crypto::SecureAllocator<char>>>
        req{http::string_to_verb(method), target, 11};
    req.set(http::field::host, "coffer");
    req.set(http::field::user_agent, "coffer-cli");
    req.set(http::field::content_type, "application/json");
    req.set(header.name, std::string_view(reinterpret_cast<const char*>(header.value.data()),
                                          header.value.size()));
    req.body() = body;
    req.keep_alive(false);
    req.prepare_payload();
    http::write(socket, req, ec);
    boost::beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 * 1024 * 1024);
    if (!ec) http::read(socket, buffer, parser, ec);
    if (ec)
        return make_error(Errc::unavailable,
                          fmt::format("request {} {}: {}", method, target, ec.message()));
    auto msg = parser.release();
    net::ClientResponse out;
    out.status = static_cast<int>(msg.result_int());
    out.body = std::move(msg.body());
    return out;
}

}  // namespace

Result<net::ClientResponse> ApiClient::request(std::string_view method, std::string_view path,
                                               std::span<const std::uint8_t> body) {
    if (!http_) {
        auto c = net::HttpClient::connect(host_);
        if (!c) return std::move(c).error();
        http_ = std::move(*c);
    }
    return checked(http_->request(method, fmt::format("/v1.41{}", path), body));
}

Result<json::value> ApiClient::call(std::string_view method, std::string_view path,
                                    std::span<const std::uint8_t> body) {
    return json_of(request(method, path, body));
}

Result<std::string> ApiClient::get_raw(std::string_view path) {
    auto r = request("GET", path, {});
    if (!r) return std::move(r).error();
    return std::move(r->body);
}

Result<json::value> ApiClient::call(std::string_view method, std::string_view path,
                                    const json::value& body) {
    auto text = json::serialize(body);
    return call(method, path, bytes_of(text));
}

Result<json::value> ApiClient::call(std::string_view method, std::string_view path,
                                    const json::value& body, const SecretHeader& header) {
    auto text = json::serialize(body);
    return json_of(checked(
        request_with_header(host_, method, fmt::format("/v1.41{}", path), bytes_of(text), header)));
}

}  // namespace coffer::cli
