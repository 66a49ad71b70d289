// /volumes: the named local volumes the nodes report (docs/design.md, "Mounts and volumes").
// Volumes live on nodes, made by the tasks that mount them; the manager lists what the nodes
// last reported and asks the nodes to remove them.
#pragma once

#include <functional>
#include <optional>
#include <string_view>

#include "api_util.h"

namespace coffer::manager {

class Cluster;

// GET /volumes, GET /volumes/{name}, POST /volumes/create (refused), POST /volumes/prune
// (refused); nullopt when the route is not one of these.
std::optional<net::Response> volume_routes(Cluster& manager, net::Request& r, const Segments& seg);

// DELETE /volumes/{name}, which waits for the nodes' answers.
bool is_volume_remove_route(std::string_view method, const Segments& seg);
// Refused with 409 in Docker's words while a task that is not over mounts it; otherwise every
// node that reported it is asked to remove it; done (once, from any thread) when all answered.
void volume_remove_async(Cluster& manager, const net::Request& r, const Segments& seg,
                         std::function<void(net::Response)> done);

}  // namespace coffer::manager
