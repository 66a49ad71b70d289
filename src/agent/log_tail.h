// The end of a task's log, for the manager's logs requests.
#pragma once

#include <cstddef>
#include <string>

#include "coffer/base/error.h"

namespace coffer::agent {

// The last `lines` lines (0: all) of path's rotation (path + ".1") followed by path, at most
// max_bytes of them: when the bound cuts a line, that partial line is left out. Missing files
// count as empty; other failures are errors ("read <path>: <reason>"). Files are opened
// O_NOFOLLOW.
Result<std::string> read_log_tail(const std::string& path, std::size_t lines,
                                  std::size_t max_bytes);

}  // namespace coffer::agent
