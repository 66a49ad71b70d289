#include "coffer/agent/session.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

#include <fmt/ranges.h>

#include "coffer/agent/manager_list.h"
#include "coffer/base/log.h"
#include "coffer/nodeproto/session.h"
#include "coffer/pki/node_key.h"

namespace coffer::agent {

using Steady = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

// The messages the loop answers itself: certificate, renew_request, an error without a request
// id (only renew has none), and managers.
bool loop_message(const nodeconn::Message& msg) {
    if (msg.type == "certificate" || msg.type == "renew_request" || msg.type == "managers")
        return true;
    if (msg.type != "error") return false;
    auto error = nodeproto::decode_error(msg.json);
    return error && !error->request;
}

}  // namespace

class SessionLoop::Impl {
  public:
    Impl(SessionOptions options, SessionLoopHandlers handlers)
        : options_(std::move(options)), handlers_(std::move(handlers)) {
        thread_ = std::thread([this] { run(); });
    }

    void run();
    // Waits for d or stop; true when stopping.
    bool pause(milliseconds d);
    bool renewing() const { return !options_.data_dir.empty(); }
    // When the current certificate should be renewed.
    void schedule_renewal();
    // Sends "renew" on the open session (loop thread, lock not held).
    void send_renew(const std::shared_ptr<nodeconn::Session>& session);
    // Handles a message the loop answers itself (loop thread, lock not held).
    void handle(const nodeconn::Message& msg);
    void accept_certificate(const nodeconn::Message& msg);
    void accept_managers(const nodeconn::Message& msg);

    SessionOptions options_;
    SessionLoopHandlers handlers_;
    // Loop thread only: the managers to try, each once, and the one tried (or connected to) now.
    std::vector<nodeconn::Endpoint> managers_;
    std::size_t at_ = 0;
    bool new_list_ = false;  // managers_ was replaced during the session: a new round begins

    mutable std::mutex m_;
    std::condition_variable cv_;
    bool stopping_ = false;
    std::deque<nodeconn::Message> inbox_;  // messages the loop handles, for its thread
    pki::Clock::time_point renew_at_ = pki::Clock::time_point::max();
    // The manager asked for a renewal after the last request was sent: the certificate that
    // answers that request may predate what the manager asked for, so another request follows.
    bool asked_since_request_ = false;
    std::uint64_t renewals_ = 0;
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

void SessionLoop::Impl::schedule_renewal() {
    std::lock_guard l(m_);
    auto info = pki::read_certificate(options_.credentials.cert_chain_pem);
    if (!info) {
        log::warn("agent", "cannot read this node's certificate ({}): renewing now",
                  info.error().message);
        renew_at_ = pki::Clock::now();
        return;
    }
    renew_at_ = options_.renewal_time(*info);
    auto in = std::chrono::duration_cast<std::chrono::seconds>(renew_at_ - pki::Clock::now());
    log::info("agent", "certificate {} renews in {}s", info->serial,
              std::max<std::int64_t>(in.count(), 0));
}

void SessionLoop::Impl::send_renew(const std::shared_ptr<nodeconn::Session>& session) {
    std::optional<crypto::SecureBuffer> key;
    {
        std::lock_guard l(m_);
        // Whatever happens next, ask again after the retry delay unless a certificate comes.
        renew_at_ = pki::Clock::now() + options_.renew_retry;
        asked_since_request_ = false;
        key.emplace(options_.credentials.key_pem.clone());
    }
    auto csr = pki::make_csr(*key);
    if (!csr) {
        log::error("agent", "cannot make a certificate request: {}", csr.error().message);
        return;
    }
    if (session->send(nodeproto::encode(nodeproto::Renew{std::move(*csr)})))
        log::info("agent", "asked the manager to renew this node's certificate");
}

void SessionLoop::Impl::accept_certificate(const nodeconn::Message& msg) {
    auto issued = nodeproto::decode_certificate(msg.json);
    if (!issued) {
        log::warn("agent",
                  "the manager's certificate message lacks \"certificate\" or \"ca_bundle\"");
        return;
    }
    Identity current;
    {
        std::lock_guard l(m_);
        current = Identity{options_.node, options_.credentials.clone()};
    }
    auto renewed =
        store_renewal(options_.data_dir, current, issued->certificate, issued->ca_bundle);
    if (!renewed) {
        log::error("agent", "refused the manager's certificate: {}", renewed.error().message);
        return;
    }
    {
        std::lock_guard l(m_);
        options_.node = std::move(renewed->node);
        options_.credentials = std::move(renewed->credentials);
        ++renewals_;
        cv_.notify_all();
    }
    log::info("agent", "stored the renewed certificate ({}); the next connection uses it",
              pki::role_name(options_.node.role));
    schedule_renewal();
    std::lock_guard l(m_);
    if (asked_since_request_) renew_at_ = pki::Clock::now();
}

void SessionLoop::Impl::accept_managers(const nodeconn::Message& msg) {
    auto received = nodeproto::decode_managers(msg.json);
    if (!received) {
        log::warn("agent", "ignoring a managers message: {}", received.error().message);
        return;
    }
    // The manager of this session stays first: a loss moves on to the others in their order.
    std::vector<nodeconn::Endpoint> managers{managers_[at_]};
    std::vector<std::string> listed;  // as received, each once
    std::vector<nodeconn::Endpoint> seen;
    for (const auto& address : received->managers) {
        auto endpoint = parse_endpoint(address);
        if (!endpoint || std::find(seen.begin(), seen.end(), *endpoint) != seen.end()) continue;
        seen.push_back(*endpoint);
        listed.push_back(address);
        if (*endpoint != managers.front()) managers.push_back(std::move(*endpoint));
    }
    // The address this agent started with stays the last resort: a list sent while that
    // manager was down does not name it, and the node must not be stranded when every manager
    // it names goes away and that one comes back.
    if (std::find(managers.begin(), managers.end(), options_.manager) == managers.end())
        managers.push_back(options_.manager);
    managers_ = std::move(managers);
    at_ = 0;
    new_list_ = true;
    log::info("agent", "the cluster's managers: {}", fmt::join(listed, ", "));
    if (options_.data_dir.empty()) return;
    if (auto stored = store_managers(options_.data_dir, listed); !stored)
        log::error("agent", "cannot keep the list of managers: {}", stored.error().message);
}

void SessionLoop::Impl::handle(const nodeconn::Message& msg) {
    if (msg.type == "managers") {
        accept_managers(msg);
        return;
    }
    if (msg.type == "certificate") {
        if (renewing())
            accept_certificate(msg);
        else
            log::warn("agent", "ignoring a certificate: this loop does not store its identity");
        return;
    }
    if (msg.type == "renew_request") {
        auto request = nodeproto::decode_renew_request(msg.json);
        log::info("agent", "the manager asks for a certificate renewal: {}",
                  request ? request->reason : "");
        std::lock_guard l(m_);
        if (renewing()) {
            renew_at_ = pki::Clock::now();
            asked_since_request_ = true;
        }
        return;
    }
    // An error without a request id answers a renew: it is retried after renew_retry.
    auto error = nodeproto::decode_error(msg.json);
    log::warn("agent", "the manager refused to renew this node's certificate: {}",
              error ? error->message : "");
}

void SessionLoop::Impl::run() {
    RetryDelay delay(options_.backoff);
    if (renewing()) schedule_renewal();
    nodeconn::SessionHandlers handlers{
        [this](const std::shared_ptr<nodeconn::Session>& session) {
            if (options_.description) session->send(nodeproto::encode(*options_.description));
            if (handlers_.on_connected) handlers_.on_connected();
        },
        [this](const std::shared_ptr<nodeconn::Session>&, nodeconn::Message msg) {
            if (loop_message(msg)) {
                // Handled on the loop's thread: storing a certificate or the managers blocks on
                // fsync.
                std::lock_guard l(m_);
                inbox_.push_back(std::move(msg));
                cv_.notify_all();
                return;
            }
            if (handlers_.on_message) handlers_.on_message(std::move(msg));
        },
        [this](const std::shared_ptr<nodeconn::Session>&, const Error& why) {
            log::info("agent", "session to the manager closed: {}", why.message);
            std::lock_guard l(m_);
            lost_ = true;
            cv_.notify_all();
        },
    };
    managers_ = {options_.manager};
    for (const auto& other : options_.other_managers)
        if (std::find(managers_.begin(), managers_.end(), other) == managers_.end())
            managers_.push_back(other);
    // Attempts that failed in this round: a connection refused, or a session lost before it
    // was stable. The backoff waits once every manager failed.
    std::size_t failed = 0;
    for (;;) {
        {
            std::lock_guard l(m_);
            if (stopping_) break;
            lost_ = false;
        }
        auto where = format_endpoint(managers_[at_]);
        auto client = nodeconn::NodeClient::connect(managers_[at_], options_.credentials.clone(),
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
        bool had_session = client.ok();
        if (had_session) {
            log::info("agent", "session to the manager at {} open", where);
            auto opened = Steady::now();
            std::unique_lock l(m_);
            client_ = std::move(*client);
            auto session = client_->session();
            for (;;) {
                auto due = [&] { return renewing() && pki::Clock::now() >= renew_at_; };
                // Bounded, so a far-off renewal time never overflows the wait.
                cv_.wait_until(
                    l, std::min(renew_at_, pki::Clock::now() + std::chrono::hours(1)), [&] {
                        return stopping_ || lost_ || session->closed() || !inbox_.empty() || due();
                    });
                // A certificate that arrived just before the session ended is still stored.
                if (!inbox_.empty()) {
                    auto msg = std::move(inbox_.front());
                    inbox_.pop_front();
                    l.unlock();
                    handle(msg);
                    l.lock();
                } else if (stopping_ || lost_ || session->closed()) {
                    break;
                } else if (due()) {
                    l.unlock();
                    send_renew(session);
                    l.lock();
                }
            }
            inbox_.clear();
            auto done = std::move(client_);
            l.unlock();
            // Closes the session if still open and joins its I/O thread; not under the lock,
            // since the session's handlers take it.
            done.reset();
            if (Steady::now() - opened >= options_.backoff.stable_after) {
                delay.reset();
                failed = 0;
            }
        } else {
            log::warn("agent", "cannot reach the manager at {}: {}", where, client.error().message);
        }
        {
            std::lock_guard l(m_);
            if (stopping_) break;
        }
        if (std::exchange(new_list_, false)) failed = 0;
        ++failed;
        auto next = (at_ + 1) % managers_.size();
        if (failed >= managers_.size()) {
            failed = 0;
            auto wait = delay.next();
            if (next != at_)
                log::info("agent", "no manager reachable: trying {} in {} ms",
                          format_endpoint(managers_[next]), wait.count());
            else
                log::debug("agent", "next attempt in {} ms", wait.count());
            if (pause(wait)) break;
        } else {
            log::info("agent", "manager {} {}: trying {}", where,
                      had_session ? "lost" : "unreachable", format_endpoint(managers_[next]));
        }
        at_ = next;
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

std::uint64_t SessionLoop::renewals() const {
    std::lock_guard l(impl_->m_);
    return impl_->renewals_;
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
