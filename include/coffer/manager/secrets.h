// The manager's secrets: metadata indexed in memory (for fast reads), metadata and bytes sealed
// in the store. Names are unique regardless of case. Writes reach the store outside the index
// lock so that concurrent creates share one fsync; a name or an object being written is
// reserved meanwhile, so two racing requests cannot both succeed.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "coffer/base/error.h"
#include "coffer/base/sync.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/model/filters.h"
#include "coffer/model/secret.h"

namespace coffer::store {
class Store;
}

namespace coffer::manager {

class Committer;

// The cluster-wide Version.Index counter.
class VersionCounter {
  public:
    void observe(std::uint64_t seen) noexcept;
    std::uint64_t next() noexcept { return ++value_; }

  private:
    std::atomic<std::uint64_t> value_{0};
};

class SecretRegistry {
  public:
    // Loads every secret's metadata; store, committer and counter are borrowed for the
    // registry's lifetime.
    static Result<std::unique_ptr<SecretRegistry>> load(store::Store& store, Committer& committer,
                                                        VersionCounter& counter);

    // Names of the services that reference a secret id (set by the services layer).
    using UsersFn = std::function<std::vector<std::string>(const std::string& secret_id)>;
    void set_users(UsersFn fn) { users_ = std::move(fn); }

    // Validates and reserves the name at once (done may run before create returns), then
    // answers through done, on the committer's thread, once the secret is durable.
    using CreateDone = std::function<void(Result<model::Secret>)>;
    void create(model::SecretSpec spec, crypto::SecureBuffer data, CreateDone done);
    std::vector<model::Secret> list(const model::Filters& filters) const;
    // Full ID, then exact name, then unique ID prefix (Docker's lookup order).
    Result<model::Secret> find(std::string_view id_or_name) const;
    // Labels only; the name must stay, and data, when given, must equal the stored bytes.
    Result<model::Secret> update(std::string_view id_or_name, std::uint64_t version,
                                 model::SecretSpec spec, const crypto::SecureBuffer* data);
    Result<model::Secret> remove(std::string_view id_or_name);
    // The ids among ids that do not exist or are being removed (services must not reference them).
    std::vector<std::string> unavailable(const std::vector<std::string>& ids) const;
    // The secret's bytes (for delivery to a node that runs a task needing them).
    Result<crypto::SecureBuffer> data(std::string_view id) const;
    std::size_t size() const;

  private:
    SecretRegistry(store::Store& store, Committer& committer, VersionCounter& counter)
        : store_(store), committer_(committer), counter_(counter) {}

    struct Index {
        std::map<std::string, model::Secret> by_id;
        std::map<std::string, std::string> id_by_lower_name;
        std::set<std::string> reserved_names;  // lower-case, being created
        std::set<std::string> busy_ids;        // being updated or removed
        std::set<std::string> removing_ids;    // being removed
    };
    static Result<const model::Secret*> lookup(const Index& index, std::string_view id_or_name);
    // Marks an id busy for the duration of a write; releases on destruction.
    class BusyGuard;

    store::Store& store_;
    Committer& committer_;
    VersionCounter& counter_;
    Sync<Index> index_;
    UsersFn users_;
};

}  // namespace coffer::manager
