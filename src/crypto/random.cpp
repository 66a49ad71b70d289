#include "coffer/crypto/random.h"

#include <sodium.h>

#include <vector>

#include "coffer/crypto/encoding.h"
#include "coffer/crypto/secure_buffer.h"

namespace coffer::crypto {

void random_bytes(std::span<std::uint8_t> out) {
    init();
    ::randombytes_buf(out.data(), out.size());
}

std::uint32_t random_uniform(std::uint32_t upper) {
    init();
    return ::randombytes_uniform(upper);
}

std::string random_base36(std::size_t bytes, std::size_t width) {
    std::vector<std::uint8_t> n(bytes);
    random_bytes(n);
    return base36_encode(n, width);
}

std::string random_id() {
    // 17 bytes (136 bits) rendered in base 36 need 27 digits; keep the low 25 (about 129 bits).
    return random_base36(17, 25);
}

}  // namespace coffer::crypto
