// coffer service create|update|ls|ps|inspect|logs|rm|scale: the docker CLI's verbs and flags.
// One function per verb; the flags they share and their parsers are in service_flags.cpp.
#include <algorithm>
#include <chrono>
#include <map>
#include <optional>
#include <thread>

#include "client.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/net/http.h"
#include "common.h"
#include "format.h"
#include "logs_cmd.h"
#include "output.h"
#include "registry_flags.h"
#include "service_flags.h"
#include "service_views.h"

namespace coffer::cli {

namespace json = boost::json;

namespace {

// Resolves secret (or, with kind "config", config) names to references with one
// GET /secrets?filters={"name":...}, exact names chosen here (the filter matches prefixes), as
// the docker CLI does.
Result<json::array> secret_refs(ApiClient& api, const std::vector<std::string>& specs,
                                std::string_view kind = "secret") {
    const bool config = kind == "config";
    std::vector<SecretOpt> opts;
    std::vector<std::string> names;
    for (const auto& s : specs) {
        auto o = parse_secret_opt(s);
        if (!o) return std::move(o).error();
        if (config && o->version) return usage(fmt::format("a config has no versions: {}", s));
        names.push_back(o->source);
        opts.push_back(std::move(*o));
    }
    json::array refs;
    if (opts.empty()) return refs;
    auto found = api.call("GET", fmt::format("/{}s?filters=", kind) + filter_param("name", names));
    if (!found) return std::move(found).error();
    std::map<std::string, std::string> ids;
    if (found->is_array())
        for (const auto& s : found->as_array()) ids[field(s, {"Spec", "Name"})] = field(s, {"ID"});
    for (const auto& o : opts) {
        auto it = ids.find(o.source);
        if (it == ids.end()) return usage(fmt::format("{} not found: {}", kind, o.source));
        refs.push_back(json::object{
            {"File",
             json::object{{"Name", o.target}, {"UID", o.uid}, {"GID", o.gid}, {"Mode", o.mode}}},
            {config ? "ConfigID" : "SecretID", it->second},
            {config ? "ConfigName" : "SecretName",
             o.version ? fmt::format("{}@{}", o.source, o.version) : o.source}});
    }
    return refs;
}

}  // namespace

// Polls until the service's tasks of the current spec all run (and the update, if any,
// completed), printing each task's progress; fails with the reason when the update pauses.
void wait_converged(ApiClient& api, const std::string& id, std::chrono::seconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    std::map<std::string, std::string> shown;  // slot -> last line
    for (;;) {
        auto svc = must(api.call("GET", "/services/" + id + "?insertDefaults=false"));
        auto tasks = must(
            api.call("GET", "/tasks?filters=" + net::percent_encode(json::serialize(json::object{
                                                    {"_up-to-date", json::object{{"true", true}}},
                                                    {"service", json::object{{id, true}}}}))));
        auto state = field(svc, {"UpdateStatus", "State"});
        if (state == "paused" || state == "rollback_paused")
            fail(make_error(Errc::conflict, field(svc, {"UpdateStatus", "Message"})));
        bool global = at(svc, {"Spec", "Mode", "Global"}) != nullptr;
        auto want = global ? 0 : number(svc, {"Spec", "Mode", "Replicated", "Replicas"});
        std::int64_t running = 0, desired = 0;
        for (const auto& t : tasks.as_array()) {
            if (field(t, {"DesiredState"}) != "running") continue;
            ++desired;
            auto st = field(t, {"Status", "State"});
            if (st == "running") ++running;
            auto key = global ? field(t, {"NodeID"}) : std::to_string(number(t, {"Slot"}));
            auto err = field(t, {"Status", "Err"});
            auto line = fmt::format("{}: {} {}", key, st,
                                    err.empty() ? field(t, {"Status", "Message"}) : err);
            if (shown[key] != line) {
                std::printf("%s\n", line.c_str());
                shown[key] = line;
            }
        }
        if (global) want = desired;
        bool settled = state.empty() || state == "completed" || state == "rollback_completed";
        if (running == want && desired == want && settled) {
            std::printf("overall progress: %lld out of %lld tasks\nverify: Service %s converged\n",
                        static_cast<long long>(running), static_cast<long long>(want), id.c_str());
            return;
        }
        if (std::chrono::steady_clock::now() > deadline)
            fail(make_error(
                Errc::unavailable,
                fmt::format("timed out waiting for service {} to converge ({} of {} tasks running)",
                            id, running, want)));
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
}

namespace {

// The answer's Warnings, on stderr, as the docker CLI prints them.
void print_warnings(const json::value& answer) {
    const auto* o = answer.if_object();
    const auto* w = o ? o->if_contains("Warnings") : nullptr;
    if (w == nullptr || !w->is_array()) return;
    for (const auto& line : w->get_array())
        if (line.is_string()) std::fprintf(stderr, "%s\n", line.get_string().c_str());
}

// --registry-auth-secret NAME: the spec's CofferRegistryAuth names the secret, looked up by name
// or ID; "" (update) sets it to null, removing the service's credentials.
void apply_registry_auth_secret(ApiClient& api, const RegistryFlags& f, const CLI::App* cmd,
                                json::object& spec) {
    if (!f.auth_secret_given(cmd)) return;
    std::optional<json::value> secret;
    if (!f.auth_secret.empty()) {
        auto found = api.call("GET", "/secrets/" + net::percent_encode(f.auth_secret));
        if (!found && found.error().code == Errc::not_found)
            fail(usage(fmt::format("secret not found: {}", f.auth_secret)));
        secret = must(std::move(found));
    }
    if (auto r = set_registry_auth(spec, secret ? &*secret : nullptr); !r) fail(r.error());
}

// POST path with the spec, and the X-Registry-Auth header when there is one; the header is wiped
// once sent.
json::value post_spec(ApiClient& api, const std::string& path, json::object spec,
                      std::optional<crypto::SecureBuffer>& auth) {
    json::value body(std::move(spec));
    if (!auth) return must(api.call("POST", path, body));
    auto r = api.call("POST", path, body, net::SecretHeader{"X-Registry-Auth", auth->span()});
    auth.reset();
    return must(std::move(r));
}

// service create [OPTIONS] IMAGE [COMMAND] [ARG...]
void add_service_create(CLI::App& service, Globals& g) {
    auto* cmd = service.add_subcommand("create", "Create a new service");
    struct Opts {
        std::string name, mode = "replicated";
        std::vector<std::string> secrets, configs, env, constraints, labels, placement_prefs,
            generic, mounts;
        std::vector<std::string> image_and_args;
        SpecFlags flags;
        RegistryFlags registry;
        WaitFlags wait;
    };
    auto o = std::make_shared<Opts>();
    cmd->add_option("--name", o->name, "Service name");
    one_value_per_flag(
        cmd->add_option("--secret", o->secrets, "Specify secrets to expose to the service"));
    one_value_per_flag(
        cmd->add_option("--config", o->configs, "Specify configurations to expose to the service"));
    cmd->add_option("--mode", o->mode, "Service mode (replicated or global)")
        ->check(CLI::IsMember({"replicated", "global"}));
    one_value_per_flag(cmd->add_option("-e,--env", o->env, "Set environment variables"));
    one_value_per_flag(cmd->add_option("--constraint", o->constraints, "Placement constraints"));
    one_value_per_flag(cmd->add_option("--placement-pref", o->placement_prefs,
                                       "Add a placement preference (spread=node.labels.<label>)"));
    one_value_per_flag(
        cmd->add_option("--generic-resource", o->generic, "User defined resources (NAME=COUNT)"));
    one_value_per_flag(cmd->add_option("-l,--label", o->labels, "Service labels"));
    one_value_per_flag(
        cmd->add_option("--mount", o->mounts, "Attach a filesystem mount to the service"));
    o->flags.add(cmd);
    o->registry.add(cmd, "always");
    o->wait.add(cmd);
    cmd->add_option("image", o->image_and_args, "IMAGE [COMMAND] [ARG...]")->required();
    cmd->positionals_at_end();
    cmd->callback([&g, o, cmd] {
        // The registry flags are checked, and the login state read, before any request.
        auto query = must(o->registry.query(cmd));
        auto auth = o->registry.with_registry_auth ? login_state_header(o->image_and_args[0])
                                                   : std::optional<crypto::SecureBuffer>();
        ApiClient api(g.host);
        json::object cs{{"Image", o->image_and_args[0]}};
        if (o->image_and_args.size() > 1)
            cs["Args"] = json::array(o->image_and_args.begin() + 1, o->image_and_args.end());
        if (!o->env.empty()) cs["Env"] = json::array(o->env.begin(), o->env.end());
        auto refs = must(secret_refs(api, o->secrets));
        if (!refs.empty()) cs["Secrets"] = std::move(refs);
        if (!o->mounts.empty()) {
            json::array mounts;
            for (const auto& m : o->mounts) mounts.push_back(must(parse_mount_opt(m)));
            cs["Mounts"] = std::move(mounts);
        }
        auto config_refs = must(secret_refs(api, o->configs, "config"));
        if (!config_refs.empty()) cs["Configs"] = std::move(config_refs);
        auto labels = labels_object(o->labels);
        json::object tt{{"ContainerSpec", std::move(cs)}, {"ForceUpdate", 0}};
        json::object placement;
        if (!o->constraints.empty())
            placement["Constraints"] = json::array(o->constraints.begin(), o->constraints.end());
        json::array prefs, generic;
        for (const auto& p : o->placement_prefs) prefs.push_back(must(parse_placement_pref(p)));
        for (const auto& res : o->generic) generic.push_back(must(parse_generic_resource_opt(res)));
        if (!prefs.empty()) placement["Preferences"] = std::move(prefs);
        if (!placement.empty()) tt["Placement"] = std::move(placement);
        if (!generic.empty())
            tt["Resources"] = json::object{
                {"Reservations", json::object{{"GenericResources", std::move(generic)}}}};
        json::object spec{
            {"Name", o->name}, {"Labels", std::move(labels)}, {"TaskTemplate", std::move(tt)}};
        if (o->mode == "global") {
            if (!o->flags.replicas.empty())
                fail(usage("replicas can only be used with replicated mode"));
            spec["Mode"] = json::object{{"Global", json::object{}}};
        } else {
            spec["Mode"] = json::object{{"Replicated", json::object{{"Replicas", 1}}}};
        }
        if (auto r = o->flags.apply(spec); !r) fail(r.error());
        // On create, "" names no secret: the service has none to remove.
        if (!o->registry.auth_secret.empty())
            apply_registry_auth_secret(api, o->registry, cmd, spec);
        auto r = post_spec(api, "/services/create?" + query, std::move(spec), auth);
        print_warnings(r);
        auto id = field(r, {"ID"});
        std::printf("%s\n", id.c_str());
        std::fflush(stdout);
        if (o->wait.wait(cmd)) wait_converged(api, id, std::chrono::seconds(o->wait.timeout));
    });
}

// service update [OPTIONS] SERVICE: the current spec changed by the flags, at its version.
void add_service_update(CLI::App& service, Globals& g) {
    auto* cmd = service.add_subcommand("update", "Update a service");
    struct Opts {
        std::string target, image;
        std::vector<std::string> secret_add, secret_rm, config_add, config_rm, env_add, env_rm;
        std::vector<std::string> pref_add, pref_rm, generic_add, generic_rm;
        std::vector<std::string> mount_add, mount_rm;
        bool force = false;
        SpecFlags flags;
        RegistryFlags registry;
        WaitFlags wait;
    };
    auto o = std::make_shared<Opts>();
    one_value_per_flag(
        cmd->add_option("--secret-add", o->secret_add, "Add or update a secret on a service"));
    one_value_per_flag(cmd->add_option("--secret-rm", o->secret_rm, "Remove a secret"));
    one_value_per_flag(
        cmd->add_option("--mount-add", o->mount_add, "Add or update a mount on a service"));
    one_value_per_flag(
        cmd->add_option("--mount-rm", o->mount_rm, "Remove a mount by its target path"));
    one_value_per_flag(
        cmd->add_option("--config-add", o->config_add, "Add or update a config file on a service"));
    one_value_per_flag(cmd->add_option("--config-rm", o->config_rm, "Remove a configuration file"));
    cmd->add_option("--image", o->image, "Service image tag");
    one_value_per_flag(
        cmd->add_option("--env-add", o->env_add, "Add or update an environment variable"));
    one_value_per_flag(cmd->add_option("--env-rm", o->env_rm, "Remove an environment variable"));
    cmd->add_flag("--force", o->force, "Force update even if no changes require it");
    one_value_per_flag(
        cmd->add_option("--placement-pref-add", o->pref_add, "Add a placement preference"));
    one_value_per_flag(
        cmd->add_option("--placement-pref-rm", o->pref_rm, "Remove a placement preference"));
    one_value_per_flag(cmd->add_option("--generic-resource-add", o->generic_add,
                                       "Add a Generic resource (NAME=COUNT)"));
    one_value_per_flag(cmd->add_option("--generic-resource-rm", o->generic_rm,
                                       "Remove a Generic resource (by NAME)"));
    o->flags.add(cmd);
    o->registry.add(cmd, "changed");
    o->wait.add(cmd);
    cmd->add_option("service", o->target, "SERVICE")->required();
    cmd->callback([&g, o, cmd] {
        auto query = must(o->registry.query(cmd));
        ApiClient api(g.host);
        auto svc = must(api.call(
            "GET", "/services/" + net::percent_encode(o->target) + "?insertDefaults=false"));
        auto id = field(svc, {"ID"});
        auto version = number(svc, {"Version", "Index"});
        auto spec = at(svc, {"Spec"}) && at(svc, {"Spec"})->is_object()
                        ? at(svc, {"Spec"})->as_object()
                        : json::object{};
        auto& tt = obj(spec, "TaskTemplate");
        auto& cs = obj(tt, "ContainerSpec");
        if (!o->image.empty()) cs["Image"] = o->image;
        // --secret-rm drops every reference to the name, then --secret-add appends.
        auto secrets = remove_secret_refs(cs.if_contains("Secrets"), o->secret_rm);
        for (auto& ref : must(secret_refs(api, o->secret_add))) secrets.push_back(std::move(ref));
        cs["Secrets"] = std::move(secrets);
        if (!o->mount_add.empty() || !o->mount_rm.empty()) {
            // --mount-rm drops by target, then --mount-add replaces a mount at the same target.
            std::vector<json::object> added;
            auto rm = o->mount_rm;
            for (const auto& m : o->mount_add) {
                added.push_back(must(parse_mount_opt(m)));
                rm.push_back(field(json::value(added.back()), {"Target"}));
            }
            auto mounts = remove_mounts(cs.if_contains("Mounts"), rm);
            for (auto& m : added) mounts.push_back(std::move(m));
            cs["Mounts"] = std::move(mounts);
        }
        if (!o->config_add.empty() || !o->config_rm.empty()) {
            auto configs =
                remove_secret_refs(cs.if_contains("Configs"), o->config_rm, "ConfigName");
            for (auto& ref : must(secret_refs(api, o->config_add, "config")))
                configs.push_back(std::move(ref));
            cs["Configs"] = std::move(configs);
        }
        if (!o->env_add.empty() || !o->env_rm.empty()) {
            std::vector<std::string> env;
            if (auto* cur = cs.if_contains("Env"); cur && cur->is_array())
                for (const auto& e : cur->as_array()) env.push_back(str(e));
            env = update_env(std::move(env), o->env_add, o->env_rm);
            cs["Env"] = json::array(env.begin(), env.end());
        }
        // As docker: -rm drops the preferences (spread=X) and resources (by name) given, -add
        // appends.
        if (!o->pref_add.empty() || !o->pref_rm.empty()) {
            json::array prefs;
            auto& placement = obj(tt, "Placement");
            if (auto* cur = placement.if_contains("Preferences"); cur && cur->is_array())
                for (const auto& p : cur->as_array()) {
                    auto text = "spread=" + field(p, {"Spread", "SpreadDescriptor"});
                    if (std::find(o->pref_rm.begin(), o->pref_rm.end(), text) == o->pref_rm.end())
                        prefs.push_back(p);
                }
            for (const auto& p : o->pref_add) prefs.push_back(must(parse_placement_pref(p)));
            placement["Preferences"] = std::move(prefs);
        }
        if (!o->generic_add.empty() || !o->generic_rm.empty()) {
            json::array generic;
            auto& reservations = obj(obj(tt, "Resources"), "Reservations");
            if (auto* cur = reservations.if_contains("GenericResources"); cur && cur->is_array())
                for (const auto& res : cur->as_array()) {
                    auto kind = field(res, {"DiscreteResourceSpec", "Kind"});
                    if (std::find(o->generic_rm.begin(), o->generic_rm.end(), kind) ==
                        o->generic_rm.end())
                        generic.push_back(res);
                }
            for (const auto& res : o->generic_add)
                generic.push_back(must(parse_generic_resource_opt(res)));
            reservations["GenericResources"] = std::move(generic);
        }
        if (o->force) tt["ForceUpdate"] = number(json::value(tt), {"ForceUpdate"}) + 1;
        if (auto r = o->flags.apply(spec); !r) fail(r.error());
        // Without --registry-auth-secret, CofferRegistryAuth goes back as the spec holds it.
        apply_registry_auth_secret(api, o->registry, cmd, spec);
        auto auth = o->registry.with_registry_auth
                        ? login_state_header(
                              field(json::value(spec), {"TaskTemplate", "ContainerSpec", "Image"}))
                        : std::optional<crypto::SecureBuffer>();
        print_warnings(
            post_spec(api, fmt::format("/services/{}/update?version={}&{}", id, version, query),
                      std::move(spec), auth));
        std::printf("%s\n", o->target.c_str());
        std::fflush(stdout);
        if (o->wait.wait(cmd)) wait_converged(api, id, std::chrono::seconds(o->wait.timeout));
    });
}

}  // namespace

const ListFormat service_list{
    "service ls",
    {{"ID", "ID"},
     {"Name", "NAME"},
     {"Mode", "MODE"},
     {"Replicas", "REPLICAS"},
     {"Image", "IMAGE"},
     {"Ports", "PORTS"}},
    "{{.ID}}\t{{.Name}}\t{{.Mode}}\t{{.Replicas}}\t{{.Image}}\t{{.Ports}}",
};

// The ingress ports, as the docker CLI shows them: "*:8080->80/tcp, *:30000->443/tcp".
std::string ingress_ports(const json::value& s) {
    std::string out;
    const auto* ports = at(s, {"Endpoint", "Ports"});
    if (ports == nullptr || !ports->is_array()) return out;
    for (const auto& p : ports->as_array()) {
        if (field(p, {"PublishMode"}) != "ingress") continue;
        out += fmt::format("{}*:{}->{}/{}", out.empty() ? "" : ", ", number(p, {"PublishedPort"}),
                           number(p, {"TargetPort"}), field(p, {"Protocol"}));
    }
    return out;
}

json::object service_row(const json::value& s) {
    bool global = at(s, {"Spec", "Mode", "Global"}) != nullptr;
    return {{"ID", truncate_id(field(s, {"ID"}))},
            {"Name", field(s, {"Spec", "Name"})},
            {"Mode", global ? "global" : "replicated"},
            {"Replicas", fmt::format("{}/{}", number(s, {"ServiceStatus", "RunningTasks"}),
                                     number(s, {"ServiceStatus", "DesiredTasks"}))},
            {"Image",
             image_without_digest(field(s, {"Spec", "TaskTemplate", "ContainerSpec", "Image"}))},
            {"Ports", ingress_ports(s)}};
}

namespace {

// service ls [-q] [-f k=v]... [--format FORMAT]
void add_service_ls(CLI::App& service, Globals& g) {
    auto* cmd = service.add_subcommand("ls", "List services");
    cmd->alias("list");
    auto flags = std::make_shared<ListFlags>();
    flags->add(cmd);
    cmd->callback([&g, flags] {
        ApiClient api(g.host);
        auto q = filters_query(flags->filters);
        auto list =
            must(api.call("GET", "/services" + (q.empty() ? "?status=true" : q + "&status=true")));
        auto items = list.as_array();
        std::sort(items.begin(), items.end(), [](const auto& a, const auto& b) {
            return field(a, {"Spec", "Name"}) < field(b, {"Spec", "Name"});
        });
        std::vector<json::object> rows;
        for (const auto& s : items) rows.push_back(service_row(s));
        flags->print(service_list, rows);
    });
}

}  // namespace

const ListFormat task_list{
    "service ps",
    {{"ID", "ID"},
     {"Name", "NAME"},
     {"Image", "IMAGE"},
     {"Node", "NODE"},
     {"DesiredState", "DESIRED STATE"},
     {"CurrentState", "CURRENT STATE"},
     {"Error", "ERROR"},
     {"Ports", "PORTS"}},
    "{{.ID}}\t{{.Name}}\t{{.Image}}\t{{.Node}}\t{{.DesiredState}}\t{{.CurrentState}}\t{{.Error}}\t{"
    "{.Ports}}",
};

std::string capitalized(std::string s) {
    if (!s.empty()) s[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(s[0])));
    return s;
}

// One task's row; `name` is its "service.slot" (or "service.node") name, already indented.
json::object task_row(const json::value& t, std::string name, const std::string& node, bool trunc) {
    auto id = field(t, {"ID"});
    auto image = field(t, {"Spec", "ContainerSpec", "Image"});
    auto err = field(t, {"Status", "Err"});
    // The docker CLI cuts an error to 30 characters, the last an ellipsis, and quotes it.
    constexpr std::size_t max_error = 30;
    if (trunc && err.size() > max_error) err = err.substr(0, max_error - 1) + "\u2026";
    if (!err.empty()) err = "\"" + err + "\"";
    auto ago = time_ago(field(t, {"Status", "Timestamp"}));
    if (!ago.empty()) ago[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(ago[0])));
    return {{"ID", trunc ? truncate_id(id) : id},
            {"Name", std::move(name)},
            {"Image", trunc ? image_without_digest(image) : image},
            {"Node", node},
            {"DesiredState", capitalized(field(t, {"DesiredState"}))},
            {"CurrentState", fmt::format("{} {}", capitalized(field(t, {"Status", "State"})), ago)},
            {"Error", err},
            // coffer publishes no ports.
            {"Ports", ""}};
}

namespace {

struct PsFlags : ListFlags {
    bool no_trunc = false, no_resolve = false;
};

// service ps [OPTIONS] SERVICE...: the services' tasks by name, each slot's (or node's) newest
// first.
void add_service_ps(CLI::App& service, Globals& g) {
    auto* cmd = service.add_subcommand("ps", "List the tasks of one or more services");
    auto names = std::make_shared<std::vector<std::string>>();
    auto flags = std::make_shared<PsFlags>();
    flags->add(cmd);
    cmd->add_flag("--no-trunc", flags->no_trunc, "Do not truncate output");
    cmd->add_flag("--no-resolve", flags->no_resolve, "Do not map IDs to Names");
    cmd->add_option("service", *names, "SERVICE")->required();
    cmd->callback([&g, names, flags] {
        ApiClient api(g.host);
        auto filters = filters_object(flags->filters);
        std::map<std::string, std::string> service_names;
        json::object wanted;
        for (const auto& name : *names) {
            auto svc = must(api.call(
                "GET", "/services/" + net::percent_encode(name) + "?insertDefaults=false"));
            auto id = field(svc, {"ID"});
            service_names[id] = field(svc, {"Spec", "Name"});
            wanted[id] = true;
        }
        filters["service"] = std::move(wanted);
        auto tasks =
            must(api.call("GET", "/tasks?filters=" + net::percent_encode(json::serialize(filters))))
                .as_array();
        std::map<std::string, std::string> hostnames;
        if (!flags->no_resolve) {
            auto nodes = must(api.call("GET", "/nodes"));
            for (const auto& n : nodes.as_array())
                hostnames[field(n, {"ID"})] = field(n, {"Description", "Hostname"});
        }
        auto task_name = [&](const json::value& t) {
            auto svc = field(t, {"ServiceID"});
            auto prefix = flags->no_resolve ? svc : service_names[svc];
            auto slot = number(t, {"Slot"});
            return slot ? fmt::format("{}.{}", prefix, slot)
                        : fmt::format("{}.{}", prefix, field(t, {"NodeID"}));
        };
        // As the docker CLI: by name (as text), then newest first.
        std::vector<std::pair<std::string, json::value>> named;
        for (auto& t : tasks) named.emplace_back(task_name(t), std::move(t));
        std::stable_sort(named.begin(), named.end(), [](const auto& a, const auto& b) {
            if (a.first != b.first) return a.first < b.first;
            return field(a.second, {"CreatedAt"}) > field(b.second, {"CreatedAt"});
        });
        // As the docker CLI: a table marks a slot's older tasks by indenting their names, and
        // -q prints whole IDs.
        auto format = flags->format.substr(flags->format.find_first_not_of(' ') == std::string::npos
                                               ? flags->format.size()
                                               : flags->format.find_first_not_of(' '));
        bool table = format.empty() || format.starts_with("table");
        bool trunc = !flags->no_trunc && !flags->quiet;
        std::vector<json::object> rows;
        std::string prev;
        for (const auto& [name, t] : named) {
            auto node_id = field(t, {"NodeID"});
            auto node =
                flags->no_resolve || !hostnames.count(node_id) ? node_id : hostnames[node_id];
            rows.push_back(task_row(t, table && name == prev ? " \\_ " + name : name, node, trunc));
            prev = name;
        }
        flags->print(task_list, rows);
    });
}

// service inspect [--pretty] SERVICE...
void add_service_inspect(CLI::App& service, Globals& g) {
    auto* cmd =
        service.add_subcommand("inspect", "Display detailed information on one or more services");
    auto names = std::make_shared<std::vector<std::string>>();
    auto pretty = std::make_shared<bool>(false);
    auto format = std::make_shared<std::string>();
    cmd->add_flag("--pretty", *pretty, "Print the information in a human friendly format");
    add_inspect_format(cmd, *format);
    cmd->add_option("service", *names, "SERVICE")->required();
    cmd->callback([&g, names, pretty, format] {
        ApiClient api(g.host);
        json::array found;
        int failed = 0;
        for (const auto& n : *names) {
            auto r =
                api.call("GET", "/services/" + net::percent_encode(n) + "?insertDefaults=true");
            if (r)
                found.push_back(std::move(*r));
            else
                failed = report(r.error());
        }
        if (!format->empty()) {
            auto out = format_inspect("service inspect", *format,
                                      std::vector<json::value>(found.begin(), found.end()));
            if (!out) fail(out.error());
            std::fputs(out->c_str(), stdout);
        } else if (!*pretty) {
            std::printf("%s\n", pretty_json(found).c_str());
        } else {
            for (const auto& s : found) {
                std::printf("\nID:\t\t%s\nName:\t\t%s\n", field(s, {"ID"}).c_str(),
                            field(s, {"Spec", "Name"}).c_str());
                if (at(s, {"Spec", "Mode", "Global"}))
                    std::printf("Service Mode:\tGlobal\n");
                else
                    std::printf("Service Mode:\tReplicated\n Replicas:\t%lld\n",
                                static_cast<long long>(
                                    number(s, {"Spec", "Mode", "Replicated", "Replicas"})));
                if (at(s, {"UpdateStatus"}))
                    std::printf("UpdateStatus:\n State:\t\t%s\n Message:\t%s\n",
                                field(s, {"UpdateStatus", "State"}).c_str(),
                                field(s, {"UpdateStatus", "Message"}).c_str());
                std::printf("ContainerSpec:\n Image:\t\t%s\n",
                            field(s, {"Spec", "TaskTemplate", "ContainerSpec", "Image"}).c_str());
                for (auto [list, name_key] :
                     {std::pair{"Secrets", "SecretName"}, std::pair{"Configs", "ConfigName"}}) {
                    auto* refs = at(s, {"Spec", "TaskTemplate", "ContainerSpec", list});
                    if (refs == nullptr || !refs->is_array()) continue;
                    std::printf("%s:\n", list);
                    for (const auto& ref : refs->as_array())
                        std::printf(" Target:\t%s\n  Source:\t%s\n",
                                    field(ref, {"File", "Name"}).c_str(),
                                    field(ref, {name_key}).c_str());
                }
                if (auto mem =
                        number(s, {"Spec", "TaskTemplate", "Resources", "Limits", "MemoryBytes"}))
                    std::printf("Resources:\n Limits:\n  Memory:\t%lldMiB\n",
                                static_cast<long long>(mem >> 20));
            }
        }
        if (failed) throw CLI::RuntimeError(1);
    });
}

// service rm SERVICE...
void add_service_rm(CLI::App& service, Globals& g) {
    auto* cmd = service.add_subcommand("rm", "Remove one or more services");
    cmd->alias("remove");
    auto names = std::make_shared<std::vector<std::string>>();
    cmd->add_option("service", *names, "SERVICE")->required();
    cmd->callback([&g, names] {
        ApiClient api(g.host);
        remove_all(api, "/services/", *names);
    });
}

// service scale SERVICE=REPLICAS...
void add_service_scale(CLI::App& service, Globals& g) {
    auto* cmd = service.add_subcommand("scale", "Scale one or multiple replicated services");
    auto pairs = std::make_shared<std::vector<std::string>>();
    cmd->add_option("service", *pairs, "SERVICE=REPLICAS")->required();
    cmd->callback([&g, pairs] {
        ApiClient api(g.host);
        int failed = 0;
        for (const auto& p : *pairs) {
            auto arg = parse_scale_arg(p);
            if (!arg) {
                failed = report(arg.error());
                continue;
            }
            const auto& name = arg->service;
            auto n = arg->replicas;
            auto svc =
                api.call("GET", "/services/" + net::percent_encode(name) + "?insertDefaults=false");
            if (!svc) {
                failed = report(svc.error());
                continue;
            }
            auto spec = at(*svc, {"Spec"})->as_object();
            if (at(*svc, {"Spec", "Mode", "Global"})) {
                failed = report(usage(fmt::format("scale can only be used with replicated mode")));
                continue;
            }
            obj(obj(spec, "Mode"), "Replicated")["Replicas"] = n;
            auto r = api.call("POST",
                              fmt::format("/services/{}/update?version={}", field(*svc, {"ID"}),
                                          number(*svc, {"Version", "Index"})),
                              json::value(std::move(spec)));
            if (r)
                std::printf("%s scaled to %lld\n", name.c_str(), n);
            else
                failed = report(r.error());
        }
        if (failed) throw CLI::RuntimeError(1);
    });
}

}  // namespace

void add_service_commands(CLI::App& app, Globals& g) {
    auto* service = app.add_subcommand("service", "Manage services");
    service->require_subcommand(1);

    add_service_create(*service, g);
    add_service_update(*service, g);
    add_service_ls(*service, g);
    add_service_ps(*service, g);
    add_service_inspect(*service, g);
    add_service_logs_command(*service, g);
    add_service_rm(*service, g);
    add_service_scale(*service, g);
}

}  // namespace coffer::cli
