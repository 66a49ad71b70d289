#include "coffer/manager/networks.h"

#include <algorithm>

#include "coffer/base/log.h"
#include "coffer/crypto/random.h"
#include "coffer/model/json.h"

namespace coffer::manager {

namespace json = boost::json;
using model::Ipv4Prefix;
using model::Network;

namespace network_alloc {

std::optional<Ipv4Prefix> free_subnet(const std::vector<Ipv4Prefix>& used) {
    for (std::uint32_t i = 1; i < 65536; ++i) {
        Ipv4Prefix candidate{(10u << 24) | (i << 8), 24};
        bool taken = std::any_of(used.begin(), used.end(),
                                 [&](const Ipv4Prefix& u) { return u.overlaps(candidate); });
        if (!taken) return candidate;
    }
    return std::nullopt;
}

std::uint32_t free_vni(const std::vector<std::uint32_t>& used) {
    std::uint32_t v = model::first_vni;
    while (std::find(used.begin(), used.end(), v) != used.end()) ++v;
    return v;
}

std::optional<std::uint32_t> free_address(const Ipv4Prefix& subnet,
                                          const std::optional<Ipv4Prefix>& range,
                                          const std::vector<std::uint32_t>& used) {
    auto pool = range ? *range : subnet;
    for (std::uint64_t a = pool.network(); a <= pool.broadcast(); ++a) {
        auto addr = static_cast<std::uint32_t>(a);
        if (addr == subnet.network() || addr == subnet.broadcast()) continue;
        if (std::find(used.begin(), used.end(), addr) != used.end()) continue;
        return addr;
    }
    return std::nullopt;
}

}  // namespace network_alloc

namespace {

// The names Docker keeps for its own networks: none can be created, none removed.
bool predefined_name(std::string_view name) {
    return name == model::host_network_name || name == "bridge" || name == "none" ||
           name == "default";
}

Result<Network> decode(std::string_view text) {
    auto v = model::parse_json(text);
    if (!v) return std::move(v).error();
    return model::network_from_record(*v);
}

Result<Network> lookup(const ObjectTable<Network>::Map& items, std::string_view key) {
    auto not_found = [&] {
        return make_error(Errc::not_found, fmt::format("network {} not found", key));
    };
    if (key.empty()) return not_found();
    if (auto it = items.find(key); it != items.end()) return it->second;
    for (const auto& [id, n] : items)
        if (n.spec.name == key) return n;
    const Network* found = nullptr;
    int matches = 0;
    for (auto it = items.lower_bound(key); it != items.end() && it->first.starts_with(key); ++it) {
        found = &it->second;
        ++matches;
    }
    if (matches > 1)
        return make_error(Errc::invalid_argument,
                          fmt::format("network {} is ambiguous ({} matches found)", key, matches));
    if (found) return *found;
    return not_found();
}

std::vector<Ipv4Prefix> subnets_of(const ObjectTable<Network>::Map& items) {
    std::vector<Ipv4Prefix> out;
    for (const auto& [id, n] : items)
        if (auto s = model::parse_ipv4_prefix(n.subnet)) out.push_back(*s);
    return out;
}

// The addresses of a network no node may take: the IPAM gateway and the nodes' own.
std::vector<std::uint32_t> reserved_addresses(const Network& n) {
    std::vector<std::uint32_t> out;
    if (auto g = model::parse_ipv4(n.gateway)) out.push_back(*g);
    for (const auto& [node, a] : n.node_addresses)
        if (auto p = model::parse_ipv4(a)) out.push_back(*p);
    return out;
}

}  // namespace

NetworkRegistry::NetworkRegistry(store::Store& store, VersionCounter& counter)
    : table_(
          store, store::Table::networks, counter,
          [](const Network& n) { return json::serialize(model::network_record(n)); }, decode) {}

Result<std::unique_ptr<NetworkRegistry>> NetworkRegistry::load(store::Store& store,
                                                               VersionCounter& counter) {
    std::unique_ptr<NetworkRegistry> reg(new NetworkRegistry(store, counter));
    if (auto r = reg->table_.load(); !r) return std::move(r).error().context("load networks");
    if (auto r = reg->ensure_predefined(); !r)
        return std::move(r).error().context("create the predefined networks");
    log::info("networks", "loaded {} networks", reg->table_.list().size());
    return reg;
}

Result<void> NetworkRegistry::ensure_predefined() {
    auto written = table_.commit([&](const auto& items) -> Result<ObjectTable<Network>::Changes> {
        bool ingress = false, host = false, bridge = false;
        for (const auto& [id, n] : items) {
            ingress = ingress || n.spec.name == model::ingress_network_name;
            host = host || n.spec.name == model::host_network_name;
            bridge = bridge || n.spec.name == model::bridge_network_name;
        }
        ObjectTable<Network>::Changes changes;
        auto now = model::Timestamp::now();
        if (!ingress) {
            Network n;
            n.meta = {crypto::random_id(), 0, now, now};
            n.spec.name = model::ingress_network_name;
            n.spec.ingress = true;
            n.spec.labels = {};
            n.subnet = model::ingress_subnet;
            n.gateway = "10.0.0.1";
            n.vni = model::ingress_vni;
            changes.put.push_back(std::move(n));
        }
        if (!host) {
            Network n;
            n.meta = {crypto::random_id(), 0, now, now};
            n.spec.name = model::host_network_name;
            n.spec.driver = "host";
            n.spec.scope = "local";
            changes.put.push_back(std::move(n));
        }
        if (!bridge) {
            // Its own subnet unless a network made before it holds part of it: then a free /24.
            auto subnet = *model::parse_ipv4_prefix(model::bridge_subnet);
            auto used = subnets_of(items);
            if (std::any_of(used.begin(), used.end(),
                            [&](const auto& u) { return u.overlaps(subnet); })) {
                auto free = network_alloc::free_subnet(used);
                if (!free)
                    return make_error(Errc::unavailable,
                                      "no free subnet left in 10.0.0.0/8 for the bridge network");
                subnet = *free;
            }
            Network n;
            n.meta = {crypto::random_id(), 0, now, now};
            n.spec.name = model::bridge_network_name;
            n.spec.driver = "bridge";
            n.spec.scope = "local";
            n.spec.labels = {};
            n.subnet = subnet.to_string();
            n.gateway = model::format_ipv4(subnet.network() + 1);
            changes.put.push_back(std::move(n));
        }
        return changes;
    });
    if (!written) return std::move(written).error();
    return {};
}

Result<Network> NetworkRegistry::create(model::NetworkSpec spec) {
    if (auto r = model::validate_network_name(spec.name); !r) return std::move(r).error();
    if (predefined_name(spec.name))
        return make_error(
            Errc::permission_denied,
            fmt::format("{} is a pre-defined network and cannot be created", spec.name));
    auto written = table_.commit([&](const auto& items) -> Result<ObjectTable<Network>::Changes> {
        for (const auto& [id, n] : items)
            if (n.spec.name == spec.name)
                return make_error(Errc::already_exists,
                                  fmt::format("network with name {} already exists", spec.name));
        Network n;
        auto used = subnets_of(items);
        if (!spec.ipam.empty()) {
            auto given = model::parse_ipv4_prefix(spec.ipam.front().subnet);
            if (!given)
                return make_error(Errc::invalid_argument,
                                  fmt::format("invalid subnet {}", spec.ipam.front().subnet));
            for (const auto& [id, other] : items) {
                auto s = model::parse_ipv4_prefix(other.subnet);
                if (s && s->overlaps(*given))
                    return make_error(
                        Errc::permission_denied,
                        fmt::format("invalid pool request: Pool overlaps with other one on this "
                                    "address space (subnet {} of network {})",
                                    other.subnet, other.spec.name));
            }
            n.subnet = given->to_string();
            n.gateway = spec.ipam.front().gateway;
            if (n.gateway.empty()) n.gateway = model::format_ipv4(given->network() + 1);
        } else {
            auto free = network_alloc::free_subnet(used);
            if (!free)
                return make_error(Errc::unavailable,
                                  "no free subnet left in 10.0.0.0/8 for a new network");
            n.subnet = free->to_string();
            n.gateway = model::format_ipv4(free->network() + 1);
        }
        std::vector<std::uint32_t> vnis;
        for (const auto& [id, other] : items)
            if (other.vni) vnis.push_back(other.vni);
        n.vni = network_alloc::free_vni(vnis);
        auto now = model::Timestamp::now();
        n.meta = {crypto::random_id(), 0, now, now};
        n.spec = std::move(spec);
        return ObjectTable<Network>::Changes{{std::move(n)}, {}};
    });
    if (!written) return std::move(written).error();
    return written->front();
}

void NetworkRegistry::set_users(Users users) {
    *users_.lock() = std::move(users);
}

Result<Network> NetworkRegistry::remove(std::string_view key) {
    std::unique_lock attach(attach_mutex_);
    std::optional<Network> removed;
    auto written = table_.commit([&](const auto& items) -> Result<ObjectTable<Network>::Changes> {
        auto current = lookup(items, key);
        if (!current) return std::move(current).error();
        if (current->predefined())
            return make_error(Errc::permission_denied,
                              fmt::format("{} is a pre-defined network and cannot be removed",
                                          current->spec.name));
        std::vector<std::pair<std::string, std::string>> users;
        {
            auto fn = users_.read();
            if (*fn) users = (*fn)(current->meta.id);
        }
        if (!users.empty())
            return make_error(Errc::invalid_argument,
                              fmt::format("network {} is in use by service {}", current->meta.id,
                                          users.front().first));
        removed = *current;
        return ObjectTable<Network>::Changes{{}, {current->meta.id}};
    });
    if (!written) return std::move(written).error();
    return std::move(*removed);
}

Result<Network> NetworkRegistry::find(std::string_view key) const {
    return table_.read([&](const auto& items) { return lookup(items, key); });
}

Result<Network> NetworkRegistry::set_nodes(const std::string& network_id,
                                           const std::vector<std::string>& node_ids,
                                           const std::vector<std::uint32_t>& used) {
    std::optional<Network> result;
    auto written = table_.commit([&](const auto& items) -> Result<ObjectTable<Network>::Changes> {
        auto it = items.find(network_id);
        if (it == items.end())
            return make_error(Errc::not_found, fmt::format("network {} not found", network_id));
        Network next = it->second;
        bool changed = false;
        for (auto a = next.node_addresses.begin(); a != next.node_addresses.end();) {
            if (std::find(node_ids.begin(), node_ids.end(), a->first) == node_ids.end()) {
                a = next.node_addresses.erase(a);
                changed = true;
            } else {
                ++a;
            }
        }
        auto subnet = model::parse_ipv4_prefix(next.subnet);
        for (const auto& node : node_ids) {
            if (next.node_addresses.count(node)) continue;
            if (!subnet)
                return make_error(Errc::invalid_argument,
                                  fmt::format("network {} has no subnet", next.spec.name));
            std::optional<Ipv4Prefix> range;
            if (!next.spec.ipam.empty() && !next.spec.ipam.front().ip_range.empty())
                range = model::parse_ipv4_prefix(next.spec.ipam.front().ip_range);
            auto taken = reserved_addresses(next);
            taken.insert(taken.end(), used.begin(), used.end());
            auto a = network_alloc::free_address(*subnet, range, taken);
            if (!a)
                return make_error(Errc::unavailable,
                                  fmt::format("network {} has no free address left for node {}",
                                              next.spec.name, node));
            next.node_addresses[node] = model::format_ipv4(*a);
            changed = true;
        }
        if (!changed) {
            result = it->second;
            return ObjectTable<Network>::Changes{};
        }
        next.meta.updated = model::Timestamp::now();
        return ObjectTable<Network>::Changes{{std::move(next)}, {}};
    });
    if (!written) return std::move(written).error();
    if (!written->empty()) return written->front();
    return std::move(*result);
}

}  // namespace coffer::manager

namespace coffer::manager {

Result<void> resolve_service_networks(const NetworkRegistry& networks, model::ServiceSpec& spec,
                                      std::vector<std::string>& warnings) {
    bool in_task = !spec.task.networks.empty();
    auto& list = in_task ? spec.task.networks : spec.networks;
    if (list.empty()) return {};
    std::vector<std::string> ids;
    bool host = false;
    for (auto& a : list) {
        if (a.target.empty())
            return make_error(Errc::invalid_argument,
                              fmt::format("field {}Networks[].Target must name a network",
                                          in_task ? "TaskTemplate." : ""));
        auto n = networks.find(a.target);
        if (!n) return std::move(n).error();
        if (n->spec.name == model::bridge_network_name)
            return make_error(
                Errc::invalid_argument,
                fmt::format("network {} cannot be used with services: coffer attaches it to "
                            "tasks that publish host-mode ports without a network; attach the "
                            "service to a network of its own",
                            n->spec.name));
        if (n->spec.ingress)
            return make_error(
                Errc::invalid_argument,
                fmt::format("Service cannot be explicitly attached to the ingress network \"{}\"",
                            n->spec.name));
        if (std::find(ids.begin(), ids.end(), n->meta.id) != ids.end())
            return make_error(Errc::invalid_argument,
                              fmt::format("service spec: network {} is given twice", a.target));
        host = host || n->spec.driver == "host";
        if (n->spec.driver == "bridge")
            warnings.push_back(fmt::format(
                "network {} uses the bridge driver: a task reaches only the tasks on its own "
                "node; create the network with --driver overlay to span nodes",
                n->spec.name));
        ids.push_back(n->meta.id);
    }
    if (host && list.size() > 1)
        return make_error(Errc::invalid_argument,
                          "service spec: the host network cannot be combined with other networks");
    if (host && !spec.endpoint.ports.empty())
        return make_error(
            Errc::invalid_argument,
            "service spec: a service on the host network cannot publish ports: its tasks listen "
            "on the node's own ports");
    // The JSON as stored and shown: Target becomes the ID, as Swarm keeps it.
    auto v = model::parse_json(spec.json);
    if (!v || !v->is_object()) return make_error(Errc::internal, "service spec JSON is corrupt");
    auto& root = v->as_object();
    json::value* holder = in_task ? root.if_contains("TaskTemplate") : &*v;
    auto* arr =
        holder && holder->is_object() ? holder->as_object().if_contains("Networks") : nullptr;
    if (arr == nullptr || !arr->is_array() || arr->as_array().size() != list.size())
        return make_error(Errc::internal, "service spec JSON does not match its networks");
    for (std::size_t i = 0; i < list.size(); ++i) {
        list[i].target = ids[i];
        (*arr).as_array()[i].as_object()["Target"] = ids[i];
    }
    spec.json = json::serialize(root);
    if (in_task) spec.task.json = json::serialize(*holder);
    return {};
}

}  // namespace coffer::manager

namespace coffer::manager {

namespace {

const Network* by_id(const std::vector<Network>& networks, std::string_view id) {
    for (const auto& n : networks)
        if (n.meta.id == id) return &n;
    return nullptr;
}

bool publishes_ingress(const model::Service& s) {
    return std::any_of(s.endpoint_ports.begin(), s.endpoint_ports.end(),
                       [](const auto& p) { return p.publish_mode == model::PublishMode::ingress; });
}

std::optional<Ipv4Prefix> range_of(const Network& n) {
    if (n.spec.ipam.empty() || n.spec.ipam.front().ip_range.empty()) return std::nullopt;
    return model::parse_ipv4_prefix(n.spec.ipam.front().ip_range);
}

void add_address(std::vector<std::uint32_t>& out, std::string_view cidr_or_ip) {
    auto slash = cidr_or_ip.find('/');
    if (auto a = model::parse_ipv4(cidr_or_ip.substr(0, slash))) out.push_back(*a);
}

}  // namespace

bool is_host_mode(const model::Service& s, const std::vector<Network>& networks) {
    const auto& list = model::service_networks(s.spec);
    if (list.size() != 1) return false;
    const auto* n = by_id(networks, list.front().target);
    return n != nullptr && n->spec.driver == "host";
}

std::vector<std::string> attached_network_ids(const model::Service& s,
                                              const std::vector<Network>& networks) {
    std::vector<std::string> out;
    for (const auto& a : model::service_networks(s.spec)) {
        const auto* n = by_id(networks, a.target);
        if (n != nullptr && n->spec.driver != "host") out.push_back(n->meta.id);
    }
    if (publishes_ingress(s))
        for (const auto& n : networks)
            if (n.spec.ingress && std::find(out.begin(), out.end(), n.meta.id) == out.end())
                out.push_back(n.meta.id);
    // Host-mode ports need an address on the node to map to: without a network of its own the
    // task joins the node's bridge network, as Docker's tasks join its default bridge.
    bool host_ports = std::any_of(s.endpoint_ports.begin(), s.endpoint_ports.end(), [](auto& p) {
        return p.publish_mode == model::PublishMode::host;
    });
    if (out.empty() && host_ports && !is_host_mode(s, networks))
        for (const auto& n : networks)
            if (n.spec.name == model::bridge_network_name) out.push_back(n.meta.id);
    return out;
}

std::vector<std::uint32_t> used_addresses(const Network& n,
                                          const std::vector<model::Service>& services,
                                          const std::vector<const model::Task*>& tasks) {
    auto out = reserved_addresses(n);
    for (const auto& s : services)
        for (const auto& v : s.virtual_ips)
            if (v.network_id == n.meta.id) add_address(out, v.addr);
    for (const auto* t : tasks) {
        if (model::is_terminal(t->status.state)) continue;
        for (const auto& a : t->networks)
            if (a.network_id == n.meta.id) add_address(out, a.address);
    }
    return out;
}

std::vector<std::string> allocate_task_networks(
    std::map<std::string, model::Task, std::less<>>& tasks,
    const std::vector<model::Service>& services, const std::vector<Network>& networks,
    std::map<std::string, std::string>* failed) {
    std::vector<std::string> changed;
    std::vector<const model::Task*> all;
    for (const auto& [id, t] : tasks) all.push_back(&t);
    // Per network, what is taken; grown as this pass allocates.
    std::map<std::string, std::vector<std::uint32_t>> used;
    for (auto& [id, t] : tasks) {
        if (t.networks_allocated || model::is_terminal(t.status.state)) continue;
        auto svc = std::find_if(services.begin(), services.end(),
                                [&](const auto& s) { return s.meta.id == t.service_id; });
        if (svc == services.end()) continue;
        model::Task next = t;
        next.host_ports.clear();
        for (const auto& p : svc->endpoint_ports)
            if (p.publish_mode == model::PublishMode::host) next.host_ports.push_back(p);
        next.networks.clear();
        if (is_host_mode(*svc, networks)) next.network_mode = "host";
        bool complete = true;
        for (const auto& nid : attached_network_ids(*svc, networks)) {
            const auto* n = by_id(networks, nid);
            auto subnet = model::parse_ipv4_prefix(n->subnet);
            if (!subnet) continue;
            auto it = used.find(nid);
            if (it == used.end()) it = used.emplace(nid, used_addresses(*n, services, all)).first;
            auto a = network_alloc::free_address(*subnet, range_of(*n), it->second);
            if (!a) {
                if (failed) (*failed)[id] = n->spec.name;
                complete = false;
                break;
            }
            it->second.push_back(*a);
            model::TaskNetworkAttachment att{
                nid, fmt::format("{}/{}", model::format_ipv4(*a), subnet->length), {}};
            for (const auto& cfg : model::service_networks(svc->spec))
                if (cfg.target == nid) att.aliases = cfg.aliases;
            next.networks.push_back(std::move(att));
        }
        if (!complete) continue;
        next.networks_allocated = true;
        t = std::move(next);
        changed.push_back(id);
    }
    return changed;
}

std::optional<std::vector<model::VirtualIp>> plan_virtual_ips(
    const model::Service& s, const std::vector<model::Service>& services,
    const std::vector<Network>& networks, const std::vector<const model::Task*>& tasks) {
    std::vector<model::VirtualIp> want;
    if (s.spec.endpoint.mode == "vip") {
        for (const auto& nid : attached_network_ids(s, networks)) {
            auto have = std::find_if(s.virtual_ips.begin(), s.virtual_ips.end(),
                                     [&](const auto& v) { return v.network_id == nid; });
            if (have != s.virtual_ips.end()) {
                want.push_back(*have);
                continue;
            }
            const auto* n = by_id(networks, nid);
            auto subnet = model::parse_ipv4_prefix(n->subnet);
            if (!subnet) continue;
            auto used = used_addresses(*n, services, tasks);
            for (const auto& v : want) add_address(used, v.addr);
            auto a = network_alloc::free_address(*subnet, range_of(*n), used);
            if (!a) continue;  // no VIP on a full network; retried on the next pass
            want.push_back({nid, fmt::format("{}/{}", model::format_ipv4(*a), subnet->length)});
        }
    }
    if (want == s.virtual_ips) return std::nullopt;
    return want;
}

}  // namespace coffer::manager
