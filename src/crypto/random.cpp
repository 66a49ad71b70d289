#include "coffer/crypto/random.h"

#include <sodium.h>

#include <algorithm>
#include <array>
#include <vector>

#include "coffer/crypto/secure_buffer.h"

namespace coffer::crypto {

void random_bytes(std::span<std::uint8_t> out) {
    init();
    ::randombytes_buf(out.data(), out.size());
}

std::string random_base36(std::size_t bytes, std::size_t width) {
    std::vector<std::uint8_t> n(bytes);
    random_bytes(n);
    // Repeated division of the big-endian number by 36.
    std::string digits;
    auto nonzero = [&] { return std::any_of(n.begin(), n.end(), [](auto b) { return b != 0; }); };
    while (nonzero()) {
        unsigned rem = 0;
        for (auto& b : n) {
            unsigned cur = (rem << 8) | b;
            b = static_cast<std::uint8_t>(cur / 36);
            rem = cur % 36;
        }
        digits.push_back("0123456789abcdefghijklmnopqrstuvwxyz"[rem]);
    }
    while (digits.size() < width) digits.push_back('0');
    std::reverse(digits.begin(), digits.end());
    if (digits.size() > width) digits.erase(0, digits.size() - width);
    return digits;
}

std::string random_id() {
    // 17 bytes (136 bits) rendered in base 36 need 27 digits; keep the low 25 (about 129 bits).
    return random_base36(17, 25);
}

}  // namespace coffer::crypto
