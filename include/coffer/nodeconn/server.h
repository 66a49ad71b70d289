// The manager's node port. One TLS 1.3 listener serves:
//   GET  /ca       the CA bundle (no client certificate needed: joining nodes pin it by digest)
//   POST /join     {"token", "csr"} -> {"node_id", "certificate", "ca_bundle"} (no certificate;
//                  429 past the rate of refused joins from its source)
//   GET  /session  WebSocket upgrade; requires a client certificate of this cluster
//   *    /forward/...  a standby manager's API request (forward.h); served only when forward_api
//                  is set
// A client certificate, when presented, must verify against the cluster CA or the handshake
// fails.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "coffer/base/error.h"
#include "coffer/net/http.h"
#include "coffer/net/http_server.h"
#include "coffer/nodeconn/session.h"
#include "coffer/nodeconn/tls.h"
#include "coffer/pki/certificate.h"
#include "coffer/pki/token.h"

namespace coffer::nodeconn {

struct JoinRequest {
    pki::JoinToken token;  // parsed strictly; the handler checks it against the role tokens
    std::string csr_pem;
    std::string remote_address;
    std::string hostname;  // as the node names itself; empty when it did not (checked: 1-253
                           // characters of [A-Za-z0-9._-])
};

struct JoinResponse {
    std::string node_id;
    std::string certificate_pem;  // leaf + chain
    std::string ca_bundle_pem;
};

struct ServerOptions {
    std::string address = "127.0.0.1";
    std::uint16_t port = 0;  // 0: any free port (see NodeServer::port)
    std::string cluster_id;  // session peers must carry it as O
    std::size_t io_threads = 1;
    std::size_t join_threads = 1;  // join handlers may block (store writes)
    // Connections that have not yet presented a cluster certificate (TLS handshake, a request
    // without one). Past this many, new connections are closed at once: a flood of half-open or
    // slow connections cannot take every descriptor, and sessions already open are not touched.
    std::size_t max_unverified_connections = 512;
    // From half of max_unverified_connections on, a source (an IPv4 address, an IPv6 /64) that
    // already holds this many of them is refused, so one source can never hold more than half.
    std::size_t max_unverified_per_source = 32;
    // From accept until the ClientHello has arrived (at most limits.handshake_timeout); the
    // handshake, the request and the upgrade then have limits.handshake_timeout.
    std::chrono::milliseconds hello_timeout{3'000};
    // Refused joins per source: this many, then one per join_interval; past that, the source's
    // joins are refused (429) before they are looked at. Joins that succeed do not count.
    std::size_t join_burst = 32;
    std::chrono::milliseconds join_interval{1'000};
    // Refused connections and joins are logged once per source and kind in this interval, the
    // rest counted into one line when it has passed.
    std::chrono::milliseconds refusal_log_interval{60'000};
    Limits limits;
};

struct ServerHandlers {
    // Runs on a worker thread. Errors map to HTTP status (http_status) and {"message"}.
    std::function<Result<JoinResponse>(JoinRequest)> on_join;
    // Runs on the I/O strand, must be quick: may this (verified) node open a session now? A
    // removed node is refused here.
    std::function<Result<void>(const pki::NodeIdentity&)> authorize;
    SessionHandlers session;
    // Forwarded API requests (forward.h). check_forward runs on the I/O strand and must be quick:
    // does the proof (the request's header) hold for this connection's binding? forward_api
    // (borrowed for the server's lifetime) answers them as it answers its own socket: requests
    // it answers asynchronously from the I/O strand, blocking ones on a pool of forward_threads
    // threads.
    std::function<bool(std::span<const std::uint8_t> binding, std::string_view proof)>
        check_forward;
    net::Service* forward_api = nullptr;
    std::size_t forward_threads = 4;
};

class NodeServer {
  public:
    // Binds and starts serving. Errors: bad credentials, address in use.
    static Result<std::unique_ptr<NodeServer>> start(ServerOptions options, Credentials credentials,
                                                     ServerHandlers handlers);
    // Stops accepting, closes every connection and session, joins the threads.
    ~NodeServer();

    std::uint16_t port() const noexcept;
    // New connections use these (certificate renewal, CA rotation); open ones keep theirs.
    Result<void> update_credentials(Credentials credentials);
    // Closes the sessions of this node (it was removed; authorize refuses it from now on).
    void close_sessions(std::string_view node_id);
    std::size_t session_count() const;

    class Impl;

  private:
    explicit NodeServer(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace coffer::nodeconn
