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

// From the task's DNS settings; what they leave out comes from the node's resolv.conf, whose
// loopback nameservers are dropped (they would point into the task's own network namespace).
// With no nameserver left, Docker's defaults: 8.8.8.8 and 8.8.4.4.
std::string resolv_conf(const DnsSettings& dns, std::string_view node_resolv_conf);

}  // namespace coffer::agent
