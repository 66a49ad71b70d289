#include "output.h"

#include <fmt/format.h>

#include <algorithm>

#include "coffer/model/time.h"

namespace coffer::cli {

namespace json = boost::json;

std::string format_table(const std::vector<std::vector<std::string>>& rows) {
    std::vector<std::size_t> width;
    for (const auto& row : rows)
        for (std::size_t i = 0; i < row.size(); ++i) {
            if (width.size() <= i) width.push_back(0);
            width[i] = std::max(width[i], row[i].size());
        }
    std::string out;
    for (const auto& row : rows) {
        std::string line;
        for (std::size_t i = 0; i < row.size(); ++i) {
            line += row[i];
            if (i + 1 < row.size()) line.append(width[i] - row[i].size() + 3, ' ');
        }
        while (!line.empty() && line.back() == ' ') line.pop_back();
        out += line + "\n";
    }
    return out;
}

std::string time_ago(std::string_view text) {
    auto t = model::parse_rfc3339(text);
    if (!t) return "";
    auto secs = (model::Timestamp::now().nanos - t->nanos) / 1'000'000'000;
    if (secs < 1) return "Less than a second ago";
    if (secs < 60) return fmt::format("{} second{} ago", secs, secs == 1 ? "" : "s");
    auto mins = secs / 60;
    if (mins < 60) return mins == 1 ? "About a minute ago" : fmt::format("{} minutes ago", mins);
    auto hours = mins / 60;
    if (hours < 48) return hours == 1 ? "About an hour ago" : fmt::format("{} hours ago", hours);
    auto days = hours / 24;
    if (days < 14) return fmt::format("{} days ago", days);
    if (days < 60) return fmt::format("{} weeks ago", days / 7);
    if (days < 730) return fmt::format("{} months ago", days / 30);
    return fmt::format("{} years ago", days / 365);
}

std::string pretty_json(const json::value& v, int indent) {
    std::string pad(static_cast<std::size_t>(indent + 4), ' ');
    std::string close(static_cast<std::size_t>(indent), ' ');
    if (v.is_object()) {
        const auto& o = v.as_object();
        if (o.empty()) return "{}";
        std::string out = "{\n";
        std::size_t i = 0;
        for (const auto& [k, val] : o) {
            out += pad + json::serialize(json::value(json::string(k))) + ": " +
                   pretty_json(val, indent + 4);
            out += ++i < o.size() ? ",\n" : "\n";
        }
        return out + close + "}";
    }
    if (v.is_array()) {
        const auto& a = v.as_array();
        if (a.empty()) return "[]";
        std::string out = "[\n";
        for (std::size_t i = 0; i < a.size(); ++i) {
            out += pad + pretty_json(a[i], indent + 4);
            out += i + 1 < a.size() ? ",\n" : "\n";
        }
        return out + close + "]";
    }
    return json::serialize(v);
}

}  // namespace coffer::cli
