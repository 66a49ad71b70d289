// Process-wide hardening and child processes owned through a pidfd.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "coffer/base/unique_fd.h"

namespace coffer {

// No core dumps, not ptrace-attachable by other users: PR_SET_DUMPABLE 0, RLIMIT_CORE 0.
void harden_process();

// Raises the soft limit on open descriptors to the hard limit (a server holds one per
// connection; the usual soft limit is 1,024). Returns the limit now in force.
std::uint64_t raise_descriptor_limit();

// This process's children, whichever of its threads they belong to (the one that created them,
// or the one they were re-parented to), from /proc/self/task/*/children.
std::vector<int> child_pids();

// A process's state letter ('R', 'S', 'Z', ...) and parent, from /proc/<pid>/stat (a zombie's
// too); nullopt once it is gone.
struct ProcessStat {
    char state = 0;
    int parent = 0;
};
std::optional<ProcessStat> process_stat(int pid);

// A process this process waits for by its pid, itself: reap_orphans() leaves it alone while the
// claim lives. Claim a child before it can become one (a process that will be re-parented here).
class ChildClaim {
  public:
    ChildClaim() = default;
    explicit ChildClaim(int pid);
    ChildClaim(ChildClaim&& o) noexcept : pid_(std::exchange(o.pid_, -1)) {}
    ChildClaim& operator=(ChildClaim&& o) noexcept;
    ChildClaim(const ChildClaim&) = delete;
    ChildClaim& operator=(const ChildClaim&) = delete;
    ~ChildClaim() { reset(); }
    int pid() const noexcept { return pid_; }
    void reset() noexcept;

  private:
    int pid_ = -1;
};

// Reaps every child of this process that has exited and that no ChildClaim (a Child holds one)
// claims: the processes a subreaper inherits that nobody waits for, such as what an OCI runtime
// leaves of itself when it starts a container in the background. With settle, waits up to that
// long for unclaimed children that still run to end, and reaps them too. Returns how many.
int reap_orphans(std::chrono::milliseconds settle = std::chrono::milliseconds(0));

// A child process; it gets stdio and no other descriptor. Destroying a Child that has not been
// waited for kills it (SIGKILL) and reaps it.
class Child {
  public:
    struct Options {
        std::vector<std::string> argv;
        std::string program;           // the file to execute; empty: argv[0], looked up in PATH
        std::vector<std::string> env;  // empty: inherit
        int stdin_fd = -1;             // -1: /dev/null
        int stdout_fd = -1;            // -1: inherit
        int stderr_fd = -1;            // -1: inherit
        bool new_process_group = false;
        // Non-empty: the child runs in a mount namespace of its own, a copy of ours that keeps
        // receiving our mounts and unmounts and sends none back, with these mount points
        // detached. What it mounts stays in that namespace.
        std::vector<std::string> hidden_mounts;
    };

    static Child spawn(const Options& options);
    // Takes a process that is a child of this process already without having been spawned here
    // (one re-parented to this subreaper, such as a container's first process): owned from now
    // on as a spawned one is, kept claimed by claim. Throws SystemError when its pidfd cannot be
    // opened; the claim is then released.
    static Child adopt(ChildClaim claim);

    Child() = default;
    Child(Child&& other) noexcept;
    Child& operator=(Child&& other) noexcept;
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;
    ~Child();

    int pid() const noexcept { return pid_; }
    bool running() const noexcept { return pid_ > 0; }

    // Sends a signal to the child (no-op once reaped).
    void signal(int sig);
    // Waits for exit; returns the wait status. nullopt on timeout.
    std::optional<int> wait_for(std::chrono::milliseconds timeout);
    int wait();
    // The pidfd, readable once the child exited.
    int pidfd() const noexcept { return pidfd_.get(); }
    // Hands the wait over with the pidfd (to an epoll loop that reaps with waitid(P_PIDFD), say):
    // from then on this Child neither signals, kills nor reaps the process, but keeps it claimed
    // until it is destroyed, so that reap_orphans leaves its exit status to the new waiter.
    [[nodiscard]] UniqueFd release_pidfd() noexcept;

  private:
    void kill_and_reap() noexcept;
    void forget() noexcept;  // once reaped: no pid, pidfd or claim
    int pid_ = -1;
    UniqueFd pidfd_;
    ChildClaim claim_;
};

// Holds back Child::spawn in every thread while it lives, and waits for spawns under way. A
// spawned child holds a copy of this process's descriptors until it executes its program, so a
// file open for writing here for that instant keeps its mount busy: a read-only remount or an
// unmount fails with EBUSY. Hold one while writing files on a mount that will be remounted
// read-only or unmounted; close those files before it ends.
class SpawnFence {
  public:
    SpawnFence();

  private:
    std::unique_lock<std::shared_mutex> lock_;
};

// What a finished command left: its wait status and what it wrote (each stream capped at 1 MiB).
struct CommandResult {
    int status = 0;
    std::string out;
    std::string err;
    bool ok() const noexcept;      // exited with 0
    std::string describe() const;  // "exit 1: <last line of stderr>"
};

// Runs argv to completion with stdin from /dev/null, capturing stdout and stderr.
// Throws SystemError when it cannot be started.
CommandResult run_command(const std::vector<std::string>& argv);
// The same, executing `program` (a path) with argv as its arguments.
CommandResult run_command(const std::vector<std::string>& argv, const std::string& program);
// The same for a child described by o (argv, program, hidden_mounts, and stdin_fd when set, a
// descriptor the caller owns); its stdout and stderr are replaced.
CommandResult run_command(Child::Options o);

// A program copied into sealed memory (a memfd that can no longer be written, grown, shrunk or
// re-sealed), executed through path(). What runs is what was copied, whatever later happens to
// the file, and no process, a container's included, can change it. OCI runtimes check for
// exactly this at start (the defence against CVE-2019-5736): run from here, they skip copying
// and re-executing themselves for every container.
class SealedProgram {
  public:
    // Throws SystemError when the file cannot be read or the memory cannot be sealed.
    explicit SealedProgram(const std::string& file);
    // /proc/<this process>/fd/<n>: valid in children too, which keep none of our descriptors.
    const std::string& path() const noexcept { return path_; }

  private:
    UniqueFd fd_;
    std::string path_;
};

}  // namespace coffer
