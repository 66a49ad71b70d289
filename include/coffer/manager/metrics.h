// The manager's metrics that are read at scrape time (node sessions, tasks and nodes by state,
// secrets held), and its health as the metrics listener answers GET /health.
#pragma once

#include <vector>

#include "coffer/base/metrics.h"
#include "coffer/base/metrics_server.h"

namespace coffer::manager {

class Cluster;

// Registers the collectors in metrics::registry(); they read cluster (borrowed: drop the
// registrations before it goes).
[[nodiscard]] std::vector<metrics::Registration> register_metrics(Cluster& cluster);

// 200 {"status":"ok"} when the manager is unlocked and its store answers a read; 503 with
// {"status":"locked"} or {"status":"store unavailable"} otherwise.
metrics::Answer health(Cluster& cluster);

}  // namespace coffer::manager
