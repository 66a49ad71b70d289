// The names a task may resolve (resolver.h), and the node's own nameservers.
#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <cstring>

#include "coffer/agent/resolver.h"

namespace coffer::agent {
namespace {

bool parse_ipv4(const std::string& text, dns::Ipv4& out) {
    in_addr a{};
    if (::inet_pton(AF_INET, text.c_str(), &a) != 1) return false;
    std::memcpy(out.data(), &a.s_addr, 4);
    return true;
}

std::uint32_t host_order(const dns::Ipv4& a) {
    return (std::uint32_t{a[0]} << 24) | (std::uint32_t{a[1]} << 16) | (std::uint32_t{a[2]} << 8) |
           std::uint32_t{a[3]};
}

std::string lower(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (!out.empty() && out.back() == '.') out.pop_back();
    return out;
}

}  // namespace

NameTable::NameTable(const nodeproto::NetworksMessage& m) {
    for (const auto& net : m.networks) {
        if (network_index_.contains(net.id)) continue;
        std::size_t index = networks_.size();
        network_index_.emplace(net.id, index);
        Network& n = networks_.emplace_back();
        n.internal = net.internal;
        auto add = [&n](const std::string& name, Entry e) {
            if (name.empty() || e.addresses.empty()) return;
            n.names.emplace(lower(name), std::move(e));  // the first one named so keeps it
        };
        for (const auto& svc : net.services) {
            Entry tasks{{}, task_address_ttl};
            for (const auto& t : svc.tasks) {
                dns::Ipv4 a{};
                if (!parse_ipv4(t.address, a)) continue;
                tasks.addresses.push_back(a);
                n.task_by_address.emplace(host_order(a), t.id);
                auto& nets = task_networks_[t.id];
                if (std::find(nets.begin(), nets.end(), index) == nets.end()) nets.push_back(index);
                add(t.name, Entry{{a}, task_address_ttl});
            }
            Entry service = tasks;
            if (svc.endpoint_mode != "dnsrr") {
                service = Entry{{}, vip_ttl};
                dns::Ipv4 vip{};
                if (parse_ipv4(svc.vip, vip)) service.addresses.push_back(vip);
            }
            add(svc.name, service);
            add("tasks." + svc.name, tasks);
            for (const auto& alias : svc.aliases) {
                add(alias, service);
                add("tasks." + alias, tasks);
            }
        }
    }
}

NameTable::Answer NameTable::lookup(std::string_view network_id, std::uint32_t source,
                                    std::string_view name) const {
    Answer a;
    auto ni = network_index_.find(std::string(network_id));
    if (ni == network_index_.end()) return a;
    const auto& by_address = networks_[ni->second].task_by_address;
    auto ti = by_address.find(source);
    if (ti == by_address.end()) return a;
    const auto& nets = task_networks_.at(ti->second);
    a.kind = Answer::Kind::unknown;
    for (std::size_t i : nets) a.forward = a.forward || !networks_[i].internal;
    for (std::size_t i : nets) {
        auto e = networks_[i].names.find(std::string(name));
        if (e == networks_[i].names.end()) continue;
        a.kind = Answer::Kind::found;
        a.addresses = e->second.addresses;
        a.ttl = e->second.ttl;
        break;
    }
    return a;
}

std::vector<std::string> nameservers_from(std::string_view text) {
    std::vector<std::string> out;
    while (!text.empty() && out.size() < 3) {
        auto eol = text.find('\n');
        std::string_view line = text.substr(0, eol);
        text = eol == std::string_view::npos ? std::string_view{} : text.substr(eol + 1);
        auto word = [&line]() {
            auto b = line.find_first_not_of(" \t\r");
            if (b == std::string_view::npos) return std::string_view{};
            line.remove_prefix(b);
            auto e = line.find_first_of(" \t\r");
            std::string_view w = line.substr(0, e);
            line.remove_prefix(w.size());
            return w;
        };
        if (word() != "nameserver") continue;
        std::string addr(word());
        in_addr a4{};
        in6_addr a6{};
        if (::inet_pton(AF_INET, addr.c_str(), &a4) == 1) {
            if ((ntohl(a4.s_addr) >> 24) == 127) continue;  // a local stub: not reachable for tasks
        } else if (::inet_pton(AF_INET6, addr.c_str(), &a6) == 1) {
            if (IN6_IS_ADDR_LOOPBACK(&a6)) continue;
        } else {
            continue;
        }
        out.push_back(std::move(addr));
    }
    return out;
}

}  // namespace coffer::agent
