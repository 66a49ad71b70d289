// The two ways the executor runs a task: as a container through the Runner, or not at all (a
// benchmark mode that measures the manager, the session and the secret files, not containers).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>

#include "coffer/agent/executor.h"
#include "coffer/agent/runner.h"
#include "coffer/agent/task_secrets.h"
#include "coffer/base/mount.h"

namespace coffer::agent {

// Owns a Runner whose status callback feeds the executor.
class RunnerDriver final : public TaskDriver {
  public:
    // As Runner's constructor (options.on_status is replaced); images is borrowed.
    RunnerDriver(RunnerOptions options, ImageStore& images);
    ~RunnerDriver() override;

    Runner& runner() noexcept { return *runner_; }

    void set_status_sink(StatusSink sink) override;
    // The runner's store.
    SecretStore& secrets() override;
    // The runner takes its own lease on the task's secrets; secrets keeps them held until then.
    TaskStatus start(const TaskSpec& spec, SecretLease secrets) override;
    Result<TaskStatus> stop(std::string_view id, std::chrono::milliseconds grace) override;
    Result<void> update_secrets(std::string_view id, const std::vector<SecretRef>& refs,
                                SecretLease secrets, int signal) override;
    std::string log_path(std::string_view id) const override;
    std::vector<SecretReads> secret_reads(std::string_view id) const override;
    // The runner's volumes.
    VolumeStore* volumes() override;

  private:
    std::shared_mutex sink_mu_;
    StatusSink sink_;
    std::unique_ptr<Runner> runner_;
};

struct NoopDriverOptions {
    // Where each task's secret files are written as its container would get them: a mount of
    // its own at <files_root>/<task id> (a tmpfs or FUSE, as secret_mount and the task say),
    // files with their owners and modes, read-only (laid out by secret_layout). Made if missing;
    // what a driver before left there is removed, so one driver per files_root. The process should
    // be in its private mount namespace. Empty: no files, the leases only.
    std::string files_root;
    std::uint32_t userns_base = default_userns_base;        // as RunnerOptions::userns_base
    SecretBackend secret_mount = SecretBackend::automatic;  // as RunnerOptions::secret_mount
};

// Runs nothing: a task is running as soon as it starts and shut down when stopped. Its secrets
// are written (see NoopDriverOptions) and leased while it "runs", replaced in place on a new
// version, wiped, unmounted and dropped when it stops, as the Runner does. Keeps no logs.
class NoopDriver final : public TaskDriver {
  public:
    explicit NoopDriver(NoopDriverOptions options = {});
    // Wipes and unmounts the files of every task still "running".
    ~NoopDriver() override;
    NoopDriver(const NoopDriver&) = delete;
    NoopDriver& operator=(const NoopDriver&) = delete;

    void set_status_sink(StatusSink sink) override;
    SecretStore& secrets() override;
    TaskStatus start(const TaskSpec& spec, SecretLease secrets) override;
    Result<TaskStatus> stop(std::string_view id, std::chrono::milliseconds grace) override;
    // Replaces the task's files as the Runner does (without files: keeps the new lease only).
    Result<void> update_secrets(std::string_view id, const std::vector<SecretRef>& refs,
                                SecretLease secrets, int signal) override;
    std::string log_path(std::string_view id) const override;
    std::vector<SecretReads> secret_reads(std::string_view id) const override;

    std::size_t tasks_running() const;
    // Secrets whose bytes are in memory.
    std::size_t secrets_held() const;

  private:
    // What a task holds; released in reverse order if not ended before.
    struct Task {
        SecretLease lease;
        OwnedDir dir;           // <files_root>/<id>
        TaskSecretMount files;  // on dir
    };

    void publish(const TaskStatus& s);

    const NoopDriverOptions options_;
    std::unique_ptr<SecretBackends> backends_;  // with files_root; outlives every task's files
    SecretStore store_;                         // before the leases on it
    mutable std::mutex mu_;
    StatusSink sink_;
    std::map<std::string, Task, std::less<>> running_;
};

}  // namespace coffer::agent
