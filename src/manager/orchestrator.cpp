#include "coffer/manager/orchestrator.h"

#include <algorithm>
#include <chrono>
#include <set>

#include "coffer/base/log.h"
#include "coffer/crypto/random.h"
#include "coffer/model/secret_update.h"

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
bool live(const Task& t) {
    return t.desired <= TaskState::running;
}

std::string slot_key(const Service& s, const Task& t) {
    return s.spec.mode == model::ServiceMode::global ? t.node_id : fmt::format("{:020}", t.slot);
}

// One pass's working state: what it read, the task map it edits, what it touched or erases,
// and the earliest time a timer makes the next pass due.
struct Pass {
    Pass(Timestamp now_, const std::vector<Node>& node_list_) : now(now_), node_list(node_list_) {
        for (const auto& n : node_list) nodes[n.meta.id] = &n;
    }

    const Timestamp now;
    const std::vector<Node>& node_list;  // borrowed for the pass
    std::map<std::string, const Node*> nodes;
    std::map<std::string, Task, std::less<>> work;
    std::set<std::string> touched;
    std::vector<std::string> erased;
    std::optional<Timestamp> wake;
    // Tasks that could not get an address on one of their networks: not scheduled.
    std::set<std::string> held;
    const Orchestrator::SecretVersionFn* secret_version = nullptr;  // borrowed for the pass

    void begin(const TaskRegistry::Map& current) { work = {current.begin(), current.end()}; }

    // The secret references of t (a task of s) that follow a secret whose current version is
    // not the one t holds: their indexes.
    std::vector<std::size_t> stale_secrets(const Task& t) const {
        std::vector<std::size_t> out;
        if (secret_version == nullptr || !*secret_version) return out;
        const auto& refs = t.spec.container.secrets;
        for (std::size_t i = 0; i < refs.size(); ++i) {
            if (refs[i].pinned_version) continue;
            auto current = (*secret_version)(refs[i].secret_id);
            if (current && *current != t.secret_version(i)) out.push_back(i);
        }
        return out;
    }
    // Whether t is what s asks for now: its spec and, when the service's running tasks are
    // restarted for a new secret version, the current version of every secret it follows.
    bool up_to_date(const Service& s, const Task& t) const {
        if (t.spec.json != s.spec.task.json) return false;
        auto update = model::secret_update_of(s.spec.labels);
        if (update && update->mode != model::SecretUpdateMode::restart) return true;
        return stale_secrets(t).empty();
    }

    void due(Timestamp t) {
        if (t > now && (!wake || t < *wake)) wake = t;
    }
    // Down, or unknown for longer than the grace period.
    bool node_down(const Node& n) {
        if (n.state == NodeState::down) return true;
        if (n.state != NodeState::unknown) return false;
        Timestamp deadline{n.meta.updated.nanos + node_unknown_grace};
        due(deadline);
        return deadline <= now;
    }
    void touch(Task& t) {
        touched.insert(t.meta.id);
        t.meta.updated = now;
    }
    void set_state(Task& t, TaskState s, std::string message, std::string err = {}) {
        if (t.status.state == s && t.status.message == message && t.status.err == err) return;
        t.status.state = s;
        t.status.message = std::move(message);
        t.status.err = std::move(err);
        t.status.timestamp = now;
        touch(t);
    }
    void shut_down(Task& t) {
        if (t.desired == TaskState::shutdown) return;
        t.desired = TaskState::shutdown;
        touch(t);
    }
    // A task that runs nowhere any more: ended, never sent to a node, or its node is gone.
    bool gone(const Task& t) {
        if (model::is_terminal(t.status.state) || t.status.state < TaskState::assigned) return true;
        auto n = nodes.find(t.node_id);
        return n == nodes.end() || node_down(*n->second);
    }
    Task& create(const Service& s, std::uint64_t slot, const std::string& node_id,
                 TaskState desired, Timestamp not_before) {
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
        // The versions it holds: a pin, else the secret's current version.
        for (const auto& ref : t.spec.container.secrets) {
            auto current = secret_version && *secret_version ? (*secret_version)(ref.secret_id)
                                                             : std::optional<std::uint64_t>{};
            t.secret_versions.push_back(ref.pinned_version ? ref.pinned_version
                                                           : current.value_or(1));
        }
        if (auto mount = model::secret_mount_of(s.spec.labels)) t.secret_mount = *mount;
        // The registry credentials it pulls with: their current version.
        if (const auto& auth = t.spec.container.registry_auth) {
            auto current = secret_version && *secret_version ? (*secret_version)(auth->secret_id)
                                                             : std::optional<std::uint64_t>{};
            t.registry_auth_version = current.value_or(1);
        }
        auto id = t.meta.id;
        touched.insert(id);
        return work.emplace(id, std::move(t)).first->second;
    }
    // The service's tasks by slot (replicated) or node (global).
    std::map<std::string, std::vector<Task*>> slots(const Service& s) {
        std::map<std::string, std::vector<Task*>> out;
        for (auto& [id, t] : work)
            if (t.service_id == s.meta.id) out[slot_key(s, t)].push_back(&t);
        return out;
    }
    // The store write: every touched task not erased, and the erased ones that were stored.
    TaskRegistry::Changes changes(const TaskRegistry::Map& current) {
        TaskRegistry::Changes out;
        std::sort(erased.begin(), erased.end());
        erased.erase(std::unique(erased.begin(), erased.end()), erased.end());
        for (const auto& id : touched)
            if (!std::binary_search(erased.begin(), erased.end(), id))
                out.put.push_back(work.at(id));
        for (const auto& id : erased)
            if (current.count(id)) out.erase.push_back(id);
        return out;
    }
};

// A service status to record after the task write; roll_back also puts the previous spec back.
struct ServiceUpdate {
    std::string id;
    model::UpdateStatus status;
    bool roll_back = false;
};

// Removed services: their tasks are shut down, and erased once they run nowhere.
void shut_down_orphans(Pass& p, const std::vector<Service>& services) {
    std::set<std::string, std::less<>> ids;
    for (const auto& s : services) ids.insert(s.meta.id);
    for (auto& [id, t] : p.work) {
        if (ids.count(t.service_id)) continue;
        p.shut_down(t);
        if (p.gone(t)) p.erased.push_back(id);
    }
}

// Constraint enforcement, as Swarm's constraint enforcer does it: a task wanted on an active node
// that no longer satisfies its constraints (a label was removed), or whose reservation no longer
// fits in what the node reports (its resources shrank; the node's tasks taken in ID order), is
// rejected. The node withdraws it, and its restart policy places it again.
void enforce_placement(Pass& p) {
    struct Available {
        std::int64_t memory_bytes, nano_cpus;
        std::map<std::string, std::int64_t, std::less<>> generic;
    };
    std::map<std::string, Available, std::less<>> available;
    for (auto& [id, t] : p.work) {
        if (!live(t) || t.status.state < TaskState::assigned || model::is_terminal(t.status.state))
            continue;
        auto it = p.nodes.find(t.node_id);
        if (it == p.nodes.end() || it->second->spec.availability != NodeAvailability::active)
            continue;
        const Node& n = *it->second;
        auto& room =
            available
                .try_emplace(n.meta.id,
                             Available{n.description.memory_bytes, n.description.nano_cpus, {}})
                .first->second;
        // A node that has not reported its resources yet (a node from before they were
        // reported, or a manager restarted before its nodes came back) is not held to them.
        static const model::ResourceReservations nothing;
        bool known = n.description.memory_bytes != 0 || n.description.nano_cpus != 0;
        const auto& r = known ? t.spec.reservations : nothing;
        bool fits = satisfies(n, t.spec.constraints) && r.memory_bytes <= room.memory_bytes &&
                    r.nano_cpus <= room.nano_cpus;
        for (const auto& g : r.generic) {
            auto [kind, fresh] = room.generic.try_emplace(g.kind, 0);
            if (fresh) kind->second = generic_total(n.description, g.kind);
            fits = fits && g.discrete <= kind->second;
        }
        if (!fits) {
            p.set_state(t, TaskState::rejected, "task rejected by constraint enforcer",
                        "assigned node no longer meets constraints");
            continue;
        }
        room.memory_bytes -= r.memory_bytes;
        room.nano_cpus -= r.nano_cpus;
        for (const auto& g : r.generic) room.generic[g.kind] -= g.discrete;
    }
}

// Restarts: which ended tasks, and tasks on lost nodes, the restart policy starts again, and when.
void restart_ended_and_lost(Pass& p, const Service& s) {
    const auto& spec = s.spec;
    const bool global = spec.mode == model::ServiceMode::global;
    const auto now = p.now;
    for (auto& [key, list] : p.slots(s)) {
        for (auto* t : std::vector<Task*>(list)) {
            if (!live(*t)) continue;
            const Node* n = p.nodes.count(t->node_id) ? p.nodes.at(t->node_id) : nullptr;
            bool placed = t->status.state >= TaskState::assigned;
            // A task that ended runs nowhere: its node going down, away or draining
            // loses nothing, and only the restart policy may start it again.
            bool ended = model::is_terminal(t->status.state);
            bool node_left = n == nullptr || n->spec.availability == NodeAvailability::drain;
            bool lost = !ended && !t->node_id.empty() && (placed || global) &&
                        (node_left || (placed && p.node_down(*n) && !global));
            if (!ended && !lost) continue;
            const auto& rp = spec.task.restart;
            bool failed = t->status.state == TaskState::failed ||
                          t->status.state == TaskState::rejected ||
                          (t->status.container && t->status.container->exit_code != 0);
            bool restart = lost || rp.condition == model::RestartCondition::any ||
                           (rp.condition == model::RestartCondition::on_failure && failed);
            // Restarts are counted along the slot's chain of tasks (the history is
            // trimmed); with a window, a task that ran longer than it starts a new count.
            std::uint64_t restarts = t->restarts;
            if (rp.window > 0 && now.nanos - t->meta.created.nanos > rp.window) restarts = 0;
            if (restart && !lost && rp.max_attempts > 0 && restarts >= rp.max_attempts)
                restart = false;
            if (!restart) continue;  // the slot stays filled by the ended task
            p.shut_down(*t);
            if (global && (lost || node_left || !satisfies(*n, spec.task.constraints) ||
                           !platform_matches(*n, spec.task.platforms)))
                continue;  // a global service follows the eligible nodes
            auto delay = lost ? 0 : rp.delay;
            Timestamp nb{now.nanos + delay};
            p.create(s, t->slot, global ? t->node_id : std::string(),
                     delay > 0 ? TaskState::ready : TaskState::running, nb)
                .restarts = lost ? restarts : restarts + 1;
        }
    }
}

// Scaling: which slots 1..Replicas, or which eligible nodes, get a new task, and which slots
// beyond Replicas are shut down.
void scale(Pass& p, const Service& s) {
    const auto& spec = s.spec;
    if (spec.mode != model::ServiceMode::global) {
        std::set<std::uint64_t> filled;
        for (auto& [id, t] : p.work)
            if (t.service_id == s.meta.id && live(t)) {
                if (t.slot > spec.replicas)
                    p.shut_down(t);
                else
                    filled.insert(t.slot);
            }
        for (std::uint64_t slot = 1; slot <= spec.replicas; ++slot)
            if (!filled.count(slot)) p.create(s, slot, {}, TaskState::running, p.now);
    } else {
        std::set<std::string> covered;
        for (auto& [id, t] : p.work)
            if (t.service_id == s.meta.id && live(t)) covered.insert(t.node_id);
        for (const auto& n : p.node_list)
            if (!covered.count(n.meta.id) && n.state == NodeState::ready &&
                n.spec.availability == NodeAvailability::active &&
                satisfies(n, spec.task.constraints) && platform_matches(n, spec.task.platforms))
                p.create(s, 0, n.meta.id, TaskState::running, p.now);
    }
}

// Live secret updates: the running tasks of a service in live or signal mode take the current
// version of each secret they follow; the dispatcher sends the node the new bytes and the task
// again, and its agent replaces the files in place.
void refresh_secrets(Pass& p, const Service& s) {
    auto update = model::secret_update_of(s.spec.labels);
    if (!update || (update->mode != model::SecretUpdateMode::live &&
                    update->mode != model::SecretUpdateMode::signal))
        return;
    for (auto& [id, t] : p.work) {
        if (t.service_id != s.meta.id || !live(t) || model::is_terminal(t.status.state)) continue;
        auto stale = p.stale_secrets(t);
        if (stale.empty()) continue;
        t.secret_versions.resize(t.spec.container.secrets.size(), 1);
        for (auto i : stale)
            t.secret_versions[i] =
                (*p.secret_version)(t.spec.container.secrets[i].secret_id).value_or(1);
        t.secret_signal = update->signal;
        p.touch(t);
    }
}

// Rolling update: which outdated slots are replaced in this batch, and how the service's update
// status moves on (started, paused, rolled back, completed). batch_done is the service's
// progress kept between passes.
std::vector<ServiceUpdate> roll_update(Pass& p, const Service& s,
                                       std::optional<Timestamp>& batch_done) {
    const auto& spec = s.spec;
    const bool global = spec.mode == model::ServiceMode::global;
    const auto now = p.now;
    const auto& status = s.update_status;
    const auto& cfg = status && model::is_rollback(status->state) ? spec.rollback : spec.update;
    auto by_slot = p.slots(s);
    std::vector<std::string> outdated;
    UpdateTally tally;
    // Slots whose new task does not run yet. As in swarmkit's updater, the next batch starts
    // once the previous one runs (after the delay); the monitor period holds back only the
    // update's completion (tally.in_flight), not the batches.
    std::size_t starting = 0;
    Timestamp since = status ? status->started : now;
    for (auto& [key, list] : by_slot) {
        bool dirty = false, flying = false, not_running = false;
        for (auto* t : list) {
            bool current_spec = p.up_to_date(s, *t);
            if (live(*t) && !current_spec) dirty = true;
            if (!current_spec || t->meta.created < since || !status) continue;
            ++tally.updated;
            if (t->status.state == TaskState::failed || t->status.state == TaskState::rejected) {
                ++tally.failures;
                tally.failed_task = t->meta.id;
            }
            if (!live(*t)) continue;
            bool stable = t->status.state == TaskState::running &&
                          t->status.timestamp.nanos + cfg.monitor <= now.nanos;
            if (t->status.state == TaskState::running && !stable)
                p.due({t->status.timestamp.nanos + cfg.monitor});
            if (!stable && !model::is_terminal(t->status.state)) flying = true;
            if (t->status.state < TaskState::running) not_running = true;
        }
        if (dirty) outdated.push_back(key);
        if (flying) ++tally.in_flight;
        if (not_running) ++starting;
    }
    tally.outdated = !outdated.empty();

    auto decision = decide_update(status, cfg, s.previous.has_value(), tally, now);
    if (decision.started) batch_done.reset();
    std::size_t in_flight = starting;
    if (decision.replace) {
        if (in_flight == 0 && batch_done && batch_done->nanos + cfg.delay > now.nanos) {
            p.due({batch_done->nanos + cfg.delay});
        } else {
            std::size_t budget = cfg.parallelism == 0          ? outdated.size()
                                 : cfg.parallelism > in_flight ? cfg.parallelism - in_flight
                                                               : 0;
            for (const auto& key : outdated) {
                if (budget == 0) break;
                auto& list = by_slot[key];
                bool has_new = std::any_of(list.begin(), list.end(), [&](Task* t) {
                    return live(*t) && p.up_to_date(s, *t);
                });
                if (has_new) continue;
                const Task* old =
                    *std::find_if(list.begin(), list.end(), [](Task* t) { return live(*t); });
                auto slot = old->slot;
                auto node = global ? old->node_id : std::string();
                if (cfg.order == model::UpdateOrder::stop_first) {
                    for (auto* t : list)
                        if (live(*t)) p.shut_down(*t);
                    p.create(s, slot, node, TaskState::ready, now);
                } else {
                    p.create(s, slot, node, TaskState::running, now);
                }
                --budget;
                ++in_flight;
            }
            batch_done.reset();
        }
    }
    if (in_flight == 0 && !batch_done) batch_done = now;

    std::vector<ServiceUpdate> out;
    for (auto& c : decision.changes) out.push_back({s.meta.id, std::move(c.status), c.roll_back});
    return out;
}

// Slot settling: which held-back tasks may start (the old ones stopped), which old tasks stop
// (start-first: the new one runs), and which ended tasks fall out of the bounded history.
void settle_slots(Pass& p, const Service& s, std::int64_t history_limit) {
    for (auto& [key, list] : p.slots(s)) {
        bool new_running = std::any_of(list.begin(), list.end(), [&](Task* t) {
            return live(*t) && p.up_to_date(s, *t) && t->status.state == TaskState::running;
        });
        for (auto* t : list) {
            if (new_running && live(*t) && !p.up_to_date(s, *t)) p.shut_down(*t);
            if (!live(*t) || t->desired != TaskState::ready) continue;
            bool others = std::any_of(list.begin(), list.end(),
                                      [&](Task* u) { return u != t && !live(*u) && !p.gone(*u); });
            if (t->not_before > p.now)
                p.due(t->not_before);
            else if (!others)
                t->desired = TaskState::running, p.touch(*t);
        }
        std::sort(list.begin(), list.end(),
                  [](Task* a, Task* b) { return a->meta.created > b->meta.created; });
        // Tasks still wanted or still running are kept; the newest ended ones fill
        // the rest of the slot's history.
        std::size_t kept = std::count_if(list.begin(), list.end(),
                                         [&](Task* t) { return live(*t) || !p.gone(*t); });
        for (auto* t : list) {
            if (live(*t) || !p.gone(*t)) continue;
            if (history_limit < 0 || kept < static_cast<std::size_t>(history_limit))
                ++kept;
            else
                p.erased.push_back(t->meta.id);
        }
    }
}

// Placement: which node each task due to start is assigned to, or why it stays pending; tasks
// no longer wanted that never reached a node are marked shut down.
void schedule(Pass& p) {
    Loads loads;
    for (auto& [id, t] : p.work) loads.add(t);
    for (auto& [id, t] : p.work) {
        if (!live(t) && t.status.state < TaskState::assigned) {
            p.set_state(t, TaskState::shutdown, "shutdown");
            continue;
        }
        if (t.desired != TaskState::running || t.status.state >= TaskState::assigned) continue;
        if (p.held.count(id)) continue;
        if (t.not_before > p.now) {
            p.due(t.not_before);
            continue;
        }
        // Why a task waits is its Status.Err, as in Swarm; its message stays the pending one.
        auto placement = place(t, p.node_list, loads);
        if (placement.node_id.empty()) {
            p.set_state(t, TaskState::pending, "pending task scheduling", placement.reason);
            continue;
        }
        t.node_id = placement.node_id;
        p.set_state(t, TaskState::assigned, "scheduler assigned task to node");
        loads.add(t);
    }
}

// Rollback and status recording: each decided status is written in order; a rollback the
// registry refuses (the previous spec's secrets are gone) pauses the update instead.
Result<void> record_update_statuses(ServiceRegistry& services,
                                    const std::vector<ServiceUpdate>& changes) {
    for (const auto& c : changes) {
        if (auto r = services.set_update_status(c.id, c.status, c.roll_back); !r) {
            if (!c.roll_back) return std::move(r).error();
            log::warn("orchestrator", "service {}: rollback refused: {}", c.id, r.error().message);
            auto paused = c.status;
            paused.state = model::UpdateState::paused;
            paused.message = "update paused: rollback refused: " + r.error().message;
            if (auto q = services.set_update_status(c.id, paused, false); !q)
                return std::move(q).error();
        }
    }
    return {};
}

}  // namespace

UpdateDecision decide_update(const std::optional<model::UpdateStatus>& current,
                             const model::UpdateConfig& cfg, bool has_previous,
                             const UpdateTally& tally, Timestamp now) {
    using model::UpdateState;
    UpdateDecision d;
    auto status = current;
    const bool rolling_back = status && model::is_rollback(status->state);
    bool updating = status && (status->state == UpdateState::updating ||
                               status->state == UpdateState::rollback_started);
    const bool paused = status && (status->state == UpdateState::paused ||
                                   status->state == UpdateState::rollback_paused);
    if (tally.outdated && !updating && !paused) {
        status =
            model::UpdateStatus{UpdateState::updating, now, std::nullopt, "update in progress"};
        d.changes.push_back({*status, false});
        d.started = true;
        updating = true;
    }
    if (updating && tally.failures > 0 &&
        static_cast<double>(tally.failures) >
            cfg.max_failure_ratio * static_cast<double>(tally.updated) &&
        cfg.failure_action != model::FailureAction::cont) {
        if (cfg.failure_action == model::FailureAction::rollback && !rolling_back && has_previous) {
            d.changes.push_back(
                {model::UpdateStatus{
                     UpdateState::rollback_started, now, std::nullopt,
                     fmt::format(
                         "update rolled back due to failure or early termination of task {}",
                         tally.failed_task)},
                 true});
        } else {
            d.changes.push_back(
                {model::UpdateStatus{
                     rolling_back ? UpdateState::rollback_paused : UpdateState::paused,
                     status->started, std::nullopt,
                     fmt::format("update paused due to failure or early termination of task {}",
                                 tally.failed_task)},
                 false});
        }
        updating = false;
    }
    d.replace = updating && tally.outdated;
    // Nothing outdated means no batch this pass, so nothing new is in flight either.
    if (updating && !tally.outdated && tally.in_flight == 0)
        d.changes.push_back(
            {model::UpdateStatus{
                 rolling_back ? UpdateState::rollback_completed : UpdateState::completed,
                 status->started, now, rolling_back ? "rollback completed" : "update completed"},
             false});
    return d;
}

Orchestrator::Orchestrator(ServiceRegistry& services, TaskRegistry& tasks, NodeRegistry& nodes,
                           Clock clock)
    : services_(services), tasks_(tasks), nodes_(nodes), clock_(std::move(clock)) {}

Orchestrator::~Orchestrator() {
    stop();
}

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

void Orchestrator::set_task_history_limit(std::int64_t limit) {
    if (history_limit_.exchange(limit) != limit) wake();
}

void Orchestrator::run() {
    std::optional<Timestamp> next;
    for (;;) {
        {
            std::unique_lock lock(mutex_);
            auto pred = [&] { return stopping_ || dirty_; };
            if (next)
                cv_.wait_for(lock,
                             std::chrono::nanoseconds(
                                 std::max<std::int64_t>(0, next->nanos - clock_().nanos)),
                             pred);
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
        if (after_pass_) after_pass_();
    }
}

// Each node's address on each network its tasks that are not over are attached to (every
// ready node on ingress while a service publishes an ingress port); a node with none there
// loses its address.
Result<void> Orchestrator::allocate_node_addresses(const std::vector<Service>& services,
                                                   const std::vector<model::Network>& networks) {
    auto tasks = tasks_.list();
    std::vector<const Task*> task_ptrs;
    for (const auto& t : tasks) task_ptrs.push_back(&t);
    bool ingress_ports = false;
    for (const auto& s : services)
        for (const auto& p : s.endpoint_ports)
            ingress_ports = ingress_ports || p.publish_mode == model::PublishMode::ingress;
    auto node_list = nodes_.list();
    for (const auto& n : networks) {
        if (n.spec.driver == "host") continue;
        std::set<std::string> nodes;
        for (const auto& t : tasks) {
            if (t.node_id.empty() || model::is_terminal(t.status.state) ||
                t.status.state < TaskState::assigned)
                continue;
            for (const auto& a : t.networks)
                if (a.network_id == n.meta.id) nodes.insert(t.node_id);
        }
        if (n.spec.ingress && ingress_ports)
            for (const auto& node : node_list)
                if (node.state == model::NodeState::ready) nodes.insert(node.meta.id);
        std::vector<std::string> ids(nodes.begin(), nodes.end());
        std::vector<std::string> have;
        for (const auto& [node, addr] : n.node_addresses) have.push_back(node);
        if (have == ids) continue;
        if (auto r = networks_->set_nodes(n.meta.id, ids, used_addresses(n, services, task_ptrs));
            !r)
            return std::move(r).error();
    }
    return {};
}

Result<std::optional<Timestamp>> Orchestrator::reconcile(Timestamp now) {
    std::vector<model::Network> networks;
    if (networks_ != nullptr) {
        networks = networks_->list();
        // VIPs first: the tasks' addresses below then avoid them.
        auto current = services_.list();
        auto tasks = tasks_.list();
        std::vector<const Task*> task_ptrs;
        for (const auto& t : tasks) task_ptrs.push_back(&t);
        for (auto& s : current) {
            auto vips = plan_virtual_ips(s, current, networks, task_ptrs);
            if (!vips) continue;
            if (auto r = services_.set_virtual_ips(s.meta.id, *vips); !r)
                return std::move(r).error().context("orchestrator: service VIPs");
            s.virtual_ips = std::move(*vips);
        }
    }
    auto services = services_.list();
    auto node_list = nodes_.list();
    Pass pass(now, node_list);
    pass.secret_version = &secret_version_;
    std::vector<ServiceUpdate> service_changes;
    const auto history_limit = history_limit_.load();

    auto written =
        tasks_.commit([&](const TaskRegistry::Map& current) -> Result<TaskRegistry::Changes> {
            pass.begin(current);
            shut_down_orphans(pass, services);
            enforce_placement(pass);
            for (const auto& s : services) {
                refresh_secrets(pass, s);
                restart_ended_and_lost(pass, s);
                scale(pass, s);
                for (auto& c : roll_update(pass, s, progress_[s.meta.id].batch_done))
                    service_changes.push_back(std::move(c));
                settle_slots(pass, s, history_limit);
            }
            if (networks_ != nullptr) {
                std::map<std::string, std::string> full;
                for (const auto& id : allocate_task_networks(pass.work, services, networks, &full))
                    pass.touch(pass.work.at(id));
                for (const auto& [id, network] : full) {
                    auto& t = pass.work.at(id);
                    pass.held.insert(id);
                    pass.set_state(t, t.status.state, t.status.message,
                                   fmt::format("no free address left on network {}", network));
                }
            }
            schedule(pass);
            return pass.changes(current);
        });
    if (!written) return std::move(written).error().context("orchestrator");
    if (networks_ != nullptr)
        if (auto r = allocate_node_addresses(services, networks); !r)
            return std::move(r).error().context("orchestrator: node addresses");

    if (auto r = record_update_statuses(services_, service_changes); !r)
        return std::move(r).error();
    for (auto it = progress_.begin(); it != progress_.end();)
        it = std::any_of(services.begin(), services.end(),
                         [&](const Service& s) { return s.meta.id == it->first; })
                 ? std::next(it)
                 : progress_.erase(it);
    return pass.wake;
}

}  // namespace coffer::manager
