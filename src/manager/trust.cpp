#include "coffer/manager/trust.h"

#include "coffer/base/log.h"
#include "coffer/model/json.h"
#include "coffer/store/store.h"

namespace coffer::manager {

namespace json = boost::json;
using store::Table;

namespace {

constexpr std::string_view ca_cert_key = "ca/cert", ca_key_key = "ca/key", settings_key = "settings",
                           worker_key = "token/worker", manager_key = "token/manager";

std::string_view view(const crypto::SecureBuffer& b) {
    return {reinterpret_cast<const char*>(b.data()), b.size()};
}

Result<std::optional<crypto::SecureBuffer>> get(store::Store& s, std::string_view key) {
    auto v = s.get(Table::pki, key);
    if (!v) return std::move(v).error().context(fmt::format("read pki/{}", key));
    return std::move(*v);
}

}  // namespace

Result<std::unique_ptr<ClusterTrust>> ClusterTrust::load(store::Store& store, std::string cluster_id) {
    auto cert = get(store, ca_cert_key);
    if (!cert) return std::move(cert).error();
    std::unique_ptr<ClusterTrust> t;
    if (*cert) {
        auto key = get(store, ca_key_key);
        if (!key) return std::move(key).error();
        if (!*key) return make_error(Errc::internal, "the CA certificate is stored without its key");
        auto ca = pki::CertificateAuthority::load(view(**cert), **key);
        if (!ca) return std::move(ca).error().context("load the cluster CA");
        t.reset(new ClusterTrust(store, std::move(cluster_id), std::move(*ca)));
        auto settings = get(store, settings_key);
        if (!settings) return std::move(settings).error();
        if (*settings) {
            auto v = model::parse_json(view(**settings));
            if (!v || !v->is_object()) return make_error(Errc::internal, "pki settings record is corrupt");
            const auto& o = v->as_object();
            if (auto* e = o.if_contains("CertExpirySeconds"); e && e->is_number())
                t->expiry_ = std::chrono::seconds(e->to_number<std::int64_t>());
            if (auto* e = o.if_contains("Version"); e && e->is_number())
                t->version_ = e->to_number<std::uint64_t>();
        }
        for (auto [key_name, slot] : {std::pair{worker_key, &t->worker_}, std::pair{manager_key, &t->manager_}}) {
            auto text = get(store, key_name);
            if (!text) return std::move(text).error();
            if (!*text) return make_error(Errc::internal, fmt::format("pki/{} is missing", key_name));
            auto token = pki::JoinToken::parse(view(**text));
            if (!token) return make_error(Errc::internal, fmt::format("pki/{} is corrupt", key_name));
            slot->emplace(std::move(*token));
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
    b.put(Table::pki, std::string(settings_key),
          json::serialize(json::object{{"CertExpirySeconds", t->expiry_.count()}, {"Version", t->version_}}));
    if (auto w = store.write(std::move(b)); !w) return std::move(w).error().context("create the cluster CA");
    log::info("pki", "created the cluster root CA and join tokens");
    return t;
}

std::string ClusterTrust::ca_bundle() const { return ca_.certificate_pem(); }

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
    return make_error(Errc::permission_denied, "A valid join token is necessary to join this cluster");
}

std::chrono::seconds ClusterTrust::cert_expiry() const {
    std::lock_guard lock(mutex_);
    return expiry_;
}

std::uint64_t ClusterTrust::version() const {
    std::lock_guard lock(mutex_);
    return version_;
}

Result<void> ClusterTrust::update(const Update& u) {
    if (u.cert_expiry && *u.cert_expiry < pki::min_cert_expiry)
        return make_error(Errc::invalid_argument, "minimum certificate expiry time is 1h");
    std::lock_guard lock(mutex_);
    auto bundle = ca_bundle();
    std::optional<pki::JoinToken> worker, manager;
    if (u.rotate_worker_token) worker.emplace(pki::JoinToken::generate(bundle));
    if (u.rotate_manager_token) manager.emplace(pki::JoinToken::generate(bundle));
    auto expiry = u.cert_expiry.value_or(expiry_);
    store::Batch b;
    if (worker) b.put(Table::pki, std::string(worker_key), worker->text());
    if (manager) b.put(Table::pki, std::string(manager_key), manager->text());
    b.put(Table::pki, std::string(settings_key),
          json::serialize(json::object{{"CertExpirySeconds", expiry.count()}, {"Version", version_ + 1}}));
    if (auto w = store_.write(std::move(b)); !w) return std::move(w).error().context("update the cluster");
    if (worker) worker_ = std::move(worker);
    if (manager) manager_ = std::move(manager);
    expiry_ = expiry;
    ++version_;
    return {};
}

Result<std::string> ClusterTrust::issue(std::string_view csr_pem, const std::string& node_id,
                                        pki::Role role) const {
    pki::NodeIdentity who{node_id, role, cluster_id_, {}};
    return ca_.issue(csr_pem, who, cert_expiry());
}

}  // namespace coffer::manager
