// The API's routes as metrics see them: a request's method and route template ("/secrets/{id}"),
// never a raw path, so no secret name or id reaches a label; and the request metrics themselves.
#pragma once

#include <chrono>
#include <cstddef>
#include <string_view>
#include <vector>

namespace coffer::manager {

// The index of the route (method and template) a request takes; unmatched paths share one index
// per method. Segments are the path's, without the /v1.NN prefix.
std::size_t route_index(std::string_view method, const std::vector<std::string_view>& seg);
// The index for a request whose path was refused before routing (a bad version prefix).
std::size_t unrouted_index(std::string_view method);
std::string_view route_method(std::size_t index);
std::string_view route_template(std::size_t index);

// Counts the request in coffer_api_requests_total{method,route,code} and its time since start
// in coffer_api_request_duration_seconds{method,route}. Lock-free once a route and code were
// seen.
void record_request(std::size_t index, int status, std::chrono::steady_clock::time_point start);

}  // namespace coffer::manager
