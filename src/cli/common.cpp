#include "common.h"

#include <algorithm>
#include <cctype>
#include <cstdio>

#include <cstring>

#include <fmt/format.h>

#include "client.h"
#include "coffer/crypto/encoding.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/net/http.h"
#include "format.h"
#include "output.h"

namespace coffer::cli {

crypto::SecureBuffer body_with_data(std::string_view fields, const crypto::SecureBuffer& data) {
    auto head = "{" + std::string(fields) + "\"Data\":\"";
    auto b64 = crypto::base64_encode_secure(data.span());
    crypto::SecureBuffer body(head.size() + b64.size() + 2);
    std::memcpy(body.data(), head.data(), head.size());
    std::memcpy(body.data() + head.size(), b64.data(), b64.size());
    std::memcpy(body.data() + head.size() + b64.size(), "\"}", 2);
    return body;
}

crypto::SecureBuffer data_body(const std::string& name, const boost::json::object& labels,
                               const crypto::SecureBuffer& data) {
    return body_with_data(
        fmt::format("\"Name\":{},\"Labels\":{},", boost::json::serialize(boost::json::string(name)),
                    boost::json::serialize(labels)),
        data);
}

namespace json = boost::json;

Error usage(std::string message) {
    return make_error(Errc::invalid_argument, std::move(message));
}

int report(const Error& e) {
    std::fprintf(stderr, "Error: %s\n", e.message.c_str());
    return 1;
}

void fail(const Error& e) {
    throw CLI::RuntimeError(report(e));
}

std::string str(const json::value& v) {
    return v.is_string() ? std::string(v.as_string()) : "";
}

const json::value* at(const json::value& v, std::initializer_list<std::string_view> path) {
    const json::value* cur = &v;
    for (auto p : path) {
        if (!cur->is_object()) return nullptr;
        cur = cur->as_object().if_contains(p);
        if (cur == nullptr) return nullptr;
    }
    return cur;
}

std::string field(const json::value& v, std::initializer_list<std::string_view> path) {
    auto* p = at(v, path);
    return p ? str(*p) : "";
}

std::int64_t number(const json::value& v, std::initializer_list<std::string_view> path) {
    auto* p = at(v, path);
    return p && p->is_number() ? p->to_number<std::int64_t>() : 0;
}

std::pair<std::string, std::string> split_kv(const std::string& s) {
    auto eq = s.find('=');
    if (eq == std::string::npos) return {s, ""};
    return {s.substr(0, eq), s.substr(eq + 1)};
}

json::object filters_object(const std::vector<std::string>& filters) {
    auto trimmed = [](std::string s) {
        auto b = s.find_first_not_of(" \t");
        auto e = s.find_last_not_of(" \t");
        return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
    };
    json::object f;
    for (const auto& s : filters) {
        if (s.find('=') == std::string::npos)
            fail(usage("bad format of filter (expected name=value)"));
        auto [k, v] = split_kv(s);
        k = trimmed(std::move(k));
        std::transform(k.begin(), k.end(), k.begin(),
                       [](unsigned char c) { return std::tolower(c); });
        auto& slot = f[k];
        if (!slot.is_object()) slot = json::object{};
        slot.as_object()[trimmed(std::move(v))] = true;
    }
    return f;
}

std::string filters_query(const std::vector<std::string>& filters) {
    if (filters.empty()) return "";
    return "?filters=" + net::percent_encode(json::serialize(filters_object(filters)));
}

CLI::Option* one_value_per_flag(CLI::Option* option) {
    return option->allow_extra_args(false);
}

void ListFlags::add(CLI::App* cmd, bool filter) {
    cmd->add_flag("-q,--quiet", quiet, "Only display IDs");
    if (filter)
        one_value_per_flag(cmd->add_option(
            "-f,--filter", filters, "Filter output based on conditions provided (key=value)"));
    cmd->add_option("--format", format,
                    "Format output: 'table' (default), 'table TEMPLATE', 'json' or TEMPLATE "
                    "({{.Field}}, {{json .}})");
}

void ListFlags::print(const ListFormat& list, const std::vector<json::object>& rows) const {
    auto out = format_list(list, format, quiet, rows);
    if (!out) fail(out.error());
    std::fputs(out->c_str(), stdout);
}

void add_inspect_format(CLI::App* cmd, std::string& format) {
    cmd->add_option("-f,--format", format,
                    "Format output: 'json' or TEMPLATE ({{.Field.Sub}}, {{json .}})");
}

std::string filter_param(std::string_view key, const std::vector<std::string>& values) {
    json::object inner;
    for (const auto& v : values) inner[v] = true;
    return net::percent_encode(json::serialize(json::object{{key, std::move(inner)}}));
}

void inspect_all(ApiClient& api, std::string_view prefix, const std::vector<std::string>& names,
                 std::string_view query, std::string_view format, std::string_view what) {
    json::array found;
    std::vector<Error> errors;
    for (const auto& n : names) {
        auto r = api.call("GET", std::string(prefix) + net::percent_encode(n) + std::string(query));
        if (r)
            found.push_back(std::move(*r));
        else
            errors.push_back(std::move(r).error());
    }
    if (format.empty()) {
        std::printf("%s\n", pretty_json(found).c_str());
    } else {
        auto out =
            format_inspect(what, format, std::vector<json::value>(found.begin(), found.end()));
        if (!out) fail(out.error());
        std::fputs(out->c_str(), stdout);
    }
    for (const auto& e : errors) report(e);
    if (!errors.empty()) throw CLI::RuntimeError(1);
}

void remove_all(ApiClient& api, std::string_view prefix, const std::vector<std::string>& names,
                std::string_view query) {
    int failed = 0;
    for (const auto& n : names) {
        auto r =
            api.call("DELETE", std::string(prefix) + net::percent_encode(n) + std::string(query));
        if (r)
            std::printf("%s\n", n.c_str());
        else
            failed = report(r.error());
    }
    if (failed) throw CLI::RuntimeError(1);
}

}  // namespace coffer::cli
