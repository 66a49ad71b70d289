// /nodes: the agents from the node registry, and cofferd's own entry in front of them.
#include "api_nodes.h"

#include <ifaddrs.h>
#include <netinet/in.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <arpa/inet.h>

#include "coffer/base/log.h"
#include "coffer/manager/cluster.h"
#include "coffer/model/filters.h"
#include "coffer/model/json.h"
#include "coffer/model/service_json.h"

namespace coffer::manager {

namespace json = boost::json;
using net::Request;
using net::Response;

namespace {

bool truthy(std::string_view v) {
    return v == "1" || v == "true" || v == "True";
}

// The first non-loopback IPv4 address of the machine, else 127.0.0.1.
std::string machine_ipv4() {
    ifaddrs* list = nullptr;
    if (::getifaddrs(&list) != 0) return "127.0.0.1";
    std::string found;
    for (auto* a = list; a != nullptr && found.empty(); a = a->ifa_next) {
        if (a->ifa_addr == nullptr || a->ifa_addr->sa_family != AF_INET) continue;
        const auto* in = reinterpret_cast<const sockaddr_in*>(a->ifa_addr);
        if ((ntohl(in->sin_addr.s_addr) >> 24) == 127) continue;
        char text[INET_ADDRSTRLEN] = {};
        if (::inet_ntop(AF_INET, &in->sin_addr, text, sizeof text)) found = text;
    }
    ::freeifaddrs(list);
    return found.empty() ? "127.0.0.1" : found;
}

std::string host_of(const std::string& address) {
    auto colon = address.rfind(':');
    return colon == std::string::npos ? address : address.substr(0, colon);
}

// Docker resolves full ID, then name, then unique ID prefix: the agents' full IDs and names
// come first (an agent on cofferd's machine has its hostname), then the managers'.
std::optional<ManagerEntry> find_manager(Cluster& m, std::string_view key) {
    if (key.empty()) return std::nullopt;
    auto all = manager_entries(m);
    for (auto& e : all)
        if (e.node.meta.id == key) return std::move(e);
    if (m.nodes().find(key)) return std::nullopt;
    for (auto& e : all)
        if (e.node.description.hostname == key) return std::move(e);
    std::optional<ManagerEntry> found;
    for (auto& e : all)
        if (e.node.meta.id.starts_with(key)) {
            if (found) return std::nullopt;  // ambiguous: the registry's lookup says so
            found = std::move(e);
        }
    return found;
}

json::object entry_json(const ManagerEntry& e) {
    auto o = model::to_json(e.node);
    o["ManagerStatus"] = json::object{{"Leader", e.leader},
                                      {"Reachability", e.reachable ? "reachable" : "unreachable"},
                                      {"Addr", e.addr}};
    return o;
}

Response nodes_list(Cluster& m, const Request& r) {
    auto f = model::Filters::parse(r.param("filters"),
                                   {"id", "name", "role", "membership", "label", "node.label"});
    if (!f) return Response::error(f.error());
    auto keep = [&](const model::Node& n) {
        return f->match_prefix("id", n.meta.id) &&
               f->match_prefix("name", n.description.hostname) &&
               f->match_exact("role", model::to_string(n.spec.role)) &&
               f->match_exact("membership", "accepted") && f->match_labels(n.spec.labels);
    };
    json::array out;
    for (const auto& e : manager_entries(m))
        if (keep(e.node)) out.push_back(entry_json(e));
    for (const auto& n : m.nodes().list())
        if (keep(n)) out.push_back(model::to_json(n));
    return ok_json(200, out);
}

// What may be asked of the manager's entry: nothing but what it is.
Response update_manager(Cluster& m, const Request& r) {
    auto version = version_param(r, "node");
    if (!version) return Response::error(version.error());
    auto v = model::parse_json(r.body_view());
    if (!v) return fail(Errc::invalid_argument, "malformed request body: " + v.error().message);
    auto spec = model::node_spec_from_json(*v);
    if (!spec) return Response::error(spec.error());
    auto self = manager_node(m);
    if (*version != self.meta.version) return fail(Errc::conflict, "update out of sequence");
    if (spec->role != model::NodeRole::manager)
        return fail(
            Errc::invalid_argument,
            "node " + self.meta.id + " is cofferd, the cluster's manager: its role cannot change");
    if (spec->availability != model::NodeAvailability::drain)
        return fail(Errc::invalid_argument,
                    "node " + self.meta.id +
                        " is cofferd, which runs no tasks: its availability stays drain; join an "
                        "agent on this machine (coffer-agent join) to run tasks here");
    if (!spec->labels.empty())
        return fail(Errc::invalid_argument,
                    "node " + self.meta.id +
                        " is cofferd, which runs no tasks: it takes no labels (placement "
                        "constraints match the agents only)");
    return Response::empty(200);
}

}  // namespace

std::vector<ManagerEntry> manager_entries(Cluster& m) {
    std::vector<ManagerEntry> out{{manager_node(m), true, true, manager_address(m)}};
    auto all = m.managers();
    if (!all) {
        log::warn("api", "the other managers: {}", all.error().message);
        return out;
    }
    for (const auto& other : *all) {
        if (other.self) {
            if (!other.addr.empty()) out.front().addr = other.addr;
            continue;
        }
        ManagerEntry e;
        e.node.meta = {other.id, 1, m.created(), m.created()};
        e.node.spec.role = model::NodeRole::manager;
        e.node.spec.availability = model::NodeAvailability::drain;
        e.node.description.hostname = other.host;
        e.node.state = other.reachable ? model::NodeState::ready : model::NodeState::down;
        e.node.addr = host_of(other.addr);
        e.reachable = other.reachable;
        e.addr = other.addr;
        out.push_back(std::move(e));
    }
    return out;
}

model::Node manager_node(Cluster& m) {
    model::Node n;
    n.meta = {m.manager_node_id(), 1, m.created(), m.created()};
    n.spec.role = model::NodeRole::manager;
    n.spec.availability = model::NodeAvailability::drain;
    n.description.hostname = hostname();
    struct utsname u {};
    if (::uname(&u) == 0) n.description.architecture = u.machine;
    n.description.nano_cpus = machine_cpus() * 1'000'000'000;
    n.description.memory_bytes = machine_memory();
    n.state = model::NodeState::ready;
    auto addr = manager_address(m);
    n.addr = addr.empty() ? "127.0.0.1" : host_of(addr);
    return n;
}

std::string manager_address(Cluster& m) {
    auto addr = m.node_port_address();
    if (addr.empty()) return addr;
    auto host = host_of(addr);
    auto port = addr.substr(host.size());
    if (host == "0.0.0.0" || host == "::" || host == "[::]" || host.empty())
        return machine_ipv4() + port;
    return addr;
}

std::int64_t machine_cpus() {
    auto n = ::sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? n : 0;
}

std::int64_t machine_memory() {
    struct sysinfo si {};
    if (::sysinfo(&si) != 0) return 0;
    return static_cast<std::int64_t>(si.totalram) * si.mem_unit;
}

std::optional<Response> node_routes(Cluster& manager, Request& r, const Segments& seg) {
    if (seg.empty() || seg[0] != "nodes") return std::nullopt;
    const auto& m = r.method;
    auto n = seg.size();
    auto& nodes = manager.nodes();
    if (n == 1 && m == "GET") return nodes_list(manager, r);
    if (n >= 2)
        if (auto e = find_manager(manager, seg[1])) {
            bool self = e->node.meta.id == manager.manager_node_id();
            if (n == 2 && m == "GET") return ok_json(200, entry_json(*e));
            if (n == 3 && seg[2] == "update" && m == "POST") {
                if (self) return update_manager(manager, r);
                return fail(Errc::invalid_argument,
                            "node " + e->node.meta.id +
                                " is a cofferd manager: update it from the manager itself");
            }
            if (n == 2 && m == "DELETE") {
                if (self)
                    return fail(Errc::invalid_argument,
                                "node " + e->node.meta.id +
                                    " is cofferd, the cluster's leading manager: it cannot be "
                                    "removed; stop it and another manager takes over");
                // A manager that runs is refused (stop its cofferd first); one that does not is
                // forgotten: it no longer shows, and nodes are no longer sent its address.
                if (auto r2 = manager.forget_manager(e->addr); !r2)
                    return Response::error(r2.error());
                log::info("api", "manager {} at {} forgotten", e->node.meta.id, e->addr);
                return Response::empty(200);
            }
            return std::nullopt;
        }
    if (n == 2 && m == "GET") {
        auto node = nodes.find(seg[1]);
        if (!node) return Response::error(node.error());
        return ok_json(200, model::to_json(*node));
    }
    if (n == 3 && seg[2] == "update" && m == "POST") {
        auto version = version_param(r, "node");
        if (!version) return Response::error(version.error());
        auto v = model::parse_json(r.body_view());
        if (!v) return fail(Errc::invalid_argument, "malformed request body: " + v.error().message);
        auto spec = model::node_spec_from_json(*v);
        if (!spec) return Response::error(spec.error());
        auto before = nodes.find(seg[1]);
        auto node = nodes.update(seg[1], *version, std::move(*spec));
        if (!node) return Response::error(node.error());
        log::info("api", "node {} updated", node->meta.id);
        // The role is the certificate's OU: the node needs a new certificate.
        if (before && before->meta.id == node->meta.id && before->spec.role != node->spec.role)
            manager.events().node_role_changed(node->meta.id);
        return Response::empty(200);
    }
    if (n == 2 && m == "DELETE") {
        auto node = nodes.remove(seg[1], truthy(r.param("force")));
        if (!node) return Response::error(node.error());
        // Its certificate is refused from now on (no record); its session ends now.
        manager.events().node_removed(node->meta.id);
        return Response::empty(200);
    }
    return std::nullopt;
}

}  // namespace coffer::manager
