// A long-lived, mutually authenticated session between a node and the manager: a WebSocket over
// TLS 1.3 at /session. Both sides ping when the line is quiet and close it when nothing arrives
// within the idle timeout, so a dead node or manager is noticed on both ends.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "coffer/base/error.h"
#include "coffer/nodeconn/message.h"
#include "coffer/pki/certificate.h"

namespace coffer::nodeconn {

class Session {
  public:
    virtual ~Session() = default;

    // The other end, from its verified certificate.
    virtual const pki::NodeIdentity& peer() const noexcept = 0;
    // The other end's IP address as the socket saw it ("" when unknown).
    virtual const std::string& remote_address() const noexcept = 0;
    // Queues one message (a JSON object with "type"; see message.h). Thread-safe. false when
    // the session is closed or its queue is full; a full queue closes the session, since a peer
    // that does not read must not grow the sender's memory.
    virtual bool send(crypto::SecureBuffer json) = 0;
    // Starts the closing handshake. Thread-safe; idempotent.
    virtual void close() = 0;
    virtual bool closed() const noexcept = 0;
    // When anything (a message, a ping, a pong) last arrived.
    virtual std::chrono::steady_clock::time_point last_seen() const noexcept = 0;
    // Heartbeats (pings and pongs) received so far.
    virtual std::uint64_t heartbeats() const noexcept = 0;
};

// Called on the session's I/O strand: they must not block (hand blocking work to a pool).
struct SessionHandlers {
    std::function<void(const std::shared_ptr<Session>&)> on_open;
    std::function<void(const std::shared_ptr<Session>&, Message)> on_message;
    // Once per session, with why it ended.
    std::function<void(const std::shared_ptr<Session>&, const Error&)> on_close;
};

}  // namespace coffer::nodeconn
