#include "coffer/model/duration.h"

#include <charconv>
#include <cstdint>

namespace coffer::model {

std::optional<std::chrono::seconds> parse_duration(std::string_view s) {
    if (s.empty()) return std::nullopt;
    std::int64_t total = 0;
    while (!s.empty()) {
        std::int64_t n = 0;
        auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
        if (ec != std::errc{} || p == s.data() || p == s.data() + s.size() || n < 0)
            return std::nullopt;
        std::int64_t unit;
        switch (*p) {
            case 'd':
                unit = 86400;
                break;
            case 'h':
                unit = 3600;
                break;
            case 'm':
                unit = 60;
                break;
            case 's':
                unit = 1;
                break;
            default:
                return std::nullopt;
        }
        if (n > (std::int64_t{1} << 40) / unit) return std::nullopt;
        total += n * unit;
        s.remove_prefix(static_cast<std::size_t>(p - s.data()) + 1);
    }
    return std::chrono::seconds(total);
}

}  // namespace coffer::model
