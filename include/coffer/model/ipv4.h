// IPv4 addresses and prefixes in text form ("10.0.1.7", "10.0.1.0/24"), for networks.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace coffer::model {

// Dotted quad, exactly four decimal parts 0..255 without leading zeros ("010.0.0.1" is refused,
// as inet_pton refuses it); host byte order.
std::optional<std::uint32_t> parse_ipv4(std::string_view text) noexcept;
std::string format_ipv4(std::uint32_t address);

struct Ipv4Prefix {
    std::uint32_t address = 0;  // as written; network() has the host bits cleared
    int length = 0;             // 0..32
    std::uint32_t mask() const noexcept {
        return length == 0 ? 0 : ~std::uint32_t{0} << (32 - length);
    }
    std::uint32_t network() const noexcept { return address & mask(); }
    std::uint32_t broadcast() const noexcept { return network() | ~mask(); }
    bool contains(std::uint32_t a) const noexcept { return (a & mask()) == network(); }
    bool overlaps(const Ipv4Prefix& o) const noexcept {
        return contains(o.network()) || o.contains(network());
    }
    std::string to_string() const;  // "a.b.c.d/len", address as written
    bool operator==(const Ipv4Prefix&) const = default;
};

// "a.b.c.d/len".
std::optional<Ipv4Prefix> parse_ipv4_prefix(std::string_view text) noexcept;

}  // namespace coffer::model
