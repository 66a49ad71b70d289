// One compose file deployed twice: with `coffer stack deploy` to a coffer cluster of real processes
// (cluster_fixture.h) and with `docker stack deploy` to a real Docker Engine in Swarm mode. Both
// must create the same services, secret names and labels, and put the same files (paths, bytes,
// owners, modes) in every task.
//
// The Engine (Debian's docker.io: dockerd and the containerd it starts) runs in a network
// namespace of its own, so its bridges and routes never reach the host's network, and in a mount
// namespace of its own, so its mounts never reach the host's mount table; its data, state and
// socket sit in a directory of the test's own, its containers under a cgroup parent of their own.
// It is stopped, and all it ran killed and removed, when the test ends, also when it fails.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <boost/json.hpp>

#include <algorithm>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <tuple>

#include "cluster_fixture.h"
#include "coffer/net/http.h"
#include "coffer/net/http_client.h"

extern char** environ;

using namespace coffer;
using namespace coffer::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

constexpr auto engine_stop_deadline = 30s;

std::string random_tag() {
    std::random_device rd;
    return fmt::format("{:08x}", rd());
}

// GET target from an Engine API endpoint (cofferd or dockerd); null on failure.
json::value api_get(const std::string& host, const std::string& target) {
    auto c = net::HttpClient::connect(host);
    if (!c) return nullptr;
    auto r = (*c)->request("GET", target);
    if (!r || r->status != 200) return nullptr;
    boost::system::error_code ec;
    auto v = json::parse(r->body, ec);
    return ec ? json::value(nullptr) : v;
}

std::string filters(const std::string& key, const std::string& value) {
    return "?filters=" + net::percent_encode(fmt::format(R"({{"{}":{{"{}":true}}}})", key, value));
}

// The processes whose mount namespace is the one at ns (a /proc/PID/ns/mnt).
std::vector<int> processes_in_mount_namespace(ino_t ns) {
    std::vector<int> out;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator("/proc", ec)) {
        auto name = e.path().filename().string();
        if (name.find_first_not_of("0123456789") != std::string::npos) continue;
        struct stat st {};
        if (::stat((e.path() / "ns" / "mnt").c_str(), &st) == 0 && st.st_ino == ns)
            out.push_back(std::stoi(name));
    }
    return out;
}

// The pids in a cgroup directory and every one below it.
std::vector<int> processes_in_cgroup(const fs::path& dir) {
    std::vector<int> out;
    std::error_code ec;
    std::vector<fs::path> dirs{dir};
    for (const auto& e : fs::recursive_directory_iterator(dir, ec))
        if (e.is_directory()) dirs.push_back(e.path());
    for (const auto& d : dirs) {
        std::ifstream in(d / "cgroup.procs");
        for (int pid; in >> pid;) out.push_back(pid);
    }
    return out;
}

// A Docker Engine (dockerd, and the containerd it starts) in Swarm mode, a single manager node,
// with the busybox test image loaded as busybox:latest. error() says what failed, "" when ready.
class SwarmEngine {
  public:
    SwarmEngine();
    ~SwarmEngine();
    SwarmEngine(const SwarmEngine&) = delete;
    SwarmEngine& operator=(const SwarmEngine&) = delete;

    // Whether dockerd is installed (Debian package docker.io).
    static bool installed() {
        return run_program({"sh", "-c", "command -v dockerd && command -v containerd"}).status == 0;
    }

    const std::string& error() const { return error_; }
    std::string host() const {
        return "unix://" + (fs::path(dir_.path()) / "docker.sock").string();
    }
    // Runs the docker CLI against this Engine.
    CliResult docker(const std::vector<std::string>& args, const std::string& in = "") const;
    json::value get(const std::string& target) const { return api_get(host(), target); }
    std::string log() const;  // the end of what dockerd and containerd wrote

  private:
    std::string start();
    void stop();

    MountDir dir_;
    NetworkNamespace ns_{"swarm"};
    std::string cgroup_parent_ = "coffer-swarm-" + random_tag();
    bool made_containerd_run_ = false;  // /run/containerd was made by this Engine's containerd
    ino_t mount_ns_ = 0;
    Child dockerd_;
    std::string error_;
};

SwarmEngine::SwarmEngine() {
    error_ = ns_.error();
    if (error_.empty()) error_ = start();
}

SwarmEngine::~SwarmEngine() {
    stop();
}

CliResult SwarmEngine::docker(const std::vector<std::string>& args, const std::string& in) const {
    // With a deadline: a stuck Engine must not hold the test (or its teardown) forever.
    std::vector<std::string> argv{"timeout", "120", "docker"};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_program(argv, in, {"DOCKER_HOST=" + host()});
}

std::string SwarmEngine::log() const {
    auto text = read_file(fs::path(dir_.path()) / "dockerd.log");
    return text.size() > 6000 ? "..." + text.substr(text.size() - 6000) : text;
}

std::string SwarmEngine::start() {
    const fs::path dir = dir_.path();
    made_containerd_run_ = !fs::exists("/run/containerd");
    // Nothing from the host's daemon.json; the Engine's identity key stays in its directory.
    std::ofstream(dir / "daemon.json")
        << json::serialize(json::object{{"deprecated-key-path", (dir / "key.json").string()}});
    auto log = dir / "dockerd.log";
    UniqueFd out(::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
    if (!out) return "open " + log.string();
    Child::Options o;
    o.argv = ns_.enter();
    o.argv.insert(
        o.argv.end(),
        {"unshare", "--mount", "--propagation", "private", "dockerd", "--config-file",
         (dir / "daemon.json").string(), "--data-root", (dir / "data").string(), "--exec-root",
         (dir / "exec").string(), "--pidfile", (dir / "dockerd.pid").string(), "--host", host(),
         "--cgroup-parent", "/" + cgroup_parent_,
         // No default bridge, NAT or iptables rules: tasks need no network here.
         "--bridge=none", "--iptables=false", "--ip-masq=false", "--userland-proxy=false"});
    for (char** e = environ; *e; ++e) o.env.emplace_back(*e);
    // Tasks run the local image; no attempt to pull it first (there is no network to pull from).
    o.env.emplace_back("DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1");
    o.stdout_fd = out.get();
    o.stderr_fd = out.get();
    dockerd_ = Child::spawn(o);
    // The mount namespace unshare made, once dockerd runs in it (never this process's own: what
    // runs there when the Engine stops is killed).
    struct stat self {};
    if (::stat("/proc/self/ns/mnt", &self) != 0) return "stat /proc/self/ns/mnt";
    auto note_namespace = [&] {
        struct stat st {};
        if (mount_ns_ == 0 &&
            ::stat(fmt::format("/proc/{}/ns/mnt", dockerd_.pid()).c_str(), &st) == 0 &&
            st.st_ino != self.st_ino)
            mount_ns_ = st.st_ino;
    };
    if (!wait_until(
            [&] {
                if (dockerd_.wait_for(0ms)) return true;
                note_namespace();
                auto c = net::HttpClient::connect(host());
                if (!c) return false;
                auto r = (*c)->request("GET", "/_ping");
                return r && r->status == 200;
            },
            60s) ||
        !dockerd_.running())
        return "dockerd did not answer /_ping:\n" + this->log();
    note_namespace();
    if (mount_ns_ == 0) return "dockerd runs in this process's mount namespace";

    // The namespace has only loopback: the Swarm advertises and listens there.
    auto r = docker(
        {"swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", "127.0.0.1:2377"});
    if (r.status != 0) return "docker swarm init: " + r.err;
    auto copied = run_program({"skopeo", "--insecure-policy", "copy", "--quiet",
                               "oci:" + image_layout().string() + ":busybox:latest",
                               "docker-daemon:busybox:latest", "--dest-daemon-host", host()});
    if (copied.status != 0) return "skopeo copy to the Engine: " + copied.err;
    return "";
}

void SwarmEngine::stop() {
    if (dockerd_.running()) {
        // Leaving removes the tasks' containers; any others go too, so that containerd's
        // shims end with them.
        (void)docker({"swarm", "leave", "--force"});
        auto left = docker({"ps", "--all", "--quiet"});
        for (const auto& id : lines_of(left.out)) (void)docker({"rm", "--force", id});
        // dockerd stops the containerd it started.
        dockerd_.signal(SIGTERM);
        if (!dockerd_.wait_for(engine_stop_deadline)) {
            dockerd_.signal(SIGKILL);
            dockerd_.wait();
        }
    }
    // What may be left after a failure: containers (in the cgroup parent), containerd and its
    // shims (in the Engine's mount namespace).
    std::vector<fs::path> cgroups;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator("/sys/fs/cgroup", ec))
        if (fs::is_directory(e.path() / cgroup_parent_))
            cgroups.push_back(e.path() / cgroup_parent_);
    auto leftovers = [&] {
        auto pids = mount_ns_ ? processes_in_mount_namespace(mount_ns_) : std::vector<int>{};
        for (const auto& c : cgroups) {
            auto more = processes_in_cgroup(c);
            pids.insert(pids.end(), more.begin(), more.end());
        }
        return pids;
    };
    for (int pid : leftovers()) ::kill(pid, SIGKILL);
    (void)wait_until([&] { return leftovers().empty(); }, 10s);
    for (const auto& c : cgroups) {
        std::vector<fs::path> below;
        for (const auto& e : fs::recursive_directory_iterator(c, ec))
            if (e.is_directory()) below.push_back(e.path());
        for (auto d = below.rbegin(); d != below.rend(); ++d) ::rmdir(d->c_str());
        ::rmdir(c.c_str());
    }
    // containerd's shims keep their sockets under /run/containerd/s whatever its state directory;
    // a killed shim leaves its socket there.
    if (made_containerd_run_) {
        for (const auto& e : fs::directory_iterator("/run/containerd/s", ec))
            if (e.is_socket()) fs::remove(e.path(), ec);
        fs::remove("/run/containerd/s", ec);
        fs::remove("/run/containerd", ec);
    }
}

// One entry under a task's secret paths: "dir|file|link|other uid gid mode [hex bytes]".
struct Entry {
    std::string type;
    unsigned uid = 0, gid = 0, mode = 0;
    std::string bytes;  // hex, files only
    std::string text() const {
        auto s = fmt::format("{} uid={} gid={} mode={:04o}", type, uid, gid, mode);
        return bytes.empty() ? s : s + " " + bytes;
    }
    bool operator==(const Entry&) const = default;
};
// How gtest shows one.
void PrintTo(const Entry& e, std::ostream* os) {
    *os << e.text();
}
using Listing = std::map<std::string, Entry>;  // path in the container -> entry

std::string text(const Listing& l) {
    std::string out;
    for (const auto& [path, e] : l) out += fmt::format("  {} {}\n", path, e.text());
    return out;
}

void add_entry(Listing& out, const fs::path& host_path, const std::string& path) {
    struct stat st {};
    if (::lstat(host_path.c_str(), &st) != 0) return;
    Entry e;
    e.uid = st.st_uid;
    e.gid = st.st_gid;
    e.mode = st.st_mode & 07777;
    if (S_ISDIR(st.st_mode)) {
        e.type = "dir";
    } else if (S_ISREG(st.st_mode)) {
        e.type = "file";
        e.bytes = hex(read_file(host_path));
    } else if (S_ISLNK(st.st_mode)) {
        e.type = "link";
    } else {
        e.type = "other";
    }
    out[path] = e;
}

// Everything under /run/secrets in the container of process pid, and each of the absolute
// targets with the directory holding it, read through its root (/proc/PID/root).
Listing secret_files(std::int64_t pid, const std::set<std::string>& absolute_targets) {
    Listing out;
    // Paths are taken apart as strings: fs::relative would resolve /proc/PID/root.
    const std::string root = fmt::format("/proc/{}/root", pid);
    const std::string base = "/run/secrets";
    add_entry(out, root + base, base);
    std::error_code ec;
    for (const auto& e : fs::recursive_directory_iterator(root + base, ec))
        add_entry(out, e.path(), e.path().string().substr(root.size()));
    for (const auto& t : absolute_targets) {
        auto dir = fs::path(t).parent_path().string();
        add_entry(out, root + dir, dir);
        add_entry(out, root + t, t);
    }
    return out;
}

// The files are read from the host, so their owners are host ids: the ids the task sees only when
// its user ids map one to one.
bool identity_user_map(std::int64_t pid) {
    std::ifstream in(fmt::format("/proc/{}/uid_map", pid));
    std::string a, b, n, rest;
    in >> a >> b >> n;
    return a == "0" && b == "0" && n == "4294967295" && !(in >> rest);
}

// The secret references of a service spec, sorted: (secret name, file name, uid, gid, mode).
using Ref = std::tuple<std::string, std::string, std::string, std::string, std::int64_t>;
std::vector<Ref> refs_of(const json::value& service) {
    std::vector<Ref> out;
    const auto& cs = service.at("Spec").at("TaskTemplate").at("ContainerSpec").as_object();
    if (const auto* refs = cs.if_contains("Secrets"))
        for (const auto& r : refs->as_array()) {
            const auto& f = r.at("File");
            out.emplace_back(r.at("SecretName").as_string(), f.at("Name").as_string(),
                             f.at("UID").as_string(), f.at("GID").as_string(),
                             f.at("Mode").to_number<std::int64_t>());
        }
    std::sort(out.begin(), out.end());
    return out;
}

std::string path_of(const std::string& file_name) {
    return file_name.starts_with("/") ? file_name : "/run/secrets/" + file_name;
}

// Files of a secret referenced more than once with different owners or modes, whose owner and
// mode Docker Engine does not keep apart (path -> secret name): it writes one file per secret for
// a container and bind-mounts it at every target, so all of them show one reference's owner and
// mode.
std::map<std::string, std::string> shared_files(const std::vector<Ref>& refs) {
    std::map<std::string, std::string> out;
    for (const auto& a : refs)
        for (const auto& b : refs)
            if (std::get<0>(a) == std::get<0>(b) &&
                std::tie(std::get<2>(a), std::get<3>(a), std::get<4>(a)) !=
                    std::tie(std::get<2>(b), std::get<3>(b), std::get<4>(b)))
                out[path_of(std::get<1>(a))] = std::get<0>(a);
    return out;
}

// The file a reference asks for.
Entry expected(const Ref& ref, const std::string& bytes) {
    return Entry{"file", static_cast<unsigned>(std::stoul(std::get<2>(ref))),
                 static_cast<unsigned>(std::stoul(std::get<3>(ref))),
                 static_cast<unsigned>(std::get<4>(ref)), bytes};
}

// Modes are YAML numbers (octal): the docker CLI refuses a mode given as a string ("0440").
const char* stack_file = R"(version: "3.8"
services:
  app:
    image: busybox:latest
    command: ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 3600 & wait $$!; done"]
    deploy: {replicas: 2}
    secrets:
      - alpha
      - source: alpha
        target: alpha.pem
      - source: alpha
        target: alpha-app
        uid: "1000"
        gid: "50"
        mode: 0400
      - source: beta
        target: beta.conf
        uid: "33"
        gid: "33"
        mode: 0440
      - source: ext
        target: nested/dir/ext
        mode: 0640
      - named
  worker:
    image: busybox:latest
    command: ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 3600 & wait $$!; done"]
    secrets:
      - source: beta
        target: /etc/worker/token
        uid: "70"
        mode: 0600
      - source: ext
        target: /etc/worker/ext.pem
secrets:
  alpha:
    file: ./alpha.txt
    labels: {tier: web, owner: ops}
  beta:
    file: ./beta.txt
  named:
    name: fixed_named_secret
    file: ./beta.txt
    labels: {kind: named}
  ext:
    external: true
    name: ext_secret
)";

class StackSwarm : public ClusterTest {
  protected:
    void SetUp() override {
        if (::geteuid() != 0) GTEST_SKIP() << "needs root (namespaces, containers, mounts)";
        if (!SwarmEngine::installed())
            GTEST_SKIP() << "dockerd is not installed (Debian package docker.io, scripts/setup)";
        if (!have_docker()) GTEST_SKIP() << "no docker CLI";
        ASSERT_FALSE(image_layout().empty()) << "the test images could not be built";
        // The Engine first: its mount namespace then holds no copy of the cluster's mounts.
        swarm_ = std::make_unique<SwarmEngine>();
        ASSERT_EQ(swarm_->error(), "");
        ClusterTest::SetUp();
    }
    void TearDown() override {
        if (HasFailure() && swarm_) {
            fmt::print("---- docker tasks\n{}\n", json::serialize(swarm_->get("/tasks")));
            fmt::print("---- dockerd\n{}\n", swarm_->log());
        }
        ClusterTest::TearDown();
        swarm_.reset();
    }

    std::string write(const std::string& name, const std::string& text) {
        auto p = (dir_.path() / name).string();
        std::ofstream(p, std::ios::binary) << text;
        return p;
    }

    // The running tasks of a service on an Engine API endpoint.
    static std::vector<json::object> running_tasks(const std::string& host,
                                                   const std::string& service) {
        std::vector<json::object> out;
        auto v = api_get(host, "/tasks" + filters("service", service));
        if (v.is_array())
            for (auto& t : v.as_array())
                if (t.at("DesiredState").as_string() == "running" &&
                    t.at("Status").at("State").as_string() == "running" &&
                    task_pid(t.as_object()) > 0)
                    out.push_back(t.as_object());
        return out;
    }

    // The stack's services by name.
    static std::map<std::string, json::value> stack_services(const std::string& host,
                                                             const std::string& stack) {
        std::map<std::string, json::value> out;
        auto v =
            api_get(host, "/services" + filters("label", "com.docker.stack.namespace=" + stack));
        if (v.is_array())
            for (auto& s : v.as_array()) out[std::string(s.at("Spec").at("Name").as_string())] = s;
        return out;
    }
    // Every secret (the stack's and the external one): name -> labels.
    static json::object secret_labels(const std::string& host) {
        json::object out;
        auto v = api_get(host, "/secrets");
        if (v.is_array())
            for (auto& s : v.as_array()) {
                const auto& spec = s.at("Spec").as_object();
                const auto* labels = spec.if_contains("Labels");
                out[spec.at("Name").as_string()] =
                    labels && labels->is_object() ? *labels : json::object{};
            }
        return out;
    }

    std::unique_ptr<SwarmEngine> swarm_;
};

TEST_F(StackSwarm, SameServicesSecretsAndFilesAsDockerSwarm) {
    const std::string stack = "web";
    write("alpha.txt", "alpha-" + random_bytes(40));
    write("beta.txt", random_bytes(17));
    auto file = write("stack.yml", stack_file);
    // The external secret exists beforehand in both systems, with the same bytes.
    auto ext = random_bytes(33);
    auto made = cli({"secret", "create", "ext_secret", "-"}, ext);
    ASSERT_EQ(made.status, 0) << made.err;
    made = swarm_->docker({"secret", "create", "ext_secret", "-"}, ext);
    ASSERT_EQ(made.status, 0) << made.err;

    auto r = cli({"stack", "deploy", "-c", file, "--resolve-image", "never", stack});
    ASSERT_EQ(r.status, 0) << r.err;
    auto d = swarm_->docker({"stack", "deploy", "-c", file, "--resolve-image", "never", stack});
    ASSERT_EQ(d.status, 0) << d.err;

    // Services, secret names and labels.
    auto ours = stack_services(daemon_->host(), stack);
    auto theirs = stack_services(swarm_->host(), stack);
    std::set<std::string> our_names, their_names;
    for (const auto& [name, s] : ours) our_names.insert(name);
    for (const auto& [name, s] : theirs) their_names.insert(name);
    ASSERT_EQ(our_names, their_names);
    ASSERT_EQ(our_names, (std::set<std::string>{"web_app", "web_worker"}));
    for (const auto& name : our_names) {
        EXPECT_EQ(refs_of(ours[name]), refs_of(theirs[name])) << name;
        EXPECT_EQ(ours[name].at("Spec").at("Labels"), theirs[name].at("Spec").at("Labels"))
            << name << ": " << json::serialize(ours[name].at("Spec").at("Labels")) << " vs "
            << json::serialize(theirs[name].at("Spec").at("Labels"));
    }
    auto our_secrets = secret_labels(daemon_->host());
    auto their_secrets = secret_labels(swarm_->host());
    EXPECT_EQ(our_secrets, their_secrets)
        << json::serialize(our_secrets) << " vs " << json::serialize(their_secrets);
    EXPECT_EQ(their_secrets.size(), 4u) << json::serialize(their_secrets);

    // The files in every task.
    const std::map<std::string, std::size_t> replicas{{"web_app", 2}, {"web_worker", 1}};
    for (const auto& replicated : replicas) {
        // Plain variables, not structured bindings: a lambda below captures them.
        const std::string service = replicated.first;
        const std::size_t n = replicated.second;
        SCOPED_TRACE(service);
        const auto refs = refs_of(ours[service]);
        std::set<std::string> absolute;
        for (const auto& ref : refs)
            if (std::get<1>(ref).starts_with("/")) absolute.insert(std::get<1>(ref));
        const auto shared = shared_files(refs);

        ASSERT_TRUE(wait_converged(service, n)) << json::serialize(get("/tasks"));
        std::vector<json::object> swarm_tasks;
        ASSERT_TRUE(wait_until(
            [&] {
                swarm_tasks = running_tasks(swarm_->host(), service);
                return swarm_tasks.size() == n;
            },
            60s))
            << json::serialize(swarm_->get("/tasks" + filters("service", service)));

        std::vector<Listing> coffer_listings, swarm_listings;
        for (const auto& t : running(service)) {
            ASSERT_TRUE(identity_user_map(task_pid(t))) << "coffer task " << t.at("ID");
            coffer_listings.push_back(secret_files(task_pid(t), absolute));
        }
        for (const auto& t : swarm_tasks) {
            ASSERT_TRUE(identity_user_map(task_pid(t))) << "swarm task " << t.at("ID");
            swarm_listings.push_back(secret_files(task_pid(t), absolute));
        }
        ASSERT_EQ(coffer_listings.size(), n);
        ASSERT_EQ(swarm_listings.size(), n);

        // Each task of coffer has each reference's file, its bytes, owner and mode.
        std::map<std::string, std::string> bytes_of{
            {"web_alpha", hex(read_file(dir_.path() / "alpha.txt"))},
            {"web_beta", hex(read_file(dir_.path() / "beta.txt"))},
            {"fixed_named_secret", hex(read_file(dir_.path() / "beta.txt"))},
            {"ext_secret", hex(ext)}};
        for (const auto& listing : coffer_listings)
            for (const auto& ref : refs) {
                auto path = path_of(std::get<1>(ref));
                auto at = listing.find(path);
                ASSERT_NE(at, listing.end()) << path << "\n" << text(listing);
                EXPECT_EQ(at->second, expected(ref, bytes_of[std::get<0>(ref)]))
                    << path << ": " << at->second.text();
            }

        // Swarm's tasks have the same entries, but for the owner and mode of the files Docker
        // Engine shares between references (shared_files): one of those references'.
        for (std::size_t i = 0; i < n; ++i) {
            auto ours_here = coffer_listings[i], theirs_here = swarm_listings[i];
            for (const auto& [path, secret] : shared) {
                ASSERT_TRUE(theirs_here.contains(path)) << path << "\n" << text(theirs_here);
                auto& e = theirs_here[path];
                bool one_of_them = false;
                for (const auto& ref : refs)
                    one_of_them |= std::get<0>(ref) == secret &&
                                   e == expected(ref, bytes_of[std::get<0>(ref)]);
                EXPECT_TRUE(one_of_them) << path << ": " << e.text();
                e = ours_here[path];
            }
            EXPECT_EQ(ours_here, theirs_here) << "coffer task:\n"
                                              << text(ours_here) << "swarm task:\n"
                                              << text(theirs_here);
        }
    }
}

}  // namespace
