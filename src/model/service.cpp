#include "coffer/model/service.h"

#include "coffer/model/image_ref.h"

#include "coffer/model/secret_update.h"
#include "coffer/model/task_options.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <set>

namespace coffer::model {
namespace {

bool at_or_under(std::string_view path, std::string_view dir) {
    return path == dir ||
           (path.size() > dir.size() && path.starts_with(dir) && path[dir.size()] == '/');
}

// A CPU limit the kernel's CFS quota can express on any node.
constexpr std::int64_t max_nano_cpus = 1'000'000 * second_ns;

constexpr std::array<std::string_view, 14> task_state_names = {
    "new",     "pending",  "assigned", "accepted", "preparing", "ready",  "starting",
    "running", "complete", "shutdown", "failed",   "rejected",  "remove", "orphaned"};

constexpr std::array<std::string_view, 6> update_state_names = {
    "updating", "paused", "completed", "rollback_started", "rollback_paused", "rollback_completed"};

Error invalid(std::string message) {
    return make_error(Errc::invalid_argument, std::move(message));
}

bool alnum(char c) noexcept {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

Result<void> validate_update_config(const UpdateConfig& u, std::string_view what) {
    if (u.delay < 0) return invalid(fmt::format("TaskSpec: {}-delay cannot be negative", what));
    if (u.monitor < 0) return invalid(fmt::format("TaskSpec: {}-monitor cannot be negative", what));
    if (!(u.max_failure_ratio >= 0 && u.max_failure_ratio <= 1))
        return invalid(fmt::format(
            "TaskSpec: {}-maxfailureratio cannot be less than 0 or bigger than 1", what));
    return {};
}

// Secret and config references follow the same rules, in Docker's words with the kind named.
template <typename Ref>
Result<void> validate_file_refs(const std::vector<Ref>& refs, std::string_view kind,
                                std::string Ref::*id_of, std::string Ref::*name_of) {
    std::map<std::string, std::string> targets;  // file name -> object name
    for (const auto& ref : refs) {
        const auto& name = ref.*name_of;
        if ((ref.*id_of).empty() || name.empty())
            return invalid(fmt::format("malformed {} reference", kind));
        if (ref.file_name.empty())
            return invalid(fmt::format(
                "malformed file {} reference, invalid target file name provided", kind));
        if (auto [it, fresh] = targets.emplace(ref.file_name, name); !fresh)
            return invalid(
                fmt::format("{} references '{}' and '{}' have a conflicting target: '{}'", kind,
                            it->second, name, ref.file_name));
        // The agent refuses targets that climb out of where they belong; say so at once.
        std::string_view f = ref.file_name;
        for (std::size_t start = 0; start <= f.size();) {
            auto end = f.find('/', start);
            auto part = f.substr(start, end == std::string_view::npos ? f.npos : end - start);
            if (part == "..")
                return invalid(fmt::format("invalid {} target '{}'", kind, ref.file_name));
            if (end == std::string_view::npos) break;
            start = end + 1;
        }
        if (f.find('\0') != std::string_view::npos)
            return invalid(fmt::format("invalid {} target '{}'", kind, ref.file_name));
        if (ref.mode > 0777)
            return invalid(fmt::format("invalid file mode {:o} for {} target '{}'", ref.mode, kind,
                                       ref.file_name));
        for (const auto& id : {ref.uid, ref.gid}) {
            if (id.empty() || id.size() > 10 ||
                id.find_first_not_of("0123456789") != std::string::npos ||
                account_id_out_of_range(id))
                return invalid(fmt::format("invalid uid or gid '{}' for {} target '{}'", id, kind,
                                           ref.file_name));
        }
    }
    return {};
}

// Swarm's rules (its controlapi's validateHealthCheck), with Docker's minimum of 1 ms; and the
// test's kind, which Docker checks only when the container starts.
Result<void> validate_healthcheck(const HealthConfig& h) {
    constexpr std::int64_t minimum = 1'000'000;  // 1ms
    struct Named {
        const char* name;
        std::int64_t value;
    };
    for (auto [name, value] :
         {Named{"Interval", h.interval}, Named{"Timeout", h.timeout},
          Named{"StartPeriod", h.start_period}, Named{"StartInterval", h.start_interval}}) {
        if (value < 0)
            return invalid(
                fmt::format("ContainerSpec: {} in HealthConfig cannot be negative", name));
        if (value != 0 && value < minimum)
            return invalid(
                fmt::format("ContainerSpec: {} in HealthConfig cannot be less than 1ms", name));
    }
    if (h.retries < 0) return invalid("ContainerSpec: Retries in HealthConfig cannot be negative");
    if (h.test.empty()) return {};  // the image's
    const auto& kind = h.test.front();
    if (kind == "NONE") {
        if (h.test.size() != 1)
            return invalid("ContainerSpec: a NONE health check takes no command");
    } else if (kind == "CMD" || kind == "CMD-SHELL") {
        if (h.test.size() < 2 || h.test[1].empty())
            return invalid(fmt::format("ContainerSpec: a {} health check needs a command", kind));
    } else {
        return invalid(fmt::format(
            "ContainerSpec: unknown health check type \"{}\" (NONE, CMD or CMD-SHELL)", kind));
    }
    for (const auto& arg : h.test)
        if (arg.find('\0') != std::string::npos)
            return invalid("ContainerSpec: a health check command contains a NUL character");
    return {};
}

// Why a mount path is refused, in Docker's words for a relative one.
std::string_view unclean_why(std::string_view p) {
    return !p.empty() && p.front() == '/'
               ? "mount path must be absolute, without an empty, \".\" or \"..\" part or a "
                 "trailing slash"
               : "mount path must be absolute";
}

// A clean absolute path: starts with '/', no empty, "." or ".." component, no NUL.
bool clean_absolute(std::string_view p) {
    if (p.empty() || p.front() != '/' || p.find('\0') != std::string_view::npos) return false;
    if (p == "/") return true;
    if (p.back() == '/') return false;
    for (std::size_t start = 1; start <= p.size();) {
        auto end = p.find('/', start);
        auto part = p.substr(start, end == std::string_view::npos ? p.npos : end - start);
        if (part.empty() || part == "." || part == "..") return false;
        if (end == std::string_view::npos) break;
        start = end + 1;
    }
    return true;
}

// Docker's rules (daemon/cluster/executor and volume/mounts), in its words where it has them.
Result<void> validate_mounts(const std::vector<MountSpec>& mounts) {
    std::set<std::string> targets;
    for (const auto& m : mounts) {
        if (m.target.empty()) return invalid("invalid mount config: Target must not be empty");
        if (!clean_absolute(m.target) || m.target == "/")
            return invalid(fmt::format(
                "invalid mount config: invalid mount path: '{}' {}", m.target,
                m.target == "/" ? "mount path must be absolute" : unclean_why(m.target)));
        if (forbidden_destination(m.target))
            return invalid(fmt::format(
                "invalid mount config: mount target {}: not allowed in /proc, /sys or /dev",
                m.target));
        if (!targets.insert(m.target).second)
            return invalid(
                fmt::format("invalid mount config: duplicate mount point: {}", m.target));
        // Every task gets its own /etc/hosts, /etc/hostname and /etc/resolv.conf (the agent's),
        // which a mount at /etc would hide.
        if (m.target == "/etc")
            return invalid(
                "invalid mount config: a mount at /etc would hide the task's /etc/hosts, "
                "/etc/hostname and /etc/resolv.conf, which coffer provides: mount a directory "
                "below /etc");
        // The inner one's mount point would be made in the outer one's source (a host directory
        // or a volume), which the agent does not resolve as it resolves the image's paths.
        for (const auto& other : targets)
            if (other != m.target &&
                (m.target.starts_with(other + "/") || other.starts_with(m.target + "/")))
                return invalid(fmt::format(
                    "invalid mount config: mount targets {} and {} overlap: nested mounts are not "
                    "supported",
                    other, m.target));
        switch (m.type) {
            case MountType::bind:
                if (m.source.empty())
                    return invalid(
                        "invalid mount config for type \"bind\": field Source must "
                        "not be empty");
                if (!clean_absolute(m.source))
                    return invalid(
                        fmt::format("invalid mount config for type \"bind\": invalid "
                                    "mount path: '{}' {}",
                                    m.source, unclean_why(m.source)));
                // Every node refuses these (through links too): said here at once.
                for (std::string_view kernel : {"/proc", "/sys"})
                    if (m.source == kernel || m.source.starts_with(std::string(kernel) + "/"))
                        return invalid(fmt::format(
                            "invalid mount config for type \"bind\": bind source {} is or lies "
                            "in the host's {}, which would show other tasks' processes and "
                            "secrets",
                            m.source, kernel));
                break;
            case MountType::volume:
                if (!m.source.empty() && !valid_volume_name(m.source))
                    return invalid(fmt::format(
                        "invalid mount config for type \"volume\": invalid volume name \"{}\": "
                        "only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
                        m.source));
                if (auto r = validate_labels(m.volume_labels); !r) return r;
                break;
            case MountType::tmpfs:
                if (!m.source.empty())
                    return invalid(
                        "invalid mount config for type \"tmpfs\": field Source must "
                        "not be specified");
                if (m.tmpfs_size < 0)
                    return invalid(
                        "invalid mount config for type \"tmpfs\": invalid tmpfs "
                        "size: SizeBytes cannot be negative");
                if (m.tmpfs_mode > 07777)
                    return invalid(fmt::format(
                        "invalid mount config for type \"tmpfs\": invalid tmpfs mode {:o}",
                        m.tmpfs_mode));
                break;
        }
    }
    return {};
}

// Every file lands where a node puts it (secret_file_path), no two on one path or one inside
// another, and a secret and a config never on the same file (the agent mounts both kinds side
// by side): what a node would reject on every try is refused here.
Result<void> validate_distinct_targets(const ContainerSpec& c) {
    std::vector<std::string> secret_paths;
    auto place = [&](std::string_view kind, std::string_view name,
                     std::string_view target) -> Result<std::string> {
        auto path = secret_file_path(target);
        if (!path)
            return invalid(fmt::format("invalid {} target '{}' of {}: {}", kind, target, name,
                                       path.error().message));
        for (const auto& other : secret_paths) {
            if (other == *path)
                return invalid(
                    fmt::format("{} reference {}: {} is already a target", kind, name, *path));
            if (at_or_under(other, *path) || at_or_under(*path, other))
                return invalid(fmt::format("{} reference {}: targets {} and {} overlap", kind, name,
                                           *path, other));
        }
        return path;
    };
    for (const auto& ref : c.secrets) {
        auto path = place("secret", ref.secret_name, ref.file_name);
        if (!path) return std::move(path).error();
        secret_paths.push_back(std::move(*path));
    }
    for (const auto& ref : c.configs) {
        auto path = config_target_path(ref.file_name);
        if (std::find(secret_paths.begin(), secret_paths.end(), path) != secret_paths.end())
            return invalid(fmt::format(
                "config reference '{}' and a secret reference have a conflicting target: '{}'",
                ref.config_name, path));
        auto placed = secret_file_path(path);
        if (!placed)
            return invalid(fmt::format("invalid config target '{}' of {}: {}", ref.file_name,
                                       ref.config_name, placed.error().message));
    }
    return {};
}

}  // namespace

std::string config_target_path(std::string_view file_name) {
    if (file_name.starts_with('/')) return std::string(file_name);
    return "/" + std::string(file_name);
}

bool valid_task_hostname(std::string_view h) noexcept {
    return !h.empty() && h.size() <= 63 && std::all_of(h.begin(), h.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.';
    });
}

bool forbidden_destination(std::string_view path) noexcept {
    return path == "/" || at_or_under(path, "/proc") || at_or_under(path, "/sys") ||
           at_or_under(path, "/dev");
}

Result<std::string> secret_file_path(std::string_view target) {
    constexpr std::string_view secrets_dir = "/run/secrets";
    constexpr std::size_t max_component = 255, max_path = 4096;
    auto refuse = [](std::string reason) { return invalid(std::move(reason)); };
    if (target.empty()) return refuse("empty name");
    if (target.find('\0') != std::string_view::npos) return refuse("NUL in name");
    if (target.size() > max_path) return refuse("too long");
    std::string path = target.front() == '/' ? "" : std::string(secrets_dir);
    bool any = false;
    for (std::string_view rest = target; !rest.empty();) {
        auto slash = rest.find('/');
        auto part = rest.substr(0, slash);
        rest = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash + 1);
        if (part.empty() || part == ".") continue;
        if (part == "..") return refuse("`..` is not allowed");
        if (part.size() > max_component) return refuse("name too long");
        path += "/";
        path += part;
        any = true;
    }
    if (!any) return refuse("empty name");
    if (at_or_under(secrets_dir, path)) return refuse(fmt::format("would cover {}", secrets_dir));
    if (forbidden_destination(path)) return refuse("not allowed in /proc, /sys or /dev");
    return path;
}

std::string_view to_string(TaskState s) noexcept {
    return task_state_names[static_cast<std::size_t>(s)];
}

std::optional<TaskState> task_state_from(std::string_view s) noexcept {
    for (std::size_t i = 0; i < task_state_names.size(); ++i)
        if (task_state_names[i] == s) return static_cast<TaskState>(i);
    return std::nullopt;
}

std::string_view to_string(UpdateState s) noexcept {
    return update_state_names[static_cast<std::size_t>(s)];
}

std::optional<UpdateState> update_state_from(std::string_view s) noexcept {
    for (std::size_t i = 0; i < update_state_names.size(); ++i)
        if (update_state_names[i] == s) return static_cast<UpdateState>(i);
    return std::nullopt;
}

std::string_view to_string(NodeRole r) noexcept {
    return r == NodeRole::manager ? "manager" : "worker";
}

std::string_view to_string(NodeAvailability a) noexcept {
    switch (a) {
        case NodeAvailability::active:
            return "active";
        case NodeAvailability::pause:
            return "pause";
        case NodeAvailability::drain:
            return "drain";
    }
    return "active";
}

std::string_view to_string(NodeState s) noexcept {
    switch (s) {
        case NodeState::unknown:
            return "unknown";
        case NodeState::down:
            return "down";
        case NodeState::ready:
            return "ready";
        case NodeState::disconnected:
            return "disconnected";
    }
    return "unknown";
}

bool is_dns_label(std::string_view s) noexcept {
    // ^[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*$ : alphanumeric ends, '-' and '_' only between.
    if (s.empty() || !alnum(s.front()) || !alnum(s.back())) return false;
    for (char c : s)
        if (!alnum(c) && c != '-' && c != '_') return false;
    return true;
}

Result<void> validate_service_name(std::string_view name) {
    if (name.empty()) return invalid("meta: name must be provided");
    if (!is_dns_label(name)) return invalid("name must be valid as a DNS name component");
    if (name.size() > 63) return invalid("name must be 63 characters or fewer");
    return {};
}

bool valid_volume_name(std::string_view name) noexcept {
    if (name.size() < 2 || name.size() > 255 || !alnum(name.front())) return false;
    for (char c : name)
        if (!alnum(c) && c != '_' && c != '.' && c != '-') return false;
    return true;
}

Result<Constraint> parse_constraint(std::string_view expr) {
    auto bad = [&] {
        return invalid(
            fmt::format("constraint expected one operator from ==, != (got '{}')", expr));
    };
    Constraint c;
    auto pos = expr.find("==");
    c.equal = pos != std::string_view::npos;
    if (!c.equal) pos = expr.find("!=");
    if (pos == std::string_view::npos) return bad();
    auto trim = [](std::string_view s) {
        while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
        while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
        return s;
    };
    c.key = std::string(trim(expr.substr(0, pos)));
    c.value = std::string(trim(expr.substr(pos + 2)));
    if (c.value.find("==") != std::string::npos || c.value.find("!=") != std::string::npos)
        return bad();
    if (c.key != "node.id" && c.key != "node.hostname" && c.key != "node.role" &&
        !(c.key.starts_with("node.labels.") && c.key.size() > 12))
        return invalid(
            fmt::format("constraint key '{}' is not supported (node.id, node.hostname, "
                        "node.role, node.labels.<key>)",
                        c.key));
    if (c.value.empty()) return invalid(fmt::format("constraint '{}' has no value", expr));
    if (c.key == "node.role" && c.value != "worker" && c.value != "manager")
        return invalid(fmt::format("constraint '{}': node.role is worker or manager", expr));
    return c;
}

// EndpointSpec and the networks, in Swarm's words where Swarm has them.
static Result<void> validate_endpoint(const ServiceSpec& spec) {
    const auto& e = spec.endpoint;
    if (!spec.networks.empty() && !spec.task.networks.empty())
        return invalid(
            "service spec: Networks and TaskTemplate.Networks cannot both be given (Networks is "
            "deprecated: use TaskTemplate.Networks)");
    if (e.mode == "dnsrr")
        for (const auto& p : e.ports)
            if (p.publish_mode == PublishMode::ingress)
                return invalid(
                    "EndpointSpec: port published with ingress mode can't be used with dnsrr "
                    "mode");
    std::set<std::pair<std::uint32_t, std::string>> seen;
    for (const auto& p : e.ports) {
        if (p.publish_mode == PublishMode::host && p.published_port == 0)
            return invalid(
                "EndpointSpec: a port published in host mode must name its published port "
                "(coffer does not pick one)");
        if (p.published_port == 0) continue;
        if (!seen.emplace(p.published_port, p.protocol).second)
            return invalid("EndpointSpec: duplicate published ports provided");
    }
    const auto& nets = spec.task.networks.empty() ? spec.networks : spec.task.networks;
    std::set<std::string> targets;
    for (const auto& n : nets)
        if (!targets.insert(n.target).second)
            return invalid(fmt::format("service spec: network {} is given twice", n.target));
    return {};
}

Result<void> validate_service_spec(const ServiceSpec& spec) {
    if (auto r = validate_service_name(spec.name); !r) return r;
    if (auto r = validate_labels(spec.labels); !r) return r;
    const auto& c = spec.task.container;
    // Live replacement renames a new file over the old one in the task's secret mount; a file
    // bind-mounted at an absolute target keeps the old file (the bind pins its inode).
    auto secret_update = secret_update_of(spec.labels);
    if (!secret_update) return std::move(secret_update).error();
    auto secret_mount = secret_mount_of(spec.labels);
    if (!secret_mount) return std::move(secret_mount).error();
    // On FUSE a file keeps its inode when replaced: a bind at an absolute target sees the change.
    if (*secret_mount != "fuse" && (secret_update->mode == SecretUpdateMode::live ||
                                    secret_update->mode == SecretUpdateMode::signal))
        for (const auto& ref : c.secrets)
            if (ref.pinned_version == 0 && ref.file_name.starts_with('/'))
                return invalid(fmt::format(
                    "label {}: secret {} is mounted at {}, outside /run/secrets: a live update "
                    "cannot replace a file bind-mounted there from a tmpfs (the mount keeps the "
                    "old file); use restart, a target under /run/secrets, or the label {}=fuse",
                    secret_update_label, ref.secret_name, ref.file_name, secret_mount_label));
    if (spec.mode == ServiceMode::replicated && spec.replicas > max_service_replicas)
        return invalid(
            fmt::format("Mode.Replicated.Replicas: {} is beyond the {} replicas a "
                        "service may have",
                        spec.replicas, max_service_replicas));
    if (spec.task.max_replicas > max_service_replicas)
        return invalid(fmt::format("Placement.MaxReplicas: {} is beyond {}", spec.task.max_replicas,
                                   max_service_replicas));
    if (c.image.empty()) return invalid("ContainerSpec: image reference must be provided");
    if (c.image.find_first_of(" \t\n") != std::string::npos)
        return invalid(fmt::format("ContainerSpec: \"{}\" is not a valid repository/tag", c.image));
    // What every node refuses is refused here: accepted, its tasks would be rejected forever.
    if (auto ref = parse_image_ref(c.image); !ref)
        return invalid(
            fmt::format("ContainerSpec: invalid reference format: {}", ref.error().message));
    if (c.stop_grace_period && *c.stop_grace_period < 0)
        return invalid("TaskSpec: stop-grace-period cannot be negative");
    if (c.stop_grace_period && *c.stop_grace_period > max_stop_grace_ns)
        return invalid("TaskSpec: stop-grace-period cannot be longer than 24h");
    const auto& l = spec.task.limits;
    if (l.memory_bytes < 0 || l.nano_cpus < 0 || l.pids < 0)
        return invalid("TaskSpec: resource limits cannot be negative");
    // A CFS quota the kernel takes (cpu.cfs_quota_us, 2^44 us a 100 ms period at most).
    if (l.nano_cpus > max_nano_cpus)
        return invalid(fmt::format("TaskSpec: a CPU limit of {} CPUs is beyond {}",
                                   l.nano_cpus / second_ns, max_nano_cpus / second_ns));
    if (l.memory_bytes != 0 && l.memory_bytes < 4 * 1024 * 1024)
        return invalid("Minimum memory limit allowed is 4MB");
    // Reservations in Swarm's words: a task that reserves less than the runtime can give is
    // refused, not silently placed anywhere.
    const auto& rv = spec.task.reservations;
    if (rv.memory_bytes < 0 || rv.nano_cpus < 0)
        return invalid("TaskSpec: resource reservations cannot be negative");
    if (rv.nano_cpus != 0 && rv.nano_cpus < 1'000'000)
        return invalid(
            fmt::format("invalid cpu value {:g}: Must be at least 0.001", rv.nano_cpus / 1e9));
    if (rv.memory_bytes != 0 && rv.memory_bytes < 4 * 1024 * 1024)
        return invalid(
            fmt::format("invalid memory value {}: Must be at least 4MiB", rv.memory_bytes));
    const auto& rp = spec.task.restart;
    if (rp.delay < 0) return invalid("TaskSpec: restart-delay cannot be negative");
    if (rp.window < 0) return invalid("TaskSpec: restart-window cannot be negative");
    for (const auto& e : c.env)
        if (e.empty() || e.front() == '=')
            return invalid(fmt::format("invalid environment variable: {}", e));
    // Swarm expands Go templates ({{.Task.Slot}}, {{.Node.Hostname}}, ...) in these fields; coffer
    // does not yet, and a template kept as text would reach the task unexpanded.
    auto templated = [](std::string_view v) { return v.find("{{") != std::string_view::npos; };
    auto no_template = [&](std::string_view field) {
        return invalid(fmt::format(
            "field {} uses a template ({{{{...}}}}): service templates are not supported by "
            "coffer",
            field));
    };
    for (const auto& e : c.env)
        if (templated(e)) return no_template("TaskTemplate.ContainerSpec.Env");
    if (templated(c.hostname)) return no_template("TaskTemplate.ContainerSpec.Hostname");
    for (const auto& m : c.mounts)
        if (templated(m.source) || templated(m.target))
            return no_template("TaskTemplate.ContainerSpec.Mounts");
    // What the runtime cannot take, said before any node rejects it.
    auto has_nul = [](const std::vector<std::string>& v) {
        return std::any_of(v.begin(), v.end(),
                           [](const std::string& e) { return e.find('\0') != std::string::npos; });
    };
    if (has_nul(c.env))
        return invalid("field TaskTemplate.ContainerSpec.Env: an entry contains NUL");
    if (has_nul(c.command) || has_nul(c.args))
        return invalid("field TaskTemplate.ContainerSpec.Command or Args: an entry contains NUL");
    if (!c.hostname.empty() && !valid_task_hostname(c.hostname))
        return invalid(fmt::format(
            "field TaskTemplate.ContainerSpec.Hostname: invalid hostname \"{}\": 1 to 63 "
            "letters, digits, '-' and '.'",
            c.hostname));
    if (!c.dir.empty() && c.dir.front() != '/')
        return invalid(fmt::format(
            "field TaskTemplate.ContainerSpec.Dir: the working directory \"{}\" must be absolute",
            c.dir));
    if (auto r = validate_file_refs(c.secrets, "secret", &SecretReference::secret_id,
                                    &SecretReference::secret_name);
        !r)
        return r;
    if (auto r = validate_file_refs(c.configs, "config", &ConfigReference::config_id,
                                    &ConfigReference::config_name);
        !r)
        return r;
    if (auto r = validate_distinct_targets(c); !r) return r;
    if (c.healthcheck)
        if (auto r = validate_healthcheck(*c.healthcheck); !r) return r;
    if (auto r = validate_task_options(c); !r) return r;
    if (auto r = validate_mounts(c.mounts); !r) return r;
    // A mount over a secret's file would hide it, or be hidden by it (the node refuses both).
    for (const auto& m : c.mounts)
        for (const auto& ref : c.secrets)
            if (auto path = secret_file_path(ref.file_name);
                path && (at_or_under(m.target, *path) || at_or_under(*path, m.target)))
                return invalid(fmt::format(
                    "invalid mount config: mount target {} and the target {} of secret {} overlap",
                    m.target, *path, ref.secret_name));
    if (auto r = validate_update_config(spec.update, "update"); !r) return r;
    if (auto r = validate_update_config(spec.rollback, "rollback"); !r) return r;
    if (auto r = validate_endpoint(spec); !r) return r;
    return {};
}

std::optional<std::int64_t> parse_go_duration(std::string_view s) noexcept {
    if (s.empty()) return std::nullopt;
    if (s == "0") return 0;
    double total = 0;
    while (!s.empty()) {
        std::size_t i = 0;
        double v = 0;
        bool digits = false;
        while (i < s.size() && s[i] >= '0' && s[i] <= '9')
            v = v * 10 + (s[i++] - '0'), digits = true;
        if (i < s.size() && s[i] == '.') {
            ++i;
            double scale = 0.1;
            while (i < s.size() && s[i] >= '0' && s[i] <= '9')
                v += (s[i++] - '0') * scale, scale /= 10, digits = true;
        }
        if (!digits) return std::nullopt;
        auto unit_end = i;
        while (unit_end < s.size() && !(s[unit_end] >= '0' && s[unit_end] <= '9') &&
               s[unit_end] != '.')
            ++unit_end;
        auto unit = s.substr(i, unit_end - i);
        double mult;
        if (unit == "ns")
            mult = 1;
        else if (unit == "us" || unit == "µs")
            mult = 1e3;
        else if (unit == "ms")
            mult = 1e6;
        else if (unit == "s")
            mult = 1e9;
        else if (unit == "m")
            mult = 60e9;
        else if (unit == "h")
            mult = 3600e9;
        else
            return std::nullopt;
        total += v * mult;
        s.remove_prefix(unit_end);
    }
    if (total > 9.2e18) return std::nullopt;
    return static_cast<std::int64_t>(std::llround(total));
}

std::string format_go_duration(std::int64_t ns) {
    if (ns == 0) return "0s";
    std::string out;
    if (ns < 0) out = "-", ns = -ns;
    if (ns < second_ns) {
        if (ns % 1'000'000 == 0) return out + fmt::format("{}ms", ns / 1'000'000);
        return out + fmt::format("{}ns", ns);
    }
    auto h = ns / (3600 * second_ns);
    auto m = ns / (60 * second_ns) % 60;
    auto rest = ns % (60 * second_ns);
    if (h) out += fmt::format("{}h", h);
    if (h || m) out += fmt::format("{}m", m);
    if (rest % second_ns == 0) {
        out += fmt::format("{}s", rest / second_ns);
    } else {
        auto frac = fmt::format("{:.9f}", static_cast<double>(rest) / 1e9);
        frac.erase(frac.find_last_not_of('0') + 1);
        out += frac + "s";
    }
    return out;
}

}  // namespace coffer::model
