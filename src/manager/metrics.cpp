#include "coffer/manager/metrics.h"

#include <array>

#include "coffer/base/log.h"
#include "coffer/manager/cluster.h"
#include "coffer/store/store.h"

namespace coffer::manager {

namespace {

constexpr model::TaskState task_states[] = {
    model::TaskState::new_,     model::TaskState::pending,   model::TaskState::assigned,
    model::TaskState::accepted, model::TaskState::preparing, model::TaskState::ready,
    model::TaskState::starting, model::TaskState::running,   model::TaskState::complete,
    model::TaskState::shutdown, model::TaskState::failed,    model::TaskState::rejected,
    model::TaskState::remove,   model::TaskState::orphaned};
constexpr model::NodeState node_states[] = {model::NodeState::unknown, model::NodeState::down,
                                            model::NodeState::ready,
                                            model::NodeState::disconnected};

template <typename State, std::size_t N>
std::size_t slot_of(const State (&all)[N], State s) {
    for (std::size_t i = 0; i < N; ++i)
        if (all[i] == s) return i;
    return N;
}

}  // namespace

std::vector<metrics::Registration> register_metrics(Cluster& cluster) {
    auto& r = metrics::registry();
    std::vector<metrics::Registration> out;
    out.push_back(r.collector(
        "coffer_manager_locked", "1 while the manager's store is locked (autolock, before unlock).",
        metrics::Type::gauge, {},
        [&cluster](metrics::Sink& s) { s.sample({}, cluster.locked() ? 1 : 0); }));
    out.push_back(
        r.collector("coffer_node_sessions", "Node sessions connected to the manager's node port.",
                    metrics::Type::gauge, {}, [&cluster](metrics::Sink& s) {
                        auto* port = cluster.node_port();
                        s.sample({}, port ? static_cast<double>(port->session_count()) : 0);
                    }));
    // Counted through the registries' filters, which see each object without copying it.
    out.push_back(r.collector("coffer_tasks", "Tasks the manager knows, by state.",
                              metrics::Type::gauge, {"state"}, [&cluster](metrics::Sink& s) {
                                  if (cluster.locked()) return;
                                  std::array<std::size_t, std::size(task_states) + 1> counts{};
                                  (void)cluster.tasks().list([&](const model::Task& t) {
                                      ++counts[slot_of(task_states, t.status.state)];
                                      return false;
                                  });
                                  for (std::size_t i = 0; i < std::size(task_states); ++i)
                                      s.sample({model::to_string(task_states[i])},
                                               static_cast<double>(counts[i]));
                              }));
    out.push_back(r.collector("coffer_nodes", "Nodes that joined the cluster, by state.",
                              metrics::Type::gauge, {"state"}, [&cluster](metrics::Sink& s) {
                                  if (cluster.locked()) return;
                                  std::array<std::size_t, std::size(node_states) + 1> counts{};
                                  (void)cluster.nodes().list([&](const model::Node& n) {
                                      ++counts[slot_of(node_states, n.state)];
                                      return false;
                                  });
                                  for (std::size_t i = 0; i < std::size(node_states); ++i)
                                      s.sample({model::to_string(node_states[i])},
                                               static_cast<double>(counts[i]));
                              }));
    out.push_back(r.collector("coffer_secrets", "Secrets in the store (each with its versions).",
                              metrics::Type::gauge, {}, [&cluster](metrics::Sink& s) {
                                  if (auto* secrets = cluster.secrets())
                                      s.sample({}, static_cast<double>(secrets->size()));
                              }));
    return out;
}

metrics::Answer health(Cluster& cluster) {
    if (cluster.locked()) return {503, "application/json", R"({"status":"locked"})"};
    // A manager that lost its store (on etcd) must not receive traffic: another holds it.
    if (auto w = cluster.store().writable(); !w)
        return {503, "application/json", R"({"status":"store lost"})"};
    // A read of the cluster record: the store opens, reads and unseals a value.
    auto read = cluster.store().get(store::Table::meta, "cluster");
    if (!read || !*read) {
        log::warn("metrics", "health: the store did not answer: {}",
                  read ? "no cluster record" : read.error().message);
        return {503, "application/json", R"({"status":"store unavailable"})"};
    }
    return {200, "application/json", R"({"status":"ok"})"};
}

}  // namespace coffer::manager
