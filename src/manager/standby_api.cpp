#include "coffer/manager/standby_api.h"

#include "api_util.h"
#include "coffer/base/log.h"
#include "unlock_gate.h"

namespace coffer::manager {

namespace {

bool is_unlock(const net::Request& r) {
    if (r.method != "POST") return false;
    auto seg = route_of(r);
    return seg && seg->size() == 2 && (*seg)[0] == "swarm" && (*seg)[1] == "unlock";
}

}  // namespace

StandbyApi::StandbyApi(std::filesystem::path dir, store::EtcdOptions etcd)
    : dir_(std::move(dir)), etcd_(std::move(etcd)), gate_(std::make_unique<UnlockGate>()) {}

StandbyApi::~StandbyApi() = default;

bool StandbyApi::blocking(const net::Request& r) const {
    return is_unlock(r);  // reads etcd
}

net::Response StandbyApi::handle(net::Request& r) {
    if (!is_unlock(r))
        return net::Response::error(make_error(
            Errc::unavailable,
            "this cofferd is a standby manager: another cofferd holds the cluster's store on "
            "etcd and serves its API (`coffer node ls` there names it); this one takes over "
            "when that one stops"));
    return gate_->attempt(
        r, [] { return true; },
        [&](std::string_view key) -> Result<void> {
            if (auto checked = store::check_unlock_key(dir_, etcd_, key); !checked) return checked;
            std::lock_guard lock(mutex_);
            key_ = crypto::SecureBuffer::copy_of(key);
            log::info("manager",
                      "standby: the unlock key opens the store's keys; this manager unlocks "
                      "itself when it leads");
            return {};
        });
}

std::optional<crypto::SecureBuffer> StandbyApi::take_unlock_key() {
    std::lock_guard lock(mutex_);
    return std::exchange(key_, std::nullopt);
}

}  // namespace coffer::manager
