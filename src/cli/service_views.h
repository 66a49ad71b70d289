// What `coffer service` and `coffer stack` show alike: service and task rows, and the wait for
// a service to converge.
#pragma once

#include <boost/json.hpp>

#include <chrono>
#include <string>

#include "format.h"

namespace coffer::cli {

class ApiClient;

// Polls until the service's tasks of the current spec all run (and the update, if any,
// completed), printing each task's progress; fails with the reason when the update pauses.
void wait_converged(ApiClient& api, const std::string& id, std::chrono::seconds timeout);

// `service ls`'s columns and one service's row.
extern const ListFormat service_list;
boost::json::object service_row(const boost::json::value& s);

// `service ps`'s columns and one task's row; `name` is its "service.slot" name.
extern const ListFormat task_list;
std::string capitalized(std::string s);
boost::json::object task_row(const boost::json::value& t, std::string name, const std::string& node,
                             bool trunc);

}  // namespace coffer::cli
