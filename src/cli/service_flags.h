// The flags of `coffer service create|update|scale` as the docker CLI reads them (secret specs,
// sizes, CPUs, counts, durations, environment changes) and the spec fields they set.
#pragma once

#include <boost/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "coffer/base/error.h"

namespace CLI {
class App;
}

namespace coffer::cli {

// --secret NAME or source=NAME,target=PATH,uid=N,gid=N,mode=0400 (as the docker CLI reads it);
// --config takes the same form. A secret's source may pin a version: NAME@N (coffer's).
struct SecretOpt {
    std::string source, target, uid = "0", gid = "0";
    std::uint32_t mode = 0444;
    std::uint64_t version = 0;  // NAME@N; 0: the current version, whatever it is
};
Result<SecretOpt> parse_secret_opt(const std::string& spec);

// --mount type=bind|volume|tmpfs,source=..,target=..,readonly,... as the docker CLI reads it ->
// a Mounts[] entry of a ContainerSpec (the fields it sets only).
Result<boost::json::object> parse_mount_opt(const std::string& spec);
// The Mounts of a ContainerSpec (`current`, may be null) without those whose Target is in rm
// (`update --mount-rm TARGET`).
boost::json::array remove_mounts(const boost::json::value* current,
                                 const std::vector<std::string>& rm);

// "64m", "1g", "512k", "100" (bytes) -> bytes, 1024-based as docker's RAMInBytes.
Result<std::int64_t> parse_bytes(const std::string& s);
// A --limit-cpu value ("0.5", "2") -> nano CPUs.
Result<std::int64_t> parse_nano_cpus(const std::string& v, std::string_view flag = "--limit-cpu");
// --placement-pref "spread=node.labels.zone" -> {"Spread":{"SpreadDescriptor":...}}.
Result<boost::json::object> parse_placement_pref(const std::string& v);
// --generic-resource "gpu=2" -> {"DiscreteResourceSpec":{"Kind":"gpu","Value":2}}.
Result<boost::json::object> parse_generic_resource_opt(const std::string& v);
// A non-negative integer given to `flag` (for its messages).
Result<std::int64_t> parse_count(const std::string& flag, const std::string& v);
// A Go duration ("10s", "1m30s") given to `flag` -> nanoseconds.
Result<std::int64_t> duration_flag(const std::string& flag, const std::string& v);

// SERVICE=REPLICAS, an argument of `service scale`.
struct ScaleArg {
    std::string service;
    long long replicas = 0;
};
Result<ScaleArg> parse_scale_arg(const std::string& arg);

// "k=v" labels -> {"k": "v"} ("k" alone -> "").
boost::json::object labels_object(const std::vector<std::string>& labels);
// A service's environment after `update --env-rm` (by key) and `--env-add` (replacing the key).
std::vector<std::string> update_env(std::vector<std::string> env,
                                    const std::vector<std::string>& add,
                                    const std::vector<std::string>& rm);
// The secret references of a ContainerSpec (`current`, may be null) without those naming a
// secret in `rm` (`update --secret-rm` drops every reference to the name); with name_key
// "ConfigName", the same for config references (`--config-rm`).
boost::json::array remove_secret_refs(const boost::json::value* current,
                                      const std::vector<std::string>& rm,
                                      std::string_view name_key = "SecretName");

// o[key] as an object, made one (replacing whatever was there) when it is not. The reference
// lasts until o's next operator[], which may grow o's table even for a key o holds.
boost::json::object& obj(boost::json::object& o, std::string_view key);

// Flags shared by create and update that set fields of the spec.
struct SpecFlags {
    std::string replicas;
    std::string user, workdir, limit_memory, limit_cpu, limit_pids;
    std::vector<std::string> cap_add, cap_drop;
    std::string restart_condition, restart_delay, restart_max_attempts;
    std::string update_parallelism, update_delay, update_order, update_failure_action;
    std::string replicas_max_per_node, reserve_memory, reserve_cpu;
    std::string health_cmd, health_interval, health_timeout, health_retries, health_start_period,
        health_start_interval;
    bool no_healthcheck = false;
    bool read_only = false;
    // Task options; on update, a list flag given replaces the whole list.
    std::string hostname, stop_signal, stop_grace_period, oom_score_adj;
    std::vector<std::string> groups, sysctls, ulimits, hosts, dns, dns_search, dns_options;
    bool init = false;
    // coffer's: the service label coffer.secret-update (restart|live|signal:SIG|none).
    std::string secret_update;
    // coffer's: the service label coffer.secret-mount (tmpfs|fuse|auto).
    std::string secret_mount;

    void add(CLI::App* cmd);
    // Sets the fields of the flags that were given; leaves the others alone.
    Result<void> apply(boost::json::object& spec) const;
    // The task options' part of apply, on the ContainerSpec.
    Result<void> apply_task_options(boost::json::object& container_spec) const;
};

// Adds the --detach and --timeout flags; wait() says whether to wait for convergence.
struct WaitFlags {
    bool detach = false;
    int timeout = 120;
    void add(CLI::App* cmd);
    bool wait(const CLI::App* cmd) const;
};

}  // namespace coffer::cli
