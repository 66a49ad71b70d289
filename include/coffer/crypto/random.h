// Randomness from the kernel CSPRNG (through libsodium).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace coffer::crypto {

// Straight from the kernel: keys, tokens, anything that stays secret.
void random_bytes(std::span<std::uint8_t> out);

// For values that are public once made (object IDs, AEAD nonces), never for keys: served from a
// per-thread pool of kernel randomness in ordinary memory, refilled 512 bytes at a time, so that
// a request that makes an ID and seals twice costs no system call for them (getrandom was 4
// calls per secret create). Bytes handed out are wiped from the pool; a forked child starts
// with an empty one. Requests over 64 bytes go to random_bytes.
void public_random_bytes(std::span<std::uint8_t> out);

// Uniform in [0, upper) without modulo bias; upper > 0.
std::uint32_t random_uniform(std::uint32_t upper);

// 25 lower-case base-36 characters, about 128 bits: the ID of every object (as Docker's).
std::string random_id();

// An ID in the shape of random_id(), derived from a value by a hash keyed with context (16 to 64
// bytes): the same inputs always give the same ID, and different contexts unrelated ones.
std::string derived_id(std::string_view context, std::string_view value);

// n random bytes (public_random_bytes) rendered in lower-case base 36, zero-padded to width
// characters.
std::string random_base36(std::size_t bytes, std::size_t width);

}  // namespace coffer::crypto
