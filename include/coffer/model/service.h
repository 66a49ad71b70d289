// Services, tasks and nodes in the Docker Engine API's terms. A spec keeps the JSON it was given
// (so fields coffer does not interpret, such as Networks or EndpointSpec, are echoed unchanged);
// the fields coffer acts on are parsed from it and validated.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "coffer/base/error.h"
#include "coffer/model/secret.h"
#include "coffer/model/time.h"

namespace coffer::model {

inline constexpr std::int64_t second_ns = 1'000'000'000;

// TaskTemplate.ContainerSpec.Secrets[]: a file target for a secret.
struct SecretReference {
    std::string secret_id;
    std::string secret_name;
    std::string file_name;  // File.Name: relative to /run/secrets, or absolute
    std::string uid = "0";  // strings, as in Docker's API
    std::string gid = "0";
    std::uint32_t mode = 0444;
    // A pinned version ("SecretName": "<name>@<n>"); 0: the reference follows the secret's
    // current version.
    std::uint64_t pinned_version = 0;
    bool operator==(const SecretReference&) const = default;
};

// TaskTemplate.ContainerSpec.Healthcheck, as Docker's HealthConfig. Durations in nanoseconds;
// 0 (and an empty test) leave the field to the image's HEALTHCHECK, then to Docker's defaults
// (30 s interval and timeout, 3 retries, no start period, 5 s start interval).
struct HealthConfig {
    std::vector<std::string> test;  // {"NONE"} | {"CMD", arg...} | {"CMD-SHELL", command}
    std::int64_t interval = 0;
    std::int64_t timeout = 0;
    std::int64_t start_period = 0;
    std::int64_t start_interval = 0;
    std::int64_t retries = 0;
    bool operator==(const HealthConfig&) const = default;
};

// ContainerSpec.Ulimits[]: one resource limit ("nofile", soft, hard).
struct Ulimit {
    std::string name;
    std::int64_t soft = 0;
    std::int64_t hard = 0;
    bool operator==(const Ulimit&) const = default;
};

// ContainerSpec.DNSConfig: the task's /etc/resolv.conf; all empty: the node's.
struct DnsConfig {
    std::vector<std::string> nameservers;
    std::vector<std::string> search;
    std::vector<std::string> options;
    bool operator==(const DnsConfig&) const = default;
};

// TaskTemplate.ContainerSpec.Mounts[]: a filesystem the task's container gets at target.
enum class MountType { bind, volume, tmpfs };
struct MountSpec {
    MountType type = MountType::volume;
    std::string source;  // bind: an absolute host path; volume: its name (empty: anonymous)
    std::string target;  // absolute path in the container
    bool read_only = false;
    bool non_recursive = false;    // bind: BindOptions.NonRecursive (no submounts)
    bool no_copy = false;          // volume: VolumeOptions.NoCopy
    Labels volume_labels;          // volume: VolumeOptions.Labels, given to a volume it creates
    std::int64_t tmpfs_size = 0;   // tmpfs: bytes; 0: the kernel's default (half of memory)
    std::uint32_t tmpfs_mode = 0;  // tmpfs: permission bits; 0: 1777
    bool operator==(const MountSpec&) const = default;
};

// TaskTemplate.ContainerSpec.Configs[]: a file target for a config. Runtime targets (credential
// specs) are refused.
struct ConfigReference {
    std::string config_id;
    std::string config_name;
    std::string file_name;  // File.Name: absolute, or relative to / (Docker's rule)
    std::string uid = "0";
    std::string gid = "0";
    std::uint32_t mode = 0444;
    bool operator==(const ConfigReference&) const = default;
};

// Where a config reference's file lands in the container: File.Name when absolute, else under /.
std::string config_target_path(std::string_view file_name);

// Where a file of a task's secret mount lands, as every node computes it: target (under
// /run/secrets unless absolute) with empty and "." components dropped. invalid_argument, the
// message the reason alone, for a target no node takes: empty, "..", NUL, too long, at or above
// /run/secrets, at / or in /proc, /sys or /dev.
Result<std::string> secret_file_path(std::string_view target);
// "/", or at or under /proc, /sys or /dev: no file or mount of a task's lands there.
bool forbidden_destination(std::string_view path) noexcept;
// A task's hostname as the runtime sets it: 1 to 63 letters, digits, '-' and '.'.
bool valid_task_hostname(std::string_view h) noexcept;
// The longest StopGracePeriod a node waits: a day.
inline constexpr std::int64_t max_stop_grace_ns = 86'400 * second_ns;

struct ContainerSpec {
    std::string image;
    std::vector<std::string> command;
    std::vector<std::string> args;
    std::vector<std::string> env;
    std::string user;
    std::string dir;
    std::string hostname;
    bool read_only = false;
    std::vector<std::string> cap_add;
    std::vector<std::string> cap_drop;
    std::optional<std::int64_t> stop_grace_period;  // nanoseconds
    std::vector<SecretReference> secrets;
    std::optional<HealthConfig> healthcheck{};
    // Task options (validated by validate_task_options, model/task_options.h).
    std::vector<std::string> groups;  // supplementary groups, names or numbers
    bool init = false;                // tini as the task's pid 1
    std::string stop_signal;          // "SIGQUIT", "QUIT" or "3"; empty: SIGTERM
    Labels sysctls;
    std::vector<Ulimit> ulimits;
    std::vector<std::string> hosts;  // "IP host [aliases...]", as Docker's API has them
    DnsConfig dns;
    std::optional<std::int64_t> oom_score_adj;
    std::vector<MountSpec> mounts;
    std::vector<ConfigReference> configs;
    // coffer's "CofferRegistryAuth":{"SecretID","SecretName"}: the secret holding a docker
    // config.json the image is pulled with; sent to the nodes that run the service's tasks as
    // other secrets are, never mounted.
    std::optional<SecretReference> registry_auth;
    bool operator==(const ContainerSpec&) const = default;
};

struct ResourceLimits {
    std::int64_t memory_bytes = 0;
    std::int64_t nano_cpus = 0;
    std::int64_t pids = 0;
    bool operator==(const ResourceLimits&) const = default;
};

enum class RestartCondition { none, on_failure, any };

// Absent fields take Docker's defaults: any, 5 s, unlimited attempts, no window.
struct RestartPolicy {
    RestartCondition condition = RestartCondition::any;
    std::int64_t delay = 5 * second_ns;
    std::uint64_t max_attempts = 0;  // 0: unlimited
    std::int64_t window = 0;         // 0: attempts counted over the slot's whole history
    bool operator==(const RestartPolicy&) const = default;
};

enum class FailureAction { pause, cont, rollback };
enum class UpdateOrder { stop_first, start_first };

// UpdateConfig and RollbackConfig; absent fields take Docker's defaults.
struct UpdateConfig {
    std::uint64_t parallelism = 1;  // 0: all at once
    std::int64_t delay = 0;
    FailureAction failure_action = FailureAction::pause;
    std::int64_t monitor = 5 * second_ns;
    double max_failure_ratio = 0;
    UpdateOrder order = UpdateOrder::stop_first;
    bool operator==(const UpdateConfig&) const = default;
};

// One constraint: "node.hostname==x", "node.labels.k!=v", ...
struct Constraint {
    std::string key;  // node.id, node.hostname, node.role, node.labels.<k>
    bool equal = true;
    std::string value;
    bool operator==(const Constraint&) const = default;
};

// A generic resource (Docker's GenericResources[] entry): a named one ("gpu"="UUID1", one unit)
// or a discrete count ("ssd"=3). Nodes advertise both kinds; a task reserves discrete counts only.
struct GenericResource {
    std::string kind;
    std::string named;          // NamedResourceSpec.Value; empty for a discrete one
    std::int64_t discrete = 0;  // DiscreteResourceSpec.Value
    bool is_named() const noexcept { return !named.empty(); }
    bool operator==(const GenericResource&) const = default;
};

// Resources.Reservations: what the scheduler sets aside on a node for the task.
struct ResourceReservations {
    std::int64_t memory_bytes = 0;
    std::int64_t nano_cpus = 0;
    std::vector<GenericResource> generic;  // discrete only
    bool operator==(const ResourceReservations&) const = default;
};

// Placement.Platforms[]: an empty field matches any value.
struct Platform {
    std::string architecture;
    std::string os;
    bool operator==(const Platform&) const = default;
};

// TaskTemplate.Networks[] (or the deprecated Spec.Networks): a network the tasks are attached
// to. target is the network's ID once the manager has resolved it (a request may name it).
struct NetworkAttachmentConfig {
    std::string target;
    std::vector<std::string> aliases;
    bool operator==(const NetworkAttachmentConfig&) const = default;
};

// EndpointSpec.Ports[].
enum class PublishMode { ingress, host };
struct PortConfig {
    std::string name;
    std::string protocol = "tcp";  // tcp | udp
    std::uint32_t target_port = 0;
    std::uint32_t published_port = 0;  // 0: allocated (ingress) or any free port (host)
    PublishMode publish_mode = PublishMode::ingress;
    bool operator==(const PortConfig&) const = default;
};

struct EndpointSpec {
    std::string mode = "vip";  // vip | dnsrr
    std::vector<PortConfig> ports;
    bool operator==(const EndpointSpec&) const = default;
};

struct TaskTemplate {
    ContainerSpec container;
    ResourceLimits limits;
    RestartPolicy restart;
    std::vector<Constraint> constraints;
    ResourceReservations reservations;
    // Placement.Preferences[].Spread.SpreadDescriptor, in order: the node label ("zone" for
    // node.labels.zone) whose values the tasks are spread over.
    std::vector<std::string> spread;
    std::uint64_t max_replicas = 0;  // Placement.MaxReplicas per node; 0: no limit
    std::vector<Platform> platforms;
    std::uint64_t force_update = 0;
    std::vector<NetworkAttachmentConfig> networks;  // TaskTemplate.Networks
    std::string json;  // the template as given, serialized: the identity of a task's spec
    bool operator==(const TaskTemplate&) const = default;
};

enum class ServiceMode { replicated, global };

// The most replicas a replicated service may ask for: each is a task in the store and in the
// orchestrator's memory.
inline constexpr std::uint64_t max_service_replicas = 100'000;

struct ServiceSpec {
    std::string name;
    Labels labels;
    TaskTemplate task;
    ServiceMode mode = ServiceMode::replicated;
    std::uint64_t replicas = 1;
    UpdateConfig update;
    UpdateConfig rollback;
    // Spec.Networks, deprecated: used as the task's networks when TaskTemplate.Networks is empty.
    std::vector<NetworkAttachmentConfig> networks;
    EndpointSpec endpoint;
    std::string json;  // the whole spec as given, serialized
    bool operator==(const ServiceSpec&) const = default;
};

// UpdateStatus.State. On the wire and in the store it is Docker's string: updating, paused,
// completed, rollback_started, rollback_paused, rollback_completed.
enum class UpdateState {
    updating,
    paused,
    completed,
    rollback_started,
    rollback_paused,
    rollback_completed
};
std::string_view to_string(UpdateState s) noexcept;
std::optional<UpdateState> update_state_from(std::string_view s) noexcept;
// A state of a rollback (rollback_started, rollback_paused, rollback_completed).
inline bool is_rollback(UpdateState s) noexcept {
    return s >= UpdateState::rollback_started;
}

struct UpdateStatus {
    UpdateState state = UpdateState::updating;
    Timestamp started;
    std::optional<Timestamp> completed;
    std::string message;
};

// A service's address on one of its networks (vip endpoint mode).
struct VirtualIp {
    std::string network_id;
    std::string addr;  // "10.0.1.3/24"
    bool operator==(const VirtualIp&) const = default;
};

// Endpoint.Ports: the spec's ports, with an ingress port's PublishedPort allocated from
// [first_dynamic_port, last_dynamic_port] when the spec left it 0.
inline constexpr std::uint32_t first_dynamic_port = 30000;
inline constexpr std::uint32_t last_dynamic_port = 32767;

struct Service {
    ObjectMeta meta;
    ServiceSpec spec;
    std::optional<ServiceSpec> previous;
    std::optional<UpdateStatus> update_status;
    std::vector<PortConfig> endpoint_ports;
    std::vector<VirtualIp> virtual_ips;
};

// Swarm's task states, in order: a task only moves forward.
enum class TaskState {
    new_,
    pending,
    assigned,
    accepted,
    preparing,
    ready,
    starting,
    running,
    complete,
    shutdown,
    failed,
    rejected,
    remove,
    orphaned,
};
std::string_view to_string(TaskState s) noexcept;
std::optional<TaskState> task_state_from(std::string_view s) noexcept;
inline bool is_terminal(TaskState s) noexcept {
    return s > TaskState::running;
}

// A task's health as its node reports it, for a task with a health check: "starting",
// "healthy" or "unhealthy" (Docker's State.Health.Status); empty when it has none.
struct ContainerStatus {
    std::string container_id;
    std::int64_t pid = 0;
    std::int64_t exit_code = 0;
    std::string health{};
    bool operator==(const ContainerStatus&) const = default;
};

struct TaskStatus {
    Timestamp timestamp;
    TaskState state = TaskState::new_;
    std::string message;
    std::string err;
    std::optional<ContainerStatus> container;
};

// A task's address on one of its networks, allocated by the manager.
struct TaskNetworkAttachment {
    std::string network_id;
    std::string address;  // "10.0.1.7/24"
    std::vector<std::string> aliases;
    bool operator==(const TaskNetworkAttachment&) const = default;
};

struct Task {
    ObjectMeta meta;
    TaskTemplate spec;
    std::string service_id;
    std::uint64_t slot = 0;  // replicated services; 0 for global ones
    std::string node_id;     // empty until scheduled
    TaskStatus status;
    TaskState desired = TaskState::running;  // running, ready (held back), shutdown
    Timestamp not_before;                    // a restart delay: not started before this time
    std::uint64_t restarts = 0;  // restarts of its slot that led to it (within the window)
    std::string service_name;    // for filters and `service ps` rows
    // Networks: "host" (the node's network namespace) or "" (its own); its addresses, allocated
    // once (networks_allocated) and kept while it lives; its ports published in host mode.
    std::string network_mode;
    std::vector<TaskNetworkAttachment> networks;
    std::vector<PortConfig> host_ports;
    bool networks_allocated = false;
    // The version of each of spec.container.secrets (same order) the task holds: resolved when
    // the task is made (the pin, else the current version). Empty for a task made before
    // secrets had versions (it holds version 1).
    std::vector<std::uint64_t> secret_versions;
    // The version of reference i (1 when none was recorded).
    std::uint64_t secret_version(std::size_t i) const {
        return i < secret_versions.size() ? secret_versions[i] : 1;
    }
    // The signal its main process gets after a live secret update (the service's
    // coffer.secret-update signal:<SIG>); empty: none.
    std::string secret_signal;
    // What serves its secret files on its node (its service's coffer.secret-mount when it was
    // made): "tmpfs", "fuse", or "" for the node's default.
    std::string secret_mount;
    // The version of spec.container.registry_auth the task pulls with (0: none).
    std::uint64_t registry_auth_version = 0;
};

enum class NodeRole { worker, manager };
enum class NodeAvailability { active, pause, drain };
enum class NodeState { unknown, down, ready, disconnected };
std::string_view to_string(NodeRole r) noexcept;
std::string_view to_string(NodeAvailability a) noexcept;
std::string_view to_string(NodeState s) noexcept;

struct NodeSpec {
    Labels labels;
    NodeRole role = NodeRole::worker;
    NodeAvailability availability = NodeAvailability::active;
};

struct NodeDescription {
    std::string hostname;
    std::string os = "linux";
    std::string architecture = "x86_64";
    std::int64_t nano_cpus = 0;
    std::int64_t memory_bytes = 0;
    std::vector<GenericResource> generic;  // Resources.GenericResources
};

struct Node {
    ObjectMeta meta;
    NodeSpec spec;
    NodeDescription description;
    NodeState state = NodeState::unknown;
    std::string addr;
    std::optional<Timestamp> certificate_expiry;
};

// The networks a service's tasks are attached to: TaskTemplate.Networks, or the deprecated
// Spec.Networks when that is empty.
inline const std::vector<NetworkAttachmentConfig>& service_networks(const ServiceSpec& s) {
    return s.task.networks.empty() ? s.networks : s.task.networks;
}

// Validation, in Docker's words. The secret references' existence is checked by the caller.
Result<void> validate_service_name(std::string_view name);
Result<void> validate_service_spec(const ServiceSpec& spec);
// A local volume's name as Docker takes it: [a-zA-Z0-9][a-zA-Z0-9_.-]+, at most 255.
bool valid_volume_name(std::string_view name) noexcept;
Result<Constraint> parse_constraint(std::string_view expr);
// A service name as Swarm checks it: [a-zA-Z0-9] then [-_]*[a-zA-Z0-9]+ groups, at most 63.
bool is_dns_label(std::string_view s) noexcept;
// "1.5s", "300ms", "2m", "1h30m" -> nanoseconds (Go's time.ParseDuration, non-negative only).
std::optional<std::int64_t> parse_go_duration(std::string_view text) noexcept;
std::string format_go_duration(std::int64_t nanos);

}  // namespace coffer::model
