#include "coffer/agent/task_drivers.h"

#include <filesystem>

#include "coffer/agent/assignments.h"
#include "coffer/agent/task_secrets.h"
#include "coffer/base/log.h"

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

std::vector<SecretReads> RunnerDriver::secret_reads(std::string_view id) const {
    auto s = runner_->status(id);
    return s ? std::move(s->secret_reads) : std::vector<SecretReads>{};
}

VolumeStore* RunnerDriver::volumes() {
    return &runner_->volumes();
}

// ---- NoopDriver -------------------------------------------------------------------------------

NoopDriver::NoopDriver(NoopDriverOptions options) : options_(std::move(options)) {
    const auto& root = options_.files_root;
    if (root.empty()) return;
    std::error_code ec;
    std::filesystem::create_directories(root, ec);
    if (ec) throw SystemError(ec.value(), fmt::format("create {}", root));
    // A driver whose agent was killed left its tasks' directories; their mounts ended with its
    // mount namespace. A restarted task gets its directory again.
    for (const auto& name : list_dir(root)) {
        auto path = fmt::format("{}/{}", root, name);
        try {
            remove_tree(path);
            log::info("runner", "removed leftover {}", path);
        } catch (const std::exception& e) {
            log::warn("runner", "leftover {}: {}", path, e.what());
        }
    }
    backends_ = std::make_unique<SecretBackends>(
        resolve_secret_backend(options_.secret_mount, root + "/.noswap-probe"));
}

NoopDriver::~NoopDriver() {
    std::lock_guard l(mu_);
    for (auto& [id, task] : running_) unmount_task_secrets(id, task.files);
}

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
    auto end_as = [&](TaskState state, std::string why) {
        s.state = state;
        s.reason = std::move(why);
        publish(s);
        return s;
    };
    if (!valid_task_id(spec.id)) return end_as(TaskState::rejected, "invalid task id");
    if (running_.contains(spec.id))
        return end_as(TaskState::rejected, fmt::format("task {} already exists", spec.id));
    auto files = plan_secret_files(spec.secrets);
    if (!files) return end_as(TaskState::rejected, files.error().message);
    for (const auto& ref : spec.secrets)
        if (!secrets.holds(ref.secret_id))
            return end_as(TaskState::rejected,
                          fmt::format("no bytes for secret {}", ref.secret_id));
    s.state = TaskState::preparing;
    publish(s);
    Task task;
    task.lease = std::move(secrets);
    if (!options_.files_root.empty()) {
        // On failure, what was made goes with task.
        try {
            task.dir = OwnedDir(fmt::format("{}/{}", options_.files_root, spec.id));
            task.files = mount_task_secrets(task.dir.path(), spec, *files, store_,
                                            options_.userns_base, *backends_);
        } catch (const std::exception& e) {
            return end_as(TaskState::failed, fmt::format("mount secrets: {}", e.what()));
        }
    }
    running_.emplace(spec.id, std::move(task));
    for (auto state : {TaskState::starting, TaskState::running}) {
        s.state = state;
        publish(s);
    }
    return s;
}

Result<TaskStatus> NoopDriver::stop(std::string_view id, std::chrono::milliseconds) {
    std::lock_guard l(mu_);
    auto it = running_.find(id);
    if (it == running_.end()) return make_error(Errc::not_found, fmt::format("no task {}", id));
    TaskStatus s;
    s.secret_reads = it->second.files.reads();
    unmount_task_secrets(id, it->second.files);
    // Its directory, then its lease: the bytes are wiped once nothing else leases them.
    running_.erase(it);
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
    auto files = plan_secret_update(refs, secrets);
    if (!files) return std::move(files).error();
    if (!options_.files_root.empty())
        if (auto replaced = replace_task_secrets(id, it->second.files, *files, store_); !replaced)
            return replaced;
    it->second.lease = std::move(secrets);  // the old versions' lease goes
    return {};
}

std::string NoopDriver::log_path(std::string_view) const {
    return {};
}

std::vector<SecretReads> NoopDriver::secret_reads(std::string_view id) const {
    std::lock_guard l(mu_);
    auto it = running_.find(id);
    return it == running_.end() ? std::vector<SecretReads>{} : it->second.files.reads();
}

std::size_t NoopDriver::tasks_running() const {
    std::lock_guard l(mu_);
    return running_.size();
}

std::size_t NoopDriver::secrets_held() const {
    return store_.size();
}

}  // namespace coffer::agent
