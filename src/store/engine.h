// Where the store's records are kept, as stored: every value already sealed (the engine never
// sees plaintext). Two engines: RocksDB in the data directory (database.h) and etcd v3
// (etcd_engine.h). Keys are bytes; each table is a key space of its own.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "coffer/base/error.h"
#include "coffer/store/store.h"

namespace coffer::store::detail {

// One put (value set, sealed) or erase (nullopt) of a write.
struct RawOp {
    Table table;
    std::string key;
    std::optional<std::string> value;
};
using RawBatch = std::vector<RawOp>;

// Receives records in key order; returns false to stop.
using RawVisit = std::function<bool(std::string_view key, std::string_view sealed)>;

// A consistent view of every table as of one moment.
class EngineView {
  public:
    virtual ~EngineView() = default;
    virtual Result<void> scan(Table table, std::string_view from, const RawVisit& fn) = 0;
};

class Engine {
  public:
    virtual ~Engine() = default;

    // For messages: "rocksdb <dir>/db", "etcd http://...".
    virtual std::string describe() const = 0;
    virtual Result<std::optional<std::string>> get(Table table, std::string_view key) = 0;
    // Atomic and durable when it returns success: all of the batch or none of it.
    virtual Result<void> write(const RawBatch& batch) = 0;
    // The records of table with keys >= from, in key order; sees every write that returned
    // before the call. fn may use the engine.
    virtual Result<void> scan(Table table, std::string_view from, const RawVisit& fn) = 0;
    virtual Result<std::unique_ptr<EngineView>> snapshot() = 0;
    // Gives back the space of old versions and erased records.
    virtual Result<void> compact() = 0;
    // Removes every record of a store whose creation failed half-way (RocksDB: nothing to do,
    // the next creation removes db/).
    virtual Result<void> discard() { return {}; }
    // Errc::unavailable once no write can succeed any more (see Store::writable).
    virtual Result<void> writable() const { return {}; }
    // What one write may hold, counted as Batch::bytes() counts.
    virtual BatchLimits limits() const { return {}; }
    // See Store::managers and Store::forget_manager: an engine one cofferd holds alone has none.
    virtual Result<std::vector<StoreManager>> managers() { return std::vector<StoreManager>{}; }
    // A record of the engine's own beside the tables, read before the store can be opened
    // (etcd: <prefix><name>, written only by the holder). false: the engine keeps none.
    virtual bool shared() const { return false; }
    virtual Result<void> put_shared(std::string_view name, std::string value) {
        (void)value;
        return make_error(Errc::invalid_argument, fmt::format("no shared record {}", name));
    }
    virtual Result<void> forget_manager(std::string_view addr) {
        return make_error(Errc::not_found, fmt::format("no manager at {}", addr));
    }
};

}  // namespace coffer::store::detail
