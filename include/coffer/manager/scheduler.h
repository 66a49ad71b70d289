// The scheduler's decisions, as Swarm's scheduler makes them: which nodes a task may run on
// (ready and active, enough unreserved resources, constraints, platform, no host-mode port
// already published there, at most MaxReplicas of its service), and among them which one (spread
// over the values of the placement preferences' labels, level by level, then the node with the
// fewest tasks of the service, then the fewest tasks, then the lowest ID). Pure functions of the
// nodes and tasks they are given.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "coffer/model/service.h"

namespace coffer::manager {

// What a node's tasks hold.
struct NodeLoad {
    // Tasks still wanted (desired running or held back), by service: what spreading and
    // MaxReplicas count.
    std::map<std::string, std::size_t, std::less<>> by_service;
    std::size_t total = 0;
    // Reservations of every task sent to the node that has not ended.
    std::int64_t memory_bytes = 0;
    std::int64_t nano_cpus = 0;
    std::map<std::string, std::int64_t, std::less<>> generic;  // by kind
    // Ports published in host mode by those tasks: (protocol, port).
    std::set<std::pair<std::string, std::uint32_t>> host_ports;
};

class Loads {
  public:
    // Counts the tasks that are on a node: assigned to it and not ended.
    void add(const model::Task& t);
    const NodeLoad& of(const std::string& node_id) const;

  private:
    std::map<std::string, NodeLoad, std::less<>> nodes_;
};

// Placement of one task, or the reason none fits in Swarm's words: "no suitable node (...)", the
// reasons ("insufficient resources on 2 nodes", "scheduling constraints not satisfied on 1 node",
// "max replicas per node limit exceed", ...) most frequent first. A task that names its node
// (a global service's) is placed there or nowhere.
struct Placement {
    std::string node_id;
    std::string reason;
};
Placement place(const model::Task& task, const std::vector<model::Node>& nodes, const Loads& loads);

// Whether a node satisfies the constraints.
bool satisfies(const model::Node& node, const std::vector<model::Constraint>& constraints);
// Whether the node's platform is one of the task's (none given: any); x86_64 is amd64 and
// aarch64 is arm64, as Docker reports them.
bool platform_matches(const model::Node& node, const std::vector<model::Platform>& platforms);
// What of the kind the node advertises: its discrete count plus its named resources.
std::int64_t generic_total(const model::NodeDescription& d, std::string_view kind);

}  // namespace coffer::manager
