// coffer service logs SERVICE|TASK: asks for the stream with details (the IDs of each line's node,
// service and task), then prints each line behind "name.slot.taskid@node    | " as the docker CLI
// does; --raw prints what the stream holds.
#include "logs_cmd.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <memory>

#include "client.h"
#include "coffer/net/http.h"
#include "common.h"

namespace coffer::cli {

namespace json = boost::json;

namespace {

std::size_t digits(std::uint64_t n) {
    return fmt::format("{}", n).size();
}

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// url.QueryUnescape: %XX and '+' for space; a malformed escape is an error.
Result<std::string> query_unescape(std::string_view s) {
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '+') {
            out += ' ';
        } else if (s[i] == '%') {
            int hi = i + 2 < s.size() ? hex_value(s[i + 1]) : -1;
            int lo = i + 2 < s.size() ? hex_value(s[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return usage(fmt::format("invalid URL escape in log details: {}", s));
            out += static_cast<char>(hi * 16 + lo);
            i += 2;
        } else {
            out += s[i];
        }
    }
    return out;
}

struct LogsFlags {
    std::string target;
    std::string tail = "all";
    bool timestamps = false, raw = false, details = false, no_task_ids = false, no_trunc = false;
};

// Names for the IDs in the details, each looked up once.
class Resolver {
  public:
    explicit Resolver(ApiClient& api) : api_(api) {}

    // A node's hostname; its ID when it cannot be found (removed since).
    const std::string& node(const std::string& id) {
        auto [it, added] = nodes_.try_emplace(id, id);
        if (added)
            if (auto n = api_.call("GET", "/nodes/" + net::percent_encode(id)))
                it->second = field(*n, {"Description", "Hostname"});
        return it->second;
    }
    const std::string& service(const std::string& id) {
        auto [it, added] = services_.try_emplace(id, id);
        if (added)
            if (auto s = api_.call(
                    "GET", "/services/" + net::percent_encode(id) + "?insertDefaults=false"))
                it->second = field(*s, {"Spec", "Name"});
        return it->second;
    }
    Result<std::uint64_t> slot(const std::string& id) {
        if (auto it = slots_.find(id); it != slots_.end()) return it->second;
        auto t = api_.call("GET", "/tasks/" + net::percent_encode(id));
        if (!t) return std::move(t).error();
        auto slot = static_cast<std::uint64_t>(std::max<std::int64_t>(0, number(*t, {"Slot"})));
        slots_[id] = slot;
        return slot;
    }

  private:
    ApiClient& api_;
    std::map<std::string, std::string> nodes_, services_;
    std::map<std::string, std::uint64_t> slots_;
};

void run_logs(const Globals& g, const LogsFlags& f) {
    ApiClient api(g.host);
    std::string path;
    TaskLabel label{.no_task_ids = f.no_task_ids, .no_trunc = f.no_trunc};
    // A service by ID, name or prefix first; then a task, as the docker CLI resolves it.
    auto svc =
        api.call("GET", "/services/" + net::percent_encode(f.target) + "?insertDefaults=false");
    if (svc) {
        path = "/services/" + field(*svc, {"ID"}) + "/logs";
        if (at(*svc, {"Spec", "Mode", "Replicated", "Replicas"}))
            label.width = digits(static_cast<std::uint64_t>(std::max<std::int64_t>(
                0, number(*svc, {"Spec", "Mode", "Replicated", "Replicas"}))));
    } else {
        if (svc.error().code != Errc::not_found) fail(svc.error());
        auto task = api.call("GET", "/tasks/" + net::percent_encode(f.target));
        if (!task) {
            if (task.error().code == Errc::not_found)
                fail(make_error(Errc::not_found,
                                fmt::format("no such task or service: {}", f.target)));
            fail(task.error());
        }
        path = "/tasks/" + field(*task, {"ID"}) + "/logs";
        label.width =
            digits(static_cast<std::uint64_t>(std::max<std::int64_t>(0, number(*task, {"Slot"}))));
    }
    bool details = f.details || !f.raw;
    auto body = must(api.get_raw(
        fmt::format("{}?stdout=1&stderr=1&tail={}&timestamps={}&details={}", path,
                    net::percent_encode(f.tail), f.timestamps ? 1 : 0, details ? 1 : 0)));
    auto frames = must(demux(body));

    Resolver names(api);
    std::string daemon_error;
    for (const auto& frame : frames) {
        if (frame.stream == 3) {
            daemon_error.append(frame.payload);
            continue;
        }
        FILE* out = frame.stream == 2 ? stderr : stdout;
        if (f.raw) {
            std::fwrite(frame.payload.data(), 1, frame.payload.size(), out);
            continue;
        }
        auto line = must(parse_log_line(frame.payload, f.timestamps));
        std::string text;
        if (f.timestamps) text = line.timestamp + ' ';
        auto slot = must(names.slot(line.task_id));
        text += task_label(label, names.service(line.service_id), slot, line.task_id,
                           names.node(line.node_id));
        text += "    | ";
        if (f.details) {
            // The details left after the node, service and task IDs, as the docker CLI shows them.
            std::string extra;
            for (const auto& [k, v] : line.extra) extra += (extra.empty() ? "" : ",") + k + "=" + v;
            text += extra + ' ';
        }
        text.append(line.text);
        std::fwrite(text.data(), 1, text.size(), out);
    }
    std::fflush(stdout);
    if (!daemon_error.empty()) {
        while (!daemon_error.empty() && daemon_error.back() == '\n') daemon_error.pop_back();
        constexpr std::string_view grabbing = "Error grabbing logs: ";
        if (daemon_error.starts_with(grabbing)) daemon_error.erase(0, grabbing.size());
        fail(make_error(Errc::unavailable, daemon_error));
    }
}

}  // namespace

Result<std::vector<LogFrame>> demux(std::string_view body) {
    std::vector<LogFrame> frames;
    while (!body.empty()) {
        if (body.size() < 8)
            return make_error(Errc::internal,
                              "malformed log stream from cofferd: a frame header is cut short");
        auto stream = static_cast<std::uint8_t>(body[0]);
        if (stream > 3)
            return make_error(
                Errc::internal,
                fmt::format("malformed log stream from cofferd: unknown stream {}", stream));
        std::size_t size = 0;
        for (int i = 4; i < 8; ++i)
            size = (size << 8) | static_cast<std::uint8_t>(body[static_cast<std::size_t>(i)]);
        if (body.size() - 8 < size)
            return make_error(Errc::internal,
                              "malformed log stream from cofferd: a frame is cut short");
        frames.push_back({stream, body.substr(8, size)});
        body.remove_prefix(8 + size);
    }
    return frames;
}

Result<LogLine> parse_log_line(std::string_view payload, bool timestamps) {
    LogLine line;
    auto rest = payload;
    auto next_word = [&](std::string_view& word) {
        auto sp = rest.find(' ');
        if (sp == std::string_view::npos) return false;
        word = rest.substr(0, sp);
        rest.remove_prefix(sp + 1);
        return true;
    };
    std::string_view word;
    if (timestamps) {
        if (!next_word(word))
            return usage(fmt::format("invalid context in log message: {}", payload));
        line.timestamp = std::string(word);
    }
    if (!next_word(word)) return usage(fmt::format("invalid context in log message: {}", payload));
    line.text = rest;
    while (!word.empty()) {
        auto comma = word.find(',');
        auto pair = word.substr(0, comma);
        word = comma == std::string_view::npos ? std::string_view{} : word.substr(comma + 1);
        auto eq = pair.find('=');
        if (eq == std::string_view::npos)
            return usage(fmt::format("invalid details format in log message: {}", pair));
        auto k = query_unescape(pair.substr(0, eq));
        if (!k) return std::move(k).error();
        auto v = query_unescape(pair.substr(eq + 1));
        if (!v) return std::move(v).error();
        if (*k == "com.docker.swarm.node.id")
            line.node_id = std::move(*v);
        else if (*k == "com.docker.swarm.service.id")
            line.service_id = std::move(*v);
        else if (*k == "com.docker.swarm.task.id")
            line.task_id = std::move(*v);
        else
            line.extra[std::move(*k)] = std::move(*v);
    }
    if (line.node_id.empty()) return usage("missing node id in details");
    if (line.service_id.empty()) return usage("missing service id in details");
    if (line.task_id.empty()) return usage("missing task id in details");
    return line;
}

std::string task_label(const TaskLabel& o, std::string_view service_name, std::uint64_t slot,
                       std::string_view task_id, std::string_view node_name) {
    auto out = fmt::format("{}.{}", service_name, slot);
    if (!o.no_task_ids) out += fmt::format(".{}", o.no_trunc ? task_id : task_id.substr(0, 12));
    out += fmt::format("@{}", node_name);
    if (auto d = digits(slot); o.width > d) out.append(o.width - d, ' ');
    return out;
}

void add_service_logs_command(CLI::App& service, Globals& g) {
    auto* cmd = service.add_subcommand("logs", "Fetch the logs of a service or task");
    auto f = std::make_shared<LogsFlags>();
    cmd->add_option("-n,--tail", f->tail, "Number of lines to show from the end of the logs")
        ->capture_default_str();
    cmd->add_flag("-t,--timestamps", f->timestamps, "Show timestamps");
    cmd->add_flag("--raw", f->raw, "Do not neatly format logs");
    cmd->add_flag("--details", f->details, "Show extra details provided to logs");
    cmd->add_flag("--no-task-ids", f->no_task_ids, "Do not include task IDs in output");
    cmd->add_flag("--no-trunc", f->no_trunc, "Do not truncate output");
    cmd->add_option("target", f->target, "SERVICE|TASK")->required();
    cmd->callback([&g, f] { run_logs(g, *f); });
}

}  // namespace coffer::cli
