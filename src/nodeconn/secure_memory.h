// Secure memory for Boost.JSON: the storage of parsed session messages and join requests.
#pragma once

#include <cstddef>

#include <boost/json/memory_resource.hpp>
#include <boost/json/storage_ptr.hpp>

#include "coffer/crypto/secure_allocator.h"

namespace coffer::nodeconn {

template <typename T>
using SecureAllocator = crypto::SecureAllocator<T>;

// Used as the upstream of a monotonic_resource, so few (large) blocks are requested. Sizes are
// rounded up to the alignment: a block placed against a guard page is aligned only as far as
// its size is.
class SecureMemoryResource final : public boost::json::memory_resource {
    static std::size_t rounded(std::size_t bytes, std::size_t align) noexcept {
        if (align < alignof(std::max_align_t)) align = alignof(std::max_align_t);
        return (bytes + align - 1) / align * align;
    }
    void* do_allocate(std::size_t bytes, std::size_t align) override {
        return crypto::secure_allocate(rounded(bytes, align));
    }
    void do_deallocate(void* p, std::size_t bytes, std::size_t align) override {
        crypto::secure_deallocate(p, rounded(bytes, align));
    }
    bool do_is_equal(const memory_resource& other) const noexcept override {
        return this == &other;
    }
};

// A fresh monotonic storage over secure memory, for one JSON document and its temporaries.
boost::json::storage_ptr secure_storage();

}  // namespace coffer::nodeconn
