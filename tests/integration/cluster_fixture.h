// A whole cluster of real processes: cofferd in a network namespace of its own, coffer-agent
// processes in two others (node-a, node-b), each joined to the manager's namespace by a veth
// pair, running real runc containers from the busybox test image. Everything (agents and what
// they ran, cofferd, namespaces, directories) is stopped and removed when the test ends, also
// when it fails.
#pragma once

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "coffer/base/process.h"
#include "harness.h"

namespace coffer::test {

// A coffer-agent with its own data and run directories, in a network namespace. The destructor
// stops it (SIGTERM, then SIGKILL) and runs `coffer-agent cleanup` on its directories.
class NodeAgent {
  public:
    NodeAgent(const NetworkNamespace& ns, std::filesystem::path data, std::string hostname,
              std::string manager);
    ~NodeAgent();
    NodeAgent(const NodeAgent&) = delete;
    NodeAgent& operator=(const NodeAgent&) = delete;

    // Imports the busybox test image into the data directory ("" or what failed).
    std::string import_image(const std::filesystem::path& layout) const;
    // Starts the agent; token only for the first start (joins), none later (stored identity).
    void start(const std::string& token = "");
    // SIGTERM and wait; the wait status, nullopt when it did not exit in time (then killed).
    std::optional<int> stop();
    void kill9();
    CommandResult cleanup() const;

    bool running() const { return child_.running(); }
    int pid() const { return child_.pid(); }
    std::string node_id() const;  // from <data>/identity/node.json, "" before the join
    std::string err() const { return read_file(err_); }
    std::string task_log(const std::string& task) const;
    // A wait status when it exited by itself within `within`.
    std::optional<int> exited(std::chrono::milliseconds within) { return child_.wait_for(within); }

    const std::filesystem::path data, run;
    const std::string hostname;
    // More arguments for coffer-agent, set before start().
    std::vector<std::string> extra_args;

  private:
    const NetworkNamespace& ns_;  // borrowed: the fixture keeps it for longer than the agent
    std::string manager_;
    std::filesystem::path err_;
    Child child_;
};

class ClusterTest : public ::testing::Test {
  protected:
    void SetUp() override;
    void TearDown() override;

    void start_manager();
    // Called by SetUp once the namespaces exist, before the manager first starts: servers the
    // manager needs (etcd, say) start here, in manager_ns_.
    virtual void before_manager() {}
    std::string token(const std::string& role = "worker");
    std::unique_ptr<NodeAgent> make_agent(const NetworkNamespace& ns, const std::string& hostname);
    // The network namespace of a further node, routed to the manager's as node-a's is: one agent
    // per namespace, as one per host (an agent holds its namespace's networks).
    std::unique_ptr<NetworkNamespace> node_namespace(const std::string& tag);
    // Starts an agent with the worker token and waits until its node is ready.
    void join(NodeAgent& agent);

    CliResult cli(const std::vector<std::string>& args, const std::string& in = "");
    boost::json::value get(const std::string& target);  // null on failure

    std::string node_state(const std::string& node_id);
    bool wait_node_state(const std::string& node_id, std::string_view state,
                         std::chrono::milliseconds within = std::chrono::seconds(30));
    // The service's tasks (all states).
    std::vector<boost::json::object> tasks(const std::string& service);
    // Its tasks that should run and do.
    std::vector<boost::json::object> running(const std::string& service);
    // Waits until exactly `replicas` tasks of the service run (on `node` when given), no other
    // task of the service runs, and no slot has two running tasks.
    bool wait_converged(const std::string& service, std::size_t replicas,
                        const std::string& node = "",
                        std::chrono::milliseconds within = std::chrono::seconds(60));
    std::string secret_id(const std::string& name);
    // A service of one busybox task that sleeps until SIGTERM, with `--secret secret`.
    void create_sleeper(const std::string& name, const std::string& secret);
    // Waits (90 s) until the service runs one task whose /run/secrets/<file> holds bytes.
    bool task_holds(const std::string& service, const std::string& file, const std::string& bytes);

    TempDir dir_;
    // More arguments for cofferd and every coffer-agent, set before SetUp runs (in a derived
    // fixture's constructor).
    std::vector<std::string> manager_args_, agent_args_;
    std::unique_ptr<NetworkNamespace> manager_ns_, a_ns_, b_ns_;
    std::string listen_;  // the manager's node port, in its namespace
    std::string subnet_;  // the /24 the nodes' links to the manager are in
    int further_nodes_ = 0;
    std::unique_ptr<Daemon> daemon_;
    std::unique_ptr<NodeAgent> a_, b_;
};

// A task that prints what it finds in /run/secrets, then waits (exits 0 on SIGTERM):
//   SECRETS <names, sorted, space-separated>
//   SECRET <name> <hex bytes>
//   PRINTED
std::vector<std::string> secret_printer();
// name -> hex bytes, parsed from a secret_printer's output; "SECRETS" -> the listing;
// "PRINTED" -> "" once the output is whole.
std::map<std::string, std::string> parse_printer(const std::string& output);

std::string hex(std::string_view bytes);
std::string random_bytes(std::size_t n);

// What a directory holds: file name -> bytes (regular files only).
std::map<std::string, std::string> read_dir(const std::filesystem::path& dir);

// What the task's container has at /run/secrets/<file>, read through its root.
std::string file_in_task(const boost::json::object& task, const std::string& file);

bool process_alive(std::int64_t pid);
// The container's pid a task's status reports (host pid namespace), 0 when none.
std::int64_t task_pid(const boost::json::object& task);

struct MountEntry {
    std::string mount_point, source;
};
std::vector<MountEntry> mountinfo(int pid);
// True when any readable mapping of process pid contains needle (read through /proc/pid/mem).
bool memory_contains(int pid, std::string_view needle);

}  // namespace coffer::test
