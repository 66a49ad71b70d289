// Task logs: the agents keep each task's combined output in a bounded file; the manager asks the
// nodes for it over their sessions (NodeTransport::fetch_logs), all at once and each within a
// deadline, and answers with Docker's multiplexed stream. The HTTP server answers with complete
// bodies, so a request is answered once every node has answered or timed out (follow is not
// streamed; see docs/api.md).
#include "api_logs.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <memory>
#include <mutex>
#include <vector>

#include "coffer/base/log.h"
#include "coffer/manager/cluster.h"

namespace coffer::manager {

using net::Request;
using net::Response;

namespace {

// How long a node has to answer.
constexpr std::chrono::milliseconds fetch_timeout{5000};
// A response stops growing here (the coffer CLI reads at most 64 MiB): the rest is reported as
// missing, and --tail gets it.
constexpr std::size_t max_body = 32 * 1024 * 1024;

constexpr const char* no_line_times =
    "coffer agents record task output without the time of each line";

// httputils.BoolValue: anything but "", "0", "no", "false", "none" (any case) is true.
bool bool_value(std::string_view v) {
    while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
    while (!v.empty() && v.back() == ' ') v.remove_suffix(1);
    std::string s(v);
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return !(s.empty() || s == "0" || s == "no" || s == "false" || s == "none");
}

// Docker's Unix-seconds form of `since`, "123" or "123.456789": whether it is the epoch (every
// line), or nullopt when malformed.
std::optional<bool> since_is_epoch(std::string_view v) {
    auto dot = v.find('.');
    auto secs = v.substr(0, dot);
    auto nanos = dot == std::string_view::npos ? std::string_view{} : v.substr(dot + 1);
    auto digits = [](std::string_view d) {
        return !d.empty() &&
               std::all_of(d.begin(), d.end(), [](char c) { return c >= '0' && c <= '9'; });
    };
    if (!digits(secs) || secs.size() > 18 ||
        (dot != std::string_view::npos && (!digits(nanos) || nanos.size() > 9)))
        return std::nullopt;
    return secs.find_first_not_of('0') == std::string_view::npos &&
           nanos.find_first_not_of('0') == std::string_view::npos;
}

// url.QueryEscape: unreserved bytes stay, space becomes '+', the rest %XX.
std::string query_escape(std::string_view s) {
    static constexpr char hex[] = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : s) {
        if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
            out += static_cast<char>(c);
        } else if (c == ' ') {
            out += '+';
        } else {
            out += '%';
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    return out;
}

// The lines of a log (without their '\n'; a last line without one counts), the last `tail` only.
std::vector<std::string_view> lines_of(std::string_view data, std::optional<std::size_t> tail) {
    std::vector<std::string_view> lines;
    while (!data.empty()) {
        auto nl = data.find('\n');
        lines.push_back(data.substr(0, nl));
        data = nl == std::string_view::npos ? std::string_view{} : data.substr(nl + 1);
    }
    if (tail && lines.size() > *tail)
        lines.erase(lines.begin(), lines.end() - static_cast<std::ptrdiff_t>(*tail));
    return lines;
}

// A task whose output is asked for.
struct Target {
    std::string node_id, service_id, task_id;
};

// The state of one logs request while its nodes answer.
struct Gather {
    LogsOptions opts;
    std::vector<Target> targets;
    std::vector<std::string> reasons;  // why some output is missing
    std::function<void(Response)> done;

    std::mutex mutex;
    std::vector<std::optional<Result<std::string>>> results;  // guarded by mutex
    std::size_t pending = 0;                                  // guarded by mutex

    void answered(std::size_t i, Result<std::string> r) {
        bool last = false;
        {
            std::lock_guard lock(mutex);
            if (results[i]) return;  // done exactly once is the transport's promise; hold it to it
            results[i] = std::move(r);
            last = --pending == 0;
        }
        if (last) finish();
    }

    // Every node answered (or none was asked): the stream, then why anything is missing.
    void finish() {
        std::string body;
        bool truncated = false;
        for (std::size_t i = 0; i < targets.size() && !truncated; ++i) {
            const auto& t = targets[i];
            auto& r = *results[i];
            if (!r) {
                if (r.error().code == Errc::not_found) continue;  // no output file: nothing written
                if (r.error().code == Errc::unavailable) {
                    log::warn("api", "logs of task {}: node {} is not available", t.task_id,
                              t.node_id);
                    reasons.push_back(fmt::format("node {} is not available", t.node_id));
                } else {
                    log::warn("api", "logs of task {} on node {}: {}", t.task_id, t.node_id,
                              r.error().message);
                    reasons.push_back(fmt::format("task {}: {}", t.task_id, r.error().message));
                }
                continue;
            }
            std::string prefix;
            if (opts.details) prefix = log_details(t.node_id, t.service_id, t.task_id) + ' ';
            for (auto line : lines_of(*r, opts.tail)) {
                if (body.size() + prefix.size() + line.size() + 9 > max_body) {
                    truncated = true;
                    break;
                }
                std::string payload = prefix;
                payload.append(line);
                payload += '\n';
                append_frame(body, LogStream::stdout_, payload);
            }
        }
        if (truncated)
            reasons.push_back(fmt::format(
                "the output exceeds {} MiB (ask for fewer lines with tail)", max_body >> 20));
        if (!reasons.empty()) {
            std::string joined;
            for (const auto& reason : reasons) joined += (joined.empty() ? "" : ", ") + reason;
            append_frame(
                body, LogStream::system,
                fmt::format("Error grabbing logs: warning: incomplete log stream. some logs could "
                            "not be retrieved for the following reasons: {}\n",
                            joined));
        }
        Response resp;
        resp.status = 200;
        resp.content_type = "application/vnd.docker.multiplexed-stream";
        resp.body = std::move(body);
        auto d = std::move(done);
        d(std::move(resp));
    }
};

// Tasks in the order their output is sent: by slot (node for global services), oldest first.
void sort_tasks(std::vector<model::Task>& tasks) {
    std::sort(tasks.begin(), tasks.end(), [](const model::Task& a, const model::Task& b) {
        if (a.slot != b.slot) return a.slot < b.slot;
        if (a.node_id != b.node_id) return a.node_id < b.node_id;
        if (a.meta.created.nanos != b.meta.created.nanos)
            return a.meta.created.nanos < b.meta.created.nanos;
        return a.meta.id < b.meta.id;
    });
}

}  // namespace

bool is_logs_route(std::string_view method, const Segments& seg) {
    return method == "GET" && seg.size() == 3 && (seg[0] == "services" || seg[0] == "tasks") &&
           seg[2] == "logs";
}

Result<LogsOptions> parse_logs_options(const Request& r) {
    LogsOptions o;
    o.stdout_ = bool_value(r.param("stdout"));
    o.stderr_ = bool_value(r.param("stderr"));
    if (!o.stdout_ && !o.stderr_)
        return make_error(Errc::invalid_argument,
                          "Bad parameters: you must choose at least one stream");
    o.details = bool_value(r.param("details"));
    // The HTTP server answers with complete bodies: it cannot keep a stream open yet.
    if (bool_value(r.param("follow")))
        return make_error(Errc::invalid_argument,
                          "follow is not supported: coffer answers with the output the tasks "
                          "have written so far; run without --follow (-f)");
    auto tail = r.param("tail");
    if (!tail.empty() && tail != "all") {
        long long n = 0;
        auto digits = tail.front() == '+' ? tail.substr(1) : tail;
        auto res = std::from_chars(digits.data(), digits.data() + digits.size(), n);
        if (digits.empty() || res.ec != std::errc{} || res.ptr != digits.data() + digits.size())
            return make_error(Errc::invalid_argument,
                              R"(tail value must be a positive integer or "all")");
        if (n < 0) return make_error(Errc::invalid_argument, "negative tail values not supported");
        o.tail = static_cast<std::size_t>(n);
    }
    if (bool_value(r.param("timestamps")))
        return make_error(Errc::invalid_argument,
                          fmt::format("timestamps are not supported: {}", no_line_times));
    if (auto since = r.param("since"); !since.empty()) {
        auto epoch = since_is_epoch(since);
        if (!epoch)
            return make_error(
                Errc::invalid_argument,
                fmt::format("could not parse since timestamp: invalid value \"{}\"", since));
        if (!*epoch)
            return make_error(Errc::invalid_argument,
                              fmt::format("since is not supported: {}", no_line_times));
    }
    return o;
}

void append_frame(std::string& out, LogStream stream, std::string_view payload) {
    auto n = static_cast<std::uint32_t>(payload.size());
    char header[8] = {static_cast<char>(stream),
                      0,
                      0,
                      0,
                      static_cast<char>(n >> 24),
                      static_cast<char>(n >> 16),
                      static_cast<char>(n >> 8),
                      static_cast<char>(n)};
    out.append(header, sizeof header);
    out.append(payload);
}

std::string log_details(std::string_view node_id, std::string_view service_id,
                        std::string_view task_id) {
    return fmt::format(
        "com.docker.swarm.node.id={},com.docker.swarm.service.id={},com.docker.swarm.task.id={}",
        query_escape(node_id), query_escape(service_id), query_escape(task_id));
}

void logs_async(Cluster& manager, const Request& r, const Segments& seg,
                std::function<void(Response)> done) {
    auto opts = parse_logs_options(r);
    if (!opts) return done(Response::error(opts.error()));
    std::vector<model::Task> tasks;
    if (seg[0] == "services") {
        auto s = manager.services().find(seg[1]);
        if (!s) return done(Response::error(s.error()));
        tasks =
            manager.tasks().list([&](const model::Task& t) { return t.service_id == s->meta.id; });
    } else {
        auto t = manager.tasks().find(seg[1]);
        if (!t) return done(Response::error(t.error()));
        tasks.push_back(std::move(*t));
    }
    sort_tasks(tasks);

    auto g = std::make_shared<Gather>();
    g->opts = *opts;
    g->done = std::move(done);
    for (const auto& t : tasks) {
        if (t.node_id.empty()) {
            // As Swarm: a task still waiting for a node is named; one that never got a node and
            // is no longer wanted has no output and no reason to be mentioned.
            if (t.desired <= model::TaskState::running)
                g->reasons.push_back(fmt::format("task {} has not been scheduled", t.meta.id));
            continue;
        }
        if (t.status.state < model::TaskState::starting) continue;  // no container yet: no output
        g->targets.push_back({t.node_id, t.service_id, t.meta.id});
    }
    // The combined output is the stdout stream; a request for stderr alone, or for no line at
    // all, asks no node.
    if (!opts->stdout_ || opts->tail == std::size_t{0}) g->targets.clear();
    g->results.resize(g->targets.size());
    g->pending = g->targets.size();
    if (g->targets.empty()) return g->finish();

    // Answers unavailable "no node port" while there is none.
    auto& transport = manager.node_transport();
    // Copies: the callbacks may run after this request's strings are gone.
    auto targets = g->targets;
    std::size_t tail = opts->tail.value_or(0);  // the transport's 0 means all
    for (std::size_t i = 0; i < targets.size(); ++i) {
        auto on_done = [g, i](Result<std::string> res) { g->answered(i, std::move(res)); };
        transport.fetch_logs(targets[i].node_id, targets[i].task_id, tail, fetch_timeout,
                             std::move(on_done));
    }
}

}  // namespace coffer::manager
