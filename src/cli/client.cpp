#include "client.h"

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

}  // namespace

// The answer when its status is 2xx; otherwise an Error with the server's {"message"}.
Result<net::ClientResponse> ApiClient::request(std::string_view method, std::string_view path,
                                               std::span<const std::uint8_t> body) {
    if (!http_) {
        auto c = net::HttpClient::connect(host_);
        if (!c) return std::move(c).error();
        http_ = std::move(*c);
    }
    auto r = http_->request(method, fmt::format("/v1.41{}", path), body);
    if (!r) return std::move(r).error();
    if (r->status >= 200 && r->status < 300) return r;
    std::string message = r->body;
    if (auto v = model::parse_json(r->body); v && v->is_object())
        if (auto* m = v->as_object().if_contains("message"); m && m->is_string())
            message = std::string(m->as_string());
    if (message.empty()) message = fmt::format("request failed with status {}", r->status);
    return make_error(errc_for(r->status), std::move(message));
}

Result<json::value> ApiClient::call(std::string_view method, std::string_view path,
                                    std::span<const std::uint8_t> body) {
    auto r = request(method, path, body);
    if (!r) return std::move(r).error();
    if (r->body.empty()) return json::value(nullptr);
    auto v = model::parse_json(r->body);
    if (!v)
        return make_error(Errc::internal, "malformed answer from cofferd: " + v.error().message);
    return std::move(*v);
}

Result<std::string> ApiClient::get_raw(std::string_view path) {
    auto r = request("GET", path, {});
    if (!r) return std::move(r).error();
    return std::move(r->body);
}

Result<json::value> ApiClient::call(std::string_view method, std::string_view path,
                                    const json::value& body) {
    auto text = json::serialize(body);
    return call(method, path,
                std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(text.data()),
                                              text.size()));
}

}  // namespace coffer::cli
