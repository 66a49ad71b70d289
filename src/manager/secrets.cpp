#include "coffer/manager/secrets.h"

#include <algorithm>

#include "coffer/base/log.h"
#include "coffer/crypto/random.h"
#include "coffer/manager/committer.h"
#include "coffer/model/json.h"
#include "coffer/store/store.h"

namespace coffer::manager {

namespace json = boost::json;
using model::Secret;

void VersionCounter::observe(std::uint64_t seen) noexcept {
    auto cur = value_.load();
    while (cur < seen && !value_.compare_exchange_weak(cur, seen)) {
    }
}

namespace {

std::string encode(const Secret& s) {
    return json::serialize(model::to_json(s));
}

Error not_found(std::string_view what) {
    return make_error(Errc::not_found, fmt::format("secret {} not found", what));
}

}  // namespace

class SecretRegistry::BusyGuard {
  public:
    BusyGuard(Sync<Index>& index, std::string id) : index_(index), id_(std::move(id)) {}
    ~BusyGuard() {
        auto index = index_.lock();
        index->busy_ids.erase(id_);
        index->removing_ids.erase(id_);
    }
    BusyGuard(const BusyGuard&) = delete;
    BusyGuard& operator=(const BusyGuard&) = delete;

  private:
    Sync<Index>& index_;
    std::string id_;
};

Result<std::unique_ptr<SecretRegistry>> SecretRegistry::load(store::Store& store,
                                                             Committer& committer,
                                                             VersionCounter& counter) {
    std::unique_ptr<SecretRegistry> reg(new SecretRegistry(store, committer, counter));
    auto index = reg->index_.lock();
    std::optional<Error> failure;
    auto scanned =
        store.scan(store::Table::secrets, [&](std::string_view key, crypto::SecureBuffer v) {
            std::string_view text(reinterpret_cast<const char*>(v.data()), v.size());
            auto parsed = model::parse_json(text);
            Result<Secret> s =
                parsed ? model::secret_from_json(*parsed) : Result<Secret>(parsed.error());
            if (!s || s->meta.id != key) {
                failure =
                    make_error(Errc::internal, fmt::format("secret record {} is corrupt", key));
                return false;
            }
            counter.observe(s->meta.version);
            index->id_by_lower_name.emplace(model::to_lower(s->spec.name), s->meta.id);
            index->by_id.emplace(s->meta.id, std::move(*s));
            return true;
        });
    if (!scanned) return std::move(scanned).error().context("load secrets");
    if (failure) return std::move(*failure);
    log::info("secrets", "loaded {} secrets", index->by_id.size());
    return reg;
}

void SecretRegistry::create(model::SecretSpec spec, crypto::SecureBuffer data, CreateDone done) {
    for (auto check : {model::validate_object_name(spec.name), model::validate_labels(spec.labels),
                       model::validate_secret_size(data.size())}) {
        if (!check) return done(std::move(check).error());
    }
    auto lower = model::to_lower(spec.name);
    {
        auto index = index_.lock();
        if (index->id_by_lower_name.count(lower) || index->reserved_names.count(lower))
            return done(make_error(Errc::already_exists,
                                   fmt::format("secret {} already exists", spec.name)));
        index->reserved_names.insert(lower);
    }
    auto now = model::Timestamp::now();
    Secret s{{crypto::random_id(), counter_.next(), now, now}, std::move(spec)};
    store::Batch batch;
    batch.put(store::Table::secrets, s.meta.id, encode(s));
    batch.put(store::Table::secret_data, s.meta.id, std::move(data));
    committer_.submit(std::move(batch), [this, s = std::move(s), lower = std::move(lower),
                                         done = std::move(done)](Result<void> written) mutable {
        {
            auto index = index_.lock();
            index->reserved_names.erase(lower);
            if (written) {
                index->id_by_lower_name.emplace(lower, s.meta.id);
                index->by_id.emplace(s.meta.id, s);
            }
        }
        if (!written) return done(std::move(written).error().context("create secret"));
        done(std::move(s));
    });
}

std::vector<Secret> SecretRegistry::list(const model::Filters& f) const {
    std::vector<Secret> out;
    auto index = index_.read();
    for (const auto& [id, s] : index->by_id) {
        if (!f.match_prefix("id", id) || !f.match_prefix("name", s.spec.name) ||
            !f.match_exact("names", s.spec.name) || !f.match_labels(s.spec.labels))
            continue;
        out.push_back(s);
    }
    return out;
}

Result<const Secret*> SecretRegistry::lookup(const Index& index, std::string_view key) {
    if (key.empty()) return not_found(key);
    if (auto it = index.by_id.find(std::string(key)); it != index.by_id.end()) return &it->second;
    // Exact name (names are unique regardless of case, but the lookup is exact, as Docker's).
    if (auto it = index.id_by_lower_name.find(model::to_lower(key));
        it != index.id_by_lower_name.end()) {
        const auto& s = index.by_id.at(it->second);
        if (s.spec.name == key) return &s;
    }
    const Secret* found = nullptr;
    int matches = 0;
    for (auto it = index.by_id.lower_bound(std::string(key));
         it != index.by_id.end() && it->first.starts_with(key); ++it) {
        found = &it->second;
        ++matches;
    }
    if (matches > 1)
        return make_error(Errc::invalid_argument,
                          fmt::format("secret {} is ambiguous ({} matches found)", key, matches));
    if (found) return found;
    return not_found(key);
}

Result<Secret> SecretRegistry::find(std::string_view key) const {
    auto index = index_.read();
    auto s = lookup(*index, key);
    if (!s) return std::move(s).error();
    return **s;
}

Result<Secret> SecretRegistry::update(std::string_view key, std::uint64_t version,
                                      model::SecretSpec spec, const crypto::SecureBuffer* data) {
    Secret current;
    {
        auto index = index_.lock();
        auto s = lookup(*index, key);
        if (!s) return std::move(s).error();
        current = **s;
        if (current.meta.version != version || index->busy_ids.count(current.meta.id))
            return make_error(Errc::conflict, "update out of sequence");
        if (spec.name != current.spec.name)
            return make_error(Errc::invalid_argument, "only updates to Labels are allowed");
        if (auto r = model::validate_labels(spec.labels); !r) return std::move(r).error();
        index->busy_ids.insert(current.meta.id);
    }
    BusyGuard busy(index_, current.meta.id);
    if (data != nullptr) {
        auto stored = store_.get(store::Table::secret_data, current.meta.id);
        if (!stored) return std::move(stored).error().context("read secret");
        if (!*stored) return make_error(Errc::internal, "secret data missing");
        if (!(*stored)->equals(data->span()))
            return make_error(Errc::invalid_argument, "only updates to Labels are allowed");
    }
    Secret next = current;
    next.spec.labels = std::move(spec.labels);
    next.meta.version = counter_.next();
    next.meta.updated = model::Timestamp::now();
    store::Batch batch;
    batch.put(store::Table::secrets, next.meta.id, encode(next));
    if (auto w = store_.write(std::move(batch)); !w)
        return std::move(w).error().context("update secret");
    index_.lock()->by_id[next.meta.id] = next;
    return next;
}

Result<Secret> SecretRegistry::remove(std::string_view key) {
    Secret current;
    {
        auto index = index_.lock();
        auto s = lookup(*index, key);
        if (!s) return std::move(s).error();
        current = **s;
        if (index->busy_ids.count(current.meta.id))
            return make_error(Errc::conflict, "update out of sequence");
        index->busy_ids.insert(current.meta.id);
        // Marked before the users are asked: a service written after this point sees the secret
        // as unavailable, one written before is among the users (see ServiceRegistry).
        index->removing_ids.insert(current.meta.id);
    }
    BusyGuard busy(index_, current.meta.id);
    if (users_) {
        auto users = users_(current.meta.id);
        if (!users.empty()) {
            std::sort(users.begin(), users.end());
            return make_error(Errc::invalid_argument,
                              fmt::format("secret '{}' is in use by the following service{}: {}",
                                          current.spec.name, users.size() > 1 ? "s" : "",
                                          fmt::join(users, ", ")));
        }
    }
    store::Batch batch;
    batch.erase(store::Table::secrets, current.meta.id);
    batch.erase(store::Table::secret_data, current.meta.id);
    if (auto w = store_.write(std::move(batch)); !w)
        return std::move(w).error().context("remove secret");
    auto index = index_.lock();
    index->by_id.erase(current.meta.id);
    index->id_by_lower_name.erase(model::to_lower(current.spec.name));
    return current;
}

std::vector<std::string> SecretRegistry::unavailable(const std::vector<std::string>& ids) const {
    std::vector<std::string> out;
    auto index = index_.read();
    for (const auto& id : ids)
        if (!index->by_id.count(id) || index->removing_ids.count(id)) out.push_back(id);
    return out;
}

Result<crypto::SecureBuffer> SecretRegistry::data(std::string_view id) const {
    auto v = store_.get(store::Table::secret_data, id);
    if (!v) return std::move(v).error();
    if (!*v) return not_found(id);
    return std::move(**v);
}

std::size_t SecretRegistry::size() const {
    return index_.read()->by_id.size();
}

}  // namespace coffer::manager
