// The cluster's trust anchor: its root CA, the join tokens (one per role) and the node
// certificate expiry, all sealed in the store's pki table. Created at the first unlock.
//
// Renewal: a node renews over its session with a CSR for the key it already has; the node id
// comes from the session's verified certificate, the role from the caller (the node registry).
//
// CA rotation: rotate_ca() makes a new root, cross-signed by the old one. Until every node holds
// a certificate from the new root, the bundle nodes trust is old + new and new certificates carry
// the cross-signed certificate as their chain, so nodes that still trust only the old root accept
// them. finish_rotation_if_renewed() then drops the old root. The rotation (old root, new CA and
// its chain) is stored with the rest, so a restarted manager resumes it; which root issued each
// node's certificate is learnt again from the sessions the nodes open.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "coffer/base/error.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/manager/events.h"
#include "coffer/pki/ca.h"
#include "coffer/pki/certificate.h"
#include "coffer/pki/token.h"

namespace coffer::store {
class Store;
}

namespace coffer::manager {

class NodeRegistry;

// What a node is sent after a renewal: its certificate (leaf + chain) and the bundle to trust.
struct IssuedCertificate {
    std::string certificate_pem;
    std::string ca_bundle_pem;
};

// Docker's TLSInfo: the bundle, and the subject and key of the CA that issues certificates now
// (base64 DER, as Docker shows them).
struct TlsInfo {
    std::string trust_root;
    std::string cert_issuer_subject;
    std::string cert_issuer_public_key;
};

struct RotationProgress {
    bool in_progress = false;
    std::size_t renewed = 0;  // of the given nodes, those holding a certificate of the new root
    std::size_t total = 0;
};

// What a standby manager needs to forward API requests to the leader (nodeconn/forward.h): the
// CA bundle that verifies the leader's node port, and the managers' forwarding key.
struct ForwardTrust {
    std::string ca_bundle;
    crypto::SecureBuffer key;
};

class ClusterTrust {
  public:
    // A reader of the pki table's values (a standby's, which claims nothing).
    using PkiReader =
        std::function<Result<std::optional<crypto::SecureBuffer>>(std::string_view key)>;
    // What a standby reads to forward: unavailable when the store has no forwarding key yet.
    static Result<ForwardTrust> read_forward_trust(const PkiReader& get);

    // Loads the CA, tokens, settings and any rotation under way, creating them on first use.
    // store: borrowed.
    static Result<std::unique_ptr<ClusterTrust>> load(store::Store& store, std::string cluster_id);

    const std::string& cluster_id() const noexcept { return cluster_id_; }
    // The CA bundle nodes trust and join tokens pin: the root, or during a rotation the old and
    // the new root.
    std::string ca_bundle() const;
    TlsInfo tls_info() const;
    // The current token of a role, as users type it.
    crypto::SecureBuffer token(pki::Role role) const;
    // The role a presented token grants; permission_denied "A valid join token is necessary to
    // join this cluster" otherwise. Constant time in the secrets. The manager token makes a node
    // of role manager (node.role==manager, OU coffer-manager): a node all the same, with a TLS
    // client's certificate and no server identity, no API access and no say over other nodes.
    Result<pki::Role> check_token(const pki::JoinToken& presented) const;
    // Does a standby's proof hold for this binding (nodeconn/forward.h)? Constant time in the
    // proof. The managers' forwarding key is a random 32-byte record of the store (pki/forward),
    // made with the CA, or by the first load of a store made before it existed, and made anew
    // whenever the manager join token is rotated.
    bool check_forward(std::span<const std::uint8_t> binding, std::string_view proof) const;

    std::chrono::seconds cert_expiry() const;
    // Docker's Spec.CAConfig.ForceRotate: a rotation starts when an update changes it.
    std::uint64_t force_rotate() const;
    // Docker's Spec.Orchestration.TaskHistoryRetentionLimit: tasks kept per slot, the live one
    // included; negative keeps them all. 5 unless an update changed it.
    std::int64_t task_history_limit() const;
    // How many of a secret's newest versions are kept (coffer's Spec.CofferSecrets.VersionsKept).
    std::uint64_t secret_versions_kept() const;
    // Bumped by every change below; the API's Version.Index of the cluster object.
    std::uint64_t version() const;

    // Validated first, then applied in one synchronous write; nothing changes on error.
    struct Update {
        bool rotate_worker_token = false;
        bool rotate_manager_token = false;
        std::optional<std::chrono::seconds> cert_expiry;
        // A value other than force_rotate() starts a CA rotation (see rotate_ca).
        std::optional<std::uint64_t> force_rotate;
        std::optional<std::int64_t> task_history_limit;
        std::optional<std::uint64_t> secret_versions_kept;
    };
    Result<void> update(const Update& u);

    // A node certificate (leaf + chain) for csr_pem, for node_id in role (joins, renewals): a TLS
    // client's, whatever the role. Remembers that node_id holds a certificate of the current CA.
    Result<std::string> issue(std::string_view csr_pem, const std::string& node_id, pki::Role role);
    // The manager's own node-port certificate (leaf + chain) for csr_pem, a key the node port
    // made: the server identity agents verify, which issue() never gives.
    Result<std::string> issue_manager_server(std::string_view csr_pem,
                                             const std::string& manager_id);

    // Renewal over a session. presented: the session's verified certificate (Session::peer()),
    // which names the node; current_role: the node's role in the registry now (it may have
    // changed). The CSR must be for the key of the presented certificate: renewal keeps the key
    // (permission_denied otherwise; invalid_argument for a malformed CSR). May block on a
    // synchronous store write during a rotation: call it off the I/O strand.
    Result<IssuedCertificate> renew(std::string_view csr_pem, const pki::NodeIdentity& presented,
                                    pki::Role current_role);

    // A node opened a session with this (verified) certificate: remembers which CA issued it.
    // Cheap, no I/O: may run on the I/O strand.
    void note_session(const pki::NodeIdentity& presented);
    // The CA key (base64 DER) that issued node_id's certificate, as last seen; nullopt if unknown.
    std::optional<std::string> node_issuer(const std::string& node_id) const;

    // Starts a CA rotation: a new root, cross-signed by the current one; bundle = old + new;
    // both join tokens keep their secrets and pin the new bundle. conflict when a rotation is
    // already under way.
    Result<void> rotate_ca();
    bool rotation_in_progress() const;
    // Of node_ids (the registered nodes), how many hold a certificate of the new root.
    RotationProgress rotation_progress(std::span<const std::string> node_ids) const;
    // Ends the rotation when every one of node_ids holds a certificate of the new root: the
    // bundle becomes the new root alone, certificates are issued without the chain, the tokens
    // pin the new bundle. true when it ended now; false when no rotation is under way or a node
    // has not renewed.
    Result<bool> finish_rotation_if_renewed(std::span<const std::string> node_ids);
    // The same over every node in the registry (removed nodes are no longer in it).
    RotationProgress rotation_progress(const NodeRegistry& nodes) const;
    Result<bool> finish_rotation_if_renewed(const NodeRegistry& nodes);

    // Whenever the bundle or the issuing CA changes (a rotation started or finished), emits
    // ClusterEvents::ca_changed into events, on the thread that made the change, after it is
    // stored; the node port then re-issues its own certificate and asks nodes to renew. Set
    // before serving; events is borrowed for the trust's lifetime, and its ca_changed must not
    // call back into rotate_ca or finish_rotation_if_renewed.
    void emit_changes(ClusterEvents& events);
    // Bumped with every such change (in memory only).
    std::uint64_t ca_version() const;

  private:
    ClusterTrust(store::Store& store, std::string cluster_id, pki::CertificateAuthority ca)
        : store_(store), cluster_id_(std::move(cluster_id)), ca_(std::move(ca)) {}

    std::string bundle_locked() const;
    std::string settings_json(std::chrono::seconds expiry, std::uint64_t force_rotate,
                              std::uint64_t version, std::optional<std::int64_t> history_limit = {},
                              std::optional<std::uint64_t> versions_kept = {}) const;
    void notify_ca_changed();

    store::Store& store_;
    const std::string cluster_id_;
    mutable std::mutex mutex_;
    pki::CertificateAuthority ca_;  // issues; during a rotation the new root, with its chain
    std::optional<std::string> previous_root_;  // during a rotation: the old root
    std::optional<pki::JoinToken> worker_, manager_;
    std::chrono::seconds expiry_{pki::default_cert_expiry};
    std::uint64_t force_rotate_ = 0;
    std::int64_t task_history_limit_ = 5;
    std::uint64_t secret_versions_kept_ = 5;
    std::uint64_t version_ = 1;
    std::uint64_t ca_version_ = 1;
    std::unordered_map<std::string, std::string> issuers_;  // node id -> issuer key
    ClusterEvents* events_ = nullptr;                       // under mutex_
    crypto::SecureBuffer forward_key_;  // under mutex_; replaced with the manager token
};

}  // namespace coffer::manager
