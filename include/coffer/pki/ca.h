// The cluster's certificate authority: a root (or, during rotation, a new root cross-signed by
// the old one) that issues node certificates from CSRs.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "coffer/base/error.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/pki/certificate.h"

namespace coffer::pki {

inline constexpr std::string_view root_ca_common_name = "coffer-root-ca";
inline constexpr std::chrono::seconds root_ca_validity{20LL * 365 * 24 * 3600};
inline constexpr std::chrono::seconds default_cert_expiry{90LL * 24 * 3600};
inline constexpr std::chrono::seconds min_cert_expiry{3600};
// Half the root's life: a node certificate never outlives the CA that verifies it.
inline constexpr std::chrono::seconds max_cert_expiry{10LL * 365 * 24 * 3600};
inline constexpr std::string_view cert_expiry_range =
    "the certificate expiry must be from 1h to 87600h (10 years)";
inline constexpr std::chrono::seconds cert_backdate{3600};

// Ids that go into certificates: [a-z0-9], 1..64 characters (our ids are 25 base-36 characters).
bool valid_certificate_id(std::string_view id) noexcept;

class CertificateAuthority {
  public:
    // A new self-signed root: ECDSA P-256, CN common_name, valid for `validity` (back-dated 1h).
    static CertificateAuthority create_root(std::string_view common_name = root_ca_common_name,
                                            std::chrono::seconds validity = root_ca_validity);
    // A CA from storage. chain_pem, when not empty, is appended to every issued certificate (the
    // cross-signed certificate of this CA during root rotation). Error when the key does not
    // belong to the certificate or the certificate is not a CA.
    static Result<CertificateAuthority> load(std::string_view cert_pem,
                                             const crypto::SecureBuffer& key_pem,
                                             std::string_view chain_pem = {});

    CertificateAuthority(CertificateAuthority&&) noexcept;
    CertificateAuthority& operator=(CertificateAuthority&&) noexcept;
    ~CertificateAuthority();

    const std::string& certificate_pem() const noexcept;
    const std::string& chain_pem() const noexcept;
    // Base64 DER SubjectPublicKeyInfo of the CA key (compare NodeIdentity::issuer_public_key), and
    // base64 DER of its subject: Docker's TLSInfo CertIssuerPublicKey and CertIssuerSubject.
    std::string public_key() const;
    std::string subject() const;
    // The private key, PKCS#8 PEM, for sealed storage.
    crypto::SecureBuffer key_pem() const;

    // A node certificate for the public key in csr_pem. Everything else the CSR asks for (subject,
    // extensions) is ignored: CN = node id, OU = role, O = cluster id, DNS SAN = [node id], EKU
    // clientAuth only, valid from now - 1h until now + expiry. Whatever the role, the result
    // cannot serve as the manager (see issue_manager_server). Returns the leaf followed by
    // chain_pem(). Errors: invalid_argument for a malformed or badly signed CSR, a key that is
    // not ECDSA P-256, bad ids, or expiry below the minimum ("minimum certificate expiry time is
    // 1h").
    Result<std::string> issue(std::string_view csr_pem, const NodeIdentity& node,
                              std::chrono::seconds expiry = default_cert_expiry) const;

    // The manager's own node-port certificate: CN = manager_id, OU = manager_server_unit, O =
    // cluster id, DNS SAN = [manager_server_name], EKU serverAuth only; otherwise as issue().
    // Only the manager's node port calls this, for a key it made itself; nothing a node sends
    // reaches it.
    Result<std::string> issue_manager_server(
        std::string_view csr_pem, std::string_view manager_id, std::string_view cluster_id,
        std::chrono::seconds expiry = default_cert_expiry) const;

    // A certificate for another CA's key and subject, signed by this CA (root rotation: nodes
    // that trust only this root accept certificates the new root issues, through it). Valid
    // until the earlier of the two CAs' expiries.
    Result<std::string> cross_sign(std::string_view other_ca_cert_pem) const;

  private:
    struct State;
    explicit CertificateAuthority(std::unique_ptr<State> state);
    std::unique_ptr<State> state_;
};

}  // namespace coffer::pki
