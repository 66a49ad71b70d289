#include "coffer/manager/manager.h"

#include "coffer/base/log.h"
#include "coffer/crypto/random.h"
#include "coffer/model/json.h"
#include "coffer/store/store.h"

namespace coffer::manager {

namespace json = boost::json;

Result<Manager::Opened> Manager::open(const ManagerOptions& options) {
    auto opened = store::Store::open({.dir = options.data_dir,
                                      .autolock = options.autolock,
                                      .hand_over_unlock_key = options.hand_over_unlock_key});
    if (!opened) return std::move(opened).error().context("open store");
    std::unique_ptr<Manager> m(new Manager());
    m->store_ = std::move(opened->store);
    m->committer_ = std::make_unique<Committer>(*m->store_);
    if (!m->store_->locked())
        if (auto r = m->load(); !r) return std::move(r).error();
    return Opened{std::move(m), std::move(opened->new_unlock_key)};
}

Manager::~Manager() {
    if (orchestrator_) orchestrator_->stop();
    // The committer answers its last requests while the registries still exist.
    committer_.reset();
}

Result<void> Manager::load() {
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
        if (auto w = store_->write(std::move(b)); !w) return std::move(w).error().context("init cluster");
        log::info("manager", "new cluster {}", cluster_id_);
    }
    auto trust = ClusterTrust::load(*store_, cluster_id_);
    if (!trust) return std::move(trust).error();
    trust_ = std::move(*trust);
    auto secrets = SecretRegistry::load(*store_, *committer_, counter_);
    if (!secrets) return std::move(secrets).error();
    secrets_owner_ = std::move(*secrets);
    auto services = ServiceRegistry::load(*store_, counter_, *secrets_owner_);
    if (!services) return std::move(services).error();
    services_ = std::move(*services);
    auto tasks = TaskRegistry::load(*store_, counter_);
    if (!tasks) return std::move(tasks).error();
    tasks_ = std::move(*tasks);
    auto nodes = NodeRegistry::load(*store_, counter_);
    if (!nodes) return std::move(nodes).error();
    nodes_ = std::move(*nodes);
    dispatcher_ = std::make_unique<Dispatcher>(*tasks_, *nodes_, *secrets_owner_);
    orchestrator_ = std::make_unique<Orchestrator>(*services_, *tasks_, *nodes_);
    // Observers only signal: they run under a table's writer lock.
    services_->on_change([o = orchestrator_.get()] { o->wake(); });
    tasks_->on_change([o = orchestrator_.get(), d = dispatcher_.get()] {
        o->wake();
        d->changed();
    });
    nodes_->on_change([o = orchestrator_.get(), d = dispatcher_.get()] {
        o->wake();
        d->changed();
    });
    orchestrator_->start();
    secrets_.store(secrets_owner_.get());
    return {};
}

bool Manager::autolock() const { return store_->autolock(); }

Result<void> Manager::unlock(std::string_view key) {
    std::function<void()> unlocked;
    {
        std::lock_guard lock(unlock_mutex_);
        if (!locked()) return make_error(Errc::conflict, "coffer is not locked");
        if (auto r = store_->unlock(key); !r) return r;
        if (auto r = load(); !r) return r;
        unlocked = on_unlocked_;
    }
    if (unlocked) unlocked();
    return {};
}

void Manager::on_unlocked(std::function<void()> fn) {
    std::lock_guard lock(unlock_mutex_);
    on_unlocked_ = std::move(fn);
}

std::optional<crypto::SecureBuffer> Manager::unlock_key() const { return store_->unlock_key(); }

Result<crypto::SecureBuffer> Manager::rotate_unlock_key() {
    std::lock_guard lock(unlock_mutex_);
    return store_->rotate_unlock_key();
}

Result<void> Manager::rotate_dek() { return store_->rotate_dek(); }
std::uint32_t Manager::dek_id() const { return store_->current_dek_id(); }
bool Manager::dek_rotation_pending() const { return store_->rotation_pending(); }

}  // namespace coffer::manager
