// The delivery record: which version of which secret reached which task, service and node, when
// the manager sent it to the node for the task, when the task mounted it and when it was removed,
// and, from a mount that counts reads (FUSE), how often the task read it, first and last (never
// bytes). A version a node only held in memory (a task that ended before its mount, pull
// credentials) has a record without a mount. Kept in memory
// and in the store (meta table, keys "delivery/<secret>/<task>/<version>", sealed as every
// value); bounded: the newest max_per_secret records of each secret, at most max_total in all
// (the oldest finished ones go first).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "coffer/base/error.h"
#include "coffer/base/sync.h"
#include "coffer/model/service.h"
#include "coffer/model/time.h"
#include "coffer/nodeproto/status.h"

namespace coffer::store {
class Store;
}

namespace coffer::manager {

class Committer;

struct Delivery {
    std::string secret_id;
    std::uint64_t version = 0;
    std::string task_id, service_id, node_id;
    model::Timestamp sent;  // handed to the node's session for the task
    std::optional<model::Timestamp> mounted;
    std::optional<model::Timestamp> removed;
    bool reads_counted = false;  // its mount counts reads (FUSE); the three below are known
    std::uint64_t reads = 0;     // read requests the task's mount answered with bytes
    std::optional<model::Timestamp> first_read;
    std::optional<model::Timestamp> last_read;
};

// What one status report said about one task.
struct DeliveryReport {
    std::string task_id, service_id, node_id;
    model::TaskState state = model::TaskState::new_;
    std::vector<std::string> secrets;  // "<id>@<version>" its mount holds (sent(): was sent)
    std::vector<nodeproto::SecretReadReport> reads;  // what it read of them so far
};

class DeliveryLog {
  public:
    static constexpr std::size_t max_per_secret = 1000;
    static constexpr std::size_t max_total = 100'000;

    // store and committer are borrowed for the log's lifetime.
    static Result<std::unique_ptr<DeliveryLog>> load(store::Store& store, Committer& committer);

    // What the dispatcher handed a node's session with each task it sent (state unused): opens a
    // record, not yet mounted, for each version the task had no open record of.
    void sent(const std::vector<DeliveryReport>& handed, model::Timestamp now);
    // The dispatcher withdrew a secret version from a node: the records of it there that no
    // task mounted close (the node dropped the bytes).
    void withdrawn(const std::string& node_id, const std::vector<std::string>& secrets,
                   model::Timestamp now);
    // A node's reports (from the dispatcher, after they were stored): marks mounted (or opens) a
    // record for each version a running task holds, and closes the task's mounted records of
    // versions it no longer holds (all of its records once it ended); takes the reads it
    // reports of a version it has a record of.
    void observe(const std::vector<DeliveryReport>& reports, model::Timestamp now);
    // Closes the open records of tasks that ended or are gone without a report (a lost node).
    void close_ended(const std::map<std::string, model::Task, std::less<>>& tasks,
                     model::Timestamp now);
    // A secret's records, oldest first.
    std::vector<Delivery> of(const std::string& secret_id) const;

  private:
    DeliveryLog(store::Store& store, Committer& committer) : store_(store), committer_(committer) {}
    using Key = std::tuple<std::string, std::string, std::uint64_t>;  // secret, task, version
    struct State {
        std::map<Key, Delivery> records;
    };
    // Writes the changed records and erases the evicted ones (group-committed; a failure is
    // logged: the record is evidence, never a reason to refuse a task's report).
    void persist(std::vector<Delivery> changed, std::vector<Key> erased);
    static void evict(State& s, std::vector<Key>& erased);
    // Opens a record of a version for the report's task (sent now) unless one is open; with
    // mounted, marks it mounted now too (an open one not yet mounted as well). What it opened or
    // changed goes to changed.
    static void open(State& s, const DeliveryReport& r, const std::string& secret,
                     std::uint64_t version, model::Timestamp now, bool mounted,
                     std::vector<Delivery>& changed);

    store::Store& store_;
    Committer& committer_;
    Sync<State> state_;
};

}  // namespace coffer::manager
