// POST /join on the node port: a node's request to join the cluster, and the manager's answer.
//   request: {"version":1,"token","csr"[,"hostname"]}   (the token is a secret: secure memory)
//   answer:  {"node_id","certificate","ca_bundle"}
// A refusal is an HTTP error status with {"message"}, as everywhere on the node port.
#pragma once

#include <cstdint>
#include <string>

#include "coffer/base/error.h"
#include "coffer/crypto/secure_buffer.h"

namespace coffer::nodeproto {

inline constexpr std::size_t max_hostname = 253;

struct JoinRequest {
    std::uint64_t version = 0;   // protocol_version when encoding; 1 when a body has none
    crypto::SecureBuffer token;  // COFFERTKN-1-...
    std::string csr;             // PEM
    std::string hostname;        // empty: not given (the manager then uses the certificate's)
};
// In secure memory; version is always written.
crypto::SecureBuffer encode(const JoinRequest& m);
// invalid_argument: "join request is not JSON", the version refusal of check_version (before
// anything else is read), "join request needs token and csr", or the hostname rule (1-253
// characters of letters, digits, '.', '-', '_').
Result<JoinRequest> decode_join_request(const crypto::SecureBuffer& text);

struct JoinAnswer {
    std::string node_id;
    std::string certificate;  // leaf + chain, PEM
    std::string ca_bundle;
    bool operator==(const JoinAnswer&) const = default;
};
std::string encode(const JoinAnswer& m);
// invalid_argument "the manager's answer is not JSON" or "... is incomplete".
Result<JoinAnswer> decode_join_answer(std::string_view text);

}  // namespace coffer::nodeproto
