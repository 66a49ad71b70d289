// DNS messages (RFC 1035) as the agent's resolver reads and writes them: one question in, A
// records out. Every read is bounded by the packet: lengths, label sizes, counts and compression
// pointers (only backwards, so no loop) are checked; a packet that breaks a rule is refused, never
// read past.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace coffer::agent::dns {

inline constexpr std::uint16_t type_a = 1;
inline constexpr std::uint16_t type_aaaa = 28;
inline constexpr std::uint16_t type_opt = 41;
inline constexpr std::uint16_t class_in = 1;
inline constexpr std::size_t header_size = 12;
inline constexpr std::size_t max_name_wire = 255;  // RFC 1035 2.3.4
inline constexpr std::size_t min_udp_size = 512;   // without EDNS
inline constexpr std::size_t max_udp_size = 4096;  // the most the resolver sends over UDP

enum class Rcode : std::uint8_t {
    noerror = 0,
    formerr = 1,
    servfail = 2,
    nxdomain = 3,
    notimp = 4,
    refused = 5,
};

struct Query {
    std::uint16_t id = 0;
    std::uint8_t opcode = 0;
    bool recursion_desired = false;
    // The question's name: labels joined by '.', ASCII letters lowered, no trailing dot ("" is
    // the root). Meaningful for lookups only when plain.
    std::string name;
    // Every label is letters, digits, '-' or '_' (what a service or task name can be).
    bool plain = true;
    std::vector<std::uint8_t> wire_name;  // as asked (case kept), uncompressed
    std::uint16_t qtype = 0;
    std::uint16_t qclass = 0;
    bool edns = false;
    // The largest reply the asker takes over UDP: 512 without EDNS, its OPT size (at most
    // max_udp_size) with.
    std::size_t udp_size = min_udp_size;
};

struct Parsed {
    enum class Status {
        ok,
        drop,     // not a query, or too short to hold a header: no reply at all
        formerr,  // a header but a malformed rest: FORMERR with the header's id
        notimp,   // an opcode other than QUERY
    };
    Status status = Status::drop;
    Query query;  // complete when ok; id, opcode and recursion_desired set for formerr/notimp
};

Parsed parse_query(std::span<const std::uint8_t> packet);

using Ipv4 = std::array<std::uint8_t, 4>;

// A reply to q with rcode and one A record (TTL ttl) per address, as many as fit in max_size
// (the reply has TC set when some did not); the question is echoed, and an OPT record when q
// had one.
std::vector<std::uint8_t> build_reply(const Query& q, Rcode rcode, std::span<const Ipv4> addresses,
                                      std::uint32_t ttl, std::size_t max_size);

// A reply of a header alone (no question): for a query whose question could not be read.
std::vector<std::uint8_t> build_header_reply(const Query& q, Rcode rcode);

// Whether reply answers q: a response (QR), with q's id, one question equal to q's (name
// compared without case). Used on what comes back from an upstream resolver.
bool reply_matches(std::span<const std::uint8_t> reply, const Query& q);

}  // namespace coffer::agent::dns
