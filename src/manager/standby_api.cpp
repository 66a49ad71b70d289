#include "coffer/manager/standby_api.h"

#include <algorithm>
#include <charconv>

#include "api_util.h"
#include "coffer/base/log.h"
#include "coffer/manager/trust.h"
#include "coffer/nodeconn/client.h"
#include "coffer/nodeconn/forward.h"
#include "unlock_gate.h"

namespace coffer::manager {

namespace {

constexpr std::string_view standby_header = "X-Coffer-Standby";
// Each step of a forward (connect, handshake, sending the request) within this; the answer
// within the longer time a request may take on the leader (an image resolved on a registry).
constexpr std::chrono::milliseconds forward_timeout{10'000};
constexpr std::chrono::milliseconds answer_timeout{120'000};

bool is_unlock(const net::Request& r) {
    if (r.method != "POST") return false;
    auto seg = route_of(r);
    return seg && seg->size() == 2 && (*seg)[0] == "swarm" && (*seg)[1] == "unlock";
}

std::optional<nodeconn::Endpoint> endpoint_of(std::string_view addr) {
    auto colon = addr.rfind(':');
    if (colon == std::string_view::npos || colon == 0) return std::nullopt;
    std::uint16_t port = 0;
    auto digits = addr.substr(colon + 1);
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
    if (ec != std::errc{} || end != digits.data() + digits.size() || port == 0) return std::nullopt;
    auto host = addr.substr(0, colon);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']')
        host = host.substr(1, host.size() - 2);
    return nodeconn::Endpoint{std::string(host), port};
}

net::Response own(net::Response r) {
    r.headers.emplace_back(std::string(standby_header), "this manager");
    return r;
}

net::Response taking_over() {
    return own(net::Response::error(make_error(
        Errc::unavailable, "this cofferd is taking over as the leading manager: try again")));
}

}  // namespace

struct StandbyApi::Contact {
    std::string leader;  // HOST:PORT of its node port; "" when no manager leads
    crypto::SecureBuffer key;
    std::string ca_bundle;
    std::shared_ptr<nodeconn::Forwarder> forwarder;  // verifies the leader against the CA
    std::uint64_t generation = 0;                    // 1 for the first read, and so on
};

StandbyApi::StandbyApi(std::filesystem::path dir, store::EtcdOptions etcd)
    : dir_(std::move(dir)),
      etcd_(std::move(etcd)),
      gate_(std::make_unique<UnlockGate>()),
      retrier_([this] { retrier(); }) {}

StandbyApi::~StandbyApi() {
    stop_forwarding();
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    retry_cv_.notify_all();
    retrier_.join();
}

bool StandbyApi::blocking(const net::Request&) const {
    return true;  // the unlock reads etcd
}

bool StandbyApi::asynchronous(const net::Request& r) const {
    return !is_unlock(r);
}

net::Response StandbyApi::handle(net::Request& r) {
    // Every other request is asynchronous(): the server hands it to handle_async.
    if (!is_unlock(r))
        return own(net::Response::error(
            make_error(Errc::internal, "a forwarded request is answered asynchronously")));
    return own(gate_->attempt(
        r, [] { return true; },
        [&](std::string_view key) -> Result<void> {
            if (auto checked = store::check_unlock_key(dir_, etcd_, key); !checked) return checked;
            std::lock_guard reading(reader_mutex_);
            std::lock_guard lock(mutex_);
            key_ = crypto::SecureBuffer::copy_of(key);
            contact_.reset();
            reader_.reset();
            log::info("manager",
                      "standby: the unlock key opens the store's keys; this manager forwards "
                      "requests to the leader and unlocks itself when it leads");
            return {};
        }));
}

Result<void> StandbyApi::read_keys() {
    if (!reader_) {
        std::optional<crypto::SecureBuffer> key;
        {
            std::lock_guard lock(mutex_);
            if (key_) key = key_->clone();
        }
        auto opened = store::StandbyReader::open(dir_, etcd_, key ? &*key : nullptr);
        if (!opened) return std::move(opened).error();
        reader_ = std::move(*opened);
        return {};
    }
    auto read = reader_->refresh();
    if (!read && read.error().code == Errc::invalid_argument)
        return make_error(Errc::locked,
                          "the unlock key given to this standby manager no longer opens the "
                          "store's keys (it was rotated since): run `coffer cluster unlock` "
                          "against it with the current one");
    if (!read) return read;
    if (auto followed = reader_->take_followed_unlock_key()) {
        std::lock_guard lock(mutex_);
        key_ = std::move(*followed);
        log::info("manager",
                  "standby: the unlock key was rotated; this manager follows the rotation and "
                  "unlocks itself with the new key when it leads");
    }
    return {};
}

void StandbyApi::keep_keys() {
    {
        std::lock_guard reading(reader_mutex_);
        if (!reader_) return;  // not opened yet: nothing to keep up with
        if (auto r = read_keys(); !r)
            log::debug("manager", "standby: read the store's keys: {}", r.error().message);
    }
    // Forwarders of an earlier CA bundle with nothing in flight end here, on no thread of theirs.
    std::vector<std::shared_ptr<nodeconn::Forwarder>> ended;
    std::lock_guard lock(mutex_);
    std::erase_if(forwarders_, [&](const auto& f) {
        if (contact_ && contact_->forwarder == f) return false;
        if (f->in_flight() > 0) return false;
        ended.push_back(f);
        return true;
    });
}

Result<std::shared_ptr<const StandbyApi::Contact>> StandbyApi::refresh_contact() {
    std::lock_guard reading(reader_mutex_);
    if (auto r = read_keys(); !r) return std::move(r).error();
    auto trust = ClusterTrust::read_forward_trust(
        [&](std::string_view k) { return reader_->get(store::Table::pki, k); });
    if (!trust) return std::move(trust).error();
    auto leader = reader_->leader();
    if (!leader) return std::move(leader).error();
    std::shared_ptr<nodeconn::Forwarder> forwarder;
    {
        std::lock_guard lock(mutex_);
        if (contact_ && contact_->ca_bundle == trust->ca_bundle) forwarder = contact_->forwarder;
    }
    if (forwarder) {
        // Read again because something failed: the leader or its key may have changed.
        forwarder->drop_idle();
    } else {
        auto made = nodeconn::Forwarder::make(trust->ca_bundle);
        if (!made) return std::move(made).error();
        forwarder = std::move(*made);
    }
    std::lock_guard lock(mutex_);
    if (std::find(forwarders_.begin(), forwarders_.end(), forwarder) == forwarders_.end())
        forwarders_.push_back(forwarder);
    if (cancelled_) forwarder->abandon_all();  // stop_forwarding() may have missed it
    contact_ = std::make_shared<const Contact>(Contact{std::move(*leader), std::move(trust->key),
                                                       std::move(trust->ca_bundle),
                                                       std::move(forwarder), ++generation_});
    return contact_;
}

void StandbyApi::handle_async(net::Request& r, Done done) {
    if (cancelled_) return done(taking_over());
    std::shared_ptr<const Contact> c;
    {
        std::lock_guard lock(mutex_);
        c = contact_;
    }
    // Nothing read yet, or read when none led: read etcd first.
    if (!c || c->leader.empty()) return retry({&r, std::move(done), c ? c->generation : 0});
    send(c, r, std::move(done), false);
}

void StandbyApi::send(const std::shared_ptr<const Contact>& c, net::Request& r, Done done,
                      bool last) {
    auto to = endpoint_of(c->leader);
    if (!to)
        return done(own(net::Response::error(make_error(
            Errc::internal,
            fmt::format("the leading manager announced an unusable address {}", c->leader)))));
    // The callback holds no contact: the forwarder is kept by forwarders_, never by its own
    // thread.
    c->forwarder->send(
        *to, c->key, r, forward_timeout, answer_timeout,
        [this, &r, done = std::move(done), leader = c->leader, generation = c->generation,
         last](Result<net::Response> answer) mutable {
            if (answer) {
                answer->headers.emplace_back(std::string(standby_header),
                                             fmt::format("forwarded to {}", leader));
                return done(std::move(*answer));
            }
            if (answer.error().code == Errc::internal) {
                // It may have been carried out: never sent twice.
                log::warn("manager", "standby: {} {} forwarded to {}: {}", r.method, r.path, leader,
                          answer.error().message);
                return done(own(net::Response::error(make_error(
                    Errc::unavailable,
                    fmt::format("this cofferd is a standby manager; the leading manager at {} did "
                                "not answer the forwarded request, which may have been carried "
                                "out: {}",
                                leader, answer.error().message)))));
            }
            // It never reached the leader, or the leader refused this manager: read etcd again
            // (the leader or its forwarding key changed) and try once more.
            if (!last) return retry({&r, std::move(done), generation});
            log::warn("manager", "standby: cannot forward {} {} to {}: {}", r.method, r.path,
                      leader, answer.error().message);
            done(own(net::Response::error(make_error(
                Errc::unavailable,
                fmt::format("this cofferd is a standby manager and cannot reach the leading "
                            "manager at {}: {}",
                            leader, answer.error().message)))));
        });
    // stop_forwarding() abandons what forwarders hold when it runs; a request sent as it ran is
    // abandoned here.
    if (cancelled_) c->forwarder->abandon_all();
}

void StandbyApi::retry(Retry item) {
    {
        std::lock_guard lock(mutex_);
        if (!stopping_) {
            retries_.push_back(std::move(item));
            retry_cv_.notify_one();
            return;
        }
    }
    item.done(taking_over());
}

void StandbyApi::retrier() {
    std::unique_lock lock(mutex_);
    for (;;) {
        retry_cv_.wait(lock, [this] { return stopping_ || !retries_.empty(); });
        if (retries_.empty()) return;  // stopping_
        auto item = std::move(retries_.front());
        retries_.pop_front();
        // A read made since this request failed serves it.
        auto c = contact_ && contact_->generation != item.generation
                     ? contact_
                     : std::shared_ptr<const Contact>();
        lock.unlock();
        [&] {
            if (cancelled_) return item.done(taking_over());
            if (!c) {
                auto read = refresh_contact();
                if (!read) {
                    auto e = std::move(read).error();
                    if (e.code != Errc::locked) e.code = Errc::unavailable;
                    return item.done(own(net::Response::error(
                        e.context("this cofferd is a standby manager and cannot forward the "
                                  "request to the leader"))));
                }
                c = std::move(*read);
            }
            if (c->leader.empty())
                return item.done(own(net::Response::error(make_error(
                    Errc::unavailable,
                    "this cofferd is a standby manager and no manager leads the cluster right "
                    "now (the store's lease is free or ending): try again in a few seconds"))));
            send(c, *item.r, std::move(item.done), true);
        }();
        lock.lock();
    }
}

void StandbyApi::stop_forwarding() {
    cancelled_ = true;
    std::vector<std::shared_ptr<nodeconn::Forwarder>> all;
    std::deque<Retry> waiting;
    {
        std::lock_guard lock(mutex_);
        all = forwarders_;
        waiting.swap(retries_);
    }
    for (const auto& f : all) f->abandon_all();
    for (auto& item : waiting) item.done(taking_over());
}

std::optional<crypto::SecureBuffer> StandbyApi::take_unlock_key() {
    keep_keys();  // a rotation since the last reading is followed now
    std::lock_guard lock(mutex_);
    return std::exchange(key_, std::nullopt);
}

}  // namespace coffer::manager
