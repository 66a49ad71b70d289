#include "coffer/agent/task_json.h"

#include <boost/json.hpp>

#include "json_util.h"

namespace coffer::agent {
namespace json = boost::json;
namespace {

Result<std::int64_t> int_at(const json::object& o, std::string_view key, std::int64_t fallback) {
    auto* v = o.if_contains(key);
    if (!v) return fallback;
    if (v->is_int64()) return v->as_int64();
    if (v->is_uint64() && v->as_uint64() <= INT64_MAX)
        return static_cast<std::int64_t>(v->as_uint64());
    return make_error(Errc::invalid_argument, fmt::format("{}: expected an integer", key));
}

}  // namespace

Result<TaskSpec> task_spec_from_json(std::string_view text) {
    boost::system::error_code ec;
    auto v = json::parse(text, ec);
    if (ec || !v.is_object())
        return make_error(Errc::invalid_argument, "task spec: not a JSON object");
    auto& o = v.as_object();
    TaskSpec s;
    s.id = string_at(o, "id");
    s.image = string_at(o, "image");
    s.args = strings_at(o, "args");
    s.env = strings_at(o, "env");
    s.user = string_at(o, "user");
    s.workdir = string_at(o, "workdir");
    s.hostname = string_at(o, "hostname");
    if (auto* b = o.if_contains("read_only_rootfs"); b && b->is_bool())
        s.read_only_rootfs = b->as_bool();
    if (auto* b = o.if_contains("user_namespace"); b && b->is_bool())
        s.user_namespace = b->as_bool();
    if (o.contains("secret_mount")) {
        auto b = secret_backend_from(string_at(o, "secret_mount"));
        if (!b)
            return make_error(Errc::invalid_argument,
                              "secret_mount: expected \"auto\", \"tmpfs\" or \"fuse\"");
        s.secret_mount = *b;
    }
    s.cap_add = strings_at(o, "cap_add");
    s.cap_drop = strings_at(o, "cap_drop");
    if (auto* l = o.if_contains("limits"); l && l->is_object()) {
        auto& lo = l->as_object();
        auto m = int_at(lo, "memory_bytes", 0);
        auto c = int_at(lo, "nano_cpus", 0);
        auto p = int_at(lo, "pids", 0);
        for (auto* r : {&m, &c, &p})
            if (!*r) return std::move(*r).error();
        s.limits = {*m, *c, *p};
    }
    s.groups = strings_at(o, "groups");
    if (auto* b = o.if_contains("init"); b && b->is_bool()) s.init = b->as_bool();
    s.stop_signal = string_at(o, "stop_signal");
    if (auto* m = o.if_contains("sysctls"); m && m->is_object())
        for (auto& [key, value] : m->as_object()) {
            if (!value.is_string())
                return make_error(Errc::invalid_argument, "sysctls: expected string values");
            s.sysctls.emplace(std::string(key), std::string(value.as_string()));
        }
    if (auto* a = o.if_contains("ulimits"); a && a->is_array())
        for (auto& e : a->as_array()) {
            if (!e.is_object())
                return make_error(Errc::invalid_argument, "ulimits: expected objects");
            auto soft = int_at(e.as_object(), "soft", 0), hard = int_at(e.as_object(), "hard", 0);
            if (!soft || !hard) return make_error(Errc::invalid_argument, "ulimits: bad limit");
            s.ulimits.push_back({string_at(e.as_object(), "name"), *soft, *hard});
        }
    s.extra_hosts = strings_at(o, "extra_hosts");
    if (auto* d = o.if_contains("dns"); d && d->is_object()) {
        auto& dn = d->as_object();
        s.dns = {strings_at(dn, "nameservers"), strings_at(dn, "search"),
                 strings_at(dn, "options")};
    }
    if (o.contains("oom_score_adj")) {
        auto adj = int_at(o, "oom_score_adj", 0);
        if (!adj || *adj < -1000 || *adj > 1000)
            return make_error(Errc::invalid_argument, "oom_score_adj: expected -1000..1000");
        s.oom_score_adj = static_cast<int>(*adj);
    }
    if (auto* a = o.if_contains("secrets"); a && a->is_array()) {
        for (auto& e : a->as_array()) {
            if (!e.is_object())
                return make_error(Errc::invalid_argument, "secrets: expected objects");
            auto& so = e.as_object();
            SecretRef r;
            r.secret_id = string_at(so, "secret_id");
            r.name = string_at(so, "name");
            r.target = string_at(so, "target");
            auto uid = int_at(so, "uid", 0), gid = int_at(so, "gid", 0),
                 mode = int_at(so, "mode", 0444);
            for (auto* x : {&uid, &gid, &mode})
                if (!*x) return std::move(*x).error();
            if (*uid < 0 || *uid > UINT32_MAX || *gid < 0 || *gid > UINT32_MAX || *mode < 0 ||
                *mode > 07777)
                return make_error(Errc::invalid_argument, "secrets: uid, gid or mode out of range");
            r.uid = static_cast<std::uint32_t>(*uid);
            r.gid = static_cast<std::uint32_t>(*gid);
            r.mode = static_cast<std::uint32_t>(*mode);
            s.secrets.push_back(std::move(r));
        }
    }
    return s;
}

std::string task_status_to_json(const TaskStatus& s) {
    json::object o{{"id", s.id},
                   {"state", to_string(s.state)},
                   {"reason", s.reason},
                   {"oom_killed", s.oom_killed}};
    if (s.exit_code) o["exit_code"] = *s.exit_code;
    if (s.pid) o["pid"] = s.pid;
    return json::serialize(o);
}

}  // namespace coffer::agent
