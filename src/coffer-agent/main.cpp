// coffer-agent: the node agent. Joins a cluster and keeps its session to the manager (the default
// mode), and offers the image store, a single task run (for developers and tests), and cleanup of
// what a crashed agent left.
#include <fcntl.h>
#include <linux/close_range.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

#include "coffer/agent/enrollment.h"
#include "coffer/agent/executor.h"
#include "coffer/agent/image_store.h"
#include "coffer/agent/manager_list.h"
#include "coffer/agent/metrics.h"
#include "coffer/agent/net_rules.h"
#include "coffer/agent/node_description.h"
#include "coffer/agent/node_networks.h"
#include "coffer/agent/resolver.h"
#include "coffer/agent/runner.h"
#include "coffer/agent/session.h"
#include "coffer/agent/task_drivers.h"
#include "coffer/agent/task_json.h"
#include "coffer/base/daemon_options.h"
#include "coffer/base/log.h"
#include "coffer/base/mount.h"
#include "coffer/base/process.h"
#include "coffer/base/unique_fd.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/crypto/secure_file.h"
#include "coffer/crypto/secure_memory_metrics.h"
#include "coffer/pki/node_key.h"
#include "coffer/pki/secure_heap.h"

using namespace coffer;
using namespace coffer::agent;

namespace {

// The longest period --image-gc-after and --unused-for take: ten years.
constexpr std::int64_t max_period_seconds = std::int64_t{10} * 365 * 86400;

// --metrics-addr: where run_node serves metrics and health; none when empty. Set by main().
std::string metrics_address;

// Reads a secret file straight into secure memory.
crypto::SecureBuffer read_secret(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw_errno(fmt::format("open {}", path));
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) throw_errno(fmt::format("stat {}", path));
    return crypto::read_secure(fd.get(), static_cast<std::size_t>(st.st_size), path);
}

// SIGINT/SIGTERM are taken synchronously (sigwait), not by handlers: blocked here, before any
// thread starts, so every thread inherits the mask.
sigset_t block_stop_signals() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    return set;
}

// The first join: a manager that is not up yet, or that turns joins away while it is busy
// (429, 503), is tried again with a jittered backoff (0.2 s doubling up to 5 s) for up to
// join_retry_window; any other answer (a wrong token, another cluster's CA) ends it at once.
// SIGINT or SIGTERM ends the wait.
constexpr auto join_retry_window = std::chrono::minutes(2);

Result<Identity> join_cluster(const std::string& data_dir, const std::string& manager,
                              const crypto::SecureBuffer& token, const std::string& hostname,
                              const sigset_t& stop_signals) {
    auto deadline = std::chrono::steady_clock::now() + join_retry_window;
    RetryDelay delay(Backoff{std::chrono::milliseconds(200), std::chrono::seconds(5), 0.5});
    // One key for every attempt: a join whose answer was lost and is asked again finds the node
    // it registered (its ID follows from the key).
    auto key = pki::NodeKey::generate();
    for (int attempt = 1;; ++attempt) {
        auto r = enroll(data_dir, manager, token, key, {}, hostname);
        if (r || r.error().code != Errc::unavailable) return r;
        auto wait = delay.next();
        if (std::chrono::steady_clock::now() + wait >= deadline)
            return std::move(r).error().context(fmt::format(
                "no join after {} attempts in {} s", attempt,
                std::chrono::duration_cast<std::chrono::seconds>(join_retry_window).count()));
        log::info("agent", "{}; trying again in {} ms", r.error().message, wait.count());
        auto s = std::chrono::duration_cast<std::chrono::seconds>(wait);
        timespec ts{static_cast<time_t>(s.count()),
                    static_cast<long>(std::chrono::nanoseconds(wait - s).count())};
        if (::sigtimedwait(&stop_signals, nullptr, &ts) > 0)
            return make_error(Errc::unavailable, "stopped before it joined");
    }
}

int fail(const Error& e) {
    log::fatal("coffer-agent", e.message);
    return 1;
}

struct NodeOptions {
    std::string data_dir;
    std::string run_dir;
    std::string runtime;
    std::string seccomp;
    std::string manager;
    bool noop_executor = false;
    std::string hostname;
    std::vector<std::string> generic_resources;  // NAME=VALUE
    PullOptions pull;
    std::chrono::seconds image_gc_after{0};  // 0: pulled images are kept
    SecretBackend secret_mount = SecretBackend::automatic;
};

// Prunes the images pulled from registries that no task has used for `after`
// (ImageStore::prune), checking every after/4 (at most every 5 minutes) on a thread of its own,
// first one interval after the start, so that the tasks the manager restarts have resolved
// their images again. Stops promptly when destroyed (a prune under way ends first).
class ImageCollector {
  public:
    // images is borrowed: it outlives the collector.
    ImageCollector(ImageStore& images, std::string run_dir, std::chrono::seconds after)
        : images_(images),
          run_dir_(std::move(run_dir)),
          after_(after),
          thread_([this] { run(); }) {}
    ~ImageCollector() {
        {
            std::lock_guard l(mu_);
            stopping_ = true;
        }
        cv_.notify_all();
        thread_.join();
    }
    ImageCollector(const ImageCollector&) = delete;
    ImageCollector& operator=(const ImageCollector&) = delete;

  private:
    void run() {
        using namespace std::chrono_literals;
        const auto every = std::clamp<std::chrono::milliseconds>(after_ / 4, 250ms, 5min);
        std::unique_lock l(mu_);
        for (;;) {
            auto next = std::chrono::steady_clock::now() + every;
            if (cv_.wait_until(l, next, [&] { return stopping_; })) return;
            l.unlock();
            try {
                auto r = images_.prune(
                    [&](std::string_view d) { return Runner::image_in_use(run_dir_, d); },
                    {.all = false, .unused_for = after_});
                if (!r) log::warn("images", "garbage collection: {}", r.error().message);
            } catch (const std::exception& e) {
                log::warn("images", "garbage collection: {}", e.what());
            }
            l.lock();
        }
    }

    ImageStore& images_;
    const std::string run_dir_;
    const std::chrono::seconds after_;
    std::mutex mu_;
    std::condition_variable cv_;
    bool stopping_ = false;
    std::thread thread_;  // last: starts once the members it uses are there
};

// How tasks run in this agent: containers through the Runner, or nothing (benchmark mode).
struct Tasks {
    std::unique_ptr<ImageStore> images;
    // The tasks' resolver and the node's networks outlive the driver's tasks (which hold their
    // interfaces), the networks' hooks use the resolver.
    std::unique_ptr<Resolver> resolver;
    std::unique_ptr<NodeNetworks> networks;
    std::unique_ptr<TaskDriver> driver;
};

// The node's networks, with the resolver answering on them, the routing mesh's rules on the
// node and each task's VIP rules in its namespace kept up with every networks message.
std::unique_ptr<NodeNetworks> make_networks(Resolver& resolver) {
    NodeNetworksOptions o;
    o.on_applied = [&resolver](const nodeproto::NetworksMessage& m) {
        if (auto r = resolver.set(m); !r) log::warn("network", "resolver: {}", r.error().message);
        if (auto r = apply_node_rules(node_ingress_rules(m)); !r)
            log::warn("network", "ingress rules: {}", r.error().message);
    };
    o.on_task = [](const nodeproto::NetworksMessage& m, const std::string& netns,
                   const std::vector<std::string>& networks) {
        if (auto r = apply_in_netns(netns, task_vip_rules(m, networks)); !r)
            throw ErrorException(std::move(r).error().context("VIP rules"));
    };
    return std::make_unique<NodeNetworks>(std::move(o));
}

Tasks make_tasks(const NodeOptions& o) {
    Tasks t;
    if (o.noop_executor) {
        log::warn("agent",
                  "benchmark mode: tasks are not run, only their secret files are written "
                  "(--benchmark-noop-executor)");
        t.driver = std::make_unique<NoopDriver>(NoopDriverOptions{
            .files_root = o.run_dir + "/noop-tasks", .secret_mount = o.secret_mount});
        return t;
    }
    t.images = std::make_unique<ImageStore>(o.data_dir + "/images");
    t.resolver = std::make_unique<Resolver>();
    // Removes what an agent before left of the node's networks.
    t.networks = make_networks(*t.resolver);
    RunnerOptions opt;
    opt.networks = t.networks.get();
    opt.run_dir = o.run_dir;
    opt.data_dir = o.data_dir;
    opt.runtime = o.runtime;
    opt.seccomp_profile = o.seccomp;
    opt.pull = o.pull;
    opt.secret_mount = o.secret_mount;
    // A rolling update stops a batch of tasks at once; their teardowns (runtime delete, unmounts,
    // cgroup removal) are mostly waiting, so they overlap well.
    opt.teardown_threads = 4;
    auto driver = std::make_unique<RunnerDriver>(opt, *t.images);
    // What a previous agent left goes first; the manager's complete set restarts what should run.
    auto left = driver->runner().recover_leftovers();
    if (left.containers + left.mounts + left.task_dirs + left.cgroups + left.interfaces > 0)
        log::info("runner",
                  "cleaned leftovers: {} containers, {} mounts, {} task directories, {} cgroups, "
                  "{} task interfaces",
                  left.containers, left.mounts, left.task_dirs, left.cgroups, left.interfaces);
    t.driver = std::move(driver);
    return t;
}

// Joins when given a token (first start), else loads the stored identity; then keeps the session
// to the manager and runs what it assigns, until SIGINT/SIGTERM or until the manager removes
// this node.
int run_node(const NodeOptions& o, const crypto::SecureBuffer& token) {
    crypto::init();
    if (auto r = pki::init_secure_heap(); !r)
        log::warn("agent", "{}: private keys use ordinary memory", r.error().message);
    // Before any thread: the mount namespace is per process only while there is one thread, and
    // secret mounts (the benchmark mode's too) must never show in the host's mount table; they
    // end with the namespace, also when the agent is killed.
    harden_process();
    enter_private_mount_namespace();
    auto stop_signals = block_stop_signals();

    auto where = identity_dir(o.data_dir);
    Result<Identity> identity = make_error(Errc::internal, "no identity");
    if (!token.empty()) {
        if (identity_exists(o.data_dir))
            return fail(make_error(
                Errc::already_exists,
                fmt::format("this node already has an identity in {}; to leave its cluster and "
                            "join with a new token, stop the agent and remove {}",
                            where, where)));
        if (o.manager.empty())
            return fail(
                make_error(Errc::invalid_argument, "--join-token needs --manager HOST:PORT"));
        identity = join_cluster(o.data_dir, o.manager, token, o.hostname, stop_signals);
    } else {
        identity = load_identity(o.data_dir);
        if (!identity && identity.error().code == Errc::not_found)
            return fail(make_error(Errc::not_found,
                                   fmt::format("no identity in {}: join a cluster first with "
                                               "--manager HOST:PORT --join-token TOKEN",
                                               where)));
    }
    if (!identity) return fail(identity.error());
    auto address = o.manager.empty() ? identity->node.manager : o.manager;
    auto endpoint = parse_endpoint(address);
    if (!endpoint) return fail(endpoint.error());
    // The managers the last session named: tried after this one when it cannot be reached.
    std::vector<nodeconn::Endpoint> other_managers;
    if (auto stored = load_managers(o.data_dir); !stored) {
        log::warn("agent", "ignoring the stored list of managers: {}", stored.error().message);
    } else {
        for (const auto& why : stored->ignored) log::warn("agent", "ignoring {}", why);
        std::erase(stored->managers, *endpoint);
        other_managers = std::move(stored->managers);
    }
    log::info("agent", "node {} ({}) of cluster {}, manager {} (and {} others known)",
              identity->node.node_id, pki::role_name(identity->node.role),
              identity->node.cluster_id, address, other_managers.size());

    std::vector<model::GenericResource> generic;
    for (const auto& text : o.generic_resources) {
        auto g = parse_generic_resource(text);
        if (!g) return fail(g.error());
        generic.push_back(std::move(*g));
    }
    auto description = describe_host(std::move(generic));
    if (!description) return fail(description.error());

    auto tasks = make_tasks(o);
    // The executor reports through the loop, which is created after it: until then (and after
    // the loop stopped) nothing can be sent.
    std::atomic<SessionLoop*> session{nullptr};
    ExecutorOptions executor_options;
    // Starts are mostly the runtime's own process; 8 at once keep 2 cores busy during a
    // rolling update of a batch without queueing behind one another.
    executor_options.workers = o.noop_executor ? 1 : 8;
    // A stop mostly waits for its task to end: a batch of 16 gets its signals at once. The
    // no-op driver's stops return at once.
    executor_options.stop_workers = o.noop_executor ? 0 : 16;
    Executor executor(
        *tasks.driver,
        [&session](crypto::SecureBuffer json) {
            auto* s = session.load();
            return s != nullptr && s->send(std::move(json));
        },
        executor_options);
    // Stopped before the executor's shutdown: tasks torn down stop claiming their images.
    std::optional<ImageCollector> image_gc;
    if (tasks.images && o.image_gc_after.count() > 0)
        image_gc.emplace(*tasks.images, o.run_dir, o.image_gc_after);

    SessionOptions options;
    options.manager = std::move(*endpoint);
    options.other_managers = std::move(other_managers);
    options.credentials = std::move(identity->credentials);
    // Renewal: at the certificate's renewal time and when the manager asks.
    options.data_dir = o.data_dir;
    options.node = identity->node;
    // The manager pings every 2 s; a manager silent for 8 s is gone (network partition, frozen
    // host): reconnect rather than wait.
    options.limits.idle_timeout = std::chrono::seconds(8);
    options.description = std::move(*description);
    SessionLoopHandlers handlers;
    handlers.on_message = [&executor, &tasks](nodeconn::Message m) {
        if (m.type != "networks") return executor.handle(m);
        if (!tasks.networks) {
            log::warn("network", "benchmark mode: a networks message is not applied");
            return;
        }
        auto decoded = nodeproto::decode_networks(m.json);
        if (!decoded) {
            log::warn("network", "ignoring a networks message: {}", decoded.error().message);
            return;
        }
        tasks.networks->submit(std::move(*decoded));
    };
    handlers.on_connected = [&executor] { executor.connected(); };
    SessionLoop loop(std::move(options), std::move(handlers));
    session.store(&loop);
    // Scrapes read the loop and the executor: the listener and collectors go before them.
    std::vector<metrics::Registration> collectors;
    std::unique_ptr<metrics::Server> metrics_server;
    if (!metrics_address.empty()) {
        try {
            collectors = register_metrics(executor, loop);
            collectors.push_back(crypto::register_secure_memory_metrics());
            metrics_server = std::make_unique<metrics::Server>(
                metrics_address, metrics::standard_routes([&loop] { return health(loop); }));
            log::info("agent", "metrics on http://{}/metrics, health on /health",
                      metrics_server->address());
        } catch (const std::exception& e) {
            loop.stop();
            session.store(nullptr);
            executor.shutdown();
            return fail(make_error(Errc::invalid_argument, e.what()));
        }
    }
    std::thread waiter([&] {
        int sig;
        sigwait(&stop_signals, &sig);
        loop.stop();
    });
    auto ended = loop.wait();
    pthread_kill(waiter.native_handle(), SIGTERM);
    waiter.join();
    loop.stop();
    session.store(nullptr);
    image_gc.reset();
    // Every task is stopped with its grace period and torn down before the agent exits.
    executor.shutdown();
    if (!ended) return fail(ended.error());
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    // Tasks' file trees (root file systems, mount points, layers unpacked by skopeo and umoci)
    // take the modes their images give, as with Docker: a umask of the environment (the unit's,
    // or an operator's shell) must not make them 0700 and lock a non-root task out of its own
    // root. What the agent keeps private it creates with explicit modes (0600, 0700).
    ::umask(022);
    CLI::App app{
        "coffer node agent: without a subcommand, joins (first start) and keeps the "
        "session to the manager"};
    app.require_subcommand(0, 1);
    // Options from a file too (/etc/coffer/coffer-agent.conf in the systemd unit): `name = value`
    // lines, one per long option of the agent itself; what the command line gives wins, and an
    // unknown name is an error rather than a setting silently ignored.
    app.set_config("--config", "",
                   "Read options from this file (`name = value` per line, e.g. manager = "
                   "\"10.0.0.1:4243\"); the command line wins");
    app.allow_config_extras(CLI::config_extras_mode::error);
    std::string data_dir = "/var/lib/coffer-agent", run_dir = "/run/coffer-agent", runtime,
                log_level = "info", seccomp = "builtin";
    app.add_option("--data-dir", data_dir, "the node identity, images, writable layers, task logs")
        ->capture_default_str();
    app.add_option("--run-dir", run_dir, "bundles, secret mounts, runtime state")
        ->capture_default_str();
    app.add_option("--runtime", runtime, "runc or crun (default: crun when installed, else runc)");
    app.add_option("--seccomp-profile", seccomp,
                   "builtin (Docker's default rules), unconfined (no filter), or the path of a "
                   "profile in Docker's format")
        ->capture_default_str();
    app.add_option("--log-level", log_level, "e.g. info or debug,runner=debug")
        ->capture_default_str();
    std::string log_format = "text";
    app.add_option("--log-format", log_format,
                   "log lines as text or json (one object per line: time, level, category, "
                   "message)")
        ->check(CLI::IsMember({"text", "json"}))
        ->capture_default_str();
    app.add_option("--metrics-addr", metrics_address,
                   "serve Prometheus metrics (GET /metrics) and a health check (GET /health: 200 "
                   "while the session to the manager is open) on ADDRESS:PORT, without "
                   "authentication; off when empty");
    std::string manager, token_text;
    app.add_option("--manager", manager,
                   "HOST:PORT of a manager's node port (default: the one joined)");
    auto* token_option =
        app.add_option("--join-token", token_text, "first start: join the cluster with this token")
            ->envname("COFFER_JOIN_TOKEN");
    // Never from the config file: a token is for the first start only (a stored identity refuses
    // one), and it belongs in no file that outlives the join.
    token_option->configurable(false);
    std::string hostname;
    app.add_option("--hostname", hostname,
                   "first start: the name this node joins under (default: the host's name)");
    std::vector<std::string> generic_resources;
    app.add_option("--generic-resource", generic_resources,
                   "a resource this node offers tasks, reported to the manager (repeatable): "
                   "NAME=COUNT (e.g. ssd=3) or NAME=ID for one named unit (e.g. gpu=GPU-4f2a)")
        ->allow_extra_args(false);
    bool noop_executor = false;
    app.add_flag(
        "--benchmark-noop-executor", noop_executor,
        "benchmark mode: take assignments, report states and write each task's secret "
        "files (a secret mount per task under RUN-DIR/noop-tasks), but run no task (no runtime, "
        "no images; for load tests of the manager with many agents on one machine)");
    PullOptions pull;
    std::int64_t pull_timeout = pull.timeout.count();
    app.add_option("--registry-certs", pull.certs_dir,
                   "DIR/HOST:PORT/ holds the CA certificates (*.crt) a registry's TLS certificate "
                   "is checked against (default for a registry without one: the system's CAs)")
        ->capture_default_str();
    app.add_option("--insecure-registry", pull.insecure,
                   "HOST:PORT of a registry reached over plain HTTP or unverified TLS "
                   "(repeatable; no other registry is)")
        ->allow_extra_args(false);
    app.add_option("--pull-timeout", pull_timeout, "seconds a pull may take")
        ->check(CLI::Range(1, 86400))
        ->capture_default_str();
    app.add_option("--max-image-size", pull.max_bytes,
                   "bytes of compressed blobs an image pulled from a registry may have")
        ->check(CLI::Range(std::uint64_t{1} << 20, std::uint64_t{1} << 40))
        ->capture_default_str();
    std::int64_t image_gc_after = 86400;
    app.add_option("--image-gc-after", image_gc_after,
                   "seconds after which an image pulled from a registry that no task used since "
                   "is removed (0: never)")
        ->check(CLI::Range(std::int64_t{0}, max_period_seconds))
        ->capture_default_str();
    std::string secret_mount = "auto";
    app.add_option("--secret-mount", secret_mount,
                   "what serves tasks' secret files unless their service says (label "
                   "coffer.secret-mount): tmpfs, fuse (from the agent's locked memory, reads "
                   "counted), or auto (tmpfs where the kernel takes noswap, else fuse)")
        ->check(CLI::IsMember({"auto", "tmpfs", "fuse"}))
        ->capture_default_str();
    auto* join =
        app.add_subcommand("join", "the default: join (with --join-token), then keep the session");

    auto* image = app.add_subcommand("image", "the local image store");
    image->require_subcommand(1);
    std::string import_file, import_name, rm_name;
    auto* import =
        image->add_subcommand("import", "import a docker save archive, OCI archive or OCI layout");
    import->add_option("FILE", import_file)->required();
    import->add_option("NAME", import_name, "NAME[:TAG]");
    std::string pull_ref, pull_auth_file;
    auto* pull_cmd = image->add_subcommand(
        "pull", "pull an image from its registry into the store, checked as for a task");
    pull_cmd->add_option("REF", pull_ref, "[REGISTRY/]NAME[:TAG][@DIGEST]")->required();
    pull_cmd->add_option("--auth-file", pull_auth_file,
                         "a docker config.json with the registry's credentials");
    auto* ls = image->add_subcommand("ls", "list images");
    auto* rm = image->add_subcommand("rm", "remove an image");
    rm->add_option("NAME", rm_name)->required();
    bool prune_all = false;
    std::int64_t prune_unused_for = 0;
    auto* prune_cmd = image->add_subcommand(
        "prune", "remove the images pulled from registries that no task uses");
    prune_cmd->add_flag("--all", prune_all, "also the images imported by hand");
    prune_cmd
        ->add_option("--unused-for", prune_unused_for,
                     "only images no task used for longer than this many seconds (0: any)")
        ->check(CLI::Range(std::int64_t{0}, max_period_seconds))
        ->capture_default_str();

    auto* run = app.add_subcommand("run", "run one task in the foreground until it ends");
    std::string spec_file;
    std::vector<std::string> secret_args;
    int grace_ms = 10000;
    run->add_option("--spec", spec_file, "task spec (JSON)")->required();
    run->add_option("--secret", secret_args, "ID=FILE: the bytes of a secret the spec references");
    run->add_option("--stop-grace-ms", grace_ms,
                    "on SIGINT/SIGTERM: SIGTERM, then SIGKILL after this")
        ->capture_default_str();
    auto* cleanup = app.add_subcommand("cleanup", "remove what a crashed agent left behind");

    if (auto status = coffer::daemon::parse_daemon_arguments(app, argc, argv, "coffer-agent"))
        return *status;
    // The token moves into secure memory; the copies CLI11, the command line and the environment
    // hold are wiped (which also hides it from /proc/<pid>/cmdline and environ).
    auto token = crypto::take_secret_argument(token_text, token_option->results(), "--join-token",
                                              "COFFER_JOIN_TOKEN", argc, argv);
    token_option->clear();
    // Relative directories would change meaning for the runtime, which reads them from the
    // task's bundle.
    for (auto* d : {&data_dir, &run_dir})
        if (!d->empty()) *d = std::filesystem::absolute(*d).lexically_normal().string();
    // Descriptors inherited from whoever started us never reach a runtime or a container.
    ::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
    if (auto why = log::configure(log_level); !why.empty()) {
        std::fprintf(stderr, "coffer-agent: --log-level: %s\n", why.c_str());
        return coffer::daemon::usage_error;
    }
    log::set_format(log_format);
    pull.timeout = std::chrono::seconds(pull_timeout);

    try {
        if (join->parsed() || app.get_subcommands().empty()) {
            if (hostname.empty()) {
                char name[256] = {};
                if (::gethostname(name, sizeof name - 1) == 0) hostname = name;
            }
            return run_node({data_dir, run_dir, runtime, seccomp, manager, noop_executor, hostname,
                             generic_resources, pull, std::chrono::seconds(image_gc_after),
                             *secret_backend_from(secret_mount)},
                            token);
        }
        if (!token.empty())
            return fail(make_error(Errc::invalid_argument,
                                   "--join-token is for joining, not for this command"));
        ImageStore store(data_dir + "/images");
        if (import->parsed()) {
            auto r = store.import(import_file, import_name);
            if (!r) return fail(r.error());
            for (auto& i : *r) std::printf("%s %s\n", i.name.c_str(), i.digest.c_str());
            return 0;
        }
        if (pull_cmd->parsed()) {
            crypto::init();
            std::optional<crypto::SecureBuffer> auth;
            if (!pull_auth_file.empty()) auth = read_secret(pull_auth_file);
            auto r = store.pull(pull_ref, auth ? &*auth : nullptr, pull);
            if (!r) return fail(r.error());
            std::printf("%s %s\n", r->name.c_str(), r->digest.c_str());
            return 0;
        }
        if (ls->parsed()) {
            auto r = store.list();
            if (!r) return fail(r.error());
            for (auto& i : *r) std::printf("%-40s %s\n", i.name.c_str(), i.digest.c_str());
            return 0;
        }
        if (rm->parsed()) {
            auto r = store.remove(
                rm_name, [&](std::string_view d) { return Runner::image_in_use(run_dir, d); });
            if (!r) return fail(r.error());
            return 0;
        }
        if (prune_cmd->parsed()) {
            auto r = store.prune(
                [&](std::string_view d) { return Runner::image_in_use(run_dir, d); },
                {.all = prune_all, .unused_for = std::chrono::seconds(prune_unused_for)});
            if (!r) return fail(r.error());
            for (auto& i : *r) std::printf("%s %s\n", i.name.c_str(), i.digest.c_str());
            return 0;
        }

        // Tasks: secret mounts must never show in the host's mount table.
        harden_process();
        enter_private_mount_namespace();
        crypto::init();

        auto stop_signals = block_stop_signals();

        RunnerOptions opt;
        opt.run_dir = run_dir;
        opt.data_dir = data_dir;
        opt.runtime = runtime;
        opt.seccomp_profile = seccomp;
        opt.pull = pull;
        opt.secret_mount = *secret_backend_from(secret_mount);
        Runner runner(opt, store);
        auto left = runner.recover_leftovers();
        if (left.containers + left.mounts + left.task_dirs + left.cgroups + left.interfaces > 0)
            log::info("runner",
                      "cleaned leftovers: {} containers, {} mounts, {} task directories, {} "
                      "cgroups, {} task interfaces",
                      left.containers, left.mounts, left.task_dirs, left.cgroups, left.interfaces);
        // The node's networks: what an agent that did not end left of them, unless another
        // agent runs in this network namespace (they would be its).
        auto claimed = NodeNetworks::claim_namespace();
        if (!claimed) return fail(claimed.error());
        if (int n = NodeNetworks::remove_leftovers(); n > 0)
            log::info("network", "removed {} bridges, VXLAN devices, chains and jumps", n);
        if (cleanup->parsed()) return 0;

        std::ifstream in(spec_file);
        if (!in) return fail(make_error(Errc::not_found, fmt::format("cannot open {}", spec_file)));
        std::stringstream text;
        text << in.rdbuf();
        auto spec = task_spec_from_json(text.str());
        if (!spec) return fail(spec.error());
        SecretBytes secrets;
        for (auto& a : secret_args) {
            auto eq = a.find('=');
            if (eq == std::string::npos)
                return fail(make_error(Errc::invalid_argument, "--secret ID=FILE"));
            secrets.insert_or_assign(a.substr(0, eq), read_secret(a.substr(eq + 1)));
        }

        auto st = runner.start(*spec, std::move(secrets));
        std::printf("%s\n", task_status_to_json(st).c_str());
        std::fflush(stdout);
        if (st.state != TaskState::running) return 1;

        // Wait for the end of the task or a stop signal.
        std::thread waiter([&] {
            int sig;
            sigwait(&stop_signals, &sig);
            if (sig == SIGINT || sig == SIGTERM)
                (void)runner.stop(spec->id, std::chrono::milliseconds(grace_ms));
        });
        auto final_status = runner.wait(spec->id, std::chrono::hours(24 * 365));
        pthread_kill(waiter.native_handle(), SIGTERM);
        waiter.join();
        if (!final_status) return 1;
        std::printf("%s\n", task_status_to_json(*final_status).c_str());
        return final_status->exit_code.value_or(1);
    } catch (const std::exception& e) {
        log::fatal("coffer-agent", e.what());
        return 1;
    }
}
