// The locked-memory pool's use as a metric (coffer_secure_memory_bytes{kind}), for the manager's
// and the agent's metrics listener.
#pragma once

#include "coffer/base/metrics.h"

namespace coffer::crypto {

// Registers the collector in metrics::registry() until the registration goes.
[[nodiscard]] metrics::Registration register_secure_memory_metrics();

}  // namespace coffer::crypto
