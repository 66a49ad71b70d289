#include "coffer/nodeproto/status.h"

#include <cctype>
#include <limits>

#include "coffer/model/ids.h"
#include "coffer/model/json.h"
#include "wire.h"

namespace coffer::nodeproto {

namespace json = boost::json;
using model::TaskState;
using wire::malformed;

namespace {

constexpr std::size_t max_task_id = 64;
constexpr std::size_t max_container_id = 128;

// A node reports these; the earlier states belong to the manager.
std::optional<TaskState> node_state(std::string_view name) {
    static constexpr TaskState reportable[] = {
        TaskState::preparing, TaskState::starting, TaskState::running, TaskState::complete,
        TaskState::failed,    TaskState::shutdown, TaskState::rejected};
    for (auto s : reportable)
        if (model::to_string(s) == name) return s;
    return std::nullopt;
}

bool container_id_chars(std::string_view s) {
    for (char c : s)
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.'))
            return false;
    return true;
}

// "<secret id>@<version>".
bool secret_version_text(std::string_view text) {
    auto at = text.rfind('@');
    auto digits = at == std::string_view::npos ? std::string_view() : text.substr(at + 1);
    return at != std::string_view::npos && model::valid_secret_id(text.substr(0, at)) &&
           !digits.empty() && digits.size() <= 15 &&
           digits.find_first_not_of("0123456789") == std::string_view::npos;
}

Result<TaskReport> decode_report(const json::value& v) {
    if (!v.is_object()) return malformed("a status is not an object");
    const auto& o = v.get_object();
    auto task_id = wire::optional_string(o, "task_id", max_task_id);
    if (!task_id) return std::move(task_id).error();
    if (!*task_id || !model::valid_task_id(**task_id))
        return malformed("task_id is missing or invalid");
    auto state_name = wire::optional_string(o, "state", 32);
    if (!state_name) return std::move(state_name).error();
    if (!*state_name) return malformed("state is missing");
    auto state = node_state(**state_name);
    if (!state) return malformed("unknown task state");
    auto message = wire::optional_string(o, "message", max_status_text);
    if (!message) return std::move(message).error();
    auto err = wire::optional_string(o, "err", max_status_text);
    if (!err) return std::move(err).error();
    auto container_id = wire::optional_string(o, "container_id", max_container_id);
    if (!container_id) return std::move(container_id).error();
    if (*container_id && !container_id_chars(**container_id))
        return malformed("container_id has characters other than [A-Za-z0-9._-]");
    auto pid = model::integer_field(o, "pid", 0, std::numeric_limits<std::int32_t>::max());
    if (!pid) return malformed(pid.error().message);
    auto exit_code = model::integer_field(o, "exit_code", std::numeric_limits<std::int32_t>::min(),
                                          std::numeric_limits<std::int32_t>::max());
    if (!exit_code) return malformed(exit_code.error().message);
    auto health = wire::optional_string(o, "health", 16);
    if (!health) return std::move(health).error();
    if (*health && **health != "starting" && **health != "healthy" && **health != "unhealthy")
        return malformed("health is not starting, healthy or unhealthy");

    TaskReport r;
    r.task_id = std::move(**task_id);
    r.state = *state;
    r.message = message->value_or("");
    r.err = err->value_or("");
    if (*container_id || *pid || *exit_code || *health)
        r.container = model::ContainerStatus{container_id->value_or(""), pid->value_or(0),
                                             exit_code->value_or(0), health->value_or("")};
    if (const auto* held = o.if_contains("secrets"); held != nullptr && !held->is_null()) {
        if (!held->is_array() || held->get_array().size() > 256)
            return malformed("secrets is not an array of at most 256");
        for (const auto& h : held->get_array()) {
            auto text = h.is_string() ? std::string_view(h.get_string()) : std::string_view();
            if (!secret_version_text(text))
                return malformed("secrets holds something other than <secret id>@<version>");
            r.secrets.emplace_back(text);
        }
    }
    if (const auto* reads = o.if_contains("reads"); reads != nullptr && !reads->is_null()) {
        if (!reads->is_array() || reads->get_array().size() > 256)
            return malformed("reads is not an array of at most 256");
        constexpr std::int64_t max = std::numeric_limits<std::int64_t>::max();
        for (const auto& item : reads->get_array()) {
            if (!item.is_object()) return malformed("a reads entry is not an object");
            const auto& ro = item.get_object();
            const auto* secret = ro.if_contains("secret");
            auto text = secret != nullptr && secret->is_string()
                            ? std::string_view(secret->get_string())
                            : std::string_view();
            if (!secret_version_text(text))
                return malformed("a reads entry's secret is not <secret id>@<version>");
            auto count = model::integer_field(ro, "reads", 0, max);
            auto first = model::integer_field(ro, "first", 0, max);
            auto last = model::integer_field(ro, "last", 0, max);
            if (!count || !first || !last)
                return malformed("a reads entry holds a count or time out of range");
            if (first->value_or(0) > last->value_or(0))
                return malformed("a reads entry's first read is after its last");
            r.reads.push_back({std::string(text), static_cast<std::uint64_t>(count->value_or(0)),
                               first->value_or(0), last->value_or(0)});
        }
    }
    return r;
}

Result<VolumeReport> decode_volume(const json::value& v) {
    if (!v.is_object()) return malformed("a volume is not an object");
    const auto& o = v.get_object();
    VolumeReport r;
    auto name = wire::optional_string(o, "name", 255);
    if (!name) return std::move(name).error();
    if (!*name || !model::valid_volume_name(**name))
        return malformed("a volume's name is missing or invalid");
    r.name = std::move(**name);
    auto mountpoint = wire::optional_string(o, "mountpoint", 4096);
    if (!mountpoint) return std::move(mountpoint).error();
    r.mountpoint = mountpoint->value_or("");
    auto created = wire::optional_string(o, "created_at", 64);
    if (!created) return std::move(created).error();
    r.created_at = created->value_or("");
    if (auto* l = o.if_contains("labels"); l != nullptr && !l->is_null()) {
        if (!l->is_object()) return malformed("a volume's labels are not an object");
        if (l->get_object().size() > 256) return malformed("a volume has too many labels");
        for (const auto& [k, val] : l->get_object()) {
            if (!val.is_string() || k.size() > 4096 || val.get_string().size() > 4096)
                return malformed("a volume label is not a string of at most 4096 bytes");
            r.labels.emplace(std::string(k), std::string(val.get_string()));
        }
    }
    return r;
}

}  // namespace

crypto::SecureBuffer encode(const StatusMessage& m) {
    json::array statuses;
    statuses.reserve(m.statuses.size());
    for (const auto& r : m.statuses) {
        json::object o{{"task_id", r.task_id},
                       {"state", model::to_string(r.state)},
                       {"message", r.message},
                       {"err", r.err}};
        if (r.container) {
            o["container_id"] = r.container->container_id;
            o["pid"] = r.container->pid;
            o["exit_code"] = r.container->exit_code;
            if (!r.container->health.empty()) o["health"] = r.container->health;
        }
        if (!r.secrets.empty()) {
            json::array held;
            for (const auto& s : r.secrets) held.emplace_back(s);
            o["secrets"] = std::move(held);
        }
        if (!r.reads.empty()) {
            json::array reads;
            for (const auto& x : r.reads)
                reads.push_back(json::object{{"secret", x.secret},
                                             {"reads", x.reads},
                                             {"first", x.first_read_ns},
                                             {"last", x.last_read_ns}});
            o["reads"] = std::move(reads);
        }
        statuses.emplace_back(std::move(o));
    }
    json::object out{
        {"type", "status"}, {"complete", m.complete}, {"statuses", std::move(statuses)}};
    if (m.volumes) {
        json::array volumes;
        for (const auto& v : *m.volumes) {
            json::object labels;
            for (const auto& [k, val] : v.labels) labels[k] = val;
            volumes.push_back(json::object{{"name", v.name},
                                           {"mountpoint", v.mountpoint},
                                           {"created_at", v.created_at},
                                           {"labels", std::move(labels)}});
        }
        out["volumes"] = std::move(volumes);
    }
    return wire::text_of(out);
}

Result<StatusMessage> decode_status(const crypto::SecureBuffer& text) {
    auto doc = wire::object_of_type(text, "status");
    if (!doc) return std::move(doc).error();
    const auto& o = doc->value().get_object();
    StatusMessage out;
    if (auto* c = o.if_contains("complete"); c != nullptr && !c->is_null()) {
        if (!c->is_bool()) return malformed("complete is not a boolean");
        out.complete = c->get_bool();
    }
    auto* statuses = o.if_contains("statuses");
    if (statuses == nullptr || !statuses->is_array()) return malformed("statuses is not an array");
    const auto& list = statuses->get_array();
    if (list.size() > max_status_reports)
        return malformed(fmt::format("more than {} statuses", max_status_reports));
    out.statuses.reserve(list.size());
    for (const auto& v : list) {
        auto r = decode_report(v);
        if (!r) return std::move(r).error();
        out.statuses.push_back(std::move(*r));
    }
    if (auto* volumes = o.if_contains("volumes"); volumes != nullptr && !volumes->is_null()) {
        if (!volumes->is_array()) return malformed("volumes is not an array");
        const auto& vl = volumes->get_array();
        if (vl.size() > max_volume_reports)
            return malformed(fmt::format("more than {} volumes", max_volume_reports));
        out.volumes.emplace();
        for (const auto& v : vl) {
            auto r = decode_volume(v);
            if (!r) return std::move(r).error();
            out.volumes->push_back(std::move(*r));
        }
    }
    return out;
}

}  // namespace coffer::nodeproto
