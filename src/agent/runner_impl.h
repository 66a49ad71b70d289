// The runner's insides, shared by its files: runner.cpp (the task table and the public calls),
// runner_start.cpp (a task's preparation and start), runner_teardown.cpp (its end),
// runner_state.cpp (what tasks leave on disk and in the cgroup tree).
#pragma once

#include <boost/json.hpp>

#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "cgroups.h"
#include "coffer/agent/node_networks.h"
#include "coffer/agent/runner.h"
#include "coffer/agent/secret_mount.h"
#include "coffer/agent/secret_store.h"
#include "coffer/agent/task_secrets.h"
#include "coffer/agent/volumes.h"
#include "coffer/base/mount.h"
#include "coffer/base/process.h"
#include "coffer/base/unique_fd.h"
#include "health.h"
#include "monitor.h"
#include "runtime.h"
#include "seccomp_bpf.h"
#include "work_queue.h"

namespace coffer::agent {

// An expected refusal (bad spec, unknown image): the task is rejected, not failed.
struct Rejected {
    std::string reason;
};

inline std::int64_t us_since(std::chrono::steady_clock::time_point from) {
    return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() -
                                                                 from)
        .count();
}

struct Runner::Impl {
    // Everything a task holds, in the order it is acquired; released in reverse by the destructor.
    struct Resources {
        OwnedDir bundle;  // <run>/tasks/<id>: config.json, rootfs/, secrets/, pid, runtime.log
        OwnedDir layer;   // <data>/tasks/<id>: upper/, work/ of the overlay
        std::vector<VolumeUse> volumes;  // the named volumes it mounts (anonymous ones: in layer)
        Mount rootfs;
        TaskSecretMount secrets;
        // Its namespace and interfaces: detached once its container and cgroup are gone.
        std::unique_ptr<TaskNetwork> network;
        CgroupDir cgroup;
        Container container;
        Child
            init;  // the container's first process, ours (a subreaper's) until the monitor reaps it
    };

    struct Task {
        TaskStatus status;
        SecretLease secrets;  // the task's secrets in Impl::secrets, until they are wiped
        // Held while its secret files are replaced or wiped; secrets_gone once wiped.
        std::mutex secrets_mu;
        bool secrets_gone = false;
        std::unique_ptr<Resources> res;
        UniqueFd signal_fd;         // a pidfd for signals, valid while running
        int stop_signal = SIGTERM;  // what stop() sends first (TaskSpec::stop_signal)
        bool output_closed = false;
        bool stop_requested = false;
        bool done = false;
        // Its health check's probes, while it runs with one; stopped by its teardown.
        std::unique_ptr<HealthMonitor> health;
        bool unhealthy = false;  // killed for it: fails with "unhealthy container"
    };

    RunnerOptions opt;
    ImageStore& images;
    // Before everything that may hold a task (and its lease): destroyed after them.
    SecretStore secrets;
    UniqueFd lock_fd;
    std::unique_ptr<VolumeStore> volumes;             // <data>/volumes; outlives every task
    std::unique_ptr<SecretBackends> secret_backends;  // outlives every task's secret mount
    std::unique_ptr<Cgroups> cgroups;
    std::unique_ptr<OciRuntime> runtime;
    boost::json::value seccomp;
    bool has_seccomp = false;
    SeccompPrograms seccomp_programs;  // crun: each distinct filter compiled once

    mutable std::mutex mu;  // tasks, finished, and each task's status and flags
    mutable std::condition_variable cv;
    std::map<std::string, std::shared_ptr<Task>, std::less<>> tasks;
    std::deque<TaskStatus> finished;

    Monitor monitor;
    WorkQueue work;

    Impl(RunnerOptions o, ImageStore& i)
        : opt(std::move(o)), images(i), work(std::max(1u, opt.teardown_threads)) {}

    std::string cgroup_parent;  // Runner::cgroup_parent(run_dir)
    std::string tasks_dir() const { return opt.run_dir + "/tasks"; }
    std::string layers_dir() const { return opt.data_dir + "/tasks"; }
    std::string logs_dir() const { return opt.data_dir + "/logs"; }
    std::string volumes_dir() const { return opt.data_dir + "/volumes"; }

    // The task table (runner.cpp).
    void publish(const TaskStatus& s);
    void set_state(Task& t, TaskState s);
    // Records the final status, forgets the task, wakes waiters; publishes the status unless
    // that was done already.
    void finish(const std::shared_ptr<Task>& t, TaskStatus final_status, bool publish_it = true);

    // A task's start (runner_start.cpp).
    TaskStatus start(const TaskSpec& spec, SecretBytes supplied);
    void prepare_and_start(Task& t, const TaskSpec& spec, const std::shared_ptr<Task>& self);

    // A change of a task's health (runner_start.cpp), on its health monitor's thread: healthy
    // makes a starting task running; unhealthy kills it.
    void on_health(Task& t, Health h, const ProbeResult& last);

    // A task's end (runner_teardown.cpp).
    void on_exit(const std::shared_ptr<Task>& t, int wait_status);
    void teardown(const std::shared_ptr<Task>& t, int wait_status);
};

}  // namespace coffer::agent
