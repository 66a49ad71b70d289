// /networks in the Docker Engine API's shapes: the cluster's networks (manager/networks.h).
#pragma once

#include <optional>

#include "api_util.h"

namespace coffer::manager {

class Cluster;

// GET /networks, GET /networks/{id}, POST /networks/create, DELETE /networks/{id},
// POST /networks/prune; nullopt when the route is not one of these.
std::optional<net::Response> network_routes(Cluster& manager, net::Request& r, const Segments& seg);

}  // namespace coffer::manager
