// The real docker CLI against cofferd: `docker secret` works unchanged.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "harness.h"

using namespace coffer::test;
namespace json = boost::json;

namespace {

// The docker CLI against the daemon, with a client configuration directory of the test's own.
auto docker_cli(const TempDir& dir, const Daemon& d) {
    std::vector<std::string> env{"DOCKER_HOST=" + d.host(),
                                 "DOCKER_CONFIG=" + (dir.path() / "dc").string()};
    return [env](std::vector<std::string> args, const std::string& in = "") {
        args.insert(args.begin(), "docker");
        return run_program(args, in, env);
    };
}

}  // namespace

TEST(DockerCli, SecretCommandsWorkAgainstCofferd) {
    if (!have_docker()) GTEST_SKIP() << "no docker CLI on this machine";
    TempDir dir;
    Daemon d(dir.path() / "data", dir.path() / "coffer.sock");
    ASSERT_TRUE(d.ready());
    auto docker = docker_cli(dir, d);
    auto created = docker({"secret", "create", "--label", "env=prod", "s1", "-"}, "x");
    ASSERT_EQ(created.status, 0) << created.err;
    EXPECT_EQ(created.out.size(), 26u) << created.out;

    auto ls = docker({"secret", "ls"});
    ASSERT_EQ(ls.status, 0) << ls.err;
    EXPECT_NE(ls.out.find("s1"), std::string::npos) << ls.out;

    auto inspect = docker({"secret", "inspect", "s1"});
    ASSERT_EQ(inspect.status, 0) << inspect.err;
    auto v = json::parse(inspect.out);
    EXPECT_EQ(v.as_array()[0].at("Spec").at("Labels").at("env").as_string(), "prod");

    auto dup = docker({"secret", "create", "s1", "-"}, "y");
    EXPECT_EQ(dup.status, 1);
    EXPECT_NE(dup.err.find("already exists"), std::string::npos) << dup.err;

    auto rm = docker({"secret", "rm", "s1"});
    EXPECT_EQ(rm.status, 0) << rm.err;
    auto missing = docker({"secret", "inspect", "s1"});
    EXPECT_EQ(missing.status, 1);
    EXPECT_NE(missing.err.find("secret s1 not found"), std::string::npos) << missing.err;
}

// `docker swarm unlock` unlocks a locked cofferd (it reads /info's LocalNodeState first), and
// prints cofferd's words when a key is wrong or when too many were.
TEST(DockerCli, SwarmUnlockWorksAndIsLimited) {
    if (!have_docker()) GTEST_SKIP() << "no docker CLI on this machine";
    TempDir dir;
    auto key_file = dir.path() / "unlock.key";
    {
        Daemon first(dir.path() / "data", dir.path() / "coffer.sock",
                     {"--autolock", "--unlock-key-file", key_file.string()});
        ASSERT_TRUE(first.ready());
    }
    Daemon d(dir.path() / "data", dir.path() / "coffer.sock");
    ASSERT_TRUE(d.ready());
    auto docker = docker_cli(dir, d);
    auto info = docker({"info", "--format", "{{.Swarm.LocalNodeState}}"});
    EXPECT_EQ(info.out, "locked\n") << info.err;
    const std::string guess = "COFFERKEY-1-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n";
    auto wrong = docker({"swarm", "unlock"}, guess);
    EXPECT_EQ(wrong.status, 1);
    EXPECT_NE(wrong.err.find("invalid unlock key"), std::string::npos) << wrong.err;
    std::string err;
    for (int i = 0; i < 20 && err.find("too many") == std::string::npos; ++i)
        err = docker({"swarm", "unlock"}, guess).err;
    EXPECT_NE(err.find("too many failed unlock attempts from this user: try again in "),
              std::string::npos)
        << err;
    EXPECT_TRUE(wait_until(
        [&] {
            return docker({"swarm", "unlock"}, read_file(key_file)).status == 0;
        },
        std::chrono::seconds(30)));
    EXPECT_EQ(docker({"info", "--format", "{{.Swarm.LocalNodeState}}"}).out, "active\n");
}

// `docker swarm join-token -q` and `docker swarm unlock-key -q` print what cofferd keeps
// (GET /swarm, GET /swarm/unlockkey); without autolock there is no key to print.
TEST(DockerCli, SwarmJoinTokenAndUnlockKeyPrintTheCredentials) {
    if (!have_docker()) GTEST_SKIP() << "no docker CLI on this machine";
    TempDir dir;
    auto key_file = dir.path() / "unlock.key";
    Daemon d(dir.path() / "data", dir.path() / "coffer.sock",
             {"--autolock", "--unlock-key-file", key_file.string()});
    ASSERT_TRUE(d.ready());
    auto docker = docker_cli(dir, d);
    for (std::string role : {"worker", "manager"}) {
        auto shown = docker({"swarm", "join-token", "-q", role});
        ASSERT_EQ(shown.status, 0) << shown.err;
        auto ours = coffer_cli(d.host(), {"cluster", "join-token", role, "-q"});
        ASSERT_EQ(ours.status, 0) << ours.err;
        EXPECT_EQ(shown.out, ours.out);
        EXPECT_EQ(shown.out.rfind("COFFERTKN-1-", 0), 0u) << role;
    }
    auto key = docker({"swarm", "unlock-key", "-q"});
    ASSERT_EQ(key.status, 0) << key.err;
    EXPECT_EQ(key.out, read_file(key_file));

    TempDir plain_dir;
    Daemon plain(plain_dir.path() / "data", plain_dir.path() / "coffer.sock");
    ASSERT_TRUE(plain.ready());
    auto none = docker_cli(plain_dir, plain)({"swarm", "unlock-key", "-q"});
    EXPECT_EQ(none.status, 1);
    EXPECT_NE(none.err.find("no unlock key is set"), std::string::npos) << none.err;
}
