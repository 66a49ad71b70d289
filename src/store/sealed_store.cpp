#include "sealed_store.h"

#include <chrono>
#include <shared_mutex>

#include "coffer/base/log.h"
#include "coffer/base/metrics.h"

namespace coffer::store::detail {
namespace {

struct WriteMetrics {
    metrics::Histogram& duration = metrics::registry().histogram(
        "coffer_store_write_duration_seconds",
        "Time of one synchronous store write: sealing its values, the RocksDB write and its WAL "
        "sync.",
        metrics::duration_buckets(), metrics::nanoseconds_per_second);
    metrics::Histogram& records = metrics::registry().histogram(
        "coffer_store_write_records", "Records put or erased by one store write.",
        metrics::size_buckets(), 1);
    metrics::Counter& failures = metrics::registry().counter("coffer_store_write_failures_total",
                                                             "Store writes that failed.");
};

// Registered when the program starts, so that every scrape lists them.
WriteMetrics write_metrics;

Error reserved_error(std::string_view key) {
    return make_error(
        Errc::invalid_argument,
        fmt::format("meta/{}: keys beginning with {} are reserved for the store's keys",
                    printable_key(key), key_record_prefix));
}

void put_key_record(RawBatch& batch, KeyRecord record) {
    batch.push_back({Table::meta, std::move(record.key), std::move(record.sealed)});
}

void put_unlock_key_record(RawBatch& batch, const crypto::Key& dek,
                           const crypto::SecureBuffer& unlock_key) {
    batch.push_back({Table::meta, std::string(unlock_key_record),
                     seal_value(dek, Table::meta, unlock_key_record, unlock_key.span())});
}

}  // namespace

Result<std::vector<KeyRecord>> read_key_records(Engine& engine) {
    std::vector<KeyRecord> out;
    auto r = engine.scan(Table::meta, key_record_prefix, [&](auto key, auto sealed) {
        if (!key.starts_with(key_record_prefix)) return false;
        if (key == unlock_key_record) return true;
        out.push_back({std::string(key), std::string(sealed)});
        return true;
    });
    if (!r) return std::move(r).error().context("read the key records");
    return out;
}

Error locked_error() {
    return make_error(Errc::locked,
                      R"(coffer is locked: run "coffer cluster unlock" with the unlock key)");
}

Store::Opened SealedStore::create(
    DataDir dir, DirFormat format, const EngineMaker& make,
    const std::function<Result<void>(const crypto::SecureBuffer&)>& hand_over) {
    const auto mode = format.kek;
    dir.prepare_new();
    NewStoreGuard creating(dir);
    Keyring keys;
    std::optional<crypto::SecureBuffer> shown;
    if (mode == KekMode::file) {
        auto kek = crypto::Key::generate(kek_id);
        dir.write_kek(kek.bytes);
        keys.kek = std::move(kek);
    } else {
        auto unlock_key = generate_unlock_key();
        shown = unlock_key.text.clone();
        keys.unlock_key = std::move(unlock_key.text);
        keys.kek = std::move(unlock_key.kek);
    }
    auto engine = make(dir, /*create=*/true);
    auto dek = std::make_shared<const crypto::Key>(crypto::Key::generate(1));
    RawBatch batch;
    put_key_record(batch, wrap_dek(*keys.kek, *dek));
    put_key_record(batch, wrap_current(*keys.kek, dek->id));
    if (auto r = engine->write(batch); !r)
        throw ErrorException(std::move(r).error().context("create keys"));
    keys.deks.current = dek->id;
    keys.deks.keys.emplace(dek->id, std::move(dek));
    keys.stored_deks = 1;
    if (shown && hand_over)
        if (auto r = hand_over(*shown); !r) {
            // Nothing is committed: records elsewhere than the directory go now.
            if (auto d = engine->discard(); !d)
                log::warn("store", "removing the uncommitted store from {}: {}", engine->describe(),
                          d.error().message);
            throw ErrorException(std::move(r).error().context("autolock"));
        }
    // The marker commits the creation: an interrupted one is cleaned up by the next open.
    dir.write_format(format);
    creating.commit();
    log::info("store", "created store {} on {} (kek: {})", dir.path().string(), engine->describe(),
              kek_mode_name(mode));
    return Opened{
        std::make_unique<SealedStore>(std::move(dir), mode, std::move(engine), std::move(keys)),
        std::move(shown)};
}

std::unique_ptr<Store> SealedStore::open(DataDir dir, KekMode mode, const EngineMaker& make) {
    dir.check_private();
    auto engine = make(dir, /*create=*/false);
    auto records = read_key_records(*engine);
    if (!records) throw ErrorException(std::move(records).error());
    Keyring keys;
    keys.stored_deks = count_deks(*records);
    if (mode == KekMode::autolock) {
        keys.locked = true;
    } else {
        auto kek = kek_from_file_bytes(dir.read_kek());
        auto deks = open_key_records(kek, *records);
        if (!deks && deks.error().code == Errc::invalid_argument)
            throw ErrorException(make_error(
                Errc::internal, fmt::format("the KEK file in {} does not open this store's keys",
                                            dir.path().string())));
        if (!deks) throw ErrorException(std::move(deks).error());
        keys.kek = std::move(kek);
        keys.deks = std::move(*deks);
    }
    log::info("store", "opened store {} on {} (kek: {}{})", dir.path().string(), engine->describe(),
              kek_mode_name(mode), keys.locked ? ", locked" : "");
    return std::make_unique<SealedStore>(std::move(dir), mode, std::move(engine), std::move(keys));
}

SealedStore::SealedStore(DataDir dir, KekMode mode, std::unique_ptr<Engine> engine, Keyring keys)
    : dir_(std::move(dir)), mode_(mode), engine_(std::move(engine)), keys_(std::move(keys)) {
    worker_ = std::thread([this] { worker_main(); });
    // An interrupted rotation resumes by itself.
    if (rotation_pending() && !locked()) wake_worker();
}

SealedStore::~SealedStore() {
    {
        std::lock_guard lock(worker_mu_);
        stop_ = true;
    }
    stopping_ = true;
    worker_cv_.notify_all();
    worker_.join();
}

bool SealedStore::locked() const {
    return keys_.read()->locked;
}

Result<void> SealedStore::unlock(std::string_view unlock_key) {
    bool pending = false;
    {
        auto keys = keys_.lock();
        if (!keys->locked) return make_error(Errc::conflict, "not locked");
        auto parsed = parse_unlock_key(unlock_key);
        if (!parsed) return make_error(Errc::invalid_argument, "invalid unlock key");
        auto records = read_key_records(*engine_);
        if (!records) return std::move(records).error().context("unlock");
        auto deks = open_key_records(parsed->kek, *records);
        if (!deks && deks.error().code == Errc::invalid_argument)
            return make_error(Errc::invalid_argument, "invalid unlock key");
        if (!deks) return std::move(deks).error().context("unlock");
        keys->kek = std::move(parsed->kek);
        keys->unlock_key = std::move(parsed->text);
        keys->deks = std::move(*deks);
        keys->stored_deks = keys->deks.keys.size();
        keys->locked = false;
        pending = keys->deks.keys.size() > 1;
    }
    log::info("store", "unlocked store {}", dir_.path().string());
    if (pending) wake_worker();
    return {};
}

std::optional<crypto::SecureBuffer> SealedStore::unlock_key() const {
    auto keys = keys_.read();
    if (!keys->unlock_key) return std::nullopt;
    return keys->unlock_key->clone();
}

Result<crypto::SecureBuffer> SealedStore::rotate_unlock_key() {
    if (mode_ != KekMode::autolock)
        return make_error(Errc::conflict,
                          "the store does not use autolock: it has no unlock key to rotate");
    auto keys = keys_.lock();
    if (keys->locked) return locked_error();
    auto fresh = generate_unlock_key();
    RawBatch batch;
    for (const auto& [id, dek] : keys->deks.keys) put_key_record(batch, wrap_dek(fresh.kek, *dek));
    put_key_record(batch, wrap_current(fresh.kek, keys->deks.current));
    if (engine_->shared())
        put_unlock_key_record(batch, *keys->deks.find(keys->deks.current), fresh.text);
    if (auto r = engine_->write(batch); !r)
        return std::move(r).error().context("rotate the unlock key");
    keys->kek = std::move(fresh.kek);
    keys->unlock_key = fresh.text.clone();
    log::info("store", "rotated the unlock key of {}", dir_.path().string());
    return std::move(fresh.text);
}

Result<void> SealedStore::rotate_dek() {
    std::uint32_t id = 0;
    {
        std::unique_lock gate(gate_);
        auto keys = keys_.lock();
        if (keys->locked) return locked_error();
        auto dek = std::make_shared<const crypto::Key>(crypto::Key::generate(keys->deks.next_id()));
        id = dek->id;
        RawBatch batch;
        put_key_record(batch, wrap_dek(*keys->kek, *dek));
        put_key_record(batch, wrap_current(*keys->kek, id));
        // A manager standing by follows a later DEK through the KEK; the record it follows the
        // unlock key with is sealed under the DEK that is current.
        if (engine_->shared() && keys->unlock_key)
            put_unlock_key_record(batch, *dek, *keys->unlock_key);
        if (auto r = engine_->write(batch); !r)
            return std::move(r).error().context("rotate the DEK");
        keys->deks.keys.emplace(id, std::move(dek));
        keys->deks.current = id;
        keys->stored_deks = keys->deks.keys.size();
    }
    log::info("store", "DEK {} is current; re-sealing values in the background", id);
    wake_worker();
    return {};
}

bool SealedStore::rotation_pending() const {
    auto keys = keys_.read();
    return keys->locked ? keys->stored_deks > 1 : keys->deks.keys.size() > 1;
}

std::uint32_t SealedStore::current_dek_id() const {
    auto keys = keys_.read();
    return keys->locked ? 0 : keys->deks.current;
}

Result<std::optional<crypto::SecureBuffer>> SealedStore::read_value(const Keyring& keys,
                                                                    Table table,
                                                                    std::string_view key) {
    auto sealed = engine_->get(table, key);
    if (!sealed) return std::move(sealed).error();
    if (!*sealed) return std::optional<crypto::SecureBuffer>();
    auto value = open_value(keys.deks, table, key, **sealed);
    if (!value) return std::move(value).error();
    return std::optional<crypto::SecureBuffer>(std::move(*value));
}

Result<std::optional<crypto::SecureBuffer>> SealedStore::get(Table table, std::string_view key) {
    auto keys = keys_.read();
    if (keys->locked) return locked_error();
    if (is_key_record(table, key)) return reserved_error(key);
    return read_value(*keys, table, key);
}

Result<void> SealedStore::write(Batch batch) {
    if (batch.empty()) return {};
    for (const auto& op : batch.ops()) {
        if (op.key.empty())
            return make_error(Errc::invalid_argument,
                              fmt::format("{}: empty record key", table_name(op.table)));
        if (is_key_record(op.table, op.key)) return reserved_error(op.key);
    }
    if (auto limits = engine_->limits();
        batch.ops().size() > limits.ops || batch.bytes() > limits.bytes)
        return make_error(Errc::too_large,
                          fmt::format("one write of {} records and {} bytes is beyond what {} "
                                      "takes in one transaction ({} records, {} bytes)",
                                      batch.ops().size(), batch.bytes(), engine_->describe(),
                                      limits.ops, limits.bytes));
    auto start = std::chrono::steady_clock::now();
    std::shared_lock gate(gate_);
    std::shared_ptr<const crypto::Key> dek;
    {
        auto keys = keys_.read();
        if (keys->locked) return locked_error();
        dek = keys->deks.keys.at(keys->deks.current);
    }
    auto& m = write_metrics;
    RawBatch raw;
    raw.reserve(batch.ops().size());
    for (const auto& op : batch.ops()) {
        std::optional<std::string> sealed;
        if (op.value) sealed = seal_value(*dek, op.table, op.key, op.value->span());
        raw.push_back({op.table, op.key, std::move(sealed)});
    }
    auto written = engine_->write(raw);
    if (!written) m.failures.inc();
    m.duration.observe_since(start);
    m.records.observe(batch.ops().size());
    return written;
}

Result<void> SealedStore::scan(
    Table table, const std::function<bool(std::string_view key, crypto::SecureBuffer value)>& fn) {
    if (locked()) return locked_error();
    std::optional<Error> failed;
    auto r = engine_->scan(table, {}, [&](std::string_view key, std::string_view sealed) {
        if (is_key_record(table, key)) return true;
        std::optional<crypto::SecureBuffer> value;
        {
            // keys_ is not held while fn runs: fn may use the store.
            auto keys = keys_.read();
            auto id = crypto::sealed_key_id(sealed);
            if (id && !keys->deks.find(*id)) {
                // Re-sealed and its DEK retired since the scan started: read it again.
                auto fresh = read_value(*keys, table, key);
                if (!fresh) {
                    failed = std::move(fresh).error();
                    return false;
                }
                if (!*fresh) return true;  // erased meanwhile
                value = std::move(**fresh);
            } else {
                auto opened = open_value(keys->deks, table, key, sealed);
                if (!opened) {
                    failed = std::move(opened).error();
                    return false;
                }
                value = std::move(*opened);
            }
        }
        return fn(key, std::move(*value));
    });
    if (failed) return std::move(*failed);
    return r;
}

Result<void> SealedStore::compact() {
    return engine_->compact();
}

}  // namespace coffer::store::detail
