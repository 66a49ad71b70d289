// Certificate renewal and CA rotation across the session, in-process: a node port backed by the
// manager's ClusterTrust on a real sealed store, and agents running SessionLoop on their stored
// identities. The node port here does what cofferd's must: renew on a worker thread, note each
// session's certificate, re-issue its own certificate when the CA changes, ask nodes to renew,
// and finish the rotation once every node has.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <future>
#include <map>
#include <mutex>

#include "coffer/agent/enrollment.h"
#include "coffer/agent/session.h"
#include "coffer/crypto/random.h"
#include "coffer/manager/trust.h"
#include "coffer/nodeconn/client.h"
#include "coffer/nodeconn/server.h"
#include "coffer/nodeproto/session.h"
#include "coffer/pki/node_key.h"
#include "coffer/store/store.h"
#include "harness.h"

using namespace coffer;
using namespace coffer::nodeconn;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

Limits fast_limits() {
    Limits l;
    l.handshake_timeout = 1s;
    l.idle_timeout = 2s;
    return l;
}

std::string str(const crypto::SecureBuffer& b) {
    return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

std::string read(const fs::path& p) {
    return test::read_file(p);
}

ino_t inode_of(const fs::path& p) {
    struct stat st {};
    EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
    return st.st_ino;
}

// The manager's side, as the node port will wire it.
class NodePort : private manager::ClusterEvents {
  public:
    explicit NodePort(const fs::path& data) {
        auto opened = store::Store::open({.dir = data});
        EXPECT_TRUE(opened.ok()) << opened.error().message;
        store_ = std::move(opened->store);
        trust_ = manager::ClusterTrust::load(*store_, "cluster1").value();
        trust_->emit_changes(*this);
    }
    ~NodePort() {
        server_.reset();
        std::lock_guard l(m_);
        for (auto& w : work_) w.wait();
    }

    Result<void> start() {
        ServerOptions options;
        options.cluster_id = "cluster1";
        options.limits = fast_limits();
        ServerHandlers handlers;
        handlers.on_join = [this](JoinRequest req) -> Result<JoinResponse> {
            auto role = trust_->check_token(req.token);
            if (!role) return std::move(role).error();
            auto id = crypto::random_id();
            auto cert = trust_->issue(req.csr_pem, id, *role);
            if (!cert) return std::move(cert).error();
            std::lock_guard l(m_);
            roles_[id] = *role;
            return JoinResponse{id, *cert, trust_->ca_bundle()};
        };
        handlers.authorize = [](const pki::NodeIdentity&) -> Result<void> { return {}; };
        handlers.session.on_open = [this](const std::shared_ptr<Session>& s) {
            trust_->note_session(s->peer());
            // A node that was away when the rotation started renews as soon as it is back.
            if (trust_->rotation_in_progress() &&
                s->peer().issuer_public_key != trust_->tls_info().cert_issuer_public_key)
                s->send(nodeproto::encode(nodeproto::RenewRequest{"CA rotation"}));
            std::lock_guard l(m_);
            sessions_[s->peer().node_id] = s;
            peers_.push_back(s->peer());
        };
        handlers.session.on_message = [this](const std::shared_ptr<Session>& s, Message msg) {
            if (msg.type != "renew") return;
            std::lock_guard l(m_);
            // Renewal writes the store during a rotation: off the I/O strand.
            work_.push_back(std::async(std::launch::async,
                                       [this, s, text = str(msg.json)] { renew(s, text); }));
        };
        auto server = NodeServer::start(std::move(options), own_credentials(), handlers);
        if (!server) return std::move(server).error();
        server_ = std::move(*server);
        return {};
    }

    void renew(const std::shared_ptr<Session>& s, const std::string& text) {
        auto renew = nodeproto::decode_renew(crypto::SecureBuffer::copy_of(text));
        pki::Role role;
        {
            std::lock_guard l(m_);
            role = roles_[s->peer().node_id];
        }
        auto issued = renew ? trust_->renew(renew->csr, s->peer(), role)
                            : Result<manager::IssuedCertificate>(renew.error());
        {
            std::lock_guard l(m_);
            if (refuse_next_ && issued) {
                refuse_next_ = false;
                ++refused_;
                issued = make_error(Errc::unavailable, "try again later");
            }
        }
        if (!issued) {
            s->send(
                nodeproto::encode(nodeproto::ErrorMessage{issued.error().message, std::nullopt}));
            return;
        }
        if (ask_before_answer_.exchange(false))
            s->send(nodeproto::encode(nodeproto::RenewRequest{"asked again meanwhile"}));
        s->send(nodeproto::encode(
            nodeproto::CertificateMessage{issued->certificate_pem, issued->ca_bundle_pem}));
        {
            std::lock_guard l(m_);
            ++renewed_;
        }
        auto ids = node_ids();
        (void)trust_->finish_rotation_if_renewed(ids);
    }

    // A fresh server certificate for the node port itself from the current CA.
    Credentials own_credentials() {
        auto key = pki::NodeKey::generate();
        auto cert = trust_->issue_manager_server(key.csr_pem, "manager1").value();
        return {cert, std::move(key.key_pem), trust_->ca_bundle()};
    }

    void ca_changed() override {
        if (!server_) return;
        EXPECT_TRUE(server_->update_credentials(own_credentials()));
        ask_everyone("CA rotation");
    }

    void ask_everyone(std::string_view reason) {
        std::lock_guard l(m_);
        for (auto& [id, s] : sessions_)
            if (!s->closed())
                s->send(nodeproto::encode(nodeproto::RenewRequest{std::string(reason)}));
    }
    void ask(const std::string& node_id, std::string_view reason) {
        std::lock_guard l(m_);
        sessions_.at(node_id)->send(
            nodeproto::encode(nodeproto::RenewRequest{std::string(reason)}));
    }

    void send_to(const std::string& node_id, crypto::SecureBuffer msg) {
        std::lock_guard l(m_);
        sessions_.at(node_id)->send(std::move(msg));
    }
    // The next answer to a renew comes right after another renew request, as when the CA
    // changes again while a node's request is being answered.
    void ask_before_next_answer() { ask_before_answer_ = true; }
    void refuse_next() {
        std::lock_guard l(m_);
        refuse_next_ = true;
    }
    int refused() {
        std::lock_guard l(m_);
        return refused_;
    }

    std::vector<std::string> node_ids() {
        std::lock_guard l(m_);
        std::vector<std::string> ids;
        for (auto& [id, role] : roles_) ids.push_back(id);
        return ids;
    }
    void set_role(const std::string& id, pki::Role role) {
        std::lock_guard l(m_);
        roles_[id] = role;
    }
    std::vector<pki::NodeIdentity> peers() {
        std::lock_guard l(m_);
        return peers_;
    }
    int renewed() {
        std::lock_guard l(m_);
        return renewed_;
    }

    std::string address() const { return fmt::format("127.0.0.1:{}", server_->port()); }
    std::uint16_t port() const { return server_->port(); }
    NodeServer& server() { return *server_; }
    manager::ClusterTrust& trust() { return *trust_; }

  private:
    std::unique_ptr<store::Store> store_;
    std::unique_ptr<manager::ClusterTrust> trust_;
    std::unique_ptr<NodeServer> server_;
    std::mutex m_;
    std::map<std::string, pki::Role> roles_;
    std::map<std::string, std::shared_ptr<Session>> sessions_;
    std::vector<pki::NodeIdentity> peers_;
    std::vector<std::future<void>> work_;
    int renewed_ = 0;
    bool refuse_next_ = false;
    int refused_ = 0;
    std::atomic<bool> ask_before_answer_{false};
};

class Renewal : public ::testing::Test {
  protected:
    void SetUp() override {
        crypto::init();
        port_ = std::make_unique<NodePort>(tmp_.path() / "manager");
        ASSERT_TRUE(port_->start());
    }
    void TearDown() override { port_.reset(); }

    fs::path data(int n) const { return tmp_.path() / fmt::format("node{}", n); }

    agent::Identity enrolled(int n) {
        auto r = agent::enroll(data(n).string(), port_->address(),
                               port_->trust().token(pki::Role::worker), fast_limits());
        EXPECT_TRUE(r) << r.error().message;
        return std::move(r).value();
    }

    agent::SessionOptions options(const agent::Identity& id, int n) {
        agent::SessionOptions o;
        o.manager = {"127.0.0.1", port_->port()};
        o.credentials = id.credentials.clone();
        o.limits = fast_limits();
        o.backoff.initial = 20ms;
        o.backoff.max = 200ms;
        o.data_dir = data(n).string();
        o.node = id.node;
        o.renew_retry = 2s;
        return o;
    }

    // The sessions opened by node_id so far.
    std::vector<pki::NodeIdentity> sessions_of(const std::string& node_id) {
        std::vector<pki::NodeIdentity> out;
        for (auto& p : port_->peers())
            if (p.node_id == node_id) out.push_back(p);
        return out;
    }

    test::TempDir tmp_;
    std::unique_ptr<NodePort> port_;
};

TEST_F(Renewal, RenewRequestReplacesTheFilesAndTheNextConnectionUsesTheNewCertificate) {
    auto id = enrolled(1);
    auto dir = data(1) / "identity";
    auto old_cert = read(dir / "node.crt");
    auto old_inode = inode_of(dir / "node.crt");
    agent::SessionLoop loop(options(id, 1), {});
    ASSERT_TRUE(test::wait_until([&] { return sessions_of(id.node.node_id).size() == 1; }));

    // `node update --role manager`: the manager asks for a CSR now.
    port_->set_role(id.node.node_id, pki::Role::manager);
    port_->ask(id.node.node_id, "role change");
    ASSERT_TRUE(test::wait_until([&] { return loop.renewals() == 1; }));

    auto new_cert = read(dir / "node.crt");
    EXPECT_NE(new_cert, old_cert);
    EXPECT_NE(inode_of(dir / "node.crt"), old_inode);  // replaced by rename, not rewritten
    for (auto& e : fs::directory_iterator(dir))
        EXPECT_EQ(e.path().filename().string().front() != '.', true) << "left behind: " << e.path();
    auto stored = agent::load_identity(data(1).string());
    ASSERT_TRUE(stored) << stored.error().message;
    EXPECT_EQ(stored->node.node_id, id.node.node_id);
    EXPECT_EQ(stored->node.role, pki::Role::manager);
    EXPECT_EQ(stored->credentials.cert_chain_pem, new_cert);
    EXPECT_EQ(str(stored->credentials.key_pem), str(id.credentials.key_pem));  // the key stays

    // The next connection presents the renewed certificate.
    port_->server().close_sessions(id.node.node_id);
    ASSERT_TRUE(test::wait_until([&] { return sessions_of(id.node.node_id).size() == 2; }));
    auto second = sessions_of(id.node.node_id)[1];
    EXPECT_EQ(second.role, pki::Role::manager);
    EXPECT_EQ(second.public_key, sessions_of(id.node.node_id)[0].public_key);
    loop.stop();
}

// A renew request that arrives while the node's own request is being answered is not lost to
// the certificate that answers the earlier one: the node asks again.
TEST_F(Renewal, ARequestThatCrossesTheAnswerIsRenewedAgain) {
    auto id = enrolled(1);
    agent::SessionLoop loop(options(id, 1), {});
    ASSERT_TRUE(test::wait_until([&] { return sessions_of(id.node.node_id).size() == 1; }));
    port_->ask_before_next_answer();
    port_->ask(id.node.node_id, "test");
    ASSERT_TRUE(test::wait_until([&] { return loop.renewals() == 2 && port_->renewed() == 2; }))
        << loop.renewals() << " stored, " << port_->renewed() << " issued";
    loop.stop();
}

TEST_F(Renewal, AShortLivedCertificateIsRenewedAtItsRenewalTime) {
    manager::ClusterTrust::Update shortest;
    shortest.cert_expiry = pki::min_cert_expiry;
    ASSERT_TRUE(port_->trust().update(shortest));
    auto id = enrolled(1);
    auto info = pki::read_certificate(id.credentials.cert_chain_pem).value();
    EXPECT_LE(info.not_after - info.not_before, pki::min_cert_expiry + pki::cert_backdate);
    // Renewal time computed from each certificate: 1.5 s after it was issued (not_before is
    // back-dated by an hour), instead of 50-80 % of its two hours.
    auto o = options(id, 1);
    o.renewal_time = [](const pki::CertificateInfo& c) {
        return c.not_before + pki::cert_backdate + 1500ms;
    };
    auto due = info.not_before + pki::cert_backdate + 1500ms;
    agent::SessionLoop loop(std::move(o), {});
    ASSERT_TRUE(test::wait_until([&] { return loop.connected(); }));
    ASSERT_TRUE(test::wait_until([&] { return loop.renewals() >= 1; }));
    // Not before the time the certificate said (second precision in certificates).
    EXPECT_GE(pki::Clock::now(), due - 1s);
    auto renewed =
        pki::read_certificate(test::read_file(data(1) / "identity" / "node.crt")).value();
    EXPECT_NE(renewed.serial, info.serial);
    // And the renewed one is renewed again at its own time.
    ASSERT_TRUE(test::wait_until([&] { return loop.renewals() >= 2; }));
    loop.stop();
}

TEST_F(Renewal, AForeignCertificateIsRefusedAndARefusedRenewIsRetried) {
    auto id = enrolled(1);
    auto before = read(data(1) / "identity" / "node.crt");
    auto o = options(id, 1);
    o.renew_retry = 300ms;
    agent::SessionLoop loop(std::move(o), {});
    ASSERT_TRUE(test::wait_until([&] { return sessions_of(id.node.node_id).size() == 1; }));

    // Pushed unasked: a valid certificate of this cluster, but for another node and key.
    auto other = pki::NodeKey::generate();
    auto foreign = port_->trust().issue(other.csr_pem, "someoneelse", pki::Role::worker).value();
    port_->send_to(id.node.node_id, nodeproto::encode(nodeproto::CertificateMessage{
                                        foreign, port_->trust().ca_bundle()}));
    // The manager refuses the first renew; the loop asks again after renew_retry.
    port_->refuse_next();
    port_->ask(id.node.node_id, "test");
    ASSERT_TRUE(test::wait_until([&] { return loop.renewals() == 1; }));
    EXPECT_EQ(port_->refused(), 1);
    EXPECT_EQ(port_->renewed(), 1);
    auto stored = agent::load_identity(data(1).string());
    ASSERT_TRUE(stored) << stored.error().message;
    EXPECT_EQ(stored->node.node_id, id.node.node_id);
    EXPECT_NE(stored->credentials.cert_chain_pem, before);
    EXPECT_NE(stored->credentials.cert_chain_pem, foreign);
    loop.stop();
}

TEST_F(Renewal, CaRotationRenewsEveryNodeThenDropsTheOldRoot) {
    auto a = enrolled(1);
    auto b = enrolled(2);
    agent::SessionLoop la(options(a, 1), {});
    ASSERT_TRUE(test::wait_until([&] { return la.connected(); }));

    // Node b is away when the rotation starts; node a is asked to renew at once.
    ASSERT_TRUE(port_->trust().rotate_ca());
    auto during = port_->trust().ca_bundle();
    ASSERT_EQ(pki::split_bundle(during).value().size(), 2u);
    // A node joining meanwhile, with the new token, succeeds (b has not renewed, so the
    // rotation cannot have finished).
    auto c = enrolled(3);
    EXPECT_EQ(test::read_file(data(3) / "identity" / "ca.crt"), during);
    EXPECT_TRUE(port_->trust().rotation_in_progress());
    // b comes back with its old certificate (the bundle still trusts the old root) and is asked
    // to renew on arrival.
    agent::SessionLoop lb(options(b, 2), {});

    // Both renew (asked by the node port), then the rotation finishes and they renew again to
    // receive the bundle without the old root.
    ASSERT_TRUE(test::wait_until([&] { return !port_->trust().rotation_in_progress(); }, 30s))
        << port_->trust().rotation_progress(port_->node_ids()).renewed << " renewed";
    auto after = port_->trust().ca_bundle();
    ASSERT_EQ(pki::split_bundle(after).value().size(), 1u);
    ASSERT_TRUE(test::wait_until(
        [&] {
            return test::read_file(data(1) / "identity" / "ca.crt") == after &&
                   test::read_file(data(2) / "identity" / "ca.crt") == after;
        },
        30s));

    // Reconnecting after the rotation works with what they stored; the old root is gone.
    port_->server().close_sessions(a.node.node_id);
    port_->server().close_sessions(b.node.node_id);
    auto opened_a = sessions_of(a.node.node_id).size(),
         opened_b = sessions_of(b.node.node_id).size();
    ASSERT_TRUE(test::wait_until([&] {
        return sessions_of(a.node.node_id).size() > opened_a &&
               sessions_of(b.node.node_id).size() > opened_b;
    }));
    auto new_key = port_->trust().tls_info().cert_issuer_public_key;
    EXPECT_EQ(sessions_of(a.node.node_id).back().issuer_public_key, new_key);
    EXPECT_EQ(sessions_of(b.node.node_id).back().issuer_public_key, new_key);

    // The pre-rotation certificate (a's enrolment) is refused now.
    auto stale =
        NodeClient::connect({"127.0.0.1", port_->port()}, a.credentials.clone(), {}, fast_limits());
    EXPECT_FALSE(stale.ok());
    // Node 3 joined during the rotation and holds a new-root certificate, with the cross-signed
    // root: it connects even though it never renewed.
    auto joined_during = NodeClient::connect(
        {"127.0.0.1", port_->port()},
        agent::load_identity(data(3).string()).value().credentials.clone(), {}, fast_limits());
    EXPECT_TRUE(joined_during.ok()) << joined_during.error().message;
    la.stop();
    lb.stop();
}

}  // namespace
