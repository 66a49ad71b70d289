// The OCI runtime config (config.json) for a task: namespaces, limits, capabilities, seccomp,
// masked paths, the task's process, and the secret binds.
#pragma once

#include <boost/json/value.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "coffer/agent/image_store.h"
#include "coffer/agent/in_root.h"
#include "coffer/agent/task.h"
#include "coffer/base/error.h"
#include "json_util.h"
#include "seccomp_bpf.h"
#include "task_mounts.h"
#include "task_user.h"

namespace coffer::agent {

struct BindMount {
    std::string source;       // agent side
    std::string destination;  // container side, already resolved in the rootfs
    bool executable = false;  // mounted without noexec (the init binary)
};

// Where the node's init binary (tini) appears in a task run with TaskSpec::init.
inline constexpr std::string_view task_init_path = "/dev/init";

struct ConfigInput {
    const TaskSpec* spec = nullptr;
    const ImageConfig* image = nullptr;
    std::vector<BindMount> binds;
    std::vector<OciMount> task_mounts;  // the task's tmpfs, binds and volumes, before the secrets
    std::string cgroups_path;
    bool limit_swap = false;
    const boost::json::value* seccomp_profile = nullptr;  // containers-common format; null: none
    // Non-null (crun): the filter also goes in compiled, as the run.oci.seccomp_bpf_data
    // annotation, so that crun does not compile it at every start.
    SeccompPrograms* seccomp_programs = nullptr;
    std::uint32_t userns_base = 0;  // host id of the container's root when spec->user_namespace
    std::uint32_t userns_size = 0;
    // The process's identity as resolved in the image (resolve_user); null: spec->user (or the
    // image's), numeric only.
    const ProcessUser* user = nullptr;
    // The task's network namespace (the agent's, with its interfaces; its net.* sysctls are set
    // there already); empty: a new one with loopback only. host_network: the node's.
    std::string netns;
    bool host_network = false;
};

// A path of the task's rootfs that the runtime mounts on or creates in, and what it must be.
struct RuntimePath {
    std::string_view path;
    Leaf leaf;
};

// Every path of the rootfs the runtime is given besides the secret binds: the mount points of
// the filesystems every task gets (/proc, /dev and what the runtime creates in it, /dev/pts,
// /dev/shm, /dev/mqueue, /sys, /sys/fs/cgroup) and the files container engines bind
// (/etc/hosts, /etc/hostname, /etc/resolv.conf). The image must not have turned any of them
// into a link (see check_runtime_path_in_root).
std::vector<RuntimePath> runtime_rootfs_paths();

// The process's identity from "uid[:gid]" (numeric; gid defaults to 0).
Result<std::pair<std::uint32_t, std::uint32_t>> parse_user(std::string_view user);

// Docker's default capability set with cap_add and cap_drop applied ("ALL" allowed in both;
// names with or without CAP_). invalid_argument for an unknown capability.
Result<std::vector<std::string>> task_capabilities(const std::vector<std::string>& add,
                                                   const std::vector<std::string>& drop);

// The OCI linux.seccomp object for this machine's architecture from a profile in the
// containers-common (Docker) format, keeping the rules that apply to the given capabilities.
boost::json::value seccomp_for(const boost::json::value& profile,
                               const std::vector<std::string>& caps);

// config.json text. invalid_argument for a bad user, capability, limit, ulimit or sysctl. With
// spec->init, the process runs behind task_init_path, which a bind in binds must provide.
Result<std::string> make_oci_config(const ConfigInput& in);

}  // namespace coffer::agent
