#include "coffer/manager/orchestrator.h"

#include <algorithm>
#include <chrono>
#include <set>

#include "coffer/base/log.h"
#include "coffer/crypto/random.h"

namespace coffer::manager {

using model::Node;
using model::NodeAvailability;
using model::NodeState;
using model::Service;
using model::Task;
using model::TaskState;
using model::Timestamp;

namespace {

// A task the orchestrator still wants: running, or held back (ready) until it may start.
bool live(const Task& t) { return t.desired <= TaskState::running; }

std::string slot_key(const Service& s, const Task& t) {
    return s.spec.mode == model::ServiceMode::global ? t.node_id : fmt::format("{:020}", t.slot);
}

struct Counts {
    std::map<std::string, std::size_t> by_node;
    std::map<std::pair<std::string, std::string>, std::size_t> by_node_service;

    void add(const Task& t) {
        ++by_node[t.node_id];
        ++by_node_service[{t.node_id, t.service_id}];
    }
    static Counts of(const std::vector<const Task*>& tasks) {
        Counts c;
        for (const auto* t : tasks)
            if (!t->node_id.empty() && t->status.state >= TaskState::assigned && !model::is_terminal(t->status.state))
                c.add(*t);
        return c;
    }
};

std::string plural(std::size_t n, std::string_view word) {
    return fmt::format("{} {}{}", n, word, n == 1 ? "" : "s");
}

Placement place_with(const Task& task, const std::vector<Node>& nodes, const Counts& counts) {
    std::size_t unavailable = 0, unmatched = 0;
    const Node* best = nullptr;
    auto load = [&](const Node& n) {
        auto svc = counts.by_node_service.find({n.meta.id, task.service_id});
        auto all = counts.by_node.find(n.meta.id);
        return std::tuple{svc == counts.by_node_service.end() ? 0 : svc->second,
                          all == counts.by_node.end() ? 0 : all->second, n.meta.id};
    };
    for (const auto& n : nodes) {
        if (!task.node_id.empty() && n.meta.id != task.node_id) continue;
        if (n.state != NodeState::ready || n.spec.availability != NodeAvailability::active) {
            ++unavailable;
            continue;
        }
        if (!satisfies(n, task.spec.constraints)) {
            ++unmatched;
            continue;
        }
        if (best == nullptr || load(n) < load(*best)) best = &n;
    }
    if (best) return {best->meta.id, {}};
    std::vector<std::string> why;
    if (unavailable) why.push_back(plural(unavailable, "node") + " not available for new tasks");
    if (unmatched) why.push_back("scheduling constraints not satisfied on " + plural(unmatched, "node"));
    if (why.empty()) why.push_back("no nodes in the cluster");
    return {{}, fmt::format("no suitable node ({})", fmt::join(why, "; "))};
}

}  // namespace

bool satisfies(const Node& node, const std::vector<model::Constraint>& constraints) {
    for (const auto& c : constraints) {
        std::optional<std::string> actual;
        if (c.key == "node.id") actual = node.meta.id;
        else if (c.key == "node.hostname") actual = node.description.hostname;
        else if (c.key == "node.role") actual = std::string(model::to_string(node.spec.role));
        else if (auto it = node.spec.labels.find(c.key.substr(12)); it != node.spec.labels.end()) actual = it->second;
        // A missing label never equals a value and always differs from it, as in Swarm.
        bool equal = actual && *actual == c.value;
        if (equal != c.equal) return false;
    }
    return true;
}

Placement place(const Task& task, const std::vector<Node>& nodes, const std::vector<Task>& tasks) {
    std::vector<const Task*> ptrs;
    for (const auto& t : tasks) ptrs.push_back(&t);
    return place_with(task, nodes, Counts::of(ptrs));
}

Orchestrator::Orchestrator(ServiceRegistry& services, TaskRegistry& tasks, NodeRegistry& nodes, Clock clock)
    : services_(services), tasks_(tasks), nodes_(nodes), clock_(std::move(clock)) {}

Orchestrator::~Orchestrator() { stop(); }

void Orchestrator::start() {
    if (thread_.joinable()) return;
    thread_ = std::thread([this] { run(); });
}

void Orchestrator::stop() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
}

void Orchestrator::wake() {
    {
        std::lock_guard lock(mutex_);
        dirty_ = true;
    }
    cv_.notify_all();
}

void Orchestrator::run() {
    std::optional<Timestamp> next;
    for (;;) {
        {
            std::unique_lock lock(mutex_);
            auto pred = [&] { return stopping_ || dirty_; };
            if (next)
                cv_.wait_for(lock, std::chrono::nanoseconds(std::max<std::int64_t>(0, next->nanos - clock_().nanos)), pred);
            else
                cv_.wait(lock, pred);
            if (stopping_) return;
            dirty_ = false;
        }
        auto now = clock_();
        auto r = reconcile(now);
        if (!r) {
            log::warn("orchestrator", "pass failed: {}", r.error().message);
            next = Timestamp{now.nanos + model::second_ns};
        } else {
            next = *r;
        }
    }
}

Result<std::optional<Timestamp>> Orchestrator::reconcile(Timestamp now) {
    auto services = services_.list();
    auto node_list = nodes_.list();
    std::map<std::string, const Node*> nodes;
    for (const auto& n : node_list) nodes[n.meta.id] = &n;
    std::optional<Timestamp> wake;
    auto due = [&](Timestamp t) {
        if (t > now && (!wake || t < *wake)) wake = t;
    };
    // Down, or unknown for longer than the grace period.
    auto node_down = [&](const Node& n) {
        if (n.state == NodeState::down) return true;
        if (n.state != NodeState::unknown) return false;
        Timestamp deadline{n.meta.updated.nanos + node_unknown_grace};
        due(deadline);
        return deadline <= now;
    };
    std::vector<ServiceChange> service_changes;

    auto written = tasks_.commit([&](const TaskRegistry::Map& current) -> Result<TaskRegistry::Changes> {
        std::map<std::string, Task, std::less<>> work(current.begin(), current.end());
        std::set<std::string> touched;
        std::vector<std::string> erased;
        auto touch = [&](Task& t) {
            touched.insert(t.meta.id);
            t.meta.updated = now;
        };
        auto set_state = [&](Task& t, TaskState s, std::string message) {
            if (t.status.state == s && t.status.message == message) return;
            t.status.state = s;
            t.status.message = std::move(message);
            t.status.timestamp = now;
            touch(t);
        };
        auto shut_down = [&](Task& t) {
            if (t.desired == TaskState::shutdown) return;
            t.desired = TaskState::shutdown;
            touch(t);
        };
        // A task that runs nowhere any more: ended, never sent to a node, or its node is gone.
        auto gone = [&](const Task& t) {
            if (model::is_terminal(t.status.state) || t.status.state < TaskState::assigned) return true;
            auto n = nodes.find(t.node_id);
            return n == nodes.end() || node_down(*n->second);
        };
        auto create = [&](const Service& s, std::uint64_t slot, const std::string& node_id, TaskState desired,
                          Timestamp not_before) -> Task& {
            Task t;
            t.meta = {crypto::random_id(), 0, now, now};
            t.spec = s.spec.task;
            t.service_id = s.meta.id;
            t.service_name = s.spec.name;
            t.slot = slot;
            t.node_id = node_id;
            t.status = {now, TaskState::pending, "pending task scheduling", "", std::nullopt};
            t.desired = desired;
            t.not_before = not_before;
            auto id = t.meta.id;
            touched.insert(id);
            return work.emplace(id, std::move(t)).first->second;
        };

        std::map<std::string, const Service*> by_id;
        for (const auto& s : services) by_id[s.meta.id] = &s;

        for (auto& [id, t] : work) {
            if (by_id.count(t.service_id)) continue;
            shut_down(t);  // its service was removed
            if (gone(t)) erased.push_back(id);
        }

        for (const auto& s : services) {
            const auto& spec = s.spec;
            const bool global = spec.mode == model::ServiceMode::global;
            auto slots = [&] {
                std::map<std::string, std::vector<Task*>> out;
                for (auto& [id, t] : work)
                    if (t.service_id == s.meta.id) out[slot_key(s, t)].push_back(&t);
                return out;
            };

            // Ended tasks and tasks on lost nodes: restart as the policy says.
            for (auto& [key, list] : slots()) {
                for (auto* t : std::vector<Task*>(list)) {
                    if (!live(*t)) continue;
                    const Node* n = nodes.count(t->node_id) ? nodes.at(t->node_id) : nullptr;
                    bool placed = t->status.state >= TaskState::assigned;
                    // A task that ended runs nowhere: its node going down, away or draining
                    // loses nothing, and only the restart policy may start it again.
                    bool ended = model::is_terminal(t->status.state);
                    bool node_left = n == nullptr || n->spec.availability == NodeAvailability::drain;
                    bool lost = !ended && !t->node_id.empty() && (placed || global) &&
                                (node_left || (placed && node_down(*n) && !global));
                    if (!ended && !lost) continue;
                    const auto& rp = spec.task.restart;
                    bool failed = t->status.state == TaskState::failed || t->status.state == TaskState::rejected ||
                                  (t->status.container && t->status.container->exit_code != 0);
                    bool restart = lost || rp.condition == model::RestartCondition::any ||
                                   (rp.condition == model::RestartCondition::on_failure && failed);
                    // Restarts are counted along the slot's chain of tasks (the history is
                    // trimmed); with a window, a task that ran longer than it starts a new count.
                    std::uint64_t restarts = t->restarts;
                    if (rp.window > 0 && now.nanos - t->meta.created.nanos > rp.window) restarts = 0;
                    if (restart && !lost && rp.max_attempts > 0 && restarts >= rp.max_attempts) restart = false;
                    if (!restart) continue;  // the slot stays filled by the ended task
                    shut_down(*t);
                    if (global && (lost || node_left)) continue;  // a global service follows the eligible nodes
                    auto delay = lost ? 0 : rp.delay;
                    Timestamp nb{now.nanos + delay};
                    create(s, t->slot, global ? t->node_id : std::string(),
                           delay > 0 ? TaskState::ready : TaskState::running, nb)
                        .restarts = lost ? restarts : restarts + 1;
                }
            }

            // Scale: one live task per slot 1..Replicas, or per eligible node.
            if (!global) {
                std::set<std::uint64_t> filled;
                for (auto& [id, t] : work)
                    if (t.service_id == s.meta.id && live(t)) {
                        if (t.slot > spec.replicas) shut_down(t);
                        else filled.insert(t.slot);
                    }
                for (std::uint64_t slot = 1; slot <= spec.replicas; ++slot)
                    if (!filled.count(slot)) create(s, slot, {}, TaskState::running, now);
            } else {
                std::set<std::string> covered;
                for (auto& [id, t] : work)
                    if (t.service_id == s.meta.id && live(t)) covered.insert(t.node_id);
                for (const auto& n : node_list)
                    if (!covered.count(n.meta.id) && n.state == NodeState::ready &&
                        n.spec.availability == NodeAvailability::active && satisfies(n, spec.task.constraints))
                        create(s, 0, n.meta.id, TaskState::running, now);
            }

            // Rolling update: live tasks of an older spec are replaced, a batch at a time.
            auto status = s.update_status;
            bool rolling_back = status && model::is_rollback(status->state);
            const auto& cfg = rolling_back ? spec.rollback : spec.update;
            auto by_slot = slots();
            std::vector<std::string> dirty_slots;
            std::size_t in_flight = 0;
            std::size_t updated = 0;
            const Task* failed_task = nullptr;
            std::size_t failures = 0;
            Timestamp since = status ? status->started : now;
            for (auto& [key, list] : by_slot) {
                bool dirty = false, flying = false;
                for (auto* t : list) {
                    bool current_spec = t->spec.json == spec.task.json;
                    if (live(*t) && !current_spec) dirty = true;
                    if (!current_spec || t->meta.created < since || !status) continue;
                    ++updated;
                    if (t->status.state == TaskState::failed || t->status.state == TaskState::rejected) {
                        ++failures;
                        failed_task = t;
                    }
                    if (!live(*t)) continue;
                    bool stable = t->status.state == TaskState::running && t->status.timestamp.nanos + cfg.monitor <= now.nanos;
                    if (t->status.state == TaskState::running && !stable) due({t->status.timestamp.nanos + cfg.monitor});
                    if (!stable && !model::is_terminal(t->status.state)) flying = true;
                }
                if (dirty) dirty_slots.push_back(key);
                if (flying) ++in_flight;
            }
            auto& progress = progress_[s.meta.id];
            bool updating = status && (status->state == model::UpdateState::updating ||
                                       status->state == model::UpdateState::rollback_started);
            if (!dirty_slots.empty() && !updating && !(status && (status->state == model::UpdateState::paused ||
                                                                  status->state == model::UpdateState::rollback_paused))) {
                auto next = model::UpdateStatus{model::UpdateState::updating, now, std::nullopt, "update in progress"};
                service_changes.push_back({s.meta.id, next, false});
                status = next;
                updating = true;
                progress = {};
            }
            if (updating && failures > 0 &&
                static_cast<double>(failures) > cfg.max_failure_ratio * static_cast<double>(updated) &&
                cfg.failure_action != model::FailureAction::cont) {
                if (cfg.failure_action == model::FailureAction::rollback && !rolling_back && s.previous) {
                    service_changes.push_back(
                        {s.meta.id,
                         model::UpdateStatus{model::UpdateState::rollback_started, now, std::nullopt,
                                             fmt::format("update rolled back due to failure or early termination of task {}",
                                                         failed_task->meta.id)},
                         true});
                } else {
                    service_changes.push_back(
                        {s.meta.id,
                         model::UpdateStatus{rolling_back ? model::UpdateState::rollback_paused : model::UpdateState::paused, status->started, std::nullopt,
                                             fmt::format("update paused due to failure or early termination of task {}",
                                                         failed_task->meta.id)},
                         false});
                }
                updating = false;
            }
            if (updating && !dirty_slots.empty()) {
                if (in_flight == 0 && progress.batch_done && progress.batch_done->nanos + cfg.delay > now.nanos) {
                    due({progress.batch_done->nanos + cfg.delay});
                } else {
                    std::size_t budget = cfg.parallelism == 0 ? dirty_slots.size()
                                         : cfg.parallelism > in_flight ? cfg.parallelism - in_flight : 0;
                    for (const auto& key : dirty_slots) {
                        if (budget == 0) break;
                        auto& list = by_slot[key];
                        bool has_new = std::any_of(list.begin(), list.end(), [&](Task* t) {
                            return live(*t) && t->spec.json == spec.task.json;
                        });
                        if (has_new) continue;
                        const Task* old = *std::find_if(list.begin(), list.end(), [](Task* t) { return live(*t); });
                        auto slot = old->slot;
                        auto node = global ? old->node_id : std::string();
                        if (cfg.order == model::UpdateOrder::stop_first) {
                            for (auto* t : list)
                                if (live(*t)) shut_down(*t);
                            create(s, slot, node, TaskState::ready, now);
                        } else {
                            create(s, slot, node, TaskState::running, now);
                        }
                        --budget;
                        ++in_flight;
                    }
                    progress.batch_done.reset();
                }
            }
            if (in_flight == 0 && !progress.batch_done) progress.batch_done = now;
            if (updating && dirty_slots.empty() && in_flight == 0) {
                service_changes.push_back({s.meta.id,
                                           model::UpdateStatus{rolling_back ? model::UpdateState::rollback_completed : model::UpdateState::completed,
                                                               status->started, now,
                                                               rolling_back ? "rollback completed" : "update completed"},
                                           false});
            }

            // Per slot: start held-back tasks once the old ones stopped; with start-first, stop
            // the old ones once the new one runs; keep a bounded history.
            for (auto& [key, list] : slots()) {
                bool new_running = std::any_of(list.begin(), list.end(), [&](Task* t) {
                    return live(*t) && t->spec.json == spec.task.json && t->status.state == TaskState::running;
                });
                for (auto* t : list) {
                    if (new_running && live(*t) && t->spec.json != spec.task.json) shut_down(*t);
                    if (!live(*t) || t->desired != TaskState::ready) continue;
                    bool others = std::any_of(list.begin(), list.end(),
                                              [&](Task* u) { return u != t && !live(*u) && !gone(*u); });
                    if (t->not_before > now) due(t->not_before);
                    else if (!others) t->desired = TaskState::running, touch(*t);
                }
                std::sort(list.begin(), list.end(),
                          [](Task* a, Task* b) { return a->meta.created > b->meta.created; });
                // Tasks still wanted or still running are kept; the newest ended ones fill
                // the rest of the slot's history.
                std::size_t kept = std::count_if(list.begin(), list.end(), [&](Task* t) { return live(*t) || !gone(*t); });
                for (auto* t : list) {
                    if (live(*t) || !gone(*t)) continue;
                    if (kept < task_history_limit) ++kept;
                    else erased.push_back(t->meta.id);
                }
            }
        }

        // Scheduling.
        std::vector<const Task*> all;
        for (auto& [id, t] : work) all.push_back(&t);
        auto counts = Counts::of(all);
        for (auto& [id, t] : work) {
            if (!live(t) && t.status.state < TaskState::assigned) {
                set_state(t, TaskState::shutdown, "shutdown");
                continue;
            }
            if (t.desired != TaskState::running || t.status.state >= TaskState::assigned) continue;
            if (t.not_before > now) {
                due(t.not_before);
                continue;
            }
            auto p = place_with(t, node_list, counts);
            if (p.node_id.empty()) {
                set_state(t, TaskState::pending, p.reason);
                continue;
            }
            t.node_id = p.node_id;
            set_state(t, TaskState::assigned, "scheduler assigned task to node");
            counts.add(t);
        }

        TaskRegistry::Changes changes;
        std::sort(erased.begin(), erased.end());
        erased.erase(std::unique(erased.begin(), erased.end()), erased.end());
        for (const auto& id : touched)
            if (!std::binary_search(erased.begin(), erased.end(), id)) changes.put.push_back(work.at(id));
        for (const auto& id : erased)
            if (current.count(id)) changes.erase.push_back(id);
        return changes;
    });
    if (!written) return std::move(written).error().context("orchestrator");

    for (auto& c : service_changes) {
        if (auto r = services_.set_update_status(c.id, c.status, c.roll_back); !r) {
            if (!c.roll_back) return std::move(r).error();
            log::warn("orchestrator", "service {}: rollback refused: {}", c.id, r.error().message);
            auto paused = c.status;
            paused->state = model::UpdateState::paused;
            paused->message = "update paused: rollback refused: " + r.error().message;
            if (auto p = services_.set_update_status(c.id, paused, false); !p) return std::move(p).error();
        }
    }
    for (auto it = progress_.begin(); it != progress_.end();)
        it = std::any_of(services.begin(), services.end(), [&](const Service& s) { return s.meta.id == it->first; })
                 ? std::next(it)
                 : progress_.erase(it);
    return wake;
}

}  // namespace coffer::manager
