// A standby manager's requests of the leading manager's API, over the leader's node port.
//
// A standby (a cofferd on the store on etcd that another cofferd holds) serves the API on its own
// socket by forwarding each request to the leader: `<METHOD> /forward<target>` over TLS 1.3 that
// verifies the leader's server certificate against the cluster CA. The standby proves that it is
// a manager with a MAC, under the managers' forwarding key, of a value exported from this TLS
// connection (RFC 8446 exporter): the key is a record of the store, sealed under its DEKs, so only
// a cofferd that holds the store's keys (the KEK file, or the unlock key) and reaches etcd has it,
// and a proof seen on one connection is worth nothing on another. The leader checks the proof
// from each request's header before it runs anything, and counts a failed one on a new
// connection as a refused join of its source; on a kept connection (the key was rotated since it
// opened) it refuses the request and closes the connection. Either way it reads the refused
// request's body first, so that its answer is not lost to a reset.
//
// The body (which may carry secret bytes) travels in secure memory: the API request's
// X-Registry-Auth, then its body, each behind its length. The answer's body is read into secure
// memory as well and handed to the standby's API server as a secure body.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "coffer/base/error.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/net/http.h"
#include "coffer/nodeconn/tls.h"

namespace coffer::nodeconn {

struct Endpoint;

inline constexpr std::string_view forward_prefix = "/forward";
inline constexpr std::string_view forward_proof_header = "X-Coffer-Forward-Proof";
inline constexpr std::string_view forward_peer_header = "X-Coffer-Forward-Peer";
// On the leader's 401 for a proof that does not hold (the API itself never answers 401).
inline constexpr std::string_view forward_refused_header = "X-Coffer-Forward-Refused";
// The largest forwarded request and answer bodies: the API's own request limit with room to
// spare, and answers as large as a backup of a big store.
inline constexpr std::size_t forward_request_bytes = 2 * 1024 * 1024;
// A connection is kept for further requests (keep-alive): the leader closes it after this long
// without one, and a standby reuses it only within a third of that.
inline constexpr std::chrono::milliseconds forward_idle_timeout{30'000};
inline constexpr std::size_t forward_answer_bytes = 256 * 1024 * 1024;

// The proof, in hex, of key (32 bytes) for a connection's exported binding.
std::string forward_proof(const crypto::SecureBuffer& key, std::span<const std::uint8_t> binding);
// Constant time in the proof: does proof prove key for binding?
bool forward_proof_holds(const crypto::SecureBuffer& key, std::span<const std::uint8_t> binding,
                         std::string_view proof);

// The request as the standby's API server read it, its body and registry auth in one secure
// envelope; and back.
crypto::SecureBuffer forward_envelope(const net::Request& request);
// Errc::invalid_argument when the envelope is malformed.
Result<void> open_forward_envelope(const crypto::SecureBuffer& envelope, net::Request& into);

// A standby's way to the leader: TLS that verifies the leader against the cluster CA, made once
// for a CA bundle and shared by every request (thread-safe).
class Forwarder {
  public:
    static Result<std::unique_ptr<Forwarder>> make(std::string_view ca_bundle_pem);
    ~Forwarder();
    Forwarder(const Forwarder&) = delete;
    Forwarder& operator=(const Forwarder&) = delete;

    using Done = std::function<void(Result<net::Response>)>;
    // Sends request to the leader's node port and calls done once with its answer (any status),
    // without blocking: done runs on the forwarder's thread, or on abandon_all()'s caller. Errors
    // are failures to reach or talk to the leader: Errc::unavailable when the request never
    // reached it (connect, handshake), Errc::unauthenticated when the leader refused the proof
    // (before it read anything), Errc::internal when it may have been carried out (the answer was
    // lost, did not come within answer_timeout, or it was abandoned). Each step takes up to
    // timeout, the answer up to answer_timeout. What the request holds is copied before this
    // returns.
    void send(const Endpoint& leader, const crypto::SecureBuffer& key, const net::Request& request,
              std::chrono::milliseconds timeout, std::chrono::milliseconds answer_timeout,
              Done done) const;
    // Settles every request in flight with Errc::internal ("abandoned"): each exchange still
    // ends by its own deadlines, and its connection is not kept.
    void abandon_all() const;
    // Requests sent and not yet ended (their exchange may outlive their answer).
    std::size_t in_flight() const;
    // Closes the connections kept between requests (the leader or the forwarding key changed).
    void drop_idle() const;

    struct Impl;

  private:
    explicit Forwarder(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace coffer::nodeconn
