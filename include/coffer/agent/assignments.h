// The manager's "assignments" message in the agent's terms: what to run, with which secrets. The
// message is read by the node protocol's decoder (nodeproto::decode_assignments, where the wire
// form is documented); secret bytes go from the message's secure-memory text straight into
// SecureBuffers and are moved, never copied, into these.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "coffer/agent/task.h"
#include "coffer/base/error.h"
#include "coffer/crypto/secure_buffer.h"

namespace coffer::agent {

inline constexpr std::chrono::milliseconds default_stop_grace{10'000};

// A config travels as a secret does and is held beside the secrets under its store key (config ids
// and secret ids are of the same form, so configs get a prefix no id can start with); its file is
// a SecretRef like a secret's, with an absolute target.
std::string config_store_key(std::string_view config_id);
// A secret version is held under "<id>@<version>" (no id holds '@'), so two versions of one
// secret are apart; version 0 (from a manager without versions) under the id alone.
std::string secret_store_key(std::string_view secret_id, std::uint64_t version);

struct SecretAssignment {
    std::string id;
    std::string name;
    crypto::SecureBuffer data;
};

struct TaskAssignment {
    TaskSpec spec;
    std::string service_id;
    std::chrono::milliseconds stop_grace = default_stop_grace;
    // Sent to the main process after its secret files were replaced in place; empty: none.
    std::string secret_signal;
};

struct Change {
    enum class Action { add, remove };
    Action action = Action::add;
    bool is_secret = false;  // a secret's or a config's change
    std::string id;          // the task's or secret's id, or a config's store key
    // For a valid add, the one that matches is_secret.
    std::optional<TaskAssignment> task;
    std::optional<SecretAssignment> secret;
    // Set when the change could not be read: why (never secret bytes). id is set too when the
    // change named a valid id (a task add with bad fields is then rejected, not lost).
    std::optional<std::string> invalid;
};

struct Assignments {
    bool complete = false;
    std::uint64_t sequence = 0;
    std::vector<Change> changes;
};

// invalid_argument when the message itself is unreadable (not JSON, wrong type, no Changes
// array); a bad change is returned marked invalid and the others are kept.
Result<Assignments> parse_assignments(const crypto::SecureBuffer& text);

}  // namespace coffer::agent
