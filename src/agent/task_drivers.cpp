#include "coffer/agent/task_drivers.h"

#include "coffer/agent/assignments.h"

namespace coffer::agent {

// ---- RunnerDriver -----------------------------------------------------------------------------

RunnerDriver::RunnerDriver(RunnerOptions options, ImageStore& images) {
    options.on_status = [this](const TaskStatus& s) {
        std::shared_lock l(sink_mu_);
        if (sink_) sink_(s);
    };
    runner_ = std::make_unique<Runner>(std::move(options), images);
}

// The runner goes first: it kills what still runs, and its last statuses may still reach the sink.
RunnerDriver::~RunnerDriver() {
    runner_.reset();
}

void RunnerDriver::set_status_sink(StatusSink sink) {
    std::unique_lock l(sink_mu_);
    sink_ = std::move(sink);
}

SecretStore& RunnerDriver::secrets() {
    return runner_->secrets();
}

TaskStatus RunnerDriver::start(const TaskSpec& spec, SecretLease secrets) {
    (void)secrets;  // held for the call: the runner's store has every byte the task needs
    return runner_->start(spec, SecretBytes{});
}

Result<TaskStatus> RunnerDriver::stop(std::string_view id, std::chrono::milliseconds grace) {
    return runner_->stop(id, grace);
}

Result<void> RunnerDriver::update_secrets(std::string_view id, const std::vector<SecretRef>& refs,
                                          SecretLease secrets, int signal) {
    return runner_->update_secrets(id, refs, std::move(secrets), signal);
}

std::string RunnerDriver::log_path(std::string_view id) const {
    return runner_->log_path(id);
}

VolumeStore* RunnerDriver::volumes() {
    return &runner_->volumes();
}

// ---- NoopDriver -------------------------------------------------------------------------------

void NoopDriver::set_status_sink(StatusSink sink) {
    std::lock_guard l(mu_);
    sink_ = std::move(sink);
}

// Called with mu_ held, so that a detached sink is never called afterwards.
void NoopDriver::publish(const TaskStatus& s) {
    if (sink_) sink_(s);
}

SecretStore& NoopDriver::secrets() {
    return store_;
}

TaskStatus NoopDriver::start(const TaskSpec& spec, SecretLease secrets) {
    std::lock_guard l(mu_);
    TaskStatus s;
    s.id = spec.id;
    auto reject = [&](std::string why) {
        s.state = TaskState::rejected;
        s.reason = std::move(why);
        publish(s);
        return s;
    };
    if (!valid_task_id(spec.id)) return reject("invalid task id");
    if (running_.contains(spec.id)) return reject(fmt::format("task {} already exists", spec.id));
    for (const auto& ref : spec.secrets)
        if (!secrets.holds(ref.secret_id))
            return reject(fmt::format("no bytes for secret {}", ref.secret_id));
    running_.emplace(spec.id, std::move(secrets));
    for (auto state : {TaskState::preparing, TaskState::starting, TaskState::running}) {
        s.state = state;
        publish(s);
    }
    return s;
}

Result<TaskStatus> NoopDriver::stop(std::string_view id, std::chrono::milliseconds) {
    std::lock_guard l(mu_);
    auto it = running_.find(id);
    if (it == running_.end()) return make_error(Errc::not_found, fmt::format("no task {}", id));
    running_.erase(it);  // its lease: the bytes are wiped once nothing else leases them
    TaskStatus s;
    s.id = std::string(id);
    s.state = TaskState::shutdown;
    s.reason = "stopped";
    publish(s);
    return s;
}

Result<void> NoopDriver::update_secrets(std::string_view id, const std::vector<SecretRef>& refs,
                                        SecretLease secrets, int) {
    std::lock_guard l(mu_);
    auto it = running_.find(id);
    if (it == running_.end()) return make_error(Errc::not_found, fmt::format("no task {}", id));
    for (const auto& ref : refs)
        if (!secrets.holds(ref.secret_id))
            return make_error(Errc::invalid_argument,
                              fmt::format("no bytes for secret {}", ref.secret_id));
    it->second = std::move(secrets);
    return {};
}

std::string NoopDriver::log_path(std::string_view) const {
    return {};
}

std::size_t NoopDriver::tasks_running() const {
    std::lock_guard l(mu_);
    return running_.size();
}

std::size_t NoopDriver::secrets_held() const {
    return store_.size();
}

}  // namespace coffer::agent
