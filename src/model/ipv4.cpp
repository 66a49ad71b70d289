#include "coffer/model/ipv4.h"

#include <fmt/format.h>

#include <charconv>

namespace coffer::model {

std::optional<std::uint32_t> parse_ipv4(std::string_view text) noexcept {
    std::uint32_t out = 0;
    for (int part = 0; part < 4; ++part) {
        if (part > 0) {
            if (text.empty() || text.front() != '.') return std::nullopt;
            text.remove_prefix(1);
        }
        std::size_t digits = 0;
        while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
        if (digits == 0 || digits > 3 || (digits > 1 && text.front() == '0')) return std::nullopt;
        unsigned value = 0;
        std::from_chars(text.data(), text.data() + digits, value);
        if (value > 255) return std::nullopt;
        out = (out << 8) | value;
        text.remove_prefix(digits);
    }
    if (!text.empty()) return std::nullopt;
    return out;
}

std::string format_ipv4(std::uint32_t a) {
    return fmt::format("{}.{}.{}.{}", a >> 24, (a >> 16) & 0xff, (a >> 8) & 0xff, a & 0xff);
}

std::string Ipv4Prefix::to_string() const {
    return fmt::format("{}/{}", format_ipv4(address), length);
}

std::optional<Ipv4Prefix> parse_ipv4_prefix(std::string_view text) noexcept {
    auto slash = text.find('/');
    if (slash == std::string_view::npos) return std::nullopt;
    auto address = parse_ipv4(text.substr(0, slash));
    auto len = text.substr(slash + 1);
    if (!address || len.empty() || len.size() > 2 || (len.size() == 2 && len.front() == '0'))
        return std::nullopt;
    int length = 0;
    auto [p, ec] = std::from_chars(len.data(), len.data() + len.size(), length);
    if (ec != std::errc() || p != len.data() + len.size() || length > 32) return std::nullopt;
    return Ipv4Prefix{*address, length};
}

}  // namespace coffer::model
