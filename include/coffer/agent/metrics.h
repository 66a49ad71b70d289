// The agent's metrics that are read at scrape time (its session, tasks by state, secrets held),
// and its health as the metrics listener answers GET /health. The runner's and the image store's
// timings are recorded where they happen (src/agent/agent_metrics.h).
#pragma once

#include <vector>

#include "coffer/base/metrics.h"
#include "coffer/base/metrics_server.h"

namespace coffer::agent {

class Executor;
class SessionLoop;

// Registers the collectors in metrics::registry(); they read executor and session (borrowed:
// drop the registrations before either goes).
[[nodiscard]] std::vector<metrics::Registration> register_metrics(const Executor& executor,
                                                                  const SessionLoop& session);

// 200 {"status":"ok"} while the session to the manager is open; 503 {"status":"disconnected"}.
metrics::Answer health(const SessionLoop& session);

}  // namespace coffer::agent
