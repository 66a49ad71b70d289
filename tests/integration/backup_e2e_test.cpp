// A cluster restored from a backup with real processes (cluster_fixture.h): the manager is
// replaced by one restored into a fresh data directory on the same address; the agents, left
// running, reconnect with the certificates they have (the CA and trust state came from the
// backup), the service's tasks run again, and a new service gets a restored secret's exact
// bytes in its task.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <chrono>
#include <filesystem>
#include <string>

#include "cluster_fixture.h"

using namespace coffer::test;
namespace fs = std::filesystem;
namespace json = boost::json;
using namespace std::chrono_literals;

namespace {

class Restore : public ClusterTest {};

}  // namespace

TEST_F(Restore, AgentsReconnectToTheRestoredManagerAndTasksGetRestoredSecrets) {
    auto bytes = random_bytes(40);
    ASSERT_EQ(cli({"secret", "create", "db", "-"}, bytes).status, 0);
    create_sleeper("before", "db");
    ASSERT_TRUE(task_holds("before", "db", bytes)) << a_->err();
    auto secret = secret_id("db");
    auto node_a = a_->node_id(), node_b = b_->node_id();

    auto file = dir_.path() / "cluster.cbk";
    auto r = cli({"cluster", "backup", file.string()});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(read_file(file).find(bytes), std::string::npos);
    auto kek = dir_.path() / "kek.saved";
    fs::copy_file(dir_.path() / "data" / "kek", kek);

    // The old manager and its data directory go; the agents keep running and retrying.
    daemon_.reset();
    fs::rename(dir_.path() / "data", dir_.path() / "data.lost");
    manager_args_ = {"--restore", file.string(), "--restore-key", kek.string()};
    start_manager();
    manager_args_.clear();
    ASSERT_FALSE(HasFatalFailure());

    EXPECT_EQ(secret_id("db"), secret);
    ASSERT_TRUE(wait_node_state(node_a, "ready", 60s)) << a_->err();
    ASSERT_TRUE(wait_node_state(node_b, "ready", 60s)) << b_->err();
    EXPECT_TRUE(task_holds("before", "db", bytes)) << a_->err();

    // A service made after the restore gets the restored secret from the restored store.
    create_sleeper("after", "db");
    EXPECT_TRUE(task_holds("after", "db", bytes)) << a_->err() << b_->err();
}
