// node -> manager "status": the node's task states.
// {"type":"status","complete":bool,"statuses":[{"task_id","state","message","err",
//  "container_id","pid","exit_code","health","secrets","reads"}][,"volumes":[{"name","mountpoint","created_at",
//  "labels"}]]}
// health (optional): "starting", "healthy" or "unhealthy", for a task with a health check.
// States are the ones a node reports (preparing, starting, running, complete, failed, shutdown,
// rejected).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "coffer/base/error.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/model/service.h"
#include "coffer/nodeproto/volumes.h"

namespace coffer::nodeproto {

inline constexpr std::size_t max_status_reports = 10'000;  // per message
inline constexpr std::size_t max_status_text = 4096;       // message, err

// What a task read of one secret version (from a mount that counts reads: FUSE).
struct SecretReadReport {
    std::string secret;  // "<secret id>@<version>"
    std::uint64_t reads = 0;
    std::int64_t first_read_ns = 0;  // Unix time; 0: no read yet
    std::int64_t last_read_ns = 0;
    bool operator==(const SecretReadReport&) const = default;
};

struct TaskReport {
    std::string task_id;
    model::TaskState state = model::TaskState::new_;
    std::string message;
    std::string err;  // never secret bytes
    // Encoded only when set (container_id, pid, exit_code, health when not empty); decoded when
    // any of them is present.
    std::optional<model::ContainerStatus> container;
    // "secrets": the secret versions the task's mount holds now, "<secret id>@<version>"
    // (encoded when not empty; at most 256). The manager's delivery record comes from it.
    std::vector<std::string> secrets;
    // "reads": [{"secret","reads","first","last"}], per secret version its mount counts reads of
    // (encoded when not empty; at most 256; first <= last).
    std::vector<SecretReadReport> reads;
};

struct StatusMessage {
    // Every task the node has: its first report on a session.
    bool complete = false;
    std::vector<TaskReport> statuses;
    // The node's named volumes, all of them, when it reports volumes (absent: it said nothing
    // about them, as nodes from before volumes).
    std::optional<std::vector<VolumeReport>> volumes;
};

crypto::SecureBuffer encode(const StatusMessage& m);
// invalid_argument "malformed message: ..." with what is wrong, never quoting field values. A
// state the node may not report, an invalid task id, a field of the wrong type or too long: the
// whole message is refused.
Result<StatusMessage> decode_status(const crypto::SecureBuffer& text);

}  // namespace coffer::nodeproto
