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
};

// Where a config reference's file lands in the container: File.Name when absolute, else under /.
std::string config_target_path(std::string_view file_name);

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
    std::vector<ConfigReference> configs;
};

struct ResourceLimits {
    std::int64_t memory_bytes = 0;
    std::int64_t nano_cpus = 0;
    std::int64_t pids = 0;
};

enum class RestartCondition { none, on_failure, any };

// Absent fields take Docker's defaults: any, 5 s, unlimited attempts, no window.
struct RestartPolicy {
    RestartCondition condition = RestartCondition::any;
    std::int64_t delay = 5 * second_ns;
    std::uint64_t max_attempts = 0;  // 0: unlimited
    std::int64_t window = 0;         // 0: attempts counted over the slot's whole history
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
};

// One constraint: "node.hostname==x", "node.labels.k!=v", ...
struct Constraint {
    std::string key;  // node.id, node.hostname, node.role, node.labels.<k>
    bool equal = true;
    std::string value;
};

struct TaskTemplate {
    ContainerSpec container;
    ResourceLimits limits;
    RestartPolicy restart;
    std::vector<Constraint> constraints;
    std::uint64_t force_update = 0;
    std::string json;  // the template as given, serialized: the identity of a task's spec
};

enum class ServiceMode { replicated, global };

struct ServiceSpec {
    std::string name;
    Labels labels;
    TaskTemplate task;
    ServiceMode mode = ServiceMode::replicated;
    std::uint64_t replicas = 1;
    UpdateConfig update;
    UpdateConfig rollback;
    std::string json;  // the whole spec as given, serialized
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

struct Service {
    ObjectMeta meta;
    ServiceSpec spec;
    std::optional<ServiceSpec> previous;
    std::optional<UpdateStatus> update_status;
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

struct ContainerStatus {
    std::string container_id;
    std::int64_t pid = 0;
    std::int64_t exit_code = 0;
};

struct TaskStatus {
    Timestamp timestamp;
    TaskState state = TaskState::new_;
    std::string message;
    std::string err;
    std::optional<ContainerStatus> container;
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
};

struct Node {
    ObjectMeta meta;
    NodeSpec spec;
    NodeDescription description;
    NodeState state = NodeState::unknown;
    std::string addr;
    std::optional<Timestamp> certificate_expiry;
};

// Validation, in Docker's words. The secret references' existence is checked by the caller.
Result<void> validate_service_name(std::string_view name);
Result<void> validate_service_spec(const ServiceSpec& spec);
Result<Constraint> parse_constraint(std::string_view expr);
// A service name as Swarm checks it: [a-zA-Z0-9] then [-_]*[a-zA-Z0-9]+ groups, at most 63.
bool is_dns_label(std::string_view s) noexcept;
// "1.5s", "300ms", "2m", "1h30m" -> nanoseconds (Go's time.ParseDuration, non-negative only).
std::optional<std::int64_t> parse_go_duration(std::string_view text) noexcept;
std::string format_go_duration(std::int64_t nanos);

}  // namespace coffer::model
