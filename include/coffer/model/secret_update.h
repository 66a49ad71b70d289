// What a service's running tasks get when a secret they follow (a reference without a pin) gets
// a new current version: the service label coffer.secret-update (a label, so that the docker
// CLI, which sends a service's spec back without fields it does not know, keeps it).
#pragma once

#include <string>
#include <string_view>

#include "coffer/base/error.h"
#include "coffer/model/secret.h"

namespace coffer::model {

inline constexpr std::string_view secret_update_label = "coffer.secret-update";

enum class SecretUpdateMode {
    restart,  // the tasks are replaced under the service's update config, as for a spec change
    live,     // the agent replaces the files in the running tasks' secret mounts
    signal,   // live, then a signal to each task's main process
    none,     // running tasks keep what they have; new tasks get the current version
};

struct SecretUpdate {
    SecretUpdateMode mode = SecretUpdateMode::restart;
    std::string signal;  // signal: as given after "signal:" ("SIGHUP", "HUP", "1")
};

// The label's value (absent: restart): "restart", "live", "signal:<SIG>" or "none"; anything
// else is refused naming the label.
Result<SecretUpdate> secret_update_of(const Labels& labels);

// What serves a service's tasks' secret files on their nodes: the service label
// coffer.secret-mount, "tmpfs" or "fuse" (the node's agent's FUSE filesystem); absent or "auto":
// the node's default (coffer-agent --secret-mount).
inline constexpr std::string_view secret_mount_label = "coffer.secret-mount";

// The label's value as a task carries it: "" (the node's default), "tmpfs" or "fuse"; anything
// else is refused naming the label.
Result<std::string> secret_mount_of(const Labels& labels);

}  // namespace coffer::model
