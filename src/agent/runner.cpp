#include "coffer/agent/runner.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sodium.h>

#include <condition_variable>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>

#include "cgroups.h"
#include "coffer/agent/in_root.h"
#include "coffer/agent/secret_mount.h"
#include "coffer/base/log.h"
#include "coffer/base/mount.h"
#include "json_util.h"
#include "monitor.h"
#include "oci_config.h"
#include "runtime.h"
#include "seccomp_profile.h"
#include "work_queue.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace coffer::agent {

std::string_view to_string(TaskState s) noexcept {
    switch (s) {
        case TaskState::new_: return "new";
        case TaskState::preparing: return "preparing";
        case TaskState::starting: return "starting";
        case TaskState::running: return "running";
        case TaskState::complete: return "complete";
        case TaskState::failed: return "failed";
        case TaskState::shutdown: return "shutdown";
        case TaskState::rejected: return "rejected";
    }
    return "?";
}

namespace {

constexpr std::size_t finished_kept = 1024;
constexpr auto teardown_deadline = std::chrono::seconds(10);

std::int64_t us_since(std::chrono::steady_clock::time_point from) {
    return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - from).count();
}

bool valid_hostname(std::string_view h) {
    return !h.empty() && h.size() <= 63 && std::all_of(h.begin(), h.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.';
    });
}

// A directory this task owns: removed (without crossing mounts) on destruction.
class OwnedDir {
public:
    OwnedDir() = default;
    explicit OwnedDir(std::string path, int mode = 0700) : path_(std::move(path)) {
        if (::mkdir(path_.c_str(), static_cast<mode_t>(mode)) != 0) {
            path_.clear();
            throw_errno("mkdir task directory");
        }
    }
    OwnedDir(OwnedDir&& o) noexcept : path_(std::exchange(o.path_, {})) {}
    OwnedDir& operator=(OwnedDir&& o) noexcept {
        reset();
        path_ = std::exchange(o.path_, {});
        return *this;
    }
    ~OwnedDir() { reset(); }
    const std::string& path() const noexcept { return path_; }
    void reset() noexcept {
        if (path_.empty()) return;
        try {
            remove_tree(path_);
        } catch (const std::exception& e) {
            log::warn("runner", "remove {}: {}", path_, e.what());
        }
        path_.clear();
    }

private:
    std::string path_;
};

// The container's first process, ours to reap (we are its subreaper) until the monitor takes it,
// and claimed until the task's resources go (reap_orphans leaves it alone).
struct ContainerInit {
    ChildClaim claim;
    UniqueFd pidfd;
    ContainerInit() = default;
    ContainerInit(ContainerInit&&) noexcept = default;
    ContainerInit& operator=(ContainerInit&&) noexcept = default;
    ~ContainerInit() {
        if (!pidfd) return;
        ::syscall(SYS_pidfd_send_signal, pidfd.get(), SIGKILL, nullptr, 0);
        siginfo_t info{};
        while (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd.get()), &info, WEXITED) != 0 &&
               errno == EINTR) {
        }
    }
};

}  // namespace

struct Runner::Impl {
    // Everything a task holds, in the order it is acquired; released in reverse by the destructor.
    struct Resources {
        OwnedDir bundle;  // <run>/tasks/<id>: config.json, rootfs/, secrets/, pid, runtime.log
        OwnedDir layer;   // <data>/tasks/<id>: upper/, work/ of the overlay
        Mount rootfs;
        SecretMount secrets;
        CgroupDir cgroup;
        Container container;
        ContainerInit init;
    };

    struct Task {
        TaskStatus status;
        std::vector<std::string> secret_ids;  // references held in secrets_
        std::unique_ptr<Resources> res;
        UniqueFd signal_fd;  // a pidfd for signals, valid while running
        bool output_closed = false;
        bool stop_requested = false;
        bool done = false;
    };

    struct SecretCache {
        SecretBytes bytes;
        std::map<std::string, int, std::less<>> refs;
    };

    RunnerOptions opt;
    ImageStore& images;
    UniqueFd lock_fd;
    std::unique_ptr<Cgroups> cgroups;
    std::unique_ptr<OciRuntime> runtime;
    boost::json::value seccomp;
    bool has_seccomp = false;
    SeccompPrograms seccomp_programs;  // crun: each distinct filter compiled once

    mutable std::mutex mu;  // tasks, finished, and each task's status and flags
    mutable std::condition_variable cv;
    std::map<std::string, std::shared_ptr<Task>, std::less<>> tasks;
    std::deque<TaskStatus> finished;

    mutable std::mutex secrets_mu;
    SecretCache secrets;

    Monitor monitor;
    WorkQueue work;

    Impl(RunnerOptions o, ImageStore& i)
        : opt(std::move(o)), images(i), work(std::max(1u, opt.teardown_threads)) {}

    std::string cgroup_parent;  // Runner::cgroup_parent(run_dir)
    std::string tasks_dir() const { return opt.run_dir + "/tasks"; }
    std::string layers_dir() const { return opt.data_dir + "/tasks"; }
    std::string logs_dir() const { return opt.data_dir + "/logs"; }

    void publish(const TaskStatus& s) {
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

    void set_state(Task& t, TaskState s) {
        TaskStatus copy;
        {
            std::lock_guard g(mu);
            t.status.state = s;
            copy = t.status;
        }
        publish(copy);
    }

    // Records the final status, forgets the task, wakes waiters; publishes the status unless
    // that was done already.
    void finish(const std::shared_ptr<Task>& t, TaskStatus final_status, bool publish_it = true) {
        {
            std::lock_guard g(mu);
            t->status = final_status;
            t->done = true;
            if (auto it = tasks.find(final_status.id); it != tasks.end() && it->second == t) tasks.erase(it);
            finished.push_back(final_status);
            if (finished.size() > finished_kept) finished.pop_front();
        }
        cv.notify_all();
        if (final_status.state == TaskState::failed || final_status.state == TaskState::rejected)
            log::info("runner", "task {} {}: {}", final_status.id, to_string(final_status.state),
                      final_status.reason);
        if (publish_it) publish(final_status);
    }

    // Takes references on the task's secrets; bytes come from supplied or from what is held.
    Result<void> acquire_secrets(Task& t, const TaskSpec& spec, SecretBytes& supplied) {
        std::set<std::string> ids;
        for (auto& r : spec.secrets) ids.insert(r.secret_id);
        std::lock_guard g(secrets_mu);
        for (auto& id : ids)
            if (!supplied.contains(id) && !secrets.bytes.contains(id))
                return make_error(Errc::not_found, fmt::format("no bytes for secret {}", id));
        for (auto& id : ids) {
            if (!secrets.bytes.contains(id)) secrets.bytes.emplace(id, std::move(supplied.find(id)->second));
            ++secrets.refs[id];
            t.secret_ids.push_back(id);
        }
        return {};
    }

    void release_secrets(Task& t) {
        std::lock_guard g(secrets_mu);
        for (auto& id : t.secret_ids) {
            auto it = secrets.refs.find(id);
            if (it == secrets.refs.end()) continue;
            if (--it->second == 0) {
                secrets.refs.erase(it);
                secrets.bytes.erase(id);  // SecureBuffer wipes on free
            }
        }
        t.secret_ids.clear();
    }

    TaskStatus start(const TaskSpec& spec, SecretBytes supplied);
    void prepare_and_start(Task& t, const TaskSpec& spec, const std::shared_ptr<Task>& self);
    void on_exit(const std::shared_ptr<Task>& t, int wait_status);
    void teardown(const std::shared_ptr<Task>& t, int wait_status);
};

namespace {

// An expected refusal (bad spec, unknown image): the task is rejected, not failed.
struct Rejected {
    std::string reason;
};

}  // namespace

TaskStatus Runner::Impl::start(const TaskSpec& spec, SecretBytes supplied) {
    auto t = std::make_shared<Task>();
    t->status.id = spec.id;
    auto reject_now = [&](std::string why) {
        TaskStatus s;
        s.id = spec.id;
        s.state = TaskState::rejected;
        s.reason = std::move(why);
        publish(s);
        return s;
    };
    if (!valid_task_id(spec.id)) return reject_now("invalid task id");
    {
        std::lock_guard g(mu);
        if (tasks.contains(spec.id)) return reject_now(fmt::format("task {} already exists", spec.id));
        tasks.emplace(spec.id, t);
    }
    publish(t->status);
    set_state(*t, TaskState::preparing);

    try {
        if (auto r = acquire_secrets(*t, spec, supplied); !r) throw Rejected{r.error().message};
        prepare_and_start(*t, spec, t);
        TaskStatus copy;
        {
            std::lock_guard g(mu);
            copy = t->status;
        }
        return copy;
    } catch (const Rejected& r) {
        t->res.reset();
        release_secrets(*t);
        TaskStatus s{spec.id, TaskState::rejected, std::nullopt, false, r.reason, 0};
        finish(t, s);
        return s;
    } catch (const std::exception& e) {
        std::string why = e.what();
        t->res.reset();  // every step's resource, in reverse order
        release_secrets(*t);
        TaskStatus s{spec.id, TaskState::failed, std::nullopt, false, why, 0};
        finish(t, s);
        return s;
    }
}

void Runner::Impl::prepare_and_start(Task& t, const TaskSpec& spec, const std::shared_ptr<Task>& self) {
    std::string step = "validate and resolve the image";
    auto t0 = std::chrono::steady_clock::now();
    auto timed = [&](std::string next) {
        if (!step.empty())
            log::debug("runner", "task {}: {} took {} us", spec.id, step,
                       std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count());
        t0 = std::chrono::steady_clock::now();
        step = std::move(next);
    };
    auto fail_in = [&](const std::exception& e) -> std::runtime_error {
        return std::runtime_error(fmt::format("{}: {}", step, e.what()));
    };
    auto check = [&](auto&& result) {
        if (!result) throw Rejected{result.error().message};
        return std::move(*result);
    };

    // 1. Validate everything that can be validated before touching the system.
    if (!spec.hostname.empty() && !valid_hostname(spec.hostname)) throw Rejected{"invalid hostname"};
    for (auto& e : spec.env)
        if (e.find('=') == std::string::npos || e.front() == '=') throw Rejected{fmt::format("invalid env entry")};
    auto files = check(plan_secret_files(spec.secrets));
    auto image = check(images.resolve(spec.image));
    auto caps = check(task_capabilities(spec.cap_add, spec.cap_drop));
    check(parse_user(spec.user.empty() ? image.config.user : spec.user));

    t.res = std::make_unique<Resources>();
    Resources& res = *t.res;
    try {
        timed("create task directories");
        res.bundle = OwnedDir(fmt::format("{}/{}", tasks_dir(), spec.id));
        res.layer = OwnedDir(fmt::format("{}/{}", layers_dir(), spec.id));
        const auto& b = res.bundle.path();
        write_file(b + "/image", image.digest);
        make_dir(b + "/rootfs", 0755);
        make_dir(b + "/secrets", 0700);
        make_dir(res.layer.path() + "/upper", 0755);
        make_dir(res.layer.path() + "/work", 0700);

        timed("mount rootfs overlay");
        res.rootfs = Mount::make("overlay", b + "/rootfs", "overlay", 0,
                                 fmt::format("lowerdir={},upperdir={}/upper,workdir={}/work", image.rootfs,
                                             res.layer.path(), res.layer.path()));

        // The image is hostile: a path the runtime mounts on or creates in (its /dev, /proc,
        // /sys...) must be a real directory of the rootfs (or missing below one), never a link
        // the runtime could follow out of it (crun 1.8 makes /dev's nodes in the host's / when
        // the image's /dev is a link to /). Nothing in the rootfs changes after this check but
        // what the agent makes itself (directories and files, never links), and no process of
        // the task runs before the runtime.
        timed("check the rootfs paths of the runtime");
        UniqueFd root(::open((b + "/rootfs").c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!root) throw_errno("open rootfs");
        auto check_runtime_path = [&](std::string_view path, Leaf leaf) {
            if (auto ok = check_runtime_path_in_root(root.get(), path, leaf); !ok)
                throw Rejected{fmt::format("image rootfs: {}; refusing to run", ok.error().message)};
        };
        for (const auto& p : runtime_rootfs_paths()) check_runtime_path(p.path, p.leaf);

        timed("mount secrets");
        SecretMount::Options so;
        if (spec.user_namespace) so.uid_shift = so.gid_shift = opt.userns_base;
        {
            std::lock_guard g(secrets_mu);
            res.secrets = SecretMount::create(b + "/secrets", files, secrets.bytes, so);
        }

        timed("place secret mount points in the rootfs");
        std::vector<BindMount> binds;
        {
            for (auto& bind : res.secrets.binds()) {
                auto dest = check(make_mountpoint_in_root(root.get(), bind.destination,
                                                          bind.directory ? Leaf::directory : Leaf::file));
                if (is_forbidden_destination(dest))
                    throw Rejected{fmt::format("secret target {} resolves to {} in the image", bind.destination, dest)};
                for (auto& other : binds)
                    if (dest == other.destination || dest.starts_with(other.destination + "/") ||
                        other.destination.starts_with(dest + "/"))
                        throw Rejected{fmt::format("secret targets {} and {} overlap in the image", dest,
                                                   other.destination)};
                if (dest != bind.destination)
                    log::warn("runner", "task {}: {} is {} in the image", spec.id, bind.destination, dest);
                // Resolved free of links already; checked as the runtime will meet it all the same.
                check_runtime_path(dest, bind.directory ? Leaf::directory : Leaf::file);
                binds.push_back({bind.source, dest});
            }
        }

        timed("write config.json");
        ConfigInput ci;
        ci.spec = &spec;
        ci.image = &image.config;
        ci.binds = std::move(binds);
        ci.cgroups_path = fmt::format("{}/{}", cgroup_parent, spec.id);
        ci.limit_swap = cgroups->can_limit_swap();
        ci.seccomp_profile = has_seccomp ? &seccomp : nullptr;
        if (runtime->name() == "crun" && opt.compile_seccomp) ci.seccomp_programs = &seccomp_programs;
        ci.userns_base = opt.userns_base;
        ci.userns_size = opt.userns_size;
        write_file(b + "/config.json", check(make_oci_config(ci)));

        timed("open output");
        int pipe_fds[2];
        if (::pipe2(pipe_fds, O_CLOEXEC) != 0) throw_errno("pipe");
        UniqueFd out_r(pipe_fds[0]), out_w(pipe_fds[1]);
        auto log_file = fmt::format("{}/{}.log", logs_dir(), spec.id);
        ::unlink(log_file.c_str());  // a task id names one run: no output of an earlier one
        ::unlink((log_file + ".1").c_str());
        auto logf = std::make_shared<LogFile>(log_file, opt.log_max_bytes);
        monitor.watch_output(std::move(out_r), logf, [this, self] {
            {
                std::lock_guard g(mu);
                self->output_closed = true;
            }
            cv.notify_all();
        });

        set_state(t, TaskState::starting);
        timed(fmt::format("{} run", runtime->name()));
        res.cgroup = CgroupDir(*cgroups, ci.cgroups_path);
        auto init = runtime->run(spec.id, b, b + "/pid", b + "/runtime.log", out_w.get(), out_w.get());
        if (!init) throw std::runtime_error(init.error().message);
        res.container = Container(*runtime, spec.id);
        res.init.claim = std::move(*init);
        out_w.reset();

        // The init runs already and may even have exited: it is our child (we are a subreaper),
        // and only its pidfd reaps it, so the pid stays ours until then.
        timed("watch container process");
        int pid = res.init.claim.pid();
        res.init.pidfd.reset(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
        if (!res.init.pidfd) throw_errno("pidfd_open");
        t.signal_fd.reset(::fcntl(res.init.pidfd.get(), F_DUPFD_CLOEXEC, 0));

        timed({});
        monitor.watch_exit(std::move(res.init.pidfd), [this, self](int status) { on_exit(self, status); });
        TaskStatus copy;
        bool stop_now;
        {
            std::lock_guard g(mu);
            t.status.state = TaskState::running;
            t.status.pid = pid;
            copy = t.status;
            stop_now = t.stop_requested;
        }
        publish(copy);
        if (stop_now) ::syscall(SYS_pidfd_send_signal, t.signal_fd.get(), SIGKILL, nullptr, 0);
    } catch (const Rejected&) {
        throw;
    } catch (const ErrorException& e) {
        throw fail_in(e);
    } catch (const std::exception& e) {
        throw fail_in(e);
    }
}

void Runner::Impl::on_exit(const std::shared_ptr<Task>& t, int wait_status) {
    work.post([this, t, wait_status] { teardown(t, wait_status); });
}

void Runner::Impl::teardown(const std::shared_ptr<Task>& t, int wait_status) {
    Resources& res = *t->res;
    auto t0 = std::chrono::steady_clock::now();
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
    try {
        res.secrets.wipe_and_unmount();
    } catch (const std::exception& e) {
        log::warn("runner", "task {}: wipe secrets: {}", t->status.id, e.what());
    }
    release_secrets(*t);

    TaskStatus s;
    {
        std::lock_guard g(mu);
        s = t->status;
        s.pid = 0;
        if (WIFEXITED(wait_status)) s.exit_code = WEXITSTATUS(wait_status);
        else if (WIFSIGNALED(wait_status)) s.exit_code = 128 + WTERMSIG(wait_status);
        s.oom_killed = oom;
        if (t->stop_requested) {
            s.state = TaskState::shutdown;
            s.reason = "stopped";
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
        log::debug("runner", "task {}: runtime state, rootfs and directories removed in {} us", s.id,
                   us_since(t1));
        finish(t, s, false);
    });
}

Runner::Runner(RunnerOptions options, ImageStore& images)
    : impl_(std::make_unique<Impl>(std::move(options), images)) {
    auto& o = impl_->opt;
    // Absolute from here on: paths go into config.json, which the runtime reads from the bundle.
    for (auto* d : {&o.run_dir, &o.data_dir}) *d = std::filesystem::absolute(*d).lexically_normal().string();
    for (auto* d : {&o.run_dir, &o.data_dir}) {
        std::error_code ec;
        std::filesystem::create_directories(*d, ec);
        if (ec) throw SystemError(ec.value(), fmt::format("create {}", *d));
    }
    make_dir(impl_->tasks_dir(), 0700);
    make_dir(impl_->layers_dir(), 0700);
    make_dir(impl_->logs_dir(), 0700);
    make_dir(o.run_dir + "/runtime", 0700);
    impl_->cgroup_parent = cgroup_parent(o.run_dir);

    // Close-on-exec: a container must never hold the lock of a crashed agent.
    impl_->lock_fd.reset(::open((o.run_dir + "/agent.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!impl_->lock_fd) throw_errno("open agent lock");
    if (::flock(impl_->lock_fd.get(), LOCK_EX | LOCK_NB) != 0)
        throw ErrorException(make_error(Errc::conflict, fmt::format("another agent runs on {}", o.run_dir)));

    if (::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) throw_errno("prctl(PR_SET_CHILD_SUBREAPER)");
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
            throw ErrorException(make_error(Errc::unavailable,
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
            if (t->signal_fd) ::syscall(SYS_pidfd_send_signal, t->signal_fd.get(), SIGKILL, nullptr, 0);
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
        if (t->signal_fd) ::syscall(SYS_pidfd_send_signal, t->signal_fd.get(), SIGTERM, nullptr, 0);
    }
    log::debug("runner", "task {}: stop, grace {} ms", id, grace.count());
    std::unique_lock l(impl_->mu);
    if (!impl_->cv.wait_for(l, grace, [&] { return t->done; })) {
        if (t->signal_fd) ::syscall(SYS_pidfd_send_signal, t->signal_fd.get(), SIGKILL, nullptr, 0);
        if (!impl_->cv.wait_for(l, teardown_deadline, [&] { return t->done; }))
            return make_error(Errc::unavailable, fmt::format("task {} did not end", id));
    }
    return t->status;
}

std::optional<TaskStatus> Runner::status(std::string_view id) const {
    std::lock_guard g(impl_->mu);
    if (auto it = impl_->tasks.find(id); it != impl_->tasks.end()) return it->second->status;
    for (auto f = impl_->finished.rbegin(); f != impl_->finished.rend(); ++f)
        if (f->id == id) return *f;
    return std::nullopt;
}

std::optional<TaskStatus> Runner::wait(std::string_view id, std::chrono::milliseconds timeout) const {
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

Leftovers Runner::recover_leftovers() {
    Leftovers l;
    auto& im = *impl_;
    for (auto& id : im.runtime->list()) {
        (void)im.runtime->kill(id, SIGKILL, true);
        if (auto r = im.runtime->remove(id, true); !r)
            log::warn("runner", "leftover container {}: {}", id, r.error().message);
        else
            log::info("runner", "removed leftover container {}", id);
        ++l.containers;
    }
    for (const auto& base : {im.tasks_dir(), im.layers_dir()}) {
        for (auto& name : list_dir(base)) {
            auto path = fmt::format("{}/{}", base, name);
            for (auto& m : mounts_under(path)) {
                if (::umount2(m.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) == 0) ++l.mounts;
            }
            try {
                remove_tree(path);
                if (base == im.tasks_dir()) ++l.task_dirs;
                log::info("runner", "removed leftover {}", path);
            } catch (const std::exception& e) {
                log::warn("runner", "leftover {}: {}", path, e.what());
            }
        }
    }
    for (auto& c : im.cgroups->children(im.cgroup_parent)) {
        if (im.cgroups->remove(im.cgroup_parent + "/" + c, std::chrono::seconds(5))) ++l.cgroups;
    }
    return l;
}

std::size_t Runner::secrets_held() const {
    std::lock_guard g(impl_->secrets_mu);
    return impl_->secrets.bytes.size();
}

std::size_t Runner::tasks_running() const {
    std::lock_guard g(impl_->mu);
    return impl_->tasks.size();
}

std::string_view Runner::runtime_name() const noexcept { return impl_->runtime->name(); }
std::string_view Runner::cgroup_mode() const noexcept { return to_string(impl_->cgroups->mode()); }

std::string Runner::cgroup_parent(const std::string& run_dir) {
    std::error_code ec;
    auto absolute = std::filesystem::weakly_canonical(run_dir, ec);
    std::string path = ec ? run_dir : absolute.string();
    unsigned char digest[6];
    crypto_generichash(digest, sizeof digest, reinterpret_cast<const unsigned char*>(path.data()),
                       path.size(), nullptr, 0);
    std::string hex = "/coffer/";
    for (unsigned char b : digest) hex += fmt::format("{:02x}", b);
    return hex;
}

std::string Runner::log_path(std::string_view id) const {
    return fmt::format("{}/{}.log", impl_->logs_dir(), id);
}

bool Runner::image_in_use(const std::string& run_dir, std::string_view digest) {
    for (auto& name : list_dir(run_dir + "/tasks")) {
        std::ifstream in(fmt::format("{}/tasks/{}/image", run_dir, name));
        std::string d;
        if (in >> d && d == digest) return true;
    }
    return false;
}

}  // namespace coffer::agent
