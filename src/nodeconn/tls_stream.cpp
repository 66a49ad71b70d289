#include "tls_stream.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <sys/socket.h>

#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <new>

namespace coffer::nodeconn::detail {

// OpenSSL's transport: the stream's socket, looked up at every call, so a socket that has been
// closed (a deadline, an abort) can never be read or written through a reused descriptor.
struct SocketBio {
    static TlsStream& stream(BIO* bio) { return *static_cast<TlsStream*>(BIO_get_data(bio)); }

    static int write(BIO* bio, const char* data, int size) {
        BIO_clear_retry_flags(bio);
        // MSG_NOSIGNAL: a peer that has gone is an error for this connection, not a SIGPIPE.
        return outcome(bio,
                       ::send(descriptor(bio), data, static_cast<std::size_t>(size), MSG_NOSIGNAL),
                       BIO_FLAGS_WRITE);
    }

    static int read(BIO* bio, char* data, int size) {
        BIO_clear_retry_flags(bio);
        return outcome(bio, ::recv(descriptor(bio), data, static_cast<std::size_t>(size), 0),
                       BIO_FLAGS_READ);
    }

    static int descriptor(BIO* bio) { return stream(bio).socket_.native_handle(); }

    // A socket that would block asks OpenSSL to try again when it is ready (`direction`); any
    // other failure is kept for the error the operation reports.
    static int outcome(BIO* bio, ssize_t n, int direction) {
        if (n >= 0) return static_cast<int>(n);
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            BIO_set_flags(bio, direction | BIO_FLAGS_SHOULD_RETRY);
        else
            stream(bio).sys_error_ = errno;
        return -1;
    }

    static long control(BIO*, int command, long, void*) {
        // Writes go straight to the socket: there is never anything to flush.
        return command == BIO_CTRL_FLUSH ? 1 : 0;
    }

    static const BIO_METHOD* method() {
        // Made once, lives as long as the process.
        static BIO_METHOD* m = [] {
            BIO_METHOD* made =
                BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "coffer socket");
            if (made == nullptr || BIO_meth_set_write(made, &write) != 1 ||
                BIO_meth_set_read(made, &read) != 1 || BIO_meth_set_ctrl(made, &control) != 1)
                throw std::bad_alloc();
            return made;
        }();
        return m;
    }
};

struct TlsStream::Deadline {
    Deadline(const executor_type& executor, socket_type* s) : timer(executor), socket(s) {}
    asio::steady_timer timer;
    socket_type* socket;
    bool fired = false;
};

TlsStream::TlsStream(socket_type socket, asio::ssl::context& ctx)
    : socket_(std::move(socket)), ssl_(SSL_new(ctx.native_handle())) {
    if (ssl_ == nullptr) throw std::bad_alloc();
    BIO* bio = BIO_new(SocketBio::method());
    if (bio == nullptr) {
        SSL_free(ssl_);
        throw std::bad_alloc();
    }
    BIO_set_data(bio, this);
    BIO_set_init(bio, 1);
    SSL_set_app_data(ssl_, this);
    SSL_set_bio(ssl_, bio, bio);
    SSL_set_mode(ssl_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                           SSL_MODE_RELEASE_BUFFERS);
}

TlsStream::TlsStream(const executor_type& executor, asio::ssl::context& ctx)
    : TlsStream(socket_type(executor), ctx) {}

TlsStream::TlsStream(TlsStream&& other) noexcept
    : socket_(std::move(other.socket_)),
      ssl_(std::exchange(other.ssl_, nullptr)),
      deadline_(std::move(other.deadline_)),
      after_hello_(std::exchange(other.after_hello_, std::nullopt)),
      sys_error_(other.sys_error_),
      staged_(std::move(other.staged_)),
      staged_from_(std::exchange(other.staged_from_, 0)),
      staged_to_(std::exchange(other.staged_to_, 0)) {
    rebind();
}

TlsStream::~TlsStream() {
    if (ssl_ != nullptr) SSL_free(ssl_);
}

void TlsStream::rebind() noexcept {
    if (ssl_ != nullptr) {
        BIO_set_data(SSL_get_rbio(ssl_), this);
        SSL_set_app_data(ssl_, this);
    }
    if (deadline_) deadline_->socket = &socket_;
}

void TlsStream::expires_after(std::chrono::steady_clock::duration timeout) {
    if (!deadline_) deadline_ = std::make_shared<Deadline>(socket_.get_executor(), &socket_);
    deadline_->timer.expires_after(timeout);
    // The handler may run after this stream is gone, or after the deadline moved: it holds the
    // deadline weakly and checks that it is really due.
    deadline_->timer.async_wait([weak = std::weak_ptr<Deadline>(deadline_)](error_code ec) {
        if (ec) return;
        auto d = weak.lock();
        if (!d || d->timer.expiry() > std::chrono::steady_clock::now()) return;
        d->fired = true;
        error_code ignored;
        d->socket->close(ignored);
    });
}

void TlsStream::expires_never() noexcept {
    deadline_.reset();
}

bool TlsStream::timed_out() const noexcept {
    return deadline_ && deadline_->fired;
}

void TlsStream::after_client_hello(std::chrono::steady_clock::duration timeout) {
    after_hello_ = timeout;
}

// Runs inside SSL_do_handshake, on the stream's strand, once the ClientHello is in.
int on_client_hello(SSL* ssl, int*, void*) {
    auto* stream = static_cast<TlsStream*>(SSL_get_app_data(ssl));
    if (stream != nullptr && stream->after_hello_)
        stream->expires_after(*std::exchange(stream->after_hello_, std::nullopt));
    return SSL_CLIENT_HELLO_SUCCESS;
}

void watch_client_hello(SSL_CTX* ctx) {
    SSL_CTX_set_client_hello_cb(ctx, &on_client_hello, nullptr);
}

void TlsStream::prepare(asio::ssl::stream_base::handshake_type type) {
    error_code ignored;  // a socket that is not open fails the handshake's first step
    socket_.non_blocking(true, ignored);
    if (type == asio::ssl::stream_base::client)
        SSL_set_connect_state(ssl_);
    else
        SSL_set_accept_state(ssl_);
}

TlsStep TlsStream::outcome(int result) {
    TlsStep step;
    switch (SSL_get_error(ssl_, result)) {
        case SSL_ERROR_WANT_READ:
            step.want = TlsStep::read;
            break;
        case SSL_ERROR_WANT_WRITE:
            step.want = TlsStep::write;
            break;
        case SSL_ERROR_ZERO_RETURN:  // the peer's close_notify
            step.ec = asio::error::eof;
            break;
        case SSL_ERROR_SYSCALL:
            if (sys_error_ != 0)
                step.ec = error_code(sys_error_, boost::system::system_category());
            else
                step.ec = asio::ssl::error::stream_truncated;
            break;
        default: {
            unsigned long code = ERR_peek_last_error();
            if (ERR_GET_REASON(code) == SSL_R_UNEXPECTED_EOF_WHILE_READING)
                step.ec = asio::ssl::error::stream_truncated;
            else if (code != 0)
                step.ec = error_code(static_cast<int>(code), asio::error::get_ssl_category());
            else
                step.ec = asio::error::fault;
            break;
        }
    }
    // This thread's error queue serves every connection it runs: leave nothing behind.
    ERR_clear_error();
    return step;
}

template <typename Call>
TlsStep TlsStream::attempt(Call call) {
    ERR_clear_error();
    sys_error_ = 0;
    std::size_t n = 0;
    int r = call(n);
    return r == 1 ? TlsStep{TlsStep::done, {}, n} : outcome(r);
}

TlsStep TlsStream::handshake_step() {
    return attempt([this](std::size_t&) { return SSL_do_handshake(ssl_); });
}

TlsStep TlsStream::shutdown_step() {
    return attempt([this](std::size_t&) {
        // 0: our close_notify is sent, the peer's not yet read; the second call reads it.
        int r = SSL_shutdown(ssl_);
        return r == 0 ? SSL_shutdown(ssl_) : r;
    });
}

TlsStep TlsStream::read_step(void* data, std::size_t size) {
    if (size == 0) return {};
    if (staged_from_ == staged_to_) {
        // A buffer that holds a whole record takes it directly: nothing is left behind.
        if (size >= max_record_bytes)
            return attempt([&](std::size_t& n) { return SSL_read_ex(ssl_, data, size, &n); });
        crypto::SecureBuffer record(max_record_bytes);
        auto step = attempt(
            [&](std::size_t& n) { return SSL_read_ex(ssl_, record.data(), record.size(), &n); });
        if (step.want != TlsStep::done || step.ec) return step;
        staged_ = std::move(record);
        staged_from_ = 0;
        staged_to_ = step.bytes;
    }
    const std::size_t n = std::min(size, staged_to_ - staged_from_);
    std::memcpy(data, staged_.data() + staged_from_, n);
    staged_from_ += n;
    if (staged_from_ == staged_to_) {
        staged_ = {};
        staged_from_ = staged_to_ = 0;
    }
    return {TlsStep::done, {}, n};
}

TlsStep TlsStream::write_step(const void* data, std::size_t size) {
    if (size == 0) return {};
    return attempt([&](std::size_t& n) { return SSL_write_ex(ssl_, data, size, &n); });
}

}  // namespace coffer::nodeconn::detail
