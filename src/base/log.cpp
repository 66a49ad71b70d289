#include "coffer/base/log.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <map>
#include <mutex>
#include <string>

namespace coffer::log {
namespace {

struct Config {
    Level level = Level::info;
    std::map<std::string, Level, std::less<>> categories;
};

Config& config() {
    static Config c;
    return c;
}

bool parse_level(std::string_view s, Level& out) {
    static constexpr std::pair<std::string_view, Level> names[] = {{"debug", Level::debug},
                                                                   {"info", Level::info},
                                                                   {"warn", Level::warn},
                                                                   {"error", Level::error},
                                                                   {"off", Level::off}};
    for (auto [n, l] : names) {
        if (s == n) {
            out = l;
            return true;
        }
    }
    return false;
}

constexpr std::string_view level_name(Level l) {
    switch (l) {
        case Level::debug:
            return "DEBUG";
        case Level::info:
            return "INFO";
        case Level::warn:
            return "WARN";
        case Level::error:
            return "ERROR";
        case Level::off:
            return "OFF";
    }
    return "?";
}

}  // namespace

void configure(std::string_view spec) {
    Config c;
    while (!spec.empty()) {
        auto comma = spec.find(',');
        auto word = spec.substr(0, comma);
        spec = comma == std::string_view::npos ? std::string_view{} : spec.substr(comma + 1);
        Level l;
        if (auto eq = word.find('='); eq != std::string_view::npos) {
            if (parse_level(word.substr(eq + 1), l))
                c.categories[std::string(word.substr(0, eq))] = l;
        } else if (parse_level(word, l)) {
            c.level = l;
        }
    }
    config() = std::move(c);
}

bool enabled(std::string_view category, Level level) noexcept {
    const auto& c = config();
    if (auto it = c.categories.find(category); it != c.categories.end()) return level >= it->second;
    return level >= c.level;
}

void write(std::string_view category, Level level, std::string_view message) noexcept {
    static std::mutex m;
    timespec ts{};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm {};
    ::gmtime_r(&ts.tv_sec, &tm);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    std::string line;
    try {
        line = fmt::format("{}.{:06}Z {} {}: {}\n", stamp, ts.tv_nsec / 1000, level_name(level),
                           category, message);
    } catch (...) {
        return;
    }
    std::lock_guard lock(m);
    (void)!::write(STDERR_FILENO, line.data(), line.size());
}

}  // namespace coffer::log
