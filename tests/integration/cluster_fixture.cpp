#include "cluster_fixture.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <sstream>

#include "coffer/base/unique_fd.h"
#include "coffer/net/http.h"
#include "coffer/net/http_client.h"

extern char** environ;

namespace coffer::test {

namespace fs = std::filesystem;
namespace json = boost::json;
using namespace std::chrono_literals;

namespace {

constexpr auto agent_stop_deadline = 30s;

std::string first_line(const std::string& s) {
    return s.substr(0, s.find('\n'));
}

}  // namespace

std::vector<std::string> secret_printer() {
    return {"sh", "-c",
            "trap 'exit 0' TERM; "
            "echo SECRETS $(ls -A /run/secrets 2>/dev/null | sort); "
            "for f in /run/secrets/*; do [ -f \"$f\" ] && "
            "echo SECRET \"${f##*/}\" $(od -An -tx1 -v \"$f\" | tr -d ' \\n'); done; "
            "echo PRINTED; "
            "while :; do sleep 3600 & wait $!; done"};
}

std::map<std::string, std::string> parse_printer(const std::string& output) {
    std::map<std::string, std::string> found;
    std::istringstream in(output);
    std::string line;
    while (std::getline(in, line)) {
        // `coffer service logs` may prefix each line with the task; take the part from the marker.
        if (line.ends_with("PRINTED")) {
            found["PRINTED"] = "";
        } else if (auto at = line.find("SECRETS"); at != std::string::npos) {
            auto rest = line.substr(at + 7);
            rest.erase(0, rest.find_first_not_of(' '));
            found["SECRETS"] = rest;
        } else if (auto s = line.find("SECRET "); s != std::string::npos) {
            std::istringstream fields(line.substr(s + 7));
            std::string name, bytes;
            fields >> name >> bytes;
            found[name] = bytes;
        }
    }
    return found;
}

std::string hex(std::string_view bytes) {
    std::string out;
    for (unsigned char c : bytes) out += fmt::format("{:02x}", c);
    return out;
}

std::string random_bytes(std::size_t n) {
    std::random_device rd;
    std::string s(n, '\0');
    for (auto& c : s) c = static_cast<char>(rd() & 0xff);
    // A newline, a NUL and a high byte in every secret: the bytes must come through unchanged.
    if (n >= 3) {
        s[0] = '\n';
        s[1] = '\0';
        s[2] = '\xff';
    }
    return s;
}

std::map<std::string, std::string> read_dir(const fs::path& dir) {
    std::map<std::string, std::string> files;
    std::error_code ec;
    for (const auto& e : fs::recursive_directory_iterator(dir, ec))
        if (e.is_regular_file()) files[e.path().filename().string()] = read_file(e.path());
    return files;
}

std::vector<MountEntry> mountinfo(int pid) {
    std::vector<MountEntry> mounts;
    std::ifstream in(fmt::format("/proc/{}/mountinfo", pid));
    std::string line;
    while (std::getline(in, line)) {
        // id parent major:minor root mount-point options [optional...] - fstype source super
        std::istringstream f(line);
        std::string id, parent, dev, root, point, field;
        f >> id >> parent >> dev >> root >> point;
        while (f >> field && field != "-") {
        }
        std::string fstype, source;
        f >> fstype >> source;
        mounts.push_back({point, source});
    }
    return mounts;
}

bool memory_contains(int pid, std::string_view needle) {
    std::ifstream maps(fmt::format("/proc/{}/maps", pid));
    UniqueFd mem(::open(fmt::format("/proc/{}/mem", pid).c_str(), O_RDONLY | O_CLOEXEC));
    if (!mem) return false;
    std::string line;
    std::string buf;
    while (std::getline(maps, line)) {
        std::istringstream f(line);
        std::string range, perms;
        f >> range >> perms;
        if (perms.empty() || perms[0] != 'r') continue;
        if (line.find("[vvar") != std::string::npos || line.find("[vsyscall]") != std::string::npos)
            continue;
        auto dash = range.find('-');
        auto begin = std::stoull(range.substr(0, dash), nullptr, 16);
        auto end = std::stoull(range.substr(dash + 1), nullptr, 16);
        if (end - begin > (1ull << 30)) continue;
        buf.resize(end - begin);
        auto n = ::pread(mem.get(), buf.data(), buf.size(), static_cast<off_t>(begin));
        if (n <= 0) continue;
        std::string_view region(buf.data(), static_cast<std::size_t>(n));
        if (region.find(needle) != std::string_view::npos) return true;
    }
    return false;
}

bool process_alive(std::int64_t pid) {
    return pid > 0 && fs::exists(fmt::format("/proc/{}", pid));
}

std::int64_t task_pid(const json::object& task) {
    auto* cs = task.at("Status").as_object().if_contains("ContainerStatus");
    if (!cs || !cs->is_object()) return 0;
    auto* pid = cs->as_object().if_contains("PID");
    return pid ? pid->to_number<std::int64_t>() : 0;
}

// ---- NodeAgent

NodeAgent::NodeAgent(const NetworkNamespace& ns, fs::path data_dir, std::string name,
                     std::string manager)
    : data(std::move(data_dir)),
      run(data.string() + "-run"),
      hostname(std::move(name)),
      ns_(ns),
      manager_(std::move(manager)),
      err_(data.string() + ".err") {}

NodeAgent::~NodeAgent() {
    if (child_.running()) (void)stop();
    (void)cleanup();
}

std::string NodeAgent::import_image(const fs::path& layout) const {
    auto r = run_command({agent_program(), "--data-dir", data.string(), "image", "import",
                          layout.string(), "busybox"});
    return r.ok() ? "" : r.describe();
}

void NodeAgent::start(const std::string& token) {
    UniqueFd err(::open(err_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
    if (!err) throw_errno("open agent log");
    Child::Options o;
    o.argv = ns_.enter();
    // Under the umask of the shipped unit (0077): what the agent makes for its tasks must not
    // depend on the umask it is started with.
    o.argv.insert(o.argv.end(), {"sh", "-c", "umask 077 && exec \"$@\"", "sh"});
    o.argv.insert(o.argv.end(), {agent_program(), "--data-dir", data.string(), "--run-dir",
                                 run.string(), "--manager", manager_, "--hostname", hostname,
                                 "--log-level", env_or("COFFER_LOG", "info")});
    o.argv.insert(o.argv.end(), extra_args.begin(), extra_args.end());
    for (char** e = environ; *e; ++e)
        if (std::string_view(*e).substr(0, 18) != "COFFER_JOIN_TOKEN=") o.env.emplace_back(*e);
    if (!token.empty()) o.env.push_back("COFFER_JOIN_TOKEN=" + token);
    o.stderr_fd = err.get();
    child_ = Child::spawn(o);
}

std::optional<int> NodeAgent::stop() {
    if (!child_.running()) return std::nullopt;
    child_.signal(SIGTERM);
    auto st = child_.wait_for(agent_stop_deadline);
    if (!st) {
        child_.signal(SIGKILL);
        child_.wait();
    }
    return st;
}

void NodeAgent::kill9() {
    child_.signal(SIGKILL);
    child_.wait();
}

CommandResult NodeAgent::cleanup() const {
    try {
        return run_command(
            {agent_program(), "--data-dir", data.string(), "--run-dir", run.string(), "cleanup"});
    } catch (const std::exception& e) {
        return CommandResult{.status = -1, .out = {}, .err = e.what()};
    }
}

std::string NodeAgent::node_id() const {
    auto p = data / "identity" / "node.json";
    if (!fs::exists(p)) return "";
    try {
        return std::string(json::parse(read_file(p)).at("node_id").as_string());
    } catch (const std::exception&) {
        return "";
    }
}

std::string NodeAgent::task_log(const std::string& task) const {
    return read_file(data / "logs" / (task + ".log"));
}

// ---- ClusterTest

void ClusterTest::SetUp() {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (namespaces, containers, mounts)";
    if (agent_program().empty()) GTEST_SKIP() << "COFFER_AGENT is not set";
    if (!NetworkNamespace::available()) GTEST_SKIP() << "ip netns is not available";
    ASSERT_FALSE(image_layout().empty()) << "the test images could not be built";

    manager_ns_ = std::make_unique<NetworkNamespace>("e2m");
    a_ns_ = std::make_unique<NetworkNamespace>("e2a");
    b_ns_ = std::make_unique<NetworkNamespace>("e2b");
    for (auto* ns : {manager_ns_.get(), a_ns_.get(), b_ns_.get()}) ASSERT_EQ(ns->error(), "");
    // Two /30s: manager .1 - node-a .2, manager .5 - node-b .6. cofferd listens on .1; node-b
    // reaches it through its default route to the manager's namespace.
    auto net = random_subnet(219);
    subnet_ = net;
    ASSERT_EQ(connect(*manager_ns_, net + ".1", *a_ns_, net + ".2"), "");
    ASSERT_EQ(connect(*manager_ns_, net + ".5", *b_ns_, net + ".6"), "");
    ASSERT_EQ(a_ns_->ip({"route", "add", "default", "via", net + ".1"}), "");
    ASSERT_EQ(b_ns_->ip({"route", "add", "default", "via", net + ".5"}), "");
    // The manager's namespace routes between the nodes, as a network between hosts does: their
    // VXLAN and published-port traffic crosses it.
    ASSERT_EQ(run_program({"nsenter", "--net=" + manager_ns_->path(), "sysctl", "-qw",
                           "net.ipv4.ip_forward=1"})
                  .status,
              0);
    listen_ = net + ".1:4243";

    before_manager();
    if (HasFatalFailure()) return;
    start_manager();
    if (HasFatalFailure()) return;
    a_ = make_agent(*a_ns_, "node-a");
    b_ = make_agent(*b_ns_, "node-b");
    if (HasFatalFailure()) return;
    join(*a_);
    join(*b_);
}

void ClusterTest::TearDown() {
    if (HasFailure()) {
        for (auto* agent : {a_.get(), b_.get()})
            if (agent) {
                auto text = agent->err();
                if (text.size() > 6000) text = "..." + text.substr(text.size() - 6000);
                fmt::print("---- {} agent log\n{}\n", agent->hostname, text);
            }
        if (daemon_) {
            fmt::print("---- cofferd\n{}\n", daemon_->stdout_text());
            fmt::print("---- tasks\n{}\n", json::serialize(get("/tasks")));
        }
    }
    // Agents first (they stop their tasks), then cofferd; namespaces and directories after.
    a_.reset();
    b_.reset();
    daemon_.reset();
}

void ClusterTest::start_manager() {
    daemon_.reset();
    std::vector<std::string> args{"--listen", listen_};
    args.insert(args.end(), manager_args_.begin(), manager_args_.end());
    daemon_ = std::make_unique<Daemon>(dir_.path() / "data", dir_.path() / "coffer.sock", args,
                                       manager_ns_->enter());
    ASSERT_TRUE(daemon_->ready()) << daemon_->stdout_text();
}

std::string ClusterTest::token(const std::string& role) {
    auto r = cli({"cluster", "join-token", role, "-q"});
    EXPECT_EQ(r.status, 0) << r.err;
    return first_line(r.out);
}

std::unique_ptr<NetworkNamespace> ClusterTest::node_namespace(const std::string& tag) {
    auto ns = std::make_unique<NetworkNamespace>(tag);
    EXPECT_EQ(ns->error(), "");
    // After node-a's and node-b's /30s: .9-.10, .13-.14, ...
    int base = 8 + 4 * further_nodes_++;
    auto manager = fmt::format("{}.{}", subnet_, base + 1);
    EXPECT_EQ(connect(*manager_ns_, manager, *ns, fmt::format("{}.{}", subnet_, base + 2)), "");
    EXPECT_EQ(ns->ip({"route", "add", "default", "via", manager}), "");
    return ns;
}

std::unique_ptr<NodeAgent> ClusterTest::make_agent(const NetworkNamespace& ns,
                                                   const std::string& hostname) {
    auto agent = std::make_unique<NodeAgent>(ns, dir_.path() / hostname, hostname, listen_);
    agent->extra_args = agent_args_;
    auto imported = agent->import_image(image_layout());
    EXPECT_EQ(imported, "");
    return agent;
}

void ClusterTest::join(NodeAgent& agent) {
    agent.start(token());
    ASSERT_TRUE(wait_until([&] { return !agent.node_id().empty(); }, 30s)) << agent.err();
    ASSERT_TRUE(wait_node_state(agent.node_id(), "ready")) << agent.err();
}

void ClusterTest::create_sleeper(const std::string& name, const std::string& secret) {
    auto r = cli({"service", "create", "--name", name, "--secret", secret, "busybox", "sh", "-c",
                  "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done"});
    ASSERT_EQ(r.status, 0) << r.err;
}

bool ClusterTest::task_holds(const std::string& service, const std::string& file,
                             const std::string& bytes) {
    return wait_until(
        [&] {
            auto r = running(service);
            return r.size() == 1 && file_in_task(r[0], file) == bytes;
        },
        90s);
}

std::string file_in_task(const json::object& task, const std::string& file) {
    return read_file(fmt::format("/proc/{}/root/run/secrets/{}", task_pid(task), file));
}

CliResult ClusterTest::cli(const std::vector<std::string>& args, const std::string& in) {
    return coffer_cli(daemon_->host(), args, in);
}

json::value ClusterTest::get(const std::string& target) {
    auto c = net::HttpClient::connect(daemon_->host());
    if (!c) return nullptr;
    auto r = (*c)->request("GET", target);
    if (!r || r->status != 200) return nullptr;
    std::string body(r->body.begin(), r->body.end());
    boost::system::error_code ec;
    auto v = json::parse(body, ec);
    return ec ? json::value(nullptr) : v;
}

std::string ClusterTest::node_state(const std::string& node_id) {
    auto v = get("/nodes/" + node_id);
    if (!v.is_object()) return "";
    return std::string(v.at("Status").at("State").as_string());
}

bool ClusterTest::wait_node_state(const std::string& node_id, std::string_view state,
                                  std::chrono::milliseconds within) {
    return wait_until([&] { return node_state(node_id) == state; }, within);
}

std::vector<json::object> ClusterTest::tasks(const std::string& service) {
    auto filter = fmt::format(R"({{"service":{{"{}":true}}}})", service);
    auto v = get("/tasks?filters=" + net::percent_encode(filter));
    std::vector<json::object> out;
    if (v.is_array())
        for (auto& t : v.as_array()) out.push_back(t.as_object());
    return out;
}

std::vector<json::object> ClusterTest::running(const std::string& service) {
    std::vector<json::object> out;
    for (auto& t : tasks(service))
        if (t.at("DesiredState").as_string() == "running" &&
            t.at("Status").at("State").as_string() == "running")
            out.push_back(t);
    return out;
}

bool ClusterTest::wait_converged(const std::string& service, std::size_t replicas,
                                 const std::string& node, std::chrono::milliseconds within) {
    return wait_until(
        [&] {
            std::size_t wanted = 0;
            std::set<std::int64_t> slots;
            for (auto& t : tasks(service)) {
                bool runs = t.at("Status").at("State").as_string() == "running";
                bool desired = t.at("DesiredState").as_string() == "running";
                if (desired && !runs) return false;  // still starting
                if (!desired) {
                    // Still stopping, unless its node is gone: a killed or restarted agent never
                    // reports the end of what it ran, so the manager's record says "running";
                    // what counts is that no such process is left.
                    if (runs && process_alive(task_pid(t))) return false;
                    continue;
                }
                if (!node.empty() && t.at("NodeID").as_string() != node) return false;
                if (!slots.insert(t.at("Slot").to_number<std::int64_t>()).second) return false;
                ++wanted;
            }
            return wanted == replicas;
        },
        within);
}

std::string ClusterTest::secret_id(const std::string& name) {
    auto v = get("/secrets/" + name);
    return v.is_object() ? std::string(v.at("ID").as_string()) : "";
}

}  // namespace coffer::test
