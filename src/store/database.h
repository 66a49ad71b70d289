// The RocksDB engine: one column family per table in <data-dir>/db. Values reach it sealed; it
// never sees plaintext. Every write is synchronous (WAL fsync before it returns).
#pragma once

#include <array>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <rocksdb/db.h>

#include "coffer/base/error.h"
#include "coffer/store/store.h"
#include "engine.h"

namespace coffer::store::detail {

class Database final : public Engine {
  public:
    // create: a new database (error if one exists); otherwise an existing one (error if none).
    // Throws ErrorException when RocksDB refuses.
    static std::unique_ptr<Database> open(const std::filesystem::path& path, bool create);

    Database(const Database&) = delete;
    Database& operator=(const Database&) = delete;
    ~Database() override;

    std::string describe() const override;
    Result<std::optional<std::string>> get(Table table, std::string_view key) override;
    // Synchronous: durable when it returns success.
    Result<void> write(const RawBatch& batch) override;
    Result<void> scan(Table table, std::string_view from, const RawVisit& fn) override;
    Result<std::unique_ptr<EngineView>> snapshot() override;
    // Flushes memtables and compacts every column family down to the last level.
    Result<void> compact() override;

  private:
    class View;
    explicit Database(std::filesystem::path path) : path_(std::move(path)) {}
    rocksdb::ColumnFamilyHandle* cf(Table table) const noexcept {
        return tables_[static_cast<std::size_t>(table)];
    }
    void close() noexcept;

    std::filesystem::path path_;
    std::unique_ptr<rocksdb::DB> db_;
    std::vector<rocksdb::ColumnFamilyHandle*> handles_;  // all open, owned (destroyed in close)
    std::array<rocksdb::ColumnFamilyHandle*, std::size(all_tables)> tables_{};
};

// A RocksDB status as an Error: "<what>: <status>".
Error db_error(std::string_view what, const rocksdb::Status& status);

}  // namespace coffer::store::detail
