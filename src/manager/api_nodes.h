// The nodes part of the API: the registry's nodes (the agents) and the manager's own entry.
//
// cofferd is shown as a node, as a Swarm manager is: role manager, availability drain (it runs
// no tasks), ManagerStatus with the node port's address. It is made here from the cluster, not
// stored: the registry, and so the scheduler, the dispatcher and the node port, never see it.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "api_util.h"
#include "coffer/model/service.h"

namespace coffer::manager {

class Cluster;

// The manager's entry (valid once unlocked).
model::Node manager_node(Cluster& m);
// Every manager's entry: this one's first, then the others on a shared store (etcd), down when
// they do not run. With their ManagerStatus as the API shows it.
struct ManagerEntry {
    model::Node node;
    bool leader = false;
    bool reachable = false;
    std::string addr;
};
std::vector<ManagerEntry> manager_entries(Cluster& m);
// The node port's address as agents reach it ("192.0.2.1:4243"; a wildcard listening address
// is replaced by the machine's first non-loopback IPv4, else 127.0.0.1); empty with no node port.
std::string manager_address(Cluster& m);
// The machine's online CPUs and memory, as Docker's NCPU and MemTotal.
std::int64_t machine_cpus();
std::int64_t machine_memory();

// The answer when the route is one of the nodes'; nullopt otherwise.
std::optional<net::Response> node_routes(Cluster& m, net::Request& r, const Segments& seg);

}  // namespace coffer::manager
