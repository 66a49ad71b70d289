#include "coffer/pki/certificate.h"

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <functional>

#include "coffer/crypto/random.h"
#include "ossl.h"

namespace coffer::pki {

std::string_view role_name(Role role) noexcept {
    return role == Role::manager ? "coffer-manager" : "coffer-worker";
}

std::optional<Role> parse_role(std::string_view ou) noexcept {
    if (ou == "coffer-worker") return Role::worker;
    if (ou == "coffer-manager") return Role::manager;
    return std::nullopt;
}

namespace {

// The single entry of field nid in name, or empty when absent or repeated (a certificate naming
// two roles or two clusters names none).
std::string name_field(const X509_NAME* name, int nid) {
    int at = X509_NAME_get_index_by_NID(name, nid, -1);
    if (at < 0 || X509_NAME_get_index_by_NID(name, nid, at) >= 0) return {};
    const ASN1_STRING* s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, at));
    return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                       static_cast<std::size_t>(ASN1_STRING_length(s)));
}

CertificateInfo describe(X509* cert) {
    CertificateInfo info;
    const X509_NAME* subject = X509_get_subject_name(cert);
    info.common_name = name_field(subject, NID_commonName);
    info.organizational_unit = name_field(subject, NID_organizationalUnitName);
    info.organization = name_field(subject, NID_organizationName);
    info.issuer_common_name = name_field(X509_get_issuer_name(cert), NID_commonName);
    std::unique_ptr<BIGNUM, ossl::Deleter<BN_free>> bn(
        ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr));
    if (bn) {
        std::unique_ptr<char, ossl::Deleter<[](char* p) { OPENSSL_free(p); }>> hex(
            BN_bn2hex(bn.get()));
        if (hex) info.serial = hex.get();
    }
    info.not_before = ossl::to_time_point(X509_get0_notBefore(cert));
    info.not_after = ossl::to_time_point(X509_get0_notAfter(cert));
    info.is_ca = X509_check_ca(cert) != 0;
    if (const EVP_PKEY* key = X509_get0_pubkey(cert))
        info.public_key = ossl::public_key_base64(key);
    ERR_clear_error();
    return info;
}

Result<ossl::Stack> read_stack(std::string_view pem) {
    if (pem.size() > ossl::max_pem_bytes)
        return make_error(Errc::too_large, "certificate bundle too large");
    ossl::Stack certs(sk_X509_new_null());
    if (!certs) ossl::fail("allocate certificate list");
    auto bio = ossl::read_bio(pem);
    while (true) {
        ossl::X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
        if (!cert) break;
        if (sk_X509_push(certs.get(), cert.get()) == 0) ossl::fail("grow certificate list");
        cert.release();
    }
    // Reading stops at the end (PEM_R_NO_START_LINE) or at something that is not a certificate.
    unsigned long err = ERR_peek_last_error();
    if (ERR_GET_LIB(err) == ERR_LIB_PEM && ERR_GET_REASON(err) == PEM_R_NO_START_LINE) {
        ERR_clear_error();
    } else if (err != 0) {
        return ossl::error(Errc::invalid_argument, "read certificate bundle");
    }
    if (sk_X509_num(certs.get()) == 0)
        return make_error(Errc::invalid_argument, "no certificate in bundle");
    return certs;
}

}  // namespace

Result<CertificateInfo> read_certificate(std::string_view pem) {
    auto cert = ossl::read_cert(pem);
    if (!cert) return std::move(cert).error();
    return describe(cert->get());
}

Result<std::vector<std::string>> split_bundle(std::string_view pem) {
    auto certs = read_stack(pem);
    if (!certs) return std::move(certs).error();
    std::vector<std::string> out;
    for (int i = 0; i < sk_X509_num(certs->get()); ++i)
        out.push_back(ossl::to_pem(sk_X509_value(certs->get(), i)));
    return out;
}

namespace {

// verify_chain, and for a purpose other than 0 (X509_PURPOSE_SSL_CLIENT, _SSL_SERVER) OpenSSL's
// check that the chain may be used for it (the leaf's EKU, when it has one, must name it). check
// runs on the verified leaf and may refuse it.
Result<CertificateInfo> verify_for(std::string_view chain_pem, std::string_view roots_pem,
                                   Clock::time_point at, int purpose,
                                   const std::function<Result<void>(X509*)>& check = {}) {
    auto chain = read_stack(chain_pem);
    if (!chain) return std::move(chain).error().context("verify certificate");
    auto roots = read_stack(roots_pem);
    if (!roots) return std::move(roots).error().context("verify certificate: trusted roots");

    ossl::Store store(X509_STORE_new());
    if (!store) ossl::fail("allocate certificate store");
    for (int i = 0; i < sk_X509_num(roots->get()); ++i)
        if (X509_STORE_add_cert(store.get(), sk_X509_value(roots->get(), i)) != 1)
            ossl::fail("add trusted root");

    // The leaf is verified; the rest of the chain is offered as untrusted intermediates.
    ossl::X509Ptr leaf(sk_X509_shift(chain->get()));
    ossl::StoreCtx ctx(X509_STORE_CTX_new());
    if (!ctx || X509_STORE_CTX_init(ctx.get(), store.get(), leaf.get(), chain->get()) != 1)
        ossl::fail("initialise certificate verification");
    X509_STORE_CTX_set_time(ctx.get(), 0, Clock::to_time_t(at));
    if (purpose != 0 && X509_STORE_CTX_set_purpose(ctx.get(), purpose) != 1)
        ossl::fail("set certificate purpose");
    if (X509_verify_cert(ctx.get()) != 1) {
        ERR_clear_error();
        return make_error(
            Errc::permission_denied,
            fmt::format("certificate does not verify: {}",
                        X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get()))));
    }
    if (check)
        if (auto r = check(leaf.get()); !r) return std::move(r).error();
    auto info = describe(leaf.get());
    // The chain OpenSSL built: the leaf, then whoever signed it (a root, or a cross-signed root).
    STACK_OF(X509)* built = X509_STORE_CTX_get0_chain(ctx.get());
    if (built != nullptr && sk_X509_num(built) > 1)
        if (const EVP_PKEY* key = X509_get0_pubkey(sk_X509_value(built, 1)))
            info.issuer_public_key = ossl::public_key_base64(key);
    return info;
}

// The manager's identity: serverAuth named explicitly (a certificate without EKU passes
// OpenSSL's purpose check), and the one DNS name only the manager's certificate carries.
Result<void> manager_identity(X509* leaf) {
    auto refused = [] {
        return make_error(Errc::permission_denied, "not the manager's certificate");
    };
    if ((X509_get_extension_flags(leaf) & EXFLAG_XKUSAGE) == 0 ||
        (X509_get_extended_key_usage(leaf) & XKU_SSL_SERVER) == 0)
        return refused();
    if (X509_check_host(leaf, manager_server_name.data(), manager_server_name.size(),
                        X509_CHECK_FLAG_NEVER_CHECK_SUBJECT | X509_CHECK_FLAG_NO_WILDCARDS,
                        nullptr) != 1) {
        ERR_clear_error();
        return refused();
    }
    return {};
}

}  // namespace

Result<CertificateInfo> verify_chain(std::string_view chain_pem, std::string_view roots_pem,
                                     Clock::time_point at) {
    return verify_for(chain_pem, roots_pem, at, 0);
}

Result<NodeIdentity> verify_node_certificate(std::string_view chain_pem, std::string_view roots_pem,
                                             std::string_view cluster_id, Clock::time_point at) {
    auto info = verify_for(chain_pem, roots_pem, at, X509_PURPOSE_SSL_CLIENT);
    if (!info) return std::move(info).error();
    auto role = parse_role(info->organizational_unit);
    if (!role || info->common_name.empty() || info->is_ca)
        return make_error(Errc::permission_denied, "not a node certificate");
    if (info->organization != cluster_id)
        return make_error(Errc::permission_denied, "certificate is for another cluster");
    return NodeIdentity{info->common_name,           *role,
                        info->organization,          info->not_after,
                        std::move(info->public_key), std::move(info->issuer_public_key)};
}

Result<CertificateInfo> verify_manager_certificate(std::string_view chain_pem,
                                                   std::string_view roots_pem,
                                                   std::string_view cluster_id,
                                                   Clock::time_point at) {
    auto info = verify_for(chain_pem, roots_pem, at, X509_PURPOSE_SSL_SERVER, manager_identity);
    if (!info) return std::move(info).error();
    if (info->organizational_unit != manager_server_unit || info->common_name.empty() ||
        info->is_ca)
        return make_error(Errc::permission_denied, "not the manager's certificate");
    if (info->organization != cluster_id)
        return make_error(Errc::permission_denied,
                          "the manager's certificate is for another cluster");
    return info;
}

bool key_matches_certificate(const crypto::SecureBuffer& key_pem, std::string_view cert_pem) {
    auto key = ossl::read_key(key_pem);
    auto cert = ossl::read_cert(cert_pem);
    bool ok = key && cert && X509_check_private_key(cert->get(), key->get()) == 1;
    ERR_clear_error();
    return ok;
}

Clock::time_point renewal_time(const CertificateInfo& cert) {
    auto validity = cert.not_after - cert.not_before;
    std::uint64_t r = 0;
    crypto::random_bytes({reinterpret_cast<std::uint8_t*>(&r), sizeof r});
    // A fraction in [0.5, 0.8), drawn from the CSPRNG.
    double fraction = 0.5 + 0.3 * (static_cast<double>(r >> 11) / static_cast<double>(1ULL << 53));
    return cert.not_before + std::chrono::duration_cast<Clock::duration>(validity * fraction);
}

}  // namespace coffer::pki
