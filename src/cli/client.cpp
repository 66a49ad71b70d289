#include "client.h"

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

}  // namespace

Result<net::ClientResponse> ApiClient::request(std::string_view method, std::string_view path,
                                               std::span<const std::uint8_t> body,
                                               const net::SecretHeader* secret) {
    if (!http_) {
        auto c = net::HttpClient::connect(host_);
        if (!c) return std::move(c).error();
        http_ = std::move(*c);
        if (body_limit_) http_->set_body_limit(*body_limit_);
    }
    return checked(
        http_->request(method, fmt::format("/v1.41{}", path), body, "application/json", secret));
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
                                    const json::value& body, const net::SecretHeader& header) {
    auto text = body.is_null() ? std::string() : json::serialize(body);
    return json_of(request(method, path, bytes_of(text), &header));
}

}  // namespace coffer::cli
