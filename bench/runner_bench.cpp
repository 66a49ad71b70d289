// Task start (assignment in hand -> process running with its secrets mounted) and teardown
// (exit -> everything released) with real containers, as root:
//   bench-runner [CYCLES]     (default 1000 start/stop cycles for the leak check)
// Prints p50/p99 over 100 sequential tasks, start and teardown with the secrets on tmpfs and on
// FUSE (alternating), the same for 50 tasks started at once, and what the process holds before
// and after the cycles (fds, mounts, threads, zombies, cgroups, RSS).
#include <dirent.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>
#include <vector>

#include "coffer/agent/image_store.h"
#include "coffer/agent/runner.h"
#include "coffer/base/log.h"
#include "coffer/base/mount.h"
#include "coffer/base/process.h"
#include "coffer/crypto/secure_buffer.h"

using namespace coffer;
using namespace coffer::agent;
using Clock = std::chrono::steady_clock;

namespace {

double ms(Clock::duration d) {
    return std::chrono::duration<double, std::milli>(d).count();
}

struct Stats {
    std::vector<double> v;
    double pct(double p) {
        std::sort(v.begin(), v.end());
        return v.empty() ? 0
                         : v[std::min(v.size() - 1,
                                      static_cast<std::size_t>(p * static_cast<double>(v.size())))];
    }
};

int count_entries(const std::string& dir) {
    int n = 0;
    if (DIR* d = ::opendir(dir.c_str())) {
        while (auto* e = ::readdir(d))
            if (e->d_name[0] != '.') ++n;
        ::closedir(d);
    }
    return n;
}

// Children of this process that ended and that nobody reaped.
int zombies() {
    int n = 0;
    for (int pid : child_pids())
        if (auto st = process_stat(pid); st && st->state == 'Z') ++n;
    return n;
}

long rss_kib() {
    std::ifstream in("/proc/self/status");
    std::string k;
    long v = 0;
    while (in >> k)
        if (k == "VmRSS:") return in >> v, v;
    return 0;
}

struct Held {
    int fds, mounts, threads, zombies, cgroups;
    long rss;
    std::size_t secrets;
};

Held held(const Runner& r) {
    return {count_entries("/proc/self/fd"),
            static_cast<int>(read_mountinfo().size()),
            count_entries("/proc/self/task"),
            zombies(),
            count_entries("/sys/fs/cgroup/pids/coffer") + count_entries("/sys/fs/cgroup/coffer"),
            rss_kib(),
            r.secrets_held()};
}

TaskSpec task(std::string id) {
    TaskSpec s;
    s.id = std::move(id);
    s.image = "busybox";
    s.args = {"sleep", "600"};
    s.limits = {64 << 20, 500000000, 64};
    s.secrets = {{"s1", "db_pass", "", 1000, 1000, 0400}};
    return s;
}

SecretBytes secret() {
    SecretBytes b;
    b.emplace("s1",
              crypto::SecureBuffer::copy_of(std::string_view("correct horse battery staple")));
    return b;
}

}  // namespace

int main(int argc, char** argv) {
    int cycles = argc > 1 ? std::atoi(argv[1]) : 1000;
    enter_private_mount_namespace();
    crypto::init();
    (void)log::configure("warn");

    char tmpl[] = "/var/tmp/coffer-bench-XXXXXX";
    if (!::mkdtemp(tmpl)) return 1;
    std::string dir = tmpl;
    auto r = run_command({COFFER_MAKE_TEST_IMAGES, dir + "/layout"});
    if (!r.ok()) {
        std::fprintf(stderr, "make-test-images: %s\n", r.describe().c_str());
        return 1;
    }
    int rc = 0;
    {
        ImageStore store(dir + "/data/images");
        (void)store.import(dir + "/layout", "busybox:latest");
        RunnerOptions o;
        o.run_dir = dir + "/run";
        o.data_dir = dir + "/data";
        Runner runner(o, store);
        std::printf("runtime %s, cgroups %s\n", std::string(runner.runtime_name()).c_str(),
                    std::string(runner.cgroup_mode()).c_str());
        // Warm: the image is unpacked once per digest, not per task.
        runner.start(task("warm"), secret());
        (void)runner.stop("warm", std::chrono::milliseconds(0));

        Stats start, teardown;
        for (int i = 0; i < 100; ++i) {
            auto id = fmt::format("seq-{}", i);
            auto t0 = Clock::now();
            auto st = runner.start(task(id), secret());
            start.v.push_back(ms(Clock::now() - t0));
            if (st.state != TaskState::running) {
                std::fprintf(stderr, "start failed: %s\n", st.reason.c_str());
                return 1;
            }
            // grace 0: SIGKILL at once, so this is exit -> everything released.
            t0 = Clock::now();
            (void)runner.stop(id, std::chrono::milliseconds(0));
            teardown.v.push_back(ms(Clock::now() - t0));
        }
        std::printf(
            "sequential, 100 tasks: start p50 %.1f ms p99 %.1f ms; teardown p50 %.1f ms p99 %.1f "
            "ms\n",
            start.pct(0.5), start.pct(0.99), teardown.pct(0.5), teardown.pct(0.99));

        // Task start and teardown per secret mount backend, alternating so that the machine's
        // drift hits both alike. Target: FUSE start p50 within 10 ms of tmpfs's.
        Stats backend_start[2], backend_teardown[2];
        const SecretBackend backends[2] = {SecretBackend::tmpfs, SecretBackend::fuse};
        for (int i = 0; i < 100; ++i) {
            int b = i % 2;
            auto spec = task(fmt::format("backend-{}", i));
            spec.secret_mount = backends[b];
            auto b0 = Clock::now();
            auto st = runner.start(spec, secret());
            backend_start[b].v.push_back(ms(Clock::now() - b0));
            if (st.state != TaskState::running) {
                std::fprintf(stderr, "start on %s failed: %s\n",
                             std::string(to_string(backends[b])).c_str(), st.reason.c_str());
                return 1;
            }
            b0 = Clock::now();
            (void)runner.stop(spec.id, std::chrono::milliseconds(0));
            backend_teardown[b].v.push_back(ms(Clock::now() - b0));
        }
        for (int b = 0; b < 2; ++b)
            std::printf(
                "secrets on %-5s (50 tasks, alternating): start p50 %.1f ms p99 %.1f ms; "
                "teardown p50 %.1f ms p99 %.1f ms\n",
                std::string(to_string(backends[b])).c_str(), backend_start[b].pct(0.5),
                backend_start[b].pct(0.99), backend_teardown[b].pct(0.5),
                backend_teardown[b].pct(0.99));
        auto extra = backend_start[1].pct(0.5) - backend_start[0].pct(0.5);
        bool within = extra <= 10.0;
        std::printf("FUSE start - tmpfs start (p50): %+.1f ms (target <= +10 ms): %s\n", extra,
                    within ? "ok" : "MISSED");
        if (!within) rc = 1;

        Stats burst;
        std::mutex mu;
        auto t0 = Clock::now();
        std::vector<std::thread> threads;
        for (int i = 0; i < 50; ++i)
            threads.emplace_back([&, i] {
                auto s0 = Clock::now();
                auto st = runner.start(task(fmt::format("burst-{}", i)), secret());
                std::lock_guard g(mu);
                burst.v.push_back(ms(Clock::now() - s0));
                if (st.state != TaskState::running)
                    std::fprintf(stderr, "burst start: %s\n", st.reason.c_str());
            });
        for (auto& t : threads) t.join();
        auto all_running = ms(Clock::now() - t0);
        t0 = Clock::now();
        threads.clear();
        for (int i = 0; i < 50; ++i)
            threads.emplace_back([&, i] {
                (void)runner.stop(fmt::format("burst-{}", i), std::chrono::milliseconds(0));
            });
        for (auto& t : threads) t.join();
        std::printf(
            "50 at once: all running after %.0f ms (per task p50 %.0f ms p99 %.0f ms); all torn "
            "down after %.0f ms\n",
            all_running, burst.pct(0.5), burst.pct(0.99), ms(Clock::now() - t0));

        auto before = held(runner);
        Stats cyc;
        for (int i = 0; i < cycles; ++i) {
            auto id = fmt::format("cycle-{}", i);
            auto c0 = Clock::now();
            auto st = runner.start(task(id), secret());
            if (st.state != TaskState::running) {
                std::fprintf(stderr, "cycle %d: %s\n", i, st.reason.c_str());
                rc = 1;
                break;
            }
            (void)runner.stop(id, std::chrono::milliseconds(0));
            cyc.v.push_back(ms(Clock::now() - c0));
        }
        auto after = held(runner);
        std::printf(
            "%d start/stop cycles (p50 %.0f ms): before/after: fds %d/%d, mounts %d/%d, threads "
            "%d/%d, "
            "zombies %d/%d, task cgroups %d/%d, secrets held %zu/%zu, task dirs %d, RSS %ld/%ld "
            "KiB\n",
            cycles, cyc.pct(0.5), before.fds, after.fds, before.mounts, after.mounts,
            before.threads, after.threads, before.zombies, after.zombies, before.cgroups,
            after.cgroups, before.secrets, after.secrets,
            count_entries(o.run_dir + "/tasks") + count_entries(o.data_dir + "/tasks"), before.rss,
            after.rss);
        if (after.fds != before.fds || after.mounts != before.mounts || after.zombies != 0 ||
            after.cgroups != before.cgroups || after.secrets != 0)
            rc = 1;
    }
    for (auto& m : mounts_under(dir)) ::umount2(m.c_str(), MNT_DETACH);
    remove_tree(dir);
    return rc;
}
