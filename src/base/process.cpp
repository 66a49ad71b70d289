#include "coffer/base/process.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>
#include <unordered_set>

#include "coffer/base/error.h"
#include "coffer/base/mount.h"

extern char** environ;

namespace coffer {

void harden_process() {
    if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) throw_errno("prctl(PR_SET_DUMPABLE)");
    struct rlimit none {
        0, 0
    };
    if (::setrlimit(RLIMIT_CORE, &none) != 0) throw_errno("setrlimit(RLIMIT_CORE)");
}

std::uint64_t raise_descriptor_limit() {
    struct rlimit limit {};
    if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) throw_errno("getrlimit(RLIMIT_NOFILE)");
    if (limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
        if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) throw_errno("setrlimit(RLIMIT_NOFILE)");
    }
    return limit.rlim_cur;
}

namespace {

int pidfd_open(pid_t pid) {
    return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

// Shared by spawns, exclusive for a SpawnFence. posix_spawn returns once the child has executed
// its program (glibc spawns with CLONE_VFORK), so a spawn holds it exactly while the child may
// still hold a copy of our descriptors.
std::shared_mutex& spawn_mutex() {
    static std::shared_mutex m;
    return m;
}

// Pids claimed by a ChildClaim (a pid may be claimed twice for a moment: a claim of a reaped child
// can outlive it while its pid is given to a new one).
struct Claims {
    std::mutex mu;
    std::unordered_multiset<int> pids;
};
Claims& claims() {
    static Claims c;
    return c;
}

std::vector<char*> c_strings(const std::vector<std::string>& v) {
    std::vector<char*> out;
    out.reserve(v.size() + 1);
    for (const auto& s : v) out.push_back(const_cast<char*>(s.c_str()));
    out.push_back(nullptr);
    return out;
}

// What the child of spawn_in_mount_view needs, prepared before the clone: between the clone and
// the exec the child shares our memory and may only make system calls.
struct ViewChild {
    const char* program;
    char** argv;
    char** env;
    std::vector<const char*> hidden;
    int stdio[3];  // -1: /dev/null for stdin, inherited for the others
    bool new_process_group;
    // Set by the child when a step fails; read once it has exited (CLONE_VFORK).
    const char* failed_step = nullptr;
    int error = 0;
};

int view_child_main(void* arg) {
    auto* c = static_cast<ViewChild*>(arg);
    auto fail = [c](const char* step) {
        c->failed_step = step;
        c->error = errno;
        ::_exit(127);
    };
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig)
        ::sigaction(sig, &dfl, nullptr);  // SIGKILL, SIGSTOP: EINVAL

    if (::unshare(CLONE_NEWNS) != 0) fail("unshare the mount namespace");
    // A slave copy: our later mounts and unmounts reach it; its own (the detaches below, and
    // whatever the program mounts) never reach us.
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) != 0)
        fail("make the mounts slaves");
    for (const char* m : c->hidden)
        if (::umount2(m, MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT)
            fail("detach a hidden mount");

    if (c->stdio[0] < 0) {
        int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (null < 0) fail("open /dev/null");
        c->stdio[0] = null;
    }
    for (int target = 0; target < 3; ++target) {
        int fd = c->stdio[target];
        if (fd < 0) continue;
        if (fd == target ? ::fcntl(fd, F_SETFD, 0) != 0 : ::dup2(fd, target) != target)
            fail("set up stdio");
    }
    if (::syscall(SYS_close_range, 3U, ~0U, 0U) != 0) fail("close descriptors");
    if (c->new_process_group && ::setpgid(0, 0) != 0) fail("setpgid");
    sigset_t empty;
    sigemptyset(&empty);
    ::sigprocmask(SIG_SETMASK, &empty, nullptr);
    ::execve(c->program, c->argv, c->env);
    fail("execute");
    return 127;
}

// Child::spawn for options with hidden mounts. glibc's posix_spawn cannot enter a namespace, so
// this clones as it does (shared memory, the parent suspended until the child executes or exits)
// and runs view_child_main in the child.
pid_t spawn_in_mount_view(const Child::Options& o, char** argv, char** env) {
    if (o.program.empty() && o.argv[0].find('/') == std::string::npos)
        throw std::invalid_argument("Child::spawn: hidden mounts need a program path");
    ViewChild c{.program = o.program.empty() ? o.argv[0].c_str() : o.program.c_str(),
                .argv = argv,
                .env = env,
                .hidden = {},
                .stdio = {o.stdin_fd, o.stdout_fd, o.stderr_fd},
                .new_process_group = o.new_process_group};
    for (const auto& m : o.hidden_mounts) c.hidden.push_back(m.c_str());

    constexpr std::size_t stack_size = 64 * 1024;
    void* stack = ::mmap(nullptr, stack_size, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) throw_errno("mmap a stack for the child");
    // No handler of ours may run in the child, on our memory: signals stay blocked until it has
    // reset every handler.
    sigset_t all, old;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t pid = ::clone(view_child_main, static_cast<char*>(stack) + stack_size,
                        CLONE_VM | CLONE_VFORK | SIGCHLD, &c);
    int clone_errno = errno;
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    ::munmap(stack, stack_size);
    if (pid < 0) throw SystemError(clone_errno, fmt::format("spawn {}", o.argv[0]));
    if (c.failed_step) {
        int status;
        while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        throw SystemError(c.error, fmt::format("spawn {}: {}", o.argv[0], c.failed_step));
    }
    return pid;
}

// Child::spawn without hidden mounts.
pid_t spawn_plain(const Child::Options& o, char** argv, char** env) {
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    struct Cleanup {
        posix_spawn_file_actions_t* fa;
        posix_spawnattr_t* attr;
        ~Cleanup() {
            posix_spawn_file_actions_destroy(fa);
            posix_spawnattr_destroy(attr);
        }
    } cleanup{&fa, &attr};

    if (o.stdin_fd >= 0)
        posix_spawn_file_actions_adddup2(&fa, o.stdin_fd, 0);
    else
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    if (o.stdout_fd >= 0) posix_spawn_file_actions_adddup2(&fa, o.stdout_fd, 1);
    if (o.stderr_fd >= 0) posix_spawn_file_actions_adddup2(&fa, o.stderr_fd, 2);
    // Only stdio crosses: a descriptor someone forgot to mark close-on-exec, or one this process
    // inherited from its own parent, must not reach the child (nor a container it starts).
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);

    short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
    sigset_t empty, all;
    sigemptyset(&empty);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &empty);
    posix_spawnattr_setsigdefault(&attr, &all);
    if (o.new_process_group) {
        flags |= POSIX_SPAWN_SETPGROUP;
        posix_spawnattr_setpgroup(&attr, 0);
    }
    posix_spawnattr_setflags(&attr, flags);

    pid_t pid;
    int rc = o.program.empty() ? ::posix_spawnp(&pid, argv[0], &fa, &attr, argv, env)
                               : ::posix_spawn(&pid, o.program.c_str(), &fa, &attr, argv, env);
    if (rc != 0) throw SystemError(rc, fmt::format("spawn {}", o.argv[0]));
    return pid;
}

}  // namespace

Child Child::spawn(const Options& o) {
    if (o.argv.empty()) throw std::invalid_argument("Child::spawn: empty argv");
    auto argv = c_strings(o.argv);
    auto envv = c_strings(o.env);
    auto* env = o.env.empty() ? environ : envv.data();
    Child c;
    {
        // Claimed before the fence opens: reap_orphans holds it while it looks for orphans.
        std::shared_lock fence(spawn_mutex());
        c.pid_ = o.hidden_mounts.empty() ? spawn_plain(o, argv.data(), env)
                                         : spawn_in_mount_view(o, argv.data(), env);
        c.claim_ = ChildClaim(c.pid_);
    }
    c.pidfd_.reset(pidfd_open(c.pid_));
    if (!c.pidfd_) throw_errno("pidfd_open");
    return c;
}

Child Child::adopt(ChildClaim claim) {
    Child c;
    c.pidfd_.reset(pidfd_open(claim.pid()));
    if (!c.pidfd_) throw_errno(fmt::format("pidfd_open {}", claim.pid()));
    c.pid_ = claim.pid();
    c.claim_ = std::move(claim);
    return c;
}

UniqueFd Child::release_pidfd() noexcept {
    pid_ = -1;
    return std::move(pidfd_);
}

SpawnFence::SpawnFence() : lock_(spawn_mutex()) {}

Child::Child(Child&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      pidfd_(std::move(other.pidfd_)),
      claim_(std::move(other.claim_)) {}

Child& Child::operator=(Child&& other) noexcept {
    if (this != &other) {
        kill_and_reap();
        pid_ = std::exchange(other.pid_, -1);
        pidfd_ = std::move(other.pidfd_);
        claim_ = std::move(other.claim_);
    }
    return *this;
}

Child::~Child() {
    kill_and_reap();
}

void Child::signal(int sig) {
    if (pid_ <= 0) return;
    // pidfd_send_signal cannot hit a recycled pid.
    if (::syscall(SYS_pidfd_send_signal, pidfd_.get(), sig, nullptr, 0) != 0 && errno != ESRCH)
        throw_errno("pidfd_send_signal");
}

std::optional<int> Child::wait_for(std::chrono::milliseconds timeout) {
    if (pid_ <= 0) throw std::logic_error("Child::wait_for: no child");
    struct pollfd p {
        pidfd_.get(), POLLIN, 0
    };
    int rc;
    do {
        rc = ::poll(&p, 1, static_cast<int>(timeout.count()));
    } while (rc < 0 && errno == EINTR);
    if (rc < 0) throw_errno("poll pidfd");
    if (rc == 0) return std::nullopt;
    return wait();
}

int Child::wait() {
    if (pid_ <= 0) throw std::logic_error("Child::wait: no child");
    int status = 0;
    pid_t r;
    do {
        r = ::waitpid(pid_, &status, 0);
    } while (r < 0 && errno == EINTR);
    if (r < 0) throw_errno("waitpid");
    forget();
    return status;
}

void Child::kill_and_reap() noexcept {
    if (pid_ <= 0) return;
    ::syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0);
    int status;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    forget();
}

void Child::forget() noexcept {
    pid_ = -1;
    pidfd_.reset();
    claim_.reset();
}

ChildClaim::ChildClaim(int pid) : pid_(pid) {
    std::lock_guard g(claims().mu);
    claims().pids.insert(pid);
}

ChildClaim& ChildClaim::operator=(ChildClaim&& o) noexcept {
    if (this != &o) {
        reset();
        pid_ = std::exchange(o.pid_, -1);
    }
    return *this;
}

void ChildClaim::reset() noexcept {
    if (pid_ <= 0) return;
    std::lock_guard g(claims().mu);
    if (auto it = claims().pids.find(pid_); it != claims().pids.end()) claims().pids.erase(it);
    pid_ = -1;
}

std::vector<int> child_pids() {
    std::vector<int> out;
    for (const auto& tid : list_dir("/proc/self/task", true)) {
        std::ifstream in(fmt::format("/proc/self/task/{}/children", tid));
        for (int pid; in >> pid;) out.push_back(pid);
    }
    return out;
}

std::optional<ProcessStat> process_stat(int pid) {
    std::ifstream in(fmt::format("/proc/{}/stat", pid));
    std::string stat;
    if (!std::getline(in, stat)) return std::nullopt;
    auto close = stat.rfind(')');  // the name in parentheses may hold anything, ')' included
    if (close == std::string::npos) return std::nullopt;
    std::istringstream rest(stat.substr(close + 1));
    ProcessStat st;
    if (!(rest >> st.state >> st.parent)) return std::nullopt;
    return st;
}

int reap_orphans(std::chrono::milliseconds settle) {
    auto until = std::chrono::steady_clock::now() + settle;
    auto backoff = std::chrono::microseconds(100);
    int reaped = 0;
    for (;;) {
        int running = 0;
        {
            // No spawn is between its clone and its claim while this looks.
            std::unique_lock fence(spawn_mutex());
            std::lock_guard g(claims().mu);
            for (int pid : child_pids()) {
                if (claims().pids.contains(pid)) continue;
                siginfo_t info{};
                if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG) != 0)
                    continue;
                if (info.si_pid == pid)
                    ++reaped;
                else
                    ++running;
            }
        }
        if (running == 0 || std::chrono::steady_clock::now() >= until) return reaped;
        std::this_thread::sleep_for(backoff);
        backoff = std::min(backoff * 2, std::chrono::microseconds(5000));
    }
}

bool CommandResult::ok() const noexcept {
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

std::string CommandResult::describe() const {
    std::string_view e = err;
    while (!e.empty() && (e.back() == '\n' || e.back() == ' ')) e.remove_suffix(1);
    if (auto nl = e.rfind('\n'); nl != std::string_view::npos) e = e.substr(nl + 1);
    std::string how = WIFEXITED(status)     ? fmt::format("exit {}", WEXITSTATUS(status))
                      : WIFSIGNALED(status) ? fmt::format("signal {}", WTERMSIG(status))
                                            : fmt::format("status {}", status);
    return e.empty() ? how : fmt::format("{}: {}", how, e);
}

CommandResult run_command(const std::vector<std::string>& argv) {
    return run_command(argv, {});
}

CommandResult run_command(const std::vector<std::string>& argv, const std::string& program) {
    Child::Options o;
    o.argv = argv;
    o.program = program;
    return run_command(std::move(o));
}

CommandResult run_command(Child::Options o) {
    constexpr std::size_t cap = 1 << 20;
    int out_pipe[2], err_pipe[2];
    if (::pipe2(out_pipe, O_CLOEXEC) != 0) throw_errno("pipe");
    UniqueFd out_r(out_pipe[0]), out_w(out_pipe[1]);
    if (::pipe2(err_pipe, O_CLOEXEC) != 0) throw_errno("pipe");
    UniqueFd err_r(err_pipe[0]), err_w(err_pipe[1]);
    o.stdout_fd = out_w.get();
    o.stderr_fd = err_w.get();
    Child child = Child::spawn(o);
    out_w.reset();
    err_w.reset();

    CommandResult r;
    struct pollfd fds[2] = {{out_r.get(), POLLIN, 0}, {err_r.get(), POLLIN, 0}};
    std::string* sinks[2] = {&r.out, &r.err};
    int open_count = 2;
    char buf[16384];
    while (open_count > 0) {
        int rc = ::poll(fds, 2, -1);
        if (rc < 0) {
            if (errno == EINTR) continue;
            throw_errno("poll command output");
        }
        for (int i = 0; i < 2; ++i) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            auto n = ::read(fds[i].fd, buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                fds[i].fd = -1;
                --open_count;
                continue;
            }
            if (sinks[i]->size() < cap)
                sinks[i]->append(buf, std::min<std::size_t>(static_cast<std::size_t>(n),
                                                            cap - sinks[i]->size()));
        }
    }
    r.status = child.wait();
    return r;
}

SealedProgram::SealedProgram(const std::string& file) {
    UniqueFd in(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
    if (!in) throw_errno(fmt::format("open {}", file));
    fd_.reset(::memfd_create("coffer-sealed-program", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (!fd_) throw_errno("memfd_create");
    for (;;) {
        // Kernel to kernel; short copies are resumed.
        auto n = ::sendfile(fd_.get(), in.get(), nullptr, 1 << 30);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_errno(fmt::format("copy {}", file));
        if (n == 0) break;
    }
    if (::fchmod(fd_.get(), 0500) != 0) throw_errno("fchmod sealed program");
    if (::fcntl(fd_.get(), F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) !=
        0)
        throw_errno("seal program");
    path_ = fmt::format("/proc/{}/fd/{}", ::getpid(), fd_.get());
}

}  // namespace coffer
