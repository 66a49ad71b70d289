#include "coffer/manager/secrets.h"

#include <algorithm>

#include "coffer/base/log.h"
#include "coffer/base/metrics.h"
#include "coffer/crypto/aead.h"
#include "coffer/crypto/random.h"
#include "coffer/manager/committer.h"
#include "coffer/model/json.h"
#include "coffer/store/store.h"

namespace coffer::manager {

namespace json = boost::json;
using model::Config;
using model::Secret;

namespace {

// What happened to secrets' current versions (rotate, rollback; a rotation "only if different"
// that found the same bytes). Counts only: never a secret's name or id.
// Registered when the program starts, each change at 0, so that every scrape lists the family
// and a rate over a change that has not happened yet is 0, not absent.
metrics::Family<metrics::Counter>& version_changes_family =
    []() -> metrics::Family<metrics::Counter>& {
    auto& family = metrics::registry().counter_family(
        "coffer_secret_version_changes_total",
        "Changes of a secret's current version: rotate (a new version), rollback, or unchanged "
        "(a rotation only if different, with the same bytes).",
        {"change"});
    for (auto change : {"rotate", "rollback", "unchanged"}) family.with({change});
    return family;
}();

metrics::Counter& version_changes(std::string_view what) {
    return version_changes_family.with({what});
}

}  // namespace

void VersionCounter::observe(std::uint64_t seen) noexcept {
    auto cur = value_.load();
    while (cur < seen && !value_.compare_exchange_weak(cur, seen)) {
    }
}

namespace {

// What differs between the kinds: their words, tables and size limit, and whether the index
// keeps the bytes (a config's, which inspect shows).
template <typename Object>
struct Kind;

template <>
struct Kind<Secret> {
    static constexpr std::string_view word = "secret";
    static constexpr std::string_view plural = "secrets";
    static constexpr store::Table specs = store::Table::secrets;
    static constexpr store::Table data = store::Table::secret_data;
    static constexpr std::size_t max_size = model::max_secret_size;
    static void keep(Secret&, const crypto::SecureBuffer&) {}
};

template <>
struct Kind<Config> {
    static constexpr std::string_view word = "config";
    static constexpr std::string_view plural = "configs";
    static constexpr store::Table specs = store::Table::configs;
    static constexpr store::Table data = store::Table::config_data;
    static constexpr std::size_t max_size = model::max_config_size;
    static void keep(Config& c, const crypto::SecureBuffer& bytes) {
        c.data.assign(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    }
};

constexpr bool is_secret(const Secret*) {
    return true;
}
constexpr bool is_secret(const Config*) {
    return false;
}

// The record holds the metadata (and a secret's version list) only; the bytes have a table of
// their own.
std::string encode(const Secret& o) {
    return json::serialize(model::to_json(o));
}
std::string encode(const Config& o) {
    return json::serialize(model::to_json(Secret{o.meta, o.spec, {}, 1}));
}

template <typename Object>
Result<Object> decode(std::string_view text) {
    auto parsed = model::parse_json(text);
    if (!parsed) return std::move(parsed).error();
    auto s = model::secret_from_json(*parsed);
    if (!s) return std::move(s).error();
    Object o;
    o.meta = std::move(s->meta);
    o.spec = std::move(s->spec);
    if constexpr (std::is_same_v<Object, Secret>) {
        o.versions = std::move(s->versions);
        o.current = s->current;
    }
    return o;
}

constexpr std::string_view mac_key_record = "secret-mac-key";
constexpr std::string_view mac_context = "coffer secret version mac v1";

// The secrets' MAC key: read, or made and written (synchronously) on the first load.
Result<crypto::SecureBuffer> load_mac_key(store::Store& store) {
    auto stored = store.get(store::Table::meta, mac_key_record);
    if (!stored) return std::move(stored).error();
    if (*stored) {
        if ((*stored)->size() != crypto::key_bytes)
            return make_error(Errc::internal, "the secrets' MAC key is corrupt");
        return std::move(**stored);
    }
    auto key = crypto::Key::generate(0).bytes;
    store::Batch batch;
    batch.put(store::Table::meta, std::string(mac_key_record), key.clone());
    if (auto w = store.write(std::move(batch)); !w)
        return std::move(w).error().context("write the secrets' MAC key");
    return key;
}

template <typename Object>
Error not_found(std::string_view what) {
    return make_error(Errc::not_found, fmt::format("{} {} not found", Kind<Object>::word, what));
}

}  // namespace

template <typename Object>
class DataObjectRegistry<Object>::BusyGuard {
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

template <typename Object>
Result<std::unique_ptr<DataObjectRegistry<Object>>> DataObjectRegistry<Object>::load(
    store::Store& store, Committer& committer, VersionCounter& counter) {
    using K = Kind<Object>;
    std::unique_ptr<DataObjectRegistry> reg(new DataObjectRegistry(store, committer, counter));
    auto index = reg->index_.lock();
    std::optional<Error> failure;
    auto scanned = store.scan(K::specs, [&](std::string_view key, crypto::SecureBuffer v) {
        auto o = decode<Object>({reinterpret_cast<const char*>(v.data()), v.size()});
        if (!o || o->meta.id != key) {
            failure =
                make_error(Errc::internal, fmt::format("{} record {} is corrupt", K::word, key));
            return false;
        }
        counter.observe(o->meta.version);
        index->id_by_lower_name.emplace(model::to_lower(o->spec.name), o->meta.id);
        index->by_id.emplace(o->meta.id, std::move(*o));
        return true;
    });
    if (!scanned) return std::move(scanned).error().context(fmt::format("load {}", K::plural));
    if (failure) return std::move(*failure);
    if constexpr (std::is_same_v<Object, Secret>) {
        auto key = load_mac_key(store);
        if (!key) return std::move(key).error().context("load secrets");
        reg->mac_key_ = std::move(*key);
    } else {
        for (auto& [id, o] : index->by_id) {
            auto bytes = store.get(K::data, id);
            if (!bytes) return std::move(bytes).error().context(fmt::format("load {}", K::plural));
            if (!*bytes)
                return make_error(Errc::internal, fmt::format("{} {} has no data", K::word, id));
            K::keep(o, **bytes);
        }
    }
    log::info(K::plural, "loaded {} {}", index->by_id.size(), K::plural);
    return reg;
}

template <typename Object>
void DataObjectRegistry<Object>::create(model::SecretSpec spec, crypto::SecureBuffer data,
                                        CreateDone done) {
    using K = Kind<Object>;
    for (auto check : {model::validate_object_name(spec.name), model::validate_labels(spec.labels),
                       model::validate_data_size(K::word, data.size(), K::max_size)}) {
        if (!check) return done(std::move(check).error());
    }
    auto lower = model::to_lower(spec.name);
    {
        auto index = index_.lock();
        if (index->id_by_lower_name.count(lower) || index->reserved_names.count(lower))
            return done(make_error(Errc::already_exists,
                                   fmt::format("{} {} already exists", K::word, spec.name)));
        index->reserved_names.insert(lower);
    }
    auto now = model::Timestamp::now();
    Object s;
    s.meta = {crypto::random_id(), counter_.next(), now, now};
    s.spec = std::move(spec);
    if constexpr (std::is_same_v<Object, Secret>) {
        s.versions = {{1, now}};
        s.current = 1;
    }
    K::keep(s, data);
    store::Batch batch;
    batch.put(K::specs, s.meta.id, encode(s));
    if constexpr (std::is_same_v<Object, Secret>)
        put_version(batch, s.meta.id, 1, std::move(data));
    else
        batch.put(K::data, s.meta.id, std::move(data));
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
        if (!written)
            return done(std::move(written).error().context(fmt::format("create {}", K::word)));
        done(std::move(s));
    });
}

template <typename Object>
std::vector<Object> DataObjectRegistry<Object>::list(const model::Filters& f) const {
    std::vector<Object> out;
    auto index = index_.read();
    for (const auto& [id, s] : index->by_id) {
        if (!f.match_prefix("id", id) || !f.match_prefix("name", s.spec.name) ||
            !f.match_exact("names", s.spec.name) || !f.match_labels(s.spec.labels))
            continue;
        out.push_back(s);
    }
    return out;
}

template <typename Object>
Result<const Object*> DataObjectRegistry<Object>::lookup(const Index& index, std::string_view key) {
    if (key.empty()) return not_found<Object>(key);
    if (auto it = index.by_id.find(std::string(key)); it != index.by_id.end()) return &it->second;
    // Exact name (names are unique regardless of case, but the lookup is exact, as Docker's).
    if (auto it = index.id_by_lower_name.find(model::to_lower(key));
        it != index.id_by_lower_name.end()) {
        const auto& s = index.by_id.at(it->second);
        if (s.spec.name == key) return &s;
    }
    const Object* found = nullptr;
    int matches = 0;
    for (auto it = index.by_id.lower_bound(std::string(key));
         it != index.by_id.end() && it->first.starts_with(key); ++it) {
        found = &it->second;
        ++matches;
    }
    if (matches > 1)
        return make_error(
            Errc::invalid_argument,
            fmt::format("{} {} is ambiguous ({} matches found)", Kind<Object>::word, key, matches));
    if (found) return found;
    return not_found<Object>(key);
}

template <typename Object>
Result<Object> DataObjectRegistry<Object>::find(std::string_view key) const {
    auto index = index_.read();
    auto s = lookup(*index, key);
    if (!s) return std::move(s).error();
    return **s;
}

template <typename Object>
Result<Object> DataObjectRegistry<Object>::update(std::string_view key, std::uint64_t version,
                                                  model::SecretSpec spec,
                                                  const crypto::SecureBuffer* data) {
    using K = Kind<Object>;
    Object current;
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
        // A secret's data is compared with its current version's.
        std::uint64_t version_now = 1;
        if constexpr (std::is_same_v<Object, Secret>) version_now = current.current;
        auto same = same_bytes(current.meta.id, version_now, *data);
        if (!same) return std::move(same).error().context(fmt::format("read {}", K::word));
        if (!*same) return make_error(Errc::invalid_argument, "only updates to Labels are allowed");
    }
    Object next = current;
    next.spec.labels = std::move(spec.labels);
    next.meta.version = counter_.next();
    next.meta.updated = model::Timestamp::now();
    store::Batch batch;
    batch.put(K::specs, next.meta.id, encode(next));
    if (auto w = store_.write(std::move(batch)); !w)
        return std::move(w).error().context(fmt::format("update {}", K::word));
    index_.lock()->by_id[next.meta.id] = next;
    return next;
}

template <typename Object>
Result<Object> DataObjectRegistry<Object>::remove(std::string_view key) {
    using K = Kind<Object>;
    Object current;
    {
        auto index = index_.lock();
        auto s = lookup(*index, key);
        if (!s) return std::move(s).error();
        current = **s;
        if (index->busy_ids.count(current.meta.id))
            return make_error(Errc::conflict, "update out of sequence");
        index->busy_ids.insert(current.meta.id);
        // Marked before the users are asked: a service written after this point sees the object
        // as unavailable, one written before is among the users (see ServiceRegistry).
        index->removing_ids.insert(current.meta.id);
    }
    BusyGuard busy(index_, current.meta.id);
    if (users_) {
        auto users = users_(current.meta.id);
        if (!users.empty()) {
            std::sort(users.begin(), users.end());
            return make_error(Errc::invalid_argument,
                              fmt::format("{} '{}' is in use by the following service{}: {}",
                                          K::word, current.spec.name, users.size() > 1 ? "s" : "",
                                          fmt::join(users, ", ")));
        }
    }
    store::Batch batch;
    batch.erase(K::specs, current.meta.id);
    if constexpr (std::is_same_v<Object, Secret>) {
        // Every version goes. As in Swarm, a secret no service references may go while a
        // task of a former reference still runs: its node keeps its own copy until it ends.
        for (const auto& v : current.versions) erase_version(batch, current.meta.id, v.number);
    } else {
        batch.erase(K::data, current.meta.id);
    }
    if (auto w = store_.write(std::move(batch)); !w)
        return std::move(w).error().context(fmt::format("remove {}", K::word));
    auto index = index_.lock();
    index->by_id.erase(current.meta.id);
    index->id_by_lower_name.erase(model::to_lower(current.spec.name));
    return current;
}

template <typename Object>
std::vector<std::string> DataObjectRegistry<Object>::unavailable(
    const std::vector<std::string>& ids) const {
    std::vector<std::string> out;
    auto index = index_.read();
    for (const auto& id : ids)
        if (!index->by_id.count(id) || index->removing_ids.count(id)) out.push_back(id);
    return out;
}

template <typename Object>
Result<crypto::SecureBuffer> DataObjectRegistry<Object>::data(std::string_view id) const {
    if constexpr (std::is_same_v<Object, Secret>) {
        auto current = current_version(std::string(id));
        if (!current) return not_found<Object>(id);
        return data(id, *current);
    }
    auto v = store_.get(Kind<Object>::data, id);
    if (!v) return std::move(v).error();
    if (!*v) return not_found<Object>(id);
    return std::move(**v);
}

std::string version_data_key(std::string_view id, std::uint64_t version) {
    return version == 1 ? std::string(id) : fmt::format("{}/{}", id, version);
}

std::string version_mac_key(std::string_view id, std::uint64_t version) {
    return fmt::format("secret-mac/{}/{}", id, version);
}

template <typename Object>
crypto::SecureBuffer DataObjectRegistry<Object>::mac(std::string_view id,
                                                     const crypto::SecureBuffer& data) const {
    return crypto::keyed_mac(
        mac_key_, mac_context,
        {{reinterpret_cast<const std::uint8_t*>(id.data()), id.size()}, data.span()});
}

template <typename Object>
void DataObjectRegistry<Object>::put_version(store::Batch& batch, std::string_view id,
                                             std::uint64_t version,
                                             crypto::SecureBuffer data) const {
    batch.put(store::Table::meta, version_mac_key(id, version), mac(id, data));
    batch.put(Kind<Object>::data, version_data_key(id, version), std::move(data));
}

template <typename Object>
void DataObjectRegistry<Object>::erase_version(store::Batch& batch, std::string_view id,
                                               std::uint64_t version) {
    batch.erase(Kind<Object>::data, version_data_key(id, version));
    batch.erase(store::Table::meta, version_mac_key(id, version));
}

template <typename Object>
Result<bool> DataObjectRegistry<Object>::same_bytes(std::string_view id, std::uint64_t version,
                                                    const crypto::SecureBuffer& data) const {
    if constexpr (std::is_same_v<Object, Secret>) {
        auto stored = store_.get(store::Table::meta, version_mac_key(id, version));
        if (!stored) return std::move(stored).error();
        if (*stored) return (*stored)->equals(mac(id, data).span());
    }
    // A config, or a secret version from before MACs: its bytes, compared in secure memory.
    auto stored = store_.get(Kind<Object>::data, version_data_key(id, version));
    if (!stored) return std::move(stored).error();
    if (!*stored)
        return make_error(Errc::internal, fmt::format("{} data missing", Kind<Object>::word));
    return (*stored)->equals(data.span());
}

template <typename Object>
Result<crypto::SecureBuffer> DataObjectRegistry<Object>::data(std::string_view id,
                                                              std::uint64_t version) const {
    if (!is_secret(static_cast<const Object*>(nullptr)) && version != 1)
        return not_found<Object>(id);
    auto v = store_.get(Kind<Object>::data, version_data_key(id, version));
    if (!v) return std::move(v).error();
    if (!*v)
        return make_error(Errc::not_found,
                          fmt::format("{} {} has no version {}", Kind<Object>::word, id, version));
    return std::move(**v);
}

template <typename Object>
std::optional<std::uint64_t> DataObjectRegistry<Object>::current_version(
    const std::string& id) const {
    auto index = index_.read();
    auto it = index->by_id.find(id);
    if (it == index->by_id.end()) return std::nullopt;
    if constexpr (std::is_same_v<Object, Secret>)
        return it->second.current;
    else
        return 1;
}

template <typename Object>
bool DataObjectRegistry<Object>::has_version(const std::string& id, std::uint64_t version) const {
    auto index = index_.read();
    auto it = index->by_id.find(id);
    if (it == index->by_id.end()) return false;
    if constexpr (std::is_same_v<Object, Secret>)
        return std::any_of(it->second.versions.begin(), it->second.versions.end(),
                           [&](const model::SecretVersion& v) { return v.number == version; });
    else
        return version == 1;
}

namespace {

Error no_versions(std::string_view word) {
    return make_error(Errc::invalid_argument, fmt::format("a {} has no versions", word));
}

// The numbers of the versions a secret keeps: the newest `kept`, the current one and the held
// ones.
std::set<std::uint64_t> versions_to_keep(const Secret& s, std::uint64_t kept,
                                         const std::map<std::uint64_t, std::size_t>& held) {
    std::set<std::uint64_t> keep{s.current};
    std::uint64_t newest = 0;
    for (auto it = s.versions.rbegin(); it != s.versions.rend() && newest < kept; ++it, ++newest)
        keep.insert(it->number);
    for (const auto& [n, count] : held) keep.insert(n);
    return keep;
}

std::vector<std::uint64_t> version_numbers(const Secret& s) {
    std::vector<std::uint64_t> out;
    for (const auto& v : s.versions) out.push_back(v.number);
    return out;
}

}  // namespace

template <typename Object>
Result<typename DataObjectRegistry<Object>::Rotated> DataObjectRegistry<Object>::rotate(
    std::string_view key, crypto::SecureBuffer data, bool only_if_different) {
    using K = Kind<Object>;
    if constexpr (!std::is_same_v<Object, Secret>) {
        return no_versions(K::word);
    } else {
        if (auto r = model::validate_data_size(K::word, data.size(), K::max_size); !r)
            return std::move(r).error();
        Object current;
        {
            auto index = index_.lock();
            auto s = lookup(*index, key);
            if (!s) return std::move(s).error();
            current = **s;
            if (index->busy_ids.count(current.meta.id))
                return make_error(Errc::conflict, "update out of sequence");
            index->busy_ids.insert(current.meta.id);
        }
        BusyGuard busy(index_, current.meta.id);
        if (only_if_different) {
            auto same = same_bytes(current.meta.id, current.current, data);
            if (!same) return std::move(same).error().context("read secret");
            if (*same) {
                version_changes("unchanged").inc();
                return Rotated{current, false};
            }
        }
        auto now = model::Timestamp::now();
        Object next = current;
        auto number = next.versions.back().number + 1;
        next.versions.push_back({number, now});
        next.current = number;
        next.meta.version = counter_.next();
        next.meta.updated = now;
        store::Batch batch;
        batch.put(K::specs, next.meta.id, encode(next));
        put_version(batch, next.meta.id, number, std::move(data));
        if (auto w = store_.write(std::move(batch)); !w)
            return std::move(w).error().context(fmt::format("rotate {}", K::word));
        index_.lock()->by_id[next.meta.id] = next;
        version_changes("rotate").inc();
        return Rotated{std::move(next), true};
    }
}

template <typename Object>
Result<Object> DataObjectRegistry<Object>::rollback(std::string_view key,
                                                    std::optional<std::uint64_t> to) {
    using K = Kind<Object>;
    if constexpr (!std::is_same_v<Object, Secret>) {
        return no_versions(K::word);
    } else {
        Object current;
        {
            auto index = index_.lock();
            auto s = lookup(*index, key);
            if (!s) return std::move(s).error();
            current = **s;
            if (index->busy_ids.count(current.meta.id))
                return make_error(Errc::conflict, "update out of sequence");
            index->busy_ids.insert(current.meta.id);
        }
        BusyGuard busy(index_, current.meta.id);
        std::optional<std::uint64_t> target = to;
        if (!target) {
            for (const auto& v : current.versions)
                if (v.number < current.current) target = v.number;
            if (!target)
                return make_error(Errc::invalid_argument,
                                  fmt::format("secret {} has no version older than {}",
                                              current.spec.name, current.current));
        }
        if (std::none_of(current.versions.begin(), current.versions.end(),
                         [&](const model::SecretVersion& v) { return v.number == *target; }))
            return make_error(
                Errc::not_found,
                fmt::format("secret {} has no version {} (kept: {})", current.spec.name, *target,
                            fmt::join(version_numbers(current), ", ")));
        if (*target == current.current) return current;
        Object next = current;
        next.current = *target;
        next.meta.version = counter_.next();
        next.meta.updated = model::Timestamp::now();
        store::Batch batch;
        batch.put(K::specs, next.meta.id, encode(next));
        if (auto w = store_.write(std::move(batch)); !w)
            return std::move(w).error().context(fmt::format("roll back {}", K::word));
        index_.lock()->by_id[next.meta.id] = next;
        version_changes("rollback").inc();
        return next;
    }
}

template <typename Object>
Result<std::vector<std::uint64_t>> DataObjectRegistry<Object>::prune(const std::string& id) {
    using K = Kind<Object>;
    if constexpr (!std::is_same_v<Object, Secret>) {
        return no_versions(K::word);
    } else {
        // Asked before the index is locked: the holders are found in other registries.
        auto held = holders_ ? holders_(id, false) : std::map<std::uint64_t, std::size_t>{};
        auto kept = versions_kept_ ? versions_kept_() : model::default_secret_versions_kept;
        Object current;
        {
            auto index = index_.lock();
            auto it = index->by_id.find(id);
            if (it == index->by_id.end()) return not_found<Object>(id);
            if (it->second.versions.size() <= kept) return std::vector<std::uint64_t>{};
            if (index->busy_ids.count(id))
                return make_error(Errc::conflict, "update out of sequence");
            current = it->second;
            index->busy_ids.insert(id);
        }
        BusyGuard busy(index_, id);
        auto keep = versions_to_keep(current, kept, held);
        Object next = current;
        std::vector<std::uint64_t> wiped;
        std::erase_if(next.versions, [&](const model::SecretVersion& v) {
            if (keep.count(v.number)) return false;
            wiped.push_back(v.number);
            return true;
        });
        if (wiped.empty()) return wiped;
        next.meta.version = counter_.next();
        store::Batch batch;
        batch.put(K::specs, id, encode(next));
        for (auto n : wiped) erase_version(batch, id, n);
        if (auto w = store_.write(std::move(batch)); !w)
            return std::move(w).error().context(fmt::format("wipe old {} versions", K::word));
        index_.lock()->by_id[id] = next;
        log::info(K::plural, "secret {}: versions {} wiped", id, fmt::join(wiped, ", "));
        return wiped;
    }
}

template <typename Object>
void DataObjectRegistry<Object>::prune_all() {
    if constexpr (std::is_same_v<Object, Secret>) {
        auto kept = versions_kept_ ? versions_kept_() : model::default_secret_versions_kept;
        std::vector<std::string> ids;
        {
            auto index = index_.read();
            for (const auto& [id, s] : index->by_id)
                if (s.versions.size() > kept) ids.push_back(id);
        }
        for (const auto& id : ids)
            if (auto r = prune(id); !r && r.error().code != Errc::conflict)
                log::warn("secrets", "secret {}: {}", id, r.error().message);
    }
}

template <typename Object>
std::size_t DataObjectRegistry<Object>::size() const {
    return index_.read()->by_id.size();
}

template class DataObjectRegistry<Secret>;
template class DataObjectRegistry<Config>;

}  // namespace coffer::manager
