// An allocator over libsodium's secure memory, for containers and buffers that may hold secret
// bytes in transit (an HTTP connection's read buffer, a JSON parse of a request body).
#pragma once

#include <cstddef>
#include <new>

namespace coffer::crypto {

void* secure_allocate(std::size_t bytes);                     // throws std::bad_alloc
void secure_deallocate(void* p, std::size_t bytes) noexcept;  // wipes, then frees

template <typename T>
struct SecureAllocator {
    using value_type = T;
    SecureAllocator() noexcept = default;
    template <typename U>
    SecureAllocator(const SecureAllocator<U>&) noexcept {}

    T* allocate(std::size_t n) { return static_cast<T*>(secure_allocate(n * sizeof(T))); }
    void deallocate(T* p, std::size_t n) noexcept { secure_deallocate(p, n * sizeof(T)); }

    template <typename U>
    bool operator==(const SecureAllocator<U>&) const noexcept {
        return true;
    }
};

}  // namespace coffer::crypto
