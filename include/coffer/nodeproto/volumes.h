// The node's named volumes: what a node reports (in "status", the optional "volumes" field) and
// their removal, asked by the manager and answered by the node.
//
// node -> manager, in "status": "volumes":[{"name","mountpoint","created_at","labels"}]
// manager -> node: {"type":"volume_remove","request","name"}
// node -> manager: {"type":"volume_removed","request","name"[,"error","code"]}
#pragma once

#include <cstddef>
#include <map>
#include <string>

#include "coffer/base/error.h"
#include "coffer/crypto/secure_buffer.h"

namespace coffer::nodeproto {

inline constexpr std::size_t max_volume_reports = 4096;  // per status message

struct VolumeReport {
    std::string name;  // model::valid_volume_name
    std::string mountpoint;
    std::string created_at;  // RFC 3339
    std::map<std::string, std::string> labels;
    bool operator==(const VolumeReport&) const = default;
};

// {"type":"volume_remove","request","name"}
struct VolumeRemove {
    std::string request;
    std::string name;
    bool operator==(const VolumeRemove&) const = default;
};
crypto::SecureBuffer encode(const VolumeRemove& m);
// request: 1..max_node_request_id bytes; name: a valid volume name.
Result<VolumeRemove> decode_volume_remove(const crypto::SecureBuffer& text);

// {"type":"volume_removed","request","name"[,"error","code"]}: removed, or why not. code says
// what kind of refusal: "not_found", "in_use" (the node's tasks use it) or "failed".
struct VolumeRemoved {
    std::string request;
    std::string name;
    std::string error;  // empty: removed
    std::string code;
    bool operator==(const VolumeRemoved&) const = default;
};
crypto::SecureBuffer encode(const VolumeRemoved& m);
// request: 1..max_request_id bytes (the manager's own ids); error at most 4096 bytes.
Result<VolumeRemoved> decode_volume_removed(const crypto::SecureBuffer& text);

}  // namespace coffer::nodeproto
