// The cluster's trust settings through the CLI, the API and the docker CLI: join tokens,
// their rotation, node certificate expiry.
#include <unistd.h>

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "coffer/net/http_client.h"
#include "coffer/pki/token.h"
#include "harness.h"
#include "manager_fixture.h"

using namespace coffer;
using namespace coffer::test;
namespace json = boost::json;

namespace {

using Cluster = ManagerTest;
namespace fs = std::filesystem;

std::string line(const std::string& s) {
    return s.substr(0, s.find('\n'));
}

// The last n bytes of s, in locked memory.
crypto::SecureBuffer tail(std::string_view s, std::size_t n) {
    return crypto::SecureBuffer::copy_of(s.substr(s.size() - std::min(n, s.size())));
}

}  // namespace

TEST_F(Cluster, JoinTokensPinTheCaAndRotate) {
    auto worker = cli({"cluster", "join-token", "worker", "-q"});
    auto manager = cli({"cluster", "join-token", "manager", "-q"});
    ASSERT_EQ(worker.status, 0) << worker.err;
    ASSERT_EQ(manager.status, 0) << manager.err;
    auto w = pki::JoinToken::parse(line(worker.out));
    auto m = pki::JoinToken::parse(line(manager.out));
    ASSERT_TRUE(w.ok()) << worker.out;
    ASSERT_TRUE(m.ok()) << manager.out;
    EXPECT_FALSE(w->matches(*m));

    // Both tokens pin the CA the cluster serves.
    auto swarm = json::parse(request("GET", "/swarm").body);
    std::string ca(swarm.at("TLSInfo").at("TrustRoot").as_string());
    EXPECT_TRUE(w->pins(ca));
    EXPECT_TRUE(m->pins(ca));

    auto rotated = cli({"cluster", "join-token", "worker", "--rotate", "-q"});
    ASSERT_EQ(rotated.status, 0) << rotated.err;
    auto w2 = pki::JoinToken::parse(line(rotated.out));
    ASSERT_TRUE(w2.ok());
    EXPECT_FALSE(w2->matches(*w));
    EXPECT_TRUE(w2->pins(ca));
    // The manager token is untouched, and everything survives a restart.
    start();
    EXPECT_EQ(line(cli({"cluster", "join-token", "manager", "-q"}).out), line(manager.out));
    EXPECT_EQ(line(cli({"cluster", "join-token", "worker", "-q"}).out), line(rotated.out));
}

// A command line is readable by every user of the node (ps): the command shown passes the
// token in the environment, as docs/pki.md says.
TEST_F(Cluster, JoinTokenSuggestsTheEnvironmentNotTheCommandLine) {
    for (std::string role : {"worker", "manager"}) {
        auto token = line(cli({"cluster", "join-token", role, "-q"}).out);
        ASSERT_EQ(token.rfind("COFFERTKN-", 0), 0u) << token;
        auto shown = cli({"cluster", "join-token", role});
        ASSERT_EQ(shown.status, 0) << shown.err;
        EXPECT_NE(shown.out.find("COFFER_JOIN_TOKEN=" + token + " "), std::string::npos)
            << shown.out;
        EXPECT_NE(shown.out.find("coffer-agent "), std::string::npos) << shown.out;
        EXPECT_EQ(shown.out.find("--join-token " + token), std::string::npos) << shown.out;
        EXPECT_EQ(shown.out.find("--join-token COFFERTKN"), std::string::npos) << shown.out;
    }
}

TEST_F(Cluster, CertificateExpiryHasAMinimumAndStaleVersionsAreRefused) {
    auto too_short = cli({"cluster", "update", "--cert-expiry", "30m"});
    EXPECT_EQ(too_short.status, 1);
    EXPECT_NE(too_short.err.find("minimum certificate expiry time is 1h"), std::string::npos)
        << too_short.err;
    auto bad = cli({"cluster", "update", "--cert-expiry", "soon"});
    EXPECT_EQ(bad.status, 1);

    auto ok = cli({"cluster", "update", "--cert-expiry", "720h"});
    ASSERT_EQ(ok.status, 0) << ok.err;
    auto swarm = json::parse(request("GET", "/swarm").body);
    EXPECT_EQ(swarm.at("Spec").at("CAConfig").at("NodeCertExpiry").to_number<std::int64_t>(),
              720LL * 3600 * 1'000'000'000);

    auto version = swarm.at("Version").at("Index").to_number<std::uint64_t>();
    auto stale = request(
        "POST", "/swarm/update?rotateWorkerToken=true&version=" + std::to_string(version - 1),
        "{}");
    EXPECT_EQ(stale.status, 409);
    // A failed request changes nothing.
    auto after = json::parse(request("GET", "/swarm").body);
    EXPECT_EQ(after.at("JoinTokens").at("Worker"), swarm.at("JoinTokens").at("Worker"));
    EXPECT_EQ(
        request("POST",
                "/swarm/update?version=" + std::to_string(version) + "&rotateManagerUnlockKey=true",
                "{}")
            .status,
        400);  // no autolock
    auto off = request("POST", "/swarm/update?version=" + std::to_string(version),
                       R"({"EncryptionConfig":{"AutoLockManagers":true}})");
    EXPECT_EQ(off.status, 400);
}

TEST_F(Cluster, DockerSwarmJoinTokenWorks) {
    if (run_program({"sh", "-c", "command -v docker"}).status != 0) GTEST_SKIP() << "no docker CLI";
    std::vector<std::string> env{"DOCKER_HOST=" + daemon_->host(),
                                 "DOCKER_CONFIG=" + (dir_.path() / "dc").string()};
    auto shown = run_program({"docker", "swarm", "join-token", "-q", "worker"}, "", env);
    ASSERT_EQ(shown.status, 0) << shown.err;
    EXPECT_EQ(line(shown.out), line(cli({"cluster", "join-token", "worker", "-q"}).out));
    auto rotated =
        run_program({"docker", "swarm", "join-token", "--rotate", "-q", "worker"}, "", env);
    ASSERT_EQ(rotated.status, 0) << rotated.err;
    EXPECT_NE(line(rotated.out), line(shown.out));
    EXPECT_EQ(line(rotated.out), line(cli({"cluster", "join-token", "worker", "-q"}).out));
}

// GET /swarm and GET /swarm/unlockkey show secrets: the join tokens' and the unlock key's bytes
// stay in locked memory from where they are kept until the socket has them, and are wiped after.
// Looked for in every writable mapping of cofferd that holds no locked page, after several
// answers (old copies in freed heap memory count).
TEST_F(Cluster, ShownJoinTokensAndUnlockKeyLeaveNoCopyInUnlockedMemory) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (/proc/PID/mem)";
    daemon_.reset();
    fs::remove_all(dir_.path() / "data");
    auto key_file = dir_.path() / "unlock.key";
    start({"--autolock", "--unlock-key-file", key_file.string()});

    std::string worker, manager, key;
    for (int i = 0; i < 3; ++i) {
        auto swarm = request("GET", "/swarm");
        ASSERT_EQ(swarm.status, 200) << swarm.body;
        auto v = json::parse(swarm.body);
        worker = std::string(v.at("JoinTokens").at("Worker").as_string());
        manager = std::string(v.at("JoinTokens").at("Manager").as_string());
        auto unlock = request("GET", "/swarm/unlockkey");
        ASSERT_EQ(unlock.status, 200) << unlock.body;
        key = std::string(json::parse(unlock.body).at("UnlockKey").as_string());
    }
    ASSERT_EQ(key + "\n", read_file(key_file));
    ASSERT_TRUE(pki::JoinToken::parse(worker).ok()) << worker;
    ASSERT_TRUE(pki::JoinToken::parse(manager).ok()) << manager;
    const std::string_view key_prefix = "COFFERKEY-1-";
    ASSERT_EQ(key.rfind(key_prefix, 0), 0u) << key;
    // The secrets: a token's after "COFFERTKN-1-<CA digest>-", the key's after its prefix.
    auto worker_secret = tail(worker, pki::token_secret_chars);
    auto manager_secret = tail(manager, pki::token_secret_chars);
    auto key_secret = tail(key, key.size() - key_prefix.size());

    auto found = find_in_unlocked_memory(std::to_string(daemon_->pid()),
                                         {{"the worker token's secret", &worker_secret},
                                          {"the manager token's secret", &manager_secret},
                                          {"the unlock key", &key_secret}});
    EXPECT_TRUE(found.empty()) << "in cofferd's unlocked memory:\n" << join_lines(found);
}
