// Logging by category and level, configured once at start. Never pass secret bytes: SecureBuffer
// has no formatter, so it cannot be logged by accident.
#pragma once

#include <string_view>

#include <fmt/format.h>

namespace coffer::log {

enum class Level { debug = 0, info = 1, warn = 2, error = 3, off = 4 };

// "info", "debug,store=debug,runner=warn": a default level and per-category overrides.
// Unknown words are ignored. Thread-safe to call before threads start.
void configure(std::string_view spec);
bool enabled(std::string_view category, Level level) noexcept;
void write(std::string_view category, Level level, std::string_view message) noexcept;

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
