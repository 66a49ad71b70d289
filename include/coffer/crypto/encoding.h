// Base64 and hex. Decoding is strict: bad input is an error value, not an exception.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "coffer/crypto/secure_buffer.h"

namespace coffer::crypto {

std::string base64_encode(std::span<const std::uint8_t> bytes);
// The same, into secure memory (for encoding secret bytes).
SecureBuffer base64_encode_secure(std::span<const std::uint8_t> bytes);
// Standard alphabet with padding (as Go's encoding/base64 StdEncoding, Docker's Data field).
// Decodes into secure memory; nullopt when the input is not valid base64.
std::optional<SecureBuffer> base64_decode_secure(std::string_view text);
// URL-safe alphabet, no padding (unlock keys).
std::string base64url_encode(std::span<const std::uint8_t> bytes);
std::optional<SecureBuffer> base64url_decode_secure(std::string_view text);
// As base64url_encode, into secure memory: for encodings that are secrets themselves (unlock keys).
SecureBuffer base64url_encode_secure(std::span<const std::uint8_t> bytes);

std::string hex_encode(std::span<const std::uint8_t> bytes);

// The big-endian number in bytes in lower-case base 36, zero-padded to width characters; when the
// number needs more digits, only the low width digits are kept.
std::string base36_encode(std::span<const std::uint8_t> bytes, std::size_t width);
// The same, for secret bytes: the result and every intermediate stay in secure memory.
SecureBuffer base36_encode_secure(std::span<const std::uint8_t> bytes, std::size_t width);

}  // namespace coffer::crypto
