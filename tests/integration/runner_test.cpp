// The runner with real containers, under each OCI runtime (crun and runc): what a task sees of its
// secrets, what it cannot do, and that nothing is left once it ended, even after an agent was
// killed. Runs as root.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "coffer/agent/image_store.h"
#include "coffer/agent/runner.h"
#include "coffer/base/log.h"
#include "coffer/base/mount.h"
#include "coffer/base/process.h"
#include "coffer/crypto/encoding.h"
#include "coffer/crypto/random.h"
#include "coffer/crypto/secure_buffer.h"
#include "harness.h"
#include "oci_config.h"
#include "seccomp_bpf.h"
#include "seccomp_profile.h"

using namespace coffer;
using namespace coffer::agent;
using namespace std::chrono_literals;

namespace {

// A temporary directory, unmounted below and removed on destruction (also when a test fails).
using TempDir = coffer::test::MountDir;

std::string read_file(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

bool exists(const std::string& p) {
    struct stat st {};
    return ::lstat(p.c_str(), &st) == 0;
}

std::string env_or(const char* name, const char* fallback) {
    const char* v = std::getenv(name);
    return v ? v : fallback;
}

// The image store all tests share, built once from busybox-static.
TempDir* images_dir = nullptr;

class ImagesEnvironment : public ::testing::Environment {
  public:
    void SetUp() override {
        images_dir = new TempDir();
        std::string layout = images_dir->path() + "/layout";
        auto r = run_command(
            {env_or("COFFER_MAKE_TEST_IMAGES", "tests/integration/make-test-images"), layout});
        ASSERT_TRUE(r.ok()) << r.describe();
        ImageStore store(images_dir->path() + "/store");
        auto imported = store.import(layout);
        ASSERT_TRUE(imported) << imported.error().message;
        ASSERT_EQ(imported->size(), 10u);
    }
    void TearDown() override {
        delete images_dir;
        images_dir = nullptr;
    }
};

SecretRef secret(std::string id, std::string name, std::string target = {}, std::uint32_t uid = 0,
                 std::uint32_t gid = 0, std::uint32_t mode = 0444) {
    return SecretRef{std::move(id), std::move(name), std::move(target), uid, gid, mode};
}

// Children of this process that ended and that nobody reaped.
std::vector<int> zombie_children() {
    std::vector<int> out;
    for (int pid : child_pids())
        if (auto st = process_stat(pid); st && st->state == 'Z') out.push_back(pid);
    return out;
}

// Containers a runtime keeps state for under root: both keep a directory per container there.
std::vector<std::string> containers_in(const std::string& root) {
    return list_dir(root, true);
}

// Runs every test under each runtime and secret mount backend (the parameter: "crun" or "runc",
// then "-fuse" for FUSE, else tmpfs): on a hybrid host crun runs in a mount namespace without the
// cgroup2 mount, runc as it is.
class RunnerTest : public ::testing::TestWithParam<std::string> {
  protected:
    void SetUp() override {
        store = std::make_unique<ImageStore>(images_dir->path() + "/store");
        RunnerOptions o;
        o.run_dir = run.path() + "/run";
        o.data_dir = data.path() + "/data";
        o.runtime = runtime();
        o.secret_mount = fuse() ? SecretBackend::fuse : SecretBackend::tmpfs;
        runner = std::make_unique<Runner>(o, *store);
        ASSERT_EQ(runner->runtime_name(), runtime());
    }
    static std::string runtime() { return GetParam().substr(0, GetParam().find('-')); }
    static bool fuse() { return GetParam().ends_with("-fuse"); }
    void TearDown() override { runner.reset(); }

    // A task id unique across tests (cgroups are host-wide).
    static std::string id(std::string_view what) {
        return fmt::format("{}-{}", what, crypto::random_base36(4, 6));
    }

    TaskSpec shell(std::string_view what, std::string script, std::string image = "busybox") {
        TaskSpec s;
        s.id = id(what);
        s.image = std::move(image);
        s.args = {"sh", "-c", std::move(script)};
        return s;
    }

    static SecretBytes bytes(std::initializer_list<std::pair<std::string, std::string>> list) {
        SecretBytes b;
        for (auto& [k, v] : list) b.emplace(k, crypto::SecureBuffer::copy_of(v));
        return b;
    }

    TaskStatus run_to_end(const TaskSpec& spec, SecretBytes secrets = {}) {
        auto st = runner->start(spec, std::move(secrets));
        if (st.state != TaskState::running) return st;
        auto done = runner->wait(spec.id, 60s);
        EXPECT_TRUE(done) << "task did not end";
        return done.value_or(st);
    }

    std::string output(const TaskSpec& spec) { return read_file(runner->log_path(spec.id)); }

    // What teardown must leave: no mount, no cgroup, no bundle, no container, no secret bytes.
    void expect_nothing_left(const std::string& task_id) {
        EXPECT_TRUE(mounts_under(run.path()).empty());
        EXPECT_TRUE(mounts_under(data.path()).empty());
        for (auto& m : read_mountinfo("1")) EXPECT_NE(m.source, "coffer-secrets") << m.mount_point;
        for (auto& m : read_mountinfo("self"))
            EXPECT_FALSE(m.mount_point.starts_with(run.path())) << m.mount_point;
        for (auto& h : {"memory", "pids", "cpu", "unified", ""}) {
            auto p = fmt::format("/sys/fs/cgroup/{}{}/{}", h,
                                 Runner::cgroup_parent(run.path() + "/run"), task_id);
            EXPECT_FALSE(exists(p)) << p;
        }
        EXPECT_FALSE(exists(run.path() + "/run/tasks/" + task_id));
        EXPECT_FALSE(exists(data.path() + "/data/tasks/" + task_id));
        EXPECT_TRUE(containers_in(run.path() + "/run/runtime").empty());
        EXPECT_EQ(runner->secrets_held(), 0u);
        EXPECT_EQ(zombie_children(), std::vector<int>{});  // nothing the runtime left of itself
    }

    TempDir run, data;
    std::unique_ptr<ImageStore> store;
    std::unique_ptr<Runner> runner;
};

TEST_P(RunnerTest, SecretFilesHaveTheirBytesModesOwnersAndPaths) {
    auto spec =
        shell("files",
              "cd /run/secrets && stat -c '%n %a %u %g %s' db_pass sub/nested /etc/app/key.pem; "
              "cat db_pass; echo; cat sub/nested; echo; cat /etc/app/key.pem; echo; "
              "stat -c '%a %u' /run/secrets; mount | grep -c coffer-secrets");
    spec.secrets = {secret("s1", "db_pass", "", 1000, 1001, 0400),
                    secret("s1", "db_pass_again", "./sub/nested", 7, 8, 0440),
                    secret("s2", "tls", "/etc/app/key.pem", 0, 0, 0444)};
    auto st = run_to_end(spec, bytes({{"s1", "hunter2"}, {"s2", "-----KEY-----"}}));
    ASSERT_EQ(st.state, TaskState::complete) << st.reason << "\n" << output(spec);
    EXPECT_EQ(output(spec),
              "db_pass 400 1000 1001 7\n"
              "sub/nested 440 7 8 7\n"
              "/etc/app/key.pem 444 0 0 13\n"
              "hunter2\nhunter2\n-----KEY-----\n"
              "755 0\n"
              "2\n");
    expect_nothing_left(spec.id);
}

// A runner that ends takes its cgroup parent (/coffer/<hash of its run directory>) with it, in
// every hierarchy, including while a task still runs.
TEST_P(RunnerTest, LeavesNoCgroupParentBehind) {
    auto spec = shell("parent", "sleep 600");
    ASSERT_EQ(runner->start(spec, {}).state, TaskState::running);
    auto parent = Runner::cgroup_parent(run.path() + "/run");
    EXPECT_TRUE(exists("/sys/fs/cgroup/pids" + parent) || exists("/sys/fs/cgroup" + parent));
    runner.reset();
    for (auto& h : {"memory", "pids", "cpu", "unified", ""}) {
        auto p = fmt::format("/sys/fs/cgroup/{}{}", h, parent);
        EXPECT_FALSE(exists(p)) << p;
    }
}

TEST_P(RunnerTest, ContainerCannotChangeItsSecrets) {
    auto spec =
        shell("readonly",
              "echo x > /run/secrets/db_pass && exit 10; touch /run/secrets/new && exit 11; "
              "rm /run/secrets/db_pass && exit 12; chmod 777 /run/secrets/db_pass && exit 13; "
              "mount -o remount,rw /run/secrets && exit 14; umount /run/secrets && exit 15; "
              "cat /run/secrets/db_pass");
    spec.secrets = {secret("s1", "db_pass")};
    auto st = run_to_end(spec, bytes({{"s1", "hunter2"}}));
    EXPECT_EQ(st.state, TaskState::complete) << st.reason << "\n" << output(spec);
    EXPECT_NE(output(spec).find("hunter2"), std::string::npos);
}

TEST_P(RunnerTest, ContainerProcessHoldsNoAgentDescriptor) {
    // Looked at from outside: a shell would hold pipe ends and saved fds of its own.
    auto spec = shell("fds", "exec sleep 600");
    auto st = runner->start(spec, {});
    ASSERT_EQ(st.state, TaskState::running) << st.reason;
    // The runtime returns once the init was released; it then executes the task's command, which
    // closes the runtime's own (close-on-exec) descriptors. Wait for that exec.
    auto until = std::chrono::steady_clock::now() + 10s;
    while (read_file(fmt::format("/proc/{}/comm", st.pid)) != "sleep\n" &&
           std::chrono::steady_clock::now() < until)
        std::this_thread::yield();
    ASSERT_EQ(read_file(fmt::format("/proc/{}/comm", st.pid)), "sleep\n");
    std::vector<std::string> fds = list_dir(fmt::format("/proc/{}/fd", st.pid));
    std::sort(fds.begin(), fds.end());
    EXPECT_EQ(fds, (std::vector<std::string>{"0", "1", "2"}));
    ASSERT_TRUE(runner->stop(spec.id, 0ms));
}

TEST_P(RunnerTest, ContainerSeesOnlyItsOwnProcesses) {
    auto spec =
        shell("procs",
              "ls /proc | grep -c '^[0-9]'; "
              "grep -E '^(NoNewPrivs|Seccomp):' /proc/1/status | tr -s '\\t' ' '; hostname");
    spec.hostname = "box";
    auto st = run_to_end(spec);
    ASSERT_EQ(st.state, TaskState::complete) << st.reason;
    // sh, ls and grep at most; no_new_privs and a seccomp filter.
    auto out = output(spec);
    int count = std::stoi(out);
    EXPECT_LE(count, 3) << out;
    EXPECT_NE(out.find("NoNewPrivs: 1"), std::string::npos) << out;
    EXPECT_NE(out.find("Seccomp: 2"), std::string::npos) << out;
    EXPECT_NE(out.find("box\n"), std::string::npos) << out;
}

TEST_P(RunnerTest, TaskUserEnvWorkdirAndCapabilities) {
    auto spec =
        shell("ident",
              "id -u; id -g; pwd; echo $GREETING; touch /tmp/f; chown 5 /tmp/f && echo chown ok; "
              "grep CapEff /proc/self/status");
    spec.user = "0:0";
    spec.env = {"GREETING=hello"};
    spec.workdir = "/tmp";
    spec.cap_drop = {"CHOWN"};
    auto st = run_to_end(spec);
    ASSERT_EQ(st.state, TaskState::complete) << st.reason;
    auto out = output(spec);
    EXPECT_TRUE(out.starts_with("0\n0\n/tmp\nhello\n")) << out;
    EXPECT_EQ(out.find("chown ok"), std::string::npos) << out;

    auto user = shell("user", "id -u; id -g");
    user.user = "1000:1000";
    st = run_to_end(user);
    ASSERT_EQ(st.state, TaskState::complete) << st.reason;
    EXPECT_EQ(output(user), "1000\n1000\n");
}

TEST_P(RunnerTest, KilledAtItsMemoryLimit) {
    auto spec = shell("oom", "tail /dev/zero");
    spec.limits.memory_bytes = 16 << 20;
    auto st = run_to_end(spec);
    EXPECT_EQ(st.state, TaskState::failed);
    EXPECT_TRUE(st.oom_killed) << st.reason;
    EXPECT_NE(st.reason.find("OOM"), std::string::npos) << st.reason;
    expect_nothing_left(spec.id);
}

// The limit leaves room for runc's own init (a Go program with a few threads, in the task's cgroup
// until it executes the task's process): with 5, runc init itself sometimes failed to start.
TEST_P(RunnerTest, CannotForkPastItsPidsLimit) {
    auto spec = shell("pids", "for i in $(seq 1 40); do sleep 60 & done; echo forked");
    spec.limits.pids = 16;
    auto st = run_to_end(spec);
    auto out = output(spec);
    EXPECT_NE(out.find("can't fork"), std::string::npos) << out;
    expect_nothing_left(spec.id);
}

TEST_P(RunnerTest, ReadOnlyRootfs) {
    auto spec = shell("rofs", "touch /newfile && exit 10; cat /run/secrets/s; echo; exit 0");
    spec.read_only_rootfs = true;
    spec.secrets = {secret("s1", "s")};
    auto st = run_to_end(spec, bytes({{"s1", "v"}}));
    EXPECT_EQ(st.state, TaskState::complete) << st.reason << output(spec);
    EXPECT_NE(output(spec).find("Read-only file system"), std::string::npos) << output(spec);
}

// Runs script in a hostile image with the secret db_pass; the host path a naive agent would have
// mounted over (following the image's symlink on the host) must stay untouched.
#define EXPECT_SECRETS_STAY_INSIDE(image, script, expected, host_path)                 \
    do {                                                                               \
        auto spec = shell(image, script, image);                                       \
        spec.secrets = {secret("s1", "db_pass")};                                      \
        auto st = run_to_end(spec, bytes({{"s1", "hunter2"}}));                        \
        ASSERT_EQ(st.state, TaskState::complete) << st.reason << output(spec);         \
        EXPECT_EQ(output(spec), expected);                                             \
        EXPECT_FALSE(exists(std::string(host_path) + "/db_pass"));                     \
        for (auto* table : {"self", "1"})                                              \
            for (auto& m : read_mountinfo(table)) EXPECT_NE(m.mount_point, host_path); \
        expect_nothing_left(spec.id);                                                  \
    } while (false)

// /run -> / in the image: a mount following the link on the host would land on the host's /.
TEST_P(RunnerTest, HostileRunSymlinkStaysInsideTheRootfs) {
    EXPECT_SECRETS_STAY_INSIDE("hostile-run", "cat /run/secrets/db_pass; echo; readlink /run",
                               "hunter2\n/\n", "/secrets");
}

// /run/secrets -> /etc in the image: the secrets land on the container's /etc, not the host's.
TEST_P(RunnerTest, HostileSecretsSymlinkStaysInsideTheRootfs) {
    EXPECT_SECRETS_STAY_INSIDE("hostile-secrets",
                               "cat /run/secrets/db_pass; echo; cat /etc/db_pass",
                               "hunter2\nhunter2", "/etc");
}

// An image that turned a path the runtime mounts on or creates in (/dev, /proc, /sys, /dev/shm,
// /etc/hosts) into a link is refused before the runtime runs, with the path named in the status.
// crun 1.8.1 follows an image's /dev -> / to the host's / and makes /null, /zero, /tty... there.
TEST_P(RunnerTest, ImageWithRuntimePathsTurnedIntoLinksIsRefused) {
    struct Case {
        const char* image;
        const char* path;
    } cases[] = {
        {"hostile-dev", "/dev"}, {"hostile-dev-parent", "/dev"}, {"hostile-proc", "/proc"},
        {"hostile-sys", "/sys"}, {"hostile-shm", "/dev/shm"},    {"hostile-hosts", "/etc/hosts"},
    };
    for (const auto& c : cases) {
        auto host_root = list_dir("/");
        std::sort(host_root.begin(), host_root.end());
        auto spec = shell(c.image, "echo ran", c.image);
        spec.secrets = {secret("s1", "db_pass")};
        auto st = run_to_end(spec, bytes({{"s1", "hunter2"}}));
        EXPECT_EQ(st.state, TaskState::rejected) << c.image << ": " << st.reason;
        EXPECT_EQ(st.reason,
                  fmt::format("image rootfs: {} is a symbolic link; refusing to run", c.path));
        auto now = list_dir("/");
        std::sort(now.begin(), now.end());
        EXPECT_EQ(now, host_root) << c.image << " left something in the host's /";
        expect_nothing_left(spec.id);
    }
}

// Docker's seccomp rules: no user or mount namespace, no mount and no keyring in a task with the
// default capabilities, even through a user namespace of its own.
// What a task tries, one line each: namespaces, mounts, and the keyring calls.
constexpr const char* namespace_probe =
    "unshare -U true 2>/dev/null && echo 'unshare -U ok' || echo 'unshare -U denied'; "
    "unshare -m true 2>/dev/null && echo 'unshare -m ok' || echo 'unshare -m denied'; "
    "unshare -Urm mount -t tmpfs t /tmp 2>/dev/null && echo 'unshare -Urm mount ok' "
    "|| echo 'unshare -Urm mount denied'; "
    "mount -t tmpfs t /tmp 2>/dev/null && echo 'mount ok' || echo 'mount denied'; "
    "syscall-probe clone_newuser keyctl add_key request_key";

TEST_P(RunnerTest, DefaultTaskCannotMakeNamespacesMountOrUseKeys) {
    auto spec = shell("nons", namespace_probe);
    auto st = run_to_end(spec);
    ASSERT_EQ(st.state, TaskState::complete) << st.reason << "\n" << output(spec);
    EXPECT_EQ(output(spec),
              "unshare -U denied\n"
              "unshare -m denied\n"
              "unshare -Urm mount denied\n"
              "mount denied\n"
              "clone_newuser errno 1\n"
              "keyctl errno 1\n"
              "add_key errno 1\n"
              "request_key errno 1\n");
    expect_nothing_left(spec.id);
}

// With CAP_SYS_ADMIN the same rules allow namespaces and mounts, as Docker's do, and still no
// keyring call: Docker's profile allows none of them for any capability.
TEST_P(RunnerTest, SysAdminTaskMayMakeNamespacesAndMountButNotUseKeys) {
    auto spec = shell("admin", namespace_probe);
    spec.cap_add = {"SYS_ADMIN"};
    auto st = run_to_end(spec);
    ASSERT_EQ(st.state, TaskState::complete) << st.reason << "\n" << output(spec);
    EXPECT_EQ(output(spec),
              "unshare -U ok\n"
              "unshare -m ok\n"
              "unshare -Urm mount ok\n"
              "mount ok\n"
              "clone_newuser ok\n"
              "keyctl errno 1\n"
              "add_key errno 1\n"
              "request_key errno 1\n");
    expect_nothing_left(spec.id);
}

TEST_P(RunnerTest, SecretMountShowsInTheAgentButNeverOnTheHost) {
    auto spec = shell("visible", "exec sleep 600");
    spec.secrets = {secret("s1", "db_pass")};
    auto st = runner->start(spec, bytes({{"s1", "hunter2"}}));
    ASSERT_EQ(st.state, TaskState::running) << st.reason;
    auto ours = mounts_under(run.path());
    EXPECT_GE(ours.size(), 2u);  // rootfs overlay and the secrets tmpfs
    bool secrets_mounted = false;
    for (auto& m : read_mountinfo("self")) secrets_mounted |= m.source == "coffer-secrets";
    EXPECT_TRUE(secrets_mounted);
    for (auto& m : read_mountinfo("1")) {
        EXPECT_NE(m.source, "coffer-secrets") << m.mount_point;
        EXPECT_FALSE(m.mount_point.starts_with(run.path())) << m.mount_point;
    }
    EXPECT_EQ(runner->secrets_held(), 1u);
    auto stopped = runner->stop(spec.id, 200ms);
    ASSERT_TRUE(stopped);
    EXPECT_EQ(stopped->state, TaskState::shutdown);
    expect_nothing_left(spec.id);
}

// A FUSE mount counts what the task read of each secret (all its files of it together), while it
// runs and in its final status; a tmpfs counts nothing.
TEST_P(RunnerTest, SecretReadsAreCountedOnFuse) {
    auto spec = shell("reads",
                      "cat /run/secrets/db_pass /etc/app/key.pem /run/secrets/db_pass >/dev/null; "
                      "cat /run/secrets/other >/dev/null; echo read; exec sleep 600");
    spec.secrets = {secret("s1", "db_pass"), secret("s1", "again", "/etc/app/key.pem"),
                    secret("s2", "other")};
    auto before = std::chrono::duration_cast<std::chrono::nanoseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
    auto st = runner->start(spec, bytes({{"s1", "hunter2"}, {"s2", "x"}}));
    ASSERT_EQ(st.state, TaskState::running) << st.reason;
    ASSERT_TRUE(
        coffer::test::wait_until([&] { return output(spec).find("read\n") != std::string::npos; }));
    auto live = runner->status(spec.id);
    ASSERT_TRUE(live);
    auto stopped = runner->stop(spec.id, 0ms);
    ASSERT_TRUE(stopped);
    if (!fuse()) {
        EXPECT_TRUE(live->secret_reads.empty());
        EXPECT_TRUE(stopped->secret_reads.empty());
        return;
    }
    for (const auto* s : {&*live, &*stopped}) {
        ASSERT_EQ(s->secret_reads.size(), 2u);
        const auto& s1 = s->secret_reads[0];
        const auto& s2 = s->secret_reads[1];
        EXPECT_EQ(s1.secret_id, "s1");
        EXPECT_EQ(s1.opens, 3u);
        EXPECT_GE(s1.reads, 3u);
        EXPECT_GE(s1.first_read_ns, before);
        EXPECT_GE(s1.last_read_ns, s1.first_read_ns);
        EXPECT_EQ(s2.secret_id, "s2");
        EXPECT_EQ(s2.opens, 1u);
        EXPECT_GE(s2.reads, 1u);
    }
    EXPECT_EQ(live->secret_reads, stopped->secret_reads);  // nothing read after "read"
    expect_nothing_left(spec.id);
}

// A live update replaces the files in the running task: under /run/secrets on either backend, and
// at an absolute target on FUSE (its inode stays), which a tmpfs refuses (a bind pins the old
// file) without changing anything.
TEST_P(RunnerTest, LiveUpdateReplacesTheTasksFiles) {
    auto spec = shell("live", "exec sleep 600");
    spec.secrets = {secret("s1", "db_pass"), secret("s2", "tls", "/etc/app/key.pem")};
    auto st = runner->start(spec, bytes({{"s1", "old-pass"}, {"s2", "old-key"}}));
    ASSERT_EQ(st.state, TaskState::running) << st.reason;
    auto root = fmt::format("/proc/{}/root", st.pid);
    EXPECT_EQ(read_file(root + "/run/secrets/db_pass"), "old-pass");

    auto& held = runner->secrets();
    auto l1 = held.put("s1@2", crypto::SecureBuffer::copy_of("new-pass"));
    auto l2 = held.put("s2@2", crypto::SecureBuffer::copy_of("new-key"));
    auto lease = held.lease({"s1@2", "s2"});
    ASSERT_TRUE(lease);
    // Under /run/secrets only: both backends.
    ASSERT_TRUE(runner->update_secrets(
        spec.id, {secret("s1@2", "db_pass"), secret("s2", "tls", "/etc/app/key.pem")},
        std::move(*lease), 0));
    EXPECT_EQ(read_file(root + "/run/secrets/db_pass"), "new-pass");
    EXPECT_EQ(read_file(root + "/etc/app/key.pem"), "old-key");

    auto both = held.lease({"s1@2", "s2@2"});
    ASSERT_TRUE(both);
    auto moved = runner->update_secrets(
        spec.id, {secret("s1@2", "db_pass"), secret("s2@2", "tls", "/etc/app/key.pem")},
        std::move(*both), 0);
    if (fuse()) {
        ASSERT_TRUE(moved) << moved.error().message;
        EXPECT_EQ(read_file(root + "/etc/app/key.pem"), "new-key");
    } else {
        ASSERT_FALSE(moved);
        EXPECT_NE(moved.error().message.find("outside /run/secrets"), std::string::npos)
            << moved.error().message;
        EXPECT_EQ(read_file(root + "/etc/app/key.pem"), "old-key");
    }
    EXPECT_EQ(read_file(root + "/run/secrets/db_pass"), "new-pass");
    // On FUSE each read counts for the version it read.
    if (fuse()) {
        std::map<std::string, std::uint64_t> reads;
        auto now = runner->status(spec.id);
        ASSERT_TRUE(now);
        for (const auto& r : now->secret_reads) reads[r.secret_id] = r.reads;
        EXPECT_EQ(reads, (std::map<std::string, std::uint64_t>{
                             {"s1", 1}, {"s1@2", 2}, {"s2", 1}, {"s2@2", 1}}));
    }
    ASSERT_TRUE(runner->stop(spec.id, 0ms));
    l1.reset();
    l2.reset();
    expect_nothing_left(spec.id);
}

TEST_P(RunnerTest, StopEscalatesToKillAfterGrace) {
    auto spec = shell("stubborn", "trap '' TERM; echo ready; while true; do sleep 1; done");
    ASSERT_EQ(runner->start(spec, {}).state, TaskState::running);
    auto t0 = std::chrono::steady_clock::now();
    auto stopped = runner->stop(spec.id, 300ms);
    ASSERT_TRUE(stopped);
    EXPECT_EQ(stopped->state, TaskState::shutdown);
    EXPECT_EQ(stopped->exit_code, 128 + SIGKILL);
    EXPECT_GE(std::chrono::steady_clock::now() - t0, 300ms);
    expect_nothing_left(spec.id);
}

// A process of the task's PID namespace whose parent outside it ended first (what a runtime's
// exec killed midway leaves) is inherited by the agent, a subreaper. Once the task's init is
// killed the kernel ends it too, but holds the init's own end until it is reaped, which only the
// agent can do: the stop still completes, and nothing is left.
TEST_P(RunnerTest, AnOrphanInTheTasksNamespaceDoesNotHoldItsEnd) {
    auto spec = shell("orphan", "exec sleep 100000");
    auto st = runner->start(spec, {});
    ASSERT_EQ(st.state, TaskState::running) << st.reason;
    // nsenter forks into the namespace and waits for its child: killed, it leaves that child.
    auto entering = Child::spawn({.argv = {"nsenter", "--target", std::to_string(st.pid), "--pid",
                                           "--", "sleep", "100000"}});
    int orphan = 0;
    ASSERT_TRUE(test::wait_until([&] {
        std::ifstream in(fmt::format("/proc/{0}/task/{0}/children", entering.pid()));
        return static_cast<bool>(in >> orphan);
    }));
    entering.signal(SIGKILL);
    entering.wait();
    ASSERT_TRUE(test::wait_until([&] {
        auto stat = process_stat(orphan);
        return stat && stat->parent == ::getpid();
    }));
    auto stopped = runner->stop(spec.id, 300ms);
    ASSERT_TRUE(stopped) << stopped.error().message;
    EXPECT_EQ(stopped->state, TaskState::shutdown);
    EXPECT_FALSE(process_stat(orphan)) << "the orphan was reaped";
    expect_nothing_left(spec.id);
}

// The task's stop signal goes first (the task sees it), SIGKILL once the grace period passed.
TEST_P(RunnerTest, StopSendsTheTasksStopSignalThenKillsAfterGrace) {
    auto spec =
        shell("usr1", "trap 'echo got-usr1' USR1; echo ready; while true; do sleep 1; done");
    spec.stop_signal = "SIGUSR1";
    ASSERT_EQ(runner->start(spec, {}).state, TaskState::running);
    ASSERT_TRUE(coffer::test::wait_until(
        [&] { return output(spec).find("ready\n") != std::string::npos; }));
    auto stopped = runner->stop(spec.id, 5s);
    ASSERT_TRUE(stopped);
    EXPECT_EQ(stopped->state, TaskState::shutdown);
    EXPECT_EQ(stopped->exit_code, 128 + SIGKILL);
    EXPECT_NE(output(spec).find("got-usr1\n"), std::string::npos) << output(spec);
    expect_nothing_left(spec.id);
}

TEST_P(RunnerTest, SharedSecretIsFreedWithItsLastTask) {
    auto a = shell("share-a", "exec sleep 600");
    auto b = shell("share-b", "exec sleep 600");
    a.secrets = b.secrets = {secret("s1", "db_pass")};
    ASSERT_EQ(runner->start(a, bytes({{"s1", "hunter2"}})).state, TaskState::running);
    // b gets the bytes from the runner's memory: the same secret, held once.
    ASSERT_EQ(runner->start(b, {}).state, TaskState::running);
    EXPECT_EQ(runner->secrets_held(), 1u);
    ASSERT_TRUE(runner->stop(a.id, 200ms));
    EXPECT_EQ(runner->secrets_held(), 1u);
    ASSERT_TRUE(runner->stop(b.id, 200ms));
    EXPECT_EQ(runner->secrets_held(), 0u);
}

TEST_P(RunnerTest, RefusesBadTargetsBeforeAnythingRuns) {
    struct Case {
        std::vector<SecretRef> refs;
    } cases[] = {
        {{secret("s1", "x", "../escape")}},
        {{secret("s1", "")}},
        {{secret("s1", "a"), secret("s1", "b", "./a")}},
        {{secret("s1", "a", "/proc/x")}},
        {{secret("s1", "a", "/")}},
        {{secret("s2", "missing-bytes")}},
    };
    for (auto& c : cases) {
        auto spec = shell("bad", "true");
        spec.secrets = c.refs;
        auto st = runner->start(spec, bytes({{"s1", "v"}}));
        EXPECT_EQ(st.state, TaskState::rejected);
        EXPECT_FALSE(st.reason.empty());
        expect_nothing_left(spec.id);
    }
    auto unknown = shell("noimage", "true", "no-such-image");
    EXPECT_EQ(runner->start(unknown, {}).state, TaskState::rejected);
}

TEST_P(RunnerTest, ExitCodeAndStartFailureAreReported) {
    auto exit3 = shell("exit", "exit 3");
    auto st = run_to_end(exit3);
    EXPECT_EQ(st.state, TaskState::failed);
    EXPECT_EQ(st.exit_code, 3);

    TaskSpec missing = shell("nocmd", "");
    missing.args = {"/no/such/binary"};
    st = runner->start(missing, {});
    EXPECT_EQ(st.state, TaskState::failed);
    std::string reason = st.reason;
    std::transform(reason.begin(), reason.end(), reason.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    EXPECT_NE(reason.find("no such file"), std::string::npos) << st.reason;
    expect_nothing_left(missing.id);
}

// Reads one line from fd before the deadline.
std::string read_line(int fd, std::chrono::milliseconds deadline) {
    std::string line;
    auto until = std::chrono::steady_clock::now() + deadline;
    char c;
    while (std::chrono::steady_clock::now() < until) {
        struct pollfd p {
            fd, POLLIN, 0
        };
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            until - std::chrono::steady_clock::now());
        if (::poll(&p, 1, static_cast<int>(std::max<long>(left.count(), 0))) <= 0) break;
        if (::read(fd, &c, 1) != 1) break;
        if (c == '\n') return line;
        line.push_back(c);
    }
    return line;
}

// The parameter: the agent's secret mount backend.
class AgentRestart : public ::testing::TestWithParam<std::string> {};

TEST_P(AgentRestart, CleansWhatAKilledAgentLeft) {
    TempDir run, data, secret_dir;
    std::string secret_file = secret_dir.path() + "/s";
    { std::ofstream(secret_file) << "hunter2"; }
    std::string spec_file = secret_dir.path() + "/spec.json";
    std::string task_id = fmt::format("crash-{}", crypto::random_base36(4, 6));
    {
        std::ofstream(spec_file) << fmt::format(
            R"({{"id":"{}","image":"busybox","args":["sleep","600"],"limits":{{"pids":16}},)"
            R"("secrets":[{{"secret_id":"s1","name":"db_pass"}}],"secret_mount":"{}"}})",
            task_id, GetParam());
    }
    // The image store lives in the data directory: import the test images there.
    ImageStore store(data.path() + "/images");
    ASSERT_TRUE(store.import(images_dir->path() + "/layout", "busybox:latest"));

    int p[2];
    ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
    UniqueFd out_r(p[0]), out_w(p[1]);
    Child::Options o;
    o.argv = {env_or("COFFER_AGENT", "coffer-agent"),
              "--data-dir",
              data.path(),
              "--run-dir",
              run.path(),
              "--log-level",
              "warn",
              "run",
              "--spec",
              spec_file,
              "--secret",
              "s1=" + secret_file};
    o.stdout_fd = out_w.get();
    Child agent = Child::spawn(o);
    out_w.reset();
    auto line = read_line(out_r.get(), 30s);
    ASSERT_NE(line.find("\"running\""), std::string::npos) << line;
    auto pid_at = line.find("\"pid\":");
    ASSERT_NE(pid_at, std::string::npos) << line;
    int pid = std::atoi(line.c_str() + pid_at + 6);
    auto secret_path = fmt::format("/proc/{}/root/run/secrets/db_pass", pid);
    EXPECT_EQ(read_file(secret_path), "hunter2");

    agent.signal(SIGKILL);
    agent.wait();

    // Nothing waits on a mount whose server is gone: a reader in the task gets an error at once
    // (FUSE: the connection ended with the agent's descriptor), or the bytes from the tmpfs.
    UniqueFd null(::open("/dev/null", O_WRONLY | O_CLOEXEC));
    Child::Options reader_options;
    reader_options.argv = {"timeout", "10", "cat", secret_path};
    reader_options.stdout_fd = null.get();
    auto reader = Child::spawn(reader_options);
    auto reader_status = reader.wait();
    ASSERT_TRUE(WIFEXITED(reader_status));
    EXPECT_NE(WEXITSTATUS(reader_status), 124) << "a reader hung on the killed agent's mount";
    EXPECT_EQ(WEXITSTATUS(reader_status) == 0, GetParam() == "tmpfs");

    // The killed agent's container, cgroup, bundle and layer are still there.
    EXPECT_EQ(containers_in(run.path() + "/runtime"), std::vector<std::string>{task_id});
    EXPECT_TRUE(exists(run.path() + "/tasks/" + task_id));
    EXPECT_TRUE(exists(
        fmt::format("/sys/fs/cgroup/pids{}/{}", Runner::cgroup_parent(run.path()), task_id)));

    {
        RunnerOptions ro;
        ro.run_dir = run.path();
        ro.data_dir = data.path();
        Runner restarted(ro, store);
        auto left = restarted.recover_leftovers();
        EXPECT_EQ(left.containers, 1);
        EXPECT_EQ(left.task_dirs, 1);
        EXPECT_GE(left.cgroups, 0);
    }
    EXPECT_TRUE(containers_in(run.path() + "/runtime").empty());
    EXPECT_FALSE(exists(run.path() + "/tasks/" + task_id));
    EXPECT_FALSE(exists(data.path() + "/tasks/" + task_id));
    for (auto& h : {"memory", "pids", "cpu", "unified", ""})
        EXPECT_FALSE(exists(
            fmt::format("/sys/fs/cgroup/{}{}/{}", h, Runner::cgroup_parent(run.path()), task_id)));
    for (auto& m : read_mountinfo("1")) EXPECT_NE(m.source, "coffer-secrets") << m.mount_point;
    for (auto& m : read_mountinfo("self")) EXPECT_NE(m.source, "coffer-secrets") << m.mount_point;
    EXPECT_TRUE(mounts_under(run.path()).empty());
}

INSTANTIATE_TEST_SUITE_P(SecretMounts, AgentRestart, ::testing::Values("tmpfs", "fuse"),
                         [](const auto& p) { return p.param; });

// The filter the agent compiles for crun is the one crun compiles itself, byte for byte, for the
// default profile (Docker's rules) with the default capabilities and with capabilities that change
// its rules.
TEST(SeccompProgram, IsTheOneCrunCompilesItself) {
    ImageStore store(images_dir->path() + "/store");
    TempDir run, data;
    RunnerOptions o;
    o.run_dir = run.path() + "/run";
    o.data_dir = data.path() + "/data";
    o.runtime = "crun";
    o.compile_seccomp = false;  // crun compiles: the reference
    Runner runner(o, store);
    auto profile = default_seccomp_profile();
    struct Caps {
        std::vector<std::string> add, drop;
    };
    for (const auto& c :
         {Caps{}, Caps{{"SYS_ADMIN", "SYS_PTRACE", "SYS_BOOT"}, {}}, Caps{{}, {"ALL"}}}) {
        TaskSpec spec;
        spec.id = fmt::format("bpf-{}", crypto::random_base36(4, 6));
        spec.image = "busybox";
        spec.args = {"sleep", "600"};
        spec.cap_add = c.add;
        spec.cap_drop = c.drop;
        auto st = runner.start(spec, {});
        ASSERT_EQ(st.state, TaskState::running) << st.reason;
        auto theirs = read_file(fmt::format("{}/runtime/{}/seccomp.bpf", o.run_dir, spec.id));
        ASSERT_TRUE(runner.stop(spec.id, 0ms));

        auto caps = task_capabilities(c.add, c.drop);
        ASSERT_TRUE(caps);
        auto ours = compile_seccomp_bpf(seccomp_for(profile, *caps).as_object());
        ASSERT_TRUE(ours) << ours.error().message;
        EXPECT_GT(theirs.size(), 1000u);
        EXPECT_TRUE(*ours == theirs)
            << "ours " << ours->size() << " bytes, crun's " << theirs.size();
    }

    // By default crun gets it compiled, in the task's config.
    o.compile_seccomp = true;
    TempDir run2;
    o.run_dir = run2.path() + "/run";
    Runner compiling(o, store);
    TaskSpec spec;
    spec.id = fmt::format("bpf-{}", crypto::random_base36(4, 6));
    spec.image = "busybox";
    spec.args = {"sleep", "600"};
    auto st = compiling.start(spec, {});
    ASSERT_EQ(st.state, TaskState::running) << st.reason;
    auto config =
        boost::json::parse(read_file(fmt::format("{}/tasks/{}/config.json", o.run_dir, spec.id)));
    ASSERT_TRUE(compiling.stop(spec.id, 0ms));
    auto* annotation =
        config.as_object().at("annotations").as_object().if_contains("run.oci.seccomp_bpf_data");
    ASSERT_NE(annotation, nullptr);
    auto decoded = crypto::base64_decode_secure(annotation->as_string());
    ASSERT_TRUE(decoded);
    auto ours = compile_seccomp_bpf(config.as_object().at("linux").at("seccomp").as_object());
    ASSERT_TRUE(ours);
    EXPECT_TRUE(std::string_view(reinterpret_cast<const char*>(decoded->data()), decoded->size()) ==
                *ours);
}

// ---- health checks, through the runtime's exec

namespace {

HealthCheck shell_check(std::string command, std::int64_t retries) {
    HealthCheck h;
    h.test = {"CMD-SHELL", std::move(command)};
    h.interval_ns = 50'000'000;
    h.start_interval_ns = 50'000'000;
    h.retries = retries;
    return h;
}

// Runs a command in the mount namespace of the task's container (the image's busybox).
bool in_container(int pid, std::vector<std::string> command) {
    std::vector<std::string> argv{"nsenter", "-t", std::to_string(pid), "-m", "--"};
    argv.insert(argv.end(), command.begin(), command.end());
    return run_command(argv).ok();
}

}  // namespace

// The probe runs inside the container: a file made there makes it healthy, its removal unhealthy.
// Until healthy the task is starting; unhealthy, it is killed and fails with the probe's output.
TEST_P(RunnerTest, HealthCheckHoldsStartingUntilHealthyAndKillsWhenUnhealthy) {
    auto spec = shell("health", "exec sleep 100000");
    spec.healthcheck = shell_check("test -f /tmp/ok || { echo no ok file; exit 1; }", 2);
    spec.healthcheck->start_period_ns = 3600'000'000'000;  // failures before healthy: not counted
    auto st = runner->start(spec, {});
    ASSERT_EQ(st.state, TaskState::starting) << st.reason;
    EXPECT_EQ(st.health, Health::starting);
    ASSERT_GT(st.pid, 0);

    ASSERT_TRUE(in_container(st.pid, {"touch", "/tmp/ok"}));
    ASSERT_TRUE(test::wait_until(
        [&] {
            auto now = runner->status(spec.id);
            return now && now->state == TaskState::running && now->health == Health::healthy;
        },
        20s));
    EXPECT_EQ(runner->status(spec.id)->pid, st.pid);

    ASSERT_TRUE(in_container(st.pid, {"rm", "/tmp/ok"}));
    auto done = runner->wait(spec.id, 30s);
    ASSERT_TRUE(done);
    EXPECT_EQ(done->state, TaskState::failed);
    EXPECT_EQ(done->reason, "unhealthy container");
    EXPECT_EQ(done->health, Health::unhealthy);
    EXPECT_EQ(done->health_output, "no ok file");
    EXPECT_EQ(done->exit_code, 128 + SIGKILL);
    expect_nothing_left(spec.id);
}

// A probe past its timeout is killed (the runtime's exec returns) and counts as a failure.
TEST_P(RunnerTest, AProbePastItsTimeoutIsKilled) {
    auto spec = shell("slowprobe", "exec sleep 100000");
    spec.healthcheck = shell_check("echo begun; exec sleep 100000", 2);
    spec.healthcheck->timeout_ns = 200'000'000;
    auto st = runner->start(spec, {});
    ASSERT_EQ(st.state, TaskState::starting) << st.reason;
    auto done = runner->wait(spec.id, 30s);
    ASSERT_TRUE(done);
    EXPECT_EQ(done->state, TaskState::failed);
    EXPECT_EQ(done->health_output, "Health check exceeded timeout (200ms)");
    expect_nothing_left(spec.id);
}

// A stop while a probe runs (one that would take an hour) does not wait for the probe: the
// teardown cancels it, and the task ends within the stop's grace and the teardown's deadline.
TEST_P(RunnerTest, AStopDoesNotWaitForAProbeUnderWay) {
    auto spec = shell("stopprobe", "exec sleep 100000");
    spec.healthcheck = shell_check("touch /tmp/probing; exec sleep 100000", 2);
    spec.healthcheck->timeout_ns = 3600'000'000'000;
    auto st = runner->start(spec, {});
    ASSERT_EQ(st.state, TaskState::starting) << st.reason;
    ASSERT_GT(st.pid, 0);
    ASSERT_TRUE(test::wait_until(
        [&] {
            return in_container(st.pid, {"test", "-f", "/tmp/probing"});
        },
        20s));
    auto stopped = runner->stop(spec.id, 1s);
    ASSERT_TRUE(stopped) << stopped.error().message;
    EXPECT_EQ(stopped->state, TaskState::shutdown);
    expect_nothing_left(spec.id);
}

// --no-healthcheck (Test NONE) turns the image's HEALTHCHECK off; without it, it runs.
TEST_P(RunnerTest, TheImagesHealthcheckRunsUnlessTurnedOff) {
    auto checked = shell("imgcheck", "touch /tmp/healthy; exec sleep 100000", "healthcheck");
    auto st = runner->start(checked, {});
    ASSERT_EQ(st.state, TaskState::starting) << st.reason;
    EXPECT_TRUE(test::wait_until(
        [&] {
            auto now = runner->status(checked.id);
            return now && now->state == TaskState::running && now->health == Health::healthy;
        },
        20s));

    auto off = shell("imgoff", "exec sleep 100000", "healthcheck");
    off.healthcheck = HealthCheck{};
    off.healthcheck->test = {"NONE"};
    auto st_off = runner->start(off, {});
    EXPECT_EQ(st_off.state, TaskState::running) << st_off.reason;
    EXPECT_EQ(st_off.health, Health::none);
    for (auto* id : {&checked.id, &off.id}) {
        auto stopped = runner->stop(*id, 1s);
        ASSERT_TRUE(stopped);
        EXPECT_EQ(stopped->state, TaskState::shutdown);
    }
}

INSTANTIATE_TEST_SUITE_P(Runtimes, RunnerTest,
                         ::testing::Values("crun", "runc", "crun-fuse", "runc-fuse"),
                         [](const auto& p) {
                             auto name = p.param;
                             std::replace(name.begin(), name.end(), '-', '_');
                             return name;
                         });

}  // namespace

int main(int argc, char** argv) {
    // Before any thread: the secret mounts of these tests must not reach the host's table.
    enter_private_mount_namespace();
    crypto::init();
    (void)log::configure(env_or("COFFER_LOG", "warn"));
    ::testing::InitGoogleTest(&argc, argv);
    ::testing::AddGlobalTestEnvironment(new ImagesEnvironment);
    int rc = RUN_ALL_TESTS();
    delete images_dir;  // also when the environment's set-up failed half-way
    return rc;
}

TEST(ImageStoreImport, TakesDockerSaveAndOciArchivesAndUnpacksOncePerDigest) {
    // Archives made by skopeo from the busybox layout, as `docker save` and `skopeo copy
    // oci-archive:` would give them.
    TempDir work;
    std::string layout = images_dir->path() + "/layout";
    auto docker_tar = work.path() + "/busybox-docker.tar";
    auto oci_tar = work.path() + "/busybox-oci.tar";
    ASSERT_TRUE(run_command({"skopeo", "copy", "--quiet", "oci:" + layout + ":busybox:latest",
                             "docker-archive:" + docker_tar + ":saved/busybox:1.0"})
                    .ok());
    ASSERT_TRUE(run_command({"skopeo", "copy", "--quiet", "oci:" + layout + ":busybox:latest",
                             "oci-archive:" + oci_tar + ":busybox:oci"})
                    .ok());

    ImageStore store(work.path() + "/store");
    auto from_docker = store.import(docker_tar);
    ASSERT_TRUE(from_docker) << from_docker.error().message;
    ASSERT_EQ(from_docker->size(), 1u);
    EXPECT_EQ((*from_docker)[0].name, "saved/busybox:1.0");
    auto from_oci = store.import(oci_tar, "renamed:2");
    ASSERT_TRUE(from_oci) << from_oci.error().message;
    ASSERT_EQ(from_oci->size(), 1u);
    EXPECT_EQ((*from_oci)[0].name, "renamed:2");

    auto a = store.resolve("saved/busybox:1.0");
    auto b = store.resolve("renamed:2");
    ASSERT_TRUE(a) << a.error().message;
    ASSERT_TRUE(b) << b.error().message;
    EXPECT_TRUE(exists(a->rootfs + "/bin/busybox"));
    // The same image content under two names: one unpacked rootfs.
    if (a->digest == b->digest) {
        EXPECT_EQ(a->rootfs, b->rootfs);
    }

    auto listed = store.list();
    ASSERT_TRUE(listed);
    EXPECT_EQ(listed->size(), 2u);
    ASSERT_TRUE(store.remove("renamed:2"));
    EXPECT_FALSE(store.resolve("renamed:2"));
    EXPECT_TRUE(store.resolve("saved/busybox:1.0"));
    EXPECT_FALSE(store.import(work.path() + "/nonexistent.tar"));
}

// A docker save archive's HEALTHCHECK survives the import (the conversion to an OCI config drops
// it) and is the image's once resolved.
TEST(ImageStoreImport, KeepsTheHealthcheckOfADockerSaveArchive) {
    TempDir work;
    std::string layout = images_dir->path() + "/layout";
    auto tar = work.path() + "/healthcheck-docker.tar";
    ASSERT_TRUE(run_command({"skopeo", "copy", "--quiet", "oci:" + layout + ":healthcheck:latest",
                             "docker-archive:" + tar + ":saved/checked:1"})
                    .ok());
    ImageStore store(work.path() + "/store");
    auto imported = store.import(tar);
    ASSERT_TRUE(imported) << imported.error().message;
    auto image = store.resolve("saved/checked:1");
    ASSERT_TRUE(image) << image.error().message;
    ASSERT_TRUE(image->config.healthcheck);
    EXPECT_EQ(image->config.healthcheck->test,
              (std::vector<std::string>{"CMD-SHELL", "test -f /tmp/healthy"}));
    EXPECT_EQ(image->config.healthcheck->interval_ns, 1'000'000'000);
    EXPECT_EQ(image->config.healthcheck->retries, 2);
    EXPECT_EQ(image->config.healthcheck_error, "");
}
