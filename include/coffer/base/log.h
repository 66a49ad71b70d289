// Logging by category and level, configured once at start. Never pass secret bytes: SecureBuffer
// has no formatter, so it cannot be logged by accident.
#pragma once

#include <string>
#include <string_view>

#include <fmt/format.h>

namespace coffer::log {

enum class Level { debug = 0, info = 1, warn = 2, error = 3, off = 4 };

// "info", "debug,store=debug,runner=warn": a default level and per-category overrides (levels
// debug, info, warn, error, off). Returns "" once applied, or why the spec is not one (then
// nothing changes): a typo is never a setting silently ignored. Thread-safe to call before
// threads start.
[[nodiscard]] std::string configure(std::string_view spec);
bool enabled(std::string_view category, Level level) noexcept;

// How each event is written to standard error, one line per event:
//   text: "2024-05-01T12:00:00.123456Z INFO store: message"
//   json: {"time":"2024-05-01T12:00:00.123456Z","level":"info","category":"store","message":"..."}
// (strings escaped as JSON; bytes that are not UTF-8 become U+FFFD).
enum class Format { text, json };
// "text" or "json"; false (format unchanged) for anything else.
bool set_format(std::string_view name);
void set_format(Format f) noexcept;
// The line write() emits, without its newline (exposed for tests).
std::string format_line(Format f, std::string_view time, std::string_view category, Level level,
                        std::string_view message);
// s as the contents of a JSON string (no quotes around it).
std::string json_escape(std::string_view s);
void write(std::string_view category, Level level, std::string_view message) noexcept;
// Why the program ends, whatever the levels: "program: message" as text, or one JSON event
// (level error, category "main") when the log format is json, so that a collector reading one
// object per line also reads the line that matters most.
void fatal(std::string_view program, std::string_view message) noexcept;

template <typename... Args>
void emit(std::string_view category, Level level, fmt::format_string<Args...> f, Args&&... args) {
    if (enabled(category, level))
        write(category, level, fmt::format(f, std::forward<Args>(args)...));
}

template <typename... Args>
void debug(std::string_view c, fmt::format_string<Args...> f, Args&&... a) {
    emit(c, Level::debug, f, std::forward<Args>(a)...);
}
template <typename... Args>
void info(std::string_view c, fmt::format_string<Args...> f, Args&&... a) {
    emit(c, Level::info, f, std::forward<Args>(a)...);
}
template <typename... Args>
void warn(std::string_view c, fmt::format_string<Args...> f, Args&&... a) {
    emit(c, Level::warn, f, std::forward<Args>(a)...);
}
template <typename... Args>
void error(std::string_view c, fmt::format_string<Args...> f, Args&&... a) {
    emit(c, Level::error, f, std::forward<Args>(a)...);
}

}  // namespace coffer::log
