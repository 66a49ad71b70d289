#include "wire.h"

#include <cstring>

namespace coffer::nodeproto::wire {

Result<model::SecureJson> object_of_type(const crypto::SecureBuffer& text, std::string_view type) {
    auto doc = model::SecureJson::parse(text);
    if (!doc) return malformed(doc.error().message);
    if (!doc->value().is_object()) return malformed("not an object");
    auto* t = doc->value().get_object().if_contains("type");
    if (t == nullptr || !t->is_string() || t->get_string() != type)
        return malformed(fmt::format("type is not {}", type));
    return doc;
}

Result<std::optional<std::string>> optional_string(const json::object& o, std::string_view field,
                                                   std::size_t max) {
    auto* v = o.if_contains(field);
    if (v == nullptr || v->is_null()) return std::optional<std::string>{};
    if (!v->is_string()) return malformed(fmt::format("{} is not a string", field));
    const auto& s = v->get_string();
    if (s.size() > max) return malformed(fmt::format("{} is longer than {} bytes", field, max));
    return std::optional<std::string>{std::string(s)};
}

crypto::SecureBuffer text_of(const json::object& o) {
    return crypto::SecureBuffer::copy_of(json::serialize(o));
}

crypto::SecureBuffer SecureText::finish() const {
    std::size_t size = 0;
    for (const auto& p : parts_) size += p.secure ? p.secure->size() : p.plain.size();
    crypto::SecureBuffer out(size);
    std::size_t pos = 0;
    for (const auto& p : parts_) {
        const void* from = p.secure ? static_cast<const void*>(p.secure->data()) : p.plain.data();
        std::size_t n = p.secure ? p.secure->size() : p.plain.size();
        if (n != 0) std::memcpy(out.data() + pos, from, n);
        pos += n;
    }
    return out;
}

}  // namespace coffer::nodeproto::wire
