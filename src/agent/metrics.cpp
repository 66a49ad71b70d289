#include "coffer/agent/metrics.h"

#include "agent_metrics.h"
#include "coffer/agent/executor.h"
#include "coffer/agent/session.h"

namespace coffer::agent {

namespace {

// Registered when the program starts, so that every scrape lists them.
auto& task_starts = metrics::registry().histogram_family(
    "coffer_agent_task_start_duration_seconds",
    "Time the runner took to start a task (secrets, image, network, mounts, the OCI runtime), by "
    "result: started, failed or rejected.",
    {"result"}, metrics::slow_duration_buckets(), metrics::nanoseconds_per_second);
auto& task_teardowns = metrics::registry().histogram(
    "coffer_agent_task_teardown_duration_seconds",
    "Time from a task's processes ending to its processes and secret mount being gone.",
    metrics::slow_duration_buckets(), metrics::nanoseconds_per_second);
auto& image_pulls = metrics::registry().histogram_family(
    "coffer_agent_image_pull_duration_seconds",
    "Image pulls from registries and their time, by result: pulled or failed.", {"result"},
    metrics::slow_duration_buckets(), metrics::nanoseconds_per_second);

}  // namespace

metrics::Histogram& task_start_duration(std::string_view result) {
    return task_starts.with({result});
}

metrics::Histogram& task_teardown_duration() {
    return task_teardowns;
}

metrics::Histogram& image_pull_duration(std::string_view result) {
    return image_pulls.with({result});
}

std::vector<metrics::Registration> register_metrics(const Executor& executor,
                                                    const SessionLoop& session) {
    auto& r = metrics::registry();
    std::vector<metrics::Registration> out;
    out.push_back(
        r.collector("coffer_agent_session_connected",
                    "1 while the agent's session to the manager is open.", metrics::Type::gauge, {},
                    [&session](metrics::Sink& s) { s.sample({}, session.connected() ? 1 : 0); }));
    out.push_back(r.collector("coffer_agent_session_renewals_total",
                              "Node certificates received and stored since the agent started.",
                              metrics::Type::counter, {}, [&session](metrics::Sink& s) {
                                  s.sample({}, static_cast<double>(session.renewals()));
                              }));
    out.push_back(r.collector("coffer_agent_tasks",
                              "Tasks the agent holds (assigned, or ended and still reporting), "
                              "by state.",
                              metrics::Type::gauge, {"state"}, [&executor](metrics::Sink& s) {
                                  for (auto [state, count] : executor.tasks_by_state())
                                      s.sample({to_string(state)}, static_cast<double>(count));
                              }));
    out.push_back(r.collector(
        "coffer_agent_secrets_held",
        "Secret versions the agent holds in locked memory for the tasks assigned to it.",
        metrics::Type::gauge, {}, [&executor](metrics::Sink& s) {
            s.sample({}, static_cast<double>(executor.secrets_held()));
        }));
    return out;
}

metrics::Answer health(const SessionLoop& session) {
    if (!session.connected()) return {503, "application/json", R"({"status":"disconnected"})"};
    return {200, "application/json", R"({"status":"ok"})"};
}

}  // namespace coffer::agent
