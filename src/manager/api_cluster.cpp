// /info and /swarm: the cluster object, join tokens, certificate expiry, unlock key and data key;
// /cluster/backup.
#include "api_cluster.h"

#include <sys/utsname.h>

#include "api_nodes.h"
#include "coffer/base/log.h"
#include "coffer/manager/cluster.h"
#include "coffer/model/json.h"
#include "coffer/model/secure_json.h"

namespace coffer::manager {

namespace json = boost::json;
using net::Request;
using net::Response;

namespace {

json::string_view view_of(const crypto::SecureBuffer& b) {
    return {reinterpret_cast<const char*>(b.data()), b.size()};
}

// The agents' heartbeat: the manager pings a session after half its idle timeout of quiet.
std::int64_t heartbeat_period_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(node_port_limits().idle_timeout)
               .count() /
           2;
}

// coffer keeps no Raft log (one manager, a RocksDB store): every Raft setting is zero.
json::object raft_spec() {
    return json::object{{"SnapshotInterval", 0},
                        {"LogEntriesForSlowFollowers", 0},
                        {"ElectionTick", 0},
                        {"HeartbeatTick", 0}};
}

json::object tls_info(Cluster& m) {
    auto tls = m.trust().tls_info();
    return json::object{{"TrustRoot", tls.trust_root},
                        {"CertIssuerSubject", tls.cert_issuer_subject},
                        {"CertIssuerPublicKey", tls.cert_issuer_public_key}};
}

// Docker's Spec of the cluster object, as GET /swarm and /info show it and the docker CLI sends
// it back (changed) to POST /swarm/update.
json::object swarm_spec(Cluster& m) {
    auto& trust = m.trust();
    return json::object{
        {"Name", "default"},
        {"Labels", json::object{}},
        {"Orchestration", json::object{{"TaskHistoryRetentionLimit", trust.task_history_limit()}}},
        // coffer's: not in Docker's spec (the docker CLI drops it when it sends the spec back,
        // which leaves the setting as it is).
        {"CofferSecrets", json::object{{"VersionsKept", trust.secret_versions_kept()}}},
        {"Raft", raft_spec()},
        {"Dispatcher", json::object{{"HeartbeatPeriod", heartbeat_period_ns()}}},
        {"CAConfig", json::object{{"NodeCertExpiry", trust.cert_expiry().count() * 1'000'000'000},
                                  {"ForceRotate", trust.force_rotate()}}},
        {"TaskDefaults", json::object{}},
        {"EncryptionConfig", json::object{{"AutoLockManagers", m.autolock()}}}};
}

}  // namespace

Response cluster_info(Cluster& m) {
    // The cluster's identity exists once unlocked (locked() turns false after it is loaded).
    bool locked = m.locked();
    json::object swarm{{"NodeID", ""},
                       {"NodeAddr", ""},
                       {"LocalNodeState", locked ? "locked" : "active"},
                       {"ControlAvailable", !locked},
                       {"Error", ""},
                       {"RemoteManagers", nullptr},
                       {"Nodes", 0},
                       {"Managers", 0},
                       {"Cluster", nullptr}};
    if (!locked) {
        // cofferd's own entry first, then the agents; managers by role, as Docker counts them.
        // The cofferd managers (this one first), then the agents.
        auto entries = manager_entries(m);
        const auto& self = entries.front().node;
        std::size_t nodes = entries.size(), managers = entries.size();
        json::array remote;
        for (const auto& e : entries)
            if (e.reachable)
                remote.push_back(json::object{{"NodeID", e.node.meta.id}, {"Addr", e.addr}});
        for (const auto& n : m.nodes().list()) {
            ++nodes;
            if (n.spec.role == model::NodeRole::manager) ++managers;
        }
        auto created = model::format_rfc3339(m.created());
        swarm["NodeID"] = self.meta.id;
        swarm["NodeAddr"] = self.addr;
        swarm["RemoteManagers"] = std::move(remote);
        swarm["Nodes"] = nodes;
        swarm["Managers"] = managers;
        swarm["Cluster"] =
            json::object{{"ID", m.cluster_id()},
                         {"Version", json::object{{"Index", m.trust().version()}}},
                         {"CreatedAt", created},
                         {"UpdatedAt", created},
                         {"Spec", swarm_spec(m)},
                         {"TLSInfo", tls_info(m)},
                         {"RootRotationInProgress", m.trust().rotation_in_progress()}};
    }
    struct utsname u {};
    ::uname(&u);
    return ok_json(200, json::object{
                            {"Name", hostname()},
                            {"ServerVersion", COFFER_VERSION},
                            {"OSType", "linux"},
                            {"Architecture", u.machine},
                            {"KernelVersion", kernel_version()},
                            {"NCPU", machine_cpus()},
                            {"MemTotal", machine_memory()},
                            {"SecurityOptions", json::array{"name=seccomp,profile=default"}},
                            {"Swarm", std::move(swarm)},
                        });
}

namespace {

Response swarm(Cluster& m) {
    auto& trust = m.trust();
    // A rotation whose last unrenewed node was removed ends here: the node port checks after
    // every renewal, and nothing else would notice.
    if (trust.rotation_in_progress())
        if (auto done = trust.finish_rotation_if_renewed(m.nodes()); !done)
            log::warn("api", "{}", done.error().message);
    auto progress = trust.rotation_progress(m.nodes());
    auto tls = trust.tls_info();
    auto created = model::format_rfc3339(m.created());
    // The join tokens are shown to whoever may use this API, as Docker does: API access is
    // cluster administration. They are secrets: the whole answer is built in secure memory (the
    // nested JoinTokens too: a braced list, not a json::object on the ordinary heap) and sent
    // from there.
    auto worker = trust.token(pki::Role::worker);
    auto manager = trust.token(pki::Role::manager);
    return ok_secure_json(
        200,
        json::object(
            {
                {"ID", m.cluster_id()},
                {"Version", json::object{{"Index", trust.version()}}},
                {"CreatedAt", created},
                {"UpdatedAt", created},
                {"Spec", swarm_spec(m)},
                {"TLSInfo", json::object{{"TrustRoot", tls.trust_root},
                                         {"CertIssuerSubject", tls.cert_issuer_subject},
                                         {"CertIssuerPublicKey", tls.cert_issuer_public_key}}},
                {"RootRotationInProgress", progress.in_progress},
                // coffer's own: how far a CA rotation has got (`coffer cluster ca --rotate`).
                {"RootRotation", json::object{{"InProgress", progress.in_progress},
                                              {"NodesRenewed", progress.renewed},
                                              {"NodesTotal", progress.total}}},
                {"JoinTokens", {{"Worker", view_of(worker)}, {"Manager", view_of(manager)}}},
                {"DataEncryptionKey",
                 json::object{{"ID", m.dek_id()}, {"RotationPending", m.dek_rotation_pending()}}},
            },
            model::secure_storage()));
}

const json::value* member(const json::object& o, std::initializer_list<std::string_view> path) {
    const json::value* cur = nullptr;
    const json::object* obj = &o;
    for (auto p : path) {
        if (obj == nullptr) return nullptr;
        cur = obj->if_contains(p);
        if (cur == nullptr) return nullptr;
        obj = cur->if_object();
    }
    return cur;
}

// The parts of the cluster spec coffer has no setting for: accepted only as GET /swarm shows
// them (the docker CLI sends the whole spec back), refused with the field named otherwise.
Result<void> check_fixed_fields(const json::object& o) {
    auto refuse = [](std::string_view field, std::string_view why) {
        return make_error(Errc::invalid_argument, fmt::format("{} cannot be set: {}", field, why));
    };
    if (auto* n = o.if_contains("Name");
        n && !n->is_null() &&
        !(n->is_string() && (n->as_string().empty() || n->as_string() == "default")))
        return refuse("Name", "the cluster is named \"default\"");
    if (auto* l = o.if_contains("Labels");
        l && !l->is_null() && !(l->is_object() && l->as_object().empty()))
        return refuse("Labels", "coffer keeps no labels on the cluster");
    auto zero = [](const json::value* v) {
        return v == nullptr || v->is_null() || (v->is_int64() && v->as_int64() == 0) ||
               (v->is_uint64() && v->as_uint64() == 0);
    };
    for (auto field : {"SnapshotInterval", "KeepOldSnapshots", "LogEntriesForSlowFollowers",
                       "ElectionTick", "HeartbeatTick"})
        if (!zero(member(o, {"Raft", field})))
            return refuse(fmt::format("Raft.{}", field),
                          "coffer has one manager and no Raft log (its store is RocksDB)");
    if (auto* h = member(o, {"Dispatcher", "HeartbeatPeriod"});
        !zero(h) &&
        !(h->is_number() && h->to_number<double>() == static_cast<double>(heartbeat_period_ns())))
        return refuse("Dispatcher.HeartbeatPeriod",
                      fmt::format("the manager pings every node session after {} of quiet and "
                                  "closes it after {}",
                                  model::format_go_duration(heartbeat_period_ns()),
                                  model::format_go_duration(2 * heartbeat_period_ns())));
    if (auto* d = member(o, {"TaskDefaults", "LogDriver"}); d && !d->is_null())
        return refuse("TaskDefaults.LogDriver",
                      "coffer has no log drivers: agents keep each task's output for "
                      "`service logs`");
    return {};
}

// POST /swarm/update: everything is checked before anything changes.
Response swarm_update(Cluster& m, const Request& r) {
    auto version = version_param(r, "swarm");
    if (!version) return Response::error(version.error());
    if (*version != m.trust().version()) return fail(Errc::conflict, "update out of sequence");
    auto flag = [&](std::string_view name) {
        return r.param(name) == "true" || r.param(name) == "1";
    };
    ClusterTrust::Update update;
    update.rotate_worker_token = flag("rotateWorkerToken");
    update.rotate_manager_token = flag("rotateManagerToken");
    bool rotate_unlock = flag("rotateManagerUnlockKey");
    if (!r.body.empty()) {
        auto body = parse_body(r);
        if (!body) return Response::error(body.error());
        const auto& o = body->value().as_object();
        if (auto* al = member(o, {"EncryptionConfig", "AutoLockManagers"})) {
            if (!al->is_bool())
                return fail(Errc::invalid_argument, "AutoLockManagers must be a boolean");
            if (al->as_bool() != m.autolock())
                return fail(
                    Errc::invalid_argument,
                    "autolock is chosen when the cluster is created (cofferd --autolock) and "
                    "cannot be changed yet");
        }
        if (auto* e = member(o, {"CAConfig", "NodeCertExpiry"}); e && !e->is_null()) {
            if (!e->is_number())
                return fail(Errc::invalid_argument, "NodeCertExpiry must be a number");
            std::int64_t ns = 0;
            try {
                ns = e->to_number<std::int64_t>();
            } catch (...) {
                return fail(Errc::invalid_argument,
                            "NodeCertExpiry must be a whole number of nanoseconds");
            }
            if (ns != 0) update.cert_expiry = std::chrono::seconds(ns / 1'000'000'000);
        }
        // What `docker swarm ca --rotate` sends: the spec with ForceRotate incremented.
        if (auto* f = member(o, {"CAConfig", "ForceRotate"}); f && !f->is_null()) {
            if (!f->is_uint64() && !(f->is_int64() && f->as_int64() >= 0))
                return fail(Errc::invalid_argument,
                            "ForceRotate must be a non-negative whole number");
            update.force_rotate =
                f->is_uint64() ? f->as_uint64() : static_cast<std::uint64_t>(f->as_int64());
        }
        if (auto* ext = member(o, {"CAConfig", "ExternalCAs"});
            ext && ext->is_array() && !ext->as_array().empty())
            return fail(Errc::invalid_argument, "external CAs are not supported");
        if (auto* c = member(o, {"CAConfig", "SigningCACert"});
            c && c->is_string() && !c->as_string().empty())
            return fail(
                Errc::invalid_argument,
                "a supplied CA certificate is not supported: coffer generates the new root");
        if (auto* c = member(o, {"CAConfig", "SigningCAKey"});
            c && c->is_string() && !c->as_string().empty())
            return fail(Errc::invalid_argument,
                        "a supplied CA key is not supported: coffer generates the new root");
        if (auto checked = check_fixed_fields(o); !checked) return Response::error(checked.error());
        if (auto* h = member(o, {"Orchestration", "TaskHistoryRetentionLimit"});
            h && !h->is_null()) {
            if (!h->is_int64())
                return fail(Errc::invalid_argument,
                            "Orchestration.TaskHistoryRetentionLimit must be a whole number");
            if (h->as_int64() > 1'000'000)
                return fail(Errc::invalid_argument,
                            "Orchestration.TaskHistoryRetentionLimit is too large (at most "
                            "1000000)");
            update.task_history_limit = h->to_number<std::int64_t>();
        }
        if (auto* cs = o.if_contains("CofferSecrets"); cs && !cs->is_null()) {
            if (!cs->is_object())
                return fail(Errc::invalid_argument, "CofferSecrets must be an object");
            for (const auto& [key, value] : cs->as_object()) {
                if (key != "VersionsKept")
                    return fail(Errc::invalid_argument,
                                fmt::format("CofferSecrets.{} is not a setting (known: "
                                            "VersionsKept)",
                                            std::string_view(key)));
                if (!value.is_int64() || value.as_int64() < 1 ||
                    static_cast<std::uint64_t>(value.as_int64()) > model::max_secret_versions_kept)
                    return fail(Errc::invalid_argument,
                                fmt::format("CofferSecrets.VersionsKept must be a whole number "
                                            "from 1 to {}",
                                            model::max_secret_versions_kept));
                update.secret_versions_kept = value.as_int64();
            }
        }
    }
    if (rotate_unlock && !m.autolock())
        return fail(Errc::invalid_argument,
                    "autolock is not enabled: there is no unlock key to rotate");
    if (update.cert_expiry && *update.cert_expiry < pki::min_cert_expiry)
        return fail(Errc::invalid_argument, "minimum certificate expiry time is 1h");
    if (update.cert_expiry && *update.cert_expiry > pki::max_cert_expiry)
        return fail(Errc::invalid_argument, std::string(pki::cert_expiry_range));

    bool rotating = update.force_rotate && *update.force_rotate != m.trust().force_rotate();
    if (auto res = m.trust().update(update); !res) return Response::error(res.error());
    if (update.task_history_limit) {
        m.orchestrator().set_task_history_limit(*update.task_history_limit);
        log::info("api", "task history retention limit set to {}", *update.task_history_limit);
    }
    if (update.secret_versions_kept) {
        log::info("api", "secret versions kept set to {}", *update.secret_versions_kept);
        if (auto* secrets = m.secrets()) secrets->prune_all();
    }
    if (rotating) log::info("api", "CA rotation started");
    if (update.rotate_worker_token) log::info("api", "worker join token rotated");
    if (update.rotate_manager_token) log::info("api", "manager join token rotated");
    if (rotate_unlock) {
        auto key = m.rotate_unlock_key();
        if (!key) return Response::error(key.error());
        log::info("api", "unlock key rotated");
    }
    return Response::empty(200);
}

// GET /cluster/backup: the whole store as of one moment, still sealed (store/backup.h). The
// records are already sealed, so the file's bytes may sit on the ordinary heap.
Response backup(Cluster& m, const Request& r) {
    std::string file;
    auto stats = m.store().backup([&file](std::span<const std::uint8_t> bytes) -> Result<void> {
        file.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
        return {};
    });
    if (!stats) return Response::error(std::move(stats).error().context("backup"));
    log::info("api", "backup taken by {}: {} records, {} bytes",
              r.peer ? fmt::format("uid {} (pid {})", r.peer->uid, r.peer->pid)
                     : std::string("unknown peer"),
              stats->records, stats->bytes);
    auto resp = Response::json(200, std::move(file));
    resp.content_type = "application/octet-stream";
    resp.headers.emplace_back("X-Coffer-Backup-Records", std::to_string(stats->records));
    return resp;
}

}  // namespace

std::optional<Response> cluster_routes(Cluster& m, const Request& r, const Segments& seg) {
    const auto& method = r.method;
    if (seg.size() == 1 && seg[0] == "info" && method == "GET") return cluster_info(m);
    if (seg.size() == 2 && seg[0] == "cluster" && seg[1] == "backup" && method == "GET")
        return backup(m, r);
    if (seg.empty() || seg[0] != "swarm") return std::nullopt;
    if (seg.size() == 1 && method == "GET") return swarm(m);
    if (seg.size() != 2) return std::nullopt;
    if (seg[1] == "unlockkey" && method == "GET") {
        auto key = m.unlock_key();
        // Shown to the operator who asks for it, as Docker does; it never enters logs, and the
        // answer stays in secure memory up to the socket.
        return ok_secure_json(
            200, json::object({{"UnlockKey", key ? view_of(*key) : json::string_view()}},
                              model::secure_storage()));
    }
    if (seg[1] == "update" && method == "POST") return swarm_update(m, r);
    if (seg[1] == "rotate-dek" && method == "POST") {
        auto res = m.rotate_dek();
        if (!res) return Response::error(res.error());
        log::info("api", "data encryption key rotated to {}", m.dek_id());
        return ok_json(
            200, json::object{{"ID", m.dek_id()}, {"RotationPending", m.dek_rotation_pending()}});
    }
    return std::nullopt;
}

}  // namespace coffer::manager
