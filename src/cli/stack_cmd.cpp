// coffer stack deploy|ls|services|ps|rm|config: compose files deployed as the docker CLI deploys
// them, all or nothing, and redeploys that leave unchanged services alone.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>

#include "client.h"
#include "coffer/crypto/encoding.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/net/http.h"
#include "common.h"
#include "compose.h"
#include "format.h"
#include "registry_flags.h"
#include "secret_input.h"
#include "service_views.h"

namespace coffer::cli {

namespace json = boost::json;

namespace {

constexpr const char* label_namespace = "com.docker.stack.namespace";
constexpr const char* label_image = "com.docker.stack.image";
// The most a secret or config file may hold before the server's own limit answers.
constexpr std::size_t data_limit = 1000 * 1024;

std::string label_filter(const std::string& stack) {
    return "?filters=" +
           net::percent_encode(json::serialize(json::object{
               {"label", json::object{{fmt::format("{}={}", label_namespace, stack), true}}}}));
}

std::string name_filter(const std::vector<std::string>& names) {
    json::object n;
    for (const auto& x : names) n[x] = true;
    return "?filters=" + net::percent_encode(json::serialize(json::object{{"name", n}}));
}

// The bytes of a stack secret or config: its file, or a variable of the CLI's environment.
Result<crypto::SecureBuffer> object_data(const compose::FileObject& o) {
    if (!o.file.empty()) return read_secret_source(o.file, data_limit);
    const char* v = std::getenv(o.environment.c_str());
    if (v == nullptr || *v == '\0')
        return usage(fmt::format("environment variable {} is not set", o.environment));
    crypto::SecureBuffer b(std::strlen(v));
    std::memcpy(b.data(), v, b.size());
    return b;
}

// A value with the empty parts a server may leave out or fill in removed: null, false, 0, "",
// {} and [] members of objects.
json::value canonical(const json::value& v) {
    if (v.is_object()) {
        json::object out;
        for (const auto& [k, x] : v.as_object()) {
            auto c = canonical(x);
            bool empty = c.is_null() || (c.is_bool() && !c.as_bool()) ||
                         (c.is_number() && c.to_number<double>() == 0) ||
                         (c.is_string() && c.as_string().empty()) ||
                         (c.is_object() && c.as_object().empty()) ||
                         (c.is_array() && c.as_array().empty());
            if (!empty) out[k] = std::move(c);
        }
        return out;
    }
    if (v.is_array()) {
        json::array out;
        for (const auto& x : v.as_array()) out.push_back(canonical(x));
        return out;
    }
    if (v.is_number()) return v.to_number<double>();
    return v;
}

struct DeployOpts {
    std::vector<std::string> files;
    bool prune = false;
    std::string resolve_image = "always";
    bool with_registry_auth = false;
    bool detach = true;
    int timeout = 300;
    std::string stack;
};

struct Prepared {
    compose::FileObject obj;
    std::optional<crypto::SecureBuffer> data;
    std::string id;  // when it exists
    std::uint64_t version = 0;
    json::object current_labels;
};

// Loads and converts the files, printing every problem; fails when there is any.
compose::Stack load_stack(const std::vector<std::string>& files, const std::string& stack,
                          compose::Loaded& loaded) {
    compose::Problems problems;
    loaded = compose::load(files, problems, compose::process_environment());
    compose::Stack out;
    if (problems.empty()) out = compose::convert(loaded, stack, problems);
    if (!problems.empty()) fail(usage(problems.text()));
    if (!loaded.unsupported.empty()) {
        std::string list;
        for (const auto& u : loaded.unsupported) list += (list.empty() ? "" : ", ") + u;
        std::fprintf(stderr, "Ignoring unsupported options: %s\n\n", list.c_str());
    }
    return out;
}

// The stack's existing secrets or configs by name, with what deploy needs to know of them.
void find_existing(ApiClient& api, std::string_view collection, std::vector<Prepared>& objs,
                   std::vector<std::string>& problems) {
    std::vector<std::string> names;
    for (const auto& p : objs) names.push_back(p.obj.name);
    if (names.empty()) return;
    auto found = must(api.call("GET", fmt::format("/{}{}", collection, name_filter(names))));
    std::map<std::string, const json::value*> by_name;
    for (const auto& s : found.as_array()) by_name[field(s, {"Spec", "Name"})] = &s;
    for (auto& p : objs) {
        auto it = by_name.find(p.obj.name);
        if (it == by_name.end()) {
            if (p.obj.external)
                problems.push_back(fmt::format("{} not found: {} (external)",
                                               collection.substr(0, collection.size() - 1),
                                               p.obj.name));
            continue;
        }
        p.id = field(*it->second, {"ID"});
        p.version = static_cast<std::uint64_t>(number(*it->second, {"Version", "Index"}));
        if (const auto* l = at(*it->second, {"Spec", "Labels"}); l && l->is_object())
            p.current_labels = l->as_object();
    }
}

void deploy(Globals& g, const DeployOpts& o) {
    compose::Loaded loaded;
    auto stack = load_stack(o.files, o.stack, loaded);
    ApiClient api(g.host);
    std::vector<std::string> problems;

    // 1. Everything read and checked before anything changes.
    std::vector<Prepared> secrets, configs;
    for (auto& s : stack.secrets) secrets.push_back({s, {}, {}, 0, {}});
    for (auto& c : stack.configs) configs.push_back({c, {}, {}, 0, {}});
    for (auto* list : {&secrets, &configs})
        for (auto& p : *list) {
            if (p.obj.external) continue;
            auto d = object_data(p.obj);
            if (!d)
                problems.push_back(fmt::format("{} {}: {}", list == &secrets ? "secret" : "config",
                                               p.obj.key, d.error().message));
            else
                p.data = std::move(*d);
        }
    find_existing(api, "secrets", secrets, problems);
    find_existing(api, "configs", configs, problems);
    std::map<std::string, std::string> network_ids;  // id -> name, for comparing attachments
    std::set<std::string> existing_networks;
    if (auto nets = api.call("GET", "/networks"); nets && nets->is_array())
        for (const auto& n : nets->as_array()) {
            network_ids[field(n, {"Id"})] = field(n, {"Name"});
            existing_networks.insert(field(n, {"Name"}));
        }
    for (const auto& n : stack.networks)
        if (n.external) {
            auto r = api.call("GET", "/networks/" + net::percent_encode(n.name));
            if (!r)
                problems.push_back(
                    fmt::format("network {} not found (external): {}", n.name, r.error().message));
        }
    // Every network a service attaches to exists or is made by this deploy.
    {
        std::set<std::string> known = existing_networks;
        for (const auto& n : stack.networks) known.insert(n.name);
        for (const auto& [id, name] : network_ids) known.insert(id);
        for (const auto& [name, spec] : stack.services) {
            json::value whole = spec;
            if (const auto* nets = at(whole, {"TaskTemplate", "Networks"});
                nets && nets->is_array())
                for (const auto& a : nets->as_array())
                    if (auto t = field(a, {"Target"}); !known.count(t))
                        problems.push_back(
                            fmt::format("service {}: network {} not found", name, t));
        }
    }
    // A stack config that exists must hold the same bytes (configs have no versions): asked of
    // the manager by an update that changes nothing else (it compares, and refuses different
    // data). A changed secret is rotated below, once everything has been checked.
    for (auto& p : configs) {
        if (p.obj.external || p.id.empty() || !p.data) continue;
        auto r = api.call("POST", fmt::format("/configs/{}/update?version={}", p.id, p.version),
                          data_body(p.obj.name, p.current_labels, *p.data).span());
        if (!r) {
            if (r.error().code == Errc::invalid_argument)
                problems.push_back(fmt::format(
                    "config {} changed: its file or value holds other bytes than the stored "
                    "config, and a config cannot change: create it under a new name and point "
                    "the services at it",
                    p.obj.name));
            else
                problems.push_back(fmt::format("config {}: {}", p.obj.name, r.error().message));
            continue;
        }
        if (auto again = api.call("GET", fmt::format("/configs/{}", p.id)))
            p.version = static_cast<std::uint64_t>(number(*again, {"Version", "Index"}));
    }
    auto existing_services = must(api.call("GET", "/services" + label_filter(o.stack)));
    if (!problems.empty()) {
        std::string text;
        for (const auto& p : problems) text += (text.empty() ? "" : "\n") + p;
        fail(usage(text + "\nnothing was changed"));
    }

    // 2. Networks, secrets, configs, then services.
    for (const auto& n : stack.networks) {
        if (n.external || existing_networks.count(n.name)) continue;
        std::printf("Creating network %s\n", n.name.c_str());
        auto r = must(api.call("POST", "/networks/create", json::value(n.create)));
        network_ids[field(r, {"Id"})] = n.name;
    }
    std::map<std::string, std::string> ids;  // "secret:name" -> id
    for (auto* list : {&secrets, &configs})
        for (auto& p : *list) {
            auto kind = std::string(list == &secrets ? "secret" : "config");
            if (p.obj.external) continue;
            if (p.id.empty()) {
                std::printf("Creating %s %s\n", kind.c_str(), p.obj.name.c_str());
                auto r = must(api.call("POST", fmt::format("/{}s/create", kind),
                                       data_body(p.obj.name, p.obj.labels, *p.data).span()));
                p.id = field(r, {"ID"});
            } else {
                if (json::value(p.current_labels) != json::value(p.obj.labels)) {
                    std::printf("Updating %s %s\n", kind.c_str(), p.obj.name.c_str());
                    must(api.call(
                        "POST", fmt::format("/{}s/{}/update?version={}", kind, p.id, p.version),
                        json::value(json::object{{"Name", p.obj.name}, {"Labels", p.obj.labels}})));
                }
                // Other bytes in the file or value: a new version, current at once; the manager
                // compares (in locked memory) and adds none when they are the same. The
                // services that use it get it by their update mode (coffer.secret-update).
                if (list == &secrets) {
                    auto r = must(api.call(
                        "POST", fmt::format("/secrets/{}/rotate?onlyIfDifferent=true", p.id),
                        body_with_data("", *p.data).span()));
                    if (const auto* c = at(r, {"Changed"}); !c || !c->is_bool() || c->as_bool())
                        std::printf("Rotating secret %s to version %lld\n", p.obj.name.c_str(),
                                    static_cast<long long>(number(r, {"Version"})));
                }
            }
        }
    for (auto* list : {&secrets, &configs}) {
        auto kind = std::string(list == &secrets ? "secret" : "config");
        std::vector<std::string> names;
        for (const auto& p : *list) names.push_back(p.obj.name);
        if (names.empty()) continue;
        auto found = must(api.call("GET", fmt::format("/{}s{}", kind, name_filter(names))));
        for (const auto& s : found.as_array())
            ids[kind + ":" + field(s, {"Spec", "Name"})] = field(s, {"ID"});
    }

    std::map<std::string, const json::value*> current;
    for (const auto& s : existing_services.as_array()) current[field(s, {"Spec", "Name"})] = &s;
    std::vector<std::string> to_wait;
    for (auto& [name, spec] : stack.services) {
        auto& cs = spec["TaskTemplate"].as_object()["ContainerSpec"].as_object();
        for (auto [key, kind, id_key, name_key] :
             {std::tuple{"Secrets", "secret", "SecretID", "SecretName"},
              {"Configs", "config", "ConfigID", "ConfigName"}})
            if (auto* refs = cs.if_contains(key))
                for (auto& r : refs->as_array()) {
                    auto n = std::string(r.at(name_key).as_string());
                    r.as_object()[id_key] = ids[std::string(kind) + ":" + n];
                }
        auto image = std::string(cs["Image"].as_string());
        // --with-registry-auth: the docker CLI's login state for this image, sent with the
        // digest query and the create or update, and wiped once sent.
        auto auth = o.with_registry_auth ? login_state_header(image)
                                         : std::optional<crypto::SecureBuffer>();
        auto send = [&](std::string_view method, const std::string& path, json::value body) {
            if (!auth) return api.call(method, path, body);
            return api.call(method, path, body, net::SecretHeader{"X-Registry-Auth", auth->span()});
        };
        auto it = current.find(name);
        bool query = o.resolve_image == "always";
        if (it != current.end()) {
            const auto& old = *it->second;
            if (o.resolve_image == "changed") {
                if (field(old, {"Spec", "Labels", label_image}) != image)
                    query = true;
                else
                    cs["Image"] = field(old, {"Spec", "TaskTemplate", "ContainerSpec", "Image"});
            }
        } else if (o.resolve_image == "changed") {
            query = true;
        }
        if (query) {
            auto d = send("GET", "/distribution/" + image + "/json", json::value());
            auto digest = d ? field(*d, {"Descriptor", "digest"}) : std::string();
            if (!digest.empty() && image.find('@') == std::string::npos)
                cs["Image"] = image + "@" + digest;
            else if (!d && it != current.end() &&
                     field(*it->second, {"Spec", "Labels", label_image}) == image)
                // The registry cannot be asked (no credentials given this time): the service
                // keeps the digest its image was resolved to.
                cs["Image"] =
                    field(*it->second, {"Spec", "TaskTemplate", "ContainerSpec", "Image"});
            else if (!d)
                std::fprintf(stderr,
                             "image %s could not be accessed on a registry to record\nits "
                             "digest. Each node will access %s independently,\npossibly "
                             "leading to different nodes running\ndifferent versions of the "
                             "image.\n",
                             image.c_str(), image.c_str());
        }
        if (it == current.end()) {
            std::printf("Creating service %s\n", name.c_str());
            auto r = must(send("POST", "/services/create", json::value(spec)));
            to_wait.push_back(field(r, {"ID"}));
            continue;
        }
        const auto& old = *it->second;
        auto id = field(old, {"ID"});
        if (const auto* f = at(old, {"Spec", "TaskTemplate", "ForceUpdate"}))
            spec["TaskTemplate"].as_object()["ForceUpdate"] = *f;
        // Compare with the stored spec; network attachments the server keeps by ID compare by
        // name.
        // As stored, without the defaults a list answer fills in.
        auto plain = must(api.call("GET", "/services/" + id + "?insertDefaults=false"));
        json::value stored = *at(plain, {"Spec"});
        if (auto* nets = stored.as_object()["TaskTemplate"].as_object().if_contains("Networks");
            nets && nets->is_array())
            for (auto& a : nets->as_array())
                if (auto t = network_ids.find(field(a, {"Target"})); t != network_ids.end())
                    a.as_object()["Target"] = t->second;
        // The server keeps the service's registry credentials when a spec leaves them out.
        if (!cs.contains("CofferRegistryAuth"))
            stored.as_object()["TaskTemplate"].as_object()["ContainerSpec"].as_object().erase(
                "CofferRegistryAuth");
        // The server stores a replicated service without replicas as one replica.
        json::value wanted = spec;
        if (auto* rep = wanted.as_object()["Mode"].as_object().if_contains("Replicated");
            rep && rep->is_object() && !rep->as_object().contains("Replicas"))
            rep->as_object()["Replicas"] = 1;
        if (canonical(stored) == canonical(wanted) && !auth) {
            std::printf("Service %s is unchanged\n", name.c_str());
            continue;
        }
        std::printf("Updating service %s (id: %s)\n", name.c_str(), id.c_str());
        auto r = must(send(
            "POST",
            fmt::format("/services/{}/update?version={}", id, number(old, {"Version", "Index"})),
            json::value(spec)));
        if (const auto* w = r.is_object() ? r.as_object().if_contains("Warnings") : nullptr;
            w && w->is_array())
            for (const auto& line : w->as_array())
                if (line.is_string()) std::fprintf(stderr, "%s\n", line.as_string().c_str());
        to_wait.push_back(id);
    }
    if (o.prune)
        for (const auto& [name, s] : current)
            if (!stack.services.count(name)) {
                std::printf("Removing service %s\n", name.c_str());
                must(api.call("DELETE", "/services/" + field(*s, {"ID"})));
            }
    std::fflush(stdout);
    if (!o.detach)
        for (const auto& id : to_wait) wait_converged(api, id, std::chrono::seconds(o.timeout));
}

void add_deploy(CLI::App& stack, Globals& g) {
    auto* cmd = stack.add_subcommand("deploy", "Deploy a new stack or update an existing stack");
    cmd->alias("up");
    auto o = std::make_shared<DeployOpts>();
    one_value_per_flag(
        cmd->add_option("-c,--compose-file", o->files, "Path to a Compose file, or - for STDIN")
            ->required());
    cmd->add_flag("--prune", o->prune, "Prune services that are no longer referenced");
    cmd->add_option("--resolve-image", o->resolve_image,
                    "Query the registry to resolve image digest (always, changed, never)")
        ->check(CLI::IsMember({"always", "changed", "never"}));
    cmd->add_flag("--with-registry-auth", o->with_registry_auth,
                  "Send registry authentication details (from the docker CLI's config.json) to "
                  "the manager");
    cmd->add_flag("-d,--detach", o->detach,
                  "Exit immediately instead of waiting for the stack services to converge");
    cmd->add_option("--timeout", o->timeout, "Seconds to wait for convergence");
    cmd->add_option("stack", o->stack, "STACK")->required();
    cmd->callback([&g, o] { deploy(g, *o); });
}

void add_config(CLI::App& stack) {
    auto* cmd = stack.add_subcommand("config",
                                     "Outputs the final config file, after doing "
                                     "merges and interpolations");
    auto files = std::make_shared<std::vector<std::string>>();
    one_value_per_flag(
        cmd->add_option("-c,--compose-file", *files, "Path to a Compose file, or - for STDIN")
            ->required());
    cmd->callback([files] {
        compose::Problems problems;
        auto loaded = compose::load(*files, problems, compose::process_environment());
        if (!problems.empty()) fail(usage(problems.text()));
        std::fputs(compose::to_yaml(loaded.merged).c_str(), stdout);
    });
}

void add_ls(CLI::App& stack, Globals& g) {
    auto* cmd = stack.add_subcommand("ls", "List stacks");
    cmd->alias("list");
    cmd->callback([&g] {
        ApiClient api(g.host);
        auto q = "?filters=" + net::percent_encode(json::serialize(
                                   json::object{{"label", json::object{{label_namespace, true}}}}));
        auto list = must(api.call("GET", "/services" + q));
        std::map<std::string, int> count;
        for (const auto& s : list.as_array())
            ++count[field(s, {"Spec", "Labels", label_namespace})];
        std::printf("%-15s %s\n", "NAME", "SERVICES");
        for (const auto& [name, n] : count) std::printf("%-15s %d\n", name.c_str(), n);
    });
}

void add_services(CLI::App& stack, Globals& g) {
    auto* cmd = stack.add_subcommand("services", "List the services in the stack");
    auto name = std::make_shared<std::string>();
    auto flags = std::make_shared<ListFlags>();
    flags->add(cmd, false);
    cmd->add_option("stack", *name, "STACK")->required();
    cmd->callback([&g, name, flags] {
        ApiClient api(g.host);
        auto items =
            must(api.call("GET", "/services" + label_filter(*name) + "&status=true")).as_array();
        if (items.empty()) {
            std::fprintf(stderr, "Nothing found in stack: %s\n", name->c_str());
            return;
        }
        std::sort(items.begin(), items.end(), [](const auto& a, const auto& b) {
            return field(a, {"Spec", "Name"}) < field(b, {"Spec", "Name"});
        });
        std::vector<json::object> rows;
        for (const auto& s : items) rows.push_back(service_row(s));
        flags->print(service_list, rows);
    });
}

void add_ps(CLI::App& stack, Globals& g) {
    auto* cmd = stack.add_subcommand("ps", "List the tasks in the stack");
    auto name = std::make_shared<std::string>();
    auto flags = std::make_shared<ListFlags>();
    flags->add(cmd, false);
    cmd->add_option("stack", *name, "STACK")->required();
    cmd->callback([&g, name, flags] {
        ApiClient api(g.host);
        auto tasks = must(api.call("GET", "/tasks" + label_filter(*name))).as_array();
        if (tasks.empty()) {
            std::fprintf(stderr, "Nothing found in stack: %s\n", name->c_str());
            return;
        }
        std::map<std::string, std::string> services, hosts;
        auto service_list_json = must(api.call("GET", "/services" + label_filter(*name)));
        for (const auto& s : service_list_json.as_array())
            services[field(s, {"ID"})] = field(s, {"Spec", "Name"});
        auto nodes = must(api.call("GET", "/nodes"));
        for (const auto& n : nodes.as_array())
            hosts[field(n, {"ID"})] = field(n, {"Description", "Hostname"});
        std::vector<std::pair<std::string, const json::value*>> named;
        for (const auto& t : tasks) {
            auto slot = number(t, {"Slot"});
            auto svc = services[field(t, {"ServiceID"})];
            named.emplace_back(slot ? fmt::format("{}.{}", svc, slot)
                                    : fmt::format("{}.{}", svc, field(t, {"NodeID"})),
                               &t);
        }
        std::stable_sort(named.begin(), named.end(), [](const auto& a, const auto& b) {
            if (a.first != b.first) return a.first < b.first;
            return field(*a.second, {"CreatedAt"}) > field(*b.second, {"CreatedAt"});
        });
        std::vector<json::object> rows;
        std::string prev;
        for (const auto& [n, t] : named) {
            auto node = field(*t, {"NodeID"});
            rows.push_back(task_row(*t, n == prev ? " \\_ " + n : n,
                                    hosts.count(node) ? hosts[node] : node, !flags->quiet));
            prev = n;
        }
        flags->print(task_list, rows);
    });
}

void add_rm(CLI::App& stack, Globals& g) {
    auto* cmd = stack.add_subcommand("rm", "Remove one or more stacks");
    cmd->alias("remove")->alias("down");
    auto names = std::make_shared<std::vector<std::string>>();
    cmd->add_option("stack", *names, "STACK")->required();
    cmd->callback([&g, names] {
        ApiClient api(g.host);
        bool failed = false;
        for (const auto& name : *names) {
            auto q = label_filter(name);
            auto services = must(api.call("GET", "/services" + q)).as_array();
            auto secrets = must(api.call("GET", "/secrets" + q)).as_array();
            auto configs = must(api.call("GET", "/configs" + q)).as_array();
            json::array networks;
            if (auto n = api.call("GET", "/networks" + q); n && n->is_array())
                networks = n->as_array();
            if (services.empty() && secrets.empty() && configs.empty() && networks.empty()) {
                std::fprintf(stderr, "Nothing found in stack: %s\n", name.c_str());
                continue;
            }
            auto remove = [&](const json::array& list, std::string_view kind, std::string_view path,
                              std::initializer_list<std::string_view> nm, std::string_view id_key) {
                for (const auto& x : list) {
                    // Only what carries this stack's label: external objects never do.
                    if (field(x, nm.size() == 2
                                     ? std::initializer_list<std::string_view>{"Spec", "Labels",
                                                                               label_namespace}
                                     : std::initializer_list<std::string_view>{
                                           "Labels", label_namespace}) != name)
                        continue;
                    std::printf("Removing %s %s\n", std::string(kind).c_str(),
                                field(x, nm).c_str());
                    if (auto r =
                            api.call("DELETE", fmt::format("/{}/{}", path, field(x, {id_key})));
                        !r) {
                        std::fprintf(stderr, "Failed to remove %s %s: %s\n",
                                     std::string(kind).c_str(), field(x, nm).c_str(),
                                     r.error().message.c_str());
                        failed = true;
                    }
                }
            };
            remove(services, "service", "services", {"Spec", "Name"}, "ID");
            remove(secrets, "secret", "secrets", {"Spec", "Name"}, "ID");
            remove(configs, "config", "configs", {"Spec", "Name"}, "ID");
            remove(networks, "network", "networks", {"Name"}, "Id");
        }
        std::fflush(stdout);
        if (failed) throw CLI::RuntimeError(1);
    });
}

}  // namespace

void add_stack_commands(CLI::App& app, Globals& g) {
    auto* stack = app.add_subcommand("stack", "Manage stacks");
    stack->require_subcommand(1);
    add_deploy(*stack, g);
    add_config(*stack);
    add_ls(*stack, g);
    add_services(*stack, g);
    add_ps(*stack, g);
    add_rm(*stack, g);
}

}  // namespace coffer::cli
