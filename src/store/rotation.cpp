// Finishing a DEK rotation: every value sealed under an older DEK is re-sealed under the current
// one, a chunk at a time; once a full pass finds none left, the older DEK records are deleted.
//
// Crash safety comes from the order of durable steps: the new DEK is stored and made current in
// one write (rotate_dek); each chunk of re-sealed values is one write; the old DEK records go
// only after a pass that found no value needing them. Killed anywhere, the store still holds
// every DEK some value names, and an open that finds more than one DEK resumes here.
#include <shared_mutex>

#include <fmt/ranges.h>

#include "coffer/base/log.h"
#include "sealed_store.h"

namespace coffer::store::detail {
namespace {

// Bounds on one chunk, during which writers wait.
constexpr std::size_t chunk_records = 1024;  // examined
constexpr std::size_t chunk_resealed = 256;
constexpr std::size_t chunk_bytes = 4 << 20;  // re-sealed

}  // namespace

void SealedStore::wake_worker() {
    {
        std::lock_guard lock(worker_mu_);
        work_ = true;
    }
    worker_cv_.notify_all();
}

void SealedStore::wait_rotation() {
    std::unique_lock lock(worker_mu_);
    worker_cv_.wait(lock, [this] { return stop_ || (!work_ && !busy_); });
}

void SealedStore::worker_main() {
    std::unique_lock lock(worker_mu_);
    for (;;) {
        worker_cv_.wait(lock, [this] { return work_ || stop_; });
        if (stop_) return;
        work_ = false;
        busy_ = true;
        lock.unlock();
        try {
            finish_rotation();
        } catch (const std::exception& e) {
            log::error("store", "re-sealing stopped: {}", e.what());
        }
        lock.lock();
        busy_ = false;
        worker_cv_.notify_all();
    }
}

void SealedStore::finish_rotation() {
    while (!stopping_) {
        std::uint32_t target = 0;
        {
            auto keys = keys_.read();
            if (keys->locked || keys->deks.keys.size() <= 1) return;
            target = keys->deks.current;
        }
        auto pass = reseal_pass(target);
        if (!pass) {
            log::error("store", "re-sealing under DEK {} stopped: {}", target,
                       pass.error().message);
            return;
        }
        if (*pass != Pass::clean) continue;
        auto retired = retire_old_deks(target);
        if (!retired) {
            log::error("store", "retiring old DEKs: {}", retired.error().message);
            return;
        }
        if (*retired) return;
    }
}

Result<SealedStore::Pass> SealedStore::reseal_pass(std::uint32_t target) {
    std::size_t resealed = 0;
    // Every value is opened into this one buffer: a secure allocation per value costs more than
    // the rest of re-sealing it.
    crypto::SecureBuffer scratch;
    for (Table table : all_tables) {
        std::optional<std::string> from = std::string();
        while (from) {
            if (stopping_ || current_dek_id() != target) return Pass::interrupted;
            auto chunk = reseal_chunk(table, target, *from, scratch);
            if (!chunk) return std::move(chunk).error();
            resealed += chunk->resealed;
            from = std::move(chunk->next);
        }
    }
    if (resealed > 0) log::info("store", "re-sealed {} values under DEK {}", resealed, target);
    return resealed == 0 ? Pass::clean : Pass::resealed;
}

Result<SealedStore::Chunk> SealedStore::reseal_chunk(Table table, std::uint32_t target,
                                                     const std::string& from,
                                                     crypto::SecureBuffer& scratch) {
    std::unique_lock gate(gate_);
    // Only this thread retires DEKs and rotate_dek waits for gate_: the set is stable here.
    Deks deks;
    {
        auto keys = keys_.read();
        deks = keys->deks;
    }
    if (deks.current != target) return Chunk{0, from};
    const auto& dek = *deks.find(target);

    Chunk chunk;
    rocksdb::WriteBatch batch;
    std::size_t examined = 0, bytes = 0;
    auto it = db_.iterate(table);
    for (it->Seek(from); it->Valid(); it->Next(), ++examined) {
        if (examined == chunk_records || chunk.resealed == chunk_resealed || bytes >= chunk_bytes) {
            chunk.next = it->key().ToString();
            break;
        }
        auto key = it->key().ToStringView();
        auto sealed = it->value().ToStringView();
        if (is_key_record(table, key) || crypto::sealed_key_id(sealed) == target) continue;
        auto n = open_value_into(deks, table, key, sealed, scratch);
        if (!n) return std::move(n).error();
        auto s = batch.Put(db_.cf(table), it->key(),
                           seal_value(dek, table, key, scratch.span().first(*n)));
        if (!s.ok()) return db_error("re-seal", s);
        ++chunk.resealed;
        bytes += sealed.size();
    }
    if (!it->status().ok())
        return db_error(fmt::format("scan {}", table_name(table)), it->status());
    if (chunk.resealed > 0) {
        if (auto r = db_.write(batch); !r) return std::move(r).error();
    }
    return chunk;
}

Result<bool> SealedStore::retire_old_deks(std::uint32_t target) {
    auto keys = keys_.lock();
    if (keys->locked || keys->deks.current != target) return false;
    rocksdb::WriteBatch batch;
    std::vector<std::uint32_t> old;
    for (const auto& [id, dek] : keys->deks.keys) {
        if (id == target) continue;
        old.push_back(id);
        (void)batch.Delete(db_.cf(Table::meta), dek_record_key(id));
    }
    if (auto r = db_.write(batch); !r) return std::move(r).error();
    for (auto id : old) keys->deks.keys.erase(id);
    keys->stored_deks = keys->deks.keys.size();
    log::info("store", "DEK rotation finished: every value is sealed under DEK {}; retired {}",
              target, fmt::join(old, ", "));
    return true;
}

}  // namespace coffer::store::detail
