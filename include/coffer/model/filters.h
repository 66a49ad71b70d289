// The Docker API's `filters` query parameter: {"name":{"s":true}} or the older {"name":["s"]}.
#pragma once

#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "coffer/base/error.h"
#include "coffer/model/secret.h"

namespace coffer::model {

class Filters {
  public:
    // Parses the JSON text of the parameter (already URL-decoded); an empty string is no filter.
    // Unknown keys are refused (as Docker does) with "invalid filter '<key>'".
    static Result<Filters> parse(std::string_view json, const std::set<std::string>& allowed);

    bool has(std::string_view key) const { return values_.count(std::string(key)) != 0; }
    const std::vector<std::string>& get(std::string_view key) const;
    bool empty() const noexcept { return values_.empty(); }

    // label filters: "k" (key present) or "k=v"; every one must match.
    bool match_labels(const Labels& labels) const;
    // Any of the values is a prefix of s (no values: true).
    bool match_prefix(std::string_view key, std::string_view s) const;
    // Any of the values equals s (no values: true).
    bool match_exact(std::string_view key, std::string_view s) const;

  private:
    std::map<std::string, std::vector<std::string>> values_;
};

}  // namespace coffer::model
