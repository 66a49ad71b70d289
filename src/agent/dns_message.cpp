#include "coffer/agent/dns_message.h"

#include <algorithm>

namespace coffer::agent::dns {
namespace {

constexpr std::uint16_t flag_qr = 0x8000;
constexpr std::uint16_t flag_aa = 0x0400;
constexpr std::uint16_t flag_tc = 0x0200;
constexpr std::uint16_t flag_rd = 0x0100;
constexpr std::uint16_t flag_ra = 0x0080;
constexpr std::size_t max_pointer_hops = 32;  // a name of 255 bytes has at most 127 labels
constexpr std::size_t max_additional = 8;     // OPT and perhaps a TSIG; more is not a query

std::uint16_t get16(std::span<const std::uint8_t> p, std::size_t off) {
    return static_cast<std::uint16_t>((p[off] << 8) | p[off + 1]);
}

void put16(std::vector<std::uint8_t>& out, std::uint16_t v) {
    out.push_back(static_cast<std::uint8_t>(v >> 8));
    out.push_back(static_cast<std::uint8_t>(v & 0xff));
}

void put32(std::vector<std::uint8_t>& out, std::uint32_t v) {
    put16(out, static_cast<std::uint16_t>(v >> 16));
    put16(out, static_cast<std::uint16_t>(v & 0xffff));
}

bool plain_char(std::uint8_t c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

// Reads the name at off (advanced past it). Pointers must point strictly before the label that
// holds them, so following them always moves backwards and ends. lower and wire may be null.
bool read_name(std::span<const std::uint8_t> p, std::size_t& off, std::string* lower, bool* plain,
               std::vector<std::uint8_t>* wire) {
    std::size_t pos = off;
    bool jumped = false;
    std::size_t hops = 0;
    std::size_t wire_len = 0;
    for (;;) {
        if (pos >= p.size()) return false;
        std::uint8_t len = p[pos];
        if ((len & 0xc0) == 0xc0) {
            if (pos + 1 >= p.size()) return false;
            std::size_t target = static_cast<std::size_t>(((len & 0x3f) << 8) | p[pos + 1]);
            if (target >= pos || ++hops > max_pointer_hops) return false;
            if (!jumped) off = pos + 2;
            jumped = true;
            pos = target;
            continue;
        }
        if ((len & 0xc0) != 0) return false;  // 0x40 and 0x80: reserved label types
        wire_len += 1u + len;
        if (wire_len > max_name_wire) return false;
        if (len == 0) {
            if (!jumped) off = pos + 1;
            if (wire) wire->push_back(0);
            return true;
        }
        if (pos + 1 + len > p.size()) return false;
        if (lower && !lower->empty()) lower->push_back('.');
        if (wire) wire->push_back(len);
        for (std::size_t i = 0; i < len; ++i) {
            std::uint8_t c = p[pos + 1 + i];
            if (wire) wire->push_back(c);
            std::uint8_t l = (c >= 'A' && c <= 'Z') ? static_cast<std::uint8_t>(c + 32) : c;
            if (plain && !plain_char(l)) *plain = false;
            if (lower) lower->push_back(static_cast<char>(l));
        }
        pos += 1 + len;
    }
}

// Skips a resource record at off; reports its type and class.
bool skip_record(std::span<const std::uint8_t> p, std::size_t& off, std::uint16_t& type,
                 std::uint16_t& klass) {
    if (!read_name(p, off, nullptr, nullptr, nullptr)) return false;
    if (off + 10 > p.size()) return false;
    type = get16(p, off);
    klass = get16(p, off + 2);
    std::size_t rdlen = get16(p, off + 8);
    off += 10;
    if (off + rdlen > p.size()) return false;
    off += rdlen;
    return true;
}

void put_header(std::vector<std::uint8_t>& out, const Query& q, Rcode rcode, bool tc,
                std::uint16_t qd, std::uint16_t an, std::uint16_t ar) {
    std::uint16_t flags = flag_qr | flag_aa | flag_ra;
    flags |= static_cast<std::uint16_t>((q.opcode & 0x0f) << 11);
    if (q.recursion_desired) flags |= flag_rd;
    if (tc) flags |= flag_tc;
    flags |= static_cast<std::uint16_t>(rcode);
    put16(out, q.id);
    put16(out, flags);
    put16(out, qd);
    put16(out, an);
    put16(out, 0);
    put16(out, ar);
}

}  // namespace

Parsed parse_query(std::span<const std::uint8_t> p) {
    Parsed r;
    if (p.size() < header_size) return r;
    std::uint16_t flags = get16(p, 2);
    if (flags & flag_qr) return r;  // a response: never answer one (no reflection loops)
    Query& q = r.query;
    q.id = get16(p, 0);
    q.opcode = static_cast<std::uint8_t>((flags >> 11) & 0x0f);
    q.recursion_desired = (flags & flag_rd) != 0;
    if (q.opcode != 0) {
        r.status = Parsed::Status::notimp;
        return r;
    }
    r.status = Parsed::Status::formerr;
    std::uint16_t qd = get16(p, 4), an = get16(p, 6), ns = get16(p, 8), ar = get16(p, 10);
    if (qd != 1 || an != 0 || ns != 0 || ar > max_additional) return r;
    std::size_t off = header_size;
    if (!read_name(p, off, &q.name, &q.plain, &q.wire_name)) return r;
    if (off + 4 > p.size()) return r;
    q.qtype = get16(p, off);
    q.qclass = get16(p, off + 2);
    off += 4;
    bool seen_opt = false;
    for (std::uint16_t i = 0; i < ar; ++i) {
        std::size_t start = off;
        std::uint16_t type = 0, klass = 0;
        if (!skip_record(p, off, type, klass)) return r;
        if (type == type_opt) {
            // RFC 6891 6.1.1: one OPT, owned by the root.
            if (seen_opt || p[start] != 0) return r;
            seen_opt = true;
            q.edns = true;
            q.udp_size = std::clamp<std::size_t>(klass, min_udp_size, max_udp_size);
        }
    }
    if (off != p.size()) return r;  // trailing bytes: not a message we understand
    r.status = Parsed::Status::ok;
    return r;
}

std::vector<std::uint8_t> build_reply(const Query& q, Rcode rcode, std::span<const Ipv4> addresses,
                                      std::uint32_t ttl, std::size_t max_size) {
    constexpr std::size_t a_record = 2 + 2 + 2 + 4 + 2 + 4;  // pointer, type, class, ttl, len, addr
    constexpr std::size_t opt_record = 11;
    std::size_t fixed = header_size + q.wire_name.size() + 4 + (q.edns ? opt_record : 0);
    std::size_t room = max_size > fixed ? (max_size - fixed) / a_record : 0;
    std::size_t count = std::min({addresses.size(), room, std::size_t{0xffff}});
    bool tc = count < addresses.size();

    std::vector<std::uint8_t> out;
    out.reserve(fixed + count * a_record);
    put_header(out, q, rcode, tc, 1, static_cast<std::uint16_t>(count), q.edns ? 1 : 0);
    out.insert(out.end(), q.wire_name.begin(), q.wire_name.end());
    put16(out, q.qtype);
    put16(out, q.qclass);
    for (std::size_t i = 0; i < count; ++i) {
        put16(out, 0xc000 | header_size);  // the question's name
        put16(out, type_a);
        put16(out, class_in);
        put32(out, ttl);
        put16(out, 4);
        out.insert(out.end(), addresses[i].begin(), addresses[i].end());
    }
    if (q.edns) {
        out.push_back(0);  // root
        put16(out, type_opt);
        put16(out, static_cast<std::uint16_t>(max_udp_size));
        put32(out, 0);  // extended rcode, version 0, no flags
        put16(out, 0);
    }
    return out;
}

std::vector<std::uint8_t> build_header_reply(const Query& q, Rcode rcode) {
    std::vector<std::uint8_t> out;
    put_header(out, q, rcode, false, 0, 0, 0);
    return out;
}

bool reply_matches(std::span<const std::uint8_t> p, const Query& q) {
    if (p.size() < header_size) return false;
    if (get16(p, 0) != q.id || !(get16(p, 2) & flag_qr) || get16(p, 4) != 1) return false;
    std::size_t off = header_size;
    std::string name;
    bool plain = true;
    if (!read_name(p, off, &name, &plain, nullptr)) return false;
    if (off + 4 > p.size()) return false;
    return name == q.name && get16(p, off) == q.qtype && get16(p, off + 2) == q.qclass;
}

}  // namespace coffer::agent::dns
