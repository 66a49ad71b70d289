#include "coffer/agent/session.h"

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "coffer/base/log.h"

namespace coffer::agent {

using Steady = std::chrono::steady_clock;
using std::chrono::milliseconds;

class SessionLoop::Impl {
  public:
    Impl(SessionOptions options, SessionLoopHandlers handlers)
        : options_(std::move(options)), handlers_(std::move(handlers)) {
        thread_ = std::thread([this] { run(); });
    }

    void run();
    // Waits for d or stop; true when stopping.
    bool pause(milliseconds d);

    SessionOptions options_;
    SessionLoopHandlers handlers_;

    mutable std::mutex m_;
    std::condition_variable cv_;
    bool stopping_ = false;
    bool ended_ = false;
    bool lost_ = false;                             // the current session closed
    std::optional<Error> refused_;                  // set when the node was removed
    std::unique_ptr<nodeconn::NodeClient> client_;  // the open session, if any
    std::thread thread_;
};

RetryDelay::RetryDelay(const Backoff& backoff)
    : backoff_(backoff), delay_(backoff.initial), rng_(std::random_device{}()) {}

milliseconds RetryDelay::next() {
    std::uniform_real_distribution<double> factor(1.0 - backoff_.jitter, 1.0 + backoff_.jitter);
    auto wait = milliseconds(
        static_cast<milliseconds::rep>(static_cast<double>(delay_.count()) * factor(rng_)));
    delay_ = std::min(delay_ * 2, backoff_.max);
    return wait;
}

void RetryDelay::reset() noexcept {
    delay_ = backoff_.initial;
}

bool SessionLoop::Impl::pause(milliseconds d) {
    std::unique_lock l(m_);
    return cv_.wait_for(l, d, [&] { return stopping_; });
}

void SessionLoop::Impl::run() {
    RetryDelay delay(options_.backoff);
    nodeconn::SessionHandlers handlers{
        [this](const std::shared_ptr<nodeconn::Session>&) {
            if (handlers_.on_connected) handlers_.on_connected();
        },
        [this](const std::shared_ptr<nodeconn::Session>&, nodeconn::Message msg) {
            if (handlers_.on_message) handlers_.on_message(std::move(msg));
        },
        [this](const std::shared_ptr<nodeconn::Session>&, const Error& why) {
            log::info("agent", "session to the manager closed: {}", why.message);
            std::lock_guard l(m_);
            lost_ = true;
            cv_.notify_all();
        },
    };
    auto where = fmt::format("{}:{}", options_.manager.host, options_.manager.port);
    for (;;) {
        {
            std::lock_guard l(m_);
            if (stopping_) break;
            lost_ = false;
        }
        auto client = nodeconn::NodeClient::connect(options_.manager, options_.credentials.clone(),
                                                    handlers, options_.limits);
        if (!client && client.error().code == Errc::permission_denied) {
            log::error("agent", "the manager at {} refused this node: {}", where,
                       client.error().message);
            std::lock_guard l(m_);
            refused_ = make_error(Errc::permission_denied,
                                  "this node was removed from the cluster: join again with a new "
                                  "token");
            break;
        }
        if (client) {
            log::info("agent", "session to the manager at {} open", where);
            auto opened = Steady::now();
            std::unique_lock l(m_);
            client_ = std::move(*client);
            auto session = client_->session();
            cv_.wait(l, [&] { return stopping_ || lost_ || session->closed(); });
            auto done = std::move(client_);
            l.unlock();
            // Closes the session if still open and joins its I/O thread; not under the lock,
            // since the session's handlers take it.
            done.reset();
            if (Steady::now() - opened >= options_.backoff.stable_after) delay.reset();
        } else {
            log::warn("agent", "cannot reach the manager at {}: {}", where, client.error().message);
        }
        auto wait = delay.next();
        log::debug("agent", "next attempt in {} ms", wait.count());
        if (pause(wait)) break;
    }
    std::lock_guard l(m_);
    ended_ = true;
    cv_.notify_all();
}

SessionLoop::SessionLoop(SessionOptions options, SessionLoopHandlers handlers)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(handlers))) {}

SessionLoop::~SessionLoop() {
    stop();
}

bool SessionLoop::send(crypto::SecureBuffer json) {
    std::lock_guard l(impl_->m_);
    if (!impl_->client_ || !impl_->client_->session()) return false;
    return impl_->client_->session()->send(std::move(json));
}

bool SessionLoop::connected() const {
    std::lock_guard l(impl_->m_);
    return impl_->client_ && impl_->client_->session() && !impl_->client_->session()->closed();
}

void SessionLoop::stop() {
    {
        std::lock_guard l(impl_->m_);
        impl_->stopping_ = true;
        impl_->cv_.notify_all();
    }
    if (impl_->thread_.joinable()) impl_->thread_.join();
}

Result<void> SessionLoop::wait() {
    std::unique_lock l(impl_->m_);
    impl_->cv_.wait(l, [&] { return impl_->ended_; });
    if (impl_->refused_) return *impl_->refused_;
    return {};
}

}  // namespace coffer::agent
