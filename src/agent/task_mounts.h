// A task's mounts (TaskSpec::mounts) as OCI mount entries: tmpfs, host binds and volumes. The
// runtime makes them in the container's mount namespace, so they end with it; the agent owns
// what backs them (a volume's use, an anonymous volume's directory).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "coffer/agent/task.h"
#include "coffer/base/error.h"

namespace coffer::agent {

// One entry of config.json's "mounts".
struct OciMount {
    std::string destination;  // resolved in the rootfs
    std::string type;
    std::string source;
    std::vector<std::string> options;
    bool operator==(const OciMount&) const = default;
};

// The entry for a mount whose source is known (a tmpfs's is ignored) and whose destination is
// resolved. tmpfs: noexec, nosuid, nodev, mode (1777 when unset), size when set, ro. bind and
// volume: rbind (bind when non_recursive), rprivate, ro; a volume also nosuid, nodev.
OciMount oci_mount_for(const TaskMount& m, std::string source, std::string destination);

// Checks the task's mount list before anything is made: absolute targets, not in /proc, /sys or
// /dev, no two targets equal or nested, none equal to or nested with a secret target
// (secret_targets, absolute). invalid_argument naming the mount.
Result<void> check_task_mounts(const std::vector<TaskMount>& mounts,
                               const std::vector<std::string>& secret_targets);

// A bind's host source, resolved (symlinks followed on the host: the path is the operator's),
// refused when missing (in Docker's words) or when it is, contains or lies inside one of the
// agent's own directories (agent_dirs: its run and data directories, whose secrets and task
// layers no task may see). invalid_argument.
Result<std::string> resolve_bind_source(const std::string& source,
                                        const std::vector<std::string>& agent_dirs);

}  // namespace coffer::agent
