// A task's end, in two halves on the runner's work queue: first what ends the task for the
// manager (no process left, secrets wiped and unmounted, final status published), then the
// cleanup of what is left on disk (runtime record, rootfs, directories).
#include <sys/wait.h>

#include "agent_metrics.h"
#include "coffer/agent/task_secrets.h"
#include "coffer/base/log.h"
#include "runner_impl.h"

namespace coffer::agent {

void Runner::Impl::on_exit(const std::shared_ptr<Task>& t, int wait_status) {
    work.post([this, t, wait_status] { teardown(t, wait_status); });
}

void Runner::Impl::teardown(const std::shared_ptr<Task>& t, int wait_status) {
    Resources& res = *t->res;
    auto t0 = std::chrono::steady_clock::now();
    // No probe after this: one under way ends with the container's processes.
    if (t->health) t->health->stop();
    bool oom = false;
    try {
        oom = cgroups->oom_killed(res.cgroup.rel());
    } catch (const std::exception&) {
    }
    {
        // The output pipe ends once every process of the container is gone: drain it first.
        std::unique_lock l(mu);
        cv.wait_for(l, std::chrono::seconds(2), [&] { return t->output_closed; });
    }
    res.cgroup.reset();  // kills what is left, if anything
    std::vector<SecretReads> reads;
    {
        std::lock_guard secrets_lock(t->secrets_mu);  // not while its files are replaced
        t->secrets_gone = true;
        reads = res.secrets.reads();
        unmount_task_secrets(t->status.id, res.secrets);
        t->secrets.reset();  // the last lease on a secret wipes its bytes
    }

    TaskStatus s;
    {
        std::lock_guard g(mu);
        s = t->status;
        s.pid = 0;
        if (WIFEXITED(wait_status))
            s.exit_code = WEXITSTATUS(wait_status);
        else if (WIFSIGNALED(wait_status))
            s.exit_code = 128 + WTERMSIG(wait_status);
        s.oom_killed = oom;
        s.secret_reads = std::move(reads);
        if (t->stop_requested) {
            s.state = TaskState::shutdown;
            s.reason = "stopped";
        } else if (t->unhealthy) {
            s.state = TaskState::failed;
            s.reason = "unhealthy container";
        } else if (oom) {
            s.state = TaskState::failed;
            s.reason = "killed by the OOM killer at its memory limit";
        } else if (WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0) {
            s.state = TaskState::complete;
            s.reason = "finished";
        } else if (WIFEXITED(wait_status)) {
            s.state = TaskState::failed;
            s.reason = fmt::format("exit code {}", WEXITSTATUS(wait_status));
        } else {
            s.state = TaskState::failed;
            s.reason = fmt::format("killed by signal {}", WTERMSIG(wait_status));
        }
        t->status = s;
        t->signal_fd.reset();
    }
    task_teardown_duration().observe_since(t0);
    log::debug("runner", "task {}: processes and secrets gone in {} us", s.id, us_since(t0));
    // Nothing of the task runs and its secrets are gone: that is its end for the manager, which
    // may now start its replacement. The runtime's record, the rootfs and the directories are
    // removed in a job of their own, queued behind the teardowns already waiting (which are on
    // the way to such a start); stop() and wait() return once they are gone. A crash in between
    // leaves what recover_leftovers() removes.
    publish(s);
    work.post([this, t, s] {
        auto t1 = std::chrono::steady_clock::now();
        t->res->container.reset_stopped();  // its init is reaped, its cgroup gone
        t->res.reset();                     // rootfs, directories
        log::debug("runner", "task {}: runtime state, rootfs and directories removed in {} us",
                   s.id, us_since(t1));
        finish(t, s, false);
    });
}

}  // namespace coffer::agent
