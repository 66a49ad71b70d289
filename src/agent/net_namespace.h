// Network namespaces the agent makes for its tasks: each one kept by a bind mount on a file the
// agent owns (as `ip netns` does under /run/netns), so that it outlives the thread that made it
// and a runtime or a CNI plugin can enter it by path.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <utility>

namespace coffer::agent {

// A network namespace bound on a file: unmounted and its file removed on destruction. Leaves
// only through release().
class NetNamespace {
  public:
    NetNamespace() = default;
    // A new namespace bound on path (which must not exist), with its loopback up, binding ports
    // below 1024 and ping open to every user (what Docker sets: a task's root in a user
    // namespace holds no capability over a namespace the agent made) and sysctls (net.*) set
    // in it. Throws SystemError, and then leaves nothing.
    static NetNamespace create(const std::string& path,
                               const std::map<std::string, std::string>& sysctls = {});

    NetNamespace(NetNamespace&& o) noexcept : path_(std::exchange(o.path_, {})) {}
    NetNamespace& operator=(NetNamespace&& o) noexcept;
    NetNamespace(const NetNamespace&) = delete;
    NetNamespace& operator=(const NetNamespace&) = delete;
    ~NetNamespace() { reset(); }

    const std::string& path() const noexcept { return path_; }
    bool active() const noexcept { return !path_.empty(); }
    void reset() noexcept;
    [[nodiscard]] std::string release() noexcept { return std::exchange(path_, {}); }

  private:
    std::string path_;
};

// Whether path is a network namespace (a bind mount of one, or /proc/<pid>/ns/net).
bool is_net_namespace(const std::string& path);

// Runs fn on a thread of its own that entered the network namespace at path; what fn spawns
// runs there too. Rethrows what fn threw. Throws SystemError when the namespace cannot be entered.
void in_net_namespace(const std::string& path, const std::function<void()>& fn);

// Removes a namespace bound on path by an earlier process (unmount, then the file); false when
// there was none.
bool remove_net_namespace(const std::string& path) noexcept;

}  // namespace coffer::agent
