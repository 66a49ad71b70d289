// Randomness from the kernel CSPRNG (through libsodium).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace coffer::crypto {

void random_bytes(std::span<std::uint8_t> out);

// Uniform in [0, upper) without modulo bias; upper > 0.
std::uint32_t random_uniform(std::uint32_t upper);

// 25 lower-case base-36 characters, about 128 bits: the ID of every object (as Docker's).
std::string random_id();

// An ID in the shape of random_id(), derived from a value by a hash keyed with context (16 to 64
// bytes): the same inputs always give the same ID, and different contexts unrelated ones.
std::string derived_id(std::string_view context, std::string_view value);

// n random bytes rendered in lower-case base 36, zero-padded to width characters.
std::string random_base36(std::size_t bytes, std::size_t width);

}  // namespace coffer::crypto
