// What the agent is asked to run, and what it reports back.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "coffer/crypto/secure_buffer.h"
#include "coffer/model/ids.h"

namespace coffer::agent {

// A secret the task gets as a file. The bytes travel separately (SecretBytes), keyed by secret_id.
struct SecretRef {
    std::string secret_id;
    std::string name;    // the secret's name; the default target
    std::string target;  // relative: under /run/secrets; absolute: that path in the container
    std::uint32_t uid = 0;
    std::uint32_t gid = 0;
    std::uint32_t mode = 0444;
};

// A filesystem the task gets at target.
struct TaskMount {
    enum class Type { bind, volume, tmpfs };
    Type type = Type::volume;
    std::string source;  // bind: absolute host path; volume: its name, empty for an anonymous one
    std::string target;  // absolute, in the container; resolved in the rootfs like secret targets
    bool read_only = false;
    bool non_recursive = false;  // bind: without the mounts below the source
    bool no_copy = false;        // volume: no copy of the image's content into a new volume
    std::map<std::string, std::string> labels;  // volume: for a volume this task creates
    std::int64_t size_bytes = 0;                // tmpfs; 0: the kernel's default
    std::uint32_t mode = 0;                     // tmpfs; 0: 1777
};

struct Limits {
    std::int64_t memory_bytes = 0;  // 0: unlimited
    std::int64_t nano_cpus = 0;     // 1e9 = one CPU; 0: unlimited
    std::int64_t pids = 0;          // 0: unlimited
};

// A health check (Docker's HealthConfig). As given by the service, it is merged with the image's
// HEALTHCHECK field by field (effective_healthcheck, health.h); durations in nanoseconds, 0: not
// set.
struct HealthCheck {
    std::vector<std::string> test;  // empty: not set; {"NONE"}; {"CMD", ...}; {"CMD-SHELL", cmd}
    std::int64_t interval_ns = 0;
    std::int64_t timeout_ns = 0;
    std::int64_t start_period_ns = 0;
    std::int64_t start_interval_ns = 0;
    std::int64_t retries = 0;
};

// A resource limit of the task's process (ulimit name, as Docker's: "nofile"); -1: unlimited.
struct Rlimit {
    std::string name;
    std::int64_t soft = 0;
    std::int64_t hard = 0;
};

// The task's /etc/resolv.conf; all empty: the node's, without its loopback nameservers.
struct DnsSettings {
    std::vector<std::string> nameservers;
    std::vector<std::string> search;
    std::vector<std::string> options;
};

// What serves a task's secret files: a tmpfs of their own, or the agent's FUSE filesystem
// (fuse_mount/) from its locked memory. automatic: the agent's choice (RunnerOptions).
enum class SecretBackend { automatic, tmpfs, fuse };
std::string_view to_string(SecretBackend b) noexcept;  // "auto", "tmpfs", "fuse"
// "auto", "tmpfs" or "fuse"; nullopt for anything else.
std::optional<SecretBackend> secret_backend_from(std::string_view text) noexcept;

// What a task read of one secret (all its files of it together), from a mount that counts reads
// (FUSE; tmpfs counts nothing).
struct SecretReads {
    std::string secret_id;  // the store key, as SecretRef::secret_id
    std::uint64_t opens = 0;
    std::uint64_t reads = 0;
    std::int64_t first_read_ns = 0;  // Unix time; 0 until the first read
    std::int64_t last_read_ns = 0;
    bool operator==(const SecretReads&) const = default;
};

// The task's interface on one network: the network is described by the node's networks
// (nodeproto::NetworkPayload), by id.
struct TaskNetworkAttachment {
    std::string network_id;
    std::string address;  // IPv4/prefix
    std::vector<std::string> aliases;
};

// A port published in host mode (CNI portmap on this node).
struct TaskHostPort {
    std::string protocol = "tcp";
    std::uint16_t target_port = 0;
    std::uint16_t published_port = 0;
};

struct TaskSpec {
    std::string id;     // model::valid_task_id
    std::string image;  // name[:tag] in the local image store, or a manifest digest sha256:...
    std::vector<std::string> args;  // empty: the image's entrypoint and cmd
    std::vector<std::string> env;   // KEY=VALUE, after the image's
    std::string user;               // "uid[:gid]"; empty: the image's, else 0:0
    std::string workdir;            // empty: the image's, else /
    std::string hostname;           // empty: the first 12 characters of the id
    bool read_only_rootfs = false;
    bool user_namespace = false;
    Limits limits;
    std::vector<std::string> cap_add;  // "NET_ADMIN" or "CAP_NET_ADMIN"; "ALL"
    std::vector<std::string> cap_drop;
    std::vector<SecretRef> secrets;
    std::optional<HealthCheck> healthcheck{};  // absent: the image's, if any
    // Task options (model/task_options.h checks them). user above may also name a user of the
    // image's /etc/passwd ("app", "app:staff", "1000:staff").
    std::vector<std::string> groups;  // supplementary groups: names of the image's or numbers
    bool init = false;                // tini as pid 1, in front of the task's process
    std::string stop_signal;          // what stop() sends first; empty: SIGTERM
    std::map<std::string, std::string> sysctls;
    std::vector<Rlimit> ulimits;
    std::vector<std::string> extra_hosts;  // "IP host [aliases...]" lines for /etc/hosts
    DnsSettings dns;
    std::optional<int> oom_score_adj;
    std::vector<TaskMount> mounts;
    bool host_network = false;  // the node's network namespace; networks is then empty
    std::vector<TaskNetworkAttachment> networks;
    std::vector<TaskHostPort> host_ports;
    // The key, in the node's secret store, of a docker config.json with the credentials the
    // image is pulled with (a secret delivered with the task); "": pulled anonymously.
    std::string registry_auth;
    // What serves its secret files; automatic: the agent's default.
    SecretBackend secret_mount = SecretBackend::automatic;
};

// The rule for TaskSpec::id (it names directories and cgroups): model's task id.
using model::valid_task_id;

// Secret bytes by secret id, in secure memory.
using SecretBytes = std::map<std::string, crypto::SecureBuffer, std::less<>>;

// Swarm's task states, in order.
enum class TaskState { new_, preparing, starting, running, complete, failed, shutdown, rejected };

std::string_view to_string(TaskState s) noexcept;

// A task with a health check: starting until its first healthy probe (the task stays in state
// starting meanwhile), healthy, then unhealthy once enough probes failed in a row (the task is
// killed and fails). none: no health check.
enum class Health { none, starting, healthy, unhealthy };
std::string_view to_string(Health h) noexcept;
inline bool is_final(TaskState s) noexcept {
    return s >= TaskState::complete;
}

struct TaskStatus {
    std::string id;
    TaskState state = TaskState::new_;
    std::optional<int> exit_code;  // set once the process exited
    bool oom_killed = false;
    std::string reason;  // why it failed or was rejected; never holds secret bytes
    int pid = 0;         // the container's init as the agent sees it, while running
    Health health{Health::none};
    // An unhealthy task's last probe output, summarised (probe_output_summary): the task's own
    // output, which may hold anything it can read. It goes to the manager with the task's error,
    // as its logs do, and is never logged.
    std::string health_output{};
    // Its secrets' reads, in a final status (as they stood at its teardown) and from
    // Runner::status() while it runs; empty on a mount that counts nothing.
    std::vector<SecretReads> secret_reads{};
};

}  // namespace coffer::agent
