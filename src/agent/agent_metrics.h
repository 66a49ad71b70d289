// Metrics the agent's parts record as things happen (docs/metrics.md).
#pragma once

#include <string_view>

#include "coffer/base/metrics.h"

namespace coffer::agent {

// A task's start by the runner, from the assignment's start to a running (or starting, with a
// health check) container; result: started, failed or rejected.
metrics::Histogram& task_start_duration(std::string_view result);
// From the task's processes ending to its processes and secrets being gone.
metrics::Histogram& task_teardown_duration();
// An image pulled from a registry (tasks waiting for the same pull count once); result: pulled
// or failed.
metrics::Histogram& image_pull_duration(std::string_view result);

}  // namespace coffer::agent
