// A task's secret files from the node's store, the same steps wherever a task "runs": in a
// container (the Runner) or nowhere (NoopDriver, the benchmark mode): mounted at its start,
// replaced in place when a secret gets a new version, wiped and unmounted at its end; on a tmpfs
// of their own or on the agent's FUSE filesystem, laid out alike (secret_layout) so that the
// container sees the same files at the same paths either way.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "coffer/agent/secret_mount.h"
#include "coffer/agent/secret_store.h"
#include "coffer/agent/task.h"
#include "coffer/base/error.h"
#include "coffer/fuse_mount/fuse_mount.h"

namespace coffer::agent {

// The backends a node offers: the FUSE server, made at the first FUSE mount (it runs threads)
// and kept for the node's life. Thread-safe.
class SecretBackends {
  public:
    // fallback: what SecretBackend::automatic means (tmpfs or fuse). The FUSE server mounts the
    // fuse control filesystem on /sys/fs/fuse/connections when nothing is mounted there: the
    // process should be in its private mount namespace.
    explicit SecretBackends(SecretBackend fallback);
    ~SecretBackends();

    // The backend that serves a task that asks for requested.
    SecretBackend resolve(SecretBackend requested) const noexcept {
        return requested == SecretBackend::automatic ? fallback_ : requested;
    }
    // The FUSE server, started if it was not. Throws SystemError (no /dev/fuse, say).
    fuse_mount::FuseServer& fuse();
    // Removes the FUSE mounts a crashed agent left at or below root (remove_leftover_fuse_mounts);
    // starts the server only when there are any.
    std::size_t remove_leftovers(std::string_view root);

  private:
    SecretBackend fallback_;
    std::mutex mu_;
    std::unique_ptr<fuse_mount::FuseServer> fuse_;
};

// What requested means on this node: automatic is tmpfs where the kernel takes noswap (tried on
// a scratch directory at scratch, made and removed here; one a crash left there goes first),
// FUSE otherwise; tmpfs and fuse stay as they are.
SecretBackend resolve_secret_backend(SecretBackend requested, const std::string& scratch);

// A task's mounted secret files, on either backend.
class TaskSecretMount {
  public:
    TaskSecretMount() = default;
    TaskSecretMount(TaskSecretMount&&) noexcept = default;
    TaskSecretMount& operator=(TaskSecretMount&&) noexcept = default;

    SecretBackend backend() const noexcept { return backend_; }
    const std::vector<SecretBind>& binds() const noexcept { return binds_; }
    // See SecretMount::replace and FuseMount::replace: on FUSE a file at an absolute target
    // changes as well (its inode stays).
    void replace(const std::vector<SecretFile>& files, const SecretBytes& bytes);
    // What the task read of each secret so far (FUSE); empty on tmpfs.
    std::vector<SecretReads> reads() const;
    // Wipes the bytes and unmounts. Throws SystemError; what stays mounted is unmounted when this
    // is destroyed.
    void wipe_and_unmount();

  private:
    friend TaskSecretMount mount_task_secrets(const std::string&, const TaskSpec&,
                                              const std::vector<SecretFile>&, const SecretStore&,
                                              std::uint32_t, SecretBackends&);
    SecretBackend backend_ = SecretBackend::tmpfs;
    std::vector<SecretBind> binds_;
    std::vector<std::string> paths_;  // each file's container path
    std::vector<std::string> rel_;    // FUSE: each file's path in the mount
    SecretMount tmpfs_;
    fuse_mount::FuseMount fuse_;
};

// Mounts files (the task's planned references) on dir, an existing empty directory, with their
// bytes from store, which must hold each file's secret, on the backend backends resolve the
// task's secret_mount to. A task in a user namespace gets owners shifted by userns_base (the host
// id of its root). Throws as SecretMount::create and FuseMount::create.
TaskSecretMount mount_task_secrets(const std::string& dir, const TaskSpec& spec,
                                   const std::vector<SecretFile>& files, const SecretStore& store,
                                   std::uint32_t userns_base, SecretBackends& backends);

// The files of a task's new references, planned as at its start, once lease is seen to hold
// each of their secrets (invalid_argument otherwise).
Result<std::vector<SecretFile>> plan_secret_update(const std::vector<SecretRef>& refs,
                                                   const SecretLease& lease);

// Replaces the files of a task's mount with files, their bytes from store. The error names the
// task.
Result<void> replace_task_secrets(std::string_view task_id, TaskSecretMount& mount,
                                  const std::vector<SecretFile>& files, const SecretStore& store);

// Wipes and unmounts the task's files; a failure is logged (the mount is then unmounted without
// the wipe when it is destroyed).
void unmount_task_secrets(std::string_view task_id, TaskSecretMount& mount) noexcept;

}  // namespace coffer::agent
