// DNS queries as they reach the agent's resolver from a task: parsed, answered and matched as
// the resolver does it.
#include <array>
#include <cstdint>
#include <span>

#include "coffer/agent/dns_message.h"

namespace dns = coffer::agent::dns;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::span<const std::uint8_t> packet(data, size);
    auto parsed = dns::parse_query(packet);
    const std::array<dns::Ipv4, 3> addrs{{{10, 0, 1, 2}, {10, 0, 1, 3}, {10, 0, 1, 4}}};
    switch (parsed.status) {
        case dns::Parsed::Status::ok: {
            auto reply = dns::build_reply(parsed.query, dns::Rcode::noerror, addrs, 600,
                                          parsed.query.udp_size);
            if (reply.size() > parsed.query.udp_size) __builtin_trap();
            if (!dns::reply_matches(reply, parsed.query)) __builtin_trap();
            break;
        }
        case dns::Parsed::Status::formerr:
        case dns::Parsed::Status::notimp:
            (void)dns::build_header_reply(parsed.query, dns::Rcode::formerr);
            break;
        case dns::Parsed::Status::drop:
            break;
    }
    // The same bytes as an upstream's answer to a query of ours.
    dns::Query q;
    q.id = size >= 2 ? static_cast<std::uint16_t>((data[0] << 8) | data[1]) : 0;
    q.name = "web";
    q.qtype = dns::type_a;
    q.qclass = dns::class_in;
    (void)dns::reply_matches(packet, q);
    return 0;
}
