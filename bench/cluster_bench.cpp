// The cluster's end-to-end figures, with a real cofferd and real agents on this machine:
//
//   node-ready  coffer-agent start -> node ready in GET /nodes (first start: join; restart)
//   joins       N nodes joining at once (in this process: key, CSR, join each)
//   sessions    the manager's memory per idle session (N sessions from this process)
//   fanout      a global service with a secret over N agents in the no-op benchmark mode
//   fanout-sessions
//               the same over --sessions node sessions held by this process, each reporting
//               its task running at once: the manager's side at 1,000 nodes
//   service     real containers: create -> secret readable in the task; --secret-add -> the
//               new task reads it; a 10-replica rolling update
//   rotate-live
//               a secret rotated under a 10-replica live-mode service on one real agent ->
//               every task's file holds the new bytes (p50)
//   rotate-fanout
//               the same under 100 replicas over N no-op agents (10 each) that write real
//               secret files: per task and per round, p50 and p99
//   network     in a network namespace of its own: a task's start without a network and with
//               an overlay network (alternating, the same run); a server and a client service
//               created together -> the client fetched the server's page by its service name
//   pull        a loopback registry: create -> first line with an image pulled vs one in the
//               store (alternating); ten replicas of an image to pull on one node, blobs fetched
//
//   bench-cluster --cofferd PATH --agent PATH [--scenario NAME]... [--runs N] [--agents N]
//
// Every process it starts is stopped, every directory removed, also when a step fails.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <barrier>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <boost/json.hpp>

#include "coffer/agent/assignments.h"
#include "coffer/agent/enrollment.h"
#include "coffer/base/process.h"
#include "coffer/base/unique_fd.h"
#include "coffer/crypto/encoding.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/net/http_client.h"
#include "coffer/nodeconn/client.h"
#include "coffer/nodeproto/status.h"

namespace fs = std::filesystem;
namespace json = boost::json;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
using coffer::Child;

namespace {

double ms_since(Clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

double percentile(std::vector<double> v, double p) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    auto idx = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
    return v[std::min(idx, v.size() - 1)];
}

void report(const char* what, const std::vector<double>& v) {
    std::printf("  %-44s n=%zu p50 %.1f ms  min %.1f  max %.1f\n", what, v.size(),
                percentile(v, 0.5), v.empty() ? 0 : *std::min_element(v.begin(), v.end()),
                v.empty() ? 0 : *std::max_element(v.begin(), v.end()));
    std::fflush(stdout);
}

// As report(), with the 99th percentile: for figures whose target is a tail.
void report_tail(const char* what, const std::vector<double>& v) {
    std::printf("  %-44s n=%zu p50 %.1f ms  p99 %.1f  min %.1f  max %.1f\n", what, v.size(),
                percentile(v, 0.5), percentile(v, 0.99),
                v.empty() ? 0 : *std::min_element(v.begin(), v.end()),
                v.empty() ? 0 : *std::max_element(v.begin(), v.end()));
    std::fflush(stdout);
}

[[noreturn]] void die(const std::string& why) {
    throw std::runtime_error(why);
}

// Polls cond every `every` until it holds; throws naming what after the deadline.
void await(const char* what, const std::function<bool()>& cond, std::chrono::milliseconds deadline,
           std::chrono::microseconds every = 1ms) {
    auto until = Clock::now() + deadline;
    while (!cond()) {
        if (Clock::now() > until) die(fmt::format("timed out waiting for {}", what));
        std::this_thread::sleep_for(every);
    }
}

std::uint16_t free_port() {
    coffer::UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0)
        die("no free port");
    return ntohs(a.sin_port);
}

std::size_t rss_kib(int pid) {
    std::ifstream in(fmt::format("/proc/{}/status", pid));
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("VmRSS:", 0) == 0) return std::stoul(line.substr(6));
    return 0;
}

struct Options {
    std::string manager_log_level = "warn";  // cofferd's --log-level (its log goes to stderr)
    std::string cofferd, agent, images_script;
    bool own_netns = false;  // cofferd and the agents in a network namespace the bench makes
    int runs = 10;
    int agents = 200;
    bool agents_given = false;  // --agents on the command line (else each scenario's default)
    int sessions = 1000;
    std::vector<std::string> agent_args;  // extra coffer-agent arguments for node-ready and service
};

// A cofferd on a temporary directory, with an API client, and the agents it knows.
class Cluster {
  public:
    explicit Cluster(const Options& o) : o_(o) {
        std::string tmpl = (fs::temp_directory_path() / "coffer-cluster-bench-XXXXXX").string();
        if (!::mkdtemp(tmpl.data())) die("mkdtemp");
        dir_ = tmpl;
        port_ = free_port();
        manager_ = fmt::format("127.0.0.1:{}", port_);
        if (o.own_netns) {
            // Bridges, VXLAN devices and rules the agent makes stay in it, gone with it.
            netns_ = fmt::format("coffer-bench-{}", ::getpid());
            if (!coffer::run_command({"ip", "netns", "add", netns_}).ok())
                die("ip netns add " + netns_);
            if (!coffer::run_command({"ip", "-n", netns_, "link", "set", "lo", "up"}).ok())
                die("lo up in " + netns_);
            enter_ = {"nsenter", "--net=/run/netns/" + netns_};
        }
        std::vector<std::string> argv = enter_;
        argv.insert(argv.end(),
                    {o.cofferd, "--data-dir", dir_ + "/data", "--socket", dir_ + "/api.sock",
                     "--listen", manager_, "--log-level", o.manager_log_level});
        daemon_ = Child::spawn({.argv = argv});
        await(
            "cofferd",
            [&] {
                auto c = coffer::net::HttpClient::connect("unix://" + dir_ + "/api.sock");
                if (!c) return false;
                api_ = std::move(*c);
                return api_->request("GET", "/_ping").ok();
            },
            20s, 5ms);
        auto swarm = get("/swarm");
        token_ = std::string(swarm.at("JoinTokens").at("Worker").as_string());
    }
    ~Cluster() {
        // SIGTERM first: an agent then stops its tasks and removes their containers, which a
        // SIGKILL would leave running (recovered only by the next agent on that run directory).
        try {
            for (auto& a : agents_)
                if (a.running()) a.signal(SIGTERM);
            for (auto& a : agents_)
                if (a.running() && !a.wait_for(30s)) a.signal(SIGKILL);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "bench-cluster: stopping the agents: %s\n", e.what());
        }
        agents_.clear();  // SIGKILL to any left, reaped
        if (daemon_.running()) {
            daemon_.signal(SIGTERM);
            if (!daemon_.wait_for(20s)) daemon_.signal(SIGKILL);
        }
        if (!netns_.empty()) (void)coffer::run_command({"ip", "netns", "del", netns_});
        std::error_code ec;
        fs::remove_all(dir_, ec);
    }

    json::value call(std::string_view method, const std::string& target,
                     const std::string& body = {}, int expect = 0) {
        auto r = api_->request(method, target,
                               {reinterpret_cast<const std::uint8_t*>(body.data()), body.size()});
        if (!r) die(fmt::format("{} {}: {}", method, target, r.error().message));
        if ((expect && r->status != expect) || r->status >= 400)
            die(fmt::format("{} {}: {} {}", method, target, r->status, r->body));
        return r->body.empty() ? json::value{} : json::parse(r->body);
    }
    json::value get(const std::string& target) { return call("GET", target); }

    // Ready nodes' IDs; with a role ("worker"), only those of that role (the manager is a node
    // of its own).
    std::set<std::string> ready_nodes(std::string_view role = {}) {
        std::set<std::string> ids;
        auto nodes = get("/nodes");
        for (const auto& n : nodes.as_array())
            if (n.at("Status").at("State") == "ready" &&
                (role.empty() || n.at("Spec").at("Role").as_string() == role))
                ids.insert(std::string(n.at("ID").as_string()));
        return ids;
    }

    // Starts an agent on its own data and run directories; first start joins.
    Child& start_agent(const std::string& name, std::vector<std::string> extra = {}) {
        auto base = dir_ + "/agents/" + name;
        fs::create_directories(base);
        // Each agent joins under its own name: one hostname is one active node's.
        std::vector<std::string> argv = enter_;
        argv.insert(argv.end(), {o_.agent, "--data-dir", base + "/data", "--run-dir", base + "/run",
                                 "--manager", manager_, "--log-level", "warn", "--hostname", name});
        argv.insert(argv.end(), extra.begin(), extra.end());
        std::vector<std::string> env;
        for (char** e = environ; *e; ++e) env.emplace_back(*e);
        if (!fs::exists(base + "/data/identity")) env.push_back("COFFER_JOIN_TOKEN=" + token_);
        // Their diagnostics go to a file per agent, not into the figures.
        coffer::UniqueFd err(
            ::open((base + ".log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
        agents_.push_back(Child::spawn({.argv = argv, .env = env, .stderr_fd = err.get()}));
        return agents_.back();
    }
    void stop_agent(Child& c) {
        c.signal(SIGTERM);
        if (!c.wait_for(30s)) c.signal(SIGKILL);
    }
    std::string agent_dir(const std::string& name) const { return dir_ + "/agents/" + name; }
    // Starts an agent that runs real containers: the busybox test image imported into its data
    // directory, which is returned once the node is ready.
    std::string start_real_agent(const std::string& name) {
        start_agent(name, o_.agent_args);
        auto data = agent_dir(name) + "/data";
        auto layout = dir_ + "/images";
        if (!coffer::run_command({o_.images_script, layout}).ok()) die("make-test-images failed");
        auto imported = coffer::run_command(
            {o_.agent, "--data-dir", data, "image", "import", layout, "busybox"});
        if (!imported.ok()) die("image import: " + imported.describe());
        await_ready(name);
        return data;
    }
    // Waits until the agent started under this hostname is a ready node (the manager is a node
    // of its own, so counting nodes is not enough).
    void await_ready(const std::string& hostname) {
        await(
            "the agent ready",
            [&] {
                auto nodes = get("/nodes");
                return std::any_of(
                    nodes.as_array().begin(), nodes.as_array().end(), [&](const auto& n) {
                        return n.at("Description").at("Hostname") == hostname.c_str() &&
                               n.at("Status").at("State") == "ready";
                    });
            },
            60s, 5ms);
    }

    const std::string& dir() const { return dir_; }
    const std::string& manager() const { return manager_; }
    const std::string& token() const { return token_; }
    int daemon_pid() const { return daemon_.pid(); }

  private:
    const Options& o_;
    std::string dir_, manager_, token_, netns_;
    std::vector<std::string> enter_;  // the prefix that runs a program in netns_
    std::uint16_t port_ = 0;
    Child daemon_;
    std::unique_ptr<coffer::net::HttpClient> api_;
    std::vector<Child> agents_;
};

std::span<const std::uint8_t> as_bytes(const std::string& s) {
    return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

std::string create_secret(Cluster& c, const std::string& name) {
    auto r = c.call(
        "POST", "/secrets/create",
        json::serialize(json::object{
            {"Name", name}, {"Data", coffer::crypto::base64_encode(as_bytes("bench-" + name))}}));
    return std::string(r.at("ID").as_string());
}

json::object secret_ref(const std::string& id, const std::string& name) {
    return {{"SecretID", id},
            {"SecretName", name},
            {"File", json::object{{"Name", name}, {"UID", "0"}, {"GID", "0"}, {"Mode", 0444}}}};
}

// The references to secrets (id, name) as a ContainerSpec's Secrets.
json::array secret_refs(const std::vector<std::pair<std::string, std::string>>& secrets) {
    json::array a;
    for (const auto& [id, name] : secrets) a.emplace_back(secret_ref(id, name));
    return a;
}

// A global service on every worker, its task mounting one secret.
json::object global_service(const std::string& name, const std::string& secret_id,
                            const std::string& secret_name) {
    return json::object{
        {"Name", name},
        {"TaskTemplate",
         json::object{
             {"ContainerSpec", json::object{{"Image", "busybox"},
                                            {"Secrets", secret_refs({{secret_id, secret_name}})}}},
             {"Placement", json::object{{"Constraints", json::array{"node.role==worker"}}}}}},
        {"Mode", json::object{{"Global", json::object{}}}}};
}

// Tasks of a service in a state, by ID.
std::set<std::string> tasks_in(Cluster& c, const std::string& service, std::string_view state) {
    std::set<std::string> ids;
    json::array ids_filter;
    ids_filter.emplace_back(service);
    auto filters = json::serialize(json::object{{"service", std::move(ids_filter)}});
    std::string enc;
    for (char ch : filters)
        enc += std::isalnum(static_cast<unsigned char>(ch)) ? std::string(1, ch)
                                                            : fmt::format("%{:02X}", ch);
    auto tasks = c.get("/tasks?filters=" + enc);
    for (const auto& t : tasks.as_array())
        if (t.at("Status").at("State").as_string() == state)
            ids.insert(std::string(t.at("ID").as_string()));
    return ids;
}

// Creates the service and waits until its replicas all run; returns its ID.
std::string create_running(Cluster& c, const json::object& spec, int replicas) {
    auto id =
        std::string(c.call("POST", "/services/create", json::serialize(spec)).at("ID").as_string());
    await(
        "every task running",
        [&] { return tasks_in(c, id, "running").size() == static_cast<std::size_t>(replicas); },
        120s, 5ms);
    return id;
}

void remove_service(Cluster& c, const std::string& id) {
    c.call("DELETE", "/services/" + id);
    await(
        "the service's tasks to stop", [&] { return tasks_in(c, id, "running").empty(); }, 60s,
        5ms);
}

// ---------------------------------------------------------------------------------------------

void node_ready(const Options& o) {
    std::printf(
        "== node ready: coffer-agent start -> node ready (GET /nodes, polled every 1 ms)\n");
    Cluster c(o);
    std::vector<double> first, again;
    for (int i = 0; i < o.runs; ++i) {
        auto name = fmt::format("n{}", i);
        auto before = c.ready_nodes();
        auto t0 = Clock::now();
        auto& agent = c.start_agent(name, o.agent_args);
        std::string id;
        await(
            "node ready",
            [&] {
                for (const auto& n : c.ready_nodes())
                    if (!before.count(n)) id = n;
                return !id.empty();
            },
            20s);
        first.push_back(ms_since(t0));
        c.stop_agent(agent);
        await(
            "node down", [&] { return !c.ready_nodes().count(id); }, 20s);
        t0 = Clock::now();
        auto& again_agent = c.start_agent(name, o.agent_args);
        await(
            "node ready again", [&] { return c.ready_nodes().count(id) > 0; }, 20s);
        again.push_back(ms_since(t0));
        c.stop_agent(again_agent);
        await(
            "node down", [&] { return !c.ready_nodes().count(id); }, 20s);
    }
    report("first start (key, CSR, join, session)", first);
    report("restart (stored identity, session)", again);
}

void joins(const Options& o) {
    std::printf("== joins: %d nodes joining at once (one thread each, in this process)\n",
                o.agents);
    Cluster c(o);
    auto token = coffer::crypto::SecureBuffer::copy_of(std::string_view(c.token()));
    std::barrier start(o.agents + 1);
    std::vector<std::thread> threads;
    std::atomic<int> failed{0};
    for (int i = 0; i < o.agents; ++i)
        threads.emplace_back([&, i] {
            auto dir = fmt::format("{}/join/{}", c.dir(), i);
            fs::create_directories(dir);
            start.arrive_and_wait();
            if (!coffer::agent::enroll(dir, c.manager(), token, {}, fmt::format("join{}", i)))
                ++failed;
        });
    auto t0 = Clock::now();
    start.arrive_and_wait();
    for (auto& t : threads) t.join();
    double ms = ms_since(t0);
    std::printf("  %d joins in %.0f ms: %.0f joins/s, %d failed\n", o.agents, ms,
                o.agents * 1000.0 / ms, failed.load());
}

// n nodes joined from this process (4 threads), hostnames s0..s<n-1>: their credentials.
std::vector<coffer::nodeconn::Credentials> join_nodes(Cluster& c, int n) {
    auto token = coffer::crypto::SecureBuffer::copy_of(std::string_view(c.token()));
    std::vector<coffer::nodeconn::Credentials> creds(n);
    std::vector<std::thread> threads;
    std::atomic<int> next{0};
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&] {
            for (int i; (i = next++) < n;) {
                auto dir = fmt::format("{}/s/{}", c.dir(), i);
                fs::create_directories(dir);
                auto id = coffer::agent::enroll(dir, c.manager(), token, {}, fmt::format("s{}", i));
                if (!id) die("join: " + id.error().message);
                creds[i] = std::move(id->credentials);
            }
        });
    for (auto& t : threads) t.join();
    return creds;
}

// A session for each of creds (with handlers(i) for the i-th, when given), once every node is
// ready.
std::vector<std::unique_ptr<coffer::nodeconn::NodeClient>> open_sessions(
    Cluster& c, std::vector<coffer::nodeconn::Credentials>& creds,
    const std::function<coffer::nodeconn::SessionHandlers(int)>& handlers) {
    auto endpoint = coffer::agent::parse_endpoint(c.manager());
    std::vector<std::unique_ptr<coffer::nodeconn::NodeClient>> clients;
    for (std::size_t i = 0; i < creds.size(); ++i) {
        auto cl = coffer::nodeconn::NodeClient::connect(
            *endpoint, std::move(creds[i]),
            handlers ? handlers(static_cast<int>(i)) : coffer::nodeconn::SessionHandlers{});
        if (!cl) die("session: " + cl.error().message);
        clients.push_back(std::move(*cl));
    }
    await(
        "every node ready", [&] { return c.ready_nodes("worker").size() == creds.size(); }, 60s,
        50ms);
    return clients;
}

void sessions(const Options& o) {
    std::printf("== sessions: cofferd's memory with %d idle sessions (VmRSS)\n", o.sessions);
    Cluster c(o);
    auto creds = join_nodes(c, o.sessions);
    // Settle: the joins' transient allocations are returned before the baseline.
    std::this_thread::sleep_for(2s);
    auto base = rss_kib(c.daemon_pid());
    auto t0 = Clock::now();
    auto clients = open_sessions(c, creds, {});
    double ms = ms_since(t0);
    std::this_thread::sleep_for(5s);  // a few heartbeat rounds
    auto with = rss_kib(c.daemon_pid());
    std::printf("  %d sessions opened and ready in %.0f ms\n", o.sessions, ms);
    std::printf(
        "  cofferd VmRSS: %.1f MiB before, %.1f MiB with the sessions: %.1f KiB per session, "
        "%.1f MiB per 1,000\n",
        base / 1024.0, with / 1024.0, double(with - base) / o.sessions,
        double(with - base) / o.sessions * 1000 / 1024);
}

void fanout(const Options& o) {
    std::printf(
        "== fan-out: a global service with one secret over %d agents (no-op benchmark executor)\n",
        o.agents);
    Cluster c(o);
    for (int i = 0; i < o.agents; ++i)
        c.start_agent(fmt::format("a{}", i), {"--benchmark-noop-executor"});
    // Joins are handled one at a time (each signs a certificate and writes the node): allow for
    // a thousand.
    await(
        "every agent ready",
        [&] { return c.ready_nodes("worker").size() == static_cast<std::size_t>(o.agents); },
        std::max<std::chrono::milliseconds>(120s, o.agents * 300ms), 20ms);
    auto sid = create_secret(c, "fanout");
    std::vector<double> times;
    for (int run = 0; run < std::max(1, o.runs / 3); ++run) {
        auto spec = global_service(fmt::format("fan{}", run), sid, "fanout");
        auto t0 = Clock::now();
        auto id = std::string(
            c.call("POST", "/services/create", json::serialize(spec)).at("ID").as_string());
        await(
            "every task running",
            [&] { return tasks_in(c, id, "running").size() == static_cast<std::size_t>(o.agents); },
            60s, 2ms);
        times.push_back(ms_since(t0));
        remove_service(c, id);
    }
    report(fmt::format("create -> {} tasks running", o.agents).c_str(), times);
}

// The manager's side of the fan-out at the scale of the issue: N node sessions held by this
// process (N agent processes do not fit on 2 cores beside cofferd). Each session answers an
// assignment as an agent does on the wire: every task it adds is reported running at once, with
// no runner behind it. Timed from the create request: until every session has received its task
// and the secret (what "reaches the node" means), and until the API lists every task running.
void fanout_sessions(const Options& o) {
    std::printf(
        "== fanout-sessions: a global service with one secret over %d node sessions held by this "
        "process\n",
        o.sessions);
    Cluster c(o);
    auto creds = join_nodes(c, o.sessions);
    struct Node {
        std::atomic<int> secret_run{-1}, task_run{-1};
        std::atomic<int> counted_run{-1};  // the run in which `reached` counted this node
    };
    std::vector<Node> nodes(o.sessions);
    std::atomic<int> run_now{-1};
    std::mutex mu;
    std::string secret_now;  // under mu
    std::atomic<int> reached{0};
    std::atomic<std::int64_t> all_reached_ns{0};
    auto t0 = Clock::now();
    auto note = [&](Node& n) {
        int run = run_now.load();
        // Once per node and run, though later messages (a complete set again) may match too.
        if (n.secret_run.load() == run && n.task_run.load() == run &&
            n.counted_run.exchange(run) != run && ++reached == o.sessions)
            all_reached_ns =
                std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count();
    };
    auto clients = open_sessions(c, creds, [&](int i) {
        coffer::nodeconn::SessionHandlers h;
        h.on_message = [&, i](const std::shared_ptr<coffer::nodeconn::Session>& s,
                              coffer::nodeconn::Message m) {
            auto a = coffer::agent::parse_assignments(m.json);
            if (!a) return;  // not an assignment (managers, networks)
            coffer::nodeproto::StatusMessage status;
            status.complete = a->complete;
            bool secret = false, task = false;
            {
                std::lock_guard l(mu);
                for (const auto& ch : a->changes) {
                    if (ch.action == coffer::agent::Change::Action::remove) {
                        if (!ch.is_secret)
                            status.statuses.push_back(
                                {.task_id = ch.id, .state = coffer::model::TaskState::shutdown});
                        continue;
                    }
                    if (ch.is_secret && !secret_now.empty() && ch.id.starts_with(secret_now))
                        secret = true;
                    if (!ch.is_secret && ch.task) {
                        task = true;
                        status.statuses.push_back(
                            {.task_id = ch.id, .state = coffer::model::TaskState::running});
                    }
                }
            }
            int run = run_now.load();
            if (secret) nodes[i].secret_run = run;
            if (task) nodes[i].task_run = run;
            if (secret || task) note(nodes[i]);
            if (!status.statuses.empty() || a->complete) s->send(coffer::nodeproto::encode(status));
        };
        return h;
    });
    std::vector<double> to_nodes, to_running;
    for (int run = 0; run < std::max(1, o.runs / 3); ++run) {
        auto name = fmt::format("fanout{}", run);
        auto sid = create_secret(c, name);
        {
            std::lock_guard l(mu);
            secret_now = sid;
        }
        reached = 0;
        all_reached_ns = 0;
        run_now = run;
        auto spec = global_service(fmt::format("fan{}", run), sid, name);
        t0 = Clock::now();
        auto id = std::string(
            c.call("POST", "/services/create", json::serialize(spec)).at("ID").as_string());
        await(
            "the task and the secret at every node", [&] { return all_reached_ns.load() != 0; },
            60s, 1ms);
        to_nodes.push_back(all_reached_ns.load() / 1e6);
        await(
            "every task running",
            [&] {
                return tasks_in(c, id, "running").size() == static_cast<std::size_t>(o.sessions);
            },
            60s, 10ms);
        to_running.push_back(ms_since(t0));
        // The next run starts once the manager has forgotten this service's tasks (each run
        // on a settled cluster).
        auto t1 = Clock::now();
        remove_service(c, id);
        await(
            "every task removed", [&] { return c.get("/tasks").as_array().empty(); }, 300s, 50ms);
        std::printf(
            "  run %d: at every node %.1f ms, all running %.1f ms; removed, every task gone after "
            "%.0f ms\n",
            run, to_nodes.back(), to_running.back(), ms_since(t1));
    }
    report(fmt::format("create -> task and secret at all {} nodes", o.sessions).c_str(), to_nodes);
    report(fmt::format("create -> {} tasks running (API, polled every 10 ms)", o.sessions).c_str(),
           to_running);
}

// A log file that contains marker; the runner writes each task's output to <data>/logs/<id>.log.
bool log_has(const std::string& path, std::string_view marker) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str().find(marker) != std::string::npos;
}

void service(const Options& o) {
    std::printf("== services with real containers: secret readable inside the task\n");
    Cluster c(o);
    auto data = c.start_real_agent("real");
    auto s1 = create_secret(c, "s1");
    auto s2 = create_secret(c, "s2");
    // Reads every secret it has, prints their names, and exits at once on SIGTERM.
    json::array command;
    for (const char* arg :
         {"sh", "-c",
          "trap 'exit 0' TERM; cat /run/secrets/* >/dev/null && echo READY $(ls /run/secrets | "
          "tr '\\n' ' ')END; while :; do sleep 1 & wait; done"})
        command.emplace_back(arg);
    auto spec_for = [&](const std::string& name, int replicas, json::array secrets) {
        return json::object{
            {"Name", name},
            {"TaskTemplate",
             json::object{{"ContainerSpec", json::object{{"Image", "busybox"},
                                                         {"Command", command},
                                                         {"Secrets", std::move(secrets)}}}}},
            {"Mode", json::object{{"Replicated", json::object{{"Replicas", replicas}}}}},
            {"UpdateConfig", json::object{{"Parallelism", replicas}, {"Order", "stop-first"}}}};
    };
    auto log_of = [&](const std::string& task) { return data + "/logs/" + task + ".log"; };
    // Tasks of the service whose log says READY with exactly these secrets.
    auto ready_with = [&](const std::string& id, std::string_view names) {
        std::set<std::string> ok;
        for (const auto& t : tasks_in(c, id, "running"))
            if (log_has(log_of(t), fmt::format("READY {} END", names))) ok.insert(t);
        return ok;
    };

    std::vector<double> create, add;
    for (int run = 0; run < o.runs; ++run) {
        auto t0 = Clock::now();
        auto id = std::string(c.call("POST", "/services/create",
                                     json::serialize(spec_for(fmt::format("svc{}", run), 1,
                                                              secret_refs({{s1, "s1"}}))))
                                  .at("ID")
                                  .as_string());
        await(
            "the secret read in the task", [&] { return ready_with(id, "s1").size() == 1; }, 30s);
        create.push_back(ms_since(t0));

        auto svc = c.get("/services/" + id);
        auto version = svc.at("Version").at("Index").as_int64();
        auto spec = spec_for(fmt::format("svc{}", run), 1, secret_refs({{s1, "s1"}, {s2, "s2"}}));
        t0 = Clock::now();
        c.call("POST", fmt::format("/services/{}/update?version={}", id, version),
               json::serialize(spec));
        await(
            "the new task reading both secrets",
            [&] { return ready_with(id, "s1 s2").size() == 1; }, 30s);
        add.push_back(ms_since(t0));
        remove_service(c, id);
    }
    report("service create -> secret read in the task", create);
    report("--secret-add -> the new task reads it", add);

    std::vector<double> rolling;
    for (int run = 0; run < std::max(1, o.runs / 3); ++run) {
        auto name = fmt::format("ten{}", run);
        auto id = std::string(c.call("POST", "/services/create",
                                     json::serialize(spec_for(name, 10, secret_refs({{s1, "s1"}}))))
                                  .at("ID")
                                  .as_string());
        await(
            "10 replicas reading s1", [&] { return ready_with(id, "s1").size() == 10; }, 60s, 5ms);
        auto version = c.get("/services/" + id).at("Version").at("Index").as_int64();
        auto t0 = Clock::now();
        c.call("POST", fmt::format("/services/{}/update?version={}", id, version),
               json::serialize(spec_for(name, 10, secret_refs({{s1, "s1"}, {s2, "s2"}}))));
        await(
            "10 new replicas reading s1 and s2",
            [&] { return ready_with(id, "s1 s2").size() == 10; }, 60s, 2ms);
        rolling.push_back(ms_since(t0));
        remove_service(c, id);
    }
    report("10 replicas, parallelism 10: update -> all new", rolling);
}

// A secret rotated under a service in live mode: from the rotation request to every task's
// file holding the new bytes, read through each container's root (real runc tasks, one agent).
void rotate_live(const Options& o) {
    constexpr int replicas = 10;
    std::printf("== secret rotate, live mode: %d running tasks read the new bytes\n", replicas);
    Cluster c(o);
    c.start_real_agent("real");
    auto sid = create_secret(c, "rot");
    json::array command;
    for (const char* arg : {"sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1 & wait; done"})
        command.emplace_back(arg);
    json::object spec{
        {"Name", "rot"},
        {"Labels", json::object{{"coffer.secret-update", "live"}}},
        {"TaskTemplate",
         json::object{{"ContainerSpec", json::object{{"Image", "busybox"},
                                                     {"Command", command},
                                                     {"Secrets", secret_refs({{sid, "rot"}})}}}}},
        {"Mode", json::object{{"Replicated", json::object{{"Replicas", replicas}}}}}};
    spec["TaskTemplate"].as_object()["Placement"] =
        json::object{{"Constraints", json::array{"node.hostname==real"}}};
    auto id = create_running(c, spec, replicas);
    // The containers' pids, for their roots.
    std::vector<std::string> files;
    auto all = c.get("/tasks");
    for (const auto& t : all.as_array())
        if (t.at("ServiceID").as_string() == id && t.at("Status").at("State") == "running")
            files.push_back(fmt::format(
                "/proc/{}/root/run/secrets/rot",
                t.at("Status").at("ContainerStatus").at("PID").to_number<std::int64_t>()));
    auto read = [](const std::string& path) {
        std::ifstream in(path, std::ios::binary);
        std::stringstream s;
        s << in.rdbuf();
        return s.str();
    };
    std::vector<double> times;
    for (int run = 0; run < o.runs; ++run) {
        auto bytes = fmt::format("rotation-{}", run);
        auto t0 = Clock::now();
        c.call("POST", fmt::format("/secrets/{}/rotate", sid),
               json::serialize(
                   json::object{{"Data", coffer::crypto::base64_encode(as_bytes(bytes))}}));
        await(
            "every task reading the new bytes",
            [&] {
                return std::all_of(files.begin(), files.end(),
                                   [&](const std::string& f) { return read(f) == bytes; });
            },
            30s, 1ms);
        times.push_back(ms_since(t0));
    }
    report(fmt::format("rotate -> {} running tasks read the new bytes", replicas).c_str(), times);
    remove_service(c, id);
}

// The bytes (up to 256) of the file name in the directory dir, or empty when it cannot be read.
std::string small_file(int dir, const char* name) {
    coffer::UniqueFd fd(::openat(dir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) return {};
    char buf[256];
    auto n = ::read(fd.get(), buf, sizeof buf);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string{};
}

// A secret rotated under a 100-replica live-mode service spread over N no-op agents (10 tasks
// each unless --agents says otherwise), which write each task's secret files for real (a tmpfs
// per task in the agent's mount namespace): from the start of the rotation request to each
// task's file holding the new bytes, every file read through its agent's root, all of them in
// each sweep.
void rotate_fanout(const Options& o) {
    constexpr int replicas = 100;
    constexpr auto settle = 250ms;  // between rounds: the last round's reports are in
    const int agents = o.agents_given ? o.agents : 10;
    std::printf(
        "== secret rotate, live mode: %d tasks over %d no-op agents (real secret files) read "
        "the new bytes\n",
        replicas, agents);
    Cluster c(o);
    std::map<std::string, int> pid_of;  // by hostname
    for (int i = 0; i < agents; ++i) {
        auto name = fmt::format("r{}", i);
        pid_of[name] = c.start_agent(name, {"--benchmark-noop-executor"}).pid();
    }
    for (const auto& [name, pid] : pid_of) c.await_ready(name);
    std::map<std::string, std::string> hostname_of;  // by node id
    auto nodes = c.get("/nodes");
    for (const auto& n : nodes.as_array())
        hostname_of[std::string(n.at("ID").as_string())] =
            std::string(n.at("Description").at("Hostname").as_string());

    auto sid = create_secret(c, "rotfan");
    const std::string first = "bench-rotfan";  // create_secret's bytes
    json::object spec{
        {"Name", "rotfan"},
        {"Labels", json::object{{"coffer.secret-update", "live"}}},
        {"TaskTemplate",
         json::object{
             {"ContainerSpec",
              json::object{{"Image", "busybox"}, {"Secrets", secret_refs({{sid, "rotfan"}})}}},
             {"Placement", json::object{{"Constraints", json::array{"node.role==worker"}},
                                        {"MaxReplicas", (replicas + agents - 1) / agents}}}}},
        {"Mode", json::object{{"Replicated", json::object{{"Replicas", replicas}}}}}};
    auto id = create_running(c, spec, replicas);
    // Each task's secrets directory, through its agent's root: <run>/noop-tasks/<task>/run,
    // held open, so that a sweep resolves only the file's name in each (a new version is renamed
    // over the old file in the same directory).
    std::vector<coffer::UniqueFd> dirs;
    std::map<std::string, int> per_node;
    auto tasks = c.get("/tasks");
    for (const auto& t : tasks.as_array()) {
        if (t.at("ServiceID").as_string() != id || t.at("Status").at("State") != "running")
            continue;
        const auto& host = hostname_of.at(std::string(t.at("NodeID").as_string()));
        ++per_node[host];
        auto path = fmt::format("/proc/{}/root{}/run/noop-tasks/{}/run", pid_of.at(host),
                                c.agent_dir(host), std::string_view(t.at("ID").as_string()));
        coffer::UniqueFd dir(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!dir) die(fmt::format("open {}: {}", path, std::strerror(errno)));
        dirs.push_back(std::move(dir));
    }
    std::string spread;
    for (const auto& [host, n] : per_node) spread += fmt::format(" {}:{}", host, n);
    std::printf("  tasks per agent:%s\n", spread.c_str());
    await(
        "every file holding the first bytes",
        [&] {
            return std::all_of(dirs.begin(), dirs.end(), [&](const coffer::UniqueFd& d) {
                return small_file(d.get(), "rotfan") == first;
            });
        },
        30s, 1ms);

    std::vector<double> per_task, all;
    std::size_t sweeps = 0;
    double polled_ms = 0, longest_sweep = 0;
    for (int run = 0; run < o.runs; ++run) {
        std::this_thread::sleep_for(settle);
        auto bytes = fmt::format("rotation-{}", run);
        std::vector<double> seen(dirs.size(), -1);
        auto t0 = Clock::now();
        // Sweeps from the request's start, while it is under way too, back to back: a sleep
        // between them stretches to a millisecond and more on two busy cores.
        std::thread poller([&] {
            std::size_t left = dirs.size();
            auto until = t0 + 30s;
            while (left > 0 && Clock::now() < until) {
                auto sweep = Clock::now();
                for (std::size_t i = 0; i < dirs.size(); ++i)
                    if (seen[i] < 0 && small_file(dirs[i].get(), "rotfan") == bytes) {
                        seen[i] = ms_since(t0);
                        --left;
                    }
                ++sweeps;
                longest_sweep = std::max(longest_sweep, ms_since(sweep));
                std::this_thread::yield();
            }
            polled_ms += ms_since(t0);
        });
        try {
            c.call("POST", fmt::format("/secrets/{}/rotate", sid),
                   json::serialize(
                       json::object{{"Data", coffer::crypto::base64_encode(as_bytes(bytes))}}));
        } catch (...) {
            poller.join();
            throw;
        }
        poller.join();
        auto missing = std::count(seen.begin(), seen.end(), -1.0);
        if (missing > 0)
            die(fmt::format("round {}: {} of {} files without the new bytes after 30 s", run,
                            missing, dirs.size()));
        per_task.insert(per_task.end(), seen.begin(), seen.end());
        all.push_back(*std::max_element(seen.begin(), seen.end()));
    }
    std::printf("  the %zu files swept every %.2f ms on average, the longest sweep %.1f ms\n",
                dirs.size(), sweeps > 0 ? polled_ms / static_cast<double>(sweeps) : 0.0,
                longest_sweep);
    report_tail("rotate -> a task's file holds the new bytes", per_task);
    report_tail(fmt::format("rotate -> all {} tasks' files hold them", replicas).c_str(), all);
    dirs.clear();  // no longer holding the tasks' mounts busy
    remove_service(c, id);
}

// Networks, one node in a namespace of the bench's own: the added start time of a task on an
// overlay network (CNI bridge, VXLAN device, addresses, resolver), measured against starts
// without a network in the same run; and a server and a client created together until the
// client has fetched the server's page by its service name through the node's resolver.
void network(Options o) {
    std::printf("== networks: task start with and without a network; client reaches server\n");
    o.own_netns = true;
    Cluster c(o);
    auto data = c.start_real_agent("real");
    auto net = std::string(
        c.call("POST", "/networks/create",
               json::serialize(json::object{{"Name", "benchnet"}, {"Driver", "overlay"}}))
            .at("Id")
            .as_string());
    auto log_of = [&](const std::string& task) { return data + "/logs/" + task + ".log"; };
    auto script = [](const char* text) {
        json::array a;
        for (const char* arg : {"sh", "-c", text}) a.emplace_back(arg);
        return a;
    };
    auto spec_for = [&](const std::string& name, json::array command, bool on_network) {
        json::object task{
            {"ContainerSpec", json::object{{"Image", "busybox"}, {"Command", std::move(command)}}}};
        if (on_network) task["Networks"] = json::array{json::object{{"Target", net}}};
        return json::serialize(
            json::object{{"Name", name},
                         {"TaskTemplate", std::move(task)},
                         {"Mode", json::object{{"Replicated", json::object{{"Replicas", 1}}}}}});
    };
    auto create = [&](const std::string& spec) {
        return std::string(c.call("POST", "/services/create", spec).at("ID").as_string());
    };
    // The service's running task whose log holds marker.
    auto logged = [&](const std::string& id, std::string_view marker) {
        for (const auto& t : tasks_in(c, id, "running"))
            if (log_has(log_of(t), marker)) return true;
        return false;
    };

    auto started = script("trap 'exit 0' TERM; echo STARTED; while :; do sleep 1 & wait; done");
    std::vector<double> plain, attached;
    for (int run = 0; run < o.runs; ++run)
        for (bool on_network : {false, true}) {
            auto t0 = Clock::now();
            auto id = create(spec_for(fmt::format("start{}{}", run, on_network ? "n" : ""), started,
                                      on_network));
            await(
                "the task's first line", [&] { return logged(id, "STARTED"); }, 60s);
            (on_network ? attached : plain).push_back(ms_since(t0));
            remove_service(c, id);
        }
    report("create -> the task's first line, no network", plain);
    report("create -> the task's first line, overlay network", attached);

    auto server = script(
        "mkdir -p /tmp/www && echo page > /tmp/www/index.html && exec httpd -f -p 80 -h /tmp/www");
    auto client = script(
        "trap 'exit 0' TERM; i=0; while [ $i -lt 600 ]; do "
        "if [ \"$(wget -q -O - http://web/ 2>/dev/null)\" = page ]; then echo FETCHED; break; fi; "
        "i=$((i+1)); sleep 0.05; done; while :; do sleep 1 & wait; done");
    std::vector<double> reach;
    for (int run = 0; run < o.runs; ++run) {
        auto t0 = Clock::now();
        auto web = create(spec_for("web", server, true));
        auto cl = create(spec_for("client", client, true));
        await(
            "the client's fetch by name", [&] { return logged(cl, "FETCHED"); }, 60s);
        reach.push_back(ms_since(t0));
        remove_service(c, cl);
        remove_service(c, web);
    }
    report("server and client created -> client fetched by name", reach);
    c.call("DELETE", "/networks/" + net);
}

// A docker-registry on loopback (plain HTTP, no authentication: what is measured is the pull,
// not the login), with its access log in a file. Stopped and removed when destroyed.
class LoopbackRegistry {
  public:
    explicit LoopbackRegistry(const std::string& dir) : dir_(dir) {
        fs::create_directories(dir_ + "/storage");
        port_ = free_port();
        host_ = fmt::format("127.0.0.1:{}", port_);
        std::ofstream(dir_ + "/config.yml") << fmt::format(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n"
            "http:\n  addr: {}\nlog:\n  level: info\n",
            dir_ + "/storage", host_);
        coffer::UniqueFd log(
            ::open(log_path().c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
        child_ = Child::spawn({.argv = {"/usr/bin/docker-registry", "serve", dir_ + "/config.yml"},
                               .stdout_fd = log.get(),
                               .stderr_fd = log.get()});
        await(
            "the registry",
            [&] {
                return coffer::run_command({"skopeo", "inspect", "--tls-verify=false", "--raw",
                                            "docker://" + host_ + "/none:none"})
                           .err.find("connection refused") == std::string::npos;
            },
            20s, 20ms);
    }
    ~LoopbackRegistry() {
        if (child_.running()) {
            child_.signal(SIGTERM);
            if (!child_.wait_for(10s)) child_.signal(SIGKILL);
        }
    }
    const std::string& host() const { return host_; }
    std::string log_path() const { return dir_ + "/registry.log"; }
    // Pushes the image at oci:<layout>:<ref> as <repo_tag>.
    void push(const std::string& layout_ref, const std::string& repo_tag) {
        auto r = coffer::run_command({"skopeo", "copy", "--dest-tls-verify=false",
                                      "oci:" + layout_ref, "docker://" + host_ + "/" + repo_tag});
        if (!r.ok()) die("skopeo copy: " + r.describe());
    }
    // GET requests for blobs of repo in the access log.
    std::size_t blob_gets(const std::string& repo) const {
        std::ifstream in(log_path());
        std::string line;
        std::size_t n = 0;
        auto needle = fmt::format("\"GET /v2/{}/blobs/", repo);
        while (std::getline(in, line))
            if (line.find(needle) != std::string::npos) ++n;
        return n;
    }

  private:
    std::string dir_, host_;
    std::uint16_t port_ = 0;
    Child child_;
};

// Images from a registry: create -> the task's first line when the image must be pulled first,
// against the same with an image the node has (alternating, in the same run); then ten replicas
// of a service whose image no node has, started at once on one node: the time until all run and
// how many times each blob was fetched.
void pull(const Options& o) {
    std::printf("== images from a loopback registry: pull and first start\n");
    Cluster c(o);
    LoopbackRegistry reg(c.dir() + "/registry");
    auto layout = c.dir() + "/images";
    if (!coffer::run_command({o.images_script, layout}).ok()) die("make-test-images failed");
    std::vector<std::string> extra = o.agent_args;
    extra.insert(extra.end(), {"--insecure-registry", reg.host()});
    c.start_agent("real", extra);
    auto data = c.agent_dir("real") + "/data";
    auto imported =
        coffer::run_command({o.agent, "--data-dir", data, "image", "import", layout, "busybox"});
    if (!imported.ok()) die("image import: " + imported.describe());
    c.await_ready("real");
    // One image per run that no node has: busybox with its own config (a new manifest digest;
    // the layer's bytes are the same, and every pull fetches them again).
    auto fresh_image = [&](const std::string& tag) {
        auto r = coffer::run_command({"umoci", "config", "--image", layout + ":busybox:latest",
                                      "--tag", tag, "--config.env", "RUN=" + tag});
        if (!r.ok()) die("umoci config: " + r.describe());
        reg.push(layout + ":" + tag, "bench/" + tag + ":1");
        return fmt::format("{}/bench/{}:1", reg.host(), tag);
    };
    auto log_of = [&](const std::string& task) { return data + "/logs/" + task + ".log"; };
    json::array started;
    for (const char* arg :
         {"sh", "-c", "trap 'exit 0' TERM; echo STARTED; while :; do sleep 1 & wait; done"})
        started.emplace_back(arg);
    auto create = [&](const std::string& name, const std::string& image, int replicas) {
        auto spec = json::object{
            {"Name", name},
            {"TaskTemplate",
             json::object{{"ContainerSpec", json::object{{"Image", image}, {"Command", started}}}}},
            {"Mode", json::object{{"Replicated", json::object{{"Replicas", replicas}}}}}};
        return std::string(
            c.call("POST", "/services/create", json::serialize(spec)).at("ID").as_string());
    };
    auto started_tasks = [&](const std::string& id) {
        std::size_t n = 0;
        for (const auto& t : tasks_in(c, id, "running"))
            if (log_has(log_of(t), "STARTED")) ++n;
        return n;
    };

    std::vector<double> local, pulled;
    for (int run = 0; run < o.runs; ++run) {
        auto image = fresh_image(fmt::format("run{}", run));
        for (bool from_registry : {false, true}) {
            auto t0 = Clock::now();
            auto id = create(fmt::format("p{}{}", run, from_registry ? "r" : "l"),
                             from_registry ? image : "busybox", 1);
            await(
                "the task's first line", [&] { return started_tasks(id) == 1; }, 60s);
            (from_registry ? pulled : local).push_back(ms_since(t0));
            remove_service(c, id);
        }
    }
    report("create -> first line, image in the node's store", local);
    report("create -> first line, pulled from the registry", pulled);

    std::vector<double> ten;
    std::vector<std::size_t> fetches;
    for (int run = 0; run < std::max(1, o.runs / 3); ++run) {
        auto tag = fmt::format("ten{}", run);
        auto image = fresh_image(tag);
        auto before = reg.blob_gets("bench/" + tag);
        auto t0 = Clock::now();
        auto id = create("ten" + std::to_string(run), image, 10);
        await(
            "10 replicas' first lines", [&] { return started_tasks(id) == 10; }, 120s, 5ms);
        ten.push_back(ms_since(t0));
        fetches.push_back(reg.blob_gets("bench/" + tag) - before);
        remove_service(c, id);
    }
    report("10 replicas of an image to pull -> all started", ten);
    // Two blobs per image (config and layer): one fetch each is one pull.
    std::printf("  blob GETs per 10-replica start (2 = one pull):");
    for (auto f : fetches) std::printf(" %zu", f);
    std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"coffer's cluster benchmarks (root; starts its own cofferd and agents)"};
    Options o;
    std::vector<std::string> scenarios{"node-ready",      "joins",   "sessions",    "fanout",
                                       "fanout-sessions", "service", "rotate-live", "rotate-fanout",
                                       "network",         "pull"};
    app.add_option("--cofferd", o.cofferd)->required();
    app.add_option("--agent", o.agent)->required();
    o.images_script = COFFER_MAKE_TEST_IMAGES;
    app.add_option("--make-test-images", o.images_script)->capture_default_str();
    app.add_option("--scenario", scenarios,
                   "node-ready joins sessions fanout fanout-sessions service rotate-live "
                   "rotate-fanout network pull")
        ->capture_default_str();
    app.add_option("--runs", o.runs, "Runs per timed scenario")->capture_default_str();
    auto* agents = app.add_option("--agents", o.agents,
                                  "Agents for joins and fanout (default 200) and rotate-fanout "
                                  "(default 10)");
    app.add_option("--agent-arg", o.agent_args,
                   "Extra coffer-agent argument for node-ready and service (repeat)");
    app.add_option("--sessions", o.sessions,
                   "Node sessions for the memory figure and fanout-sessions")
        ->capture_default_str();
    app.add_option("--manager-log-level", o.manager_log_level,
                   "cofferd's --log-level, e.g. info,dispatcher=debug (its log goes to stderr)")
        ->capture_default_str();
    CLI11_PARSE(app, argc, argv);
    o.agents_given = agents->count() > 0;
    ::signal(SIGPIPE, SIG_IGN);
    std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress shows as it happens, also into a file
    coffer::crypto::init();
    try {
        for (const auto& s : scenarios) {
            if (s == "node-ready")
                node_ready(o);
            else if (s == "joins")
                joins(o);
            else if (s == "sessions")
                sessions(o);
            else if (s == "fanout")
                fanout(o);
            else if (s == "fanout-sessions")
                fanout_sessions(o);
            else if (s == "service")
                service(o);
            else if (s == "rotate-live")
                rotate_live(o);
            else if (s == "rotate-fanout")
                rotate_fanout(o);
            else if (s == "network")
                network(o);
            else if (s == "pull")
                pull(o);
            else
                die("unknown scenario " + s);
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench-cluster: %s\n", e.what());
        return 1;
    }
    return 0;
}
