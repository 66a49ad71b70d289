// The manager's networks, sealed in the store (table `networks`) and indexed in memory, with
// everything allocated for them: each network's subnet and VNI, each node's address on it.
// The predefined networks (ingress, host) exist from the start and cannot be removed.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "coffer/manager/object_table.h"
#include "coffer/model/network.h"
#include "coffer/model/service.h"
#include "coffer/nodeproto/networks.h"

namespace coffer::manager {

class NetworkRegistry {
  public:
    // store and counter are borrowed for the registry's lifetime. Creates the predefined
    // networks when the store has none of them (a new cluster, or one from before networks).
    static Result<std::unique_ptr<NetworkRegistry>> load(store::Store& store,
                                                         VersionCounter& counter);

    // Allocates the subnet (the given one, refused when it overlaps another network's; else the
    // first free /24 of 10.0.0.0/8 from 10.0.1.0/24) and the VNI (the lowest free from 4097),
    // and stores. Errc::already_exists for a taken name, permission_denied for a predefined one.
    Result<model::Network> create(model::NetworkSpec spec);
    // Refused for the predefined networks and while a service uses the network (users).
    Result<model::Network> remove(std::string_view id_or_name);
    // Full ID, then exact name, then unique ID prefix (Docker's order).
    Result<model::Network> find(std::string_view id_or_name) const;
    std::optional<model::Network> get(std::string_view id) const { return table_.get(id); }
    std::vector<model::Network> list() const { return table_.list(); }

    // The services that use a network: (service ID, service name) pairs. Set by the owner once
    // services exist; until then no network is in use.
    using Users =
        std::function<std::vector<std::pair<std::string, std::string>>(const std::string& id)>;
    void set_users(Users users);

    // Held (shared) by a service writer from resolving its networks to storing the service, so
    // that a network cannot be removed in between; remove() takes it exclusively.
    std::shared_lock<std::shared_mutex> hold_attachments() const {
        return std::shared_lock(attach_mutex_);
    }

    // Gives each listed node an address on the network (its bridge's) unless it has one, never
    // one of used (the tasks' and VIPs'), and takes away the addresses of nodes not listed.
    // Returns the network as stored; writes nothing when nothing changes.
    Result<model::Network> set_nodes(const std::string& network_id,
                                     const std::vector<std::string>& node_ids,
                                     const std::vector<std::uint32_t>& used = {});

    void emit_changes(ClusterEvents& events, ObjectTable<model::Network>::Event changed) {
        table_.emit_changes(events, changed);
    }

  private:
    NetworkRegistry(store::Store& store, VersionCounter& counter);
    Result<void> ensure_predefined();

    ObjectTable<model::Network> table_;
    mutable std::shared_mutex attach_mutex_;
    Sync<Users> users_;
};

// Resolves the networks a service spec names (TaskTemplate.Networks, or the deprecated
// Spec.Networks) to the networks' IDs, in the spec and in its JSON, as Swarm stores them. Refused:
// an unknown network (not_found, naming it), the ingress network named explicitly, the host
// network with another network or with published ports, a network named twice. Call it under
// hold_attachments() and keep that until the service is stored.
// warnings receives a line for each attachment to a one-node (bridge) network.
Result<void> resolve_service_networks(const NetworkRegistry& networks, model::ServiceSpec& spec,
                                      std::vector<std::string>& warnings);

// The networks a service's tasks are attached to, by ID: its own (resolved), then ingress when it
// publishes a port in ingress mode. The host network is not among them (see is_host_mode).
std::vector<std::string> attached_network_ids(const model::Service& s,
                                              const std::vector<model::Network>& networks);
// Whether the service's tasks run in the node's network namespace (its only network is host).
bool is_host_mode(const model::Service& s, const std::vector<model::Network>& networks);

// The addresses taken on a network: its IPAM gateway, its nodes', the VIPs on it, and the
// addresses of the tasks that are not over.
std::vector<std::uint32_t> used_addresses(const model::Network& n,
                                          const std::vector<model::Service>& services,
                                          const std::vector<const model::Task*>& tasks);

// Gives every task of tasks that is not over and has no allocation yet its network mode, its
// host-mode ports and an address on each of its service's networks (never a used one). Returns
// the IDs of the tasks it changed. A task whose network has no free address left is left
// without one and named in failed (network name per task ID).
std::vector<std::string> allocate_task_networks(
    std::map<std::string, model::Task, std::less<>>& tasks,
    const std::vector<model::Service>& services, const std::vector<model::Network>& networks,
    std::map<std::string, std::string>* failed = nullptr);

// The VIPs a vip-mode service should have, one per attached network: the ones it has, and new
// ones from the free addresses. nullopt when they are what it has.
std::optional<std::vector<model::VirtualIp>> plan_virtual_ips(
    const model::Service& s, const std::vector<model::Service>& services,
    const std::vector<model::Network>& networks, const std::vector<const model::Task*>& tasks);

// The `networks` message for a node (sequence left 0): the networks its tasks use (tasks of
// tasks assigned to it and not over), and ingress when a service publishes an ingress port;
// for each, this node's address on it, the other nodes' underlay addresses (overlay), the
// services attached to it with their running tasks; and every ingress port with its running
// tasks' ingress addresses. A network this node has no address on yet is left out.
nodeproto::NetworksMessage networks_message(const std::string& node_id,
                                            const std::vector<model::Network>& networks,
                                            const std::vector<model::Service>& services,
                                            const std::vector<model::Task>& tasks,
                                            const std::vector<model::Node>& nodes);
// A node's underlay address from Node::addr ("192.0.2.6:4321" -> "192.0.2.6"); empty when it is
// not an IPv4 address.
std::string underlay_address(std::string_view addr);

// Allocation, exposed for tests.
namespace network_alloc {
// The first /24 of 10.0.0.0/8 from 10.0.1.0/24 that overlaps none of used.
std::optional<model::Ipv4Prefix> free_subnet(const std::vector<model::Ipv4Prefix>& used);
// The lowest VNI from model::first_vni not in used.
std::uint32_t free_vni(const std::vector<std::uint32_t>& used);
// The lowest host address of subnet (within range when given) that is not the network or
// broadcast address and not in used.
std::optional<std::uint32_t> free_address(const model::Ipv4Prefix& subnet,
                                          const std::optional<model::Ipv4Prefix>& range,
                                          const std::vector<std::uint32_t>& used);
}  // namespace network_alloc

}  // namespace coffer::manager
