// cofferd on a real etcd cluster of three members (etcd_fixture.h, in the manager's network
// namespace) with two agents and real containers (cluster_fixture.h): kill -9 of the manager
// while secrets are created loses no acknowledged create, the restarted manager takes the store
// once the dead one's lease ends, tasks keep running with their secrets and the agents reconnect;
// a second manager joins with the manager token, stands by (forwarding the API requests it gets to
// the leader) and takes over from a killed leader;
// etcd holds no plaintext; a backup of the cluster on etcd restores into a data directory of the
// embedded engine.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <boost/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <signal.h>

#include "cluster_fixture.h"
#include "coffer/net/http_client.h"
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

// The managers as the leader's API lists them: address -> "Leader"/"Reachable"/"Unreachable".
std::map<std::string, std::string> manager_statuses(const json::value& nodes) {
    std::map<std::string, std::string> out;
    if (!nodes.is_array()) return out;
    for (const auto& n : nodes.as_array()) {
        const auto* status = n.as_object().if_contains("ManagerStatus");
        if (status == nullptr || !status->is_object()) continue;
        const auto& s = status->as_object();
        out[std::string(s.at("Addr").as_string())] =
            s.at("Leader").as_bool()                          ? "Leader"
            : s.at("Reachability").as_string() == "reachable" ? "Reachable"
                                                              : "Unreachable";
    }
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
    // "<status> <body>" of GET /health on a manager's metrics address (the leader's unless
    // given).
    std::string health(std::string at = "") {
        if (at.empty()) at = metrics_;
        std::vector<std::string> argv = manager_ns_->enter();
        argv.insert(argv.end(), {"curl", "-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}",
                                 "http://" + at + "/health"});
        auto code = run_program(argv).out;
        argv = manager_ns_->enter();
        argv.insert(argv.end(), {"curl", "-s", "-m", "5", "http://" + at + "/health"});
        return code + " " + run_program(argv).out;
    }
    std::size_t secrets_in_etcd() {
        auto r = etcd_->etcdctl({"get", "--prefix", "--keys-only", "/coffer/secrets/"});
        std::size_t n = 0;
        for (const auto& line : lines_of(r.out)) n += line.empty() ? 0 : 1;
        return n;
    }
    // Manager n (2, 3, ...) on the same store, joined with the manager token, in the manager's
    // namespace on the same address and port 4242 + n: standing by once the leader lists it.
    std::unique_ptr<Daemon> start_standby(int n = 2) {
        auto args = standby_args(n);
        args.insert(args.end(), {"--join-token", token("manager")});
        auto standby = std::make_unique<Daemon>(dir_.path() / fmt::format("data{}", n),
                                                dir_.path() / fmt::format("manager{}.sock", n),
                                                args, manager_ns_->enter());
        EXPECT_TRUE(wait_until(
            [&] {
                auto listed = manager_statuses(get("/nodes"));
                return listed[listen_] == "Leader" && listed[standby_addr(n)] == "Reachable";
            },
            30s))
            << json::serialize(get("/nodes")) << standby->stdout_text();
        return standby;
    }
    std::string standby_addr(int n = 2) const {
        return fmt::format("{}:{}", listen_.substr(0, listen_.rfind(':')), 4242 + n);
    }
    std::vector<std::string> standby_args(int n = 2) {
        std::vector<std::string> args{"--listen", standby_addr(n)};
        // The leader's arguments, but for its first start's (a joining manager takes the store's
        // key mode from etcd).
        for (std::size_t i = 0; i < manager_args_.size(); ++i) {
            if (manager_args_[i] == "--autolock") continue;
            if (manager_args_[i] == "--unlock-key-file") {
                ++i;
                continue;
            }
            args.push_back(manager_args_[i]);
        }
        // Its own metrics port beside the leader's.
        auto& metrics = standby_metrics_[n];
        if (metrics.empty()) metrics = fmt::format("127.0.0.1:{}", free_port());
        for (std::size_t i = 0; i + 1 < args.size(); ++i)
            if (args[i] == "--metrics-addr") args[i + 1] = metrics;
        return args;
    }
    // Waits until both agents keep these managers' addresses with their identity (the list
    // the leader sends them), so that they can move to one of them.
    void agents_know(const std::vector<std::string>& addrs) {
        for (auto* agent : {a_.get(), b_.get()})
            EXPECT_TRUE(wait_until(
                [&] {
                    auto known = read_file(agent->data / "managers");
                    return std::all_of(addrs.begin(), addrs.end(), [&](const std::string& a) {
                        return known.find(a) != std::string::npos;
                    });
                },
                30s))
                << agent->err();
    }
    // The secret db holding bytes and the service web using it: its task's container pid once
    // the task holds the bytes, 0 (and a failure) otherwise.
    std::int64_t start_web(const std::string& bytes) {
        auto made = cli({"secret", "create", "db", "-"}, bytes);
        EXPECT_EQ(made.status, 0) << made.err;
        create_sleeper("web", "db");
        if (made.status != 0 || HasFailure()) return 0;
        if (!task_holds("web", "db", bytes)) {
            ADD_FAILURE() << "web does not hold db\n" << a_->err() << b_->err();
            return 0;
        }
        return task_pid(running("web").at(0));
    }
    // GET target through the manager at host: status, X-Coffer-Standby header and body.
    struct Answer {
        int status = 0;
        std::string standby;
        std::string body;
    };
    static Answer get_from(const std::string& host, const std::string& target) {
        auto c = coffer::net::HttpClient::connect(host);
        if (!c) return {};
        auto r = (*c)->request("GET", target);
        if (!r) return {};
        auto h = r->headers.find("x-coffer-standby");
        return {r->status, h == r->headers.end() ? "" : h->second, r->body};
    }
    // POST target with body to the leader's node port, from the manager's namespace, as anyone
    // without the managers' forwarding key could: "<status> <body>".
    std::string post_to_node_port(const std::string& target, const std::string& body,
                                  const std::vector<std::string>& headers = {}) {
        std::vector<std::string> argv = manager_ns_->enter();
        argv.insert(argv.end(), {"curl", "-sk", "-m", "10", "-w", " %{http_code}", "-X", "POST",
                                 "-H", "Content-Type: application/json", "--data-binary", body});
        for (const auto& h : headers) argv.insert(argv.end(), {"-H", h});
        argv.push_back("https://" + listen_ + target);
        return run_program(argv).out;
    }
    void TearDown() override {
        ClusterTest::TearDown();  // the manager lets go of the store before etcd stops
        if (HasFailure() && etcd_) fmt::print("{}\n", etcd_->logs());
        etcd_.reset();
    }

    std::unique_ptr<EtcdCluster> etcd_;
    std::string metrics_;                         // the manager's --metrics-addr, in its namespace
    std::map<int, std::string> standby_metrics_;  // manager n's --metrics-addr
};

}  // namespace

TEST_F(OnEtcd, AKilledManagerLosesNoAcknowledgedCreateAndTasksKeepRunning) {
    auto bytes = random_bytes(40);
    auto pid = start_web(bytes);
    ASSERT_NE(pid, 0);

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

// A second cofferd joins with the manager join token (what it needs to unseal comes sealed
// from etcd), stands by while the first leads, and is listed as Reachable; the agents learn its
// address. kill -9 of the leader: the standby takes the store once the lease ends, serves the
// API with every acknowledged secret, the agents move to it and their tasks keep running; the
// dead manager shows Unreachable and can be removed.
TEST_F(OnEtcd, AJoinedManagerStandsByAndTakesOverFromAKilledLeader) {
    auto bytes = random_bytes(40);
    auto pid = start_web(bytes);
    ASSERT_NE(pid, 0);
    auto first_addr = listen_;
    auto second_addr = standby_addr();

    // A wrong token is refused before anything is written.
    auto second_data = dir_.path() / "data2";
    {
        std::vector<std::string> argv = manager_ns_->enter();
        argv.insert(argv.end(),
                    {std::getenv("COFFERD"), "--data-dir", second_data.string(), "--socket",
                     (dir_.path() / "refused.sock").string(), "--join-token", token("worker")});
        auto args = standby_args();
        argv.insert(argv.end(), args.begin(), args.end());
        auto refused = run_program(argv);
        EXPECT_NE(refused.status, 0);
        EXPECT_NE(refused.err.find("not this cluster's current manager join token"),
                  std::string::npos)
            << refused.err;
        EXPECT_FALSE(fs::exists(second_data / "format"));
    }
    auto second = start_standby();
    ASSERT_FALSE(HasFailure());
    // It has the KEK, which etcd holds only sealed under the token.
    auto kek = read_file(dir_.path() / "data" / "kek");
    EXPECT_EQ(read_file(second_data / "kek"), kek);
    auto raw = etcd_->etcdctl({"get", "/coffer/join"});
    ASSERT_TRUE(raw.ok()) << raw.describe();
    EXPECT_NE(raw.out.find("\"sealed\""), std::string::npos) << raw.out;
    EXPECT_EQ(raw.out.find(kek), std::string::npos);
    auto info = get("/info");
    EXPECT_EQ(info.at("Swarm").at("Managers").as_int64(), 2) << json::serialize(info);
    // A standby forwards every request to the leader: a secret created through it is the
    // leader's, a refusal comes back as the leader gave it, and the answers say who served.
    auto through = coffer_cli(second->host(), {"secret", "create", "via-standby", "-"}, "fw");
    EXPECT_EQ(through.status, 0) << through.err;
    EXPECT_EQ(secret_names(get("/secrets")), (std::set<std::string>{"db", "via-standby"}));
    auto twice = coffer_cli(second->host(), {"secret", "create", "via-standby", "-"}, "fw");
    EXPECT_NE(twice.status, 0);
    EXPECT_NE(twice.err.find("already exists"), std::string::npos) << twice.err;
    auto listed = get_from(second->host(), "/secrets");
    EXPECT_EQ(listed.status, 200) << listed.body;
    EXPECT_EQ(listed.standby, "forwarded to " + first_addr);
    EXPECT_EQ(secret_names(json::parse(listed.body)), secret_names(get("/secrets")));
    EXPECT_EQ(get_from(daemon_->host(), "/secrets").standby, "");
    EXPECT_FALSE(second->ready(0ms)) << "a standby is not the manager that serves";
    // Its health for load balancers says what it is: it serves the API, by forwarding.
    EXPECT_EQ(health(standby_metrics_[2]), R"(200 {"status":"standby"})");
    // Requests one after another reuse the standby's connection to the leader's node port (the
    // only connection from this namespace's address to it: the agents are elsewhere).
    auto kept_connections = [&] {
        std::vector<std::string> argv = manager_ns_->enter();
        auto host = listen_.substr(0, listen_.rfind(':'));
        argv.insert(argv.end(),
                    {"ss", "-Htn", "state", "established", "src", host, "dst", listen_});
        auto open = lines_of(run_program(argv).out);
        std::erase(open, std::string());
        return open;
    };
    for (int i = 0; i < 20; ++i) ASSERT_EQ(get_from(second->host(), "/secrets").status, 200);
    auto kept = kept_connections();
    EXPECT_EQ(kept.size(), 1u) << "one kept connection";
    // Rotating the manager join token (through the standby) makes a new forwarding key: the
    // next request on the kept connection is refused by the leader, and the standby reads the
    // new key and goes on over a new connection, without the client seeing anything.
    auto rotated = coffer_cli(second->host(), {"cluster", "join-token", "--rotate", "manager"});
    EXPECT_EQ(rotated.status, 0) << rotated.err;
    auto after = get_from(second->host(), "/secrets");
    EXPECT_EQ(after.status, 200) << after.body;
    EXPECT_EQ(after.standby, "forwarded to " + first_addr);
    auto renewed = kept_connections();
    EXPECT_EQ(renewed.size(), 1u) << "one kept connection";
    EXPECT_NE(renewed, kept) << "the connection of the old key is closed";
    // Rotated on the leader this time, then large creates at once through the standby: those
    // sent on new connections with the old key are refused before the leader reads their bodies
    // and it closes while they are still being sent. Not sent whole, they did not run: they are
    // sent again with the new key.
    rotated = cli({"cluster", "join-token", "--rotate", "manager"});
    EXPECT_EQ(rotated.status, 0) << rotated.err;
    {
        std::vector<std::thread> creates;
        std::vector<CliResult> large(4);
        for (std::size_t i = 0; i < large.size(); ++i)
            creates.emplace_back([&, i] {
                large[i] = coffer_cli(second->host(),
                                      {"secret", "create", fmt::format("large-{}", i), "-"},
                                      std::string(400 * 1024, 'L'));
            });
        for (auto& t : creates) t.join();
        for (std::size_t i = 0; i < large.size(); ++i) {
            EXPECT_EQ(large[i].status, 0) << large[i].err << daemon_->stdout_text();
            EXPECT_EQ(cli({"secret", "rm", fmt::format("large-{}", i)}).status, 0);
        }
    }
    // docker's own CLI through the standby.
    if (run_program({"sh", "-c", "command -v docker"}).status == 0) {
        TempDir config;
        auto docker = run_program(
            {"docker", "secret", "ls", "--format", "{{.Name}}"}, "",
            {"DOCKER_HOST=" + second->host(), "DOCKER_CONFIG=" + config.path().string()});
        EXPECT_EQ(docker.status, 0) << docker.err;
        EXPECT_NE(docker.out.find("via-standby"), std::string::npos) << docker.out;
    } else {
        fmt::print("docker CLI not installed: docker through a standby not checked\n");
    }
    // The node port serves forwarded requests only to a proof of the managers' key: none, or
    // a wrong one, is refused before the body is read, and nothing is created.
    auto create = std::string(R"({"Name":"forged","Data":"Zm9yZ2Vk"})");
    auto bare = post_to_node_port("/forward/secrets/create", create);
    EXPECT_TRUE(bare.ends_with(" 401")) << bare;
    EXPECT_NE(bare.find("a forwarded request needs a manager"), std::string::npos) << bare;
    auto wrong = post_to_node_port("/forward/secrets/create", create,
                                   {"X-Coffer-Forward-Proof: " + std::string(64, 'a')});
    EXPECT_TRUE(wrong.ends_with(" 401")) << wrong;
    EXPECT_EQ(secret_names(get("/secrets")).count("forged"), 0u);
    // Forwarding holds no thread of the standby: with the node of web frozen, 20 requests for
    // its logs wait at the leader (up to 5 s for the node) all at once, one connection each,
    // and a create sent through the standby meanwhile is answered before any of them.
    {
        auto node = std::string(running("web").at(0).at("NodeID").as_string());
        auto* holder = a_->node_id() == node ? a_.get() : b_.get();
        ASSERT_EQ(::kill(holder->pid(), SIGSTOP), 0);
        struct Thaw {
            int pid;
            ~Thaw() { ::kill(pid, SIGCONT); }
        } thaw{holder->pid()};
        constexpr int waiting = 20;
        std::atomic<int> answered{0}, ok{0};
        std::vector<std::thread> logs;
        for (int i = 0; i < waiting; ++i)
            logs.emplace_back([&] {
                auto r = get_from(second->host(), "/services/web/logs?stdout=1");
                ++answered;
                if (r.status == 200) ++ok;
            });
        EXPECT_TRUE(wait_until([&] { return kept_connections().size() >= waiting; }, 10s))
            << kept_connections().size() << " connections to the leader";
        EXPECT_EQ(answered.load(), 0) << "the logs waited for the frozen node";
        auto during = coffer_cli(second->host(), {"secret", "create", "beside-logs", "-"}, "x");
        EXPECT_EQ(during.status, 0) << during.err;
        EXPECT_EQ(answered.load(), 0) << "the create was answered before the logs";
        ::kill(holder->pid(), SIGCONT);
        for (auto& t : logs) t.join();
        EXPECT_EQ(ok.load(), waiting);
        ASSERT_EQ(cli({"secret", "rm", "beside-logs"}).status, 0);
    }

    // The agents keep every manager's address with their identity.
    agents_know({second_addr});

    daemon_->kill9();
    auto killed = std::chrono::steady_clock::now();
    ASSERT_TRUE(second->ready(60s)) << second->stdout_text();
    auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - killed);
    fmt::print("kill -9 of the leader -> the standby serves in {} ms (lease TTL 2 s)\n",
               took.count());
    daemon_ = std::move(second);  // cli() and get() now reach the new leader
    EXPECT_EQ(health(standby_metrics_[2]), R"(200 {"status":"ok"})") << "it leads now";
    EXPECT_EQ(secret_names(get("/secrets")), (std::set<std::string>{"db", "via-standby"}));
    ASSERT_TRUE(wait_node_state(a_->node_id(), "ready", 60s)) << a_->err();
    ASSERT_TRUE(wait_node_state(b_->node_id(), "ready", 60s)) << b_->err();
    fmt::print("kill -9 of the leader -> both agents ready with the new leader in {} ms\n",
               std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now() - killed)
                   .count());
    EXPECT_TRUE(process_alive(pid));
    EXPECT_EQ(task_pid(running("web").at(0)), pid);
    EXPECT_TRUE(task_holds("web", "db", bytes));
    EXPECT_EQ(
        manager_statuses(get("/nodes")),
        (std::map<std::string, std::string>{{first_addr, "Unreachable"}, {second_addr, "Leader"}}));
    // The new leader writes: a secret and a service that gets it.
    auto more = random_bytes(24);
    ASSERT_EQ(cli({"secret", "create", "after", "-"}, more).status, 0);
    create_sleeper("later", "after");
    EXPECT_TRUE(task_holds("later", "after", more)) << a_->err() << b_->err();
    // The dead manager is removed from the list; the leader itself cannot be.
    std::string dead_id;
    auto nodes = get("/nodes");
    for (const auto& n : nodes.as_array())
        if (const auto* s = n.as_object().if_contains("ManagerStatus");
            s && s->at("Addr").as_string() == first_addr)
            dead_id = std::string(n.at("ID").as_string());
    ASSERT_FALSE(dead_id.empty());
    auto removed = cli({"node", "rm", dead_id});
    EXPECT_EQ(removed.status, 0) << removed.err;
    EXPECT_EQ(manager_statuses(get("/nodes")),
              (std::map<std::string, std::string>{{second_addr, "Leader"}}));
}

// Three managers on the store. kill -9 of the leader while secrets are created and a service is
// updated through it: one of the two standbys serves within 5 s with every acknowledged create
// and update, the agents move to it and the task of a service nobody touched keeps running. The
// same again with that leader killed: the last manager serves.
TEST_F(OnEtcd, OfThreeManagersOneTakesOverUnderLoadAndThenTheLast) {
    auto bytes = random_bytes(40);
    auto pid = start_web(bytes);
    ASSERT_NE(pid, 0);
    auto made = cli({"service", "create", "--detach", "--name", "upd", "busybox", "sleep", "1d"});
    ASSERT_EQ(made.status, 0) << made.err;
    // A standby stopped with SIGTERM ends cleanly: status 0, its socket removed, and its
    // announcement gone at once (its lease revoked, not left to run out).
    {
        auto leaving = start_standby(4);
        ASSERT_FALSE(HasFailure());
        auto status = leaving->terminate();
        EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
            << status << leaving->stdout_text();
        EXPECT_FALSE(fs::exists(leaving->socket()));
        auto alive = etcd_->etcdctl({"get", "--prefix", "--keys-only", "/coffer/alive/"});
        EXPECT_EQ(alive.out.find(standby_addr(4)), std::string::npos) << alive.out;
        EXPECT_EQ(manager_statuses(get("/nodes"))[standby_addr(4)], "Unreachable");
    }
    std::map<std::string, std::unique_ptr<Daemon>> managers;  // by node port address
    managers[standby_addr(2)] = start_standby(2);
    managers[standby_addr(3)] = start_standby(3);
    ASSERT_FALSE(HasFailure());
    agents_know({standby_addr(2), standby_addr(3)});

    std::set<std::string> acknowledged;
    int last_update = -1;  // the last --env-add N=<i> acknowledged
    std::mutex mu;
    std::string leader_addr = listen_;
    for (int round = 0; round < 2; ++round) {
        std::atomic<bool> stop{false};
        auto host = daemon_->host();
        std::thread creator([&, host] {
            for (int i = 0; !stop; ++i) {
                auto name = fmt::format("r{}-{}", round, i);
                if (coffer_cli(host, {"secret", "create", name, "-"}, random_bytes(16)).status != 0)
                    return;
                std::lock_guard l(mu);
                acknowledged.insert(name);
            }
        });
        std::thread updater([&, host] {
            for (int i = (round + 1) * 1000; !stop; ++i) {
                if (coffer_cli(host, {"service", "update", "--detach", "--env-add",
                                      fmt::format("N={}", i), "upd"})
                        .status != 0)
                    return;
                std::lock_guard l(mu);
                last_update = i;
            }
        });
        ASSERT_TRUE(wait_until(
            [&] {
                std::lock_guard l(mu);
                return acknowledged.size() >= std::size_t(5 * (round + 1)) &&
                       last_update >= (round + 1) * 1000 + 2;
            },
            30s));
        daemon_->kill9();
        auto killed = std::chrono::steady_clock::now();
        stop = true;
        creator.join();
        updater.join();
        managers.erase(leader_addr);
        std::string serving;
        ASSERT_TRUE(wait_until(
            [&] {
                for (auto& [addr, d] : managers)
                    if (d->ready(50ms)) serving = addr;
                return !serving.empty();
            },
            30s));
        auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::steady_clock::now() - killed);
        fmt::print("round {}: kill -9 of the leader -> manager {} serves in {} ms\n", round,
                   serving, took.count());
        EXPECT_LE(took, 5s) << "failover";
        daemon_ = std::move(managers[serving]);  // cli() and get() reach the new leader
        managers.erase(serving);
        leader_addr = serving;
        // Exactly one serves: the other standby (if any) still stands by, and forwards to the
        // new leader (once it has read from etcd that the dead one no longer leads).
        for (auto& [addr, d] : managers) {
            Answer standing;
            EXPECT_TRUE(wait_until(
                [&] {
                    standing = get_from(d->host(), "/secrets");
                    return standing.status == 200;
                },
                30s))
                << addr << ": " << standing.status << " " << standing.body;
            EXPECT_EQ(standing.standby, "forwarded to " + serving) << addr;
        }
        auto names = secret_names(get("/secrets"));
        for (const auto& n : acknowledged)
            EXPECT_TRUE(names.count(n)) << "round " << round << ": acknowledged " << n << " lost";
        // The update acknowledged last (or one the killed leader wrote as it died) is the spec.
        auto spec = get("/services/upd");
        int env = -1;
        for (const auto& e :
             spec.at("Spec").at("TaskTemplate").at("ContainerSpec").at("Env").as_array())
            if (e.as_string().starts_with("N="))
                env = std::stoi(std::string(e.as_string()).substr(2));
        EXPECT_GE(env, last_update) << "round " << round << ": an acknowledged update was lost";
        ASSERT_TRUE(wait_node_state(a_->node_id(), "ready", 60s)) << a_->err();
        ASSERT_TRUE(wait_node_state(b_->node_id(), "ready", 60s)) << b_->err();
        EXPECT_EQ(manager_statuses(get("/nodes"))[serving], "Leader");
    }
    EXPECT_TRUE(process_alive(pid));
    EXPECT_EQ(task_pid(running("web").at(0)), pid);
    EXPECT_TRUE(task_holds("web", "db", bytes));
    EXPECT_TRUE(wait_converged("upd", 1)) << a_->err() << b_->err();
}

class OnEtcdAutolocked : public OnEtcd {
  protected:
    void before_manager() override {
        OnEtcd::before_manager();
        manager_args_.insert(manager_args_.end(),
                             {"--autolock", "--unlock-key-file", key_file_.string()});
    }
    std::string unlock_key() const {
        auto text = read_file(key_file_);
        while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
        return text;
    }
    fs::path key_file_ = dir_.path() / "unlock.key";
};

// Autolocked, a standby is given the unlock key while it stands by (`coffer cluster unlock`
// against it): it checks the key against the store's keys on etcd, refuses a wrong one, follows
// rotations of the unlock key made on the leader since, and once the leader is killed it leads
// unlocked at once: its API serves, the agents come back.
TEST_F(OnEtcdAutolocked, AStandbyGivenTheUnlockKeyLeadsUnlocked) {
    auto bytes = random_bytes(40);
    auto pid = start_web(bytes);
    ASSERT_NE(pid, 0);
    auto second = start_standby();
    ASSERT_FALSE(HasFailure());
    agents_know({standby_addr()});
    auto key = unlock_key();
    ASSERT_FALSE(key.empty());
    auto wrong = key;
    auto& c = wrong[wrong.size() - 10];
    c = c == 'A' ? 'B' : 'A';
    auto refused = coffer_cli(second->host(), {"cluster", "unlock"}, wrong);
    EXPECT_NE(refused.status, 0);
    EXPECT_NE(refused.err.find("invalid unlock key"), std::string::npos) << refused.err;
    EXPECT_EQ(refused.err.find(wrong), std::string::npos) << "the key is never quoted";
    // Locked, it cannot open the store's forwarding key: it says so.
    auto locked = coffer_cli(second->host(), {"secret", "ls"});
    EXPECT_NE(locked.status, 0);
    EXPECT_NE(locked.err.find("this standby manager is locked"), std::string::npos) << locked.err;
    auto taken = coffer_cli(second->host(), {"cluster", "unlock"}, key);
    EXPECT_EQ(taken.status, 0) << taken.err;
    // Still a standby, now forwarding to the leader.
    auto standing = get_from(second->host(), "/secrets");
    EXPECT_EQ(standing.status, 200) << standing.body;
    EXPECT_EQ(standing.standby, "forwarded to " + listen_);
    EXPECT_EQ(secret_names(json::parse(standing.body)), (std::set<std::string>{"db"}));

    // The unlock key is rotated twice (through the standby, as any request): the key the standby
    // was given opens nothing any more, and it follows the rotations to lead unlocked.
    std::string current;
    for (int i = 0; i < 2; ++i) {
        auto rotated = coffer_cli(second->host(), {"cluster", "unlock-key", "--rotate", "-q"});
        ASSERT_EQ(rotated.status, 0) << rotated.err;
        current = rotated.out;
        while (!current.empty() && current.back() == '\n') current.pop_back();
        ASSERT_TRUE(current.starts_with("COFFERKEY-1-"))
            << "a key, not " << current.size() << " other bytes";
    }
    EXPECT_NE(current, key);
    auto forwarding = get_from(second->host(), "/secrets");
    EXPECT_EQ(forwarding.status, 200) << forwarding.body;

    daemon_->kill9();
    ASSERT_TRUE(second->ready(60s)) << second->stdout_text();
    daemon_ = std::move(second);
    auto listed = cli({"secret", "ls"});
    EXPECT_EQ(listed.status, 0) << listed.err;
    auto shown = cli({"cluster", "unlock-key", "-q"});
    EXPECT_EQ(shown.status, 0) << shown.err;
    EXPECT_TRUE(shown.out.starts_with(current)) << "the newest key unlocked it";
    EXPECT_EQ(secret_names(get("/secrets")), (std::set<std::string>{"db"}));
    ASSERT_TRUE(wait_node_state(a_->node_id(), "ready", 60s)) << a_->err();
    ASSERT_TRUE(wait_node_state(b_->node_id(), "ready", 60s)) << b_->err();
    EXPECT_TRUE(process_alive(pid));
    EXPECT_TRUE(task_holds("web", "db", bytes));
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

// A leader frozen past its lease (SIGSTOP: to etcd, a manager cut off) loses the store to the
// standby, which serves and writes; thawed, the old leader writes nothing (its writes fail naming
// the lost hold, /health says so), closes its node port, and the agents stay with the new leader:
// never two leaders acting.
TEST_F(OnEtcd, AFrozenLeaderLosesTheStoreToTheStandbyAndWritesNothing) {
    ASSERT_EQ(cli({"secret", "create", "before", "-"}, "1").status, 0);
    auto second = start_standby();
    ASSERT_FALSE(HasFailure());
    // The agents learn the standby's address from the leader (read every second): frozen before
    // that, the leader would leave them knowing no other manager.
    agents_know({standby_addr()});
    auto old_leader = daemon_->host();
    ASSERT_EQ(::kill(daemon_->pid(), SIGSTOP), 0);
    ASSERT_TRUE(second->ready(60s)) << second->stdout_text();
    ASSERT_EQ(coffer_cli(second->host(), {"secret", "create", "during", "-"}, "2").status, 0);
    ASSERT_EQ(::kill(daemon_->pid(), SIGCONT), 0);
    auto refused = coffer_cli(old_leader, {"secret", "create", "stale", "-"}, "3");
    EXPECT_NE(refused.status, 0);
    EXPECT_NE(refused.err.find("lost its hold on etcd prefix /coffer/"), std::string::npos)
        << refused.err;
    // Nor does it answer reads from a state that no longer follows the store.
    auto stale = get_from(old_leader, "/secrets");
    EXPECT_EQ(stale.status, 503) << stale.body;
    EXPECT_NE(stale.body.find("lost its hold on etcd prefix /coffer/"), std::string::npos)
        << stale.body;
    EXPECT_EQ(health(), R"(503 {"status":"store lost"})");
    std::swap(daemon_, second);  // cli() and get() reach the leader; both stop at the end
    EXPECT_EQ(secret_names(get("/secrets")), (std::set<std::string>{"before", "during"}));
    ASSERT_TRUE(wait_node_state(a_->node_id(), "ready", 60s)) << a_->err();
    ASSERT_TRUE(wait_node_state(b_->node_id(), "ready", 60s)) << b_->err();
    // The thawed manager closed its node port: the agents' sessions are with the leader only.
    auto host = listen_.substr(0, listen_.rfind(':')),
         port = listen_.substr(listen_.rfind(':') + 1);
    EXPECT_TRUE(wait_until(
        [&] {
            std::vector<std::string> argv = manager_ns_->enter();
            argv.insert(argv.end(),
                        {"bash", "-c", fmt::format("exec 3<>/dev/tcp/{}/{}", host, port)});
            return run_program(argv).status != 0;
        },
        30s));
}

// Two of three etcd members killed: a create fails with an error naming etcd, the running task
// keeps its secret, and once the members are back the cluster writes again (the manager kept its
// lease through the outage) and a new service gets its secret.
TEST_F(OnEtcd, WithoutQuorumWritesFailTasksKeepTheirSecretsAndTheClusterRecovers) {
    auto bytes = random_bytes(32);
    ASSERT_EQ(cli({"secret", "create", "db", "-"}, bytes).status, 0);
    create_sleeper("web", "db");
    ASSERT_TRUE(task_holds("web", "db", bytes)) << a_->err() << b_->err();
    etcd_->kill(1);
    EXPECT_EQ(cli({"secret", "create", "one-down", "-"}, "1").status, 0);
    etcd_->kill(2);
    auto failed = cli({"secret", "create", "no-quorum", "-"}, "2");
    EXPECT_NE(failed.status, 0);
    EXPECT_NE(failed.err.find("etcd"), std::string::npos) << failed.err;
    EXPECT_EQ(file_in_task(running("web").at(0), "db"), bytes);
    ASSERT_EQ(etcd_->start(1), "");
    ASSERT_EQ(etcd_->start(2), "");
    EXPECT_TRUE(wait_until(
        [&] {
            return cli({"secret", "create", "back", "-"}, "3").status == 0;
        },
        60s));
    create_sleeper("after", "db");
    EXPECT_TRUE(task_holds("after", "db", bytes)) << a_->err() << b_->err();
    auto names = secret_names(get("/secrets"));
    EXPECT_TRUE(names.count("one-down"));
    EXPECT_TRUE(names.count("back"));
}
