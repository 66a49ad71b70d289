// The API of a standby manager: a cofferd on a store on etcd that another cofferd holds, waiting
// in its store's open for the holder's lease to end. Every request is answered at once with 503
// and what it is, but for POST /swarm/unlock on an autolocked store: the key is checked against
// the store's keys on etcd (store::check_unlock_key, reading without claiming anything) and kept
// in locked memory, so that this manager unlocks itself the moment it leads instead of staying
// locked until someone runs `coffer cluster unlock` on it. Attempts are limited as on a leader.
#pragma once

#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>

#include "coffer/crypto/secure_buffer.h"
#include "coffer/net/http_server.h"
#include "coffer/store/store.h"

namespace coffer::manager {

class UnlockGate;

class StandbyApi final : public net::Service {
  public:
    // dir and etcd: the data directory and store this cofferd opens.
    StandbyApi(std::filesystem::path dir, store::EtcdOptions etcd);
    ~StandbyApi() override;
    StandbyApi(const StandbyApi&) = delete;
    StandbyApi& operator=(const StandbyApi&) = delete;

    bool blocking(const net::Request& r) const override;
    net::Response handle(net::Request& r) override;

    // The unlock key accepted last, handed over once (the manager now leads).
    std::optional<crypto::SecureBuffer> take_unlock_key();

  private:
    const std::filesystem::path dir_;
    const store::EtcdOptions etcd_;
    std::unique_ptr<UnlockGate> gate_;
    std::mutex mutex_;
    std::optional<crypto::SecureBuffer> key_;  // under mutex_
};

}  // namespace coffer::manager
