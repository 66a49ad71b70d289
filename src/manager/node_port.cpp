// The node port. The nodeconn server calls in on its I/O strands (sessions) and on its join
// thread; everything that writes the store or builds assignments runs on a small worker pool,
// one strand per node, so a node's events (session up, statuses, session down) are applied in
// the order they happened and never on an I/O thread.
#include "coffer/manager/node_port.h"

#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "coffer/base/log.h"
#include "coffer/crypto/random.h"
#include "coffer/manager/dispatcher.h"
#include "coffer/manager/nodes.h"
#include "coffer/manager/trust.h"
#include "coffer/model/ids.h"
#include "coffer/model/secret.h"
#include "coffer/model/service.h"
#include "coffer/nodeconn/server.h"
#include "coffer/nodeproto/networks.h"
#include "coffer/nodeproto/session.h"
#include "coffer/nodeproto/status.h"
#include "coffer/nodeproto/volumes.h"
#include "coffer/pki/node_key.h"

namespace coffer::manager {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using nodeconn::Session;
using Strand = asio::strand<asio::thread_pool::executor_type>;
using Steady = std::chrono::steady_clock;

namespace {
constexpr std::string_view category = "nodeport";
// Log requests waiting for their node's answer; more are refused rather than queued.
constexpr std::size_t max_pending_logs = 1024;
}  // namespace

nodeconn::Limits node_port_limits() {
    nodeconn::Limits limits;
    limits.idle_timeout = 4s;
    limits.handshake_timeout = 10s;
    return limits;
}

namespace {

model::NodeRole node_role(pki::Role r) {
    return r == pki::Role::manager ? model::NodeRole::manager : model::NodeRole::worker;
}

pki::Role cert_role(model::NodeRole r) {
    return r == model::NodeRole::manager ? pki::Role::manager : pki::Role::worker;
}

// "10.0.0.2:53124" or "::1:53124" (nodeconn's form) → the address without the port.
std::string host_of(std::string_view remote) {
    auto colon = remote.rfind(':');
    return std::string(colon == std::string_view::npos ? remote : remote.substr(0, colon));
}

model::Timestamp timestamp(pki::Clock::time_point t) {
    return {std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count()};
}

// One session to a node. The stream and `ended` belong to the node's strand.
struct Link {
    Link(std::shared_ptr<Session> s, Strand st)
        : session(std::move(s)), node_id(session->peer().node_id), strand(std::move(st)) {}
    std::shared_ptr<Session> session;
    std::string node_id;
    Strand strand;
    std::uint64_t generation = 0;
    std::unique_ptr<NodeStream> stream;
    // A send_assignments is posted and has not started: a change meanwhile needs no other one
    // (it polls the state as it is when it runs). A thousand status reports in a row made every
    // session's strand run a thousand polls, most of them finding nothing new.
    std::atomic<bool> queued{false};
};

struct PendingLogs {
    std::string node_id;
    std::uint64_t generation = 0;  // the session the request went out on
    Steady::time_point deadline;
    NodeTransport::LogsDone done;
};

}  // namespace

class NodePort::Impl {
  public:
    Impl(NodePort::Parts parts, NodePortOptions options)
        : trust_(parts.trust),
          registry_(parts.nodes),
          dispatcher_(parts.dispatcher),
          options_(std::move(options)),
          pool_(std::max<std::size_t>(options_.workers, 1)) {}
    ~Impl();

    Result<void> start();
    // The manager's own credentials on the node port, from the current CA; schedules their
    // replacement.
    Result<nodeconn::Credentials> own_credentials();
    // Fresh credentials for new connections (open sessions keep their TLS).
    Result<void> replace_credentials();
    // The CA changed (a rotation started or ended): new credentials for new connections, and
    // every node is asked to renew.
    void ca_changed();
    // The dispatcher's streams may yield: each session sends what its stream has, on its strand.
    void assignments_changed();
    void set_managers(std::vector<std::string> addrs);
    // Replaces the node port's certificate when it is due, until the port stops.
    void renew_own_certificate();

    // nodeconn handlers.
    Result<nodeconn::JoinResponse> join(nodeconn::JoinRequest req);
    // A join with the key of a node already registered: the same node, a new certificate.
    Result<nodeconn::JoinResponse> join_again(const model::Node& node,
                                              const nodeconn::JoinRequest& req, pki::Role role,
                                              const std::string& host, const std::string& hostname);
    Result<void> authorize(const pki::NodeIdentity& who) const;
    void opened(const std::shared_ptr<Session>& s);
    void message(const std::shared_ptr<Session>& s, nodeconn::Message m);
    void closed(const std::shared_ptr<Session>& s, const Error& why);

    // On the node's strand.
    void start_link(const std::shared_ptr<Link>& link);
    void end_link(const std::shared_ptr<Link>& link, bool newest);
    void send_assignments(const std::shared_ptr<Link>& link);
    // Queues the message's statuses for write_reports.
    void handle_status(const std::shared_ptr<Link>& link, const crypto::SecureBuffer& text);
    // Writes every queued message in one store write, again while more came meanwhile (one
    // writer at a time, on the pool): a burst of reports from a thousand nodes is a few writes,
    // not a thousand in a row.
    void write_reports();
    void handle_logs(const std::shared_ptr<Link>& link, const crypto::SecureBuffer& text);
    void handle_volume_removed(const std::shared_ptr<Link>& link, const crypto::SecureBuffer& text);
    void handle_renew(const std::shared_ptr<Link>& link, const crypto::SecureBuffer& text);
    void handle_description(const std::shared_ptr<Link>& link, const crypto::SecureBuffer& text);
    // A node whose certificate predates a CA rotation or a role change is asked to renew.
    void ask_renewal_if_stale(const std::shared_ptr<Link>& link);
    // Ends a CA rotation once every node holds a certificate of the new CA (after a renewal or
    // a node's removal).
    void finish_rotation_if_done();

    std::shared_ptr<Link> current(std::string_view node_id);
    void forget(std::string_view node_id);

    // Log requests: each completes exactly once, whichever comes first (answer, disconnect,
    // deadline, shutdown).
    void fetch_logs(const std::string& node_id, const std::string& task_id, std::size_t tail,
                    std::chrono::milliseconds timeout, LogsDone done);
    void complete_logs(const std::string& request, std::string_view node_id, Result<std::string> r);
    void fail_logs(std::string_view node_id, std::optional<std::uint64_t> generation,
                   const Error& why);
    void sweep_logs();

    void remove_volume(const std::string& node_id, const std::string& name,
                       std::chrono::milliseconds timeout, VolumeDone done);
    ClusterTrust& trust_;
    NodeRegistry& registry_;
    Dispatcher& dispatcher_;
    NodePortOptions options_;
    asio::thread_pool pool_;

    struct NodeEntry {
        Strand strand;
        std::uint64_t generation = 0;
        std::shared_ptr<Link> current;  // the newest open session
    };
    mutable std::mutex mutex_;
    std::map<std::string, NodeEntry, std::less<>> nodes_;    // under mutex_
    std::map<const Session*, std::shared_ptr<Link>> links_;  // under mutex_
    std::vector<std::string> managers_;                      // under mutex_
    std::vector<std::string> managers_snapshot() const;
    std::atomic<bool> stopping_{false};

    // Issuing and installing the port's own credentials, one at a time (the renewer and a CA
    // change may race; the later credentials must win).
    std::mutex credentials_mutex_;
    std::mutex own_renewal_mutex_;
    std::condition_variable own_renewal_changed_;
    pki::Clock::time_point own_renewal_at_ =
        pki::Clock::time_point::max();   // under own_renewal_mutex_
    bool own_renewal_stopping_ = false;  // under own_renewal_mutex_
    std::thread own_renewer_;

    std::mutex logs_mutex_;
    std::condition_variable logs_changed_;
    // Requests waiting for a node's answer: logs, and volume removals (answered with "").
    std::map<std::string, PendingLogs> logs_;  // under logs_mutex_
    bool logs_stopping_ = false;               // under logs_mutex_
    std::thread sweeper_;

    std::mutex reports_mutex_;
    std::vector<Dispatcher::NodeReports> reports_;  // under reports_mutex_, in arrival order
    bool reports_writing_ = false;                  // under reports_mutex_

    std::mutex volumes_mutex_;
    // node id -> its volumes as it reported them last
    std::map<std::string, std::vector<nodeproto::VolumeReport>, std::less<>>
        volumes_;  // under volumes_mutex_

    // Last: stopped first, while everything its handlers use still exists.
    std::unique_ptr<nodeconn::NodeServer> server_;
};

Result<nodeconn::Credentials> NodePort::Impl::own_credentials() {
    auto& trust = trust_;
    // The manager's own identity on the node port: a fresh key every time, kept in locked
    // memory only; agents check its server identity (which no node certificate has, whatever
    // the node's role) and its cluster.
    auto key = pki::NodeKey::generate();
    auto id = "manager" + crypto::random_id();
    auto cert = trust.issue_manager_server(key.csr_pem, id);
    if (!cert) return std::move(cert).error().context("issue the manager's node port certificate");
    auto info = pki::read_certificate(*cert);
    if (!info) return std::move(info).error().context("read the manager's node port certificate");
    auto due = options_.server_renewal_time ? options_.server_renewal_time(*info)
                                            : pki::renewal_time(*info);
    {
        std::lock_guard lock(own_renewal_mutex_);
        own_renewal_at_ = due;
    }
    own_renewal_changed_.notify_all();
    return nodeconn::Credentials{std::move(*cert), std::move(key.key_pem), trust.ca_bundle()};
}

Result<void> NodePort::Impl::replace_credentials() {
    std::lock_guard lock(credentials_mutex_);
    auto credentials = own_credentials();
    if (!credentials) return std::move(credentials).error();
    return server_->update_credentials(std::move(*credentials));
}

void NodePort::Impl::renew_own_certificate() {
    std::unique_lock lock(own_renewal_mutex_);
    while (!own_renewal_stopping_) {
        if (pki::Clock::now() < own_renewal_at_) {
            if (own_renewal_at_ == pki::Clock::time_point::max())
                own_renewal_changed_.wait(lock);
            else
                own_renewal_changed_.wait_until(lock, own_renewal_at_);
            continue;
        }
        // Until the new one is issued, try again in a minute rather than at once.
        own_renewal_at_ = pki::Clock::now() + 60s;
        lock.unlock();
        if (auto r = replace_credentials(); !r)
            log::error(category, "renew the node port's certificate: {}", r.error().message);
        else
            log::info(category, "renewed the node port's certificate");
        lock.lock();
    }
}

void NodePort::Impl::ca_changed() {
    if (auto r = replace_credentials(); !r) {
        log::error(category, "CA changed: new node port credentials: {}", r.error().message);
        return;
    }
    std::vector<std::shared_ptr<Link>> links;
    {
        std::lock_guard lock(mutex_);
        for (const auto& [id, entry] : nodes_)
            if (entry.current) links.push_back(entry.current);
    }
    for (const auto& link : links)
        link->session->send(nodeproto::encode(nodeproto::RenewRequest{"CA rotation"}));
    log::info(category, "CA changed: {} connected nodes asked to renew", links.size());
}

void NodePort::Impl::set_managers(std::vector<std::string> addrs) {
    std::vector<std::shared_ptr<Link>> links;
    {
        std::lock_guard lock(mutex_);
        if (addrs == managers_) return;
        managers_ = addrs;
        for (const auto& [session, link] : links_) links.push_back(link);
    }
    auto message = nodeproto::encode(nodeproto::ManagersMessage{std::move(addrs)});
    for (const auto& link : links) link->session->send(message.clone());
}

std::vector<std::string> NodePort::Impl::managers_snapshot() const {
    std::lock_guard lock(mutex_);
    return managers_;
}

void NodePort::Impl::assignments_changed() {
    std::vector<std::shared_ptr<Link>> links;
    {
        std::lock_guard lock(mutex_);
        for (const auto& [session, link] : links_) links.push_back(link);
    }
    for (const auto& link : links)
        if (!link->queued.exchange(true))
            asio::post(link->strand, [this, weak = std::weak_ptr<Link>(link)] {
                if (auto l = weak.lock()) {
                    l->queued = false;  // a change from now on posts again
                    send_assignments(l);
                }
            });
}

Result<void> NodePort::Impl::start() {
    auto& trust = trust_;
    auto credentials = own_credentials();
    if (!credentials) return std::move(credentials).error();

    nodeconn::ServerOptions so;
    so.address = options_.address;
    so.port = options_.port;
    so.cluster_id = trust.cluster_id();
    so.io_threads = options_.io_threads;
    // Joins run one at a time: a flood of joins queues behind the one being handled instead of
    // taking threads or memory for each (every queued one also holds a handshake deadline).
    so.join_threads = 1;
    so.limits = options_.limits;

    nodeconn::ServerHandlers handlers;
    handlers.on_join = [this](nodeconn::JoinRequest req) { return join(std::move(req)); };
    handlers.authorize = [this](const pki::NodeIdentity& who) { return authorize(who); };
    handlers.session.on_open = [this](const std::shared_ptr<Session>& s) { opened(s); };
    handlers.session.on_message = [this](const std::shared_ptr<Session>& s, nodeconn::Message m) {
        message(s, std::move(m));
    };
    handlers.session.on_close = [this](const std::shared_ptr<Session>& s, const Error& why) {
        closed(s, why);
    };
    if (options_.forward) {
        handlers.check_forward = [this](std::span<const std::uint8_t> binding,
                                        std::string_view proof) {
            return trust_.check_forward(binding, proof);
        };
        handlers.forward_api = options_.forward;
    }
    sweeper_ = std::thread([this] { sweep_logs(); });
    auto server =
        nodeconn::NodeServer::start(std::move(so), std::move(*credentials), std::move(handlers));
    if (!server) return std::move(server).error().context("node port");
    server_ = std::move(*server);
    own_renewer_ = std::thread([this] { renew_own_certificate(); });
    return {};
}

NodePort::Impl::~Impl() {
    // The sessions end because the manager stops, not because the nodes went away: their
    // records are left as they are (the next start marks them unknown, with a grace period).
    stopping_ = true;
    {
        std::lock_guard lock(own_renewal_mutex_);
        own_renewal_stopping_ = true;
    }
    own_renewal_changed_.notify_all();
    if (own_renewer_.joinable()) own_renewer_.join();
    server_.reset();
    {
        std::lock_guard lock(logs_mutex_);
        logs_stopping_ = true;
    }
    logs_changed_.notify_all();
    if (sweeper_.joinable()) sweeper_.join();
    fail_logs({}, std::nullopt, make_error(Errc::unavailable, "the manager is stopping"));
    pool_.join();
    // Streams unsubscribe from the dispatcher here, with no worker left to use them.
    std::lock_guard lock(mutex_);
    links_.clear();
    nodes_.clear();
}

Result<nodeconn::JoinResponse> NodePort::Impl::join(nodeconn::JoinRequest req) {
    auto host = host_of(req.remote_address);
    auto& trust = trust_;
    auto role = trust.check_token(req.token);
    // A refusal is logged by the node port, counted per source (a flood of joins is not a flood
    // of log lines).
    if (!role) return std::move(role).error();
    // The node's own name for itself, else its address: a placement key (node.hostname), so an
    // active node's name is not given to another (checked again, atomically, when registering).
    auto hostname = req.hostname.empty() ? host : req.hostname;
    // The node's ID follows from its key (the CSR's signature proves the node holds it), so that
    // a node whose answer was lost (its manager stopped mid-join, the connection was cut) and that
    // asks again with the same key gets the node it already is instead of a second one.
    auto key = pki::csr_public_key(req.csr_pem);
    if (!key) return std::move(key).error().context("join: certificate request");
    auto id = crypto::derived_id("coffer node of key", trust.cluster_id() + "/" + *key);
    if (auto joined = registry_.get(id)) return join_again(*joined, req, *role, host, hostname);
    if (auto free = registry_.check_hostname(hostname); !free) return std::move(free).error();
    // The certificate names what the manager decides (CN id, OU role, O cluster); the CSR
    // contributes its public key only.
    auto cert = trust.issue(req.csr_pem, id, *role);
    if (!cert) return std::move(cert).error();
    auto info = pki::read_certificate(*cert);
    if (!info) return std::move(info).error().context("read the issued certificate");
    NodeRegistration reg;
    reg.id = id;
    reg.role = node_role(*role);
    reg.description.hostname = std::move(hostname);
    reg.addr = host;
    reg.certificate_expiry = timestamp(info->not_after);
    reg.state = model::NodeState::down;  // ready once its session opens
    auto node = registry_.join(std::move(reg));
    if (!node) {
        if (node.error().code == Errc::already_exists) return std::move(node).error();
        return std::move(node).error().context("register the node");
    }
    log::info(category, "node {} joined from {} as {}", id, host, pki::role_name(*role));
    return nodeconn::JoinResponse{id, std::move(*cert), trust.ca_bundle()};
}

Result<nodeconn::JoinResponse> NodePort::Impl::join_again(const model::Node& node,
                                                          const nodeconn::JoinRequest& req,
                                                          pki::Role role, const std::string& host,
                                                          const std::string& hostname) {
    const auto& id = node.meta.id;
    if (node_role(role) != node.spec.role)
        return make_error(
            Errc::conflict,
            fmt::format("node {} joined with this key as a {}: join with a {} token", id,
                        model::to_string(node.spec.role), model::to_string(node.spec.role)));
    if (hostname != node.description.hostname)
        return make_error(Errc::conflict, fmt::format("node {} joined with this key as {}, not {}",
                                                      id, node.description.hostname, hostname));
    auto cert = trust_.issue(req.csr_pem, id, role);
    if (!cert) return std::move(cert).error();
    auto info = pki::read_certificate(*cert);
    if (!info) return std::move(info).error().context("read the issued certificate");
    NodeRegistration reg;
    reg.id = id;
    reg.role = node.spec.role;
    reg.description = node.description;
    reg.addr = node.addr;
    reg.certificate_expiry = timestamp(info->not_after);
    reg.state = node.state;
    if (auto r = registry_.register_node(std::move(reg)); !r)
        return std::move(r).error().context("register the node");
    log::info(category, "node {} joined again from {} with the key it joined with", id, host);
    return nodeconn::JoinResponse{id, std::move(*cert), trust_.ca_bundle()};
}

Result<void> NodePort::Impl::authorize(const pki::NodeIdentity& who) const {
    // A removed node has no record, so its certificate (still valid cryptographically) stops
    // working at once.
    auto node = registry_.get(who.node_id);
    if (!node)
        return make_error(Errc::permission_denied,
                          fmt::format("node {} is not a member of this cluster", who.node_id));
    // A certificate from before a role change still admits the node (nothing on the node port
    // depends on the role yet); the session asks it for a certificate with the new role at once.
    return {};
}

void NodePort::Impl::opened(const std::shared_ptr<Session>& s) {
    std::shared_ptr<Link> link;
    {
        std::lock_guard lock(mutex_);
        auto it = nodes_.find(s->peer().node_id);
        if (it == nodes_.end())
            it = nodes_.emplace(s->peer().node_id, NodeEntry{asio::make_strand(pool_), 0, nullptr})
                     .first;
        link = std::make_shared<Link>(s, it->second.strand);
        link->generation = ++it->second.generation;
        it->second.current = link;
        links_.emplace(s.get(), link);
    }
    asio::post(link->strand, [this, link] { start_link(link); });
}

void NodePort::Impl::start_link(const std::shared_ptr<Link>& link) {
    // Closed before we got here: end_link, queued behind us, settles the node's state.
    if (link->session->closed()) return;
    const auto& id = link->node_id;
    if (auto r = registry_.set_status(id, model::NodeState::ready, link->session->remote_address());
        !r) {
        log::warn(category, "node {}: mark ready: {}", id, r.error().message);
        link->session->close();
        return;
    }
    auto stream = dispatcher_.subscribe(id);
    if (!stream) {
        log::warn(category, "node {}: subscribe: {}", id, stream.error().message);
        link->session->close();
        return;
    }
    link->stream = std::move(*stream);
    log::info(category, "node {} ready ({})", id, link->session->remote_address());
    send_assignments(link);
    ask_renewal_if_stale(link);
    if (auto managers = managers_snapshot(); !managers.empty())
        link->session->send(nodeproto::encode(nodeproto::ManagersMessage{std::move(managers)}));
}

void NodePort::Impl::send_assignments(const std::shared_ptr<Link>& link) {
    if (!link->stream || link->session->closed()) return;
    // The networks first: a task that needs one is held back until it went (poll_networks).
    if (auto n = link->stream->poll_networks()) {
        if (!link->session->send(nodeproto::encode(*n))) {
            log::warn(category, "node {}: cannot queue networks: closing the session",
                      link->node_id);
            link->session->close();
            return;
        }
    }
    // The first poll is the complete set; a full queue closes the session and the next one
    // starts over with a complete set.
    while (auto m = link->stream->poll()) {
        if (!link->session->send(m->to_json())) {
            log::warn(category, "node {}: cannot queue assignments: closing the session",
                      link->node_id);
            link->session->close();
            return;
        }
    }
}

void NodePort::Impl::message(const std::shared_ptr<Session>& s, nodeconn::Message m) {
    std::shared_ptr<Link> link;
    {
        std::lock_guard lock(mutex_);
        if (auto it = links_.find(s.get()); it != links_.end()) link = it->second;
    }
    if (!link) return;
    using Handler = void (Impl::*)(const std::shared_ptr<Link>&, const crypto::SecureBuffer&);
    Handler handler = nullptr;
    if (m.type == "status")
        handler = &Impl::handle_status;
    else if (m.type == "logs")
        handler = &Impl::handle_logs;
    else if (m.type == "renew")
        handler = &Impl::handle_renew;
    else if (m.type == "description")
        handler = &Impl::handle_description;
    else if (m.type == "volume_removed")
        handler = &Impl::handle_volume_removed;
    if (handler == nullptr) {
        log::debug(category, "node {}: ignored a message of unknown type", link->node_id);
        return;
    }
    asio::post(link->strand,
               [this, link, handler, text = std::move(m.json)] { (this->*handler)(link, text); });
}

void NodePort::Impl::handle_status(const std::shared_ptr<Link>& link,
                                   const crypto::SecureBuffer& text) {
    auto m = nodeproto::decode_status(text);
    if (!m) {
        log::warn(category, "node {}: {}: closing the session", link->node_id, m.error().message);
        link->session->close();
        return;
    }
    if (m->volumes) {
        std::lock_guard lock(volumes_mutex_);
        volumes_[link->node_id] = std::move(*m->volumes);
    }
    log::debug(category, "node {}: {} statuses{}", link->node_id, m->statuses.size(),
               m->complete ? " (complete)" : "");
    bool start_writer = false;
    {
        std::lock_guard lock(reports_mutex_);
        reports_.push_back({link->node_id, std::move(m->statuses), m->complete});
        start_writer = !reports_writing_;
        reports_writing_ = true;
    }
    if (start_writer) asio::post(pool_, [this] { write_reports(); });
}

void NodePort::Impl::write_reports() {
    for (;;) {
        std::vector<Dispatcher::NodeReports> batch;
        {
            std::lock_guard lock(reports_mutex_);
            if (reports_.empty()) {
                reports_writing_ = false;
                return;
            }
            batch.swap(reports_);
        }
        auto applied = dispatcher_.report(batch);
        if (!applied)
            log::warn(category, "store the statuses of {} node message(s): {}", batch.size(),
                      applied.error().message);
        else
            log::debug(category, "{} statuses applied from {} node message(s)", *applied,
                       batch.size());
    }
}

// {"type":"description",...}: the node's platform and resources, as the scheduler places by
// them. A node from before it was sent keeps the description it joined with.
void NodePort::Impl::handle_description(const std::shared_ptr<Link>& link,
                                        const crypto::SecureBuffer& text) {
    auto m = nodeproto::decode_description(text);
    if (!m) {
        log::warn(category, "node {}: {}: closing the session", link->node_id, m.error().message);
        link->session->close();
        return;
    }
    model::NodeDescription d;
    d.os = std::move(m->os);
    d.architecture = std::move(m->architecture);
    d.nano_cpus = m->nano_cpus;
    d.memory_bytes = m->memory_bytes;
    d.generic = std::move(m->generic);
    if (auto r = registry_.set_description(link->node_id, std::move(d)); !r)
        log::warn(category, "node {}: store its description: {}", link->node_id, r.error().message);
}

void NodePort::Impl::handle_logs(const std::shared_ptr<Link>& link,
                                 const crypto::SecureBuffer& text) {
    auto m = nodeproto::decode_logs_reply(text);
    if (!m) {
        log::warn(category, "node {}: {}: closing the session", link->node_id, m.error().message);
        link->session->close();
        return;
    }
    const auto& request = std::get<std::string>(m->request);  // the decoder reads strings only
    if (m->error)
        complete_logs(
            request, link->node_id,
            make_error(Errc::internal, fmt::format("node {}: {}", link->node_id, *m->error)));
    else
        complete_logs(request, link->node_id, std::move(m->data));
}

void NodePort::Impl::handle_volume_removed(const std::shared_ptr<Link>& link,
                                           const crypto::SecureBuffer& text) {
    auto m = nodeproto::decode_volume_removed(text);
    if (!m) {
        log::warn(category, "node {}: {}: closing the session", link->node_id, m.error().message);
        link->session->close();
        return;
    }
    if (m->error.empty()) return complete_logs(m->request, link->node_id, std::string());
    auto code = m->code == "not_found" ? Errc::not_found
                : m->code == "in_use"  ? Errc::conflict
                                       : Errc::internal;
    complete_logs(m->request, link->node_id, make_error(code, m->error));
}

void NodePort::Impl::remove_volume(const std::string& node_id, const std::string& name,
                                   std::chrono::milliseconds timeout, VolumeDone done) {
    if (!model::valid_volume_name(name))
        return done(make_error(Errc::not_found, fmt::format("get {}: no such volume", name)));
    auto link = current(node_id);
    if (!link || link->session->closed())
        return done(make_error(Errc::unavailable,
                               fmt::format("remove {}: node {} is not connected", name, node_id)));
    auto request = crypto::random_id();
    // Answered like a logs request; a removal also leaves the node's reported list.
    LogsDone answered = [this, node_id, name, done = std::move(done)](Result<std::string> r) {
        if (!r) return done(std::move(r).error());
        {
            std::lock_guard lock(volumes_mutex_);
            if (auto it = volumes_.find(node_id); it != volumes_.end())
                std::erase_if(it->second, [&](const auto& v) { return v.name == name; });
        }
        done({});
    };
    {
        std::unique_lock lock(logs_mutex_);
        if (logs_stopping_ || logs_.size() >= max_pending_logs) {
            lock.unlock();
            return answered(make_error(Errc::unavailable, "too many node requests in progress"));
        }
        logs_.emplace(request, PendingLogs{node_id, link->generation, Steady::now() + timeout,
                                           std::move(answered)});
    }
    logs_changed_.notify_all();
    if (!link->session->send(nodeproto::encode(nodeproto::VolumeRemove{request, name})))
        complete_logs(
            request, node_id,
            make_error(Errc::unavailable,
                       fmt::format("remove {}: node {} is not connected", name, node_id)));
}

void NodePort::Impl::ask_renewal_if_stale(const std::shared_ptr<Link>& link) {
    auto& trust = trust_;
    const auto& peer = link->session->peer();
    trust.note_session(peer);
    auto node = registry_.get(link->node_id);
    const char* reason = nullptr;
    if (trust.rotation_in_progress() &&
        peer.issuer_public_key != trust.tls_info().cert_issuer_public_key)
        reason = "CA rotation";
    else if (node && cert_role(node->spec.role) != peer.role)
        reason = "role";
    if (reason) link->session->send(nodeproto::encode(nodeproto::RenewRequest{reason}));
}

// {"type":"renew","csr"}: a certificate for the same node and key, with the node's recorded
// role, from the current CA; answered {"type":"certificate",...} or {"type":"error",...}.
void NodePort::Impl::handle_renew(const std::shared_ptr<Link>& link,
                                  const crypto::SecureBuffer& text) {
    auto& trust = trust_;
    auto renew = nodeproto::decode_renew(text);
    if (!renew) {
        log::warn(category, "node {}: {}: closing the session", link->node_id,
                  renew.error().message);
        link->session->close();
        return;
    }
    auto node = registry_.get(link->node_id);
    if (!node) return;  // removed meanwhile: its session is being closed
    auto issued = trust.renew(renew->csr, link->session->peer(), cert_role(node->spec.role));
    if (!issued) {
        log::warn(category, "node {}: renewal refused: {}", link->node_id, issued.error().message);
        link->session->send(
            nodeproto::encode(nodeproto::ErrorMessage{issued.error().message, std::nullopt}));
        return;
    }
    if (auto info = pki::read_certificate(issued->certificate_pem); info) {
        NodeRegistration reg;
        reg.id = node->meta.id;
        reg.role = node->spec.role;
        reg.description = node->description;
        reg.addr = link->session->remote_address();
        reg.certificate_expiry = timestamp(info->not_after);
        if (auto r = registry_.register_node(std::move(reg)); !r)
            log::warn(category, "node {}: record the new certificate's expiry: {}", link->node_id,
                      r.error().message);
    }
    link->session->send(nodeproto::encode(
        nodeproto::CertificateMessage{issued->certificate_pem, issued->ca_bundle_pem}));
    log::info(category, "node {} renewed its certificate", link->node_id);
    finish_rotation_if_done();
}

void NodePort::Impl::finish_rotation_if_done() {
    auto done = trust_.finish_rotation_if_renewed(registry_);
    if (!done)
        log::warn(category, "finish the CA rotation: {}", done.error().message);
    else if (*done)
        log::info(category, "CA rotation finished: every node holds a certificate of the new CA");
}

void NodePort::Impl::closed(const std::shared_ptr<Session>& s, const Error& why) {
    std::shared_ptr<Link> link;
    bool newest = false;
    {
        std::lock_guard lock(mutex_);
        auto it = links_.find(s.get());
        if (it == links_.end()) return;
        link = std::move(it->second);
        links_.erase(it);
        // A reconnect may open before the old session's end is seen: only the newest session
        // speaks for the node's state.
        if (auto e = nodes_.find(link->node_id); e != nodes_.end() && e->second.current == link) {
            e->second.current.reset();
            newest = true;
        }
    }
    log::info(category, "node {} session ended: {}", link->node_id, why.message);
    fail_logs(link->node_id, link->generation,
              make_error(Errc::unavailable, fmt::format("node {} disconnected", link->node_id)));
    asio::post(link->strand, [this, link, newest] { end_link(link, newest); });
}

void NodePort::Impl::end_link(const std::shared_ptr<Link>& link, bool newest) {
    link->stream.reset();
    if (!newest || stopping_) return;
    auto r = registry_.set_status(link->node_id, model::NodeState::down,
                                  link->session->remote_address());
    if (!r && r.error().code != Errc::not_found)
        log::warn(category, "node {}: mark down: {}", link->node_id, r.error().message);
    else if (r)
        log::info(category, "node {} down", link->node_id);
}

std::shared_ptr<Link> NodePort::Impl::current(std::string_view node_id) {
    std::lock_guard lock(mutex_);
    auto it = nodes_.find(node_id);
    return it == nodes_.end() ? nullptr : it->second.current;
}

void NodePort::Impl::forget(std::string_view node_id) {
    std::lock_guard lock(mutex_);
    // Its open session, if any, ends without a state write (there is no record to write).
    if (auto it = nodes_.find(node_id); it != nodes_.end()) nodes_.erase(it);
}

void NodePort::Impl::fetch_logs(const std::string& node_id, const std::string& task_id,
                                std::size_t tail, std::chrono::milliseconds timeout,
                                LogsDone done) {
    if (!model::valid_task_id(task_id))
        return done(make_error(Errc::invalid_argument, "invalid task id"));
    auto link = current(node_id);
    if (!link || link->session->closed())
        return done(
            make_error(Errc::unavailable, fmt::format("node {} is not connected", node_id)));
    auto request = crypto::random_id();
    {
        std::unique_lock lock(logs_mutex_);
        if (logs_stopping_ || logs_.size() >= max_pending_logs) {
            lock.unlock();
            return done(make_error(Errc::unavailable, "too many log requests in progress"));
        }
        logs_.emplace(request, PendingLogs{node_id, link->generation, Steady::now() + timeout,
                                           std::move(done)});
    }
    logs_changed_.notify_all();
    if (!link->session->send(
            nodeproto::encode(nodeproto::LogsRequest{request, task_id, tail, std::nullopt})))
        complete_logs(
            request, node_id,
            make_error(Errc::unavailable, fmt::format("node {} is not connected", node_id)));
}

void NodePort::Impl::complete_logs(const std::string& request, std::string_view node_id,
                                   Result<std::string> r) {
    LogsDone done;
    {
        std::lock_guard lock(logs_mutex_);
        auto it = logs_.find(request);
        // Unknown (already timed out) or another node's request: nothing to answer.
        if (it == logs_.end() || it->second.node_id != node_id) return;
        done = std::move(it->second.done);
        logs_.erase(it);
    }
    done(std::move(r));
}

void NodePort::Impl::fail_logs(std::string_view node_id, std::optional<std::uint64_t> generation,
                               const Error& why) {
    std::vector<LogsDone> failed;
    {
        std::lock_guard lock(logs_mutex_);
        for (auto it = logs_.begin(); it != logs_.end();) {
            bool match = node_id.empty() || (it->second.node_id == node_id &&
                                             (!generation || it->second.generation == *generation));
            if (match) {
                failed.push_back(std::move(it->second.done));
                it = logs_.erase(it);
            } else {
                ++it;
            }
        }
    }
    for (auto& done : failed) done(why);
}

void NodePort::Impl::sweep_logs() {
    std::unique_lock lock(logs_mutex_);
    while (!logs_stopping_) {
        auto now = Steady::now();
        std::vector<LogsDone> expired;
        std::optional<Steady::time_point> next;
        for (auto it = logs_.begin(); it != logs_.end();) {
            if (it->second.deadline <= now) {
                expired.push_back(std::move(it->second.done));
                it = logs_.erase(it);
            } else {
                if (!next || it->second.deadline < *next) next = it->second.deadline;
                ++it;
            }
        }
        if (!expired.empty()) {
            lock.unlock();
            for (auto& done : expired)
                done(make_error(Errc::unavailable, "the node did not answer in time"));
            lock.lock();
            continue;
        }
        if (next)
            logs_changed_.wait_until(lock, *next);
        else
            logs_changed_.wait(lock);
    }
}

// NodePort.

NodePort::NodePort(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<NodePort>> NodePort::start(Parts parts, NodePortOptions options) {
    auto impl = std::make_unique<Impl>(parts, std::move(options));
    if (auto r = impl->start(); !r) return std::move(r).error();
    return std::unique_ptr<NodePort>(new NodePort(std::move(impl)));
}

NodePort::~NodePort() = default;

std::uint16_t NodePort::port() const noexcept {
    return impl_->server_->port();
}
std::size_t NodePort::session_count() const {
    return impl_->server_->session_count();
}

void NodePort::node_removed(const std::string& node_id) {
    impl_->forget(node_id);
    impl_->server_->close_sessions(node_id);
    // A rotation may have been waiting for this node only.
    impl_->finish_rotation_if_done();
    impl_->fail_logs(node_id, std::nullopt,
                     make_error(Errc::unavailable, fmt::format("node {} was removed", node_id)));
    std::lock_guard lock(impl_->volumes_mutex_);
    impl_->volumes_.erase(node_id);
}

void NodePort::ca_changed() {
    impl_->ca_changed();
}

void NodePort::set_managers(std::vector<std::string> addrs) {
    impl_->set_managers(std::move(addrs));
}

void NodePort::assignments_changed() {
    impl_->assignments_changed();
}

void NodePort::node_role_changed(const std::string& node_id) {
    if (auto link = impl_->current(node_id);
        link && link->session->send(nodeproto::encode(nodeproto::RenewRequest{"role"})))
        log::info(category, "node {}: role changed, asked for a new certificate", node_id);
}

void NodePort::fetch_logs(const std::string& node_id, const std::string& task_id, std::size_t tail,
                          std::chrono::milliseconds timeout, LogsDone done) {
    impl_->fetch_logs(node_id, task_id, tail, timeout, std::move(done));
}

Result<std::vector<NodeTransport::NodeVolume>> NodePort::volumes() {
    std::vector<NodeVolume> out;
    std::lock_guard lock(impl_->volumes_mutex_);
    for (const auto& [node, list] : impl_->volumes_)
        for (const auto& v : list)
            out.push_back({node, v.name, v.mountpoint, v.created_at, v.labels});
    return out;
}

void NodePort::remove_volume(const std::string& node_id, const std::string& name,
                             std::chrono::milliseconds timeout, VolumeDone done) {
    impl_->remove_volume(node_id, name, timeout, std::move(done));
}

}  // namespace coffer::manager
