// manager -> node "assignments": what the node runs and the secrets its tasks mount. Secret bytes
// stay in secure memory through encode (base64 into the message's secure text) and decode
// (base64 from the message's secure parse tree straight into a SecureBuffer).
//
// {"type":"assignments","Type":"complete"|"incremental","Sequence":N,"Changes":[
//   {"Action":"add","Secret":{"ID","Name","Data"}}, {"Action":"add","Config":{"ID","Name","Data"}},
//   {"Action":"add","Task":{"ID","ServiceID","Slot","Image","Args","Env","User","Dir","Hostname",
//     "ReadOnly","Limits":{"MemoryBytes","NanoCPUs","Pids"},"CapAdd","CapDrop","StopGracePeriod",
//     "Secrets":[{"SecretID","Name","Target","UID","GID","Mode"}],
//     "Healthcheck":{"Test","Interval","Timeout","StartPeriod","StartInterval","Retries"},
//     "Groups","Init","StopSignal","Sysctls":{K:V},"Ulimits":[{"Name","Soft","Hard"}],"Hosts",
//     "DNSConfig":{"Nameservers","Search","Options"},"OomScoreAdj",
//     "Mounts" (only when there are any):[{"Type","Source","Target","ReadOnly","NonRecursive",
//       "NoCopy","Labels","SizeBytes","Mode"}],
//     "Configs":[{"ConfigID","Name","Target","UID","GID","Mode"}],
//     "NetworkMode" (only "host"), "Networks" (only when there are any):[{"NetworkID","Address",
//       "Aliases"}], "HostPorts" (only when there are any):[{"Protocol","TargetPort",
//       "PublishedPort"}], "SecretSignal", "RegistryAuth":{"SecretID","Version"}}},
//   {"Action":"remove","Task":{"ID"}}, {"Action":"remove","Secret"|"Config":{"ID"}}]}
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "coffer/base/error.h"
#include "coffer/crypto/secure_buffer.h"

namespace coffer::nodeproto {

inline constexpr std::int64_t default_stop_grace_ns = 10'000'000'000;

// A secret (or config) a task gets as a file.
struct SecretFile {
    std::string secret_id;  // the config's id in TaskPayload::configs
    std::string name;       // the secret's name
    std::string target;     // empty: the name, under /run/secrets (a config's: under /)
    std::string uid;  // decimal, as in Docker's API ("" is 0); integers are accepted on decode
    std::string gid;
    std::uint32_t mode = 0444;
    // The secret version the task holds ("Version"; a secret's only): the bytes come from the
    // secret change with the same id and version. 0: absent (a manager without versions).
    std::uint64_t version = 0;
    bool operator==(const SecretFile&) const = default;
};

// A filesystem a task gets at Target (model::MountSpec on the wire).
struct MountPayload {
    enum class Type { bind, volume, tmpfs };
    Type type = Type::volume;
    std::string source;  // bind: absolute host path; volume: its name, empty for an anonymous one
    std::string target;  // absolute
    bool read_only = false;
    bool non_recursive = false;                 // bind
    bool no_copy = false;                       // volume
    std::map<std::string, std::string> labels;  // volume: for a volume the task creates
    std::int64_t size_bytes = 0;                // tmpfs; 0: the kernel's default
    std::uint32_t mode = 0;                     // tmpfs; 0: 1777
    bool operator==(const MountPayload&) const = default;
};

struct TaskLimits {
    std::int64_t memory_bytes = 0;
    std::int64_t nano_cpus = 0;
    std::int64_t pids = 0;
    bool operator==(const TaskLimits&) const = default;
};

// The service's health check as given (ContainerSpec.Healthcheck); the node merges it with the
// image's HEALTHCHECK. Durations in nanoseconds, 0: the image's or Docker's default.
struct HealthCheck {
    std::vector<std::string> test;  // empty: the image's; {"NONE"}; {"CMD",...}; {"CMD-SHELL",cmd}
    std::int64_t interval_ns = 0;
    std::int64_t timeout_ns = 0;
    std::int64_t start_period_ns = 0;
    std::int64_t start_interval_ns = 0;
    std::int64_t retries = 0;
    bool operator==(const HealthCheck&) const = default;
};

// One rlimit of a task: ContainerSpec.Ulimits[] (-1: unlimited).
struct TaskUlimit {
    std::string name;
    std::int64_t soft = 0;
    std::int64_t hard = 0;
    bool operator==(const TaskUlimit&) const = default;
};

// The task's address on one of its networks (nodeproto/networks.h has the networks themselves).
struct TaskNetwork {
    std::string network_id;
    std::string address;  // IPv4/prefix, "10.0.1.7/24"
    std::vector<std::string> aliases;
    bool operator==(const TaskNetwork&) const = default;
};

// A port published in host mode: the node running the task answers on published_port.
struct HostPort {
    std::string protocol = "tcp";  // "tcp" | "udp"
    std::uint16_t target_port = 0;
    std::uint16_t published_port = 0;
    bool operator==(const HostPort&) const = default;
};

struct TaskPayload {
    std::string id;
    std::string service_id;
    std::uint64_t slot = 0;
    std::string image;
    std::vector<std::string> args;  // the container's command followed by its args
    std::vector<std::string> env;
    std::string user;
    std::string dir;
    std::string hostname;
    bool read_only = false;
    TaskLimits limits;
    std::vector<std::string> cap_add;
    std::vector<std::string> cap_drop;
    std::int64_t stop_grace_ns = default_stop_grace_ns;  // at most a day
    std::vector<SecretFile> secrets;
    std::optional<HealthCheck> healthcheck{};  // absent: the image's
    // Task options, as in ContainerSpec; decode checks them with model::validate_task_options.
    std::vector<std::string> groups;
    bool init = false;
    std::string stop_signal;
    std::map<std::string, std::string> sysctls;
    std::vector<TaskUlimit> ulimits;
    std::vector<std::string> hosts;  // "IP host [aliases...]"
    std::vector<std::string> dns_nameservers;
    std::vector<std::string> dns_search;
    std::vector<std::string> dns_options;
    std::optional<std::int64_t> oom_score_adj;
    std::vector<MountPayload> mounts;
    std::vector<SecretFile> configs;
    // Networks: "host" runs the task in the node's network namespace (networks must be empty);
    // "" gives it a namespace of its own, with an interface on each of networks (none: loopback).
    std::string network_mode;
    std::vector<TaskNetwork> networks;
    std::vector<HostPort> host_ports;
    // "SecretSignal": sent to the task's main process after its secret files were replaced in
    // place (a task sent again with other secret versions); empty: none.
    std::string secret_signal;
    // "SecretMount": what serves the task's secret files, "tmpfs" or "fuse"; empty: the node's
    // default.
    std::string secret_mount;
    // "RegistryAuth":{"SecretID","Version"}: the secret (sent as any other, never mounted) that
    // holds a docker config.json the image is pulled with; empty id: none.
    std::string registry_auth_id;
    std::uint64_t registry_auth_version = 0;
    bool operator==(const TaskPayload&) const = default;
};

struct SecretPayload {
    std::string id;
    std::string name;
    crypto::SecureBuffer data;
    std::uint64_t version = 0;  // "Version": which of the secret's versions data is; 0: absent
};

struct Change {
    enum class Action { add, remove };
    Action action = Action::add;
    bool is_secret = false;
    // A config's change ("Config" on the wire): is_secret is set too, and secret holds its bytes.
    bool is_config = false;
    std::string id;  // the task's or the secret's id; valid for its kind when set
    // A secret's add or remove: the version ("Version"; 0 when absent). A node holds each
    // version of a secret apart, under (id, version).
    std::uint64_t version = 0;
    // For an add, the one that matches is_secret.
    std::optional<TaskPayload> task;
    std::optional<SecretPayload> secret;
    // Decode only: set when the change could not be read, with why (never secret bytes). id is
    // set too when the change named a valid id, so a bad task add can be rejected, not lost.
    std::optional<std::string> invalid;
};

struct Assignments {
    bool complete = false;       // the node's full set: it drops anything else
    std::uint64_t sequence = 0;  // 1, 2, ... per session
    std::vector<Change> changes;
};

// In secure memory.
crypto::SecureBuffer encode(const Assignments& m);
// invalid_argument when the message itself is unreadable (not JSON, no valid Type, Sequence or
// Changes); a bad change is returned marked invalid and the others are kept.
Result<Assignments> decode_assignments(const crypto::SecureBuffer& text);

}  // namespace coffer::nodeproto
