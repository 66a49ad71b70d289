// What the manager's API asks of the node port (the sessions to the nodes). The node port
// implements it and registers itself with Manager::set_node_transport(); while none is
// registered (the store is locked, or no port was started) the API does without.
#pragma once

#include <cstddef>
#include <chrono>
#include <functional>
#include <string>

#include "coffer/base/error.h"

namespace coffer::manager {

class NodeTransport {
public:
    virtual ~NodeTransport() = default;

    // The node was removed: close its sessions now; its certificate is refused from now on.
    virtual void node_removed(const std::string& node_id) = 0;
    // The node's role changed: ask it for a new certificate (the role is its OU).
    virtual void node_role_changed(const std::string& node_id) = 0;

    // A task's log from the node that runs (or ran) it: the last `tail` lines (0: all). done is
    // called exactly once, from any thread: the bytes, or unavailable when the node is not
    // connected or does not answer within timeout, or the node's error.
    using LogsDone = std::function<void(Result<std::string>)>;
    virtual void fetch_logs(const std::string& node_id, const std::string& task_id, std::size_t tail,
                            std::chrono::milliseconds timeout, LogsDone done) = 0;
};

}  // namespace coffer::manager
