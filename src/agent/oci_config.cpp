#include "oci_config.h"

#include <sys/resource.h>
#include <sys/utsname.h>

#include <algorithm>
#include <boost/json.hpp>
#include <charconv>
#include <map>

#include "coffer/base/log.h"
#include "coffer/model/task_options.h"

namespace coffer::agent {
namespace json = boost::json;
namespace {

constexpr std::string_view all_caps[] = {"CAP_CHOWN",
                                         "CAP_DAC_OVERRIDE",
                                         "CAP_DAC_READ_SEARCH",
                                         "CAP_FOWNER",
                                         "CAP_FSETID",
                                         "CAP_KILL",
                                         "CAP_SETGID",
                                         "CAP_SETUID",
                                         "CAP_SETPCAP",
                                         "CAP_LINUX_IMMUTABLE",
                                         "CAP_NET_BIND_SERVICE",
                                         "CAP_NET_BROADCAST",
                                         "CAP_NET_ADMIN",
                                         "CAP_NET_RAW",
                                         "CAP_IPC_LOCK",
                                         "CAP_IPC_OWNER",
                                         "CAP_SYS_MODULE",
                                         "CAP_SYS_RAWIO",
                                         "CAP_SYS_CHROOT",
                                         "CAP_SYS_PTRACE",
                                         "CAP_SYS_PACCT",
                                         "CAP_SYS_ADMIN",
                                         "CAP_SYS_BOOT",
                                         "CAP_SYS_NICE",
                                         "CAP_SYS_RESOURCE",
                                         "CAP_SYS_TIME",
                                         "CAP_SYS_TTY_CONFIG",
                                         "CAP_MKNOD",
                                         "CAP_LEASE",
                                         "CAP_AUDIT_WRITE",
                                         "CAP_AUDIT_CONTROL",
                                         "CAP_SETFCAP",
                                         "CAP_MAC_OVERRIDE",
                                         "CAP_MAC_ADMIN",
                                         "CAP_SYSLOG",
                                         "CAP_WAKE_ALARM",
                                         "CAP_BLOCK_SUSPEND",
                                         "CAP_AUDIT_READ",
                                         "CAP_PERFMON",
                                         "CAP_BPF",
                                         "CAP_CHECKPOINT_RESTORE"};

// Docker's default set (moby oci/caps/defaults.go).
constexpr std::string_view default_caps[] = {
    "CAP_CHOWN",   "CAP_DAC_OVERRIDE", "CAP_FSETID",           "CAP_FOWNER",
    "CAP_MKNOD",   "CAP_NET_RAW",      "CAP_SETGID",           "CAP_SETUID",
    "CAP_SETFCAP", "CAP_SETPCAP",      "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT",
    "CAP_KILL",    "CAP_AUDIT_WRITE"};

constexpr std::string_view masked_paths[] = {"/proc/asound",
                                             "/proc/acpi",
                                             "/proc/kcore",
                                             "/proc/keys",
                                             "/proc/latency_stats",
                                             "/proc/timer_list",
                                             "/proc/timer_stats",
                                             "/proc/sched_debug",
                                             "/proc/scsi",
                                             "/sys/firmware",
                                             "/sys/devices/virtual/powercap"};

constexpr std::string_view readonly_paths[] = {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                                               "/proc/sysrq-trigger"};

Result<std::string> cap_name(std::string_view in) {
    std::string n(in);
    std::transform(n.begin(), n.end(), n.begin(), [](unsigned char c) { return std::toupper(c); });
    if (n == "ALL") return n;
    if (!n.starts_with("CAP_")) n = "CAP_" + n;
    if (std::find(std::begin(all_caps), std::end(all_caps), n) == std::end(all_caps))
        return make_error(Errc::invalid_argument, fmt::format("unknown capability {}", in));
    return n;
}

json::array strings(const std::vector<std::string>& v) {
    json::array a;
    for (auto& s : v) a.emplace_back(s);
    return a;
}

bool parse_u32(std::string_view s, std::uint32_t& out) {
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && p == s.data() + s.size() && !s.empty();
}

// Go's GOARCH name of this machine, as the profile's includes/excludes use it.
std::string_view go_arch() {
#if defined(__x86_64__)
    return "amd64";
#elif defined(__aarch64__)
    return "arm64";
#else
    return "unknown";
#endif
}

std::string_view scmp_arch() {
#if defined(__x86_64__)
    return "SCMP_ARCH_X86_64";
#elif defined(__aarch64__)
    return "SCMP_ARCH_AARCH64";
#else
    return "";
#endif
}

// "5.8" style version compare against the running kernel.
bool kernel_at_least(std::string_view min) {
    struct utsname u {};
    ::uname(&u);
    int have[2] = {0, 0}, want[2] = {0, 0};
    std::sscanf(u.release, "%d.%d", &have[0], &have[1]);
    std::string m(min);
    std::sscanf(m.c_str(), "%d.%d", &want[0], &want[1]);
    return have[0] != want[0] ? have[0] > want[0] : have[1] >= want[1];
}

bool rule_applies(const json::object& rule, const std::vector<std::string>& caps) {
    auto has_cap = [&](const json::value& c) {
        return c.is_string() && std::find(caps.begin(), caps.end(), c.as_string()) != caps.end();
    };
    auto arch_is_ours = [&](const json::value& a) {
        return a.is_string() && a.as_string() == go_arch();
    };
    if (auto* inc = rule.if_contains("includes"); inc && inc->is_object()) {
        auto& o = inc->as_object();
        if (auto* a = o.if_contains("arches");
            a && a->is_array() && !a->as_array().empty() &&
            std::none_of(a->as_array().begin(), a->as_array().end(), arch_is_ours))
            return false;
        if (auto* c = o.if_contains("caps");
            c && c->is_array() && !std::all_of(c->as_array().begin(), c->as_array().end(), has_cap))
            return false;
        if (auto* k = o.if_contains("minKernel");
            k && k->is_string() && !kernel_at_least(k->as_string()))
            return false;
    }
    if (auto* exc = rule.if_contains("excludes"); exc && exc->is_object()) {
        auto& o = exc->as_object();
        if (auto* a = o.if_contains("arches");
            a && a->is_array() &&
            std::any_of(a->as_array().begin(), a->as_array().end(), arch_is_ours))
            return false;
        if (auto* c = o.if_contains("caps");
            c && c->is_array() && std::any_of(c->as_array().begin(), c->as_array().end(), has_cap))
            return false;
    }
    return true;
}

json::object mount(std::string_view dest, std::string_view type, std::string_view source,
                   std::initializer_list<std::string_view> options) {
    json::array opts;
    for (auto o : options) opts.emplace_back(o);
    return {
        {"destination", dest}, {"type", type}, {"source", source}, {"options", std::move(opts)}};
}

// The filesystems the runtime mounts for every task, in this order.
struct RuntimeMount {
    std::string_view destination, type, source;
    std::initializer_list<std::string_view> options;
};

const RuntimeMount runtime_mounts[] = {
    {"/proc", "proc", "proc", {"nosuid", "noexec", "nodev"}},
    {"/dev", "tmpfs", "tmpfs", {"nosuid", "strictatime", "mode=755", "size=65536k"}},
    {"/dev/pts",
     "devpts",
     "devpts",
     {"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
    {"/dev/shm", "tmpfs", "shm", {"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
    {"/dev/mqueue", "mqueue", "mqueue", {"nosuid", "noexec", "nodev"}},
    {"/sys", "sysfs", "sysfs", {"nosuid", "noexec", "nodev", "ro"}},
    {"/sys/fs/cgroup", "cgroup", "cgroup", {"nosuid", "noexec", "nodev", "relatime", "ro"}},
};

// Where container engines bind files of their own (the network's names and resolver).
constexpr std::string_view engine_files[] = {"/etc/hosts", "/etc/hostname", "/etc/resolv.conf"};

}  // namespace

std::vector<RuntimePath> runtime_rootfs_paths() {
    std::vector<RuntimePath> out;
    for (const auto& m : runtime_mounts) out.push_back({m.destination, Leaf::directory});
    for (auto f : engine_files) out.push_back({f, Leaf::file});
    return out;
}

Result<std::pair<std::uint32_t, std::uint32_t>> parse_user(std::string_view user) {
    std::uint32_t uid = 0, gid = 0;
    if (user.empty()) return std::pair{uid, gid};
    auto colon = user.find(':');
    bool ok = parse_u32(user.substr(0, colon), uid) &&
              (colon == std::string_view::npos || parse_u32(user.substr(colon + 1), gid));
    if (!ok)
        return make_error(Errc::invalid_argument,
                          fmt::format("user \"{}\": expected numeric uid[:gid]", user));
    return std::pair{uid, gid};
}

Result<std::vector<std::string>> task_capabilities(const std::vector<std::string>& add,
                                                   const std::vector<std::string>& drop) {
    std::vector<std::string> caps(std::begin(default_caps), std::end(default_caps));
    std::vector<std::string> adds, drops;
    for (auto& a : add) {
        auto n = cap_name(a);
        if (!n) return std::move(n).error();
        adds.push_back(*n);
    }
    for (auto& d : drop) {
        auto n = cap_name(d);
        if (!n) return std::move(n).error();
        drops.push_back(*n);
    }
    // As Docker: drop first (ALL clears the defaults), then add (ALL grants everything).
    if (std::find(drops.begin(), drops.end(), "ALL") != drops.end()) caps.clear();
    std::erase_if(caps,
                  [&](auto& c) { return std::find(drops.begin(), drops.end(), c) != drops.end(); });
    if (std::find(adds.begin(), adds.end(), "ALL") != adds.end()) {
        caps.assign(std::begin(all_caps), std::end(all_caps));
    } else {
        for (auto& a : adds)
            if (std::find(caps.begin(), caps.end(), a) == caps.end()) caps.push_back(a);
    }
    std::sort(caps.begin(), caps.end());
    return caps;
}

json::value seccomp_for(const json::value& profile, const std::vector<std::string>& caps) {
    json::object out;
    auto& p = profile.as_object();
    out["defaultAction"] = p.at("defaultAction");
    if (auto* e = p.if_contains("defaultErrnoRet")) out["defaultErrnoRet"] = *e;
    json::array arches;
    if (auto* m = p.if_contains("archMap"); m && m->is_array()) {
        for (auto& a : m->as_array()) {
            if (!a.is_object() || string_at(a.as_object(), "architecture") != scmp_arch()) continue;
            arches.emplace_back(scmp_arch());
            if (auto* s = a.as_object().if_contains("subArchitectures"); s && s->is_array())
                for (auto& sa : s->as_array()) arches.push_back(sa);
        }
    }
    out["architectures"] = std::move(arches);
    json::array rules;
    if (auto* s = p.if_contains("syscalls"); s && s->is_array()) {
        for (auto& r : s->as_array()) {
            if (!r.is_object() || !rule_applies(r.as_object(), caps)) continue;
            auto& ro = r.as_object();
            json::object rule{{"names", ro.at("names")}, {"action", ro.at("action")}};
            if (auto* e = ro.if_contains("errnoRet")) rule["errnoRet"] = *e;
            if (auto* a = ro.if_contains("args"); a && a->is_array() && !a->as_array().empty())
                rule["args"] = *a;
            rules.emplace_back(std::move(rule));
        }
    }
    out["syscalls"] = std::move(rules);
    return out;
}

Result<std::string> make_oci_config(const ConfigInput& in) {
    const TaskSpec& spec = *in.spec;
    const ImageConfig& image = *in.image;

    ProcessUser user;
    if (in.user != nullptr) {
        user = *in.user;
    } else {
        auto ids = parse_user(spec.user.empty() ? image.user : spec.user);
        if (!ids) return std::move(ids).error();
        user.uid = ids->first;
        user.gid = ids->second;
    }
    // The last gate before the runtime: (uid_t)-1 would leave the process root.
    for (auto id : {user.uid, user.gid})
        if (id > model::max_account_id)
            return make_error(
                Errc::invalid_argument,
                fmt::format("uids and gids must be in range 0-{}: {}", model::max_account_id, id));
    for (auto id : user.additional_gids)
        if (id > model::max_account_id)
            return make_error(
                Errc::invalid_argument,
                fmt::format("uids and gids must be in range 0-{}: {}", model::max_account_id, id));
    auto caps = task_capabilities(spec.cap_add, spec.cap_drop);
    if (!caps) return std::move(caps).error();

    std::vector<std::string> args = spec.args;
    if (args.empty()) {
        args = image.entrypoint;
        args.insert(args.end(), image.cmd.begin(), image.cmd.end());
    }
    if (args.empty())
        return make_error(Errc::invalid_argument,
                          "no command: neither the task nor the image gives one");
    if (spec.init) args.insert(args.begin(), {std::string(task_init_path), "--"});

    std::string hostname = spec.hostname.empty() ? spec.id.substr(0, 12) : spec.hostname;
    std::vector<std::string> env = image.env;
    if (std::none_of(env.begin(), env.end(), [](auto& e) { return e.starts_with("PATH="); }))
        env.insert(env.begin(),
                   "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    env.push_back("HOSTNAME=" + hostname);
    for (auto& e : spec.env) {
        auto key = e.substr(0, e.find('=') + 1);
        std::erase_if(env, [&](auto& x) { return x.starts_with(key); });
        env.push_back(e);
    }
    std::string cwd = !spec.workdir.empty()    ? spec.workdir
                      : !image.workdir.empty() ? image.workdir
                                               : "/";
    if (cwd.front() != '/')
        return make_error(Errc::invalid_argument, "working directory must be absolute");

    // As many files as the agent may open (Docker passes its daemon's limit on).
    struct rlimit rl {};
    ::getrlimit(RLIMIT_NOFILE, &rl);
    std::uint64_t nofile = std::min<std::uint64_t>(rl.rlim_max, 1048576);
    std::map<std::string, std::pair<std::uint64_t, std::uint64_t>> limits{
        {"nofile", {nofile, nofile}}};
    for (const auto& u : spec.ulimits) {
        if (!model::ulimit_resource(u.name) || u.soft < -1 || u.hard < -1)
            return make_error(Errc::invalid_argument, fmt::format("invalid ulimit {}", u.name));
        auto value = [](std::int64_t v) {
            return v == -1 ? RLIM_INFINITY : static_cast<std::uint64_t>(v);
        };
        if (value(u.soft) > value(u.hard))
            return make_error(Errc::invalid_argument,
                              fmt::format("ulimit {}: soft limit above the hard limit", u.name));
        limits[u.name] = {value(u.soft), value(u.hard)};
    }
    json::array rlimits;
    for (const auto& [name, v] : limits) {
        std::string type = "RLIMIT_" + name;
        std::transform(type.begin(), type.end(), type.begin(),
                       [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
        rlimits.push_back(json::object{{"type", type}, {"hard", v.second}, {"soft", v.first}});
    }
    json::array gids;
    for (auto g : user.additional_gids) gids.emplace_back(g);
    json::object user_json{{"uid", user.uid}, {"gid", user.gid}};
    if (!gids.empty()) user_json["additionalGids"] = std::move(gids);
    json::array cap_list = strings(*caps);
    json::object process{
        {"terminal", false},
        {"user", std::move(user_json)},
        {"args", strings(args)},
        {"env", strings(env)},
        {"cwd", cwd},
        {"capabilities",
         {{"bounding", cap_list}, {"effective", cap_list}, {"permitted", cap_list}}},
        {"rlimits", std::move(rlimits)},
        {"noNewPrivileges", true},
    };
    if (spec.oom_score_adj) {
        if (*spec.oom_score_adj < -1000 || *spec.oom_score_adj > 1000)
            return make_error(Errc::invalid_argument, "oom score adjustment out of -1000..1000");
        process["oomScoreAdj"] = *spec.oom_score_adj;
    }

    json::array mounts;
    for (const auto& m : runtime_mounts)
        mounts.push_back(mount(m.destination, m.type, m.source, m.options));
    for (const auto& m : in.task_mounts)
        mounts.push_back(json::object{{"destination", m.destination},
                                      {"type", m.type},
                                      {"source", m.source},
                                      {"options", strings(m.options)}});
    for (auto& b : in.binds)
        mounts.push_back(b.executable ? mount(b.destination, "bind", b.source,
                                              {"rbind", "ro", "nosuid", "nodev"})
                                      : mount(b.destination, "bind", b.source,
                                              {"rbind", "ro", "nosuid", "nodev", "noexec"}));

    json::array namespaces;
    for (auto ns : {"pid", "network", "ipc", "uts", "mount", "cgroup"}) {
        if (std::string_view(ns) == "network" && in.host_network) continue;
        if (std::string_view(ns) == "network" && !in.netns.empty())
            namespaces.push_back(json::object{{"type", ns}, {"path", in.netns}});
        else
            namespaces.push_back(json::object{{"type", ns}});
    }

    json::object resources{{"devices", json::array{{{"allow", false}, {"access", "rwm"}}}}};
    const auto& lim = spec.limits;
    if (lim.memory_bytes < 0 || lim.nano_cpus < 0 || lim.pids < 0)
        return make_error(Errc::invalid_argument, "negative limit");
    if (lim.memory_bytes > 0) {
        if (lim.memory_bytes < 6 * 1024 * 1024)
            return make_error(Errc::invalid_argument, "memory limit below 6 MiB");
        json::object mem{{"limit", lim.memory_bytes}};
        if (in.limit_swap) mem["swap"] = lim.memory_bytes;  // no swap beyond the limit
        resources["memory"] = std::move(mem);
    }
    if (lim.nano_cpus > 0) {
        constexpr std::int64_t period = 100000;
        resources["cpu"] = {
            {"period", period},
            {"quota", std::max<std::int64_t>(1000, lim.nano_cpus * period / 1000000000)}};
    }
    if (lim.pids > 0) resources["pids"] = {{"limit", lim.pids}};

    json::object linux{
        {"namespaces", std::move(namespaces)},
        {"resources", std::move(resources)},
        {"cgroupsPath", in.cgroups_path},
        {"maskedPaths", json::array(std::begin(masked_paths), std::end(masked_paths))},
        {"readonlyPaths", json::array(std::begin(readonly_paths), std::end(readonly_paths))},
    };
    if (!spec.sysctls.empty()) {
        json::object sysctl;
        for (const auto& [k, v] : spec.sysctls) {
            if (!model::namespaced_sysctl(k) || k.find('/') != std::string::npos ||
                k.find("..") != std::string::npos)
                return make_error(Errc::invalid_argument,
                                  fmt::format("sysctl {} is not namespaced", k));
            if (k.starts_with("net.") && !in.netns.empty()) continue;  // set in it already
            sysctl[k] = v;
        }
        if (!sysctl.empty()) linux["sysctl"] = std::move(sysctl);
    }
    if (spec.user_namespace) {
        linux["namespaces"].as_array().push_back(json::object{{"type", "user"}});
        json::array map{{{"containerID", 0}, {"hostID", in.userns_base}, {"size", in.userns_size}}};
        linux["uidMappings"] = map;
        linux["gidMappings"] = map;
    }
    json::object annotations;
    if (in.seccomp_profile) {
        auto section = seccomp_for(*in.seccomp_profile, *caps);
        if (in.seccomp_programs) {
            // Without it, crun compiles the section itself: the same filter, only slower.
            auto program = in.seccomp_programs->base64_for(section.as_object());
            if (program)
                annotations["run.oci.seccomp_bpf_data"] = *program;
            else
                log::warn("runner", "seccomp filter left to the runtime to compile: {}",
                          program.error().message);
        }
        linux["seccomp"] = std::move(section);
    }

    json::object config{
        {"ociVersion", "1.0.2"},
        {"process", std::move(process)},
        {"root", {{"path", "rootfs"}, {"readonly", spec.read_only_rootfs}}},
        {"hostname", hostname},
        {"mounts", std::move(mounts)},
        {"linux", std::move(linux)},
    };
    if (!annotations.empty()) config["annotations"] = std::move(annotations);
    return json::serialize(config);
}

}  // namespace coffer::agent
