#include "api_networks.h"

#include "coffer/base/log.h"
#include "coffer/manager/cluster.h"
#include "coffer/model/filters.h"
#include "coffer/model/json.h"
#include "coffer/model/network.h"

namespace coffer::manager {

namespace json = boost::json;
using net::Request;
using net::Response;

namespace {

// Docker matches these filters as patterns inside the value; coffer as substrings.
bool match_contains(const model::Filters& f, std::string_view key, std::string_view s) {
    const auto& values = f.get(key);
    if (values.empty()) return true;
    for (const auto& v : values)
        if (s.find(v) != std::string_view::npos) return true;
    return false;
}

Response list(Cluster& m, const Request& r) {
    auto f = model::Filters::parse(r.param("filters"),
                                   {"name", "id", "label", "driver", "scope", "type", "dangling"});
    if (!f) return Response::error(f.error());
    for (const auto& t : f->get("type"))
        if (t != "custom" && t != "builtin")
            return fail(Errc::invalid_argument, fmt::format("invalid filter 'type={}'", t));
    for (const auto& d : f->get("dangling"))
        if (d != "true" && d != "false" && d != "1" && d != "0")
            return fail(Errc::invalid_argument, fmt::format("invalid value for 'dangling': {}", d));
    std::vector<std::string> used;
    if (f->has("dangling"))
        for (const auto& s : m.services().list())
            for (const auto& n : model::service_networks(s.spec)) used.push_back(n.target);
    json::array out;
    for (const auto& n : m.networks().list()) {
        if (!match_contains(*f, "name", n.spec.name) || !match_contains(*f, "id", n.meta.id) ||
            !f->match_labels(n.spec.labels) || !f->match_exact("driver", n.spec.driver) ||
            !f->match_exact("scope", n.spec.scope) ||
            !f->match_exact("type", n.predefined() ? "builtin" : "custom"))
            continue;
        if (f->has("dangling")) {
            // Dangling: a custom network no service uses.
            bool dangling =
                !n.predefined() && std::find(used.begin(), used.end(), n.meta.id) == used.end();
            bool want = f->get("dangling").front() == "true" || f->get("dangling").front() == "1";
            if (dangling != want) continue;
        }
        out.push_back(model::to_json(n));
    }
    return ok_json(200, out);
}

Response create(Cluster& m, const Request& r) {
    auto v = model::parse_json(r.body_view());
    if (!v) return fail(Errc::invalid_argument, "malformed request body: " + v.error().message);
    std::vector<std::string> warnings;
    auto spec = model::network_spec_from_request(*v, warnings);
    if (!spec) return Response::error(spec.error());
    auto n = m.networks().create(std::move(*spec));
    if (!n) return Response::error(n.error());
    log::info("api", "network {} created ({}, {}, {})", n->meta.id, n->spec.name, n->spec.driver,
              n->subnet);
    std::string warning;
    for (const auto& w : warnings) warning += (warning.empty() ? "" : "; ") + w;
    return ok_json(201, json::object{{"Id", n->meta.id}, {"Warning", warning}});
}

Response prune(Cluster& m, const Request& r) {
    auto f = model::Filters::parse(r.param("filters"), {"label"});
    if (!f) return Response::error(f.error());
    json::array deleted;
    for (const auto& n : m.networks().list()) {
        if (n.predefined() || !f->match_labels(n.spec.labels)) continue;
        // In use (or taken by a service meanwhile): kept, as Docker keeps it.
        auto removed = m.networks().remove(n.meta.id);
        if (!removed) continue;
        log::info("api", "network {} removed ({}) by prune", n.meta.id, n.spec.name);
        deleted.emplace_back(n.spec.name);
    }
    return ok_json(200, json::object{{"NetworksDeleted", std::move(deleted)}});
}

}  // namespace

std::optional<Response> network_routes(Cluster& manager, Request& r, const Segments& seg) {
    const auto& m = r.method;
    auto n = seg.size();
    if (n == 0 || seg[0] != "networks") return std::nullopt;
    if (n == 1 && m == "GET") return list(manager, r);
    if (n == 2 && seg[1] == "create" && m == "POST") return create(manager, r);
    if (n == 2 && seg[1] == "prune" && m == "POST") return prune(manager, r);
    if (n == 2 && m == "GET") {
        auto verbose = r.param("verbose");
        if (verbose == "true" || verbose == "1")
            return fail(Errc::invalid_argument,
                        "verbose network inspection is not supported: the network's services "
                        "and tasks are shown by docker service inspect and docker service ps");
        auto found = manager.networks().find(seg[1]);
        if (!found) return Response::error(found.error());
        // Every coffer network is a cluster object: scope swarm finds any of them (the docker
        // CLI asks so for `service create --network host`); scope local only the host network.
        auto scope = r.param("scope");
        if (!scope.empty() && scope != "swarm" && scope != found->spec.scope)
            return fail(Errc::not_found, fmt::format("network {} not found", seg[1]));
        return ok_json(200, model::to_json(*found));
    }
    if (n == 2 && m == "DELETE") {
        auto removed = manager.networks().remove(seg[1]);
        if (!removed) return Response::error(removed.error());
        log::info("api", "network {} removed ({})", removed->meta.id, removed->spec.name);
        return Response::empty(204);
    }
    return std::nullopt;
}

}  // namespace coffer::manager
