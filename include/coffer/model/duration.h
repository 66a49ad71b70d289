// Durations as Docker's CLI takes them: Go-style "2160h", "90m30s", "1h", plus "30d" for days.
#pragma once

#include <chrono>
#include <optional>
#include <string_view>

namespace coffer::model {

// nullopt when malformed, negative, or absurdly large.
std::optional<std::chrono::seconds> parse_duration(std::string_view text);

}  // namespace coffer::model
