#include "coffer/net/http.h"

#include <fmt/format.h>

namespace coffer::net {

std::string_view Request::param(std::string_view name) const {
    auto it = query.find(name);
    return it == query.end() ? std::string_view{} : std::string_view(it->second);
}

Response Response::json(int status, std::string body) {
    Response r;
    r.status = status;
    r.body = std::move(body);
    return r;
}

Response Response::secure_json(int status, crypto::SecureBuffer body) {
    Response r;
    r.status = status;
    r.secure_body = std::move(body);
    return r;
}

Response Response::error(const Error& e) {
    Response r;
    r.status = http_status(e.code);
    std::string escaped;
    escaped.reserve(e.message.size());
    for (char c : e.message) {
        switch (c) {
            case '"':
                escaped += "\\\"";
                break;
            case '\\':
                escaped += "\\\\";
                break;
            case '\n':
                escaped += "\\n";
                break;
            case '\r':
                escaped += "\\r";
                break;
            case '\t':
                escaped += "\\t";
                break;
            default:
                if (static_cast<unsigned char>(c) < 0x20)
                    escaped += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
                else
                    escaped += c;
        }
    }
    r.body = fmt::format("{{\"message\":\"{}\"}}", escaped);
    return r;
}

Response Response::empty(int status) {
    Response r;
    r.status = status;
    r.content_type.clear();
    return r;
}

namespace {

int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

}  // namespace

std::string percent_decode(std::string_view s, bool plus_is_space) {
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '%' && i + 2 < s.size()) {
            int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
            if (hi >= 0 && lo >= 0) {
                out += static_cast<char>(hi * 16 + lo);
                i += 2;
                continue;
            }
        }
        out += (plus_is_space && s[i] == '+') ? ' ' : s[i];
    }
    return out;
}

void parse_target(std::string_view target, Request& r) {
    r.target = std::string(target);
    auto q = target.find('?');
    r.path = percent_decode(target.substr(0, q), false);
    r.query.clear();
    if (q == std::string_view::npos) return;
    auto rest = target.substr(q + 1);
    while (!rest.empty()) {
        auto amp = rest.find('&');
        auto pair = rest.substr(0, amp);
        rest = amp == std::string_view::npos ? std::string_view{} : rest.substr(amp + 1);
        if (pair.empty()) continue;
        auto eq = pair.find('=');
        auto key = percent_decode(pair.substr(0, eq), true);
        auto val = eq == std::string_view::npos ? std::string{}
                                                : percent_decode(pair.substr(eq + 1), true);
        // A name given twice means its first value, as Go's Query().Get() that Docker uses:
        // `version=1&version=7` is version 1, never the later one.
        r.query.try_emplace(std::move(key), std::move(val));
    }
}

std::string percent_encode(std::string_view s) {
    std::string out;
    for (unsigned char c : s) {
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~')
            out += static_cast<char>(c);
        else
            out += fmt::format("%{:02X}", c);
    }
    return out;
}

}  // namespace coffer::net
