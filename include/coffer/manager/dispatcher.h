// What each node is told to run, and what it reports back. The node transport (one mutually
// authenticated session per node) subscribes for the node named by its certificate and sends
// what the stream yields; it hands the node's task status reports to report().
//
// A node's assignment set is its tasks that are assigned to it and not yet ended (states
// assigned..running) and that the orchestrator still wants running, plus the secrets and configs
// those tasks reference, and nothing else. The first message is the complete set; later ones are
// deltas. Secrets and configs are added before the tasks that use them and removed after the
// last task on that node that uses them leaves the set.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "coffer/crypto/secure_buffer.h"
#include "coffer/manager/deliveries.h"
#include "coffer/manager/networks.h"
#include "coffer/manager/nodes.h"
#include "coffer/manager/services.h"
#include "coffer/nodeproto/networks.h"
#include "coffer/nodeproto/status.h"

namespace coffer::manager {

struct AssignmentChange {
    enum class Action { add, remove };
    Action action = Action::add;
    // Exactly one of these is set for an add; a remove names the id only.
    std::optional<model::Task> task;
    struct Secret {
        std::string id;
        std::string name;
        crypto::SecureBuffer data;
    };
    std::optional<Secret> secret;  // a secret's or a config's
    std::string id;
    bool is_secret = false;
    bool is_config = false;     // is_secret is set too: a config travels as a secret does
    std::uint64_t version = 0;  // a secret's add or remove: which version (a config's: 0)
};

struct AssignmentMessage {
    bool complete = false;       // the full set (the first message): the node drops anything else
    std::uint64_t sequence = 0;  // 1, 2, ... per stream
    std::vector<AssignmentChange> changes;

    // The wire form (nodeproto::Assignments, see coffer/nodeproto/assignments.h), in secure
    // memory. A task's Args are its ContainerSpec.Command followed by ContainerSpec.Args.
    crypto::SecureBuffer to_json() const;
};

// A node's task status report, as the node protocol carries it.
using StatusReport = nodeproto::TaskReport;

class Dispatcher;

// One node's stream of assignment messages. Not thread-safe: one session reads it.
class NodeStream {
  public:
    ~NodeStream();
    NodeStream(const NodeStream&) = delete;
    NodeStream& operator=(const NodeStream&) = delete;

    // The next message if the node's set changed since the last one (the first call always
    // yields the complete set); nullopt when nothing changed.
    std::optional<AssignmentMessage> poll();
    // poll(), waiting up to timeout for a change.
    std::optional<AssignmentMessage> next(std::chrono::milliseconds timeout);
    // The node's `networks` message (networks_message(), networks.h) when it differs from the
    // last one this stream yielded; the first call always yields one. Send it before what
    // poll() yields next: poll() holds a task back until every network of the task was yielded
    // here (with the node's address on it).
    std::optional<nodeproto::NetworksMessage> poll_networks();
    const std::string& node_id() const noexcept { return node_id_; }

  private:
    friend class Dispatcher;
    NodeStream(Dispatcher& d, std::string node_id) : dispatcher_(d), node_id_(std::move(node_id)) {}
    void changed();

    Dispatcher& dispatcher_;
    std::string node_id_;
    std::uint64_t sequence_ = 0;
    std::set<std::string> sent_tasks_;
    std::set<std::string> sent_secrets_;  // "<id>@<version>"
    // The secret versions each sent task held when sent (a change sends it again).
    std::map<std::string, std::vector<std::uint64_t>> sent_versions_;
    std::set<std::string> sent_configs_;
    std::optional<nodeproto::NetworksMessage> sent_networks_;  // as yielded, sequence included
    std::mutex mutex_;
    std::condition_variable cv_;
    std::uint64_t generation_ = 1;  // bumped on every change
    std::uint64_t seen_ = 0;
};

class Dispatcher {
  public:
    using Clock = std::function<model::Timestamp()>;
    // Borrowed for the dispatcher's lifetime; the caller forwards task and node changes to
    // changed() (the Cluster does, on ClusterEvents::tasks_changed and nodes_changed).
    // clock stamps the reported statuses (the orchestrator's monitor period counts from them).
    Dispatcher(TaskRegistry& tasks, NodeRegistry& nodes, SecretRegistry& secrets,
               ConfigRegistry& configs, Clock clock = model::Timestamp::now);

    // The services and networks the `networks` messages are built from; without them streams
    // yield no networks. Borrowed for the dispatcher's lifetime; set before any subscribe().
    void set_networks(ServiceRegistry* services, NetworkRegistry* networks) {
        services_ = services;
        networks_ = networks;
    }

    // Errc::not_found for a node that is not registered.
    Result<std::unique_ptr<NodeStream>> subscribe(const std::string& node_id);
    // Stores the node's reports. A report about a task not assigned to this node is ignored (a
    // node speaks only for itself); states only move forward. Returns how many were applied.
    // complete: the report lists every task the node has (its first report on a session). A
    // task of this node that the manager no longer wants (desired shutdown) and that the node
    // does not list is then closed as shut down: its node lost it (an agent killed or
    // restarted) and nobody else will report on it.
    Result<std::size_t> report(const std::string& node_id,
                               const std::vector<StatusReport>& statuses, bool complete = false);
    // One node's message of reports.
    struct NodeReports {
        std::string node_id;
        std::vector<StatusReport> statuses;
        bool complete = false;
    };
    // The messages of several nodes (in the order they arrived) in one store write, as report()
    // would apply them one after the other: one write and one change for a burst of reports
    // (a global service starting on a thousand nodes) instead of one each. Returns how many
    // statuses were applied.
    Result<std::size_t> report(const std::vector<NodeReports>& reports);
    // Tasks or nodes changed: every stream re-evaluates (wakes next(); poll() may yield). Only
    // signals: may run under a registry's writers' lock.
    void changed();
    // Where report() records which secret versions the tasks' mounts hold (borrowed; set before
    // any report).
    void set_deliveries(DeliveryLog* log) { deliveries_ = log; }

  private:
    friend class NodeStream;
    // The tasks the node should run now, by id.
    std::map<std::string, model::Task> assigned(const std::string& node_id) const;
    void unsubscribe(NodeStream* s);
    // What every node's assignments and `networks` message are built from, copied once per
    // change of the tables and shared by every stream. Copied per node and change instead, a
    // change in a cluster of N nodes and N tasks copied every task N times (N = 200: a global
    // service took 20 s to reach its nodes); scanned per node and change, every task of the
    // table, stopped ones included, was compared N times (N = 1,000: a global service took 1.3 s
    // to reach its nodes, 2.7 to 5.4 s while an earlier one's tasks were being torn down).
    struct Snapshot {
        std::vector<model::Network> networks;  // with the network registries only
        std::vector<model::Service> services;  // idem
        std::vector<model::Node> nodes;        // idem
        // The tasks that a node has or gets: desired running, assigned or later, not over.
        std::vector<model::Task> tasks;
        std::map<std::string, std::vector<std::size_t>, std::less<>> by_node;  // into tasks
    };
    std::shared_ptr<const Snapshot> snapshot() const;

    TaskRegistry& tasks_;
    NodeRegistry& nodes_;
    SecretRegistry& secrets_;
    ConfigRegistry& configs_;
    ServiceRegistry* services_ = nullptr;
    NetworkRegistry* networks_ = nullptr;
    Clock clock_;
    Sync<std::set<NodeStream*>> streams_;
    DeliveryLog* deliveries_ = nullptr;
    std::atomic<std::uint64_t> changes_{1};  // changed() calls
    mutable std::mutex inputs_mutex_;
    mutable std::shared_ptr<const Snapshot> inputs_;  // as of inputs_changes_
    mutable std::uint64_t inputs_changes_ = 0;
};

}  // namespace coffer::manager
