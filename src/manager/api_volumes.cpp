#include "api_volumes.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>

#include "coffer/base/log.h"
#include "coffer/manager/cluster.h"
#include "coffer/model/filters.h"

namespace coffer::manager {

namespace json = boost::json;
using namespace std::chrono_literals;

namespace {

constexpr auto node_answer_timeout = 30s;

using NodeVolume = NodeTransport::NodeVolume;

// One entry per name: a name on several nodes is one volume in Docker's view of a local
// driver, with the nodes that hold it in its Status.
struct Merged {
    NodeVolume first;
    std::vector<std::string> nodes;
};

std::map<std::string, Merged> merged(const std::vector<NodeVolume>& all) {
    std::map<std::string, Merged> out;
    for (const auto& v : all) {
        auto it = out.try_emplace(v.name, Merged{v, {}}).first;
        it->second.nodes.push_back(v.node_id);
    }
    return out;
}

json::object volume_json(const Merged& m) {
    json::object labels;
    for (const auto& [k, v] : m.first.labels) labels[k] = v;
    json::array nodes(m.nodes.begin(), m.nodes.end());
    return json::object{{"Name", m.first.name},
                        {"Driver", "local"},
                        {"Mountpoint", m.first.mountpoint},
                        {"CreatedAt", m.first.created_at},
                        {"Labels", std::move(labels)},
                        {"Scope", "local"},
                        {"Options", json::object{}},
                        {"Status", json::object{{"Nodes", std::move(nodes)}}}};
}

// Tasks that are not over and mount the volume: they run, or are about to, on some node.
std::vector<std::string> users_of(Cluster& manager, std::string_view name) {
    std::vector<std::string> ids;
    for (const auto& t : manager.tasks().list()) {
        if (model::is_terminal(t.status.state)) continue;
        for (const auto& m : t.spec.container.mounts)
            if (m.type == model::MountType::volume && m.source == name) {
                ids.push_back(t.meta.id);
                break;
            }
    }
    std::sort(ids.begin(), ids.end());
    return ids;
}

net::Response no_such_volume(std::string_view name) {
    return fail(Errc::not_found, fmt::format("get {}: no such volume", name));
}

}  // namespace

std::optional<net::Response> volume_routes(Cluster& manager, net::Request& r, const Segments& seg) {
    if (seg.empty() || seg[0] != "volumes") return std::nullopt;
    const auto& m = r.method;
    if (seg.size() == 1 && m == "GET") {
        auto f = model::Filters::parse(r.param("filters"), {"name", "label", "driver"});
        if (!f) return net::Response::error(f.error());
        auto all = manager.node_transport().volumes();
        if (!all) return net::Response::error(all.error());
        json::array out;
        for (const auto& [name, v] : merged(*all)) {
            if (f->has("name") &&
                std::none_of(f->get("name").begin(), f->get("name").end(),
                             [&](const std::string& n) { return name.find(n) != name.npos; }))
                continue;
            if (!f->match_labels(v.first.labels) || !f->match_exact("driver", "local")) continue;
            out.push_back(volume_json(v));
        }
        return ok_json(200, json::object{{"Volumes", std::move(out)}, {"Warnings", json::array{}}});
    }
    if (seg.size() == 2 && seg[1] == "create" && m == "POST")
        return fail(Errc::invalid_argument,
                    "volumes are created on the nodes by the tasks that mount them: name the "
                    "volume in a service's mount (--mount type=volume,source=NAME,target=PATH)");
    if (seg.size() == 2 && seg[1] == "prune" && m == "POST")
        return fail(Errc::invalid_argument,
                    "volume prune is not supported: remove volumes by name (docker volume rm)");
    if (seg.size() == 2 && m == "GET") {
        auto all = manager.node_transport().volumes();
        if (!all) return net::Response::error(all.error());
        auto volumes = merged(*all);
        auto it = volumes.find(std::string(seg[1]));
        if (it == volumes.end()) return no_such_volume(seg[1]);
        return ok_json(200, volume_json(it->second));
    }
    return std::nullopt;
}

bool is_volume_remove_route(std::string_view method, const Segments& seg) {
    return method == "DELETE" && seg.size() == 2 && seg[0] == "volumes";
}

void volume_remove_async(Cluster& manager, const net::Request& r, const Segments& seg,
                         std::function<void(net::Response)> done) {
    std::string name(seg[1]);
    auto force = r.param("force");
    bool forced = force == "1" || force == "true" || force == "True";
    auto all = manager.node_transport().volumes();
    if (!all) return done(net::Response::error(all.error()));
    std::vector<std::string> nodes;
    for (const auto& v : *all)
        if (v.name == name) nodes.push_back(v.node_id);
    if (nodes.empty()) return done(forced ? net::Response::empty(204) : no_such_volume(name));
    if (auto users = users_of(manager, name); !users.empty()) {
        std::string ids;
        for (const auto& id : users) ids += (ids.empty() ? "" : " ") + id;
        return done(
            fail(Errc::conflict, fmt::format("remove {}: volume is in use - [{}]", name, ids)));
    }
    // Every node answers once; the last answer answers the request with the first refusal, if
    // any.
    struct Pending {
        std::mutex mu;
        std::size_t left = 0;
        std::optional<Error> error;
        std::function<void(net::Response)> done;
    };
    auto p = std::make_shared<Pending>();
    p->left = nodes.size();
    p->done = std::move(done);
    for (const auto& node : nodes)
        manager.node_transport().remove_volume(
            node, name, node_answer_timeout, [p, node, name](Result<void> res) {
                bool last;
                {
                    std::lock_guard g(p->mu);
                    if (!res && !p->error)
                        p->error = res.error().code == Errc::unavailable
                                       ? Error{Errc::unavailable,
                                               fmt::format("remove {} on node {}: {}", name, node,
                                                           res.error().message)}
                                       : res.error();
                    last = --p->left == 0;
                }
                if (!last) return;
                if (p->error) return p->done(net::Response::error(*p->error));
                log::info("api", "volume {} removed", name);
                p->done(net::Response::empty(204));
            });
}

}  // namespace coffer::manager
