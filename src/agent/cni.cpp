#include "cni.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cctype>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "coffer/base/log.h"
#include "json_util.h"
#include "net_namespace.h"
#include "net_tools.h"

namespace coffer::agent {

namespace json = boost::json;

namespace {

constexpr const char* cni_version = "1.0.0";

bool valid_plugin_type(std::string_view t) {
    return !t.empty() && t.size() <= 64 && std::all_of(t.begin(), t.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
    });
}

std::string plugin_type(const json::value& p) {
    if (!p.is_object()) return {};
    auto* t = p.as_object().if_contains("type");
    return t && t->is_string() ? std::string(t->as_string()) : std::string();
}

// The configuration a plugin gets on stdin: its own, with the list's name and version, the
// capability arguments it asks for, and the previous result.
json::object plugin_config(const json::object& plugin, const std::string& name,
                           const json::object& capability_args, const json::value* prev) {
    json::object conf = plugin;
    conf["cniVersion"] = cni_version;
    conf["name"] = name;
    if (auto* caps = plugin.if_contains("capabilities"); caps && caps->is_object()) {
        json::object runtime;
        for (const auto& [k, v] : caps->as_object())
            if (v.is_bool() && v.as_bool())
                if (auto* arg = capability_args.if_contains(k)) runtime[k] = *arg;
        if (!runtime.empty()) conf["runtimeConfig"] = std::move(runtime);
    }
    if (prev && !prev->is_null()) conf["prevResult"] = *prev;
    return conf;
}

// A plugin's failure: the CNI error it wrote ({"code","msg","details"}), else its stderr.
std::string plugin_error(const std::string& type, const std::string& command, const ToolResult& r) {
    boost::system::error_code ec;
    auto v = json::parse(r.out, ec);
    if (!ec && v.is_object()) {
        const auto& o = v.as_object();
        auto str = [&](const char* k) {
            auto* x = o.if_contains(k);
            return x && x->is_string() ? std::string(x->as_string()) : std::string();
        };
        auto msg = str("msg"), details = str("details");
        if (!msg.empty())
            return fmt::format("CNI {} {}: {}{}{}", type, command, msg, details.empty() ? "" : ": ",
                               details);
    }
    return fmt::format("CNI {} {}: {}", type, command, r.describe({type}));
}

Result<json::value> exec_plugin(const std::string& cni_path, const std::string& command,
                                const std::string& container_id, const std::string& netns,
                                const std::string& ifname, const json::object& conf) {
    auto type = plugin_type(conf);
    if (!valid_plugin_type(type))
        return make_error(Errc::invalid_argument, fmt::format("invalid CNI plugin type {}", type));
    ToolRun run;
    run.program = fmt::format("{}/{}", cni_path, type);
    run.argv = {type};
    run.input = json::serialize(conf);
    const char* path = ::getenv("PATH");
    run.env = {
        "CNI_COMMAND=" + command,
        "CNI_CONTAINERID=" + container_id,
        "CNI_NETNS=" + netns,
        "CNI_IFNAME=" + ifname,
        "CNI_PATH=" + cni_path,
        std::string("PATH=") +
            (path ? path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    };
    auto r = run_tool(run);
    if (!r.ok()) return make_error(Errc::internal, plugin_error(type, command, r));
    if (command != "ADD") return json::value();
    boost::system::error_code ec;
    auto v = json::parse(r.out, ec);
    if (ec || !v.is_object())
        return make_error(Errc::internal, fmt::format("CNI {} ADD: unreadable result", type));
    return v;
}

void write_cache(const std::string& file, const CniAttachment& a, const json::value& result) {
    json::object cache{{"kind", "cniCacheV1"},
                       {"containerId", a.container_id},
                       {"ifName", a.ifname},
                       {"netns", a.netns},
                       {"networkName", a.network_name},
                       {"plugins", a.plugins},
                       {"capabilityArgs", a.capability_args},
                       {"result", result}};
    auto tmp = file + ".tmp";
    write_file(tmp, json::serialize(cache), 0600);
    if (::rename(tmp.c_str(), file.c_str()) != 0) throw_errno(fmt::format("rename {}", file));
}

}  // namespace

Result<json::value> cni_add(const std::string& cni_path, const CniAttachment& a,
                            const std::string& cache_file) {
    write_cache(cache_file, a, json::value());
    json::value prev;
    for (const auto& p : a.plugins) {
        if (!p.is_object()) return make_error(Errc::invalid_argument, "CNI plugin not an object");
        auto conf = plugin_config(p.as_object(), a.network_name, a.capability_args, &prev);
        auto r = exec_plugin(cni_path, "ADD", a.container_id, a.netns, a.ifname, conf);
        if (!r) return std::move(r).error();
        prev = std::move(*r);
    }
    write_cache(cache_file, a, prev);
    return prev;
}

Result<void> cni_del(const std::string& cni_path, const std::string& cache_file) {
    std::string text;
    {
        std::ifstream in(cache_file);
        if (!in) return {};
        std::stringstream ss;
        ss << in.rdbuf();
        text = ss.str();
    }
    boost::system::error_code ec;
    auto v = json::parse(text, ec);
    if (ec || !v.is_object())
        return make_error(Errc::internal, fmt::format("unreadable CNI cache {}", cache_file));
    const auto& c = v.as_object();
    auto str = [&](const char* k) {
        auto* x = c.if_contains(k);
        return x && x->is_string() ? std::string(x->as_string()) : std::string();
    };
    CniAttachment a;
    a.network_name = str("networkName");
    a.container_id = str("containerId");
    a.ifname = str("ifName");
    a.netns = str("netns");
    if (auto* p = c.if_contains("plugins"); p && p->is_array()) a.plugins = p->as_array();
    if (auto* p = c.if_contains("capabilityArgs"); p && p->is_object())
        a.capability_args = p->as_object();
    json::value result;
    if (auto* p = c.if_contains("result")) result = *p;
    // A namespace that is gone (the task's, after a crash) is named as none.
    auto netns = is_net_namespace(a.netns) ? a.netns : std::string();
    Result<void> first;
    for (auto it = a.plugins.rbegin(); it != a.plugins.rend(); ++it) {
        if (!it->is_object()) continue;
        auto conf = plugin_config(it->as_object(), a.network_name, a.capability_args, &result);
        auto r = exec_plugin(cni_path, "DEL", a.container_id, netns, a.ifname, conf);
        if (!r && first) first = std::move(r).error();
    }
    if (first) ::unlink(cache_file.c_str());
    return first;
}

}  // namespace coffer::agent
