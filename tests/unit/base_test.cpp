#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <optional>
#include <thread>

#include <gtest/gtest.h>

#include "coffer/base/error.h"
#include "coffer/base/mount.h"
#include "coffer/base/process.h"
#include "coffer/base/sync.h"
#include "coffer/base/unique_fd.h"

using namespace coffer;

TEST(UniqueFd, ClosesOnDestruction) {
    int raw;
    {
        UniqueFd fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
        ASSERT_TRUE(fd);
        raw = fd.get();
    }
    EXPECT_EQ(::fcntl(raw, F_GETFD), -1);
    EXPECT_EQ(errno, EBADF);
}

TEST(UniqueFd, ReleaseGivesUpOwnership) {
    UniqueFd fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    int raw = fd.release();
    EXPECT_FALSE(fd);
    EXPECT_NE(::fcntl(raw, F_GETFD), -1);
    ::close(raw);
}

TEST(Result, HoldsValueOrError) {
    Result<int> good = 3;
    Result<int> bad = make_error(Errc::not_found, "secret x not found");
    EXPECT_TRUE(good.ok());
    EXPECT_EQ(*good, 3);
    EXPECT_FALSE(bad.ok());
    EXPECT_EQ(bad.error().code, Errc::not_found);
    EXPECT_THROW((void)bad.value(), ErrorException);
    EXPECT_EQ(http_status(Errc::already_exists), 409);
    EXPECT_EQ(http_status(Errc::locked), 503);
}

TEST(Child, ReportsExitStatus) {
    auto c = Child::spawn({.argv = {"sh", "-c", "exit 7"}});
    int status = c.wait();
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 7);
}

TEST(Child, KilledAndReapedWhenDropped) {
    int pid;
    {
        auto c = Child::spawn({.argv = {"sleep", "600"}});
        pid = c.pid();
        EXPECT_FALSE(c.wait_for(std::chrono::milliseconds(10)).has_value());
    }
    // Reaped: the pid no longer names our child.
    EXPECT_EQ(::waitpid(pid, nullptr, WNOHANG), -1);
    EXPECT_EQ(errno, ECHILD);
}

// A child of this process that was not spawned through Child: forked, it waits to be killed (or
// exits with exit_code at once), claimed before anything could reap it.
ChildClaim fork_child(std::optional<int> exit_code) {
    pid_t pid = ::fork();
    if (pid < 0) throw_errno("fork");
    if (pid == 0) {
        if (exit_code) ::_exit(*exit_code);
        for (;;) ::pause();
    }
    return ChildClaim(pid);
}

bool exited_within(int pidfd, std::chrono::milliseconds deadline) {
    struct pollfd p {
        pidfd, POLLIN, 0
    };
    return ::poll(&p, 1, static_cast<int>(deadline.count())) == 1;
}

TEST(Child, AdoptedChildIsKilledAndReapedWhenDropped) {
    int pid;
    {
        auto c = Child::adopt(fork_child(std::nullopt));
        pid = c.pid();
        ASSERT_GT(pid, 0);
        EXPECT_TRUE(c.running());
        EXPECT_FALSE(c.wait_for(std::chrono::milliseconds(10)).has_value());
    }
    EXPECT_EQ(::waitpid(pid, nullptr, WNOHANG), -1);
    EXPECT_EQ(errno, ECHILD);
}

TEST(Child, AdoptedChildReportsItsExitStatus) {
    auto c = Child::adopt(fork_child(5));
    int status = c.wait();
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 5);
    EXPECT_FALSE(c.running());
}

// Whoever takes the pidfd waits for the child; the Child keeps it claimed until it is dropped,
// then lets the claim go.
TEST(Child, ReleasedPidfdTakesTheWaitAndTheClaimEndsWithTheChild) {
    ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0);
    struct NotSubreaper {
        ~NotSubreaper() { ::prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0); }
    } restore;
    constexpr idtype_t by_pidfd = static_cast<idtype_t>(3);  // P_PIDFD

    // Dropped after the hand-over: neither killed nor reaped; the pidfd's waiter gets the status.
    UniqueFd handed;
    {
        auto c = Child::adopt(fork_child(7));
        handed = c.release_pidfd();
        EXPECT_FALSE(c.running());
        ASSERT_TRUE(exited_within(handed.get(), std::chrono::seconds(10)));
        EXPECT_EQ(reap_orphans(), 0);  // claimed
    }
    siginfo_t info{};
    ASSERT_EQ(::waitid(by_pidfd, static_cast<id_t>(handed.get()), &info, WEXITED), 0)
        << std::strerror(errno);
    EXPECT_EQ(info.si_code, CLD_EXITED);
    EXPECT_EQ(info.si_status, 7);

    // A released child nobody waited for is an orphan once its Child is gone.
    {
        auto c = Child::adopt(fork_child(0));
        handed = c.release_pidfd();
        ASSERT_TRUE(exited_within(handed.get(), std::chrono::seconds(10)));
        EXPECT_EQ(reap_orphans(), 0);
    }
    EXPECT_EQ(reap_orphans(), 1);
}

TEST(OwnedDir, RemovesItsDirectoryAndWhatIsInItWhenDropped) {
    char tmpl[] = "/tmp/coffer-base-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    std::string parent = tmpl;
    std::string path = parent + "/owned";
    {
        OwnedDir d(path, 0750);
        EXPECT_EQ(d.path(), path);
        struct stat st {};
        ASSERT_EQ(::stat(path.c_str(), &st), 0);
        EXPECT_TRUE(S_ISDIR(st.st_mode));
        make_dir(path + "/sub");
        UniqueFd f(::open((path + "/sub/file").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
        ASSERT_TRUE(f);
        ASSERT_EQ(::symlink("/", (path + "/link").c_str()), 0);  // removed, never followed
    }
    EXPECT_NE(::access(path.c_str(), F_OK), 0);
    EXPECT_EQ(::access("/", F_OK), 0);

    // Moved: only the last owner removes it.
    {
        OwnedDir a(path);
        OwnedDir b = std::move(a);
        EXPECT_TRUE(a.path().empty());
        { OwnedDir gone = std::move(a); }
        EXPECT_EQ(::access(path.c_str(), F_OK), 0);
        OwnedDir c;
        c = std::move(b);
        EXPECT_EQ(::access(path.c_str(), F_OK), 0);
        c.reset();
        EXPECT_NE(::access(path.c_str(), F_OK), 0);
    }

    // Released: left in place.
    {
        OwnedDir d(path);
        EXPECT_EQ(d.release(), path);
    }
    EXPECT_EQ(::access(path.c_str(), F_OK), 0);

    // An existing path is refused and left alone.
    try {
        OwnedDir twice(path);
        ADD_FAILURE() << "an existing directory was taken";
    } catch (const SystemError& e) {
        EXPECT_EQ(e.code(), EEXIST);
    }
    EXPECT_EQ(::access(path.c_str(), F_OK), 0);
    ASSERT_EQ(::rmdir(path.c_str()), 0);
    ASSERT_EQ(::rmdir(parent.c_str()), 0);
}

TEST(Sync, GuardsValue) {
    Sync<int> s(1);
    *s.lock() += 1;
    EXPECT_EQ(*s.read(), 2);
}

TEST(Child, GetsNoDescriptorBeyondStdio) {
    // Deliberately not close-on-exec: the child must still not see it.
    UniqueFd leaky(::open("/dev/null", O_RDONLY));
    ASSERT_TRUE(leaky);
    auto r =
        run_command({"/bin/sh", "-c",
                     fmt::format("test -e /proc/self/fd/{} && echo leaked; true", leaky.get())});
    EXPECT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(r.out, "");
}

// A program copied into sealed memory runs from there, in children that keep none of our
// descriptors, and the copy can be neither written nor resealed.
TEST(SealedProgram, RunsAndCannotBeChanged) {
    coffer::SealedProgram sh("/bin/sh");
    auto r = coffer::run_command({"sh", "-c", "echo from $0"}, sh.path());
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(r.out, "from sh\n");

    coffer::UniqueFd fd(::open(sh.path().c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(fd);
    EXPECT_EQ(::fcntl(fd.get(), F_GET_SEALS),
              F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE);
    EXPECT_NE(::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_FUTURE_WRITE), 0);
    coffer::UniqueFd writable(::open(sh.path().c_str(), O_WRONLY | O_CLOEXEC));
    if (writable) {
        EXPECT_LT(::write(writable.get(), "x", 1), 0);
    }
    EXPECT_THROW(coffer::SealedProgram("/nonexistent/program"), std::exception);
}

// A directory with a shared tmpfs mounted on it, in this process's mount namespace; unmounted (with
// anything a failed test left below it) and removed on destruction.
class MountedTmpfs {
  public:
    MountedTmpfs() {
        char tmpl[] = "/tmp/coffer-base-test-XXXXXX";
        if (!::mkdtemp(tmpl)) throw_errno("mkdtemp");
        dir_ = tmpl;
        if (::mount("coffer-test", dir_.c_str(), "tmpfs", 0, "size=1m") != 0) {
            ::rmdir(dir_.c_str());
            throw_errno("mount tmpfs");
        }
        // Shared, as / is on a systemd host: a copy of it in another namespace that is not made a
        // slave sends its mounts and unmounts back here.
        if (::mount(nullptr, dir_.c_str(), nullptr, MS_SHARED, nullptr) != 0) {
            ::umount2(dir_.c_str(), MNT_DETACH);
            ::rmdir(dir_.c_str());
            throw_errno("make the tmpfs shared");
        }
    }
    ~MountedTmpfs() {
        for (auto& m : mounts_under(dir_)) ::umount2(m.c_str(), MNT_DETACH);
        ::rmdir(dir_.c_str());
    }
    const std::string& dir() const { return dir_; }

  private:
    std::string dir_;
};

// A child with hidden mounts runs in a mount namespace of its own: it does not see them, they
// stay ours, and what it mounts never reaches us.
TEST(Child, HiddenMountsStayOursAndWhatItMountsStaysItsOwn) {
    if (::geteuid() != 0) GTEST_SKIP() << "mounts need root";
    MountedTmpfs outer;
    std::string hidden = outer.dir() + "/hidden", made = outer.dir() + "/made";
    ASSERT_EQ(::mkdir(hidden.c_str(), 0700), 0);
    ASSERT_EQ(::mkdir(made.c_str(), 0700), 0);
    ASSERT_EQ(::mount("coffer-test", hidden.c_str(), "tmpfs", 0, "size=1m"), 0);

    Child::Options o;
    o.argv = {"sh", "-c", "mount -t tmpfs coffer-test \"$0\" && cat /proc/self/mountinfo", made};
    o.program = "/bin/sh";
    o.hidden_mounts = {hidden};
    auto r = run_command(o);
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(r.out.find(" " + hidden + " "), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(" " + outer.dir() + " "), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(" " + made + " "), std::string::npos) << r.out;

    EXPECT_EQ(mounts_under(outer.dir()), (std::vector<std::string>{hidden, outer.dir()}));

    o.program = "/nonexistent/program";
    try {
        run_command(o);
        ADD_FAILURE() << "a missing program was spawned";
    } catch (const SystemError& e) {
        EXPECT_EQ(e.code(), ENOENT);
        EXPECT_NE(std::string(e.what()).find("execute"), std::string::npos) << e.what();
    }
}

// A subreaper inherits what its children leave running: reap_orphans collects those once they
// end, and never a Child's own exit status.
TEST(ReapOrphans, ReapsWhatIsLeftToUsButNotAClaimedChild) {
    ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0);
    struct NotSubreaper {
        ~NotSubreaper() { ::prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0); }
    } restore;

    // Exits at once, leaving a child of its own that ends a moment later: that one becomes ours.
    auto left = run_command({"sh", "-c", "sleep 0.05 & exit 0"});
    ASSERT_TRUE(left.ok()) << left.describe();
    // A Child of ours that has ended, not yet waited for.
    auto claimed = Child::spawn({.argv = {"true"}});
    struct pollfd p {
        claimed.pidfd(), POLLIN, 0
    };
    ASSERT_EQ(::poll(&p, 1, 10000), 1);

    EXPECT_EQ(reap_orphans(std::chrono::seconds(10)), 1);
    int status = claimed.wait();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

// True once pred holds, false when the deadline passed first.
template <typename Pred>
bool holds_within(Pred pred, std::chrono::milliseconds deadline) {
    auto until = std::chrono::steady_clock::now() + deadline;
    while (!pred()) {
        if (std::chrono::steady_clock::now() >= until) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return true;
}

// A spawn waits while a SpawnFence is held (its child would hold a copy of every descriptor open
// here for a moment, such as a secret file still open for writing), and goes ahead once it ends.
TEST(SpawnFence, HoldsSpawnsBackUntilItEnds) {
    std::atomic<bool> spawned{false};
    std::optional<SpawnFence> fence(std::in_place);
    std::thread spawner([&] {
        auto child = Child::spawn({.argv = {"true"}});
        spawned = true;
        child.wait();
    });
    // Not spawned while the fence stands (a broken fence lets it through within this time).
    EXPECT_FALSE(holds_within([&] { return spawned.load(); }, std::chrono::milliseconds(300)));
    fence.reset();
    EXPECT_TRUE(holds_within([&] { return spawned.load(); }, std::chrono::seconds(10)));
    spawner.join();
}
