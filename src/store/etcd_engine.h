// The etcd engine: the store's sealed records in an etcd v3 cluster, through etcd's JSON gateway
// (POST /v3/kv/range, /v3/kv/txn, /v3/lease/...) over HTTP or HTTPS with a client certificate.
//
//   <prefix><table>/<key>   a record, its value sealed exactly as in RocksDB
//   <prefix>owner           the manager that holds the store (leads), attached to its lease:
//                           {"addr","host","pid"}
//   <prefix>managers/<addr> every manager that announced itself (EtcdOptions::advertise), kept
//                           until forgotten: {"addr","host","pid"}
//   <prefix>alive/<addr>    the same while it runs, attached to its lease
//   <prefix>join            what a manager joining with the manager token needs (join_store)
//
// One cofferd holds a prefix at a time: open() claims the owner key under a lease it keeps
// alive, and every write is a transaction that succeeds only while that key still carries the
// lease. Other cofferd on the prefix stand by in open(), announced, until the holder's lease ends
// (it stopped, died, or was cut off from etcd), and one of them then takes the store. A manager
// that lost its lease (cut off from etcd for longer than the lease's TTL) can therefore never write
// again, even if it does not know yet; it says so on its next write. A write is acknowledged once
// etcd committed it (a quorum of members has it in its log).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <boost/json/fwd.hpp>

#include "coffer/base/sync.h"
#include "coffer/net/http_client.h"
#include "engine.h"

namespace coffer::store::detail {

class EtcdEngine final : public Engine {
  public:
    // Throws ErrorException: no member answers, or, with create, the prefix already holds
    // records; without create, it holds none. While another manager holds the prefix, waits
    // (stands by) until it lets go, for as long as that takes.
    static std::unique_ptr<EtcdEngine> open(const EtcdOptions& options, bool create);
    ~EtcdEngine() override;
    EtcdEngine(const EtcdEngine&) = delete;
    EtcdEngine& operator=(const EtcdEngine&) = delete;

    std::string describe() const override;
    Result<std::optional<std::string>> get(Table table, std::string_view key) override;
    Result<void> write(const RawBatch& batch) override;
    Result<void> scan(Table table, std::string_view from, const RawVisit& fn) override;
    Result<std::unique_ptr<EngineView>> snapshot() override;
    // Compacts etcd's history up to the current revision.
    Result<void> compact() override;
    BatchLimits limits() const override;
    Result<void> writable() const override;
    // Erases every record under the prefix.
    Result<void> discard() override;
    Result<std::vector<StoreManager>> managers() override;
    Result<void> forget_manager(std::string_view addr) override;
    bool shared() const override { return true; }
    Result<void> put_shared(std::string_view name, std::string value) override;
    // <prefix><name> as stored, read without claiming anything (a joining manager's first read).
    static Result<std::optional<std::string>> read_shared(const EtcdOptions& options,
                                                          std::string_view name);
    // An engine that claims nothing, for reads only (a standby's check of an unlock key): a
    // write through it fails as a lost hold does.
    static std::unique_ptr<EtcdEngine> unclaimed(const EtcdOptions& options);

  private:
    class View;
    explicit EtcdEngine(EtcdOptions options);

    // One gateway call: the JSON answer's text, from the first member that answers.
    Result<std::string> call(std::string_view path, const std::string& body);
    std::string record_key(Table table, std::string_view key) const;
    // The value at key as stored; nullopt when there is none. what names it in errors.
    Result<std::optional<std::string>> read_key(const std::string& key, std::string_view what);
    // The records of table from `from`, at revision (0: the current one, which is then kept for
    // the following pages).
    Result<void> scan_at(Table table, std::string_view from, std::int64_t revision,
                         const RawVisit& fn);
    Result<std::int64_t> current_revision();
    // The compare of every write: the owner key still carries this manager's lease.
    boost::json::array held_compare() const;
    // A transaction of ops under held_compare(); a failed compare means the hold is lost.
    Result<void> write_held(boost::json::array ops, std::string_view what);
    void claim(bool create);
    // {"addr","host","pid"} of this cofferd.
    std::string self_value() const;
    // Puts managers/<advertise> and alive/<advertise> (under the lease).
    void announce();
    // A new lease, kept alive by keeper_ (which must not run) from now on.
    Result<void> take_lease();
    void keep_alive();
    // Points member_ at the member that leads etcd's raft, when the members say which one it is
    // and it is one of the endpoints: a write sent to a follower takes one more hop (the
    // follower hands the proposal to the leader).
    void prefer_raft_leader();
    void look_for_raft_leader();  // looker_'s loop

    const EtcdOptions options_;
    const net::ClientTls tls_;  // from options_, for every connection
    std::string owner_key_;
    std::int64_t lease_ = 0;
    std::atomic<bool> lost_{false};
    std::atomic<bool> holding_{false};  // the store claimed: no longer standing by

    // Idle connections, by member: taken for a call, given back after it.
    std::mutex pool_mu_;
    std::vector<std::vector<std::unique_ptr<net::HttpClient>>> idle_;
    std::atomic<std::size_t> member_{0};  // the member tried first

    std::mutex keeper_mu_;
    std::condition_variable keeper_cv_;
    bool stopping_ = false;
    std::thread keeper_;  // renews the lease
    // Looks for etcd's raft leader, on its own: a member that hangs while it asks cannot hold
    // back a renewal.
    std::thread looker_;
};

}  // namespace coffer::store::detail
