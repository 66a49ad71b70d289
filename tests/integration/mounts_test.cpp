// Mounts through the whole cluster (cluster_fixture.h), driven by the docker CLI against cofferd:
// a tmpfs with its size, mode and read-only flag, a host bind, named volumes that outlive their
// tasks, and `docker volume ls / inspect / rm` answered from what the nodes report. Every effect
// is checked inside the task: it prints its /proc/self/mountinfo and what it reads.
#include <fmt/format.h>

#include <boost/json.hpp>

#include <fstream>
#include <sstream>

#include "cluster_fixture.h"

using namespace coffer;
using namespace coffer::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

std::string id_of(const json::object& o) {
    return std::string(o.at("ID").as_string());
}

// The fields of the mountinfo line for mount point `where` ("" when there is none):
// "<options> - <fstype> <source> <super options>".
std::string mount_line(const std::string& log, const std::string& where) {
    std::istringstream in(log);
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream f(line);
        std::string id, parent, dev, root, point, options;
        if (!(f >> id >> parent >> dev >> root >> point >> options)) continue;
        if (point != where) continue;
        auto dash = line.find(" - ");
        return dash == std::string::npos ? options : options + line.substr(dash);
    }
    return "";
}

bool has_option(std::string_view list, std::string_view option) {
    std::size_t start = 0;
    while (start <= list.size()) {
        auto end = list.find_first_of(", ", start);
        if (list.substr(start, end == list.npos ? list.npos : end - start) == option) return true;
        if (end == list.npos) break;
        start = end + 1;
    }
    return false;
}

class Mounts : public ClusterTest {
  protected:
    void SetUp() override {
        ClusterTest::SetUp();
        if (IsSkipped() || HasFatalFailure()) return;
        if (!have_docker()) GTEST_SKIP() << "no docker CLI on this machine";
    }

    CliResult docker(std::vector<std::string> args) {
        args.insert(args.begin(), "docker");
        return run_program(args, "",
                           {"DOCKER_HOST=" + daemon_->host(),
                            "DOCKER_CONFIG=" + (dir_.path() / "docker-config").string()});
    }

    // A service on node-a whose one task runs script, then prints PRINTED and waits.
    void create(const std::string& name, std::vector<std::string> options,
                const std::string& script) {
        std::vector<std::string> args{
            "service", "create", "-d", "--name", name, "--constraint", "node.hostname==node-a"};
        args.insert(args.end(), options.begin(), options.end());
        args.insert(args.end(),
                    {"busybox", "sh", "-c", script + "; echo PRINTED; exec sleep 100000"});
        auto r = docker(args);
        ASSERT_EQ(r.status, 0) << r.err;
    }

    // What the service's running task printed, once it printed all of it.
    std::string output_of(const std::string& service, std::string* task_id = nullptr) {
        std::string text;
        EXPECT_TRUE(wait_converged(service, 1, a_->node_id())) << a_->err();
        auto tasks = running(service);
        if (tasks.empty()) return "";
        auto id = id_of(tasks.front());
        if (task_id) *task_id = id;
        EXPECT_TRUE(wait_until(
            [&] {
                text = a_->task_log(id);
                return text.find("PRINTED") != std::string::npos;
            },
            20s))
            << text;
        return text;
    }

    // The error of the service's latest task once it was rejected.
    std::string rejection(const std::string& service) {
        std::string err;
        EXPECT_TRUE(wait_until(
            [&] {
                for (const auto& t : tasks(service)) {
                    const auto& st = t.at("Status").as_object();
                    if (st.at("State").as_string() == "rejected" && st.contains("Err")) {
                        err = std::string(st.at("Err").as_string());
                        return true;
                    }
                }
                return false;
            },
            30s));
        return err;
    }

    bool service_gone(const std::string& service) {
        auto r = docker({"service", "rm", service});
        EXPECT_EQ(r.status, 0) << r.err;
        return wait_until([&] { return running(service).empty() && tasks(service).empty(); }, 30s);
    }
};

TEST_F(Mounts, ATmpfsHasItsSizeModeAndFlagsInsideTheTask) {
    create("tmp",
           {"--mount", "type=tmpfs,target=/scratch,tmpfs-size=1048576,tmpfs-mode=0750", "--mount",
            "type=tmpfs,target=/locked,readonly"},
           "cat /proc/self/mountinfo; stat -c 'MODE %a %n' /scratch /locked; "
           "touch /scratch/ok && echo SCRATCH-WRITABLE; "
           "touch /locked/x 2>/dev/null || echo LOCKED-READONLY");
    auto out = output_of("tmp");
    auto scratch = mount_line(out, "/scratch");
    ASSERT_FALSE(scratch.empty()) << out;
    EXPECT_NE(scratch.find(" - tmpfs "), std::string::npos) << scratch;
    EXPECT_TRUE(has_option(scratch, "size=1024k")) << scratch;
    EXPECT_TRUE(has_option(scratch, "mode=750")) << scratch;
    EXPECT_TRUE(has_option(scratch, "nosuid") && has_option(scratch, "nodev") &&
                has_option(scratch, "noexec"))
        << scratch;
    EXPECT_TRUE(has_option(scratch, "rw")) << scratch;
    auto locked = mount_line(out, "/locked");
    ASSERT_FALSE(locked.empty()) << out;
    EXPECT_TRUE(has_option(locked, "ro")) << locked;
    // 1777 when unset (the kernel shows a tmpfs's mode only when it is not its default).
    EXPECT_NE(out.find("MODE 1777 /locked"), std::string::npos) << out;
    EXPECT_NE(out.find("MODE 750 /scratch"), std::string::npos) << out;
    EXPECT_NE(out.find("SCRATCH-WRITABLE"), std::string::npos) << out;
    EXPECT_NE(out.find("LOCKED-READONLY"), std::string::npos) << out;
}

TEST_F(Mounts, ABindShowsTheHostDirectoryAndHonoursReadOnly) {
    auto src = dir_.path() / "bind-source";
    fs::create_directories(src);
    std::ofstream(src / "hello") << "from the host\n";
    create("bind",
           {"--mount", fmt::format("type=bind,source={},target=/data", src.string()), "--mount",
            fmt::format("type=bind,source={},target=/data-ro,readonly", src.string())},
           "cat /proc/self/mountinfo; cat /data/hello; echo written > /data/new; "
           "touch /data-ro/x 2>/dev/null || echo BIND-READONLY");
    auto out = output_of("bind");
    EXPECT_NE(out.find("from the host"), std::string::npos) << out;
    EXPECT_NE(out.find("BIND-READONLY"), std::string::npos) << out;
    EXPECT_TRUE(has_option(mount_line(out, "/data-ro"), "ro")) << out;
    EXPECT_TRUE(has_option(mount_line(out, "/data"), "rw")) << out;
    // The write went to the host's directory.
    std::ifstream written(src / "new");
    std::string line;
    std::getline(written, line);
    EXPECT_EQ(line, "written");
}

TEST_F(Mounts, ABindOfTheAgentsOwnDirectoriesOrOfNothingIsRejected) {
    create("bind-agent",
           {"--mount", fmt::format("type=bind,source={},target=/data", a_->data.string())},
           "ls /data");
    EXPECT_NE(rejection("bind-agent").find("node agent's directory"), std::string::npos);
    // A parent of the agent's directories would show its secrets and task layers too.
    create("bind-parent",
           {"--mount", fmt::format("type=bind,source={},target=/data", dir_.path().string())},
           "ls /data");
    EXPECT_NE(rejection("bind-parent").find("node agent's directory"), std::string::npos);
    create("bind-missing", {"--mount", "type=bind,source=/nonexistent/coffer-test,target=/data"},
           "ls /data");
    EXPECT_NE(rejection("bind-missing").find("bind source path does not exist"), std::string::npos);
}

TEST_F(Mounts, RequestsForWhatCofferDoesNotDoAreRefused) {
    auto r = docker({"service", "create", "-d", "--name", "x", "--mount",
                     "type=volume,source=v,target=/v,volume-driver=nfs", "busybox"});
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.err.find("DriverConfig.Name is not supported by coffer"), std::string::npos)
        << r.err;
    r = docker({"service", "create", "-d", "--name", "x", "--mount",
                "type=bind,source=/tmp,target=/v,bind-propagation=rshared", "busybox"});
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.err.find("Propagation"), std::string::npos) << r.err;
    r = docker({"service", "create", "-d", "--name", "x", "--mount", "type=tmpfs,target=relative",
                "busybox"});
    EXPECT_NE(r.status, 0);
    r = docker({"service", "create", "-d", "--name", "x", "--mount",
                "type=volume,source=v,target=/etc", "busybox"});
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.err.find("would hide the task's /etc/hosts"), std::string::npos) << r.err;
    r = docker({"volume", "create", "v"});
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.err.find("created on the nodes by the tasks that mount them"), std::string::npos)
        << r.err;
    EXPECT_TRUE(tasks("x").empty());
}

// A database's data survives its task being replaced, and the volume is listed, inspected and
// removed through the docker CLI.
TEST_F(Mounts, AVolumeOutlivesItsTaskAndIsRemovedOnlyWhenUnused) {
    create("db", {"--mount", "type=volume,source=dbdata,target=/data,volume-label=app=db"},
           "if [ -f /data/first ]; then echo SEEN $(cat /data/first); else echo FRESH; "
           "echo $HOSTNAME > /data/first; fi");
    std::string first_task;
    auto out = output_of("db", &first_task);
    EXPECT_NE(out.find("FRESH"), std::string::npos) << out;
    auto writer = first_task.substr(0, 12);

    auto r = docker({"service", "update", "-d", "--force", "db"});
    ASSERT_EQ(r.status, 0) << r.err;
    std::string second_task;
    ASSERT_TRUE(wait_until(
        [&] {
            auto t = running("db");
            return t.size() == 1 && id_of(t.front()) != first_task;
        },
        60s));
    out = output_of("db", &second_task);
    EXPECT_NE(second_task, first_task);
    EXPECT_NE(out.find("SEEN " + writer), std::string::npos) << out;

    // Listed and inspected as the node reported it.
    ASSERT_TRUE(wait_until(
        [&] {
            r = docker({"volume", "ls", "-q"});
            return r.status == 0 && r.out.find("dbdata") != std::string::npos;
        },
        20s))
        << r.out << r.err;
    r = docker({"volume", "inspect", "dbdata"});
    ASSERT_EQ(r.status, 0) << r.err;
    auto inspected = json::parse(r.out).as_array().at(0).as_object();
    EXPECT_EQ(inspected.at("Driver").as_string(), "local");
    EXPECT_EQ(inspected.at("Labels").at("app").as_string(), "db");
    EXPECT_EQ(std::string(inspected.at("Mountpoint").as_string()),
              (a_->data / "volumes" / "dbdata" / "_data").string());
    std::ifstream on_disk(a_->data / "volumes" / "dbdata" / "_data" / "first");
    std::string line;
    std::getline(on_disk, line);
    EXPECT_EQ(line, writer);

    // In use: refused in Docker's words, naming the task, and nothing is removed.
    r = docker({"volume", "rm", "dbdata"});
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.err.find("remove dbdata: volume is in use - [" + second_task + "]"),
              std::string::npos)
        << r.err;
    EXPECT_TRUE(fs::exists(a_->data / "volumes" / "dbdata" / "_data" / "first"));

    ASSERT_TRUE(service_gone("db"));
    // Refused while the task is still being torn down on its node; removed once it is gone.
    EXPECT_TRUE(wait_until(
        [&] {
            r = docker({"volume", "rm", "dbdata"});
            return r.status == 0;
        },
        30s))
        << r.err;
    EXPECT_FALSE(fs::exists(a_->data / "volumes" / "dbdata"));
    r = docker({"volume", "ls", "-q"});
    EXPECT_EQ(r.out.find("dbdata"), std::string::npos) << r.out;
    r = docker({"volume", "inspect", "dbdata"});
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.err.find("no such volume"), std::string::npos) << r.err;
}

TEST_F(Mounts, ANewVolumeGetsTheImagesContentUnlessNoCopy) {
    create("copy", {"--mount", "type=volume,source=seed-copy,target=/usr/share/seed"},
           "cat /usr/share/seed/hello");
    auto out = output_of("copy");
    EXPECT_NE(out.find("seeded"), std::string::npos) << out;
    create("nocopy",
           {"--mount", "type=volume,source=seed-nocopy,target=/usr/share/seed,volume-nocopy"},
           "ls -A /usr/share/seed | wc -l | sed 's/^/ENTRIES /'");
    out = output_of("nocopy");
    EXPECT_NE(out.find("ENTRIES 0"), std::string::npos) << out;
    // An anonymous volume is the task's own: it gets the image's content too.
    create("anon", {"--mount", "type=volume,target=/usr/share/seed"}, "cat /usr/share/seed/hello");
    out = output_of("anon");
    EXPECT_NE(out.find("seeded"), std::string::npos) << out;
}

}  // namespace
