// RocksDB with one column family per table. Values reach it sealed; it never sees plaintext.
// Every write is synchronous (WAL fsync before it returns).
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
#include <rocksdb/write_batch.h>

#include "coffer/base/error.h"
#include "coffer/store/store.h"
#include "keys.h"

namespace coffer::store::detail {

class Database {
  public:
    // create: a new database (error if one exists); otherwise an existing one (error if none).
    // Throws ErrorException when RocksDB refuses.
    static Database open(const std::filesystem::path& path, bool create);

    Database(Database&& other) noexcept;
    Database& operator=(Database&&) = delete;
    ~Database();

    rocksdb::ColumnFamilyHandle* cf(Table table) const noexcept {
        return tables_[static_cast<std::size_t>(table)];
    }

    Result<std::optional<std::string>> get(Table table, std::string_view key);
    // Synchronous: durable when it returns success.
    Result<void> write(rocksdb::WriteBatch& batch);
    // A fresh view: sees every write that returned before the call.
    std::unique_ptr<rocksdb::Iterator> iterate(Table table);
    // A consistent view of every table as of now, released when the pointer goes.
    using Snapshot =
        std::unique_ptr<const rocksdb::Snapshot, std::function<void(const rocksdb::Snapshot*)>>;
    Snapshot snapshot();
    // A view as of snapshot (which must outlive the iterator).
    std::unique_ptr<rocksdb::Iterator> iterate(Table table, const rocksdb::Snapshot* snapshot);
    // The key management records of the meta table (see keys.h), as stored.
    Result<std::vector<KeyRecord>> key_records();
    // Flushes memtables and compacts every column family down to the last level.
    Result<void> compact();

  private:
    Database() = default;
    void close() noexcept;

    std::unique_ptr<rocksdb::DB> db_;
    std::vector<rocksdb::ColumnFamilyHandle*> handles_;  // all open, owned (destroyed in close)
    std::array<rocksdb::ColumnFamilyHandle*, std::size(all_tables)> tables_{};
};

// A RocksDB status as an Error: "<what>: <status>".
Error db_error(std::string_view what, const rocksdb::Status& status);

}  // namespace coffer::store::detail
