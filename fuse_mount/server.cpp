#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "coffer/base/error.h"
#include "coffer/base/log.h"
#include "served.h"

// Every mount's /dev/fuse fd sits in one epoll set, armed one-shot, and a few threads wait on
// it. A thread takes one request of one mount (a non-blocking read), re-arms that fd so another
// thread may take the mount's next request, and answers. Answers come from memory and never
// wait on a reader, on the manager or on another mount, so no mount can hold a thread for
// long: a thread per mount would cost a thread per task for no gain, and a thread per request
// would let one task's burst of reads start threads without bound.

namespace coffer::fuse_mount {

void FuseServer::Impl::add(const std::shared_ptr<FuseMount::Served>& s) {
    std::lock_guard lock(mu);
    s->id = next_id++;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLONESHOT;
    ev.data.u64 = s->id;
    if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, s->fd, &ev) != 0)
        throw_errno("watch the FUSE session's device");
    sessions.emplace(s->id, s);
}

void FuseServer::Impl::remove(FuseMount::Served& s) noexcept {
    std::lock_guard lock(mu);
    ::epoll_ctl(epoll.get(), EPOLL_CTL_DEL, s.fd, nullptr);
    sessions.erase(s.id);
}

void FuseServer::Impl::run() noexcept {
    while (true) {
        epoll_event ev{};
        int n = ::epoll_wait(epoll.get(), &ev, 1, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            log::error("fuse", "waiting for FUSE requests: {}", std::strerror(errno));
            return;
        }
        if (n == 0) continue;
        if (ev.data.u64 == 0) return;  // the wake fd stays readable: every thread sees it
        std::shared_ptr<FuseMount::Served> s;
        {
            std::lock_guard lock(mu);
            auto it = sessions.find(ev.data.u64);
            if (it == sessions.end()) continue;
            s = it->second;
        }
        fuse_buf buf{};
        int got = fuse_session_receive_buf(s->session, &buf);
        if (!fuse_session_exited(s->session)) {
            epoll_event again{};
            again.events = EPOLLIN | EPOLLONESHOT;
            again.data.u64 = s->id;
            // ENOENT: the mount was removed meanwhile.
            ::epoll_ctl(epoll.get(), EPOLL_CTL_MOD, s->fd, &again);
        }
        if (got > 0) fuse_session_process_buf(s->session, &buf);
        std::free(buf.mem);
    }
}

void FuseServer::Impl::stop() noexcept {
    std::uint64_t one = 1;
    if (::write(wake.get(), &one, sizeof one) != sizeof one)
        log::error("fuse", "stopping the FUSE threads: {}", std::strerror(errno));
    for (auto& t : threads)
        if (t.joinable()) t.join();
}

namespace {

constexpr long fusectl_magic = 0x65735543;
constexpr const char* system_control = "/sys/fs/fuse/connections";

bool is_fusectl(const char* path) {
    struct statfs st {};
    return ::statfs(path, &st) == 0 && st.f_type == fusectl_magic;
}

}  // namespace

FuseServer::FuseServer(unsigned threads, const std::string& control_dir)
    : impl_(std::make_shared<Impl>()) {
    if (is_fusectl(system_control)) {
        impl_->control = system_control;
    } else if (!control_dir.empty()) {
        try {
            make_dir(control_dir, 0700);
            impl_->control_mount =
                Mount::make("fusectl", control_dir, "fusectl", MS_NOSUID | MS_NODEV | MS_NOEXEC);
            impl_->control = control_dir;
        } catch (const SystemError& e) {
            log::warn("fuse",
                      "no fuse control filesystem: a stuck secrets mount cannot be "
                      "aborted: {}",
                      e.what());
        }
    }
    impl_->epoll = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
    if (!impl_->epoll) throw_errno("create the FUSE epoll set");
    impl_->wake = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!impl_->wake) throw_errno("create the FUSE wake fd");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = 0;
    if (::epoll_ctl(impl_->epoll.get(), EPOLL_CTL_ADD, impl_->wake.get(), &ev) != 0)
        throw_errno("watch the FUSE wake fd");
    try {
        for (unsigned i = 0; i < std::max(threads, 1u); ++i)
            impl_->threads.emplace_back([impl = impl_.get()] { impl->run(); });
    } catch (...) {
        impl_->stop();
        throw;
    }
}

FuseServer::~FuseServer() {
    impl_->stop();
    // A mount still here would have no one to answer its readers: end its connection, so that
    // they fail instead of waiting. Its FuseMount still unmounts it.
    std::lock_guard lock(impl_->mu);
    for (const auto& [id, s] : impl_->sessions) {
        log::warn("fuse", "the FUSE server stops before a secrets mount: aborting it");
        abort_connection(impl_->control, s->conn);
    }
}

}  // namespace coffer::fuse_mount
