// A test with its own cofferd (fresh data directory and socket), the CLI and raw HTTP to it.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "coffer/net/http_client.h"
#include "coffer/store/store.h"
#include "harness.h"

namespace coffer::test {

class ManagerTest : public ::testing::Test {
  protected:
    void SetUp() override { start(); }

    void start(std::vector<std::string> extra = {}) {
        daemon_.reset();
        daemon_ = std::make_unique<Daemon>(dir_.path() / "data", dir_.path() / "coffer.sock",
                                           std::move(extra));
        ASSERT_TRUE(daemon_->ready());
    }

    CliResult cli(std::vector<std::string> args, const std::string& in = "") {
        return coffer_cli(daemon_->host(), args, in);
    }

    std::unique_ptr<net::HttpClient> http() {
        auto c = net::HttpClient::connect(daemon_->host());
        EXPECT_TRUE(c.ok());
        return std::move(*c);
    }

    net::ClientResponse request(std::string_view method, std::string_view target,
                                std::string_view body = "") {
        auto r = http()->request(method, target,
                                 {reinterpret_cast<const std::uint8_t*>(body.data()), body.size()});
        EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
        return r.ok() ? *r : net::ClientResponse{};
    }

    // Opens the stopped daemon's store directly (KEK-file mode) to look at what it holds.
    std::unique_ptr<store::Store> open_store() {
        auto s = store::Store::open({.dir = dir_.path() / "data"});
        EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message);
        return s.ok() ? std::move(s->store) : nullptr;
    }

    TempDir dir_;
    std::unique_ptr<Daemon> daemon_;
};

}  // namespace coffer::test
