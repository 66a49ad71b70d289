// The store on etcd (Debian's etcd-server, members started by the tests on loopback): records
// round-trip sealed, etcd never holds plaintext, one manager holds a prefix at a time and one
// that lost its lease cannot write, transactions stay within etcd's limits, backups move a store
// between the embedded engine and etcd, a cluster of three survives one member and recovers
// from losing two, and TLS with client certificates works.
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <boost/json.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

#include "coffer/crypto/encoding.h"
#include "coffer/crypto/random.h"
#include "coffer/manager/committer.h"
#include "coffer/store/backup.h"
#include "coffer/store/store.h"
#include "etcd_fixture.h"

using namespace coffer;
using namespace coffer::store;
using namespace coffer::test;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

std::string str(const crypto::SecureBuffer& b) {
    return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

std::span<const std::uint8_t> bytes(std::string_view s) {
    return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

std::string random_text(std::size_t n) {
    std::string raw(n, '\0');
    crypto::random_bytes({reinterpret_cast<std::uint8_t*>(raw.data()), raw.size()});
    auto text = crypto::hex_encode(bytes(raw));
    return text.substr(0, n);
}

std::unique_ptr<Store> open_store(const fs::path& dir, const std::optional<EtcdOptions>& etcd) {
    auto r = Store::open({.dir = dir, .etcd = etcd});
    if (!r) throw std::runtime_error(r.error().message);
    return std::move(r->store);
}

Result<void> put(Store& s, Table t, std::string key, std::string value) {
    Batch b;
    b.put(t, std::move(key), std::move(value));
    return s.write(std::move(b));
}

std::map<std::string, std::string> everything(Store& s, Table t) {
    std::map<std::string, std::string> out;
    auto r = s.scan(t, [&](std::string_view k, crypto::SecureBuffer v) {
        out.emplace(k, str(v));
        return true;
    });
    if (!r) throw std::runtime_error(r.error().message);
    return out;
}

std::string take_backup(Store& s) {
    std::string out;
    auto r = s.backup([&](std::span<const std::uint8_t> chunk) -> Result<void> {
        out.append(reinterpret_cast<const char*>(chunk.data()), chunk.size());
        return {};
    });
    if (!r) throw std::runtime_error(r.error().message);
    return out;
}

// Every file under dir, searched for needle.
std::vector<std::string> files_holding(const fs::path& dir, const std::string& needle) {
    std::vector<std::string> found;
    for (const auto& e : fs::recursive_directory_iterator(dir)) {
        if (!e.is_regular_file()) continue;
        std::ifstream in(e.path(), std::ios::binary);
        std::string content((std::istreambuf_iterator<char>(in)), {});
        if (content.find(needle) != std::string::npos) found.push_back(e.path().string());
    }
    return found;
}

class EtcdStore : public ::testing::Test {
  protected:
    void start(EtcdClusterOptions o = {}) {
        etcd_ = std::make_unique<EtcdCluster>(tmp_.path() / "etcd", o);
        ASSERT_EQ(etcd_->error(), "");
    }
    EtcdOptions options(std::string prefix = "/coffer/") const {
        EtcdOptions o;
        o.endpoints = etcd_->endpoints();
        o.prefix = std::move(prefix);
        o.lease_ttl = 2s;
        return o;
    }
    fs::path dir(const std::string& name) const { return tmp_.path() / name; }

    TempDir tmp_;
    std::unique_ptr<EtcdCluster> etcd_;
};

}  // namespace

TEST_F(EtcdStore, RecordsRoundTripSealedAndEtcdNeverHoldsPlaintext) {
    start();
    auto canary = "canary-" + random_text(24);
    std::string binary_key("k/\xff\x00z", 5);
    {
        auto store = open_store(dir("d"), options());
        EXPECT_NE(store->engine().find("etcd"), std::string::npos) << store->engine();
        Batch b;
        b.put(Table::secrets, "b", std::string("two"));
        b.put(Table::secrets, "a", std::string("one"));
        b.put(Table::secrets, binary_key, std::string("\0binary\xff", 8));
        b.put(Table::secret_data, "a", canary);
        b.put(Table::nodes, "empty", std::string());
        ASSERT_TRUE(store->write(std::move(b)).ok());
        // More records than one page of a scan.
        for (int i = 0; i < 600; i += 100) {
            Batch many;
            for (int j = i; j < i + 100; ++j)
                many.put(Table::services, fmt::format("svc-{:04}", j), fmt::format("spec {}", j));
            ASSERT_TRUE(store->write(std::move(many)).ok());
        }
        EXPECT_EQ(str(**store->get(Table::secret_data, "a")), canary);
        EXPECT_EQ(str(**store->get(Table::secrets, binary_key)), std::string("\0binary\xff", 8));
        EXPECT_FALSE(store->get(Table::services, "a")->has_value());
        Batch e;
        e.erase(Table::secrets, "b");
        e.erase(Table::secrets, "never-there");
        ASSERT_TRUE(store->write(std::move(e)).ok());
        EXPECT_EQ(everything(*store, Table::secrets),
                  (std::map<std::string, std::string>{
                      {"a", "one"}, {binary_key, std::string("\0binary\xff", 8)}}));
        int calls = 0;
        ASSERT_TRUE(store->scan(Table::services, [&](auto, auto) { return ++calls < 3; }).ok());
        EXPECT_EQ(calls, 3);
    }
    // Reopened (the first let go of the prefix on close): everything is there.
    auto store = open_store(dir("d"), options());
    auto services = everything(*store, Table::services);
    ASSERT_EQ(services.size(), 600u);
    EXPECT_EQ(services["svc-0599"], "spec 599");
    EXPECT_EQ(str(**store->get(Table::secret_data, "a")), canary);
    EXPECT_FALSE(fs::exists(dir("d") / "db"));

    // What etcd holds, through its own client and in its members' files: sealed only.
    auto raw = etcd_->etcdctl({"get", "--prefix", "/coffer/"});
    ASSERT_TRUE(raw.ok()) << raw.describe();
    EXPECT_NE(raw.out.find("/coffer/secret_data/a"), std::string::npos);
    EXPECT_EQ(raw.out.find(canary), std::string::npos);
    EXPECT_EQ(raw.out.find("spec 599"), std::string::npos);
    EXPECT_EQ(files_holding(etcd_->data_root(), canary), std::vector<std::string>{});
}

TEST_F(EtcdStore, TheDataDirectorySaysWhereItsRecordsAre) {
    start();
    { open_store(dir("d"), options()); }
    auto embedded = Store::open({.dir = dir("d")});
    ASSERT_FALSE(embedded);
    EXPECT_NE(embedded.error().message.find("its records are in etcd"), std::string::npos)
        << embedded.error().message;
    { open_store(dir("e"), std::nullopt); }
    auto moved = Store::open({.dir = dir("e"), .etcd = options("/other/")});
    ASSERT_FALSE(moved);
    EXPECT_NE(moved.error().message.find("embedded store"), std::string::npos)
        << moved.error().message;
    // A new directory on a prefix that holds another store's records.
    auto taken = Store::open({.dir = dir("f"), .etcd = options()});
    ASSERT_FALSE(taken);
    EXPECT_NE(taken.error().message.find("already holds a coffer store"), std::string::npos)
        << taken.error().message;
    // The right directory, the wrong prefix.
    auto empty = Store::open({.dir = dir("d"), .etcd = options("/elsewhere/")});
    ASSERT_FALSE(empty);
    EXPECT_NE(empty.error().message.find("holds no coffer store"), std::string::npos)
        << empty.error().message;
}

// Two managers with the same data directory (a copy) on one prefix: the second stands by, listed
// as a reachable manager, while the first leads and writes; once the first closes, the second
// takes the store at once with everything written. A stopped manager stays listed, unreachable,
// until forgotten; a running one cannot be forgotten.
TEST_F(EtcdStore, OneManagerLeadsAndAnotherStandsBy) {
    start();
    auto first_options = options();
    first_options.advertise = "127.0.0.1:4301";
    auto first = open_store(dir("a"), first_options);
    ASSERT_TRUE(put(*first, Table::secrets, "x", "1").ok());
    fs::copy(dir("a"), dir("b"), fs::copy_options::recursive);
    auto second_options = options();
    second_options.advertise = "127.0.0.1:4302";
    std::optional<Result<Store::Opened>> second;
    std::mutex mu;
    std::thread standby([&] {
        auto opened = Store::open({.dir = dir("b"), .etcd = second_options});
        std::lock_guard l(mu);
        second.emplace(std::move(opened));
    });
    auto listed = [&](std::vector<StoreManager> want) {
        return wait_until(
            [&] {
                auto all = first->managers();
                if (!all) return false;
                for (auto& m : *all) m.pid = 0, m.host.clear();
                return *all == want;
            },
            10s);
    };
    EXPECT_TRUE(
        listed({{"127.0.0.1:4301", "", 0, true, true}, {"127.0.0.1:4302", "", 0, true, false}}));
    // The first still writes; the second still waits.
    EXPECT_TRUE(put(*first, Table::secrets, "y", "2").ok());
    {
        std::lock_guard l(mu);
        EXPECT_FALSE(second.has_value());
    }
    auto running = first->forget_manager("127.0.0.1:4302");
    ASSERT_FALSE(running);
    EXPECT_EQ(running.error().code, Errc::conflict) << running.error().message;
    first.reset();
    auto t0 = std::chrono::steady_clock::now();
    standby.join();
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
    ASSERT_TRUE(second.has_value() && second->ok()) << (second ? second->error().message : "");
    auto& now = *(*second)->store;
    EXPECT_EQ(everything(now, Table::secrets),
              (std::map<std::string, std::string>{{"x", "1"}, {"y", "2"}}));
    auto all = now.managers();
    ASSERT_TRUE(all);
    ASSERT_EQ(all->size(), 2u);
    EXPECT_FALSE((*all)[0].reachable);  // the first, closed
    EXPECT_TRUE((*all)[1].leader);
    ASSERT_TRUE(now.forget_manager("127.0.0.1:4301").ok());
    EXPECT_EQ(now.managers()->size(), 1u);
    EXPECT_EQ(now.forget_manager("127.0.0.1:4301").error().code, Errc::not_found);
}

// Managers started at once on an empty prefix: while one holds it to make its store, another
// with a data directory of its own refuses at once, rather than standing by and making a second
// store (with keys of its own) over the first one's when that one stops.
TEST_F(EtcdStore, AManagerThatWouldMakeASecondStoreOnAHeldPrefixRefuses) {
    start();
    // A cofferd making its store: it holds the prefix and has written nothing yet.
    auto granted = etcd_->etcdctl({"lease", "grant", "60"});
    ASSERT_TRUE(granted.ok()) << granted.describe();
    auto words = granted.out.substr(0, granted.out.find(" granted"));
    auto lease = words.substr(words.rfind(' ') + 1);
    ASSERT_TRUE(etcd_
                    ->etcdctl({"put", "--lease=" + lease, "/race/owner",
                               R"({"addr":"","host":"other","pid":1})"})
                    .ok());
    auto t0 = std::chrono::steady_clock::now();
    auto late = Store::open({.dir = dir("late"), .etcd = options("/race/")});
    ASSERT_FALSE(late) << "a second store would be made over the first";
    EXPECT_EQ(late.error().code, Errc::conflict);
    EXPECT_NE(late.error().message.find("which is making a coffer store there"), std::string::npos)
        << late.error().message;
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s) << "refused at once, not standing by";
    EXPECT_FALSE(fs::exists(dir("late"))) << "its KEK, and the directory it made, are removed";
    // Nothing of the late one's is in etcd.
    auto keys = etcd_->etcdctl({"get", "--prefix", "--keys-only", "/race/"});
    auto listed = lines_of(keys.out);
    std::erase(listed, std::string());
    EXPECT_EQ(listed, std::vector<std::string>{"/race/owner"}) << keys.out;
}

// Three managers on one prefix: when the leader closes, exactly one of the two standbys takes
// the store (the other keeps standing by), and when that one closes, the last takes it.
TEST_F(EtcdStore, OfTwoStandbysExactlyOneTakesOver) {
    start();
    auto first = open_store(dir("a"), options());
    ASSERT_TRUE(put(*first, Table::secrets, "x", "1").ok());
    fs::copy(dir("a"), dir("b"), fs::copy_options::recursive);
    fs::copy(dir("a"), dir("c"), fs::copy_options::recursive);
    std::mutex mu;
    std::vector<std::unique_ptr<Store>> opened;
    std::vector<std::thread> standbys;
    for (const char* d : {"b", "c"})
        standbys.emplace_back([&, d] {
            auto o = Store::open({.dir = dir(d), .etcd = options()});
            std::lock_guard l(mu);
            if (o) opened.push_back(std::move(o->store));
        });
    auto count = [&] {
        std::lock_guard l(mu);
        return opened.size();
    };
    first.reset();
    ASSERT_TRUE(wait_until([&] { return count() >= 1; }, 10s));
    // The other stands by: nothing more opens while the new leader lives, and it writes.
    EXPECT_FALSE(wait_until([&] { return count() > 1; }, 3s));
    std::unique_ptr<Store> leader;
    {
        std::lock_guard l(mu);
        leader = std::move(opened.front());
        opened.clear();
    }
    EXPECT_TRUE(put(*leader, Table::secrets, "y", "2").ok());
    leader.reset();
    ASSERT_TRUE(wait_until([&] { return count() == 1; }, 10s));
    for (auto& t : standbys) t.join();
    EXPECT_EQ(everything(*opened.front(), Table::secrets),
              (std::map<std::string, std::string>{{"x", "1"}, {"y", "2"}}));
}

// A manager joins with the manager join token the holder published: a wrong token is refused
// and writes nothing; the right one gives a data directory with the same KEK, which etcd holds
// only sealed; the joined manager opens the store and reads what the first wrote.
TEST_F(EtcdStore, AManagerJoinsWithTheManagerToken) {
    start();
    auto first = open_store(dir("a"), options());
    ASSERT_TRUE(put(*first, Table::secrets, "x", "1").ok());
    auto token = crypto::SecureBuffer::copy_of(std::string_view("COFFERTKN-1-manager-token-text"));
    auto other = crypto::SecureBuffer::copy_of(std::string_view("COFFERTKN-1-worker-token-text"));
    auto none = join_store({.dir = dir("j"), .etcd = options(), .manager_token = &token});
    ASSERT_FALSE(none);
    EXPECT_EQ(none.error().code, Errc::not_found) << none.error().message;
    ASSERT_TRUE(first->publish_manager_join(token).ok());
    auto refused = join_store({.dir = dir("j"), .etcd = options(), .manager_token = &other});
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().code, Errc::permission_denied) << refused.error().message;
    EXPECT_FALSE(fs::exists(dir("j"))) << "a refused join leaves no directory behind";
    ASSERT_TRUE(join_store({.dir = dir("j"), .etcd = options(), .manager_token = &token}).ok());
    auto kek = read_file(dir("a") / "kek");
    EXPECT_EQ(read_file(dir("j") / "kek"), kek);
    auto raw = etcd_->etcdctl({"get", "--prefix", "/coffer/"});
    ASSERT_TRUE(raw.ok());
    EXPECT_EQ(raw.out.find(kek), std::string::npos);
    EXPECT_EQ(raw.out.find(crypto::base64_encode(
                  {reinterpret_cast<const std::uint8_t*>(kek.data()), kek.size()})),
              std::string::npos);
    // A joined directory is not joined again.
    auto again = join_store({.dir = dir("j"), .etcd = options(), .manager_token = &token});
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().code, Errc::already_exists);
    first.reset();
    auto joined = open_store(dir("j"), options());
    EXPECT_EQ(everything(*joined, Table::secrets),
              (std::map<std::string, std::string>{{"x", "1"}}));
}

// Its lease revoked behind its back (as when it was cut off from etcd past the TTL): the very
// next write fails, and writes nothing; so do all after it.
TEST_F(EtcdStore, AManagerThatLostItsLeaseCannotWrite) {
    start();
    auto store = open_store(dir("d"), options());
    ASSERT_TRUE(put(*store, Table::secrets, "before", "1").ok());
    auto leases = etcd_->etcdctl({"lease", "list"});
    ASSERT_TRUE(leases.ok()) << leases.describe();
    auto lines = lines_of(leases.out);
    ASSERT_EQ(lines.size(), 2u) << leases.out;  // "found 1 leases", the id
    auto revoked = etcd_->etcdctl({"lease", "revoke", lines[1]});
    ASSERT_TRUE(revoked.ok()) << revoked.describe();
    auto w = put(*store, Table::secrets, "after", "2");
    ASSERT_FALSE(w);
    EXPECT_EQ(w.error().code, Errc::unavailable);
    EXPECT_NE(w.error().message.find("lost its hold"), std::string::npos) << w.error().message;
    EXPECT_FALSE(put(*store, Table::secrets, "later", "3"));
    auto raw = etcd_->etcdctl({"get", "--prefix", "--keys-only", "/coffer/secrets/"});
    ASSERT_TRUE(raw.ok());
    EXPECT_NE(raw.out.find("/coffer/secrets/before"), std::string::npos);
    EXPECT_EQ(raw.out.find("/coffer/secrets/after"), std::string::npos);
    EXPECT_EQ(raw.out.find("/coffer/secrets/later"), std::string::npos);
    // Reads still work: what is there can be served.
    EXPECT_EQ(str(**store->get(Table::secrets, "before")), "1");
}

// etcd takes at most --max-txn-ops operations in one transaction: a write beyond that fails whole
// with a clear error, and a DEK rotation re-seals in chunks within it.
TEST_F(EtcdStore, WritesStayWithinEtcdsTransactionLimits) {
    start({.max_txn_ops = 16});
    auto o = options();
    o.max_txn_ops = 16;
    auto store = open_store(dir("d"), o);
    EXPECT_EQ(store->batch_limits().ops, 16u);
    Batch big;
    for (int i = 0; i < 17; ++i) big.put(Table::tasks, fmt::format("t{:02}", i), std::string("x"));
    auto r = store->write(std::move(big));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, Errc::too_large);
    EXPECT_NE(r.error().message.find("17 records"), std::string::npos) << r.error().message;
    EXPECT_TRUE(everything(*store, Table::tasks).empty());
    for (int i = 0; i < 100; i += 10) {
        Batch b;
        for (int j = i; j < i + 10; ++j)
            b.put(Table::tasks, fmt::format("t{:03}", j), fmt::format("task {}", j));
        ASSERT_TRUE(store->write(std::move(b)).ok());
    }
    ASSERT_TRUE(store->rotate_dek().ok());
    store->wait_rotation();
    EXPECT_FALSE(store->rotation_pending());
    EXPECT_EQ(store->current_dek_id(), 2u);
    auto tasks = everything(*store, Table::tasks);
    ASSERT_EQ(tasks.size(), 100u);
    EXPECT_EQ(tasks["t042"], "task 42");
    // etcd agrees with the limit: a transaction past it is its error too, not only coffer's.
    auto o2 = o;
    o2.max_txn_ops = 64;
    o2.prefix = "/wide/";
    auto wide = open_store(dir("w"), o2);
    Batch past;
    for (int i = 0; i < 20; ++i) past.put(Table::tasks, fmt::format("t{:02}", i), std::string("x"));
    auto refused = wide->write(std::move(past));
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message.find("too many operations"), std::string::npos)
        << refused.error().message;
}

// The migration path: a backup of the embedded store restored into etcd, and one of the store
// on etcd restored into a new data directory; each holds every record, and a restore into a
// prefix that holds a store is refused and changes nothing.
TEST_F(EtcdStore, BackupsMoveAStoreBetweenTheEmbeddedEngineAndEtcd) {
    start({.max_txn_ops = 32});
    auto o = options();
    o.max_txn_ops = 32;
    std::map<std::string, std::string> want;
    std::string backup;
    {
        auto embedded = open_store(dir("embedded"), std::nullopt);
        for (int i = 0; i < 300; ++i) {
            auto k = fmt::format("s{:03}", i), v = "secret " + random_text(16);
            ASSERT_TRUE(put(*embedded, Table::secret_data, k, v).ok());
            want[k] = v;
        }
        backup = take_backup(*embedded);
    }
    auto kek = crypto::SecureBuffer::copy_of(std::string_view(read_file(dir("embedded") / "kek")));
    auto restored =
        restore_backup({.dir = dir("on-etcd"), .backup = bytes(backup), .key = &kek, .etcd = o});
    ASSERT_TRUE(restored) << restored.error().message;
    EXPECT_EQ(restored->records, 302u);  // 300, a DEK and "current"
    std::string again;
    {
        auto on_etcd = open_store(dir("on-etcd"), o);
        EXPECT_EQ(everything(*on_etcd, Table::secret_data), want);
        ASSERT_TRUE(put(*on_etcd, Table::secret_data, "added", "on etcd").ok());
        want["added"] = "on etcd";
        again = take_backup(*on_etcd);
    }
    EXPECT_EQ(again.find("secret "), std::string::npos) << "plaintext in a backup";
    // Into a prefix that holds a store: refused, and the directory is left empty.
    auto refused =
        restore_backup({.dir = dir("twice"), .backup = bytes(backup), .key = &kek, .etcd = o});
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message.find("already holds"), std::string::npos)
        << refused.error().message;
    EXPECT_FALSE(fs::exists(dir("twice")) && !fs::is_empty(dir("twice")));
    // And back to the embedded engine.
    auto back = restore_backup({.dir = dir("back"), .backup = bytes(again), .key = &kek});
    ASSERT_TRUE(back) << back.error().message;
    auto embedded_again = open_store(dir("back"), std::nullopt);
    EXPECT_EQ(everything(*embedded_again, Table::secret_data), want);
}

// A backup taken while another thread writes: every write acknowledged before the backup
// began is in it.
TEST_F(EtcdStore, ABackupUnderWritesHoldsEveryAcknowledgedWrite) {
    start();
    auto store = open_store(dir("d"), options());
    std::atomic<int> acknowledged{0};
    std::atomic<bool> stop{false};
    std::thread writer([&] {
        for (int i = 0; !stop; ++i) {
            if (!put(*store, Table::secrets, fmt::format("w{:05}", i), "v").ok()) return;
            acknowledged = i + 1;
        }
    });
    ASSERT_TRUE(wait_until([&] { return acknowledged >= 50; }, 30s));
    int before = acknowledged;
    auto backup = take_backup(*store);
    stop = true;
    writer.join();
    auto kek = crypto::SecureBuffer::copy_of(std::string_view(read_file(dir("d") / "kek")));
    auto restored = restore_backup({.dir = dir("r"), .backup = bytes(backup), .key = &kek});
    ASSERT_TRUE(restored) << restored.error().message;
    auto copy = open_store(dir("r"), std::nullopt);
    auto held = everything(*copy, Table::secrets);
    for (int i = 0; i < before; ++i)
        EXPECT_TRUE(held.count(fmt::format("w{:05}", i))) << "acknowledged write " << i << " lost";
}

// Three members: one killed, the store goes on through the others; two killed, writes fail
// with a clear error (no quorum) and nothing is half-written; both back, it works again.
TEST_F(EtcdStore, ThreeMembersSurviveOneAndRecoverFromTwo) {
    start({.members = 3});
    auto store = open_store(dir("d"), options());
    ASSERT_TRUE(put(*store, Table::secrets, "a", "1").ok());
    // A standby on the same store (it stands by inside open()).
    fs::copy(dir("d"), dir("s"), fs::copy_options::recursive);
    std::optional<Result<Store::Opened>> standby;
    std::mutex mu;
    auto standby_options = options();
    standby_options.advertise = "127.0.0.1:4302";
    std::thread waiting([&] {
        auto opened = Store::open({.dir = dir("s"), .etcd = standby_options});
        std::lock_guard l(mu);
        standby.emplace(std::move(opened));
    });
    auto ended = [&] {
        std::lock_guard l(mu);
        return standby.has_value();
    };
    struct Ends {  // the first store closes, so that the standby's open() returns
        std::unique_ptr<Store>& first;
        std::thread& t;
        ~Ends() {
            first.reset();
            t.join();
        }
    } ends{store, waiting};
    ASSERT_TRUE(wait_until(
        [&] {
            auto all = store->managers();
            return all && all->size() == 1 && (*all)[0].reachable;
        },
        10s))
        << "the standby stands by";
    etcd_->kill(0);
    ASSERT_TRUE(put(*store, Table::secrets, "b", "2").ok());
    EXPECT_EQ(str(**store->get(Table::secrets, "a")), "1");
    etcd_->kill(1);
    auto w = put(*store, Table::secrets, "c", "3");
    ASSERT_FALSE(w);
    EXPECT_EQ(w.error().code, Errc::unavailable);
    EXPECT_NE(w.error().message.find("etcd: no member could serve the request (a majority of "
                                     "the members must be up"),
              std::string::npos)
        << w.error().message;
    // The standby rides out the outage, longer than its lease's TTL: it neither gives up nor
    // takes the store.
    EXPECT_FALSE(wait_until(ended, 6s))
        << (standby && !standby->ok() ? standby->error().message : "took the store");
    ASSERT_EQ(etcd_->start(0), "");
    ASSERT_EQ(etcd_->start(1), "");
    // The lease outlived the outage (etcd extends leases when a leader is elected).
    EXPECT_TRUE(wait_until([&] { return put(*store, Table::secrets, "d", "4").ok(); }, 30s));
    auto held = everything(*store, Table::secrets);
    EXPECT_EQ(held["a"], "1");
    EXPECT_EQ(held["b"], "2");
    EXPECT_EQ(held["d"], "4");
    EXPECT_FALSE(ended()) << "the standby still stands by";
    // The first closes: the standby takes the store.
    store.reset();
    ASSERT_TRUE(wait_until(ended, 30s));
    std::lock_guard l(mu);
    ASSERT_TRUE(standby->ok()) << standby->error().message;
    EXPECT_EQ(everything(*(*standby)->store, Table::secrets)["d"], "4");
}

// Members that serve clients over TLS and ask for a client certificate.
TEST_F(EtcdStore, TlsWithAClientCertificate) {
    start({.tls = true});
    auto o = options();
    o.ca_file = etcd_->ca().string();
    o.cert_file = etcd_->client_cert().string();
    o.key_file = etcd_->client_key().string();
    {
        auto store = open_store(dir("d"), o);
        ASSERT_TRUE(put(*store, Table::secrets, "a", "over tls").ok());
        EXPECT_EQ(str(**store->get(Table::secrets, "a")), "over tls");
    }
    auto without = o;
    without.cert_file.clear();
    without.key_file.clear();
    auto refused = Store::open({.dir = dir("d"), .etcd = without});
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message.find("etcd"), std::string::npos) << refused.error().message;
    auto other_ca = o;
    other_ca.ca_file = "/etc/ssl/certs/ca-certificates.crt";
    auto untrusted = Store::open({.dir = dir("d"), .etcd = other_ca});
    ASSERT_FALSE(untrusted);
    EXPECT_NE(untrusted.error().message.find("TLS handshake"), std::string::npos)
        << untrusted.error().message;
}

// A batch naming a record twice is what applying its operations in order leaves (etcd itself
// refuses a transaction that names a key twice).
TEST_F(EtcdStore, ABatchThatNamesARecordTwiceKeepsTheLastOperation) {
    start();
    auto store = open_store(dir("d"), options());
    Batch b;
    b.put(Table::secrets, "twice", std::string("first"));
    b.put(Table::secrets, "gone", std::string("x"));
    b.put(Table::secrets, "twice", std::string("second"));
    b.erase(Table::secrets, "gone");
    b.put(Table::services, "twice", std::string("another table"));
    ASSERT_TRUE(store->write(std::move(b)).ok());
    EXPECT_EQ(everything(*store, Table::secrets),
              (std::map<std::string, std::string>{{"twice", "second"}}));
    EXPECT_EQ(str(**store->get(Table::services, "twice")), "another table");
}

// The manager's group commit on etcd merges requests that write the same record (the delivery
// record, say) into one transaction: each lands, and is answered, in the order submitted.
TEST_F(EtcdStore, GroupCommitsKeepTheOrderOfWritesToOneRecord) {
    start();
    auto store = open_store(dir("d"), options());
    std::mutex mu;
    std::condition_variable cv;
    std::vector<int> answered;
    int done = 0;
    constexpr int n = 300;
    {
        manager::Committer committer(*store);
        for (int i = 0; i < n; ++i) {
            Batch b;
            b.put(Table::meta, "counter", std::to_string(i));
            b.put(Table::tasks, fmt::format("t{:04}", i), std::string("x"));
            committer.submit(std::move(b), [&, i](Result<void> r) {
                std::lock_guard l(mu);
                EXPECT_TRUE(r.ok()) << r.error().message;
                answered.push_back(i);
                ++done;
                cv.notify_all();
            });
        }
        std::unique_lock l(mu);
        ASSERT_TRUE(cv.wait_for(l, 60s, [&] { return done == n; }));
    }
    std::vector<int> in_order(n);
    for (int i = 0; i < n; ++i) in_order[static_cast<std::size_t>(i)] = i;
    EXPECT_EQ(answered, in_order);
    EXPECT_EQ(str(**store->get(Table::meta, "counter")), std::to_string(n - 1));
    EXPECT_EQ(everything(*store, Table::tasks).size(), std::size_t(n));
}

// The store writes to the member that leads etcd's raft, whatever the order of the endpoints it
// was given: through a follower each proposal would take one more hop. Counted by the members'
// own figures of the transactions their gRPC servers handled (the JSON gateway calls its own
// member's).
TEST_F(EtcdStore, WritesGoToTheRaftLeaderWhicheverEndpointComesFirst) {
    start({.members = 3});
    auto status = etcd_->etcdctl({"endpoint", "status", "-w", "json"});
    ASSERT_TRUE(status.ok()) << status.describe();
    std::string leader_url;
    auto members = boost::json::parse(status.out);
    for (const auto& e : members.as_array()) {
        const auto& s = e.at("Status").as_object();
        if (boost::json::serialize(s.at("header").at("member_id")) ==
            boost::json::serialize(s.at("leader")))
            leader_url = std::string(e.at("Endpoint").as_string());
    }
    ASSERT_FALSE(leader_url.empty()) << status.out;
    auto o = options();
    // The leader last.
    std::stable_partition(o.endpoints.begin(), o.endpoints.end(),
                          [&](const std::string& u) { return u != leader_url; });
    ASSERT_EQ(o.endpoints.back(), leader_url);
    auto txns = [&](const std::string& url) {
        auto r = run_program({"curl", "-sS", "--max-time", "5", url + "/metrics"});
        long n = 0;
        std::istringstream lines(r.out);
        for (std::string line; std::getline(lines, line);)
            if (line.starts_with("grpc_server_handled_total{") &&
                line.find("grpc_method=\"Txn\"") != std::string::npos)
                n += std::stol(line.substr(line.rfind(' ') + 1));
        return n;
    };
    auto store = open_store(dir("d"), o);
    std::map<std::string, long> before;
    for (const auto& url : o.endpoints) before[url] = txns(url);
    for (int i = 0; i < 20; ++i)
        ASSERT_TRUE(put(*store, Table::secrets, fmt::format("s{}", i), "x").ok());
    for (const auto& url : o.endpoints) {
        auto handled = txns(url) - before[url];
        if (url == leader_url)
            EXPECT_GE(handled, 20) << url << " leads";
        else
            EXPECT_LT(handled, 5) << url << " follows";
    }
}
