// Services, tasks, nodes; networks and distribution as far as the docker CLI needs them.
#pragma once

#include <optional>

#include "api_util.h"

namespace coffer::manager {

class Cluster;

// The answer, or nullopt when the route is not one of these.
std::optional<net::Response> orchestration_routes(Cluster& manager, net::Request& r,
                                                  const Segments& seg);

}  // namespace coffer::manager
