// A TLS stream in which OpenSSL reads and writes the socket itself. Internal.
//
// Every connection on the node port is one of these, and most of them are idle sessions, so
// what a connection costs while nothing moves is what the manager pays per node. OpenSSL's own
// record buffers are the only buffers here, and they are released whenever nothing is in flight
// (SSL_MODE_RELEASE_BUFFERS): an idle connection holds its SSL object and its socket. (A stream
// that feeds OpenSSL through a memory BIO pair keeps two more record-sized buffers and the pair's
// own two for as long as the connection lives.)
//
// Plaintext that may be secret (a node's assignments): OpenSSL decrypts a record in place in its
// read buffer and, with SSL_OP_CLEANSE_PLAINTEXT (tls.cpp), wipes each part as it is read out.
// Reads take a whole record out at once into locked memory (unless the caller's buffer holds a
// whole record), so no undelivered plaintext waits in OpenSSL's buffer, and hand it out from
// there. Every read first wipes the buffer it is given: Beast's WebSocket reads through a small
// ring buffer inside its stream object (ordinary heap) and offers all of its free space to each
// read, so what earlier frames left there is wiped by the next read, which a session always has
// pending.
//
// Operations follow Asio's stream model (async_read_some, async_write_some, any completion
// token), so Beast's HTTP and WebSocket code runs on top. One read and one write may be pending
// at once, from the same strand.
#pragma once

#include <openssl/crypto.h>
#include <openssl/ssl.h>

#include <boost/asio/async_result.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream_base.hpp>
#include <boost/beast/core/role.hpp>

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>

#include "coffer/crypto/secure_buffer.h"

namespace coffer::nodeconn::detail {

namespace asio = boost::asio;
using error_code = boost::system::error_code;

// What one non-blocking OpenSSL call came to: done (with an error or a byte count), or a wait
// for the socket before the same call is made again.
struct TlsStep {
    enum Want { done, read, write };
    Want want = done;
    error_code ec;
    std::size_t bytes = 0;
};

class TlsStream {
  public:
    using socket_type = asio::ip::tcp::socket;
    using executor_type = socket_type::executor_type;
    using next_layer_type = socket_type;

    TlsStream(socket_type socket, asio::ssl::context& ctx);
    TlsStream(const executor_type& executor, asio::ssl::context& ctx);
    // Moves only between operations, never with one pending.
    TlsStream(TlsStream&& other) noexcept;
    TlsStream& operator=(TlsStream&&) = delete;
    ~TlsStream();

    executor_type get_executor() noexcept { return socket_.get_executor(); }
    socket_type& next_layer() noexcept { return socket_; }
    socket_type& socket() noexcept { return socket_; }
    SSL* native_handle() noexcept { return ssl_; }

    // One deadline over whatever follows: when it passes the socket is closed, and whatever is
    // pending fails. Arming it again moves it; expires_never disarms it.
    void expires_after(std::chrono::steady_clock::duration timeout);
    void expires_never() noexcept;
    // Whether the deadline passed and closed the socket.
    bool timed_out() const noexcept;
    // Server side: when the client's ClientHello has arrived, the deadline moves to `timeout`
    // from then (a context prepared with watch_client_hello).
    void after_client_hello(std::chrono::steady_clock::duration timeout);

    template <typename Token>
    auto async_handshake(asio::ssl::stream_base::handshake_type type, Token&& token) {
        prepare(type);
        return run<false>([](TlsStream& s) { return s.handshake_step(); }, token);
    }

    // Sends close_notify and waits for the peer's.
    template <typename Token>
    auto async_shutdown(Token&& token) {
        return run<false>([](TlsStream& s) { return s.shutdown_step(); }, token);
    }

    template <typename MutableBuffers, typename Token>
    auto async_read_some(const MutableBuffers& buffers, Token&& token) {
        // The caller is about to have these bytes overwritten: what they held is stale (see the
        // top of this file). Large buffers are the caller's own (secure) message buffers.
        if (asio::buffer_size(buffers) <= max_record_bytes)
            for (auto it = asio::buffer_sequence_begin(buffers);
                 it != asio::buffer_sequence_end(buffers); ++it) {
                asio::mutable_buffer w(*it);
                OPENSSL_cleanse(w.data(), w.size());
            }
        auto b = first_of<asio::mutable_buffer>(buffers);
        return run<true>([b](TlsStream& s) { return s.read_step(b.data(), b.size()); }, token);
    }

    template <typename ConstBuffers, typename Token>
    auto async_write_some(const ConstBuffers& buffers, Token&& token) {
        // A message split over buffers (a WebSocket header and its payload) goes out as one
        // record when it fits one; it is joined in locked memory, as the payload may be secret.
        auto b = first_of<asio::const_buffer>(buffers);
        const auto total = asio::buffer_size(buffers);
        if (b.size() == total || total > max_record_bytes)
            return run<true>([b](TlsStream& s) { return s.write_step(b.data(), b.size()); }, token);
        crypto::SecureBuffer joined(total);
        asio::buffer_copy(asio::buffer(joined.data(), joined.size()), buffers);
        return run<true>(
            [j = std::move(joined)](TlsStream& s) { return s.write_step(j.data(), j.size()); },
            token);
    }

    // One attempt each, on the non-blocking socket.
    TlsStep handshake_step();
    TlsStep shutdown_step();
    TlsStep read_step(void* data, std::size_t size);
    TlsStep write_step(const void* data, std::size_t size);

  private:
    friend struct SocketBio;
    friend int on_client_hello(SSL*, int*, void*);
    struct Deadline;

    // The largest TLS record's plaintext.
    static constexpr std::size_t max_record_bytes = 16 * 1024;

    // Repeats Attempt until it is done, waiting on the socket for what it asks for; completes
    // through the handler's executor, never inside the call that started it.
    template <bool WithBytes, typename Attempt>
    class Op {
      public:
        Op(TlsStream& stream, Attempt attempt) : stream_(stream), attempt_(std::move(attempt)) {}

        template <typename Self>
        void operator()(Self& self, error_code ec = {}) {
            if (!finished_) {
                step_ = ec ? TlsStep{TlsStep::done, ec, 0} : attempt_(stream_);
                if (step_.want != TlsStep::done) {
                    waited_ = true;
                    stream_.socket_.async_wait(step_.want == TlsStep::read
                                                   ? socket_type::wait_read
                                                   : socket_type::wait_write,
                                               std::move(self));
                    return;
                }
                finished_ = true;
                if (!waited_) {
                    asio::post(std::move(self));
                    return;
                }
            }
            if constexpr (WithBytes)
                self.complete(step_.ec, step_.bytes);
            else
                self.complete(step_.ec);
        }

      private:
        TlsStream& stream_;
        Attempt attempt_;
        TlsStep step_;
        bool waited_ = false;
        bool finished_ = false;
    };

    template <bool WithBytes, typename Attempt, typename Token>
    auto run(Attempt attempt, Token& token) {
        using Signature =
            std::conditional_t<WithBytes, void(error_code, std::size_t), void(error_code)>;
        return asio::async_compose<Token, Signature>(
            Op<WithBytes, Attempt>(*this, std::move(attempt)), token, socket_);
    }

    template <typename Buffer, typename Buffers>
    static Buffer first_of(const Buffers& buffers) {
        for (auto it = asio::buffer_sequence_begin(buffers);
             it != asio::buffer_sequence_end(buffers); ++it) {
            Buffer b(*it);
            if (b.size() != 0) return b;
        }
        return Buffer();
    }

    void prepare(asio::ssl::stream_base::handshake_type type);
    // One OpenSSL call (1: success; it may set the byte count), from a clean error state.
    template <typename Call>
    TlsStep attempt(Call call);
    TlsStep outcome(int result);
    void rebind() noexcept;

    socket_type socket_;
    SSL* ssl_ = nullptr;
    std::shared_ptr<Deadline> deadline_;
    std::optional<std::chrono::steady_clock::duration> after_hello_;
    int sys_error_ = 0;  // errno of the socket call that failed last
    // A record read out of OpenSSL and not yet handed out: [staged_from_, staged_to_). Released
    // (wiped) as soon as it is all handed out, so an idle connection holds none.
    crypto::SecureBuffer staged_;
    std::size_t staged_from_ = 0;
    std::size_t staged_to_ = 0;
};

// Server contexts: lets after_client_hello see the ClientHello arrive.
void watch_client_hello(SSL_CTX* ctx);

// Ends the TLS stream after a WebSocket's closing handshake: close_notify both ways, then the
// socket is closed.
class TlsTeardown {
  public:
    explicit TlsTeardown(TlsStream& stream) : stream_(stream) {}

    template <typename Self>
    void operator()(Self& self, error_code ec = {}) {
        if (!shut_) {
            shut_ = true;
            stream_.async_shutdown(std::move(self));
            return;
        }
        error_code ignored;
        stream_.socket().shutdown(TlsStream::socket_type::shutdown_both, ignored);
        stream_.socket().close(ignored);
        // A peer that closed without close_notify has still closed.
        if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated) ec = {};
        self.complete(ec);
    }

  private:
    TlsStream& stream_;
    bool shut_ = false;
};

// Beast's WebSocket finds this through argument-dependent lookup.
template <typename Handler>
void async_teardown(boost::beast::role_type, TlsStream& stream, Handler&& handler) {
    asio::async_compose<Handler, void(error_code)>(TlsTeardown(stream), handler, stream);
}

}  // namespace coffer::nodeconn::detail
