// The manager's node port: the nodeconn server wired to the cluster's trust, node registry and
// dispatcher. Nodes join here (token → certificate → node record), then keep one session each:
// assignments out, task statuses and log answers in. A node is ready while its session is up
// and down when it ends (the idle timeout is the heartbeat deadline).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "coffer/base/error.h"
#include "coffer/manager/node_transport.h"
#include "coffer/nodeconn/tls.h"
#include "coffer/pki/certificate.h"

namespace coffer::manager {

class Manager;

// Session limits of the node port: a silent node is closed (and marked down) within about
// 4 s; the manager pings after 2 s of quiet, so agents with longer idle timeouts stay up.
nodeconn::Limits node_port_limits();

struct NodePortOptions {
    std::string address = "0.0.0.0";
    std::uint16_t port = 4243;  // 0: any free port (see NodePort::port)
    nodeconn::Limits limits = node_port_limits();
    std::size_t io_threads = 2;
    std::size_t workers = 2;  // store writes, assignment building, status reports
    // When the node port's own certificate, just issued, is replaced by a fresh one (key and
    // certificate), so it never expires under a long-running manager; pki::renewal_time when
    // empty. Injectable for tests.
    std::function<pki::Clock::time_point(const pki::CertificateInfo&)> server_renewal_time;
};

class NodePort final : public NodeTransport {
  public:
    // Needs an unlocked manager. Generates the manager's session key (in locked memory, never
    // stored) and has the cluster CA issue its server certificate (issue_manager_server), binds and
    // serves, then registers with manager.set_node_transport(). Errors: address in use, bad
    // address. manager is borrowed for the port's lifetime.
    static Result<std::unique_ptr<NodePort>> start(Manager& manager, NodePortOptions options);
    // Unregisters, closes every session (the nodes are marked down), completes pending log
    // requests as unavailable, and joins its threads.
    ~NodePort() override;
    NodePort(const NodePort&) = delete;
    NodePort& operator=(const NodePort&) = delete;

    std::uint16_t port() const noexcept;
    std::size_t session_count() const;

    void node_removed(const std::string& node_id) override;
    void node_role_changed(const std::string& node_id) override;
    void fetch_logs(const std::string& node_id, const std::string& task_id, std::size_t tail,
                    std::chrono::milliseconds timeout, LogsDone done) override;

    class Impl;

  private:
    explicit NodePort(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace coffer::manager
