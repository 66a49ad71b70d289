// Small helpers over Boost.JSON for the agent's files (OCI layouts, configs, task specs).
#pragma once

#include <boost/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "coffer/base/error.h"

namespace coffer::agent {

// Parses a file; invalid_argument with the file name when it is not JSON.
Result<boost::json::value> read_json_file(const std::string& path);
void write_file(const std::string& path, std::string_view content, int mode = 0600);

std::string string_at(const boost::json::object& o, std::string_view key);
std::vector<std::string> strings_at(const boost::json::object& o, std::string_view key);

}  // namespace coffer::agent
