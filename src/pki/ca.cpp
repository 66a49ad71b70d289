#include "coffer/pki/ca.h"

#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <algorithm>

#include "ossl.h"

namespace coffer::pki {

using namespace std::chrono_literals;

struct CertificateAuthority::State {
    ossl::X509Ptr cert;
    ossl::Pkey key;
    std::string cert_pem;
    std::string chain_pem;
};

CertificateAuthority::CertificateAuthority(std::unique_ptr<State> state)
    : state_(std::move(state)) {}
CertificateAuthority::CertificateAuthority(CertificateAuthority&&) noexcept = default;
CertificateAuthority& CertificateAuthority::operator=(CertificateAuthority&&) noexcept = default;
CertificateAuthority::~CertificateAuthority() = default;

bool valid_certificate_id(std::string_view id) noexcept {
    return !id.empty() && id.size() <= 64 && std::all_of(id.begin(), id.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    });
}

namespace {

void add_name_entry(X509_NAME* name, const char* field, std::string_view value) {
    if (X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8,
                                   reinterpret_cast<const unsigned char*>(value.data()),
                                   static_cast<int>(value.size()), -1, 0) != 1)
        ossl::fail(fmt::format("set name field {}", field));
}

void sign(X509* cert, EVP_PKEY* key) {
    if (X509_sign(cert, key, EVP_sha256()) == 0) ossl::fail("sign certificate");
}

// Basic constraints, key usage and key identifiers of a CA certificate. issuer may be cert.
void add_ca_extensions(X509* cert, X509* issuer) {
    ossl::add_extension(cert, issuer, NID_basic_constraints, "critical,CA:TRUE");
    ossl::add_extension(cert, issuer, NID_key_usage, "critical,keyCertSign,cRLSign");
    ossl::add_extension(cert, issuer, NID_subject_key_identifier, "hash");
    ossl::add_extension(cert, issuer, NID_authority_key_identifier, "keyid:always");
}

// DNS names built as values, not through OpenSSL's "DNS:a,DNS:b" configuration syntax, so no id
// can smuggle in another name.
void add_dns_names(X509* cert, std::initializer_list<std::string_view> names) {
    std::unique_ptr<GENERAL_NAMES, ossl::Deleter<GENERAL_NAMES_free>> sans(
        sk_GENERAL_NAME_new_null());
    if (!sans) ossl::fail("allocate subject alternative names");
    for (auto n : names) {
        GENERAL_NAME* gn = GENERAL_NAME_new();
        ASN1_IA5STRING* s = ASN1_IA5STRING_new();
        if (gn == nullptr || s == nullptr ||
            ASN1_STRING_set(s, n.data(), static_cast<int>(n.size())) != 1) {
            GENERAL_NAME_free(gn);
            ASN1_IA5STRING_free(s);
            ossl::fail("build DNS name");
        }
        GENERAL_NAME_set0_value(gn, GEN_DNS, s);
        if (sk_GENERAL_NAME_push(sans.get(), gn) == 0) {
            GENERAL_NAME_free(gn);
            ossl::fail("build DNS names");
        }
    }
    if (X509_add1_ext_i2d(cert, NID_subject_alt_name, sans.get(), 0, 0) != 1)
        ossl::fail("add subject alternative names");
}

ossl::X509Ptr new_cert() {
    ossl::X509Ptr cert(X509_new());
    if (!cert || X509_set_version(cert.get(), X509_VERSION_3) != 1)
        ossl::fail("allocate certificate");
    ossl::set_random_serial(cert.get());
    return cert;
}

}  // namespace

CertificateAuthority CertificateAuthority::create_root(std::string_view common_name,
                                                       std::chrono::seconds validity) {
    auto state = std::make_unique<State>();
    state->key = ossl::generate_p256();
    state->cert = new_cert();
    X509* cert = state->cert.get();
    X509_NAME* name = X509_get_subject_name(cert);
    add_name_entry(name, "CN", common_name);
    if (X509_set_issuer_name(cert, name) != 1) ossl::fail("set issuer");
    auto now = Clock::now();
    ossl::set_validity(cert, now - cert_backdate, now + validity);
    if (X509_set_pubkey(cert, state->key.get()) != 1) ossl::fail("set public key");
    add_ca_extensions(cert, cert);
    sign(cert, state->key.get());
    state->cert_pem = ossl::to_pem(cert);
    return CertificateAuthority(std::move(state));
}

Result<CertificateAuthority> CertificateAuthority::load(std::string_view cert_pem,
                                                        const crypto::SecureBuffer& key_pem,
                                                        std::string_view chain_pem) {
    auto state = std::make_unique<State>();
    auto cert = ossl::read_cert(cert_pem);
    if (!cert) return std::move(cert).error().context("load CA");
    auto key = ossl::read_key(key_pem);
    if (!key) return std::move(key).error().context("load CA");
    if (X509_check_ca(cert->get()) == 0)
        return make_error(Errc::invalid_argument, "load CA: certificate is not a CA");
    if (X509_check_private_key(cert->get(), key->get()) != 1)
        return ossl::error(Errc::invalid_argument, "load CA: key does not match certificate");
    if (!chain_pem.empty()) {
        auto chain = split_bundle(chain_pem);
        if (!chain) return std::move(chain).error().context("load CA chain");
        state->chain_pem = std::string(chain_pem);
    }
    state->cert = std::move(*cert);
    state->key = std::move(*key);
    state->cert_pem = ossl::to_pem(state->cert.get());
    return CertificateAuthority(std::move(state));
}

const std::string& CertificateAuthority::certificate_pem() const noexcept {
    return state_->cert_pem;
}
const std::string& CertificateAuthority::chain_pem() const noexcept {
    return state_->chain_pem;
}
std::string CertificateAuthority::public_key() const {
    return ossl::public_key_base64(X509_get0_pubkey(state_->cert.get()));
}

std::string CertificateAuthority::subject() const {
    return ossl::name_base64(X509_get_subject_name(state_->cert.get()));
}

crypto::SecureBuffer CertificateAuthority::key_pem() const {
    return ossl::to_pem(state_->key.get());
}

namespace {

// What a leaf certificate says besides its key; only the two issuing functions below fill it.
struct LeafProfile {
    std::string_view common_name;
    std::string_view unit;
    std::string_view cluster_id;
    const char* extended_key_usage;
    std::string_view dns_name;
};

// A leaf for the key of csr_pem, signed by ca_cert/ca_key, followed by chain_pem.
Result<std::string> issue_leaf(X509* ca_cert, EVP_PKEY* ca_key, const std::string& chain_pem,
                               std::string_view csr_pem, const LeafProfile& profile,
                               std::chrono::seconds expiry) {
    if (expiry < min_cert_expiry)
        return make_error(Errc::invalid_argument, "minimum certificate expiry time is 1h");
    if (expiry > max_cert_expiry)
        return make_error(Errc::invalid_argument, std::string(cert_expiry_range));
    auto req = ossl::read_verified_csr(csr_pem);
    if (!req) return std::move(req).error();
    // Owned by the request.
    EVP_PKEY* pub = X509_REQ_get0_pubkey(req->get());
    if (!ossl::is_p256(pub))
        return make_error(Errc::invalid_argument, "certificate request key must be ECDSA P-256");

    auto cert = new_cert();
    X509* c = cert.get();
    X509_NAME* subject = X509_get_subject_name(c);
    add_name_entry(subject, "O", profile.cluster_id);
    add_name_entry(subject, "OU", profile.unit);
    add_name_entry(subject, "CN", profile.common_name);
    if (X509_set_issuer_name(c, X509_get_subject_name(ca_cert)) != 1) ossl::fail("set issuer");
    auto now = Clock::now();
    ossl::set_validity(c, now - cert_backdate, now + expiry);
    if (X509_set_pubkey(c, pub) != 1) ossl::fail("set public key");
    X509* issuer = ca_cert;
    ossl::add_extension(c, issuer, NID_basic_constraints, "critical,CA:FALSE");
    ossl::add_extension(c, issuer, NID_key_usage, "critical,digitalSignature,keyEncipherment");
    ossl::add_extension(c, issuer, NID_ext_key_usage, profile.extended_key_usage);
    ossl::add_extension(c, issuer, NID_subject_key_identifier, "hash");
    ossl::add_extension(c, issuer, NID_authority_key_identifier, "keyid:always");
    add_dns_names(c, {profile.dns_name});
    sign(c, ca_key);
    return ossl::to_pem(c) + chain_pem;
}

}  // namespace

Result<std::string> CertificateAuthority::issue(std::string_view csr_pem, const NodeIdentity& node,
                                                std::chrono::seconds expiry) const {
    if (!valid_certificate_id(node.node_id))
        return make_error(Errc::invalid_argument, "invalid node id");
    if (!valid_certificate_id(node.cluster_id))
        return make_error(Errc::invalid_argument, "invalid cluster id");
    // A node, of either role, is a TLS client only: its certificate names no server use and not
    // the manager's name, so nothing that verifies the manager can take it for one.
    return issue_leaf(state_->cert.get(), state_->key.get(), state_->chain_pem, csr_pem,
                      {.common_name = node.node_id,
                       .unit = role_name(node.role),
                       .cluster_id = node.cluster_id,
                       .extended_key_usage = "clientAuth",
                       .dns_name = node.node_id},
                      expiry);
}

Result<std::string> CertificateAuthority::issue_manager_server(std::string_view csr_pem,
                                                               std::string_view manager_id,
                                                               std::string_view cluster_id,
                                                               std::chrono::seconds expiry) const {
    if (!valid_certificate_id(manager_id))
        return make_error(Errc::invalid_argument, "invalid manager id");
    if (!valid_certificate_id(cluster_id))
        return make_error(Errc::invalid_argument, "invalid cluster id");
    return issue_leaf(state_->cert.get(), state_->key.get(), state_->chain_pem, csr_pem,
                      {.common_name = manager_id,
                       .unit = manager_server_unit,
                       .cluster_id = cluster_id,
                       .extended_key_usage = "serverAuth",
                       .dns_name = manager_server_name},
                      expiry);
}

Result<std::string> CertificateAuthority::cross_sign(std::string_view other_ca_cert_pem) const {
    auto other = ossl::read_cert(other_ca_cert_pem);
    if (!other) return std::move(other).error().context("cross-sign");
    X509* o = other->get();
    if (X509_check_ca(o) == 0)
        return make_error(Errc::invalid_argument, "cross-sign: certificate is not a CA");
    EVP_PKEY* pub = X509_get0_pubkey(o);
    if (pub == nullptr) return ossl::error(Errc::invalid_argument, "cross-sign: no public key");
    if (EVP_PKEY_eq(pub, X509_get0_pubkey(state_->cert.get())) == 1)
        return make_error(Errc::invalid_argument, "cross-sign: the new CA must have a new key");

    auto cert = new_cert();
    X509* c = cert.get();
    if (X509_set_subject_name(c, X509_get_subject_name(o)) != 1 ||
        X509_set_issuer_name(c, X509_get_subject_name(state_->cert.get())) != 1 ||
        X509_set_pubkey(c, pub) != 1)
        ossl::fail("cross-sign: copy subject");
    auto not_after = std::min(ossl::to_time_point(X509_get0_notAfter(o)),
                              ossl::to_time_point(X509_get0_notAfter(state_->cert.get())));
    ossl::set_validity(c, Clock::now() - cert_backdate, not_after);
    add_ca_extensions(c, state_->cert.get());
    sign(c, state_->key.get());
    return ossl::to_pem(c);
}

}  // namespace coffer::pki
