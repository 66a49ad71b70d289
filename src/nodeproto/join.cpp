#include "coffer/nodeproto/join.h"

#include <algorithm>
#include <cctype>

#include "coffer/nodeproto/version.h"
#include "wire.h"

namespace coffer::nodeproto {

namespace json = boost::json;

namespace {

Error invalid(std::string_view what) {
    return make_error(Errc::invalid_argument, std::string(what));
}

const json::string* string_at(const json::object& o, std::string_view field) {
    const auto* v = o.if_contains(field);
    return v != nullptr && v->is_string() ? &v->get_string() : nullptr;
}

bool valid_hostname(std::string_view n) {
    return !n.empty() && n.size() <= max_hostname && std::all_of(n.begin(), n.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_';
    });
}

}  // namespace

crypto::SecureBuffer encode(const JoinRequest& m) {
    // The token is a secret: the whole body is built in secure memory.
    json::object request(model::secure_storage());
    request["version"] = m.version;
    request["token"] =
        std::string_view(reinterpret_cast<const char*>(m.token.data()), m.token.size());
    request["csr"] = m.csr;
    if (!m.hostname.empty()) request["hostname"] = m.hostname;
    return model::serialize_secure(request);
}

Result<JoinRequest> decode_join_request(const crypto::SecureBuffer& text) {
    auto doc = model::SecureJson::parse(text);
    if (!doc || !doc->value().is_object()) return invalid("join request is not JSON");
    const auto& o = doc->value().get_object();
    JoinRequest out;
    out.version = 1;  // nodes from before the version was announced
    if (const auto* v = o.if_contains("version")) {
        if (v->is_uint64())
            out.version = v->get_uint64();
        else if (v->is_int64() && v->get_int64() >= 0)
            out.version = static_cast<std::uint64_t>(v->get_int64());
        else
            return invalid("join request: version must be a non-negative integer");
    }
    if (auto ok = check_version(out.version); !ok) return std::move(ok).error();
    const auto* token = string_at(o, "token");
    const auto* csr = string_at(o, "csr");
    if (token == nullptr || csr == nullptr) return invalid("join request needs token and csr");
    out.token = crypto::SecureBuffer::copy_of(std::string_view(token->data(), token->size()));
    out.csr = std::string(*csr);
    if (const auto* h = o.if_contains("hostname")) {
        if (!h->is_string() || !valid_hostname(h->get_string()))
            return invalid(
                "join request: hostname must be 1-253 characters of letters, digits, '.', '-', "
                "'_'");
        out.hostname = std::string(h->get_string());
    }
    return out;
}

std::string encode(const JoinAnswer& m) {
    return json::serialize(json::object{
        {"node_id", m.node_id}, {"certificate", m.certificate}, {"ca_bundle", m.ca_bundle}});
}

Result<JoinAnswer> decode_join_answer(std::string_view text) {
    auto doc = model::SecureJson::parse(text);
    if (!doc) return invalid("the manager's answer is not JSON");
    const auto* o = doc->value().if_object();
    const auto* node_id = o ? string_at(*o, "node_id") : nullptr;
    const auto* cert = o ? string_at(*o, "certificate") : nullptr;
    const auto* ca = o ? string_at(*o, "ca_bundle") : nullptr;
    if (node_id == nullptr || cert == nullptr || ca == nullptr)
        return invalid("the manager's answer is incomplete");
    return JoinAnswer{std::string(*node_id), std::string(*cert), std::string(*ca)};
}

}  // namespace coffer::nodeproto
