#include "coffer/manager/trust.h"

#include "coffer/base/log.h"
#include "coffer/crypto/aead.h"
#include "coffer/manager/nodes.h"
#include "coffer/model/json.h"
#include "coffer/nodeconn/forward.h"
#include "coffer/pki/node_key.h"
#include "coffer/store/store.h"

namespace coffer::manager {

namespace json = boost::json;
using store::Table;

namespace {

// ca/cert and ca/key: the CA that issues (during a rotation, the new root). ca/chain: its
// cross-signed certificate and ca/previous: the old root, both only during a rotation.
constexpr std::string_view ca_cert_key = "ca/cert", ca_key_key = "ca/key",
                           ca_chain_key = "ca/chain", ca_previous_key = "ca/previous",
                           settings_key = "settings", worker_key = "token/worker",
                           manager_key = "token/manager", forward_key = "forward";

std::string_view view(const crypto::SecureBuffer& b) {
    return {reinterpret_cast<const char*>(b.data()), b.size()};
}

// A pki value, read with whatever reads the table (the store, or a standby's reader).
template <typename Read>
Result<std::optional<crypto::SecureBuffer>> read_pki(Read&& read, std::string_view key) {
    auto v = read(key);
    if (!v) return std::move(v).error().context(fmt::format("read pki/{}", key));
    return std::move(*v);
}

Result<std::optional<crypto::SecureBuffer>> get(store::Store& s, std::string_view key) {
    return read_pki([&](std::string_view k) { return s.get(Table::pki, k); }, key);
}

// The bundle nodes trust: the old root first, so a node's view of it grows at the end during
// a rotation.
std::string bundle_of(const std::optional<std::string_view>& previous, std::string_view root) {
    std::string out;
    if (previous) out = *previous;
    out += root;
    return out;
}

crypto::SecureBuffer new_forward_key() {
    return crypto::Key::generate(0).bytes;
}

std::vector<std::string> ids_of(const NodeRegistry& nodes) {
    return nodes.read([](const auto& items) {
        std::vector<std::string> ids;
        ids.reserve(items.size());
        for (const auto& [id, node] : items) ids.push_back(id);
        return ids;
    });
}

}  // namespace

Result<std::unique_ptr<ClusterTrust>> ClusterTrust::load(store::Store& store,
                                                         std::string cluster_id) {
    auto cert = get(store, ca_cert_key);
    if (!cert) return std::move(cert).error();
    std::unique_ptr<ClusterTrust> t;
    if (*cert) {
        auto key = get(store, ca_key_key);
        if (!key) return std::move(key).error();
        if (!*key)
            return make_error(Errc::internal, "the CA certificate is stored without its key");
        auto previous = get(store, ca_previous_key);
        if (!previous) return std::move(previous).error();
        auto chain = get(store, ca_chain_key);
        if (!chain) return std::move(chain).error();
        if (previous->has_value() != chain->has_value())
            return make_error(Errc::internal, "the CA rotation record is incomplete");
        auto ca = pki::CertificateAuthority::load(view(**cert), **key,
                                                  *chain ? view(**chain) : std::string_view{});
        if (!ca) return std::move(ca).error().context("load the cluster CA");
        t.reset(new ClusterTrust(store, std::move(cluster_id), std::move(*ca)));
        if (*previous) {
            auto old = pki::read_certificate(view(**previous));
            if (!old || !old->is_ca)
                return make_error(Errc::internal, "pki/ca/previous is corrupt");
            t->previous_root_ = std::string(view(**previous));
            log::info("pki", "a CA rotation is in progress: resuming it");
        }
        auto settings = get(store, settings_key);
        if (!settings) return std::move(settings).error();
        if (*settings) {
            auto v = model::parse_json(view(**settings));
            if (!v || !v->is_object())
                return make_error(Errc::internal, "pki settings record is corrupt");
            const auto& o = v->as_object();
            if (auto* e = o.if_contains("CertExpirySeconds"); e && e->is_number())
                t->expiry_ = std::chrono::seconds(e->to_number<std::int64_t>());
            if (auto* e = o.if_contains("ForceRotate"); e && e->is_number())
                t->force_rotate_ = e->to_number<std::uint64_t>();
            if (auto* e = o.if_contains("Version"); e && e->is_number())
                t->version_ = e->to_number<std::uint64_t>();
            if (auto* e = o.if_contains("TaskHistoryRetentionLimit"); e && e->is_number())
                t->task_history_limit_ = e->to_number<std::int64_t>();
            if (auto* e = o.if_contains("SecretVersionsKept"); e && e->is_number())
                t->secret_versions_kept_ = e->to_number<std::uint64_t>();
        }
        for (auto [key_name, slot] :
             {std::pair{worker_key, &t->worker_}, std::pair{manager_key, &t->manager_}}) {
            auto text = get(store, key_name);
            if (!text) return std::move(text).error();
            if (!*text)
                return make_error(Errc::internal, fmt::format("pki/{} is missing", key_name));
            auto token = pki::JoinToken::parse(view(**text));
            if (!token)
                return make_error(Errc::internal, fmt::format("pki/{} is corrupt", key_name));
            slot->emplace(std::move(*token));
        }
        auto forward = get(store, forward_key);
        if (!forward) return std::move(forward).error();
        if (*forward && (*forward)->size() != crypto::key_bytes)
            return make_error(Errc::internal, "pki/forward is corrupt");
        if (*forward) {
            t->forward_key_ = std::move(**forward);
        } else {
            // A store made before managers forwarded: its key is made now, once.
            t->forward_key_ = new_forward_key();
            store::Batch b;
            b.put(Table::pki, std::string(forward_key), t->forward_key_.clone());
            if (auto w = store.write(std::move(b)); !w)
                return std::move(w).error().context("store the managers' forwarding key");
        }
        return t;
    }

    // First start: a new root CA and one token per role, in one synchronous write.
    auto ca = pki::CertificateAuthority::create_root();
    t.reset(new ClusterTrust(store, std::move(cluster_id), std::move(ca)));
    auto bundle = t->ca_bundle();
    t->worker_.emplace(pki::JoinToken::generate(bundle));
    t->manager_.emplace(pki::JoinToken::generate(bundle));
    store::Batch b;
    b.put(Table::pki, std::string(ca_cert_key), t->ca_.certificate_pem());
    b.put(Table::pki, std::string(ca_key_key), t->ca_.key_pem());
    b.put(Table::pki, std::string(worker_key), t->worker_->text());
    b.put(Table::pki, std::string(manager_key), t->manager_->text());
    b.put(Table::pki, std::string(settings_key), t->settings_json(t->expiry_, 0, t->version_));
    t->forward_key_ = new_forward_key();
    b.put(Table::pki, std::string(forward_key), t->forward_key_.clone());
    if (auto w = store.write(std::move(b)); !w)
        return std::move(w).error().context("create the cluster CA");
    log::info("pki", "created the cluster root CA and join tokens");
    return t;
}

std::string ClusterTrust::settings_json(std::chrono::seconds expiry, std::uint64_t force_rotate,
                                        std::uint64_t version,
                                        std::optional<std::int64_t> history_limit,
                                        std::optional<std::uint64_t> versions_kept) const {
    return json::serialize(
        json::object{{"CertExpirySeconds", expiry.count()},
                     {"ForceRotate", force_rotate},
                     {"Version", version},
                     {"TaskHistoryRetentionLimit", history_limit.value_or(task_history_limit_)},
                     {"SecretVersionsKept", versions_kept.value_or(secret_versions_kept_)}});
}

std::string ClusterTrust::bundle_locked() const {
    return bundle_of(
        previous_root_ ? std::optional<std::string_view>(*previous_root_) : std::nullopt,
        ca_.certificate_pem());
}

std::string ClusterTrust::ca_bundle() const {
    std::lock_guard lock(mutex_);
    return bundle_locked();
}

bool ClusterTrust::check_forward(std::span<const std::uint8_t> binding,
                                 std::string_view proof) const {
    std::lock_guard lock(mutex_);
    return nodeconn::forward_proof_holds(forward_key_, binding, proof);
}

Result<ForwardTrust> ClusterTrust::read_forward_trust(const PkiReader& get) {
    auto value = [&](std::string_view key) { return read_pki(get, key); };
    auto cert = value(ca_cert_key);
    if (!cert) return std::move(cert).error();
    auto previous = value(ca_previous_key);
    if (!previous) return std::move(previous).error();
    auto key = value(forward_key);
    if (!key) return std::move(key).error();
    if (!*cert || !*key || (*key)->size() != crypto::key_bytes)
        return make_error(Errc::unavailable,
                          "the store holds no forwarding key yet: the leading manager makes it "
                          "when it starts");
    ForwardTrust out;
    out.ca_bundle = bundle_of(
        *previous ? std::optional<std::string_view>(view(**previous)) : std::nullopt, view(**cert));
    out.key = std::move(**key);
    return out;
}

TlsInfo ClusterTrust::tls_info() const {
    std::lock_guard lock(mutex_);
    return {bundle_locked(), ca_.subject(), ca_.public_key()};
}

crypto::SecureBuffer ClusterTrust::token(pki::Role role) const {
    std::lock_guard lock(mutex_);
    return (role == pki::Role::manager ? manager_ : worker_)->text();
}

Result<pki::Role> ClusterTrust::check_token(const pki::JoinToken& presented) const {
    std::lock_guard lock(mutex_);
    // Both comparisons always run, so the time taken says nothing about which role matched.
    bool worker = presented.matches(*worker_);
    bool manager = presented.matches(*manager_);
    if (manager) return pki::Role::manager;
    if (worker) return pki::Role::worker;
    return make_error(Errc::permission_denied,
                      "A valid join token is necessary to join this cluster");
}

std::chrono::seconds ClusterTrust::cert_expiry() const {
    std::lock_guard lock(mutex_);
    return expiry_;
}

std::uint64_t ClusterTrust::force_rotate() const {
    std::lock_guard lock(mutex_);
    return force_rotate_;
}

std::int64_t ClusterTrust::task_history_limit() const {
    std::lock_guard lock(mutex_);
    return task_history_limit_;
}

std::uint64_t ClusterTrust::secret_versions_kept() const {
    std::lock_guard lock(mutex_);
    return secret_versions_kept_;
}

std::uint64_t ClusterTrust::version() const {
    std::lock_guard lock(mutex_);
    return version_;
}

std::uint64_t ClusterTrust::ca_version() const {
    std::lock_guard lock(mutex_);
    return ca_version_;
}

Result<void> ClusterTrust::update(const Update& u) {
    if (u.cert_expiry && *u.cert_expiry < pki::min_cert_expiry)
        return make_error(Errc::invalid_argument, "minimum certificate expiry time is 1h");
    if (u.cert_expiry && *u.cert_expiry > pki::max_cert_expiry)
        return make_error(Errc::invalid_argument, std::string(pki::cert_expiry_range));
    bool rotate = false;
    {
        std::unique_lock lock(mutex_);
        rotate = u.force_rotate && *u.force_rotate != force_rotate_;
        if (rotate && previous_root_)
            return make_error(
                Errc::conflict,
                "a CA rotation is already in progress: wait until every node has renewed "
                "(or remove the nodes that cannot)");
        // A new root and its cross-signed certificate, when rotating; the tokens keep their
        // secrets but pin the new bundle.
        std::optional<pki::CertificateAuthority> fresh;
        std::string cross;
        if (rotate) {
            auto root = pki::CertificateAuthority::create_root();
            auto signed_by_old = ca_.cross_sign(root.certificate_pem());
            if (!signed_by_old) return std::move(signed_by_old).error().context("rotate the CA");
            cross = std::move(*signed_by_old);
            auto loaded =
                pki::CertificateAuthority::load(root.certificate_pem(), root.key_pem(), cross);
            if (!loaded) return std::move(loaded).error().context("rotate the CA");
            fresh.emplace(std::move(*loaded));
        }
        auto bundle = rotate ? ca_.certificate_pem() + fresh->certificate_pem() : bundle_locked();
        std::optional<pki::JoinToken> worker, manager;
        worker.emplace(u.rotate_worker_token ? pki::JoinToken::generate(bundle)
                                             : worker_->with_ca(bundle));
        manager.emplace(u.rotate_manager_token ? pki::JoinToken::generate(bundle)
                                               : manager_->with_ca(bundle));
        auto expiry = u.cert_expiry.value_or(expiry_);
        auto force = u.force_rotate.value_or(force_rotate_);
        store::Batch b;
        b.put(Table::pki, std::string(worker_key), worker->text());
        b.put(Table::pki, std::string(manager_key), manager->text());
        // Whoever could make a manager may have been one: the managers' forwarding key goes
        // with the manager token (the standbys read the new one, refused with the old).
        std::optional<crypto::SecureBuffer> forward;
        if (u.rotate_manager_token) {
            forward.emplace(new_forward_key());
            b.put(Table::pki, std::string(forward_key), forward->clone());
        }
        if (rotate) {
            b.put(Table::pki, std::string(ca_previous_key), ca_.certificate_pem());
            b.put(Table::pki, std::string(ca_cert_key), fresh->certificate_pem());
            b.put(Table::pki, std::string(ca_key_key), fresh->key_pem());
            b.put(Table::pki, std::string(ca_chain_key), cross);
        }
        b.put(Table::pki, std::string(settings_key),
              settings_json(expiry, force, version_ + 1, u.task_history_limit,
                            u.secret_versions_kept));
        if (auto w = store_.write(std::move(b)); !w)
            return std::move(w).error().context("update the cluster");
        if (u.task_history_limit) task_history_limit_ = *u.task_history_limit;
        if (u.secret_versions_kept) secret_versions_kept_ = *u.secret_versions_kept;
        worker_ = std::move(worker);
        manager_ = std::move(manager);
        if (forward) forward_key_ = std::move(*forward);
        expiry_ = expiry;
        force_rotate_ = force;
        ++version_;
        if (rotate) {
            previous_root_ = ca_.certificate_pem();
            ca_ = std::move(*fresh);
            ++ca_version_;
        }
    }
    if (rotate) {
        log::info("pki",
                  "CA rotation started: nodes trust the old and the new root until every node "
                  "has renewed");
        notify_ca_changed();
    }
    return {};
}

Result<void> ClusterTrust::rotate_ca() {
    return update(Update{.force_rotate = force_rotate() + 1});
}

bool ClusterTrust::rotation_in_progress() const {
    std::lock_guard lock(mutex_);
    return previous_root_.has_value();
}

Result<std::string> ClusterTrust::issue(std::string_view csr_pem, const std::string& node_id,
                                        pki::Role role) {
    std::lock_guard lock(mutex_);
    pki::NodeIdentity who{node_id, role, cluster_id_, {}, {}, {}};
    auto cert = ca_.issue(csr_pem, who, expiry_);
    if (cert) issuers_[node_id] = ca_.public_key();
    return cert;
}

Result<std::string> ClusterTrust::issue_manager_server(std::string_view csr_pem,
                                                       const std::string& manager_id) {
    std::lock_guard lock(mutex_);
    // Not recorded in issuers_: the manager is not a node, and a rotation waits on nodes only.
    return ca_.issue_manager_server(csr_pem, manager_id, cluster_id_, expiry_);
}

Result<IssuedCertificate> ClusterTrust::renew(std::string_view csr_pem,
                                              const pki::NodeIdentity& presented,
                                              pki::Role current_role) {
    if (presented.cluster_id != cluster_id_)
        return make_error(Errc::permission_denied, "renew: the certificate is for another cluster");
    if (presented.public_key.empty())
        return make_error(Errc::invalid_argument,
                          "renew: the session's certificate was not verified");
    auto requested = pki::csr_public_key(csr_pem);
    if (!requested) return std::move(requested).error().context("renew");
    // Renewal keeps the key: a node that lost its key joins again. A stolen certificate without
    // its key cannot be renewed into one for the thief's key.
    if (*requested != presented.public_key)
        return make_error(
            Errc::permission_denied,
            "renew: the certificate request is not for this node's key (renewal keeps the key)");
    auto cert = issue(csr_pem, presented.node_id, current_role);
    if (!cert) return std::move(cert).error().context("renew");
    log::info("pki", "renewed the certificate of node {} ({})", presented.node_id,
              pki::role_name(current_role));
    return IssuedCertificate{std::move(*cert), ca_bundle()};
}

void ClusterTrust::note_session(const pki::NodeIdentity& presented) {
    if (presented.node_id.empty() || presented.issuer_public_key.empty()) return;
    std::lock_guard lock(mutex_);
    issuers_[presented.node_id] = presented.issuer_public_key;
}

std::optional<std::string> ClusterTrust::node_issuer(const std::string& node_id) const {
    std::lock_guard lock(mutex_);
    auto it = issuers_.find(node_id);
    if (it == issuers_.end()) return std::nullopt;
    return it->second;
}

RotationProgress ClusterTrust::rotation_progress(std::span<const std::string> node_ids) const {
    std::lock_guard lock(mutex_);
    RotationProgress p{previous_root_.has_value(), 0, node_ids.size()};
    auto current = ca_.public_key();
    for (const auto& id : node_ids) {
        auto it = issuers_.find(id);
        if (it != issuers_.end() && it->second == current) ++p.renewed;
    }
    return p;
}

Result<bool> ClusterTrust::finish_rotation_if_renewed(std::span<const std::string> node_ids) {
    {
        std::lock_guard lock(mutex_);
        if (!previous_root_) return false;
        auto current = ca_.public_key();
        for (const auto& id : node_ids) {
            auto it = issuers_.find(id);
            if (it == issuers_.end() || it->second != current) return false;
        }
        auto plain = pki::CertificateAuthority::load(ca_.certificate_pem(), ca_.key_pem());
        if (!plain) return std::move(plain).error().context("finish the CA rotation");
        auto bundle = plain->certificate_pem();
        // As in Swarm, both join tokens get new secrets when the rotation ends: a token shown
        // before the rotation (whose secret and now public digest someone may hold) stops working.
        auto worker = pki::JoinToken::generate(bundle);
        auto manager = pki::JoinToken::generate(bundle);
        store::Batch b;
        b.erase(Table::pki, std::string(ca_previous_key));
        b.erase(Table::pki, std::string(ca_chain_key));
        b.put(Table::pki, std::string(worker_key), worker.text());
        b.put(Table::pki, std::string(manager_key), manager.text());
        b.put(Table::pki, std::string(settings_key),
              settings_json(expiry_, force_rotate_, version_ + 1));
        if (auto w = store_.write(std::move(b)); !w)
            return std::move(w).error().context("finish the CA rotation");
        ca_ = std::move(*plain);
        previous_root_.reset();
        worker_.emplace(std::move(worker));
        manager_.emplace(std::move(manager));
        ++version_;
        ++ca_version_;
    }
    log::info("pki", "CA rotation finished: every node holds a certificate of the new root");
    notify_ca_changed();
    return true;
}

RotationProgress ClusterTrust::rotation_progress(const NodeRegistry& nodes) const {
    auto ids = ids_of(nodes);
    return rotation_progress(ids);
}

Result<bool> ClusterTrust::finish_rotation_if_renewed(const NodeRegistry& nodes) {
    auto ids = ids_of(nodes);
    return finish_rotation_if_renewed(ids);
}

void ClusterTrust::emit_changes(ClusterEvents& events) {
    std::lock_guard lock(mutex_);
    events_ = &events;
}

void ClusterTrust::notify_ca_changed() {
    ClusterEvents* events = nullptr;
    {
        std::lock_guard lock(mutex_);
        events = events_;
    }
    if (events) events->ca_changed();
}

}  // namespace coffer::manager
