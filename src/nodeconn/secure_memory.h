// Allocation from libsodium's secure memory for buffers that may hold secrets: Beast's read
// buffers and Boost.JSON's storage.
#pragma once

#include <sodium.h>

#include <cstddef>
#include <new>

#include <boost/json/memory_resource.hpp>
#include <boost/json/storage_ptr.hpp>

#include "coffer/crypto/secure_buffer.h"

namespace coffer::nodeconn {

// sodium_malloc places an allocation against a guard page, so its address is aligned only as far
// as its size is: sizes are rounded up to the alignment.
inline void* secure_allocate(std::size_t bytes, std::size_t align) {
    crypto::init();
    if (align < alignof(std::max_align_t)) align = alignof(std::max_align_t);
    std::size_t rounded = (bytes + align - 1) / align * align;
    void* p = ::sodium_malloc(rounded == 0 ? align : rounded);
    if (p == nullptr) throw std::bad_alloc();
    return p;
}

template <typename T>
struct SecureAllocator {
    using value_type = T;
    SecureAllocator() = default;
    template <typename U>
    SecureAllocator(const SecureAllocator<U>&) noexcept {}
    T* allocate(std::size_t n) {
        return static_cast<T*>(secure_allocate(n * sizeof(T), alignof(T)));
    }
    void deallocate(T* p, std::size_t) noexcept { ::sodium_free(p); }
    template <typename U>
    bool operator==(const SecureAllocator<U>&) const noexcept {
        return true;
    }
};

// Used as the upstream of a monotonic_resource, so few (large) blocks are requested.
class SecureMemoryResource final : public boost::json::memory_resource {
    void* do_allocate(std::size_t bytes, std::size_t align) override {
        return secure_allocate(bytes, align);
    }
    void do_deallocate(void* p, std::size_t, std::size_t) override { ::sodium_free(p); }
    bool do_is_equal(const memory_resource& other) const noexcept override {
        return this == &other;
    }
};

// A fresh monotonic storage over secure memory, for one JSON document and its temporaries.
boost::json::storage_ptr secure_storage();

}  // namespace coffer::nodeconn
