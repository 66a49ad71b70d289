// The cluster's trust over a real sealed store: certificate renewal, CA rotation, and the
// managers' forwarding key.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <array>
#include <atomic>
#include <filesystem>
#include <functional>

#include "coffer/crypto/random.h"
#include "coffer/manager/trust.h"
#include "coffer/nodeconn/forward.h"
#include "coffer/nodeproto/session.h"
#include "coffer/pki/node_key.h"
#include "coffer/store/store.h"

using namespace coffer;
using namespace coffer::manager;
namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

// Calls fn on every ClusterEvents::ca_changed.
class OnCaChanged : public ClusterEvents {
  public:
    explicit OnCaChanged(std::function<void()> fn) : fn_(std::move(fn)) {}
    void ca_changed() override { fn_(); }

  private:
    std::function<void()> fn_;
};

std::string str(const crypto::SecureBuffer& b) {
    return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

// A node as the manager sees it on a session: its key, and the identity its verified
// certificate gives.
struct Node {
    pki::NodeKey key;
    std::string chain;
    pki::NodeIdentity id;
};

class Trust : public ::testing::Test {
  protected:
    void SetUp() override {
        crypto::init();
        auto pattern = (fs::temp_directory_path() / "coffer-trust-test-XXXXXX").string();
        ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
        dir_ = pattern;
        open();
    }
    void TearDown() override {
        trust_.reset();
        store_.reset();
        fs::remove_all(dir_);
    }
    void open() {
        trust_.reset();
        store_.reset();
        auto opened = store::Store::open({.dir = dir_ / "data"});
        ASSERT_TRUE(opened.ok()) << opened.error().message;
        store_ = std::move(opened->store);
        auto t = ClusterTrust::load(*store_, "cluster1");
        ASSERT_TRUE(t.ok()) << t.error().message;
        trust_ = std::move(*t);
    }

    // Joins a node and returns what its session would present.
    Node join(const std::string& id, pki::Role role = pki::Role::worker) {
        Node n{pki::NodeKey::generate(), {}, {}};
        auto cert = trust_->issue(n.key.csr_pem, id, role);
        EXPECT_TRUE(cert.ok()) << cert.error().message;
        n.chain = cert.value();
        n.id = presented(n.chain);
        return n;
    }
    pki::NodeIdentity presented(const std::string& chain) {
        auto id = pki::verify_node_certificate(chain, trust_->ca_bundle(), "cluster1");
        EXPECT_TRUE(id.ok()) << id.error().message;
        return id.ok() ? *id : pki::NodeIdentity{};
    }

    fs::path dir_;
    std::unique_ptr<store::Store> store_;
    std::unique_ptr<ClusterTrust> trust_;
};

std::vector<std::string> roots_of(const std::string& bundle) {
    return pki::split_bundle(bundle).value();
}

TEST_F(Trust, RenewalKeepsTheNodeIdAndTakesTheRoleFromTheCaller) {
    auto n = join("node1");
    auto csr = pki::make_csr(n.key.key_pem).value();
    auto renewed = trust_->renew(csr, n.id, pki::Role::manager);
    ASSERT_TRUE(renewed.ok()) << renewed.error().message;
    EXPECT_EQ(renewed->ca_bundle_pem, trust_->ca_bundle());
    auto id =
        pki::verify_node_certificate(renewed->certificate_pem, renewed->ca_bundle_pem, "cluster1");
    ASSERT_TRUE(id.ok()) << id.error().message;
    EXPECT_EQ(id->node_id, "node1");
    EXPECT_EQ(id->role, pki::Role::manager);
    EXPECT_TRUE(pki::key_matches_certificate(n.key.key_pem, renewed->certificate_pem));
}

// The manager token makes a node of role manager, nothing more: neither its certificate nor its
// renewal is the manager's server identity, which only issue_manager_server gives.
TEST_F(Trust, TheManagerTokenNeverGivesTheManagersServerIdentity) {
    auto token = pki::JoinToken::parse(str(trust_->token(pki::Role::manager))).value();
    auto role = trust_->check_token(token);
    ASSERT_TRUE(role.ok());
    EXPECT_EQ(*role, pki::Role::manager);
    auto n = join("node1", *role);
    EXPECT_EQ(n.id.role, pki::Role::manager);
    EXPECT_FALSE(pki::verify_manager_certificate(n.chain, trust_->ca_bundle(), "cluster1").ok());
    auto renewed = trust_->renew(pki::make_csr(n.key.key_pem).value(), n.id, pki::Role::manager);
    ASSERT_TRUE(renewed.ok()) << renewed.error().message;
    EXPECT_FALSE(
        pki::verify_manager_certificate(renewed->certificate_pem, trust_->ca_bundle(), "cluster1")
            .ok());

    auto key = pki::NodeKey::generate();
    auto server = trust_->issue_manager_server(key.csr_pem, "manager1");
    ASSERT_TRUE(server.ok()) << server.error().message;
    EXPECT_TRUE(pki::verify_manager_certificate(*server, trust_->ca_bundle(), "cluster1").ok());
    EXPECT_FALSE(trust_->node_issuer("manager1"))
        << "the manager is not a node a rotation waits on";
}

TEST_F(Trust, RenewalRefusesACsrForAnotherKey) {
    auto n = join("node1");
    auto other = pki::NodeKey::generate();
    auto renewed = trust_->renew(other.csr_pem, n.id, pki::Role::worker);
    ASSERT_FALSE(renewed.ok());
    EXPECT_EQ(renewed.error().code, Errc::permission_denied);
    EXPECT_NE(renewed.error().message.find("renewal keeps the key"), std::string::npos);
}

TEST_F(Trust, RenewalRefusesABadCsrAndAnUnverifiedPeer) {
    auto n = join("node1");
    for (std::string bad :
         {"", "not a csr",
          "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}) {
        auto r = trust_->renew(bad, n.id, pki::Role::worker);
        ASSERT_FALSE(r.ok());
        EXPECT_EQ(r.error().code, Errc::invalid_argument) << r.error().message;
    }
    auto csr = pki::make_csr(n.key.key_pem).value();
    auto unverified = n.id;
    unverified.public_key.clear();
    EXPECT_FALSE(trust_->renew(csr, unverified, pki::Role::worker).ok());
    auto other_cluster = n.id;
    other_cluster.cluster_id = "cluster2";
    auto r = trust_->renew(csr, other_cluster, pki::Role::worker);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, Errc::permission_denied);
}

TEST_F(Trust, CertificateMessagesHaveTheSessionShape) {
    auto msg = json::parse(str(nodeproto::encode(nodeproto::CertificateMessage{"CERT", "BUNDLE"})))
                   .as_object();
    EXPECT_EQ(msg.at("type").as_string(), "certificate");
    EXPECT_EQ(msg.at("certificate").as_string(), "CERT");
    EXPECT_EQ(msg.at("ca_bundle").as_string(), "BUNDLE");
    EXPECT_EQ(json::parse(str(nodeproto::encode(nodeproto::RenewRequest{"CA rotation"})))
                  .at("type")
                  .as_string(),
              "renew_request");
    EXPECT_EQ(json::parse(str(nodeproto::encode(nodeproto::ErrorMessage{"no", std::nullopt})))
                  .at("message")
                  .as_string(),
              "no");
    auto renew = [](std::string_view text) {
        return nodeproto::decode_renew(crypto::SecureBuffer::copy_of(text));
    };
    EXPECT_EQ(renew(R"({"type":"renew","csr":"PEM"})").value().csr, "PEM");
    EXPECT_FALSE(renew(R"({"type":"renew"})").ok());
    EXPECT_FALSE(renew(R"({"type":"renew","csr":7})").ok());
    EXPECT_FALSE(renew("[").ok());
}

TEST_F(Trust, RotationTrustsBothRootsAndNewCertificatesVerifyUnderEither) {
    auto old_root = trust_->ca_bundle();
    auto n = join("node1");
    std::atomic<int> changed = 0;
    OnCaChanged events([&] { ++changed; });
    trust_->emit_changes(events);
    auto before = trust_->ca_version();
    ASSERT_TRUE(trust_->rotate_ca().ok());
    EXPECT_TRUE(trust_->rotation_in_progress());
    EXPECT_EQ(changed, 1);
    EXPECT_GT(trust_->ca_version(), before);

    auto bundle = trust_->ca_bundle();
    auto roots = roots_of(bundle);
    ASSERT_EQ(roots.size(), 2u);
    EXPECT_EQ(roots[0], old_root);
    const auto& new_root = roots[1];

    auto csr = pki::make_csr(n.key.key_pem).value();
    auto renewed = trust_->renew(csr, n.id, pki::Role::worker);
    ASSERT_TRUE(renewed.ok()) << renewed.error().message;
    EXPECT_EQ(renewed->ca_bundle_pem, bundle);
    // A node still trusting only the old root, one trusting both, one trusting only the new.
    for (const auto& trusted : {old_root, bundle, new_root})
        EXPECT_TRUE(
            pki::verify_node_certificate(renewed->certificate_pem, trusted, "cluster1").ok());
    // The old certificate still verifies against the bundle during the rotation.
    EXPECT_TRUE(pki::verify_node_certificate(n.chain, bundle, "cluster1").ok());
    // So does the manager's server certificate from the new CA, for nodes that have not renewed.
    auto server = trust_->issue_manager_server(pki::NodeKey::generate().csr_pem, "manager1");
    ASSERT_TRUE(server.ok()) << server.error().message;
    for (const auto& trusted : {old_root, bundle, new_root})
        EXPECT_TRUE(pki::verify_manager_certificate(*server, trusted, "cluster1").ok());
    EXPECT_EQ(trust_->tls_info().cert_issuer_public_key,
              presented(renewed->certificate_pem).issuer_public_key);
    // Cannot start another one meanwhile.
    auto again = trust_->rotate_ca();
    ASSERT_FALSE(again.ok());
    EXPECT_EQ(again.error().code, Errc::conflict);
}

TEST_F(Trust, RotationChangesTheTokensDigestAndKeepsTheirSecrets) {
    auto worker = str(trust_->token(pki::Role::worker));
    auto manager = str(trust_->token(pki::Role::manager));
    ASSERT_TRUE(trust_->rotate_ca().ok());
    for (auto [role, before] :
         {std::pair{pki::Role::worker, worker}, std::pair{pki::Role::manager, manager}}) {
        auto now = str(trust_->token(role));
        EXPECT_NE(now, before);
        auto parsed = pki::JoinToken::parse(now);
        ASSERT_TRUE(parsed.ok());
        EXPECT_TRUE(parsed->pins(trust_->ca_bundle()));
        // The secret (the last 25 characters) stays.
        EXPECT_EQ(now.substr(now.size() - 25), before.substr(before.size() - 25));
        EXPECT_EQ(trust_->check_token(*parsed).value(), role);
        // A token with the old digest is refused.
        EXPECT_FALSE(trust_->check_token(pki::JoinToken::parse(before).value()).ok());
    }
}

TEST_F(Trust, RotationResumesAfterARestart) {
    auto n = join("node1");
    ASSERT_TRUE(trust_->rotate_ca().ok());
    auto bundle = trust_->ca_bundle();
    auto token = str(trust_->token(pki::Role::worker));
    auto version = trust_->version();
    open();
    EXPECT_TRUE(trust_->rotation_in_progress());
    EXPECT_EQ(trust_->ca_bundle(), bundle);
    EXPECT_EQ(str(trust_->token(pki::Role::worker)), token);
    EXPECT_EQ(trust_->version(), version);
    EXPECT_EQ(trust_->force_rotate(), 1u);
    // Which root issued node1's certificate is learnt again from its session.
    std::vector<std::string> ids{"node1"};
    EXPECT_EQ(trust_->rotation_progress(ids).renewed, 0u);
    trust_->note_session(n.id);
    EXPECT_EQ(trust_->rotation_progress(ids).renewed, 0u);
    // Issuing after the restart still carries the chain to the old root.
    auto renewed = trust_->renew(pki::make_csr(n.key.key_pem).value(), n.id, pki::Role::worker);
    ASSERT_TRUE(renewed.ok()) << renewed.error().message;
    EXPECT_TRUE(
        pki::verify_node_certificate(renewed->certificate_pem, roots_of(bundle)[0], "cluster1")
            .ok());
    EXPECT_EQ(trust_->rotation_progress(ids).renewed, 1u);
}

TEST_F(Trust, RotationFinishesOnlyWhenEveryNodeRenewed) {
    auto a = join("nodea");
    auto b = join("nodeb");
    auto old_root = trust_->ca_bundle();
    ASSERT_TRUE(trust_->rotate_ca().ok());
    auto new_root = roots_of(trust_->ca_bundle())[1];
    std::vector<std::string> ids{"nodea", "nodeb"};

    auto ra = trust_->renew(pki::make_csr(a.key.key_pem).value(), a.id, pki::Role::worker).value();
    auto p = trust_->rotation_progress(ids);
    EXPECT_TRUE(p.in_progress);
    EXPECT_EQ(p.renewed, 1u);
    EXPECT_EQ(p.total, 2u);
    EXPECT_FALSE(trust_->finish_rotation_if_renewed(ids).value());
    // nodeb reconnecting with its old certificate does not count.
    trust_->note_session(b.id);
    EXPECT_FALSE(trust_->finish_rotation_if_renewed(ids).value());

    auto rb = trust_->renew(pki::make_csr(b.key.key_pem).value(), b.id, pki::Role::worker).value();
    auto worker_during = str(trust_->token(pki::Role::worker));
    std::atomic<int> changed = 0;
    OnCaChanged events([&] { ++changed; });
    trust_->emit_changes(events);
    ASSERT_TRUE(trust_->finish_rotation_if_renewed(ids).value());
    EXPECT_EQ(changed, 1);
    EXPECT_FALSE(trust_->rotation_in_progress());
    EXPECT_EQ(trust_->ca_bundle(), new_root);
    EXPECT_FALSE(trust_->rotation_progress(ids).in_progress);
    // The tokens pin the new root alone, with new secrets: the one shown during the rotation
    // no longer joins.
    auto worker_after = str(trust_->token(pki::Role::worker));
    EXPECT_TRUE(pki::JoinToken::parse(worker_after).value().pins(new_root));
    EXPECT_NE(worker_after.substr(worker_after.size() - 25),
              worker_during.substr(worker_during.size() - 25));
    EXPECT_FALSE(trust_->check_token(pki::JoinToken::parse(worker_during).value()).ok());

    // Certificates from the old root alone are refused now; renewed ones still verify.
    EXPECT_FALSE(pki::verify_node_certificate(a.chain, trust_->ca_bundle(), "cluster1").ok());
    EXPECT_TRUE(
        pki::verify_node_certificate(ra.certificate_pem, trust_->ca_bundle(), "cluster1").ok());
    EXPECT_TRUE(
        pki::verify_node_certificate(rb.certificate_pem, trust_->ca_bundle(), "cluster1").ok());
    // The manager's server certificate now verifies under the new root alone; its new
    // certificate, without the cross-signed root, no longer under the old one.
    auto server =
        trust_->issue_manager_server(pki::NodeKey::generate().csr_pem, "manager1").value();
    EXPECT_TRUE(pki::verify_manager_certificate(server, trust_->ca_bundle(), "cluster1").ok());
    EXPECT_FALSE(pki::verify_manager_certificate(server, old_root, "cluster1").ok());
    // New certificates come without the cross-signed root.
    auto fresh = join("nodec");
    EXPECT_EQ(pki::split_bundle(fresh.chain).value().size(), 1u);
    EXPECT_FALSE(pki::verify_node_certificate(fresh.chain, old_root, "cluster1").ok());

    // And the finished state survives a restart.
    open();
    EXPECT_FALSE(trust_->rotation_in_progress());
    EXPECT_EQ(trust_->ca_bundle(), new_root);
}

TEST_F(Trust, RotationWithNoNodesFinishesAtOnceAndRemovedNodesDoNotCount) {
    auto a = join("nodea");
    ASSERT_TRUE(trust_->rotate_ca().ok());
    std::vector<std::string> none;
    // nodea was removed: the registry no longer lists it.
    ASSERT_TRUE(trust_->finish_rotation_if_renewed(none).value());
    EXPECT_EQ(roots_of(trust_->ca_bundle()).size(), 1u);
}

TEST_F(Trust, ForceRotateInAnUpdateStartsARotationOnlyWhenItChanges) {
    ClusterTrust::Update same;
    same.force_rotate = trust_->force_rotate();
    ASSERT_TRUE(trust_->update(same).ok());
    EXPECT_FALSE(trust_->rotation_in_progress());
    ClusterTrust::Update bump;
    bump.force_rotate = trust_->force_rotate() + 1;
    ASSERT_TRUE(trust_->update(bump).ok());
    EXPECT_TRUE(trust_->rotation_in_progress());
}

}  // namespace

// The managers' forwarding key: made with the trust, kept across restarts, read by a standby's
// reader with the CA bundle; a proof holds only for its key and its connection's binding.
TEST_F(Trust, TheForwardingKeyProvesAManagerOnOneConnectionOnly) {
    auto read = [&] {
        return ClusterTrust::read_forward_trust(
            [&](std::string_view key) { return store_->get(store::Table::pki, key); });
    };
    auto first = read();
    ASSERT_TRUE(first.ok()) << first.error().message;
    EXPECT_EQ(first->key.size(), 32u);
    EXPECT_EQ(first->ca_bundle, trust_->ca_bundle());
    std::array<std::uint8_t, 32> binding{}, other{};
    crypto::random_bytes(binding);
    crypto::random_bytes(other);
    auto proof = nodeconn::forward_proof(first->key, binding);
    EXPECT_TRUE(trust_->check_forward(binding, proof));
    EXPECT_FALSE(trust_->check_forward(other, proof)) << "another connection";
    EXPECT_FALSE(trust_->check_forward(binding, proof.substr(1))) << "shortened";
    EXPECT_FALSE(trust_->check_forward(binding, ""));
    auto wrong = proof;
    wrong[0] = wrong[0] == 'a' ? 'b' : 'a';
    EXPECT_FALSE(trust_->check_forward(binding, wrong));
    crypto::SecureBuffer another(32);
    crypto::random_bytes({another.data(), another.size()});
    EXPECT_FALSE(trust_->check_forward(binding, nodeconn::forward_proof(another, binding)));
    // The same key after a restart, and during a CA rotation the bundle holds both roots.
    open();
    EXPECT_TRUE(trust_->check_forward(binding, proof));
    ASSERT_TRUE(trust_->rotate_ca().ok());
    auto rotating = read();
    ASSERT_TRUE(rotating.ok()) << rotating.error().message;
    EXPECT_EQ(rotating->ca_bundle, trust_->ca_bundle());
    EXPECT_EQ(roots_of(rotating->ca_bundle).size(), 2u);
    EXPECT_TRUE(trust_->check_forward(binding, proof));
}

// A store made before managers forwarded gets its key at the next load, once.
TEST_F(Trust, AStoreWithoutAForwardingKeyGetsOneAtLoad) {
    store::Batch b;
    b.erase(store::Table::pki, "forward");
    ASSERT_TRUE(store_->write(std::move(b)).ok());
    auto none = ClusterTrust::read_forward_trust(
        [&](std::string_view key) { return store_->get(store::Table::pki, key); });
    ASSERT_FALSE(none.ok());
    EXPECT_EQ(none.error().code, Errc::unavailable);
    open();
    auto made = store_->get(store::Table::pki, "forward");
    ASSERT_TRUE(made.ok() && made->has_value());
    open();
    auto kept = store_->get(store::Table::pki, "forward");
    ASSERT_TRUE(kept.ok() && kept->has_value());
    EXPECT_EQ(str(**made), str(**kept));
}

// A forwarded request's envelope: registry auth and body back as they were; anything malformed
// is refused.
TEST(ForwardEnvelope, CarriesTheBodyAndRegistryAuthAndRefusesMalformedOnes) {
    net::Request r;
    r.body = crypto::SecureBuffer::copy_of(R"({"Name":"s","Data":"eA=="})");
    r.registry_auth = crypto::SecureBuffer::copy_of("eyJ1c2VybmFtZSI6ImEifQ");
    auto envelope = nodeconn::forward_envelope(r);
    net::Request back;
    ASSERT_TRUE(nodeconn::open_forward_envelope(envelope, back).ok());
    EXPECT_EQ(str(back.body), str(r.body));
    EXPECT_EQ(str(back.registry_auth), str(r.registry_auth));
    net::Request empty;
    net::Request empty_back;
    ASSERT_TRUE(
        nodeconn::open_forward_envelope(nodeconn::forward_envelope(empty), empty_back).ok());
    EXPECT_TRUE(empty_back.body.empty());
    EXPECT_TRUE(empty_back.registry_auth.empty());
    for (std::size_t cut : {std::size_t(0), std::size_t(3), std::size_t(7), envelope.size() - 1}) {
        auto shorter = crypto::SecureBuffer::copy_of(
            std::string_view(reinterpret_cast<const char*>(envelope.data()), cut));
        net::Request into;
        EXPECT_FALSE(nodeconn::open_forward_envelope(shorter, into).ok()) << cut;
    }
    auto longer = crypto::SecureBuffer::copy_of(str(envelope) + "x");
    net::Request into;
    EXPECT_FALSE(nodeconn::open_forward_envelope(longer, into).ok());
    auto huge = crypto::SecureBuffer::copy_of(str(envelope));
    huge.data()[0] = 0xff;  // registry auth "longer" than the envelope
    EXPECT_FALSE(nodeconn::open_forward_envelope(huge, into).ok());
}
