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
#include <vector>

#include "coffer/base/error.h"
#include "coffer/manager/node_transport.h"
#include "coffer/net/http_server.h"
#include "coffer/nodeconn/tls.h"
#include "coffer/pki/certificate.h"

namespace coffer::manager {

class ClusterTrust;
class Dispatcher;
class NodeRegistry;

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
    // The API, for requests standby managers forward (nodeconn/forward.h), borrowed for the
    // port's lifetime; null: none are served. The Cluster sets it when its store is shared with
    // other managers.
    net::Service* forward = nullptr;
};

// The node port is made and owned by the Cluster (cluster.h), which calls the event methods
// below from ClusterEvents; tests may make one over parts of their own.
class NodePort final : public NodeTransport {
  public:
    // What the node port works with, borrowed for its lifetime (the Cluster destroys the port
    // first).
    struct Parts {
        ClusterTrust& trust;
        NodeRegistry& nodes;
        Dispatcher& dispatcher;
    };
    // Generates the manager's session key (in locked memory, never stored) and has the cluster
    // CA issue its server certificate (issue_manager_server), then binds and serves. Errors:
    // address in use, bad address.
    static Result<std::unique_ptr<NodePort>> start(Parts parts, NodePortOptions options);
    // Closes every session, completes pending log requests as unavailable, and joins its
    // threads. The nodes' records are left as they are (the manager is stopping).
    ~NodePort() override;
    NodePort(const NodePort&) = delete;
    NodePort& operator=(const NodePort&) = delete;

    std::uint16_t port() const noexcept;
    std::size_t session_count() const;

    // Events (ClusterEvents, routed by the Cluster). Each only posts work or sends on a
    // session's queue; any thread.
    // The dispatcher's streams may have changed: every session sends what its stream yields.
    void assignments_changed();
    // A CA rotation started or ended: new credentials for new connections, every node is asked
    // to renew.
    void ca_changed();
    // Closes the node's sessions; a rotation waiting for this node only ends.
    void node_removed(const std::string& node_id);
    // Every manager's node port (HOST:PORT): sent to every node when it differs from the last
    // list, and to each node whose session opens. Nodes move to another one when theirs goes.
    void set_managers(std::vector<std::string> addrs);
    // Asks the node for a certificate with its new role.
    void node_role_changed(const std::string& node_id);

    void fetch_logs(const std::string& node_id, const std::string& task_id, std::size_t tail,
                    std::chrono::milliseconds timeout, LogsDone done) override;
    // The volumes each node reported last (kept while the node is down: they are on its disk).
    Result<std::vector<NodeVolume>> volumes() override;
    void remove_volume(const std::string& node_id, const std::string& name,
                       std::chrono::milliseconds timeout, VolumeDone done) override;

    class Impl;

  private:
    explicit NodePort(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace coffer::manager
