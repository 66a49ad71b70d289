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

bool is_manager(Cluster& m, std::string_view key) {
    return !key.empty() && key == m.manager_node_id();
}

// Docker resolves full ID, then name, then unique ID prefix: the agents' full IDs and names
// come first (an agent on cofferd's machine has its hostname), then the manager's.
bool refers_to_manager(Cluster& m, std::string_view key) {
    if (is_manager(m, key)) return true;
    if (m.nodes().find(key)) return false;
    return key == manager_node(m).description.hostname ||
           (key.size() >= 1 && m.manager_node_id().starts_with(key));
}

json::object node_json(Cluster& m, const model::Node& n) {
    auto o = model::to_json(n);
    if (is_manager(m, n.meta.id))
        o["ManagerStatus"] = json::object{
            {"Leader", true}, {"Reachability", "reachable"}, {"Addr", manager_address(m)}};
    return o;
}

Response nodes_list(Cluster& m, const Request& r) {
    auto f = model::Filters::parse(r.param("filters"),
                                   {"id", "name", "role", "membership", "label", "node.label"});
    if (!f) return Response::error(f.error());
    std::vector<model::Node> all{manager_node(m)};
    for (auto& n : m.nodes().list()) all.push_back(std::move(n));
    json::array out;
    for (const auto& n : all) {
        if (!f->match_prefix("id", n.meta.id) || !f->match_prefix("name", n.description.hostname) ||
            !f->match_exact("role", model::to_string(n.spec.role)) ||
            !f->match_exact("membership", "accepted") || !f->match_labels(n.spec.labels))
            continue;
        out.push_back(node_json(m, n));
    }
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
    if (n >= 2 && refers_to_manager(manager, seg[1])) {
        if (n == 2 && m == "GET") return ok_json(200, node_json(manager, manager_node(manager)));
        if (n == 3 && seg[2] == "update" && m == "POST") return update_manager(manager, r);
        if (n == 2 && m == "DELETE")
            return fail(Errc::invalid_argument,
                        "node " + manager.manager_node_id() +
                            " is cofferd, the cluster's manager: it cannot be removed");
        return std::nullopt;
    }
    if (n == 2 && m == "GET") {
        auto node = nodes.find(seg[1]);
        if (!node) return Response::error(node.error());
        return ok_json(200, node_json(manager, *node));
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
