#include "secure_pool.h"

#include "coffer/crypto/secure_memory_metrics.h"

#include <sodium.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstdint>
#include <map>
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

// Locked bytes, for metrics: slabs held, blocks handed out (their class's size), and
// allocations too large for a class (sodium_malloc'd one by one).
std::atomic<std::uint64_t> slab_total{0};
std::atomic<std::uint64_t> blocks_in_use{0};
std::atomic<std::uint64_t> large_in_use{0};

struct Slab {
    std::size_t bytes = 0;
    std::size_t used = 0;  // blocks handed out
};

// A slab whose blocks are all free again goes back to the system (unlocked, unmapped) while the
// class keeps at least this many slabs' worth of free blocks besides it: a burst (a thousand
// sessions, a big backup) does not stay locked for the life of the process, and a class whose use
// swings by less than that does not map and unmap a slab at every swing.
constexpr std::size_t spare_slabs = 2;

struct SizeClass {
    std::mutex mutex;
    std::vector<void*> free;
    std::map<std::uintptr_t, Slab> slabs;  // by base address
    std::size_t blocks = 0;                // in every slab; free has room for them all

    // The slab holding block, or end() when none of this class does.
    std::map<std::uintptr_t, Slab>::iterator slab_of(void* block) {
        auto a = reinterpret_cast<std::uintptr_t>(block);
        auto it = slabs.upper_bound(a);
        if (it == slabs.begin()) return slabs.end();
        --it;  // the slab with the greatest base not above the block
        return a < it->first + it->second.bytes ? it : slabs.end();
    }

    // Under mutex: gives an empty slab back when enough other blocks are free.
    void maybe_return(std::map<std::uintptr_t, Slab>::iterator it, std::size_t block) {
        const auto base = it->first;
        const auto bytes = it->second.bytes;
        const auto per_slab = bytes / block;
        if (free.size() < per_slab * (spare_slabs + 1)) return;
        std::erase_if(free, [&](void* p) {
            auto a = reinterpret_cast<std::uintptr_t>(p);
            return a >= base && a < base + bytes;
        });
        slabs.erase(it);
        blocks -= per_slab;
        ::sodium_free(reinterpret_cast<void*>(base));  // its blocks were wiped on release
        slab_total.fetch_sub(bytes, std::memory_order_relaxed);
    }
};

struct Pool {
    std::array<SizeClass, classes> sizes;

    void refill(std::size_t c) {
        std::size_t block = std::size_t{1} << (c + min_shift);
        std::size_t bytes =
            std::max(block, std::clamp(block * blocks_per_slab, min_slab_bytes, max_slab_bytes));
        auto* slab = static_cast<unsigned char*>(::sodium_malloc(bytes));
        if (slab == nullptr) throw std::bad_alloc();
        try {
            sizes[c].slabs.emplace(reinterpret_cast<std::uintptr_t>(slab), Slab{bytes, 0});
            sizes[c].free.reserve(sizes[c].blocks + bytes / block);
        } catch (...) {
            sizes[c].slabs.erase(reinterpret_cast<std::uintptr_t>(slab));
            ::sodium_free(slab);
            throw;
        }
        slab_total.fetch_add(bytes, std::memory_order_relaxed);
        sizes[c].blocks += bytes / block;
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
    ++sc.slab_of(p)->second.used;  // p came from one of this class's slabs
    blocks_in_use.fetch_add(std::size_t{1} << (c + min_shift), std::memory_order_relaxed);
    return p;
}

namespace {

// Releases p if a slab of class c holds it: the whole block is wiped (a caller may name a smaller
// size than it asked for: Boost.JSON's monotonic_resource gives back its blocks without their
// header), and an emptied slab may go back to the system.
bool release_in(std::size_t c, void* p) noexcept {
    auto& sc = pool().sizes[c];
    const std::size_t block = std::size_t{1} << (c + min_shift);
    std::lock_guard lock(sc.mutex);
    auto slab = sc.slab_of(p);
    if (slab == sc.slabs.end()) return false;
    ::sodium_memzero(p, block);
    blocks_in_use.fetch_sub(block, std::memory_order_relaxed);
    // The free list has room for every block of every slab (reserved when the slab came).
    sc.free.push_back(p);
    if (--slab->second.used == 0) sc.maybe_return(slab, block);
    return true;
}

}  // namespace

void pool_release(void* p, std::size_t bytes) noexcept {
    if (p == nullptr) return;
    if (bytes > (std::size_t{1} << max_shift)) {
        ::sodium_free(p);  // wipes
        large_in_use.fetch_sub(bytes, std::memory_order_relaxed);
        return;
    }
    // The class the size names first; a block released under another size is found by its
    // address in the others.
    auto c = class_of(bytes);
    if (release_in(c, p)) return;
    for (std::size_t k = c + 1; k < classes; ++k)  // smaller sizes are what is seen
        if (release_in(k, p)) return;
    for (std::size_t k = 0; k < c; ++k)
        if (release_in(k, p)) return;
    // In no slab: a large allocation given back under a smaller size.
    ::sodium_free(p);
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
        "Locked memory (libsodium secure memory) of this process: pool = slabs the pool holds "
        "(an empty slab is returned while two slabs' worth of its size stay free), in_use = pool "
        "blocks handed out, large = allocations above the pool's largest block.",
        metrics::Type::gauge, {"kind"}, [](metrics::Sink& s) {
            auto use = detail::secure_memory_use();
            s.sample({"pool"}, static_cast<double>(use.pool_bytes));
            s.sample({"in_use"}, static_cast<double>(use.pool_in_use_bytes));
            s.sample({"large"}, static_cast<double>(use.large_bytes));
        });
}

}  // namespace coffer::crypto
