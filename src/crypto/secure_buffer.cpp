#include "coffer/crypto/secure_buffer.h"

#include "secure_pool.h"

#include <sodium.h>

#include <cstring>
#include <new>
#include <stdexcept>
#include <utility>

namespace coffer::crypto {

void init() {
    if (::sodium_init() < 0) throw std::runtime_error("libsodium failed to initialise");
}

SecureBuffer::SecureBuffer(std::size_t size) {
    if (size == 0) return;
    init();
    void* p = detail::pool_allocate(size);
    std::memset(p, 0, size);
    data_ = static_cast<std::uint8_t*>(p);
    size_ = capacity_ = size;
}

SecureBuffer SecureBuffer::copy_of(std::span<const std::uint8_t> bytes) {
    SecureBuffer b(bytes.size());
    if (!bytes.empty()) std::memcpy(b.data_, bytes.data(), bytes.size());
    return b;
}

SecureBuffer SecureBuffer::copy_of(std::string_view bytes) {
    return copy_of({reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()});
}

SecureBuffer::SecureBuffer(SecureBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      capacity_(std::exchange(other.capacity_, 0)) {}

SecureBuffer& SecureBuffer::operator=(SecureBuffer&& other) noexcept {
    if (this != &other) {
        detail::pool_release(data_, capacity_);
        data_ = std::exchange(other.data_, nullptr);
        size_ = std::exchange(other.size_, 0);
        capacity_ = std::exchange(other.capacity_, 0);
    }
    return *this;
}

SecureBuffer::~SecureBuffer() {
    // Wiped before the block can be handed out again.
    detail::pool_release(data_, capacity_);
}

SecureBuffer SecureBuffer::clone() const {
    return copy_of(span());
}

void SecureBuffer::truncate(std::size_t size) noexcept {
    if (size < size_) {
        ::sodium_memzero(data_ + size, size_ - size);
        size_ = size;
    }
}

bool SecureBuffer::equals(std::span<const std::uint8_t> other) const noexcept {
    return constant_time_equal(span(), other);
}

bool constant_time_equal(std::span<const std::uint8_t> a,
                         std::span<const std::uint8_t> b) noexcept {
    if (a.size() != b.size()) return false;
    if (a.empty()) return true;
    return ::sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

bool constant_time_equal(std::string_view a, std::string_view b) noexcept {
    return constant_time_equal({reinterpret_cast<const std::uint8_t*>(a.data()), a.size()},
                               {reinterpret_cast<const std::uint8_t*>(b.data()), b.size()});
}

}  // namespace coffer::crypto

#include "coffer/crypto/secure_allocator.h"

namespace coffer::crypto {

void* secure_allocate(std::size_t bytes) {
    init();
    return detail::pool_allocate(bytes == 0 ? 1 : bytes);
}

void secure_deallocate(void* p, std::size_t bytes) noexcept {
    detail::pool_release(p, bytes == 0 ? 1 : bytes);
}

}  // namespace coffer::crypto
