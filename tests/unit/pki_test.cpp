#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <string>

#include "coffer/pki/ca.h"
#include "coffer/pki/certificate.h"
#include "coffer/pki/node_key.h"
#include "coffer/pki/token.h"

using namespace coffer;
using namespace coffer::pki;
using namespace std::chrono_literals;

namespace {

std::string str(const crypto::SecureBuffer& b) {
    return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

const std::string digest50(50, 'a');
const std::string secret25(25, '7');

NodeIdentity worker(std::string id = "node1") {
    return {std::move(id), Role::worker, "cluster1"};
}

// The CA is expensive enough to share among the tests of one binary.
const CertificateAuthority& shared_ca() {
    static const CertificateAuthority ca = CertificateAuthority::create_root();
    return ca;
}

// A CSR that asks for everything a node must not get: a manager's name, another cluster, extra
// DNS names and CA rights.
std::string greedy_csr() {
    std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
        EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"), EVP_PKEY_free);
    std::unique_ptr<X509_REQ, decltype(&X509_REQ_free)> req(X509_REQ_new(), X509_REQ_free);
    X509_NAME* name = X509_REQ_get_subject_name(req.get());
    auto add = [&](const char* f, const char* v) {
        X509_NAME_add_entry_by_txt(name, f, MBSTRING_ASC, reinterpret_cast<const unsigned char*>(v),
                                   -1, -1, 0);
    };
    add("CN", "evil-node");
    add("OU", "coffer-manager");
    add("O", "othercluster");
    STACK_OF(X509_EXTENSION)* exts = sk_X509_EXTENSION_new_null();
    sk_X509_EXTENSION_push(exts, X509V3_EXT_conf_nid(nullptr, nullptr, NID_subject_alt_name,
                                                     "DNS:evil.example,DNS:coffer-manager"));
    sk_X509_EXTENSION_push(
        exts, X509V3_EXT_conf_nid(nullptr, nullptr, NID_basic_constraints, "critical,CA:TRUE"));
    X509_REQ_add_extensions(req.get(), exts);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_set_pubkey(req.get(), key.get());
    X509_REQ_sign(req.get(), key.get(), EVP_sha256());
    BIO* bio = BIO_new(BIO_s_mem());
    PEM_write_bio_X509_REQ(bio, req.get());
    char* data = nullptr;
    long len = BIO_get_mem_data(bio, &data);
    std::string pem(data, static_cast<std::size_t>(len));
    BIO_free(bio);
    return pem;
}

std::vector<std::string> dns_names(const std::string& cert_pem) {
    BIO* bio = BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size()));
    X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
    BIO_free(bio);
    std::vector<std::string> out;
    auto* sans =
        static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
    for (int i = 0; sans != nullptr && i < sk_GENERAL_NAME_num(sans); ++i) {
        const GENERAL_NAME* gn = sk_GENERAL_NAME_value(sans, i);
        if (gn->type == GEN_DNS)
            out.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(gn->d.dNSName)),
                             static_cast<std::size_t>(ASN1_STRING_length(gn->d.dNSName)));
    }
    GENERAL_NAMES_free(sans);
    X509_free(cert);
    return out;
}

// The extended key usages a certificate names: "serverAuth", "clientAuth".
std::vector<std::string> key_usages(const std::string& cert_pem) {
    BIO* bio = BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size()));
    X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
    BIO_free(bio);
    std::vector<std::string> out;
    auto* ekus = static_cast<EXTENDED_KEY_USAGE*>(
        X509_get_ext_d2i(cert, NID_ext_key_usage, nullptr, nullptr));
    for (int i = 0; ekus != nullptr && i < sk_ASN1_OBJECT_num(ekus); ++i)
        out.emplace_back(OBJ_nid2sn(OBJ_obj2nid(sk_ASN1_OBJECT_value(ekus, i))));
    EXTENDED_KEY_USAGE_free(ekus);
    X509_free(cert);
    return out;
}

// A leaf signed with the cluster CA's key but shaped by hand: the certificates coffer issued
// before the manager had an identity of its own (OU and DNS name "coffer-manager", serverAuth +
// clientAuth), and near misses of the manager's identity. eku may be null (no EKU extension).
std::string crafted_leaf(const CertificateAuthority& ca, const char* unit, const char* sans,
                         const char* eku, const char* cn = "n1") {
    auto ca_key_pem = ca.key_pem();
    BIO* kb = BIO_new_mem_buf(ca_key_pem.data(), static_cast<int>(ca_key_pem.size()));
    EVP_PKEY* ca_key = PEM_read_bio_PrivateKey(kb, nullptr, nullptr, nullptr);
    BIO_free(kb);
    BIO* cb =
        BIO_new_mem_buf(ca.certificate_pem().data(), static_cast<int>(ca.certificate_pem().size()));
    X509* ca_cert = PEM_read_bio_X509(cb, nullptr, nullptr, nullptr);
    BIO_free(cb);
    EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");

    X509* c = X509_new();
    X509_set_version(c, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(c), 4242);
    X509_NAME* name = X509_get_subject_name(c);
    auto add = [&](const char* f, const char* v) {
        X509_NAME_add_entry_by_txt(name, f, MBSTRING_ASC, reinterpret_cast<const unsigned char*>(v),
                                   -1, -1, 0);
    };
    add("O", "cluster1");
    add("OU", unit);
    add("CN", cn);
    X509_set_issuer_name(c, X509_get_subject_name(ca_cert));
    X509_gmtime_adj(X509_getm_notBefore(c), -3600);
    X509_gmtime_adj(X509_getm_notAfter(c), 3600);
    X509_set_pubkey(c, key);
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, ca_cert, c, nullptr, nullptr, 0);
    auto ext = [&](int nid, const char* value) {
        X509_EXTENSION* e = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
        X509_add_ext(c, e, -1);
        X509_EXTENSION_free(e);
    };
    ext(NID_basic_constraints, "critical,CA:FALSE");
    ext(NID_key_usage, "critical,digitalSignature,keyEncipherment");
    if (eku != nullptr) ext(NID_ext_key_usage, eku);
    ext(NID_subject_alt_name, sans);
    X509_sign(c, ca_key, EVP_sha256());
    BIO* out = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(out, c);
    char* data = nullptr;
    long len = BIO_get_mem_data(out, &data);
    std::string pem(data, static_cast<std::size_t>(len));
    BIO_free(out);
    X509_free(c);
    X509_free(ca_cert);
    EVP_PKEY_free(key);
    EVP_PKEY_free(ca_key);
    return pem;
}

}  // namespace

TEST(JoinToken, RoundTripsThroughText) {
    auto token = JoinToken::generate("bundle");
    auto text = str(token.text());
    EXPECT_EQ(text.size(), 9 + 1 + 1 + 1 + 50 + 1 + 25);
    EXPECT_EQ(text.substr(0, 12), "COFFERTKN-1-");
    auto parsed = JoinToken::parse(text);
    ASSERT_TRUE(parsed) << parsed.error().message;
    EXPECT_EQ(parsed->ca_digest(), token.ca_digest());
    EXPECT_TRUE(parsed->matches(token));
    EXPECT_TRUE(parsed->pins("bundle"));
}

TEST(JoinToken, SecretsDifferAndDoNotMatch) {
    auto a = JoinToken::generate("bundle");
    auto b = JoinToken::generate("bundle");
    EXPECT_EQ(a.ca_digest(), b.ca_digest());
    EXPECT_NE(str(a.text()), str(b.text()));
    EXPECT_FALSE(a.matches(b));
    // Same secret, other CA: no match either.
    auto text = str(a.text());
    auto other = JoinToken::parse("COFFERTKN-1-" + digest50 + text.substr(text.size() - 26));
    ASSERT_TRUE(other);
    EXPECT_FALSE(other->matches(a));
}

TEST(JoinToken, DigestIsSha256OfTheBundleInBase36) {
    // sha256("") = e3b0c442...b855, in base 36 and zero-padded to 50, as Swarm renders it.
    EXPECT_EQ(ca_digest(""), "5oaq0bjhj6un82wg98mgigso5q7qlhc63je4gw7ivixqqhkd3p");
    EXPECT_EQ(ca_digest(shared_ca().certificate_pem()).size(), 50u);
}

TEST(JoinToken, DetectsDigestMismatch) {
    auto other = CertificateAuthority::create_root();
    auto token = JoinToken::generate(shared_ca().certificate_pem());
    EXPECT_TRUE(token.pins(shared_ca().certificate_pem()));
    EXPECT_FALSE(token.pins(other.certificate_pem()));
    // A bundle with one more root is another bundle.
    EXPECT_FALSE(token.pins(shared_ca().certificate_pem() + other.certificate_pem()));
}

TEST(JoinToken, RejectsEveryMalformedForm) {
    const std::string good = "COFFERTKN-1-" + digest50 + "-" + secret25;
    ASSERT_TRUE(JoinToken::parse(good));
    const std::vector<std::pair<std::string, std::string>> bad = {
        {"", "expected COFFERTKN-1-<CA digest>-<secret>"},
        {"COFFERTKN", "expected"},
        {"COFFERTKN-1-" + digest50, "expected"},
        {good + "-extra", "expected"},
        {"COFFERTKN-1--" + digest50 + "-" + secret25, "expected"},
        {"SWMTKN-1-" + digest50 + "-" + secret25, "does not start with COFFERTKN"},
        {"coffertkn-1-" + digest50 + "-" + secret25, "does not start with COFFERTKN"},
        {" COFFERTKN-1-" + digest50 + "-" + secret25, "does not start with COFFERTKN"},
        {"COFFERTKN-2-" + digest50 + "-" + secret25, "unsupported version"},
        {"COFFERTKN--" + digest50 + "-" + secret25, "unsupported version"},
        {"COFFERTKN-1-" + digest50.substr(1) + "-" + secret25, "CA digest"},
        {"COFFERTKN-1-" + digest50 + "a-" + secret25, "CA digest"},
        {"COFFERTKN-1-" + std::string(50, 'A') + "-" + secret25, "CA digest"},
        {"COFFERTKN-1-" + std::string(49, 'a') + "!-" + secret25, "CA digest"},
        {"COFFERTKN-1-" + digest50 + "-" + secret25.substr(1), "secret"},
        {"COFFERTKN-1-" + digest50 + "-" + secret25 + "7", "secret"},
        {"COFFERTKN-1-" + digest50 + "-" + secret25.substr(1) + "_", "secret"},
        {"COFFERTKN-1-" + digest50 + "-" + secret25.substr(1) + "\n", "secret"},
        {"COFFERTKN-1-" + digest50 + "-" + secret25.substr(1) + std::string(1, '\0'), "secret"},
        {good + std::string(300, 'x'), "too long"},
    };
    for (const auto& [text, why] : bad) {
        auto r = JoinToken::parse(text);
        ASSERT_FALSE(r) << text;
        EXPECT_EQ(r.error().code, Errc::invalid_argument);
        EXPECT_NE(r.error().message.find("invalid join token: "), std::string::npos);
        EXPECT_NE(r.error().message.find(why), std::string::npos) << r.error().message;
        // The error never repeats what was typed (it may hold a secret).
        EXPECT_EQ(r.error().message.find(secret25.substr(0, 10)), std::string::npos);
    }
}

TEST(CertificateAuthority, RootIsAP256CaNamedCofferRootCa) {
    auto info = read_certificate(shared_ca().certificate_pem());
    ASSERT_TRUE(info) << info.error().message;
    EXPECT_EQ(info->common_name, "coffer-root-ca");
    EXPECT_EQ(info->issuer_common_name, "coffer-root-ca");
    EXPECT_TRUE(info->is_ca);
    auto validity = info->not_after - info->not_before;
    EXPECT_GE(validity, root_ca_validity);
    EXPECT_LE(validity, root_ca_validity + cert_backdate + 1min);
    auto key = shared_ca().key_pem();
    EXPECT_EQ(str(key).rfind("-----BEGIN PRIVATE KEY-----", 0), 0u);
    EXPECT_TRUE(key_matches_certificate(key, shared_ca().certificate_pem()));
}

TEST(CertificateAuthority, ReloadsFromPemAndRejectsAForeignKey) {
    auto loaded = CertificateAuthority::load(shared_ca().certificate_pem(), shared_ca().key_pem());
    ASSERT_TRUE(loaded) << loaded.error().message;
    auto node = NodeKey::generate();
    auto cert = loaded->issue(node.csr_pem, worker());
    ASSERT_TRUE(cert);
    EXPECT_TRUE(verify_chain(*cert, shared_ca().certificate_pem()));

    auto other = CertificateAuthority::create_root();
    auto mixed = CertificateAuthority::load(shared_ca().certificate_pem(), other.key_pem());
    ASSERT_FALSE(mixed);
    EXPECT_NE(mixed.error().message.find("key does not match certificate"), std::string::npos);
    auto not_ca = CertificateAuthority::load(*cert, node.key_pem);
    ASSERT_FALSE(not_ca);
    EXPECT_NE(not_ca.error().message.find("not a CA"), std::string::npos);
}

TEST(CertificateAuthority, IssuesWhatTheManagerChoosesNotWhatTheCsrAsks) {
    auto cert = shared_ca().issue(greedy_csr(), worker("n0de"));
    ASSERT_TRUE(cert) << cert.error().message;
    auto info = read_certificate(*cert);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->common_name, "n0de");
    EXPECT_EQ(info->organizational_unit, "coffer-worker");
    EXPECT_EQ(info->organization, "cluster1");
    EXPECT_FALSE(info->is_ca);
    EXPECT_EQ(dns_names(*cert), (std::vector<std::string>{"n0de"}));
    EXPECT_EQ(key_usages(*cert), (std::vector<std::string>{"clientAuth"}));
}

TEST(CertificateAuthority, IssuesManagersWithTheManagerRole) {
    auto node = NodeKey::generate();
    auto cert = shared_ca().issue(node.csr_pem, {"m1", Role::manager, "cluster1"});
    ASSERT_TRUE(cert);
    auto id = verify_node_certificate(*cert, shared_ca().certificate_pem(), "cluster1");
    ASSERT_TRUE(id) << id.error().message;
    EXPECT_EQ(id->node_id, "m1");
    EXPECT_EQ(id->role, Role::manager);
    EXPECT_EQ(read_certificate(*cert)->organizational_unit, "coffer-manager");
    EXPECT_TRUE(key_matches_certificate(node.key_pem, *cert));
    EXPECT_FALSE(key_matches_certificate(NodeKey::generate().key_pem, *cert));
    // A node of role manager is a TLS client like any node: no server use, no manager's name.
    EXPECT_EQ(dns_names(*cert), (std::vector<std::string>{"m1"}));
    EXPECT_EQ(key_usages(*cert), (std::vector<std::string>{"clientAuth"}));
    auto as_manager = verify_manager_certificate(*cert, shared_ca().certificate_pem(), "cluster1");
    ASSERT_FALSE(as_manager);
    EXPECT_EQ(as_manager.error().code, Errc::permission_denied);
}

TEST(CertificateAuthority, OnlyTheManagersServerCertificatePassesForTheManager) {
    const auto roots = shared_ca().certificate_pem();
    auto key = NodeKey::generate();
    auto server = shared_ca().issue_manager_server(key.csr_pem, "manager7", "cluster1");
    ASSERT_TRUE(server) << server.error().message;
    auto info = verify_manager_certificate(*server, roots, "cluster1");
    ASSERT_TRUE(info) << info.error().message;
    EXPECT_EQ(info->common_name, "manager7");
    EXPECT_EQ(info->organizational_unit, "coffer-manager-server");
    EXPECT_EQ(dns_names(*server), (std::vector<std::string>{"coffer-manager-server"}));
    EXPECT_EQ(key_usages(*server), (std::vector<std::string>{"serverAuth"}));
    EXPECT_TRUE(key_matches_certificate(key.key_pem, *server));
    // It is no node certificate, and it is the manager of its own cluster only.
    EXPECT_FALSE(verify_node_certificate(*server, roots, "cluster1"));
    auto other = verify_manager_certificate(*server, roots, "cluster2");
    ASSERT_FALSE(other);
    EXPECT_NE(other.error().message.find("another cluster"), std::string::npos);
    EXPECT_FALSE(shared_ca().issue_manager_server(key.csr_pem, "manager-7", "cluster1"));
    EXPECT_FALSE(shared_ca().issue_manager_server(greedy_csr(), "m", "Cluster1"));

    // Nodes of either role, whatever their CSR asks for.
    for (auto role : {Role::worker, Role::manager}) {
        auto node = shared_ca().issue(greedy_csr(), {"n1", role, "cluster1"});
        ASSERT_TRUE(node);
        EXPECT_FALSE(verify_manager_certificate(*node, roots, "cluster1"));
        EXPECT_TRUE(verify_node_certificate(*node, roots, "cluster1"));
    }
    // The manager-role node certificates issued before this identity existed: they keep working
    // as node (client) certificates until renewed, and are never the manager.
    auto legacy = crafted_leaf(shared_ca(), "coffer-manager", "DNS:coffer-manager,DNS:n1",
                               "serverAuth,clientAuth");
    ASSERT_TRUE(verify_chain(legacy, roots));
    auto legacy_node = verify_node_certificate(legacy, roots, "cluster1");
    ASSERT_TRUE(legacy_node) << legacy_node.error().message;
    EXPECT_EQ(legacy_node->role, Role::manager);
    EXPECT_FALSE(verify_manager_certificate(legacy, roots, "cluster1"));
    // Each part of the identity is needed: the unit, the name, serverAuth named explicitly.
    const char* name = "DNS:coffer-manager-server";
    EXPECT_TRUE(verify_manager_certificate(
        crafted_leaf(shared_ca(), "coffer-manager-server", name, "serverAuth"), roots, "cluster1"))
        << "control: a hand-made certificate of the right shape passes";
    EXPECT_FALSE(verify_manager_certificate(
        crafted_leaf(shared_ca(), "coffer-manager", name, "serverAuth"), roots, "cluster1"));
    EXPECT_FALSE(verify_manager_certificate(
        crafted_leaf(shared_ca(), "coffer-manager-server", "DNS:coffer-manager", "serverAuth"),
        roots, "cluster1"));
    EXPECT_FALSE(verify_manager_certificate(
        crafted_leaf(shared_ca(), "coffer-manager-server", name, "clientAuth"), roots, "cluster1"));
    EXPECT_FALSE(verify_manager_certificate(
        crafted_leaf(shared_ca(), "coffer-manager-server", name, nullptr), roots, "cluster1"));
    EXPECT_FALSE(
        verify_manager_certificate(crafted_leaf(shared_ca(), "coffer-manager-server",
                                                "DNS:*.coffer-manager-server", "serverAuth"),
                                   roots, "cluster1"));
    // And it must chain to the trusted root.
    auto foreign = CertificateAuthority::create_root();
    EXPECT_FALSE(verify_manager_certificate(
        *foreign.issue_manager_server(key.csr_pem, "manager7", "cluster1"), roots, "cluster1"));
}

TEST(CertificateAuthority, RenewalCsrKeepsTheKey) {
    auto node = NodeKey::generate();
    auto csr = make_csr(node.key_pem);
    ASSERT_TRUE(csr);
    auto cert = shared_ca().issue(*csr, worker());
    ASSERT_TRUE(cert);
    EXPECT_TRUE(key_matches_certificate(node.key_pem, *cert));
}

TEST(CertificateAuthority, RefusesBadRequests) {
    auto node = NodeKey::generate();
    // A changed character inside the signed part (the public key) breaks the signature; the
    // middle of a base64 line carries six significant bits, so the DER really changes.
    std::string tampered = node.csr_pem;
    auto at = tampered.find('\n') + 40;
    tampered[at] = tampered[at] == 'A' ? 'B' : 'A';
    auto r = shared_ca().issue(tampered, worker());
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, Errc::invalid_argument);

    EXPECT_FALSE(shared_ca().issue("not a csr", worker()));
    EXPECT_FALSE(shared_ca().issue(node.csr_pem, worker("node1,DNS:evil")));
    EXPECT_FALSE(shared_ca().issue(node.csr_pem, worker("")));
    EXPECT_FALSE(shared_ca().issue(node.csr_pem, {"n", Role::worker, "Cluster"}));

    std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> rsa(
        EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", std::size_t{2048}), EVP_PKEY_free);
    auto rsa_pem = std::unique_ptr<BIO, decltype(&BIO_free)>(BIO_new(BIO_s_mem()), BIO_free);
    PEM_write_bio_PrivateKey(rsa_pem.get(), rsa.get(), nullptr, nullptr, 0, nullptr, nullptr);
    char* data = nullptr;
    long len = BIO_get_mem_data(rsa_pem.get(), &data);
    auto rsa_csr = make_csr(crypto::SecureBuffer::copy_of(std::string_view(data, len)));
    ASSERT_TRUE(rsa_csr);
    auto rsa_cert = shared_ca().issue(*rsa_csr, worker());
    ASSERT_FALSE(rsa_cert);
    EXPECT_NE(rsa_cert.error().message.find("ECDSA P-256"), std::string::npos);
}

TEST(CertificateAuthority, EnforcesMinimumExpiry) {
    auto node = NodeKey::generate();
    auto r = shared_ca().issue(node.csr_pem, worker(), 59min);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, Errc::invalid_argument);
    EXPECT_EQ(r.error().message, "minimum certificate expiry time is 1h");

    // At most 10 years: far beyond, the time would wrap into the past.
    auto forever = shared_ca().issue(node.csr_pem, worker(), std::chrono::hours(24 * 3651 * 1));
    ASSERT_FALSE(forever);
    EXPECT_NE(forever.error().message.find("from 1h to 87600h"), std::string::npos);

    auto hour = shared_ca().issue(node.csr_pem, worker(), 1h);
    ASSERT_TRUE(hour);
    auto info = read_certificate(*hour);
    EXPECT_EQ(info->not_after - info->not_before, 2h);  // back-dated 1h

    auto now = Clock::now();
    auto dflt = read_certificate(*shared_ca().issue(node.csr_pem, worker()));
    EXPECT_LE(dflt->not_before, now - 1h + 2s);
    EXPECT_GE(dflt->not_after, now + default_cert_expiry - 2s);
    EXPECT_LE(dflt->not_after, now + default_cert_expiry + 2s);
}

TEST(Verify, AcceptsItsCaAndRefusesAnother) {
    auto other = CertificateAuthority::create_root();
    auto node = NodeKey::generate();
    auto cert = shared_ca().issue(node.csr_pem, worker());
    ASSERT_TRUE(cert);
    EXPECT_TRUE(verify_chain(*cert, shared_ca().certificate_pem()));
    auto foreign = verify_chain(*cert, other.certificate_pem());
    ASSERT_FALSE(foreign);
    EXPECT_EQ(foreign.error().code, Errc::permission_denied);
    // A foreign leaf is refused even when the bundle also holds the right root.
    auto foreign_leaf = other.issue(node.csr_pem, worker());
    EXPECT_FALSE(verify_chain(*foreign_leaf, shared_ca().certificate_pem()));
    EXPECT_TRUE(
        verify_chain(*foreign_leaf, shared_ca().certificate_pem() + other.certificate_pem()));
}

TEST(Verify, RefusesExpiredAndNotYetValid) {
    auto cert = shared_ca().issue(NodeKey::generate().csr_pem, worker(), 1h);
    ASSERT_TRUE(cert);
    EXPECT_TRUE(verify_chain(*cert, shared_ca().certificate_pem(), Clock::now() + 50min));
    auto late = verify_chain(*cert, shared_ca().certificate_pem(), Clock::now() + 2h);
    ASSERT_FALSE(late);
    EXPECT_NE(late.error().message.find("expired"), std::string::npos);
    EXPECT_FALSE(verify_chain(*cert, shared_ca().certificate_pem(), Clock::now() - 2h));
}

TEST(Verify, NodeCertificateMustBeOfThisCluster) {
    auto cert = shared_ca().issue(NodeKey::generate().csr_pem, worker());
    auto id = verify_node_certificate(*cert, shared_ca().certificate_pem(), "cluster1");
    ASSERT_TRUE(id);
    EXPECT_EQ(id->node_id, "node1");
    EXPECT_EQ(id->role, Role::worker);
    EXPECT_EQ(id->cluster_id, "cluster1");
    auto other = verify_node_certificate(*cert, shared_ca().certificate_pem(), "cluster2");
    ASSERT_FALSE(other);
    EXPECT_EQ(other.error().code, Errc::permission_denied);
    // The CA certificate itself is not a node.
    EXPECT_FALSE(verify_node_certificate(shared_ca().certificate_pem(),
                                         shared_ca().certificate_pem(), "cluster1"));
}

TEST(Verify, TrustsTwoRootsDuringRotation) {
    const auto& old_root = shared_ca();
    auto fresh = CertificateAuthority::create_root();
    auto cross = old_root.cross_sign(fresh.certificate_pem());
    ASSERT_TRUE(cross) << cross.error().message;
    auto rotating = CertificateAuthority::load(fresh.certificate_pem(), fresh.key_pem(), *cross);
    ASSERT_TRUE(rotating) << rotating.error().message;

    auto chain = rotating->issue(NodeKey::generate().csr_pem, worker());
    ASSERT_TRUE(chain);
    EXPECT_EQ(split_bundle(*chain)->size(), 2u);
    // Nodes that still trust only the old root, both roots, or only the new root all accept it.
    EXPECT_TRUE(verify_chain(*chain, old_root.certificate_pem()));
    EXPECT_TRUE(verify_chain(*chain, fresh.certificate_pem()));
    auto both = old_root.certificate_pem() + fresh.certificate_pem();
    EXPECT_TRUE(verify_chain(*chain, both));
    // Certificates of the old root keep working while both are trusted.
    auto old_leaf = old_root.issue(NodeKey::generate().csr_pem, worker());
    EXPECT_TRUE(verify_chain(*old_leaf, both));
    EXPECT_FALSE(verify_chain(*old_leaf, fresh.certificate_pem()));
    // Without the cross-signed certificate, old-root nodes cannot follow.
    auto bare = fresh.issue(NodeKey::generate().csr_pem, worker());
    EXPECT_FALSE(verify_chain(*bare, old_root.certificate_pem()));
    // A rotation needs a new key.
    EXPECT_FALSE(old_root.cross_sign(old_root.certificate_pem()));
}

TEST(Verify, SplitsBundlesAndRejectsGarbage) {
    auto other = CertificateAuthority::create_root();
    auto parts = split_bundle(shared_ca().certificate_pem() + other.certificate_pem());
    ASSERT_TRUE(parts);
    ASSERT_EQ(parts->size(), 2u);
    EXPECT_EQ((*parts)[0], shared_ca().certificate_pem());
    EXPECT_FALSE(split_bundle(""));
    EXPECT_FALSE(split_bundle("garbage"));
    EXPECT_FALSE(split_bundle(shared_ca().certificate_pem() +
                              "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"));
    EXPECT_FALSE(read_certificate(std::string(100000, 'a')));
}

TEST(Renewal, FallsBetweenHalfAndFourFifthsOfValidity) {
    CertificateInfo info;
    info.not_before = Clock::now();
    info.not_after = info.not_before + 1000h;
    for (int i = 0; i < 100; ++i) {
        auto t = renewal_time(info);
        EXPECT_GE(t, info.not_before + 500h);
        EXPECT_LT(t, info.not_before + 800h);
    }
}
