// Test-only: built into the `cofferd-test` executable (COFFER_TEST_HOOKS), never into cofferd.
// COFFER_TEST_NODES="host1,host2" registers ready nodes at start ("host/CPUS/MEMORY_BYTES" also
// gives a node the CPUs and memory it reports); COFFER_TEST_AGENTS=1 adds a fake
// agent per node that reports every assigned task running and every withdrawn one shut down, so
// integration tests can watch services converge without the node transport. COFFER_TEST_LOGS=1
// has the API ask, instead of the node port, a NodeTransport whose nodes answer fetch_logs with
// generated lines ("line N of task ID", N = 1..3); the nodes whose hostnames are in
// COFFER_TEST_LOGS_DOWN="host,..." do not answer.
#pragma once

#include <memory>

namespace coffer::manager {
class Cluster;
}

namespace coffer::testhooks {

class Hooks {
  public:
    virtual ~Hooks() = default;
};

// cluster is borrowed for the hooks' lifetime; destroy them before it.
std::unique_ptr<Hooks> start(manager::Cluster& cluster);

}  // namespace coffer::testhooks
