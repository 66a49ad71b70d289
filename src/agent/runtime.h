// The OCI runtime CLI (runc, crun) driven as containerd drives it: create, start, state, kill,
// delete. Chosen once at start; the differences between runtimes stay in here.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cgroups.h"
#include "coffer/base/error.h"
#include "coffer/base/process.h"

namespace coffer::agent {

// What a command run in a container left.
struct ExecResult {
    int exit_code = -1;  // its exit status; 128 + signal when killed; -1 after a timeout
    bool timed_out = false;
    std::string output;  // stdout and stderr together, the first max_output bytes
};

class OciRuntime {
  public:
    virtual ~OciRuntime() = default;
    virtual const std::string& name() const noexcept = 0;
    // Creates and starts the container in one runtime invocation (`run --detach`: one runtime
    // start-up instead of two for create and start). The container's stdio are
    // stdout_fd/stderr_fd (inherited through the runtime); the runtime's own diagnostics go to
    // log_file; its init's pid to pid_file. On success the init is this process's child (this
    // process is a subreaper), claimed for the caller, who collects its exit status: crun starts
    // it from a process of its own that may still be exiting when crun does; run waits for that
    // and reaps what crun left.
    virtual Result<ChildClaim> run(const std::string& id, const std::string& bundle,
                                   const std::string& pid_file, const std::string& log_file,
                                   int stdout_fd, int stderr_fd) = 0;
    // "creating", "created", "running", "stopped"; not_found when unknown.
    virtual Result<std::string> state(const std::string& id) = 0;
    virtual Result<void> kill(const std::string& id, int sig, bool all) = 0;
    virtual Result<void> remove(const std::string& id, bool force) = 0;  // `delete`
    // Removes the runtime's record of a container whose init has exited and was reaped, and
    // whose cgroup the caller removed, without starting the runtime. For such a container, with
    // no hooks in its config (the runner writes none), the record is all that `delete` would
    // remove. Fails if the record is not the runtime's plain state directory.
    virtual Result<void> forget_stopped(const std::string& id) = 0;
    virtual std::vector<std::string> list() = 0;
    // Runs argv in the running container as its configured process runs (user, environment,
    // capabilities, working directory), stdin /dev/null, `exec` without a terminal. At timeout
    // the command (its pid from pid_file) is killed and the result says so. Blocks for up to
    // the timeout and a little more: never on an I/O thread or the monitor. When cancel_fd
    // (-1: none) becomes readable, the command and the runtime are killed at once and the
    // result is an error: the caller no longer wants it (the container is ending).
    virtual Result<ExecResult> exec(const std::string& id, const std::vector<std::string>& argv,
                                    const std::string& pid_file, std::chrono::nanoseconds timeout,
                                    std::size_t max_output, int cancel_fd = -1) = 0;
};

// runc or crun with its state under state_root. preferred "" picks crun when it is installed (it
// starts a container in about half runc's time), else runc. crun refuses a hybrid host (v1
// hierarchies and a cgroup2 mount); there it runs in a mount namespace of its own without the
// cgroup2 mount, so it sees, and manages, the v1 hierarchies alone.
Result<std::unique_ptr<OciRuntime>> make_runtime(std::string_view preferred,
                                                 const std::string& state_root,
                                                 const Cgroups& cgroups);

// A created container: deleted (forcibly) on destruction.
class Container {
  public:
    Container() = default;
    Container(OciRuntime& rt, std::string id) : rt_(&rt), id_(std::move(id)) {}
    Container(Container&& o) noexcept : rt_(o.rt_), id_(std::exchange(o.id_, {})) {}
    Container& operator=(Container&& o) noexcept {
        if (this != &o) {
            reset();
            rt_ = o.rt_;
            id_ = std::exchange(o.id_, {});
        }
        return *this;
    }
    ~Container() { reset(); }
    // Deletes it through the runtime (forcibly).
    void reset() noexcept;
    // For a container whose init was reaped and whose cgroup is gone: forgets it without
    // starting the runtime (OciRuntime::forget_stopped), else as reset().
    void reset_stopped() noexcept;

  private:
    OciRuntime* rt_ = nullptr;  // borrowed: the runner's, outlives every task
    std::string id_;
};

}  // namespace coffer::agent
