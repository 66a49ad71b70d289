// The runner's task table and its public face: setup (lock, subreaper, runtime, seccomp profile),
// start, stop, status and wait. A task's start, its end and what tasks leave on disk have files
// of their own (runner_impl.h).
#include "coffer/agent/runner.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "coffer/agent/task_secrets.h"
#include "coffer/base/log.h"
#include "json_util.h"
#include "runner_impl.h"
#include "seccomp_profile.h"

namespace coffer::agent {

std::string_view to_string(TaskState s) noexcept {
    switch (s) {
        case TaskState::new_:
            return "new";
        case TaskState::preparing:
            return "preparing";
        case TaskState::starting:
            return "starting";
        case TaskState::running:
            return "running";
        case TaskState::complete:
            return "complete";
        case TaskState::failed:
            return "failed";
        case TaskState::shutdown:
            return "shutdown";
        case TaskState::rejected:
            return "rejected";
    }
    return "?";
}

namespace {

constexpr std::size_t finished_kept = 1024;
constexpr auto teardown_deadline = std::chrono::seconds(10);

}  // namespace

void Runner::Impl::publish(const TaskStatus& s) {
    log::debug("runner", "task {}: {}{}{}", s.id, to_string(s.state), s.reason.empty() ? "" : ": ",
               s.reason);
    if (opt.on_status) {
        try {
            opt.on_status(s);
        } catch (const std::exception& e) {
            log::warn("runner", "status callback: {}", e.what());
        }
    }
}

void Runner::Impl::set_state(Task& t, TaskState s) {
    TaskStatus copy;
    {
        std::lock_guard g(mu);
        t.status.state = s;
        copy = t.status;
    }
    publish(copy);
}

void Runner::Impl::finish(const std::shared_ptr<Task>& t, TaskStatus final_status,
                          bool publish_it) {
    {
        std::lock_guard g(mu);
        t->status = final_status;
        t->done = true;
        if (auto it = tasks.find(final_status.id); it != tasks.end() && it->second == t)
            tasks.erase(it);
        finished.push_back(final_status);
        if (finished.size() > finished_kept) finished.pop_front();
    }
    cv.notify_all();
    if (final_status.state == TaskState::failed || final_status.state == TaskState::rejected)
        log::info("runner", "task {} {}: {}", final_status.id, to_string(final_status.state),
                  final_status.reason);
    if (publish_it) publish(final_status);
}

Runner::Runner(RunnerOptions options, ImageStore& images)
    : impl_(std::make_unique<Impl>(std::move(options), images)) {
    auto& o = impl_->opt;
    // Absolute from here on: paths go into config.json, which the runtime reads from the bundle.
    for (auto* d : {&o.run_dir, &o.data_dir})
        *d = std::filesystem::absolute(*d).lexically_normal().string();
    for (auto* d : {&o.run_dir, &o.data_dir}) {
        std::error_code ec;
        std::filesystem::create_directories(*d, ec);
        if (ec) throw SystemError(ec.value(), fmt::format("create {}", *d));
    }
    make_dir(impl_->tasks_dir(), 0700);
    make_dir(impl_->layers_dir(), 0700);
    make_dir(impl_->logs_dir(), 0700);
    make_dir(o.run_dir + "/runtime", 0700);
    impl_->volumes = std::make_unique<VolumeStore>(impl_->volumes_dir());
    impl_->cgroup_parent = cgroup_parent(o.run_dir);

    // Close-on-exec: a container must never hold the lock of a crashed agent.
    impl_->lock_fd.reset(
        ::open((o.run_dir + "/agent.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!impl_->lock_fd) throw_errno("open agent lock");
    if (::flock(impl_->lock_fd.get(), LOCK_EX | LOCK_NB) != 0)
        throw ErrorException(
            make_error(Errc::conflict, fmt::format("another agent runs on {}", o.run_dir)));
    impl_->secret_backends = std::make_unique<SecretBackends>(
        resolve_secret_backend(o.secret_mount, o.run_dir + "/noswap-probe"));

    if (::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0)
        throw_errno("prctl(PR_SET_CHILD_SUBREAPER)");
    impl_->cgroups = Cgroups::detect();
    auto rt = make_runtime(o.runtime, o.run_dir + "/runtime", *impl_->cgroups);
    if (!rt) throw ErrorException(std::move(rt).error());
    impl_->runtime = std::move(*rt);
    bool builtin = o.seccomp_profile.empty() || o.seccomp_profile == "builtin";
    if (builtin) {
        // Docker's default rules, coffer's own copy: no file of another package decides them.
        impl_->seccomp = default_seccomp_profile();
        impl_->has_seccomp = true;
    } else if (o.seccomp_profile != "unconfined") {
        auto p = read_json_file(o.seccomp_profile);
        if (!p || !p->is_object() || !p->as_object().contains("defaultAction"))
            throw ErrorException(
                make_error(Errc::unavailable,
                           fmt::format("seccomp profile {} unreadable", o.seccomp_profile)));
        impl_->seccomp = std::move(*p);
        impl_->has_seccomp = true;
    }
    log::info("runner", "runtime {}, cgroups {}, seccomp {}", impl_->runtime->name(),
              to_string(impl_->cgroups->mode()),
              builtin ? "builtin (Docker's default rules)" : o.seccomp_profile);
}

Runner::~Runner() {
    std::vector<std::shared_ptr<Impl::Task>> running;
    {
        std::lock_guard g(impl_->mu);
        for (auto& [id, t] : impl_->tasks) {
            t->stop_requested = true;
            if (t->signal_fd)
                ::syscall(SYS_pidfd_send_signal, t->signal_fd.get(), SIGKILL, nullptr, 0);
            running.push_back(t);
        }
    }
    {
        std::unique_lock l(impl_->mu);
        impl_->cv.wait_for(l, teardown_deadline, [&] {
            return std::all_of(running.begin(), running.end(), [](auto& t) { return t->done; });
        });
    }
    // This agent's cgroup parent goes with it once its tasks' cgroups are gone; one left by a
    // task that would not end is kept for recover_leftovers.
    try {
        if (impl_->cgroups && !impl_->cgroup_parent.empty() &&
            impl_->cgroups->children(impl_->cgroup_parent).empty())
            impl_->cgroups->remove(impl_->cgroup_parent, std::chrono::seconds(1));
    } catch (const std::exception& e) {
        log::warn("runner", "remove cgroup {}: {}", impl_->cgroup_parent, e.what());
    }
}

TaskStatus Runner::start(const TaskSpec& spec, SecretBytes secrets) {
    return impl_->start(spec, std::move(secrets));
}

Result<TaskStatus> Runner::stop(std::string_view id, std::chrono::milliseconds grace) {
    std::shared_ptr<Impl::Task> t;
    {
        std::lock_guard g(impl_->mu);
        auto it = impl_->tasks.find(id);
        if (it == impl_->tasks.end()) {
            for (auto f = impl_->finished.rbegin(); f != impl_->finished.rend(); ++f)
                if (f->id == id) return *f;
            return make_error(Errc::not_found, fmt::format("no task {}", id));
        }
        t = it->second;
        t->stop_requested = true;
        if (t->signal_fd)
            ::syscall(SYS_pidfd_send_signal, t->signal_fd.get(), t->stop_signal, nullptr, 0);
    }
    log::debug("runner", "task {}: stop with signal {}, grace {} ms", id, t->stop_signal,
               grace.count());
    std::unique_lock l(impl_->mu);
    if (!impl_->cv.wait_for(l, grace, [&] { return t->done; })) {
        if (t->signal_fd) ::syscall(SYS_pidfd_send_signal, t->signal_fd.get(), SIGKILL, nullptr, 0);
        if (!impl_->cv.wait_for(l, teardown_deadline, [&] { return t->done; }))
            return make_error(Errc::unavailable, fmt::format("task {} did not end", id));
    }
    return t->status;
}

Result<void> Runner::update_secrets(std::string_view id, const std::vector<SecretRef>& refs,
                                    SecretLease lease, int signal) {
    std::shared_ptr<Impl::Task> t;
    {
        std::lock_guard g(impl_->mu);
        auto it = impl_->tasks.find(id);
        if (it == impl_->tasks.end() || !it->second->res || it->second->stop_requested ||
            (it->second->status.state != TaskState::running &&
             it->second->status.state != TaskState::starting))
            return make_error(Errc::not_found, fmt::format("task {} does not run", id));
        t = it->second;
    }
    auto files = plan_secret_update(refs, lease);
    if (!files) return std::move(files).error();
    {
        std::lock_guard secrets_lock(t->secrets_mu);
        if (t->secrets_gone)
            return make_error(Errc::not_found, fmt::format("task {} has ended", id));
        if (auto replaced = replace_task_secrets(id, t->res->secrets, *files, impl_->secrets);
            !replaced)
            return replaced;
        t->secrets = std::move(lease);  // the old versions' lease goes
    }
    log::info("runner", "task {}: secret files replaced", id);
    if (signal != 0) {
        std::lock_guard g(impl_->mu);
        if (t->signal_fd &&
            ::syscall(SYS_pidfd_send_signal, t->signal_fd.get(), signal, nullptr, 0) != 0)
            return make_error(Errc::internal,
                              fmt::format("task {}: signal {}: {}", id, signal, strerror(errno)));
    }
    return {};
}

std::optional<TaskStatus> Runner::status(std::string_view id) const {
    std::shared_ptr<Impl::Task> t;
    TaskStatus s;
    {
        std::lock_guard g(impl_->mu);
        if (auto it = impl_->tasks.find(id); it != impl_->tasks.end()) {
            t = it->second;
            s = t->status;
            if (!t->res || (s.state != TaskState::running && s.state != TaskState::starting))
                return s;
        }
    }
    if (t) {
        std::lock_guard secrets_lock(t->secrets_mu);
        if (!t->secrets_gone) s.secret_reads = t->res->secrets.reads();
        return s;
    }
    std::lock_guard g(impl_->mu);
    for (auto f = impl_->finished.rbegin(); f != impl_->finished.rend(); ++f)
        if (f->id == id) return *f;
    return std::nullopt;
}

std::optional<TaskStatus> Runner::wait(std::string_view id,
                                       std::chrono::milliseconds timeout) const {
    std::unique_lock l(impl_->mu);
    std::optional<TaskStatus> out;
    impl_->cv.wait_for(l, timeout, [&] {
        if (impl_->tasks.contains(id)) return false;
        for (auto f = impl_->finished.rbegin(); f != impl_->finished.rend(); ++f)
            if (f->id == id) {
                out = *f;
                return true;
            }
        return true;  // unknown
    });
    return out;
}

std::size_t Runner::secrets_held() const {
    return impl_->secrets.size();
}

SecretStore& Runner::secrets() noexcept {
    return impl_->secrets;
}

VolumeStore& Runner::volumes() noexcept {
    return *impl_->volumes;
}

std::size_t Runner::tasks_running() const {
    std::lock_guard g(impl_->mu);
    return impl_->tasks.size();
}

std::string_view Runner::runtime_name() const noexcept {
    return impl_->runtime->name();
}
std::string_view Runner::cgroup_mode() const noexcept {
    return to_string(impl_->cgroups->mode());
}

std::string Runner::log_path(std::string_view id) const {
    return fmt::format("{}/{}.log", impl_->logs_dir(), id);
}

}  // namespace coffer::agent
