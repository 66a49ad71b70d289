// The cluster part of the API: /info, /swarm, /swarm/unlockkey, /swarm/update, /swarm/rotate-dek,
// /cluster/backup.
#pragma once

#include <optional>

#include "api_util.h"

namespace coffer::manager {

class Cluster;

// GET /info, answered while locked too (Swarm.LocalNodeState "locked", as Docker answers: the
// docker CLI's `swarm unlock` looks there before it sends the key).
net::Response cluster_info(Cluster& m);

// The answer when the route is one of the cluster's; nullopt otherwise.
std::optional<net::Response> cluster_routes(Cluster& m, const net::Request& r, const Segments& seg);

}  // namespace coffer::manager
