// The nodes of the cluster, sealed in the store (table `nodes`) and indexed in memory. The node
// transport registers nodes when they join, reports them ready or down, and removes them; the
// API changes their availability, labels and role.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "coffer/manager/object_table.h"
#include "coffer/model/service.h"

namespace coffer::manager {

// How long a node that is down, or unknown (the manager restarted and it has not come back), keeps
// its hostname from its last state change: until then no other node may join under that name.
// Long, because the hostname is a placement key (node.hostname==X): a name freed after a short
// outage would let anyone holding a join token cut a node off for a while and take its place,
// with its tasks and their secrets. Removing the node (`coffer node rm`) frees the name at once.
inline constexpr std::int64_t hostname_hold = 24LL * 3600 * model::second_ns;

struct NodeRegistration {
    std::string id;  // from the node's certificate (CN), never from the node's own claims
    model::NodeRole role = model::NodeRole::worker;
    model::NodeDescription description;
    std::string addr;
    std::optional<model::Timestamp> certificate_expiry;
    // ready for a node whose session is up; a node that just joined is down until its session
    // opens.
    model::NodeState state = model::NodeState::ready;
};

class NodeRegistry : public ObjectTable<model::Node> {
  public:
    // store and counter are borrowed for the registry's lifetime.
    static Result<std::unique_ptr<NodeRegistry>> load(store::Store& store, VersionCounter& counter);

    // Creates the node (reg.state, active) or, when it exists (a rejoin, a renewed certificate),
    // refreshes its description, address, expiry and state; spec is kept. One store write.
    // Checks no hostname: joins go through join().
    Result<model::Node> register_node(NodeRegistration reg);
    // A node joining: creates it (reg.id must be new) unless check_hostname refuses its hostname,
    // checked and created under the writers' lock, so two joins cannot both take one name. A
    // name taken over from a node that is no longer active is logged. One store write.
    Result<model::Node> join(NodeRegistration reg, model::Timestamp now = model::Timestamp::now());
    // already_exists "hostname X is taken by node ID (state): ..." when an active node has this
    // hostname, compared without regard to case. Active: ready or disconnected, or down or
    // unknown for less than hostname_hold since its last state change.
    Result<void> check_hostname(std::string_view hostname,
                                model::Timestamp now = model::Timestamp::now()) const;
    // ready when a session is up, down when it ends. Unchanged state and address: no write.
    Result<void> set_status(std::string_view id, model::NodeState state, std::string_view addr);
    // What the node reports of itself (platform, resources); its hostname is kept. Unchanged:
    // no write.
    Result<void> set_description(std::string_view id, model::NodeDescription description);
    // Availability, labels, role; Errc::conflict "update out of sequence" on a stale version.
    Result<model::Node> update(std::string_view id_or_name, std::uint64_t version,
                               model::NodeSpec spec);
    // Refuses a node that is not down unless force (Docker's words); the caller revokes its
    // certificate.
    Result<model::Node> remove(std::string_view id_or_name, bool force = true);
    // Full ID, exact hostname, unique ID prefix.
    Result<model::Node> find(std::string_view id_or_name) const;

  private:
    using ObjectTable::ObjectTable;
};

}  // namespace coffer::manager
