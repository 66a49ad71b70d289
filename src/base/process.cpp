#include "coffer/base/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/resource.h>
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

namespace {

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

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
    int rc = ::posix_spawnp(&pid, argv[0], &fa, &attr, argv.data(),
                            o.env.empty() ? environ : envv.data());
    if (rc != 0) throw SystemError(rc, fmt::format("spawn {}", o.argv[0]));
    Child c;
    c.pid_ = pid;
    c.pidfd_.reset(pidfd_open(pid));
    if (!c.pidfd_) throw_errno("pidfd_open");
    return c;
}

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

}  // namespace coffer
