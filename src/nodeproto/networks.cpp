#include "coffer/nodeproto/networks.h"

#include <algorithm>
#include <limits>
#include <optional>

#include "coffer/model/ids.h"
#include "coffer/model/ipv4.h"
#include "coffer/model/json.h"
#include "coffer/model/service.h"
#include "wire.h"

namespace coffer::nodeproto {

namespace json = boost::json;

namespace {

constexpr std::size_t max_aliases = 64;
constexpr std::size_t max_peers = 4096;
constexpr std::size_t max_ingress_ports = 4096;
constexpr std::size_t max_backends = 100'000;
constexpr std::size_t max_name = 255;

json::array strings(const std::vector<std::string>& v) {
    return json::array(v.begin(), v.end());
}

json::object service_wire(const NetworkService& s) {
    json::array tasks;
    for (const auto& t : s.tasks)
        tasks.push_back(json::object{{"ID", t.id}, {"Name", t.name}, {"Address", t.address}});
    return json::object{{"ID", s.id},
                        {"Name", s.name},
                        {"EndpointMode", s.endpoint_mode},
                        {"VIP", s.vip},
                        {"Aliases", strings(s.aliases)},
                        {"Tasks", std::move(tasks)}};
}

json::object network_wire(const NetworkPayload& n) {
    json::array services;
    for (const auto& s : n.services) services.push_back(service_wire(s));
    return json::object{{"ID", n.id},
                        {"Name", n.name},
                        {"Driver", n.driver},
                        {"Subnet", n.subnet},
                        {"Gateway", n.gateway},
                        {"VNI", n.vni},
                        {"MTU", n.mtu},
                        {"Internal", n.internal},
                        {"Ingress", n.ingress},
                        {"Peers", strings(n.peers)},
                        {"Services", std::move(services)}};
}

// ---- decode: a failure is thrown as a reason and becomes the message's error.

struct Bad {
    std::string why;
};

[[noreturn]] void bad(std::string why) {
    throw Bad{std::move(why)};
}

const json::object& object_of(const json::value& v, std::string_view what) {
    if (!v.is_object()) bad(fmt::format("{}: expected an object", what));
    return v.get_object();
}

const json::array& array_at(const json::object& o, std::string_view key, std::size_t max) {
    static const json::array empty;
    const auto* v = o.if_contains(key);
    if (v == nullptr || v->is_null()) return empty;
    if (!v->is_array()) bad(fmt::format("{}: expected an array", key));
    if (v->get_array().size() > max) bad(fmt::format("{}: more than {} entries", key, max));
    return v->get_array();
}

std::string text_at(const json::object& o, std::string_view key, std::size_t max) {
    auto v = wire::optional_string(o, key, max);
    if (!v) bad(v.error().message);
    return v->value_or("");
}

// A name that may reach a log line or a DNS answer: printable ASCII without spaces.
std::string name_at(const json::object& o, std::string_view key, bool required) {
    auto s = text_at(o, key, max_name);
    if (required && s.empty()) bad(fmt::format("{} is missing", key));
    if (std::any_of(s.begin(), s.end(), [](char c) { return c <= 0x20 || c >= 0x7f; }))
        bad(fmt::format("{}: not a printable name", key));
    return s;
}

std::vector<std::string> names_at(const json::object& o, std::string_view key) {
    std::vector<std::string> out;
    for (const auto& v : array_at(o, key, max_aliases)) {
        if (!v.is_string()) bad(fmt::format("{}: expected strings", key));
        json::object one{{"n", v}};
        out.push_back(name_at(one, "n", true));
    }
    return out;
}

// A number in [min, max]; when absent, fallback (nullopt: it is required).
std::int64_t int_at(const json::object& o, std::string_view key, std::int64_t min, std::int64_t max,
                    std::optional<std::int64_t> fallback = 0) {
    auto n = model::integer_field(o, key, min, max);
    if (!n) bad(n.error().message);
    if (!*n && !fallback) bad(fmt::format("{} is missing", key));
    return n->value_or(*fallback);
}

bool bool_at(const json::object& o, std::string_view key) {
    const auto* v = o.if_contains(key);
    if (v == nullptr || v->is_null()) return false;
    if (!v->is_bool()) bad(fmt::format("{}: expected a boolean", key));
    return v->get_bool();
}

std::string address_at(const json::object& o, std::string_view key,
                       const model::Ipv4Prefix* subnet) {
    auto text = text_at(o, key, 15);
    auto a = model::parse_ipv4(text);
    if (!a) bad(fmt::format("{}: not an IPv4 address", key));
    if (subnet != nullptr &&
        (!subnet->contains(*a) || *a == subnet->network() || *a == subnet->broadcast()))
        bad(fmt::format("{}: not a host address of the network's subnet", key));
    return text;
}

std::string id_at(const json::object& o, std::string_view key) {
    auto id = text_at(o, key, 64);
    if (!model::valid_generated_id(id)) bad(fmt::format("{}: missing or invalid", key));
    return id;
}

NetworkService service_of(const json::value& v, const model::Ipv4Prefix& subnet) {
    const auto& o = object_of(v, "Services");
    NetworkService s;
    s.id = id_at(o, "ID");
    s.name = name_at(o, "Name", true);
    if (!model::is_dns_label(s.name)) bad("Services: Name is not a service name");
    s.endpoint_mode = text_at(o, "EndpointMode", 8);
    if (s.endpoint_mode != "vip" && s.endpoint_mode != "dnsrr")
        bad("Services: EndpointMode must be vip or dnsrr");
    if (s.endpoint_mode == "vip")
        s.vip = address_at(o, "VIP", &subnet);
    else if (!text_at(o, "VIP", 15).empty())
        bad("Services: a dnsrr service has no VIP");
    s.aliases = names_at(o, "Aliases");
    for (const auto& t : array_at(o, "Tasks", max_network_tasks)) {
        const auto& to = object_of(t, "Tasks");
        NetworkTask task;
        task.id = text_at(to, "ID", 64);
        if (!model::valid_task_id(task.id)) bad("Tasks: ID missing or invalid");
        task.name = name_at(to, "Name", true);
        task.address = address_at(to, "Address", &subnet);
        s.tasks.push_back(std::move(task));
    }
    return s;
}

NetworkPayload network_of(const json::value& v) {
    const auto& o = object_of(v, "Networks");
    NetworkPayload n;
    n.id = id_at(o, "ID");
    n.name = name_at(o, "Name", true);
    n.driver = text_at(o, "Driver", 16);
    if (n.driver != "overlay" && n.driver != "bridge")
        bad("Networks: Driver must be overlay or bridge");
    n.subnet = text_at(o, "Subnet", 18);
    auto subnet = model::parse_ipv4_prefix(n.subnet);
    if (!subnet || subnet->address != subnet->network() || subnet->length < 8 ||
        subnet->length > 30)
        bad("Networks: Subnet must be an IPv4 network of /8 to /30");
    n.gateway = address_at(o, "Gateway", &*subnet);
    n.vni = static_cast<std::uint32_t>(int_at(o, "VNI", 0, 16'777'215));
    if (n.driver == "overlay" && n.vni == 0) bad("Networks: an overlay network needs a VNI");
    n.mtu = static_cast<std::uint32_t>(int_at(o, "MTU", 68, 65'535, 1450));
    n.internal = bool_at(o, "Internal");
    n.ingress = bool_at(o, "Ingress");
    for (const auto& p : array_at(o, "Peers", max_peers)) {
        json::object one{{"p", p}};
        n.peers.push_back(address_at(one, "p", nullptr));
    }
    if (n.driver != "overlay" && !n.peers.empty()) bad("Networks: only an overlay has Peers");
    for (const auto& s : array_at(o, "Services", max_network_services))
        n.services.push_back(service_of(s, *subnet));
    return n;
}

IngressPort ingress_of(const json::value& v) {
    const auto& o = object_of(v, "Ingress");
    IngressPort p;
    p.service_id = id_at(o, "ServiceID");
    p.protocol = text_at(o, "Protocol", 8);
    if (p.protocol != "tcp" && p.protocol != "udp") bad("Ingress: Protocol must be tcp or udp");
    p.published_port =
        static_cast<std::uint16_t>(int_at(o, "PublishedPort", 1, 65'535, std::nullopt));
    p.target_port = static_cast<std::uint16_t>(int_at(o, "TargetPort", 1, 65'535, std::nullopt));
    for (const auto& b : array_at(o, "Backends", max_backends)) {
        json::object one{{"b", b}};
        p.backends.push_back(address_at(one, "b", nullptr));
    }
    return p;
}

}  // namespace

crypto::SecureBuffer encode(const NetworksMessage& m) {
    json::array networks, ingress;
    for (const auto& n : m.networks) networks.push_back(network_wire(n));
    for (const auto& p : m.ingress)
        ingress.push_back(json::object{{"ServiceID", p.service_id},
                                       {"Protocol", p.protocol},
                                       {"PublishedPort", p.published_port},
                                       {"TargetPort", p.target_port},
                                       {"Backends", strings(p.backends)}});
    return wire::text_of(json::object{{"type", "networks"},
                                      {"Sequence", m.sequence},
                                      {"Networks", std::move(networks)},
                                      {"Ingress", std::move(ingress)}});
}

Result<NetworksMessage> decode_networks(const crypto::SecureBuffer& text) {
    auto doc = wire::object_of_type(text, "networks");
    if (!doc) return std::move(doc).error();
    const auto& o = doc->value().get_object();
    NetworksMessage m;
    try {
        m.sequence = static_cast<std::uint64_t>(
            int_at(o, "Sequence", 0, std::numeric_limits<std::int64_t>::max()));
        for (const auto& n : array_at(o, "Networks", max_networks))
            m.networks.push_back(network_of(n));
        for (const auto& p : array_at(o, "Ingress", max_ingress_ports))
            m.ingress.push_back(ingress_of(p));
    } catch (const Bad& b) {
        return wire::malformed(b.why);
    }
    std::vector<std::string_view> ids;
    for (const auto& n : m.networks) ids.push_back(n.id);
    std::sort(ids.begin(), ids.end());
    if (std::adjacent_find(ids.begin(), ids.end()) != ids.end())
        return wire::malformed("Networks: an ID appears twice");
    return m;
}

}  // namespace coffer::nodeproto
