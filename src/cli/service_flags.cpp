#include "service_flags.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <utility>

#include "coffer/model/secret.h"
#include "coffer/model/service.h"
#include "common.h"

namespace coffer::cli {

namespace json = boost::json;

Result<SecretOpt> parse_secret_opt(const std::string& spec) {
    SecretOpt o;
    if (spec.find('=') == std::string::npos) {
        o.source = o.target = spec;
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
    if (o.source.empty()) return usage("source is required");
    if (o.target.empty()) o.target = o.source;
    return o;
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

Result<std::int64_t> parse_nano_cpus(const std::string& v) {
    char* stop = nullptr;
    double cpus = std::strtod(v.c_str(), &stop);
    if (v.empty() || *stop != '\0' || cpus < 0 || !(cpus * 1e9 < 9.2e18))
        return usage(fmt::format("invalid argument \"{}\" for \"--limit-cpu\" flag", v));
    return static_cast<std::int64_t>(std::llround(cpus * 1e9));
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
        for (const auto& ref : current->as_array())
            if (std::find(rm.begin(), rm.end(), field(ref, {name_key})) == rm.end())
                secrets.push_back(ref);
    return secrets;
}

json::object& obj(json::object& o, std::string_view key) {
    auto& v = o[key];
    if (!v.is_object()) v = json::object{};
    return v.as_object();
}

void SpecFlags::add(CLI::App* cmd) {
    cmd->add_option("--replicas", replicas, "Number of tasks");
    cmd->add_option("-u,--user", user, "Username or UID (format: <name|uid>[:<group|gid>])");
    cmd->add_option("-w,--workdir", workdir, "Working directory inside the container");
    cmd->add_option("--limit-memory", limit_memory, "Limit Memory");
    cmd->add_option("--limit-cpu", limit_cpu, "Limit CPUs");
    cmd->add_option("--limit-pids", limit_pids, "Limit maximum number of processes");
    cmd->add_flag("--read-only", read_only, "Mount the container's root filesystem as read only");
    one_value_per_flag(cmd->add_option("--cap-add", cap_add, "Add Linux capabilities"));
    one_value_per_flag(cmd->add_option("--cap-drop", cap_drop, "Drop Linux capabilities"));
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
}

Result<void> SpecFlags::apply(json::object& spec) const {
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
