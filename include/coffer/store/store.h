// The manager's embedded store: RocksDB, one column family per table, every value sealed
// (XChaCha20-Poly1305) under the current data encryption key (DEK) with associated data
// "<table>\0<key>", so a value cannot be moved to another record. DEKs are wrapped by the key
// encryption key (KEK): a 0600 file in the data directory by default, or, with autolock, a key
// derived from an unlock key that is shown once and never stored.
//
// Writes are synchronous (WAL fsync before success). Concurrent writers are grouped by RocksDB
// into one fsync, so callers should write from several threads rather than serialise.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "coffer/base/error.h"
#include "coffer/crypto/secure_buffer.h"

namespace coffer::store {

enum class Table : std::uint8_t {
    meta,         // cluster-wide settings and counters; keys "dek/..." are the store's own
    secrets,      // secret metadata (spec without data), JSON
    secret_data,  // secret bytes
    nodes,
    services,
    tasks,
    pki,          // CA key and certificate, join tokens
    configs,      // config metadata (spec without data), JSON
    config_data,  // config bytes
    networks,     // networks and what is allocated for them, JSON
};
inline constexpr Table all_tables[] = {
    Table::meta,  Table::secrets, Table::secret_data, Table::nodes,       Table::services,
    Table::tasks, Table::pki,     Table::configs,     Table::config_data, Table::networks};
std::string_view table_name(Table t) noexcept;

// A store kept in an etcd v3 cluster instead of RocksDB in the data directory, which then holds
// only the format marker and the KEK file. Values reach etcd sealed, as they reach RocksDB.
struct EtcdOptions {
    std::vector<std::string> endpoints;  // "http://HOST:PORT" or "https://HOST:PORT", one a member
    std::string prefix = "/coffer/";     // every key of the store begins with it
    // https: the CA of the members' certificates (empty: the system's), and the client
    // certificate and key etcd asks for (--client-cert-auth), PEM files.
    std::string ca_file, cert_file, key_file;
    std::chrono::seconds lease_ttl{10};  // a manager that died frees the store after this
    // What the members accept in one transaction: etcd's --max-txn-ops and
    // --max-request-bytes (its defaults here).
    std::size_t max_txn_ops = 128;
    std::size_t max_request_bytes = 1536 * 1024;
    // This manager's node port as agents and the other managers reach it (HOST:PORT): announced
    // under the prefix while this cofferd runs, leading or standing by. Empty: not announced.
    std::string advertise;
    // Set: standing by ends, and open() fails (Errc::unavailable, "stopped while
    // standing by"), once it holds true (the
    // manager was asked to stop). Read from a signal handler's writes: lock-free.
    const std::atomic<bool>* stop_standing_by = nullptr;
};

// A manager of a store several cofferd share (etcd): every one that announced itself, whether
// it runs now (its lease lives) and whether it holds the store (leads).
struct StoreManager {
    std::string addr;  // its node port, HOST:PORT
    std::string host;  // the machine's name
    std::int64_t pid = 0;
    bool reachable = false;
    bool leader = false;
    bool operator==(const StoreManager&) const = default;
};

// How much one write may hold: operations, and bytes as Batch::bytes() counts them.
struct BatchLimits {
    std::size_t ops = SIZE_MAX;
    std::size_t bytes = SIZE_MAX;
};

struct Options {
    std::filesystem::path dir;
    // Set: the records live in etcd (when the store is created, and on every open after).
    std::optional<EtcdOptions> etcd;
    // Only used when the store is created: no KEK file; an unlock key is generated and returned
    // once by open(); every later open starts locked.
    bool autolock = false;
    // With autolock, when the store is created: called with the new unlock key before the
    // creation is committed. When it fails, open() fails with its error and no store is left
    // (what was written is removed by the next open), so a key that could not be handed over
    // never locks anything.
    std::function<Result<void>(const crypto::SecureBuffer& unlock_key)> hand_over_unlock_key;
};

// A manager joining a store on etcd that another cofferd made: readies dir (which must hold no
// store) from what the leading manager published for the manager join token (publish_manager_
// join): the format marker, and the KEK file unless the store is autolocked (each manager is then
// unlocked with the unlock key). Then Store::open(dir, etcd) opens it as any other manager's.
// Errors: permission_denied when the token is not the current manager join token of that store;
// not_found when the prefix has nothing published.
struct JoinOptions {
    std::filesystem::path dir;
    EtcdOptions etcd;
    const crypto::SecureBuffer* manager_token = nullptr;
};
Result<void> join_store(const JoinOptions& options);

// A standby manager's check of an unlock key before it leads: whether the key opens the keys of
// the autolocked store on etcd that the data directory dir belongs to. Reads etcd without
// claiming anything. invalid_argument for a key that does not open them; conflict when the
// store is not autolocked.
Result<void> check_unlock_key(const std::filesystem::path& dir, const EtcdOptions& etcd,
                              std::string_view unlock_key);

// A standby manager's reader of the store on etcd that the data directory dir belongs to: reads
// without claiming anything, and opens values with the store's keys, the KEK file's, or for an
// autolocked store those of the unlock key given (Errc::locked without one). Not thread-safe.
class StandbyReader {
  public:
    static Result<std::unique_ptr<StandbyReader>> open(const std::filesystem::path& dir,
                                                       const EtcdOptions& etcd,
                                                       const crypto::SecureBuffer* unlock_key);
    virtual ~StandbyReader() = default;
    // Reads the store's keys again. When the unlock key it was opened with no longer opens them
    // (it was rotated since), follows the rotation with the keys it holds if it can: the new
    // unlock key is then handed out once by take_followed_unlock_key.
    virtual Result<void> refresh() = 0;
    virtual std::optional<crypto::SecureBuffer> take_followed_unlock_key() = 0;
    // A value opened, or nullopt. Keys rotated since open are read again once (refresh).
    virtual Result<std::optional<crypto::SecureBuffer>> get(Table table, std::string_view key) = 0;
    // The node port address (HOST:PORT) of the manager that holds the store, "" when none does.
    virtual Result<std::string> leader() = 0;
};

// What a backup wrote (include/coffer/store/backup.h has the file's format).
struct BackupStats {
    std::uint64_t records = 0;  // DEK records included
    std::uint64_t bytes = 0;
};
// Receives a backup's bytes in order; an error stops the backup.
using BackupSink = std::function<Result<void>(std::span<const std::uint8_t> bytes)>;

// One atomic, synchronous write.
class Batch {
  public:
    void put(Table table, std::string key, std::string value);
    void put(Table table, std::string key, crypto::SecureBuffer value);
    void erase(Table table, std::string key);
    // Moves every operation of other to the end of this batch (group commits).
    void append(Batch&& other) {
        for (auto& op : other.ops_) ops_.push_back(std::move(op));
        bytes_ += other.bytes_;
        other.ops_.clear();
        other.bytes_ = 0;
    }
    bool empty() const noexcept { return ops_.empty(); }
    // Keys and values, and per operation what sealing and the engine add (op_overhead).
    std::size_t bytes() const noexcept { return bytes_; }
    static constexpr std::size_t op_overhead = 128;

    struct Op {
        Table table;
        std::string key;
        std::optional<crypto::SecureBuffer> value;  // nullopt: erase
    };
    const std::vector<Op>& ops() const noexcept { return ops_; }

  private:
    std::vector<Op> ops_;
    std::size_t bytes_ = 0;
};

class Store {
  public:
    struct Opened;
    // Creates the directory (0700) and the database on first use. Fails (as an Error) when the
    // directory holds something that is not a coffer store, or the KEK file is missing/unreadable.
    static Result<Opened> open(const Options& options);

    virtual ~Store() = default;

    // Locked: an autolocked store after open, before unlock(). Every read and write then fails
    // with Errc::locked.
    virtual bool locked() const = 0;
    virtual bool autolock() const = 0;
    // A wrong key: Errc::invalid_argument "invalid unlock key"; not locked: Errc::conflict.
    virtual Result<void> unlock(std::string_view unlock_key) = 0;
    // The current unlock key ("COFFERKEY-1-..."), known while unlocked; nullopt without autolock.
    virtual std::optional<crypto::SecureBuffer> unlock_key() const = 0;
    // A new unlock key; every DEK is re-wrapped under it in one synchronous write, and the old
    // key stops working. Errc::conflict without autolock.
    virtual Result<crypto::SecureBuffer> rotate_unlock_key() = 0;

    // Makes a fresh DEK current (synchronously), then re-seals every value in the background.
    // Crash-safe: old DEKs are kept until no value uses them, and an interrupted rotation
    // resumes at the next open.
    virtual Result<void> rotate_dek() = 0;
    // True while values sealed under an older DEK remain.
    virtual bool rotation_pending() const = 0;
    // Blocks until no rotation is pending (for tests and shutdown), or until the re-sealer cannot
    // go on: the store is locked, or a value is corrupt (logged; the old DEK is kept).
    virtual void wait_rotation() = 0;
    // 0 while locked.
    virtual std::uint32_t current_dek_id() const = 0;

    // Keys are not secret (they appear in error messages); values are. A key in Table::meta
    // beginning "dek/", or an empty key, is Errc::invalid_argument. A value that does not open
    // is Errc::internal, naming table and key.
    virtual Result<std::optional<crypto::SecureBuffer>> get(Table table, std::string_view key) = 0;
    // Errc::too_large when the batch is beyond batch_limits().
    virtual Result<void> write(Batch batch) = 0;
    // What one write may hold (etcd's transaction limits; RocksDB has none that matter).
    virtual BatchLimits batch_limits() const = 0;
    // For messages: "rocksdb /var/lib/coffer/db", "etcd http://...".
    virtual std::string engine() const = 0;
    // Errc::unavailable once no write can succeed any more: the store on etcd whose hold this
    // manager lost (another may hold it now). Always fine for RocksDB.
    virtual Result<void> writable() const = 0;
    // The managers that announced themselves on this store (etcd), the leader among them; none
    // on the embedded engine, which one cofferd holds alone.
    virtual Result<std::vector<StoreManager>> managers() = 0;
    // Forgets a manager that announced itself and no longer runs (its lease ended). Errc::conflict
    // while it runs, Errc::not_found when none announced itself at addr.
    virtual Result<void> forget_manager(std::string_view addr) = 0;
    // On a store several cofferd share (etcd): publishes what a manager joining with this
    // manager join token needs to open the store (join_store), replacing what an older token
    // published. The KEK travels sealed under a key derived from the token, so only a holder of
    // the token can use it. Nothing to do on the embedded engine, or while locked.
    virtual Result<void> publish_manager_join(const crypto::SecureBuffer& manager_token) = 0;
    // Every record of a table in key order. fn returns false to stop.
    virtual Result<void> scan(
        Table table,
        const std::function<bool(std::string_view key, crypto::SecureBuffer value)>& fn) = 0;

    // Writes a backup of every record (the DEK records too) as stored, sealed, all as of one
    // moment: a write that returned before the call is in it, a batch is in it whole or not at
    // all. Writers are not held up. The MAC is keyed from the KEK, so Errc::locked while locked.
    virtual Result<BackupStats> backup(const BackupSink& sink) = 0;

    // Flushes memtables and compacts every table (tests use it to check what reaches SST files).
    virtual Result<void> compact() = 0;
};

struct Store::Opened {
    std::unique_ptr<Store> store;
    // Set only when this open created an autolocked store: shown once, never stored.
    std::optional<crypto::SecureBuffer> new_unlock_key;
};

}  // namespace coffer::store
