// The one way the manager's parts tell each other that something changed. The registries, the
// trust anchor and the API emit into a ClusterEvents; the Cluster (cluster.h) implements it and
// routes each event to the parts that act on it (orchestrator, dispatcher, node port). No part
// holds a pointer to another part to call it back.
//
// Every event only signals: a receiver posts or wakes its own thread and returns. An event may
// be emitted while the emitter holds its own lock (a registry's writers' lock), so a receiver
// never calls back into the emitter before it returns.
#pragma once

#include <string>

namespace coffer::manager {

class ClusterEvents {
  public:
    virtual ~ClusterEvents() = default;

    // A registry's records changed (after the store write is durable), on the writer's thread,
    // under that registry's writers' lock.
    virtual void services_changed() {}
    virtual void tasks_changed() {}
    virtual void nodes_changed() {}
    virtual void networks_changed() {}

    // The CA bundle or the issuing CA changed (a rotation started or ended), after it is stored,
    // on the thread that made the change (an API request, or a node port worker finishing a
    // rotation). No ClusterTrust lock is held.
    virtual void ca_changed() {}

    // From the API, after the registry change: the node's record is gone (its sessions must end
    // now), or its role changed (it needs a certificate with the new role).
    virtual void node_removed(const std::string& /*node_id*/) {}
    virtual void node_role_changed(const std::string& /*node_id*/) {}
};

}  // namespace coffer::manager
