// The agent's hands: runs tasks as OCI containers through runc or crun, gives each its secrets
// on a tmpfs of its own or on the agent's FUSE filesystem, and leaves nothing behind when the
// task ends, whatever the reason.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "coffer/agent/image_store.h"
#include "coffer/agent/secret_store.h"
#include "coffer/agent/task.h"
#include "coffer/agent/volumes.h"
#include "coffer/base/error.h"

namespace coffer::agent {

class NodeNetworks;

// The host id of root in a task's user namespace, unless the agent is told another.
inline constexpr std::uint32_t default_userns_base = 100000;

struct RunnerOptions {
    std::string run_dir = "/run/coffer-agent";       // bundles, secret mounts, runtime state
    std::string data_dir = "/var/lib/coffer-agent";  // writable layers, task logs
    std::string runtime;                             // "runc", "crun"; "": what works here
    // "builtin" or "": coffer's own profile, Docker's default rules (no file needed);
    // "unconfined": no seccomp filter; anything else: the path of a profile in Docker's format
    // (containers-common's /usr/share/containers/seccomp.json, say).
    std::string seccomp_profile = "builtin";
    // crun: each distinct seccomp filter is compiled once here and handed over compiled (false:
    // crun compiles it at every container start; the filter is the same).
    bool compile_seccomp = true;
    std::uint64_t log_max_bytes = 1 << 20;  // per task, across the log and its one rotation
    std::uint32_t userns_base = default_userns_base;  // host id of root in a task's userns
    std::uint32_t userns_size = 65536;
    unsigned teardown_threads = 2;
    // What serves the secret files of a task that does not ask (TaskSpec::secret_mount):
    // automatic is tmpfs where the kernel takes noswap, FUSE otherwise (tried at construction).
    SecretBackend secret_mount = SecretBackend::automatic;
    // The node's networks, which a task with TaskSpec::networks is attached to; borrowed: it
    // outlives the runner. Null: such a task is rejected.
    NodeNetworks* networks = nullptr;
    std::string cni_path = "/usr/lib/cni";  // for the interfaces a crashed runner left
    // An image the store does not have is pulled from its registry (false: the task is
    // rejected).
    bool pull_images = true;
    PullOptions pull;
    // Every state change, from the runner's threads. Must not block for long nor call back into
    // the runner's stop().
    std::function<void(const TaskStatus&)> on_status;
};

// What recover_leftovers() found and removed.
struct Leftovers {
    int containers = 0;
    int mounts = 0;
    int task_dirs = 0;
    int cgroups = 0;
    int interfaces = 0;  // task interfaces detached (CNI DEL from their cached results)
};

class Runner {
  public:
    // Takes the run directory's lock (one runner per run directory; a crashed runner's lock is
    // free again), picks the runtime, and makes this process a child subreaper so that container
    // processes are reaped here. The process should already be in its private mount namespace
    // (enter_private_mount_namespace()). images is borrowed for the runner's lifetime.
    Runner(RunnerOptions options, ImageStore& images);
    // Kills every task still running and tears it down.
    ~Runner();
    Runner(const Runner&) = delete;
    Runner& operator=(const Runner&) = delete;

    // Prepares and starts the task; returns when its process runs (state running; starting for
    // a task with a health check, until its first healthy probe) or when it could not (rejected:
    // invalid spec, unknown image or secret; failed: with the step and reason). Bytes for the
    // task's secrets come from secrets() when it holds them (for another task, or under a lease of
    // the caller's), else from secrets, which go there; the task leases them until they are wiped
    // from its mount. Thread-safe.
    TaskStatus start(const TaskSpec& spec, SecretBytes secrets);

    // The task's stop signal (SIGTERM unless its spec names another), then SIGKILL once grace
    // passed; returns the final status once torn down.
    Result<TaskStatus> stop(std::string_view id, std::chrono::milliseconds grace);

    // Replaces a running task's secret files in place with those of refs (its targets, other
    // secret versions; see SecretMount::replace), then sends signal (0: none) to its main process
    // once. lease: on refs' ids in secrets(); it replaces the task's lease (the old versions'
    // bytes are wiped once nothing else leases them). not_found for a task that does not run.
    Result<void> update_secrets(std::string_view id, const std::vector<SecretRef>& refs,
                                SecretLease lease, int signal);

    // Current or (recently) final status.
    std::optional<TaskStatus> status(std::string_view id) const;
    // Waits until the task is final and torn down. nullopt: unknown id or timeout.
    std::optional<TaskStatus> wait(std::string_view id, std::chrono::milliseconds timeout) const;

    // Cleans what a previous runner on this run directory left: containers, mounts, bundles,
    // writable layers, cgroups. Call once at start, before any start().
    Leftovers recover_leftovers();

    // Where this runner keeps secret bytes, each secret once: the tasks' secrets, and whatever
    // else is leased there (the executor's assigned set). Outlives every task.
    SecretStore& secrets() noexcept;
    // The node's named volumes (<data>/volumes), with the tasks that mount them. Outlives every
    // task.
    VolumeStore& volumes() noexcept;
    // How many distinct secrets are held in memory (secrets().size()).
    std::size_t secrets_held() const;
    std::size_t tasks_running() const;
    std::string_view runtime_name() const noexcept;
    std::string_view cgroup_mode() const noexcept;
    std::string log_path(std::string_view id) const;

    // Whether a task under run_dir uses the image with that manifest digest (also from another
    // process, for `image rm`).
    static bool image_in_use(const std::string& run_dir, std::string_view digest);

    // The cgroup (relative to each hierarchy's root) under which the runner on run_dir puts its
    // tasks, one child per task: "/coffer/" and 12 hex digits of a hash of the run directory's
    // absolute path, so that agents on one host (tests, benchmarks) never touch each other's.
    static std::string cgroup_parent(const std::string& run_dir);

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace coffer::agent
