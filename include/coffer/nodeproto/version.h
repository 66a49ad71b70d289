// The node protocol's version. A node announces it in its /join body and in the header of its
// session's WebSocket upgrade; the manager refuses a version it does not speak with an error
// that names both, before reading anything else. Manager and agents are upgraded together.
#pragma once

#include <cstdint>
#include <string_view>

#include "coffer/base/error.h"

namespace coffer::nodeproto {

inline constexpr std::uint32_t protocol_version = 1;
// The HTTP header of the session's WebSocket upgrade that carries the node's version.
inline constexpr std::string_view version_header = "Coffer-Node-Protocol";

// Errc::invalid_argument "node protocol version 7 is not supported by this manager (supports 1)"
// for any version but protocol_version.
Result<void> check_version(std::uint64_t version);
// The header's text: a decimal version. Absent (empty) is version 1, the version of nodes from
// before it was announced; anything but digits is invalid_argument.
Result<void> check_version_header(std::string_view text);

}  // namespace coffer::nodeproto
