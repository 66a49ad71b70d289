#include "coffer/base/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "coffer/base/error.h"

extern char** environ;

namespace coffer {

void harden_process() {
    if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) throw_errno("prctl(PR_SET_DUMPABLE)");
    struct rlimit none {0, 0};
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

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

// Shared by spawns, exclusive for a SpawnFence. posix_spawn returns once the child has executed
// its program (glibc spawns with CLONE_VFORK), so a spawn holds it exactly while the child may
// still hold a copy of our descriptors.
std::shared_mutex& spawn_mutex() {
    static std::shared_mutex m;
    return m;
}

std::vector<char*> c_strings(const std::vector<std::string>& v) {
    std::vector<char*> out;
    out.reserve(v.size() + 1);
    for (const auto& s : v) out.push_back(const_cast<char*>(s.c_str()));
    out.push_back(nullptr);
    return out;
}

}  // namespace

Child Child::spawn(const Options& o) {
    if (o.argv.empty()) throw std::invalid_argument("Child::spawn: empty argv");
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

    auto argv = c_strings(o.argv);
    auto envv = c_strings(o.env);
    pid_t pid;
    int rc;
    {
        std::shared_lock fence(spawn_mutex());
        auto* env = o.env.empty() ? environ : envv.data();
        rc = o.program.empty() ? ::posix_spawnp(&pid, argv[0], &fa, &attr, argv.data(), env)
                               : ::posix_spawn(&pid, o.program.c_str(), &fa, &attr, argv.data(), env);
    }
    if (rc != 0) throw SystemError(rc, fmt::format("spawn {}", o.argv[0]));
    Child c;
    c.pid_ = pid;
    c.pidfd_.reset(pidfd_open(pid));
    if (!c.pidfd_) throw_errno("pidfd_open");
    return c;
}

SpawnFence::SpawnFence() : lock_(spawn_mutex()) {}

Child::Child(Child&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)), pidfd_(std::move(other.pidfd_)) {}

Child& Child::operator=(Child&& other) noexcept {
    if (this != &other) {
        kill_and_reap();
        pid_ = std::exchange(other.pid_, -1);
        pidfd_ = std::move(other.pidfd_);
    }
    return *this;
}

Child::~Child() { kill_and_reap(); }

void Child::signal(int sig) {
    if (pid_ <= 0) return;
    // pidfd_send_signal cannot hit a recycled pid.
    if (::syscall(SYS_pidfd_send_signal, pidfd_.get(), sig, nullptr, 0) != 0 && errno != ESRCH)
        throw_errno("pidfd_send_signal");
}

std::optional<int> Child::wait_for(std::chrono::milliseconds timeout) {
    if (pid_ <= 0) throw std::logic_error("Child::wait_for: no child");
    struct pollfd p {pidfd_.get(), POLLIN, 0};
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
    pid_ = -1;
    pidfd_.reset();
    return status;
}

int Child::release() noexcept {
    pidfd_.reset();
    return std::exchange(pid_, -1);
}

void Child::kill_and_reap() noexcept {
    if (pid_ <= 0) return;
    ::syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0);
    int status;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    pidfd_.reset();
}

bool CommandResult::ok() const noexcept { return WIFEXITED(status) && WEXITSTATUS(status) == 0; }

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
    constexpr std::size_t cap = 1 << 20;
    int out_pipe[2], err_pipe[2];
    if (::pipe2(out_pipe, O_CLOEXEC) != 0) throw_errno("pipe");
    UniqueFd out_r(out_pipe[0]), out_w(out_pipe[1]);
    if (::pipe2(err_pipe, O_CLOEXEC) != 0) throw_errno("pipe");
    UniqueFd err_r(err_pipe[0]), err_w(err_pipe[1]);
    Child::Options o;
    o.argv = argv;
    o.program = program;
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
                sinks[i]->append(buf, std::min<std::size_t>(static_cast<std::size_t>(n), cap - sinks[i]->size()));
        }
    }
    r.status = child.wait();
    return r;
}

}  // namespace coffer

namespace coffer {

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
    if (::fcntl(fd_.get(), F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) != 0)
        throw_errno("seal program");
    path_ = fmt::format("/proc/{}/fd/{}", ::getpid(), fd_.get());
}

}  // namespace coffer
