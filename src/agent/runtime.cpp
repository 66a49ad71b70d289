#include "runtime.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <boost/json.hpp>
#include <fstream>
#include <optional>
#include <thread>

#include "coffer/base/log.h"
#include "coffer/base/mount.h"
#include "coffer/base/process.h"

namespace coffer::agent {
namespace {

std::string find_in_path(std::string_view name) {
    const char* path = ::getenv("PATH");
    std::string_view p = path ? path : "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";
    while (!p.empty()) {
        auto colon = p.find(':');
        auto dir = p.substr(0, colon);
        p = colon == std::string_view::npos ? std::string_view{} : p.substr(colon + 1);
        auto full = fmt::format("{}/{}", dir.empty() ? "." : dir, name);
        if (::access(full.c_str(), X_OK) == 0) return full;
    }
    return {};
}

// The last error the runtime wrote to its JSON log ({"level":"error","msg":...}).
std::string last_logged_error(const std::string& file) {
    std::ifstream in(file);
    std::string line, last;
    while (std::getline(in, line)) {
        boost::system::error_code ec;
        auto v = boost::json::parse(line, ec);
        if (ec || !v.is_object()) continue;
        auto& o = v.as_object();
        auto* level = o.if_contains("level");
        auto* msg = o.if_contains("msg");
        if (level && msg && level->is_string() && msg->is_string() &&
            (level->as_string() == "error" || level->as_string() == "fatal"))
            last = std::string(msg->as_string());
    }
    return last;
}

// The parent of pid (a zombie's too); 0 once it is gone.
pid_t parent_of(pid_t pid) {
    auto st = process_stat(pid);
    return st ? st->parent : 0;
}

// The process in pid_file, claimed, once it is a child of this process. crun starts the container
// from a process of its own (it forks, calls setsid and forks again), which becomes our child when
// the first fork exits and may still be exiting when crun has: once it has, the container's
// process is re-parented to us, and that process of crun's is left to us to reap.
Result<ChildClaim> await_adoption(const std::string& pid_file, std::chrono::milliseconds deadline) {
    pid_t pid = 0;
    {
        std::ifstream in(pid_file);
        in >> pid;
    }
    if (pid <= 0) return make_error(Errc::internal, "the runtime wrote no pid file");
    ChildClaim init(pid);  // before it is ours: reap_orphans must never collect its exit status
    auto until = std::chrono::steady_clock::now() + deadline;
    auto backoff = std::chrono::microseconds(50);
    pid_t parent, intermediate = 0;
    while ((parent = parent_of(pid)) != ::getpid()) {
        if (parent > 1) intermediate = parent;
        if (std::chrono::steady_clock::now() >= until)
            return make_error(Errc::internal,
                              "the container's process did not become the agent's child");
        std::this_thread::sleep_for(backoff);
        backoff = std::min(backoff * 2, std::chrono::microseconds(2000));
    }
    // The process it had as parent is gone or going: reap it (and any other orphan that ended).
    reap_orphans();
    auto settled = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
    while (intermediate != 0 && parent_of(intermediate) == ::getpid() &&
           std::chrono::steady_clock::now() < settled) {
        std::this_thread::sleep_for(std::chrono::microseconds(100));
        reap_orphans();
    }
    return init;
}

class CliRuntime final : public OciRuntime {
  public:
    // hidden: mount points the runtime must not see (Child::Options::hidden_mounts).
    CliRuntime(std::string name, std::string binary, std::string root,
               std::vector<std::string> hidden)
        : name_(std::move(name)),
          binary_(std::move(binary)),
          root_(std::move(root)),
          hidden_(std::move(hidden)) {
        // Run from a sealed copy, the runtime skips copying itself into sealed memory and
        // executing that copy again for every container (13 ms of a 68 ms `runc run` here). The
        // binary as it was at agent start is what runs until the agent restarts.
        try {
            sealed_.emplace(binary_);
            program_ = sealed_->path();
        } catch (const std::exception& e) {
            log::warn("runner", "{}: running {} from its file: {}", name_, binary_, e.what());
            program_ = binary_;
        }
    }

    const std::string& name() const noexcept override { return name_; }

    Result<ChildClaim> run(const std::string& id, const std::string& bundle,
                           const std::string& pid_file, const std::string& log_file, int stdout_fd,
                           int stderr_fd) override {
        Child::Options o = invocation({});
        if (name_ == "crun") {
            o.argv.push_back("--log=file:" + log_file);
            o.argv.push_back("--log-format=json");
        } else {
            o.argv.insert(o.argv.end(), {"--log", log_file, "--log-format", "json"});
        }
        o.argv.insert(o.argv.end(),
                      {"run", "--detach", "--bundle", bundle, "--pid-file", pid_file, id});
        o.stdout_fd = stdout_fd;
        o.stderr_fd = stderr_fd;
        int status = Child::spawn(o).wait();
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
            return await_adoption(pid_file, std::chrono::seconds(5));
        // What crun started of itself in the background may still be ending: reap it.
        reap_orphans(std::chrono::milliseconds(200));
        auto why = last_logged_error(log_file);
        return make_error(Errc::internal, why.empty() ? fmt::format("{} run failed", name_) : why);
    }

    Result<std::string> state(const std::string& id) override {
        auto r = run_command(invocation({"state", id}));
        if (!r.ok()) {
            if (r.err.find("does not exist") != std::string::npos ||
                r.err.find("not exist") != std::string::npos)
                return make_error(Errc::not_found, fmt::format("container {} not found", id));
            return make_error(Errc::internal, fmt::format("{} state: {}", name_, r.describe()));
        }
        boost::system::error_code ec;
        auto v = boost::json::parse(r.out, ec);
        if (ec || !v.is_object() || !v.as_object().contains("status"))
            return make_error(Errc::internal, fmt::format("{} state: unreadable answer", name_));
        return std::string(v.as_object().at("status").as_string());
    }

    Result<void> kill(const std::string& id, int sig, bool all) override {
        std::vector<std::string> args{"kill"};
        if (all) args.push_back("--all");
        args.insert(args.end(), {id, std::to_string(sig)});
        return simple(args);
    }

    Result<void> remove(const std::string& id, bool force) override {
        std::vector<std::string> args{"delete"};
        if (force) args.push_back("--force");
        args.push_back(id);
        return simple(args);
    }

    Result<void> forget_stopped(const std::string& id) override {
        // Both runtimes keep a container's state in <root>/<id>: state.json (runc), status and
        // config.json (crun). Nothing of it is a mount, and it holds no secret bytes.
        auto dir = fmt::format("{}/{}", root_, id);
        struct stat st {};
        if (id.empty() || id.find('/') != std::string::npos || id.starts_with('.') ||
            ::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
            return make_error(Errc::not_found, fmt::format("no state directory for {}", id));
        try {
            remove_tree(dir);
        } catch (const std::exception& e) {
            return make_error(Errc::internal, fmt::format("remove {}: {}", dir, e.what()));
        }
        return {};
    }

    std::vector<std::string> list() override {
        // Both runtimes keep a directory per container under their root: none there, none to
        // list, and the runtime's own start-up (tens of milliseconds) is saved at agent start.
        if (list_dir(root_, true).empty()) return {};
        auto r = run_command(invocation({"list", "--quiet"}));
        std::vector<std::string> out;
        if (!r.ok()) return out;
        std::string_view s = r.out;
        while (!s.empty()) {
            auto nl = s.find('\n');
            auto line = s.substr(0, nl);
            if (!line.empty()) out.emplace_back(line);
            s = nl == std::string_view::npos ? std::string_view{} : s.substr(nl + 1);
        }
        return out;
    }

    Result<ExecResult> exec(const std::string& id, const std::vector<std::string>& argv,
                            const std::string& pid_file, std::chrono::nanoseconds timeout,
                            std::size_t max_output, int cancel_fd) override {
        using Clock = std::chrono::steady_clock;
        ::unlink(pid_file.c_str());
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC) != 0)
            return make_error(Errc::internal, fmt::format("exec pipe: errno {}", errno));
        UniqueFd out_r(fds[0]), out_w(fds[1]);
        std::vector<std::string> args{"exec", "--pid-file", pid_file, id};
        args.insert(args.end(), argv.begin(), argv.end());
        Child::Options o = invocation(args);
        o.stdout_fd = out_w.get();
        o.stderr_fd = out_w.get();
        Child child = Child::spawn(o);
        out_w.reset();

        ExecResult result;
        auto deadline = Clock::now() + timeout;
        auto left = [&] {
            return std::chrono::ceil<std::chrono::milliseconds>(
                std::max(Clock::duration::zero(), deadline - Clock::now()));
        };
        // Waits until fd is readable (true), the deadline passes (false) or the caller cancels
        // (then the command and the runtime are killed, and cancelled is set).
        bool cancelled = false;
        auto await = [&](int fd, short events) -> Result<bool> {
            while (left().count() > 0) {
                pollfd p[2] = {{fd, POLLIN, 0}, {cancel_fd, POLLIN, 0}};
                int ms = static_cast<int>(std::min<std::int64_t>(left().count(), 1000));
                int n = ::poll(p, cancel_fd >= 0 ? 2 : 1, ms);
                if (n < 0 && errno != EINTR)
                    return make_error(Errc::internal, fmt::format("exec poll: errno {}", errno));
                if (n <= 0) continue;
                if (cancel_fd >= 0 && (p[1].revents & POLLIN)) {
                    cancel(child, pid_file);
                    cancelled = true;
                    return false;
                }
                if (p[0].revents & events) return true;
            }
            return false;
        };
        auto stopped = [&](const Result<bool>& r) -> std::optional<Error> {
            if (!r) return r.error();
            if (cancelled)
                return make_error(Errc::unavailable, fmt::format("{} exec: cancelled", name_));
            return std::nullopt;
        };
        // Read until end of file (every holder of the pipe is gone) or the deadline; what passes
        // max_output is read and dropped, so the command never blocks on a full pipe.
        bool eof = false;
        char buf[4096];
        while (!eof) {
            auto readable = await(out_r.get(), POLLIN | POLLHUP | POLLERR);
            if (auto e = stopped(readable)) return std::move(*e);
            if (!*readable) break;
            ssize_t got = ::read(out_r.get(), buf, sizeof buf);
            if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
            if (got <= 0) {
                eof = true;
                break;
            }
            auto keep =
                std::min<std::size_t>(static_cast<std::size_t>(got),
                                      max_output - std::min(max_output, result.output.size()));
            result.output.append(buf, keep);
        }
        // The runtime may outlive its command's output (it waits on a container that is ending,
        // say): its end, the deadline or a cancel, whichever comes first.
        while (eof) {
            auto ended = await(child.pidfd(), POLLIN);
            if (auto e = stopped(ended)) return std::move(*e);
            if (!*ended) break;
            if (auto st = child.wait_for(std::chrono::milliseconds(0))) {
                result.exit_code = WIFEXITED(*st)     ? WEXITSTATUS(*st)
                                   : WIFSIGNALED(*st) ? 128 + WTERMSIG(*st)
                                                      : -1;
                return result;
            }
        }
        // Timed out: kill the command itself (the runtime only forwards signals it gets, and a
        // runtime killed while it sets the command up can leave it behind, half made), then the
        // runtime if it lingers. The runtime writes the pid once the command runs, which may be
        // after the timeout for a short one: wait for it. While the runtime has not ended, the
        // pid it wrote is its command's: it has not reaped it.
        result.timed_out = true;
        result.exit_code = -1;
        auto read_pid = [&] {
            pid_t p = 0;
            std::ifstream in(pid_file);
            in >> p;
            return p;
        };
        pid_t pid = 0;
        auto until = Clock::now() + std::chrono::seconds(10);
        while (child.running() && (pid = read_pid()) <= 0 && Clock::now() < until)
            (void)child.wait_for(std::chrono::milliseconds(20));
        if (pid > 0 && child.running()) {
            UniqueFd target(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
            if (target && !child.wait_for(std::chrono::milliseconds(0)))
                ::syscall(SYS_pidfd_send_signal, target.get(), SIGKILL, nullptr, 0);
        }
        if (child.running() && !child.wait_for(std::chrono::seconds(5))) {
            child.signal(SIGKILL);
            child.wait();
        }
        return result;
    }

  private:
    // An exec no longer wanted: its command (if the runtime has written its pid and not
    // reaped it) and the runtime are killed now. What the runtime may leave half made in the
    // container ends with the container's cgroup.
    static void cancel(Child& child, const std::string& pid_file) {
        pid_t pid = 0;
        std::ifstream(pid_file) >> pid;
        if (pid > 0 && child.running()) {
            UniqueFd target(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
            if (target && !child.wait_for(std::chrono::milliseconds(0)))
                ::syscall(SYS_pidfd_send_signal, target.get(), SIGKILL, nullptr, 0);
        }
        if (child.running()) child.signal(SIGKILL);
        child.wait();
    }

    // The runtime with its global options, then args.
    Child::Options invocation(std::initializer_list<std::string> args) const {
        return invocation(std::vector<std::string>(args));
    }
    Child::Options invocation(const std::vector<std::string>& args) const {
        Child::Options o;
        o.argv = {name_, "--root", root_};
        o.argv.insert(o.argv.end(), args.begin(), args.end());
        o.program = program_;
        o.hidden_mounts = hidden_;
        return o;
    }

    Result<void> simple(const std::vector<std::string>& args) {
        auto r = run_command(invocation(args));
        if (r.ok()) return {};
        return make_error(Errc::internal, fmt::format("{} {}: {}", name_, args[0], r.describe()));
    }

    std::string name_;
    std::string binary_;
    std::string root_;
    std::vector<std::string> hidden_;
    std::optional<SealedProgram> sealed_;
    std::string program_;  // what is executed: the sealed copy, or binary_
};

}  // namespace

Result<std::unique_ptr<OciRuntime>> make_runtime(std::string_view preferred,
                                                 const std::string& state_root,
                                                 const Cgroups& cgroups) {
    std::vector<std::string_view> candidates{"crun", "runc"};
    if (!preferred.empty()) {
        if (preferred != "runc" && preferred != "crun")
            return make_error(Errc::invalid_argument,
                              fmt::format("unknown runtime {} (runc or crun)", preferred));
        candidates = {preferred};
    }
    for (auto c : candidates) {
        auto bin = find_in_path(c);
        if (bin.empty()) continue;
        std::vector<std::string> hidden;
        if (c == "crun" && cgroups.mode() == CgroupMode::hybrid) {
            hidden.push_back(cgroups.unified_mount());
            log::info("runner", "crun runs without {} in view: it manages the v1 hierarchies",
                      hidden.back());
        }
        return std::unique_ptr<OciRuntime>(std::make_unique<CliRuntime>(
            std::string(c), std::move(bin), state_root, std::move(hidden)));
    }
    return make_error(Errc::unavailable, fmt::format("no usable OCI runtime found (tried {})",
                                                     fmt::join(candidates, ", ")));
}

void Container::reset_stopped() noexcept {
    if (id_.empty() || !rt_) return;
    try {
        auto r = rt_->forget_stopped(id_);
        if (r) {
            id_.clear();
            return;
        }
        log::warn("runner", "forget container {}: {}; deleting it through {}", id_,
                  r.error().message, rt_->name());
    } catch (const std::exception& e) {
        log::warn("runner", "forget container {}: {}", id_, e.what());
    }
    reset();
}

void Container::reset() noexcept {
    if (id_.empty() || !rt_) return;
    try {
        if (auto r = rt_->remove(id_, true); !r)
            log::warn("runner", "delete container {}: {}", id_, r.error().message);
    } catch (const std::exception& e) {
        log::warn("runner", "delete container {}: {}", id_, e.what());
    }
    id_.clear();
}

}  // namespace coffer::agent
