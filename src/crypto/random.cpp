#include "coffer/crypto/random.h"

#include <sodium.h>

#include <array>
#include <stdexcept>
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

std::string derived_id(std::string_view context, std::string_view value) {
    if (context.size() < crypto_generichash_KEYBYTES_MIN ||
        context.size() > crypto_generichash_KEYBYTES_MAX)
        throw std::invalid_argument("derived_id: the context must be 16 to 64 bytes");
    init();
    std::array<std::uint8_t, 17> out{};
    ::crypto_generichash(out.data(), out.size(),
                         reinterpret_cast<const unsigned char*>(value.data()), value.size(),
                         reinterpret_cast<const unsigned char*>(context.data()), context.size());
    return base36_encode(out, 25);
}

}  // namespace coffer::crypto
