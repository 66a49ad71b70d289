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
    TaskStatus start(const TaskSpec& spec, SecretBytes secrets) override;
    Result<TaskStatus> stop(std::string_view id, std::chrono::milliseconds grace) override;
    std::string log_path(std::string_view id) const override;

  private:
    std::shared_mutex sink_mu_;
    StatusSink sink_;
    std::unique_ptr<Runner> runner_;
};

// Runs nothing: a task is running as soon as it starts and shut down when stopped. Its secret
// bytes are held (in secure memory) while it "runs" and dropped when it stops, as the Runner
// would. Keeps no logs.
class NoopDriver final : public TaskDriver {
  public:
    void set_status_sink(StatusSink sink) override;
    TaskStatus start(const TaskSpec& spec, SecretBytes secrets) override;
    Result<TaskStatus> stop(std::string_view id, std::chrono::milliseconds grace) override;
    std::string log_path(std::string_view id) const override;

    std::size_t tasks_running() const;
    std::size_t secrets_held() const;

  private:
    void publish(const TaskStatus& s);

    mutable std::mutex mu_;
    StatusSink sink_;
    std::map<std::string, SecretBytes, std::less<>> running_;
};

}  // namespace coffer::agent
