// Networks in the Docker Engine API's terms (NetworkResource), with what the manager allocates
// for each: its subnet, its VXLAN network identifier, and each node's address on it. IPv4 only.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/fwd.hpp>

#include "coffer/base/error.h"
#include "coffer/model/ipv4.h"
#include "coffer/model/secret.h"

namespace coffer::model {

// The predefined networks: they exist from the cluster's start and cannot be removed.
inline constexpr std::string_view ingress_network_name = "ingress";
inline constexpr std::string_view host_network_name = "host";
// One node's (no VXLAN): the network of a task that publishes host-mode ports and names no
// network of its own, as Docker's default bridge network is.
inline constexpr std::string_view bridge_network_name = "bridge";
inline constexpr std::string_view bridge_subnet = "10.255.0.0/16";
inline constexpr std::string_view ingress_subnet = "10.0.0.0/24";
inline constexpr std::uint32_t ingress_vni = 4096;
inline constexpr std::uint32_t first_vni = 4097;

// IPAM.Config[] as a request gives it.
struct IpamConfig {
    std::string subnet;
    std::string gateway;
    std::string ip_range;
    bool operator==(const IpamConfig&) const = default;
};

struct NetworkSpec {
    std::string name;
    Labels labels;
    std::string driver = "overlay";  // overlay | bridge | host (the predefined one only)
    std::string scope = "swarm";     // swarm | local (host)
    bool internal = false;
    bool attachable = false;
    bool ingress = false;
    Labels options;
    std::string ipam_driver = "default";
    std::vector<IpamConfig> ipam;  // as given (at most one)
    bool operator==(const NetworkSpec&) const = default;
};

struct Network {
    ObjectMeta meta;
    NetworkSpec spec;
    // Allocated at creation (none for host): the subnet ("10.0.1.0/24"), the IPAM gateway
    // (the given one or the subnet's first address), the VNI (overlay, ingress).
    std::string subnet;
    std::string gateway;
    std::uint32_t vni = 0;
    // Each node's own address on the network (its bridge's), by node ID, as "10.0.1.2".
    std::map<std::string, std::string> node_addresses;
    bool predefined() const noexcept {
        return spec.name == ingress_network_name || spec.name == host_network_name ||
               spec.name == bridge_network_name;
    }
};

// The network create request (Docker's NetworkCreateRequest), checked field by field: what coffer
// cannot do is refused naming the field; unknown fields are refused. warnings receives what the
// answer's Warning must say.
Result<NetworkSpec> network_spec_from_request(const boost::json::value& body,
                                              std::vector<std::string>& warnings);

// Docker's NetworkResource (GET /networks, /networks/{id}).
boost::json::object to_json(const Network& n);
// Swarm's Network object, as a task's NetworksAttachments[].Network shows it.
boost::json::object swarm_network_json(const Network& n);
// The store's record: the resource plus what is allocated.
boost::json::object network_record(const Network& n);
Result<Network> network_from_record(const boost::json::value& v);

// A network name: [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 255 bytes.
Result<void> validate_network_name(std::string_view name);

}  // namespace coffer::model
