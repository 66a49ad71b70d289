// Cluster trust with real processes (cluster_fixture.h): a CA rotation and a role change renew
// the live agents' certificates over their sessions, without taking the nodes down.
#include <signal.h>
#include <sys/wait.h>

#include <fmt/format.h>

#include <atomic>
#include <functional>
#include <mutex>
#include <thread>

#include "cluster_fixture.h"
#include "coffer/pki/certificate.h"

using namespace coffer;
using namespace coffer::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

// Watches the nodes' states from another thread; remembers each node's longest time not ready.
class ReadinessWatch {
  public:
    ReadinessWatch(std::function<std::string(const std::string&)> state,
                   std::vector<std::string> nodes)
        : state_(std::move(state)), nodes_(std::move(nodes)) {
        thread_ = std::thread([this] { run(); });
    }
    ~ReadinessWatch() { stop(); }
    void stop() {
        done_ = true;
        if (thread_.joinable()) thread_.join();
    }
    // Seconds: the longest stretch a node was seen other than ready.
    double longest_outage(const std::string& node) {
        std::lock_guard l(mu_);
        return longest_[node];
    }

  private:
    void run() {
        std::map<std::string, std::optional<Clock::time_point>> since;
        while (!done_) {
            for (auto& n : nodes_) {
                bool ready = state_(n) == "ready";
                auto now = Clock::now();
                std::lock_guard l(mu_);
                if (!ready && !since[n]) since[n] = now;
                if (since[n]) {
                    longest_[n] = std::max(longest_[n],
                                           std::chrono::duration<double>(now - *since[n]).count());
                    if (ready) since[n].reset();
                }
            }
            std::this_thread::sleep_for(50ms);
        }
    }
    std::function<std::string(const std::string&)> state_;
    std::vector<std::string> nodes_;
    std::atomic<bool> done_{false};
    std::mutex mu_;
    std::map<std::string, double> longest_;
    std::thread thread_;
};

class Trust : public ClusterTest {
  protected:
    std::string node_crt(const NodeAgent& agent) {
        return read_file(agent.data / "identity" / "node.crt");
    }
    std::unique_ptr<ReadinessWatch> watch() {
        return std::make_unique<ReadinessWatch>(
            [this](const std::string& n) { return node_state(n); },
            std::vector<std::string>{a_->node_id(), b_->node_id()});
    }
};

// `coffer cluster ca --rotate` with two agents connected: it finishes, both agents hold
// certificates of the new root only, neither loses its session, and only the new tokens join.
TEST_F(Trust, CaRotationRenewsLiveAgentsAndReplacesTheJoinTokens) {
    auto old_root = cli({"cluster", "ca"}).out;
    ASSERT_NE(old_root.find("BEGIN CERTIFICATE"), std::string::npos);
    auto old_token = token();
    auto crt_a = node_crt(*a_), crt_b = node_crt(*b_);
    auto pid_a = a_->pid(), pid_b = b_->pid();
    ASSERT_TRUE(pki::verify_chain(crt_a, old_root));

    auto watching = watch();
    auto started = Clock::now();
    auto rotate = cli({"cluster", "ca", "--rotate", "--timeout", "90s"});
    ASSERT_EQ(rotate.status, 0) << rotate.err << a_->err() << b_->err();
    fmt::print("[ figure ] ca_rotation_s = {:.2f}\n",
               std::chrono::duration<double>(Clock::now() - started).count());

    auto new_root = cli({"cluster", "ca"}).out;
    ASSERT_NE(new_root, old_root);
    ASSERT_EQ(pki::split_bundle(new_root)->size(), 1u) << "the old root is dropped at the end";
    // After the end, nodes are asked once more: certificates of the new root without the
    // cross-signed chain, and the bundle without the old root.
    for (auto* agent : {a_.get(), b_.get()}) {
        EXPECT_TRUE(wait_until(
            [&] {
                auto crt = node_crt(*agent);
                auto parts = pki::split_bundle(crt);
                return parts && parts->size() == 1 && pki::verify_chain(crt, new_root).ok() &&
                       read_file(agent->data / "identity" / "ca.crt") == new_root;
            },
            30s))
            << agent->hostname << agent->err();
        EXPECT_FALSE(pki::verify_chain(node_crt(*agent), old_root).ok()) << agent->hostname;
    }
    EXPECT_NE(node_crt(*a_), crt_a);
    EXPECT_NE(node_crt(*b_), crt_b);
    watching->stop();
    for (auto* agent : {a_.get(), b_.get()}) {
        auto outage = watching->longest_outage(agent->node_id());
        fmt::print("[ figure ] {} longest_not_ready_s = {:.2f}\n", agent->hostname, outage);
        EXPECT_LT(outage, 3.0) << agent->hostname
                               << " lost its session for longer than a reconnect";
        EXPECT_EQ(node_state(agent->node_id()), "ready");
    }
    EXPECT_TRUE(a_->running() && b_->running());
    EXPECT_EQ(a_->pid(), pid_a);
    EXPECT_EQ(b_->pid(), pid_b);

    // The token shown before no longer joins; the one shown now does.
    auto new_token = token();
    EXPECT_NE(new_token, old_token);
    NodeAgent refused(*a_ns_, dir_.path() / "node-c", "node-c", listen_);
    refused.start(old_token);
    auto st = refused.exited(30s);
    ASSERT_TRUE(st) << refused.err();
    EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 1) << *st << refused.err();
    EXPECT_TRUE(refused.node_id().empty());
    auto d_ns = node_namespace("e2d");
    NodeAgent joins(*d_ns, dir_.path() / "node-d", "node-d", listen_);
    joins.start(new_token);
    ASSERT_TRUE(wait_until([&] { return !joins.node_id().empty(); }, 30s)) << joins.err();
    EXPECT_TRUE(wait_node_state(joins.node_id(), "ready")) << joins.err();
    EXPECT_TRUE(pki::verify_chain(read_file(joins.data / "identity" / "node.crt"), new_root).ok());

    // A running task carried through: the agents still serve a service after all of it.
    auto svc =
        cli({"service", "create", "--name", "after", "--constraint", "node.hostname==node-a",
             "busybox", "sh", "-c", "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done"});
    EXPECT_EQ(svc.status, 0) << svc.err;
    EXPECT_TRUE(wait_converged("after", 1, a_->node_id())) << a_->err();
}

// A role change makes the agent renew: its certificate's OU changes, its session stays.
TEST_F(Trust, RoleChangeRenewsTheAgentsCertificateWithoutLosingItsSession) {
    auto before = pki::read_certificate(node_crt(*a_));
    ASSERT_TRUE(before);
    EXPECT_EQ(before->organizational_unit, "coffer-worker");
    auto pid = a_->pid();
    auto watching = watch();

    auto update = cli({"node", "update", "--role", "manager", a_->node_id()});
    ASSERT_EQ(update.status, 0) << update.err;
    ASSERT_TRUE(wait_until(
        [&] {
            auto c = pki::read_certificate(node_crt(*a_));
            return c && c->organizational_unit == "coffer-manager";
        },
        30s))
        << a_->err();
    auto after = pki::read_certificate(node_crt(*a_));
    EXPECT_EQ(after->common_name, a_->node_id());
    EXPECT_EQ(after->public_key, before->public_key) << "renewal keeps the key";
    EXPECT_NE(after->serial, before->serial);
    EXPECT_NE(read_file(a_->data / "identity" / "node.json").find("manager"), std::string::npos);
    auto roles = cli({"node", "inspect", a_->node_id()});
    EXPECT_NE(roles.out.find("\"manager\""), std::string::npos) << roles.out;
    // node-b is untouched.
    EXPECT_EQ(pki::read_certificate(node_crt(*b_))->organizational_unit, "coffer-worker");

    watching->stop();
    EXPECT_LT(watching->longest_outage(a_->node_id()), 3.0);
    EXPECT_EQ(node_state(a_->node_id()), "ready");
    EXPECT_EQ(a_->pid(), pid);
    EXPECT_TRUE(a_->running());

    // The renewed certificate is the one the manager now requires: a restarted agent is let in.
    auto st = a_->stop();
    ASSERT_TRUE(st);
    ASSERT_TRUE(wait_node_state(a_->node_id(), "down"));
    a_->start();
    EXPECT_TRUE(
        wait_until([&] { return a_->running() && node_state(a_->node_id()) == "ready"; }, 30s))
        << a_->err();
    EXPECT_FALSE(a_->exited(2s)) << a_->err();
}

}  // namespace
