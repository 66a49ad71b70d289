// The executor's message handling and set logic against a fake task driver; the wire form against
// the dispatcher's own encoder; the log tail; the benchmark driver.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <boost/json.hpp>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "coffer/agent/assignments.h"
#include "coffer/agent/executor.h"
#include "coffer/agent/secret_mount.h"
#include "coffer/agent/task_drivers.h"
#include "coffer/base/mount.h"
#include "coffer/base/unique_fd.h"
#include "coffer/crypto/encoding.h"
#include "coffer/manager/dispatcher.h"
#include "coffer/nodeconn/message.h"
#include "coffer/nodeproto/assignments.h"
#include "log_tail.h"
#include "node_reports.h"

using namespace coffer;
using namespace coffer::agent;
using namespace std::chrono_literals;
namespace json = boost::json;

namespace {

bool eventually(const std::function<bool()>& cond, std::chrono::milliseconds deadline = 10s) {
    auto until = std::chrono::steady_clock::now() + deadline;
    while (std::chrono::steady_clock::now() < until) {
        if (cond()) return true;
        std::this_thread::sleep_for(2ms);
    }
    return cond();
}

nodeconn::Message message(crypto::SecureBuffer text) {
    auto m = nodeconn::make_message(std::move(text));
    EXPECT_TRUE(m);
    return m ? std::move(*m) : nodeconn::Message{"broken", {}};
}

nodeconn::Message message(std::string_view text) {
    auto m = nodeconn::make_message(crypto::SecureBuffer::copy_of(text));
    EXPECT_TRUE(m) << text;
    return m ? std::move(*m) : nodeconn::Message{"broken", {}};
}

// A change for assignments(), built when the message is: nodeproto's changes own secure buffers
// and cannot be copied out of an initializer list.
using TestChange = std::function<nodeproto::Change()>;

TestChange secret_add(std::string_view id, std::string_view name, std::string_view bytes) {
    return [id = std::string(id), name = std::string(name), bytes = std::string(bytes)] {
        nodeproto::Change c;
        c.is_secret = true;
        c.id = id;
        c.secret = nodeproto::SecretPayload{id, name, crypto::SecureBuffer::copy_of(bytes)};
        return c;
    };
}

TestChange task_add(std::string_view id, std::vector<std::string> secret_ids = {},
                    std::int64_t grace_ns = -1) {
    nodeproto::TaskPayload t;
    t.id = id;
    t.service_id = "svc";
    t.slot = 1;
    t.image = "busybox";
    t.args = {"sleep", "600"};
    for (auto& s : secret_ids) t.secrets.push_back({s, "name-" + s, "", "0", "0", 0444});
    if (grace_ns >= 0) t.stop_grace_ns = grace_ns;
    return [t] {
        nodeproto::Change c;
        c.id = t.id;
        c.task = t;
        return c;
    };
}

TestChange remove(std::string_view kind, std::string_view id) {
    return [secret = kind == "Secret", id = std::string(id)] {
        nodeproto::Change c;
        c.action = nodeproto::Change::Action::remove;
        c.is_secret = secret;
        c.id = id;
        return c;
    };
}

crypto::SecureBuffer assignments(bool complete, std::uint64_t seq,
                                 const std::vector<TestChange>& changes) {
    nodeproto::Assignments m{complete, seq, {}};
    for (auto& c : changes) m.changes.push_back(c());
    return nodeproto::encode(m);
}

// Changes spelled by hand, for input no encoder writes.
std::string raw_assignments(bool complete, std::uint64_t seq,
                            const std::vector<std::string>& changes) {
    std::string joined;
    for (auto& c : changes) joined += (joined.empty() ? "" : ",") + c;
    return fmt::format(R"({{"type":"assignments","Type":"{}","Sequence":{},"Changes":[{}]}})",
                       complete ? "complete" : "incremental", seq, joined);
}

// Runs tasks by bookkeeping: started tasks run until stopped or ended by the test.
class FakeDriver : public TaskDriver {
  public:
    void set_status_sink(StatusSink sink) override {
        std::lock_guard l(mu_);
        sink_ = std::move(sink);
    }
    SecretStore& secrets() override { return store_; }
    TaskStatus start(const TaskSpec& spec, SecretLease secrets) override {
        {
            std::unique_lock l(mu_);
            ++starts_[spec.id];
            specs_[spec.id] = spec;
            gate_cv_.wait(l, [&] { return !hold_starts_; });
        }
        // The bytes as a runner reads them when it writes the task's files.
        std::map<std::string, std::string> seen;
        std::map<std::string, const void*> where;
        store_.read([&](const SecretBytes& all) {
            for (auto& id : secrets.ids()) {
                auto& b = all.at(id);
                seen[id] = std::string(b.data(), b.data() + b.size());
                where[id] = b.data();
            }
        });
        {
            std::lock_guard l(mu_);
            for (auto& [id, b] : seen) bytes_[spec.id + "/" + id] = b;
            for (auto& [id, p] : where) addresses_[spec.id + "/" + id] = p;
        }
        if (throw_starts_) throw std::runtime_error("runtime vanished");
        publish({spec.id, TaskState::preparing, std::nullopt, false, "", 0});
        TaskStatus s{spec.id, TaskState::running, std::nullopt, false, "", 4242};
        if (fail_starts_)
            s = {spec.id, TaskState::failed, std::nullopt, false, "image not found", 0};
        {
            std::lock_guard l(mu_);
            if (!fail_starts_) {
                running_.insert(spec.id);
                leases_[spec.id] = std::move(secrets);
            }
        }
        publish(s);
        return s;
    }
    Result<TaskStatus> stop(std::string_view id, std::chrono::milliseconds grace) override {
        {
            std::lock_guard l(mu_);
            stops_.emplace_back(std::string(id), grace);
            if (!running_.erase(std::string(id))) return make_error(Errc::not_found, "no task");
            leases_.erase(std::string(id));
        }
        TaskStatus s{std::string(id), TaskState::shutdown, 143, false, "stopped", 0};
        publish(s);
        return s;
    }
    std::string log_path(std::string_view id) const override {
        return log_dir_.empty() ? "" : log_dir_ + "/" + std::string(id) + ".log";
    }

    // The task's process ended by itself.
    void exit(const std::string& id, int code) {
        {
            std::lock_guard l(mu_);
            running_.erase(id);
            leases_.erase(id);
        }
        publish({id, code == 0 ? TaskState::complete : TaskState::failed, code, false,
                 code == 0 ? "finished" : fmt::format("exit code {}", code), 0});
    }
    void hold_starts(bool hold) {
        {
            std::lock_guard l(mu_);
            hold_starts_ = hold;
        }
        gate_cv_.notify_all();
    }
    int starts(const std::string& id) {
        std::lock_guard l(mu_);
        return starts_[id];
    }
    bool running(const std::string& id) {
        std::lock_guard l(mu_);
        return running_.contains(id);
    }
    std::vector<std::pair<std::string, std::chrono::milliseconds>> stops() {
        std::lock_guard l(mu_);
        return stops_;
    }
    std::string bytes(const std::string& task, const std::string& secret) {
        std::lock_guard l(mu_);
        return bytes_[task + "/" + secret];
    }
    TaskSpec spec(const std::string& id) {
        std::lock_guard l(mu_);
        return specs_[id];
    }
    // Where the bytes a start was given were (the store's own buffer, not a copy).
    const void* address(const std::string& task, const std::string& secret) {
        std::lock_guard l(mu_);
        return addresses_[task + "/" + secret];
    }
    // Where the store holds a secret's bytes now; nullptr when it holds none.
    const void* stored_at(const std::string& secret) {
        const void* p = nullptr;
        store_.read([&](const SecretBytes& all) {
            if (auto it = all.find(secret); it != all.end()) p = it->second.data();
        });
        return p;
    }
    std::size_t secrets_held() const { return store_.size(); }
    std::string log_dir_;
    bool fail_starts_ = false;
    bool throw_starts_ = false;

  private:
    void publish(const TaskStatus& s) {
        std::lock_guard l(mu_);
        if (sink_) sink_(s);
    }
    SecretStore store_;  // before the leases on it
    std::mutex mu_;
    std::condition_variable gate_cv_;
    bool hold_starts_ = false;
    StatusSink sink_;
    std::map<std::string, int> starts_;
    std::map<std::string, TaskSpec> specs_;
    std::map<std::string, std::string> bytes_;  // test bytes only
    std::map<std::string, const void*> addresses_;
    std::set<std::string> running_;
    std::map<std::string, SecretLease> leases_;  // of the running tasks
    std::vector<std::pair<std::string, std::chrono::milliseconds>> stops_;
};

// The manager's end of the session: takes messages while "connected".
class FakeSession : public test::NodeReports {
  public:
    bool send(crypto::SecureBuffer b) {
        std::lock_guard l(mu_);
        if (!up_) return false;
        add(b);
        return true;
    }
    void up(bool u) {
        std::lock_guard l(mu_);
        up_ = u;
    }

  private:
    std::mutex mu_;
    bool up_ = true;
};

class ExecutorTest : public ::testing::Test {
  protected:
    void SetUp() override {
        crypto::init();
        ExecutorOptions o;
        o.retry_initial = 5ms;
        o.retry_max = 20ms;
        executor = std::make_unique<Executor>(
            driver, [this](crypto::SecureBuffer b) { return session.send(std::move(b)); }, o);
        executor->connected();
    }
    void TearDown() override { executor.reset(); }

    void handle(std::string_view text) { executor->handle(message(text)); }
    void handle(crypto::SecureBuffer text) { executor->handle(message(std::move(text))); }
    std::string state(const std::string& id) {
        auto s = executor->task_status(id);
        return s ? std::string(to_string(s->state)) : "";
    }

    FakeDriver driver;
    FakeSession session;
    std::unique_ptr<Executor> executor;
};

TEST_F(ExecutorTest, StartsWhatTheCompleteSetHoldsAndReportsItsStates) {
    driver.hold_starts(true);
    handle(assignments(
        true, 1, {secret_add("s1", "db_pass", "hunter2"), task_add("t1", {"s1"}), task_add("t2")}));
    ASSERT_TRUE(eventually([&] { return session.last_state("t1") == "preparing"; }));
    driver.hold_starts(false);
    ASSERT_TRUE(eventually([&] {
        return session.last_state("t1") == "running" && session.last_state("t2") == "running";
    }));
    EXPECT_EQ(driver.bytes("t1", "s1"), "hunter2");
    auto spec = driver.spec("t1");
    EXPECT_EQ(spec.image, "busybox");
    EXPECT_EQ(spec.args, (std::vector<std::string>{"sleep", "600"}));
    ASSERT_EQ(spec.secrets.size(), 1u);
    EXPECT_EQ(spec.secrets[0].target, "name-s1");  // the name, under /run/secrets
    EXPECT_EQ(spec.secrets[0].mode, 0444u);
    auto states = session.states("t1");
    EXPECT_EQ(states.front(), "preparing");
    EXPECT_EQ(executor->secrets_held(), 1u);
    for (auto& m : session.of_type("status"))
        for (auto& s : m.at("statuses").as_array())
            for (auto key :
                 {"task_id", "state", "message", "err", "container_id", "pid", "exit_code"})
                EXPECT_TRUE(s.as_object().contains(key)) << key;
}

TEST_F(ExecutorTest, CompleteSetReplacesTheWholeSet) {
    handle(assignments(true, 1,
                       {secret_add("s1", "a", "x"), secret_add("s2", "b", "y"),
                        task_add("t1", {"s1"}), task_add("t2", {"s2"}, 3'000'000'000)}));
    ASSERT_TRUE(eventually([&] { return driver.running("t1") && driver.running("t2"); }));
    // A new session's complete set holds t1 and t3 only: t2 is stopped, s2 dropped.
    executor->connected();
    handle(
        assignments(true, 1, {secret_add("s1", "a", "x"), task_add("t1", {"s1"}), task_add("t3")}));
    ASSERT_TRUE(eventually([&] { return !driver.running("t2") && driver.running("t3"); }));
    ASSERT_TRUE(eventually([&] { return session.last_state("t2") == "shutdown"; }));
    auto stops = driver.stops();
    ASSERT_EQ(stops.size(), 1u);
    EXPECT_EQ(stops[0].first, "t2");
    EXPECT_EQ(stops[0].second, 3000ms);
    EXPECT_EQ(driver.starts("t1"), 1);  // still running: not started again
    EXPECT_EQ(executor->secrets_held(), 1u);
    EXPECT_EQ(executor->tasks_wanted(), 2u);
}

TEST_F(ExecutorTest, IncrementalChangesAddAndRemove) {
    handle(assignments(true, 1, {}));
    handle(assignments(false, 2, {secret_add("s1", "a", "x"), task_add("t1", {"s1"})}));
    ASSERT_TRUE(eventually([&] { return session.last_state("t1") == "running"; }));
    handle(assignments(false, 3, {remove("Task", "t1"), remove("Secret", "s1")}));
    ASSERT_TRUE(eventually([&] { return session.last_state("t1") == "shutdown"; }));
    ASSERT_EQ(driver.stops().size(), 1u);
    EXPECT_EQ(driver.stops()[0].second, 10s);  // the default grace period
    EXPECT_EQ(executor->secrets_held(), 0u);
    EXPECT_EQ(executor->tasks_wanted(), 0u);
}

// The bytes live once, in the driver's store: the executor's set leases them and a start reads
// the store's own buffer; nothing of them is left once neither the set nor a task needs them.
TEST_F(ExecutorTest, SecretBytesAreHeldOnceAndLentToEachStart) {
    handle(assignments(
        true, 1,
        {secret_add("s1", "db_pass", "hunter2"), task_add("t1", {"s1"}), task_add("t2", {"s1"})}));
    ASSERT_TRUE(eventually([&] { return driver.running("t1") && driver.running("t2"); }));
    EXPECT_EQ(driver.secrets_held(), 1u);
    const void* stored = driver.stored_at("s1");
    ASSERT_NE(stored, nullptr);
    EXPECT_EQ(driver.address("t1", "s1"), stored);  // a copy would live elsewhere
    EXPECT_EQ(driver.address("t2", "s1"), stored);
    EXPECT_EQ(driver.bytes("t2", "s1"), "hunter2");

    // Out of the set while its tasks run: still held, once, for them.
    handle(assignments(false, 2, {remove("Secret", "s1")}));
    EXPECT_EQ(executor->secrets_held(), 0u);
    EXPECT_EQ(driver.secrets_held(), 1u);
    EXPECT_EQ(driver.stored_at("s1"), stored);
    handle(assignments(false, 3, {remove("Task", "t1"), remove("Task", "t2")}));
    ASSERT_TRUE(eventually([&] {
        return session.last_state("t1") == "shutdown" && session.last_state("t2") == "shutdown";
    }));
    EXPECT_EQ(driver.secrets_held(), 0u);
    EXPECT_EQ(driver.stored_at("s1"), nullptr);
}

// A secret that leaves the set between a task's assignment and its start still reaches the
// start, and is not kept once that task ended.
TEST_F(ExecutorTest, SecretRemovedBeforeTheStartStillReachesItAndGoesWithTheTask) {
    driver.hold_starts(true);
    handle(assignments(true, 1, {secret_add("s1", "db_pass", "hunter2"), task_add("t1", {"s1"})}));
    ASSERT_TRUE(eventually([&] { return driver.starts("t1") == 1; }));
    handle(assignments(false, 2, {remove("Secret", "s1")}));
    EXPECT_EQ(executor->secrets_held(), 0u);
    EXPECT_EQ(driver.secrets_held(), 1u);  // leased for the start under way
    driver.hold_starts(false);
    ASSERT_TRUE(eventually([&] { return session.last_state("t1") == "running"; }));
    EXPECT_EQ(driver.bytes("t1", "s1"), "hunter2");
    driver.exit("t1", 0);
    ASSERT_TRUE(eventually([&] { return session.last_state("t1") == "complete"; }));
    EXPECT_EQ(driver.secrets_held(), 0u);
}

TEST_F(ExecutorTest, TaskWhoseSecretWasNotSentFirstIsRejected) {
    // s2 never sent; s3 sent only after the task that mounts it.
    handle(assignments(true, 1,
                       {secret_add("s1", "a", "x"), task_add("t1", {"s1", "s2"}),
                        task_add("t2", {"s3"}), secret_add("s3", "c", "z")}));
    ASSERT_TRUE(eventually([&] {
        return session.last_state("t1") == "rejected" && session.last_state("t2") == "rejected";
    }));
    EXPECT_EQ(driver.starts("t1"), 0);
    EXPECT_EQ(driver.starts("t2"), 0);
    auto st = executor->task_status("t1");
    ASSERT_TRUE(st);
    EXPECT_NE(st->reason.find("name-s2 (s2)"), std::string::npos) << st->reason;
    EXPECT_NE(st->reason.find("not sent"), std::string::npos) << st->reason;
    for (auto& m : session.status_messages())
        for (auto& s : m.statuses)
            if (s.task_id == "t1" && s.state == model::TaskState::rejected) {
                EXPECT_EQ(s.err, st->reason);
            }
}

TEST_F(ExecutorTest, ATaskIsNeverStartedTwice) {
    handle(assignments(true, 1, {task_add("t1")}));
    ASSERT_TRUE(eventually([&] { return driver.running("t1"); }));
    handle(assignments(false, 2, {task_add("t1")}));
    handle(assignments(true, 3, {task_add("t1")}));
    // Ended by itself, then assigned again: reported, not rerun.
    driver.exit("t1", 3);
    ASSERT_TRUE(eventually([&] { return session.last_state("t1") == "failed"; }));
    handle(assignments(false, 4, {task_add("t1")}));
    handle(assignments(false, 5, {remove("Task", "t1")}));
    handle(assignments(false, 6, {task_add("t1")}));
    ASSERT_TRUE(eventually([&] { return executor->task_status("t1").has_value(); }));
    EXPECT_EQ(driver.starts("t1"), 1);
    EXPECT_TRUE(driver.stops().empty());  // it had ended: nothing to stop
    auto st = executor->task_status("t1");
    ASSERT_TRUE(st);
    EXPECT_EQ(st->state, TaskState::failed);
    EXPECT_EQ(st->exit_code, 3);
}

TEST_F(ExecutorTest, ExitCodesAreReported) {
    handle(assignments(true, 1, {task_add("ok"), task_add("bad")}));
    ASSERT_TRUE(eventually([&] { return driver.running("ok") && driver.running("bad"); }));
    driver.exit("ok", 0);
    driver.exit("bad", 7);
    ASSERT_TRUE(eventually([&] {
        return session.last_state("ok") == "complete" && session.last_state("bad") == "failed";
    }));
    for (auto& m : session.status_messages())
        for (auto& s : m.statuses)
            if (s.task_id == "bad" && s.state == model::TaskState::failed) {
                ASSERT_TRUE(s.container);
                EXPECT_EQ(s.container->exit_code, 7);
                EXPECT_EQ(s.err, "exit code 7");
            }
}

TEST_F(ExecutorTest, SendsACompleteStatusAfterEachSessionsFirstCompleteSet) {
    session.up(true);
    handle(assignments(true, 1, {task_add("t1"), task_add("t2")}));
    ASSERT_TRUE(eventually([&] { return driver.running("t1") && driver.running("t2"); }));
    ASSERT_TRUE(eventually([&] { return !session.status_messages().empty(); }));
    auto first = session.status_messages().front();
    EXPECT_TRUE(first.complete);
    EXPECT_EQ(first.statuses.size(), 2u);
    ASSERT_TRUE(eventually([&] { return session.last_state("t2") == "running"; }));
    for (std::size_t i = 1; i < session.status_messages().size(); ++i)
        EXPECT_FALSE(session.status_messages()[i].complete);

    // Reconnect: nothing is reported before the complete set; then one complete status with
    // every task this node knows, including t2, which the new set no longer holds.
    auto before = session.status_messages().size();
    executor->connected();
    driver.exit("t1", 0);
    std::this_thread::sleep_for(50ms);  // give a wrong early report the chance to show
    EXPECT_EQ(session.status_messages().size(), before);
    handle(assignments(true, 1, {task_add("t1")}));
    ASSERT_TRUE(eventually([&] { return session.status_messages().size() > before; }));
    auto snapshot = session.status_messages()[before];
    EXPECT_TRUE(snapshot.complete);
    std::map<std::string, std::string> listed;
    for (auto& s : snapshot.statuses) listed[s.task_id] = model::to_string(s.state);
    EXPECT_EQ(listed["t1"], "complete");
    EXPECT_TRUE(listed.contains("t2"));
    ASSERT_TRUE(eventually([&] { return session.last_state("t2") == "shutdown"; }));
    // A second complete set in the same session is no resynchronisation.
    auto count = session.status_messages().size();
    handle(assignments(true, 2, {task_add("t1")}));
    std::this_thread::sleep_for(50ms);
    for (std::size_t i = count; i < session.status_messages().size(); ++i)
        EXPECT_FALSE(session.status_messages()[i].complete);
}

TEST_F(ExecutorTest, KeepsTheLatestStatesWhileDisconnected) {
    handle(assignments(true, 1, {task_add("t1"), task_add("t2")}));
    ASSERT_TRUE(eventually([&] {
        return session.last_state("t1") == "running" && session.last_state("t2") == "running";
    }));
    session.up(false);
    driver.exit("t1", 0);
    handle(assignments(false, 2, {remove("Task", "t2")}));
    ASSERT_TRUE(eventually([&] { return state("t2") == "shutdown" && state("t1") == "complete"; }));
    auto before = session.status_messages().size();
    session.up(true);  // the old session took it back: the same session works again
    ASSERT_TRUE(eventually([&] {
        return session.last_state("t1") == "complete" && session.last_state("t2") == "shutdown";
    }));
    // One report per task with the latest state, not the whole history.
    std::map<std::string, int> reports;
    auto all = session.status_messages();
    for (std::size_t i = before; i < all.size(); ++i)
        for (auto& s : all[i].statuses) ++reports[s.task_id];
    EXPECT_EQ(reports["t1"], 1);
    EXPECT_EQ(reports["t2"], 1);
}

TEST_F(ExecutorTest, StatesKeptAcrossAReconnectGoInTheCompleteStatus) {
    handle(assignments(true, 1, {task_add("t1")}));
    ASSERT_TRUE(eventually([&] { return session.last_state("t1") == "running"; }));
    session.up(false);
    driver.exit("t1", 9);
    ASSERT_TRUE(eventually([&] { return state("t1") == "failed"; }));
    session.up(true);
    executor->connected();
    auto before = session.status_messages().size();
    handle(assignments(true, 1, {task_add("t1")}));
    ASSERT_TRUE(eventually([&] { return session.status_messages().size() > before; }));
    auto snapshot = session.status_messages()[before];
    EXPECT_TRUE(snapshot.complete);
    ASSERT_EQ(snapshot.statuses.size(), 1u);
    EXPECT_EQ(snapshot.statuses[0].state, model::TaskState::failed);
    ASSERT_TRUE(snapshot.statuses[0].container);
    EXPECT_EQ(snapshot.statuses[0].container->exit_code, 9);
    EXPECT_EQ(driver.starts("t1"), 1);
}

TEST_F(ExecutorTest, RemovedWhileStartingIsStoppedOnceStarted) {
    driver.hold_starts(true);
    handle(assignments(true, 1, {task_add("t1")}));
    ASSERT_TRUE(eventually([&] { return driver.starts("t1") == 1; }));
    handle(assignments(false, 2, {remove("Task", "t1")}));
    driver.hold_starts(false);
    ASSERT_TRUE(eventually([&] { return session.last_state("t1") == "shutdown"; }));
    EXPECT_FALSE(driver.running("t1"));
    EXPECT_EQ(driver.stops().size(), 1u);
}

TEST_F(ExecutorTest, RemovedBeforeItsStartRanIsNeverStarted) {
    driver.hold_starts(true);
    // One worker is held by t0; with the default four workers, hold them all.
    handle(assignments(
        true, 1, {task_add("h1"), task_add("h2"), task_add("h3"), task_add("h4"), task_add("t1")}));
    ASSERT_TRUE(eventually([&] {
        return driver.starts("h4") + driver.starts("h1") + driver.starts("h2") +
                   driver.starts("h3") ==
               4;
    }));
    handle(assignments(false, 2, {remove("Task", "t1")}));
    driver.hold_starts(false);
    ASSERT_TRUE(eventually([&] { return session.last_state("t1") == "shutdown"; }));
    EXPECT_EQ(driver.starts("t1"), 0);
}

TEST_F(ExecutorTest, StopsDoNotWaitForStartWorkers) {
    handle(assignments(true, 1, {task_add("t1")}));
    ASSERT_TRUE(eventually([&] { return session.last_state("t1") == "running"; }));
    // Every start worker (four by default) is held by a start that does not return.
    driver.hold_starts(true);
    handle(assignments(
        false, 2,
        {task_add("h1"), task_add("h2"), task_add("h3"), task_add("h4"), task_add("h5")}));
    ASSERT_TRUE(eventually([&] {
        return driver.starts("h1") + driver.starts("h2") + driver.starts("h3") +
                   driver.starts("h4") + driver.starts("h5") ==
               4;
    }));
    handle(assignments(false, 3, {remove("Task", "t1")}));
    EXPECT_TRUE(eventually([&] { return session.last_state("t1") == "shutdown"; }));
    driver.hold_starts(false);
}

TEST_F(ExecutorTest, FailedStartIsReported) {
    driver.fail_starts_ = true;
    handle(assignments(true, 1, {task_add("t1")}));
    ASSERT_TRUE(eventually([&] { return session.last_state("t1") == "failed"; }));
    handle(assignments(false, 2, {remove("Task", "t1")}));
    std::this_thread::sleep_for(20ms);
    EXPECT_TRUE(driver.stops().empty());
    EXPECT_EQ(session.last_state("t1"), "failed");
}

TEST_F(ExecutorTest, ADriverThatThrowsFailsTheTask) {
    driver.throw_starts_ = true;
    handle(assignments(true, 1, {task_add("t1")}));
    ASSERT_TRUE(eventually([&] { return session.last_state("t1") == "failed"; }));
    EXPECT_EQ(executor->task_status("t1")->reason, "runtime vanished");
}

TEST_F(ExecutorTest, BadInputIsLoggedAndIgnored) {
    handle(assignments(true, 1, {task_add("t1")}));
    ASSERT_TRUE(eventually([&] { return session.last_state("t1") == "running"; }));
    for (auto bad : {R"({"type":"assignments"})",
                     R"({"type":"assignments","Type":"full","Sequence":2,"Changes":[]})",
                     R"({"type":"assignments","Type":"incremental","Sequence":-1,"Changes":[]})",
                     R"({"type":"assignments","Type":"incremental","Sequence":2,"Changes":{}})",
                     R"({"type":"assignments","Type":"complete","Sequence":2,"Changes":"x"})",
                     R"({"type":"logs_request"})", R"({"type":"something_new","x":1})"})
        handle(bad);
    // A complete set that cannot be read is no complete set: t1 still runs.
    EXPECT_TRUE(driver.running("t1"));
    handle(raw_assignments(
        false, 2,
        {R"({"Action":"add","Task":{"ID":"../../etc","Image":"x"}})",
         R"({"Action":"add","Task":{"ID":"t2"}})",
         R"({"Action":"add","Secret":{"ID":"s9","Name":"n","Data":"not base64!"}})",
         R"({"Action":"explode","Task":{"ID":"t1"}})", R"(17)", R"({"Action":"add"})",
         R"({"Action":"add","Task":{"ID":"t3","Image":"busybox","Args":[1,2]}})",
         R"({"Action":"add","Task":{"ID":"t4","Image":"busybox","Limits":{"Pids":-1}}})",
         R"({"Action":"add","Task":{"ID":"t5","ServiceID":"svc","Slot":1,"Image":"busybox",)"
         R"("Args":["sleep","600"],"Secrets":[]}})"}));
    ASSERT_TRUE(eventually([&] { return session.last_state("t5") == "running"; }));
    EXPECT_EQ(session.last_state("t2"), "rejected");  // no image: refused with the reason
    EXPECT_EQ(session.last_state("t3"), "rejected");
    EXPECT_EQ(session.last_state("t4"), "rejected");
    EXPECT_NE(executor->task_status("t2")->reason.find("Image"), std::string::npos);
    EXPECT_EQ(executor->secrets_held(), 0u);
    EXPECT_TRUE(driver.running("t1"));
    EXPECT_EQ(driver.starts("t2") + driver.starts("t3") + driver.starts("t4"), 0);
}

TEST_F(ExecutorTest, AnswersLogsRequests) {
    auto dir = std::filesystem::temp_directory_path() / fmt::format("coffer-exec-{}", ::getpid());
    std::filesystem::create_directories(dir);
    driver.log_dir_ = dir.string();
    std::ofstream(dir / "t1.log") << "one\ntwo\nthree\n";
    handle(assignments(true, 1, {task_add("t1")}));
    ASSERT_TRUE(eventually([&] { return driver.running("t1"); }));
    handle(R"({"type":"logs_request","request":"r1","task_id":"t1","tail":2})");
    handle(R"({"type":"logs_request","request":7,"task_id":"t1","tail":0})");
    handle(R"({"type":"logs_request","request":"r3","task_id":"nope","tail":0})");
    handle(R"({"type":"logs_request","request":"r4","task_id":"../../etc/passwd","tail":0})");
    ASSERT_TRUE(eventually([&] { return session.of_type("logs").size() == 4; }));
    std::map<std::string, json::object> by_request;
    for (auto& m : session.of_type("logs")) by_request[json::serialize(m.at("request"))] = m;
    auto data = [](const json::object& m) {
        auto b = crypto::base64_decode_secure(m.at("data").as_string());
        return std::string(b->data(), b->data() + b->size());
    };
    EXPECT_EQ(data(by_request["\"r1\""]), "two\nthree\n");
    EXPECT_EQ(by_request["\"r1\""].at("task_id").as_string(), "t1");
    EXPECT_EQ(data(by_request["7"]), "one\ntwo\nthree\n");
    EXPECT_NE(by_request["\"r3\""].at("error").as_string().find("no task nope"), std::string::npos);
    EXPECT_FALSE(by_request["\"r3\""].contains("data"));
    EXPECT_EQ(by_request["\"r4\""].at("error").as_string(), "invalid task id");
    std::filesystem::remove_all(dir);
}

TEST_F(ExecutorTest, ShutdownStopsEveryTaskWithItsGrace) {
    handle(assignments(true, 1, {task_add("t1", {}, 1'000'000'000), task_add("t2")}));
    ASSERT_TRUE(eventually([&] { return driver.running("t1") && driver.running("t2"); }));
    executor->shutdown();
    EXPECT_FALSE(driver.running("t1"));
    EXPECT_FALSE(driver.running("t2"));
    auto stops = driver.stops();
    std::map<std::string, std::chrono::milliseconds> grace(stops.begin(), stops.end());
    EXPECT_EQ(grace["t1"], 1000ms);
    EXPECT_EQ(grace["t2"], 10000ms);
    handle(assignments(false, 2, {task_add("t3")}));  // ignored from now on
    EXPECT_EQ(driver.starts("t3"), 0);
}

TEST(NoopExecutor, RunsNothingButKeepsTheProtocol) {
    crypto::init();
    NoopDriver driver;
    FakeSession session;
    {
        Executor executor(driver,
                          [&](crypto::SecureBuffer b) { return session.send(std::move(b)); });
        executor.connected();
        executor.handle(message(assignments(
            true, 1,
            {secret_add("s1", "a", "x"), task_add("t1", {"s1"}), task_add("t2", {"s1"})})));
        ASSERT_TRUE(eventually([&] {
            return session.last_state("t1") == "running" && session.last_state("t2") == "running";
        }));
        EXPECT_EQ(driver.tasks_running(), 2u);
        EXPECT_EQ(driver.secrets_held(), 1u);
        executor.handle(message(assignments(
            false, 2, {remove("Task", "t1"), remove("Task", "t2"), remove("Secret", "s1")})));
        ASSERT_TRUE(eventually([&] {
            return session.last_state("t1") == "shutdown" && session.last_state("t2") == "shutdown";
        }));
        EXPECT_EQ(driver.tasks_running(), 0u);
        EXPECT_EQ(driver.secrets_held(), 0u);
        EXPECT_EQ(executor.secrets_held(), 0u);
        executor.handle(
            message(R"({"type":"logs_request","request":"r","task_id":"t1","tail":0})"));
        ASSERT_TRUE(eventually([&] { return session.of_type("logs").size() == 1; }));
        EXPECT_TRUE(session.of_type("logs")[0].contains("error"));
        executor.handle(message(assignments(false, 3, {task_add("t3")})));
        ASSERT_TRUE(eventually([&] { return driver.tasks_running() == 1; }));
    }
    EXPECT_EQ(driver.tasks_running(), 0u);  // the executor's shutdown stopped it
}

// Runs body on a thread of its own in a mount namespace of its own (unshare(CLONE_NEWNS) takes
// the calling thread's fs context along, not the other threads'): what it mounts never reaches
// this process's table, and ends with the thread, also when a check fails half-way.
void in_own_mount_namespace(const std::function<void()>& body) {
    std::thread t([&] {
        if (::unshare(CLONE_NEWNS) != 0 ||
            ::mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) != 0) {
            ADD_FAILURE() << "a mount namespace of its own: " << std::strerror(errno);
            return;
        }
        body();
    });
    t.join();
}

std::string file_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The mount at path in the calling thread's table.
std::optional<MountInfo> mount_at(const std::string& path) {
    for (auto& m : read_mountinfo("thread-self"))
        if (m.mount_point == path) return m;
    return std::nullopt;
}

// Its bytes, owner, group and mode, or "missing".
std::string describe_file(const std::string& path) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) return "missing";
    return fmt::format("{} {}:{} {:o}{}", file_bytes(path), st.st_uid, st.st_gid,
                       st.st_mode & 07777, S_ISREG(st.st_mode) ? "" : " not a file");
}

// The benchmark driver's secret files are real: a tmpfs per task with each file's bytes, owner
// and mode, read-only; replaced in place on a new version (not outside /run/secrets); gone at
// the task's stop and at the driver's end.
TEST(NoopDriver, WritesRealSecretFilesReplacesThemAndRemovesThem) {
    if (::geteuid() != 0) GTEST_SKIP() << "mounts need root";
    crypto::init();
    auto root = std::filesystem::temp_directory_path() / fmt::format("coffer-noop-{}", ::getpid());
    const auto tasks = (root / "tasks").string();
    std::filesystem::create_directories(tasks + "/left-by-a-killed-agent");
    const std::string b_bytes("b\0\xff", 3);
    in_own_mount_namespace([&] {
        {
            NoopDriver driver({.files_root = tasks});
            EXPECT_EQ(list_dir(tasks), std::vector<std::string>{});
            std::vector<std::string> states;
            driver.set_status_sink([&](const TaskStatus& s) {
                states.push_back(fmt::format("{} {}", s.id, to_string(s.state)));
            });
            // What the executor does: the bytes go to the store under a lease of its own, the
            // task gets a lease of its own on them.
            auto put = [&](std::string id, std::string_view bytes) {
                return driver.secrets().put(std::move(id), crypto::SecureBuffer::copy_of(bytes));
            };
            auto lease = [&](std::vector<std::string> ids) {
                auto l = driver.secrets().lease(ids);
                EXPECT_TRUE(l) << l.error().message;
                return l ? std::move(*l) : SecretLease{};
            };
            auto a1 = put("a1", "first\n");
            auto b1 = put("b1", b_bytes);
            TaskSpec spec;
            spec.id = "t1";
            spec.secrets = {{"a1", "db_pass", "", 1000, 1001, 0400},
                            {"b1", "api_key", "conf/key", 0, 2000, 0440},
                            {"b1", "api_key", "/etc/app/key", 0, 0, 0444}};
            auto st = driver.start(spec, lease({"a1", "b1"}));
            a1.reset();
            b1.reset();
            ASSERT_EQ(st.state, TaskState::running) << st.reason;
            EXPECT_EQ(states,
                      (std::vector<std::string>{"t1 preparing", "t1 starting", "t1 running"}));
            const auto dir = tasks + "/t1";
            EXPECT_EQ(describe_file(dir + "/run/db_pass"), "first\n 1000:1001 400");
            EXPECT_EQ(describe_file(dir + "/run/conf/key"), b_bytes + " 0:2000 440");
            EXPECT_EQ(describe_file(dir + "/abs/0"), b_bytes + " 0:0 444");
            auto m = mount_at(dir);
            ASSERT_TRUE(m) << dir << " is no mount point";
            EXPECT_EQ(m->fstype, "tmpfs");
            EXPECT_EQ(m->source, "coffer-secrets");
            EXPECT_TRUE(m->options.starts_with("ro,")) << m->options;
            // The process's own table holds none of the driver's mounts (other tests running
            // beside this one may have mounts of that source of their own, elsewhere).
            for (auto& other : read_mountinfo("self")) {
                if (!other.mount_point.starts_with(root.string())) continue;
                EXPECT_NE(other.source, "coffer-secrets") << other.mount_point;
            }
            UniqueFd writable(::open((dir + "/run/db_pass").c_str(), O_WRONLY | O_CLOEXEC));
            EXPECT_FALSE(writable) << "a secret file opened for writing";
            EXPECT_EQ(driver.secrets_held(), 2u);

            // A new version of a: its file only, with the same owner and mode; the old bytes go
            // with the old lease.
            auto a2 = put("a2", "second\n");
            auto refs = spec.secrets;
            refs[0].secret_id = "a2";
            auto updated = driver.update_secrets("t1", refs, lease({"a2", "b1"}), 0);
            a2.reset();
            ASSERT_TRUE(updated) << updated.error().message;
            EXPECT_EQ(describe_file(dir + "/run/db_pass"), "second\n 1000:1001 400");
            EXPECT_EQ(describe_file(dir + "/run/conf/key"), b_bytes + " 0:2000 440");
            EXPECT_TRUE(mount_at(dir)->options.starts_with("ro,"));
            EXPECT_EQ(driver.secrets_held(), 2u);

            // Refused: without a lease on the new version; at a target outside /run/secrets
            // (a container's bind there pins the old file); for a task that does not run.
            auto b2 = put("b2", "other");
            auto unleased = refs;
            unleased[1].secret_id = "b2";
            auto refused = driver.update_secrets("t1", unleased, lease({"a2", "b1"}), 0);
            ASSERT_FALSE(refused);
            EXPECT_EQ(refused.error().code, Errc::invalid_argument);
            auto outside = refs;
            outside[2].secret_id = "b2";
            refused = driver.update_secrets("t1", outside, lease({"a2", "b1", "b2"}), 0);
            ASSERT_FALSE(refused);
            EXPECT_NE(refused.error().message.find("outside /run/secrets"), std::string::npos)
                << refused.error().message;
            EXPECT_EQ(describe_file(dir + "/abs/0"), b_bytes + " 0:0 444");
            refused = driver.update_secrets("t2", refs, lease({"a2", "b1"}), 0);
            ASSERT_FALSE(refused);
            EXPECT_EQ(refused.error().code, Errc::not_found);
            b2.reset();

            // A start that fails half-way (its directory cannot be made) leaves nothing of its
            // own.
            std::filesystem::create_directories(tasks + "/t3");
            TaskSpec taken;
            taken.id = "t3";
            auto failed = driver.start(taken, {});
            EXPECT_EQ(failed.state, TaskState::failed) << failed.reason;
            EXPECT_EQ(driver.tasks_running(), 1u);
            std::filesystem::remove(tasks + "/t3");

            auto stopped = driver.stop("t1", 0ms);
            ASSERT_TRUE(stopped) << stopped.error().message;
            EXPECT_EQ(stopped->state, TaskState::shutdown);
            EXPECT_FALSE(mount_at(dir));
            EXPECT_EQ(describe_file(dir), "missing");
            EXPECT_EQ(driver.secrets_held(), 0u);

            // What still "runs" when the driver ends goes with it.
            auto a3 = put("a3", "third");
            spec.id = "t4";
            spec.secrets = {{"a3", "db_pass", "", 0, 0, 0444}};
            ASSERT_EQ(driver.start(spec, lease({"a3"})).state, TaskState::running);
            ASSERT_TRUE(mount_at(tasks + "/t4"));
        }
        EXPECT_FALSE(mount_at(tasks + "/t4"));
        EXPECT_EQ(list_dir(tasks), std::vector<std::string>{});
    });
    std::error_code ec;
    std::filesystem::remove_all(root, ec);
}

TEST(Assignments, ReadsTheDispatchersWireForm) {
    crypto::init();
    manager::AssignmentMessage m;
    m.complete = true;
    m.sequence = 1;
    manager::AssignmentChange s;
    s.is_secret = true;
    s.id = "sec1";
    s.version = 1;  // a task without recorded versions holds version 1
    s.secret = manager::AssignmentChange::Secret{
        "sec1", "db_pass", crypto::SecureBuffer::copy_of(std::string_view("p\0w\xff", 4))};
    m.changes.push_back(std::move(s));
    model::Task t;
    t.meta.id = "abcdefghijklmnopqrstuvwxy";
    t.service_id = "svc1";
    t.slot = 3;
    auto& c = t.spec.container;
    c.image = "busybox:latest";
    c.command = {"sh", "-c"};
    c.args = {"cat /run/secrets/db"};
    c.env = {"A=b"};
    c.user = "1000:1000";
    c.dir = "/srv";
    c.hostname = "web";
    c.read_only = true;
    c.cap_add = {"NET_ADMIN"};
    c.cap_drop = {"MKNOD"};
    c.stop_grace_period = 2'500'000'000;
    c.secrets = {{"sec1", "db_pass", "", "1000", "1001", 0400},
                 {"sec1", "db_pass", "/etc/app/pw", "0", "0", 0444}};
    t.spec.limits = {64 << 20, 500'000'000, 64};
    manager::AssignmentChange tc;
    tc.id = t.meta.id;
    tc.task = t;
    m.changes.push_back(std::move(tc));
    manager::AssignmentChange r;
    r.action = manager::AssignmentChange::Action::remove;
    r.id = "old";
    m.changes.push_back(std::move(r));

    auto parsed = parse_assignments(m.to_json());
    ASSERT_TRUE(parsed) << parsed.error().message;
    EXPECT_TRUE(parsed->complete);
    EXPECT_EQ(parsed->sequence, 1u);
    ASSERT_EQ(parsed->changes.size(), 3u);
    const auto& sec = parsed->changes[0];
    ASSERT_FALSE(sec.invalid) << *sec.invalid;
    ASSERT_TRUE(sec.secret);
    EXPECT_TRUE(sec.is_secret);
    EXPECT_EQ(sec.secret->name, "db_pass");
    EXPECT_TRUE(sec.secret->data.equals(
        crypto::SecureBuffer::copy_of(std::string_view("p\0w\xff", 4)).span()));
    const auto& task = parsed->changes[1];
    ASSERT_FALSE(task.invalid) << *task.invalid;
    ASSERT_TRUE(task.task);
    const auto& spec = task.task->spec;
    EXPECT_EQ(spec.id, t.meta.id);
    EXPECT_EQ(task.task->service_id, "svc1");
    EXPECT_EQ(spec.image, "busybox:latest");
    EXPECT_EQ(spec.args, (std::vector<std::string>{"sh", "-c", "cat /run/secrets/db"}));
    EXPECT_EQ(spec.env, (std::vector<std::string>{"A=b"}));
    EXPECT_EQ(spec.user, "1000:1000");
    EXPECT_EQ(spec.workdir, "/srv");
    EXPECT_EQ(spec.hostname, "web");
    EXPECT_TRUE(spec.read_only_rootfs);
    EXPECT_EQ(spec.limits.memory_bytes, 64 << 20);
    EXPECT_EQ(spec.limits.nano_cpus, 500'000'000);
    EXPECT_EQ(spec.limits.pids, 64);
    EXPECT_EQ(spec.cap_add, (std::vector<std::string>{"NET_ADMIN"}));
    EXPECT_EQ(spec.cap_drop, (std::vector<std::string>{"MKNOD"}));
    EXPECT_EQ(task.task->stop_grace, 2500ms);
    ASSERT_EQ(spec.secrets.size(), 2u);
    // The version the task holds is part of the key its bytes are held under.
    EXPECT_EQ(spec.secrets[0].secret_id, "sec1@1");
    EXPECT_EQ(sec.id, spec.secrets[0].secret_id);
    EXPECT_EQ(spec.secrets[0].target, "db_pass");
    EXPECT_EQ(spec.secrets[0].uid, 1000u);
    EXPECT_EQ(spec.secrets[0].gid, 1001u);
    EXPECT_EQ(spec.secrets[0].mode, 0400u);
    EXPECT_EQ(spec.secrets[1].target, "/etc/app/pw");
    const auto& rm = parsed->changes[2];
    EXPECT_EQ(rm.action, Change::Action::remove);
    EXPECT_FALSE(rm.is_secret);
    EXPECT_EQ(rm.id, "old");
}

TEST(Assignments, BadChangesAreMarkedWithoutSecretBytes) {
    crypto::init();
    auto text = raw_assignments(
        false, 4,
        {R"({"Action":"add","Secret":{"ID":"s1","Name":"n","Data":"aHVudGVyMg=!"}})",
         R"({"Action":"add","Task":{"ID":"UPPER","Image":"x"}})",
         R"({"Action":"add","Task":{"ID":"t1","Image":"x","Secrets":[{"SecretID":"s1","Name":"n","Mode":4095}]}})",
         R"({"Action":"add","Task":{"ID":"t2","Image":"x","Secrets":[{"SecretID":"s1","Name":"n","UID":"-1"}]}})",
         R"({"Action":"add","Task":{"ID":"t3","Image":"x","StopGracePeriod":-5}})",
         R"({"Action":"add","Secret":{"ID":"s2","Name":"log\ninjection","Data":""}})",
         R"({"Action":"add","Task":{"ID":"t4","Image":"busybox"}})"});
    auto parsed = parse_assignments(crypto::SecureBuffer::copy_of(text));
    ASSERT_TRUE(parsed) << parsed.error().message;
    ASSERT_EQ(parsed->changes.size(), 7u);
    for (std::size_t i = 0; i < 6; ++i) {
        ASSERT_TRUE(parsed->changes[i].invalid) << i;
        EXPECT_EQ(parsed->changes[i].invalid->find("aHVudGVy"), std::string::npos);
    }
    EXPECT_EQ(parsed->changes[0].id, "s1");
    EXPECT_TRUE(parsed->changes[1].id.empty());  // not a valid task id: not named
    EXPECT_EQ(parsed->changes[2].id, "t1");
    EXPECT_NE(parsed->changes[5].invalid->find("control character"), std::string::npos);
    EXPECT_FALSE(parsed->changes[6].invalid);
    EXPECT_FALSE(parse_assignments(crypto::SecureBuffer::copy_of(std::string_view("not json"))));
    EXPECT_FALSE(parse_assignments(crypto::SecureBuffer::copy_of(std::string_view("[]"))));
}

TEST(TaskIds, FollowTheRunnersRule) {
    EXPECT_TRUE(valid_task_id("abcdefghijklmnopqrstuvwxy"));
    EXPECT_TRUE(valid_task_id("web-1.2_x"));
    for (auto bad : {"", "-a", "A", "a/b", "..", "a b", "a\n"})
        EXPECT_FALSE(valid_task_id(bad)) << bad;
    EXPECT_FALSE(valid_task_id(std::string(65, 'a')));
}

class LogTail : public ::testing::Test {
  protected:
    void SetUp() override {
        dir = std::filesystem::temp_directory_path() / fmt::format("coffer-tail-{}", ::getpid());
        std::filesystem::create_directories(dir);
        path = (dir / "t.log").string();
    }
    void TearDown() override { std::filesystem::remove_all(dir); }
    std::filesystem::path dir;
    std::string path;
};

TEST_F(LogTail, LastLinesAcrossTheRotation) {
    EXPECT_EQ(read_log_tail(path, 0, 1024).value(), "");  // no log yet
    std::ofstream(path + ".1") << "a\nb\n";
    std::ofstream(path) << "c\nd\ne";
    EXPECT_EQ(read_log_tail(path, 0, 1024).value(), "a\nb\nc\nd\ne");
    EXPECT_EQ(read_log_tail(path, 2, 1024).value(), "d\ne");
    EXPECT_EQ(read_log_tail(path, 4, 1024).value(), "b\nc\nd\ne");
    EXPECT_EQ(read_log_tail(path, 100, 1024).value(), "a\nb\nc\nd\ne");
    std::ofstream(path) << "c\nd\n";
    EXPECT_EQ(read_log_tail(path, 1, 1024).value(), "d\n");
}

TEST_F(LogTail, BoundedWithoutAPartialLine) {
    std::ofstream(path + ".1") << "0123456789\n";
    std::ofstream(path) << "abc\ndef\n";
    // 10 bytes from the end: "9\nabc\ndef\n" would begin mid-line.
    EXPECT_EQ(read_log_tail(path, 0, 10).value(), "abc\ndef\n");
    EXPECT_EQ(read_log_tail(path, 0, 5).value(), "def\n");
}

TEST_F(LogTail, RefusesSymlinks) {
    std::filesystem::create_symlink("/etc/passwd", path);
    EXPECT_FALSE(read_log_tail(path, 0, 1024));
}

}  // namespace

// A config travels as a secret does, under "Config": the agent holds it under its store key and
// mounts it at its absolute target (a relative one under /).
TEST(Assignments, ConfigsBecomeFilesAtAbsoluteTargets) {
    crypto::init();
    manager::AssignmentMessage m;
    m.complete = true;
    m.sequence = 1;
    manager::AssignmentChange cfg;
    cfg.is_secret = true;
    cfg.is_config = true;
    cfg.id = "cfg1";
    cfg.secret = manager::AssignmentChange::Secret{
        "cfg1", "app", crypto::SecureBuffer::copy_of(std::string_view("listen 80"))};
    m.changes.push_back(std::move(cfg));
    model::Task t;
    t.meta.id = "abcdefghijklmnopqrstuvwxy";
    t.spec.container.image = "busybox:latest";
    t.spec.container.configs = {{"cfg1", "app", "/etc/app.conf", "1000", "1001", 0440},
                                {"cfg1", "app", "app", "0", "0", 0444}};
    manager::AssignmentChange tc;
    tc.id = t.meta.id;
    tc.task = t;
    m.changes.push_back(std::move(tc));
    manager::AssignmentChange gone;
    gone.action = manager::AssignmentChange::Action::remove;
    gone.is_secret = true;
    gone.is_config = true;
    gone.id = "cfg0";
    m.changes.push_back(std::move(gone));

    auto wire = m.to_json();
    auto v = boost::json::parse(
        std::string_view(reinterpret_cast<const char*>(wire.data()), wire.size()));
    EXPECT_EQ(v.at("Changes").at(0).at("Config").at("Name"), "app");
    EXPECT_EQ(v.at("Changes").at(1).at("Task").at("Configs").at(0).at("ConfigID"), "cfg1");
    EXPECT_EQ(v.at("Changes").at(2).at("Config").at("ID"), "cfg0");

    auto parsed = parse_assignments(wire);
    ASSERT_TRUE(parsed) << parsed.error().message;
    ASSERT_EQ(parsed->changes.size(), 3u);
    const auto& c = parsed->changes[0];
    ASSERT_FALSE(c.invalid) << *c.invalid;
    EXPECT_TRUE(c.is_secret);
    EXPECT_EQ(c.id, config_store_key("cfg1"));
    EXPECT_NE(c.id, "cfg1");  // never the key of a secret of the same id
    EXPECT_TRUE(
        c.secret->data.equals(crypto::SecureBuffer::copy_of(std::string_view("listen 80")).span()));
    const auto& spec = parsed->changes[1].task->spec;
    ASSERT_EQ(spec.secrets.size(), 2u);
    EXPECT_EQ(spec.secrets[0].secret_id, config_store_key("cfg1"));
    EXPECT_EQ(spec.secrets[0].target, "/etc/app.conf");
    EXPECT_EQ(spec.secrets[0].uid, 1000u);
    EXPECT_EQ(spec.secrets[0].gid, 1001u);
    EXPECT_EQ(spec.secrets[0].mode, 0440u);
    EXPECT_EQ(spec.secrets[1].target, "/app");
    EXPECT_EQ(parsed->changes[2].id, config_store_key("cfg0"));
    EXPECT_TRUE(parsed->changes[2].is_secret);
    // The files the runner writes: a config at its path, not under /run/secrets.
    auto files = plan_secret_files(spec.secrets);
    ASSERT_TRUE(files) << files.error().message;
    EXPECT_EQ((*files)[0].path, "/etc/app.conf");
    EXPECT_EQ((*files)[1].path, "/app");
}
