#include "node_session.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>

#include "coffer/base/log.h"
#include "secure_memory.h"

namespace coffer::nodeconn::detail {
namespace websocket = beast::websocket;

namespace {
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);
}

void configure(WsStream& ws, const Limits& limits) {
    ws.next_layer().expires_never();
    websocket::stream_base::timeout timeout;
    timeout.handshake_timeout = limits.handshake_timeout;
    timeout.idle_timeout = limits.idle_timeout;
    timeout.keep_alive_pings = true;
    ws.set_option(timeout);
    ws.read_message_max(limits.max_message_bytes);
    // No permessage-deflate: compressing secrets next to attacker-influenced data leaks them.
    ws.set_option(websocket::permessage_deflate{});
    ws.auto_fragment(false);
    ws.text(true);
}

SessionImpl::SessionImpl(WsStream ws, pki::NodeIdentity peer, const Limits& limits,
                         const SessionHandlers& handlers, std::shared_ptr<const void> tls)
    : tls_(std::move(tls)),
      ws_(std::in_place, std::move(ws)),
      executor_(ws_->get_executor()),
      peer_(std::move(peer)),
      limits_(limits),
      handlers_(handlers) {
    boost::system::error_code ec;
    auto remote = ws_->next_layer().socket().remote_endpoint(ec);
    if (!ec) remote_ = remote.address().to_string();
    touch();
    // Runs inside reads on the strand while the session is alive; `this` outlives it.
    ws_->control_callback([this](websocket::frame_type kind, beast::string_view) {
        touch();
        if (kind != websocket::frame_type::close) ++heartbeats_;
    });
}

void SessionImpl::touch() noexcept {
    last_seen_ = std::chrono::steady_clock::now().time_since_epoch().count();
}

std::chrono::steady_clock::time_point SessionImpl::last_seen() const noexcept {
    return std::chrono::steady_clock::time_point(std::chrono::steady_clock::duration(last_seen_));
}

asio::awaitable<void> SessionImpl::run() {
    auto self = shared_from_this();
    std::shared_ptr<Session> as_session = self;
    if (handlers_.on_open) handlers_.on_open(as_session);
    // The message text may be a secret: the read buffer is secure memory.
    beast::basic_flat_buffer<SecureAllocator<char>> buffer(limits_.max_message_bytes);
    Error why{Errc::unavailable, "session closed"};
    for (;;) {
        auto [ec, n] = co_await ws_->async_read(buffer, use_tuple);
        if (ec) {
            // Closed by the peer, or by us (our own close aborts the pending read).
            if (ec != websocket::error::closed && !closing_)
                why = make_error(Errc::unavailable, fmt::format("session ended: {}", ec.message()));
            break;
        }
        touch();
        auto data = buffer.cdata();
        auto text = crypto::SecureBuffer::copy_of(
            std::string_view(static_cast<const char*>(data.data()), data.size()));
        buffer.consume(n);
        auto message = make_message(std::move(text));
        if (!message) {
            log::warn("nodeconn", "node {}: {}; closing its session", peer_.node_id,
                      message.error().message);
            why = message.error();
            close();
            continue;  // the read completes when the closing handshake does
        }
        if (handlers_.on_message) handlers_.on_message(as_session, std::move(*message));
    }
    closed_ = true;
    queued_ -= queue_.size();
    queue_.clear();
    if (writing_) {
        // The write in flight fails at once, then releases the stream.
        beast::error_code ignored;
        ws_->next_layer().socket().close(ignored);
    } else {
        release();
    }
    if (handlers_.on_close) handlers_.on_close(as_session, why);
}

bool SessionImpl::send(crypto::SecureBuffer json) {
    if (closed_) return false;
    if (queued_.fetch_add(1) >= limits_.max_queued_messages) {
        --queued_;
        log::warn("nodeconn", "node {}: write queue full; closing its session", peer_.node_id);
        close();
        return false;
    }
    auto ex = executor();
    if (!ex) {
        --queued_;
        return false;
    }
    asio::dispatch(ex, [self = shared_from_this(), msg = std::move(json)]() mutable {
        if (self->closed_ || self->closing_) {
            --self->queued_;
            return;
        }
        self->queue_.push_back(std::move(msg));
        if (!self->writing_) {
            self->writing_ = true;
            asio::co_spawn(self->ws_->get_executor(), self->write_queued(), asio::detached);
        }
    });
    return true;
}

asio::awaitable<void> SessionImpl::write_queued() {
    auto self = shared_from_this();
    while (!queue_.empty() && !closing_ && !closed_) {
        auto msg = std::move(queue_.front());
        queue_.pop_front();
        auto [ec, n] = co_await ws_->async_write(asio::buffer(msg.data(), msg.size()), use_tuple);
        --queued_;
        if (ec) log::debug("nodeconn", "node {}: write: {}", peer_.node_id, ec.message());
        if (ec) break;  // the read side sees the failure and ends the session
    }
    queued_ -= queue_.size();
    queue_.clear();
    writing_ = false;
    if (closed_) release();  // the session ended while this write was in flight
}

void SessionImpl::close() {
    auto ex = executor();
    if (!ex) return;
    asio::dispatch(ex, [self = shared_from_this()] {
        if (self->closing_ || self->closed_) return;
        self->closing_ = true;
        self->ws_->async_close(websocket::close_code::normal, [self](beast::error_code ec) {
            // A peer that does not answer the close is cut off.
            if (ec) self->abort();
        });
    });
}

void SessionImpl::abort() {
    auto ex = executor();
    if (!ex) return;
    asio::dispatch(ex, [self = shared_from_this()] {
        if (!self->ws_) return;
        beast::error_code ignored;
        self->ws_->next_layer().socket().close(ignored);
    });
}

asio::any_io_executor SessionImpl::executor() const {
    std::lock_guard lock(executor_mutex_);
    return executor_;
}

void SessionImpl::release() noexcept {
    ws_.reset();
    std::lock_guard lock(executor_mutex_);
    executor_ = {};
}

void SessionImpl::drop_stream() noexcept {
    closed_ = true;
    release();
}

}  // namespace coffer::nodeconn::detail
