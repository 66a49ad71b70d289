// Sealing: XChaCha20-Poly1305 with a random 24-byte nonce. A sealed record is
//   version (1) | key id (4, big endian) | nonce (24) | ciphertext | tag (16)
// and its associated data binds it to where it is stored, so a record moved to another key,
// another column family, or truncated, fails to open.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "coffer/crypto/secure_buffer.h"

namespace coffer::crypto {

inline constexpr std::size_t key_bytes = 32;
inline constexpr std::uint8_t sealed_version = 1;
inline constexpr std::size_t sealed_overhead = 1 + 4 + 24 + 16;

// A 256-bit symmetric key in secure memory, with the id written into what it seals.
struct Key {
    std::uint32_t id = 0;
    SecureBuffer bytes;

    static Key generate(std::uint32_t id);
};

// Seals plaintext under key; ad is authenticated, not stored.
std::string seal(const Key& key, std::span<const std::uint8_t> plaintext, std::string_view ad);
// The key id a sealed record names, or nullopt when the header is malformed.
std::optional<std::uint32_t> sealed_key_id(std::string_view sealed) noexcept;
// Opens into secure memory. nullopt when the record is malformed, was sealed under another key,
// with other associated data, or was altered in any way.
std::optional<SecureBuffer> open(const Key& key, std::string_view sealed, std::string_view ad);
// As open(), into out, which must hold at least sealed.size() - sealed_overhead bytes (nullopt
// otherwise); returns the plaintext's length. For opening many records with one secure buffer.
std::optional<std::size_t> open_into(const Key& key, std::string_view sealed, std::string_view ad,
                                     std::span<std::uint8_t> out);

// Derives a 256-bit key from high-entropy input keying material and a context label (BLAKE2b).
SecureBuffer derive_key(std::span<const std::uint8_t> ikm, std::string_view context);

// A 256-bit keyed MAC (BLAKE2b under key, which must be key_bytes long) of the parts in order,
// each preceded by its length, after a context label: no two lists of parts share an input.
SecureBuffer keyed_mac(const SecureBuffer& key, std::string_view context,
                       std::initializer_list<std::span<const std::uint8_t>> parts);

}  // namespace coffer::crypto
