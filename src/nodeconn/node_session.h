// The WebSocket session shared by both ends. Internal: Beast stays out of public headers.
#pragma once

#include <atomic>
#include <list>
#include <memory>
#include <mutex>
#include <optional>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/websocket/stream.hpp>

#include "coffer/nodeconn/session.h"
#include "coffer/nodeconn/tls.h"
#include "tls_stream.h"

namespace coffer::nodeconn::detail {

namespace asio = boost::asio;
namespace beast = boost::beast;
using tcp = asio::ip::tcp;
using WsStream = beast::websocket::stream<TlsStream>;

// Limits and heartbeats on a WebSocket before its handshake; the stream's deadline is handed over
// to the WebSocket's own timeouts.
void configure(WsStream& ws, const Limits& limits);

class SessionImpl final : public Session, public std::enable_shared_from_this<SessionImpl> {
  public:
    // ws has completed its handshake. handlers is borrowed for the session's life; tls keeps
    // the TLS context ws was made with alive as long as the session.
    SessionImpl(WsStream ws, pki::NodeIdentity peer, const Limits& limits,
                const SessionHandlers& handlers, std::shared_ptr<const void> tls);

    // Calls on_open, then reads until the session ends. Runs on the stream's strand.
    asio::awaitable<void> run();
    // Closes the socket at once, without a closing handshake (shutdown).
    void abort();
    // Destroys the stream and forgets the strand. The owner of the I/O context calls it, with no
    // I/O thread running, for sessions still open when it stops: a Session handle may outlive
    // the I/O context, its stream and strand may not. (A session that ends drops them itself.)
    void drop_stream() noexcept;

    const pki::NodeIdentity& peer() const noexcept override { return peer_; }
    const std::string& remote_address() const noexcept override { return remote_; }
    bool send(crypto::SecureBuffer json) override;
    void close() override;
    bool closed() const noexcept override { return closed_; }
    std::chrono::steady_clock::time_point last_seen() const noexcept override;
    std::uint64_t heartbeats() const noexcept override { return heartbeats_; }

  private:
    asio::awaitable<void> write_queued();
    // The strand, or an empty executor once the session ended.
    asio::any_io_executor executor() const;
    void release() noexcept;
    void touch() noexcept;

    std::shared_ptr<const void> tls_;
    std::optional<WsStream> ws_;  // reset when the session ends, on its strand
    mutable std::mutex executor_mutex_;
    asio::any_io_executor executor_;  // under executor_mutex_; empty once the session ended
    pki::NodeIdentity peer_;
    std::string remote_;
    Limits limits_;
    const SessionHandlers& handlers_;
    // Strand only. A list: an empty one allocates nothing, and most sessions are idle (an empty
    // std::deque holds a 512-byte block).
    std::list<crypto::SecureBuffer> queue_;
    bool writing_ = false;
    bool closing_ = false;
    // Any thread.
    std::atomic<std::size_t> queued_{0};
    std::atomic<bool> closed_{false};
    std::atomic<std::int64_t> last_seen_{0};
    std::atomic<std::uint64_t> heartbeats_{0};
};

}  // namespace coffer::nodeconn::detail
