// TaskSpec from JSON, for the developer entry point `coffer-agent run --spec FILE` (the manager's
// assignments come through the session instead). Field names as in TaskSpec.
#pragma once

#include <string_view>

#include "coffer/agent/task.h"
#include "coffer/base/error.h"

namespace coffer::agent {

Result<TaskSpec> task_spec_from_json(std::string_view text);
std::string task_status_to_json(const TaskStatus& status);

}  // namespace coffer::agent
