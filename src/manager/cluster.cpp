#include "coffer/manager/cluster.h"

#include <fmt/ranges.h>

#include "coffer/base/log.h"
#include "coffer/crypto/encoding.h"
#include "coffer/crypto/random.h"
#include "coffer/manager/api.h"
#include "coffer/model/json.h"
#include "coffer/store/store.h"

namespace coffer::manager {

namespace json = boost::json;

Cluster::Cluster(ClusterOptions options) : options_(std::move(options)) {}

Result<Cluster::Opened> Cluster::open(ClusterOptions options) {
    auto opened = store::Store::open({.dir = options.data_dir,
                                      .etcd = options.etcd,
                                      .autolock = options.autolock,
                                      .hand_over_unlock_key = options.hand_over_unlock_key});
    if (!opened) return std::move(opened).error().context("open store");
    std::unique_ptr<Cluster> c(new Cluster(std::move(options)));
    c->store_ = std::move(opened->store);
    c->committer_ = std::make_unique<Committer>(*c->store_);
    c->api_ = std::make_unique<Api>(*c);
    if (!c->store_->locked()) {
        if (auto r = c->load(); !r) return std::move(r).error();
        if (c->options_.node_port) {
            std::lock_guard lock(c->port_start_mutex_);
            if (auto r = c->start_node_port_locked(*c->options_.node_port); !r)
                return std::move(r).error();
        }
    }
    return Opened{std::move(c), std::move(opened->new_unlock_key)};
}

Cluster::~Cluster() {
    {
        std::lock_guard l(managers_mutex_);
        managers_stopping_ = true;
    }
    managers_cv_.notify_all();
    if (managers_thread_.joinable()) managers_thread_.join();
    // In reverse of construction (see cluster.h).
    api_.reset();
    stop_node_port();
    if (orchestrator_) orchestrator_->stop();
    orchestrator_.reset();
    dispatcher_.reset();
    // The committer answers its last requests while the registries still exist.
    committer_.reset();
    deliveries_.reset();
    secrets_.store(nullptr);
    nodes_.reset();
    tasks_.reset();
    services_.reset();
    networks_.reset();
    configs_.reset();
    secrets_owner_.reset();
    trust_.reset();
    store_.reset();
}

Result<void> Cluster::load() {
    // The cluster record: created on first start, sealed like every other record.
    auto rec = store_->get(store::Table::meta, "cluster");
    if (!rec) return std::move(rec).error().context("read cluster record");
    if (*rec) {
        std::string_view text(reinterpret_cast<const char*>((*rec)->data()), (*rec)->size());
        auto v = model::parse_json(text);
        if (!v || !v->is_object()) return make_error(Errc::internal, "cluster record is corrupt");
        auto id = model::string_field(v->as_object(), "ID");
        auto created = model::string_field(v->as_object(), "CreatedAt");
        auto t = created ? model::parse_rfc3339(*created) : std::nullopt;
        if (!id || !t) return make_error(Errc::internal, "cluster record is corrupt");
        cluster_id_ = *id;
        created_ = *t;
    } else {
        cluster_id_ = crypto::random_id();
        created_ = model::Timestamp::now();
        store::Batch b;
        b.put(store::Table::meta, "cluster",
              json::serialize(json::object{{"ID", cluster_id_},
                                           {"CreatedAt", model::format_rfc3339(created_)}}));
        if (auto w = store_->write(std::move(b)); !w)
            return std::move(w).error().context("init cluster");
        log::info("manager", "new cluster {}", cluster_id_);
    }
    manager_node_id_ = options_.etcd && !options_.etcd->advertise.empty()
                           ? manager_id_for(options_.etcd->advertise)
                           : crypto::derived_id("coffer manager node", cluster_id_);
    auto trust = ClusterTrust::load(*store_, cluster_id_);
    if (!trust) return std::move(trust).error();
    trust_ = std::move(*trust);
    trust_->emit_changes(*this);
    auto secrets = SecretRegistry::load(*store_, *committer_, counter_);
    if (!secrets) return std::move(secrets).error();
    secrets_owner_ = std::move(*secrets);
    auto configs = ConfigRegistry::load(*store_, *committer_, counter_);
    if (!configs) return std::move(configs).error();
    configs_ = std::move(*configs);
    auto networks = NetworkRegistry::load(*store_, counter_);
    if (!networks) return std::move(networks).error();
    networks_ = std::move(*networks);
    auto services = ServiceRegistry::load(*store_, counter_, *secrets_owner_, *configs_);
    if (!services) return std::move(services).error();
    services_ = std::move(*services);
    networks_->set_users([s = services_.get()](const std::string& id) {
        std::vector<std::pair<std::string, std::string>> users;
        for (const auto& svc : s->list())
            for (const auto& n : model::service_networks(svc.spec))
                if (n.target == id) users.emplace_back(svc.meta.id, svc.spec.name);
        return users;
    });
    auto tasks = TaskRegistry::load(*store_, counter_);
    if (!tasks) return std::move(tasks).error();
    tasks_ = std::move(*tasks);
    auto nodes = NodeRegistry::load(*store_, counter_);
    if (!nodes) return std::move(nodes).error();
    nodes_ = std::move(*nodes);
    auto deliveries = DeliveryLog::load(*store_, *committer_);
    if (!deliveries) return std::move(deliveries).error();
    deliveries_ = std::move(*deliveries);
    dispatcher_ = std::make_unique<Dispatcher>(*tasks_, *nodes_, *secrets_owner_, *configs_);
    dispatcher_->set_networks(services_.get(), networks_.get());
    dispatcher_->set_deliveries(deliveries_.get());
    orchestrator_ = std::make_unique<Orchestrator>(*services_, *tasks_, *nodes_);
    orchestrator_->set_task_history_limit(trust_->task_history_limit());
    orchestrator_->set_networks(networks_.get());
    // Secret versions: tasks take the current one (or their pin); the versions beyond those
    // kept are wiped once no task or pin holds them, after the orchestrator's passes.
    secrets_owner_->set_versions_kept([t = trust_.get()] { return t->secret_versions_kept(); });
    secrets_owner_->set_holders([this](const std::string& id, bool running_only) {
        return secret_holders(id, running_only);
    });
    orchestrator_->set_secret_versions(
        [s = secrets_owner_.get()](const std::string& id) { return s->current_version(id); });
    orchestrator_->set_after_pass([this] {
        secrets_owner_->prune_all();
        // A task that ended without its node saying so (a lost node) holds nothing any more.
        tasks_->read([&](const TaskRegistry::Map& items) {
            deliveries_->close_ended(items, model::Timestamp::now());
            return 0;
        });
    });
    services_->emit_changes(*this, &ClusterEvents::services_changed);
    tasks_->emit_changes(*this, &ClusterEvents::tasks_changed);
    nodes_->emit_changes(*this, &ClusterEvents::nodes_changed);
    networks_->emit_changes(*this, &ClusterEvents::networks_changed);
    orchestrator_->start();
    if (options_.etcd) managers_thread_ = std::thread([this] { watch_managers(); });
    secrets_.store(secrets_owner_.get());
    return {};
}

bool Cluster::autolock() const {
    return store_->autolock();
}

Result<void> Cluster::unlock(std::string_view key) {
    {
        std::lock_guard lock(unlock_mutex_);
        if (!locked()) return make_error(Errc::conflict, "coffer is not locked");
        if (auto r = store_->unlock(key); !r) return r;
        if (auto r = load(); !r) return r;
    }
    // The unlock has succeeded whatever the node port does: a port that cannot start is logged.
    std::lock_guard lock(port_start_mutex_);
    if (options_.node_port && !port_stopped_ && !node_port_)
        if (auto r = start_node_port_locked(*options_.node_port); !r)
            log::error("manager", "node port: {}", r.error().message);
    return {};
}

std::optional<crypto::SecureBuffer> Cluster::unlock_key() const {
    return store_->unlock_key();
}

Result<crypto::SecureBuffer> Cluster::rotate_unlock_key() {
    std::lock_guard lock(unlock_mutex_);
    return store_->rotate_unlock_key();
}

Result<void> Cluster::rotate_dek() {
    return store_->rotate_dek();
}
std::uint32_t Cluster::dek_id() const {
    return store_->current_dek_id();
}
bool Cluster::dek_rotation_pending() const {
    return store_->rotation_pending();
}

// ---- node port ------------------------------------------------------------------------------

std::string Cluster::manager_id_for(std::string_view addr) const {
    return crypto::derived_id("coffer manager node", cluster_id_ + "@" + std::string(addr));
}

Result<std::vector<Cluster::Manager>> Cluster::managers() {
    std::vector<Manager> out;
    auto self_addr = options_.etcd ? options_.etcd->advertise : std::string();
    out.push_back({manager_node_id_, self_addr, {}, true, true, true});
    if (!options_.etcd) return out;
    auto all = store_->managers();
    if (!all) return std::move(all).error();
    for (auto& m : *all) {
        if (m.addr == self_addr) continue;
        // This one serves the API and so holds the store: another that says it leads is one
        // whose lease etcd has not ended yet.
        out.push_back(
            {manager_id_for(m.addr), m.addr, std::move(m.host), false, false, m.reachable});
    }
    return out;
}

Result<void> Cluster::forget_manager(const std::string& addr) {
    if (options_.etcd && addr == options_.etcd->advertise)
        return make_error(Errc::invalid_argument, "this manager cannot forget itself");
    return store_->forget_manager(addr);
}

void Cluster::watch_managers() {
    std::optional<crypto::SecureBuffer> published;  // the manager token the join record is for
    std::unique_lock l(managers_mutex_);
    do {
        l.unlock();
        // Another manager may lead now: this one's node sessions would see state it can no
        // longer change. They end, and the agents move to the leader.
        if (auto w = store_->writable(); !w) {
            if (node_port_address().empty()) return;
            log::error("manager",
                       "{}: closing the node port, the nodes move to the manager that "
                       "leads now",
                       w.error().message);
            stop_node_port();
            return;
        }
        // A manager joining with the manager token reads what it needs from etcd: published
        // again when the token changes (rotated, or a CA rotation changed its digest).
        auto token = trust_->token(pki::Role::manager);
        if (!published || !published->equals(token.span())) {
            if (auto r = store_->publish_manager_join(token); r)
                published = std::move(token);
            else
                log::warn("manager", "publish the manager join record: {}", r.error().message);
        }
        auto all = managers();
        std::vector<std::string> addrs;
        if (all) {
            for (const auto& m : *all)
                if (m.reachable && !m.addr.empty()) addrs.push_back(m.addr);
            // The port keeps the last list and sends it to every node when it changes, and to
            // each node whose session opens (a port started since the last pass gets it here).
            with_port([&](NodePort& port) { port.set_managers(addrs); });
        } else {
            log::debug("manager", "read the managers: {}", all.error().message);
        }
        l.lock();
        if (all && addrs != manager_addrs_) {
            log::info("manager", "managers reachable: {}", fmt::join(addrs, ", "));
            manager_addrs_ = std::move(addrs);
        }
    } while (
        !managers_cv_.wait_for(l, std::chrono::seconds(1), [&] { return managers_stopping_; }));
}

Result<void> Cluster::start_node_port(NodePortOptions options) {
    std::lock_guard lock(port_start_mutex_);
    return start_node_port_locked(std::move(options));
}

Result<void> Cluster::start_node_port_locked(NodePortOptions options) {
    if (locked()) return make_error(Errc::locked, "the node port needs an unlocked manager");
    if (node_port_) return make_error(Errc::conflict, "the node port is already running");
    auto address = options.address;
    // Managers on one store on etcd: the standbys forward their API requests here.
    if (options_.etcd && options.forward == nullptr) options.forward = api_.get();
    auto port = NodePort::start({*trust_, *nodes_, *dispatcher_}, std::move(options));
    if (!port) return std::move(port).error();
    log::info("manager", "node port on {}:{}", address, (*port)->port());
    node_port_address_ = fmt::format("{}:{}", address, (*port)->port());
    node_port_ = std::move(*port);
    port_stopped_ = false;
    {
        std::lock_guard lock(port_mutex_);
        port_ = node_port_.get();
    }
    // Changes made while it was starting reached no session.
    node_port_->assignments_changed();
    return {};
}

void Cluster::stop_node_port() {
    std::lock_guard lock(port_start_mutex_);
    port_stopped_ = true;
    detach_port();
    node_port_.reset();
    node_port_address_.clear();
}

std::string Cluster::node_port_address() const {
    std::lock_guard lock(port_start_mutex_);
    return node_port_address_;
}

NodePort* Cluster::node_port() const {
    std::lock_guard lock(port_start_mutex_);
    return node_port_.get();
}

void Cluster::set_node_transport(NodeTransport* t) {
    std::unique_lock lock(port_mutex_);
    test_transport_ = t;
    // The one replaced may go once no call is under way.
    port_idle_.wait(lock, [&] { return port_calls_ == 0; });
}

void Cluster::detach_port() {
    std::unique_lock lock(port_mutex_);
    port_ = nullptr;
    port_idle_.wait(lock, [&] { return port_calls_ == 0; });
}

namespace {

// Counts a call to the node port as under way for its scope.
class PortCall {
  public:
    PortCall(std::mutex& m, std::condition_variable& idle, std::size_t& calls)
        : m_(m), idle_(idle), calls_(calls) {}
    ~PortCall() {
        {
            std::lock_guard lock(m_);
            --calls_;
        }
        idle_.notify_all();
    }
    PortCall(const PortCall&) = delete;
    PortCall& operator=(const PortCall&) = delete;

  private:
    std::mutex& m_;
    std::condition_variable& idle_;
    std::size_t& calls_;
};

}  // namespace

template <typename Fn>
bool Cluster::with_port(Fn&& fn) {
    NodePort* port = nullptr;
    {
        std::lock_guard lock(port_mutex_);
        if (port_ == nullptr) return false;
        port = port_;
        ++port_calls_;
    }
    PortCall call(port_mutex_, port_idle_, port_calls_);
    fn(*port);
    return true;
}

template <typename Fn>
bool Cluster::with_transport(Fn&& fn) {
    NodeTransport* transport = nullptr;
    {
        std::lock_guard lock(port_mutex_);
        transport = test_transport_ != nullptr ? test_transport_ : port_;
        if (transport == nullptr) return false;
        ++port_calls_;
    }
    PortCall call(port_mutex_, port_idle_, port_calls_);
    fn(*transport);
    return true;
}

std::map<std::uint64_t, std::size_t> Cluster::secret_holders(const std::string& id,
                                                             bool running_only) const {
    std::map<std::uint64_t, std::size_t> held;
    for (const auto& s : services_->list())
        for (const auto& ref : s.spec.task.container.secrets)
            if (ref.secret_id == id && ref.pinned_version) held[ref.pinned_version] += 0;
    tasks_->read([&](const TaskRegistry::Map& items) {
        for (const auto& [tid, t] : items) {
            // A task holds its versions until it has ended on its node (its mount is gone).
            bool holds = running_only ? t.desired == model::TaskState::running
                                      : !model::is_terminal(t.status.state);
            if (!holds) continue;
            const auto& refs = t.spec.container.secrets;
            std::set<std::uint64_t> versions;
            for (std::size_t i = 0; i < refs.size(); ++i)
                if (refs[i].secret_id == id) versions.insert(t.secret_version(i));
            // The registry credentials a task pulls with, until it has ended.
            if (const auto& auth = t.spec.container.registry_auth;
                auth && auth->secret_id == id && t.registry_auth_version != 0)
                versions.insert(t.registry_auth_version);
            for (auto v : versions) ++held[v];
        }
        return 0;
    });
    return held;
}

// ---- events -----------------------------------------------------------------------------------

void Cluster::services_changed() {
    orchestrator_->wake();
    // A service's VIPs, aliases and ports are in the nodes' networks messages.
    dispatcher_->changed();
    with_port([](NodePort& p) { p.assignments_changed(); });
}

void Cluster::networks_changed() {
    dispatcher_->changed();
    with_port([](NodePort& p) { p.assignments_changed(); });
}

void Cluster::tasks_changed() {
    orchestrator_->wake();
    dispatcher_->changed();
    with_port([](NodePort& p) { p.assignments_changed(); });
}

void Cluster::nodes_changed() {
    orchestrator_->wake();
    dispatcher_->changed();
    with_port([](NodePort& p) { p.assignments_changed(); });
}

void Cluster::ca_changed() {
    with_port([](NodePort& p) { p.ca_changed(); });
}

void Cluster::node_removed(const std::string& node_id) {
    with_port([&](NodePort& p) { p.node_removed(node_id); });
}

void Cluster::node_role_changed(const std::string& node_id) {
    with_port([&](NodePort& p) { p.node_role_changed(node_id); });
}

void Cluster::fetch_logs(const std::string& node_id, const std::string& task_id, std::size_t tail,
                         std::chrono::milliseconds timeout, LogsDone done) {
    bool asked = with_transport(
        [&](NodeTransport& t) { t.fetch_logs(node_id, task_id, tail, timeout, std::move(done)); });
    if (!asked) done(make_error(Errc::unavailable, "no node port"));
}

Result<std::vector<NodeTransport::NodeVolume>> Cluster::volumes() {
    Result<std::vector<NodeVolume>> out = make_error(Errc::unavailable, "no node port");
    with_transport([&](NodeTransport& t) { out = t.volumes(); });
    return out;
}

void Cluster::remove_volume(const std::string& node_id, const std::string& name,
                            std::chrono::milliseconds timeout, VolumeDone done) {
    bool asked = with_transport(
        [&](NodeTransport& t) { t.remove_volume(node_id, name, timeout, std::move(done)); });
    if (!asked) done(make_error(Errc::unavailable, "no node port"));
}

}  // namespace coffer::manager
