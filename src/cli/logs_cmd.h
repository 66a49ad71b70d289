// coffer service logs: Docker's multiplexed log stream, read and printed as the docker CLI does.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "coffer/base/error.h"

namespace CLI {
class App;
}

namespace coffer::cli {

struct Globals;

// Adds `logs` to the `service` command group.
void add_service_logs_command(CLI::App& service, Globals& g);

// One frame of Docker's multiplexed stream: 1 stdout, 2 stderr, 3 an error from the daemon.
struct LogFrame {
    std::uint8_t stream = 0;
    std::string_view payload;  // points into the demultiplexed body
};
// The frames of a stream; an error when a frame is cut short or names an unknown stream.
Result<std::vector<LogFrame>> demux(std::string_view body);

// A line of a stream asked for with details=true: "[timestamp ]k=v,k=v,... text".
struct LogLine {
    std::string timestamp;                     // empty unless timestamps were asked for
    std::string node_id, service_id, task_id;  // the com.docker.swarm.* details
    std::map<std::string, std::string> extra;  // any other details
    std::string_view text;                     // the line, with its '\n'
};
Result<LogLine> parse_log_line(std::string_view payload, bool timestamps);

// "name.slot.taskid@node" as the docker CLI prints it before "    | ": the task ID truncated to
// 12 characters unless no_trunc, left out with no_task_ids; padded with spaces so that slots of
// up to `width` digits line up.
struct TaskLabel {
    bool no_task_ids = false;
    bool no_trunc = false;
    std::size_t width = 1;
};
std::string task_label(const TaskLabel& o, std::string_view service_name, std::uint64_t slot,
                       std::string_view task_id, std::string_view node_name);

}  // namespace coffer::cli
