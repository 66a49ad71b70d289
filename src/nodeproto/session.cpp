#include "coffer/nodeproto/session.h"

#include <arpa/inet.h>

#include <algorithm>
#include <limits>

#include "coffer/crypto/encoding.h"
#include "coffer/model/ids.h"
#include "wire.h"

namespace coffer::nodeproto {

namespace json = boost::json;
using wire::malformed;

namespace {

json::value request_value(const RequestId& id) {
    return std::visit([](const auto& v) { return json::value(v); }, id);
}

// A string field that must be there.
Result<std::string> required_string(const json::object& o, std::string_view field) {
    auto v = wire::optional_string(o, field, std::numeric_limits<std::size_t>::max());
    if (!v) return std::move(v).error();
    if (!*v) return malformed(fmt::format("{} is missing", field));
    return std::move(**v);
}

// A string field; missing, null or of another type is empty (as a node reads messages it only
// logs).
std::string loose_string(const json::object& o, std::string_view field) {
    auto* v = o.if_contains(field);
    return v != nullptr && v->is_string() ? std::string(v->get_string()) : std::string();
}

}  // namespace

crypto::SecureBuffer encode(const CertificateMessage& m) {
    return wire::text_of(json::object{
        {"type", "certificate"}, {"certificate", m.certificate}, {"ca_bundle", m.ca_bundle}});
}

Result<CertificateMessage> decode_certificate(const crypto::SecureBuffer& text) {
    auto doc = wire::object_of_type(text, "certificate");
    if (!doc) return std::move(doc).error();
    const auto& o = doc->value().get_object();
    auto cert = required_string(o, "certificate");
    if (!cert) return std::move(cert).error();
    auto bundle = required_string(o, "ca_bundle");
    if (!bundle) return std::move(bundle).error();
    return CertificateMessage{std::move(*cert), std::move(*bundle)};
}

crypto::SecureBuffer encode(const RenewRequest& m) {
    return wire::text_of(json::object{{"type", "renew_request"}, {"reason", m.reason}});
}

Result<RenewRequest> decode_renew_request(const crypto::SecureBuffer& text) {
    auto doc = wire::object_of_type(text, "renew_request");
    if (!doc) return std::move(doc).error();
    return RenewRequest{loose_string(doc->value().get_object(), "reason")};
}

crypto::SecureBuffer encode(const Renew& m) {
    return wire::text_of(json::object{{"type", "renew"}, {"csr", m.csr}});
}

Result<Renew> decode_renew(const crypto::SecureBuffer& text) {
    auto doc = wire::object_of_type(text, "renew");
    if (!doc) return std::move(doc).error();
    auto* csr = doc->value().get_object().if_contains("csr");
    if (csr == nullptr || !csr->is_string() || csr->get_string().empty())
        return malformed("\"csr\" must be a PEM certificate request");
    return Renew{std::string(csr->get_string())};
}

crypto::SecureBuffer encode(const ErrorMessage& m) {
    json::object o{{"type", "error"}, {"message", m.message}};
    if (m.request) o["request"] = *m.request;
    return wire::text_of(o);
}

Result<ErrorMessage> decode_error(const crypto::SecureBuffer& text) {
    auto doc = wire::object_of_type(text, "error");
    if (!doc) return std::move(doc).error();
    const auto& o = doc->value().get_object();
    ErrorMessage out{loose_string(o, "message"), std::nullopt};
    if (auto* r = o.if_contains("request")) {
        if (!r->is_string()) return malformed("request is not a string");
        out.request = std::string(r->get_string());
    }
    return out;
}

crypto::SecureBuffer encode(const LogsRequest& m) {
    return wire::text_of(json::object{{"type", "logs_request"},
                                      {"request", request_value(m.request)},
                                      {"task_id", m.task_id},
                                      {"tail", m.tail}});
}

Result<LogsRequest> decode_logs_request(const crypto::SecureBuffer& text) {
    auto doc = wire::object_of_type(text, "logs_request");
    if (!doc) return std::move(doc).error();
    const auto& o = doc->value().get_object();
    LogsRequest out;
    const auto* request = o.if_contains("request");
    if (request != nullptr && request->is_string() &&
        request->get_string().size() <= max_node_request_id)
        out.request = std::string(request->get_string());
    else if (request != nullptr && request->is_int64())
        out.request = request->get_int64();
    else if (request != nullptr && request->is_uint64())
        out.request = request->get_uint64();
    else
        return malformed("request is missing or invalid");
    const auto* task = o.if_contains("task_id");
    if (task != nullptr && task->is_string() && model::valid_task_id(task->get_string()))
        out.task_id = std::string(task->get_string());
    const auto* tail = o.if_contains("tail");
    bool tail_ok = tail == nullptr || tail->is_null() || tail->is_uint64() ||
                   (tail->is_int64() && tail->get_int64() >= 0);
    if (tail_ok && tail != nullptr && !tail->is_null())
        out.tail =
            tail->is_uint64() ? tail->get_uint64() : static_cast<std::uint64_t>(tail->get_int64());
    if (out.task_id.empty())
        out.invalid = "invalid task id";
    else if (!tail_ok)
        out.invalid = "tail must be a non-negative integer";
    return out;
}

crypto::SecureBuffer encode(const LogsReply& m) {
    json::object o{{"type", "logs"}, {"request", request_value(m.request)}, {"task_id", m.task_id}};
    if (m.error) o["error"] = *m.error;
    if (!m.error || !m.data.empty())
        o["data"] = crypto::base64_encode(
            {reinterpret_cast<const std::uint8_t*>(m.data.data()), m.data.size()});
    return wire::text_of(o);
}

Result<LogsReply> decode_logs_reply(const crypto::SecureBuffer& text) {
    auto doc = wire::object_of_type(text, "logs");
    if (!doc) return std::move(doc).error();
    const auto& o = doc->value().get_object();
    LogsReply out;
    auto request = wire::optional_string(o, "request", max_request_id);
    if (!request) return std::move(request).error();
    if (!*request || (*request)->empty()) return malformed("request is missing");
    out.request = std::move(**request);
    auto task_id = wire::optional_string(o, "task_id", 64);
    if (!task_id) return std::move(task_id).error();
    out.task_id = task_id->value_or("");
    auto error = wire::optional_string(o, "error", 4096);
    if (!error) return std::move(error).error();
    out.error = std::move(*error);
    auto data = wire::optional_string(o, "data", std::numeric_limits<std::size_t>::max());
    if (!data) return std::move(data).error();
    if (*data) {
        auto bytes = crypto::base64_decode_secure(**data);
        if (!bytes) return malformed("data is not base64");
        out.data.assign(reinterpret_cast<const char*>(bytes->data()), bytes->size());
    } else if (!out.error) {
        return malformed("neither data nor error");
    }
    return out;
}

namespace {

bool word(std::string_view s, std::size_t max, bool upper_and_dots) {
    return !s.empty() && s.size() <= max && std::all_of(s.begin(), s.end(), [&](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
               (upper_and_dots && ((c >= 'A' && c <= 'Z') || c == '.' || c == '-'));
    });
}

bool named_value(std::string_view s) {
    return !s.empty() && s.size() <= 128 && std::all_of(s.begin(), s.end(), [](char c) {
        return c > ' ' && c < 0x7f && c != ',' && c != '=';
    });
}

std::optional<std::int64_t> non_negative(const json::object& o, std::string_view field) {
    const auto* v = o.if_contains(field);
    if (v == nullptr || v->is_null()) return 0;
    if (v->is_int64() && v->get_int64() >= 0) return v->get_int64();
    return std::nullopt;
}

}  // namespace

crypto::SecureBuffer encode(const DescriptionMessage& m) {
    json::array generic;
    for (const auto& g : m.generic)
        if (g.is_named())
            generic.push_back(json::object{{"kind", g.kind}, {"value", g.named}});
        else
            generic.push_back(json::object{{"kind", g.kind}, {"count", g.discrete}});
    return wire::text_of(json::object{{"type", "description"},
                                      {"os", m.os},
                                      {"architecture", m.architecture},
                                      {"nano_cpus", m.nano_cpus},
                                      {"memory_bytes", m.memory_bytes},
                                      {"generic", std::move(generic)}});
}

Result<DescriptionMessage> decode_description(const crypto::SecureBuffer& text) {
    auto doc = wire::object_of_type(text, "description");
    if (!doc) return std::move(doc).error();
    const auto& o = doc->value().get_object();
    DescriptionMessage out;
    out.os = loose_string(o, "os");
    out.architecture = loose_string(o, "architecture");
    if (!word(out.os, 32, false) || !word(out.architecture, 32, false))
        return malformed("os and architecture must be 1-32 of [a-z0-9_]");
    auto cpus = non_negative(o, "nano_cpus");
    auto memory = non_negative(o, "memory_bytes");
    if (!cpus || !memory) return malformed("nano_cpus and memory_bytes must be non-negative");
    out.nano_cpus = *cpus;
    out.memory_bytes = *memory;
    if (const auto* g = o.if_contains("generic"); g != nullptr && !g->is_null()) {
        if (!g->is_array() || g->get_array().size() > max_generic_resources)
            return malformed("generic must be an array of at most 256 resources");
        for (const auto& item : g->get_array()) {
            const auto* r = item.if_object();
            if (r == nullptr) return malformed("a generic resource must be an object");
            model::GenericResource res;
            res.kind = loose_string(*r, "kind");
            if (!word(res.kind, 64, true))
                return malformed("a generic resource's kind must be 1-64 of [A-Za-z0-9_.-]");
            const auto* value = r->if_contains("value");
            const auto* count = r->if_contains("count");
            if ((value == nullptr) == (count == nullptr))
                return malformed("a generic resource has one of value and count");
            if (value != nullptr) {
                if (!value->is_string() || !named_value(value->get_string()))
                    return malformed("a named resource's value must be 1-128 printable characters");
                res.named = std::string(value->get_string());
            } else if (count->is_int64() && count->get_int64() > 0) {
                res.discrete = count->get_int64();
            } else {
                return malformed("a discrete resource's count must be a positive integer");
            }
            out.generic.push_back(std::move(res));
        }
    }
    return out;
}

bool valid_manager_address(std::string_view host_port) {
    auto colon = host_port.rfind(':');
    if (colon == std::string_view::npos) return false;
    auto host = host_port.substr(0, colon);
    auto port = host_port.substr(colon + 1);
    if (port.empty() || port.size() > 5) return false;
    unsigned number = 0;
    for (char c : port) {
        if (c < '0' || c > '9') return false;
        number = number * 10 + static_cast<unsigned>(c - '0');
    }
    if (number == 0 || number > 65535) return false;
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
        // libc's parser decides what an IPv6 literal is, once the characters are those of one
        // (no NUL to cut the string short, no zone id).
        auto literal = host.substr(1, host.size() - 2);
        if (!std::all_of(literal.begin(), literal.end(), [](char c) {
                return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
                       c == ':' || c == '.';
            }))
            return false;
        in6_addr address{};
        return ::inet_pton(AF_INET6, std::string(literal).c_str(), &address) == 1;
    }
    return word(host, 253, true);
}

crypto::SecureBuffer encode(const ManagersMessage& m) {
    json::array managers;
    for (const auto& address : m.managers) managers.emplace_back(address);
    return wire::text_of(json::object{{"type", "managers"}, {"managers", std::move(managers)}});
}

Result<ManagersMessage> decode_managers(const crypto::SecureBuffer& text) {
    auto doc = wire::object_of_type(text, "managers");
    if (!doc) return std::move(doc).error();
    const auto* list = doc->value().get_object().if_contains("managers");
    if (list == nullptr || !list->is_array()) return malformed("managers must be an array");
    if (list->get_array().size() > max_managers)
        return malformed(fmt::format("managers names more than {} managers", max_managers));
    ManagersMessage out;
    for (const auto& item : list->get_array()) {
        if (!item.is_string() || !valid_manager_address(item.get_string()))
            return malformed("a manager is not HOST:PORT");
        out.managers.emplace_back(item.get_string());
    }
    return out;
}

}  // namespace coffer::nodeproto
