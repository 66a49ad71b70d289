#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "coffer/base/error.h"
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

TEST(Sync, GuardsValue) {
    Sync<int> s(1);
    *s.lock() += 1;
    EXPECT_EQ(*s.read(), 2);
}

TEST(Child, GetsNoDescriptorBeyondStdio) {
    // Deliberately not close-on-exec: the child must still not see it.
    UniqueFd leaky(::open("/dev/null", O_RDONLY));
    ASSERT_TRUE(leaky);
    auto r = run_command({"/bin/sh", "-c", fmt::format("test -e /proc/self/fd/{} && echo leaked; true", leaky.get())});
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
    EXPECT_EQ(::fcntl(fd.get(), F_GET_SEALS), F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE);
    EXPECT_NE(::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_FUTURE_WRITE), 0);
    coffer::UniqueFd writable(::open(sh.path().c_str(), O_WRONLY | O_CLOEXEC));
    if (writable) {
        EXPECT_LT(::write(writable.get(), "x", 1), 0);
    }
    EXPECT_THROW(coffer::SealedProgram("/nonexistent/program"), std::exception);
}
