// TLS contexts for the node port. Internal: keeps Asio-SSL and OpenSSL out of public headers.
#pragma once

#include <boost/asio/ssl/context.hpp>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "coffer/base/error.h"
#include "coffer/nodeconn/tls.h"
#include "coffer/pki/certificate.h"

namespace coffer::nodeconn::detail {

namespace ssl = boost::asio::ssl;

// The DNS name only the manager's own certificate carries (never a node's, whatever its role);
// clients send it as SNI and verify it.
inline constexpr const char* manager_name = "coffer-manager-server";
static_assert(pki::manager_server_name == manager_name);

// TLS 1.3 only. Presents the manager's certificate; asks for a client certificate and, when one
// is presented, verifies it against the CA bundle, for use by a TLS client (EKU clientAuth), or
// fails the handshake. Whether a request needs one is decided per path.
Result<std::shared_ptr<ssl::context>> server_context(const Credentials& credentials);
// TLS 1.3 only. Presents the node's certificate; verifies the manager against the CA bundle,
// for use by a TLS server (EKU serverAuth) and by the manager's name.
Result<std::shared_ptr<ssl::context>> client_context(const Credentials& credentials);
// For joining, before the node has a certificate: verifies nothing when pinned_ca_pem is empty
// (the CA bundle is checked by digest afterwards), else the manager against it as above.
Result<std::shared_ptr<ssl::context>> join_context(std::string_view pinned_ca_pem);

// The value both ends of this TLS connection export for a forwarded request's proof (32 bytes,
// label "EXPORTER-coffer-forward").
Result<std::array<std::uint8_t, 32>> forward_binding(SSL* ssl);

// The certificates the peer presented, leaf first, as PEM; empty when it presented none.
std::string peer_chain_pem(SSL* ssl, bool server_side);

}  // namespace coffer::nodeconn::detail
