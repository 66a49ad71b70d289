// The cluster's managers as a node keeps them: the last "managers" list a manager sent, in
// <data_dir>/managers, one HOST:PORT per line, so that an agent that starts again can reach its
// cluster through any of them when the manager it was given is gone.
#pragma once

#include <string>
#include <vector>

#include "coffer/base/error.h"
#include "coffer/nodeconn/client.h"

namespace coffer::agent {

std::string managers_path(const std::string& data_dir);

struct StoredManagers {
    std::vector<nodeconn::Endpoint> managers;  // in the file's order, each once
    std::vector<std::string> ignored;          // why each malformed line was left out
};

// Reads <data_dir>/managers: an absent file is an empty list; a line that is not HOST:PORT (as
// nodeproto::valid_manager_address says) is left out and named in `ignored`, as are lines past
// nodeproto::max_managers. Refuses a symlink, anything but a regular file and a file over 64 KiB.
Result<StoredManagers> load_managers(const std::string& data_dir);

// Replaces <data_dir>/managers with these addresses: written to a temporary file (0600) beside
// it, fsynced, renamed over it (a symlink in its place is replaced, never followed), then the
// directory fsynced. invalid_argument for an address that is not HOST:PORT.
Result<void> store_managers(const std::string& data_dir, const std::vector<std::string>& managers);

}  // namespace coffer::agent
