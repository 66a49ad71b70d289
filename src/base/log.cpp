#include "coffer/base/log.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <map>
#include <mutex>
#include <string>

namespace coffer::log {
namespace {

std::atomic<Format> output_format{Format::text};

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

std::string configure(std::string_view spec) {
    Config c;
    const auto whole = spec;
    auto bad = [&](std::string_view word, std::string_view why) {
        return fmt::format(
            "\"{}\" in log level \"{}\": {} (levels: debug, info, warn, error, "
            "off; e.g. info or debug,store=warn)",
            word, whole, why);
    };
    if (spec.empty()) return bad(spec, "no level");
    while (!spec.empty() || whole.ends_with(',')) {
        auto comma = spec.find(',');
        auto word = spec.substr(0, comma);
        const bool last = comma == std::string_view::npos;
        spec = last ? std::string_view{} : spec.substr(comma + 1);
        Level l;
        if (auto eq = word.find('='); eq != std::string_view::npos) {
            auto category = word.substr(0, eq);
            if (category.empty()) return bad(word, "no category before =");
            if (!parse_level(word.substr(eq + 1), l)) return bad(word, "not a level");
            c.categories[std::string(category)] = l;
        } else if (parse_level(word, l)) {
            c.level = l;
        } else {
            return bad(word, word.empty() ? "an empty word" : "not a level");
        }
        if (last) break;
    }
    config() = std::move(c);
    return {};
}

bool enabled(std::string_view category, Level level) noexcept {
    const auto& c = config();
    if (auto it = c.categories.find(category); it != c.categories.end()) return level >= it->second;
    return level >= c.level;
}

namespace {

// The length of the valid UTF-8 sequence at s[i], or 0 when it is not one (overlong forms,
// surrogates and code points above U+10FFFF included).
std::size_t utf8_length(std::string_view s, std::size_t i) {
    auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[i + k]); };
    auto cont = [&](std::size_t k) { return i + k < s.size() && (b(k) & 0xC0) == 0x80; };
    unsigned char c = b(0);
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (!cont(1) || !cont(2)) return 0;
        if (c == 0xE0 && b(1) < 0xA0) return 0;   // overlong
        if (c == 0xED && b(1) >= 0xA0) return 0;  // surrogates
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (!cont(1) || !cont(2) || !cont(3)) return 0;
        if (c == 0xF0 && b(1) < 0x90) return 0;   // overlong
        if (c == 0xF4 && b(1) >= 0x90) return 0;  // above U+10FFFF
        return 4;
    }
    return 0;
}

std::string_view lower_level_name(Level l) {
    switch (l) {
        case Level::debug:
            return "debug";
        case Level::info:
            return "info";
        case Level::warn:
            return "warn";
        case Level::error:
            return "error";
        case Level::off:
            return "off";
    }
    return "?";
}

}  // namespace

std::string json_escape(std::string_view s) {
    std::string out;
    out.reserve(s.size() + 8);
    for (std::size_t i = 0; i < s.size();) {
        auto c = static_cast<unsigned char>(s[i]);
        switch (c) {
            case '"':
                out += "\\\"";
                break;
            case '\\':
                out += "\\\\";
                break;
            case '\n':
                out += "\\n";
                break;
            case '\r':
                out += "\\r";
                break;
            case '\t':
                out += "\\t";
                break;
            default:
                if (c < 0x20 || c == 0x7F) {
                    out += fmt::format("\\u{:04x}", c);
                } else if (c >= 0x80) {
                    auto n = utf8_length(s, i);
                    if (n == 0) {
                        out += "\\ufffd";
                        ++i;
                        continue;
                    }
                    out.append(s.substr(i, n));
                    i += n;
                    continue;
                } else {
                    out += static_cast<char>(c);
                }
        }
        ++i;
    }
    return out;
}

bool set_format(std::string_view name) {
    if (name == "text")
        set_format(Format::text);
    else if (name == "json")
        set_format(Format::json);
    else
        return false;
    return true;
}

void set_format(Format f) noexcept {
    output_format.store(f, std::memory_order_relaxed);
}

std::string format_line(Format f, std::string_view time, std::string_view category, Level level,
                        std::string_view message) {
    if (f == Format::json)
        return fmt::format(R"({{"time":"{}","level":"{}","category":"{}","message":"{}"}})",
                           json_escape(time), lower_level_name(level), json_escape(category),
                           json_escape(message));
    // One event, one line: a message's own line breaks are escaped.
    std::string flat;
    if (message.find_first_of("\r\n") != std::string_view::npos) {
        for (char c : message) {
            if (c == '\n')
                flat += "\\n";
            else if (c == '\r')
                flat += "\\r";
            else
                flat += c;
        }
        message = flat;
    }
    return fmt::format("{} {} {}: {}", time, level_name(level), category, message);
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
        line = format_line(output_format.load(std::memory_order_relaxed),
                           fmt::format("{}.{:06}Z", stamp, ts.tv_nsec / 1000), category, level,
                           message);
        line += '\n';
    } catch (...) {
        return;
    }
    std::lock_guard lock(m);
    (void)!::write(STDERR_FILENO, line.data(), line.size());
}

}  // namespace coffer::log

namespace coffer::log {

void fatal(std::string_view program, std::string_view message) noexcept {
    if (output_format.load(std::memory_order_relaxed) == Format::json) {
        write("main", Level::error, message);
        return;
    }
    try {
        auto line = fmt::format("{}: {}\n", program, message);
        (void)!::write(STDERR_FILENO, line.data(), line.size());
    } catch (...) {
    }
}

}  // namespace coffer::log
