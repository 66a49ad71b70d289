// What the manager's API asks of the nodes through the node port (the sessions to the nodes).
// The Cluster answers it with its node port; while there is none (the store is locked, or no
// port was started) the API does without. Changes the API makes travel as ClusterEvents.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <string>
#include <vector>

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

    // A named volume as its node last reported it.
    struct NodeVolume {
        std::string node_id;
        std::string name;
        std::string mountpoint;
        std::string created_at;
        std::map<std::string, std::string> labels;
    };
    // Every node's volumes, as each last reported them. A transport that reaches no node's
    // volumes answers unavailable.
    virtual Result<std::vector<NodeVolume>> volumes() {
        return make_error(Errc::unavailable, "the nodes' volumes cannot be reached");
    }
    // Asks the node to remove its volume. done is called exactly once, from any thread: removed,
    // or the node's refusal (not_found, conflict when its tasks use it), or unavailable when the
    // node is not connected or does not answer within timeout.
    using VolumeDone = std::function<void(Result<void>)>;
    virtual void remove_volume(const std::string& node_id, const std::string& name,
                               std::chrono::milliseconds timeout, VolumeDone done) {
        (void)node_id, (void)name, (void)timeout;
        done(make_error(Errc::unavailable, "the nodes' volumes cannot be reached"));
    }
};

}  // namespace coffer::manager
