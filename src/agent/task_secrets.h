// A task's secret files from the node's store, the same steps wherever a task "runs": in a
// container (the Runner) or nowhere (NoopDriver, the benchmark mode): mounted at its start,
// replaced in place when a secret gets a new version, wiped and unmounted at its end.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "coffer/agent/secret_mount.h"
#include "coffer/agent/secret_store.h"
#include "coffer/agent/task.h"
#include "coffer/base/error.h"

namespace coffer::agent {

// Mounts files (the task's planned references) on dir, an existing empty directory, with their
// bytes from store, which must hold each file's secret. A task in a user namespace gets owners
// shifted by userns_base (the host id of its root). Throws as SecretMount::create.
SecretMount mount_task_secrets(const std::string& dir, const TaskSpec& spec,
                               const std::vector<SecretFile>& files, const SecretStore& store,
                               std::uint32_t userns_base);

// The files of a task's new references, planned as at its start, once lease is seen to hold
// each of their secrets (invalid_argument otherwise).
Result<std::vector<SecretFile>> plan_secret_update(const std::vector<SecretRef>& refs,
                                                   const SecretLease& lease);

// Replaces the files of a task's mount with files (SecretMount::replace: only those under
// /run/secrets may change), their bytes from store. The error names the task.
Result<void> replace_task_secrets(std::string_view task_id, SecretMount& mount,
                                  const std::vector<SecretFile>& files, const SecretStore& store);

// Wipes and unmounts the task's files; a failure is logged (the mount is then unmounted without
// the wipe when it is destroyed).
void unmount_task_secrets(std::string_view task_id, SecretMount& mount) noexcept;

}  // namespace coffer::agent
