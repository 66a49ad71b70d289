// A loaded compose tree -> the Engine API's specs, field for field as the docker CLI converts
// it (cli/compose/convert), so `coffer stack deploy` and `docker stack deploy` store the same.
#include <unistd.h>
#include <algorithm>

#include <fmt/format.h>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <set>

#include "coffer/model/secret_update.h"
#include "coffer/model/service.h"
#include "compose.h"
#include "service_flags.h"

namespace coffer::cli::compose {

namespace json = boost::json;

namespace {

constexpr const char* label_namespace = "com.docker.stack.namespace";
constexpr const char* label_image = "com.docker.stack.image";

// YAML's booleans as compose reads them (true/yes/on, false/no/off, any case); nullopt for
// anything else.
std::optional<bool> parse_boolean(const Node& n) {
    if (!n.is_scalar()) return std::nullopt;
    std::string s = n.scalar;
    std::transform(s.begin(), s.end(), s.begin(), ::tolower);
    if (s == "true" || s == "yes" || s == "on") return true;
    if (s == "false" || s == "no" || s == "off") return false;
    return std::nullopt;
}

// Reads typed values out of Nodes, recording a problem (with file and line) on a wrong type.
struct Reader {
    Problems& problems;
    std::string where;  // "service \"web\""

    void bad(const Node& n, std::string_view key, std::string_view want) {
        problems.add(n, fmt::format("{}: {} must be {}", where, key, want));
    }
    std::optional<std::string> string(const Node& n, std::string_view key) {
        if (!n.is_scalar()) {
            bad(n, key, "a string");
            return std::nullopt;
        }
        return n.scalar;
    }
    std::optional<bool> boolean(const Node& n, std::string_view key) {
        auto b = parse_boolean(n);
        if (!b) bad(n, key, "a boolean");
        return b;
    }
    std::optional<std::int64_t> integer(const Node& n, std::string_view key, bool octal = false) {
        if (n.is_scalar() && !n.scalar.empty()) {
            std::string s = n.scalar;
            int base = 10;
            if (s.starts_with("0o") || s.starts_with("0O")) {
                s = s.substr(2);
                base = 8;
            } else if (s.starts_with("0x")) {
                s = s.substr(2);
                base = 16;
            } else if (s.size() > 1 && s[0] == '0' && (octal || !n.quoted)) {
                base = 8;  // YAML 1.1 octal, or a mode given as an octal string
            }
            char* end = nullptr;
            errno = 0;
            long long v = std::strtoll(s.c_str(), &end, base);
            if (!s.empty() && *end == '\0' && errno == 0) return v;
        }
        bad(n, key, "an integer");
        return std::nullopt;
    }
    std::optional<std::int64_t> duration(const Node& n, std::string_view key) {
        if (n.is_scalar())
            if (auto d = model::parse_go_duration(n.scalar)) return *d;
        bad(n, key, "a duration (\"10s\", \"1m30s\")");
        return std::nullopt;
    }
    std::optional<std::int64_t> bytes(const Node& n, std::string_view key) {
        if (n.is_scalar())
            if (auto b = parse_bytes(n.scalar)) return *b;
        bad(n, key, "a size (\"64M\", \"1g\", bytes)");
        return std::nullopt;
    }
    // A list of strings; with one_string, a single string becomes a one-element list.
    std::optional<json::array> strings(const Node& n, std::string_view key,
                                       bool one_string = false) {
        json::array out;
        if (one_string && n.is_scalar()) {
            out.emplace_back(n.scalar);
            return out;
        }
        if (!n.is_seq()) {
            bad(n, key, "a list of strings");
            return std::nullopt;
        }
        for (const auto& e : n.seq) {
            if (!e.is_scalar()) {
                bad(e, key, "a list of strings");
                return std::nullopt;
            }
            out.emplace_back(e.scalar);
        }
        return out;
    }
    // {k: v} with scalar (or null: "") values.
    std::optional<json::object> string_map(const Node& n, std::string_view key) {
        json::object out;
        if (!n.is_map()) {
            bad(n, key, "a mapping");
            return std::nullopt;
        }
        for (const auto& [k, v] : n.map) {
            if (v.is_null()) {
                out[k] = "";
            } else if (v.is_scalar()) {
                out[k] = v.scalar;
            } else {
                bad(v, fmt::format("{}.{}", key, k), "a string");
                return std::nullopt;
            }
        }
        return out;
    }
    // Keys of n not in known (x- extensions aside) are problems.
    void known(const Node& n, std::string_view what, std::initializer_list<std::string_view> keys) {
        if (!n.is_map()) return;
        for (const auto& [k, v] : n.map) {
            if (k.starts_with("x-")) continue;
            if (std::find(keys.begin(), keys.end(), k) == keys.end())
                problems.add(v, fmt::format("{}: unknown key \"{}\" in {}", where, k, what));
        }
    }
};

// A shell-like split of a string command ("sh -c 'echo hi'"), as the docker CLI's shlex.
std::optional<json::array> shell_split(const std::string& s) {
    json::array out;
    std::string cur;
    bool any = false;
    char quote = 0;
    for (std::size_t i = 0; i < s.size(); ++i) {
        char c = s[i];
        if (quote) {
            if (c == quote) {
                quote = 0;
            } else if (c == '\\' && quote == '"' && i + 1 < s.size() &&
                       (s[i + 1] == '"' || s[i + 1] == '\\' || s[i + 1] == '$')) {
                cur += s[++i];
            } else {
                cur += c;
            }
        } else if (c == '\'' || c == '"') {
            quote = c;
            any = true;
        } else if (c == '\\' && i + 1 < s.size()) {
            cur += s[++i];
            any = true;
        } else if (std::isspace(static_cast<unsigned char>(c))) {
            if (any || !cur.empty()) out.emplace_back(cur);
            cur.clear();
            any = false;
        } else {
            cur += c;
        }
    }
    if (quote) return std::nullopt;
    if (any || !cur.empty()) out.emplace_back(cur);
    return out;
}

std::string scope(const std::string& stack, const std::string& name) {
    return stack + "_" + name;
}

// The name a top-level secret, config or network (def, under key) has on the server: its
// `name`, an external one's `external.name` or key, otherwise key in the stack's namespace.
// Reports nothing: wrong types are reported once, where the top-level object is read
// (checked_object_name).
std::string object_name(const std::string& stack, const std::string& key, const Node* def) {
    std::string name = scope(stack, key);
    if (def == nullptr || !def->is_map()) return name;
    if (const auto* n = def->get("name"); n && n->is_scalar()) name = n->scalar;
    if (const auto* x = def->get("external")) {
        if (x->is_map()) {
            if (const auto* n = x->get("name"); n && n->is_scalar()) name = n->scalar;
        } else if (parse_boolean(*x).value_or(false) && !def->get("name")) {
            name = key;
        }
    }
    return name;
}

struct ObjectName {
    std::string name;
    bool external = false;
};

// A top-level object's name (object_name) and whether it is external, with wrong types of
// `name`, `external` and `external.name` reported.
ObjectName checked_object_name(Reader& r, const std::string& stack, const std::string& key,
                               const Node& def) {
    ObjectName out;
    if (const auto* n = def.get("name")) r.string(*n, "name");
    if (const auto* x = def.get("external")) {
        if (x->is_map()) {
            out.external = true;
            if (const auto* n = x->get("name")) r.string(*n, "external.name");
        } else {
            out.external = r.boolean(*x, "external").value_or(false);
        }
    }
    out.name = object_name(stack, key, &def);
    return out;
}

json::object with_namespace(json::object labels, const std::string& stack) {
    labels[label_namespace] = stack;
    return labels;
}

std::string absolute(const std::string& dir, const std::string& path) {
    if (path.starts_with("/")) return path;
    if (path.starts_with("~/")) {
        const char* home = std::getenv("HOME");
        return std::string(home ? home : "") + path.substr(1);
    }
    auto p = path.starts_with("./") ? path.substr(2) : path;
    return dir == "." ? p : dir + "/" + p;
}

// "NAME" -> CAP_NAME, upper case; ALL stays.
std::string normal_cap(std::string c) {
    std::transform(c.begin(), c.end(), c.begin(), ::toupper);
    if (c != "ALL" && !c.starts_with("CAP_")) c = "CAP_" + c;
    return c;
}

// The environment of the service: env_file lines first, environment over them, sorted.
json::array environment(Reader& r, const Node& s, const Loaded& l) {
    std::map<std::string, std::optional<std::string>> env;
    if (const auto* files = s.get("env_file")) {
        auto list = r.strings(*files, "env_file", true);
        for (const auto& f : list ? *list : json::array{}) {
            Problems local;
            local.files = r.problems.files;
            auto path = absolute(l.working_dir, std::string(f.as_string()));
            if (::access(path.c_str(), R_OK) != 0) {
                r.problems.add(*files, fmt::format("{}: env_file {}: cannot read: {}", r.where,
                                                   path, std::strerror(errno)));
                continue;
            }
            for (auto& [k, v] : read_env_file(path, local, files->file)) env[k] = v;
            for (auto& e : local.errors) r.problems.errors.push_back(e);
        }
    }
    if (const auto* e = s.get("environment")) {
        if (!e->is_map()) {
            r.bad(*e, "environment", "a mapping or a list");
        } else {
            for (const auto& [k, v] : e->map) {
                if (v.is_null()) {
                    // A name alone takes the value from the CLI's environment, as docker does.
                    auto it = l.env.find(k);
                    if (it != l.env.end())
                        env[k] = it->second;
                    else
                        env[k] = std::nullopt;
                } else if (v.is_scalar()) {
                    env[k] = v.scalar;
                } else {
                    r.bad(v, "environment." + k, "a string");
                }
            }
        }
    }
    json::array out;
    for (const auto& [k, v] : env) out.emplace_back(v ? k + "=" + *v : k);
    std::sort(out.begin(), out.end(), [](const json::value& a, const json::value& b) {
        return a.as_string() < b.as_string();
    });
    return out;
}

std::optional<json::object> healthcheck(Reader& r, const Node& h) {
    r.known(
        h, "healthcheck",
        {"test", "interval", "timeout", "retries", "start_period", "start_interval", "disable"});
    json::object out;
    bool disable = false;
    if (const auto* d = h.get("disable"))
        disable = r.boolean(*d, "healthcheck.disable").value_or(false);
    const auto* test = h.get("test");
    if (disable) {
        if (test)
            r.problems.add(
                *test,
                fmt::format("{}: healthcheck: test and disable can't be set at the same time",
                            r.where));
        out["Test"] = json::array{"NONE"};
        return out;
    }
    if (test) {
        if (test->is_scalar()) {
            out["Test"] = json::array{"CMD-SHELL", test->scalar};
        } else if (auto t = r.strings(*test, "healthcheck.test")) {
            out["Test"] = std::move(*t);
        }
    }
    for (auto [key, field] : {std::pair{"interval", "Interval"},
                              {"timeout", "Timeout"},
                              {"start_period", "StartPeriod"},
                              {"start_interval", "StartInterval"}})
        if (const auto* n = h.get(key))
            if (auto d = r.duration(*n, fmt::format("healthcheck.{}", key)); d && *d)
                out[field] = *d;
    if (const auto* n = h.get("retries"))
        if (auto v = r.integer(*n, "healthcheck.retries"); v && *v) out["Retries"] = *v;
    return out;
}

std::optional<json::object> update_config(Reader& r, const Node& u, std::string_view key) {
    r.known(u, key,
            {"parallelism", "delay", "failure_action", "monitor", "max_failure_ratio", "order"});
    json::object out;
    std::int64_t parallel = 1;
    if (const auto* n = u.get("parallelism")) parallel = r.integer(*n, "parallelism").value_or(1);
    out["Parallelism"] = parallel;
    if (const auto* n = u.get("delay"))
        if (auto d = r.duration(*n, "delay"); d && *d) out["Delay"] = *d;
    if (const auto* n = u.get("failure_action"))
        if (auto s = r.string(*n, "failure_action"); s && !s->empty()) out["FailureAction"] = *s;
    if (const auto* n = u.get("monitor"))
        if (auto d = r.duration(*n, "monitor"); d && *d) out["Monitor"] = *d;
    if (const auto* n = u.get("max_failure_ratio")) {
        char* end = nullptr;
        double v = n->is_scalar() ? std::strtod(n->scalar.c_str(), &end) : 0;
        if (!n->is_scalar() || *end != '\0')
            r.bad(*n, "max_failure_ratio", "a number");
        else if (v != 0)
            out["MaxFailureRatio"] = v;
    }
    if (const auto* n = u.get("order"))
        if (auto s = r.string(*n, "order"); s && !s->empty()) out["Order"] = *s;
    return out;
}

json::object resources(Reader& r, const Node& res) {
    r.known(res, "deploy.resources", {"limits", "reservations"});
    json::object out;
    auto cpus = [&](const Node& n, json::object& o) {
        if (auto s = r.string(n, "cpus")) {
            auto v = parse_nano_cpus(*s, "cpus");
            if (!v)
                r.bad(n, "cpus", "a number of CPUs");
            else if (*v)
                o["NanoCPUs"] = *v;
        }
    };
    if (const auto* l = res.get("limits"); l && l->is_map()) {
        r.known(*l, "deploy.resources.limits", {"cpus", "memory", "pids"});
        json::object o;
        if (const auto* n = l->get("cpus")) cpus(*n, o);
        if (const auto* n = l->get("memory"))
            if (auto b = r.bytes(*n, "memory"); b && *b) o["MemoryBytes"] = *b;
        if (const auto* n = l->get("pids"))
            if (auto v = r.integer(*n, "pids"); v && *v) o["Pids"] = *v;
        out["Limits"] = std::move(o);
    }
    if (const auto* l = res.get("reservations"); l && l->is_map()) {
        r.known(*l, "deploy.resources.reservations", {"cpus", "memory", "generic_resources"});
        json::object o;
        if (const auto* n = l->get("cpus")) cpus(*n, o);
        if (const auto* n = l->get("memory"))
            if (auto b = r.bytes(*n, "memory"); b && *b) o["MemoryBytes"] = *b;
        if (const auto* g = l->get("generic_resources")) {
            json::array list;
            if (!g->is_seq()) r.bad(*g, "generic_resources", "a list");
            for (const auto& e : g->seq) {
                const auto* d = e.get("discrete_resource_spec");
                if (!d || !d->is_map()) {
                    r.bad(e, "generic_resources", "discrete_resource_spec entries");
                    continue;
                }
                r.known(*d, "discrete_resource_spec", {"kind", "value"});
                const auto* k = d->get("kind");
                const auto* v = d->get("value");
                auto kind = k ? r.string(*k, "kind") : std::nullopt;
                auto value = v ? r.integer(*v, "value") : std::nullopt;
                if (!kind || !value) {
                    r.bad(*d, "discrete_resource_spec", "a kind and a value");
                    continue;
                }
                list.push_back(json::object{
                    {"DiscreteResourceSpec", json::object{{"Kind", *kind}, {"Value", *value}}}});
            }
            if (!list.empty()) o["GenericResources"] = std::move(list);
        }
        out["Reservations"] = std::move(o);
    }
    return out;
}

json::array ports(Reader& r, const Node& p) {
    json::array out;
    if (!p.is_seq()) return out;
    for (const auto& e : p.seq) {
        r.known(e, "ports",
                {"mode", "target", "published", "protocol", "host_ip", "name", "app_protocol"});
        json::object o;
        if (const auto* n = e.get("host_ip"))
            r.problems.add(*n,
                           fmt::format("{}: ports: host_ip is not supported by services", r.where));
        const auto* proto = e.get("protocol");
        o["Protocol"] = proto ? r.string(*proto, "protocol").value_or("tcp") : "tcp";
        if (const auto* t = e.get("target")) {
            if (auto v = r.integer(*t, "target")) o["TargetPort"] = *v;
        } else {
            r.bad(e, "ports", "entries with a target");
        }
        if (const auto* n = e.get("published"))
            if (auto v = r.integer(*n, "published"); v && *v) o["PublishedPort"] = *v;
        if (const auto* n = e.get("mode")) {
            if (auto s = r.string(*n, "mode"); s && !s->empty()) o["PublishMode"] = *s;
        }
        out.push_back(std::move(o));
    }
    // The docker CLI's order: by published port, then target, protocol and mode.
    auto num = [](const json::value& v, std::string_view k) {
        const auto* x = v.as_object().if_contains(k);
        return x ? x->as_int64() : 0;
    };
    auto s = [](const json::value& v, std::string_view k) {
        const auto* x = v.as_object().if_contains(k);
        return x ? std::string(x->as_string()) : std::string();
    };
    std::stable_sort(out.begin(), out.end(), [&](const json::value& a, const json::value& b) {
        return std::tuple(num(a, "PublishedPort"), num(a, "TargetPort"), s(a, "Protocol"),
                          s(a, "PublishMode")) < std::tuple(num(b, "PublishedPort"),
                                                            num(b, "TargetPort"), s(b, "Protocol"),
                                                            s(b, "PublishMode"));
    });
    return out;
}

json::array mounts(Reader& r, const Node& vols, const Node* top_volumes, const Loaded& l,
                   const std::string& stack) {
    json::array out;
    if (!vols.is_seq()) return out;
    for (const auto& e : vols.seq) {
        r.known(
            e, "volumes",
            {"type", "source", "target", "read_only", "consistency", "bind", "volume", "tmpfs"});
        json::object m;
        auto type = e.get("type") ? r.string(*e.get("type"), "volumes.type").value_or("") : "";
        auto source = e.get("source") ? r.string(*e.get("source"), "volumes.source").value_or("")
                                      : std::string();
        const auto* target = e.get("target");
        if (!target) {
            r.bad(e, "volumes", "entries with a target");
            continue;
        }
        m["Type"] = type;
        m["Target"] = r.string(*target, "volumes.target").value_or("");
        if (const auto* n = e.get("read_only"); n && r.boolean(*n, "read_only").value_or(false))
            m["ReadOnly"] = true;
        if (const auto* n = e.get("consistency"))
            r.problems.add(*n, fmt::format("{}: volumes: consistency is not supported", r.where));
        auto incompatible = [&](std::initializer_list<std::string_view> keys) {
            for (auto k : keys)
                if (const auto* n = e.get(k))
                    r.problems.add(*n, fmt::format("{}: volumes: {} options are incompatible "
                                                   "with type {}",
                                                   r.where, k, type));
        };
        if (type == "volume") {
            incompatible({"bind", "tmpfs"});
            if (!source.empty()) {
                const auto* top = top_volumes ? top_volumes->get(source) : nullptr;
                if (!top) {
                    r.problems.add(e, fmt::format("{}: undefined volume \"{}\"", r.where, source));
                    continue;
                }
                m["Source"] = scope(stack, source);
                json::object vo;
                if (const auto* v = e.get("volume")) {
                    r.known(*v, "volumes.volume", {"nocopy", "subpath"});
                    if (const auto* n = v->get("nocopy");
                        n && r.boolean(*n, "nocopy").value_or(false))
                        vo["NoCopy"] = true;
                    if (const auto* n = v->get("subpath"))
                        vo["Subpath"] = r.string(*n, "subpath").value_or("");
                }
                bool external = false;
                if (top->is_map()) {
                    if (const auto* n = top->get("name"))
                        m["Source"] = r.string(*n, "name").value_or("");
                    if (const auto* x = top->get("external"))
                        external = x->is_map() || r.boolean(*x, "external").value_or(false);
                }
                if (!external) {
                    json::object labels;
                    if (const auto* lb = top->get("labels"))
                        labels = r.string_map(*lb, "labels").value_or(json::object{});
                    vo["Labels"] = with_namespace(std::move(labels), stack);
                    const auto* drv = top->get("driver");
                    const auto* opts = top->get("driver_opts");
                    if (drv || opts) {
                        json::object dc;
                        if (drv) dc["Name"] = r.string(*drv, "driver").value_or("");
                        if (opts)
                            dc["Options"] =
                                r.string_map(*opts, "driver_opts").value_or(json::object{});
                        vo["DriverConfig"] = std::move(dc);
                    }
                }
                m["VolumeOptions"] = std::move(vo);
            } else if (e.get("volume")) {
                r.known(*e.get("volume"), "volumes.volume", {"nocopy", "subpath"});
                if (const auto* n = e.get("volume")->get("nocopy");
                    n && r.boolean(*n, "nocopy").value_or(false))
                    m["VolumeOptions"] = json::object{{"NoCopy", true}};
            }
        } else if (type == "bind") {
            incompatible({"volume", "tmpfs"});
            if (source.empty()) {
                r.problems.add(
                    e, fmt::format("{}: invalid bind source, source cannot be empty", r.where));
                continue;
            }
            m["Source"] = absolute(l.working_dir, source);
            if (const auto* b = e.get("bind")) {
                r.known(*b, "volumes.bind", {"propagation", "create_host_path"});
                if (const auto* n = b->get("propagation"))
                    m["BindOptions"] =
                        json::object{{"Propagation", r.string(*n, "propagation").value_or("")}};
            }
        } else if (type == "tmpfs") {
            incompatible({"volume", "bind"});
            if (!source.empty()) {
                r.problems.add(
                    e, fmt::format("{}: invalid tmpfs source, source must be empty", r.where));
                continue;
            }
            if (const auto* t = e.get("tmpfs")) {
                r.known(*t, "volumes.tmpfs", {"size", "mode"});
                json::object to;
                if (const auto* n = t->get("size"))
                    if (auto b = r.bytes(*n, "tmpfs.size")) to["SizeBytes"] = *b;
                if (const auto* n = t->get("mode"))
                    if (auto v = r.integer(*n, "tmpfs.mode", true)) to["Mode"] = *v;
                m["TmpfsOptions"] = std::move(to);
            }
        } else {
            r.problems.add(e, fmt::format("{}: volumes: unsupported type \"{}\"", r.where, type));
            continue;
        }
        if (!source.empty() || type != "volume") {
        }
        out.push_back(std::move(m));
    }
    return out;
}

// Service secrets or configs -> references (names only; IDs are resolved at deploy). A
// secret's x-coffer-update (the service's update mode for its secrets, the label
// coffer.secret-update) goes to update: one mode per service.
json::array file_refs(Reader& r, const Node& list, const Node* top, std::string_view kind,
                      const std::string& stack, std::string* update = nullptr) {
    json::array out;
    if (!list.is_seq()) return out;
    const bool config = kind == "config";
    for (const auto& e : list.seq) {
        r.known(e, kind == "config" ? "configs" : "secrets",
                {"source", "target", "uid", "gid", "mode"});
        if (const auto* x = e.get("x-coffer-update")) {
            auto v = r.string(*x, "x-coffer-update");
            if (config || update == nullptr) {
                r.problems.add(*x, fmt::format("{}: x-coffer-update is for secrets", r.where));
            } else if (v) {
                auto checked = model::secret_update_of(
                    model::Labels{{std::string(model::secret_update_label), *v}});
                if (!checked)
                    r.problems.add(*x, fmt::format("{}: x-coffer-update: {}", r.where,
                                                   checked.error().message));
                else if (!update->empty() && *update != *v)
                    r.problems.add(*x, fmt::format("{}: x-coffer-update: {} and {}: a service "
                                                   "has one update mode for all its secrets",
                                                   r.where, *update, *v));
                else
                    *update = *v;
            }
        }
        const auto* s = e.get("source");
        auto source = s ? r.string(*s, "source") : std::nullopt;
        if (!source) continue;
        const auto* def = top ? top->get(*source) : nullptr;
        if (!def) {
            r.problems.add(*s, fmt::format("{}: undefined {} \"{}\"", r.where, kind, *source));
            continue;
        }
        auto name = object_name(stack, *source, def);
        json::object file{{"Name", *source}, {"UID", "0"}, {"GID", "0"}, {"Mode", 0444}};
        if (const auto* n = e.get("target"))
            file["Name"] = r.string(*n, "target").value_or(*source);
        if (const auto* n = e.get("uid")) file["UID"] = r.string(*n, "uid").value_or("0");
        if (const auto* n = e.get("gid")) file["GID"] = r.string(*n, "gid").value_or("0");
        if (const auto* n = e.get("mode"))
            if (auto v = r.integer(*n, "mode", n->quoted)) {
                if (*v < 0 || *v > 07777)
                    r.problems.add(*n, fmt::format("{}: {} {}: mode {} is out of range", r.where,
                                                   kind, *source, n->scalar));
                else
                    file["Mode"] = *v;
            }
        out.push_back(
            json::object{{"File", std::move(file)}, {config ? "ConfigName" : "SecretName", name}});
    }
    // By name as the docker CLI sorts them, then by file name: two references to one object
    // (which the docker CLI leaves in map order) always come out the same, so a redeploy of
    // an unchanged file changes nothing.
    auto key = config ? "ConfigName" : "SecretName";
    auto order = [&](const json::value& v) {
        return std::pair(v.at(key).as_string(), v.at("File").at("Name").as_string());
    };
    std::sort(out.begin(), out.end(),
              [&](const json::value& a, const json::value& b) { return order(a) < order(b); });
    return out;
}

const std::initializer_list<std::string_view> service_keys = {"image",
                                                              "command",
                                                              "entrypoint",
                                                              "environment",
                                                              "env_file",
                                                              "user",
                                                              "working_dir",
                                                              "read_only",
                                                              "cap_add",
                                                              "cap_drop",
                                                              "init",
                                                              "healthcheck",
                                                              "stop_signal",
                                                              "stop_grace_period",
                                                              "sysctls",
                                                              "ulimits",
                                                              "hostname",
                                                              "extra_hosts",
                                                              "dns",
                                                              "dns_search",
                                                              "networks",
                                                              "ports",
                                                              "volumes",
                                                              "configs",
                                                              "secrets",
                                                              "deploy",
                                                              "labels",
                                                              "logging",
                                                              "tty",
                                                              "stdin_open",
                                                              "oom_score_adj",
                                                              "isolation",
                                                              "credential_spec",
                                                              "tmpfs",
                                                              "group_add",
                                                              "dns_opt",
                                                              "restart"};

json::object service(Reader& r, const std::string& name, const Node& s, const Loaded& l,
                     const std::string& stack, std::set<std::string>& used_networks) {
    r.known(s, "the service", service_keys);
    const Node& top = l.merged;
    json::object cs;
    auto str_field = [&](std::string_view key, std::string_view field) {
        if (const auto* n = s.get(key))
            if (auto v = r.string(*n, key); v && !v->empty()) cs[field] = *v;
    };
    std::string image;
    if (const auto* n = s.get("image")) image = r.string(*n, "image").value_or("");
    if (image.empty()) r.problems.add(s, fmt::format("{}: no image", r.where));
    cs["Image"] = image;
    for (auto [key, field] : {std::pair{"entrypoint", "Command"}, {"command", "Args"}})
        if (const auto* n = s.get(key)) {
            if (n->is_scalar()) {
                auto split = shell_split(n->scalar);
                if (!split)
                    r.problems.add(*n, fmt::format("{}: {}: unterminated quote", r.where, key));
                else
                    cs[field] = std::move(*split);
            } else if (auto v = r.strings(*n, key)) {
                cs[field] = std::move(*v);
            }
        }
    str_field("hostname", "Hostname");
    if (const auto* n = s.get("extra_hosts")) {
        json::array hosts;
        if (n->is_map()) {
            for (const auto& [h, ip] : n->map) hosts.emplace_back(ip.scalar + " " + h);
        } else if (auto list = r.strings(*n, "extra_hosts")) {
            for (const auto& e : *list) {
                std::string v(e.as_string());
                auto sep = v.find_first_of(":=");
                if (sep == std::string::npos) {
                    r.problems.add(
                        *n, fmt::format("{}: extra_hosts: \"{}\" is not host:ip", r.where, v));
                    continue;
                }
                hosts.emplace_back(v.substr(sep + 1) + " " + v.substr(0, sep));
            }
        }
        if (!hosts.empty()) cs["Hosts"] = std::move(hosts);
    }
    {
        json::object dns;
        if (const auto* n = s.get("dns"))
            if (auto v = r.strings(*n, "dns", true); v && !v->empty()) dns["Nameservers"] = *v;
        if (const auto* n = s.get("dns_search"))
            if (auto v = r.strings(*n, "dns_search", true); v && !v->empty()) dns["Search"] = *v;
        if (const auto* n = s.get("dns_opt"))
            if (auto v = r.strings(*n, "dns_opt", true); v && !v->empty()) dns["Options"] = *v;
        if (!dns.empty()) cs["DNSConfig"] = std::move(dns);
    }
    if (const auto* n = s.get("healthcheck"))
        if (auto h = healthcheck(r, *n)) cs["Healthcheck"] = std::move(*h);
    if (auto env = environment(r, s, l); !env.empty()) cs["Env"] = std::move(env);
    json::object labels;
    if (const auto* n = s.get("labels")) labels = r.string_map(*n, "labels").value_or(labels);
    cs["Labels"] = with_namespace(std::move(labels), stack);
    str_field("working_dir", "Dir");
    str_field("user", "User");
    if (const auto* n = s.get("group_add"))
        if (auto v = r.strings(*n, "group_add"); v && !v->empty()) cs["Groups"] = *v;
    const Node* top_volumes = top.get("volumes");
    if (const auto* n = s.get("volumes"))
        if (auto m = mounts(r, *n, top_volumes, l, stack); !m.empty()) cs["Mounts"] = std::move(m);
    if (const auto* n = s.get("tmpfs")) {
        auto list = r.strings(*n, "tmpfs", true);
        auto& m = cs["Mounts"];
        if (!m.is_array()) m = json::array{};
        for (const auto& t : list ? *list : json::array{})
            m.as_array().push_back(json::object{{"Type", "tmpfs"}, {"Target", t}});
    }
    if (const auto* n = s.get("stop_grace_period"))
        if (auto d = r.duration(*n, "stop_grace_period")) cs["StopGracePeriod"] = *d;
    str_field("stop_signal", "StopSignal");
    for (auto [key, field] :
         {std::pair{"tty", "TTY"}, {"stdin_open", "OpenStdin"}, {"read_only", "ReadOnly"}})
        if (const auto* n = s.get(key))
            if (r.boolean(*n, key).value_or(false)) cs[field] = true;
    std::string secret_update;  // from the secrets' x-coffer-update
    if (auto refs = file_refs(r, s.get("secrets") ? *s.get("secrets") : Node{}, top.get("secrets"),
                              "secret", stack, &secret_update);
        !refs.empty())
        cs["Secrets"] = std::move(refs);
    if (auto refs = file_refs(r, s.get("configs") ? *s.get("configs") : Node{}, top.get("configs"),
                              "config", stack);
        !refs.empty())
        cs["Configs"] = std::move(refs);
    cs["Privileges"] = json::object{
        {"CredentialSpec", nullptr}, {"SELinuxContext", nullptr}, {"NoNewPrivileges", false}};
    if (const auto* n = s.get("credential_spec"))
        r.problems.add(*n, fmt::format("{}: credential_spec is for Windows services", r.where));
    if (const auto* n = s.get("isolation"))
        if (auto v = r.string(*n, "isolation"); v && !v->empty()) cs["Isolation"] = *v;
    if (const auto* n = s.get("init"))
        if (auto v = r.boolean(*n, "init")) cs["Init"] = *v;
    if (const auto* n = s.get("sysctls"))
        if (auto v = r.string_map(*n, "sysctls"); v && !v->empty()) cs["Sysctls"] = std::move(*v);
    {
        std::set<std::string> add, drop;
        if (const auto* n = s.get("cap_add"))
            for (const auto& c : r.strings(*n, "cap_add").value_or(json::array{}))
                add.insert(normal_cap(std::string(c.as_string())));
        if (const auto* n = s.get("cap_drop"))
            for (const auto& c : r.strings(*n, "cap_drop").value_or(json::array{}))
                drop.insert(normal_cap(std::string(c.as_string())));
        // As the docker CLI: adding ALL wins over drops of single capabilities it names.
        if (add.count("ALL")) add = {"ALL"};
        if (drop.count("ALL")) drop = {"ALL"};
        json::array a(add.begin(), add.end()), d(drop.begin(), drop.end());
        if (!a.empty()) cs["CapabilityAdd"] = std::move(a);
        if (!d.empty()) cs["CapabilityDrop"] = std::move(d);
    }
    if (const auto* n = s.get("ulimits")) {
        json::array list;
        if (!n->is_map()) r.bad(*n, "ulimits", "a mapping");
        for (const auto& [k, v] : n->map) {
            std::int64_t soft = 0, hard = 0;
            if (v.is_scalar()) {
                soft = hard = r.integer(v, "ulimits." + k).value_or(0);
            } else {
                r.known(v, "ulimits." + k, {"soft", "hard"});
                if (const auto* x = v.get("soft")) soft = r.integer(*x, "soft").value_or(0);
                if (const auto* x = v.get("hard")) hard = r.integer(*x, "hard").value_or(0);
            }
            list.push_back(json::object{{"Name", k}, {"Soft", soft}, {"Hard", hard}});
        }
        if (!list.empty()) cs["Ulimits"] = std::move(list);
    }
    if (const auto* n = s.get("oom_score_adj"))
        if (auto v = r.integer(*n, "oom_score_adj"); v && *v) cs["OomScoreAdj"] = *v;

    json::object task{{"ContainerSpec", std::move(cs)}};
    json::object spec;
    json::object deploy_labels;
    json::object mode{{"Replicated", json::object{}}};
    json::object endpoint;
    json::object placement;
    task["Resources"] = json::object{};
    if (const auto* n = s.get("logging")) {
        r.known(*n, "logging", {"driver", "options"});
        json::object ld;
        if (const auto* d = n->get("driver")) ld["Name"] = r.string(*d, "driver").value_or("");
        if (const auto* o = n->get("options"))
            ld["Options"] = r.string_map(*o, "options").value_or(json::object{});
        task["LogDriver"] = std::move(ld);
    }
    if (const auto* n = s.get("restart");
        n && !(s.get("deploy") && s.get("deploy")->get("restart_policy"))) {
        // The legacy restart key, as the docker CLI reads it when deploy.restart_policy is absent.
        auto v = r.string(*n, "restart").value_or("");
        auto colon = v.find(':');
        auto policy = v.substr(0, colon);
        std::int64_t count = 0;
        if (colon != std::string::npos) {
            char* end = nullptr;
            count = std::strtoll(v.c_str() + colon + 1, &end, 10);
            if (*end != '\0' || count < 0)
                r.problems.add(*n, fmt::format("{}: invalid restart policy \"{}\"", r.where, v));
        }
        if (policy == "always" || policy == "unless-stopped" || policy == "on-failure") {
            json::object rp{{"Condition", policy == "on-failure" ? "on-failure" : "any"}};
            if (count > 0) rp["MaxAttempts"] = count;
            task["RestartPolicy"] = std::move(rp);
        } else if (policy != "no" && !policy.empty()) {
            r.problems.add(*n, fmt::format("{}: invalid restart policy: unknown policy '{}'",
                                           r.where, policy));
        }
    }
    if (const auto* d = s.get("deploy")) {
        r.known(*d, "deploy",
                {"mode", "replicas", "resources", "restart_policy", "update_config",
                 "rollback_config", "placement", "labels", "endpoint_mode"});
        std::string m = "replicated";
        if (const auto* n = d->get("mode")) m = r.string(*n, "deploy.mode").value_or(m);
        std::optional<std::int64_t> replicas;
        if (const auto* n = d->get("replicas")) replicas = r.integer(*n, "deploy.replicas");
        if (m == "global" || m == "global-job") {
            if (replicas)
                r.problems.add(*d->get("replicas"),
                               fmt::format("{}: replicas can only be used with replicated or "
                                           "replicated-job mode",
                                           r.where));
            mode = json::object{{m == "global" ? "Global" : "GlobalJob", json::object{}}};
        } else if (m == "replicated") {
            json::object rep;
            if (replicas) rep["Replicas"] = *replicas;
            mode = json::object{{"Replicated", std::move(rep)}};
        } else if (m == "replicated-job") {
            json::object rep;
            if (replicas) rep["MaxConcurrent"] = *replicas, rep["TotalCompletions"] = *replicas;
            mode = json::object{{"ReplicatedJob", std::move(rep)}};
        } else {
            r.problems.add(*d->get("mode"), fmt::format("{}: unknown mode: {}", r.where, m));
        }
        if (const auto* n = d->get("resources")) task["Resources"] = resources(r, *n);
        if (const auto* n = d->get("restart_policy")) {
            r.known(*n, "restart_policy", {"condition", "delay", "max_attempts", "window"});
            json::object rp;
            if (const auto* x = n->get("condition"))
                if (auto v = r.string(*x, "condition"); v && !v->empty()) rp["Condition"] = *v;
            if (const auto* x = n->get("delay"))
                if (auto v = r.duration(*x, "delay")) rp["Delay"] = *v;
            if (const auto* x = n->get("max_attempts"))
                if (auto v = r.integer(*x, "max_attempts")) rp["MaxAttempts"] = *v;
            if (const auto* x = n->get("window"))
                if (auto v = r.duration(*x, "window")) rp["Window"] = *v;
            task["RestartPolicy"] = std::move(rp);
        }
        if (const auto* n = d->get("update_config"))
            if (auto u = update_config(r, *n, "update_config"))
                spec["UpdateConfig"] = std::move(*u);
        if (const auto* n = d->get("rollback_config"))
            if (auto u = update_config(r, *n, "rollback_config"))
                spec["RollbackConfig"] = std::move(*u);
        if (const auto* p = d->get("placement")) {
            r.known(*p, "placement", {"constraints", "preferences", "max_replicas_per_node"});
            if (const auto* n = p->get("constraints"))
                if (auto v = r.strings(*n, "constraints"); v && !v->empty())
                    placement["Constraints"] = *v;
            if (const auto* n = p->get("preferences")) {
                json::array prefs;
                for (const auto& e : n->seq) {
                    const auto* sp = e.get("spread");
                    if (!sp) {
                        r.bad(e, "placement.preferences", "spread entries");
                        continue;
                    }
                    prefs.push_back(json::object{
                        {"Spread", json::object{{"SpreadDescriptor",
                                                 r.string(*sp, "spread").value_or("")}}}});
                }
                if (!prefs.empty()) placement["Preferences"] = std::move(prefs);
            }
            if (const auto* n = p->get("max_replicas_per_node"))
                if (auto v = r.integer(*n, "max_replicas_per_node"); v && *v)
                    placement["MaxReplicas"] = *v;
        }
        if (const auto* n = d->get("labels"))
            deploy_labels = r.string_map(*n, "deploy.labels").value_or(deploy_labels);
        if (const auto* n = d->get("endpoint_mode"))
            if (auto v = r.string(*n, "endpoint_mode"); v && !v->empty()) {
                std::string lower = *v;
                std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
                endpoint["Mode"] = lower;
            }
    }
    task["Placement"] = std::move(placement);
    // Networks: the stack's default network when the service names none.
    {
        std::map<std::string, const Node*> nets;
        if (const auto* n = s.get("networks"); n && n->is_map())
            for (const auto& [k, v] : n->map) nets[k] = &v;
        if (nets.empty()) nets["default"] = nullptr;
        json::array list;
        const Node* top_nets = top.get("networks");
        for (const auto& [k, v] : nets) {
            const Node* def = top_nets ? top_nets->get(k) : nullptr;
            if (!def && k != "default") {
                r.problems.add(v ? *v : s, fmt::format("{}: undefined network \"{}\"", r.where, k));
                continue;
            }
            used_networks.insert(k);
            auto target = object_name(stack, k, def);
            json::object att{{"Target", target}};
            json::array aliases;
            if (v && v->is_map()) {
                r.known(*v, "networks." + k,
                        {"aliases", "ipv4_address", "ipv6_address", "driver_opts"});
                if (const auto* a = v->get("aliases"))
                    aliases = r.strings(*a, "aliases").value_or(aliases);
                if (const auto* o = v->get("driver_opts"))
                    att["DriverOpts"] = r.string_map(*o, "driver_opts").value_or(json::object{});
                for (auto key : {"ipv4_address", "ipv6_address"})
                    if (const auto* x = v->get(key))
                        r.problems.add(
                            *x, fmt::format("{}: networks.{}: {} is not supported by services",
                                            r.where, k, key));
            }
            if (target != "host" && target != "bridge" && target != "none" && target != "default" &&
                !target.starts_with("container:"))
                aliases.emplace_back(name);
            if (!aliases.empty()) att["Aliases"] = std::move(aliases);
            list.push_back(std::move(att));
        }
        task["Networks"] = std::move(list);
    }
    task["ForceUpdate"] = 0;
    if (const auto* n = s.get("ports"))
        if (auto p = ports(r, *n); !p.empty()) endpoint["Ports"] = std::move(p);
    spec["Name"] = scope(stack, name);
    if (!secret_update.empty()) {
        auto key = std::string(model::secret_update_label);
        if (const auto* given = deploy_labels.if_contains(key);
            given && (!given->is_string() || given->as_string() != secret_update))
            r.problems.add(s, fmt::format("{}: x-coffer-update {} and deploy.labels {}={}: "
                                          "say the update mode once",
                                          r.where, secret_update, key, json::serialize(*given)));
        deploy_labels[key] = secret_update;
    }
    auto labels_out = with_namespace(std::move(deploy_labels), stack);
    labels_out[label_image] = image;
    spec["Labels"] = std::move(labels_out);
    spec["TaskTemplate"] = std::move(task);
    spec["Mode"] = std::move(mode);
    spec["EndpointSpec"] = std::move(endpoint);
    return spec;
}

// Top-level secrets or configs.
std::vector<FileObject> file_objects(Problems& problems, const Loaded& l, std::string_view kind,
                                     const std::string& stack) {
    std::vector<FileObject> out;
    const Node* top = l.merged.get(kind == "secret" ? "secrets" : "configs");
    if (!top || !top->is_map()) return out;
    for (const auto& [key, def] : top->map) {
        Reader r{problems, fmt::format("{} \"{}\"", kind, key)};
        if (!def.is_map()) {
            r.bad(def, key, "a mapping");
            continue;
        }
        r.known(def, kind,
                {"file", "external", "name", "labels", "environment", "driver", "driver_opts",
                 "template_driver"});
        for (auto k : {"driver", "driver_opts", "template_driver"})
            if (const auto* n = def.get(k))
                problems.add(*n, fmt::format("{}: {} is not supported: coffer keeps {}s itself",
                                             r.where, k, kind));
        FileObject o;
        o.key = key;
        o.at = &def;
        auto named = checked_object_name(r, stack, key, def);
        o.name = std::move(named.name);
        o.external = named.external;
        const auto* file = def.get("file");
        const auto* env = def.get("environment");
        if (o.external) {
            for (auto k : {"file", "environment", "labels"})
                if (const auto* n = def.get(k))
                    problems.add(*n, fmt::format("{}: {} cannot be set for an external {}", r.where,
                                                 k, kind));
        } else if ((file != nullptr) == (env != nullptr)) {
            problems.add(def, fmt::format("{}: needs exactly one of file, environment or external",
                                          r.where));
        } else if (file) {
            o.file = absolute(l.working_dir, r.string(*file, "file").value_or(""));
            if (::access(o.file.c_str(), R_OK) != 0)
                problems.add(*file, fmt::format("{}: cannot read file {}: {}", r.where, o.file,
                                                std::strerror(errno)));
        } else {
            o.environment = r.string(*env, "environment").value_or("");
            // Checked against the CLI's own environment, never .env: the value is a secret.
            if (!std::getenv(o.environment.c_str()))
                problems.add(*env, fmt::format("{}: environment variable {} is not set", r.where,
                                               o.environment));
        }
        json::object labels;
        if (const auto* n = def.get("labels")) labels = r.string_map(*n, "labels").value_or(labels);
        o.labels = with_namespace(std::move(labels), stack);
        out.push_back(std::move(o));
    }
    return out;
}

std::vector<Network> networks(Problems& problems, const Loaded& l, const std::string& stack,
                              const std::set<std::string>& used) {
    std::vector<Network> out;
    const Node* top = l.merged.get("networks");
    for (const auto& key : used) {
        Reader r{problems, fmt::format("network \"{}\"", key)};
        const Node* def = top ? top->get(key) : nullptr;
        Network n;
        n.key = key;
        n.at = def;
        n.name = scope(stack, key);
        json::object labels;
        std::string driver = "overlay";
        json::object create;
        if (def && def->is_map()) {
            r.known(*def, "network",
                    {"driver", "driver_opts", "internal", "attachable", "ipam", "labels",
                     "external", "name"});
            auto named = checked_object_name(r, stack, key, *def);
            n.name = std::move(named.name);
            n.external = named.external;
            if (const auto* x = def->get("driver"))
                driver = r.string(*x, "driver").value_or(driver);
            if (const auto* x = def->get("driver_opts")) {
                auto opts = r.string_map(*x, "driver_opts").value_or(json::object{});
                for (const auto& [k, v] : opts)
                    if (k != "com.docker.network.driver.mtu")
                        problems.add(*x, fmt::format("{}: driver option \"{}\" is not supported "
                                                     "(only com.docker.network.driver.mtu)",
                                                     r.where, std::string_view(k)));
                if (!opts.empty()) create["Options"] = std::move(opts);
            }
            for (auto [k, f] : {std::pair{"internal", "Internal"}, {"attachable", "Attachable"}})
                if (const auto* x = def->get(k)) create[f] = r.boolean(*x, k).value_or(false);
            if (const auto* x = def->get("labels"))
                labels = r.string_map(*x, "labels").value_or(labels);
            if (const auto* ipam = def->get("ipam")) {
                r.known(*ipam, "ipam", {"driver", "config"});
                json::object io;
                if (const auto* d = ipam->get("driver"))
                    io["Driver"] = r.string(*d, "ipam.driver").value_or("");
                if (const auto* c = ipam->get("config")) {
                    json::array cfg;
                    for (const auto& e : c->seq) {
                        r.known(e, "ipam.config", {"subnet"});
                        if (const auto* sn = e.get("subnet"))
                            cfg.push_back(
                                json::object{{"Subnet", r.string(*sn, "subnet").value_or("")}});
                    }
                    io["Config"] = std::move(cfg);
                }
                create["IPAM"] = std::move(io);
            }
        }
        if (!n.external) {
            create["Name"] = n.name;
            create["Driver"] = driver;
            create["Labels"] = with_namespace(std::move(labels), stack);
            create["CheckDuplicate"] = true;
            n.create = std::move(create);
        }
        out.push_back(std::move(n));
    }
    return out;
}

}  // namespace

Stack convert(const Loaded& loaded, const std::string& stack, Problems& problems) {
    Stack out;
    out.name = stack;
    for (auto kind : {"secrets", "configs", "volumes", "networks"})
        if (const auto* top = loaded.merged.get(kind); top && top->is_map())
            for (const auto& [k, v] : top->map)
                if (v.is_null()) const_cast<Node&>(v).kind = Node::Kind::map;
    if (const auto* vols = loaded.merged.get("volumes"); vols && vols->is_map())
        for (const auto& [k, v] : vols->map) {
            Reader r{problems, fmt::format("volume \"{}\"", k)};
            r.known(v, "volume", {"driver", "driver_opts", "labels", "external", "name"});
            if (const auto* d = v.get("driver"); d && d->scalar != "local")
                problems.add(*d, fmt::format("{}: only the local driver is supported", r.where));
            if (const auto* d = v.get("driver_opts"))
                problems.add(*d, fmt::format("{}: driver_opts are not supported: a volume is a "
                                             "directory on the node",
                                             r.where));
        }
    std::set<std::string> used_networks;
    const Node* services = loaded.merged.get("services");
    if (!services || !services->is_map() || services->map.empty())
        problems.add_file(0, "no services to deploy");
    else
        for (const auto& [name, s] : services->map) {
            Reader r{problems, fmt::format("service \"{}\"", name)};
            if (!s.is_map()) continue;
            out.services[scope(stack, name)] = service(r, name, s, loaded, stack, used_networks);
        }
    out.secrets = file_objects(problems, loaded, "secret", stack);
    out.configs = file_objects(problems, loaded, "config", stack);
    out.networks = networks(problems, loaded, stack, used_networks);
    return out;
}

}  // namespace coffer::cli::compose
