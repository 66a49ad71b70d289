// The files every task gets from the agent, bound read-only over the image's: /etc/hosts,
// /etc/hostname and /etc/resolv.conf.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "coffer/agent/task.h"

namespace coffer::agent {

// The localhost lines, the task's hostname, then each extra "IP host [aliases...]" line.
std::string hosts_file(std::string_view hostname, const std::vector<std::string>& extra_hosts);
// For a task on networks, as Docker writes it: the localhost lines, then the task's address on
// each network with its hostname (in place of 127.0.1.1), then the extra lines.
std::string hosts_file(std::string_view hostname, const std::vector<std::string>& extra_hosts,
                       const std::vector<std::string>& addresses);

// From the task's DNS settings; what they leave out comes from the node's resolv.conf, whose
// loopback nameservers are dropped (they would point into the task's own network namespace).
// With no nameserver left, Docker's defaults: 8.8.8.8 and 8.8.4.4.
std::string resolv_conf(const DnsSettings& dns, std::string_view node_resolv_conf);
// For a task on networks: its one nameserver is the node's resolver on its first network (which
// forwards other names to the node's resolvers); search from the task's settings or the node's;
// options the task's, with Docker's ndots:0 unless they set ndots.
std::string resolv_conf_for_resolver(const DnsSettings& dns, std::string_view node_resolv_conf,
                                     std::string_view nameserver);

}  // namespace coffer::agent
