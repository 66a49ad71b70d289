// The small session messages: certificate renewal, task logs, errors, the cluster's managers.
// Each is one JSON object with its "type"; fields coffer does not know are ignored on decode.
//
// manager -> node: certificate, renew_request, logs_request, error, managers
// node -> manager: renew, logs, description
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "coffer/base/error.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/model/service.h"

namespace coffer::nodeproto {

inline constexpr std::size_t max_request_id = 64;        // as the manager makes and reads them
inline constexpr std::size_t max_node_request_id = 128;  // as a node accepts them

// {"type":"certificate","certificate","ca_bundle"}: a renewed certificate (leaf + chain, PEM)
// and the CA bundle.
struct CertificateMessage {
    std::string certificate;
    std::string ca_bundle;
    bool operator==(const CertificateMessage&) const = default;
};
crypto::SecureBuffer encode(const CertificateMessage& m);
// Both fields must be strings.
Result<CertificateMessage> decode_certificate(const crypto::SecureBuffer& text);

// {"type":"renew_request","reason"}: the manager wants a new CSR now.
struct RenewRequest {
    std::string reason;
    bool operator==(const RenewRequest&) const = default;
};
crypto::SecureBuffer encode(const RenewRequest& m);
// A missing or non-string reason is empty.
Result<RenewRequest> decode_renew_request(const crypto::SecureBuffer& text);

// {"type":"renew","csr"}: the node's certificate request (PEM).
struct Renew {
    std::string csr;
    bool operator==(const Renew&) const = default;
};
crypto::SecureBuffer encode(const Renew& m);
// csr must be a non-empty string.
Result<Renew> decode_renew(const crypto::SecureBuffer& text);

// {"type":"error","message"[,"request"]}: a refused request (with its request id) or a refused
// renew (without).
struct ErrorMessage {
    std::string message;
    std::optional<std::string> request;
    bool operator==(const ErrorMessage&) const = default;
};
crypto::SecureBuffer encode(const ErrorMessage& m);
// A missing message is empty; a request that is not a string is refused.
Result<ErrorMessage> decode_error(const crypto::SecureBuffer& text);

// A logs request's id: the manager sends strings; a node echoes whatever string or integer it got.
using RequestId = std::variant<std::string, std::int64_t, std::uint64_t>;

// {"type":"logs_request","request","task_id","tail"}: the last tail lines (0: all) of a task's log.
struct LogsRequest {
    RequestId request;
    std::string task_id;
    std::uint64_t tail = 0;
    // Decode only: why the node must refuse it ("invalid task id" (task_id is then empty), or
    // "tail must be a non-negative integer"); the request id is good, so it can answer.
    std::optional<std::string> invalid;
};
crypto::SecureBuffer encode(const LogsRequest& m);
// invalid_argument when the request id is missing or not a string of at most
// max_node_request_id bytes or an integer: there is nothing to answer to.
Result<LogsRequest> decode_logs_request(const crypto::SecureBuffer& text);

// {"type":"logs","request","task_id","data" (base64) | "error"}: the answer to a logs_request.
struct LogsReply {
    RequestId request;
    std::string task_id;
    std::string data;  // the log's bytes (not secret: a task's output)
    std::optional<std::string>
        error;  // the node could not read the log (data is then empty and not sent)
    bool operator==(const LogsReply&) const = default;
};
crypto::SecureBuffer encode(const LogsReply& m);
// request must be a non-empty string of at most max_request_id bytes (the manager's own ids);
// data must be base64; one of data and error must be there.
Result<LogsReply> decode_logs_reply(const crypto::SecureBuffer& text);

// {"type":"description","os","architecture","nano_cpus","memory_bytes","generic":[{"kind",
// "value"} | {"kind","count"}]}: what the node is and has (platform, CPUs and memory, and the
// generic resources it was configured with), sent when its session opens. The scheduler places
// tasks by it; the manager shows it as the node's Description.
struct DescriptionMessage {
    std::string os;
    std::string architecture;
    std::int64_t nano_cpus = 0;
    std::int64_t memory_bytes = 0;
    std::vector<model::GenericResource> generic;  // named ("value") or discrete ("count")
    bool operator==(const DescriptionMessage&) const = default;
};
inline constexpr std::size_t max_generic_resources = 256;
crypto::SecureBuffer encode(const DescriptionMessage& m);
// os and architecture: 1-32 of [a-z0-9_]; nano_cpus and memory_bytes non-negative integers;
// at most max_generic_resources resources, kinds 1-64 of [A-Za-z0-9_.-], named values 1-128
// printable characters without ',' or '=', counts positive.
Result<DescriptionMessage> decode_description(const crypto::SecureBuffer& text);

// {"type":"managers","managers":["HOST:PORT",...]}: every manager of the cluster, whose node
// ports a node may connect to when its own manager goes away.
struct ManagersMessage {
    std::vector<std::string> managers;
    bool operator==(const ManagersMessage&) const = default;
};
inline constexpr std::size_t max_managers = 64;
// HOST:PORT as a manager's node port is named: a host of 1-253 of [A-Za-z0-9._-] or an IPv6
// literal in brackets, and a decimal port 1-65535.
bool valid_manager_address(std::string_view host_port);
crypto::SecureBuffer encode(const ManagersMessage& m);
// managers must be an array of at most max_managers strings, each valid_manager_address.
Result<ManagersMessage> decode_managers(const crypto::SecureBuffer& text);

}  // namespace coffer::nodeproto
