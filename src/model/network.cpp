#include "coffer/model/network.h"

#include <boost/json.hpp>

#include <algorithm>
#include <charconv>

#include "coffer/model/json.h"
#include "coffer/model/time.h"

namespace coffer::model {

namespace json = boost::json;

namespace {

Error invalid(std::string message) {
    return make_error(Errc::invalid_argument, std::move(message));
}

bool ask_nothing(const json::value* v) {
    if (v == nullptr || v->is_null()) return true;
    if (v->is_bool()) return !v->get_bool();
    if (v->is_string()) return v->get_string().empty();
    if (v->is_object()) return v->get_object().empty();
    if (v->is_array()) return v->get_array().empty();
    return false;
}

Result<bool> bool_member(const json::object& o, std::string_view field) {
    const auto* v = o.if_contains(field);
    if (v == nullptr || v->is_null()) return false;
    if (!v->is_bool()) return invalid(fmt::format("field {} must be a boolean", field));
    return v->get_bool();
}

Result<std::string> string_member(const json::object& o, std::string_view field) {
    const auto* v = o.if_contains(field);
    if (v == nullptr || v->is_null()) return std::string();
    if (!v->is_string()) return invalid(fmt::format("field {} must be a string", field));
    return std::string(v->get_string());
}

Result<IpamConfig> ipam_config_from(const json::value& v) {
    if (!v.is_object()) return invalid("field IPAM.Config[] must be an object");
    const auto& o = v.get_object();
    for (const auto& [k, val] : o) {
        if (k == "Subnet" || k == "Gateway" || k == "IPRange") continue;
        if (k == "AuxiliaryAddresses" && ask_nothing(&val)) continue;
        if (k == "AuxiliaryAddresses")
            return invalid(
                "field IPAM.Config[].AuxiliaryAddresses is not supported: coffer allocates every "
                "address of a network itself");
        return invalid(fmt::format("unknown field IPAM.Config[].{}", std::string_view(k)));
    }
    IpamConfig c;
    auto subnet = string_member(o, "Subnet");
    auto gateway = string_member(o, "Gateway");
    auto range = string_member(o, "IPRange");
    if (!subnet) return std::move(subnet).error();
    if (!gateway) return std::move(gateway).error();
    if (!range) return std::move(range).error();
    c.subnet = std::move(*subnet);
    c.gateway = std::move(*gateway);
    c.ip_range = std::move(*range);
    if (c.subnet.empty()) {
        if (!c.gateway.empty() || !c.ip_range.empty())
            return invalid("IPAM.Config[]: a gateway or an IP range needs a subnet");
        return c;
    }
    auto net = parse_ipv4_prefix(c.subnet);
    if (!net) {
        if (c.subnet.find(':') != std::string::npos)
            return invalid(fmt::format("invalid subnet {}: IPv6 is not supported", c.subnet));
        return invalid(fmt::format("invalid subnet {}: not an IPv4 CIDR", c.subnet));
    }
    if (net->address != net->network())
        return invalid(fmt::format("invalid subnet {}: it has host bits set (did you mean {}?)",
                                   c.subnet, Ipv4Prefix{net->network(), net->length}.to_string()));
    if (net->length < 8 || net->length > 29)
        return invalid(
            fmt::format("invalid subnet {}: the prefix length must be between 8 and 29", c.subnet));
    // Addresses every node's kernel treats as its own or as special: a bridge or route there
    // would take over the node's loopback, link-local or multicast traffic.
    struct Reserved {
        std::uint32_t network;
        int length;
        const char* what;
    };
    for (auto [network, length, what] : {Reserved{0x00000000, 8, "\"this network\" (0.0.0.0/8)"},
                                         Reserved{0x7f000000, 8, "loopback (127.0.0.0/8)"},
                                         Reserved{0xa9fe0000, 16, "link-local (169.254.0.0/16)"},
                                         Reserved{0xe0000000, 4, "multicast (224.0.0.0/4)"},
                                         Reserved{0xf0000000, 4, "reserved (240.0.0.0/4)"}})
        if (net->overlaps(Ipv4Prefix{network, length}))
            return invalid(
                fmt::format("invalid subnet {}: it overlaps the {} addresses", c.subnet, what));
    if (!c.gateway.empty()) {
        auto g = parse_ipv4(c.gateway);
        if (!g || !net->contains(*g) || *g == net->network() || *g == net->broadcast())
            return invalid(fmt::format("invalid gateway {}: not a host address in subnet {}",
                                       c.gateway, c.subnet));
    }
    if (!c.ip_range.empty()) {
        auto r = parse_ipv4_prefix(c.ip_range);
        if (!r || r->address != r->network() || r->length < net->length ||
            !net->contains(r->address))
            return invalid(fmt::format("invalid ip range {}: not a CIDR inside subnet {}",
                                       c.ip_range, c.subnet));
    }
    return c;
}

}  // namespace

Result<void> validate_network_name(std::string_view name) {
    if (name.empty()) return invalid("network name must not be empty");
    bool ok = name.size() <= 255 && std::isalnum(static_cast<unsigned char>(name[0]));
    for (char c : name)
        ok =
            ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-');
    if (!ok)
        return invalid(fmt::format(
            "invalid network name \"{}\": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, at most 255",
            name));
    return {};
}

Result<NetworkSpec> network_spec_from_request(const json::value& body,
                                              std::vector<std::string>& warnings) {
    if (!body.is_object()) return invalid("the request body must be a JSON object");
    const auto& o = body.get_object();
    // Every field of Docker's NetworkCreateRequest: acted on, or refused when it asks for
    // something coffer does not do; any other field is refused.
    for (const auto& [k, v] : o) {
        std::string_view key = k;
        if (key == "Name" || key == "Driver" || key == "Scope" || key == "Internal" ||
            key == "Attachable" || key == "Labels" || key == "IPAM" || key == "Options" ||
            key == "CheckDuplicate")
            continue;
        if (key == "EnableIPv4") {
            if (v.is_null() || (v.is_bool() && v.get_bool())) continue;
            return invalid("field EnableIPv4 cannot be false: coffer networks are IPv4 networks");
        }
        if (key == "EnableIPv6" || key == "Ingress" || key == "ConfigOnly") {
            if (ask_nothing(&v)) continue;
            if (key == "EnableIPv6")
                return invalid("field EnableIPv6 is not supported: coffer networks are IPv4 only");
            if (key == "Ingress")
                return invalid(
                    "field Ingress is not supported: the cluster has one ingress network, "
                    "predefined (ingress)");
            return invalid("field ConfigOnly is not supported: coffer has no config-only networks");
        }
        if (key == "ConfigFrom") {
            if (ask_nothing(&v)) continue;
            if (v.is_object()) {
                const auto* n = v.get_object().if_contains("Network");
                if (v.get_object().size() == 1 && ask_nothing(n)) continue;
            }
            return invalid("field ConfigFrom is not supported: coffer has no config-only networks");
        }
        return invalid(fmt::format("unknown field {} in the network create request", key));
    }

    NetworkSpec spec;
    auto name = string_member(o, "Name");
    if (!name) return std::move(name).error();
    spec.name = std::move(*name);
    if (auto r = validate_network_name(spec.name); !r) return std::move(r).error();

    auto driver = string_member(o, "Driver");
    if (!driver) return std::move(driver).error();
    spec.driver = driver->empty() ? "overlay" : std::move(*driver);
    if (spec.driver != "overlay" && spec.driver != "bridge")
        return invalid(fmt::format(
            "network driver {} is not supported: coffer networks are overlay (across nodes) or "
            "bridge (one node's)",
            spec.driver));

    auto scope = string_member(o, "Scope");
    if (!scope) return std::move(scope).error();
    if (!scope->empty() && *scope != "swarm")
        return invalid(fmt::format(
            "network scope {} is not supported: coffer networks are cluster objects (swarm)",
            *scope));

    auto internal = bool_member(o, "Internal");
    auto attachable = bool_member(o, "Attachable");
    auto check = bool_member(o, "CheckDuplicate");
    if (!internal) return std::move(internal).error();
    if (!attachable) return std::move(attachable).error();
    if (!check) return std::move(check).error();
    spec.internal = *internal;
    spec.attachable = *attachable;

    auto labels = labels_from_json(o.if_contains("Labels"), "Labels");
    if (!labels) return std::move(labels).error();
    spec.labels = std::move(*labels);
    auto options = labels_from_json(o.if_contains("Options"), "Options");
    if (!options) return std::move(options).error();
    for (const auto& [k, v] : *options) {
        if (k == "encrypted")
            return invalid(
                "option encrypted is not supported: coffer's overlay does not encrypt traffic "
                "between nodes; keep secret traffic on one node or encrypt it in the tasks");
        if (k == "com.docker.network.driver.overlay.vxlanid_list")
            return invalid(fmt::format("option {} is not supported: coffer allocates the VNI", k));
        warnings.push_back(
            fmt::format("option {} is kept with the network and not used by coffer", k));
    }
    spec.options = std::move(*options);

    if (const auto* ipam = o.if_contains("IPAM"); ipam != nullptr && !ipam->is_null()) {
        if (!ipam->is_object()) return invalid("field IPAM must be an object");
        const auto& io = ipam->get_object();
        for (const auto& [k, v] : io) {
            std::string_view key = k;
            if (key == "Driver" || key == "Config") continue;
            if (key == "Options") {
                if (ask_nothing(&v)) continue;
                return invalid("field IPAM.Options is not supported: coffer's IPAM has no options");
            }
            return invalid(fmt::format("unknown field IPAM.{}", key));
        }
        auto d = string_member(io, "Driver");
        if (!d) return std::move(d).error();
        if (!d->empty() && *d != "default")
            return invalid(fmt::format(
                "IPAM driver {} is not supported: coffer allocates addresses itself (default)",
                *d));
        if (const auto* cfg = io.if_contains("Config"); cfg != nullptr && !cfg->is_null()) {
            if (!cfg->is_array()) return invalid("field IPAM.Config must be an array");
            if (cfg->get_array().size() > 1)
                return invalid("IPAM.Config: coffer networks have one subnet; several were given");
            for (const auto& c : cfg->get_array()) {
                auto parsed = ipam_config_from(c);
                if (!parsed) return std::move(parsed).error();
                if (!parsed->subnet.empty()) spec.ipam.push_back(std::move(*parsed));
            }
        }
    }
    return spec;
}

json::object to_json(const Network& n) {
    json::object o;
    o["Name"] = n.spec.name;
    o["Id"] = n.meta.id;
    o["Created"] = format_rfc3339(n.meta.created);
    o["Scope"] = n.spec.scope;
    o["Driver"] = n.spec.driver;
    o["EnableIPv4"] = n.spec.driver != "host";
    o["EnableIPv6"] = false;
    json::object ipam{{"Driver", n.spec.ipam_driver}, {"Options", nullptr}};
    if (n.subnet.empty()) {
        ipam["Config"] = nullptr;
    } else {
        json::object c{{"Subnet", n.subnet}, {"Gateway", n.gateway}};
        if (!n.spec.ipam.empty() && !n.spec.ipam.front().ip_range.empty())
            c["IPRange"] = n.spec.ipam.front().ip_range;
        ipam["Config"] = json::array{std::move(c)};
    }
    o["IPAM"] = std::move(ipam);
    o["Internal"] = n.spec.internal;
    o["Attachable"] = n.spec.attachable;
    o["Ingress"] = n.spec.ingress;
    o["ConfigFrom"] = json::object{{"Network", ""}};
    o["ConfigOnly"] = false;
    o["Containers"] = json::object{};
    auto options = to_json(n.spec.options);
    if (n.vni != 0)
        options["com.docker.network.driver.overlay.vxlanid_list"] = std::to_string(n.vni);
    o["Options"] = std::move(options);
    o["Labels"] = to_json(n.spec.labels);
    return o;
}

json::object swarm_network_json(const Network& n) {
    json::object o = to_json(n.meta);
    json::object spec{{"Name", n.spec.name},
                      {"Labels", to_json(n.spec.labels)},
                      {"DriverConfiguration", json::object{{"Name", n.spec.driver}}},
                      {"Scope", n.spec.scope}};
    if (n.spec.internal) spec["Internal"] = true;
    if (n.spec.attachable) spec["Attachable"] = true;
    if (n.spec.ingress) spec["Ingress"] = true;
    o["Spec"] = std::move(spec);
    json::object options;
    if (n.vni != 0)
        options["com.docker.network.driver.overlay.vxlanid_list"] = std::to_string(n.vni);
    o["DriverState"] = json::object{{"Name", n.spec.driver}, {"Options", std::move(options)}};
    json::array configs;
    if (!n.subnet.empty())
        configs.push_back(json::object{{"Subnet", n.subnet}, {"Gateway", n.gateway}});
    o["IPAMOptions"] = json::object{{"Driver", json::object{{"Name", n.spec.ipam_driver}}},
                                    {"Configs", std::move(configs)}};
    return o;
}

json::object network_record(const Network& n) {
    json::object o = to_json(n.meta);
    json::array ipam;
    for (const auto& c : n.spec.ipam)
        ipam.emplace_back(
            json::object{{"Subnet", c.subnet}, {"Gateway", c.gateway}, {"IPRange", c.ip_range}});
    o["Spec"] = json::object{{"Name", n.spec.name},
                             {"Labels", to_json(n.spec.labels)},
                             {"Driver", n.spec.driver},
                             {"Scope", n.spec.scope},
                             {"Internal", n.spec.internal},
                             {"Attachable", n.spec.attachable},
                             {"Ingress", n.spec.ingress},
                             {"Options", to_json(n.spec.options)},
                             {"IPAMDriver", n.spec.ipam_driver},
                             {"IPAM", std::move(ipam)}};
    o["Subnet"] = n.subnet;
    o["Gateway"] = n.gateway;
    o["VNI"] = n.vni;
    o["NodeAddresses"] = to_json(n.node_addresses);
    return o;
}

Result<Network> network_from_record(const json::value& v) {
    auto bad = [] { return make_error(Errc::internal, "malformed network record"); };
    if (!v.is_object()) return bad();
    const auto& o = v.get_object();
    try {
        Network n;
        n.meta.id = std::string(o.at("ID").as_string());
        n.meta.version = o.at("Version").at("Index").to_number<std::uint64_t>();
        auto created = parse_rfc3339(o.at("CreatedAt").as_string());
        auto updated = parse_rfc3339(o.at("UpdatedAt").as_string());
        if (!created || !updated) return bad();
        n.meta.created = *created;
        n.meta.updated = *updated;
        const auto& s = o.at("Spec").as_object();
        n.spec.name = std::string(s.at("Name").as_string());
        auto labels = labels_from_json(s.if_contains("Labels"), "Labels");
        auto options = labels_from_json(s.if_contains("Options"), "Options");
        if (!labels || !options) return bad();
        n.spec.labels = std::move(*labels);
        n.spec.options = std::move(*options);
        n.spec.driver = std::string(s.at("Driver").as_string());
        n.spec.scope = std::string(s.at("Scope").as_string());
        n.spec.internal = s.at("Internal").as_bool();
        n.spec.attachable = s.at("Attachable").as_bool();
        n.spec.ingress = s.at("Ingress").as_bool();
        n.spec.ipam_driver = std::string(s.at("IPAMDriver").as_string());
        for (const auto& c : s.at("IPAM").as_array())
            n.spec.ipam.push_back({std::string(c.at("Subnet").as_string()),
                                   std::string(c.at("Gateway").as_string()),
                                   std::string(c.at("IPRange").as_string())});
        n.subnet = std::string(o.at("Subnet").as_string());
        n.gateway = std::string(o.at("Gateway").as_string());
        n.vni = o.at("VNI").to_number<std::uint32_t>();
        auto nodes = labels_from_json(o.if_contains("NodeAddresses"), "NodeAddresses");
        if (!nodes) return bad();
        n.node_addresses = std::move(*nodes);
        return n;
    } catch (const std::exception&) {
        return bad();
    }
}

}  // namespace coffer::model
