// Taking a backup of a SealedStore, and making a new store from one.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <ctime>

#include "backup_format.h"
#include "coffer/base/log.h"
#include "coffer/store/backup.h"
#include "sealed_store.h"

namespace coffer::store::detail {
namespace {

// A new store's batches: large enough to be few, small enough to stay far below RocksDB's limit.
constexpr std::size_t restore_batch_bytes = 8 << 20;

}  // namespace

Result<BackupStats> SealedStore::backup(const BackupSink& sink) {
    // The snapshot and the KEK are taken together under the key ring, which an unlock key
    // rotation holds exclusively while it re-wraps the DEKs: the MAC's key is always the KEK
    // that wraps the DEK records the snapshot holds.
    std::unique_ptr<EngineView> snapshot;
    crypto::SecureBuffer mac_key;
    {
        auto keys = keys_.read();
        if (keys->locked) return locked_error();
        mac_key = backup_mac_key(*keys->kek);
        auto view = engine_->snapshot();
        if (!view) return std::move(view).error().context("back up");
        snapshot = std::move(*view);
    }
    auto start = std::chrono::steady_clock::now();
    BackupWriter out(sink, mac_key, mode_ == KekMode::file ? BackupKek::file : BackupKek::autolock,
                     static_cast<std::int64_t>(std::time(nullptr)));
    std::optional<Error> failed;
    auto r = snapshot->scan(Table::meta, key_record_prefix, [&](auto key, auto sealed) {
        if (!key.starts_with(key_record_prefix)) return false;
        if (key == unlock_key_record) return true;  // a restore gets the keys it is given
        if (auto w = out.key_record(key, sealed); !w) {
            failed = w.error();
            return false;
        }
        return true;
    });
    if (failed) return std::move(*failed);
    if (!r) return std::move(r).error().context("back up the key records");
    for (Table table : all_tables) {
        if (auto w = out.table(table); !w) return w.error();
        r = snapshot->scan(table, {}, [&](auto key, auto sealed) {
            if (is_key_record(table, key)) return true;
            if (auto w = out.record(key, sealed); !w) {
                failed = w.error();
                return false;
            }
            return true;
        });
        if (failed) return std::move(*failed);
        if (!r) return std::move(r).error().context(fmt::format("back up {}", table_name(table)));
    }
    auto stats = out.finish();
    if (stats)
        log::info("store", "backup of {}: {} records, {} bytes in {} ms", dir_.path().string(),
                  stats->records, stats->bytes,
                  std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - start)
                      .count());
    return stats;
}

}  // namespace coffer::store::detail

namespace coffer::store {
namespace {

using namespace detail;

Error refuse(std::string message) {
    return make_error(Errc::invalid_argument, std::move(message));
}

// The KEK the backup's DEKs are wrapped under, from what the operator gave.
Result<crypto::Key> key_for(const ParsedBackup& backup, const crypto::SecureBuffer* given) {
    if (backup.kek == BackupKek::file) {
        if (given == nullptr)
            return refuse(
                "this backup is of a cluster whose KEK is a file: give a copy of that cluster's "
                "<data-dir>/kek (cofferd --restore-key FILE)");
        if (given->size() != crypto::key_bytes)
            return refuse(fmt::format("the KEK file must hold {} bytes; the one given holds {}",
                                      crypto::key_bytes, given->size()));
        return kek_from_file_bytes(given->clone());
    }
    if (given == nullptr)
        return refuse(
            "this backup is of an autolocked cluster: give its unlock key in a file (cofferd "
            "--restore-key FILE)");
    auto parsed = parse_unlock_key(
        std::string_view(reinterpret_cast<const char*>(given->data()), given->size()));
    if (!parsed)
        return refuse(
            "the key given is not an unlock key (COFFERKEY-1-...), which this backup "
            "of an autolocked cluster needs");
    return std::move(parsed->kek);
}

// Everything a restore checks before it writes anything.
Result<void> check_backup(const ParsedBackup& backup, const crypto::Key& kek) {
    std::vector<KeyRecord> records;
    records.reserve(backup.key_records.size());
    for (const auto& r : backup.key_records)
        records.push_back({std::string(r.key), std::string(r.sealed)});
    auto deks = open_key_records(kek, records);
    if (!deks && deks.error().code == Errc::invalid_argument)
        return refuse(
            backup.kek == BackupKek::file
                ? "the KEK file given does not open this backup's keys: it is another cluster's"
                : "the unlock key given does not open this backup's keys (after a rotation, the "
                  "key to use is the one current when the backup was taken)");
    if (!deks) return refuse(fmt::format("the backup's keys: {}", deks.error().message));
    if (!backup_mac_matches(backup_mac_key(kek), backup.authenticated, backup.mac))
        return refuse("the backup's MAC does not match: the file was altered or damaged");
    crypto::SecureBuffer scratch;
    for (const auto& r : backup.records)
        if (auto n = open_value_into(*deks, r.table, r.key, r.sealed, scratch); !n)
            return refuse(fmt::format("the backup holds a damaged value: {}", n.error().message));
    return {};
}

// The target: a new directory, or an empty one. Returns whether it was created.
Result<bool> claim_dir(const std::filesystem::path& dir) {
    if (::mkdir(dir.c_str(), 0700) == 0) return true;
    if (errno != EEXIST)
        return make_error(Errc::invalid_argument, fmt::format("create data directory {}: {}",
                                                              dir.string(), std::strerror(errno)));
    std::error_code ec;
    if (!std::filesystem::is_directory(std::filesystem::symlink_status(dir, ec)))
        return refuse(fmt::format("{} exists and is not a directory", dir.string()));
    auto entries = std::filesystem::directory_iterator(dir, ec);
    if (ec)
        return make_error(Errc::invalid_argument,
                          fmt::format("read {}: {}", dir.string(), ec.message()));
    if (entries != std::filesystem::directory_iterator())
        return refuse(fmt::format(
            "refusing to restore into {}: it is not empty (a restore makes a new data directory)",
            dir.string()));
    return false;
}

// Writes every record of the backup, as stored, in batches.
void write_records(Engine& engine, const ParsedBackup& backup) {
    RawBatch batch;
    std::size_t bytes = 0;
    auto limits = engine.limits();
    auto max_bytes = std::min(restore_batch_bytes, limits.bytes);
    auto flush = [&] {
        if (batch.empty()) return;
        if (auto r = engine.write(batch); !r)
            throw ErrorException(std::move(r).error().context("restore"));
        batch.clear();
        bytes = 0;
    };
    auto put = [&](const BackupRecord& r) {
        auto cost = r.key.size() + r.sealed.size() + Batch::op_overhead;
        if (!batch.empty() && (batch.size() >= limits.ops || bytes + cost > max_bytes)) flush();
        batch.push_back({r.table, std::string(r.key), std::string(r.sealed)});
        bytes += cost;
    };
    for (const auto& r : backup.key_records) put(r);
    for (const auto& r : backup.records) put(r);
    flush();
}

void write_store(const std::filesystem::path& path, const ParsedBackup& backup,
                 const crypto::Key& kek, const std::optional<EtcdOptions>& etcd) {
    auto dir = DataDir::open(path);
    dir.prepare_new();
    auto mode = backup.kek == BackupKek::file ? KekMode::file : KekMode::autolock;
    if (mode == KekMode::file) dir.write_kek(kek.bytes);
    {
        auto engine = engine_maker(etcd)(dir, /*create=*/true);
        try {
            write_records(*engine, backup);
        } catch (...) {
            // Half a store in etcd would make the next attempt refuse the prefix.
            if (auto r = engine->discard(); !r)
                log::warn("store", "removing the failed restore from {}: {}", engine->describe(),
                          r.error().message);
            throw;
        }
    }
    // As at creation, the marker commits the store.
    dir.write_format(DirFormat{mode, etcd.has_value()});
}

void remove_restored(const std::filesystem::path& dir, bool created) {
    std::error_code ec;
    if (created) {
        std::filesystem::remove_all(dir, ec);
    } else {
        for (const auto& entry : std::filesystem::directory_iterator(dir, ec))
            std::filesystem::remove_all(entry.path(), ec);
    }
    if (ec)
        log::warn("store", "removing the failed restore from {}: {}", dir.string(), ec.message());
}

}  // namespace

Result<RestoreStats> restore_backup(const RestoreOptions& options) {
    crypto::init();
    auto fail = [&](Error e) {
        return e.context(fmt::format("restore into {}", options.dir.string()));
    };
    auto backup = parse_backup(options.backup);
    if (!backup) return fail(std::move(backup).error());
    auto kek = key_for(*backup, options.key);
    if (!kek) return fail(std::move(kek).error());
    if (auto r = check_backup(*backup, *kek); !r) return fail(std::move(r).error());
    auto created = claim_dir(options.dir);
    if (!created) return fail(std::move(created).error());
    try {
        write_store(options.dir, *backup, *kek, options.etcd);
    } catch (const ErrorException& e) {
        remove_restored(options.dir, *created);
        return fail(e.error());
    } catch (const std::exception& e) {
        remove_restored(options.dir, *created);
        return fail(make_error(Errc::internal, e.what()));
    }
    auto records = backup->key_records.size() + backup->records.size();
    log::info("store", "restored {} records into {} (a backup taken at unix time {}; kek: {})",
              records, options.dir.string(), backup->created,
              backup->kek == BackupKek::file ? "file" : "autolock");
    return RestoreStats{backup->kek, records, backup->created};
}

}  // namespace coffer::store
