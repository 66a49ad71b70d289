// What the manager's API asks of the nodes through the node port (the sessions to the nodes).
// The Cluster answers it with its node port; while there is none (the store is locked, or no
// port was started) the API does without. Changes the API makes travel as ClusterEvents.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>

#include "coffer/base/error.h"

namespace coffer::manager {

class NodeTransport {
  public:
    virtual ~NodeTransport() = default;

    // A task's log from the node that runs (or ran) it: the last `tail` lines (0: all). done is
    // called exactly once, from any thread: the bytes, or unavailable when the node is not
    // connected or does not answer within timeout, or the node's error.
    using LogsDone = std::function<void(Result<std::string>)>;
    virtual void fetch_logs(const std::string& node_id, const std::string& task_id,
                            std::size_t tail, std::chrono::milliseconds timeout, LogsDone done) = 0;
};

}  // namespace coffer::manager
