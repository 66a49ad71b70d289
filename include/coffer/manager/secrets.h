// The manager's named objects with data: secrets and configs. Metadata is indexed in memory (for
// fast reads); metadata and bytes are sealed in the store, each kind in tables of its own. Names
// are unique (per kind) regardless of case. Writes reach the store outside the index lock so that
// concurrent creates share one fsync; a name or an object being written is reserved meanwhile, so
// two racing requests cannot both succeed. A secret's bytes are read back from the store only for
// delivery; a config's bytes are not secret and are kept in the index too (inspect shows them).
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
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
class Batch;
}  // namespace coffer::store

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

// Object is model::Secret or model::Config (instantiated for those two only); the messages name
// the kind ("secret X not found", "config X not found").
template <typename Object>
class DataObjectRegistry {
  public:
    // Loads every object's metadata (and a config's bytes); store, committer and counter are
    // borrowed for the registry's lifetime.
    static Result<std::unique_ptr<DataObjectRegistry>> load(store::Store& store,
                                                            Committer& committer,
                                                            VersionCounter& counter);

    // Names of the services that reference an object id (set by the services layer).
    using UsersFn = std::function<std::vector<std::string>(const std::string& id)>;
    void set_users(UsersFn fn) { users_ = std::move(fn); }

    // Validates and reserves the name at once (done may run before create returns), then
    // answers through done, on the committer's thread, once the object is durable.
    using CreateDone = std::function<void(Result<Object>)>;
    void create(model::SecretSpec spec, crypto::SecureBuffer data, CreateDone done);
    std::vector<Object> list(const model::Filters& filters) const;
    // Full ID, then exact name, then unique ID prefix (Docker's lookup order).
    Result<Object> find(std::string_view id_or_name) const;
    // Labels only; the name must stay, and data, when given, must equal the stored bytes.
    Result<Object> update(std::string_view id_or_name, std::uint64_t version,
                          model::SecretSpec spec, const crypto::SecureBuffer* data);
    Result<Object> remove(std::string_view id_or_name);
    // The ids among ids that do not exist or are being removed (services must not reference them).
    std::vector<std::string> unavailable(const std::vector<std::string>& ids) const;
    // The object's bytes (for delivery to a node that runs a task needing them); a secret's
    // current version.
    Result<crypto::SecureBuffer> data(std::string_view id) const;
    std::size_t size() const;

    // ---- versions (secrets only; a config has none and these refuse it) ----
    // The versions of a secret that tasks hold, with how many tasks hold each: all the tasks
    // that may still have it mounted, or (running_only) those meant to run. Pins in services
    // count as a holder with no task (set by the cluster, which sees services and tasks).
    using HoldersFn = std::function<std::map<std::uint64_t, std::size_t>(const std::string& id,
                                                                         bool running_only)>;
    void set_holders(HoldersFn fn) { holders_ = std::move(fn); }
    // The holders of each version of a secret that tasks may still have mounted.
    std::map<std::uint64_t, std::size_t> holders(const std::string& id) const {
        return holders_ ? holders_(id, false) : std::map<std::uint64_t, std::size_t>{};
    }
    // How many of the newest versions are kept (the cluster setting).
    void set_versions_kept(std::function<std::uint64_t()> fn) { versions_kept_ = std::move(fn); }
    // A version's bytes.
    Result<crypto::SecureBuffer> data(std::string_view id, std::uint64_t version) const;
    // The current version of a secret, if it exists.
    std::optional<std::uint64_t> current_version(const std::string& id) const;
    // Whether a secret has a version (a pin must name one).
    bool has_version(const std::string& id, std::uint64_t version) const;
    struct Rotated {
        Object object;
        bool changed = true;  // false: only_if_different and the bytes equal the current ones
    };
    // Adds a version holding data and makes it current, in one store write with the record (a
    // crash leaves the old or the new current version, never half of one). With
    // only_if_different, nothing changes when data equals the current version's bytes: decided
    // by the version's keyed MAC (see mac_key_), without reading the stored bytes.
    Result<Rotated> rotate(std::string_view id_or_name, crypto::SecureBuffer data,
                           bool only_if_different);
    // Makes version `to` (default: the newest one older than the current) current again.
    Result<Object> rollback(std::string_view id_or_name, std::optional<std::uint64_t> to);
    // Wipes the versions of a secret beyond the newest `versions kept` that are neither current
    // nor held (one store write); returns the numbers wiped.
    Result<std::vector<std::uint64_t>> prune(const std::string& id);
    // prune() for every secret with more versions than are kept.
    void prune_all();

  private:
    DataObjectRegistry(store::Store& store, Committer& committer, VersionCounter& counter)
        : store_(store), committer_(committer), counter_(counter) {}

    struct Index {
        std::map<std::string, Object> by_id;
        std::map<std::string, std::string> id_by_lower_name;
        std::set<std::string> reserved_names;  // lower-case, being created
        std::set<std::string> busy_ids;        // being updated or removed
        std::set<std::string> removing_ids;    // being removed
    };
    static Result<const Object*> lookup(const Index& index, std::string_view id_or_name);
    // Marks an id busy for the duration of a write; releases on destruction.
    class BusyGuard;

    // A secret version's keyed MAC: what "are these the current bytes?" is decided by.
    crypto::SecureBuffer mac(std::string_view id, const crypto::SecureBuffer& data) const;
    // Whether data equals the bytes of version `version` of secret id: by its MAC, or, for a
    // version written before versions had one, by its bytes (in secure memory).
    Result<bool> same_bytes(std::string_view id, std::uint64_t version,
                            const crypto::SecureBuffer& data) const;
    // A secret version's records, its bytes and their MAC, put into or erased from a batch
    // together, so that neither is ever written or left without the other.
    void put_version(store::Batch& batch, std::string_view id, std::uint64_t version,
                     crypto::SecureBuffer data) const;
    static void erase_version(store::Batch& batch, std::string_view id, std::uint64_t version);

    store::Store& store_;
    Committer& committer_;
    VersionCounter& counter_;
    // The MAC key of a secret's versions (secrets only): 256 random bits made at the first load
    // and sealed in the store (Table::meta) like any value. A version's MAC is sealed beside it
    // (version_mac_key()); it is never returned nor put in a record a client reads, and without
    // the key nobody can test a guess of the bytes against it.
    crypto::SecureBuffer mac_key_;
    Sync<Index> index_;
    UsersFn users_;
    HoldersFn holders_;
    std::function<std::uint64_t()> versions_kept_;
};

// The store key of a secret version's bytes: a version 1 sits under the secret's ID (where a
// secret's only bytes were kept before versions), a later one under "<id>/<n>".
std::string version_data_key(std::string_view id, std::uint64_t version);
// The store key (Table::meta) of a secret version's keyed MAC: "secret-mac/<id>/<n>".
std::string version_mac_key(std::string_view id, std::uint64_t version);

using SecretRegistry = DataObjectRegistry<model::Secret>;
using ConfigRegistry = DataObjectRegistry<model::Config>;

}  // namespace coffer::manager
