// The API of a standby manager: a cofferd on a store on etcd that another cofferd holds, waiting
// in its store's open for the holder's lease to end.
//
// Every request is forwarded to the leading manager (nodeconn/forward.h) and its answer given
// back as it is, with an X-Coffer-Standby header naming the leader: the docker CLI and coffer can
// use any manager. To forward, the standby reads from the store on etcd, without claiming
// anything, which manager leads, the CA bundle that verifies it and the managers' forwarding key
// (ClusterTrust::read_forward_trust), opened with the store's keys; it reads them again when the
// leader cannot be reached or refuses it. A request the leader may have received but not answered
// (it died meanwhile) is not sent again: the caller is told it may have been carried out.
// Forwarding holds no thread while the leader works: requests wait on the forwarder's I/O, and
// a retry that must read etcd first waits on one thread of the standby's own.
//
// POST /swarm/unlock is this manager's own: on an autolocked store the key is checked against
// the store's keys on etcd (store::check_unlock_key, reading without claiming anything) and kept
// in locked memory, so that this manager unlocks itself the moment it leads, and from then on it
// opens the store's values to forward. Until then an autolocked standby answers 503 saying so.
// Attempts are limited as on a leader. A rotation of the unlock key on the leader is followed
// (keep_keys), so that the standby still unlocks itself when it leads.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "coffer/crypto/secure_buffer.h"
#include "coffer/net/http_server.h"
#include "coffer/store/store.h"

namespace coffer::nodeconn {
class Forwarder;
}

namespace coffer::manager {

class UnlockGate;
struct ForwardTrust;

class StandbyApi final : public net::Service {
  public:
    // dir and etcd: the data directory and store this cofferd opens.
    StandbyApi(std::filesystem::path dir, store::EtcdOptions etcd);
    ~StandbyApi() override;
    StandbyApi(const StandbyApi&) = delete;
    StandbyApi& operator=(const StandbyApi&) = delete;

    bool blocking(const net::Request& r) const override;
    net::Response handle(net::Request& r) override;
    // Every request but the unlock is forwarded without holding a thread while the leader works
    // on it; a retry that must read etcd first waits on the retrier's thread.
    bool asynchronous(const net::Request& r) const override;
    void handle_async(net::Request& r, std::function<void(net::Response)> done) override;

    // Abandons the requests being forwarded, and any later one (this manager now leads): they
    // are answered 503, saying they may have been carried out.
    void stop_forwarding();
    // The unlock key accepted last, or the one it was rotated to since, handed over once (the
    // manager now leads).
    std::optional<crypto::SecureBuffer> take_unlock_key();
    // Reads the store's keys again (call it every few seconds): the standby follows a rotation
    // of the DEK, and of the unlock key while it holds the DEK that seals the new one.
    void keep_keys();

  private:
    struct Contact;
    using Done = std::function<void(net::Response)>;
    // A request to send again once etcd was read: the first try found no leader, or could not
    // reach it, or was refused. r lives until done is called.
    struct Retry {
        net::Request* r;
        Done done;
        std::uint64_t generation;  // of the contact that failed; 0: none
    };

    // The leader and how to reach it, read again.
    Result<std::shared_ptr<const Contact>> refresh_contact();
    // Opens reader_, or reads its keys again; under reader_mutex_.
    Result<void> read_keys();
    // Sends r to c's leader; last: no retry after a failure.
    void send(const std::shared_ptr<const Contact>& c, net::Request& r, Done done, bool last);
    void retry(Retry item);
    void retrier();  // retrier_'s loop

    const std::filesystem::path dir_;
    const store::EtcdOptions etcd_;
    std::unique_ptr<UnlockGate> gate_;
    std::mutex reader_mutex_;                       // taken before mutex_
    std::unique_ptr<store::StandbyReader> reader_;  // under reader_mutex_
    std::mutex mutex_;
    std::optional<crypto::SecureBuffer> key_;  // under mutex_
    std::shared_ptr<const Contact> contact_;   // under mutex_
    std::uint64_t generation_ = 0;             // under mutex_: contacts read so far
    // Every forwarder made (one per CA bundle), destroyed only where none of its threads runs.
    std::vector<std::shared_ptr<nodeconn::Forwarder>> forwarders_;  // under mutex_
    std::deque<Retry> retries_;                                     // under mutex_
    bool stopping_ = false;                                         // under mutex_
    std::condition_variable retry_cv_;
    std::atomic<bool> cancelled_{false};
    std::thread retrier_;  // last: runs with the above
};

}  // namespace coffer::manager
