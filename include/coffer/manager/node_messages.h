// The session messages the manager reads from nodes and the small ones it writes to them (see
// "The session protocol" in docs/design.md). Assignments are built by the dispatcher.
// Parsing is strict about what coffer acts on: types, sizes, known state names; fields it does
// not know are ignored, so newer agents may add some.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "coffer/base/error.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/manager/dispatcher.h"
#include "coffer/manager/trust.h"

namespace coffer::manager {

inline constexpr std::size_t max_status_reports = 10'000;  // per message
inline constexpr std::size_t max_status_text = 4096;       // message, err
inline constexpr std::size_t max_request_id = 64;

// {"type":"status","complete":bool,"statuses":[{"task_id","state","message","err",
// "container_id","pid","exit_code"}]}. States are the ones a node reports (preparing, starting,
// running, complete, failed, shutdown, rejected); any other is refused. invalid_argument with
// what is wrong, never quoting field values.
struct StatusMessage {
    bool complete = false;
    std::vector<StatusReport> statuses;
};
Result<StatusMessage> parse_status_message(const crypto::SecureBuffer& json);

// {"type":"logs","request","task_id","data" (base64),"error" (optional)}.
struct LogsMessage {
    std::string request;
    std::string task_id;
    std::string data;                  // decoded
    std::optional<std::string> error;  // the node could not read the log
};
Result<LogsMessage> parse_logs_message(const crypto::SecureBuffer& json);

crypto::SecureBuffer logs_request_message(std::string_view request, std::string_view task_id,
                                          std::size_t tail);
// {"type":"renew_request","reason":...}
crypto::SecureBuffer renew_request_message(std::string_view reason);
// {"type":"certificate","certificate":...,"ca_bundle":...}
crypto::SecureBuffer certificate_message(const IssuedCertificate& issued);
// The CSR of a {"type":"renew","csr":...} message; invalid_argument when malformed.
Result<std::string> parse_renew_message(std::string_view json_text);
// {"type":"error","message"[,"request"]}
crypto::SecureBuffer error_message(std::string_view message, std::string_view request = {});

}  // namespace coffer::manager
