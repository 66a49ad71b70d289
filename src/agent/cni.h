// Runs a chain of CNI plugins for one interface of a task, as the CNI specification (1.0) says
// and as libcni runs a network configuration list: ADD through the plugins in order, each given
// the one before's result as prevResult; DEL in reverse order, each given the result of the ADD,
// which is cached in a file of the task's own until the DEL succeeded.
#pragma once

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <string>

#include "coffer/base/error.h"

namespace coffer::agent {

inline constexpr const char* default_cni_path = "/usr/lib/cni";

struct CniAttachment {
    std::string network_name;  // the configuration list's "name"
    std::string container_id;  // CNI_CONTAINERID
    std::string netns;         // CNI_NETNS
    std::string ifname;        // CNI_IFNAME
    // Each plugin's configuration ("type" and its own keys); name and cniVersion are added.
    boost::json::array plugins;
    // Capability arguments ({"portMappings":[...]}): a plugin gets the ones its "capabilities"
    // ask for, as "runtimeConfig".
    boost::json::object capability_args;
};

// ADD of the chain. The cache file records the configuration before the first plugin runs and
// the result once the last one returned, so that cni_del can undo a chain that failed half-way or
// whose agent died. The error names the plugin and the CNI error's msg and details.
Result<boost::json::value> cni_add(const std::string& cni_path, const CniAttachment& a,
                                   const std::string& cache_file);

// DEL of the chain recorded in the cache file (a missing file: nothing to do), with CNI_NETNS
// empty when the namespace is gone (the plugins then remove what they keep outside it). Every
// plugin runs even when one fails; the cache file goes once all succeeded. The first failure is
// returned.
Result<void> cni_del(const std::string& cni_path, const std::string& cache_file);

}  // namespace coffer::agent
