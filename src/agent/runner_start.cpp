// A task's start: one linear sequence of named steps, from the spec to a running container with
// its secrets mounted, each resource owned by a member of Resources so that a failure at any step
// releases what the steps before it acquired.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>

#include "agent_metrics.h"
#include "coffer/agent/in_root.h"
#include "coffer/agent/task_secrets.h"
#include "coffer/base/log.h"
#include "coffer/model/task_options.h"
#include "json_util.h"
#include "oci_config.h"
#include "runner_impl.h"
#include "task_files.h"
#include "task_user.h"

namespace coffer::agent {

namespace {

// The init a task run with TaskSpec::init gets: Debian's static tini (package tini), which runs
// in any image.
constexpr const char* init_binary = "/usr/bin/tini-static";

// The node's resolver configuration, the default of a task's /etc/resolv.conf.
std::string node_resolv_conf() {
    std::string text;
    UniqueFd fd(::open("/etc/resolv.conf", O_RDONLY | O_CLOEXEC | O_NONBLOCK));
    if (!fd) return text;
    char buf[4096];
    ssize_t n;
    while (text.size() < 64 * 1024 && (n = ::read(fd.get(), buf, sizeof buf)) > 0)
        text.append(buf, static_cast<std::size_t>(n));
    return text;
}

}  // namespace

TaskStatus Runner::Impl::start(const TaskSpec& spec, SecretBytes supplied) {
    auto started_at = std::chrono::steady_clock::now();
    auto t = std::make_shared<Task>();
    t->status.id = spec.id;
    t->stop_signal = model::signal_number(spec.stop_signal).value_or(SIGTERM);
    auto reject_now = [&](std::string why) {
        TaskStatus s;
        s.id = spec.id;
        s.state = TaskState::rejected;
        s.reason = std::move(why);
        publish(s);
        return s;
    };
    if (!valid_task_id(spec.id)) return reject_now("invalid task id");
    {
        std::lock_guard g(mu);
        if (tasks.contains(spec.id))
            return reject_now(fmt::format("task {} already exists", spec.id));
        tasks.emplace(spec.id, t);
    }
    publish(t->status);
    set_state(*t, TaskState::preparing);

    try {
        // Bytes the store holds already (another task's, or the manager's assignment) are used
        // as they are; supplied ones are taken only for secrets it does not hold.
        // The registry credentials are leased for the start only: the task keeps its secrets,
        // not what its image was pulled with.
        std::vector<std::string> ids;
        for (const auto& r : spec.secrets) ids.push_back(r.secret_id);
        auto with_auth = ids;
        if (!spec.registry_auth.empty()) with_auth.push_back(spec.registry_auth);
        auto start_lease = secrets.lease(with_auth, supplied);
        if (!start_lease) throw Rejected{start_lease.error().message};
        auto lease = secrets.lease(ids);
        if (!lease) throw Rejected{lease.error().message};
        t->secrets = std::move(*lease);
        prepare_and_start(*t, spec, t);
        start_lease->reset();
        TaskStatus copy;
        {
            std::lock_guard g(mu);
            copy = t->status;
        }
        task_start_duration("started").observe_since(started_at);
        return copy;
    } catch (const Rejected& r) {
        t->res.reset();
        t->secrets.reset();
        TaskStatus s{spec.id, TaskState::rejected, std::nullopt, false, r.reason, 0};
        finish(t, s);
        task_start_duration("rejected").observe_since(started_at);
        return s;
    } catch (const std::exception& e) {
        std::string why = e.what();
        t->res.reset();  // every step's resource, in reverse order
        t->secrets.reset();
        TaskStatus s{spec.id, TaskState::failed, std::nullopt, false, why, 0};
        finish(t, s);
        task_start_duration("failed").observe_since(started_at);
        return s;
    }
}

void Runner::Impl::prepare_and_start(Task& t, const TaskSpec& spec,
                                     const std::shared_ptr<Task>& self) {
    std::string step = "validate and resolve the image";
    auto t0 = std::chrono::steady_clock::now();
    auto timed = [&](std::string next) {
        if (!step.empty())
            log::debug("runner", "task {}: {} took {} us", spec.id, step,
                       std::chrono::duration_cast<std::chrono::microseconds>(
                           std::chrono::steady_clock::now() - t0)
                           .count());
        t0 = std::chrono::steady_clock::now();
        step = std::move(next);
    };
    auto fail_in = [&](const std::exception& e) -> std::runtime_error {
        return std::runtime_error(fmt::format("{}: {}", step, e.what()));
    };
    auto check = [&](auto&& result) {
        if (!result) throw Rejected{result.error().message};
        return std::move(*result);
    };

    // 1. Validate everything that can be validated before touching the system.
    if (!spec.hostname.empty() && !model::valid_task_hostname(spec.hostname))
        throw Rejected{"invalid hostname"};
    for (auto& e : spec.env)
        if (e.find('=') == std::string::npos || e.front() == '=')
            throw Rejected{fmt::format("invalid env entry")};
    auto files = check(plan_secret_files(spec.secrets));
    {
        std::vector<std::string> secret_targets;
        for (const auto& f : files) secret_targets.push_back(f.path);
        if (auto ok = check_task_mounts(spec.mounts, secret_targets); !ok)
            throw Rejected{ok.error().message};
    }
    auto resolved = images.resolve(spec.image);
    if (!resolved && resolved.error().code == Errc::not_found && opt.pull_images) {
        timed("pull the image");
        // The task shows it: preparing, "pulling REF".
        auto show = [&](std::string message) {
            TaskStatus copy;
            {
                std::lock_guard g(mu);
                t.status.reason = std::move(message);
                copy = t.status;
            }
            publish(copy);
        };
        show(fmt::format("pulling {}", spec.image));
        std::optional<crypto::SecureBuffer> auth;
        if (!spec.registry_auth.empty())
            secrets.read([&](const SecretBytes& bytes) {
                if (auto it = bytes.find(spec.registry_auth); it != bytes.end())
                    auth = it->second.clone();
            });
        auto pulled = images.pull(spec.image, auth ? &*auth : nullptr, opt.pull);
        auth.reset();
        if (!pulled) throw Rejected{pulled.error().message};
        show({});
        resolved = images.resolve(spec.image);
    }
    auto image = check(std::move(resolved));
    auto caps = check(task_capabilities(spec.cap_add, spec.cap_drop));
    auto health_check = check(effective_healthcheck(spec.healthcheck, image.config.healthcheck));
    bool health_disabled =
        spec.healthcheck && spec.healthcheck->test == std::vector<std::string>{"NONE"};
    if (!health_disabled && !image.config.healthcheck_error.empty())
        throw Rejected{image.config.healthcheck_error};
    {
        // As the manager checks them (the decoder too, for an assignment): the files written
        // from them are the task's view of names and resolvers.
        model::ContainerSpec options;
        options.user = spec.user;
        options.groups = spec.groups;
        options.stop_signal = spec.stop_signal;
        options.sysctls = {spec.sysctls.begin(), spec.sysctls.end()};
        for (const auto& u : spec.ulimits) options.ulimits.push_back({u.name, u.soft, u.hard});
        options.hosts = spec.extra_hosts;
        options.dns = {spec.dns.nameservers, spec.dns.search, spec.dns.options};
        options.oom_score_adj = spec.oom_score_adj;
        if (auto ok = model::validate_task_options(options); !ok)
            throw Rejected{ok.error().message};
    }
    if (spec.host_network && !spec.networks.empty())
        throw Rejected{"a task on the node's network (network mode host) joins no other network"};
    if (spec.host_network && spec.user_namespace)
        throw Rejected{"a task in a user namespace cannot share the node's network namespace"};
    if (!spec.host_network && spec.networks.empty() && !spec.host_ports.empty())
        throw Rejected{"a port published in host mode needs a network to reach the task on"};
    if (!spec.networks.empty() && !opt.networks)
        throw Rejected{"this agent runs no networks: a task on networks cannot run here"};
    if (spec.host_network && !spec.host_ports.empty())
        log::warn("runner",
                  "task {}: published ports are not mapped: on the node's network, the task "
                  "listens on the node's ports itself",
                  spec.id);
    if (spec.init && ::access(init_binary, X_OK) != 0)
        throw Rejected{fmt::format(
            "init requested, but this node has no {} (Debian's package tini)", init_binary)};

    t.res = std::make_unique<Resources>();
    Resources& res = *t.res;
    try {
        timed("create task directories");
        res.bundle = OwnedDir(fmt::format("{}/{}", tasks_dir(), spec.id));
        res.layer = OwnedDir(fmt::format("{}/{}", layers_dir(), spec.id));
        const auto& b = res.bundle.path();
        write_file(b + "/image", image.digest);
        make_dir(b + "/rootfs", 0755);
        make_dir(b + "/secrets", 0700);
        make_dir(res.layer.path() + "/upper", 0755);
        make_dir(res.layer.path() + "/work", 0700);

        // Its namespace and interfaces, kept in the bundle (netns, cni/): the runtime joins it.
        if (!spec.networks.empty()) {
            timed("attach the task's networks");
            auto attached = opt.networks->attach(spec, b);
            if (!attached) {
                auto& e = attached.error();
                if (e.code == Errc::invalid_argument || e.code == Errc::unavailable)
                    throw Rejected{e.message};
                throw std::runtime_error(e.message);
            }
            res.network = std::move(*attached);
        }

        timed("mount rootfs overlay");
        res.rootfs = Mount::make("overlay", b + "/rootfs", "overlay", 0,
                                 fmt::format("lowerdir={},upperdir={}/upper,workdir={}/work",
                                             image.rootfs, res.layer.path(), res.layer.path()));

        // The image is hostile: a path the runtime mounts on or creates in (its /dev, /proc,
        // /sys...) must be a real directory of the rootfs (or missing below one), never a link
        // the runtime could follow out of it (crun 1.8 makes /dev's nodes in the host's / when
        // the image's /dev is a link to /). Nothing in the rootfs changes after this check but
        // what the agent makes itself (directories and files, never links), and no process of
        // the task runs before the runtime.
        timed("check the rootfs paths of the runtime");
        UniqueFd root(
            ::open((b + "/rootfs").c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!root) throw_errno("open rootfs");
        auto check_runtime_path = [&](std::string_view path, Leaf leaf) {
            if (auto ok = check_runtime_path_in_root(root.get(), path, leaf); !ok)
                throw Rejected{
                    fmt::format("image rootfs: {}; refusing to run", ok.error().message)};
        };
        for (const auto& p : runtime_rootfs_paths()) check_runtime_path(p.path, p.leaf);

        // Names of the image's /etc/passwd and /etc/group, read inside the rootfs.
        timed("resolve the task's user in the image");
        auto user = check(resolve_user(spec.user.empty() ? image.config.user : spec.user,
                                       spec.groups, check(read_account_files(root.get()))));

        // The task's own /etc/hosts, /etc/hostname and /etc/resolv.conf, in its bundle (gone
        // with it), bound read-only over the image's (checked above to be no links).
        timed("write the task's hosts, hostname and resolv.conf");
        std::vector<BindMount> engine_binds;
        std::string hostname = spec.hostname.empty() ? spec.id.substr(0, 12) : spec.hostname;
        if (res.network) {
            write_file(b + "/hosts",
                       hosts_file(hostname, spec.extra_hosts, res.network->addresses()), 0644);
            if (!spec.dns.nameservers.empty())
                log::warn("runner",
                          "task {}: its DNS nameservers are not in its resolv.conf: on networks, "
                          "it asks the node's resolver at {}, which forwards to the node's",
                          spec.id, res.network->nameserver());
            write_file(
                b + "/resolv.conf",
                resolv_conf_for_resolver(spec.dns, node_resolv_conf(), res.network->nameserver()),
                0644);
        } else {
            write_file(b + "/hosts", hosts_file(hostname, spec.extra_hosts), 0644);
            write_file(b + "/resolv.conf", resolv_conf(spec.dns, node_resolv_conf()), 0644);
        }
        write_file(b + "/hostname", hostname + "\n", 0644);
        engine_binds.push_back({b + "/hosts", "/etc/hosts"});
        engine_binds.push_back({b + "/hostname", "/etc/hostname"});
        engine_binds.push_back({b + "/resolv.conf", "/etc/resolv.conf"});
        // In the runtime's /dev tmpfs: nothing of the image's is touched.
        if (spec.init) engine_binds.push_back({init_binary, std::string(task_init_path), true});

        timed("mount secrets");
        res.secrets = mount_task_secrets(b + "/secrets", spec, files, secrets, opt.userns_base,
                                         *secret_backends);

        timed("place secret mount points in the rootfs");
        std::vector<BindMount> binds;
        {
            for (auto& bind : res.secrets.binds()) {
                auto dest = check(make_mountpoint_in_root(
                    root.get(), bind.destination, bind.directory ? Leaf::directory : Leaf::file));
                if (is_forbidden_destination(dest))
                    throw Rejected{fmt::format("secret target {} resolves to {} in the image",
                                               bind.destination, dest)};
                for (auto& other : binds)
                    if (dest == other.destination || dest.starts_with(other.destination + "/") ||
                        other.destination.starts_with(dest + "/"))
                        throw Rejected{fmt::format("secret targets {} and {} overlap in the image",
                                                   dest, other.destination)};
                if (dest != bind.destination)
                    log::warn("runner", "task {}: {} is {} in the image", spec.id, bind.destination,
                              dest);
                // Resolved free of links already; checked as the runtime will meet it all the same.
                check_runtime_path(dest, bind.directory ? Leaf::directory : Leaf::file);
                binds.push_back({bind.source, dest});
            }
        }

        // A secret the task asked for at one of these paths, or over a directory holding one
        // (an image's /run/secrets -> /etc), takes its place: the runtime could not make a mount
        // point in the secrets' read-only tmpfs.
        std::vector<std::string> engine_paths;
        for (auto& e : engine_binds) {
            engine_paths.push_back(e.destination);
            auto covered = std::find_if(binds.begin(), binds.end(), [&](const BindMount& s) {
                return e.destination == s.destination ||
                       e.destination.starts_with(s.destination + "/");
            });
            if (covered != binds.end()) {
                log::warn("runner", "task {}: {} is under the secret mount at {}: not bound",
                          spec.id, e.destination, covered->destination);
                continue;
            }
            binds.push_back(std::move(e));
        }

        timed("prepare the task's mounts");
        std::vector<OciMount> task_mounts;
        for (std::size_t i = 0; i < spec.mounts.size(); ++i) {
            const auto& m = spec.mounts[i];
            std::string source;
            auto leaf = Leaf::directory;
            if (m.type == TaskMount::Type::bind) {
                source = check(resolve_bind_source(m.source, {opt.run_dir, opt.data_dir}));
                struct stat st {};
                if (::stat(source.c_str(), &st) != 0) throw_errno(fmt::format("stat {}", source));
                if (!S_ISDIR(st.st_mode)) leaf = Leaf::file;
            }
            auto dest = check(make_mountpoint_in_root(root.get(), m.target, leaf));
            if (is_forbidden_destination(dest))
                throw Rejected{
                    fmt::format("mount target {} resolves to {} in the image", m.target, dest)};
            for (const auto& other : task_mounts)
                if (dest == other.destination || dest.starts_with(other.destination + "/") ||
                    other.destination.starts_with(dest + "/"))
                    throw Rejected{fmt::format("mount targets {} and {} overlap in the image", dest,
                                               other.destination)};
            for (const auto& other : binds)
                if (dest == other.destination || dest.starts_with(other.destination + "/") ||
                    other.destination.starts_with(dest + "/")) {
                    // The task's own /etc/hosts, /etc/hostname, /etc/resolv.conf (and init) are
                    // bound on the image's paths, checked free of links; a mount over them would
                    // put a volume's content, links included, in their place.
                    if (std::find(engine_paths.begin(), engine_paths.end(), other.destination) !=
                        engine_paths.end())
                        throw Rejected{fmt::format(
                            "mount target {} would hide the task's {}, which coffer provides: "
                            "mount a directory that does not hold it",
                            dest, other.destination)};
                    throw Rejected{
                        fmt::format("mount target {} and secret target {} overlap in the image",
                                    dest, other.destination)};
                }
            check_runtime_path(dest, leaf);
            if (m.type == TaskMount::Type::volume) {
                bool fresh = true;
                if (m.source.empty()) {
                    // Anonymous: the task's own, in its writable layer's directory, gone with it.
                    make_dir(res.layer.path() + "/volumes", 0700);
                    source = fmt::format("{}/volumes/{}", res.layer.path(), i);
                    make_dir(source, 0755);
                } else {
                    auto v = check(volumes->acquire(m.source, m.labels, spec.id));
                    res.volumes.emplace_back(*volumes, m.source, spec.id);
                    source = std::move(v.data);
                    fresh = v.fresh;
                }
                // As Docker: a new, empty volume gets what the image has at the target, unless
                // NoCopy. The image's side is opened free of links (dest is resolved), the
                // volume's is the agent's own directory.
                if (fresh && !m.no_copy) {
                    auto from = check(open_dir_in_root(root.get(), dest));
                    UniqueFd to(
                        ::open(source.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
                    if (!to) throw_errno(fmt::format("open volume {}", m.source));
                    copy_tree(from.get(), to.get());
                }
            }
            task_mounts.push_back(oci_mount_for(m, std::move(source), dest));
        }

        timed("write config.json");
        ConfigInput ci;
        ci.spec = &spec;
        ci.image = &image.config;
        ci.binds = std::move(binds);
        ci.task_mounts = std::move(task_mounts);
        ci.cgroups_path = fmt::format("{}/{}", cgroup_parent, spec.id);
        ci.limit_swap = cgroups->can_limit_swap();
        ci.seccomp_profile = has_seccomp ? &seccomp : nullptr;
        if (runtime->name() == "crun" && opt.compile_seccomp)
            ci.seccomp_programs = &seccomp_programs;
        ci.userns_base = opt.userns_base;
        ci.userns_size = opt.userns_size;
        ci.user = &user;
        if (res.network) ci.netns = res.network->netns();
        ci.host_network = spec.host_network;
        write_file(b + "/config.json", check(make_oci_config(ci)));

        timed("open output");
        int pipe_fds[2];
        if (::pipe2(pipe_fds, O_CLOEXEC) != 0) throw_errno("pipe");
        UniqueFd out_r(pipe_fds[0]), out_w(pipe_fds[1]);
        auto log_file = fmt::format("{}/{}.log", logs_dir(), spec.id);
        ::unlink(log_file.c_str());  // a task id names one run: no output of an earlier one
        ::unlink((log_file + ".1").c_str());
        auto logf = std::make_shared<LogFile>(log_file, opt.log_max_bytes);
        monitor.watch_output(std::move(out_r), logf, [this, self] {
            {
                std::lock_guard g(mu);
                self->output_closed = true;
            }
            cv.notify_all();
        });

        set_state(t, TaskState::starting);
        timed(fmt::format("{} run", runtime->name()));
        res.cgroup = CgroupDir(*cgroups, ci.cgroups_path);
        auto init =
            runtime->run(spec.id, b, b + "/pid", b + "/runtime.log", out_w.get(), out_w.get());
        if (!init) throw std::runtime_error(init.error().message);
        res.container = Container(*runtime, spec.id);
        out_w.reset();

        // The init runs already and may even have exited: it is our child (we are a subreaper),
        // and only its pidfd reaps it, so the pid stays ours until then. The monitor waits for
        // it; the claim lasts until the task's resources go (reap_orphans leaves it alone).
        timed("watch container process");
        res.init = Child::adopt(std::move(*init));
        int pid = res.init.pid();
        t.signal_fd.reset(::fcntl(res.init.pidfd(), F_DUPFD_CLOEXEC, 0));

        // Its first probe is an interval away; the teardown (after the exit watch below) stops it.
        if (health_check) {
            timed("start the health check");
            auto probe = [this, id = spec.id, pid_file = b + "/health.pid",
                          argv = health_check->argv](std::chrono::nanoseconds timeout,
                                                     int cancel_fd) {
                auto r = runtime->exec(id, argv, pid_file, timeout, max_probe_output, cancel_fd);
                if (!r && r.error().code == Errc::unavailable)  // cancelled: the task is ending
                    return ProbeResult{-1, "the health check was cancelled"};
                if (!r) {
                    log::warn("runner", "task {}: health check: {}", id, r.error().message);
                    return ProbeResult{-1, "the health check could not be run"};
                }
                if (r->timed_out)
                    return ProbeResult{
                        -1,
                        fmt::format("Health check exceeded timeout ({}ms)",
                                    std::chrono::duration_cast<std::chrono::milliseconds>(timeout)
                                        .count())};
                return ProbeResult{r->exit_code, std::move(r->output)};
            };
            t.health = std::make_unique<HealthMonitor>(
                *health_check, std::move(probe),
                [this, task = &t](Health h, const ProbeResult& last) {
                    on_health(*task, h, last);
                });
        }

        timed({});
        monitor.watch_exit(res.init.release_pidfd(),
                           [this, self](int status) { on_exit(self, status); });
        TaskStatus copy;
        bool stop_now;
        {
            std::lock_guard g(mu);
            // With a health check it stays starting until its first healthy probe (which may
            // have come already).
            if (!health_check)
                t.status.state = TaskState::running;
            else if (t.status.health == Health::none)
                t.status.health = Health::starting;
            t.status.pid = pid;
            copy = t.status;
            stop_now = t.stop_requested;
        }
        publish(copy);
        if (stop_now) ::syscall(SYS_pidfd_send_signal, t.signal_fd.get(), SIGKILL, nullptr, 0);
    } catch (const Rejected&) {
        throw;
    } catch (const ErrorException& e) {
        throw fail_in(e);
    } catch (const std::exception& e) {
        throw fail_in(e);
    }
}

void Runner::Impl::on_health(Task& t, Health h, const ProbeResult& last) {
    TaskStatus copy;
    bool changed = false;
    {
        std::lock_guard g(mu);
        if (t.done || t.stop_requested || t.unhealthy) return;
        t.status.health = h;
        if (h == Health::healthy && t.status.state == TaskState::starting) {
            t.status.state = TaskState::running;
            changed = true;
        } else if (h == Health::unhealthy) {
            t.unhealthy = true;
            t.status.health_output = probe_output_summary(last.output);
            if (t.signal_fd)
                ::syscall(SYS_pidfd_send_signal, t.signal_fd.get(), SIGKILL, nullptr, 0);
        }
        copy = t.status;
    }
    // The probe's output is the task's: not in the log.
    log::info("runner", "task {}: {} (last probe exited {})", copy.id, to_string(h),
              last.exit_code);
    if (changed) publish(copy);
}

}  // namespace coffer::agent
