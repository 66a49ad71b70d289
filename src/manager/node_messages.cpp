#include "coffer/manager/node_messages.h"

#include <boost/json.hpp>

#include <cctype>
#include <limits>

#include "coffer/crypto/encoding.h"
#include "coffer/model/json.h"
#include "coffer/model/secret.h"
#include "coffer/model/secure_json.h"

namespace coffer::manager {

namespace json = boost::json;
using model::TaskState;

namespace {

Error bad(std::string_view what) {
    return make_error(Errc::invalid_argument, fmt::format("malformed message: {}", what));
}

// A node reports these; the earlier states belong to the manager.
std::optional<TaskState> node_state(std::string_view name) {
    static constexpr TaskState reportable[] = {
        TaskState::preparing, TaskState::starting, TaskState::running, TaskState::complete,
        TaskState::failed,    TaskState::shutdown, TaskState::rejected};
    for (auto s : reportable)
        if (model::to_string(s) == name) return s;
    return std::nullopt;
}

// The field as a string of at most max bytes; nullopt when absent. An error for another type.
Result<std::optional<std::string>> optional_string(const json::object& o, std::string_view field,
                                                   std::size_t max) {
    auto* v = o.if_contains(field);
    if (v == nullptr || v->is_null()) return std::optional<std::string>{};
    if (!v->is_string()) return bad(fmt::format("{} is not a string", field));
    const auto& s = v->get_string();
    if (s.size() > max) return bad(fmt::format("{} is longer than {} bytes", field, max));
    return std::optional<std::string>{std::string(s)};
}

bool container_id_chars(std::string_view s) {
    for (char c : s)
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.'))
            return false;
    return true;
}

Result<StatusReport> parse_report(const json::value& v) {
    if (!v.is_object()) return bad("a status is not an object");
    const auto& o = v.get_object();
    auto task_id = optional_string(o, "task_id", 64);
    if (!task_id) return std::move(task_id).error();
    if (!*task_id || !model::looks_like_id(**task_id)) return bad("task_id is missing or invalid");
    auto state_name = optional_string(o, "state", 32);
    if (!state_name) return std::move(state_name).error();
    if (!*state_name) return bad("state is missing");
    auto state = node_state(**state_name);
    if (!state) return bad("unknown task state");
    auto message = optional_string(o, "message", max_status_text);
    if (!message) return std::move(message).error();
    auto err = optional_string(o, "err", max_status_text);
    if (!err) return std::move(err).error();
    auto container_id = optional_string(o, "container_id", 128);
    if (!container_id) return std::move(container_id).error();
    if (*container_id && !container_id_chars(**container_id))
        return bad("container_id has characters other than [A-Za-z0-9._-]");
    auto pid = model::integer_field(o, "pid", 0, std::numeric_limits<std::int32_t>::max());
    if (!pid) return bad(pid.error().message);
    auto exit_code = model::integer_field(o, "exit_code", std::numeric_limits<std::int32_t>::min(),
                                          std::numeric_limits<std::int32_t>::max());
    if (!exit_code) return bad(exit_code.error().message);

    StatusReport r;
    r.task_id = std::move(**task_id);
    r.state = *state;
    r.message = message->value_or("");
    r.err = err->value_or("");
    if (*container_id || *pid || *exit_code)
        r.container = model::ContainerStatus{container_id->value_or(""), pid->value_or(0),
                                             exit_code->value_or(0)};
    return r;
}

Result<model::SecureJson> object_of_type(const crypto::SecureBuffer& text, std::string_view type) {
    auto doc = model::SecureJson::parse(text);
    if (!doc) return bad(doc.error().message);
    if (!doc->value().is_object()) return bad("not an object");
    auto* t = doc->value().get_object().if_contains("type");
    if (t == nullptr || !t->is_string() || t->get_string() != type)
        return bad(fmt::format("type is not {}", type));
    return doc;
}

crypto::SecureBuffer text(const json::object& o) {
    return crypto::SecureBuffer::copy_of(json::serialize(o));
}

}  // namespace

Result<StatusMessage> parse_status_message(const crypto::SecureBuffer& message) {
    auto doc = object_of_type(message, "status");
    if (!doc) return std::move(doc).error();
    const auto& o = doc->value().get_object();
    StatusMessage out;
    if (auto* c = o.if_contains("complete"); c != nullptr && !c->is_null()) {
        if (!c->is_bool()) return bad("complete is not a boolean");
        out.complete = c->get_bool();
    }
    auto* statuses = o.if_contains("statuses");
    if (statuses == nullptr || !statuses->is_array()) return bad("statuses is not an array");
    const auto& list = statuses->get_array();
    if (list.size() > max_status_reports)
        return bad(fmt::format("more than {} statuses", max_status_reports));
    out.statuses.reserve(list.size());
    for (const auto& v : list) {
        auto r = parse_report(v);
        if (!r) return std::move(r).error();
        out.statuses.push_back(std::move(*r));
    }
    return out;
}

Result<LogsMessage> parse_logs_message(const crypto::SecureBuffer& message) {
    auto doc = object_of_type(message, "logs");
    if (!doc) return std::move(doc).error();
    const auto& o = doc->value().get_object();
    LogsMessage out;
    auto request = optional_string(o, "request", max_request_id);
    if (!request) return std::move(request).error();
    if (!*request || (*request)->empty()) return bad("request is missing");
    out.request = std::move(**request);
    auto task_id = optional_string(o, "task_id", 64);
    if (!task_id) return std::move(task_id).error();
    out.task_id = task_id->value_or("");
    auto error = optional_string(o, "error", max_status_text);
    if (!error) return std::move(error).error();
    out.error = std::move(*error);
    auto data = optional_string(o, "data", std::numeric_limits<std::size_t>::max());
    if (!data) return std::move(data).error();
    if (*data) {
        auto bytes = crypto::base64_decode_secure(**data);
        if (!bytes) return bad("data is not base64");
        out.data.assign(reinterpret_cast<const char*>(bytes->data()), bytes->size());
    } else if (!out.error) {
        return bad("neither data nor error");
    }
    return out;
}

crypto::SecureBuffer logs_request_message(std::string_view request, std::string_view task_id,
                                          std::size_t tail) {
    return text(json::object{
        {"type", "logs_request"}, {"request", request}, {"task_id", task_id}, {"tail", tail}});
}

crypto::SecureBuffer renew_request_message(std::string_view reason) {
    return text(json::object{{"type", "renew_request"}, {"reason", reason}});
}

crypto::SecureBuffer certificate_message(const IssuedCertificate& issued) {
    return text(json::object{{"type", "certificate"},
                             {"certificate", issued.certificate_pem},
                             {"ca_bundle", issued.ca_bundle_pem}});
}

Result<std::string> parse_renew_message(std::string_view json_text) {
    auto v = model::parse_json(json_text);
    if (!v || !v->is_object()) return make_error(Errc::invalid_argument, "renew: not a JSON object");
    const auto& o = v->as_object();
    auto* type = o.if_contains("type");
    if (!type || !type->is_string() || type->get_string() != "renew")
        return make_error(Errc::invalid_argument, "renew: not a renew message");
    auto* csr = o.if_contains("csr");
    if (!csr || !csr->is_string() || csr->get_string().empty())
        return make_error(Errc::invalid_argument, "renew: \"csr\" must be a PEM certificate request");
    return std::string(csr->get_string());
}

crypto::SecureBuffer error_message(std::string_view message, std::string_view request) {
    json::object o{{"type", "error"}, {"message", message}};
    if (!request.empty()) o["request"] = request;
    return text(o);
}

}  // namespace coffer::manager
