// What this node tells the manager about itself when its session opens: its platform, the CPUs
// and memory it has, and the generic resources it was configured with, as dockerd reports them
// (Architecture as uname's machine, NanoCPUs from the CPUs this process may use, MemoryBytes
// from MemTotal).
#pragma once

#include <string_view>
#include <vector>

#include "coffer/base/error.h"
#include "coffer/nodeproto/session.h"

namespace coffer::agent {

// "NAME=VALUE" as dockerd's --node-generic-resource reads it: an integer VALUE is a discrete
// count ("ssd=3"), anything else names one unit ("gpu=GPU-4f2a"). invalid_argument naming the
// rule the text breaks.
Result<model::GenericResource> parse_generic_resource(std::string_view text);

// The host's description with the configured generic resources.
Result<nodeproto::DescriptionMessage> describe_host(std::vector<model::GenericResource> generic);

}  // namespace coffer::agent
