#include "net_namespace.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cstring>
#include <exception>
#include <thread>

#include <fmt/format.h>

#include "coffer/base/error.h"
#include "coffer/base/log.h"
#include "coffer/base/unique_fd.h"

namespace coffer::agent {

namespace {

void write_proc(const std::string& file, std::string_view value) {
    UniqueFd fd(::open(file.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd) throw_errno(fmt::format("open {}", file));
    if (::write(fd.get(), value.data(), value.size()) != static_cast<ssize_t>(value.size()))
        throw_errno(fmt::format("write {}", file));
}

void loopback_up() {
    UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!s) throw_errno("socket");
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
    if (::ioctl(s.get(), SIOCGIFFLAGS, &ifr) != 0) throw_errno("get flags of lo");
    ifr.ifr_flags |= IFF_UP;
    if (::ioctl(s.get(), SIOCSIFFLAGS, &ifr) != 0) throw_errno("set lo up");
}

// Runs fn on a new thread and waits for it; rethrows what it threw.
void on_thread(const std::function<void()>& fn) {
    std::exception_ptr failure;
    std::thread t([&] {
        try {
            fn();
        } catch (...) {
            failure = std::current_exception();
        }
    });
    t.join();
    if (failure) std::rethrow_exception(failure);
}

}  // namespace

NetNamespace NetNamespace::create(const std::string& path,
                                  const std::map<std::string, std::string>& sysctls) {
    {
        UniqueFd f(
            ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
        if (!f) throw_errno(fmt::format("create {}", path));
    }
    bool mounted = false;
    try {
        // The namespace is per thread: a thread of its own unshares, sets it up, binds it on
        // the file and ends; the agent's threads stay where they are.
        on_thread([&] {
            if (::unshare(CLONE_NEWNET) != 0) throw_errno("unshare network namespace");
            loopback_up();
            // /proc/sys/net is the opening thread's namespace's.
            write_proc("/proc/sys/net/ipv4/ip_unprivileged_port_start", "0");
            write_proc("/proc/sys/net/ipv4/ping_group_range", "0 2147483647");
            for (const auto& [k, v] : sysctls) {
                if (!k.starts_with("net.") || k.find('/') != std::string::npos ||
                    k.find("..") != std::string::npos)
                    throw std::invalid_argument(fmt::format("sysctl {} is not a network one", k));
                std::string file = "/proc/sys/" + k;
                for (auto& c : file)
                    if (c == '.') c = '/';
                write_proc(file, v);
            }
            if (::mount("/proc/thread-self/ns/net", path.c_str(), nullptr, MS_BIND, nullptr) != 0)
                throw_errno(fmt::format("bind network namespace on {}", path));
            mounted = true;
        });
    } catch (...) {
        if (mounted) ::umount2(path.c_str(), MNT_DETACH);
        ::unlink(path.c_str());
        throw;
    }
    NetNamespace ns;
    ns.path_ = path;
    return ns;
}

NetNamespace& NetNamespace::operator=(NetNamespace&& o) noexcept {
    if (this != &o) {
        reset();
        path_ = std::exchange(o.path_, {});
    }
    return *this;
}

void NetNamespace::reset() noexcept {
    if (path_.empty()) return;
    if (!remove_net_namespace(path_))
        log::warn("network", "network namespace {} was not mounted any more", path_);
    path_.clear();
}

bool is_net_namespace(const std::string& path) {
    struct statfs fs {};
    return ::statfs(path.c_str(), &fs) == 0 &&
           (fs.f_type == NSFS_MAGIC || fs.f_type == PROC_SUPER_MAGIC);
}

bool remove_net_namespace(const std::string& path) noexcept {
    bool was = false;
    struct statfs fs {};
    if (::statfs(path.c_str(), &fs) == 0 && fs.f_type == NSFS_MAGIC) {
        if (::umount2(path.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) == 0)
            was = true;
        else
            log::warn("network", "unmount {}: {}", path, std::strerror(errno));
    }
    if (::unlink(path.c_str()) != 0 && errno != ENOENT)
        log::warn("network", "remove {}: {}", path, std::strerror(errno));
    return was;
}

void in_net_namespace(const std::string& path, const std::function<void()>& fn) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw_errno(fmt::format("open network namespace {}", path));
    on_thread([&] {
        if (::setns(fd.get(), CLONE_NEWNET) != 0)
            throw_errno(fmt::format("enter network namespace {}", path));
        fn();
    });
}

}  // namespace coffer::agent
