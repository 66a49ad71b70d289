// Bytes that must not leak: allocated with sodium_malloc (guard pages, mlock, canary), wiped and
// freed on destruction. Move-only, with no formatter and no stream operator, so secret bytes
// cannot reach a log line by accident.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace coffer::crypto {

class SecureBuffer {
  public:
    SecureBuffer() = default;
    // size zero-initialised bytes. Throws std::bad_alloc when secure memory is exhausted.
    explicit SecureBuffer(std::size_t size);
    static SecureBuffer copy_of(std::span<const std::uint8_t> bytes);
    static SecureBuffer copy_of(std::string_view bytes);

    SecureBuffer(SecureBuffer&& other) noexcept;
    SecureBuffer& operator=(SecureBuffer&& other) noexcept;
    SecureBuffer(const SecureBuffer&) = delete;
    SecureBuffer& operator=(const SecureBuffer&) = delete;
    ~SecureBuffer();

    // A deliberate copy (the only way to duplicate secret bytes).
    SecureBuffer clone() const;

    std::uint8_t* data() noexcept { return data_; }
    const std::uint8_t* data() const noexcept { return data_; }
    std::size_t size() const noexcept { return size_; }
    bool empty() const noexcept { return size_ == 0; }
    std::span<std::uint8_t> span() noexcept { return {data_, size_}; }
    std::span<const std::uint8_t> span() const noexcept { return {data_, size_}; }
    // Shrinks the visible size (the allocation stays, and is wiped on free).
    void truncate(std::size_t size) noexcept;

    // Constant-time equality (sizes compared first; sizes are not secret).
    bool equals(std::span<const std::uint8_t> other) const noexcept;

  private:
    std::uint8_t* data_ = nullptr;
    std::size_t size_ = 0;
    std::size_t capacity_ = 0;
};

// Constant-time comparison of equal-length byte strings; false when lengths differ.
bool constant_time_equal(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) noexcept;
bool constant_time_equal(std::string_view a, std::string_view b) noexcept;

// Initialises libsodium; safe to call more than once. Throws if the library cannot start.
void init();

}  // namespace coffer::crypto
