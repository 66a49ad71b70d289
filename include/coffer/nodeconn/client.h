// The node's side of the node port: joining a cluster with a token, and the session.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "coffer/base/error.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/nodeconn/server.h"
#include "coffer/nodeconn/session.h"
#include "coffer/nodeconn/tls.h"

namespace coffer::nodeconn {

struct Endpoint {
    std::string host;
    std::uint16_t port = 0;
    bool operator==(const Endpoint&) const = default;
};

// Joins: fetches the CA bundle over TLS that verifies nothing yet, checks its digest against the
// token ("manager's CA does not match the join token"), then, over TLS that verifies the manager
// against that CA, sends the token and the CSR. Blocks, bounded by limits.handshake_timeout per
// connection. The token is never logged or quoted in errors.
// hostname, when given, is how the node names itself (the manager validates it).
Result<JoinResponse> join(const Endpoint& manager, const crypto::SecureBuffer& token_text,
                          std::string_view csr_pem, const Limits& limits = {},
                          std::string_view hostname = {});

// A session from a node to the manager, on its own I/O thread; handlers run there.
class NodeClient {
  public:
    // Connects, verifies the manager (certificate from the pinned CA with the manager's own
    // server identity, pki::verify_manager_certificate, of our cluster; a node's certificate of
    // any role is refused) and opens the session. session()->peer() then names the manager
    // (its CN, role manager). Blocks until then or an error.
    static Result<std::unique_ptr<NodeClient>> connect(const Endpoint& manager,
                                                       Credentials credentials,
                                                       SessionHandlers handlers,
                                                       const Limits& limits = {});
    // Closes the session if open and joins the thread.
    ~NodeClient();

    const std::shared_ptr<Session>& session() const noexcept;

    class Impl;

  private:
    explicit NodeClient(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace coffer::nodeconn
