#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <algorithm>
#include <boost/json.hpp>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <set>
#include <thread>

#include "cgroups.h"
#include "coffer/agent/in_root.h"
#include "coffer/agent/node_description.h"
#include "coffer/agent/secret_mount.h"
#include "coffer/agent/secret_store.h"
#include "coffer/agent/task_json.h"
#include "coffer/agent/volumes.h"
#include "coffer/base/mount.h"
#include "coffer/base/process.h"
#include "coffer/base/unique_fd.h"
#include "health.h"
#include "oci_config.h"
#include "runtime.h"
#include "seccomp_bpf.h"
#include "seccomp_profile.h"
#include "task_files.h"
#include "task_mounts.h"
#include "task_user.h"

using namespace coffer;
using namespace coffer::agent;

namespace {

SecretRef ref(std::string target, std::string name = "n") {
    return SecretRef{"id", std::move(name), std::move(target), 0, 0, 0444};
}

TEST(PlanSecretFiles, NormalisesRelativeAndAbsoluteTargets) {
    auto r = plan_secret_files(
        {ref("", "db_pass"), ref("./sub//x"), ref("/etc/app/key"), ref("/run/secrets/direct")});
    ASSERT_TRUE(r) << r.error().message;
    ASSERT_EQ(r->size(), 4u);
    EXPECT_EQ((*r)[0].path, "/run/secrets/db_pass");
    EXPECT_EQ((*r)[1].path, "/run/secrets/sub/x");
    EXPECT_EQ((*r)[2].path, "/etc/app/key");
    EXPECT_EQ((*r)[3].path, "/run/secrets/direct");
    EXPECT_EQ((*r)[0].mode, 0444u);
}

TEST(PlanSecretFiles, RefusesEscapesEmptyNamesAndCollisions) {
    const std::vector<std::vector<SecretRef>> bad = {
        {ref("../x")},
        {ref("a/../../x")},
        {ref("", "")},
        {ref("./")},
        {ref("/")},
        {ref("/run/secrets")},
        {ref("/run")},
        {ref("/proc/self/x")},
        {ref("/sys/x")},
        {ref("/dev/x")},
        {ref("a"), ref("./a")},
        {ref("a"), ref("/run/secrets/a")},
        {ref("a"), ref("a/b")},
        {ref("/etc/x"), ref("/etc/x/y")},
        {SecretRef{"id", "n", "", 0, 0, 04755}},
        {SecretRef{"", "n", "", 0, 0, 0444}},
    };
    for (auto& refs : bad) {
        auto r = plan_secret_files(refs);
        EXPECT_FALSE(r) << refs.front().target;
        if (!r) {
            EXPECT_EQ(r.error().code, Errc::invalid_argument);
        }
    }
}

TEST(PlanSecretFiles, SameSecretUnderTwoTargetsKeepsEachOwnerAndMode) {
    auto r = plan_secret_files(
        {SecretRef{"s", "a", "a", 1, 2, 0400}, SecretRef{"s", "b", "b", 3, 4, 0440}});
    ASSERT_TRUE(r);
    EXPECT_EQ((*r)[0].uid, 1u);
    EXPECT_EQ((*r)[1].uid, 3u);
    EXPECT_EQ((*r)[1].mode, 0440u);
}

class InRoot : public ::testing::Test {
  protected:
    void SetUp() override {
        char t[] = "/tmp/coffer-inroot-XXXXXX";
        ASSERT_TRUE(::mkdtemp(t));
        dir = t;
        ASSERT_EQ(::mkdir((dir + "/root").c_str(), 0755), 0);
        ASSERT_EQ(::mkdir((dir + "/outside").c_str(), 0755), 0);
        root.reset(::open((dir + "/root").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    }
    void TearDown() override { remove_tree(dir); }
    void link(const std::string& target, const std::string& at) {
        ASSERT_EQ(::symlink(target.c_str(), (dir + "/root" + at).c_str()), 0);
    }
    bool exists(const std::string& p) {
        struct stat st {};
        return ::lstat(p.c_str(), &st) == 0;
    }
    std::string dir;
    UniqueFd root;
};

TEST_F(InRoot, CreatesMissingDirectoriesAndFiles) {
    auto d = make_mountpoint_in_root(root.get(), "/run/secrets", Leaf::directory);
    ASSERT_TRUE(d) << d.error().message;
    EXPECT_EQ(*d, "/run/secrets");
    auto f = make_mountpoint_in_root(root.get(), "/etc/app/key", Leaf::file);
    ASSERT_TRUE(f);
    EXPECT_EQ(*f, "/etc/app/key");
    EXPECT_TRUE(exists(dir + "/root/etc/app/key"));
}

TEST_F(InRoot, AbsoluteSymlinkToHostRootStaysInside) {
    link("/", "/run");
    auto d = make_mountpoint_in_root(root.get(), "/run/secrets", Leaf::directory);
    ASSERT_TRUE(d);
    EXPECT_EQ(*d, "/secrets");
    EXPECT_TRUE(exists(dir + "/root/secrets"));
}

TEST_F(InRoot, DotDotSymlinksStopAtTheRoot) {
    link("../../../../outside", "/run");
    auto d = make_mountpoint_in_root(root.get(), "/run/secrets", Leaf::directory);
    ASSERT_TRUE(d);
    EXPECT_EQ(*d, "/outside/secrets");
    EXPECT_FALSE(exists(dir + "/outside/secrets"));  // the real one next to root is untouched
    EXPECT_TRUE(exists(dir + "/root/outside/secrets"));
}

TEST_F(InRoot, AbsolutePathOfTheHostResolvesInsideToo) {
    link(dir + "/outside", "/run");
    auto d = make_mountpoint_in_root(root.get(), "/run/secrets", Leaf::directory);
    ASSERT_TRUE(d);
    EXPECT_EQ(*d, dir + "/outside/secrets");
    EXPECT_FALSE(exists(dir + "/outside/secrets"));
}

TEST_F(InRoot, RefusesLoopsAndWrongKinds) {
    link("/loop", "/loop");
    EXPECT_FALSE(make_mountpoint_in_root(root.get(), "/loop/x", Leaf::directory));
    ASSERT_TRUE(make_mountpoint_in_root(root.get(), "/file", Leaf::file));
    EXPECT_FALSE(make_mountpoint_in_root(root.get(), "/file/x", Leaf::file));
    EXPECT_FALSE(make_mountpoint_in_root(root.get(), "/file", Leaf::directory));
    ASSERT_TRUE(make_mountpoint_in_root(root.get(), "/dir", Leaf::directory));
    EXPECT_FALSE(make_mountpoint_in_root(root.get(), "/dir", Leaf::file));
    link("..", "/dir/up");
    EXPECT_FALSE(make_mountpoint_in_root(root.get(), "/dir/up", Leaf::file));
}

// What the runtime mounts on or creates in must be a real directory (or file) of the rootfs, or
// missing below one: never a link, whatever it points at.
TEST_F(InRoot, RuntimePathsMustHoldNoLinkAndTheRightKinds) {
    auto check = [&](std::string_view path, Leaf leaf) {
        auto r = check_runtime_path_in_root(root.get(), path, leaf);
        return r ? std::string("ok") : r.error().message;
    };
    EXPECT_EQ(check("/dev", Leaf::directory), "ok");  // missing: the runtime creates it
    EXPECT_EQ(check("/dev/shm", Leaf::directory), "ok");
    EXPECT_EQ(check("/", Leaf::directory), "ok");
    ASSERT_EQ(::mkdir((dir + "/root/dev").c_str(), 0755), 0);
    EXPECT_EQ(check("/dev/shm", Leaf::directory), "ok");
    link("/", "/dev/shm");
    EXPECT_EQ(check("/dev/shm", Leaf::directory), "/dev/shm is a symbolic link");
    EXPECT_EQ(check("/dev/shm/x", Leaf::directory), "/dev/shm is a symbolic link");
    EXPECT_EQ(check("/dev", Leaf::directory), "ok");
    for (auto target : {"/", "..", ".", "/proc", "sys"}) {
        link(target, "/proc");
        EXPECT_EQ(check("/proc", Leaf::directory), "/proc is a symbolic link") << target;
        EXPECT_EQ(check("/proc/sys", Leaf::directory), "/proc is a symbolic link") << target;
        ASSERT_EQ(::unlink((dir + "/root/proc").c_str()), 0);
    }
    ASSERT_EQ(::mkdir((dir + "/root/etc").c_str(), 0755), 0);
    EXPECT_EQ(check("/etc/hosts", Leaf::file), "ok");
    link("/etc/shadow", "/etc/hosts");
    EXPECT_EQ(check("/etc/hosts", Leaf::file), "/etc/hosts is a symbolic link");
    ASSERT_EQ(::mkdir((dir + "/root/etc/hostname").c_str(), 0755), 0);
    EXPECT_EQ(check("/etc/hostname", Leaf::file), "/etc/hostname is not a regular file");
    ASSERT_TRUE(make_mountpoint_in_root(root.get(), "/etc/resolv.conf", Leaf::file));
    EXPECT_EQ(check("/etc/resolv.conf", Leaf::file), "ok");
    ASSERT_TRUE(make_mountpoint_in_root(root.get(), "/sys", Leaf::file));
    EXPECT_EQ(check("/sys", Leaf::directory), "/sys is not a directory");
    EXPECT_EQ(check("/sys/fs/cgroup", Leaf::directory), "/sys is not a directory");
    ASSERT_EQ(::mkfifo((dir + "/root/etc/fifo").c_str(), 0644), 0);
    EXPECT_EQ(check("/etc/fifo", Leaf::file), "/etc/fifo is not a regular file");
    // Nothing was made, and nothing outside the root was looked at.
    EXPECT_FALSE(exists(dir + "/root/dev/shm/x"));
    EXPECT_FALSE(exists(dir + "/root/etc/hosts/x"));
}

// Every path the runtime mounts on is checked: the config's own mounts and the files engines bind.
TEST(RuntimePaths, CoverEveryMountOfTheConfig) {
    TaskSpec spec;
    spec.id = "t";
    ImageConfig image;
    image.cmd = {"sh"};
    ConfigInput in;
    in.spec = &spec;
    in.image = &image;
    auto config = make_oci_config(in);
    ASSERT_TRUE(config) << config.error().message;
    auto paths = runtime_rootfs_paths();
    auto listed = [&](std::string_view p, Leaf leaf) {
        return std::any_of(paths.begin(), paths.end(),
                           [&](auto& r) { return r.path == p && r.leaf == leaf; });
    };
    auto mounts = boost::json::parse(*config).at("mounts").as_array();
    EXPECT_EQ(mounts.size(), 7u);
    for (auto& m : mounts) {
        std::string dest(m.at("destination").as_string());
        EXPECT_TRUE(listed(dest, Leaf::directory)) << dest;
    }
    for (auto f : {"/etc/hosts", "/etc/hostname", "/etc/resolv.conf"})
        EXPECT_TRUE(listed(f, Leaf::file)) << f;
}

TEST(Capabilities, DockerDefaultsWithAddAndDrop) {
    auto c = task_capabilities({}, {});
    ASSERT_TRUE(c);
    EXPECT_EQ(c->size(), 14u);
    c = task_capabilities({"net_admin", "CAP_SYS_TIME"}, {"CHOWN"});
    ASSERT_TRUE(c);
    EXPECT_NE(std::find(c->begin(), c->end(), "CAP_NET_ADMIN"), c->end());
    EXPECT_NE(std::find(c->begin(), c->end(), "CAP_SYS_TIME"), c->end());
    EXPECT_EQ(std::find(c->begin(), c->end(), "CAP_CHOWN"), c->end());
    c = task_capabilities({"KILL"}, {"ALL"});
    ASSERT_TRUE(c);
    EXPECT_EQ(*c, std::vector<std::string>{"CAP_KILL"});
    EXPECT_FALSE(task_capabilities({"NOT_A_CAP"}, {}));
}

TEST(User, NumericUidAndGid) {
    EXPECT_EQ(*parse_user("1000:1001"), (std::pair<std::uint32_t, std::uint32_t>{1000, 1001}));
    EXPECT_EQ(*parse_user("5"), (std::pair<std::uint32_t, std::uint32_t>{5, 0}));
    EXPECT_FALSE(parse_user("app"));
    EXPECT_FALSE(parse_user("1:x"));
}

namespace {

const AccountFiles accounts{
    "root:x:0:0:root:/root:/bin/sh\n"
    "# a comment\n"
    "www-data:x:33:33:www-data:/var/www:/bin/false\n"
    "app:x:1000:1000:app:/home/app:/bin/sh\n"
    "broken:x:notanumber:1:\n",
    "root:x:0:\naudio:x:29:app\nwww-data:x:33:\nstaff:x:50:postgres,app\napp:x:1000:\n"};

}  // namespace

TEST(User, NamesResolveInTheImagesAccountsWithTheirGroups) {
    auto app = resolve_user("app", {}, accounts);
    ASSERT_TRUE(app) << app.error().message;
    EXPECT_EQ(app->uid, 1000u);
    EXPECT_EQ(app->gid, 1000u);
    EXPECT_EQ(app->additional_gids, (std::vector<std::uint32_t>{29, 50}));
    // A uid gets its entry's gid and memberships, as Docker does.
    auto by_uid = resolve_user("1000", {}, accounts);
    ASSERT_TRUE(by_uid);
    EXPECT_EQ(by_uid->gid, 1000u);
    EXPECT_EQ(by_uid->additional_gids, (std::vector<std::uint32_t>{29, 50}));
    auto www = resolve_user("www-data", {}, accounts);
    ASSERT_TRUE(www);
    EXPECT_EQ(www->uid, 33u);
    EXPECT_EQ(www->gid, 33u);
    EXPECT_TRUE(www->additional_gids.empty());
    // An explicit group, by name or number; extra groups added.
    auto grouped = resolve_user("app:staff", {"www-data", "7"}, accounts);
    ASSERT_TRUE(grouped);
    EXPECT_EQ(grouped->gid, 50u);
    EXPECT_EQ(grouped->additional_gids, (std::vector<std::uint32_t>{7, 29, 33, 50}));
    auto numeric = resolve_user("4242:4343", {}, accounts);
    ASSERT_TRUE(numeric);
    EXPECT_EQ(numeric->uid, 4242u);
    EXPECT_EQ(numeric->gid, 4343u);
    auto root = resolve_user("", {}, accounts);
    ASSERT_TRUE(root);
    EXPECT_EQ(root->uid, 0u);
    EXPECT_EQ(root->gid, 0u);
}

// (uid_t)-1 leaves setresuid's ids unchanged: the task would run as root. A hostile image's
// passwd or a spec may give it; neither is taken.
TEST(User, IdsBeyond2147483647AreRefusedWhereverTheyComeFrom) {
    const AccountFiles hostile{"app:x:4294967295:4294967295:app:/:/bin/sh\n",
                               "big:x:4294967295:\n"};
    for (auto user : {"app", "4294967295", "0:4294967295", "2147483648"}) {
        auto r = resolve_user(user, {}, hostile);
        ASSERT_FALSE(r) << user;
        EXPECT_NE(r.error().message.find("uids and gids must be in range 0-2147483647"),
                  std::string::npos)
            << r.error().message;
    }
    EXPECT_FALSE(resolve_user("0", {"big"}, hostile));
    auto top = resolve_user("2147483647:2147483647", {}, hostile);
    ASSERT_TRUE(top) << top.error().message;
    EXPECT_EQ(top->uid, 2147483647u);
}

TEST(User, UnknownNamesAreRefusedInDockersWords) {
    auto missing = resolve_user("postgres", {}, accounts);
    ASSERT_FALSE(missing);
    EXPECT_EQ(missing.error().message,
              "unable to find user postgres: no matching entries in passwd file");
    EXPECT_EQ(resolve_user("app:nogroup", {}, accounts).error().message,
              "unable to find group nogroup: no matching entries in group file");
    EXPECT_EQ(resolve_user("app", {"wheel"}, accounts).error().message,
              "unable to find group wheel: no matching entries in group file");
    EXPECT_FALSE(resolve_user("broken", {}, accounts));
    EXPECT_FALSE(resolve_user("app", {}, AccountFiles{}));
    EXPECT_FALSE(resolve_user(":50", {}, accounts));
}

TEST_F(InRoot, AccountFilesAreReadInsideTheRoot) {
    ASSERT_EQ(::mkdir((dir + "/root/etc").c_str(), 0755), 0);
    // A passwd outside the root, which a link must not reach.
    write_file(dir + "/outside/passwd", "app:x:1:1::/:/bin/sh\n");
    link("../../../outside/passwd", "/etc/passwd");
    auto files = read_account_files(root.get());
    ASSERT_TRUE(files) << files.error().message;
    EXPECT_EQ(files->passwd, "");  // /outside/passwd inside the root: there is none
    ASSERT_EQ(::mkdir((dir + "/root/outside").c_str(), 0755), 0);
    write_file(dir + "/root/outside/passwd", "app:x:7:8::/:/bin/sh\n");
    files = read_account_files(root.get());
    ASSERT_TRUE(files);
    EXPECT_EQ(files->passwd, "app:x:7:8::/:/bin/sh\n");
    EXPECT_EQ(resolve_user("app", {}, *files)->uid, 7u);
    // Not a regular file: refused.
    ::unlink((dir + "/root/etc/passwd").c_str());
    ASSERT_EQ(::mkfifo((dir + "/root/etc/passwd").c_str(), 0644), 0);
    EXPECT_FALSE(read_account_files(root.get()));
}

TEST(TaskFiles, HostsHaveLocalhostTheHostnameAndExtraHosts) {
    auto text = hosts_file("web-1", {"10.0.0.5 db", "fd00::1  cache cache.local"});
    EXPECT_NE(text.find("127.0.0.1\tlocalhost\n"), std::string::npos) << text;
    EXPECT_NE(text.find("::1\tlocalhost ip6-localhost ip6-loopback\n"), std::string::npos);
    EXPECT_NE(text.find("\tweb-1\n"), std::string::npos);
    EXPECT_NE(text.find("10.0.0.5\tdb\n"), std::string::npos);
    EXPECT_NE(text.find("fd00::1\tcache cache.local\n"), std::string::npos);
}

TEST(TaskFiles, ResolvConfDropsLoopbackAndTakesTheTasksSettings) {
    std::string node =
        "# generated\nnameserver 127.0.0.53\nnameserver 10.1.1.1\nnameserver ::1\n"
        "search corp.example\noptions edns0\n";
    EXPECT_EQ(resolv_conf({}, node), "nameserver 10.1.1.1\nsearch corp.example\noptions edns0\n");
    EXPECT_EQ(resolv_conf({{"9.9.9.9"}, {"a.example", "b.example"}, {"ndots:2"}}, node),
              "nameserver 9.9.9.9\nsearch a.example b.example\noptions ndots:2\n");
    // Only loopback resolvers on the node: Docker's defaults.
    EXPECT_EQ(resolv_conf({}, "nameserver 127.0.0.1\n"),
              "nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
}

TEST(OciConfig, TaskOptionsReachTheProcessAndTheKernel) {
    TaskSpec spec;
    spec.id = "t1";
    spec.args = {"sh"};
    spec.init = true;
    spec.sysctls = {{"net.ipv4.ip_forward", "1"}, {"kernel.shmmax", "1048576"}};
    spec.ulimits = {{"nofile", 512, 1024}, {"core", -1, -1}};
    spec.oom_score_adj = 300;
    ImageConfig image;
    ProcessUser user{1000, 1000, {29, 50}};
    ConfigInput in;
    in.spec = &spec;
    in.image = &image;
    in.user = &user;
    in.binds = {{"/usr/bin/tini-static", std::string(task_init_path), true},
                {"/run/x/hosts", "/etc/hosts"}};
    auto text = make_oci_config(in);
    ASSERT_TRUE(text) << text.error().message;
    auto c = boost::json::parse(*text).as_object();
    auto& p = c.at("process").as_object();
    EXPECT_EQ(p.at("args"), boost::json::parse(R"(["/dev/init","--","sh"])"));
    EXPECT_EQ(p.at("user"),
              boost::json::parse(R"({"uid":1000,"gid":1000,"additionalGids":[29,50]})"));
    EXPECT_EQ(p.at("oomScoreAdj"), 300);
    bool saw_nofile = false, saw_core = false;
    for (auto& r : p.at("rlimits").as_array()) {
        if (r.at("type") == "RLIMIT_NOFILE") {
            saw_nofile = true;
            EXPECT_EQ(r.at("soft").to_number<std::uint64_t>(), 512u);
            EXPECT_EQ(r.at("hard").to_number<std::uint64_t>(), 1024u);
        }
        if (r.at("type") == "RLIMIT_CORE") {
            saw_core = true;
            EXPECT_EQ(r.at("hard").to_number<std::uint64_t>(), RLIM_INFINITY);
        }
    }
    EXPECT_TRUE(saw_nofile && saw_core) << *text;
    EXPECT_EQ(c.at("linux").at("sysctl"),
              boost::json::parse(R"({"kernel.shmmax":"1048576","net.ipv4.ip_forward":"1"})"));
    // The init is executable; other binds are not.
    for (auto& m : c.at("mounts").as_array()) {
        auto& opts = m.at("options").as_array();
        bool noexec =
            std::find(opts.begin(), opts.end(), boost::json::value("noexec")) != opts.end();
        if (m.at("destination") == "/dev/init") {
            EXPECT_FALSE(noexec);
        }
        if (m.at("destination") == "/etc/hosts") {
            EXPECT_TRUE(noexec);
        }
    }

    spec.sysctls = {{"kernel.hostname", "x"}};
    EXPECT_FALSE(make_oci_config(in));
    spec.sysctls.clear();
    spec.ulimits = {{"nofiles", 1, 1}};
    EXPECT_FALSE(make_oci_config(in));
    spec.ulimits = {{"nofile", 10, 5}};
    EXPECT_FALSE(make_oci_config(in));
}

TEST(Seccomp, KeepsRulesForThisArchAndTheTasksCapabilities) {
    auto profile = boost::json::parse(R"({
      "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
      "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
                  {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": []}],
      "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64"]}},
        {"names": ["s390_x"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["s390x"]}},
        {"names": ["bpf"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["bpf"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "excludes": {"caps": ["CAP_SYS_ADMIN"]}}
      ]})");
    auto s = seccomp_for(profile, {"CAP_CHOWN"});
    auto& rules = s.as_object().at("syscalls").as_array();
#if defined(__x86_64__)
    ASSERT_EQ(rules.size(), 3u);
    EXPECT_EQ(rules[1].as_object().at("names").as_array()[0], "arch_prctl");
    EXPECT_EQ(rules[2].as_object().at("action"), "SCMP_ACT_ERRNO");
    EXPECT_EQ(s.as_object().at("architectures").as_array().size(), 2u);
#endif
    auto admin = seccomp_for(profile, {"CAP_SYS_ADMIN"});
    auto& admin_rules = admin.as_object().at("syscalls").as_array();
    EXPECT_EQ(admin_rules.back().as_object().at("action"), "SCMP_ACT_ALLOW");
}

// The names a section lets through unconditionally, and its rules for one name.
std::set<std::string> allowed_outright(const boost::json::value& section) {
    std::set<std::string> out;
    for (auto& r : section.at("syscalls").as_array())
        if (r.at("action") == "SCMP_ACT_ALLOW" && !r.as_object().contains("args"))
            for (auto& n : r.at("names").as_array()) out.emplace(n.as_string());
    return out;
}

std::vector<boost::json::object> rules_for(const boost::json::value& section,
                                           std::string_view name) {
    std::vector<boost::json::object> out;
    for (auto& r : section.at("syscalls").as_array())
        for (auto& n : r.at("names").as_array())
            if (n.as_string() == name) out.push_back(r.as_object());
    return out;
}

// The default profile has Docker's rules: no namespaces, mounts or keys without CAP_SYS_ADMIN,
// and with it what Docker allows (the keyring calls still not).
TEST(Seccomp, DefaultProfileGatesNamespacesAndMountsOnSysAdmin) {
    auto profile = default_seccomp_profile();
    EXPECT_EQ(profile.at("defaultAction"), "SCMP_ACT_ERRNO");
    EXPECT_EQ(profile.at("defaultErrnoRet"), 1);  // EPERM
    auto caps = task_capabilities({}, {});
    ASSERT_TRUE(caps);
    auto plain = seccomp_for(profile, *caps);
    auto allowed = allowed_outright(plain);
    EXPECT_TRUE(allowed.contains("read"));
    EXPECT_TRUE(allowed.contains("execve"));
    EXPECT_TRUE(allowed.contains("chown"));
    for (auto name : {"unshare",   "setns",       "mount",   "umount2",     "clone",
                      "clone3",    "keyctl",      "add_key", "request_key", "pivot_root",
                      "open_tree", "move_mount",  "fsopen",  "fsmount",     "bpf",
                      "reboot",    "init_module", "syslog",  "userfaultfd", "sethostname"})
        EXPECT_FALSE(allowed.contains(name)) << name;
    // clone only without namespace flags; clone3 says ENOSYS so that the C library uses clone.
    auto clone = rules_for(plain, "clone");
    ASSERT_EQ(clone.size(), 1u);
    auto& arg = clone[0].at("args").as_array().at(0).as_object();
    EXPECT_EQ(arg.at("index"), 0);
    EXPECT_EQ(arg.at("value"), 0x7E020000);
    EXPECT_EQ(arg.at("op"), "SCMP_CMP_MASKED_EQ");
    auto clone3 = rules_for(plain, "clone3");
    ASSERT_EQ(clone3.size(), 1u);
    EXPECT_EQ(clone3[0].at("action"), "SCMP_ACT_ERRNO");
    EXPECT_EQ(clone3[0].at("errnoRet"), 38);
    auto socket = rules_for(plain, "socket");
    ASSERT_EQ(socket.size(), 1u);
    EXPECT_EQ(socket[0].at("args").as_array().at(0).at("op"), "SCMP_CMP_NE");

    auto admin_caps = task_capabilities({"SYS_ADMIN"}, {});
    ASSERT_TRUE(admin_caps);
    auto admin = allowed_outright(seccomp_for(profile, *admin_caps));
    for (auto name :
         {"unshare", "setns", "mount", "umount2", "clone", "clone3", "open_tree", "sethostname"})
        EXPECT_TRUE(admin.contains(name)) << name;
    for (auto name : {"keyctl", "add_key", "request_key", "pivot_root", "reboot", "init_module"})
        EXPECT_FALSE(admin.contains(name)) << name;
    EXPECT_TRUE(rules_for(seccomp_for(profile, *admin_caps), "clone3").size() == 1u);

    auto all_caps = task_capabilities({"ALL"}, {});
    ASSERT_TRUE(all_caps);
    auto everything = allowed_outright(seccomp_for(profile, *all_caps));
    for (auto name : {"keyctl", "add_key", "request_key", "pivot_root"})
        EXPECT_FALSE(everything.contains(name)) << name;
    for (auto name : {"reboot", "init_module", "ptrace", "syslog", "bpf"})
        EXPECT_TRUE(everything.contains(name)) << name;

    // Each of those sections compiles.
    for (const auto* c : {&*caps, &*admin_caps, &*all_caps}) {
        auto program = compile_seccomp_bpf(seccomp_for(profile, *c).as_object());
        ASSERT_TRUE(program) << program.error().message;
        EXPECT_GT(program->size(), 1000u);
    }
}

// A section the agent cannot compile is refused by name (the runner then leaves it to the
// runtime); one it can gives a program of whole 8-byte BPF instructions.
TEST(Seccomp, CompilesASectionOrSaysWhatItCannot) {
    auto section = [](std::string_view action, std::string_view arch, std::string_view op) {
        return boost::json::parse(fmt::format(R"({{
          "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38, "architectures": ["{}"],
          "syscalls": [{{"names": ["read", "no_such_call"], "action": "{}"}},
                       {{"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                         "args": [{{"index": 0, "value": 8, "valueTwo": 0, "op": "{}"}}]}}]}})",
                                              arch, action, op))
            .as_object();
    };
    auto ok = compile_seccomp_bpf(section("SCMP_ACT_ALLOW", "SCMP_ARCH_X86_64", "SCMP_CMP_EQ"));
    ASSERT_TRUE(ok) << ok.error().message;
    EXPECT_GT(ok->size(), 0u);
    EXPECT_EQ(ok->size() % 8, 0u);
    auto action = compile_seccomp_bpf(section("SCMP_ACT_MAYBE", "SCMP_ARCH_X86_64", "SCMP_CMP_EQ"));
    ASSERT_FALSE(action);
    EXPECT_EQ(action.error().code, Errc::invalid_argument);
    EXPECT_NE(action.error().message.find("SCMP_ACT_MAYBE"), std::string::npos);
    auto arch = compile_seccomp_bpf(section("SCMP_ACT_ALLOW", "SCMP_ARCH_VAX", "SCMP_CMP_EQ"));
    ASSERT_FALSE(arch);
    EXPECT_NE(arch.error().message.find("vax"), std::string::npos);
    auto op = compile_seccomp_bpf(section("SCMP_ACT_ALLOW", "SCMP_ARCH_X86_64", "SCMP_CMP_ALMOST"));
    ASSERT_FALSE(op);
    EXPECT_NE(op.error().message.find("SCMP_CMP_ALMOST"), std::string::npos);

    SeccompPrograms programs;
    auto once = programs.base64_for(section("SCMP_ACT_ALLOW", "SCMP_ARCH_X86_64", "SCMP_CMP_EQ"));
    ASSERT_TRUE(once);
    EXPECT_EQ(*once,
              *programs.base64_for(section("SCMP_ACT_ALLOW", "SCMP_ARCH_X86_64", "SCMP_CMP_EQ")));
}

TEST(TaskJson, ReadsTheSpec) {
    auto s = task_spec_from_json(R"({"id":"t","image":"busybox","args":["sh"],"user":"1:2",
        "limits":{"memory_bytes":1048576,"pids":10},"cap_drop":["ALL"],
        "secrets":[{"secret_id":"s1","name":"db","target":"x","uid":5,"mode":256}]})");
    ASSERT_TRUE(s) << s.error().message;
    EXPECT_EQ(s->limits.pids, 10);
    ASSERT_EQ(s->secrets.size(), 1u);
    EXPECT_EQ(s->secrets[0].mode, 0400u);
    EXPECT_EQ(s->secrets[0].uid, 5u);
    EXPECT_FALSE(task_spec_from_json(R"({"secrets":[{"mode":-1}]})"));
    EXPECT_FALSE(task_spec_from_json("[]"));
}

TEST(TaskJson, ReadsTheTaskOptions) {
    auto s = task_spec_from_json(R"({"id":"t","image":"busybox","user":"app","groups":["audio"],
        "init":true,"stop_signal":"USR1","sysctls":{"net.ipv4.ip_forward":"1"},
        "ulimits":[{"name":"nofile","soft":10,"hard":20}],"extra_hosts":["10.0.0.1 db"],
        "dns":{"nameservers":["9.9.9.9"],"search":["example.com"]},"oom_score_adj":-3})");
    ASSERT_TRUE(s) << s.error().message;
    EXPECT_EQ(s->groups, (std::vector<std::string>{"audio"}));
    EXPECT_TRUE(s->init);
    EXPECT_EQ(s->stop_signal, "USR1");
    EXPECT_EQ(s->sysctls.at("net.ipv4.ip_forward"), "1");
    ASSERT_EQ(s->ulimits.size(), 1u);
    EXPECT_EQ(s->ulimits[0].hard, 20);
    EXPECT_EQ(s->extra_hosts, (std::vector<std::string>{"10.0.0.1 db"}));
    EXPECT_EQ(s->dns.nameservers, (std::vector<std::string>{"9.9.9.9"}));
    EXPECT_EQ(s->dns.search, (std::vector<std::string>{"example.com"}));
    EXPECT_EQ(s->oom_score_adj, -3);
    EXPECT_FALSE(task_spec_from_json(R"({"oom_score_adj":5000})"));
    EXPECT_FALSE(task_spec_from_json(R"({"sysctls":{"net.x":1}})"));
}

TEST(Mountinfo, ReadsOwnTable) {
    auto all = read_mountinfo();
    ASSERT_FALSE(all.empty());
    EXPECT_TRUE(std::any_of(all.begin(), all.end(), [](auto& m) { return m.mount_point == "/"; }));
}

}  // namespace

TEST(ImageNames, NormaliseToDockersFamiliarForm) {
    EXPECT_EQ(*ImageStore::normalize_name("busybox"), "busybox:latest");
    EXPECT_EQ(*ImageStore::normalize_name("docker.io/library/busybox:1.36"), "busybox:1.36");
    EXPECT_EQ(*ImageStore::normalize_name("docker.io/saved/app:1.0"), "saved/app:1.0");
    EXPECT_EQ(*ImageStore::normalize_name("registry.local:5000/app"),
              "registry.local:5000/app:latest");
    EXPECT_FALSE(ImageStore::normalize_name("a:b:c"));
    EXPECT_FALSE(ImageStore::normalize_name("sha256:abc"));
}

namespace {

std::string held_bytes(const SecretStore& store, const std::string& id) {
    std::string out = "<none>";
    store.read([&](const SecretBytes& all) {
        if (auto it = all.find(id); it != all.end())
            out.assign(reinterpret_cast<const char*>(it->second.data()), it->second.size());
    });
    return out;
}

}  // namespace

// A secret's bytes stay while any lease on it lives and go with the last one.
TEST(SecretStore, HoldsEachSecretOnceWhileLeased) {
    crypto::init();
    SecretStore store;
    auto assigned = store.put("s1", crypto::SecureBuffer::copy_of("hunter2"));
    EXPECT_EQ(store.size(), 1u);
    // The same id again: the bytes held are kept (an id names bytes that never change).
    auto again = store.put("s1", crypto::SecureBuffer::copy_of("other"));
    EXPECT_EQ(held_bytes(store, "s1"), "hunter2");
    again.reset();

    auto task = store.lease({"s1", "s1"});
    ASSERT_TRUE(task);
    EXPECT_EQ(task->ids(), std::vector<std::string>{"s1"});
    EXPECT_TRUE(task->holds("s1"));
    assigned.reset();
    EXPECT_EQ(held_bytes(store, "s1"), "hunter2");  // the task's lease keeps it
    SecretLease moved = std::move(*task);
    task->reset();  // moved from: releases nothing
    EXPECT_EQ(store.size(), 1u);
    moved.reset();
    EXPECT_EQ(store.size(), 0u);
    EXPECT_EQ(held_bytes(store, "s1"), "<none>");
}

TEST(SecretStore, TakesSuppliedBytesOnlyForWhatItLacks) {
    crypto::init();
    SecretStore store;
    auto held = store.put("s1", crypto::SecureBuffer::copy_of("one"));
    SecretBytes supplied;
    supplied.emplace("s1", crypto::SecureBuffer::copy_of("stale"));
    supplied.emplace("s2", crypto::SecureBuffer::copy_of("two"));

    // One missing: nothing leased, nothing taken.
    auto refused = store.lease({"s1", "s2", "s3"}, supplied);
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().code, Errc::not_found);
    EXPECT_NE(refused.error().message.find("s3"), std::string::npos);
    EXPECT_EQ(supplied.size(), 2u);
    EXPECT_EQ(store.size(), 1u);

    auto lease = store.lease({"s2", "s1"}, supplied);
    ASSERT_TRUE(lease);
    EXPECT_EQ(lease->ids(), (std::vector<std::string>{"s1", "s2"}));
    EXPECT_EQ(held_bytes(store, "s1"), "one");
    EXPECT_EQ(held_bytes(store, "s2"), "two");
    EXPECT_FALSE(supplied.contains("s2"));  // moved into the store
    held.reset();
    lease->reset();
    EXPECT_EQ(store.size(), 0u);
}

TEST(NodeDescription, GenericResourcesAreCountsOrNamedUnits) {
    auto ssd = coffer::agent::parse_generic_resource("ssd=3");
    ASSERT_TRUE(ssd.ok());
    EXPECT_EQ(ssd->kind, "ssd");
    EXPECT_EQ(ssd->discrete, 3);
    EXPECT_FALSE(ssd->is_named());
    auto gpu = coffer::agent::parse_generic_resource("gpu=GPU-4f2a");
    ASSERT_TRUE(gpu.ok());
    EXPECT_EQ(gpu->named, "GPU-4f2a");
    for (const char* bad : {"ssd", "=3", "ssd=", "ssd=0", "ssd=-1", "g p u=1", "gpu=a,b"})
        EXPECT_FALSE(coffer::agent::parse_generic_resource(bad).ok()) << bad;
}

TEST(NodeDescription, TheHostIsDescribedAsTheKernelSeesIt) {
    auto d = coffer::agent::describe_host({{"ssd", "", 2}});
    ASSERT_TRUE(d.ok()) << d.error().message;
    struct utsname u {};
    ASSERT_EQ(::uname(&u), 0);
    EXPECT_EQ(d->architecture, u.machine);
    EXPECT_EQ(d->os, "linux");
    cpu_set_t set;
    CPU_ZERO(&set);
    ASSERT_EQ(::sched_getaffinity(0, sizeof set, &set), 0);
    EXPECT_EQ(d->nano_cpus, CPU_COUNT(&set) * 1'000'000'000LL);
    EXPECT_GT(d->memory_bytes, 0);
    ASSERT_EQ(d->generic.size(), 1u);
    EXPECT_EQ(d->generic[0].discrete, 2);
}

// ---- health checks

namespace {

using namespace std::chrono_literals;
using coffer::agent::Health;
using coffer::agent::HealthCheck;

HealthCheck check_of(std::vector<std::string> test, std::int64_t interval = 0,
                     std::int64_t retries = 0) {
    HealthCheck h;
    h.test = std::move(test);
    h.interval_ns = interval;
    h.retries = retries;
    return h;
}

}  // namespace

TEST(Healthcheck, TheServicesCheckIsMergedFieldByFieldWithTheImages) {
    using coffer::agent::effective_healthcheck;
    auto none = effective_healthcheck(std::nullopt, std::nullopt);
    ASSERT_TRUE(none);
    EXPECT_FALSE(*none);

    auto image = check_of({"CMD-SHELL", "test -f /ok", "&& true"}, 2'000'000'000, 4);
    auto from_image = effective_healthcheck(std::nullopt, image);
    ASSERT_TRUE(from_image && *from_image);
    EXPECT_EQ((*from_image)->argv,
              (std::vector<std::string>{"/bin/sh", "-c", "test -f /ok && true"}));
    EXPECT_EQ((*from_image)->interval, 2s);
    EXPECT_EQ((*from_image)->timeout, 30s) << "Docker's default";
    EXPECT_EQ((*from_image)->start_interval, 5s);
    EXPECT_EQ((*from_image)->retries, 4);

    // The service's fields win where set; its empty test takes the image's.
    auto merged = effective_healthcheck(check_of({}, 1'000'000), image);
    ASSERT_TRUE(merged && *merged);
    EXPECT_EQ((*merged)->interval, 1ms);
    EXPECT_EQ((*merged)->retries, 4);
    EXPECT_EQ((*merged)->argv.back(), "test -f /ok && true");
    auto own = effective_healthcheck(check_of({"CMD", "/bin/true", "x"}), image);
    ASSERT_TRUE(own && *own);
    EXPECT_EQ((*own)->argv, (std::vector<std::string>{"/bin/true", "x"}));

    // NONE (--no-healthcheck) turns the image's off; so does a NONE in the image.
    auto off = effective_healthcheck(check_of({"NONE"}), image);
    ASSERT_TRUE(off);
    EXPECT_FALSE(*off);
    auto image_off = effective_healthcheck(check_of({}, 1'000'000), check_of({"NONE"}));
    ASSERT_TRUE(image_off);
    EXPECT_FALSE(*image_off);
    auto defaults = effective_healthcheck(check_of({"CMD", "true"}), std::nullopt);
    ASSERT_TRUE(defaults && *defaults);
    EXPECT_EQ((*defaults)->interval, 30s);
    EXPECT_EQ((*defaults)->retries, 3);

    // An image's check of another kind is refused, its text made printable.
    auto odd = effective_healthcheck(std::nullopt, check_of({"SHELL\n\x01", "x"}));
    ASSERT_FALSE(odd);
    EXPECT_EQ(odd.error().message,
              "health check: unknown test type \"SHELL ?\" (CMD or CMD-SHELL)");
}

TEST(Healthcheck, AnImageConfigsHealthcheckIsReadStrictly) {
    auto h = coffer::agent::healthcheck_from_image_json(boost::json::parse(
        R"({"Test":["CMD-SHELL","true"],"Interval":1000000000,"Retries":2,"StartPeriod":null})"));
    ASSERT_TRUE(h) << h.error().message;
    EXPECT_EQ(h->test, (std::vector<std::string>{"CMD-SHELL", "true"}));
    EXPECT_EQ(h->interval_ns, 1'000'000'000);
    EXPECT_EQ(h->retries, 2);
    for (auto bad : {R"([])", R"({"Test":"true"})", R"({"Test":[1]})", R"({"Interval":-1})",
                     R"({"Retries":"3"})", R"({"Timeout":1.5})"})
        EXPECT_FALSE(coffer::agent::healthcheck_from_image_json(boost::json::parse(bad))) << bad;
}

TEST(Healthcheck, TheStateMachineFollowsDockers) {
    using coffer::agent::HealthTracker;
    using coffer::agent::ProbeResult;
    coffer::agent::EffectiveHealth e;
    e.interval = 10s;
    e.start_interval = 2s;
    e.start_period = 60s;
    e.retries = 2;
    auto t0 = coffer::agent::HealthClock::now();
    HealthTracker t(e, t0);
    EXPECT_EQ(t.health(), Health::starting);
    EXPECT_EQ(t.next_interval(t0), 2s) << "the start interval within the start period";
    // Failures within the start period do not count.
    for (int i = 0; i < 5; ++i) EXPECT_EQ(t.record({1, "no"}, t0 + 10s), Health::starting);
    EXPECT_EQ(t.failing_streak(), 0);
    // After it, they do: retries in a row make it unhealthy.
    HealthTracker late(e, t0);
    EXPECT_EQ(late.record({1, "no"}, t0 + 61s), Health::starting);
    EXPECT_EQ(late.next_interval(t0 + 61s), 10s);
    EXPECT_EQ(late.record({-1, "timeout"}, t0 + 71s), Health::unhealthy);
    EXPECT_EQ(late.record(ProbeResult{0, ""}, t0 + 81s), Health::unhealthy) << "final";

    // Once healthy, failures count even within the start period, and a success resets them.
    EXPECT_EQ(t.record({0, ""}, t0 + 12s), Health::healthy);
    EXPECT_EQ(t.next_interval(t0 + 12s), 10s) << "the interval once healthy";
    EXPECT_EQ(t.record({1, ""}, t0 + 22s), Health::healthy);
    EXPECT_EQ(t.failing_streak(), 1);
    EXPECT_EQ(t.record({0, ""}, t0 + 32s), Health::healthy);
    EXPECT_EQ(t.failing_streak(), 0);
    EXPECT_EQ(t.record({2, ""}, t0 + 42s), Health::healthy);
    EXPECT_EQ(t.record({1, ""}, t0 + 52s), Health::unhealthy);
}

// The monitor with a real probe: a process that checks a file, run every few milliseconds.
TEST(Healthcheck, TheMonitorProbesOnItsOwnThreadUntilUnhealthy) {
    char tmpl[] = "/tmp/coffer-health-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    std::string dir = tmpl, file = dir + "/ok";
    coffer::agent::EffectiveHealth e;
    e.argv = {"test", "-f", file};
    e.interval = 5ms;
    e.start_interval = 5ms;
    e.start_period = std::chrono::hours(1);
    e.retries = 3;
    std::mutex mu;
    std::condition_variable cv;
    std::vector<Health> changes;
    std::string last_output;
    int probes = 0;
    {
        coffer::agent::HealthMonitor m(
            e,
            [&](std::chrono::nanoseconds timeout, int cancel_fd) {
                EXPECT_EQ(timeout, 30s);
                EXPECT_GE(cancel_fd, 0);
                auto r = coffer::run_command({"sh", "-c", "test -f \"$0\" || echo missing", file});
                {
                    std::lock_guard l(mu);
                    ++probes;
                }
                cv.notify_all();
                bool ok = r.ok() && r.out.empty();
                return coffer::agent::ProbeResult{ok ? 0 : 1, r.out};
            },
            [&](Health h, const coffer::agent::ProbeResult& last) {
                std::lock_guard l(mu);
                changes.push_back(h);
                last_output = last.output;
                cv.notify_all();
            });
        std::unique_lock l(mu);
        // Failing probes before the file exists, within the start period: still starting.
        ASSERT_TRUE(cv.wait_for(l, 10s, [&] { return probes >= 3; }));
        EXPECT_TRUE(changes.empty());
        { std::ofstream(file) << "x"; }
        ASSERT_TRUE(cv.wait_for(l, 10s, [&] { return !changes.empty(); }));
        EXPECT_EQ(changes, (std::vector<Health>{Health::healthy}));
        EXPECT_EQ(m.health(), Health::healthy);
        ::unlink(file.c_str());
        ASSERT_TRUE(cv.wait_for(l, 10s, [&] { return changes.size() == 2; }));
        EXPECT_EQ(changes.back(), Health::unhealthy);
        EXPECT_EQ(last_output, "missing\n");
        int seen = probes;
        l.unlock();
        m.stop();  // joins: no probe after unhealthy, and none after stop
        EXPECT_EQ(probes, seen);
    }
    ::rmdir(dir.c_str());
}

// stop() cancels a probe under way through the fd it gave it, and waits for it to end.
TEST(Healthcheck, StopCancelsTheProbeUnderWay) {
    coffer::agent::EffectiveHealth e;
    e.argv = {"true"};
    e.interval = 1ms;
    e.start_interval = 1ms;
    std::mutex mu;
    std::condition_variable cv;
    bool probing = false, cancelled = false;
    {
        coffer::agent::HealthMonitor m(
            e,
            [&](std::chrono::nanoseconds, int cancel_fd) {
                {
                    std::lock_guard l(mu);
                    probing = true;
                }
                cv.notify_all();
                pollfd p{cancel_fd, POLLIN, 0};
                int n = ::poll(&p, 1, 60'000);  // a probe of a minute, unless cancelled
                std::lock_guard l(mu);
                cancelled = n == 1 && (p.revents & POLLIN);
                return coffer::agent::ProbeResult{-1, ""};
            },
            [](Health, const coffer::agent::ProbeResult&) {});
        {
            std::unique_lock l(mu);
            ASSERT_TRUE(cv.wait_for(l, 10s, [&] { return probing; }));
        }
        m.stop();
        std::lock_guard l(mu);
        EXPECT_TRUE(cancelled);
    }
}

TEST(Healthcheck, ProbeOutputIsSummarisedAsPrintableText) {
    using coffer::agent::probe_output_summary;
    EXPECT_EQ(probe_output_summary("  fine\n\n  here\t\n"), "fine here");
    EXPECT_EQ(probe_output_summary("a\x01\xff"
                                   "b"),
              "a??b");
    EXPECT_EQ(probe_output_summary(std::string(600, 'x'), 512), std::string(512, 'x') + "...");
}

// ---- task mounts ------------------------------------------------------------------------------

TEST(TaskMounts, EntriesCarryTheirOptions) {
    TaskMount tmp;
    tmp.type = TaskMount::Type::tmpfs;
    tmp.target = "/scratch";
    tmp.size_bytes = 1 << 20;
    tmp.mode = 0750;
    tmp.read_only = true;
    auto t = oci_mount_for(tmp, "ignored", "/scratch");
    EXPECT_EQ(t, (OciMount{"/scratch",
                           "tmpfs",
                           "tmpfs",
                           {"noexec", "nosuid", "nodev", "mode=750", "size=1048576", "ro"}}));
    tmp.mode = 0;
    tmp.size_bytes = 0;
    tmp.read_only = false;
    EXPECT_EQ(oci_mount_for(tmp, "", "/s").options,
              (std::vector<std::string>{"noexec", "nosuid", "nodev", "mode=1777"}));

    TaskMount bind;
    bind.type = TaskMount::Type::bind;
    bind.source = "/srv";
    bind.target = "/data";
    EXPECT_EQ(oci_mount_for(bind, "/srv", "/data"),
              (OciMount{"/data", "bind", "/srv", {"rbind", "rprivate"}}));
    bind.non_recursive = true;
    bind.read_only = true;
    EXPECT_EQ(oci_mount_for(bind, "/srv", "/data").options,
              (std::vector<std::string>{"bind", "rprivate", "ro"}));

    TaskMount vol;
    vol.source = "db";
    vol.target = "/db";
    EXPECT_EQ(oci_mount_for(vol, "/var/lib/coffer-agent/volumes/db/_data", "/db"),
              (OciMount{"/db",
                        "bind",
                        "/var/lib/coffer-agent/volumes/db/_data",
                        {"rbind", "rprivate", "nosuid", "nodev"}}));
}

TEST(TaskMounts, OverlapsAndForbiddenTargetsAreRefused) {
    auto mount_at = [](std::string target) {
        TaskMount m;
        m.type = TaskMount::Type::tmpfs;
        m.target = std::move(target);
        return m;
    };
    EXPECT_TRUE(check_task_mounts({mount_at("/a"), mount_at("/b")}, {"/run/secrets/x"}));
    EXPECT_FALSE(check_task_mounts({mount_at("/a"), mount_at("/a/b")}, {}));
    EXPECT_FALSE(check_task_mounts({mount_at("/a"), mount_at("/a")}, {}));
    EXPECT_FALSE(check_task_mounts({mount_at("/run")}, {"/run/secrets/x"}));
    EXPECT_FALSE(check_task_mounts({mount_at("/run/secrets/x/y")}, {"/run/secrets/x"}));
    EXPECT_FALSE(check_task_mounts({mount_at("/proc/x")}, {}));
    EXPECT_FALSE(check_task_mounts({mount_at("/dev")}, {}));
    EXPECT_FALSE(check_task_mounts({mount_at("/")}, {}));
    EXPECT_FALSE(check_task_mounts({mount_at("rel")}, {}));
    EXPECT_TRUE(check_task_mounts({mount_at("/device")}, {}));
}

TEST_F(InRoot, BindSourcesMustExistAndStayOutOfTheAgentsDirectories) {
    ASSERT_EQ(::mkdir((dir + "/agent").c_str(), 0755), 0);
    ASSERT_EQ(::mkdir((dir + "/agent/data").c_str(), 0755), 0);
    ASSERT_EQ(::mkdir((dir + "/agent/data/tasks").c_str(), 0755), 0);
    ASSERT_EQ(::symlink((dir + "/agent/data").c_str(), (dir + "/sneaky").c_str()), 0);
    std::vector<std::string> agent{dir + "/agent/data"};
    auto ok = resolve_bind_source(dir + "/outside", agent);
    ASSERT_TRUE(ok) << ok.error().message;
    EXPECT_EQ(*ok, dir + "/outside");
    auto missing = resolve_bind_source(dir + "/nothing", agent);
    ASSERT_FALSE(missing);
    EXPECT_NE(missing.error().message.find("bind source path does not exist"), std::string::npos);
    for (auto bad :
         {dir + "/agent/data", dir + "/agent/data/tasks", dir + "/agent", dir, dir + "/sneaky"}) {
        auto r = resolve_bind_source(bad, agent);
        ASSERT_FALSE(r) << bad;
        EXPECT_NE(r.error().message.find("node agent's directory"), std::string::npos) << bad;
    }
    // The host's /proc (every task's root through /proc/PID/root) and /sys, also through a link.
    ASSERT_EQ(::symlink("/proc/1", (dir + "/to-proc").c_str()), 0);
    for (const std::string& bad :
         std::vector<std::string>{"/proc", "/proc/self", "/sys", "/sys/fs", dir + "/to-proc"}) {
        auto r = resolve_bind_source(bad, agent);
        ASSERT_FALSE(r) << bad;
        EXPECT_NE(r.error().message.find("other tasks' processes and secrets"), std::string::npos)
            << bad << ": " << r.error().message;
    }
}

TEST_F(InRoot, OpenDirInRootRefusesLinks) {
    ASSERT_EQ(::mkdir((dir + "/root/etc").c_str(), 0755), 0);
    link("/outside", "/out");
    EXPECT_TRUE(open_dir_in_root(root.get(), "/etc"));
    EXPECT_FALSE(open_dir_in_root(root.get(), "/out"));
}

TEST_F(InRoot, CopyTreeKeepsLinksAsLinksOwnersAndModes) {
    ASSERT_EQ(::mkdir((dir + "/root/etc").c_str(), 0750), 0);
    ASSERT_EQ(::mkdir((dir + "/root/etc/sub").c_str(), 0700), 0);
    {
        UniqueFd f(
            ::open((dir + "/root/etc/sub/file").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0640));
        ASSERT_TRUE(f);
        ASSERT_EQ(::write(f.get(), "abc", 3), 3);
        ASSERT_EQ(::fchown(f.get(), 1000, 1001), 0);
    }
    {
        UniqueFd f(::open((dir + "/outside/secret").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
        ASSERT_EQ(::write(f.get(), "host", 4), 4);
    }
    link(dir + "/outside/secret", "/etc/escape");
    ASSERT_EQ(::mkfifo((dir + "/root/etc/fifo").c_str(), 0644), 0);
    ASSERT_EQ(::mkdir((dir + "/volume").c_str(), 0755), 0);
    auto from = open_dir_in_root(root.get(), "/etc");
    ASSERT_TRUE(from);
    UniqueFd to(::open((dir + "/volume").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    copy_tree(from->get(), to.get());

    struct stat st {};
    ASSERT_EQ(::stat((dir + "/volume/sub/file").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0640u);
    EXPECT_EQ(st.st_uid, 1000u);
    EXPECT_EQ(st.st_gid, 1001u);
    EXPECT_EQ(st.st_size, 3);
    ASSERT_EQ(::stat((dir + "/volume/sub").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0700u);
    ASSERT_EQ(::stat((dir + "/volume").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0750u);  // the image's directory's mode
    // The link is copied as a link, not followed: the host file's bytes are not in the volume.
    ASSERT_EQ(::lstat((dir + "/volume/escape").c_str(), &st), 0);
    EXPECT_TRUE(S_ISLNK(st.st_mode));
    EXPECT_FALSE(exists(dir + "/volume/fifo"));
}

TEST_F(InRoot, VolumesAreKeptAndRemovedOnlyWhenNoTaskUsesThem) {
    VolumeStore store(dir + "/volumes");
    auto a = store.acquire("dbdata", {{"app", "db"}}, "task1");
    ASSERT_TRUE(a) << a.error().message;
    EXPECT_TRUE(a->fresh);
    EXPECT_EQ(a->data, dir + "/volumes/dbdata/_data");
    {
        UniqueFd f(::open((a->data + "/kept").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
        ASSERT_TRUE(f);
    }
    auto b = store.acquire("dbdata", {}, "task2");
    ASSERT_TRUE(b);
    EXPECT_FALSE(b->fresh);  // in use, and not empty
    auto listed = store.list();
    ASSERT_EQ(listed.size(), 1u);
    EXPECT_EQ(listed[0].name, "dbdata");
    EXPECT_EQ(listed[0].labels.at("app"), "db");  // from its creation
    EXPECT_EQ(listed[0].used_by, (std::vector<std::string>{"task1", "task2"}));
    EXPECT_FALSE(listed[0].created_at.empty());

    auto busy = store.remove("dbdata");
    ASSERT_FALSE(busy);
    EXPECT_EQ(busy.error().code, Errc::conflict);
    EXPECT_EQ(busy.error().message, "remove dbdata: volume is in use - [task1 task2]");
    { VolumeUse u1(store, "dbdata", "task1"), u2(store, "dbdata", "task2"); }
    // Kept across its tasks: a later task finds what the earlier wrote.
    auto c = store.acquire("dbdata", {}, "task3");
    ASSERT_TRUE(c);
    EXPECT_FALSE(c->fresh);
    EXPECT_TRUE(exists(c->data + "/kept"));
    store.release("dbdata", "task3");
    ASSERT_TRUE(store.remove("dbdata"));
    EXPECT_FALSE(exists(dir + "/volumes/dbdata"));
    EXPECT_EQ(store.remove("dbdata").error().code, Errc::not_found);
    EXPECT_FALSE(store.acquire("../x", {}, "t"));
}

// An exec whose runtime outlives its command's output (it closed its standard output and goes on
// waiting, as a runtime attached to an ending container may): a cancel ends it at once, neither
// at its timeout nor after.
TEST(RuntimeExec, ACancelEndsAnExecWhoseRuntimeOutlivesItsOutput) {
    using namespace std::chrono_literals;
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (the runtime's mount view)";
    char tmpl[] = "/tmp/coffer-exec-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    std::string dir = tmpl;
    struct Cleanup {
        std::string dir, path;
        ~Cleanup() {
            ::setenv("PATH", path.c_str(), 1);
            remove_tree(dir);
        }
    } cleanup{dir, ::getenv("PATH") ? ::getenv("PATH") : ""};
    // A "crun" that closes its output, says so with a file, and waits.
    {
        std::ofstream script(dir + "/crun");
        script << "#!/bin/sh\nexec >/dev/null 2>&1\ntouch " << dir << "/closed\nexec sleep 60\n";
    }
    ASSERT_EQ(::chmod((dir + "/crun").c_str(), 0755), 0);
    ::setenv("PATH", (dir + ":" + cleanup.path).c_str(), 1);
    auto cgroups = Cgroups::detect();
    auto runtime = make_runtime("crun", dir + "/state", *cgroups);
    ASSERT_TRUE(runtime) << runtime.error().message;
    UniqueFd cancel(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    ASSERT_TRUE(cancel);
    std::thread canceller([&] {
        // Once the runtime's output has ended: the exec is past its read loop.
        auto until = std::chrono::steady_clock::now() + 20s;
        struct stat st {};
        while (::stat((dir + "/closed").c_str(), &st) != 0 &&
               std::chrono::steady_clock::now() < until)
            std::this_thread::sleep_for(10ms);
        std::uint64_t one = 1;
        (void)!::write(cancel.get(), &one, sizeof one);
    });
    auto began = std::chrono::steady_clock::now();
    auto r = (*runtime)->exec("task", {"true"}, dir + "/exec.pid", 30s, 4096, cancel.get());
    auto took = std::chrono::steady_clock::now() - began;
    canceller.join();
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, Errc::unavailable) << r.error().message;
    EXPECT_LT(took, 10s);
}
