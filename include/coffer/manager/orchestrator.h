// The orchestrator turns services into tasks and the scheduler places tasks on nodes. One pass
// (reconcile) reads services, nodes and tasks and writes the task changes in one atomic store
// write; it is deterministic given the time it is passed, so tests drive it with a fake clock.
// In the manager a thread runs a pass whenever something changed or a timer (restart delay,
// update delay, monitor period) is due.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "coffer/manager/networks.h"
#include "coffer/manager/nodes.h"
#include "coffer/manager/scheduler.h"
#include "coffer/manager/services.h"

namespace coffer::manager {

// Tasks kept per slot (replicated) or per node (global), the running one included: Swarm's
// TaskHistoryRetentionLimit, until set_task_history_limit changes it.
inline constexpr std::size_t task_history_limit = 5;
// A node in state unknown (the manager restarted and its session is not back yet) keeps its
// tasks this long before they are treated as lost.
inline constexpr std::int64_t node_unknown_grace = 60 * model::second_ns;

class Orchestrator {
  public:
    using Clock = std::function<model::Timestamp()>;

    // The registries are borrowed for the orchestrator's lifetime.
    Orchestrator(ServiceRegistry& services, TaskRegistry& tasks, NodeRegistry& nodes,
                 Clock clock = model::Timestamp::now);
    ~Orchestrator();  // stops the thread
    Orchestrator(const Orchestrator&) = delete;
    Orchestrator& operator=(const Orchestrator&) = delete;

    // One reconciliation and scheduling pass at time now. Returns when the next pass is due
    // without any change (a timer), if any.
    Result<std::optional<model::Timestamp>> reconcile(model::Timestamp now);

    // Runs passes on a thread: after every wake() and when a timer is due.
    void start();
    void stop();
    // Something changed: run a pass soon. Cheap, callable from any thread (registry observers).
    void wake();
    // The cluster's TaskHistoryRetentionLimit: ended tasks beyond it are erased from each slot
    // by the next pass (which this wakes); negative keeps every task. Any thread.
    void set_task_history_limit(std::int64_t limit);
    // The networks whose addresses a pass allocates to services (VIPs), tasks and nodes; none
    // until set. Borrowed for the orchestrator's lifetime; set before start().
    void set_networks(NetworkRegistry* networks) { networks_ = networks; }
    // A secret's current version (for the references of the tasks a pass makes that follow it).
    // Set before start().
    using SecretVersionFn = std::function<std::optional<std::uint64_t>(const std::string& id)>;
    void set_secret_versions(SecretVersionFn fn) { secret_version_ = std::move(fn); }
    // Run on the orchestrator's thread after each pass, outside every registry's lock (the
    // cluster wipes secret versions no task holds any more). Set before start().
    void set_after_pass(std::function<void()> fn) { after_pass_ = std::move(fn); }

  private:
    struct UpdateProgress {
        std::optional<model::Timestamp> batch_done;  // when the last batch became stable
    };
    void run();
    Result<void> allocate_node_addresses(const std::vector<model::Service>& services,
                                         const std::vector<model::Network>& networks);

    ServiceRegistry& services_;
    TaskRegistry& tasks_;
    NodeRegistry& nodes_;
    NetworkRegistry* networks_ = nullptr;
    Clock clock_;
    std::map<std::string, UpdateProgress> progress_;  // by service id; the pass's own state
    std::atomic<std::int64_t> history_limit_{static_cast<std::int64_t>(task_history_limit)};
    SecretVersionFn secret_version_;
    std::function<void()> after_pass_;

    std::mutex mutex_;
    std::condition_variable cv_;
    bool dirty_ = true;
    bool stopping_ = false;
    std::thread thread_;
};

// What a pass counted for a service's rolling update.
struct UpdateTally {
    bool outdated = false;      // some slot still has a live task of an older spec
    std::size_t in_flight = 0;  // slots whose new task is not stable yet
    std::size_t updated = 0;    // tasks of the current spec created since the update started
    std::size_t failures = 0;   // of those, the failed or rejected ones
    std::string failed_task;    // the ID of one of them
};
// A service update status to record; roll_back also puts the previous spec back.
struct UpdateStatusChange {
    model::UpdateStatus status;
    bool roll_back = false;
};
struct UpdateDecision {
    std::vector<UpdateStatusChange> changes;  // to record in this order
    bool started = false;                     // a new update starts: its batch timing starts over
    bool replace = false;                     // outdated slots are replaced, a batch at a time
};
// How a service's update moves on, given its status, the update (or, while rolling back, the
// rollback) config, whether a previous spec exists and the pass's tally: it starts when tasks
// are outdated (unless paused), pauses or rolls back when failures exceed the ratio, and
// completes when no task is outdated or in flight. Deterministic given now.
UpdateDecision decide_update(const std::optional<model::UpdateStatus>& status,
                             const model::UpdateConfig& cfg, bool has_previous,
                             const UpdateTally& tally, model::Timestamp now);

}  // namespace coffer::manager
