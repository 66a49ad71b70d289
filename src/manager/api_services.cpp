// Services and tasks in the Docker Engine API's shapes, and distribution (api_images.h).
#include <algorithm>

#include "api_images.h"
#include "api_services.h"
#include "coffer/base/log.h"
#include "coffer/crypto/random.h"
#include "coffer/manager/cluster.h"
#include "coffer/model/filters.h"
#include "coffer/model/json.h"
#include "coffer/model/network.h"
#include "coffer/model/service_json.h"
#include "coffer/model/spec_fields.h"

namespace coffer::manager {

namespace json = boost::json;
using net::Request;
using net::Response;

namespace {

// "adjective_noun" from two short lists of our own, for services created without a name.
std::string generated_name() {
    static constexpr std::string_view adjectives[] = {
        "amber", "brisk",  "calm",  "deft",  "eager",  "fond", "gentle", "hardy", "keen",  "lucid",
        "merry", "nimble", "quiet", "rapid", "steady", "tidy", "vivid",  "witty", "young", "zesty"};
    static constexpr std::string_view nouns[] = {
        "anchor", "beacon", "cedar",   "delta",   "ember",   "falcon", "garnet",
        "harbor", "island", "juniper", "kestrel", "lantern", "meadow", "nebula",
        "orchid", "pebble", "quartz",  "raven",   "summit",  "tundra"};
    auto pick = [](auto& list) { return list[crypto::random_uniform(std::size(list))]; };
    return fmt::format("{}_{}", pick(adjectives), pick(nouns));
}

// The spec of a create or update request, checked field by field against what coffer does with
// each (model/spec_fields.h); warnings receives what the answer's Warnings must say.
Result<model::ServiceSpec> parse_spec(const Request& r, std::vector<std::string>& warnings,
                                      bool name_if_missing = false,
                                      RegistryStep* registry = nullptr,
                                      const model::Service* current = nullptr) {
    auto v = model::parse_json(r.body_view());
    if (!v)
        return make_error(Errc::invalid_argument, "malformed request body: " + v.error().message);
    auto checked = model::check_service_spec_fields(*v);
    if (!checked) return std::move(checked).error();
    warnings = std::move(*checked);
    if (name_if_missing && v->is_object()) {
        // As dockerd does: a service created without a name gets a generated one.
        auto& o = v->as_object();
        const auto* name = o.if_contains("Name");
        if (name == nullptr || name->is_null() || (name->is_string() && name->get_string().empty()))
            o["Name"] = generated_name();
    }
    if (registry != nullptr && v->is_object())
        if (auto ok = registry->apply(v->as_object(), current, warnings); !ok)
            return std::move(ok).error();
    return model::service_spec_from_json(*v);
}

// Docker's Warnings: null when there are none.
json::value warnings_json(const std::vector<std::string>& warnings) {
    if (warnings.empty()) return nullptr;
    json::array a;
    for (const auto& w : warnings) a.emplace_back(w);
    return a;
}

// A task as the API shows it: each NetworksAttachments[].Network in full (Swarm's shape).
json::object task_json(const model::Task& t, const std::vector<model::Network>& networks) {
    auto o = model::to_json(t);
    if (auto* list = o.if_contains("NetworksAttachments"); list && list->is_array())
        for (auto& a : list->as_array()) {
            auto& net = a.as_object()["Network"];
            auto id = net.as_object()["ID"].as_string();
            for (const auto& n : networks)
                if (n.meta.id == id) net = model::swarm_network_json(n);
        }
    return o;
}

bool truthy(std::string_view v) {
    return v == "1" || v == "true" || v == "True";
}

std::string task_name(const model::Task& t) {
    return t.slot ? fmt::format("{}.{}", t.service_name, t.slot)
                  : fmt::format("{}.{}", t.service_name, t.node_id);
}

json::object service_status(const model::Service& s, const std::vector<model::Task>& tasks,
                            const std::vector<model::Node>& nodes) {
    std::uint64_t running = 0, desired = 0, completed = 0;
    for (const auto& t : tasks) {
        if (t.service_id != s.meta.id) continue;
        auto n = std::find_if(nodes.begin(), nodes.end(),
                              [&](const auto& x) { return x.meta.id == t.node_id; });
        bool node_up = n != nodes.end() && n->state != model::NodeState::down;
        if (t.status.state == model::TaskState::running && node_up) ++running;
        if (t.status.state == model::TaskState::complete) ++completed;
        if (t.desired == model::TaskState::running && s.spec.mode == model::ServiceMode::global)
            ++desired;
    }
    if (s.spec.mode == model::ServiceMode::replicated) desired = s.spec.replicas;
    return json::object{
        {"RunningTasks", running}, {"DesiredTasks", desired}, {"CompletedTasks", completed}};
}

Response services_list(Cluster& m, const Request& r) {
    auto f = model::Filters::parse(r.param("filters"), {"id", "name", "label", "mode"});
    if (!f) return Response::error(f.error());
    bool with_status = truthy(r.param("status"));
    std::vector<model::Task> tasks;
    std::vector<model::Node> nodes;
    if (with_status) {
        tasks = m.tasks().list();
        nodes = m.nodes().list();
    }
    json::array out;
    for (const auto& s : m.services().list()) {
        auto mode = s.spec.mode == model::ServiceMode::global ? "global" : "replicated";
        if (!f->match_prefix("id", s.meta.id) || !f->match_prefix("name", s.spec.name) ||
            !f->match_labels(s.spec.labels) || !f->match_exact("mode", mode))
            continue;
        auto o = model::to_json(s);
        if (with_status) o["ServiceStatus"] = service_status(s, tasks, nodes);
        out.push_back(std::move(o));
    }
    return ok_json(200, out);
}

Response tasks_list(Cluster& m, const Request& r) {
    auto f = model::Filters::parse(r.param("filters"), {"id", "name", "service", "node", "label",
                                                        "desired-state", "_up-to-date"});
    if (!f) return Response::error(f.error());
    for (const auto& d : f->get("desired-state"))
        if (d != "running" && d != "shutdown" && d != "accepted" && d != "ready")
            return fail(Errc::invalid_argument,
                        fmt::format("Invalid desired-state filter: '{}'", d));
    auto services = m.services().list();
    auto nodes = m.nodes().list();
    // "service" and "node" name the object by ID, name or ID prefix: resolve to IDs first.
    std::set<std::string> service_ids, node_ids;
    for (const auto& key : f->get("service"))
        for (const auto& s : services)
            if (s.meta.id.starts_with(key) || s.spec.name == key) service_ids.insert(s.meta.id);
    for (const auto& key : f->get("node"))
        for (const auto& n : nodes)
            if (n.meta.id.starts_with(key) || n.description.hostname == key)
                node_ids.insert(n.meta.id);
    bool up_to_date = f->has("_up-to-date");
    auto networks = m.networks().list();
    json::array out;
    for (const auto& t : m.tasks().list()) {
        auto svc = std::find_if(services.begin(), services.end(),
                                [&](const auto& s) { return s.meta.id == t.service_id; });
        if (f->has("service") && !service_ids.count(t.service_id)) continue;
        if (f->has("node") && !node_ids.count(t.node_id)) continue;
        if (!f->match_prefix("id", t.meta.id) || !f->match_prefix("name", task_name(t))) continue;
        if (!f->match_exact("desired-state", model::to_string(t.desired))) continue;
        if (f->has("label") && (svc == services.end() || !f->match_labels(svc->spec.labels)))
            continue;
        if (up_to_date && (svc == services.end() || svc->spec.task.json != t.spec.json)) continue;
        out.push_back(task_json(t, networks));
    }
    return ok_json(200, out);
}

}  // namespace

std::optional<Response> orchestration_routes(Cluster& manager, Request& r, const Segments& seg) {
    const auto& m = r.method;
    auto n = seg.size();
    auto at = [&](std::size_t i) { return i < n ? seg[i] : std::string_view{}; };

    if (at(0) == "services") {
        auto& services = manager.services();
        if (n == 1 && m == "GET") return services_list(manager, r);
        if (n == 2 && at(1) == "create" && m == "POST") {
            std::vector<std::string> warnings;
            RegistryStep registry(manager, r);
            auto spec = parse_spec(r, warnings, true, &registry);
            if (!spec) {
                registry.undo();
                return Response::error(spec.error());
            }
            auto hold = manager.networks().hold_attachments();
            if (auto ok = resolve_service_networks(manager.networks(), *spec, warnings); !ok) {
                registry.undo();
                return Response::error(ok.error());
            }
            auto s = services.create(std::move(*spec));
            if (!s) {
                registry.undo();
                return Response::error(s.error());
            }
            log::info("api", "service {} created ({})", s->meta.id, s->spec.name);
            json::object answer{{"ID", s->meta.id}};
            if (!warnings.empty()) answer["Warnings"] = warnings_json(warnings);
            return ok_json(201, std::move(answer));
        }
        if (n == 2 && m == "GET") {
            auto s = services.find(at(1));
            if (!s) return Response::error(s.error());
            return ok_json(200, model::to_json(*s, truthy(r.param("insertDefaults"))));
        }
        if (n == 3 && at(2) == "update" && m == "POST") {
            auto version = version_param(r, "service");
            if (!version) return Response::error(version.error());
            auto rollback = r.param("rollback");
            if (!rollback.empty() && rollback != "previous")
                return fail(Errc::invalid_argument,
                            fmt::format("invalid rollback value '{}': only 'previous' is supported",
                                        rollback));
            // The body is checked as for any update; a rollback then takes PreviousSpec
            // instead, as Swarm does.
            std::vector<std::string> warnings;
            auto current = services.find(at(1));
            if (!current) return Response::error(current.error());
            // A rollback takes PreviousSpec with its own credentials and image.
            RegistryStep registry(manager, r);
            auto spec =
                parse_spec(r, warnings, false, rollback.empty() ? &registry : nullptr, &*current);
            if (!spec) {
                registry.undo();
                return Response::error(spec.error());
            }
            auto hold = manager.networks().hold_attachments();
            if (auto ok = resolve_service_networks(manager.networks(), *spec, warnings); !ok) {
                registry.undo();
                return Response::error(ok.error());
            }
            auto s = rollback.empty() ? services.update(at(1), *version, std::move(*spec))
                                      : services.roll_back(at(1), *version);
            if (!s) {
                registry.undo();
                return Response::error(s.error());
            }
            log::info("api", "service {} {}", s->meta.id,
                      rollback.empty() ? "updated" : "rollback started");
            return ok_json(200, json::object{{"Warnings", warnings_json(warnings)}});
        }
        if (n == 2 && m == "DELETE") {
            auto s = services.remove(at(1));
            if (!s) return Response::error(s.error());
            log::info("api", "service {} removed ({})", s->meta.id, s->spec.name);
            remove_registry_auth(manager, *s);
            auto resp = Response::empty(200);
            return resp;
        }
    }
    if (at(0) == "tasks") {
        if (n == 1 && m == "GET") return tasks_list(manager, r);
        if (n == 2 && m == "GET") {
            auto t = manager.tasks().find(at(1));
            if (!t) return Response::error(t.error());
            return ok_json(200, task_json(*t, manager.networks().list()));
        }
    }
    // The docker CLI asks for the image digest before it creates or updates a service.
    if (at(0) == "distribution" && n >= 3 && seg.back() == "json" && m == "GET") {
        std::string name;
        for (std::size_t i = 1; i + 1 < n; ++i) {
            if (i > 1) name += '/';
            name += seg[i];
        }
        return distribution_inspect(manager, r, name);
    }
    return std::nullopt;
}

}  // namespace coffer::manager
