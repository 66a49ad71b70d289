// GET /services/{id}/logs and GET /tasks/{id}/logs: task output fetched from the nodes through
// the NodeTransport, answered as Docker's multiplexed stream.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "api_util.h"

namespace coffer::manager {

class Cluster;

// True for the two logs routes (seg: the path without its version prefix).
bool is_logs_route(std::string_view method, const Segments& seg);

// Answers a logs route without blocking: the nodes are asked in parallel, each within a
// deadline; done is called exactly once, from any thread. manager is borrowed until then.
void logs_async(Cluster& manager, const net::Request& r, const Segments& seg,
                std::function<void(net::Response)> done);

// The query of a logs request, validated as Docker's daemon does.
struct LogsOptions {
    bool stdout_ = false;
    bool stderr_ = false;
    bool details = false;
    std::optional<std::size_t> tail;  // nullopt: all lines
};
Result<LogsOptions> parse_logs_options(const net::Request& r);

// The stream ids of Docker's multiplexed stream (stdcopy).
enum class LogStream : std::uint8_t { stdin_ = 0, stdout_ = 1, stderr_ = 2, system = 3 };

// Appends one frame: [stream, 0, 0, 0, size (big-endian u32)] then the payload.
void append_frame(std::string& out, LogStream stream, std::string_view payload);

// The details Docker's daemon puts before each line of a service's log: its attributes sorted
// by key and query-escaped, "com.docker.swarm.node.id=N,com.docker.swarm.service.id=S,
// com.docker.swarm.task.id=T".
std::string log_details(std::string_view node_id, std::string_view service_id,
                        std::string_view task_id);

}  // namespace coffer::manager
