#include "coffer/model/json.h"

#include <algorithm>

#include "coffer/crypto/encoding.h"
#include "json_document.h"

namespace coffer::model {

namespace json = boost::json;

json::object to_json(const Labels& labels, json::storage_ptr sp) {
    json::object o(std::move(sp));
    o.reserve(labels.size());
    for (const auto& [k, v] : labels) o[k] = v;
    return o;
}

Result<Labels> labels_from_json(const json::value* v, std::string_view field) {
    Labels out;
    if (v == nullptr || v->is_null()) return out;
    if (!v->is_object())
        return make_error(Errc::invalid_argument,
                          fmt::format("{} must be an object of strings", field));
    for (const auto& [k, val] : v->as_object()) {
        if (!val.is_string())
            return make_error(Errc::invalid_argument,
                              fmt::format("{} must be an object of strings", field));
        out.emplace(std::string(k), std::string(val.as_string()));
    }
    if (auto ok = validate_labels(out); !ok) return std::move(ok).error();
    return out;
}

Result<std::optional<std::int64_t>> integer_field(const json::object& o, std::string_view field,
                                                  std::int64_t min, std::int64_t max) {
    const auto* v = o.if_contains(field);
    if (v == nullptr || v->is_null()) return std::optional<std::int64_t>{};
    std::int64_t n = 0;
    if (v->is_int64())
        n = v->get_int64();
    else if (v->is_uint64() && v->get_uint64() <= static_cast<std::uint64_t>(max))
        n = static_cast<std::int64_t>(v->get_uint64());
    else
        return make_error(Errc::invalid_argument,
                          fmt::format("field {} must be an integer", field));
    if (n < min || n > max)
        return make_error(Errc::invalid_argument, fmt::format("field {} is out of range", field));
    return std::optional<std::int64_t>{n};
}

Result<std::string> string_field(const json::object& o, std::string_view field) {
    auto* v = o.if_contains(field);
    if (v == nullptr || v->is_null())
        return make_error(Errc::invalid_argument, fmt::format("missing field {}", field));
    if (!v->is_string())
        return make_error(Errc::invalid_argument, fmt::format("field {} must be a string", field));
    return std::string(v->as_string());
}

json::object to_json(const ObjectMeta& m, json::storage_ptr sp) {
    json::object o(sp);
    o.reserve(4);
    o["ID"] = m.id;
    json::object version(sp);
    version["Index"] = m.version;
    o["Version"] = std::move(version);
    o["CreatedAt"] = format_rfc3339(m.created);
    o["UpdatedAt"] = format_rfc3339(m.updated);
    return o;
}

json::object to_json(const Secret& s, json::storage_ptr sp) {
    auto o = to_json(s.meta, sp);
    json::object spec(sp);
    spec["Name"] = s.spec.name;
    spec["Labels"] = to_json(s.spec.labels, sp);
    o["Spec"] = std::move(spec);
    // coffer's versions (not in Docker's Secret, which the docker CLI reads without them).
    if (!s.versions.empty()) {
        json::array versions(sp);
        versions.reserve(s.versions.size());
        for (const auto& v : s.versions) {
            json::object entry(sp);
            entry["Version"] = v.number;
            entry["CreatedAt"] = format_rfc3339(v.created);
            versions.push_back(std::move(entry));
        }
        o["CofferVersions"] = std::move(versions);
        o["CofferCurrentVersion"] = s.current;
    }
    return o;
}

json::object to_json(const Config& c, json::storage_ptr sp) {
    auto o = to_json(Secret{c.meta, c.spec, {}, 1}, std::move(sp));
    o["Spec"].as_object()["Data"] = crypto::base64_encode(
        {reinterpret_cast<const std::uint8_t*>(c.data.data()), c.data.size()});
    return o;
}

namespace {

Result<ObjectMeta> meta_from_json(const json::object& o) {
    ObjectMeta m;
    auto id = string_field(o, "ID");
    if (!id) return std::move(id).error();
    m.id = std::move(*id);
    auto* ver = o.if_contains("Version");
    const json::value* idx =
        ver && ver->is_object() ? ver->as_object().if_contains("Index") : nullptr;
    if (idx == nullptr || !idx->is_number())
        return make_error(Errc::invalid_argument, "field Version.Index must be a number");
    m.version = idx->to_number<std::uint64_t>();
    for (auto [field, out] :
         {std::pair{"CreatedAt", &m.created}, std::pair{"UpdatedAt", &m.updated}}) {
        auto text = string_field(o, field);
        if (!text) return std::move(text).error();
        auto t = parse_rfc3339(*text);
        if (!t)
            return make_error(Errc::invalid_argument, fmt::format("field {} is not a time", field));
        *out = *t;
    }
    return m;
}

}  // namespace

Result<Secret> secret_from_json(const json::value& v) {
    if (!v.is_object()) return make_error(Errc::invalid_argument, "secret must be an object");
    const auto& o = v.as_object();
    auto meta = meta_from_json(o);
    if (!meta) return std::move(meta).error();
    auto* spec = o.if_contains("Spec");
    if (spec == nullptr || !spec->is_object())
        return make_error(Errc::invalid_argument, "field Spec must be an object");
    auto name = string_field(spec->as_object(), "Name");
    if (!name) return std::move(name).error();
    auto labels = labels_from_json(spec->as_object().if_contains("Labels"), "Labels");
    if (!labels) return std::move(labels).error();
    Secret out{std::move(*meta), SecretSpec{std::move(*name), std::move(*labels)}, {}, 1};
    // A record written before secrets had versions holds version 1, created with the secret.
    auto* versions = o.if_contains("CofferVersions");
    if (versions == nullptr) {
        out.versions.push_back({1, out.meta.created});
        return out;
    }
    if (!versions->is_array() || versions->as_array().empty())
        return make_error(Errc::invalid_argument, "field CofferVersions must be a non-empty array");
    for (const auto& item : versions->as_array()) {
        const auto* n = item.is_object() ? item.as_object().if_contains("Version") : nullptr;
        if (n == nullptr || !n->is_number())
            return make_error(Errc::invalid_argument, "field CofferVersions[].Version is missing");
        SecretVersion version;
        version.number = n->to_number<std::uint64_t>();
        auto created = string_field(item.as_object(), "CreatedAt");
        if (!created) return std::move(created).error();
        auto t = parse_rfc3339(*created);
        if (!t || version.number == 0 ||
            (!out.versions.empty() && version.number <= out.versions.back().number))
            return make_error(Errc::invalid_argument, "field CofferVersions is malformed");
        version.created = *t;
        out.versions.push_back(version);
    }
    auto* current = o.if_contains("CofferCurrentVersion");
    if (current == nullptr || !current->is_number())
        return make_error(Errc::invalid_argument, "field CofferCurrentVersion must be a number");
    out.current = current->to_number<std::uint64_t>();
    if (std::none_of(out.versions.begin(), out.versions.end(),
                     [&](const SecretVersion& e) { return e.number == out.current; }))
        return make_error(Errc::invalid_argument, "field CofferCurrentVersion names no version");
    return out;
}

Result<json::value> parse_json(std::string_view text, json::storage_ptr sp) {
    return detail::parse_document(text, std::move(sp), std::nullopt, 64);
}

std::string error_body(std::string_view message) {
    return json::serialize(json::object{{"message", message}});
}

}  // namespace coffer::model
