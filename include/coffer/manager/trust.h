// The cluster's trust anchor: its root CA, the join tokens (one per role) and the node
// certificate expiry, all sealed in the store's pki table. Created at the first unlock.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "coffer/base/error.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/pki/ca.h"
#include "coffer/pki/certificate.h"
#include "coffer/pki/token.h"

namespace coffer::store {
class Store;
}

namespace coffer::manager {

class ClusterTrust {
public:
    // Loads the CA, tokens and settings, creating them on first use. store: borrowed.
    static Result<std::unique_ptr<ClusterTrust>> load(store::Store& store, std::string cluster_id);

    const std::string& cluster_id() const noexcept { return cluster_id_; }
    // The CA bundle nodes pin (what join tokens carry the digest of).
    std::string ca_bundle() const;
    // The current token of a role, as users type it.
    crypto::SecureBuffer token(pki::Role role) const;
    // The role a presented token grants; permission_denied "A valid join token is necessary to
    // join this cluster" otherwise. Constant time in the secrets.
    Result<pki::Role> check_token(const pki::JoinToken& presented) const;

    std::chrono::seconds cert_expiry() const;
    // Bumped by every change below; the API's Version.Index of the cluster object.
    std::uint64_t version() const;

    // Validated first, then applied in one synchronous write; nothing changes on error.
    struct Update {
        bool rotate_worker_token = false;
        bool rotate_manager_token = false;
        std::optional<std::chrono::seconds> cert_expiry;
    };
    Result<void> update(const Update& u);

    // A node certificate (leaf + chain) for csr_pem, for node_id in role.
    Result<std::string> issue(std::string_view csr_pem, const std::string& node_id,
                              pki::Role role) const;

private:
    ClusterTrust(store::Store& store, std::string cluster_id, pki::CertificateAuthority ca)
        : store_(store), cluster_id_(std::move(cluster_id)), ca_(std::move(ca)) {}

    store::Store& store_;
    const std::string cluster_id_;
    pki::CertificateAuthority ca_;
    mutable std::mutex mutex_;
    std::optional<pki::JoinToken> worker_, manager_;
    std::chrono::seconds expiry_{pki::default_cert_expiry};
    std::uint64_t version_ = 1;
};

}  // namespace coffer::manager
