// What a node connection needs to speak TLS 1.3 with the cluster, and the limits every stream
// on the node port runs under.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>

#include "coffer/crypto/secure_buffer.h"

namespace coffer::nodeconn {

// A node's (or the manager's) certificate and key, and the CA bundle it trusts. Every node, of
// either role, holds a node certificate (a TLS client's) issued by the cluster CA; the manager's
// node port holds the manager's server certificate (pki::CertificateAuthority::
// issue_manager_server).
struct Credentials {
    std::string cert_chain_pem;    // leaf first, then intermediates
    crypto::SecureBuffer key_pem;  // the leaf's private key
    std::string ca_bundle_pem;     // trusted roots (two during CA rotation)

    Credentials clone() const { return {cert_chain_pem, key_pem.clone(), ca_bundle_pem}; }
};

struct Limits {
    // From TCP accept (or connect) until the TLS handshake, the HTTP request and the WebSocket
    // upgrade are done; also bounds the WebSocket closing handshake.
    std::chrono::milliseconds handshake_timeout{10'000};
    // A session that receives nothing (heartbeats included) for this long is closed. Each side
    // pings after half of it without traffic.
    std::chrono::milliseconds idle_timeout{30'000};
    std::size_t max_message_bytes = 4 * 1024 * 1024;  // one WebSocket message
    std::size_t max_request_bytes = 64 * 1024;        // an HTTP request or response body
    std::size_t max_queued_messages = 1024;           // per session; overflow closes it
};

}  // namespace coffer::nodeconn
