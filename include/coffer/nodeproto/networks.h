// manager -> node "networks": the networks a node's tasks are attached to (and the ingress network
// when any service publishes a port in ingress mode), with what the node needs to wire them and to
// answer its tasks' name lookups. Sent whole, whenever it changes; the node makes its state match
// (creates what is new, removes what is gone).
//
// {"type":"networks","Sequence":N,
//  "Networks":[{"ID","Name","Driver":"overlay"|"bridge","Subnet":"10.0.1.0/24",
//    "Gateway":"10.0.1.2" (this node's own address on the network, on its bridge),
//    "VNI":4097 (overlay),"MTU":1450,"Internal":bool,"Ingress":bool,
//    "Peers":["192.0.2.6",...] (the other nodes' underlay addresses, overlay only),
//    "Services":[{"ID","Name","EndpointMode":"vip"|"dnsrr","VIP":"10.0.1.3" ("" for dnsrr),
//       "Aliases":[...],
//       "Tasks":[{"ID","Name":"<service>.<slot>.<task id>","Address":"10.0.1.7"}]}]}],
//  "Ingress":[{"ServiceID","Protocol":"tcp"|"udp","PublishedPort","TargetPort",
//    "Backends":["10.0.0.5",...] (addresses on the ingress network of running tasks)}]}
//
// Services lists the services attached to the network with their running tasks only: what a
// task on the network may resolve by name (<service>, its aliases, tasks.<service>) and reach by
// the VIP.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "coffer/base/error.h"
#include "coffer/crypto/secure_buffer.h"

namespace coffer::nodeproto {

inline constexpr std::size_t max_networks = 1024;            // per message
inline constexpr std::size_t max_network_services = 10'000;  // per network
inline constexpr std::size_t max_network_tasks = 100'000;    // per service

struct NetworkTask {
    std::string id;
    std::string name;     // <service>.<slot>.<task id> (global: <service>.<node id>.<task id>)
    std::string address;  // IPv4, in the network's subnet
    bool operator==(const NetworkTask&) const = default;
};

struct NetworkService {
    std::string id;
    std::string name;
    std::string endpoint_mode = "vip";  // "vip" | "dnsrr"
    std::string vip;                    // IPv4 in the subnet; empty for dnsrr
    std::vector<std::string> aliases;   // Networks[].Aliases of the service on this network
    std::vector<NetworkTask> tasks;
    bool operator==(const NetworkService&) const = default;
};

struct NetworkPayload {
    std::string id;
    std::string name;
    std::string driver = "overlay";  // "overlay" | "bridge"
    std::string subnet;              // IPv4 CIDR
    std::string gateway;             // this node's address on the network (its bridge's)
    std::uint32_t vni = 0;           // overlay: 1..16777215
    std::uint32_t mtu = 1450;
    bool internal = false;           // no route out of the network
    bool ingress = false;            // the routing mesh's network
    std::vector<std::string> peers;  // overlay: the other nodes' underlay IPv4 addresses
    std::vector<NetworkService> services;
    bool operator==(const NetworkPayload&) const = default;
};

// A port published in ingress mode: every node answers on PublishedPort and forwards to one of
// the backends' TargetPort.
struct IngressPort {
    std::string service_id;
    std::string protocol = "tcp";  // "tcp" | "udp"
    std::uint16_t published_port = 0;
    std::uint16_t target_port = 0;
    std::vector<std::string> backends;  // addresses on the ingress network
    bool operator==(const IngressPort&) const = default;
};

struct NetworksMessage {
    std::uint64_t sequence = 0;  // 1, 2, ... per session
    std::vector<NetworkPayload> networks;
    std::vector<IngressPort> ingress;
    bool operator==(const NetworksMessage&) const = default;
};

crypto::SecureBuffer encode(const NetworksMessage& m);
// invalid_argument "malformed message: ..." naming what is wrong: every address, subnet, name and
// number is checked (an address outside its network's subnet, a VNI out of range, a name that is
// not a DNS label, ...); the whole message is refused.
Result<NetworksMessage> decode_networks(const crypto::SecureBuffer& text);

}  // namespace coffer::nodeproto
