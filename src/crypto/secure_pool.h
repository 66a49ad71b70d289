// The pool behind SecureBuffer and SecureAllocator. sodium_malloc costs an mmap, two mprotects
// and an mlock per allocation, and sodium_free an munmap with a TLB shootdown on every core:
// per request that dominated the manager's CPU. The pool takes slabs from sodium_malloc (locked,
// guard pages around each slab, excluded from core dumps) and hands out power-of-two blocks;
// a block is wiped when it is released, before it can be reused, and a slab whose blocks are all
// free goes back to the system while enough other blocks of its size stay free. Allocations
// above the largest class go to sodium_malloc directly.
#pragma once

#include <cstddef>
#include <cstdint>

namespace coffer::crypto::detail {

struct SecureMemoryUse {
    std::uint64_t pool_bytes = 0;         // slabs the pool holds
    std::uint64_t pool_in_use_bytes = 0;  // blocks handed out, by their class's size
    std::uint64_t large_bytes = 0;        // allocations above the largest class
};
SecureMemoryUse secure_memory_use() noexcept;

void* pool_allocate(std::size_t bytes);                  // throws std::bad_alloc
void pool_release(void* p, std::size_t bytes) noexcept;  // bytes: as asked at allocation

}  // namespace coffer::crypto::detail
