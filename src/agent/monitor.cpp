#include "monitor.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <vector>

#include "coffer/base/error.h"
#include "coffer/base/log.h"
#include "coffer/base/process.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace coffer::agent {

void LogFile::append(const char* data, std::size_t n) {
    if (!fd_) {
        fd_.reset(
            ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0640));
        if (!fd_) return;
        struct stat st {};
        size_ = ::fstat(fd_.get(), &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
    }
    if (size_ + n > max_ / 2) {
        ::rename(path_.c_str(), (path_ + ".1").c_str());
        fd_.reset(
            ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0640));
        if (!fd_) return;
        size_ = 0;
        if (n > max_ / 2) {  // one burst bigger than the file: keep its tail
            data += n - max_ / 2;
            n = max_ / 2;
        }
    }
    while (n > 0) {
        auto w = ::write(fd_.get(), data, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return;
        }
        data += w;
        n -= static_cast<std::size_t>(w);
        size_ += static_cast<std::uint64_t>(w);
    }
}

Monitor::Monitor()
    : epoll_(::epoll_create1(EPOLL_CLOEXEC)), wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    if (!epoll_) throw_errno("epoll_create1");
    if (!wake_) throw_errno("eventfd");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = wake_.get();
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_.get(), &ev) != 0) throw_errno("epoll_ctl");
    thread_ = std::thread([this] { run(); });
}

Monitor::~Monitor() {
    std::uint64_t one = 1;
    (void)!::write(wake_.get(), &one, sizeof one);
    thread_.join();
}

void Monitor::add(int fd, Watch w) {
    auto p = std::make_shared<Watch>(std::move(w));
    {
        std::lock_guard g(mu_);
        watches_[fd] = p;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
        std::lock_guard g(mu_);
        watches_.erase(fd);
        throw_errno("epoll_ctl add");
    }
}

void Monitor::watch_exit(UniqueFd pidfd, std::function<void(int)> on_exit) {
    int fd = pidfd.get();
    add(fd, Watch{std::move(pidfd), true, std::move(on_exit), nullptr, nullptr});
}

void Monitor::watch_output(UniqueFd fd, std::shared_ptr<LogFile> log,
                           std::function<void()> on_eof) {
    int raw = fd.get();
    int flags = ::fcntl(raw, F_GETFL);
    ::fcntl(raw, F_SETFL, flags | O_NONBLOCK);
    add(raw, Watch{std::move(fd), false, nullptr, std::move(log), std::move(on_eof)});
}

void Monitor::run() {
    epoll_event events[32];
    auto next_sweep = std::chrono::steady_clock::now() + sweep_period;
    while (true) {
        int n = ::epoll_wait(epoll_.get(), events, 32,
                             static_cast<int>(std::chrono::milliseconds(sweep_period).count()));
        if (n < 0) {
            if (errno == EINTR) continue;
            log::error("runner", "epoll_wait: {}", std::strerror(errno));
            return;
        }
        for (int i = 0; i < n; ++i) {
            if (events[i].data.fd == wake_.get()) return;
            handle(events[i].data.fd);
        }
        if (auto now = std::chrono::steady_clock::now(); now >= next_sweep) {
            sweep();
            next_sweep = now + sweep_period;
        }
    }
}

void Monitor::sweep() {
    // A child that ended and that nobody claims (what a runtime left to this subreaper) is
    // reaped now: one inside a task's PID namespace would otherwise hold that namespace's init
    // from ending (the kernel waits for every process of the namespace to be reaped before the
    // init's own exit completes), and with it the task's teardown.
    siginfo_t any{};
    if (::waitid(P_ALL, 0, &any, WEXITED | WNOHANG | WNOWAIT) == 0 && any.si_pid != 0)
        if (int n = reap_orphans(); n > 0)
            log::debug("runner", "reaped {} orphaned process(es) that had ended", n);
    // A watched process that ended a whole sweep ago and is still not reaped: its pidfd's event
    // was not seen. Handled here, and said, so that a task's end never waits on it.
    std::vector<int> ended;
    {
        std::lock_guard g(mu_);
        for (const auto& [fd, w] : watches_) {
            if (!w->is_exit) continue;
            siginfo_t info{};
            bool gone = ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(fd), &info,
                                 WEXITED | WNOHANG | WNOWAIT) == 0 &&
                        info.si_pid != 0;
            if (gone && w->seen_ended) ended.push_back(fd);
            w->seen_ended = gone;
        }
    }
    for (int fd : ended) {
        log::warn("runner", "a task's process ended without its exit being signalled: reaped now");
        handle(fd);
    }
}

void Monitor::handle(int fd) {
    std::shared_ptr<Watch> w;
    {
        std::lock_guard g(mu_);
        auto it = watches_.find(fd);
        if (it == watches_.end()) return;
        w = it->second;
    }
    auto done = [&] {
        ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
        std::lock_guard g(mu_);
        watches_.erase(fd);
    };
    if (w->is_exit) {
        siginfo_t info{};
        if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(fd), &info,
                     WEXITED | WNOHANG) != 0) {
            if (errno == EINTR || errno == EAGAIN) return;
            log::warn("runner", "waitid: {}", std::strerror(errno));
            info.si_pid = 1;
            info.si_code = CLD_KILLED;
            info.si_status = SIGKILL;
        }
        if (info.si_pid == 0) return;  // not yet
        int status =
            info.si_code == CLD_EXITED ? (info.si_status & 0xff) << 8 : (info.si_status & 0x7f);
        done();
        w->on_exit(status);
        return;
    }
    char buf[16384];
    while (true) {
        auto r = ::read(fd, buf, sizeof buf);
        if (r > 0) {
            w->log->append(buf, static_cast<std::size_t>(r));
            continue;
        }
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && errno == EAGAIN) return;
        done();
        if (w->on_eof) w->on_eof();
        return;
    }
}

}  // namespace coffer::agent
