// The two ways the executor runs a task: as a container through the Runner, or not at all (a
// benchmark mode that measures the manager and the session, not containers).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>

#include "coffer/agent/executor.h"
#include "coffer/agent/runner.h"

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
    // The runner's volumes.
    VolumeStore* volumes() override;

  private:
    std::shared_mutex sink_mu_;
    StatusSink sink_;
    std::unique_ptr<Runner> runner_;
};

// Runs nothing: a task is running as soon as it starts and shut down when stopped. Its lease on
// its secrets is kept while it "runs" and dropped when it stops, as the Runner would. Keeps no
// logs.
class NoopDriver final : public TaskDriver {
  public:
    void set_status_sink(StatusSink sink) override;
    SecretStore& secrets() override;
    TaskStatus start(const TaskSpec& spec, SecretLease secrets) override;
    Result<TaskStatus> stop(std::string_view id, std::chrono::milliseconds grace) override;
    // Keeps the new lease instead of the old one (there are no files to replace).
    Result<void> update_secrets(std::string_view id, const std::vector<SecretRef>& refs,
                                SecretLease secrets, int signal) override;
    std::string log_path(std::string_view id) const override;

    std::size_t tasks_running() const;
    // Secrets whose bytes are in memory.
    std::size_t secrets_held() const;

  private:
    void publish(const TaskStatus& s);

    SecretStore store_;  // before the leases on it
    mutable std::mutex mu_;
    StatusSink sink_;
    std::map<std::string, SecretLease, std::less<>> running_;
};

}  // namespace coffer::agent
