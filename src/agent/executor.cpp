#include "coffer/agent/executor.h"

#include <fmt/ranges.h>

#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "coffer/agent/assignments.h"
#include "coffer/base/log.h"
#include "coffer/model/task_options.h"
#include "coffer/nodeproto/session.h"
#include "coffer/nodeproto/status.h"
#include "coffer/nodeproto/volumes.h"
#include "log_tail.h"
#include "work_queue.h"

namespace coffer::agent {

using Steady = std::chrono::steady_clock;

namespace {

// One task of the set, or one that left it and has not finished reporting.
struct Entry {
    TaskSpec spec;
    std::chrono::milliseconds grace = default_stop_grace;
    bool wanted = true;    // in the manager's set
    bool started = false;  // a start was queued: never a second one
    TaskStatus status;     // the latest known
    // Starts and stops of one task run one after the other, in the order they were decided.
    bool busy = false;
    std::deque<std::function<void()>> ops;
    // The secret versions its mount holds ("<id>@<version>"), reported with its status.
    std::vector<std::string> mounted;
    std::uint64_t reads_reported = 0;  // its secrets' read count when last queued for a report
};

// The secret versions among a task's references (not its configs, nor a secret from a manager
// without versions).
std::vector<std::string> secret_versions_of(const TaskSpec& spec) {
    std::vector<std::string> out;
    for (const auto& ref : spec.secrets)
        if (!ref.secret_id.starts_with("config:") && ref.secret_id.find('@') != std::string::npos)
            out.push_back(ref.secret_id);
    return out;
}

// The reads of secret versions (not of configs, nor of a secret from a manager without
// versions), as a report carries them.
std::vector<nodeproto::SecretReadReport> read_reports(const std::vector<SecretReads>& reads) {
    std::vector<nodeproto::SecretReadReport> out;
    for (const auto& r : reads)
        if (!r.secret_id.starts_with("config:") && r.secret_id.find('@') != std::string::npos)
            out.push_back({r.secret_id, r.reads, r.first_read_ns, r.last_read_ns});
    return out;
}

std::uint64_t total_reads(const std::vector<SecretReads>& reads) {
    std::uint64_t n = 0;
    for (const auto& r : reads) n += r.reads;
    return n;
}

bool same_report(const TaskStatus& a, const TaskStatus& b) {
    return a.state == b.state && a.pid == b.pid && a.exit_code == b.exit_code &&
           a.reason == b.reason && a.health == b.health;
}

nodeproto::TaskReport report_of(const TaskStatus& s) {
    bool error = s.state == TaskState::failed || s.state == TaskState::rejected;
    std::string_view message = to_string(s.state);
    if (s.state == TaskState::running) message = "started";
    if (!error && !s.reason.empty()) message = s.reason;
    bool had_container = s.state >= TaskState::starting && s.state != TaskState::rejected;
    // The node's states are Swarm's, as the model's: the same names.
    auto state = model::task_state_from(to_string(s.state)).value_or(model::TaskState::new_);
    // The last probe's output goes with an unhealthy task's error, as Docker keeps it with the
    // container's health: the manager stores it sealed, as it does the task's logs.
    std::string err = error ? s.reason : std::string();
    if (error && !s.health_output.empty()) err += ": " + s.health_output;
    nodeproto::TaskReport r{
        s.id, state, std::string(message), std::move(err),
        model::ContainerStatus{had_container ? s.id : std::string(), s.pid, s.exit_code.value_or(0),
                               std::string(to_string(s.health))}};
    r.reads = read_reports(s.secret_reads);  // a final status's, as they stood at its end
    return r;
}

}  // namespace

class Executor::Impl {
  public:
    Impl(TaskDriver& d, Send s, ExecutorOptions o)
        : driver(d),
          send(std::move(s)),
          opt(o),
          retry(o.retry_initial),
          pool(std::make_unique<WorkQueue>(o.workers)),
          stoppers(o.stop_workers > 0 ? std::make_unique<WorkQueue>(o.stop_workers) : nullptr) {
        driver.set_status_sink([this](const TaskStatus& st) {
            std::lock_guard l(mu);
            record(st);
        });
        reporter = std::thread([this] { report_loop(); });
    }

    void handle(const nodeconn::Message& m);
    void connected();
    void shutdown();

    // ---- the set (all under mu) ----
    void apply(Assignments a);
    void add_task(TaskAssignment a);
    void update_secrets(Entry& e, TaskAssignment a);
    void reject_invalid(const std::string& id, const std::string& why);
    void remove_task(const std::string& id);
    void record(TaskStatus s);
    enum class Pool { start, stop };
    void enqueue(const std::string& id, std::function<void()> op, Pool where = Pool::start);
    void maybe_retire(const std::string& id);

    // ---- on the pool ----
    void run_ops(const std::string& id);
    void start_op(const std::string& id, SecretLease lease);
    void stop_op(const std::string& id);
    void logs(const nodeconn::Message& m);
    // "volume_remove": removes the volume unless a task uses it, answers "volume_removed".
    void remove_volume(const nodeconn::Message& m);
    // Every named volume of the driver's, for a status message; nullopt when it keeps none.
    std::optional<std::vector<nodeproto::VolumeReport>> volume_reports();

    void report_loop();
    // Queues a report of each running task whose secrets' read count moved since its last one.
    // Called with l held; unlocks it while asking the driver.
    void check_reads(std::unique_lock<std::mutex>& l);

    TaskDriver& driver;
    Send send;
    ExecutorOptions opt;

    mutable std::mutex mu;
    std::condition_variable idle_cv;    // a task's queue of operations emptied
    std::condition_variable report_cv;  // something to report, or the reporter should stop
    std::map<std::string, Entry, std::less<>> tasks;
    // The manager's set of secrets: leases in the driver's store, which holds the bytes.
    std::map<std::string, SecretLease, std::less<>> secrets;
    std::map<std::string, TaskStatus, std::less<>> retired;  // ended and reported; bounded
    std::deque<std::string> retired_order;
    std::map<std::string, TaskStatus> unsent;  // the latest per task, not yet taken by a session
    bool synced = false;                       // this session's first complete set arrived
    bool snapshot_due = false;                 // the {"complete":true} status is still to be sent
    std::uint64_t generation = 0;              // sessions seen
    std::uint64_t last_sequence = 0;
    std::size_t busy_tasks = 0;
    bool stopping = false;
    bool reporter_stop = false;
    std::chrono::milliseconds retry;
    Steady::time_point next_try{};

    std::thread reporter;
    std::unique_ptr<WorkQueue> pool;
    std::unique_ptr<WorkQueue> stoppers;
};

// ---- messages ---------------------------------------------------------------------------------

void Executor::Impl::handle(const nodeconn::Message& m) {
    if (m.type == "assignments") {
        auto parsed = parse_assignments(m.json);
        if (!parsed) {
            log::warn("executor", "ignoring an assignments message: {}", parsed.error().message);
            return;
        }
        std::lock_guard l(mu);
        if (stopping) return;
        apply(std::move(*parsed));
    } else if (m.type == "logs_request") {
        logs(m);
    } else if (m.type == "volume_remove") {
        remove_volume(m);
    } else {
        log::debug("executor", "ignoring a message of type {}", m.type);
    }
}

void Executor::Impl::apply(Assignments a) {
    if (!a.complete && a.sequence != last_sequence + 1)
        log::warn("executor", "assignments {} after {}: a change may have been missed", a.sequence,
                  last_sequence);
    last_sequence = a.sequence;
    log::debug("executor", "assignments {}: {} changes", a.sequence, a.changes.size());
    std::set<std::string, std::less<>> listed_tasks, listed_secrets;
    // In message order: a task whose secret has not arrived before it is rejected.
    for (auto& c : a.changes) {
        if (c.invalid) {
            log::warn("executor", "assignments {}: ignoring a change{}{}: {}", a.sequence,
                      c.id.empty() ? "" : " for ", c.id, *c.invalid);
            if (!c.is_secret && c.action == Change::Action::add && !c.id.empty()) {
                listed_tasks.insert(c.id);
                reject_invalid(c.id, *c.invalid);
            }
            continue;
        }
        if (c.is_secret) {
            if (c.action == Change::Action::add) {
                listed_secrets.insert(c.id);
                secrets.insert_or_assign(c.id,
                                         driver.secrets().put(c.id, std::move(c.secret->data)));
            } else {
                secrets.erase(c.id);  // the store wipes the bytes once no task leases them either
            }
        } else if (c.action == Change::Action::add) {
            listed_tasks.insert(c.id);
            add_task(std::move(*c.task));
        } else {
            remove_task(c.id);
        }
    }
    if (a.complete) {
        std::vector<std::string> gone;
        for (auto& [id, e] : tasks)
            if (e.wanted && !listed_tasks.contains(id)) gone.push_back(id);
        for (auto& id : gone) remove_task(id);
        std::erase_if(secrets, [&](const auto& s) { return !listed_secrets.contains(s.first); });
        if (!synced) {
            synced = true;
            snapshot_due = true;
            next_try = {};
        }
    }
    report_cv.notify_all();
}

void Executor::Impl::add_task(TaskAssignment a) {
    const std::string id = a.spec.id;
    if (auto known = tasks.find(id); known != tasks.end()) {
        // Sent again with other secret versions: its files are replaced in place.
        auto ids = [](const TaskSpec& spec) {
            std::vector<std::string> out;
            for (const auto& ref : spec.secrets) out.push_back(ref.secret_id);
            return out;
        };
        if (ids(known->second.spec) != ids(a.spec))
            update_secrets(known->second, std::move(a));
        else
            log::debug("executor", "task {} is already known: not started again", id);
        return;
    }
    if (auto r = retired.find(id); r != retired.end()) {
        // It ran on this node and ended: never again. Tell the manager how it ended.
        log::info("executor", "task {} already ended here ({}): not started again", id,
                  to_string(r->second.state));
        unsent[id] = r->second;
        return;
    }
    Entry e;
    e.grace = a.stop_grace;
    e.status.id = id;
    e.status.state = TaskState::preparing;
    std::set<std::string> missing;
    for (const auto& ref : a.spec.secrets)
        if (!secrets.contains(ref.secret_id))
            missing.insert(fmt::format("{} ({})", ref.name, ref.secret_id));
    if (!a.spec.registry_auth.empty() && !secrets.contains(a.spec.registry_auth)) {
        // The manager sends them only to a task that has still to pull (one it sends again
        // after a reconnect has its image): without them, a pull goes without credentials.
        log::info("executor", "task {}: no registry credentials sent; a pull goes without", id);
        a.spec.registry_auth.clear();
    }
    if (!missing.empty()) {
        e.status.state = TaskState::rejected;
        e.status.reason = fmt::format("secret {} was not sent to this node before the task",
                                      fmt::join(missing, ", "));
        log::warn("executor", "task {} rejected: {}", id, e.status.reason);
    }
    // A lease on the bytes now: the secret may leave the set before the start runs. Every one
    // is in the set, so the store holds it.
    auto lease = std::make_shared<SecretLease>();
    if (missing.empty()) {
        std::vector<std::string> ids;
        for (const auto& ref : a.spec.secrets) ids.push_back(ref.secret_id);
        if (!a.spec.registry_auth.empty()) ids.push_back(a.spec.registry_auth);
        if (auto r = driver.secrets().lease(ids)) *lease = std::move(*r);
    }
    e.spec = std::move(a.spec);
    e.started = missing.empty();
    unsent[id] = e.status;
    tasks.emplace(id, std::move(e));
    if (missing.empty()) enqueue(id, [this, id, lease] { start_op(id, std::move(*lease)); });
}

void Executor::Impl::update_secrets(Entry& e, TaskAssignment a) {
    const std::string id = a.spec.id;
    if (!e.wanted || !e.started || is_final(e.status.state)) {
        log::debug("executor", "task {}: new secret versions for a task that does not run", id);
        return;
    }
    std::vector<std::string> ids;
    for (const auto& ref : a.spec.secrets) {
        if (!secrets.contains(ref.secret_id)) {
            log::warn("executor", "task {}: secret {} was not sent before its new version", id,
                      ref.secret_id);
            return;
        }
        ids.push_back(ref.secret_id);
    }
    auto lease = driver.secrets().lease(ids);
    if (!lease) {
        log::warn("executor", "task {}: {}", id, lease.error().message);
        return;
    }
    int signal = 0;
    if (!a.secret_signal.empty()) {
        auto n = model::signal_number(a.secret_signal);
        if (!n) log::warn("executor", "task {}: unknown signal {}", id, a.secret_signal);
        signal = n.value_or(0);
    }
    e.spec.secrets = a.spec.secrets;
    auto held = std::make_shared<SecretLease>(std::move(*lease));
    enqueue(id, [this, id, spec = std::move(a.spec), held, signal] {
        auto r = driver.update_secrets(id, spec.secrets, std::move(*held), signal);
        if (!r) {
            log::warn("executor", "task {}: replace its secrets: {}", id, r.error().message);
            return;
        }
        // Reported with its status: the manager records the delivery.
        std::lock_guard l(mu);
        auto it = tasks.find(id);
        if (it == tasks.end()) return;
        it->second.mounted = secret_versions_of(spec);
        unsent[id] = it->second.status;
        report_cv.notify_all();
    });
}

void Executor::Impl::reject_invalid(const std::string& id, const std::string& why) {
    if (tasks.contains(id) || retired.contains(id)) return;
    Entry e;
    e.status.id = id;
    e.status.state = TaskState::rejected;
    e.status.reason = fmt::format("invalid assignment: {}", why);
    unsent[id] = e.status;
    tasks.emplace(id, std::move(e));
}

void Executor::Impl::remove_task(const std::string& id) {
    auto it = tasks.find(id);
    if (it == tasks.end()) {
        if (!retired.contains(id)) log::debug("executor", "remove: no task {}", id);
        return;
    }
    auto& e = it->second;
    if (!e.wanted) return;
    e.wanted = false;
    if (e.started && !is_final(e.status.state)) {
        enqueue(
            id, [this, id] { stop_op(id); }, Pool::stop);
        return;
    }
    maybe_retire(id);
}

void Executor::Impl::record(TaskStatus s) {
    if (s.state == TaskState::new_) return;
    auto it = tasks.find(s.id);
    if (it == tasks.end()) return;
    auto& cur = it->second.status;
    // States only move forward; a repeat of the same report is not news.
    if (s.state < cur.state || (s.state == cur.state && s.pid == cur.pid &&
                                s.exit_code == cur.exit_code && s.health == cur.health))
        return;
    cur = s;
    unsent[s.id] = std::move(s);
    report_cv.notify_all();
}

// A task's operations run one after the other on the pool of the first one queued while it
// was idle (a stop queued behind a start runs after it, on the start's thread).
void Executor::Impl::enqueue(const std::string& id, std::function<void()> op, Pool where) {
    auto& e = tasks.at(id);
    e.ops.push_back(std::move(op));
    if (e.busy) return;
    e.busy = true;
    ++busy_tasks;
    (where == Pool::stop && stoppers ? stoppers : pool)->post([this, id] { run_ops(id); });
}

// A task that left the set, ended and whose end was reported is forgotten, but for its final
// status (kept, bounded) so that it never runs again.
void Executor::Impl::maybe_retire(const std::string& id) {
    auto it = tasks.find(id);
    if (it == tasks.end()) return;
    auto& e = it->second;
    if (e.wanted || e.busy || !is_final(e.status.state) || unsent.contains(id)) return;
    retired.insert_or_assign(id, e.status);
    retired_order.push_back(id);
    tasks.erase(it);
    while (retired_order.size() > opt.retired_kept) {
        retired.erase(retired_order.front());
        retired_order.pop_front();
    }
}

// ---- work on the pool -------------------------------------------------------------------------

void Executor::Impl::run_ops(const std::string& id) {
    for (;;) {
        std::function<void()> op;
        {
            std::lock_guard l(mu);
            auto& e = tasks.at(id);  // a busy entry is never retired
            if (e.ops.empty()) {
                e.busy = false;
                --busy_tasks;
                maybe_retire(id);
                idle_cv.notify_all();
                return;
            }
            op = std::move(e.ops.front());
            e.ops.pop_front();
        }
        try {
            op();
        } catch (const std::exception& ex) {
            log::error("executor", "task {}: {}", id, ex.what());
        }
    }
}

void Executor::Impl::start_op(const std::string& id, SecretLease lease) {
    TaskSpec spec;
    {
        std::lock_guard l(mu);
        auto& e = tasks.at(id);
        if (!e.wanted) {
            record({id, TaskState::shutdown, std::nullopt, false, "removed before it started", 0});
            return;
        }
        spec = e.spec;
        // Reported only with a running (or starting) status, which comes once it is mounted.
        e.mounted = secret_versions_of(spec);
    }
    TaskStatus st;
    try {
        st = driver.start(spec, std::move(lease));
    } catch (const std::exception& e) {
        // The runner reports its own failures; anything else must not leave the task preparing.
        st = {id, TaskState::failed, std::nullopt, false, e.what(), 0};
    }
    std::lock_guard l(mu);
    record(std::move(st));
}

void Executor::Impl::stop_op(const std::string& id) {
    std::chrono::milliseconds grace;
    {
        std::lock_guard l(mu);
        auto& e = tasks.at(id);
        if (is_final(e.status.state)) return;
        grace = e.grace;
    }
    auto r = driver.stop(id, grace);
    std::lock_guard l(mu);
    if (r)
        record(std::move(*r));
    else if (r.error().code == Errc::not_found)
        record({id, TaskState::shutdown, std::nullopt, false, "stopped", 0});
    else
        log::warn("executor", "stop task {}: {}", id, r.error().message);
}

void Executor::Impl::logs(const nodeconn::Message& m) {
    auto request = nodeproto::decode_logs_request(m.json);
    if (!request) {
        log::warn("executor", "ignoring a logs_request without a valid request id");
        return;
    }
    std::string task_id = request->task_id;
    std::size_t lines = request->tail;
    auto answer = [this, request_id = request->request, task_id](std::string_view data,
                                                                 std::string_view error) {
        nodeproto::LogsReply reply{request_id, task_id, {}, std::nullopt};
        if (error.empty())
            reply.data = data;
        else
            reply.error = std::string(error);
        if (!send(nodeproto::encode(reply)))
            log::debug("executor", "logs for task {}: no session to answer on", task_id);
    };
    // Decided under the lock, answered outside it: send() takes the session's lock.
    std::string path, refusal;
    {
        std::lock_guard l(mu);
        if (stopping) return;
        if (request->invalid)
            refusal = *request->invalid;
        else if (!tasks.contains(task_id) && !retired.contains(task_id))
            refusal = fmt::format("no task {} on this node", task_id);
        else if (path = driver.log_path(task_id); path.empty())
            refusal = "this agent keeps no task logs";
        else
            pool->post([this, answer, path, lines, task_id] {
                auto text = read_log_tail(path, lines, opt.max_log_bytes);
                if (!text) {
                    log::warn("executor", "logs for task {}: {}", task_id, text.error().message);
                    return answer({}, "cannot read the task's log");
                }
                answer(*text, {});
            });
    }
    if (!refusal.empty()) answer({}, refusal);
}

void Executor::Impl::remove_volume(const nodeconn::Message& m) {
    auto request = nodeproto::decode_volume_remove(m.json);
    if (!request) {
        log::warn("executor", "ignoring a volume_remove: {}", request.error().message);
        return;
    }
    std::lock_guard l(mu);
    if (stopping) return;
    // On the pool: removing a volume's tree may take a while.
    pool->post([this, r = std::move(*request)] {
        nodeproto::VolumeRemoved reply{r.request, r.name, {}, {}};
        if (auto* store = driver.volumes(); store == nullptr) {
            reply.error = "this agent keeps no volumes";
            reply.code = "failed";
        } else {
            try {
                if (auto done = store->remove(r.name); !done) {
                    reply.error = done.error().message;
                    reply.code = done.error().code == Errc::not_found  ? "not_found"
                                 : done.error().code == Errc::conflict ? "in_use"
                                                                       : "failed";
                }
            } catch (const std::exception& e) {
                reply.error = fmt::format("remove {}: {}", r.name, e.what());
                reply.code = "failed";
            }
        }
        if (!send(nodeproto::encode(reply)))
            log::debug("executor", "volume {}: no session to answer on", r.name);
    });
}

std::optional<std::vector<nodeproto::VolumeReport>> Executor::Impl::volume_reports() {
    auto* store = driver.volumes();
    if (store == nullptr) return std::nullopt;
    std::vector<nodeproto::VolumeReport> out;
    try {
        for (auto& v : store->list()) {
            if (out.size() >= nodeproto::max_volume_reports) break;
            out.push_back({std::move(v.name), std::move(v.mountpoint), std::move(v.created_at),
                           std::move(v.labels)});
        }
    } catch (const std::exception& e) {
        log::warn("executor", "list volumes: {}", e.what());
        return std::nullopt;
    }
    return out;
}

// ---- reporting --------------------------------------------------------------------------------

void Executor::Impl::connected() {
    std::lock_guard l(mu);
    ++generation;
    synced = false;
    snapshot_due = false;
    retry = opt.retry_initial;
    next_try = {};
    last_sequence = 0;
}

void Executor::Impl::check_reads(std::unique_lock<std::mutex>& l) {
    std::vector<std::string> running;
    for (const auto& [id, e] : tasks)
        if (e.status.state == TaskState::running || e.status.state == TaskState::starting)
            running.push_back(id);
    if (running.empty()) return;
    std::vector<std::uint64_t> totals;
    l.unlock();
    for (const auto& id : running) totals.push_back(total_reads(driver.secret_reads(id)));
    l.lock();
    for (std::size_t i = 0; i < running.size(); ++i) {
        auto e = tasks.find(running[i]);
        if (e == tasks.end() || e->second.reads_reported == totals[i]) continue;
        e->second.reads_reported = totals[i];
        unsent.insert_or_assign(running[i], e->second.status);
    }
}

void Executor::Impl::report_loop() {
    std::unique_lock l(mu);
    auto next_reads = Steady::now() + opt.reads_interval;
    for (;;) {
        auto pending = [&] { return synced && (snapshot_due || !unsent.empty()); };
        if (reporter_stop) return;
        if (opt.reads_interval.count() > 0 && Steady::now() >= next_reads) {
            check_reads(l);
            next_reads = Steady::now() + opt.reads_interval;
            continue;
        }
        if (!pending()) {
            if (opt.reads_interval.count() > 0)
                report_cv.wait_until(l, next_reads);
            else
                report_cv.wait(l);
            continue;
        }
        if (Steady::now() < next_try) {
            report_cv.wait_until(l, next_try);
            continue;
        }
        bool snapshot = snapshot_due;
        nodeproto::StatusMessage report{snapshot, {}};
        std::map<std::string, TaskStatus> sent;
        if (snapshot) {
            for (const auto& [id, e] : tasks) sent.emplace(id, e.status);
            for (const auto& [id, s] : unsent) sent.emplace(id, s);  // re-reports of retired tasks
        } else {
            sent = unsent;
        }
        std::vector<std::size_t> running;  // reports whose reads the driver gives below
        for (const auto& [id, s] : sent) {
            report.statuses.push_back(report_of(s));
            auto e = tasks.find(id);
            if (e != tasks.end() &&
                (s.state == TaskState::running || s.state == TaskState::starting)) {
                report.statuses.back().secrets = e->second.mounted;
                running.push_back(report.statuses.size() - 1);
            }
        }
        report.volumes = volume_reports();
        auto gen = generation;
        l.unlock();
        for (auto i : running) {
            auto& r = report.statuses[i];
            r.reads = read_reports(driver.secret_reads(r.task_id));
        }
        bool ok = send(nodeproto::encode(report));
        l.lock();
        if (gen != generation) continue;  // a new session meanwhile: its own rules apply
        if (!ok) {
            next_try = Steady::now() + retry;
            retry = std::min(retry * 2, opt.retry_max);
            continue;
        }
        retry = opt.retry_initial;
        if (snapshot) snapshot_due = false;
        for (const auto& [id, s] : sent) {
            if (auto it = unsent.find(id); it != unsent.end() && same_report(it->second, s))
                unsent.erase(it);
            maybe_retire(id);
        }
    }
}

void Executor::Impl::shutdown() {
    {
        std::unique_lock l(mu);
        if (stopping) return;
        stopping = true;
        // Tasks already leaving the set have their stop queued; the others get one now.
        std::vector<std::string> running;
        for (auto& [id, e] : tasks)
            if (e.wanted && e.started && !is_final(e.status.state)) running.push_back(id);
        for (auto& id : running) remove_task(id);
        idle_cv.wait(l, [&] { return busy_tasks == 0; });
        reporter_stop = true;
    }
    report_cv.notify_all();
    if (reporter.joinable()) reporter.join();
    pool.reset();  // runs what was posted (log answers), joins
    stoppers.reset();
    driver.set_status_sink(nullptr);
}

// ---- Executor ---------------------------------------------------------------------------------

Executor::Executor(TaskDriver& driver, Send send, ExecutorOptions options)
    : impl_(std::make_unique<Impl>(driver, std::move(send), options)) {}

Executor::~Executor() {
    shutdown();
}

void Executor::handle(const nodeconn::Message& message) {
    impl_->handle(message);
}
void Executor::connected() {
    impl_->connected();
}
void Executor::shutdown() {
    impl_->shutdown();
}

std::optional<TaskStatus> Executor::task_status(std::string_view id) const {
    std::lock_guard l(impl_->mu);
    if (auto it = impl_->tasks.find(id); it != impl_->tasks.end()) return it->second.status;
    if (auto it = impl_->retired.find(id); it != impl_->retired.end()) return it->second;
    return std::nullopt;
}

std::size_t Executor::secrets_held() const {
    std::lock_guard l(impl_->mu);
    return impl_->secrets.size();
}

std::size_t Executor::tasks_wanted() const {
    std::lock_guard l(impl_->mu);
    return static_cast<std::size_t>(std::count_if(impl_->tasks.begin(), impl_->tasks.end(),
                                                  [](const auto& t) { return t.second.wanted; }));
}

std::vector<std::pair<TaskState, std::size_t>> Executor::tasks_by_state() const {
    constexpr TaskState all[] = {TaskState::new_,     TaskState::preparing, TaskState::starting,
                                 TaskState::running,  TaskState::complete,  TaskState::failed,
                                 TaskState::shutdown, TaskState::rejected};
    std::vector<std::pair<TaskState, std::size_t>> out;
    for (auto s : all) out.emplace_back(s, 0);
    std::lock_guard l(impl_->mu);
    for (const auto& [id, e] : impl_->tasks)
        for (auto& [s, n] : out)
            if (s == e.status.state) ++n;
    return out;
}

}  // namespace coffer::agent
