#include "coffer/crypto/encoding.h"

#include <sodium.h>

#include <algorithm>
#include <vector>

namespace coffer::crypto {
namespace {

// Writes the number held (big endian) in scratch into out as base-36 digits, right-aligned and
// zero-padded. scratch is consumed: repeated division by 36 leaves it zero.
void base36_into(std::span<std::uint8_t> scratch, std::span<char> out) {
    std::fill(out.begin(), out.end(), '0');
    auto nonzero = [&] {
        return std::any_of(scratch.begin(), scratch.end(), [](auto b) { return b != 0; });
    };
    for (std::size_t pos = out.size(); pos > 0 && nonzero();) {
        unsigned rem = 0;
        for (auto& b : scratch) {
            unsigned cur = (rem << 8) | b;
            b = static_cast<std::uint8_t>(cur / 36);
            rem = cur % 36;
        }
        out[--pos] = "0123456789abcdefghijklmnopqrstuvwxyz"[rem];
    }
}

std::string encode(std::span<const std::uint8_t> bytes, int variant) {
    init();
    std::string out(sodium_base64_encoded_len(bytes.size(), variant), '\0');
    sodium_bin2base64(out.data(), out.size(), bytes.data(), bytes.size(), variant);
    out.resize(out.size() - 1);  // the terminating NUL
    return out;
}

SecureBuffer encode_secure(std::span<const std::uint8_t> bytes, int variant) {
    init();
    SecureBuffer out(sodium_base64_encoded_len(bytes.size(), variant));
    sodium_bin2base64(reinterpret_cast<char*>(out.data()), out.size(), bytes.data(), bytes.size(),
                      variant);
    out.truncate(out.size() - 1);  // the terminating NUL
    return out;
}

std::optional<SecureBuffer> decode(std::string_view text, int variant) {
    init();
    SecureBuffer out(text.size() / 4 * 3 + 3);
    std::size_t len = 0;
    const char* end = nullptr;
    if (text.empty()) return SecureBuffer{};
    if (sodium_base642bin(out.data(), out.size(), text.data(), text.size(), nullptr, &len, &end,
                          variant) != 0 ||
        end != text.data() + text.size())
        return std::nullopt;
    out.truncate(len);
    return out;
}

}  // namespace

std::string base64_encode(std::span<const std::uint8_t> bytes) {
    return encode(bytes, sodium_base64_VARIANT_ORIGINAL);
}

SecureBuffer base64_encode_secure(std::span<const std::uint8_t> bytes) {
    return encode_secure(bytes, sodium_base64_VARIANT_ORIGINAL);
}

std::optional<SecureBuffer> base64_decode_secure(std::string_view text) {
    return decode(text, sodium_base64_VARIANT_ORIGINAL);
}

std::string base64url_encode(std::span<const std::uint8_t> bytes) {
    return encode(bytes, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

std::optional<SecureBuffer> base64url_decode_secure(std::string_view text) {
    return decode(text, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

SecureBuffer base64url_encode_secure(std::span<const std::uint8_t> bytes) {
    return encode_secure(bytes, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

std::string hex_encode(std::span<const std::uint8_t> bytes) {
    init();
    std::string out(bytes.size() * 2 + 1, '\0');
    sodium_bin2hex(out.data(), out.size(), bytes.data(), bytes.size());
    out.pop_back();
    return out;
}

std::string base36_encode(std::span<const std::uint8_t> bytes, std::size_t width) {
    std::vector<std::uint8_t> scratch(bytes.begin(), bytes.end());
    std::string out(width, '0');
    base36_into(scratch, out);
    return out;
}

SecureBuffer base36_encode_secure(std::span<const std::uint8_t> bytes, std::size_t width) {
    auto scratch = SecureBuffer::copy_of(bytes);
    SecureBuffer out(width);
    base36_into(scratch.span(), {reinterpret_cast<char*>(out.data()), out.size()});
    return out;
}

}  // namespace coffer::crypto
