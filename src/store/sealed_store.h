// The Store: sealing on top of an Engine, the key ring, locking, and the background
// re-sealer that finishes DEK rotations (rotation.cpp).
#pragma once

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "coffer/base/sync.h"
#include "coffer/store/store.h"
#include "data_dir.h"
#include "engine.h"
#include "keys.h"
#include "rw_lock.h"

namespace coffer::store::detail {

// Errc::locked, saying how to unlock.
Error locked_error();

// What the store knows of its keys.
struct Keyring {
    bool locked = false;
    std::optional<crypto::Key> kek;                  // while unlocked
    std::optional<crypto::SecureBuffer> unlock_key;  // autolock, while unlocked
    Deks deks;                                       // while unlocked
    std::size_t stored_deks = 0;                     // dek/<id> records, known while locked too
};

// Opens the engine of a data directory: create, a new one (the directory was readied for it).
using EngineMaker = std::function<std::unique_ptr<Engine>(const DataDir& dir, bool create)>;

// RocksDB in <data-dir>/db, or etcd when given.
EngineMaker engine_maker(const std::optional<EtcdOptions>& etcd);

// The DEK records of the meta table, as stored.
Result<std::vector<KeyRecord>> read_key_records(Engine& engine);

class SealedStore final : public Store {
  public:
    // A new store in a directory without one; with autolock, the unlock key is returned once.
    static Opened create(DataDir dir, DirFormat format, const EngineMaker& make,
                         const std::function<Result<void>(const crypto::SecureBuffer&)>& hand_over);
    // An existing store: unlocked with the KEK file, or locked (autolock).
    static std::unique_ptr<Store> open(DataDir dir, KekMode mode, const EngineMaker& make);

    SealedStore(DataDir dir, KekMode mode, std::unique_ptr<Engine> engine, Keyring keys);
    SealedStore(const SealedStore&) = delete;
    SealedStore& operator=(const SealedStore&) = delete;
    ~SealedStore() override;

    bool locked() const override;
    bool autolock() const override { return mode_ == KekMode::autolock; }
    Result<void> unlock(std::string_view unlock_key) override;
    std::optional<crypto::SecureBuffer> unlock_key() const override;
    Result<crypto::SecureBuffer> rotate_unlock_key() override;

    Result<void> rotate_dek() override;
    bool rotation_pending() const override;
    void wait_rotation() override;
    std::uint32_t current_dek_id() const override;

    Result<std::optional<crypto::SecureBuffer>> get(Table table, std::string_view key) override;
    Result<void> write(Batch batch) override;
    BatchLimits batch_limits() const override { return engine_->limits(); }
    std::string engine() const override { return engine_->describe(); }
    Result<void> writable() const override { return engine_->writable(); }
    Result<std::vector<StoreManager>> managers() override { return engine_->managers(); }
    Result<void> publish_manager_join(const crypto::SecureBuffer& manager_token) override;
    Result<void> forget_manager(std::string_view addr) override {
        return engine_->forget_manager(addr);
    }
    Result<void> scan(
        Table table,
        const std::function<bool(std::string_view key, crypto::SecureBuffer value)>& fn) override;
    Result<void> compact() override;
    // backup.cpp
    Result<BackupStats> backup(const BackupSink& sink) override;

  private:
    // Reads and opens one value; the caller holds keys_ (shared or not) across the call, so the
    // DEK the value names cannot be retired between reading and opening it.
    Result<std::optional<crypto::SecureBuffer>> read_value(const Keyring& keys, Table table,
                                                           std::string_view key);

    // rotation.cpp
    enum class Pass { clean, resealed, interrupted };
    void wake_worker();
    void worker_main();
    void finish_rotation();
    Result<Pass> reseal_pass(std::uint32_t target);
    struct Chunk {
        std::size_t resealed = 0;
        std::optional<std::string> next;  // where the next chunk starts; nullopt: table done
    };
    Result<Chunk> reseal_chunk(Table table, std::uint32_t target, const std::string& from,
                               crypto::SecureBuffer& scratch);
    Result<bool> retire_old_deks(std::uint32_t target);

    DataDir dir_;
    const KekMode mode_;
    std::unique_ptr<Engine> engine_;

    // Lock order: gate_, then keys_. A writer holds gate_ shared from choosing its DEK until its
    // write returned; the re-sealer holds it exclusively for each chunk, so that what it re-reads
    // and re-writes cannot change under it; rotate_dek holds it to switch DEKs, so that no write
    // under the old DEK is in flight once the new one is current. Readers take only keys_.
    RwLock gate_;
    Sync<Keyring, RwLock> keys_;

    // The re-sealer thread. work_: a rotation may need finishing; busy_: it is working on one.
    std::mutex worker_mu_;
    std::condition_variable worker_cv_;
    bool work_ = false;
    bool busy_ = false;
    bool stop_ = false;
    std::atomic<bool> stopping_{false};
    std::thread worker_;
};

}  // namespace coffer::store::detail
