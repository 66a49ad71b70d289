// The manager's state: the store, the cluster identity, and the registries that exist once the
// store is unlocked.
#pragma once

#include <atomic>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "coffer/base/error.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/manager/committer.h"
#include "coffer/manager/dispatcher.h"
#include "coffer/manager/node_transport.h"
#include "coffer/manager/nodes.h"
#include "coffer/manager/orchestrator.h"
#include "coffer/manager/secrets.h"
#include "coffer/manager/services.h"
#include "coffer/manager/trust.h"
#include "coffer/model/time.h"

namespace coffer::store {
class Store;
}

namespace coffer::manager {

struct ManagerOptions {
    std::filesystem::path data_dir;
    bool autolock = false;  // at init only
    // See store::Options: the new unlock key goes here before the store is committed.
    std::function<Result<void>(const crypto::SecureBuffer& unlock_key)> hand_over_unlock_key;
};

class Manager {
public:
    struct Opened;
    static Result<Opened> open(const ManagerOptions& options);
    ~Manager();

    bool locked() const noexcept { return secrets_.load() == nullptr; }
    bool autolock() const;
    // Unlocks the store and loads the registries. Errc::conflict when not locked.
    Result<void> unlock(std::string_view unlock_key);
    // fn runs after a successful unlock(), on the unlocking thread, once the registries exist
    // (cofferd starts the node port there). Set it before serving requests.
    void on_unlocked(std::function<void()> fn);
    std::optional<crypto::SecureBuffer> unlock_key() const;
    Result<crypto::SecureBuffer> rotate_unlock_key();
    Result<void> rotate_dek();
    std::uint32_t dek_id() const;
    bool dek_rotation_pending() const;

    // Null while locked.
    SecretRegistry* secrets() const noexcept { return secrets_.load(); }
    // Valid once unlocked.
    ClusterTrust& trust() const noexcept { return *trust_; }
    // Exist whenever secrets() is not null.
    ServiceRegistry& services() const noexcept { return *services_; }
    TaskRegistry& tasks() const noexcept { return *tasks_; }
    NodeRegistry& nodes() const noexcept { return *nodes_; }
    Orchestrator& orchestrator() const noexcept { return *orchestrator_; }
    Dispatcher& dispatcher() const noexcept { return *dispatcher_; }
    VersionCounter& counter() noexcept { return counter_; }
    const std::string& cluster_id() const noexcept { return cluster_id_; }
    model::Timestamp created() const noexcept { return created_; }
    store::Store& store() noexcept { return *store_; }

    // The node port, once started (borrowed: it unregisters with nullptr before it goes away).
    // Null when there is none.
    void set_node_transport(NodeTransport* t) noexcept { transport_.store(t); }
    NodeTransport* node_transport() const noexcept { return transport_.load(); }

private:
    Manager() = default;
    Result<void> load();  // after unlock: cluster record and registries

    std::unique_ptr<store::Store> store_;
    std::unique_ptr<Committer> committer_;
    VersionCounter counter_;
    std::mutex unlock_mutex_;
    std::function<void()> on_unlocked_;  // under unlock_mutex_
    std::unique_ptr<ClusterTrust> trust_;
    std::unique_ptr<SecretRegistry> secrets_owner_;
    std::unique_ptr<ServiceRegistry> services_;
    std::unique_ptr<TaskRegistry> tasks_;
    std::unique_ptr<NodeRegistry> nodes_;
    std::unique_ptr<Dispatcher> dispatcher_;
    std::unique_ptr<Orchestrator> orchestrator_;  // last: stopped first
    std::atomic<SecretRegistry*> secrets_{nullptr};
    std::atomic<NodeTransport*> transport_{nullptr};
    std::string cluster_id_;
    model::Timestamp created_;
};

struct Manager::Opened {
    std::unique_ptr<Manager> manager;
    // Shown once, when this start created an autolocked store.
    std::optional<crypto::SecureBuffer> new_unlock_key;
};

}  // namespace coffer::manager
