// cofferd's node port with the real programs: coffer-agent joins with the token the CLI shows,
// its node is ready while the session is up and down soon after the agent dies, a removed node's
// agent is cut off and stops, agents come back by themselves after a manager restart, and the
// port refuses bad tokens, old TLS, garbage and floods while cofferd keeps serving. (The
// transport's own limits are tested in-process by nodeconn_test.)
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <boost/json.hpp>

#include <atomic>
#include <chrono>
#include <optional>
#include <thread>

#include "coffer/base/unique_fd.h"
#include "coffer/crypto/random.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/nodeconn/client.h"
#include "coffer/pki/node_key.h"
#include "coffer/pki/token.h"
#include "harness.h"
#include "manager_fixture.h"

extern char** environ;

using namespace coffer;
using namespace coffer::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

constexpr auto deadline = 20s;

// The node id an agent stores when it has joined, once it has; nullopt if it has not within
// wait_until's default time.
std::optional<std::string> joined_node(const fs::path& data) {
    auto identity = data / "identity" / "node.json";
    if (!wait_until([&] { return fs::exists(identity); })) return std::nullopt;
    return std::string(json::parse(read_file(identity)).at("node_id").as_string());
}

std::string first_line(const std::string& s) {
    return s.substr(0, s.find('\n'));
}

std::string agent_path() {
    const char* p = std::getenv("COFFER_AGENT");
    return p ? p : "";
}

// A coffer-agent process; killed (SIGKILL) and reaped on destruction if still running.
class Agent {
  public:
    Agent(const fs::path& data, const std::string& manager, const std::string& token = "",
          std::vector<std::string> prefix = {}) {
        err_ = data.parent_path() / fmt::format("agent-{}.err", crypto::random_id().substr(0, 8));
        UniqueFd err(::open(err_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
        Child::Options o;
        o.argv = std::move(prefix);
        // A run directory of the test's own: the host's /run/coffer-agent is left alone, and
        // agents of one test do not contend for one run directory's lock.
        o.argv.insert(o.argv.end(),
                      {agent_path(), "--data-dir", data.string(), "--run-dir",
                       data.string() + "-run", "--manager", manager, "--log-level", "info"});
        for (char** e = environ; *e; ++e) o.env.emplace_back(*e);
        if (!token.empty()) o.env.push_back("COFFER_JOIN_TOKEN=" + token);
        o.stderr_fd = err.get();
        child_ = Child::spawn(o);
        started_ = std::chrono::steady_clock::now();
    }
    void signal(int sig) { child_.signal(sig); }
    void kill9() {
        child_.signal(SIGKILL);
        child_.wait();
    }
    // The exit code, or -1 when it did not exit (by itself, not signalled) within the deadline.
    int exit_code(std::chrono::milliseconds within = deadline) {
        auto st = child_.wait_for(within);
        if (!st) return -1;
        return WIFEXITED(*st) ? WEXITSTATUS(*st) : -1;
    }
    bool running() const { return child_.running(); }
    std::string err() const { return read_file(err_); }
    std::chrono::steady_clock::time_point started() const { return started_; }

  private:
    fs::path err_;
    Child child_;
    std::chrono::steady_clock::time_point started_;
};

class NodePort : public ManagerTest {
  protected:
    void SetUp() override {
        if (agent_path().empty()) GTEST_SKIP() << "COFFER_AGENT is not set";
        port_ = free_port();
        start({"--listen", listen()});
    }
    std::string listen() const { return fmt::format("127.0.0.1:{}", port_); }

    std::string token(const std::string& role = "worker") {
        auto r = cli({"cluster", "join-token", role, "-q"});
        EXPECT_EQ(r.status, 0) << r.err;
        return first_line(r.out);
    }
    // The agents: every node but cofferd's own entry (the one with a ManagerStatus).
    json::array nodes() {
        auto r = request("GET", "/nodes");
        if (r.status != 200) return {};
        auto all = json::parse(r.body);
        json::array agents;
        for (auto& n : all.as_array())
            if (!n.as_object().contains("ManagerStatus")) agents.push_back(std::move(n));
        return agents;
    }
    // The node's Status.State, "" when there is no such node.
    std::string state(const std::string& id) {
        for (const auto& n : nodes())
            if (n.at("ID").as_string() == id)
                return std::string(n.at("Status").at("State").as_string());
        return "";
    }
    bool wait_state(const std::string& id, std::string_view want,
                    std::chrono::milliseconds within = deadline) {
        return wait_until([&] { return state(id) == want; }, within);
    }

    std::uint16_t port_ = 0;
};

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
}

// A measured figure: in the test's XML output and on stdout.
void record(const char* name, double seconds) {
    ::testing::Test::RecordProperty(name, fmt::format("{:.2f}", seconds));
    fmt::print("[ figure ] {} = {:.2f} s\n", name, seconds);
}

TEST_F(NodePort, AgentJoinsIsReadyIsDownWhenKilledAndReadyAgainWithItsIdentity) {
    auto data = dir_.path() / "agent";
    std::string id;
    {
        Agent agent(data, listen(), token());
        auto joined = joined_node(data);
        ASSERT_TRUE(joined) << agent.err();
        id = *joined;
        ASSERT_TRUE(wait_state(id, "ready")) << agent.err();
        record("agent_start_to_ready_s", seconds_since(agent.started()));
        // The expiry is one of coffer's own columns, by template.
        auto ls = cli({"node", "ls", "--format", "table {{.ID}}\\t{{.Status}}\\t{{.CertExpiry}}"});
        EXPECT_EQ(ls.status, 0) << ls.err;
        EXPECT_NE(ls.out.find(id), std::string::npos) << ls.out;
        EXPECT_NE(ls.out.find("Ready"), std::string::npos) << ls.out;
        EXPECT_NE(ls.out.find("CERT EXPIRY"), std::string::npos) << ls.out;
        auto n = nodes();
        ASSERT_EQ(n.size(), 1u);
        EXPECT_EQ(n[0].at("Spec").at("Role").as_string(), "worker");
        // The node joined under the host's name; its certificate's expiry is in the record and
        // in `node ls` (90 days by default).
        char host[256] = {};
        ASSERT_EQ(::gethostname(host, sizeof host - 1), 0);
        EXPECT_EQ(n[0].at("Description").at("Hostname").as_string(), host);
        auto expiry = std::string(n[0].at("CertificateExpiry").as_string());
        EXPECT_NE(ls.out.find(expiry.substr(0, 10)), std::string::npos) << ls.out;
        EXPECT_EQ(n[0].at("Status").at("Addr").as_string(), "127.0.0.1");

        // A node that stops answering (its socket still open) is down within the heartbeat
        // deadline: 4 s of silence.
        agent.signal(SIGSTOP);
        auto stopped = Clock::now();
        ASSERT_TRUE(wait_state(id, "down", 12s));
        auto silent = seconds_since(stopped);
        record("sigstop_to_down_s", silent);
        EXPECT_LT(silent, 8.0);
        EXPECT_GT(silent, 2.0) << "down before the idle timeout: not the heartbeat deadline";
        // Resumed, it finds its session gone and opens a new one.
        agent.signal(SIGCONT);
        ASSERT_TRUE(wait_state(id, "ready")) << agent.err();

        agent.kill9();
        auto killed = Clock::now();
        ASSERT_TRUE(wait_state(id, "down", 10s));
        auto took = seconds_since(killed);
        record("kill9_to_down_s", took);
        EXPECT_LT(took, 8.0);
    }
    // Its stored identity: the same node, ready again, no second registration.
    Agent again(data, listen());
    ASSERT_TRUE(wait_state(id, "ready")) << again.err();
    EXPECT_EQ(nodes().size(), 1u);
}

TEST_F(NodePort, RemovingAConnectedNodeCutsItsSessionAndTheAgentStops) {
    auto data = dir_.path() / "agent";
    Agent agent(data, listen(), token());
    auto joined = joined_node(data);
    ASSERT_TRUE(joined) << agent.err();
    auto id = *joined;
    ASSERT_TRUE(wait_state(id, "ready")) << agent.err();

    auto rm_refused = cli({"node", "rm", id});
    EXPECT_NE(rm_refused.status, 0) << "a ready node needs --force";
    auto rm = cli({"node", "rm", "--force", id});
    ASSERT_EQ(rm.status, 0) << rm.err;
    EXPECT_EQ(agent.exit_code(), 1) << agent.err();
    EXPECT_NE(agent.err().find("removed from the cluster"), std::string::npos) << agent.err();
    EXPECT_TRUE(nodes().empty());

    // Its certificate is refused from now on.
    Agent later(data, listen());
    EXPECT_EQ(later.exit_code(), 1) << later.err();
    EXPECT_TRUE(nodes().empty());
}

TEST_F(NodePort, AgentComesBackByItselfAfterTheManagerRestarts) {
    auto data = dir_.path() / "agent";
    Agent agent(data, listen(), token());
    auto joined = joined_node(data);
    ASSERT_TRUE(joined) << agent.err();
    auto id = *joined;
    ASSERT_TRUE(wait_state(id, "ready")) << agent.err();

    int st = daemon_->terminate();
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << st;
    auto restarted = Clock::now();
    start({"--listen", listen()});
    // authorize works from the first second: the registry is loaded before the port opens.
    ASSERT_TRUE(wait_state(id, "ready")) << agent.err();
    record("manager_restart_to_ready_s", seconds_since(restarted));
    EXPECT_TRUE(agent.running());
    EXPECT_EQ(nodes().size(), 1u);
}

TEST_F(NodePort, RefusesWrongRotatedAndMalformedTokensAndRegistersNothing) {
    auto swarm = json::parse(request("GET", "/swarm").body);
    std::string ca(swarm.at("TLSInfo").at("TrustRoot").as_string());
    auto wrong = pki::JoinToken::generate(ca).text();  // pins our CA, wrong secret
    auto old = token();
    ASSERT_EQ(cli({"cluster", "join-token", "worker", "--rotate", "-q"}).status, 0);
    ASSERT_NE(old, token());

    const std::vector<std::string> refused = {
        std::string(reinterpret_cast<const char*>(wrong.data()), wrong.size()),
        old,
        "COFFERTKN-1-notadigest-notasecret",
    };
    for (std::size_t i = 0; i < refused.size(); ++i) {
        auto data = dir_.path() / fmt::format("agent{}", i);
        Agent agent(data, listen(), refused[i]);
        EXPECT_EQ(agent.exit_code(), 1) << i << ": " << agent.err();
        EXPECT_FALSE(fs::exists(data / "identity")) << i;
        EXPECT_EQ(agent.err().find(refused[i]), std::string::npos) << "the token is never quoted";
    }
    EXPECT_TRUE(nodes().empty());
    // The current token still works.
    auto data = dir_.path() / "good";
    Agent good(data, listen(), token());
    auto joined = joined_node(data);
    ASSERT_TRUE(joined) << good.err();
    EXPECT_TRUE(wait_state(*joined, "ready"));
}

// Reads until the peer closes; true when it did within `within`.
bool closed_by_peer(int fd, std::chrono::milliseconds within) {
    auto end = Clock::now() + within;
    char buf[4096];
    while (Clock::now() < end) {
        pollfd p{fd, POLLIN, 0};
        int left = static_cast<int>(
            std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()).count());
        if (::poll(&p, 1, std::max(left, 1)) <= 0) continue;
        auto n = ::read(fd, buf, sizeof(buf));
        if (n <= 0) return true;
    }
    return false;
}

UniqueFd connect_to(std::uint16_t port) {
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons(port);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) return UniqueFd();
    return fd;
}

TEST_F(NodePort, RefusesTls12GarbageAndHalfOpenConnectionsAndKeepsServing) {
    auto half_open = connect_to(port_);
    ASSERT_TRUE(half_open.valid());

    auto connect = fmt::format("127.0.0.1:{}", port_);
    auto tls12 = run_program({"openssl", "s_client", "-tls1_2", "-connect", connect});
    EXPECT_NE(tls12.status, 0) << tls12.out;
    auto tls13 = run_program({"openssl", "s_client", "-tls1_3", "-connect", connect});
    EXPECT_EQ(tls13.status, 0) << "control: TLS 1.3 is served\n" << tls13.err;

    auto garbage = connect_to(port_);
    ASSERT_TRUE(garbage.valid());
    std::string bytes(4096, '\0');
    crypto::random_bytes({reinterpret_cast<std::uint8_t*>(bytes.data()), bytes.size()});
    ASSERT_GT(::write(garbage.get(), bytes.data(), bytes.size()), 0);
    EXPECT_TRUE(closed_by_peer(garbage.get(), 5s));

    // While the half-open connection waits, nodes still join and the API answers.
    auto data = dir_.path() / "agent";
    Agent agent(data, listen(), token());
    auto joined = joined_node(data);
    ASSERT_TRUE(joined) << agent.err();
    EXPECT_TRUE(wait_state(*joined, "ready"));
    EXPECT_TRUE(daemon_->ready(5s));
    // The handshake deadline (10 s) ends the half-open connection.
    EXPECT_TRUE(closed_by_peer(half_open.get(), 15s));
}

TEST_F(NodePort, AFloodOfJoinsIsRefusedOrServedAndCofferdStaysUp) {
    auto swarm = json::parse(request("GET", "/swarm").body);
    std::string ca(swarm.at("TLSInfo").at("TrustRoot").as_string());
    auto wrong = pki::JoinToken::generate(ca).text();
    auto right_text = token();
    auto right = crypto::SecureBuffer::copy_of(right_text);
    constexpr int wrong_joins = 200, right_joins = 5;
    std::atomic<int> refused{0}, limited{0}, joined{0}, other{0};
    nodeconn::Limits limits;
    limits.handshake_timeout = 60s;
    nodeconn::Endpoint endpoint{"127.0.0.1", port_};
    auto started = Clock::now();
    // The right joins first: past its first refused joins, a source's joins are answered 429
    // (too many requests) whatever their token, until its allowance refills.
    auto flood = [&](int from, int to) {
        std::vector<std::thread> threads;
        for (int i = from; i < to; ++i)
            threads.emplace_back([&, i] {
                auto key = pki::NodeKey::generate();
                // Each under a name of its own: one hostname is one active node's.
                auto r = nodeconn::join(endpoint, i < right_joins ? right : wrong, key.csr_pem,
                                        limits, fmt::format("flood{}", i));
                if (r)
                    ++joined;
                else if (r.error().code == Errc::permission_denied ||
                         r.error().code == Errc::unauthenticated)
                    ++refused;
                else if (r.error().code == Errc::unavailable)
                    ++limited;
                else
                    ++other;
            });
        for (auto& t : threads) t.join();
    };
    flood(0, right_joins);
    flood(right_joins, right_joins + wrong_joins);
    record("flood_205_joins_s", seconds_since(started));
    EXPECT_EQ(joined.load(), right_joins);
    EXPECT_EQ(refused.load() + limited.load(), wrong_joins);
    EXPECT_GT(refused.load(), 0);
    EXPECT_GT(limited.load(), 0);
    EXPECT_EQ(other.load(), 0);
    EXPECT_TRUE(daemon_->ready(5s));
    EXPECT_EQ(nodes().size(), static_cast<std::size_t>(right_joins));
}

TEST_F(NodePort, AnAddressInUseIsAClearErrorAndExit1) {
    UniqueFd taken(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sa);
    ASSERT_EQ(::bind(taken.get(), reinterpret_cast<sockaddr*>(&sa), len), 0);
    ASSERT_EQ(::listen(taken.get(), 1), 0);
    ASSERT_EQ(::getsockname(taken.get(), reinterpret_cast<sockaddr*>(&sa), &len), 0);
    auto where = fmt::format("127.0.0.1:{}", ntohs(sa.sin_port));
    TempDir other;
    auto r = run_program({cofferd_path(), "--data-dir", (other.path() / "data").string(),
                          "--socket", (other.path() / "s.sock").string(), "--listen", where});
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.err.find("Address already in use"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(where), std::string::npos) << r.err;
}

// A locked manager has no node port until `coffer cluster unlock`; then nodes join.
TEST(NodePortLocked, OpensWhenTheStoreIsUnlocked) {
    if (agent_path().empty()) GTEST_SKIP() << "COFFER_AGENT is not set";
    TempDir dir;
    auto port = free_port();
    auto where = fmt::format("127.0.0.1:{}", port);
    auto data = dir.path() / "data", socket = dir.path() / "coffer.sock";
    std::string key;
    {
        auto key_file = dir.path() / "unlock.key";
        Daemon first(data, socket,
                     {"--autolock", "--unlock-key-file", key_file.string(), "--listen", where});
        ASSERT_TRUE(first.ready());
        key = read_file(key_file);
        ASSERT_EQ(key.rfind("COFFERKEY-", 0), 0u) << key;
        key.pop_back();  // the newline
    }
    Daemon locked(data, socket, {"--listen", where});
    ASSERT_TRUE(locked.ready());
    EXPECT_FALSE(connect_to(port).valid()) << "no node port while locked";
    auto unlock = coffer_cli(locked.host(), {"cluster", "unlock"}, key + "\n");
    ASSERT_EQ(unlock.status, 0) << unlock.err;
    ASSERT_TRUE(wait_until([&] { return connect_to(port).valid(); }));
    auto token =
        first_line(coffer_cli(locked.host(), {"cluster", "join-token", "worker", "-q"}).out);
    auto agent_data = dir.path() / "agent";
    Agent agent(agent_data, where, token);
    EXPECT_TRUE(wait_until([&] {
        // The agents only: cofferd's own entry is always ready.
        return coffer_cli(locked.host(), {"node", "ls", "-f", "role=worker"}).out.find("Ready") !=
               std::string::npos;
    })) << agent.err();
}

// Two network namespaces of our own, joined by a veth pair: cofferd listens on one end, the
// agent runs behind the other. Both namespaces (and the pair) go when this is destroyed.
TEST(NodePortNetwork, AnAgentInItsOwnNetworkJoinsAcrossAVethPair) {
    if (agent_path().empty()) GTEST_SKIP() << "COFFER_AGENT is not set";
    if (!NetworkNamespace::available())
        GTEST_SKIP() << "ip netns is not available (needs root and iproute2)";
    NetworkNamespace manager_ns("npm"), agent_ns("npa");
    ASSERT_TRUE(manager_ns.error().empty()) << manager_ns.error();
    ASSERT_TRUE(agent_ns.error().empty()) << agent_ns.error();
    auto subnet = random_subnet(214);
    auto manager_address = subnet + ".1", agent_address = subnet + ".2";
    auto linked = connect(manager_ns, manager_address, agent_ns, agent_address);
    ASSERT_TRUE(linked.empty()) << linked;
    TempDir dir;
    auto socket = dir.path() / "coffer.sock";
    auto host = "unix://" + socket.string();
    auto where = manager_address + ":4243";
    auto argv = manager_ns.enter();
    argv.insert(argv.end(),
                {cofferd_path(), "--data-dir", (dir.path() / "data").string(), "--socket",
                 socket.string(), "--listen", where, "--log-level", "warn"});
    Child cofferd = Child::spawn({.argv = argv});
    ASSERT_TRUE(wait_until([&] { return coffer_cli(host, {"node", "ls", "-q"}).status == 0; }));
    auto token = first_line(coffer_cli(host, {"cluster", "join-token", "worker", "-q"}).out);

    auto data = dir.path() / "agent";
    // Only the network namespace: `ip netns exec` would also hide the host's cgroup mounts
    // behind a fresh /sys, and the agent's runner needs them.
    Agent agent(data, where, token, agent_ns.enter());
    auto joined = joined_node(data);
    ASSERT_TRUE(joined) << agent.err();
    auto id = *joined;
    auto ls = [&] { return coffer_cli(host, {"node", "ls", "-f", "role=worker"}).out; };
    EXPECT_TRUE(wait_until([&] { return ls().find("Ready") != std::string::npos; })) << ls();
    // The node's address is the agent's end of the pair, as the manager saw it.
    auto inspect = coffer_cli(host, {"node", "inspect", std::string(id)});
    EXPECT_NE(inspect.out.find(agent_address), std::string::npos) << inspect.out;
    cofferd.signal(SIGTERM);
    auto st = cofferd.wait_for(deadline);
    ASSERT_TRUE(st);
    EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0);
}

}  // namespace
