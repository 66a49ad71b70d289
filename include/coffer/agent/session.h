// The agent's one session to a manager, kept open: reconnects after a loss with capped,
// jittered exponential backoff, and gives up only when the manager says this node was removed.
// It knows every manager of the cluster (the "managers" message) and moves to the next one at
// once when its own cannot be reached; the backoff applies after every one failed in a round.
// It also keeps the node's certificate fresh: it sends "renew" (a CSR for the stored key) at the
// certificate's renewal time and when the manager sends "renew_request", checks and stores the
// "certificate" that comes back, and connects with it from then on.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <vector>

#include "coffer/agent/enrollment.h"
#include "coffer/base/error.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/nodeconn/client.h"
#include "coffer/nodeconn/message.h"
#include "coffer/nodeconn/tls.h"
#include "coffer/nodeproto/session.h"
#include "coffer/pki/certificate.h"

namespace coffer::agent {

struct Backoff {
    std::chrono::milliseconds initial{100};
    std::chrono::milliseconds max{10'000};
    double jitter = 0.2;  // each delay is drawn from [d·(1−jitter), d·(1+jitter)]
    // A session that stayed up this long starts the next round of retries at `initial` again.
    std::chrono::milliseconds stable_after{10'000};
};

// The delays between attempts: initial, doubling up to max, each drawn within ±jitter.
class RetryDelay {
  public:
    explicit RetryDelay(const Backoff& backoff);
    // How long to wait before the next attempt; the one after waits about twice as long.
    std::chrono::milliseconds next();
    // Back to the initial delay (a session stayed up).
    void reset() noexcept;

  private:
    Backoff backoff_;
    std::chrono::milliseconds delay_;
    std::mt19937_64 rng_;  // jitter only: nothing secret depends on it
};

struct SessionOptions {
    // The manager tried first.
    nodeconn::Endpoint manager;
    // The cluster's other managers, tried in this order after `manager`, round robin, when the
    // one tried cannot be reached or its session is lost. A "managers" message replaces them.
    std::vector<nodeconn::Endpoint> other_managers;
    nodeconn::Credentials credentials;
    nodeconn::Limits limits;
    Backoff backoff;

    // Certificate renewal, on when data_dir is set: the identity in <data_dir>/identity (as
    // load_identity returned it, with `credentials` above) is renewed over the session. The
    // last "managers" list is kept in <data_dir>/managers (store_managers).
    std::string data_dir;
    NodeConfig node;  // our node id, cluster id and role
    // When to renew a certificate (tests inject their own).
    std::function<pki::Clock::time_point(const pki::CertificateInfo&)> renewal_time =
        pki::renewal_time;
    // Sent first on every session: what this node is and has (the scheduler places by it).
    std::optional<nodeproto::DescriptionMessage> description;
    // A renew that got no certificate back (an error, or no answer) is sent again after this.
    std::chrono::milliseconds renew_retry{60'000};
};

struct SessionLoopHandlers {
    // A message from the manager, except those the loop handles itself ("certificate",
    // "renew_request", "error" without a "request": the answer to a renew, and "managers").
    // Runs on the session's I/O thread: must not block.
    std::function<void(nodeconn::Message)> on_message;
    // Each time a session opens; on the session's I/O thread.
    std::function<void()> on_connected;
};

class SessionLoop {
  public:
    // Starts the loop's thread, which connects at once.
    SessionLoop(SessionOptions options, SessionLoopHandlers handlers);
    // stop()s.
    ~SessionLoop();
    SessionLoop(const SessionLoop&) = delete;
    SessionLoop& operator=(const SessionLoop&) = delete;

    // Queues a message to the manager; false when no session is open (or its queue is full).
    bool send(crypto::SecureBuffer json);
    bool connected() const;
    // Certificates received and stored since the loop started (tests and status).
    std::uint64_t renewals() const;
    // Closes the session, stops retrying and joins the thread. A connection attempt under way
    // finishes first (bounded by limits.handshake_timeout). Idempotent.
    void stop();
    // Blocks until the loop ends: after stop() (ok), or when the manager refused this node with
    // 403 (permission_denied: "this node was removed from the cluster: join again with a new
    // token").
    Result<void> wait();

    class Impl;

  private:
    std::unique_ptr<Impl> impl_;
};

}  // namespace coffer::agent
