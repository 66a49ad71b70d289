#include "secure_pool.h"

#include "coffer/crypto/secure_memory_metrics.h"

#include <sodium.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <mutex>
#include <new>
#include <vector>

namespace coffer::crypto::detail {
namespace {

constexpr std::size_t min_shift = 6;   // 64 bytes
constexpr std::size_t max_shift = 21;  // 2 MiB: a connection's read buffer (1 MiB body + headers)
constexpr std::size_t classes = max_shift - min_shift + 1;
// A slab holds at least 16 blocks, and takes at least 64 KiB and at most 1 MiB unless one block
// is larger: every slab is locked (resident) at once, so an idle process that touched a dozen
// size classes holds a dozen slabs.
constexpr std::size_t min_slab_bytes = std::size_t{1} << 16;
constexpr std::size_t max_slab_bytes = std::size_t{1} << 20;
constexpr std::size_t blocks_per_slab = 16;

std::size_t class_of(std::size_t bytes) {
    std::size_t rounded = std::bit_ceil(std::max<std::size_t>(bytes, 1));
    std::size_t shift = static_cast<std::size_t>(std::countr_zero(rounded));
    return shift < min_shift ? 0 : shift - min_shift;
}

// Locked bytes, for metrics: slabs taken (never returned), blocks handed out (their class's
// size), and allocations too large for a class (sodium_malloc'd one by one).
std::atomic<std::uint64_t> slab_total{0};
std::atomic<std::uint64_t> blocks_in_use{0};
std::atomic<std::uint64_t> large_in_use{0};

struct SizeClass {
    std::mutex mutex;
    std::vector<void*> free;
};

struct Pool {
    std::array<SizeClass, classes> sizes;

    void refill(std::size_t c) {
        std::size_t block = std::size_t{1} << (c + min_shift);
        std::size_t bytes =
            std::max(block, std::clamp(block * blocks_per_slab, min_slab_bytes, max_slab_bytes));
        // Slabs live for the process: blocks are wiped on release, and the memory stays locked.
        auto* slab = static_cast<unsigned char*>(::sodium_malloc(bytes));
        if (slab == nullptr) throw std::bad_alloc();
        slab_total.fetch_add(bytes, std::memory_order_relaxed);
        for (std::size_t off = 0; off + block <= bytes; off += block)
            sizes[c].free.push_back(slab + off);
    }
};

Pool& pool() {
    // Never destroyed: buffers may be released by static destructors after main returns.
    static Pool* p = new Pool();
    return *p;
}

}  // namespace

void* pool_allocate(std::size_t bytes) {
    if (bytes > (std::size_t{1} << max_shift)) {
        void* p = ::sodium_malloc(bytes);
        if (p == nullptr) throw std::bad_alloc();
        large_in_use.fetch_add(bytes, std::memory_order_relaxed);
        return p;
    }
    auto c = class_of(bytes);
    auto& sc = pool().sizes[c];
    std::lock_guard lock(sc.mutex);
    if (sc.free.empty()) pool().refill(c);
    void* p = sc.free.back();
    sc.free.pop_back();
    blocks_in_use.fetch_add(std::size_t{1} << (c + min_shift), std::memory_order_relaxed);
    return p;
}

void pool_release(void* p, std::size_t bytes) noexcept {
    if (p == nullptr) return;
    if (bytes > (std::size_t{1} << max_shift)) {
        ::sodium_free(p);  // wipes
        large_in_use.fetch_sub(bytes, std::memory_order_relaxed);
        return;
    }
    ::sodium_memzero(p, bytes);
    auto c = class_of(bytes);
    blocks_in_use.fetch_sub(std::size_t{1} << (c + min_shift), std::memory_order_relaxed);
    auto& sc = pool().sizes[c];
    std::lock_guard lock(sc.mutex);
    try {
        sc.free.push_back(p);
    } catch (...) {
        // Out of memory for the list itself: the (wiped) block is leaked, not corrupted.
    }
}

SecureMemoryUse secure_memory_use() noexcept {
    return {slab_total.load(std::memory_order_relaxed),
            blocks_in_use.load(std::memory_order_relaxed),
            large_in_use.load(std::memory_order_relaxed)};
}

}  // namespace coffer::crypto::detail

namespace coffer::crypto {

metrics::Registration register_secure_memory_metrics() {
    return metrics::registry().collector(
        "coffer_secure_memory_bytes",
        "Locked memory (libsodium secure memory) of this process: pool = slabs the pool holds, "
        "in_use = pool blocks handed out, large = allocations above the pool's largest block.",
        metrics::Type::gauge, {"kind"}, [](metrics::Sink& s) {
            auto use = detail::secure_memory_use();
            s.sample({"pool"}, static_cast<double>(use.pool_bytes));
            s.sample({"in_use"}, static_cast<double>(use.pool_in_use_bytes));
            s.sample({"large"}, static_cast<double>(use.large_bytes));
        });
}

}  // namespace coffer::crypto
