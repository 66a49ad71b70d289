// The manager's services and tasks, sealed in the store (tables `services`, `tasks`) and indexed
// in memory. Services reference secrets and configs by ID; neither can be removed while a service
// (or a service being created or updated) references it.
#pragma once

#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "coffer/manager/object_table.h"
#include "coffer/model/filters.h"
#include "coffer/model/service.h"

namespace coffer::manager {

class TaskRegistry : public ObjectTable<model::Task> {
  public:
    // store and counter are borrowed for the registry's lifetime.
    static Result<std::unique_ptr<TaskRegistry>> load(store::Store& store, VersionCounter& counter);
    // Full ID or unique ID prefix.
    Result<model::Task> find(std::string_view id) const;

  private:
    using ObjectTable::ObjectTable;
};

class ServiceRegistry {
  public:
    // store, counter, secrets and configs are borrowed for the registry's lifetime. Registers
    // itself as their user lookup (DataObjectRegistry::set_users).
    static Result<std::unique_ptr<ServiceRegistry>> load(store::Store& store,
                                                         VersionCounter& counter,
                                                         SecretRegistry& secrets,
                                                         ConfigRegistry& configs);
    ~ServiceRegistry();

    // Validates (Docker's rules and words), checks that every referenced secret and config
    // exists, and
    // stores. Errc::already_exists for a taken name.
    Result<model::Service> create(model::ServiceSpec spec);
    // The whole spec is replaced; the old one becomes PreviousSpec. Errc::conflict
    // "update out of sequence" when version is not the current Version.Index.
    Result<model::Service> update(std::string_view id_or_name, std::uint64_t version,
                                  model::ServiceSpec spec);
    // Docker's rollback=previous: PreviousSpec becomes the spec and the spec PreviousSpec, and
    // the update status is rollback_started ("manually requested rollback"), so the
    // orchestrator rolls the tasks back under RollbackConfig. Errc::invalid_argument "service ID
    // does not have a previous spec" when there is none; version as for update.
    Result<model::Service> roll_back(std::string_view id_or_name, std::uint64_t version,
                                     model::Timestamp now = model::Timestamp::now());
    Result<model::Service> remove(std::string_view id_or_name);
    // Full ID, then exact name, then unique ID prefix.
    Result<model::Service> find(std::string_view id_or_name) const;
    std::vector<model::Service> list() const { return table_.list(); }
    std::optional<model::Service> get(std::string_view id) const { return table_.get(id); }
    // Names of the services that reference the secret or config, including services being
    // written.
    std::vector<std::string> users_of(const std::string& object_id) const;

    // For the orchestrator: replaces the update status; roll_back also makes the previous spec
    // current again and leaves none (Swarm's automatic rollback). Not version-checked: it is
    // applied to the record as it is under the writers' lock.
    Result<void> set_update_status(const std::string& id, std::optional<model::UpdateStatus> status,
                                   bool roll_back);
    // For the orchestrator: replaces the service's VIPs (Endpoint.VirtualIPs); nothing when the
    // service is gone.
    Result<void> set_virtual_ips(const std::string& id, std::vector<model::VirtualIp> vips);
    // See ObjectTable::emit_changes.
    void emit_changes(ClusterEvents& events, ObjectTable<model::Service>::Event changed) {
        table_.emit_changes(events, changed);
    }

  private:
    ServiceRegistry(store::Store& store, VersionCounter& counter, SecretRegistry& secrets,
                    ConfigRegistry& configs);
    // Registers the references as pending, then checks the secrets and configs exist (and are
    // not being removed). Pending references are visible to users_of until released.
    Result<void> reserve_secrets(const std::string& service_name, const model::ServiceSpec& spec);
    void release_secrets(const std::string& service_name);

    ObjectTable<model::Service> table_;
    SecretRegistry& secrets_;
    ConfigRegistry& configs_;
    // service name -> secret or config id (both are random ids: they never coincide)
    Sync<std::multimap<std::string, std::string>> pending_;
};

}  // namespace coffer::manager
