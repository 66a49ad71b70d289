// The iptables rules behind service VIPs (in each task's network namespace) and the routing mesh
// (in the node's), rendered as iptables-restore text and applied with --noflush: coffer's chains
// are declared (so emptied) and refilled in one transaction, and a jump from a built-in chain is
// added only when it is not there yet. Applying the same text twice leaves one copy of each rule.
#pragma once

#include <string>
#include <vector>

#include "coffer/base/error.h"
#include "coffer/nodeproto/networks.h"

namespace coffer::agent {

inline constexpr const char* vip_chain = "COFFER-VIP";
inline constexpr const char* ingress_chain = "COFFER-INGRESS";
inline constexpr const char* ingress_postrouting_chain = "COFFER-INGRESS-POSTROUTING";

// For a task on task_network_ids: nat COFFER-VIP (from OUTPUT) sends each VIP of the services on
// those networks to one of the service's running tasks, chosen at random with equal odds (all
// ports: the address is rewritten, the port kept); filter COFFER-VIP (from OUTPUT) refuses
// connections to a VIP whose service has no running task (TCP reset, ICMP port unreachable).
std::string task_vip_rules(const nodeproto::NetworksMessage& m,
                           const std::vector<std::string>& task_network_ids);

// Applies rules in the network namespace at netns_path (/proc/PID/ns/net, /run/netns/NAME).
Result<void> apply_in_netns(const std::string& netns_path, const std::string& rules);

// The routing mesh on this node: nat COFFER-INGRESS (from PREROUTING and OUTPUT, for traffic to
// a local address) sends each published port to a backend's address and target port, chosen as
// above; nat COFFER-INGRESS-POSTROUTING (from POSTROUTING) masquerades that traffic, so that the
// backend answers through this node. A port with no backend is not redirected.
std::string node_ingress_rules(const nodeproto::NetworksMessage& m);

// Applies rules in the calling thread's network namespace.
Result<void> apply_node_rules(const std::string& rules);

// Removes COFFER-INGRESS and COFFER-INGRESS-POSTROUTING and every jump to them, in the calling
// thread's network namespace. Nothing to remove is success.
Result<void> remove_node_rules();

}  // namespace coffer::agent
