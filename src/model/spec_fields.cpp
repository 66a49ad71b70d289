#include "coffer/model/spec_fields.h"

#include <boost/json.hpp>

#include <algorithm>
#include <array>

namespace coffer::model {
namespace json = boost::json;
namespace {

constexpr auto acted = FieldUse::acted;
constexpr auto refused = FieldUse::refused;
constexpr auto warned = FieldUse::warned;

constexpr std::string_view no_driver_opts =
    "coffer's networks take no driver options per attachment";
constexpr std::string_view deprecated_networks =
    "deprecated, as in Swarm: used as TaskTemplate.Networks (giving both is refused)";
constexpr std::string_view no_selinux = "coffer does not apply SELinux labels";
constexpr std::string_view no_credspec = "credential specs are for Windows tasks";
constexpr std::string_view no_jobs = "job services are not supported";

// clang-format off
constexpr std::array fields = {
    SpecField{"Name", acted},
    SpecField{"Labels", acted,
              "the label coffer.secret-update (restart, live, signal:SIG, none) says what running "
              "tasks get when a secret they follow is rotated; coffer.secret-mount (tmpfs, fuse, "
              "auto) what serves their secret files"},

    SpecField{"TaskTemplate.ContainerSpec.Image", acted,
              "from the node's image store, pulled from its registry when missing"},
    SpecField{"TaskTemplate.ContainerSpec.Labels", warned,
              "container labels are kept in the task's spec only"},
    SpecField{"TaskTemplate.ContainerSpec.Command", acted},
    SpecField{"TaskTemplate.ContainerSpec.Args", acted},
    SpecField{"TaskTemplate.ContainerSpec.Hostname", acted},
    SpecField{"TaskTemplate.ContainerSpec.Env", acted},
    SpecField{"TaskTemplate.ContainerSpec.Dir", acted},
    SpecField{"TaskTemplate.ContainerSpec.User", acted, "names are resolved in the image's /etc/passwd and /etc/group"},
    SpecField{"TaskTemplate.ContainerSpec.Groups", acted},
    SpecField{"TaskTemplate.ContainerSpec.Privileges.CredentialSpec.Config", refused, no_credspec},
    SpecField{"TaskTemplate.ContainerSpec.Privileges.CredentialSpec.File", refused, no_credspec},
    SpecField{"TaskTemplate.ContainerSpec.Privileges.CredentialSpec.Registry", refused,
              no_credspec},
    SpecField{"TaskTemplate.ContainerSpec.Privileges.SELinuxContext.Disable", refused, no_selinux},
    SpecField{"TaskTemplate.ContainerSpec.Privileges.SELinuxContext.User", refused, no_selinux},
    SpecField{"TaskTemplate.ContainerSpec.Privileges.SELinuxContext.Role", refused, no_selinux},
    SpecField{"TaskTemplate.ContainerSpec.Privileges.SELinuxContext.Type", refused, no_selinux},
    SpecField{"TaskTemplate.ContainerSpec.Privileges.SELinuxContext.Level", refused, no_selinux},
    SpecField{"TaskTemplate.ContainerSpec.Privileges.Seccomp.Mode", refused,
              "every task runs under coffer's default seccomp profile", "\"default\""},
    SpecField{"TaskTemplate.ContainerSpec.Privileges.Seccomp.Profile", refused,
              "every task runs under coffer's default seccomp profile"},
    SpecField{"TaskTemplate.ContainerSpec.Privileges.AppArmor.Mode", refused,
              "coffer does not apply AppArmor profiles", "\"default\""},
    SpecField{"TaskTemplate.ContainerSpec.Privileges.NoNewPrivileges", refused,
              "every task runs with no_new_privs, asked or not; false, which the docker CLI "
              "sends when the flag is not given, is accepted and does not lift it",
              "true"},
    SpecField{"TaskTemplate.ContainerSpec.Init", acted, "Debian's tini (tini-static) as pid 1"},
    SpecField{"TaskTemplate.ContainerSpec.StopSignal", acted},
    SpecField{"TaskTemplate.ContainerSpec.TTY", refused,
              "tasks have no terminal: their output goes to the task log"},
    SpecField{"TaskTemplate.ContainerSpec.OpenStdin", refused,
              "tasks have no standard input (it is /dev/null)"},
    SpecField{"TaskTemplate.ContainerSpec.ReadOnly", acted},
    SpecField{"TaskTemplate.ContainerSpec.Mounts[].Type", acted, "bind, volume and tmpfs; other types are refused"},
    SpecField{"TaskTemplate.ContainerSpec.Mounts[].Source", acted, "a bind's host path may not be in the agent's own directories"},
    SpecField{"TaskTemplate.ContainerSpec.Mounts[].Target", acted},
    SpecField{"TaskTemplate.ContainerSpec.Mounts[].ReadOnly", acted},
    SpecField{"TaskTemplate.ContainerSpec.Mounts[].Consistency", refused, "consistency modes are for Docker Desktop's file sharing", "\"default\""},
    SpecField{"TaskTemplate.ContainerSpec.Mounts[].BindOptions.Propagation", refused, "binds are private to the task (rprivate)", "\"rprivate\""},
    SpecField{"TaskTemplate.ContainerSpec.Mounts[].BindOptions.NonRecursive", acted},
    SpecField{"TaskTemplate.ContainerSpec.Mounts[].BindOptions.CreateMountpoint", refused, "a bind's source must exist and read-only applies to its top mount"},
    SpecField{"TaskTemplate.ContainerSpec.Mounts[].BindOptions.ReadOnlyNonRecursive", refused, "a bind's source must exist and read-only applies to its top mount"},
    SpecField{"TaskTemplate.ContainerSpec.Mounts[].BindOptions.ReadOnlyForceRecursive", refused, "a bind's source must exist and read-only applies to its top mount"},
    SpecField{"TaskTemplate.ContainerSpec.Mounts[].VolumeOptions.NoCopy", acted},
    SpecField{"TaskTemplate.ContainerSpec.Mounts[].VolumeOptions.Labels", acted},
    SpecField{"TaskTemplate.ContainerSpec.Mounts[].VolumeOptions.Subpath", refused, "a volume is mounted whole"},
    SpecField{"TaskTemplate.ContainerSpec.Mounts[].VolumeOptions.DriverConfig.Name", refused, "volumes use the local driver only", "\"local\""},
    SpecField{"TaskTemplate.ContainerSpec.Mounts[].VolumeOptions.DriverConfig.Options", refused, "volumes use the local driver only"},
    SpecField{"TaskTemplate.ContainerSpec.Mounts[].ImageOptions.Subpath", refused, "image mounts are not supported"},
    SpecField{"TaskTemplate.ContainerSpec.Mounts[].TmpfsOptions.SizeBytes", acted},
    SpecField{"TaskTemplate.ContainerSpec.Mounts[].TmpfsOptions.Mode", acted},
    SpecField{"TaskTemplate.ContainerSpec.Mounts[].TmpfsOptions.Options", refused, "tmpfs mounts are noexec, nosuid and nodev; other options are not supported"},
    SpecField{"TaskTemplate.ContainerSpec.Mounts[].ClusterOptions", refused,
              "cluster volumes are not supported"},
    SpecField{"TaskTemplate.ContainerSpec.StopGracePeriod", acted},
    SpecField{"TaskTemplate.ContainerSpec.Healthcheck.Test", acted},
    SpecField{"TaskTemplate.ContainerSpec.Healthcheck.Interval", acted},
    SpecField{"TaskTemplate.ContainerSpec.Healthcheck.Timeout", acted},
    SpecField{"TaskTemplate.ContainerSpec.Healthcheck.Retries", acted},
    SpecField{"TaskTemplate.ContainerSpec.Healthcheck.StartPeriod", acted},
    SpecField{"TaskTemplate.ContainerSpec.Healthcheck.StartInterval", acted},
    SpecField{"TaskTemplate.ContainerSpec.Hosts", acted},
    SpecField{"TaskTemplate.ContainerSpec.DNSConfig.Nameservers", acted},
    SpecField{"TaskTemplate.ContainerSpec.DNSConfig.Search", acted},
    SpecField{"TaskTemplate.ContainerSpec.DNSConfig.Options", acted},
    SpecField{"TaskTemplate.ContainerSpec.Secrets[].SecretID", acted},
    SpecField{"TaskTemplate.ContainerSpec.Secrets[].SecretName", acted,
              "NAME@N pins version N of the secret; a plain name follows the current version"},
    SpecField{"TaskTemplate.ContainerSpec.Secrets[].File.Name", acted},
    SpecField{"TaskTemplate.ContainerSpec.Secrets[].File.UID", acted},
    SpecField{"TaskTemplate.ContainerSpec.Secrets[].File.GID", acted},
    SpecField{"TaskTemplate.ContainerSpec.Secrets[].File.Mode", acted},
    SpecField{"TaskTemplate.ContainerSpec.Configs[].ConfigID", acted},
    SpecField{"TaskTemplate.ContainerSpec.Configs[].ConfigName", acted},
    SpecField{"TaskTemplate.ContainerSpec.Configs[].File.Name", acted},
    SpecField{"TaskTemplate.ContainerSpec.Configs[].File.UID", acted},
    SpecField{"TaskTemplate.ContainerSpec.Configs[].File.GID", acted},
    SpecField{"TaskTemplate.ContainerSpec.Configs[].File.Mode", acted},
    SpecField{"TaskTemplate.ContainerSpec.Configs[].Runtime", refused,
              "a runtime target (a credential spec) is for Windows tasks"},
    SpecField{"TaskTemplate.ContainerSpec.Isolation", refused,
              "Linux tasks have one isolation: namespaces and cgroups", "\"default\""},
    SpecField{"TaskTemplate.ContainerSpec.Sysctls", acted, "namespaced sysctls only (net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*); others are refused"},
    SpecField{"TaskTemplate.ContainerSpec.CapabilityAdd", acted},
    SpecField{"TaskTemplate.ContainerSpec.CapabilityDrop", acted},
    SpecField{"TaskTemplate.ContainerSpec.Ulimits[].Name", acted},
    SpecField{"TaskTemplate.ContainerSpec.Ulimits[].Soft", acted},
    SpecField{"TaskTemplate.ContainerSpec.Ulimits[].Hard", acted},
    SpecField{"TaskTemplate.ContainerSpec.OomScoreAdj", acted},
    SpecField{"TaskTemplate.PluginSpec", refused, "only container services are supported"},
    SpecField{"TaskTemplate.NetworkAttachmentSpec", refused,
              "only container services are supported"},

    SpecField{"TaskTemplate.Resources.Limits.NanoCPUs", acted},
    SpecField{"TaskTemplate.Resources.Limits.MemoryBytes", acted},
    SpecField{"TaskTemplate.Resources.Limits.Pids", acted},
    SpecField{"TaskTemplate.Resources.Reservations.NanoCPUs", acted},
    SpecField{"TaskTemplate.Resources.Reservations.MemoryBytes", acted},
    SpecField{"TaskTemplate.Resources.Reservations.GenericResources[].NamedResourceSpec.Kind",
              refused, "a task reserves discrete generic resources only, as in Swarm"},
    SpecField{"TaskTemplate.Resources.Reservations.GenericResources[].NamedResourceSpec.Value",
              refused, "a task reserves discrete generic resources only, as in Swarm"},
    SpecField{"TaskTemplate.Resources.Reservations.GenericResources[].DiscreteResourceSpec.Kind",
              acted},
    SpecField{"TaskTemplate.Resources.Reservations.GenericResources[].DiscreteResourceSpec.Value",
              acted},
    SpecField{"TaskTemplate.Resources.SwapBytes", refused,
              "tasks never swap: their memory limit covers memory and swap together"},
    SpecField{"TaskTemplate.Resources.MemorySwappiness", refused,
              "tasks never swap: their memory limit covers memory and swap together"},

    SpecField{"TaskTemplate.RestartPolicy.Condition", acted},
    SpecField{"TaskTemplate.RestartPolicy.Delay", acted},
    SpecField{"TaskTemplate.RestartPolicy.MaxAttempts", acted},
    SpecField{"TaskTemplate.RestartPolicy.Window", acted},

    SpecField{"TaskTemplate.Placement.Constraints", acted},
    SpecField{"TaskTemplate.Placement.Preferences[].Spread.SpreadDescriptor", acted},
    SpecField{"TaskTemplate.Placement.MaxReplicas", acted},
    SpecField{"TaskTemplate.Placement.Platforms[].Architecture", acted},
    SpecField{"TaskTemplate.Placement.Platforms[].OS", acted},

    SpecField{"TaskTemplate.Networks[].Target", acted,
              "a name, ID or ID prefix, stored as the network's ID; host alone is the node's network"},
    SpecField{"TaskTemplate.Networks[].Aliases", acted},
    SpecField{"TaskTemplate.Networks[].DriverOpts", refused, no_driver_opts},
    SpecField{"TaskTemplate.LogDriver.Name", warned,
              "coffer keeps task logs itself (docker service logs); the log driver is not used"},
    SpecField{"TaskTemplate.LogDriver.Options", warned,
              "coffer keeps task logs itself (docker service logs); the log driver is not used"},
    SpecField{"TaskTemplate.ForceUpdate", acted},
    SpecField{"TaskTemplate.Runtime", refused, "only container services are supported",
              "\"container\""},

    SpecField{"Mode.Replicated.Replicas", acted},
    SpecField{"Mode.Global", acted},
    SpecField{"Mode.ReplicatedJob.MaxConcurrent", refused, no_jobs},
    SpecField{"Mode.ReplicatedJob.TotalCompletions", refused, no_jobs},
    SpecField{"Mode.GlobalJob", refused, no_jobs},

    SpecField{"UpdateConfig.Parallelism", acted},
    SpecField{"UpdateConfig.Delay", acted},
    SpecField{"UpdateConfig.FailureAction", acted},
    SpecField{"UpdateConfig.Monitor", acted},
    SpecField{"UpdateConfig.MaxFailureRatio", acted},
    SpecField{"UpdateConfig.Order", acted},
    SpecField{"RollbackConfig.Parallelism", acted},
    SpecField{"RollbackConfig.Delay", acted},
    SpecField{"RollbackConfig.FailureAction", acted},
    SpecField{"RollbackConfig.Monitor", acted},
    SpecField{"RollbackConfig.MaxFailureRatio", acted},
    SpecField{"RollbackConfig.Order", acted},

    SpecField{"Networks[].Target", acted, deprecated_networks},
    SpecField{"Networks[].Aliases", acted, deprecated_networks},
    SpecField{"Networks[].DriverOpts", refused, no_driver_opts},

    SpecField{"EndpointSpec.Mode", acted},
    SpecField{"EndpointSpec.Ports[].Name", acted},
    SpecField{"EndpointSpec.Ports[].Protocol", acted, "tcp or udp; sctp is refused"},
    SpecField{"EndpointSpec.Ports[].TargetPort", acted},
    SpecField{"EndpointSpec.Ports[].PublishedPort", acted,
              "0 in ingress mode takes a free port of 30000-32767; host mode must name one"},
    SpecField{"EndpointSpec.Ports[].PublishMode", acted},
};
// clang-format on

// A value that asks for nothing. An empty object is not one: "Global": {} asks for a mode.
bool empty_value(const json::value& v) {
    switch (v.kind()) {
        case json::kind::null:
            return true;
        case json::kind::bool_:
            return !v.get_bool();
        case json::kind::int64:
            return v.get_int64() == 0;
        case json::kind::uint64:
            return v.get_uint64() == 0;
        case json::kind::double_:
            return v.get_double() == 0;
        case json::kind::string:
            return v.get_string().empty();
        case json::kind::array:
            return v.get_array().empty();
        case json::kind::object:
            return false;
    }
    return false;
}

// coffer's own fields, beside Docker's (a Docker client never sends them).
// clang-format off
constexpr std::array coffer_fields = {
    SpecField{"TaskTemplate.ContainerSpec.CofferRegistryAuth.SecretID", acted,
              "the secret (a docker config.json) the image is pulled with"},
    SpecField{"TaskTemplate.ContainerSpec.CofferRegistryAuth.SecretName", acted},
};
// clang-format on

// Some field's path continues below this one: its value is walked, not judged whole.
bool has_children(std::string_view path) {
    auto below = [&](const SpecField& f) {
        return f.path.size() > path.size() && f.path.starts_with(path) &&
               (f.path[path.size()] == '.' || f.path[path.size()] == '[');
    };
    return std::any_of(fields.begin(), fields.end(), below) ||
           std::any_of(coffer_fields.begin(), coffer_fields.end(), below);
}

Error invalid(std::string message) {
    return make_error(Errc::invalid_argument, std::move(message));
}

class Walker {
  public:
    Result<void> walk(const json::value& v, const std::string& path) {
        if (!path.empty() && !has_children(path)) return leaf(v, path);
        if (v.is_null()) return {};
        if (v.is_array()) {
            if (!has_children(path + "[]"))
                return invalid(fmt::format("field {} must be an object", path));
            for (const auto& item : v.get_array())
                if (auto r = walk(item, path + "[]"); !r) return r;
            return {};
        }
        if (!v.is_object()) {
            if (path.empty()) return invalid("service spec must be an object");
            if (has_children(path + "[]"))
                return invalid(fmt::format("field {} must be an array", path));
            return invalid(fmt::format("field {} must be an object", path));
        }
        for (const auto& [key, member] : v.get_object()) {
            auto child = path.empty() ? std::string(key) : fmt::format("{}.{}", path, key);
            if (auto r = walk(member, child); !r) return r;
        }
        return {};
    }

    std::vector<std::string> warnings;

  private:
    Result<void> leaf(const json::value& v, const std::string& path) {
        const auto* f = find_spec_field(path);
        if (empty_value(v)) return {};
        if (f == nullptr)
            return invalid(fmt::format(
                "field {} is not known to coffer: it is refused rather than ignored", path));
        if (f->use == FieldUse::acted) return {};
        if (!f->inert.empty() && json::serialize(v) == f->inert) return {};
        if (f->use == FieldUse::refused)
            return invalid(fmt::format("field {} is not supported by coffer: {}", path, f->note));
        auto warning = fmt::format("{}: {}", path, f->note);
        if (std::find(warnings.begin(), warnings.end(), warning) == warnings.end())
            warnings.push_back(std::move(warning));
        return {};
    }
};

}  // namespace

std::span<const SpecField> service_spec_fields() noexcept {
    return fields;
}

const SpecField* find_spec_field(std::string_view path) noexcept {
    for (const auto& f : fields)
        if (f.path == path) return &f;
    for (const auto& f : coffer_fields)
        if (f.path == path) return &f;
    return nullptr;
}

std::span<const SpecField> coffer_spec_fields() noexcept {
    return coffer_fields;
}

Result<std::vector<std::string>> check_service_spec_fields(const json::value& spec) {
    Walker w;
    if (auto r = w.walk(spec, ""); !r) return std::move(r).error();
    return std::move(w.warnings);
}

}  // namespace coffer::model
