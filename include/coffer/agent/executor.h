// The agent's side of the session protocol's work (docs/design.md, "The session protocol"): holds
// the node's desired set from the manager's "assignments", starts and stops tasks through a
// TaskDriver on a small worker pool (never on the session's I/O thread), answers "logs_request",
// and reports task states to the manager in "status" messages.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "coffer/agent/secret_store.h"
#include "coffer/agent/task.h"
#include "coffer/agent/volumes.h"
#include "coffer/base/error.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/nodeconn/message.h"

namespace coffer::agent {

// What actually runs a task: the Runner (task_drivers.h), nothing (a benchmark mode), or a test
// double. The executor calls start() and stop() for one task at a time and never twice at once.
class TaskDriver {
  public:
    using StatusSink = std::function<void(const TaskStatus&)>;

    virtual ~TaskDriver() = default;
    // Every state change of every task goes to sink, from the driver's threads (also from within
    // start() and stop()). Replaces the previous sink; once it returns, the previous one is no
    // longer called. nullptr detaches.
    virtual void set_status_sink(StatusSink sink) = 0;
    // Where the bytes of the tasks' secrets are held, each secret once: the executor keeps the
    // secrets the manager assigns to the node there, under leases of its own, and hands start()
    // a lease on the task's. Lives as long as the driver.
    virtual SecretStore& secrets() = 0;
    // Blocks until the task runs or could not start. secrets: a lease in secrets() on each of
    // the spec's secrets; the driver keeps one for as long as the task may need the bytes.
    virtual TaskStatus start(const TaskSpec& spec, SecretLease secrets) = 0;
    // SIGTERM, SIGKILL after grace; returns the final status once torn down. not_found for a
    // task the driver does not know.
    virtual Result<TaskStatus> stop(std::string_view id, std::chrono::milliseconds grace) = 0;
    // Replaces the files of a running task's secrets in place with those of refs (the same
    // targets, other secret versions), each atomically for a reader, then sends signal (0: none)
    // to its main process. secrets: a lease on refs' ids in secrets(), kept instead of the old
    // one. invalid_argument when the driver cannot; not_found for a task it does not run.
    virtual Result<void> update_secrets(std::string_view id, const std::vector<SecretRef>& refs,
                                        SecretLease secrets, int signal) {
        (void)id, (void)refs, (void)secrets, (void)signal;
        return make_error(Errc::invalid_argument, "this driver cannot replace a task's secrets");
    }
    // What a running task read of its secrets so far (a mount that counts reads); empty when the
    // driver counts none or does not run the task.
    virtual std::vector<SecretReads> secret_reads(std::string_view id) const {
        (void)id;
        return {};
    }
    // Where the task's output is kept; empty when the driver keeps none.
    virtual std::string log_path(std::string_view id) const = 0;
    // The node's named volumes, reported to the manager and removed at its request; null when
    // the driver keeps none (status messages then say nothing about volumes).
    virtual VolumeStore* volumes() { return nullptr; }
};

struct ExecutorOptions {
    unsigned workers = 4;  // threads starting tasks and reading logs
    // Threads stopping tasks: a stop holds one until its task ended (up to the grace period), so
    // stops have threads of their own and never hold starts back. 0: stops run on the workers
    // (for a driver whose stop returns at once).
    unsigned stop_workers = 4;
    std::size_t max_log_bytes = 1 << 20;          // per logs answer, before base64
    std::size_t retired_kept = 1024;              // ended tasks remembered so they never run twice
    std::chrono::milliseconds retry_initial{50};  // a status the session did not take: retried
    std::chrono::milliseconds retry_max{1000};
    // How often running tasks' secret read counts are looked at; a task whose count moved is
    // reported again (with its reads). 0: reads go only with a status sent for another reason.
    std::chrono::milliseconds reads_interval{10000};
};

class Executor {
  public:
    // Sends a message to the manager; false when it could not be queued (no session).
    using Send = std::function<bool(crypto::SecureBuffer)>;

    // driver is borrowed for the executor's lifetime; send is called from the executor's own
    // reporting thread only.
    Executor(TaskDriver& driver, Send send, ExecutorOptions options = {});
    // shutdown()s.
    ~Executor();
    Executor(const Executor&) = delete;
    Executor& operator=(const Executor&) = delete;

    // A message from the manager: "assignments", "logs_request" and "volume_remove" are handled,
    // anything else is
    // ignored. Never blocks on a task; call it from the session's I/O thread. Bad input is
    // logged and ignored (a task add that names a valid id but cannot be read is rejected).
    void handle(const nodeconn::Message& message);
    // A new session opened: status reports wait for its first complete set, then a
    // {"complete":true} status lists every task this node knows, then changes follow.
    void connected();
    // Stops every task with its grace period, waits for the teardowns and stops reporting.
    // Later messages are ignored. Idempotent.
    void shutdown();

    // For tests and benchmarks: the latest state the executor knows for a task, the secrets in
    // its set (leased in the driver's store, which holds the bytes), the tasks in its set.
    std::optional<TaskStatus> task_status(std::string_view id) const;
    std::size_t secrets_held() const;
    std::size_t tasks_wanted() const;
    // The tasks the executor holds (in its set, or leaving it and still reporting), counted by
    // their latest state; every state is listed (metrics).
    std::vector<std::pair<TaskState, std::size_t>> tasks_by_state() const;

    class Impl;

  private:
    std::unique_ptr<Impl> impl_;
};

}  // namespace coffer::agent
