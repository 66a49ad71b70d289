#include "coffer/manager/standby_api.h"

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

}  // namespace

struct StandbyApi::Contact {
    std::string leader;  // HOST:PORT of its node port; "" when no manager leads
    crypto::SecureBuffer key;
    std::unique_ptr<nodeconn::Forwarder> forwarder;  // verifies the leader against the CA
};

StandbyApi::StandbyApi(std::filesystem::path dir, store::EtcdOptions etcd)
    : dir_(std::move(dir)), etcd_(std::move(etcd)), gate_(std::make_unique<UnlockGate>()) {}

StandbyApi::~StandbyApi() = default;

bool StandbyApi::blocking(const net::Request&) const {
    return true;  // reads etcd, or waits for the leader
}

net::Response StandbyApi::handle(net::Request& r) {
    if (!is_unlock(r)) return forward(r);
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
    std::lock_guard reading(reader_mutex_);
    if (!reader_) return;  // not opened yet: nothing to keep up with
    if (auto r = read_keys(); !r)
        log::debug("manager", "standby: read the store's keys: {}", r.error().message);
}

Result<std::shared_ptr<const StandbyApi::Contact>> StandbyApi::contact(bool refresh) {
    {
        std::lock_guard lock(mutex_);
        if (contact_ && !refresh) return contact_;
    }
    std::lock_guard reading(reader_mutex_);
    if (auto r = read_keys(); !r) return std::move(r).error();
    auto trust = ClusterTrust::read_forward_trust(
        [&](std::string_view k) { return reader_->get(store::Table::pki, k); });
    if (!trust) return std::move(trust).error();
    auto leader = reader_->leader();
    if (!leader) return std::move(leader).error();
    auto forwarder = nodeconn::Forwarder::make(trust->ca_bundle);
    if (!forwarder) return std::move(forwarder).error();
    auto fresh = std::make_shared<const Contact>(
        Contact{std::move(*leader), std::move(trust->key), std::move(*forwarder)});
    std::lock_guard lock(mutex_);
    contact_ = fresh;
    return fresh;
}

net::Response StandbyApi::forward(net::Request& r) {
    if (cancelled_)
        return own(net::Response::error(make_error(
            Errc::unavailable, "this cofferd is taking over as the leading manager: try again")));
    std::optional<Error> last;
    std::string leader;
    // Once with what was read last, once more with what etcd says now if none led then, or the
    // leader could not be reached or refused this manager (it changed, or its forwarding key
    // did).
    for (int attempt = 0; attempt < 2; ++attempt) {
        auto c = contact(attempt > 0);
        if (!c) {
            auto e = std::move(c).error();
            if (e.code != Errc::locked) e.code = Errc::unavailable;
            return own(net::Response::error(
                e.context("this cofferd is a standby manager and cannot forward the request to the "
                          "leader")));
        }
        leader = (*c)->leader;
        if (leader.empty() && attempt == 0) continue;  // read when none led: read again
        if (leader.empty())
            return own(net::Response::error(make_error(
                Errc::unavailable,
                "this cofferd is a standby manager and no manager leads the cluster right now "
                "(the store's lease is free or ending): try again in a few seconds")));
        auto to = endpoint_of(leader);
        if (!to)
            return own(net::Response::error(make_error(
                Errc::internal,
                fmt::format("the leading manager announced an unusable address {}", leader))));
        auto answer =
            (*c)->forwarder->send(*to, (*c)->key, r, forward_timeout, answer_timeout, cancelled_);
        if (answer) {
            answer->headers.emplace_back(std::string(standby_header),
                                         fmt::format("forwarded to {}", leader));
            return std::move(*answer);
        }
        if (answer.error().code == Errc::internal) {
            // It may have been carried out: never sent twice.
            log::warn("manager", "standby: {} {} forwarded to {}: {}", r.method, r.path, leader,
                      answer.error().message);
            return own(net::Response::error(make_error(
                Errc::unavailable,
                fmt::format("this cofferd is a standby manager; the leading manager at {} did not "
                            "answer the forwarded request, which may have been carried out: {}",
                            leader, answer.error().message))));
        }
        last = std::move(answer).error();
    }
    log::warn("manager", "standby: cannot forward {} {} to {}: {}", r.method, r.path, leader,
              last->message);
    return own(net::Response::error(make_error(
        Errc::unavailable, fmt::format("this cofferd is a standby manager and cannot reach the "
                                       "leading manager at {}: {}",
                                       leader, last->message))));
}

void StandbyApi::stop_forwarding() {
    cancelled_ = true;
}

std::optional<crypto::SecureBuffer> StandbyApi::take_unlock_key() {
    keep_keys();  // a rotation since the last reading is followed now
    std::lock_guard lock(mutex_);
    return std::exchange(key_, std::nullopt);
}

}  // namespace coffer::manager
