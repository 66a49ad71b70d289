// The agent's side of cluster trust over loopback: enrolment with a join token against an
// in-process node port, the stored identity, and the session loop's reconnects and removal.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <fmt/ranges.h>
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <thread>

#include "coffer/agent/enrollment.h"
#include "coffer/agent/manager_list.h"
#include "coffer/agent/session.h"
#include "coffer/base/process.h"
#include "coffer/base/unique_fd.h"
#include "coffer/crypto/random.h"
#include "coffer/nodeconn/server.h"
#include "coffer/nodeproto/session.h"
#include "coffer/pki/ca.h"
#include "coffer/pki/node_key.h"
#include "harness.h"

using namespace coffer;
using namespace coffer::nodeconn;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

constexpr auto deadline = 15s;

const pki::CertificateAuthority& cluster_ca() {
    static const auto ca = pki::CertificateAuthority::create_root();
    return ca;
}

// The manager's server credentials.
Credentials manager_credentials(const pki::CertificateAuthority& ca, std::string_view id) {
    auto key = pki::NodeKey::generate();
    auto cert = ca.issue_manager_server(key.csr_pem, id, "cluster1");
    return {cert.value(), std::move(key.key_pem), ca.certificate_pem()};
}

Limits fast_limits() {
    Limits l;
    l.handshake_timeout = 1s;
    l.idle_timeout = 2s;
    return l;
}

unsigned mode_of(const fs::path& p) {
    struct stat st {};
    EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
    return st.st_mode & 07777;
}

crypto::SecureBuffer text(std::string_view s) {
    return crypto::SecureBuffer::copy_of(s);
}

std::string str(const crypto::SecureBuffer& b) {
    return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

// A manager's node port with one worker token, run in-process.
class Manager {
  public:
    explicit Manager(const pki::CertificateAuthority& ca = cluster_ca())
        : ca_(ca), token_(pki::JoinToken::generate(ca.certificate_pem())) {}

    Result<void> start(std::uint16_t port = 0, std::string address = "127.0.0.1") {
        ServerOptions options;
        options.address = std::move(address);
        options.port = port;
        options.cluster_id = "cluster1";
        options.limits = fast_limits();
        ServerHandlers handlers;
        handlers.on_join = [this](JoinRequest req) -> Result<JoinResponse> {
            if (!req.token.matches(token_))
                return make_error(Errc::unauthenticated,
                                  "A valid join token is necessary to join this cluster");
            auto id = crypto::random_id();
            auto cert = ca_.issue(req.csr_pem, {id, pki::Role::worker, "cluster1"});
            if (!cert) return std::move(cert).error();
            std::lock_guard l(m_);
            joined_.push_back(id);
            return JoinResponse{id, *cert, ca_.certificate_pem()};
        };
        handlers.authorize = [this](const pki::NodeIdentity& id) -> Result<void> {
            std::lock_guard l(m_);
            ++authorize_calls_;
            if (removed_.contains(id.node_id))
                return make_error(Errc::permission_denied,
                                  fmt::format("node {} was removed from the cluster", id.node_id));
            return {};
        };
        handlers.session.on_open = [this](const std::shared_ptr<Session>& session) {
            std::lock_guard l(m_);
            last_session_ = session;
        };
        handlers.session.on_message = [this](const std::shared_ptr<Session>&, Message msg) {
            std::lock_guard l(m_);
            received_.push_back(msg.type);
        };
        auto server =
            NodeServer::start(std::move(options), manager_credentials(ca_, "manager1"), handlers);
        if (!server) return std::move(server).error();
        server_ = std::move(*server);
        return {};
    }
    void shut_down() { server_.reset(); }
    bool running() const { return server_ != nullptr; }
    void remove(const std::string& node_id) {
        {
            std::lock_guard l(m_);
            removed_.insert(node_id);
        }
        server_->close_sessions(node_id);
    }

    std::string address() const { return fmt::format("127.0.0.1:{}", server_->port()); }
    crypto::SecureBuffer token_text() const { return token_.text(); }
    NodeServer& server() { return *server_; }
    std::vector<std::string> joined() {
        std::lock_guard l(m_);
        return joined_;
    }
    int authorize_calls() {
        std::lock_guard l(m_);
        return authorize_calls_;
    }
    std::shared_ptr<Session> last_session() {
        std::lock_guard l(m_);
        return last_session_;
    }
    std::vector<std::string> received() {
        std::lock_guard l(m_);
        return received_;
    }

  private:
    const pki::CertificateAuthority& ca_;
    pki::JoinToken token_;
    std::mutex m_;
    std::vector<std::string> joined_;
    std::set<std::string> removed_;
    std::vector<std::string> received_;
    int authorize_calls_ = 0;
    std::shared_ptr<Session> last_session_;
    std::unique_ptr<NodeServer> server_;
};

class AgentTrust : public ::testing::Test {
  protected:
    void SetUp() override {
        crypto::init();
        ASSERT_TRUE(manager_.start());
    }

    std::string data_dir() const { return dir_.string(); }
    fs::path identity() const { return dir_ / "identity"; }
    bool stored_nothing() const {
        if (!fs::exists(dir_)) return true;
        return fs::is_empty(dir_);
    }

    agent::Identity enrolled() {
        auto r =
            agent::enroll(data_dir(), manager_.address(), manager_.token_text(), fast_limits());
        EXPECT_TRUE(r) << r.error().message;
        return std::move(r).value();
    }

    agent::SessionOptions session_options(const agent::Identity& id, std::uint16_t port) {
        agent::SessionOptions o;
        o.manager = {"127.0.0.1", port};
        o.credentials = id.credentials.clone();
        o.limits = fast_limits();
        o.backoff.initial = 20ms;
        o.backoff.max = 200ms;
        return o;
    }

    test::TempDir tmp_;
    fs::path dir_ = tmp_.path();
    Manager manager_;
};

TEST_F(AgentTrust, EnrolmentStoresThePrivateIdentityWithTheManagersNodeId) {
    auto id = enrolled();
    ASSERT_EQ(manager_.joined().size(), 1u);
    EXPECT_EQ(id.node.node_id, manager_.joined().front());
    EXPECT_EQ(id.node.role, pki::Role::worker);
    EXPECT_EQ(id.node.cluster_id, "cluster1");
    EXPECT_EQ(id.node.manager, manager_.address());

    EXPECT_EQ(mode_of(identity()), 0700u);
    EXPECT_EQ(mode_of(identity() / "node.key"), 0600u);
    EXPECT_EQ(mode_of(identity() / "node.crt"), 0644u);
    EXPECT_EQ(mode_of(identity() / "ca.crt"), 0644u);
    EXPECT_EQ(mode_of(identity() / "node.json"), 0644u);
    // Nothing but the identity: no temporary directory left behind.
    EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator{}), 1);

    auto loaded = agent::load_identity(data_dir());
    ASSERT_TRUE(loaded) << loaded.error().message;
    EXPECT_EQ(loaded->node.node_id, id.node.node_id);
    EXPECT_EQ(loaded->node.manager, manager_.address());
    EXPECT_EQ(loaded->credentials.cert_chain_pem, id.credentials.cert_chain_pem);
    EXPECT_EQ(loaded->credentials.ca_bundle_pem, cluster_ca().certificate_pem());
    EXPECT_TRUE(loaded->credentials.key_pem.equals(id.credentials.key_pem.span()));
}

TEST_F(AgentTrust, RefusesAWrongTokenAndStoresNothing) {
    auto other = pki::JoinToken::generate(cluster_ca().certificate_pem());  // same CA, other secret
    auto r = agent::enroll(data_dir(), manager_.address(), other.text(), fast_limits());
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, Errc::unauthenticated);
    EXPECT_EQ(r.error().message.find(str(other.text())), std::string::npos);
    EXPECT_TRUE(stored_nothing());
}

TEST_F(AgentTrust, RefusesAMalformedTokenWithoutQuotingIt) {
    auto secret = str(manager_.token_text());
    auto bad = secret.substr(0, secret.size() - 1) + "!";
    auto r = agent::enroll(data_dir(), manager_.address(), text(bad), fast_limits());
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, Errc::invalid_argument);
    EXPECT_NE(r.error().message.find("join token"), std::string::npos) << r.error().message;
    EXPECT_EQ(r.error().message.find(bad.substr(12, 20)), std::string::npos) << r.error().message;
    EXPECT_TRUE(manager_.joined().empty());
    EXPECT_TRUE(stored_nothing());
}

TEST_F(AgentTrust, RefusesAManagerWhoseCaTheTokenDoesNotPin) {
    // A token for another CA: the manager we reach is not the one the token was made for.
    auto other_ca = pki::CertificateAuthority::create_root();
    auto token = pki::JoinToken::generate(other_ca.certificate_pem());
    auto r = agent::enroll(data_dir(), manager_.address(), token.text(), fast_limits());
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("manager's CA does not match the join token"),
              std::string::npos)
        << r.error().message;
    EXPECT_TRUE(manager_.joined().empty());
    EXPECT_TRUE(stored_nothing());
}

TEST_F(AgentTrust, RefusesToEnrolTwice) {
    enrolled();
    auto again =
        agent::enroll(data_dir(), manager_.address(), manager_.token_text(), fast_limits());
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().code, Errc::already_exists);
    EXPECT_NE(again.error().message.find("remove that directory"), std::string::npos);
    EXPECT_EQ(manager_.joined().size(), 1u);
}

TEST_F(AgentTrust, LoadRefusesAKeyOthersMayRead) {
    enrolled();
    fs::permissions(identity() / "node.key", fs::perms(0644));
    auto r = agent::load_identity(data_dir());
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, Errc::permission_denied);
    EXPECT_NE(r.error().message.find("mode 0644"), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find("chmod 600"), std::string::npos) << r.error().message;
    EXPECT_EQ(r.error().message.find("PRIVATE KEY"), std::string::npos);
}

TEST_F(AgentTrust, LoadWithoutIdentityIsNotFound) {
    auto r = agent::load_identity(data_dir());
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, Errc::not_found);
}

TEST(ManagerAddress, ParsesHostAndPortStrictly) {
    auto ok = agent::parse_endpoint("10.0.0.1:2377");
    ASSERT_TRUE(ok);
    EXPECT_EQ(ok->host, "10.0.0.1");
    EXPECT_EQ(ok->port, 2377);
    auto v6 = agent::parse_endpoint("[::1]:2377");
    ASSERT_TRUE(v6);
    EXPECT_EQ(v6->host, "::1");
    for (auto bad : {"", "host", ":1", "host:", "host:0", "host:65536", "host:12x", "[::1:2"})
        EXPECT_FALSE(agent::parse_endpoint(bad)) << bad;
}

TEST(RetryDelay, DoublesUpToTheCapWithinTheJitterAndResets) {
    agent::Backoff b;  // 100 ms doubling to 10 s, ±20 %
    agent::RetryDelay delay(b);
    auto within = [](std::chrono::milliseconds got, double nominal) {
        return got.count() >= static_cast<long>(nominal * 0.8) - 1 &&
               got.count() <= static_cast<long>(nominal * 1.2) + 1;
    };
    double nominal = 100;
    for (int i = 0; i < 12; ++i) {
        auto got = delay.next();
        EXPECT_TRUE(within(got, nominal)) << i << ": " << got.count() << " ms";
        nominal = std::min(nominal * 2, 10'000.0);
    }
    EXPECT_TRUE(within(delay.next(), 10'000));
    delay.reset();
    EXPECT_TRUE(within(delay.next(), 100));
}

TEST_F(AgentTrust, SessionReconnectsAfterTheManagerComesBack) {
    auto id = enrolled();
    auto port = manager_.server().port();
    std::atomic<int> opened{0};
    agent::SessionLoop loop(session_options(id, port), {nullptr, [&] { ++opened; }});
    ASSERT_TRUE(test::wait_until([&] { return loop.connected(); }));
    EXPECT_TRUE(loop.send(text(R"({"type":"hello"})")));
    ASSERT_TRUE(test::wait_until([&] { return manager_.received().size() == 1; }));

    manager_.shut_down();
    ASSERT_TRUE(test::wait_until([&] { return !loop.connected(); }));
    EXPECT_FALSE(loop.send(text(R"({"type":"lost"})")));

    ASSERT_TRUE(manager_.start(port));
    ASSERT_TRUE(test::wait_until([&] { return loop.connected(); }));
    EXPECT_EQ(opened.load(), 2);
    EXPECT_TRUE(loop.send(text(R"({"type":"again"})")));
    ASSERT_TRUE(test::wait_until([&] { return manager_.received().size() == 2; }));
    EXPECT_EQ(manager_.received().back(), "again");

    loop.stop();
    EXPECT_FALSE(loop.connected());
    EXPECT_TRUE(loop.wait());
    EXPECT_TRUE(test::wait_until([&] { return manager_.server().session_count() == 0; }));
}

TEST_F(AgentTrust, SessionDeliversTheManagersMessages) {
    auto id = enrolled();
    std::mutex m;
    std::vector<std::string> got;
    agent::SessionLoop loop(session_options(id, manager_.server().port()),
                            {[&](Message msg) {
                                 std::lock_guard l(m);
                                 got.push_back(msg.type);
                             },
                             nullptr});
    ASSERT_TRUE(test::wait_until([&] { return manager_.last_session() != nullptr; }));
    auto to_node = manager_.last_session();
    EXPECT_EQ(to_node->peer().node_id, id.node.node_id);
    EXPECT_TRUE(to_node->send(text(R"({"type":"assignments","tasks":[]})")));
    EXPECT_TRUE(test::wait_until([&] {
        std::lock_guard l(m);
        return got == std::vector<std::string>{"assignments"};
    }));
    loop.stop();
}

TEST_F(AgentTrust, SessionStopsRetryingWhenTheNodeIsRemoved) {
    auto id = enrolled();
    agent::SessionLoop loop(session_options(id, manager_.server().port()), {});
    ASSERT_TRUE(test::wait_until([&] { return loop.connected(); }));
    auto before = manager_.authorize_calls();

    manager_.remove(id.node.node_id);
    auto r = loop.wait();  // ends by itself: the reconnect is refused with 403
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, Errc::permission_denied);
    EXPECT_NE(r.error().message.find("this node was removed from the cluster"), std::string::npos);
    EXPECT_FALSE(loop.connected());
    auto after = manager_.authorize_calls();
    EXPECT_EQ(after, before + 1);  // one refused attempt, then no more
    loop.stop();
    EXPECT_EQ(manager_.authorize_calls(), after);
}

// Several managers share one store: a node told of the others moves to one of them when its own
// goes away, at once, and keeps the list for its next start.
TEST_F(AgentTrust, SessionMovesToAManagerItWasToldOfWhenItsOwnGoesAway) {
    auto id = enrolled();
    Manager other;
    ASSERT_TRUE(other.start());
    auto first = manager_.address(), second = other.address();
    auto o = session_options(id, manager_.server().port());
    o.data_dir = data_dir();
    o.node = id.node;
    // A backoff would outlast the deadline: reaching the other manager proves none was waited.
    o.backoff.initial = o.backoff.max = std::chrono::hours(1);
    std::mutex m;
    std::vector<std::string> delivered;
    agent::SessionLoop loop(std::move(o), {[&](Message msg) {
                                               std::lock_guard l(m);
                                               delivered.push_back(msg.type);
                                           },
                                           nullptr});
    ASSERT_TRUE(test::wait_until([&] { return loop.connected(); }));
    auto session = manager_.last_session();
    ASSERT_TRUE(session);
    // The other one named twice, and the manager it is on: each kept once, in the order given.
    ASSERT_TRUE(
        session->send(nodeproto::encode(nodeproto::ManagersMessage{{second, first, second}})));
    auto list = dir_ / "managers";
    ASSERT_TRUE(test::wait_until([&] { return fs::exists(list); }));
    EXPECT_EQ(test::read_file(list), second + "\n" + first + "\n");
    EXPECT_EQ(mode_of(list), 0600u);
    EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator{}), 2)
        << "a temporary file was left beside the list";
    EXPECT_EQ(other.server().session_count(), 0u);

    manager_.shut_down();
    ASSERT_TRUE(test::wait_until([&] { return other.server().session_count() == 1; }));
    ASSERT_TRUE(test::wait_until([&] { return loop.connected(); }));
    EXPECT_EQ(other.last_session()->peer().node_id, id.node.node_id);
    EXPECT_TRUE(loop.send(text(R"({"type":"hello"})")));
    ASSERT_TRUE(test::wait_until([&] { return other.received().size() == 1; }));
    {
        std::lock_guard l(m);
        EXPECT_TRUE(delivered.empty()) << "the loop handles managers itself";
    }

    // As coffer-agent reads it when it starts again.
    auto stored = agent::load_managers(data_dir());
    ASSERT_TRUE(stored) << stored.error().message;
    EXPECT_EQ(stored->managers, (std::vector<Endpoint>{*agent::parse_endpoint(second),
                                                       *agent::parse_endpoint(first)}));
    EXPECT_TRUE(stored->ignored.empty());
    loop.stop();
    EXPECT_TRUE(test::wait_until([&] { return other.server().session_count() == 0; }));
}

TEST_F(AgentTrust, SessionTriesTheNextManagerAtOnceWhenTheFirstCannotBeReached) {
    auto id = enrolled();
    auto gone = manager_.server().port();
    manager_.shut_down();
    Manager other;
    ASSERT_TRUE(other.start());
    auto o = session_options(id, gone);
    o.other_managers = {{"127.0.0.1", other.server().port()}, {"127.0.0.1", gone}};
    // A backoff would outlast the deadline: only the next manager, tried at once, is reached.
    o.backoff.initial = o.backoff.max = std::chrono::hours(1);
    agent::SessionLoop loop(std::move(o), {});
    ASSERT_TRUE(test::wait_until([&] { return other.server().session_count() == 1; }));
    EXPECT_TRUE(test::wait_until([&] { return loop.connected(); }));
    loop.stop();
    EXPECT_TRUE(loop.wait());
}

// The address the agent started with stays the last one it tries: a list sent while that
// manager was down names only the one the node moved to, and when that one goes away too the
// node goes back to the first once it returns, without waiting out a backoff.
TEST_F(AgentTrust, SessionFallsBackToTheManagerItStartedWith) {
    auto id = enrolled();
    auto seed = manager_.server().port();
    Manager other;
    ASSERT_TRUE(other.start());
    auto o = session_options(id, seed);
    o.other_managers = {{"127.0.0.1", other.server().port()}};
    o.data_dir = data_dir();
    o.node = id.node;
    o.backoff.initial = o.backoff.max = std::chrono::hours(1);
    manager_.shut_down();
    agent::SessionLoop loop(std::move(o), {});
    ASSERT_TRUE(test::wait_until([&] { return other.server().session_count() == 1; }));
    ASSERT_TRUE(test::wait_until([&] { return loop.connected(); }));
    ASSERT_TRUE(other.last_session()->send(
        nodeproto::encode(nodeproto::ManagersMessage{{other.address()}})));
    auto list = dir_ / "managers";
    ASSERT_TRUE(test::wait_until([&] { return test::read_file(list) == other.address() + "\n"; }));

    Manager back;
    ASSERT_TRUE(back.start(seed));
    other.shut_down();
    EXPECT_TRUE(test::wait_until([&] { return back.server().session_count() == 1; }));
    loop.stop();
}

TEST_F(AgentTrust, AManagersMessageThatDoesNotDecodeIsIgnoredAndTheSessionStays) {
    auto id = enrolled();
    auto o = session_options(id, manager_.server().port());
    o.data_dir = data_dir();
    o.node = id.node;
    std::atomic<int> opened{0};
    agent::SessionLoop loop(std::move(o), {nullptr, [&] { ++opened; }});
    ASSERT_TRUE(test::wait_until([&] { return loop.connected(); }));
    auto session = manager_.last_session();
    for (auto bad : {R"({"type":"managers"})", R"({"type":"managers","managers":["x:0"]})",
                     R"({"type":"managers","managers":["a:1","../b:1"]})"})
        ASSERT_TRUE(session->send(text(bad)));
    // Handled in order: once the good list is kept, the bad ones were seen and stored nothing.
    ASSERT_TRUE(session->send(nodeproto::encode(nodeproto::ManagersMessage{{"m2:2377"}})));
    ASSERT_TRUE(test::wait_until([&] { return fs::exists(dir_ / "managers"); }));
    EXPECT_EQ(test::read_file(dir_ / "managers"), "m2:2377\n");
    EXPECT_FALSE(session->closed());
    EXPECT_TRUE(loop.connected());
    EXPECT_EQ(opened.load(), 1);
    loop.stop();
}

TEST(ManagerList, LeavesOutMalformedLinesAndDuplicatesAndNamesWhy) {
    test::TempDir tmp;
    auto none = agent::load_managers(tmp.path().string());
    ASSERT_TRUE(none) << none.error().message;
    EXPECT_TRUE(none->managers.empty());
    EXPECT_TRUE(none->ignored.empty());

    std::ofstream(tmp.path() / "managers")
        << "m1:2377\n\nnot an address\n[fd00::2]:2377\nm1:2377\nm3:0\nm4:2377";
    auto got = agent::load_managers(tmp.path().string());
    ASSERT_TRUE(got) << got.error().message;
    EXPECT_EQ(got->managers,
              (std::vector<Endpoint>{{"m1", 2377}, {"fd00::2", 2377}, {"m4", 2377}}));
    ASSERT_EQ(got->ignored.size(), 2u);
    EXPECT_NE(got->ignored[0].find("line 3: not HOST:PORT"), std::string::npos) << got->ignored[0];
    EXPECT_NE(got->ignored[1].find("line 6: not HOST:PORT"), std::string::npos) << got->ignored[1];
    EXPECT_EQ(got->ignored[0].find("not an address"), std::string::npos) << "lines are not quoted";
    EXPECT_EQ(agent::format_endpoint(got->managers[1]), "[fd00::2]:2377");
}

TEST(ManagerList, IsReplacedAtomicallyAndNeverThroughASymlink) {
    test::TempDir tmp;
    auto dir = tmp.path().string();
    auto elsewhere = tmp.path() / "elsewhere";
    std::ofstream(elsewhere) << "keep\n";
    fs::create_symlink(elsewhere, tmp.path() / "managers");
    auto refused = agent::load_managers(dir);
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message.find("symlink"), std::string::npos)
        << refused.error().message;

    ASSERT_TRUE(agent::store_managers(dir, {"m1:2377", "[::1]:2377"}));
    EXPECT_EQ(test::read_file(elsewhere), "keep\n");
    EXPECT_TRUE(fs::is_regular_file(fs::symlink_status(tmp.path() / "managers")));
    EXPECT_EQ(mode_of(tmp.path() / "managers"), 0600u);
    EXPECT_EQ(test::read_file(tmp.path() / "managers"), "m1:2377\n[::1]:2377\n");
    ASSERT_TRUE(agent::store_managers(dir, {"m2:2377"}));
    EXPECT_EQ(test::read_file(tmp.path() / "managers"), "m2:2377\n");
    EXPECT_EQ(std::distance(fs::directory_iterator(tmp.path()), fs::directory_iterator{}), 2);

    auto bad = agent::store_managers(dir, {"m3:2377\nevil:1"});
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().code, Errc::invalid_argument);
    EXPECT_EQ(test::read_file(tmp.path() / "managers"), "m2:2377\n");
}

// Two network namespaces of our own joined by a veth pair: the manager's end 10.213.N.1, the
// agent's 10.213.N.2. Both namespaces (and with them the veth pair) go when this is destroyed.
class NetnsPair {
  public:
    static std::unique_ptr<NetnsPair> create() {
        auto suffix = crypto::random_id().substr(0, 6);
        std::unique_ptr<NetnsPair> pair(new NetnsPair("coffer-m-" + suffix, "coffer-a-" + suffix));
        auto subnet =
            fmt::format("10.213.{}", 1 + std::stoul(suffix.substr(0, 2), nullptr, 36) % 250);
        pair->manager_address = subnet + ".1";
        pair->agent_address = subnet + ".2";
        auto m = "cfm" + suffix, a = "cfa" + suffix;
        const std::vector<std::vector<std::string>> steps = {
            {"ip", "netns", "add", pair->manager_ns},
            {"ip", "netns", "add", pair->agent_ns},
            {"ip", "-n", pair->manager_ns, "link", "add", m, "type", "veth", "peer", "name", a},
            {"ip", "-n", pair->manager_ns, "link", "set", a, "netns", pair->agent_ns},
            {"ip", "-n", pair->manager_ns, "addr", "add", pair->manager_address + "/30", "dev", m},
            {"ip", "-n", pair->agent_ns, "addr", "add", pair->agent_address + "/30", "dev", a},
            {"ip", "-n", pair->manager_ns, "link", "set", m, "up"},
            {"ip", "-n", pair->agent_ns, "link", "set", a, "up"},
            {"ip", "-n", pair->agent_ns, "link", "set", "lo", "up"},
        };
        for (const auto& step : steps) {
            auto r = run_command(step);
            if (!r.ok()) {
                pair->error = fmt::format("{}: {}", fmt::join(step, " "), r.describe());
                break;
            }
        }
        return pair;
    }
    ~NetnsPair() {
        for (const auto& ns : {agent_ns, manager_ns}) (void)run_command({"ip", "netns", "del", ns});
    }
    NetnsPair(const NetnsPair&) = delete;
    NetnsPair& operator=(const NetnsPair&) = delete;

    // Runs f on a thread that entered ns; threads it starts stay there, sockets it opens too.
    template <typename F>
    static void in(const std::string& ns, F f) {
        std::thread t([&] {
            UniqueFd fd(::open(("/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC));
            ASSERT_TRUE(fd.valid()) << ns;
            ASSERT_EQ(::setns(fd.get(), CLONE_NEWNET), 0) << ns;
            f();
        });
        t.join();
    }

    std::string manager_ns, agent_ns, manager_address, agent_address, error;

  private:
    NetnsPair(std::string m, std::string a) : manager_ns(std::move(m)), agent_ns(std::move(a)) {}
};

bool netns_available() {
    if (::geteuid() != 0) return false;
    try {
        return run_command({"ip", "netns", "list"}).ok();
    } catch (const std::exception&) {
        return false;
    }
}

// The agent program in a network namespace of its own joins a manager across a veth pair, keeps
// its session, stops cleanly on SIGTERM, comes back with its stored identity (and through its
// stored list of managers), and refuses a second join.
TEST(AgentInItsOwnNetwork, JoinsAcrossAVethPairAndReconnectsWithItsIdentity) {
    const char* agent_program = std::getenv("COFFER_AGENT");
    if (!agent_program) GTEST_SKIP() << "COFFER_AGENT is not set";
    if (!netns_available()) GTEST_SKIP() << "ip netns is not available (needs root and iproute2)";
    crypto::init();
    auto net = NetnsPair::create();
    ASSERT_TRUE(net->error.empty()) << net->error;

    Manager manager;
    NetnsPair::in(net->manager_ns, [&] {
        auto r = manager.start(0, net->manager_address);
        ASSERT_TRUE(r) << r.error().message;
    });
    ASSERT_TRUE(manager.running());
    auto address = fmt::format("{}:{}", net->manager_address, manager.server().port());
    test::TempDir tmp;
    auto data = tmp.path() / "agent";

    auto agent = [&](bool with_token, const std::string& manager_address) {
        Child::Options o;
        // The default mode runs tasks too: its runner needs the host's cgroup mounts, which
        // `ip netns exec` hides behind a fresh /sys, so only the network namespace is entered
        // (nsenter execs the agent: the same pid); and a run directory of this test's own.
        o.argv = {"nsenter",
                  "--net=/run/netns/" + net->agent_ns,
                  agent_program,
                  "--data-dir",
                  data.string(),
                  "--manager",
                  manager_address,
                  "--run-dir",
                  (tmp.path() / "run").string()};
        o.env = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin"};
        if (with_token) o.env.push_back("COFFER_JOIN_TOKEN=" + str(manager.token_text()));
        return Child::spawn(o);
    };

    auto first = agent(true, address);
    ASSERT_TRUE(test::wait_until([&] { return manager.server().session_count() == 1; }));
    ASSERT_EQ(manager.joined().size(), 1u);
    auto session = manager.last_session();
    ASSERT_TRUE(session);
    EXPECT_EQ(session->peer().node_id, manager.joined().front());
    EXPECT_EQ(mode_of(data / "identity" / "node.key"), 0600u);
    first.signal(SIGTERM);
    auto status = first.wait_for(deadline);
    ASSERT_TRUE(status);
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << *status;
    EXPECT_TRUE(test::wait_until([&] { return manager.server().session_count() == 0; }));

    // Given a manager that is not there, it reaches the one in its stored list (a malformed line
    // there is left out).
    std::ofstream(data / "managers") << "not a manager\n" << address << "\n";
    auto again = agent(false, net->manager_address + ":1");
    ASSERT_TRUE(test::wait_until([&] { return manager.server().session_count() == 1; }));
    EXPECT_EQ(manager.joined().size(), 1u);  // its stored identity, no second join
    again.signal(SIGTERM);
    ASSERT_TRUE(again.wait_for(deadline));

    auto twice = agent(true, address);
    auto refused = twice.wait_for(deadline);
    ASSERT_TRUE(refused);
    EXPECT_TRUE(WIFEXITED(*refused) && WEXITSTATUS(*refused) == 1);
    EXPECT_EQ(manager.joined().size(), 1u);
}

}  // namespace
