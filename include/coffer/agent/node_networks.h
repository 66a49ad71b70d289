// The node's side of the cluster's networks: what the manager's "networks" message describes,
// made real on this node (one Linux bridge per network holding the node's address, a kernel
// VXLAN device on an overlay network's bridge, isolation and masquerading in iptables chains of
// the agent's own), and each task's network namespace with an interface per network, attached
// through the CNI plugins. What it makes it removes; what a killed agent left it removes at start.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "coffer/agent/task.h"
#include "coffer/base/error.h"
#include "coffer/base/unique_fd.h"
#include "coffer/nodeproto/networks.h"

namespace coffer::agent {

struct NodeNetworksOptions {
    std::string cni_path =
        "/usr/lib/cni";  // the CNI plugins (Debian's containernetworking-plugins)
    // How long a task waits for a networks message that lists its networks.
    std::chrono::milliseconds wait_for_networks{30'000};
    // After each message is applied: what else serves the networks (the tasks' resolver, the
    // node's ingress rules). A throw is logged.
    std::function<void(const nodeproto::NetworksMessage&)> on_applied;
    // For a task's namespace after its interfaces are attached, and again after each message
    // (the task's VIP rules): netns is its path, networks the task's network ids. A throw fails
    // the attachment (logged after a message).
    std::function<void(const nodeproto::NetworksMessage&, const std::string& netns,
                       const std::vector<std::string>& networks)>
        on_task;
};

// What a task holds of the node's networks: its namespace and its interfaces. Destroying it
// detaches the interfaces (CNI DEL, in reverse), removes the namespace and releases the networks.
class TaskNetwork {
  public:
    virtual ~TaskNetwork() = default;
    // The task's network namespace (a bind mount in its directory).
    virtual const std::string& netns() const = 0;
    // The task's address on each of its networks, in order (IPv4, no prefix).
    virtual std::vector<std::string> addresses() const = 0;
    // Its resolver: the node's address on its first network.
    virtual std::string nameserver() const = 0;
};

class NodeNetworks {
  public:
    // Holds this network namespace (claim_namespace: Errc::conflict, and nothing touched, when
    // another agent holds it), then removes what an earlier owner left in it
    // (remove_leftovers). Every call runs its tools in the network namespace of the calling
    // thread: the node's.
    explicit NodeNetworks(NodeNetworksOptions options = {});
    // Removes the bridges, VXLAN devices and chains it made. Every TaskNetwork must be gone.
    ~NodeNetworks();
    NodeNetworks(const NodeNetworks&) = delete;
    NodeNetworks& operator=(const NodeNetworks&) = delete;

    // Makes the node's networks match the message, whole: new networks made, changed ones
    // updated (address, MTU, peers), those no longer listed removed once no task uses them.
    // A message older than the last applied one (by sequence) is ignored. Serialised.
    Result<void> apply(const nodeproto::NetworksMessage& message);
    // apply() on a thread of its own (started by the constructor, in its network namespace),
    // for callers that must not block (the session's I/O thread): a message still waiting is
    // replaced by a newer one. A failure is logged; the next message tries again.
    void submit(nodeproto::NetworksMessage message);

    // The task's namespace (<task_dir>/netns) and its interfaces (eth0, eth1... in the order of
    // spec.networks), each a CNI ADD of bridge (static IPAM: the manager's address; the default
    // route through the first network that is not internal), portmap (spec.host_ports, first
    // network only) and firewall, cached in <task_dir>/cni. Waits for networks not yet known
    // (wait_for_networks): then unavailable naming the network. Failures leave nothing.
    Result<std::unique_ptr<TaskNetwork>> attach(const TaskSpec& spec, const std::string& task_dir);

    // The last message applied (sequence 0: none yet).
    nodeproto::NetworksMessage current() const;

    // The calling thread's network namespace for this process alone, while the returned lock
    // file stays open: bridges, VXLAN devices and COFFER-* chains are named the same by every
    // agent, so a second agent in one namespace would take the first one's for leftovers.
    // Errc::conflict when another process holds it.
    static Result<UniqueFd> claim_namespace();
    // What an earlier agent left in the calling thread's network namespace: coffer bridges and
    // VXLAN devices, the COFFER-* chains and the rules jumping to them. Returns how many things
    // were removed. Only with the namespace claimed.
    static int remove_leftovers();
    // What a task's directory records of its interfaces (CNI DEL from the cached results) and
    // its namespace. Returns how many interfaces were detached.
    static int remove_task_leftovers(const std::string& task_dir,
                                     const std::string& cni_path = "/usr/lib/cni");

    // Interface names of a network on this node.
    static std::string bridge_name(std::string_view network_id);
    static std::string vxlan_name(std::string_view network_id);

    struct Impl;

  private:
    std::shared_ptr<Impl> impl_;
};

}  // namespace coffer::agent
