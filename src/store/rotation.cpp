// Finishing a DEK rotation: every value sealed under an older DEK is re-sealed under the current
// one, a chunk at a time; once a full pass finds none left, the older DEK records are deleted.
//
// Crash safety comes from the order of durable steps: the new DEK is stored and made current in
// one write (rotate_dek); each chunk of re-sealed values is one write; the old DEK records go
// only after a pass that found no value needing them. Killed anywhere, the store still holds
// every DEK some value names, and an open that finds more than one DEK resumes here.
#include <algorithm>
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
    RawBatch batch;
    // Each chunk is one write: within what the engine takes in one.
    auto limits = engine_->limits();
    auto max_resealed = std::min(chunk_resealed, limits.ops);
    auto max_bytes = std::min(chunk_bytes, limits.bytes);
    std::size_t examined = 0, bytes = 0;
    std::optional<Error> failed;
    auto r = engine_->scan(table, from, [&](std::string_view key, std::string_view sealed) {
        auto cost = key.size() + sealed.size() + Batch::op_overhead;
        if (examined == chunk_records || chunk.resealed == max_resealed ||
            (chunk.resealed > 0 && bytes + cost > max_bytes)) {
            chunk.next = std::string(key);
            return false;
        }
        ++examined;
        if (is_key_record(table, key) || crypto::sealed_key_id(sealed) == target) return true;
        auto n = open_value_into(deks, table, key, sealed, scratch);
        if (!n) {
            failed = std::move(n).error();
            return false;
        }
        batch.push_back(
            {table, std::string(key), seal_value(dek, table, key, scratch.span().first(*n))});
        ++chunk.resealed;
        bytes += cost;
        return true;
    });
    if (failed) return std::move(*failed);
    if (!r) return std::move(r).error().context("re-seal");
    if (chunk.resealed > 0) {
        if (auto w = engine_->write(batch); !w) return std::move(w).error();
    }
    return chunk;
}

Result<bool> SealedStore::retire_old_deks(std::uint32_t target) {
    auto keys = keys_.lock();
    if (keys->locked || keys->deks.current != target) return false;
    RawBatch batch;
    std::vector<std::uint32_t> old;
    for (const auto& [id, dek] : keys->deks.keys) {
        if (id == target) continue;
        old.push_back(id);
        batch.push_back({Table::meta, dek_record_key(id), std::nullopt});
    }
    if (auto r = engine_->write(batch); !r) return std::move(r).error();
    for (auto id : old) keys->deks.keys.erase(id);
    keys->stored_deks = keys->deks.keys.size();
    log::info("store", "DEK rotation finished: every value is sealed under DEK {}; retired {}",
              target, fmt::join(old, ", "));
    return true;
}

}  // namespace coffer::store::detail
