// The FUSE secrets filesystem against the real /dev/fuse (as root; skipped otherwise).
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "coffer/base/error.h"
#include "coffer/base/mount.h"
#include "coffer/base/unique_fd.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/fuse_mount/fuse_mount.h"

namespace coffer::fuse_mount {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr auto deadline = 10s;

// A temporary directory, removed at the end (after the mounts in it are gone).
class TempDir {
  public:
    TempDir() {
        char tmpl[] = "/tmp/coffer-fuse-XXXXXX";
        if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp");
        path_ = tmpl;
        ::chmod(path_.c_str(), 0755);  // other users' readers reach the mounts
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    ~TempDir() {
        for (const auto& m : mounts_under(path_)) ::umount2(m.c_str(), MNT_DETACH);
        remove_tree(path_);
    }
    const std::string& path() const { return path_; }
    std::string sub(const std::string& name) const {
        auto p = path_ + "/" + name;
        ::mkdir(p.c_str(), 0755);
        return p;
    }

  private:
    std::string path_;
};

// A forked child running fn (which returns its exit code); killed and reaped if still running
// when destroyed. fn may only make plain syscalls: the parent has threads. The child keeps no
// descriptor but stdio and keep (as fd 3): one of a mount's /dev/fuse would keep its
// connection alive.
class Forked {
  public:
    explicit Forked(const std::function<int()>& fn, int keep = -1) {
        pid_ = ::fork();
        if (pid_ < 0) throw std::runtime_error("fork");
        if (pid_ == 0) {
            if (keep >= 0 && ::dup2(keep, 3) != 3) ::_exit(203);
            ::close_range(keep >= 0 ? 4 : 3, ~0u, 0);
            ::_exit(fn());
        }
        pidfd_ = UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0)));
    }
    Forked(const Forked&) = delete;
    Forked& operator=(const Forked&) = delete;
    ~Forked() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
    }
    int pid() const { return pid_; }
    // The exit code, or -1 when the child has not exited within timeout (it is killed then).
    int wait(std::chrono::milliseconds timeout = deadline) {
        pollfd p{pidfd_.get(), POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return -1;
        int status = 0;
        ::waitpid(pid_, &status, 0);
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }

  private:
    int pid_ = -1;
    UniqueFd pidfd_;
};

// Blocks the reads that reach it until opened; opened at the latest when the test ends, before
// the server's threads are joined.
class Gate {
  public:
    void pass() {
        std::unique_lock lock(mu_);
        ++waiting_;
        cv_.notify_all();
        cv_.wait(lock, [&] { return open_; });
    }
    bool wait_for_reader() {
        std::unique_lock lock(mu_);
        return cv_.wait_for(lock, deadline, [&] { return waiting_ > 0; });
    }
    void open() {
        std::lock_guard lock(mu_);
        open_ = true;
        cv_.notify_all();
    }

  private:
    std::mutex mu_;
    std::condition_variable cv_;
    int waiting_ = 0;
    bool open_ = false;
};

struct OpenOnExit {
    Gate& gate;
    ~OpenOnExit() { gate.open(); }
};

std::string read_all(const std::string& path, std::size_t chunk = 65536) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw std::runtime_error(path + ": " + std::strerror(errno));
    std::string out;
    std::string buf(chunk, '\0');
    while (true) {
        auto n = ::read(fd.get(), buf.data(), buf.size());
        if (n < 0) throw std::runtime_error(path + ": " + std::strerror(errno));
        if (n == 0) return out;
        out.append(buf.data(), static_cast<std::size_t>(n));
    }
}

// errno of reading path in a child as uid:gid, 0 when it read.
int read_as(const std::string& path, uid_t uid, gid_t gid) {
    Forked child([&] {
        if (::setgroups(0, nullptr) != 0 || ::setresgid(gid, gid, gid) != 0 ||
            ::setresuid(uid, uid, uid) != 0)
            return 200;
        int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) return errno;
        char c;
        return ::read(fd, &c, 1) < 0 ? errno : 0;
    });
    return child.wait();
}

bool is_mounted(const std::string& dir) {
    for (const auto& m : read_mountinfo())
        if (m.mount_point == dir) return true;
    return false;
}

Bytes bytes_of(std::initializer_list<std::pair<std::string, std::string>> list) {
    Bytes b;
    for (const auto& [id, value] : list) b.emplace(id, crypto::SecureBuffer::copy_of(value));
    return b;
}

class FuseMountTest : public ::testing::Test {
  protected:
    void SetUp() override {
        if (::geteuid() != 0) GTEST_SKIP() << "FUSE mounts need root";
        if (UniqueFd fd(::open("/dev/fuse", O_RDWR | O_CLOEXEC)); !fd)
            GTEST_SKIP() << "no /dev/fuse";
        crypto::init();
    }

    TempDir tmp;
    FuseServer server{2, tmp.path() + "/fusectl"};
};

TEST_F(FuseMountTest, ServesFilesWithTheirOwnersModesAndSizes) {
    std::string big(300000, '\0');
    for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7 + i / 251);
    auto bytes = bytes_of({{"s1", "hunter2"}, {"s2", big}, {"s3", ""}});
    std::vector<File> files = {{"s1", "run/db_pass", 1000, 1001, 0440},
                               {"s2", "run/tls/key.pem", 0, 0, 0400},
                               {"s3", "abs/0", 5, 6, 0444}};
    auto dir = tmp.sub("m");
    auto m = FuseMount::create(server, dir, files, bytes, {});

    struct stat st {};
    ASSERT_EQ(::stat((dir + "/run/db_pass").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode, S_IFREG | 0440);
    EXPECT_EQ(st.st_uid, 1000u);
    EXPECT_EQ(st.st_gid, 1001u);
    EXPECT_EQ(st.st_size, 7);
    ASSERT_EQ(::stat((dir + "/run/tls/key.pem").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode, S_IFREG | 0400);
    EXPECT_EQ(st.st_size, static_cast<off_t>(big.size()));
    ASSERT_EQ(::stat((dir + "/abs/0").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 5u);
    EXPECT_EQ(st.st_size, 0);
    for (const auto* d : {"", "/run", "/run/tls", "/abs"}) {
        ASSERT_EQ(::stat((dir + d).c_str(), &st), 0) << d;
        EXPECT_EQ(st.st_mode, S_IFDIR | 0755) << d;
        EXPECT_EQ(st.st_uid, 0u) << d;
    }
    EXPECT_EQ(read_all(dir + "/run/db_pass"), "hunter2");
    EXPECT_EQ(read_all(dir + "/run/tls/key.pem", 4096), big);
    EXPECT_EQ(read_all(dir + "/abs/0"), "");
    EXPECT_EQ(list_dir(dir + "/run"), (std::vector<std::string>{"db_pass", "tls"}));
    EXPECT_EQ(::access((dir + "/run/nothing").c_str(), F_OK), -1);
    EXPECT_EQ(errno, ENOENT);

    bool found = false;
    for (const auto& mi : read_mountinfo()) {
        if (mi.mount_point != dir) continue;
        found = true;
        EXPECT_EQ(mi.fstype, fstype);
        for (const auto* o : {"ro", "nosuid", "nodev", "noexec"})
            EXPECT_NE(("," + mi.options + ",").find(std::string(",") + o + ","), std::string::npos)
                << mi.options;
        for (const auto* o : {"default_permissions", "allow_other"})
            EXPECT_NE(mi.super_options.find(o), std::string::npos) << mi.super_options;
    }
    EXPECT_TRUE(found);
    m.unmount();
    EXPECT_FALSE(is_mounted(dir));
}

TEST_F(FuseMountTest, ShiftsOwnersForAUserNamespace) {
    auto bytes = bytes_of({{"s1", "x"}});
    FuseMount::Options o;
    o.uid_shift = 100000;
    o.gid_shift = 200000;
    auto dir = tmp.sub("m");
    auto m = FuseMount::create(server, dir, {{"s1", "run/a", 1000, 1001, 0400}}, bytes, o);
    struct stat st {};
    ASSERT_EQ(::stat((dir + "/run/a").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 101000u);
    EXPECT_EQ(st.st_gid, 201001u);
    ASSERT_EQ(::stat((dir + "/run").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 0u);
}

TEST_F(FuseMountTest, KernelChecksOwnerAndMode) {
    auto bytes = bytes_of({{"s1", "x"}});
    std::vector<File> files = {{"s1", "root_only", 0, 0, 0400},
                               {"s1", "user_only", 1000, 1000, 0400},
                               {"s1", "group", 0, 1001, 0440},
                               {"s1", "everyone", 0, 0, 0444}};
    auto dir = tmp.sub("m");
    auto m = FuseMount::create(server, dir, files, bytes, {});
    EXPECT_EQ(read_as(dir + "/root_only", 1000, 1000), EACCES);
    EXPECT_EQ(read_as(dir + "/user_only", 1000, 1000), 0);
    EXPECT_EQ(read_as(dir + "/user_only", 1002, 1002), EACCES);
    EXPECT_EQ(read_as(dir + "/group", 1002, 1001), 0);
    EXPECT_EQ(read_as(dir + "/group", 1002, 1002), EACCES);
    EXPECT_EQ(read_as(dir + "/everyone", 1003, 1003), 0);
}

// errno of op, 0 when it succeeded.
int error_of(int result) {
    return result < 0 ? errno : 0;
}

void expect_writes_refused(const std::string& dir) {
    auto f = dir + "/run/a";
    auto refused = [](int e) { return e == EROFS || e == EPERM; };
    EXPECT_PRED1(refused, error_of(::open(f.c_str(), O_WRONLY | O_CLOEXEC)));
    EXPECT_PRED1(refused, error_of(::open(f.c_str(), O_RDWR | O_CLOEXEC)));
    EXPECT_PRED1(refused, error_of(::open(f.c_str(), O_RDONLY | O_TRUNC | O_CLOEXEC)));
    EXPECT_PRED1(refused, error_of(::open((dir + "/run/new").c_str(),
                                          O_CREAT | O_WRONLY | O_CLOEXEC, 0600)));
    EXPECT_PRED1(refused, error_of(::mkdir((dir + "/run/d").c_str(), 0755)));
    EXPECT_PRED1(refused, error_of(::mknod((dir + "/run/p").c_str(), S_IFIFO | 0600, 0)));
    EXPECT_PRED1(refused, error_of(::unlink(f.c_str())));
    EXPECT_PRED1(refused, error_of(::rmdir((dir + "/run/sub").c_str())));
    EXPECT_PRED1(refused, error_of(::rename(f.c_str(), (dir + "/run/b").c_str())));
    EXPECT_PRED1(refused, error_of(::link(f.c_str(), (dir + "/run/b").c_str())));
    EXPECT_PRED1(refused, error_of(::symlink("a", (dir + "/run/b").c_str())));
    EXPECT_PRED1(refused, error_of(::chmod(f.c_str(), 0666)));
    EXPECT_PRED1(refused, error_of(::chown(f.c_str(), 1, 1)));
    EXPECT_PRED1(refused, error_of(::truncate(f.c_str(), 0)));
    EXPECT_PRED1(refused, error_of(::utimensat(AT_FDCWD, f.c_str(), nullptr, 0)));
    EXPECT_PRED1(refused, error_of(::setxattr(f.c_str(), "user.x", "1", 1, 0)));
    EXPECT_PRED1(refused, error_of(::removexattr(f.c_str(), "user.x")));
    EXPECT_EQ(::getxattr(f.c_str(), "user.x", nullptr, 0), -1);
    EXPECT_EQ(errno, ENODATA);
    EXPECT_EQ(::listxattr(f.c_str(), nullptr, 0), 0);
    {
        UniqueFd fd(::open(f.c_str(), O_RDONLY | O_CLOEXEC));
        ASSERT_TRUE(fd);
        EXPECT_EQ(::write(fd.get(), "x", 1), -1);
        EXPECT_EQ(errno, EBADF);
        EXPECT_EQ(::fallocate(fd.get(), 0, 0, 10), -1);
        EXPECT_EQ(::ftruncate(fd.get(), 0), -1);
    }
    EXPECT_EQ(read_all(f), "secret");
    struct stat st {};
    ASSERT_EQ(::stat(f.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode, S_IFREG | 0444);
    EXPECT_EQ(list_dir(dir + "/run"), (std::vector<std::string>{"a", "sub"}));
}

TEST_F(FuseMountTest, RefusesEveryWrite) {
    auto bytes = bytes_of({{"s1", "secret"}});
    auto dir = tmp.sub("m");
    auto m = FuseMount::create(server, dir, {{"s1", "run/a"}, {"s1", "run/sub/b"}}, bytes, {});
    expect_writes_refused(dir);
}

// The filesystem refuses writes by itself, not only because the mount is read-only.
TEST_F(FuseMountTest, RefusesEveryWriteOnAWritableMount) {
    auto bytes = bytes_of({{"s1", "secret"}});
    auto dir = tmp.sub("m");
    auto m = FuseMount::create(server, dir, {{"s1", "run/a"}, {"s1", "run/sub/b"}}, bytes, {});
    if (::mount(nullptr, dir.c_str(), nullptr, MS_REMOUNT | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                nullptr) != 0 ||
        ::mount(nullptr, dir.c_str(), nullptr,
                MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0)
        GTEST_SKIP() << "cannot remount writable: " << std::strerror(errno);
    expect_writes_refused(dir);
}

TEST_F(FuseMountTest, ReplaceKeepsOpenFilesOnTheirBytes) {
    auto bytes = bytes_of({{"v1", "old"}, {"v2", "the new value, longer"}, {"v3", "n"}});
    auto dir = tmp.sub("m");
    auto m = FuseMount::create(server, dir, {{"v1", "run/a", 0, 0, 0444}}, bytes, {});
    auto f = dir + "/run/a";
    UniqueFd before(::open(f.c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(before);

    m.replace({{"v2", "run/a", 7, 8, 0440}}, bytes);
    struct stat st {};
    ASSERT_EQ(::stat(f.c_str(), &st), 0);
    EXPECT_EQ(st.st_size, 21);
    EXPECT_EQ(st.st_uid, 7u);
    EXPECT_EQ(st.st_mode, S_IFREG | 0440);
    EXPECT_EQ(read_all(f), "the new value, longer");
    char buf[64] = {};
    EXPECT_EQ(::pread(before.get(), buf, sizeof buf, 0), 3);
    EXPECT_EQ(std::string(buf, 3), "old");

    UniqueFd middle(::open(f.c_str(), O_RDONLY | O_CLOEXEC));
    m.replace({{"v3", "run/a", 7, 8, 0440}}, bytes);
    EXPECT_EQ(read_all(f), "n");
    EXPECT_EQ(::pread(middle.get(), buf, sizeof buf, 0), 21);
    EXPECT_EQ(::pread(before.get(), buf, sizeof buf, 0), 3);

    EXPECT_THROW(m.replace({{"v9", "run/a"}}, bytes), ErrorException);
    EXPECT_THROW(m.replace({{"v1", "run/b"}}, bytes), ErrorException);
    EXPECT_THROW(m.replace({}, bytes), ErrorException);
    EXPECT_EQ(read_all(f), "n");

    // Reads count for the bytes they got: a reader that opened before a replace for the old.
    auto r = m.reads();
    ASSERT_EQ(r.size(), 3u);
    EXPECT_EQ(r[0].secret_id, "v1");
    EXPECT_EQ(r[0].opens, 1u);
    EXPECT_EQ(r[0].reads, 2u);
    EXPECT_EQ(r[1].secret_id, "v2");
    EXPECT_EQ(r[1].opens, 2u);
    EXPECT_EQ(r[1].reads, 2u);
    EXPECT_EQ(r[2].secret_id, "v3");
    EXPECT_EQ(r[2].opens, 2u);
    EXPECT_EQ(r[2].reads, 2u);
    for (const auto& e : r) EXPECT_EQ(e.path, "run/a");
    EXPECT_GE(r[0].first_read, r[1].first_read);  // the old reader read after the new one
}

// The kernel keeps a file's attributes; a replace drops them, so a new owner or mode holds
// from the next open.
TEST_F(FuseMountTest, ReplaceChangesWhoMayRead) {
    auto bytes = bytes_of({{"v1", "old"}, {"v2", "new"}});
    auto dir = tmp.sub("m");
    auto m = FuseMount::create(server, dir, {{"v1", "run/a", 1000, 1000, 0400}}, bytes, {});
    auto f = dir + "/run/a";
    EXPECT_EQ(read_as(f, 1000, 1000), 0);
    EXPECT_EQ(read_as(f, 1001, 1001), EACCES);

    m.replace({{"v2", "run/a", 1001, 1001, 0400}}, bytes);
    EXPECT_EQ(read_as(f, 1000, 1000), EACCES);
    EXPECT_EQ(read_as(f, 1001, 1001), 0);
    struct stat st {};
    ASSERT_EQ(::stat(f.c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 1001u);
}

TEST_F(FuseMountTest, ReadersNeverSeeAMixDuringReplaces) {
    const std::string a(200000, 'a');
    const std::string b(150001, 'b');
    auto bytes = bytes_of({{"a", a}, {"b", b}});
    auto dir = tmp.sub("m");
    auto m = FuseMount::create(server, dir, {{"a", "run/s"}}, bytes, {});
    std::atomic<bool> stop{false};
    std::atomic<int> reads{0}, bad{0};
    std::thread reader([&] {
        while (!stop) {
            try {
                auto got = read_all(dir + "/run/s", 8192);
                if (got != a && got != b) ++bad;
            } catch (const std::exception&) {
                ++bad;
            }
            ++reads;
        }
    });
    for (int i = 0; i < 300; ++i) m.replace({{i % 2 ? "a" : "b", "run/s"}}, bytes);
    auto until = Clock::now() + deadline;
    while (reads < 20 && Clock::now() < until) std::this_thread::yield();
    stop = true;
    reader.join();
    EXPECT_EQ(bad, 0);
    EXPECT_GE(reads, 20);
}

TEST_F(FuseMountTest, CountsReadsPerFile) {
    auto bytes = bytes_of({{"s1", "abc"}, {"s2", "def"}});
    auto dir = tmp.sub("m");
    auto m = FuseMount::create(server, dir, {{"s1", "run/a"}, {"s2", "run/b"}}, bytes, {});
    auto before = std::chrono::system_clock::now();
    EXPECT_EQ(read_all(dir + "/run/a"), "abc");
    EXPECT_EQ(read_all(dir + "/run/a"), "abc");
    auto r = m.reads();
    ASSERT_EQ(r.size(), 2u);
    EXPECT_EQ(r[0].path, "run/a");
    EXPECT_EQ(r[0].opens, 2u);
    EXPECT_EQ(r[0].reads, 2u);
    EXPECT_GE(r[0].first_read, before);
    EXPECT_GE(r[0].last_read, r[0].first_read);
    EXPECT_LE(r[0].last_read, std::chrono::system_clock::now());
    EXPECT_EQ(r[1].opens, 0u);
    EXPECT_EQ(r[1].reads, 0u);
    EXPECT_EQ(r[1].first_read, std::chrono::system_clock::time_point{});
}

TEST_F(FuseMountTest, TeardownEndsAReaderBlockedMidRead) {
    Gate gate;
    OpenOnExit opener{gate};
    auto bytes = bytes_of({{"s1", "abc"}});
    FuseMount::Options o;
    o.before_read = [&](std::string_view) { gate.pass(); };
    auto dir = tmp.sub("m");
    auto m = FuseMount::create(server, dir, {{"s1", "run/a"}}, bytes, o);
    auto path = dir + "/run/a";
    Forked reader([&] {
        int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) return 201;
        char c;
        return ::read(fd, &c, 1) < 0 ? errno : 0;
    });
    ASSERT_TRUE(gate.wait_for_reader());

    auto start = Clock::now();
    m.unmount();
    EXPECT_LT(Clock::now() - start, 2s);
    EXPECT_FALSE(is_mounted(dir));
    auto e = reader.wait();
    EXPECT_TRUE(e == ENOTCONN || e == ECONNABORTED) << e;
    EXPECT_TRUE(m.reads().empty());
}

TEST_F(FuseMountTest, OneBlockedMountDoesNotStopAnother) {
    Gate gate;
    OpenOnExit opener{gate};
    auto bytes = bytes_of({{"s1", "abc"}});
    FuseMount::Options stuck;
    stuck.before_read = [&](std::string_view) { gate.pass(); };
    auto dir1 = tmp.sub("m1");
    auto dir2 = tmp.sub("m2");
    auto m1 = FuseMount::create(server, dir1, {{"s1", "a"}}, bytes, stuck);
    auto m2 = FuseMount::create(server, dir2, {{"s1", "a"}}, bytes, {});
    Forked blocked([&] {
        int fd = ::open((dir1 + "/a").c_str(), O_RDONLY | O_CLOEXEC);
        char c;
        return fd >= 0 && ::read(fd, &c, 1) == 1 ? 0 : 1;
    });
    ASSERT_TRUE(gate.wait_for_reader());
    // A reader stopped between reads holds nothing of the server either.
    UniqueFd paused(::open((dir2 + "/a").c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(paused);
    char c;
    ASSERT_EQ(::read(paused.get(), &c, 1), 1);
    Forked other([&] {
        for (int i = 0; i < 100; ++i) {
            int fd = ::open((dir2 + "/a").c_str(), O_RDONLY | O_CLOEXEC);
            char buf[8];
            if (fd < 0 || ::read(fd, buf, sizeof buf) != 3) return 1;
            ::close(fd);
        }
        return 0;
    });
    EXPECT_EQ(other.wait(), 0);
    gate.open();
    EXPECT_EQ(blocked.wait(), 0);
}

// A helper run as its own process by the next test: mounts, says so, and waits to be killed.
TEST(FuseMountHelper, ServeUntilKilled) {
    const char* dir = std::getenv("COFFER_FUSE_HELPER_DIR");
    const char* ready = std::getenv("COFFER_FUSE_HELPER_FD");
    if (dir == nullptr || ready == nullptr) GTEST_SKIP() << "a helper for LeftoverIsRemoved";
    crypto::init();
    FuseServer server(1);
    auto bytes = bytes_of({{"s1", "abc"}});
    auto m = FuseMount::create(server, dir, {{"s1", "run/a"}}, bytes, {});
    ASSERT_EQ(::write(std::atoi(ready), "1", 1), 1);
    ::pause();
}

TEST_F(FuseMountTest, LeftoverOfAKilledServerIsRemoved) {
    auto dir = tmp.sub("m");
    int p[2];
    ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
    UniqueFd rd(p[0]), wr(p[1]);
    auto self = std::filesystem::read_symlink("/proc/self/exe").string();
    std::string dir_env = "COFFER_FUSE_HELPER_DIR=" + dir;
    std::string fd_env = "COFFER_FUSE_HELPER_FD=3";
    Forked helper(
        [&] {
            char* env[] = {dir_env.data(), fd_env.data(), nullptr};
            ::execle(self.c_str(), "fuse_mount_helper",
                     "--gtest_filter=FuseMountHelper.ServeUntilKilled", nullptr, env);
            return 202;
        },
        wr.get());
    wr.reset();
    pollfd pf{rd.get(), POLLIN, 0};
    ASSERT_EQ(::poll(&pf, 1, 10000), 1);
    char c = 0;
    ASSERT_EQ(::read(rd.get(), &c, 1), 1);
    ASSERT_TRUE(is_mounted(dir));
    EXPECT_EQ(read_all(dir + "/run/a"), "abc");

    ::kill(helper.pid(), SIGKILL);
    EXPECT_EQ(helper.wait(), 128 + SIGKILL);
    EXPECT_TRUE(is_mounted(dir));
    Forked reader([&] {
        int fd = ::open((dir + "/run/a").c_str(), O_RDONLY | O_CLOEXEC);
        return fd < 0 ? errno : 0;
    });
    EXPECT_NE(reader.wait(), -1);  // answered (an error), did not hang

    EXPECT_EQ(remove_leftover_fuse_mounts(server, tmp.path()), 1u);
    EXPECT_FALSE(is_mounted(dir));
    struct stat st {};
    EXPECT_EQ(::stat((dir + "/run").c_str(), &st), -1);
    EXPECT_EQ(remove_leftover_fuse_mounts(server, tmp.path()), 0u);
}

TEST_F(FuseMountTest, RefusesBadFiles) {
    auto bytes = bytes_of({{"s1", "abc"}});
    auto dir = tmp.sub("m");
    for (auto path : {"", "/a", "a/../b", "./a", "a//b", "a/"})
        EXPECT_THROW(FuseMount::create(server, dir, {{"s1", path}}, bytes, {}), ErrorException)
            << path;
    EXPECT_THROW(FuseMount::create(server, dir, {{"s1", "a"}, {"s1", "a"}}, bytes, {}),
                 ErrorException);
    EXPECT_THROW(FuseMount::create(server, dir, {{"s1", "a"}, {"s1", "a/b"}}, bytes, {}),
                 ErrorException);
    EXPECT_THROW(FuseMount::create(server, dir, {{"s1", "a/b"}, {"s1", "a"}}, bytes, {}),
                 ErrorException);
    EXPECT_THROW(FuseMount::create(server, dir, {{"nope", "a"}}, bytes, {}), ErrorException);
    EXPECT_THROW(FuseMount::create(server, dir, {{"s1", "a", 0, 0, 04755}}, bytes, {}),
                 ErrorException);
    EXPECT_FALSE(is_mounted(dir));
}

}  // namespace
}  // namespace coffer::fuse_mount
