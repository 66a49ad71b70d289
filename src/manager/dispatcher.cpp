#include "coffer/manager/dispatcher.h"

#include <map>
#include <set>

#include "coffer/base/log.h"
#include "coffer/model/json.h"
#include "coffer/nodeproto/assignments.h"

namespace coffer::manager {

namespace json = boost::json;
using model::Task;
using model::TaskState;

namespace {

nodeproto::TaskPayload task_payload(const Task& t) {
    const auto& c = t.spec.container;
    nodeproto::TaskPayload p;
    p.id = t.meta.id;
    p.service_id = t.service_id;
    p.slot = t.slot;
    p.image = c.image;
    p.args = c.command;
    p.args.insert(p.args.end(), c.args.begin(), c.args.end());
    p.env = c.env;
    p.user = c.user;
    p.dir = c.dir;
    p.hostname = c.hostname;
    p.read_only = c.read_only;
    p.limits = {t.spec.limits.memory_bytes, t.spec.limits.nano_cpus, t.spec.limits.pids};
    p.cap_add = c.cap_add;
    p.cap_drop = c.cap_drop;
    p.stop_grace_ns = c.stop_grace_period.value_or(nodeproto::default_stop_grace_ns);
    for (std::size_t i = 0; i < c.secrets.size(); ++i) {
        const auto& ref = c.secrets[i];
        p.secrets.push_back({ref.secret_id, ref.secret_name, ref.file_name, ref.uid, ref.gid,
                             ref.mode, t.secret_version(i)});
    }
    if (const auto& h = c.healthcheck)
        p.healthcheck = nodeproto::HealthCheck{h->test,         h->interval,       h->timeout,
                                               h->start_period, h->start_interval, h->retries};
    p.groups = c.groups;
    p.init = c.init;
    p.stop_signal = c.stop_signal;
    p.secret_signal = t.secret_signal;
    p.secret_mount = t.secret_mount;
    p.sysctls = {c.sysctls.begin(), c.sysctls.end()};
    for (const auto& u : c.ulimits) p.ulimits.push_back({u.name, u.soft, u.hard});
    p.hosts = c.hosts;
    p.dns_nameservers = c.dns.nameservers;
    p.dns_search = c.dns.search;
    p.dns_options = c.dns.options;
    p.oom_score_adj = c.oom_score_adj;
    for (const auto& m : c.mounts) {
        nodeproto::MountPayload w;
        w.type = m.type == model::MountType::bind    ? nodeproto::MountPayload::Type::bind
                 : m.type == model::MountType::tmpfs ? nodeproto::MountPayload::Type::tmpfs
                                                     : nodeproto::MountPayload::Type::volume;
        w.source = m.source;
        w.target = m.target;
        w.read_only = m.read_only;
        w.non_recursive = m.non_recursive;
        w.no_copy = m.no_copy;
        w.labels = m.volume_labels;
        w.size_bytes = m.tmpfs_size;
        w.mode = m.tmpfs_mode;
        p.mounts.push_back(std::move(w));
    }
    for (const auto& ref : c.configs)
        p.configs.push_back(
            {ref.config_id, ref.config_name, ref.file_name, ref.uid, ref.gid, ref.mode});
    if (c.registry_auth) {
        p.registry_auth_id = c.registry_auth->secret_id;
        p.registry_auth_version = t.registry_auth_version;
    }
    p.network_mode = t.network_mode;
    for (const auto& a : t.networks) p.networks.push_back({a.network_id, a.address, a.aliases});
    for (const auto& hp : t.host_ports)
        p.host_ports.push_back({hp.protocol, static_cast<std::uint16_t>(hp.target_port),
                                static_cast<std::uint16_t>(hp.published_port)});
    return p;
}

// Whether a task still needs its registry credentials on its node: until it is running (the
// image is pulled by then), and only while it is meant to run. The node drops them once no
// task needs them.
bool pulls_with_auth(const Task& t) {
    return t.spec.container.registry_auth && t.registry_auth_version != 0 &&
           t.desired == TaskState::running && t.status.state < TaskState::running;
}

// A secret version's key in a stream's sets, and back.
std::string secret_key(const std::string& id, std::uint64_t version) {
    return fmt::format("{}@{}", id, version);
}
// The key of each of a task's secret references, in order: the version it holds.
std::vector<std::string> reference_keys(const Task& t) {
    std::vector<std::string> out;
    const auto& refs = t.spec.container.secrets;
    for (std::size_t i = 0; i < refs.size(); ++i)
        out.push_back(secret_key(refs[i].secret_id, t.secret_version(i)));
    return out;
}
// The key of a task's pull credentials, while it needs them (pulls_with_auth).
std::optional<std::string> auth_key(const Task& t) {
    if (!pulls_with_auth(t)) return std::nullopt;
    return secret_key(t.spec.container.registry_auth->secret_id, t.registry_auth_version);
}
std::pair<std::string, std::uint64_t> split_key(const std::string& key) {
    auto at = key.rfind('@');
    return {key.substr(0, at), std::stoull(key.substr(at + 1))};
}

}  // namespace

crypto::SecureBuffer AssignmentMessage::to_json() const {
    nodeproto::Assignments wire;
    wire.complete = complete;
    wire.sequence = sequence;
    wire.changes.reserve(changes.size());
    for (const auto& c : changes) {
        nodeproto::Change w;
        w.action = c.action == AssignmentChange::Action::add ? nodeproto::Change::Action::add
                                                             : nodeproto::Change::Action::remove;
        w.is_secret = c.is_secret;
        w.is_config = c.is_config;
        w.id = c.id;
        w.version = c.version;
        if (c.action == AssignmentChange::Action::add && c.task) {
            w.is_secret = false;
            w.task = task_payload(*c.task);
        } else if (c.action == AssignmentChange::Action::add && c.secret) {
            w.is_secret = true;
            w.secret = nodeproto::SecretPayload{c.secret->id, c.secret->name,
                                                c.secret->data.clone(), c.version};
        } else if (c.action == AssignmentChange::Action::add) {
            continue;  // nothing to add
        }
        wire.changes.push_back(std::move(w));
    }
    return nodeproto::encode(wire);
}

// ---- streams ---------------------------------------------------------------------------------

NodeStream::~NodeStream() {
    dispatcher_.unsubscribe(this);
}

void NodeStream::changed() {
    {
        std::lock_guard lock(mutex_);
        ++generation_;
    }
    cv_.notify_all();
}

std::optional<AssignmentMessage> NodeStream::next(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        if (auto m = poll()) return m;
        std::unique_lock lock(mutex_);
        if (!cv_.wait_until(lock, deadline, [&] { return generation_ != seen_; }))
            return std::nullopt;
    }
}

std::optional<AssignmentMessage> NodeStream::poll() {
    {
        std::lock_guard lock(mutex_);
        if (generation_ == seen_) return std::nullopt;
        seen_ = generation_;
    }
    auto tasks = dispatcher_.assigned(node_id_);
    // A secret is sent once per version its tasks hold, keyed "<id>@<version>".
    std::map<std::string, std::string> wanted_secrets, wanted_configs;  // key -> name
    for (const auto& [id, t] : tasks) {
        const auto& refs = t.spec.container.secrets;
        auto keys = reference_keys(t);
        for (std::size_t i = 0; i < refs.size(); ++i)
            wanted_secrets.emplace(keys[i], refs[i].secret_name);
        for (const auto& ref : t.spec.container.configs)
            wanted_configs.emplace(ref.config_id, ref.config_name);
        if (auto key = auth_key(t))
            wanted_secrets.emplace(*key, t.spec.container.registry_auth->secret_name);
    }

    AssignmentMessage m;
    m.complete = sequence_ == 0;
    using Action = AssignmentChange::Action;
    // Secrets and configs first, so a task never arrives before what it mounts.
    auto send = [&](const auto& wanted, std::set<std::string>& sent, const auto& registry,
                    bool is_config) {
        for (const auto& [key, name] : wanted) {
            if (sent.count(key)) continue;
            auto [id, version] = is_config ? std::pair{key, std::uint64_t{0}} : split_key(key);
            auto data = is_config ? registry.data(id) : registry.data(id, version);
            if (!data) {
                // Removed while a task still referenced it (its service is gone, the task is
                // stopping): the task cannot start without it anyway.
                log::warn("dispatcher", "node {}: {} {} is gone", node_id_,
                          is_config ? "config" : "secret", id);
                continue;
            }
            AssignmentChange c;
            c.action = Action::add;
            c.is_secret = true;
            c.is_config = is_config;
            c.id = id;
            c.version = version;
            c.secret = AssignmentChange::Secret{id, name, std::move(*data)};
            m.changes.push_back(std::move(c));
            sent.insert(key);
        }
    };
    send(wanted_secrets, sent_secrets_, dispatcher_.secrets_, false);
    send(wanted_configs, sent_configs_, dispatcher_.configs_, true);
    // For the delivery record: the secret versions each task sent holds, those withdrawn.
    std::vector<DeliveryReport> handed;
    std::vector<std::string> withdrawn;
    for (const auto& [id, t] : tasks) {
        // A task is sent again when the secret versions it holds changed (a live update).
        if (sent_tasks_.count(id) && sent_versions_[id] == t.secret_versions) continue;
        const auto& cs = t.spec.container;
        auto keys = reference_keys(t);
        auto auth = auth_key(t);
        bool ready = std::all_of(keys.begin(), keys.end(),
                                 [&](const std::string& k) { return sent_secrets_.count(k) > 0; });
        ready = ready && std::all_of(cs.configs.begin(), cs.configs.end(), [&](const auto& ref) {
                    return sent_configs_.count(ref.config_id) > 0;
                });
        if (!sent_tasks_.count(id) && cs.registry_auth) {
            // A task that no longer pulls (it ended before it was sent) goes without them.
            ready = ready && (!auth || sent_secrets_.count(*auth) > 0);
        }
        // A task's networks reach the node first (poll_networks).
        if (dispatcher_.networks_ != nullptr)
            for (const auto& a : t.networks)
                ready =
                    ready && sent_networks_ &&
                    std::any_of(sent_networks_->networks.begin(), sent_networks_->networks.end(),
                                [&](const auto& n) { return n.id == a.network_id; });
        if (!ready) continue;
        if (auth) keys.push_back(std::move(*auth));
        handed.push_back({id, t.service_id, node_id_, t.status.state, std::move(keys), {}});
        AssignmentChange c;
        c.action = Action::add;
        c.id = id;
        c.task = t;
        m.changes.push_back(std::move(c));
        sent_tasks_.insert(id);
        sent_versions_[id] = t.secret_versions;
    }
    // Withdrawn: tasks that left the set, then secrets and configs after the last task using
    // them left.
    auto withdraw = [&](std::set<std::string>& sent, bool is_secret, bool is_config,
                        auto&& wanted) {
        for (auto it = sent.begin(); it != sent.end();) {
            if (wanted(*it)) {
                ++it;
                continue;
            }
            AssignmentChange c;
            c.action = Action::remove;
            c.is_secret = is_secret;
            c.is_config = is_config;
            c.id = *it;
            if (is_secret && !is_config) {
                std::tie(c.id, c.version) = split_key(*it);
                withdrawn.push_back(*it);
            }
            m.changes.push_back(std::move(c));
            it = sent.erase(it);
        }
    };
    withdraw(sent_tasks_, false, false, [&](const std::string& id) { return tasks.count(id) > 0; });
    std::erase_if(sent_versions_, [&](const auto& e) { return !sent_tasks_.count(e.first); });
    withdraw(sent_secrets_, true, false,
             [&](const std::string& id) { return wanted_secrets.count(id) > 0; });
    withdraw(sent_configs_, true, true,
             [&](const std::string& id) { return wanted_configs.count(id) > 0; });
    if (m.changes.empty() && !m.complete) return std::nullopt;
    m.sequence = ++sequence_;
    if (auto* log = dispatcher_.deliveries_) {
        auto now = dispatcher_.clock_();
        if (!handed.empty()) log->sent(handed, now);
        if (!withdrawn.empty()) log->withdrawn(node_id_, withdrawn, now);
    }
    return m;
}

std::optional<nodeproto::NetworksMessage> NodeStream::poll_networks() {
    if (dispatcher_.networks_ == nullptr || dispatcher_.services_ == nullptr) return std::nullopt;
    auto in = dispatcher_.snapshot();
    auto m = networks_message(node_id_, in->networks, in->services, in->tasks, in->nodes);
    if (sent_networks_) {
        m.sequence = sent_networks_->sequence;
        if (m == *sent_networks_) return std::nullopt;
    }
    m.sequence = sent_networks_ ? sent_networks_->sequence + 1 : 1;
    sent_networks_ = m;
    // Tasks held back for these networks may go now.
    {
        std::lock_guard lock(mutex_);
        ++generation_;
    }
    return m;
}

// ---- dispatcher ------------------------------------------------------------------------------

Dispatcher::Dispatcher(TaskRegistry& tasks, NodeRegistry& nodes, SecretRegistry& secrets,
                       ConfigRegistry& configs, Clock clock)
    : tasks_(tasks),
      nodes_(nodes),
      secrets_(secrets),
      configs_(configs),
      clock_(std::move(clock)) {}

Result<std::unique_ptr<NodeStream>> Dispatcher::subscribe(const std::string& node_id) {
    if (!nodes_.get(node_id))
        return make_error(Errc::not_found, fmt::format("node {} not found", node_id));
    std::unique_ptr<NodeStream> s(new NodeStream(*this, node_id));
    streams_.lock()->insert(s.get());
    return s;
}

void Dispatcher::unsubscribe(NodeStream* s) {
    streams_.lock()->erase(s);
}

std::shared_ptr<const Dispatcher::Snapshot> Dispatcher::snapshot() const {
    // Read before the tables: what is copied below is at least as new as this count says.
    auto seen = changes_.load();
    std::lock_guard lock(inputs_mutex_);
    if (inputs_ && inputs_changes_ == seen) return inputs_;
    auto in = std::make_shared<Snapshot>();
    if (networks_ != nullptr && services_ != nullptr) {
        in->networks = networks_->list();
        in->services = services_->list();
        in->nodes = nodes_.list();
    }
    tasks_.read([&](const TaskRegistry::Map& items) {
        for (const auto& [id, t] : items)
            if (t.desired == TaskState::running && t.status.state >= TaskState::assigned &&
                !model::is_terminal(t.status.state))
                in->tasks.push_back(t);
        return 0;
    });
    for (std::size_t i = 0; i < in->tasks.size(); ++i)
        in->by_node[in->tasks[i].node_id].push_back(i);
    inputs_ = std::move(in);
    inputs_changes_ = seen;
    return inputs_;
}

void Dispatcher::changed() {
    changes_.fetch_add(1);
    auto streams = streams_.read();
    for (auto* s : *streams) s->changed();
}

std::map<std::string, Task> Dispatcher::assigned(const std::string& node_id) const {
    std::map<std::string, Task> out;
    // A removed node gets an empty set: it must stop everything.
    if (!nodes_.get(node_id)) return out;
    auto in = snapshot();
    if (auto it = in->by_node.find(node_id); it != in->by_node.end())
        for (auto i : it->second)
            if (const auto& t = in->tasks[i]; t.status.state <= TaskState::running)
                out.emplace(t.meta.id, t);
    return out;
}

Result<std::size_t> Dispatcher::report(const std::string& node_id,
                                       const std::vector<StatusReport>& statuses, bool complete) {
    return report(std::vector<NodeReports>{{node_id, statuses, complete}});
}

Result<std::size_t> Dispatcher::report(const std::vector<NodeReports>& reports) {
    std::size_t applied = 0;
    auto now = clock_();
    std::vector<DeliveryReport> delivered;
    auto written =
        tasks_.commit([&](const TaskRegistry::Map& items) -> Result<TaskRegistry::Changes> {
            applied = 0;
            delivered.clear();
            // The tasks as the reports so far left them: a later report of the same write sees
            // what an earlier one changed.
            std::map<std::string, Task, std::less<>> changed;
            auto current = [&](const std::string& id) -> const Task* {
                if (auto c = changed.find(id); c != changed.end()) return &c->second;
                auto it = items.find(id);
                return it == items.end() ? nullptr : &it->second;
            };
            for (const auto& [node_id, statuses, complete] : reports) {
                for (const auto& r : statuses) {
                    const Task* task = current(r.task_id);
                    if (task == nullptr) continue;
                    if (task->node_id != node_id) {
                        log::warn("dispatcher",
                                  "node {} reported on task {} of another node: ignored", node_id,
                                  r.task_id);
                        continue;
                    }
                    const auto& cur = task->status;
                    if (r.state < cur.state || r.state < TaskState::assigned) continue;
                    delivered.push_back(
                        {r.task_id, task->service_id, node_id, r.state, r.secrets, r.reads});
                    bool same =
                        r.state == cur.state && r.message == cur.message && r.err == cur.err;
                    if (same && (!r.container || r.container == cur.container)) continue;
                    Task t = *task;
                    t.status.state = r.state;
                    t.status.message = r.message;
                    t.status.err = r.err;
                    if (r.container) t.status.container = r.container;
                    // The time of the last change of state: a node that reports again what it
                    // reported (its whole state, to a manager that took over) moves nothing.
                    if (!same) t.status.timestamp = now;
                    t.meta.updated = now;
                    changed.insert_or_assign(t.meta.id, std::move(t));
                    ++applied;
                }
                if (!complete) continue;
                std::set<std::string_view> listed;
                for (const auto& r : statuses) listed.insert(r.task_id);
                std::vector<Task> lost;
                auto consider = [&](const Task& task) {
                    if (task.node_id != node_id || task.desired < TaskState::shutdown) return;
                    if (task.status.state < TaskState::assigned ||
                        task.status.state >= TaskState::complete)
                        return;
                    if (listed.count(task.meta.id)) return;
                    lost.push_back(task);
                };
                for (const auto& [id, task] : items)
                    if (!changed.contains(id)) consider(task);
                for (const auto& [id, task] : changed) consider(task);
                for (auto& t : lost) {
                    delivered.push_back(
                        {t.meta.id, t.service_id, node_id, TaskState::shutdown, {}, {}});
                    t.status.state = TaskState::shutdown;
                    t.status.message = "shutdown";
                    t.status.err = "the node no longer has this task";
                    t.status.timestamp = now;
                    t.meta.updated = now;
                    auto id = t.meta.id;
                    changed.insert_or_assign(std::move(id), std::move(t));
                    ++applied;
                }
            }
            TaskRegistry::Changes changes;
            changes.put.reserve(changed.size());
            for (auto& [id, t] : changed) changes.put.push_back(std::move(t));
            return changes;
        });
    if (!written) return std::move(written).error();
    if (deliveries_) deliveries_->observe(delivered, now);
    return applied;
}

}  // namespace coffer::manager
