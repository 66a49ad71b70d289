// A test against cofferd-test (COFFERD_TEST): a daemon that registers the nodes node-a and node-b
// and runs a fake agent for each, with the coffer and docker CLIs pointed at it.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "coffer/net/http_client.h"
#include "harness.h"

namespace coffer::test {

class HookedDaemonTest : public ::testing::Test {
  protected:
    // Skips the test when COFFERD_TEST is not set. Set further COFFER_TEST_* variables before.
    void start_daemon() {
        const char* hooked = std::getenv("COFFERD_TEST");
        if (hooked == nullptr)
            GTEST_SKIP() << "COFFERD_TEST (the cofferd-test executable) is not set";
        ::setenv("COFFERD", hooked, 1);
        ::setenv("COFFER_TEST_NODES", nodes_.c_str(), 1);
        ::setenv("COFFER_TEST_AGENTS", "1", 1);
        daemon_ = std::make_unique<Daemon>(dir_.path() / "data", dir_.path() / "coffer.sock");
        ASSERT_TRUE(daemon_->ready());
        env_ = {"DOCKER_HOST=" + daemon_->host(), "DOCKER_CONFIG=" + (dir_.path() / "dc").string()};
    }
    void TearDown() override { daemon_.reset(); }

    CliResult cli(std::vector<std::string> args, const std::string& in = "") {
        return coffer_cli(daemon_->host(), args, in);
    }
    CliResult docker(std::vector<std::string> args, const std::string& in = "") {
        args.insert(args.begin(), "docker");
        return run_program(args, in, env_);
    }

    // COFFER_TEST_NODES: the nodes the daemon registers ("host[/CPUS/MEMORY_BYTES]", ...).
    std::string nodes_ = "node-a,node-b";
    // One raw HTTP request to the daemon.
    net::ClientResponse request(std::string_view method, std::string_view target,
                                std::string_view body = "") {
        auto c = net::HttpClient::connect(daemon_->host());
        EXPECT_TRUE(c.ok());
        auto r = (*c)->request(method, target,
                               {reinterpret_cast<const std::uint8_t*>(body.data()), body.size()});
        EXPECT_TRUE(r.ok());
        return r.ok() ? *r : net::ClientResponse{};
    }

    TempDir dir_;
    std::unique_ptr<Daemon> daemon_;
    std::vector<std::string> env_;
};

}  // namespace coffer::test
