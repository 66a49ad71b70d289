// The node port under a hostile network, with the real coffer-agent program against an
// in-process node port: a flood of silent connections from one address does not keep a node out,
// and the secrets of an assignments message leave no copy in memory that is neither locked nor
// wiped, on the agent that receives them or on the manager that sends them.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <boost/json.hpp>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

#include "coffer/base/process.h"
#include "coffer/crypto/encoding.h"
#include "coffer/crypto/random.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/manager/dispatcher.h"
#include "coffer/nodeconn/server.h"
#include "coffer/pki/ca.h"
#include "coffer/pki/node_key.h"
#include "coffer/pki/token.h"
#include "harness.h"
#include "test_node_port.h"

using namespace coffer;
using namespace std::chrono_literals;
namespace json = boost::json;

namespace {

constexpr auto deadline = 30s;

using Manager = test::TestNodePort;

class NodePortGuard : public ::testing::Test {
  protected:
    void SetUp() override {
        program = test::env_or("COFFER_AGENT", "");
        if (program.empty()) GTEST_SKIP() << "COFFER_AGENT is not set";
        if (::geteuid() != 0) GTEST_SKIP() << "needs root (the agent, /proc/PID/mem)";
        crypto::init();
    }
    void TearDown() override {
        stop_agent();
        if (!program.empty() && ::geteuid() == 0)
            (void)run_command({program, "--data-dir", data(), "--run-dir", run(), "cleanup"});
        manager.reset();
    }

    std::string data() const { return work.path() + "/data"; }
    std::string run() const { return work.path() + "/run"; }

    // The agent in its benchmark mode: the whole protocol, secrets included, but no containers.
    void start_agent() {
        Child::Options o;
        o.argv = {program,
                  "--data-dir",
                  data(),
                  "--run-dir",
                  run(),
                  "--manager",
                  manager->address(),
                  "--log-level",
                  test::env_or("COFFER_LOG", "warn"),
                  "--benchmark-noop-executor"};
        o.env = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin"};
        // The first start joins; a restart connects with the identity it stored.
        if (!std::filesystem::exists(data() + "/identity"))
            o.env.push_back("COFFER_JOIN_TOKEN=" + manager->token());
        agent = Child::spawn(o);
    }

    void stop_agent() {
        if (!agent.running()) return;
        agent.signal(SIGTERM);
        if (!agent.wait_for(deadline)) agent = Child();  // SIGKILL and reap
    }

    std::string program;
    test::MountDir work;
    std::unique_ptr<Manager> manager;
    Child agent;
};

// ---- A flood of silent connections from one address ----------------------------------------

// Connections from `source` (a loopback address) to the node port that send nothing, kept at
// `count` open: each one the server closes is opened again. Bounded in connections and time.
class SilentFlood {
  public:
    SilentFlood(std::string source, std::uint16_t port, std::size_t count)
        : source_(std::move(source)), port_(port), count_(count) {
        thread_ = std::thread([this] { run(); });
    }
    ~SilentFlood() {
        stop_ = true;
        thread_.join();
        for (int fd : fds_) ::close(fd);
    }
    std::size_t opened() const { return opened_; }

  private:
    int open_one() {
        int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) return -1;
        sockaddr_in from{};
        from.sin_family = AF_INET;
        ::inet_pton(AF_INET, source_.c_str(), &from.sin_addr);
        sockaddr_in to{};
        to.sin_family = AF_INET;
        to.sin_port = htons(port_);
        ::inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
        if (::bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof from) != 0 ||
            ::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) {
            ::close(fd);
            return -1;
        }
        ++opened_;
        return fd;
    }

    void run() {
        const auto until = std::chrono::steady_clock::now() + 2 * deadline;
        while (!stop_ && std::chrono::steady_clock::now() < until && opened_ < max_opened) {
            // Drop what the server closed, then top up.
            std::vector<pollfd> polled;
            for (int fd : fds_) polled.push_back({fd, POLLIN | POLLRDHUP, 0});
            ::poll(polled.data(), polled.size(), 0);
            std::vector<int> open;
            for (auto& p : polled)
                if (p.revents != 0)
                    ::close(p.fd);
                else
                    open.push_back(p.fd);
            fds_ = std::move(open);
            while (fds_.size() < count_ && opened_ < max_opened && !stop_) {
                int fd = open_one();
                if (fd < 0) break;
                fds_.push_back(fd);
            }
            std::this_thread::sleep_for(250ms);
        }
    }

    static constexpr std::size_t max_opened = 40'000;
    std::string source_;
    std::uint16_t port_;
    std::size_t count_;
    std::vector<int> fds_;
    std::atomic<std::size_t> opened_{0};
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

TEST_F(NodePortGuard, AFloodOfSilentConnectionsFromOneAddressDoesNotKeepANodeOut) {
    // The default limits, a smaller global cap: what matters is that one address cannot take it.
    nodeconn::ServerOptions options;
    options.max_unverified_connections = 128;
    manager = std::make_unique<Manager>(options);
    start_agent();
    ASSERT_TRUE(test::wait_until([&] { return manager->connected(); }, deadline));

    SilentFlood flood("127.0.0.2", manager->port(), 2 * options.max_unverified_connections);
    ASSERT_TRUE(test::wait_until([&] { return flood.opened() >= 300; }, deadline));

    // The agent restarts during the flood and comes back.
    stop_agent();
    ASSERT_TRUE(test::wait_until([&] { return !manager->connected(); }, deadline));
    start_agent();
    EXPECT_TRUE(test::wait_until([&] { return manager->connected(); }, deadline))
        << "the agent did not get back in during the flood (" << flood.opened()
        << " flood connections opened)";
    EXPECT_EQ(manager->sessions(), 2);
}

// ---- Secrets in memory ---------------------------------------------------------------------

manager::AssignmentChange secret_change(const std::string& id, const crypto::SecureBuffer& bytes) {
    manager::AssignmentChange c;
    c.is_secret = true;
    c.id = id;
    c.version = 1;  // what a task without recorded versions holds, as the dispatcher sends it
    c.secret = manager::AssignmentChange::Secret{id, "k", bytes.clone()};
    return c;
}

manager::AssignmentChange task_change(const std::string& id, std::uint64_t slot,
                                      std::optional<std::string> secret_id = std::nullopt) {
    model::Task t;
    t.meta.id = id;
    t.service_id = "svc1";
    t.slot = slot;
    t.spec.container.image = "busybox";
    t.spec.container.command = {"sleep", "600"};
    if (secret_id) t.spec.container.secrets = {{*secret_id, "k", "", "0", "0", 0444}};
    manager::AssignmentChange c;
    c.id = id;
    c.task = std::move(t);
    return c;
}

TEST_F(NodePortGuard, ADeliveredSecretLeavesNoCopyInUnlockedMemory) {
    manager = std::make_unique<Manager>();
    start_agent();
    ASSERT_TRUE(test::wait_until([&] { return manager->connected(); }, deadline));

    // Random secrets, and their base64 as the messages carry them; here only in locked memory.
    // 33 bytes: a multiple of 3, so the base64 has no padding to vary.
    crypto::SecureBuffer small(33), deep(33);
    crypto::random_bytes(small.span());
    crypto::random_bytes(deep.span());
    auto small_encoded = crypto::base64_encode_secure(small.span());
    auto deep_encoded = crypto::base64_encode_secure(deep.span());

    using Needles = std::vector<std::pair<std::string, const crypto::SecureBuffer*>>;
    auto check = [&](std::string_view when, const Needles& needles) {
        auto on_agent = test::find_in_unlocked_memory(std::to_string(agent.pid()), needles);
        EXPECT_TRUE(on_agent.empty()) << when << ", in the agent's unlocked memory:\n"
                                      << test::join_lines(on_agent);
        // The manager's end is this process.
        auto on_manager = test::find_in_unlocked_memory("self", needles);
        EXPECT_TRUE(on_manager.empty()) << when << ", in the manager's unlocked memory:\n"
                                        << test::join_lines(on_manager);
    };

    // A small message: the whole of it passes through the WebSocket's own read buffer.
    manager::AssignmentMessage first;
    first.complete = true;
    first.sequence = 1;
    first.changes.push_back(secret_change("sec1", small));
    first.changes.push_back(task_change("noop-1", 1, "sec1"));
    ASSERT_TRUE(manager->send(first.to_json()));
    // Running: the agent has read, parsed and applied the message.
    ASSERT_TRUE(
        test::wait_until([&] { return manager->last_state("noop-1") == "running"; }, deadline));
    check("after the small message",
          {{"the small secret", &small}, {"the small secret's base64", &small_encoded}});

    // A larger one: tasks without secrets first, so its secret sits kilobytes into its TLS
    // record, past what the small records that follow overwrite of a reused buffer.
    manager::AssignmentMessage second;
    second.sequence = 2;
    for (int i = 0; i < 24; ++i)
        second.changes.push_back(
            task_change(fmt::format("pad-{}", i), static_cast<std::uint64_t>(i) + 3));
    second.changes.push_back(secret_change("sec2", deep));
    second.changes.push_back(task_change("noop-2", 2, "sec2"));
    ASSERT_TRUE(manager->send(second.to_json()));
    ASSERT_TRUE(
        test::wait_until([&] { return manager->last_state("noop-2") == "running"; }, deadline));

    check("after the large message", {{"the small secret", &small},
                                      {"the small secret's base64", &small_encoded},
                                      {"the large secret", &deep},
                                      {"the large secret's base64", &deep_encoded}});
}

}  // namespace
