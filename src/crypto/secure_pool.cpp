#include "secure_pool.h"

#include <sodium.h>

#include <array>
#include <bit>
#include <mutex>
#include <new>
#include <vector>

namespace coffer::crypto::detail {
namespace {

constexpr std::size_t min_shift = 6;   // 64 bytes
constexpr std::size_t max_shift = 21;  // 2 MiB: a connection's read buffer (1 MiB body + headers)
constexpr std::size_t classes = max_shift - min_shift + 1;
constexpr std::size_t slab_bytes = 1 << 20;

std::size_t class_of(std::size_t bytes) {
    std::size_t rounded = std::bit_ceil(std::max<std::size_t>(bytes, 1));
    std::size_t shift = static_cast<std::size_t>(std::countr_zero(rounded));
    return shift < min_shift ? 0 : shift - min_shift;
}

struct SizeClass {
    std::mutex mutex;
    std::vector<void*> free;
};

struct Pool {
    std::array<SizeClass, classes> sizes;

    void refill(std::size_t c) {
        std::size_t block = std::size_t{1} << (c + min_shift);
        std::size_t bytes = std::max(slab_bytes, block);
        // Slabs live for the process: blocks are wiped on release, and the memory stays locked.
        auto* slab = static_cast<unsigned char*>(::sodium_malloc(bytes));
        if (slab == nullptr) throw std::bad_alloc();
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
        return p;
    }
    auto c = class_of(bytes);
    auto& sc = pool().sizes[c];
    std::lock_guard lock(sc.mutex);
    if (sc.free.empty()) pool().refill(c);
    void* p = sc.free.back();
    sc.free.pop_back();
    return p;
}

void pool_release(void* p, std::size_t bytes) noexcept {
    if (p == nullptr) return;
    if (bytes > (std::size_t{1} << max_shift)) {
        ::sodium_free(p);  // wipes
        return;
    }
    ::sodium_memzero(p, bytes);
    auto& sc = pool().sizes[class_of(bytes)];
    std::lock_guard lock(sc.mutex);
    try {
        sc.free.push_back(p);
    } catch (...) {
        // Out of memory for the list itself: the (wiped) block is leaked, not corrupted.
    }
}

}  // namespace coffer::crypto::detail
