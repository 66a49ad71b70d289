// What every command group shares: global options, error reporting, JSON field access.
#pragma once

#include <boost/json.hpp>

#include <CLI/CLI.hpp>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "coffer/base/error.h"

namespace coffer::crypto {
class SecureBuffer;
}

namespace coffer::cli {

struct Globals {
    std::string host;
};

// An error in what the user gave (invalid_argument).
Error usage(std::string message);
// Prints "Error: message" on stderr; returns the exit status 1.
int report(const Error& e);
// Throws CLI::RuntimeError(report(e)): ends the command with status 1.
[[noreturn]] void fail(const Error& e);
template <typename T>
T must(Result<T> r) {
    if (!r) fail(r.error());
    return std::move(*r);
}

// The JSON body `{<fields>"Data":"<base64 of data>"}`, assembled in secure memory; fields is
// empty or members that end with a comma.
crypto::SecureBuffer body_with_data(std::string_view fields, const crypto::SecureBuffer& data);
// A secret's or config's create (or update) body: {"Name", "Labels", "Data"}.
crypto::SecureBuffer data_body(const std::string& name, const boost::json::object& labels,
                               const crypto::SecureBuffer& data);

std::string str(const boost::json::value& v);
const boost::json::value* at(const boost::json::value& v,
                             std::initializer_list<std::string_view> path);
std::string field(const boost::json::value& v, std::initializer_list<std::string_view> path);
std::int64_t number(const boost::json::value& v, std::initializer_list<std::string_view> path);
// "k=v" -> {k, v}; "k" -> {k, ""}.
std::pair<std::string, std::string> split_kv(const std::string& s);
// ?filters=... from "k=v" strings ("" when none); keys lower-cased and both sides trimmed, as the
// docker CLI does. A filter without "=" ends the command with docker's error.
std::string filters_query(const std::vector<std::string>& filters);
// The filters as the API's JSON object ({"key": {"value": true}}).
boost::json::object filters_object(const std::vector<std::string>& filters);

struct ListFormat;
// The flags every list command shares with the docker CLI: -q, -f/--filter, --format.
struct ListFlags {
    bool quiet = false;
    std::vector<std::string> filters;
    std::string format;
    // `filter` false: the command has no -f.
    void add(CLI::App* cmd, bool filter = true);
    // Prints rows through --format (see format_list), or fails with the template's error.
    void print(const ListFormat& list, const std::vector<boost::json::object>& rows) const;
};
// -f/--format on an inspect command.
void add_inspect_format(CLI::App* cmd, std::string& format);
// A list flag given once per value, as Docker takes it: `--secret s IMAGE` is one secret and an
// image, not two secrets.
CLI::Option* one_value_per_flag(CLI::Option* option);
// {"key": {"value": true, ...}} for the given key and values, URL-encoded for a query.
std::string filter_param(std::string_view key, const std::vector<std::string>& values);

class ApiClient;
// GET prefix + name for each name; prints what was found as a JSON array (as `docker inspect`),
// or each through `format` (`what` names the command in template errors), then the errors;
// exit status 1 if any.
void inspect_all(ApiClient& api, std::string_view prefix, const std::vector<std::string>& names,
                 std::string_view query = "", std::string_view format = "",
                 std::string_view what = "");
// DELETE prefix + name + query for each name, printing each removed name; exit status 1 if any
// failed.
void remove_all(ApiClient& api, std::string_view prefix, const std::vector<std::string>& names,
                std::string_view query = "");

// The command groups: `coffer secret|config|cluster|service|node|network|stack ...`.
void add_secret_commands(CLI::App& app, Globals& g);
void add_config_commands(CLI::App& app, Globals& g);
void add_cluster_commands(CLI::App& app, Globals& g);
void add_service_commands(CLI::App& app, Globals& g);
void add_node_commands(CLI::App& app, Globals& g);
void add_network_commands(CLI::App& app, Globals& g);
void add_stack_commands(CLI::App& app, Globals& g);

}  // namespace coffer::cli
