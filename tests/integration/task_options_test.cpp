// A task's options through the whole cluster (cluster_fixture.h), set with the docker CLI and
// the coffer CLI, and checked inside the task: its user and groups, its init, ulimits, sysctls,
// /etc/hosts, /etc/hostname, /etc/resolv.conf, capabilities, read-only root, and the signal
// that stops it.
#include <fmt/format.h>

#include <boost/json.hpp>

#include "cluster_fixture.h"

using namespace coffer;
using namespace coffer::test;
using namespace std::chrono_literals;
namespace json = boost::json;

namespace {

// What the task prints, one "KEY value" line each, then READY; it ends on SIGUSR1 saying so.
constexpr const char* reporter = R"sh(
echo "ID $(id)"
echo "PID1 $(tr '\0\n' '  ' </proc/1/cmdline)"
echo "NOFILE $(ulimit -Sn) $(ulimit -Hn)"
echo "NPROC $(ulimit -Su)"
echo "FORWARD $(cat /proc/sys/net/ipv4/ip_forward)"
echo "SHMMAX $(cat /proc/sys/kernel/shmmax)"
echo "OOMADJ $(cat /proc/self/oom_score_adj)"
echo "HOSTNAME $(hostname) $(cat /etc/hostname)"
grep -E '^Cap(Eff|Bnd)' /proc/self/status | tr -d '\t' | sed 's/:/ /'
if touch /written 2>/dev/null; then echo "ROOTFS writable"; else echo "ROOTFS read-only"; fi
sed 's/^/HOSTS /' /etc/hosts
sed 's/^/RESOLV /' /etc/resolv.conf
trap 'echo "GOT USR1"; exit 0' USR1
trap 'echo "GOT TERM"; exit 0' TERM
echo READY
sleep 3600 & wait $!
)sh";

bool has_line(const std::string& log, const std::string& line) {
    for (const auto& l : lines_of(log))
        if (l == line) return true;
    return false;
}

class TaskOptions : public ClusterTest {
  protected:
    CliResult docker(const std::vector<std::string>& args) {
        std::vector<std::string> argv{"docker"};
        argv.insert(argv.end(), args.begin(), args.end());
        return run_program(
            argv, "",
            {"DOCKER_HOST=" + daemon_->host(), "DOCKER_CONFIG=" + (dir_.path() / "dc").string()});
    }
    // The log of the service's running task on node-a, once it printed READY.
    std::pair<std::string, std::string> ready_task(const std::string& service) {
        std::string id, log;
        EXPECT_TRUE(wait_until(
            [&] {
                auto r = running(service);
                if (r.empty()) return false;
                id = std::string(r.at(0).at("ID").as_string());
                log = a_->task_log(id);
                return has_line(log, "READY");
            },
            60s))
            << a_->err();
        return {id, log};
    }
};

}  // namespace

TEST_F(TaskOptions, DockerServiceCreateFlagsTakeEffectInsideTheTask) {
    if (!have_docker()) GTEST_SKIP() << "no docker CLI on this machine";
    auto created = docker({"service",
                           "create",
                           "--detach",
                           "--no-resolve-image",
                           "--name",
                           "opts",
                           "--constraint",
                           "node.hostname==node-a",
                           "--user",
                           "app",
                           "--group",
                           "www-data",
                           "--init",
                           "--sysctl",
                           "net.ipv4.ip_forward=1",
                           "--sysctl",
                           "kernel.shmmax=1048576",
                           "--ulimit",
                           "nofile=512:1024",
                           "--host",
                           "db.example:10.9.8.7",
                           "--dns",
                           "9.9.9.9",
                           "--dns-search",
                           "example.org",
                           "--dns-option",
                           "ndots:3",
                           "--hostname",
                           "opts-host",
                           "--cap-drop",
                           "NET_RAW",
                           "--cap-add",
                           "SYS_TIME",
                           "--read-only",
                           "--stop-signal",
                           "SIGUSR1",
                           "--stop-grace-period",
                           "30s",
                           "busybox",
                           "sh",
                           "-c",
                           reporter});
    ASSERT_EQ(created.status, 0) << created.err;
    auto [id, log] = ready_task("opts");
    ASSERT_FALSE(id.empty());

    // --user app (from the image's /etc/passwd) with its groups, and --group www-data.
    EXPECT_TRUE(has_line(log,
                         "ID uid=1000(app) gid=1000(app) groups=29(audio),33(www-data),"
                         "50(staff)"))
        << log;
    // --init: tini is pid 1, the command behind it.
    EXPECT_NE(log.find("PID1 /dev/init -- sh -c"), std::string::npos) << log;
    EXPECT_TRUE(has_line(log, "NOFILE 512 1024")) << log;
    EXPECT_TRUE(has_line(log, "FORWARD 1")) << log;
    EXPECT_TRUE(has_line(log, "SHMMAX 1048576")) << log;
    EXPECT_TRUE(has_line(log, "OOMADJ 0")) << log;  // --oom-score-adj: API 1.46, not 1.41
    EXPECT_TRUE(has_line(log, "HOSTNAME opts-host opts-host")) << log;
    // Docker's defaults without NET_RAW (bit 13), with SYS_TIME (bit 25).
    EXPECT_TRUE(has_line(log, "CapBnd 00000000aa0405fb")) << log;
    EXPECT_TRUE(has_line(log, "ROOTFS read-only")) << log;
    EXPECT_TRUE(has_line(log, "HOSTS 127.0.0.1\tlocalhost")) << log;
    EXPECT_TRUE(has_line(log, "HOSTS 127.0.1.1\topts-host")) << log;
    EXPECT_TRUE(has_line(log, "HOSTS 10.9.8.7\tdb.example")) << log;
    EXPECT_TRUE(has_line(log, "RESOLV nameserver 9.9.9.9")) << log;
    EXPECT_TRUE(has_line(log, "RESOLV search example.org")) << log;
    EXPECT_TRUE(has_line(log, "RESOLV options ndots:3")) << log;

    // The task's files are in its bundle, and go with it.
    auto bundle = a_->run / "tasks" / id;
    EXPECT_TRUE(std::filesystem::exists(bundle / "resolv.conf"));

    // --stop-signal: removing the service stops the task with SIGUSR1 (tini passes it on).
    ASSERT_EQ(docker({"service", "rm", "opts"}).status, 0);
    EXPECT_TRUE(wait_until([&] { return has_line(a_->task_log(id), "GOT USR1"); }, 30s))
        << a_->task_log(id);
    EXPECT_FALSE(has_line(a_->task_log(id), "GOT TERM"));
    EXPECT_TRUE(wait_until([&] { return !std::filesystem::exists(bundle); }, 30s));
}

TEST_F(TaskOptions, CofferCliFlagsTakeEffectInsideARootTask) {
    auto created = cli({"service",
                        "create",
                        "--detach",
                        "--name",
                        "root-opts",
                        "--constraint",
                        "node.hostname==node-a",
                        "--cap-drop",
                        "ALL",
                        "--cap-add",
                        "NET_BIND_SERVICE",
                        "--ulimit",
                        "nproc=77",
                        "--sysctl",
                        "net.ipv4.ip_forward=1",
                        "--host",
                        "cache:fd00::7",
                        "--hostname",
                        "rooted",
                        "--oom-score-adj",
                        "250",
                        "busybox",
                        "sh",
                        "-c",
                        reporter});
    ASSERT_EQ(created.status, 0) << created.err;
    auto [id, log] = ready_task("root-opts");
    ASSERT_FALSE(id.empty());
    EXPECT_NE(log.find("ID uid=0(root) gid=0(root)"), std::string::npos) << log;
    // Only NET_BIND_SERVICE (bit 10), effective for root.
    EXPECT_TRUE(has_line(log, "CapEff 0000000000000400")) << log;
    EXPECT_TRUE(has_line(log, "NPROC 77")) << log;
    EXPECT_TRUE(has_line(log, "OOMADJ 250")) << log;
    EXPECT_TRUE(has_line(log, "FORWARD 1")) << log;
    EXPECT_TRUE(has_line(log, "ROOTFS writable")) << log;
    EXPECT_TRUE(has_line(log, "HOSTS fd00::7\tcache")) << log;
    EXPECT_TRUE(has_line(log, "HOSTNAME rooted rooted")) << log;
    // No init: the command is pid 1. The node's resolver, without loopback nameservers.
    EXPECT_NE(log.find("PID1 sh -c"), std::string::npos) << log;
    for (const auto& l : lines_of(log)) EXPECT_FALSE(l.starts_with("RESOLV nameserver 127.")) << l;
    // Without --stop-signal: SIGTERM.
    ASSERT_EQ(cli({"service", "rm", "root-opts"}).status, 0);
    EXPECT_TRUE(wait_until([&] { return has_line(a_->task_log(id), "GOT TERM"); }, 30s))
        << a_->task_log(id);
}

TEST_F(TaskOptions, BadOptionsAreRefusedAtTheApiAndUnknownUsersRejectTheTask) {
    auto sysctl = cli({"service", "create", "--detach", "--name", "bad", "--sysctl",
                       "kernel.hostname=x", "busybox", "true"});
    EXPECT_NE(sysctl.status, 0);
    EXPECT_NE(sysctl.err.find("Sysctls"), std::string::npos) << sysctl.err;
    EXPECT_NE(sysctl.err.find("kernel.hostname"), std::string::npos) << sysctl.err;
    auto signal = cli({"service", "create", "--detach", "--name", "bad", "--stop-signal", "SIGNOPE",
                       "busybox", "true"});
    EXPECT_NE(signal.status, 0);
    EXPECT_NE(signal.err.find("StopSignal"), std::string::npos) << signal.err;
    if (have_docker()) {
        auto tty = docker({"service", "create", "--detach", "--no-resolve-image", "--name", "bad",
                           "-t", "busybox", "true"});
        EXPECT_NE(tty.status, 0);
        EXPECT_NE(tty.err.find("TTY is not supported by coffer"), std::string::npos) << tty.err;
    }
    EXPECT_EQ(cli({"service", "ls", "-q"}).out, "");

    // A user the image does not have: rejected with Docker's words, not restarted in a loop.
    auto created = cli({"service", "create", "--detach", "--name", "nouser", "--user", "nosuchuser",
                        "--restart-condition", "none", "busybox", "true"});
    ASSERT_EQ(created.status, 0) << created.err;
    std::string err;
    EXPECT_TRUE(wait_until(
        [&] {
            for (auto& t : tasks("nouser")) {
                auto& st = t.at("Status").as_object();
                if (st.at("State").as_string() == "rejected") {
                    err = std::string(st.at("Err").as_string());
                    return true;
                }
            }
            return false;
        },
        30s));
    EXPECT_NE(err.find("unable to find user nosuchuser: no matching entries in passwd file"),
              std::string::npos)
        << err;
}
