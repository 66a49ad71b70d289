// Reading and verifying certificates. Input is PEM; chains are the leaf first, then the
// intermediates (a cross-signed root during CA rotation).
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "coffer/base/error.h"
#include "coffer/crypto/secure_buffer.h"

namespace coffer::pki {

// A node's role. It is the OU of the node's certificate and what node.role==manager places on;
// it grants no server identity: every node certificate, whatever its role, is for TLS clients
// only (EKU clientAuth).
enum class Role { worker, manager };

// "coffer-worker" / "coffer-manager": the OU of a node certificate.
std::string_view role_name(Role role) noexcept;
std::optional<Role> parse_role(std::string_view ou) noexcept;

// The manager's own identity on the node port, which the CA never gives a node: OU
// manager_server_unit, the one DNS name manager_server_name, EKU serverAuth alone
// (CertificateAuthority::issue_manager_server). Nodes verify exactly this
// (verify_manager_certificate); no node id can be either (ids have no '-').
inline constexpr std::string_view manager_server_unit = "coffer-manager-server";
inline constexpr std::string_view manager_server_name = "coffer-manager-server";

using Clock = std::chrono::system_clock;

// Who a node certificate names. not_after and the keys are filled in when read from a verified
// certificate (verify_node_certificate).
struct NodeIdentity {
    std::string node_id;
    Role role = Role::worker;
    std::string cluster_id;
    Clock::time_point not_after{};
    // Base64 DER SubjectPublicKeyInfo of the certificate's key (renewal keeps it), and of the CA
    // key that signed it (which root issued it: a cross-signed root has the new root's key).
    std::string public_key{};
    std::string issuer_public_key{};
};

struct CertificateInfo {
    std::string common_name;          // node id for node certificates
    std::string organizational_unit;  // role
    std::string organization;         // cluster id
    std::string issuer_common_name;
    std::string serial;  // hex
    Clock::time_point not_before;
    Clock::time_point not_after;
    bool is_ca = false;
    std::string public_key;  // base64 DER SubjectPublicKeyInfo
    // Filled by verify_chain only: the key of the certificate that signed the leaf.
    std::string issuer_public_key;
};

// The first certificate in pem.
Result<CertificateInfo> read_certificate(std::string_view pem);

// Splits a PEM bundle into its certificates (re-encoded one by one); error when it holds none or
// anything that is not a certificate.
Result<std::vector<std::string>> split_bundle(std::string_view pem);

// Verifies chain_pem (leaf first, intermediates after) against every root in roots_pem, at `at`.
// Two roots may be trusted at once, during CA rotation. Returns what the leaf says; the caller
// checks role and cluster id.
Result<CertificateInfo> verify_chain(std::string_view chain_pem, std::string_view roots_pem,
                                     Clock::time_point at = Clock::now());

// As verify_chain, then requires a node certificate of this cluster with a known role: usable by
// a TLS client (EKU clientAuth when it names any), OU a role, O == cluster_id, CN non-empty, not
// a CA. permission_denied otherwise. The manager's server certificate is not a node certificate.
Result<NodeIdentity> verify_node_certificate(std::string_view chain_pem, std::string_view roots_pem,
                                             std::string_view cluster_id,
                                             Clock::time_point at = Clock::now());

// As verify_chain, then requires the manager's server certificate of this cluster: EKU present
// and naming serverAuth, OU manager_server_unit, DNS name manager_server_name, O == cluster_id,
// CN non-empty, not a CA. permission_denied otherwise: node certificates of any role, and those
// issued before the manager had an identity of its own (OU and DNS name "coffer-manager"), are
// refused.
Result<CertificateInfo> verify_manager_certificate(std::string_view chain_pem,
                                                   std::string_view roots_pem,
                                                   std::string_view cluster_id,
                                                   Clock::time_point at = Clock::now());

// True when key_pem is the private key of the first certificate in cert_pem.
bool key_matches_certificate(const crypto::SecureBuffer& key_pem, std::string_view cert_pem);

// When a node should renew: a uniformly random point between 50% and 80% of the validity, so
// nodes enrolled together do not all come back at once.
Clock::time_point renewal_time(const CertificateInfo& cert);

}  // namespace coffer::pki
