#include "coffer/nodeproto/volumes.h"

#include "coffer/model/service.h"
#include "coffer/nodeproto/session.h"
#include "wire.h"

namespace coffer::nodeproto {

namespace json = boost::json;
using wire::malformed;

namespace {

Result<std::string> string_field(const json::object& o, std::string_view field, std::size_t max,
                                 bool required) {
    auto v = wire::optional_string(o, field, max);
    if (!v) return std::move(v).error();
    if (!*v && required) return malformed(fmt::format("{} is missing", field));
    return v->value_or("");
}

}  // namespace

crypto::SecureBuffer encode(const VolumeRemove& m) {
    return wire::text_of(
        json::object{{"type", "volume_remove"}, {"request", m.request}, {"name", m.name}});
}

Result<VolumeRemove> decode_volume_remove(const crypto::SecureBuffer& text) {
    auto doc = wire::object_of_type(text, "volume_remove");
    if (!doc) return std::move(doc).error();
    const auto& o = doc->value().get_object();
    auto request = string_field(o, "request", max_node_request_id, true);
    if (!request) return std::move(request).error();
    if (request->empty()) return malformed("request is empty");
    auto name = string_field(o, "name", 255, true);
    if (!name) return std::move(name).error();
    if (!model::valid_volume_name(*name)) return malformed("name is not a valid volume name");
    return VolumeRemove{std::move(*request), std::move(*name)};
}

crypto::SecureBuffer encode(const VolumeRemoved& m) {
    json::object o{{"type", "volume_removed"}, {"request", m.request}, {"name", m.name}};
    if (!m.error.empty()) {
        o["error"] = m.error;
        o["code"] = m.code;
    }
    return wire::text_of(o);
}

Result<VolumeRemoved> decode_volume_removed(const crypto::SecureBuffer& text) {
    auto doc = wire::object_of_type(text, "volume_removed");
    if (!doc) return std::move(doc).error();
    const auto& o = doc->value().get_object();
    VolumeRemoved m;
    auto request = string_field(o, "request", max_request_id, true);
    if (!request) return std::move(request).error();
    if (request->empty()) return malformed("request is empty");
    m.request = std::move(*request);
    auto name = string_field(o, "name", 255, false);
    if (!name) return std::move(name).error();
    m.name = std::move(*name);
    auto error = string_field(o, "error", 4096, false);
    if (!error) return std::move(error).error();
    m.error = std::move(*error);
    auto code = string_field(o, "code", 16, false);
    if (!code) return std::move(code).error();
    m.code = std::move(*code);
    if (!m.error.empty() && m.code != "not_found" && m.code != "in_use" && m.code != "failed")
        return malformed("code is not one of not_found, in_use, failed");
    return m;
}

}  // namespace coffer::nodeproto
