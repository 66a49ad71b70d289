// The manager in one object: it owns every part of it, makes them in order, wires them through
// one event interface (ClusterEvents, events.h), and takes them down in reverse.
//
// Parts, in the order they are made (each borrows only parts made before it):
//   at open():    store, committer, API
//   once the store is unlocked (at open(), or by unlock()):
//                 cluster record, trust (CA, tokens), secrets, configs, networks, services, tasks,
//                 nodes,
//                 dispatcher, orchestrator (its thread starts), node port (when configured)
// Taken down in reverse: API, node port (its sessions end while everything they use exists),
// orchestrator (its thread stops), dispatcher, committer (it answers its last requests while
// the registries exist), nodes, tasks, services, networks, configs, secrets, trust, store.
//
// Events (ClusterEvents, which this object implements and routes; nothing else calls parts back):
//   services_changed          (a services writer)          -> orchestrator wakes
//   services_changed, networks_changed                     -> dispatcher re-evaluates, node port
//                                                             sends (networks messages)
//   tasks_changed, nodes_changed (a tasks/nodes writer)    -> orchestrator wakes, dispatcher
//                                                             re-evaluates its streams, node port
//                                                             sends what they yield
//   ca_changed                (trust, after a rotation step is stored) -> node port: new
//                                                             credentials, nodes asked to renew
//   node_removed, node_role_changed (the API)              -> node port
// Events only signal (wake a thread, post to a strand); they run on the emitter's thread.
//
// Threads, and who calls what:
//   - open(), stop_node_port(), start_node_port(), the destructor: the owner (cofferd's main
//     thread, a test). unlock(): the API's worker that serves POST /swarm/unlock; it makes the
//     unlocked parts and then starts the node port on that thread.
//   - The API (net::HttpServer's I/O threads and workers) reads and writes the registries and
//     trust, emits node_removed / node_role_changed, and asks the nodes for logs (fetch_logs).
//   - The registries are safe from any thread: readers share a lock, writers are serialised per
//     registry, and a writer emits its event under its writers' lock.
//   - The orchestrator's thread writes tasks (and service update status).
//   - The committer's thread writes secrets and answers their requests.
//   - The node port: nodeconn's I/O strands run authorize and session open/message/close
//     (quick: they post to the node's strand); its join thread runs joins (trust, a nodes write);
//     its worker pool, one strand per node, runs node status and task status writes, the
//     dispatcher's streams and reports, and certificate renewals (which may emit ca_changed).
#pragma once

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "coffer/base/error.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/manager/committer.h"
#include "coffer/manager/deliveries.h"
#include "coffer/manager/dispatcher.h"
#include "coffer/manager/events.h"
#include "coffer/manager/networks.h"
#include "coffer/manager/node_port.h"
#include "coffer/manager/node_transport.h"
#include "coffer/manager/nodes.h"
#include "coffer/manager/orchestrator.h"
#include "coffer/manager/secrets.h"
#include "coffer/manager/services.h"
#include "coffer/manager/trust.h"
#include "coffer/model/time.h"
#include "coffer/registry/registry.h"

namespace coffer::store {
class Store;
}

namespace coffer::manager {

class Api;

struct ClusterOptions {
    std::filesystem::path data_dir;
    // Set: the store's records are in etcd (see store::EtcdOptions).
    std::optional<store::EtcdOptions> etcd;
    bool autolock = false;  // at init only
    // See store::Options: the new unlock key goes here before the store is committed.
    std::function<Result<void>(const crypto::SecureBuffer& unlock_key)> hand_over_unlock_key;
    // The node port, started as soon as the store is unlocked (by open(), which then fails when
    // it cannot start, or by unlock(), which then logs why); none when empty.
    std::optional<NodePortOptions> node_port;
    // How the manager reaches registries to resolve a service's image tag to a digest.
    registry::Options registry;
};

class Cluster final : private ClusterEvents, private NodeTransport {
  public:
    struct Opened;
    static Result<Opened> open(ClusterOptions options);
    ~Cluster() override;
    Cluster(const Cluster&) = delete;
    Cluster& operator=(const Cluster&) = delete;

    bool locked() const noexcept { return secrets_.load() == nullptr; }
    bool autolock() const;
    // Unlocks the store, makes the unlocked parts, then starts the configured node port.
    // Errc::conflict when not locked.
    Result<void> unlock(std::string_view unlock_key);
    std::optional<crypto::SecureBuffer> unlock_key() const;
    Result<crypto::SecureBuffer> rotate_unlock_key();
    Result<void> rotate_dek();
    std::uint32_t dek_id() const;
    bool dek_rotation_pending() const;

    // Null while locked.
    SecretRegistry* secrets() const noexcept { return secrets_.load(); }
    // The secrets' delivery record; exists whenever secrets() is not null.
    const DeliveryLog& deliveries() const noexcept { return *deliveries_; }
    // Valid once unlocked.
    ClusterTrust& trust() const noexcept { return *trust_; }
    // Exist whenever secrets() is not null.
    ConfigRegistry& configs() const noexcept { return *configs_; }
    ServiceRegistry& services() const noexcept { return *services_; }
    NetworkRegistry& networks() const noexcept { return *networks_; }
    TaskRegistry& tasks() const noexcept { return *tasks_; }
    NodeRegistry& nodes() const noexcept { return *nodes_; }
    Orchestrator& orchestrator() const noexcept { return *orchestrator_; }
    Dispatcher& dispatcher() const noexcept { return *dispatcher_; }
    VersionCounter& counter() noexcept { return counter_; }
    const std::string& cluster_id() const noexcept { return cluster_id_; }
    const registry::Options& registry_options() const noexcept { return options_.registry; }
    // The ID of the manager's own entry among the nodes (the API shows cofferd as a node, the
    // registry does not hold it: nothing is scheduled on it): derived from the cluster ID, so
    // it is the same across restarts and never a node certificate's. Valid once unlocked.
    const std::string& manager_node_id() const noexcept { return manager_node_id_; }
    model::Timestamp created() const noexcept { return created_; }
    store::Store& store() noexcept { return *store_; }

    // The managers of a store several cofferd share (etcd): this one (it serves the API, so it
    // leads) and every other that announced itself, with its entry's ID. On the embedded store,
    // only this one. Valid once unlocked.
    struct Manager {
        std::string id;
        std::string addr;  // its node port, as agents reach it
        std::string host;
        bool self = false;
        bool leader = false;
        bool reachable = false;
    };
    Result<std::vector<Manager>> managers();
    // Forgets another manager that no longer runs (node rm). Errc::conflict while it runs.
    Result<void> forget_manager(const std::string& addr);
    // The ID of the manager entry whose node port is addr (the same on every manager).
    std::string manager_id_for(std::string_view addr) const;

    // The manager's HTTP API over this cluster (serve it with net::HttpServer; stop the server
    // before the Cluster goes).
    Api& api() noexcept { return *api_; }
    // Where the API emits the changes it makes (node_removed, node_role_changed).
    ClusterEvents& events() noexcept { return *this; }
    // What the API asks of the nodes: the node port, or while there is none an answer of
    // unavailable "no node port".
    NodeTransport& node_transport() noexcept { return *this; }

    // Starts a node port now (errors: locked, conflict when one runs, address in use).
    Result<void> start_node_port(NodePortOptions options);
    // Closes every node session and stops the node port; a later unlock() starts none.
    void stop_node_port();
    // The running node port, for its owner's checks (port(), session_count()); null when none.
    NodePort* node_port() const;
    // The node port's listening address and port ("0.0.0.0:4243"); empty while none runs.
    std::string node_port_address() const;

    // Tests only: the API's log requests go to t instead of the node port (borrowed until it is
    // replaced, or reset with nullptr).
    void set_node_transport(NodeTransport* t);

  private:
    explicit Cluster(ClusterOptions options);
    Result<void> load();  // after unlock: cluster record and the unlocked parts
    Result<void> start_node_port_locked(NodePortOptions options);  // under port_start_mutex_
    // The versions of secret id that tasks hold (all not yet ended, or those meant to run), with
    // how many tasks hold each; a version pinned by a service is among them with no task.
    std::map<std::uint64_t, std::size_t> secret_holders(const std::string& id,
                                                        bool running_only) const;

    // ClusterEvents: the routing table above.
    void services_changed() override;
    void tasks_changed() override;
    void nodes_changed() override;
    void networks_changed() override;
    void ca_changed() override;
    void node_removed(const std::string& node_id) override;
    void node_role_changed(const std::string& node_id) override;
    // NodeTransport.
    void fetch_logs(const std::string& node_id, const std::string& task_id, std::size_t tail,
                    std::chrono::milliseconds timeout, LogsDone done) override;
    Result<std::vector<NodeVolume>> volumes() override;
    void remove_volume(const std::string& node_id, const std::string& name,
                       std::chrono::milliseconds timeout, VolumeDone done) override;

    // Calls fn with the node port (or the test transport) unless there is none; the port is not
    // destroyed while such a call is under way (calls may nest: a renewal ending a rotation).
    template <typename Fn>
    bool with_port(Fn&& fn);
    template <typename Fn>
    bool with_transport(Fn&& fn);
    void detach_port();

    ClusterOptions options_;
    std::unique_ptr<store::Store> store_;
    std::unique_ptr<Committer> committer_;
    std::unique_ptr<Api> api_;
    VersionCounter counter_;
    std::mutex unlock_mutex_;
    std::string cluster_id_;
    std::string manager_node_id_;
    model::Timestamp created_;
    std::unique_ptr<ClusterTrust> trust_;
    std::unique_ptr<SecretRegistry> secrets_owner_;
    std::unique_ptr<ConfigRegistry> configs_;
    std::unique_ptr<NetworkRegistry> networks_;
    std::unique_ptr<ServiceRegistry> services_;
    std::unique_ptr<TaskRegistry> tasks_;
    std::unique_ptr<NodeRegistry> nodes_;
    std::unique_ptr<DeliveryLog> deliveries_;
    std::unique_ptr<Dispatcher> dispatcher_;
    std::unique_ptr<Orchestrator> orchestrator_;
    std::atomic<SecretRegistry*> secrets_{nullptr};

    // On etcd: the other managers, read every second; what changed goes to the nodes.
    void watch_managers();
    std::mutex managers_mutex_;
    std::condition_variable managers_cv_;
    bool managers_stopping_ = false;          // under managers_mutex_
    std::vector<std::string> manager_addrs_;  // under managers_mutex_: reachable, sent to nodes
    std::thread managers_thread_;

    // Starting and stopping the node port, one at a time.
    mutable std::mutex port_start_mutex_;
    bool port_stopped_ = false;            // under port_start_mutex_
    std::unique_ptr<NodePort> node_port_;  // under port_start_mutex_
    std::string node_port_address_;        // under port_start_mutex_

    // What events and log requests reach: set and cleared under port_mutex_; calls under way
    // are counted so the port is destroyed only when none is.
    std::mutex port_mutex_;
    std::condition_variable port_idle_;
    NodePort* port_ = nullptr;                 // under port_mutex_
    NodeTransport* test_transport_ = nullptr;  // under port_mutex_
    std::size_t port_calls_ = 0;               // under port_mutex_
};

struct Cluster::Opened {
    std::unique_ptr<Cluster> cluster;
    // Shown once, when this start created an autolocked store.
    std::optional<crypto::SecureBuffer> new_unlock_key;
};

}  // namespace coffer::manager
