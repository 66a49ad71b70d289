#include "database.h"

#include <algorithm>

#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

#include "coffer/base/log.h"
#include "keys.h"

namespace coffer::store::detail {
namespace {

rocksdb::DBOptions db_options(bool create) {
    rocksdb::DBOptions o;
    o.create_if_missing = create;
    o.error_if_exists = create;
    // A table added by a newer coffer gets its column family on first open.
    o.create_missing_column_families = true;
    o.paranoid_checks = true;
    o.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
    o.max_background_jobs = 2;
    o.db_write_buffer_size = 32 << 20;
    o.max_manifest_file_size = 16 << 20;
    // RocksDB's own info LOG: never sees a value (they are sealed), kept small anyway.
    o.info_log_level = rocksdb::InfoLogLevel::INFO_LEVEL;
    o.max_log_file_size = 1 << 20;
    o.keep_log_file_num = 3;
    o.stats_dump_period_sec = 0;
    o.stats_persist_period_sec = 0;
    return o;
}

rocksdb::ColumnFamilyOptions cf_options() {
    rocksdb::ColumnFamilyOptions o;
    o.write_buffer_size = 4 << 20;
    return o;
}

rocksdb::WriteOptions sync_write() {
    rocksdb::WriteOptions o;
    o.sync = true;
    return o;
}

rocksdb::Slice slice(std::string_view s) {
    return {s.data(), s.size()};
}

}  // namespace

Error db_error(std::string_view what, const rocksdb::Status& status) {
    return make_error(Errc::internal, fmt::format("{}: {}", what, status.ToString()));
}

std::unique_ptr<Database> Database::open(const std::filesystem::path& path, bool create) {
    auto options = db_options(create);
    std::vector<std::string> names;
    if (!create) {
        auto s = rocksdb::DB::ListColumnFamilies(options, path.string(), &names);
        if (!s.ok())
            throw ErrorException(db_error(fmt::format("open database {}", path.string()), s));
    }
    auto want = [&names](std::string_view name) {
        if (std::find(names.begin(), names.end(), name) == names.end()) names.emplace_back(name);
    };
    want(rocksdb::kDefaultColumnFamilyName);
    for (Table t : all_tables) want(table_name(t));

    std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
    for (const auto& name : names) descriptors.emplace_back(name, cf_options());
    std::unique_ptr<Database> d(new Database(path));
    rocksdb::DB* raw = nullptr;
    auto s = rocksdb::DB::Open(options, path.string(), descriptors, &d->handles_, &raw);
    if (!s.ok()) throw ErrorException(db_error(fmt::format("open database {}", path.string()), s));
    d->db_.reset(raw);
    for (Table t : all_tables) {
        auto it = std::find(names.begin(), names.end(), table_name(t));
        d->tables_[static_cast<std::size_t>(t)] =
            d->handles_[static_cast<std::size_t>(it - names.begin())];
    }
    return d;
}

Database::~Database() {
    close();
}

void Database::close() noexcept {
    if (!db_) return;
    for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
    handles_.clear();
    if (auto s = db_->Close(); !s.ok())
        log::warn("store", "closing the database: {}", s.ToString());
    db_.reset();
}

std::string Database::describe() const {
    return fmt::format("rocksdb {}", path_.string());
}

Result<std::optional<std::string>> Database::get(Table table, std::string_view key) {
    std::string value;
    auto s = db_->Get(rocksdb::ReadOptions(), cf(table), slice(key), &value);
    if (s.IsNotFound()) return std::optional<std::string>();
    if (!s.ok()) return db_error("read", s);
    return std::optional<std::string>(std::move(value));
}

Result<void> Database::write(const RawBatch& batch) {
    static const auto options = sync_write();
    rocksdb::WriteBatch wb;
    for (const auto& op : batch) {
        auto s = op.value ? wb.Put(cf(op.table), slice(op.key), slice(*op.value))
                          : wb.Delete(cf(op.table), slice(op.key));
        if (!s.ok())
            return db_error(fmt::format("write {}/{}", table_name(op.table), printable_key(op.key)),
                            s);
    }
    auto s = db_->Write(options, &wb);
    if (!s.ok()) return db_error("write", s);
    return {};
}

namespace {

Result<void> scan_iterator(rocksdb::Iterator& it, Table table, std::string_view from,
                           const RawVisit& fn) {
    for (it.Seek(slice(from)); it.Valid(); it.Next())
        if (!fn(it.key().ToStringView(), it.value().ToStringView())) return {};
    if (!it.status().ok()) return db_error(fmt::format("scan {}", table_name(table)), it.status());
    return {};
}

}  // namespace

Result<void> Database::scan(Table table, std::string_view from, const RawVisit& fn) {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cf(table)));
    return scan_iterator(*it, table, from, fn);
}

class Database::View final : public EngineView {
  public:
    explicit View(const Database& db) : db_(db), snapshot_(db.db_->GetSnapshot()) {}
    ~View() override { db_.db_->ReleaseSnapshot(snapshot_); }
    View(const View&) = delete;
    View& operator=(const View&) = delete;

    Result<void> scan(Table table, std::string_view from, const RawVisit& fn) override {
        rocksdb::ReadOptions options;
        options.snapshot = snapshot_;
        // A backup reads everything once: keep it out of the block cache.
        options.fill_cache = false;
        std::unique_ptr<rocksdb::Iterator> it(db_.db_->NewIterator(options, db_.cf(table)));
        return scan_iterator(*it, table, from, fn);
    }

  private:
    const Database& db_;
    const rocksdb::Snapshot* snapshot_;
};

Result<std::unique_ptr<EngineView>> Database::snapshot() {
    return std::unique_ptr<EngineView>(std::make_unique<View>(*this));
}

Result<void> Database::compact() {
    if (auto s = db_->Flush(rocksdb::FlushOptions(), handles_); !s.ok())
        return db_error("flush", s);
    rocksdb::CompactRangeOptions options;
    options.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
    for (auto* h : handles_) {
        if (auto s = db_->CompactRange(options, h, nullptr, nullptr); !s.ok())
            return db_error(fmt::format("compact {}", h->GetName()), s);
    }
    return {};
}

}  // namespace coffer::store::detail
