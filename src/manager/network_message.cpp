// The `networks` session message a node gets (nodeproto/networks.h), built from the records.
#include <algorithm>
#include <set>

#include "coffer/manager/networks.h"

namespace coffer::manager {

using model::Network;

namespace {

std::string without_prefix(std::string_view cidr) {
    return std::string(cidr.substr(0, cidr.find('/')));
}

std::string network_task_name(const model::Task& t) {
    return t.slot ? fmt::format("{}.{}.{}", t.service_name, t.slot, t.meta.id)
                  : fmt::format("{}.{}.{}", t.service_name, t.node_id, t.meta.id);
}

const model::TaskNetworkAttachment* attachment(const model::Task& t, std::string_view network) {
    for (const auto& a : t.networks)
        if (a.network_id == network) return &a;
    return nullptr;
}

bool running(const model::Task& t) {
    return t.status.state == model::TaskState::running && t.desired == model::TaskState::running;
}

}  // namespace

std::string underlay_address(std::string_view addr) {
    auto colon = addr.rfind(':');
    auto host = colon == std::string_view::npos ? addr : addr.substr(0, colon);
    return model::parse_ipv4(host) ? std::string(host) : std::string();
}

nodeproto::NetworksMessage networks_message(const std::string& node_id,
                                            const std::vector<Network>& networks,
                                            const std::vector<model::Service>& services,
                                            const std::vector<model::Task>& tasks,
                                            const std::vector<model::Node>& nodes) {
    nodeproto::NetworksMessage m;
    std::set<std::string> wanted;
    for (const auto& t : tasks) {
        if (t.node_id != node_id || t.desired != model::TaskState::running ||
            t.status.state < model::TaskState::assigned || model::is_terminal(t.status.state))
            continue;
        for (const auto& a : t.networks) wanted.insert(a.network_id);
    }
    bool ingress_ports = std::any_of(services.begin(), services.end(), [](const auto& s) {
        return std::any_of(s.endpoint_ports.begin(), s.endpoint_ports.end(), [](const auto& p) {
            return p.publish_mode == model::PublishMode::ingress;
        });
    });
    const Network* ingress = nullptr;
    for (const auto& n : networks) {
        if (n.spec.ingress) ingress = &n;
        if (n.spec.ingress && ingress_ports) wanted.insert(n.meta.id);
    }
    for (const auto& n : networks) {
        if (!wanted.count(n.meta.id) || n.spec.driver == "host") continue;
        auto own = n.node_addresses.find(node_id);
        if (own == n.node_addresses.end()) continue;
        nodeproto::NetworkPayload p;
        p.id = n.meta.id;
        p.name = n.spec.name;
        p.driver = n.spec.driver;
        p.subnet = n.subnet;
        p.gateway = own->second;
        p.vni = n.vni;
        p.internal = n.spec.internal;
        p.ingress = n.spec.ingress;
        if (n.spec.driver == "overlay")
            for (const auto& [peer, addr] : n.node_addresses) {
                if (peer == node_id) continue;
                auto node = std::find_if(nodes.begin(), nodes.end(),
                                         [&](const auto& x) { return x.meta.id == peer; });
                if (node == nodes.end()) continue;
                auto underlay = underlay_address(node->addr);
                if (!underlay.empty() &&
                    std::find(p.peers.begin(), p.peers.end(), underlay) == p.peers.end())
                    p.peers.push_back(std::move(underlay));
            }
        std::sort(p.peers.begin(), p.peers.end());
        for (const auto& s : services) {
            auto ids = attached_network_ids(s, networks);
            if (std::find(ids.begin(), ids.end(), n.meta.id) == ids.end()) continue;
            nodeproto::NetworkService ns;
            ns.id = s.meta.id;
            ns.name = s.spec.name;
            ns.endpoint_mode = s.spec.endpoint.mode;
            for (const auto& v : s.virtual_ips)
                if (v.network_id == n.meta.id) ns.vip = without_prefix(v.addr);
            // Not resolvable until the orchestrator gave it its VIP here.
            if (ns.endpoint_mode == "vip" && ns.vip.empty()) continue;
            for (const auto& cfg : model::service_networks(s.spec))
                if (cfg.target == n.meta.id) ns.aliases = cfg.aliases;
            for (const auto& t : tasks) {
                if (t.service_id != s.meta.id || !running(t)) continue;
                if (const auto* a = attachment(t, n.meta.id))
                    ns.tasks.push_back(
                        {t.meta.id, network_task_name(t), without_prefix(a->address)});
            }
            p.services.push_back(std::move(ns));
        }
        m.networks.push_back(std::move(p));
    }
    bool have_ingress =
        ingress != nullptr && std::any_of(m.networks.begin(), m.networks.end(),
                                          [&](const auto& p) { return p.id == ingress->meta.id; });
    if (have_ingress)
        for (const auto& s : services)
            for (const auto& port : s.endpoint_ports) {
                if (port.publish_mode != model::PublishMode::ingress) continue;
                nodeproto::IngressPort ip;
                ip.service_id = s.meta.id;
                ip.protocol = port.protocol;
                ip.published_port = static_cast<std::uint16_t>(port.published_port);
                ip.target_port = static_cast<std::uint16_t>(port.target_port);
                for (const auto& t : tasks) {
                    if (t.service_id != s.meta.id || !running(t)) continue;
                    if (const auto* a = attachment(t, ingress->meta.id))
                        ip.backends.push_back(without_prefix(a->address));
                }
                m.ingress.push_back(std::move(ip));
            }
    return m;
}

}  // namespace coffer::manager
