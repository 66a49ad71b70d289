#include "coffer/manager/api.h"

#include <boost/json.hpp>

#include <charconv>
#include <chrono>
#include <mutex>

#include "api_cluster.h"
#include "api_logs.h"
#include "api_networks.h"
#include "api_nodes.h"
#include "api_routes.h"
#include "api_services.h"
#include "api_util.h"
#include "api_volumes.h"
#include "coffer/base/log.h"
#include "coffer/crypto/encoding.h"
#include "coffer/manager/cluster.h"
#include "coffer/model/json.h"
#include "coffer/model/secure_json.h"
#include "unlock_gate.h"

namespace coffer::manager {

namespace json = boost::json;
using net::Request;
using net::Response;

namespace {

std::vector<std::string_view> split_path(std::string_view path) {
    std::vector<std::string_view> out;
    while (!path.empty()) {
        auto start = path.find_first_not_of('/');
        if (start == std::string_view::npos) break;
        path.remove_prefix(start);
        auto end = path.find('/');
        out.push_back(path.substr(0, end));
        path = end == std::string_view::npos ? std::string_view{} : path.substr(end);
    }
    return out;
}

// "1.41" -> 141; nullopt if malformed.
std::optional<int> parse_version(std::string_view v) {
    auto dot = v.find('.');
    if (dot == std::string_view::npos) return std::nullopt;
    int major = 0, minor = 0;
    auto a = std::from_chars(v.data(), v.data() + dot, major);
    auto b = std::from_chars(v.data() + dot + 1, v.data() + v.size(), minor);
    if (a.ec != std::errc{} || a.ptr != v.data() + dot || b.ec != std::errc{} ||
        b.ptr != v.data() + v.size() || minor > 99)
        return std::nullopt;
    return major * 100 + minor;
}

}  // namespace

Result<std::vector<std::string_view>> route_of(const Request& r) {
    auto seg = split_path(r.path);
    if (seg.empty() || seg[0].size() < 2 || seg[0][0] != 'v') return seg;
    auto v = parse_version(seg[0].substr(1));
    if (!v) return seg;  // not a version prefix ("/version")
    if (*v > *parse_version(api_version))
        return make_error(
            Errc::invalid_argument,
            fmt::format("client version {} is too new. Maximum supported API version is {}",
                        seg[0].substr(1), api_version));
    if (*v < *parse_version(min_api_version))
        return make_error(
            Errc::invalid_argument,
            fmt::format("client version {} is too old. Minimum supported API version is "
                        "{}, please upgrade your client to a newer version",
                        seg[0].substr(1), min_api_version));
    seg.erase(seg.begin());
    return seg;
}

namespace {

// POST /secrets/create or /configs/create: the route's collection ("secrets", "configs"), else
// empty.
std::string_view data_create_route(const Request& r) {
    if (r.method != "POST") return {};
    auto seg = route_of(r);
    if (!seg || seg->size() != 2 || (*seg)[1] != "create") return {};
    if ((*seg)[0] == "secrets") return "secrets";
    if ((*seg)[0] == "configs") return "configs";
    return {};
}

bool is_logs(const Request& r) {
    auto seg = route_of(r);
    return seg && is_logs_route(r.method, *seg);
}

bool is_volume_remove(const Request& r) {
    auto seg = route_of(r);
    return seg && is_volume_remove_route(r.method, *seg);
}

Error locked_error() {
    return make_error(Errc::locked,
                      "coffer is locked and needs to be unlocked before it can be used: run "
                      "\"coffer cluster unlock\" (or \"docker swarm unlock\") with the unlock key");
}

// A secret or config spec from a create/update body: Name, Labels, optional Data (base64).
struct DataBody {
    model::SecretSpec spec;
    std::optional<crypto::SecureBuffer> data;
};

Result<DataBody> parse_data_body(const Request& r, std::string_view kind) {
    auto parsed = parse_body(r);
    if (!parsed) return std::move(parsed).error();
    const auto& o = parsed->value().as_object();
    DataBody out;
    auto* name = o.if_contains("Name");
    if (name != nullptr && !name->is_null()) {
        if (!name->is_string())
            return make_error(Errc::invalid_argument, "field Name must be a string");
        out.spec.name = std::string(name->as_string());
    }
    auto labels = model::labels_from_json(o.if_contains("Labels"), "Labels");
    if (!labels) return std::move(labels).error();
    out.spec.labels = std::move(*labels);
    if (auto* driver = o.if_contains("Driver"); driver && !driver->is_null())
        return make_error(Errc::invalid_argument,
                          fmt::format("{} drivers are not supported", kind));
    if (auto* tmpl = o.if_contains("Templating"); tmpl && !tmpl->is_null())
        return make_error(Errc::invalid_argument,
                          fmt::format("{} templating is not supported", kind));
    if (auto* data = o.if_contains("Data"); data && !data->is_null()) {
        if (!data->is_string())
            return make_error(Errc::invalid_argument, "field Data must be a base64 string");
        const auto& text = data->as_string();
        auto bytes = crypto::base64_decode_secure({text.data(), text.size()});
        if (!bytes) return make_error(Errc::invalid_argument, "field Data is not valid base64");
        out.data = std::move(*bytes);
    }
    return out;
}

// POST /<kind>s/create, answered once the object is durable. Without Data the registry refuses
// it with the kind's size message.
template <typename Object>
void create_async(DataObjectRegistry<Object>& registry, std::string_view kind, const Request& r,
                  std::function<void(Response)> done) {
    auto body = parse_data_body(r, kind);
    if (!body) return done(Response::error(body.error()));
    registry.create(std::move(body->spec),
                    body->data ? std::move(*body->data) : crypto::SecureBuffer(),
                    [kind, done = std::move(done)](Result<Object> o) {
                        if (!o) return done(Response::error(o.error()));
                        log::debug("api", "{} {} created ({})", kind, o->meta.id, o->spec.name);
                        done(ok_json(201, json::object{{"ID", o->meta.id}}));
                    });
}

// GET /<kind>s, GET|DELETE /<kind>s/{id}, POST /<kind>s/{id}/update: the same rules for secrets
// and configs (a config's answers carry its Data, as Docker's do).
template <typename Object>
std::optional<Response> data_object_routes(DataObjectRegistry<Object>& registry,
                                           std::string_view collection, std::string_view kind,
                                           Request& r, const std::vector<std::string_view>& seg) {
    if (seg.empty() || seg[0] != collection) return std::nullopt;
    const auto& m = r.method;
    if (seg.size() == 1 && m == "GET") {
        auto f = model::Filters::parse(r.param("filters"), {"id", "name", "names", "label"});
        if (!f) return Response::error(f.error());
        // Every entry in one arena, given back at once: a list of thousands is otherwise
        // mostly allocation and release.
        auto items = registry.list(*f);
        json::storage_ptr arena = json::make_shared_resource<json::monotonic_resource>();
        json::array out(arena);
        out.reserve(items.size());
        for (const auto& o : items) out.push_back(model::to_json(o, arena));
        return ok_json(200, out);
    }
    if (seg.size() == 2 && m == "GET") {
        auto o = registry.find(seg[1]);
        return o ? ok_json(200, model::to_json(*o)) : Response::error(o.error());
    }
    if (seg.size() == 3 && seg[2] == "update" && m == "POST") {
        auto version = version_param(r, kind);
        if (!version) return Response::error(version.error());
        auto body = parse_data_body(r, kind);
        if (!body) return Response::error(body.error());
        auto o = registry.update(seg[1], *version, std::move(body->spec),
                                 body->data ? &*body->data : nullptr);
        if (!o) return Response::error(o.error());
        log::info("api", "{} {} updated", kind, o->meta.id);
        return Response::empty(200);
    }
    if (seg.size() == 2 && m == "DELETE") {
        auto o = registry.remove(seg[1]);
        if (!o) return Response::error(o.error());
        log::info("api", "{} {} removed ({})", kind, o->meta.id, o->spec.name);
        return Response::empty(204);
    }
    return std::nullopt;
}

// A whole number >= 1 from a query parameter.
std::optional<std::uint64_t> positive_param(std::string_view text) {
    std::uint64_t n = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
    if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || n == 0)
        return std::nullopt;
    return n;
}

// coffer's secret versions, beside Docker's routes for the same object (found by ID, name or ID
// prefix as they are): GET /secrets/{id} adds how many tasks hold each version;
// POST /secrets/{id}/rotate ({"Data": base64}; ?onlyIfDifferent=true) adds a version and makes
// it current; POST /secrets/{id}/rollback[?to=N] makes an earlier one current again;
// GET /secrets/{id}/history is its delivery record.
std::optional<Response> secret_version_routes(Cluster& cluster, Request& r,
                                              const std::vector<std::string_view>& seg) {
    auto& secrets = *cluster.secrets();
    if (seg.size() < 2 || seg.size() > 3 || seg[0] != "secrets") return std::nullopt;
    if (seg.size() == 2 && r.method == "GET") {
        auto o = secrets.find(seg[1]);
        if (!o) return Response::error(o.error());
        auto out = model::to_json(*o);
        auto held = secrets.holders(o->meta.id);
        if (auto* versions = out.if_contains("CofferVersions"))
            for (auto& v : versions->as_array()) {
                auto& entry = v.as_object();
                auto it = held.find(entry["Version"].to_number<std::uint64_t>());
                entry["Tasks"] = it == held.end() ? std::size_t{0} : it->second;
            }
        return ok_json(200, out);
    }
    if (seg.size() == 3 && seg[2] == "history" && r.method == "GET") {
        auto o = secrets.find(seg[1]);
        if (!o) return Response::error(o.error());
        json::array out;
        for (const auto& d : cluster.deliveries().of(o->meta.id)) {
            json::object e{{"Version", d.version},
                           {"TaskID", d.task_id},
                           {"ServiceID", d.service_id},
                           {"NodeID", d.node_id},
                           {"SentAt", model::format_rfc3339(d.sent)}};
            if (d.mounted) e["MountedAt"] = model::format_rfc3339(*d.mounted);
            if (d.removed) e["RemovedAt"] = model::format_rfc3339(*d.removed);
            // Counted by FUSE mounts only: absent where the task's mount counts nothing.
            if (d.reads_counted) e["Reads"] = d.reads;
            if (d.first_read) e["FirstReadAt"] = model::format_rfc3339(*d.first_read);
            if (d.last_read) e["LastReadAt"] = model::format_rfc3339(*d.last_read);
            out.push_back(std::move(e));
        }
        return ok_json(200, out);
    }
    if (seg.size() != 3 || r.method != "POST") return std::nullopt;
    auto answer = [&](const model::Secret& s, bool changed) {
        // The services following it act on the new current version (restart, live, ...).
        if (changed) cluster.orchestrator().wake();
        // Versions beyond those kept that no task holds go now (the others once released).
        if (auto wiped = secrets.prune(s.meta.id); !wiped && wiped.error().code != Errc::conflict)
            log::warn("api", "secret {}: {}", s.meta.id, wiped.error().message);
        return ok_json(
            200, json::object{{"ID", s.meta.id}, {"Version", s.current}, {"Changed", changed}});
    };
    if (seg[2] == "rotate") {
        auto parsed = parse_body(r);
        if (!parsed) return Response::error(parsed.error());
        const auto& o = parsed->value().as_object();
        for (const auto& [key, value] : o)
            if (key != "Data")
                return fail(Errc::invalid_argument,
                            fmt::format("field {} cannot be given to a rotation: it takes Data "
                                        "only (labels change with update)",
                                        std::string_view(key)));
        auto* data = o.if_contains("Data");
        if (data == nullptr || !data->is_string())
            return fail(Errc::invalid_argument, "field Data must be a base64 string");
        const auto& text = data->as_string();
        auto bytes = crypto::base64_decode_secure({text.data(), text.size()});
        if (!bytes) return fail(Errc::invalid_argument, "field Data is not valid base64");
        auto flag = r.param("onlyIfDifferent");
        if (!flag.empty() && flag != "true" && flag != "false" && flag != "1" && flag != "0")
            return fail(Errc::invalid_argument, "onlyIfDifferent must be true or false");
        auto rotated = secrets.rotate(seg[1], std::move(*bytes), flag == "true" || flag == "1");
        if (!rotated) return Response::error(rotated.error());
        if (rotated->changed)
            log::info("api", "secret {} rotated to version {}", rotated->object.meta.id,
                      rotated->object.current);
        return answer(rotated->object, rotated->changed);
    }
    if (seg[2] == "rollback") {
        std::optional<std::uint64_t> to;
        if (auto text = r.param("to"); !text.empty()) {
            to = positive_param(text);
            if (!to) return fail(Errc::invalid_argument, "to must be a version number (1 or more)");
        }
        auto before = secrets.find(seg[1]);
        if (!before) return Response::error(before.error());
        auto s = secrets.rollback(seg[1], to);
        if (!s) return Response::error(s.error());
        if (s->current != before->current)
            log::info("api", "secret {} rolled back to version {}", s->meta.id, s->current);
        return answer(*s, s->current != before->current);
    }
    return std::nullopt;
}

std::string route_text(const std::vector<std::string_view>& seg) {
    std::string path;
    for (auto s : seg) path += fmt::format("/{}", s);
    return path.empty() ? "/" : path;
}

// A Docker Engine API path cofferd does not serve: what coffer does instead, so that the docker
// CLI prints why (never a bare "page not found"); 404 for a path of no kind named here.
Response unserved(std::string_view method, const std::vector<std::string_view>& seg) {
    auto first = seg.empty() ? std::string_view{} : seg[0];
    auto second = seg.size() > 1 ? seg[1] : std::string_view{};
    std::string why;
    if (first == "containers" || first == "exec" || first == "commit")
        why =
            "cofferd runs no containers: run workloads as services (docker service create), "
            "whose tasks run on the agents; read their output with docker service logs";
    else if (first == "images" || first == "build")
        why =
            "cofferd keeps no images: each agent pulls the images its tasks need into its own "
            "store";
    else if (first == "auth")
        why =
            "cofferd does not check registry logins: keep the credentials in the docker CLI's "
            "config.json and pass them with --with-registry-auth, or give the service a coffer "
            "secret holding a config.json (coffer service create --registry-auth-secret)";
    else if (first == "volumes")
        why = "volumes are made on the nodes by the tasks that mount them";
    else if (first == "plugins")
        why = "cofferd has no plugins";
    else if (first == "system" && second == "df")
        why =
            "cofferd keeps no containers, images or volumes to count: see docker service ls "
            "and docker node ls";
    else if (first == "swarm" && (second == "init" || second == "join"))
        why =
            "the swarm is managed by cofferd, which created the cluster when it first started; "
            "use `coffer-agent join` to add a node";
    else if (first == "swarm" && second == "leave")
        why =
            "cofferd is the cluster's manager and cannot leave it; remove an agent with "
            "docker node rm";
    else if (first == "networks")
        why =
            "cofferd runs no containers to connect: attach a service to a network with docker "
            "service update --network-add";
    else if (first == "events")
        why = "cofferd does not stream events";
    else
        // No Docker Engine API path at all, or one of a kind this list does not name.
        return Response::json(
            404,
            model::error_body(fmt::format(
                "coffer: {} {} is not a path cofferd serves: it serves the Docker Engine "
                "API's cluster part (swarm, nodes, services, tasks, secrets, configs, networks, "
                "volumes)",
                method, route_text(seg))));
    // Looking up one object of a kind cofferd has none of finds nothing (404): `docker inspect X`
    // asks every kind in turn and goes on after a 404 only. Anything else is 501.
    bool lookup =
        method == "GET" && (((first == "containers" || first == "images" || first == "plugins") &&
                             seg.size() >= 3 && seg.back() == "json") ||
                            ((first == "networks" || first == "volumes") && seg.size() == 2));
    return Response::json(lookup ? 404 : 501,
                          model::error_body(fmt::format("coffer: {} {} is not served: {}", method,
                                                        route_text(seg), why)));
}

}  // namespace

std::vector<std::pair<std::string, std::string>> api_headers() {
    return {{"Api-Version", api_version},
            {"Docker-Experimental", "false"},
            {"Ostype", "linux"},
            {"Server", "coffer/" COFFER_VERSION},
            {"Cache-Control", "no-cache, no-store, must-revalidate"},
            {"Pragma", "no-cache"}};
}

Api::Api(Cluster& manager) : manager_(manager), unlock_gate_(std::make_unique<UnlockGate>()) {}

Api::~Api() = default;

Response Api::unlock(Request& r) {
    return unlock_gate_->attempt(
        r, [&] { return manager_.locked(); },
        [&](std::string_view key) { return manager_.unlock(key); });
}

bool Api::blocking(const Request& r) const {
    // A backup reads the whole store: a worker's job, never an I/O thread's.
    if (r.method != "GET" && r.method != "HEAD") return true;
    auto seg = route_of(r);
    return seg && seg->size() == 2 && (*seg)[0] == "cluster" && (*seg)[1] == "backup";
}

bool Api::asynchronous(const Request& r) const {
    return !data_create_route(r).empty() || is_logs(r) || is_volume_remove(r);
}

namespace {

std::size_t request_route(const Request& r) {
    auto seg = route_of(r);
    return seg ? route_index(r.method, *seg) : unrouted_index(r.method);
}

std::chrono::steady_clock::time_point arrival(const Request& r) {
    return r.received == std::chrono::steady_clock::time_point{} ? std::chrono::steady_clock::now()
                                                                 : r.received;
}

}  // namespace

Response Api::handle(Request& r) {
    auto start = arrival(r);
    auto resp = serve(r);
    record_request(request_route(r), resp.status, start);
    return resp;
}

void Api::handle_async(Request& r, std::function<void(Response)> done) {
    serve_async(
        r, [index = request_route(r), start = arrival(r), done = std::move(done)](Response resp) {
            record_request(index, resp.status, start);
            done(std::move(resp));
        });
}

void Api::serve_async(Request& r, std::function<void(Response)> done) {
    if (auto held = manager_.store().writable(); !held) return done(Response::error(held.error()));
    if (is_logs(r)) {
        if (manager_.locked()) return done(Response::error(locked_error()));
        return logs_async(manager_, r, *route_of(r), std::move(done));
    }
    if (is_volume_remove(r)) {
        if (manager_.locked()) return done(Response::error(locked_error()));
        return volume_remove_async(manager_, r, *route_of(r), std::move(done));
    }
    auto collection = data_create_route(r);
    if (collection.empty()) return done(serve(r));
    if (manager_.locked()) return done(Response::error(locked_error()));
    if (collection == "secrets")
        return create_async(*manager_.secrets(), "secret", r, std::move(done));
    create_async(manager_.configs(), "config", r, std::move(done));
}

Response Api::serve(Request& r) {
    auto route = route_of(r);
    if (!route) return Response::error(route.error());
    auto& seg = *route;
    const auto& m = r.method;
    auto is = [&](std::initializer_list<std::string_view> want) {
        if (want.size() != seg.size()) return false;
        std::size_t i = 0;
        for (auto w : want) {
            if (w != "*" && w != seg[i]) return false;
            ++i;
        }
        return true;
    };

    // Answered even while locked.
    if (is({"_ping"}) && (m == "GET" || m == "HEAD")) {
        Response resp = Response::json(200, m == "HEAD" ? "" : "OK");
        resp.content_type = "text/plain; charset=utf-8";
        resp.headers.emplace_back("Swarm", manager_.locked() ? "locked" : "active/manager");
        return resp;
    }
    if (is({"version"}) && m == "GET") {
        return ok_json(200, json::object{{"Version", COFFER_VERSION},
                                         {"ApiVersion", api_version},
                                         {"MinAPIVersion", min_api_version},
                                         {"Os", "linux"},
                                         {"Arch", "amd64"},
                                         {"KernelVersion", kernel_version()},
                                         {"Components",
                                          json::array{json::object{{"Name", "coffer"},
                                                                   {"Version", COFFER_VERSION},
                                                                   {"Details", json::object{}}}}}});
    }
    // A manager that lost its store (on etcd: another manager leads now) serves nothing from
    // its memory, which no longer follows the store: no stale answer, only the reason.
    if (auto held = manager_.store().writable(); !held) return Response::error(held.error());
    if (is({"swarm", "unlock"}) && m == "POST") return unlock(r);
    if (is({"info"}) && m == "GET") return cluster_info(manager_);
    if (manager_.locked()) return Response::error(locked_error());

    if (auto resp = secret_version_routes(manager_, r, seg)) return std::move(*resp);
    if (auto resp = data_object_routes(*manager_.secrets(), "secrets", "secret", r, seg))
        return std::move(*resp);
    if (auto resp = data_object_routes(manager_.configs(), "configs", "config", r, seg))
        return std::move(*resp);

    if (auto cluster = cluster_routes(manager_, r, seg)) return std::move(*cluster);
    if (auto resp = orchestration_routes(manager_, r, seg)) return std::move(*resp);
    if (auto resp = volume_routes(manager_, r, seg)) return std::move(*resp);
    if (auto resp = network_routes(manager_, r, seg)) return std::move(*resp);
    if (auto resp = node_routes(manager_, r, seg)) return std::move(*resp);

    return unserved(m, seg);
}

}  // namespace coffer::manager
