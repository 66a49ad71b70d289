// cofferd on a real etcd cluster of three members (etcd_fixture.h, in the manager's network
// namespace) with two agents and real containers (cluster_fixture.h): kill -9 of the manager
// while secrets are created loses no acknowledged create, the restarted manager takes the store
// once the dead one's lease ends, tasks keep running with their secrets and the agents reconnect;
// a second manager on the same store is refused; etcd holds no plaintext; a backup of the
// cluster on etcd restores into a data directory of the embedded engine.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <boost/json.hpp>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

#include "cluster_fixture.h"
#include "etcd_fixture.h"

using namespace coffer::test;
namespace fs = std::filesystem;
namespace json = boost::json;
using namespace std::chrono_literals;

namespace {

std::set<std::string> secret_names(const json::value& list) {
    std::set<std::string> out;
    if (!list.is_array()) return out;
    for (const auto& s : list.as_array())
        out.insert(std::string(s.at("Spec").at("Name").as_string()));
    return out;
}

class OnEtcd : public ClusterTest {
  protected:
    void before_manager() override {
        etcd_ = std::make_unique<EtcdCluster>(
            dir_.path() / "etcd", EtcdClusterOptions{.members = 3, .enter = manager_ns_->enter()});
        ASSERT_EQ(etcd_->error(), "");
        metrics_ = fmt::format("127.0.0.1:{}", free_port());
        manager_args_ = {"--store",          "etcd", "--etcd-endpoints", etcd_->endpoints_csv(),
                         "--etcd-lease-ttl", "2",    "--metrics-addr",   metrics_};
    }
    // "<status> <body>" of the manager's GET /health.
    std::string health() {
        std::vector<std::string> argv = manager_ns_->enter();
        argv.insert(argv.end(), {"curl", "-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}",
                                 "http://" + metrics_ + "/health"});
        auto code = run_program(argv).out;
        argv = manager_ns_->enter();
        argv.insert(argv.end(), {"curl", "-s", "-m", "5", "http://" + metrics_ + "/health"});
        return code + " " + run_program(argv).out;
    }
    std::size_t secrets_in_etcd() {
        auto r = etcd_->etcdctl({"get", "--prefix", "--keys-only", "/coffer/secrets/"});
        std::size_t n = 0;
        for (const auto& line : lines_of(r.out)) n += line.empty() ? 0 : 1;
        return n;
    }
    void TearDown() override {
        ClusterTest::TearDown();  // the manager lets go of the store before etcd stops
        if (HasFailure() && etcd_) fmt::print("{}\n", etcd_->logs());
        etcd_.reset();
    }

    std::unique_ptr<EtcdCluster> etcd_;
    std::string metrics_;  // the manager's --metrics-addr, in its namespace
};

}  // namespace

TEST_F(OnEtcd, AKilledManagerLosesNoAcknowledgedCreateAndTasksKeepRunning) {
    auto bytes = random_bytes(40);
    ASSERT_EQ(cli({"secret", "create", "db", "-"}, bytes).status, 0);
    create_sleeper("web", "db");
    ASSERT_TRUE(task_holds("web", "db", bytes)) << a_->err() << b_->err();
    auto pid = task_pid(running("web").at(0));

    std::set<std::string> acknowledged;
    std::mutex mu;
    for (int round = 0; round < 3; ++round) {
        std::atomic<bool> stop{false};
        std::thread creator([&] {
            for (int i = 0; !stop; ++i) {
                auto name = fmt::format("r{}-{}", round, i);
                auto r = coffer_cli(daemon_->host(),
                                    std::vector<std::string>{"secret", "create", name, "-"},
                                    random_bytes(16));
                if (r.status != 0) return;
                std::lock_guard l(mu);
                acknowledged.insert(name);
            }
        });
        ASSERT_TRUE(wait_until(
            [&] {
                std::lock_guard l(mu);
                return acknowledged.size() >= std::size_t(5 * (round + 1));
            },
            30s));
        daemon_->kill9();
        stop = true;
        creator.join();
        auto killed = std::chrono::steady_clock::now();
        start_manager();
        ASSERT_FALSE(HasFatalFailure());
        auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::steady_clock::now() - killed);
        // The dead manager's lease (2 s) ends before the new one may hold the store.
        fmt::print("round {}: kill -9 -> the restarted manager serves in {} ms\n", round,
                   took.count());
        auto names = secret_names(get("/secrets"));
        for (const auto& n : acknowledged)
            EXPECT_TRUE(names.count(n)) << "round " << round << ": acknowledged " << n << " lost";
    }
    // The task never stopped; the agents are back with the new manager.
    ASSERT_TRUE(wait_node_state(a_->node_id(), "ready", 60s)) << a_->err();
    ASSERT_TRUE(wait_node_state(b_->node_id(), "ready", 60s)) << b_->err();
    EXPECT_TRUE(process_alive(pid));
    EXPECT_EQ(task_pid(running("web").at(0)), pid);
    EXPECT_TRUE(task_holds("web", "db", bytes));
    // A service made now gets the secret from the store on etcd.
    create_sleeper("after", "db");
    EXPECT_TRUE(task_holds("after", "db", bytes)) << a_->err() << b_->err();
    // etcd has the records, sealed.
    auto raw = etcd_->etcdctl({"get", "--prefix", "/coffer/"});
    ASSERT_TRUE(raw.ok()) << raw.describe();
    EXPECT_NE(raw.out.find("/coffer/secret_data/"), std::string::npos);
    EXPECT_EQ(raw.out.find(bytes), std::string::npos);
}

// A copy of the data directory started as a second manager on the same store: refused with a
// clear error once the first's lease has not ended within one TTL; the first goes on.
TEST_F(OnEtcd, ASecondManagerOnTheSameStoreIsRefused) {
    ASSERT_EQ(cli({"secret", "create", "one", "-"}, "1").status, 0);
    auto copy = dir_.path() / "data.copy";
    fs::copy(dir_.path() / "data", copy, fs::copy_options::recursive);
    std::vector<std::string> argv = manager_ns_->enter();
    argv.insert(argv.end(), {std::getenv("COFFERD"), "--data-dir", copy.string(), "--socket",
                             (dir_.path() / "second.sock").string(), "--listen", "127.0.0.1:0"});
    argv.insert(argv.end(), manager_args_.begin(), manager_args_.end());
    auto second = run_program(argv);
    EXPECT_NE(second.status, 0);
    EXPECT_NE(second.err.find("is held by cofferd pid"), std::string::npos) << second.err;
    EXPECT_EQ(cli({"secret", "create", "two", "-"}, "2").status, 0);
    EXPECT_EQ(secret_names(get("/secrets")), (std::set<std::string>{"one", "two"}));
}

// `coffer cluster backup` of the cluster on etcd, restored into a new data directory of the
// embedded engine: the manager there serves the same secrets and a new service gets their bytes.
TEST_F(OnEtcd, ABackupOfTheClusterOnEtcdRestoresIntoTheEmbeddedEngine) {
    auto bytes = random_bytes(40);
    ASSERT_EQ(cli({"secret", "create", "db", "-"}, bytes).status, 0);
    auto id = secret_id("db");
    auto file = dir_.path() / "cluster.cbk";
    auto r = cli({"cluster", "backup", file.string()});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(read_file(file).find(bytes), std::string::npos);
    auto kek = dir_.path() / "kek.saved";
    fs::copy_file(dir_.path() / "data" / "kek", kek);

    daemon_.reset();
    fs::rename(dir_.path() / "data", dir_.path() / "data.on-etcd");
    manager_args_ = {"--restore", file.string(), "--restore-key", kek.string()};
    start_manager();
    ASSERT_FALSE(HasFatalFailure());
    EXPECT_TRUE(fs::exists(dir_.path() / "data" / "db"));
    EXPECT_EQ(secret_id("db"), id);
    ASSERT_TRUE(wait_node_state(a_->node_id(), "ready", 60s)) << a_->err();
    create_sleeper("restored", "db");
    EXPECT_TRUE(task_holds("restored", "db", bytes)) << a_->err() << b_->err();
}

// Its lease ended behind its back (revoked here, as etcd ends it for a manager cut off past the
// TTL): the manager says so (a create fails naming it, /health answers 503 "store lost") and
// writes nothing; restarted, it holds the store again.
TEST_F(OnEtcd, AManagerThatLostTheStoreSaysSoAndWritesNothing) {
    ASSERT_EQ(cli({"secret", "create", "kept", "-"}, "1").status, 0);
    EXPECT_EQ(health(), R"(200 {"status":"ok"})");
    auto before = secrets_in_etcd();
    auto leases = etcd_->etcdctl({"lease", "list"});
    ASSERT_TRUE(leases.ok()) << leases.describe();
    auto ids = lines_of(leases.out);
    ASSERT_EQ(ids.size(), 2u) << leases.out;  // "found 1 leases", the manager's
    ASSERT_TRUE(etcd_->etcdctl({"lease", "revoke", ids[1]}).ok());
    auto lost = cli({"secret", "create", "lost", "-"}, "2");
    EXPECT_NE(lost.status, 0);
    EXPECT_NE(lost.err.find("lost its hold on etcd prefix /coffer/"), std::string::npos)
        << lost.err;
    EXPECT_EQ(health(), R"(503 {"status":"store lost"})");
    EXPECT_EQ(secrets_in_etcd(), before);
    start_manager();
    ASSERT_FALSE(HasFatalFailure());
    EXPECT_EQ(health(), R"(200 {"status":"ok"})");
    EXPECT_EQ(secret_names(get("/secrets")), (std::set<std::string>{"kept"}));
}
