#include "coffer/model/filters.h"

#include "coffer/model/json.h"

namespace coffer::model {

namespace json = boost::json;

Result<Filters> Filters::parse(std::string_view text, const std::set<std::string>& allowed) {
    Filters f;
    if (text.empty()) return f;
    auto v = parse_json(text);
    if (!v) return make_error(Errc::invalid_argument, "invalid filters: " + v.error().message);
    if (!v->is_object())
        return make_error(Errc::invalid_argument, "invalid filters: not an object");
    for (const auto& [key, val] : v->as_object()) {
        std::string k(key);
        if (!allowed.count(k))
            return make_error(Errc::invalid_argument, "invalid filter '" + k + "'");
        auto& out = f.values_[k];
        if (val.is_object()) {
            // {"value": true}: the value is the key; false entries are ignored, as Docker does.
            for (const auto& [item, flag] : val.as_object()) {
                if (!flag.is_bool())
                    return make_error(Errc::invalid_argument, "invalid filter '" + k + "'");
                if (flag.as_bool()) out.emplace_back(item);
            }
        } else if (val.is_array()) {
            for (const auto& item : val.as_array()) {
                if (!item.is_string())
                    return make_error(Errc::invalid_argument, "invalid filter '" + k + "'");
                out.emplace_back(item.as_string());
            }
        } else {
            return make_error(Errc::invalid_argument, "invalid filter '" + k + "'");
        }
    }
    return f;
}

const std::vector<std::string>& Filters::get(std::string_view key) const {
    static const std::vector<std::string> none;
    auto it = values_.find(std::string(key));
    return it == values_.end() ? none : it->second;
}

bool Filters::match_labels(const Labels& labels) const {
    for (const auto& want : get("label")) {
        auto eq = want.find('=');
        if (eq == std::string::npos) {
            if (!labels.count(want)) return false;
        } else {
            auto it = labels.find(want.substr(0, eq));
            if (it == labels.end() || it->second != want.substr(eq + 1)) return false;
        }
    }
    return true;
}

bool Filters::match_prefix(std::string_view key, std::string_view s) const {
    const auto& vals = get(key);
    if (vals.empty()) return true;
    for (const auto& v : vals)
        if (s.substr(0, v.size()) == v) return true;
    return false;
}

bool Filters::match_exact(std::string_view key, std::string_view s) const {
    const auto& vals = get(key);
    if (vals.empty()) return true;
    for (const auto& v : vals)
        if (s == v) return true;
    return false;
}

}  // namespace coffer::model
