// Timestamps as Docker prints them: RFC 3339, UTC, nanoseconds ("2026-11-23T08:40:30.781457278Z").
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace coffer::model {

// Nanoseconds since the Unix epoch, UTC.
struct Timestamp {
    std::int64_t nanos = 0;

    static Timestamp now() noexcept;
    auto operator<=>(const Timestamp&) const = default;
};

std::string format_rfc3339(Timestamp t);
// Accepts "YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)".
std::optional<Timestamp> parse_rfc3339(std::string_view text);

}  // namespace coffer::model
