#include "coffer/crypto/encoding.h"

#include <sodium.h>

namespace coffer::crypto {
namespace {

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

}  // namespace coffer::crypto
