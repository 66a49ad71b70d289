// Output helpers: tables aligned like Docker's, relative times, pretty JSON.
#pragma once

#include <boost/json.hpp>

#include <string>
#include <vector>

namespace coffer::cli {

// Rows of cells; columns padded to their widest cell plus three spaces.
std::string format_table(const std::vector<std::vector<std::string>>& rows);
// "2 minutes ago" from an RFC 3339 time ("" when unparsable).
std::string time_ago(std::string_view rfc3339);
// Indented JSON (4 spaces), as `docker inspect` prints.
std::string pretty_json(const boost::json::value& v, int indent = 0);

}  // namespace coffer::cli
