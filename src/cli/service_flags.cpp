#include "service_flags.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <tuple>
#include <utility>

#include "coffer/model/secret.h"
#include "coffer/model/secret_update.h"
#include "coffer/model/service.h"
#include "common.h"

namespace coffer::cli {

namespace json = boost::json;

namespace {

// NAME@N: the pinned version out of the source (a name cannot hold '@').
Result<void> split_version(SecretOpt& o) {
    auto at = o.source.rfind('@');
    if (at == std::string::npos) return {};
    auto digits = o.source.substr(at + 1);
    char* stop = nullptr;
    auto n = std::strtoull(digits.c_str(), &stop, 10);
    if (digits.empty() || *stop != '\0' || n == 0 || digits[0] == '-' || digits[0] == '+')
        return usage(
            fmt::format("invalid secret version in '{}' (expected NAME@N, N >= 1)", o.source));
    o.version = n;
    o.source.resize(at);
    return {};
}

}  // namespace

Result<SecretOpt> parse_secret_opt(const std::string& spec) {
    SecretOpt o;
    if (spec.find('=') == std::string::npos) {
        o.source = spec;
        if (auto v = split_version(o); !v) return std::move(v).error();
        o.target = o.source;
        return o;
    }
    std::size_t start = 0;
    while (start <= spec.size()) {
        auto end = spec.find(',', start);
        auto part = spec.substr(start, end == std::string::npos ? std::string::npos : end - start);
        auto [k, v] = split_kv(part);
        if (k == "source" || k == "src")
            o.source = v;
        else if (k == "target")
            o.target = v;
        else if (k == "uid")
            o.uid = v;
        else if (k == "gid")
            o.gid = v;
        else if (k == "mode") {
            char* stop = nullptr;
            auto m = std::strtoul(v.c_str(), &stop, 8);
            if (v.empty() || *stop != '\0' || m > 07777)
                return usage(fmt::format("invalid mode specified: {}", v));
            o.mode = static_cast<std::uint32_t>(m);
        } else {
            return usage(fmt::format("invalid field '{}' must be a key=value pair", part));
        }
        if (end == std::string::npos) break;
        start = end + 1;
    }
    if (auto v = split_version(o); !v) return std::move(v).error();
    if (o.source.empty()) return usage("source is required");
    if (o.target.empty()) o.target = o.source;
    return o;
}

namespace {

// "true"/"1"/"" (a bare key) and "false"/"0", as Go's strconv.ParseBool for the docker CLI's
// mount booleans.
std::optional<bool> mount_bool(const std::string& v) {
    auto l = model::to_lower(v);
    if (l.empty() || l == "true" || l == "1" || l == "t") return true;
    if (l == "false" || l == "0" || l == "f") return false;
    return std::nullopt;
}

}  // namespace

Result<json::object> parse_mount_opt(const std::string& spec) {
    json::object m;
    json::object bind, volume, tmpfs, labels;
    std::size_t start = 0;
    while (start <= spec.size()) {
        auto end = spec.find(',', start);
        auto part = spec.substr(start, end == std::string::npos ? std::string::npos : end - start);
        auto eq = part.find('=');
        auto k = model::to_lower(part.substr(0, eq));
        auto v = eq == std::string::npos ? std::string() : part.substr(eq + 1);
        auto flag = [&](json::object& o, std::string_view key) -> Result<void> {
            auto b = mount_bool(v);
            if (!b) return usage(fmt::format("invalid value for {}: {}", k, v));
            o[key] = *b;
            return {};
        };
        Result<void> r;
        if (eq == std::string::npos && k != "readonly" && k != "ro" && k != "volume-nocopy" &&
            k != "bind-nonrecursive")
            return usage(fmt::format("invalid field '{}' must be a key=value pair", part));
        if (k == "type")
            m["Type"] = model::to_lower(v);
        else if (k == "source" || k == "src")
            m["Source"] = v;
        else if (k == "target" || k == "dst" || k == "destination")
            m["Target"] = v;
        else if (k == "readonly" || k == "ro")
            r = flag(m, "ReadOnly");
        else if (k == "consistency")
            m["Consistency"] = v;
        else if (k == "bind-propagation")
            bind["Propagation"] = model::to_lower(v);
        else if (k == "bind-nonrecursive")
            r = flag(bind, "NonRecursive");
        else if (k == "volume-nocopy")
            r = flag(volume, "NoCopy");
        else if (k == "volume-label") {
            auto [lk, lv] = split_kv(v);
            labels[lk] = lv;
        } else if (k == "volume-driver")
            obj(volume, "DriverConfig")["Name"] = v;
        else if (k == "volume-opt") {
            auto [ok, ov] = split_kv(v);
            obj(obj(volume, "DriverConfig"), "Options")[ok] = ov;
        } else if (k == "tmpfs-size") {
            auto b = parse_bytes(v);
            if (!b) return std::move(b).error();
            tmpfs["SizeBytes"] = *b;
        } else if (k == "tmpfs-mode") {
            char* stop = nullptr;
            auto mode = std::strtoul(v.c_str(), &stop, 8);
            if (v.empty() || *stop != '\0' || mode > 07777)
                return usage(fmt::format("invalid value for {}: {}", k, v));
            tmpfs["Mode"] = mode;
        } else
            return usage(fmt::format("unexpected key '{}' in '{}'", k, part));
        if (!r) return std::move(r).error();
        if (end == std::string::npos) break;
        start = end + 1;
    }
    if (!labels.empty()) volume["Labels"] = std::move(labels);
    auto type = m.contains("Type") ? std::string(m["Type"].as_string()) : std::string("volume");
    if (!m.contains("Type")) m["Type"] = "volume";
    if (!m.contains("Target")) return usage("target is required");
    if (!bind.empty() && type != "bind")
        return usage(fmt::format("cannot mix 'bind-*' options with mount type '{}'", type));
    if (!volume.empty() && type != "volume")
        return usage(fmt::format("cannot mix 'volume-*' options with mount type '{}'", type));
    if (!tmpfs.empty() && type != "tmpfs")
        return usage(fmt::format("cannot mix 'tmpfs-*' options with mount type '{}'", type));
    if (!bind.empty()) m["BindOptions"] = std::move(bind);
    if (!volume.empty()) m["VolumeOptions"] = std::move(volume);
    if (!tmpfs.empty()) m["TmpfsOptions"] = std::move(tmpfs);
    return m;
}

json::array remove_mounts(const json::value* current, const std::vector<std::string>& rm) {
    json::array mounts;
    if (current && current->is_array())
        for (const auto& m : current->as_array())
            if (std::find(rm.begin(), rm.end(), field(m, {"Target"})) == rm.end())
                mounts.push_back(m);
    return mounts;
}

Result<std::int64_t> parse_bytes(const std::string& s) {
    char* stop = nullptr;
    double v = std::strtod(s.c_str(), &stop);
    std::string unit = model::to_lower(stop ? stop : "");
    std::int64_t mult = 1;
    if (unit.empty() || unit == "b")
        mult = 1;
    else if (unit == "k" || unit == "kb" || unit == "kib")
        mult = 1LL << 10;
    else if (unit == "m" || unit == "mb" || unit == "mib")
        mult = 1LL << 20;
    else if (unit == "g" || unit == "gb" || unit == "gib")
        mult = 1LL << 30;
    else
        return usage(fmt::format("invalid size: '{}'", s));
    // Not a number, infinite or too large: no int64 holds it (the conversion would be undefined).
    double bytes = v * static_cast<double>(mult);
    if (s.empty() || stop == s.c_str() || v < 0 || !(bytes < 9.2e18))
        return usage(fmt::format("invalid size: '{}'", s));
    return static_cast<std::int64_t>(bytes);
}

Result<std::int64_t> parse_nano_cpus(const std::string& v, std::string_view flag) {
    char* stop = nullptr;
    double cpus = std::strtod(v.c_str(), &stop);
    if (v.empty() || *stop != '\0' || cpus < 0 || !(cpus * 1e9 < 9.2e18))
        return usage(fmt::format("invalid argument \"{}\" for \"{}\" flag", v, flag));
    return static_cast<std::int64_t>(std::llround(cpus * 1e9));
}

Result<json::object> parse_placement_pref(const std::string& v) {
    auto eq = v.find('=');
    if (eq == std::string::npos || eq == 0)
        return usage(
            fmt::format("invalid argument \"{}\" for \"--placement-pref\" flag: "
                        "placement preference must be of the format "
                        "\"<strategy>=<arg>\"",
                        v));
    auto strategy = v.substr(0, eq);
    if (strategy != "spread")
        return usage(
            fmt::format("invalid argument \"{}\" for \"--placement-pref\" flag: "
                        "unsupported placement preference {} (only spread is supported)",
                        v, strategy));
    return json::object{{"Spread", json::object{{"SpreadDescriptor", v.substr(eq + 1)}}}};
}

Result<json::object> parse_generic_resource_opt(const std::string& v) {
    auto eq = v.find('=');
    char* stop = nullptr;
    auto value = eq == std::string::npos ? "" : v.substr(eq + 1);
    auto n = std::strtoll(value.c_str(), &stop, 10);
    if (eq == std::string::npos || eq == 0 || value.empty() || *stop != '\0' || n <= 0)
        return usage(
            fmt::format("invalid argument \"{}\" for \"--generic-resource\" flag: "
                        "a generic resource is NAME=COUNT",
                        v));
    return json::object{
        {"DiscreteResourceSpec", json::object{{"Kind", v.substr(0, eq)}, {"Value", n}}}};
}

Result<std::int64_t> parse_count(const std::string& flag, const std::string& v) {
    char* stop = nullptr;
    auto n = std::strtoll(v.c_str(), &stop, 10);
    if (v.empty() || *stop != '\0' || n < 0)
        return usage(fmt::format("invalid argument \"{}\" for \"{}\" flag", v, flag));
    return n;
}

Result<std::int64_t> duration_flag(const std::string& flag, const std::string& v) {
    auto d = model::parse_go_duration(v);
    if (!d)
        return usage(fmt::format(
            "invalid argument \"{}\" for \"{}\" flag: time: invalid duration \"{}\"", v, flag, v));
    return *d;
}

Result<ScaleArg> parse_scale_arg(const std::string& arg) {
    auto [name, count] = split_kv(arg);
    char* stop = nullptr;
    auto n = std::strtoll(count.c_str(), &stop, 10);
    if (count.empty() || *stop != '\0' || n < 0)
        return usage(
            fmt::format("invalid replicas value {}: must be a non-negative integer", count));
    return ScaleArg{std::move(name), n};
}

json::object labels_object(const std::vector<std::string>& labels) {
    json::object out;
    for (const auto& l : labels) {
        auto [k, v] = split_kv(l);
        out[k] = v;
    }
    return out;
}

std::vector<std::string> update_env(std::vector<std::string> env,
                                    const std::vector<std::string>& add,
                                    const std::vector<std::string>& rm) {
    auto key_of = [](const std::string& e) { return split_kv(e).first; };
    auto drop = [&](const std::string& key) {
        env.erase(
            std::remove_if(env.begin(), env.end(), [&](const auto& e) { return key_of(e) == key; }),
            env.end());
    };
    for (const auto& k : rm) drop(key_of(k));
    for (const auto& e : add) drop(key_of(e)), env.push_back(e);
    return env;
}

json::array remove_secret_refs(const json::value* current, const std::vector<std::string>& rm,
                               std::string_view name_key) {
    json::array secrets;
    if (current && current->is_array())
        for (const auto& ref : current->as_array()) {
            // A pinned reference ("db@3") goes with its secret's name too.
            auto name = field(ref, {name_key});
            auto plain = name.substr(0, name.rfind('@'));
            if (std::find(rm.begin(), rm.end(), name) == rm.end() &&
                std::find(rm.begin(), rm.end(), plain) == rm.end())
                secrets.push_back(ref);
        }
    return secrets;
}

json::object& obj(json::object& o, std::string_view key) {
    auto& v = o[key];
    if (!v.is_object()) v = json::object{};
    return v.as_object();
}

void SpecFlags::add(CLI::App* cmd) {
    cmd->add_option("--replicas", replicas, "Number of tasks");
    cmd->add_option("--secret-update", secret_update,
                    "What running tasks get when a secret they follow is rotated: restart "
                    "(default), live, signal:<SIGNAL> (live, then the signal) or none");
    cmd->add_option("--secret-mount", secret_mount,
                    "What serves the tasks' secret files on their nodes: tmpfs, fuse (counts "
                    "reads) or auto (the node's default)")
        ->check(CLI::IsMember({"tmpfs", "fuse", "auto"}));
    cmd->add_option("-u,--user", user, "Username or UID (format: <name|uid>[:<group|gid>])");
    cmd->add_option("-w,--workdir", workdir, "Working directory inside the container");
    cmd->add_option("--limit-memory", limit_memory, "Limit Memory");
    cmd->add_option("--limit-cpu", limit_cpu, "Limit CPUs");
    cmd->add_option("--limit-pids", limit_pids, "Limit maximum number of processes");
    cmd->add_option("--reserve-memory", reserve_memory, "Reserve Memory");
    cmd->add_option("--reserve-cpu", reserve_cpu, "Reserve CPUs");
    cmd->add_option("--replicas-max-per-node", replicas_max_per_node,
                    "Maximum number of tasks per node (default 0 = unlimited)");
    cmd->add_flag("--read-only", read_only, "Mount the container's root filesystem as read only");
    one_value_per_flag(cmd->add_option("--cap-add", cap_add, "Add Linux capabilities"));
    one_value_per_flag(cmd->add_option("--cap-drop", cap_drop, "Drop Linux capabilities"));
    cmd->add_option("--hostname", hostname, "Container hostname");
    cmd->add_flag(
        "--init", init,
        "Use an init inside each service container to forward signals and reap processes");
    cmd->add_option("--stop-signal", stop_signal, "Signal to stop the container");
    cmd->add_option("--stop-grace-period", stop_grace_period,
                    "Time to wait before force killing a container (ns|us|ms|s|m|h)");
    cmd->add_option("--oom-score-adj", oom_score_adj,
                    "Tune host's OOM preferences (-1000 to 1000)");
    one_value_per_flag(cmd->add_option(
        "--group", groups, "Set one or more supplementary user groups for the container"));
    one_value_per_flag(cmd->add_option("--sysctl", sysctls, "Sysctl options"));
    one_value_per_flag(cmd->add_option("--ulimit", ulimits, "Ulimit options"));
    one_value_per_flag(
        cmd->add_option("--host", hosts, "Set one or more custom host-to-IP mappings (host:ip)"));
    one_value_per_flag(cmd->add_option("--dns", dns, "Set custom DNS servers"));
    one_value_per_flag(
        cmd->add_option("--dns-search", dns_search, "Set custom DNS search domains"));
    one_value_per_flag(cmd->add_option("--dns-option", dns_options, "Set DNS options"));
    cmd->add_option("--restart-condition", restart_condition,
                    "Restart when condition is met (none, on-failure, any)");
    cmd->add_option("--restart-delay", restart_delay,
                    "Delay between restart attempts (ns|us|ms|s|m|h)");
    cmd->add_option("--restart-max-attempts", restart_max_attempts,
                    "Maximum number of restarts before giving up");
    cmd->add_option("--update-parallelism", update_parallelism,
                    "Maximum number of tasks updated simultaneously (0 to update all at once)");
    cmd->add_option("--update-delay", update_delay, "Delay between updates (ns|us|ms|s|m|h)");
    cmd->add_option("--update-order", update_order, "Update order (start-first, stop-first)");
    cmd->add_option("--update-failure-action", update_failure_action,
                    "Action on update failure (pause, continue, rollback)");
    cmd->add_option("--health-cmd", health_cmd, "Command to run to check health");
    cmd->add_option("--health-interval", health_interval,
                    "Time between running the check (ms|s|m|h)");
    cmd->add_option("--health-timeout", health_timeout,
                    "Maximum time to allow one check to run (ms|s|m|h)");
    cmd->add_option("--health-retries", health_retries,
                    "Consecutive failures needed to report unhealthy");
    cmd->add_option("--health-start-period", health_start_period,
                    "Start period for the container to initialize before counting retries "
                    "towards unstable (ms|s|m|h)");
    cmd->add_option("--health-start-interval", health_start_interval,
                    "Time between running the check during the start period (ms|s|m|h)");
    cmd->add_flag("--no-healthcheck", no_healthcheck,
                  "Disable any container-specified HEALTHCHECK");
}

Result<void> SpecFlags::apply(json::object& spec) const {
    // coffer's service labels, from their flags.
    for (auto [label, value] : {std::pair{model::secret_update_label, &secret_update},
                                std::pair{model::secret_mount_label, &secret_mount}}) {
        if (value->empty()) continue;
        if (!spec.contains("Labels") || !spec["Labels"].is_object())
            spec["Labels"] = json::object{};
        spec["Labels"].as_object()[label] = *value;
    }
    // Each setter leaves the field alone when its flag was not given.
    auto put_int = [](json::object& o, std::string_view key, const std::string& flag,
                      const std::string& v) -> Result<void> {
        if (v.empty()) return {};
        auto n = parse_count(flag, v);
        if (!n) return std::move(n).error();
        o[key] = *n;
        return {};
    };
    auto put_duration = [](json::object& o, std::string_view key, const std::string& flag,
                           const std::string& v) -> Result<void> {
        if (v.empty()) return {};
        auto d = duration_flag(flag, v);
        if (!d) return std::move(d).error();
        o[key] = *d;
        return {};
    };
    auto put_str = [](json::object& o, std::string_view key, const std::string& v) {
        if (!v.empty()) o[key] = v;
    };
    if (!replicas.empty()) {
        auto& mode = obj(spec, "Mode");
        if (mode.contains("Global")) return usage("replicas can only be used with replicated mode");
        if (auto r = put_int(obj(mode, "Replicated"), "Replicas", "--replicas", replicas); !r)
            return r;
    }
    // Taken after the Mode is set: a reference into a json::object does not survive its
    // operator[], which may grow the object's table even for a key it holds.
    auto& tt = obj(spec, "TaskTemplate");
    auto& cs = obj(tt, "ContainerSpec");
    put_str(cs, "User", user);
    put_str(cs, "Dir", workdir);
    if (read_only) cs["ReadOnly"] = true;
    for (auto [key, list] :
         {std::pair{"CapabilityAdd", &cap_add}, std::pair{"CapabilityDrop", &cap_drop}})
        if (!list->empty()) cs[key] = json::array(list->begin(), list->end());
    if (auto r = apply_task_options(cs); !r) return r;
    auto& limits = obj(obj(tt, "Resources"), "Limits");
    if (!limit_memory.empty()) {
        auto b = parse_bytes(limit_memory);
        if (!b) return std::move(b).error();
        limits["MemoryBytes"] = *b;
    }
    if (!limit_cpu.empty()) {
        auto cpus = parse_nano_cpus(limit_cpu);
        if (!cpus) return std::move(cpus).error();
        limits["NanoCPUs"] = *cpus;
    }
    if (auto r = put_int(limits, "Pids", "--limit-pids", limit_pids); !r) return r;
    if (!reserve_memory.empty() || !reserve_cpu.empty()) {
        auto& reservations = obj(obj(tt, "Resources"), "Reservations");
        if (!reserve_memory.empty()) {
            auto b = parse_bytes(reserve_memory);
            if (!b) return std::move(b).error();
            reservations["MemoryBytes"] = *b;
        }
        if (!reserve_cpu.empty()) {
            auto cpus = parse_nano_cpus(reserve_cpu, "--reserve-cpu");
            if (!cpus) return std::move(cpus).error();
            reservations["NanoCPUs"] = *cpus;
        }
    }
    if (!replicas_max_per_node.empty())
        if (auto r = put_int(obj(tt, "Placement"), "MaxReplicas", "--replicas-max-per-node",
                             replicas_max_per_node);
            !r)
            return r;
    if (!restart_condition.empty() || !restart_delay.empty() || !restart_max_attempts.empty()) {
        auto& rp = obj(tt, "RestartPolicy");
        put_str(rp, "Condition", restart_condition);
        if (auto r = put_duration(rp, "Delay", "--restart-delay", restart_delay); !r) return r;
        if (auto r = put_int(rp, "MaxAttempts", "--restart-max-attempts", restart_max_attempts); !r)
            return r;
    }
    if (!update_parallelism.empty() || !update_delay.empty() || !update_order.empty() ||
        !update_failure_action.empty()) {
        auto& uc = obj(spec, "UpdateConfig");
        if (auto r = put_int(uc, "Parallelism", "--update-parallelism", update_parallelism); !r)
            return r;
        if (auto r = put_duration(uc, "Delay", "--update-delay", update_delay); !r) return r;
        put_str(uc, "Order", update_order);
        put_str(uc, "FailureAction", update_failure_action);
    }
    // As the docker CLI: --no-healthcheck stands alone; the --health-* flags change the fields
    // they name, and a command replaces a NONE.
    bool health = !health_cmd.empty() || !health_interval.empty() || !health_timeout.empty() ||
                  !health_retries.empty() || !health_start_period.empty() ||
                  !health_start_interval.empty();
    // Taken again: tt has grown since cs was taken.
    auto& container = obj(obj(spec, "TaskTemplate"), "ContainerSpec");
    if (no_healthcheck) {
        if (health) return usage("--no-healthcheck conflicts with --health-* options");
        container["Healthcheck"] = json::object{{"Test", json::array{"NONE"}}};
    } else if (health) {
        auto& hc = obj(container, "Healthcheck");
        if (auto* test = hc.if_contains("Test");
            test && test->is_array() && test->as_array() == json::array{"NONE"})
            hc.erase("Test");
        if (!health_cmd.empty()) hc["Test"] = json::array{"CMD-SHELL", health_cmd};
        for (auto [key, flag, v] :
             {std::tuple{"Interval", "--health-interval", &health_interval},
              std::tuple{"Timeout", "--health-timeout", &health_timeout},
              std::tuple{"StartPeriod", "--health-start-period", &health_start_period},
              std::tuple{"StartInterval", "--health-start-interval", &health_start_interval}})
            if (auto r = put_duration(hc, key, flag, *v); !r) return r;
        if (auto r = put_int(hc, "Retries", "--health-retries", health_retries); !r) return r;
    }
    return {};
}

Result<json::object> parse_ulimit(const std::string& v) {
    auto [name, limits] = split_kv(v);
    auto colon = limits.find(':');
    auto number = [&](const std::string& text) -> Result<std::int64_t> {
        char* stop = nullptr;
        auto n = std::strtoll(text.c_str(), &stop, 10);
        if (text.empty() || *stop != '\0' || n < -1)
            return usage(
                fmt::format("invalid argument \"{}\" for \"--ulimit\" flag: invalid "
                            "ulimit value: {}",
                            v, text));
        return n;
    };
    if (name.empty() || v.find('=') == std::string::npos)
        return usage(
            fmt::format("invalid argument \"{}\" for \"--ulimit\" flag: invalid ulimit "
                        "argument: {}",
                        v, v));
    auto soft = number(limits.substr(0, colon));
    if (!soft) return std::move(soft).error();
    auto hard = colon == std::string::npos ? soft : number(limits.substr(colon + 1));
    if (!hard) return std::move(hard).error();
    return json::object{{"Name", name}, {"Soft", *soft}, {"Hard", *hard}};
}

Result<void> SpecFlags::apply_task_options(json::object& cs) const {
    if (!hostname.empty()) cs["Hostname"] = hostname;
    if (init) cs["Init"] = true;
    if (!stop_signal.empty()) cs["StopSignal"] = stop_signal;
    if (!stop_grace_period.empty()) {
        auto d = duration_flag("--stop-grace-period", stop_grace_period);
        if (!d) return std::move(d).error();
        cs["StopGracePeriod"] = *d;
    }
    if (!oom_score_adj.empty()) {
        char* stop = nullptr;
        auto n = std::strtoll(oom_score_adj.c_str(), &stop, 10);
        if (*stop != '\0')
            return usage(
                fmt::format("invalid argument \"{}\" for \"--oom-score-adj\" flag", oom_score_adj));
        cs["OomScoreAdj"] = n;
    }
    if (!groups.empty()) cs["Groups"] = json::array(groups.begin(), groups.end());
    if (!sysctls.empty()) cs["Sysctls"] = labels_object(sysctls);
    if (!ulimits.empty()) {
        json::array list;
        for (const auto& u : ulimits) {
            auto o = parse_ulimit(u);
            if (!o) return std::move(o).error();
            list.push_back(std::move(*o));
        }
        cs["Ulimits"] = std::move(list);
    }
    if (!hosts.empty()) {
        // As docker: "host:ip" on the command line, "ip host" in the API.
        json::array list;
        for (const auto& h : hosts) {
            auto colon = h.find(':');
            if (colon == std::string::npos)
                return usage(fmt::format("bad format for add-host: \"{}\"", h));
            list.emplace_back(h.substr(colon + 1) + " " + h.substr(0, colon));
        }
        cs["Hosts"] = std::move(list);
    }
    if (!dns.empty() || !dns_search.empty() || !dns_options.empty()) {
        auto& d = obj(cs, "DNSConfig");
        if (!dns.empty()) d["Nameservers"] = json::array(dns.begin(), dns.end());
        if (!dns_search.empty()) d["Search"] = json::array(dns_search.begin(), dns_search.end());
        if (!dns_options.empty())
            d["Options"] = json::array(dns_options.begin(), dns_options.end());
    }
    return {};
}

namespace {

bool default_detach() {
    return ::isatty(STDOUT_FILENO) == 0;
}

}  // namespace

void WaitFlags::add(CLI::App* cmd) {
    // A flag, as in docker: `-d IMAGE` must not take the image for its value; `--detach=false`
    // still works.
    cmd->add_flag("-d,--detach", detach,
                  "Exit immediately instead of waiting for the service to converge");
    cmd->add_option("--timeout", timeout, "Seconds to wait for convergence")->capture_default_str();
}

bool WaitFlags::wait(const CLI::App* cmd) const {
    if (cmd->count("--detach") == 0) return !default_detach();
    return !detach;
}

}  // namespace coffer::cli
