#include "coffer/manager/dispatcher.h"

#include <cstring>

#include "coffer/base/log.h"
#include "coffer/crypto/encoding.h"
#include "coffer/model/json.h"

namespace coffer::manager {

namespace json = boost::json;
using model::Task;
using model::TaskState;

namespace {

json::array strings(const std::vector<std::string>& v) { return json::array(v.begin(), v.end()); }

json::object task_wire(const Task& t) {
    const auto& c = t.spec.container;
    std::vector<std::string> args = c.command;
    args.insert(args.end(), c.args.begin(), c.args.end());
    json::array secrets;
    for (const auto& ref : c.secrets)
        secrets.push_back(json::object{{"SecretID", ref.secret_id},
                                       {"Name", ref.secret_name},
                                       {"Target", ref.file_name},
                                       {"UID", ref.uid},
                                       {"GID", ref.gid},
                                       {"Mode", ref.mode}});
    return json::object{{"ID", t.meta.id},
                        {"ServiceID", t.service_id},
                        {"Slot", t.slot},
                        {"Image", c.image},
                        {"Args", strings(args)},
                        {"Env", strings(c.env)},
                        {"User", c.user},
                        {"Dir", c.dir},
                        {"Hostname", c.hostname},
                        {"ReadOnly", c.read_only},
                        {"Limits", json::object{{"MemoryBytes", t.spec.limits.memory_bytes},
                                                {"NanoCPUs", t.spec.limits.nano_cpus},
                                                {"Pids", t.spec.limits.pids}}},
                        {"CapAdd", strings(c.cap_add)},
                        {"CapDrop", strings(c.cap_drop)},
                        {"StopGracePeriod", c.stop_grace_period.value_or(10 * model::second_ns)},
                        {"Secrets", std::move(secrets)}};
}

// The wire text is assembled from ordinary JSON pieces and, for secrets, base64 in secure memory.
class SecureText {
public:
    void add(std::string s) { parts_.push_back(std::move(s)); }
    void add(crypto::SecureBuffer b) { secure_.emplace_back(parts_.size(), std::move(b)), parts_.emplace_back(); }
    crypto::SecureBuffer finish() {
        std::size_t size = 0;
        for (const auto& p : parts_) size += p.size();
        for (const auto& [at, b] : secure_) size += b.size();
        crypto::SecureBuffer out(size);
        std::size_t pos = 0, next_secure = 0;
        for (std::size_t i = 0; i < parts_.size(); ++i) {
            if (next_secure < secure_.size() && secure_[next_secure].first == i) {
                const auto& b = secure_[next_secure++].second;
                std::memcpy(out.data() + pos, b.data(), b.size());
                pos += b.size();
            } else {
                std::memcpy(out.data() + pos, parts_[i].data(), parts_[i].size());
                pos += parts_[i].size();
            }
        }
        return out;
    }

private:
    std::vector<std::string> parts_;
    std::vector<std::pair<std::size_t, crypto::SecureBuffer>> secure_;
};

}  // namespace

crypto::SecureBuffer AssignmentMessage::to_json() const {
    SecureText text;
    text.add(fmt::format("{{\"type\":\"assignments\",\"Type\":\"{}\",\"Sequence\":{},\"Changes\":[", complete ? "complete" : "incremental",
                         sequence));
    bool first = true;
    for (const auto& c : changes) {
        if (!first) text.add(",");
        first = false;
        auto action = c.action == AssignmentChange::Action::add ? "add" : "remove";
        if (c.action == AssignmentChange::Action::remove) {
            text.add(json::serialize(json::object{{"Action", action},
                                                  {c.is_secret ? "Secret" : "Task", json::object{{"ID", c.id}}}}));
        } else if (c.task) {
            text.add(json::serialize(json::object{{"Action", action}, {"Task", task_wire(*c.task)}}));
        } else if (c.secret) {
            text.add(fmt::format("{{\"Action\":\"add\",\"Secret\":{{\"ID\":{},\"Name\":{},\"Data\":\"",
                                 json::serialize(json::string(c.secret->id)),
                                 json::serialize(json::string(c.secret->name))));
            text.add(crypto::base64_encode_secure(c.secret->data.span()));
            text.add("\"}}");
        }
    }
    text.add("]}");
    return text.finish();
}

// ---- streams ---------------------------------------------------------------------------------

NodeStream::~NodeStream() { dispatcher_.unsubscribe(this); }

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
        if (!cv_.wait_until(lock, deadline, [&] { return generation_ != seen_; })) return std::nullopt;
    }
}

std::optional<AssignmentMessage> NodeStream::poll() {
    {
        std::lock_guard lock(mutex_);
        if (generation_ == seen_) return std::nullopt;
        seen_ = generation_;
    }
    auto tasks = dispatcher_.assigned(node_id_);
    std::map<std::string, std::string> wanted_secrets;  // id -> name
    for (const auto& [id, t] : tasks)
        for (const auto& ref : t.spec.container.secrets) wanted_secrets.emplace(ref.secret_id, ref.secret_name);

    AssignmentMessage m;
    m.complete = sequence_ == 0;
    using Action = AssignmentChange::Action;
    // Secrets first, so a task never arrives before what it mounts.
    for (const auto& [id, name] : wanted_secrets) {
        if (sent_secrets_.count(id)) continue;
        auto data = dispatcher_.secrets_.data(id);
        if (!data) {
            // Removed while a task still referenced it (its service is gone, the task is
            // stopping): the task cannot start without it anyway.
            log::warn("dispatcher", "node {}: secret {} is gone", node_id_, id);
            continue;
        }
        AssignmentChange c;
        c.action = Action::add;
        c.is_secret = true;
        c.id = id;
        c.secret = AssignmentChange::Secret{id, name, std::move(*data)};
        m.changes.push_back(std::move(c));
        sent_secrets_.insert(id);
    }
    for (const auto& [id, t] : tasks) {
        if (sent_tasks_.count(id)) continue;
        bool ready = std::all_of(t.spec.container.secrets.begin(), t.spec.container.secrets.end(),
                                 [&](const auto& ref) { return sent_secrets_.count(ref.secret_id) > 0; });
        if (!ready) continue;
        AssignmentChange c;
        c.action = Action::add;
        c.id = id;
        c.task = t;
        m.changes.push_back(std::move(c));
        sent_tasks_.insert(id);
    }
    // Withdrawn: tasks that left the set, then secrets after the last task using them left.
    auto withdraw = [&](std::set<std::string>& sent, bool is_secret, auto&& wanted) {
        for (auto it = sent.begin(); it != sent.end();) {
            if (wanted(*it)) {
                ++it;
                continue;
            }
            AssignmentChange c;
            c.action = Action::remove;
            c.is_secret = is_secret;
            c.id = *it;
            m.changes.push_back(std::move(c));
            it = sent.erase(it);
        }
    };
    withdraw(sent_tasks_, false, [&](const std::string& id) { return tasks.count(id) > 0; });
    withdraw(sent_secrets_, true, [&](const std::string& id) { return wanted_secrets.count(id) > 0; });
    if (m.changes.empty() && !m.complete) return std::nullopt;
    m.sequence = ++sequence_;
    return m;
}

// ---- dispatcher ------------------------------------------------------------------------------

Dispatcher::Dispatcher(TaskRegistry& tasks, NodeRegistry& nodes, SecretRegistry& secrets, Clock clock)
    : tasks_(tasks), nodes_(nodes), secrets_(secrets), clock_(std::move(clock)) {}

Result<std::unique_ptr<NodeStream>> Dispatcher::subscribe(const std::string& node_id) {
    if (!nodes_.get(node_id)) return make_error(Errc::not_found, fmt::format("node {} not found", node_id));
    std::unique_ptr<NodeStream> s(new NodeStream(*this, node_id));
    streams_.lock()->insert(s.get());
    return s;
}

void Dispatcher::unsubscribe(NodeStream* s) { streams_.lock()->erase(s); }

void Dispatcher::changed() {
    auto streams = streams_.read();
    for (auto* s : *streams) s->changed();
}

std::map<std::string, Task> Dispatcher::assigned(const std::string& node_id) const {
    std::map<std::string, Task> out;
    // A removed node gets an empty set: it must stop everything.
    if (!nodes_.get(node_id)) return out;
    tasks_.read([&](const TaskRegistry::Map& items) {
        for (const auto& [id, t] : items)
            if (t.node_id == node_id && t.desired == TaskState::running && t.status.state >= TaskState::assigned &&
                t.status.state <= TaskState::running)
                out.emplace(id, t);
        return 0;
    });
    return out;
}

Result<std::size_t> Dispatcher::report(const std::string& node_id, const std::vector<StatusReport>& statuses,
                                       bool complete) {
    std::size_t applied = 0;
    auto now = clock_();
    auto written = tasks_.commit([&](const TaskRegistry::Map& items) -> Result<TaskRegistry::Changes> {
        TaskRegistry::Changes changes;
        applied = 0;
        for (const auto& r : statuses) {
            auto it = items.find(r.task_id);
            if (it == items.end()) continue;
            if (it->second.node_id != node_id) {
                log::warn("dispatcher", "node {} reported on task {} of another node: ignored", node_id, r.task_id);
                continue;
            }
            const auto& cur = it->second.status;
            if (r.state < cur.state || r.state < TaskState::assigned) continue;
            if (r.state == cur.state && r.message == cur.message && r.err == cur.err && !r.container) continue;
            Task t = it->second;
            t.status.state = r.state;
            t.status.message = r.message;
            t.status.err = r.err;
            if (r.container) t.status.container = r.container;
            t.status.timestamp = now;
            t.meta.updated = now;
            changes.put.push_back(std::move(t));
            ++applied;
        }
        if (complete) {
            std::set<std::string_view> listed;
            for (const auto& r : statuses) listed.insert(r.task_id);
            for (const auto& [id, task] : items) {
                if (task.node_id != node_id || task.desired < TaskState::shutdown) continue;
                if (task.status.state < TaskState::assigned || task.status.state >= TaskState::complete) continue;
                if (listed.count(id)) continue;
                Task t = task;
                t.status.state = TaskState::shutdown;
                t.status.message = "shutdown";
                t.status.err = "the node no longer has this task";
                t.status.timestamp = now;
                t.meta.updated = now;
                changes.put.push_back(std::move(t));
                ++applied;
            }
        }
        return changes;
    });
    if (!written) return std::move(written).error();
    return applied;
}

}  // namespace coffer::manager
