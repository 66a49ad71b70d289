// A secret's lifecycle through the whole cluster with real processes (cluster_fixture.h):
// versions added by rotation and made current again by rollback, references that follow the
// current version or pin one, what each task holds (checked inside its container), retention,
// removal while in use, and rotations that survive a manager killed at any point.
#include <signal.h>
#include <sys/wait.h>

#include <fmt/format.h>

#include <boost/json.hpp>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "cluster_fixture.h"
#include "coffer/crypto/encoding.h"
#include "coffer/model/secret.h"

using namespace coffer;
using namespace coffer::test;
using namespace std::chrono_literals;
namespace json = boost::json;

namespace {

std::string id_of(const json::object& o) {
    return std::string(o.at("ID").as_string());
}

// A task's recorded secret versions: file name -> version.
std::map<std::string, std::uint64_t> held_versions(const json::object& task) {
    std::map<std::string, std::uint64_t> out;
    if (auto* held = task.if_contains("CofferSecretVersions"); held && held->is_array())
        for (const auto& h : held->as_array())
            out[std::string(h.at("File").as_string())] = h.at("Version").to_number<std::uint64_t>();
    return out;
}

class Lifecycle : public ClusterTest {
  protected:
    void create_secret(const std::string& name, const std::string& bytes) {
        auto r = cli({"secret", "create", name, "-"}, bytes);
        ASSERT_EQ(r.status, 0) << r.err;
    }
    // The version the rotation made current; 0 when it failed.
    std::uint64_t rotate(const std::string& name, const std::string& bytes,
                         std::vector<std::string> flags = {}) {
        std::vector<std::string> args{"secret", "rotate"};
        args.insert(args.end(), flags.begin(), flags.end());
        args.insert(args.end(), {name, "-"});
        auto r = cli(args, bytes);
        EXPECT_EQ(r.status, 0) << r.err;
        auto at = r.out.rfind("version ");
        return r.status == 0 && at != std::string::npos ? std::stoull(r.out.substr(at + 8)) : 0;
    }
    void create_service(const std::string& name, std::vector<std::string> options) {
        std::vector<std::string> args{"service", "create", "--name", name};
        args.insert(args.end(), options.begin(), options.end());
        // Prints HUP for each SIGHUP it gets.
        args.insert(args.end(), {"busybox", "sh", "-c",
                                 "trap 'echo HUP' HUP; trap 'exit 0' TERM; "
                                 "echo READY; while :; do sleep 3600 & wait $!; done"});
        auto r = cli(args);
        ASSERT_EQ(r.status, 0) << r.err;
    }
    json::object inspect(const std::string& name) {
        auto v = get("/secrets/" + name);
        return v.is_object() ? v.as_object() : json::object{};
    }
    std::vector<std::uint64_t> versions(const std::string& name) {
        std::vector<std::uint64_t> out;
        auto s = inspect(name);
        if (auto* v = s.if_contains("CofferVersions"); v && v->is_array())
            for (const auto& e : v->as_array())
                out.push_back(e.at("Version").to_number<std::uint64_t>());
        return out;
    }
    std::uint64_t current(const std::string& name) {
        auto s = inspect(name);
        auto* c = s.if_contains("CofferCurrentVersion");
        return c ? c->to_number<std::uint64_t>() : 0;
    }
    // Waits until every running task of service holds `version` at `file` and has its bytes.
    bool tasks_hold(const std::string& service, std::size_t replicas, const std::string& file,
                    std::uint64_t version, const std::string& bytes) {
        return wait_until(
            [&] {
                auto r = running(service);
                if (r.size() != replicas) return false;
                for (const auto& t : r)
                    if (held_versions(t)[file] != version || file_in_task(t, file) != bytes)
                        return false;
                return true;
            },
            60s);
    }
};

// A reference follows the current version, a pin stays; inspect shows versions and holders
// and never the bytes; rollback makes an earlier version current again.
TEST_F(Lifecycle, RotationAddsAVersionThatNewTasksGetWhilePinsStayAndRollbackRestores) {
    auto v1 = random_bytes(40), v2 = random_bytes(41);
    create_secret("db", v1);
    create_service("follow", {"--replicas", "3", "--secret", "db"});
    create_service("pinned", {"--secret", "source=db@1,target=old"});
    ASSERT_TRUE(tasks_hold("follow", 3, "db", 1, v1)) << a_->err() << b_->err();
    ASSERT_TRUE(tasks_hold("pinned", 1, "old", 1, v1));

    ASSERT_EQ(rotate("db", v2), 2u);
    EXPECT_EQ(versions("db"), (std::vector<std::uint64_t>{1, 2}));
    EXPECT_EQ(current("db"), 2u);
    // Unchanged bytes make no version when asked so; different ones do (then rolled back).
    auto same = cli({"secret", "rotate", "--only-if-different", "db", "-"}, v2);
    ASSERT_EQ(same.status, 0) << same.err;
    EXPECT_NE(same.out.find("unchanged"), std::string::npos) << same.out;
    EXPECT_EQ(versions("db"), (std::vector<std::uint64_t>{1, 2}));

    // New tasks of the following service get version 2; the pinned one keeps version 1.
    ASSERT_EQ(cli({"service", "update", "--force", "follow"}).status, 0);
    ASSERT_EQ(cli({"service", "update", "--force", "pinned"}).status, 0);
    EXPECT_TRUE(tasks_hold("follow", 3, "db", 2, v2)) << a_->err() << b_->err();
    EXPECT_TRUE(wait_converged("pinned", 1));
    EXPECT_TRUE(tasks_hold("pinned", 1, "old", 1, v1));

    // Inspect: each version with the tasks holding it; no data, no digest of it.
    auto text = cli({"secret", "inspect", "db"});
    ASSERT_EQ(text.status, 0) << text.err;
    auto shown = json::parse(text.out).as_array().at(0).as_object();
    EXPECT_FALSE(shown.at("Spec").as_object().contains("Data"));
    ASSERT_EQ(shown.at("CofferVersions").as_array().size(), 2u);
    EXPECT_TRUE(wait_until([&] {
        auto s = inspect("db");
        auto& vs = s.at("CofferVersions").as_array();
        return vs[0].at("Tasks").to_number<int>() == 1 && vs[1].at("Tasks").to_number<int>() == 3;
    }));
    for (const auto& bytes : {v1, v2}) {
        auto b64 = crypto::base64_encode(
            {reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()});
        EXPECT_EQ(text.out.find(b64), std::string::npos);
        EXPECT_EQ(text.out.find(hex(bytes)), std::string::npos);
    }

    // Rollback: the previous version by default, any kept one with --to.
    auto back = cli({"secret", "rollback", "db"});
    ASSERT_EQ(back.status, 0) << back.err;
    EXPECT_EQ(current("db"), 1u);
    auto fwd = cli({"secret", "rollback", "db", "--to", "2"});
    ASSERT_EQ(fwd.status, 0) << fwd.err;
    EXPECT_EQ(current("db"), 2u);
    auto missing = cli({"secret", "rollback", "db", "--to", "9"});
    EXPECT_NE(missing.status, 0);
    EXPECT_NE(missing.err.find("has no version 9"), std::string::npos) << missing.err;
    ASSERT_EQ(cli({"secret", "rollback", "db", "--to", "1"}).status, 0);
    // A pin must name a version that exists.
    auto bad_pin = cli({"service", "create", "--name", "nope", "--secret", "db@7", "busybox"});
    EXPECT_NE(bad_pin.status, 0);
    EXPECT_NE(bad_pin.err.find("secret db has no version 7"), std::string::npos) << bad_pin.err;
    // Docker's update keeps its rules: labels only.
    auto v = inspect("db").at("Version").at("Index").to_number<std::uint64_t>();
    auto data_update =
        run_program({"curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket",
                     daemon_->socket().string(), "-X", "POST", "-H",
                     "Content-Type: application/json", "-d", R"({"Name":"db","Data":"b3RoZXI="})",
                     fmt::format("http://localhost/v1.41/secrets/db/update?version={}", v)});
    EXPECT_EQ(data_update.out, "400");
}

// The SIGHUPs a task's main process got, from its output.
std::size_t hups(const std::string& output) {
    std::size_t n = 0;
    for (const auto& line : lines_of(output))
        if (line.ends_with("HUP")) ++n;
    return n;
}

// Each service's coffer.secret-update on a rotation: restart rolls the tasks; live replaces the
// bytes in the running tasks (same tasks, same processes) and a reader never sees a part of a
// file or none; signal:SIGHUP does that and signals once; none leaves running tasks alone and new
// tasks get the new version; a pinned reference never changes.
TEST_F(Lifecycle, EachUpdateModeGivesRunningTasksWhatItSays) {
    // Printable bytes of one length: a reader can tell old, new and anything else apart.
    std::string v1(4096, 'a'), v2(4096, 'b');
    create_secret("s", v1);
    create_service("restart", {"--replicas", "3", "--secret", "s"});
    create_service("live", {"--replicas", "3", "--secret", "s", "--secret-update", "live"});
    create_service("hup", {"--replicas", "3", "--secret", "s", "--secret-update", "signal:SIGHUP"});
    create_service("none", {"--replicas", "2", "--secret", "s", "--secret-update", "none"});
    create_service("pin", {"--secret", "source=s@1,target=p", "--secret-update", "live"});
    for (auto [name, n] : {std::pair{"restart", 3}, {"live", 3}, {"hup", 3}, {"none", 2}})
        ASSERT_TRUE(tasks_hold(name, n, "s", 1, v1)) << name << a_->err() << b_->err();
    ASSERT_TRUE(tasks_hold("pin", 1, "p", 1, v1));
    // Every task of live and hup, by id, with its process.
    std::map<std::string, std::int64_t> before;
    std::vector<std::string> restart_ids;
    for (auto name : {"live", "hup", "none", "pin"})
        for (const auto& t : running(name)) before[id_of(t)] = task_pid(t);
    for (const auto& t : running("restart")) restart_ids.push_back(id_of(t));
    std::vector<json::object> hup_tasks = running("hup");
    for (const auto& t : hup_tasks) {
        ASSERT_TRUE(wait_until([&] {
            return cli({"service", "logs", id_of(t)}).out.find("READY") != std::string::npos;
        }));
    }
    for (const auto& t : hup_tasks) EXPECT_EQ(hups(cli({"service", "logs", id_of(t)}).out), 0u);

    // Readers in the live tasks' files, through their roots, until the end.
    std::atomic<bool> stop{false};
    std::atomic<std::size_t> reads{0}, bad{0}, changed{0};
    std::vector<std::thread> readers;
    for (const auto& t : running("live")) {
        auto path = fmt::format("/proc/{}/root/run/secrets/s", task_pid(t));
        readers.emplace_back([&, path] {
            while (!stop) {
                auto got = read_file(path);
                ++reads;
                if (got == v2) ++changed;
                if (got != v1 && got != v2) ++bad;
            }
        });
    }
    ASSERT_EQ(rotate("s", v2), 2u);

    EXPECT_TRUE(tasks_hold("live", 3, "s", 2, v2)) << a_->err() << b_->err();
    EXPECT_TRUE(tasks_hold("hup", 3, "s", 2, v2)) << a_->err() << b_->err();
    EXPECT_TRUE(tasks_hold("restart", 3, "s", 2, v2)) << a_->err() << b_->err();
    EXPECT_TRUE(wait_until([&] { return changed > 0; }));
    stop = true;
    for (auto& r : readers) r.join();
    EXPECT_EQ(bad.load(), 0u) << "of " << reads.load() << " reads";
    EXPECT_GT(reads.load(), 0u);
    // live and signal: the same tasks, the same processes.
    for (auto name : {"live", "hup"})
        for (const auto& t : running(name)) {
            ASSERT_TRUE(before.contains(id_of(t))) << name << ": a new task " << id_of(t);
            EXPECT_EQ(task_pid(t), before[id_of(t)]) << name;
        }
    // signal:SIGHUP: once each.
    for (const auto& t : hup_tasks) {
        EXPECT_TRUE(wait_until(
            [&] {
                return hups(cli({"service", "logs", id_of(t)}).out) >= 1;
            },
            20s));
        EXPECT_EQ(hups(cli({"service", "logs", id_of(t)}).out), 1u);
    }
    // restart: every task was replaced.
    for (const auto& t : running("restart"))
        EXPECT_TRUE(std::find(restart_ids.begin(), restart_ids.end(), id_of(t)) ==
                    restart_ids.end());
    // none: the running tasks keep version 1; a new one gets version 2.
    auto none_tasks = running("none");
    ASSERT_EQ(none_tasks.size(), 2u);
    for (const auto& t : none_tasks) {
        EXPECT_EQ(task_pid(t), before[id_of(t)]);
        EXPECT_EQ(held_versions(t)["s"], 1u);
        EXPECT_TRUE(file_in_task(t, "s") == v1);
    }
    ASSERT_EQ(cli({"service", "scale", "none=3"}).status, 0);
    EXPECT_TRUE(wait_until(
        [&] {
            auto r = running("none");
            if (r.size() != 3) return false;
            std::map<std::uint64_t, int> by;
            for (const auto& t : r)
                if (file_in_task(t, "s") == (held_versions(t)["s"] == 1 ? v1 : v2))
                    ++by[held_versions(t)["s"]];
            return by[1] == 2 && by[2] == 1;
        },
        60s));
    // The pin: unchanged.
    auto pinned = running("pin");
    ASSERT_EQ(pinned.size(), 1u);
    EXPECT_EQ(task_pid(pinned[0]), before[id_of(pinned[0])]);
    EXPECT_EQ(held_versions(pinned[0])["p"], 1u);
    EXPECT_TRUE(file_in_task(pinned[0], "p") == v1);

    // A live update cannot reach a file bind-mounted outside /run/secrets: refused.
    auto abs = cli({"service", "create", "--name", "abs", "--secret", "source=s,target=/etc/s",
                    "--secret-update", "live", "busybox"});
    EXPECT_NE(abs.status, 0);
    EXPECT_NE(abs.err.find("outside /run/secrets"), std::string::npos) << abs.err;
}

// The delivery record (`secret history`) says which version each task holds: after a live
// rotation and after an agent restart, its open records are exactly the running tasks' versions,
// and the records of what tasks no longer hold are closed.
TEST_F(Lifecycle, TheDeliveryRecordMatchesWhatTheTasksHold) {
    std::string v1(64, 'x'), v2(64, 'y');
    create_secret("h", v1);
    create_service("web", {"--replicas", "3", "--secret", "h", "--secret-update", "live"});
    ASSERT_TRUE(tasks_hold("web", 3, "h", 1, v1)) << a_->err() << b_->err();
    // Open records (no RemovedAt): task -> each open record's version, node, and whether the
    // task mounted it (a version sent for a live update is open before its mount).
    struct Open {
        std::uint64_t version;
        std::string node;
        bool mounted;
    };
    auto open_records = [&] {
        std::map<std::string, std::vector<Open>> out;
        auto h = get("/secrets/h/history");
        if (h.is_array())
            for (const auto& d : h.as_array())
                if (!d.as_object().contains("RemovedAt"))
                    out[std::string(d.at("TaskID").as_string())].push_back(
                        {d.at("Version").to_number<std::uint64_t>(),
                         std::string(d.at("NodeID").as_string()),
                         d.as_object().contains("MountedAt")});
        return out;
    };
    // Each running task has one open record, mounted, of the version it holds on its node.
    auto matches = [&](std::uint64_t version) {
        auto open = open_records();
        auto r = running("web");
        if (r.size() != 3 || open.size() != 3) return false;
        for (const auto& t : r) {
            auto it = open.find(id_of(t));
            if (it == open.end() || it->second.size() != 1) return false;
            const auto& o = it->second[0];
            if (o.version != version || !o.mounted ||
                o.node != std::string(t.at("NodeID").as_string()) ||
                held_versions(t)["h"] != version ||
                file_in_task(t, "h") != (version == 1 ? v1 : v2))
                return false;
        }
        return true;
    };
    EXPECT_TRUE(wait_until([&] { return matches(1); }, 30s));
    auto first = running("web");
    ASSERT_EQ(rotate("h", v2), 2u);
    EXPECT_TRUE(wait_until([&] { return matches(2); }, 30s)) << a_->err() << b_->err();
    // Each task's version 1 record is closed, its version 2 record open.
    auto history = get("/secrets/h/history");
    for (const auto& t : first) {
        int closed_v1 = 0;
        for (const auto& d : history.as_array())
            if (d.at("TaskID").as_string() == id_of(t) && d.at("Version").to_number<int>() == 1 &&
                d.as_object().contains("RemovedAt"))
                ++closed_v1;
        EXPECT_EQ(closed_v1, 1) << id_of(t) << " " << json::serialize(history);
    }
    // The CLI shows the same.
    auto shown = cli({"secret", "history", "h"});
    ASSERT_EQ(shown.status, 0) << shown.err;
    EXPECT_EQ(lines_of(shown.out).size(), history.as_array().size() + 1) << shown.out;
    EXPECT_EQ(shown.out.find(v1), std::string::npos);

    // An agent restart: its tasks end (their records close) and new ones open theirs.
    auto stopped = a_->stop();
    ASSERT_TRUE(stopped) << a_->err();
    a_->start();
    ASSERT_TRUE(wait_node_state(a_->node_id(), "ready", 30s)) << a_->err();
    EXPECT_TRUE(wait_until([&] { return matches(2); }, 60s)) << a_->err() << b_->err();
    // No record is open for a task that does not run.
    auto open = open_records();
    for (const auto& [task, v] : open) {
        auto r = running("web");
        EXPECT_TRUE(std::any_of(r.begin(), r.end(), [&](const json::object& t) {
            return id_of(t) == task;
        })) << task;
    }

    // Node loss: node-b is killed. Its tasks move to node-a, whose new tasks' records open; the
    // lost node's records stay open (nothing says it dropped the bytes) until it comes back and
    // reports its tasks gone.
    std::set<std::string> on_b;
    for (const auto& t : running("web"))
        if (t.at("NodeID").as_string() == b_->node_id()) on_b.insert(id_of(t));
    ASSERT_FALSE(on_b.empty()) << "spread: a task on node-b";
    b_->kill9();
    // The node is gone with what it ran (its containers and mounts).
    auto cleaned = b_->cleanup();
    ASSERT_TRUE(cleaned.ok()) << cleaned.describe();
    ASSERT_TRUE(wait_node_state(b_->node_id(), "down", 30s)) << b_->err();
    ASSERT_TRUE(wait_converged("web", 3, a_->node_id())) << a_->err();
    EXPECT_TRUE(wait_until(
        [&] {
            auto now_open = open_records();
            std::set<std::string> expected = on_b, got;
            for (const auto& t : running("web")) {
                if (held_versions(t)["h"] != 2 || file_in_task(t, "h") != v2) return false;
                expected.insert(id_of(t));
            }
            for (const auto& [task, records] : now_open) {
                if (records.size() != 1 || records[0].version != 2 || !records[0].mounted)
                    return false;
                got.insert(task);
            }
            return got == expected;
        },
        30s))
        << json::serialize(get("/secrets/h/history"));
    b_->start();
    ASSERT_TRUE(wait_node_state(b_->node_id(), "ready", 30s)) << b_->err();
    EXPECT_TRUE(wait_until(
        [&] {
            auto now_open = open_records();
            for (const auto& task : on_b)
                if (now_open.count(task)) return false;
            return matches(2);
        },
        60s))
        << json::serialize(get("/secrets/h/history"));

    // A node that only held a version in memory: a task that cannot start (its image cannot be
    // pulled) was sent the secret, never mounted it, and its record says so.
    auto nopull = cli({"service", "create", "--detach", "--name", "nopull", "--secret", "h",
                       "--resolve-image", "never", "--restart-condition", "none",
                       "127.0.0.1:9/none:1", "true"});
    ASSERT_EQ(nopull.status, 0) << nopull.err;
    std::string rejected;
    ASSERT_TRUE(wait_until(
        [&] {
            for (const auto& t : tasks("nopull"))
                if (t.at("Status").at("State") == "rejected") rejected = id_of(t);
            return !rejected.empty();
        },
        60s))
        << a_->err() << b_->err();
    EXPECT_TRUE(wait_until(
        [&] {
            auto h = get("/secrets/h/history");
            for (const auto& d : h.as_array())
                if (d.at("TaskID").as_string() == rejected)
                    return d.as_object().contains("SentAt") &&
                           !d.as_object().contains("MountedAt") &&
                           d.as_object().contains("RemovedAt");
            return false;
        },
        30s))
        << json::serialize(get("/secrets/h/history"));
}

// The newest N versions are kept; an older one goes once nothing holds it; `secret rm` is
// refused while a version is in use.
// A service may have its tasks' secrets served by the agents' FUSE filesystem (--secret-mount
// fuse, the label coffer.secret-mount): the tasks get the same files, a live rotation reaches a
// target outside /run/secrets as well, and the delivery record counts what each task read.
TEST_F(Lifecycle, OnFuseLiveUpdatesReachAbsoluteTargetsAndTheRecordCountsReads) {
    auto v1 = random_bytes(40), v2 = random_bytes(41);
    create_secret("f", v1);
    create_secret("g", "other");
    auto bad = cli({"service", "create", "--name", "bad", "--secret-mount", "ramfs", "busybox"});
    EXPECT_NE(bad.status, 0);
    auto bad_label = cli({"service", "create", "--name", "bad", "--label",
                          "coffer.secret-mount=ramfs", "busybox", "true"});
    EXPECT_NE(bad_label.status, 0);
    EXPECT_NE(bad_label.err.find("coffer.secret-mount"), std::string::npos) << bad_label.err;
    auto r = cli({"service", "create", "--name", "fz", "--replicas", "2", "--secret-mount", "fuse",
                  "--secret-update", "live", "--secret", "source=f,target=/etc/app/f.pem",
                  "--secret", "g", "busybox", "sh", "-c",
                  "cat /etc/app/f.pem /etc/app/f.pem /run/secrets/g >/dev/null; echo READY; "
                  "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done"});
    ASSERT_EQ(r.status, 0) << r.err;
    ASSERT_TRUE(wait_until([&] { return running("fz").size() == 2; }, 60s))
        << a_->err() << b_->err();
    for (const auto& t : running("fz"))
        EXPECT_EQ(t.at("CofferSecretMount").as_string(), "fuse") << json::serialize(t);
    // Each task's record of f@1 counts its two reads (reported within the agents' interval).
    auto reads_of = [&](const std::string& secret, std::uint64_t version) {
        std::map<std::string, std::int64_t> out;
        auto h = get("/secrets/" + secret + "/history");
        if (h.is_array())
            for (const auto& d : h.as_array())
                if (d.at("Version").to_number<std::uint64_t>() == version &&
                    d.as_object().contains("Reads") && d.as_object().contains("LastReadAt"))
                    out[std::string(d.at("TaskID").as_string())] = d.at("Reads").to_number<int>();
        return out;
    };
    EXPECT_TRUE(wait_until(
        [&] {
            auto f = reads_of("f", 1), g = reads_of("g", 1);
            return f.size() == 2 && g.size() == 2 &&
                   std::all_of(f.begin(), f.end(), [](auto& e) { return e.second >= 2; }) &&
                   std::all_of(g.begin(), g.end(), [](auto& e) { return e.second >= 1; });
        },
        40s))
        << json::serialize(get("/secrets/f/history"));
    auto shown = cli({"secret", "history", "f"});
    ASSERT_EQ(shown.status, 0) << shown.err;
    EXPECT_NE(shown.out.find("READS"), std::string::npos) << shown.out;

    // A live rotation replaces the file at /etc/app/f.pem in the running tasks (same tasks).
    auto before = running("fz");
    ASSERT_EQ(rotate("f", v2), 2u);
    EXPECT_TRUE(wait_until(
        [&] {
            auto now = running("fz");
            if (now.size() != 2) return false;
            for (const auto& t : now)
                if (read_file(fmt::format("/proc/{}/root/etc/app/f.pem", task_pid(t))) != v2)
                    return false;
            return true;
        },
        30s))
        << a_->err() << b_->err();
    std::set<std::string> ids_before, ids_after;
    for (const auto& t : before) ids_before.insert(id_of(t));
    for (const auto& t : running("fz")) ids_after.insert(id_of(t));
    EXPECT_EQ(ids_before, ids_after);
}

TEST_F(Lifecycle, RetentionWipesOldVersionsOnlyWhenUnusedAndRmIsRefusedWhileInUse) {
    ASSERT_EQ(cli({"cluster", "update", "--secret-versions-kept", "2"}).status, 0);
    auto bad = run_program({"curl", "-s", "--unix-socket", daemon_->socket().string(), "-X", "POST",
                            "-H", "Content-Type: application/json", "-d",
                            R"({"CofferSecrets":{"VersionsKpet":3}})",
                            fmt::format("http://localhost/v1.41/swarm/update?version={}",
                                        get("/swarm").at("Version").at("Index").as_int64())});
    EXPECT_NE(bad.out.find("CofferSecrets.VersionsKpet is not a setting"), std::string::npos)
        << bad.out;
    std::vector<std::string> bytes;
    for (int i = 0; i < 5; ++i) bytes.push_back(random_bytes(30 + i));
    create_secret("r", bytes[0]);
    create_service("holder", {"--secret", "source=r@1,target=r1"});
    ASSERT_TRUE(tasks_hold("holder", 1, "r1", 1, bytes[0])) << a_->err() << b_->err();
    for (int i = 1; i < 5; ++i) ASSERT_EQ(rotate("r", bytes[i]), std::uint64_t(i + 1));
    // 1 is pinned and held; 4 and 5 are the newest two; 2 and 3 are gone.
    EXPECT_TRUE(wait_until([&] {
        return versions("r") == std::vector<std::uint64_t>{1, 4, 5};
    })) << fmt::format("{}", fmt::join(versions("r"), ","));
    auto gone = cli({"secret", "rollback", "r", "--to", "3"});
    EXPECT_NE(gone.status, 0);
    auto in_use = cli({"secret", "rm", "r"});
    EXPECT_NE(in_use.status, 0);
    EXPECT_NE(in_use.err.find("secret 'r' is in use by the following service: holder"),
              std::string::npos)
        << in_use.err;
    EXPECT_FALSE(secret_id("r").empty());
    // The holder's task still has version 1's bytes.
    EXPECT_TRUE(tasks_hold("holder", 1, "r1", 1, bytes[0]));
    // Released: version 1 goes once the task has ended.
    ASSERT_EQ(cli({"service", "rm", "holder"}).status, 0);
    EXPECT_TRUE(wait_until(
        [&] {
            return versions("r") == std::vector<std::uint64_t>{4, 5};
        },
        60s))
        << fmt::format("{}", fmt::join(versions("r"), ","));
    auto rm = cli({"secret", "rm", "r"});
    EXPECT_EQ(rm.status, 0) << rm.err;
    EXPECT_TRUE(secret_id("r").empty());
}

// kill -9 of cofferd while rotations run: every acknowledged rotation is there after the
// restart, the current version is the newest, every version kept has its bytes (a task pinned
// to it starts with them), and nothing half-written remains.
TEST_F(Lifecycle, KilledManagerLosesNoAcknowledgedRotation) {
    ASSERT_EQ(cli({"cluster", "update", "--secret-versions-kept", "1000"}).status, 0);
    std::map<std::uint64_t, std::string> sent;  // bytes by the version they would become
    std::string first = random_bytes(24);
    create_secret("k", first);
    std::set<std::uint64_t> acknowledged;
    std::mt19937 rng(std::random_device{}());
    constexpr int rounds = 100;
    for (int round = 0; round < rounds; ++round) {
        std::atomic<bool> stop{false};
        std::thread rotator([&] {
            while (!stop) {
                auto bytes = random_bytes(32);
                auto r = coffer_cli(daemon_->host(), {"secret", "rotate", "k", "-"}, bytes);
                if (r.status != 0) break;
                auto at = r.out.rfind("version ");
                if (at == std::string::npos) break;
                auto n = std::stoull(r.out.substr(at + 8));
                acknowledged.insert(n);
                sent[n] = bytes;
            }
        });
        std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 200));
        daemon_->kill9();
        stop = true;
        rotator.join();
        start_manager();
        // Every acknowledged version is there and is not the newest by accident: the current
        // one is the newest kept.
        // Retention keeps the newest 1000: older ones are its to wipe (a fast machine makes more
        // than 1000 rotations in 100 rounds).
        auto kept = versions("k");
        ASSERT_FALSE(kept.empty());
        ASSERT_LE(kept.size(), model::max_secret_versions_kept) << "round " << round;
        for (auto n : acknowledged) {
            if (n + model::max_secret_versions_kept <= kept.back()) continue;
            ASSERT_TRUE(std::find(kept.begin(), kept.end(), n) != kept.end())
                << "round " << round << ": acknowledged version " << n << " lost (newest "
                << kept.back() << ", " << kept.size() << " kept)";
        }
        ASSERT_EQ(current("k"), kept.back()) << "round " << round;
    }
    EXPECT_GE(acknowledged.size(), std::size_t(rounds / 2)) << "too few rotations to test anything";
    // The bytes: the current version's, and a few others', reach a task.
    ASSERT_TRUE(wait_node_state(a_->node_id(), "ready", 30s)) << a_->err();
    ASSERT_TRUE(wait_node_state(b_->node_id(), "ready", 30s)) << b_->err();
    auto kept = versions("k");
    std::sort(kept.begin(), kept.end());
    std::vector<std::uint64_t> held;  // acknowledged and still kept
    std::set_intersection(acknowledged.begin(), acknowledged.end(), kept.begin(), kept.end(),
                          std::back_inserter(held));
    ASSERT_FALSE(held.empty());
    std::vector<std::uint64_t> check{kept.back(), held.front(), held[held.size() / 2]};
    std::map<std::uint64_t, std::string> expected = sent;
    expected[1] = first;
    for (auto n : check) {
        if (!expected.count(n)) continue;  // sent but unanswered: its bytes are unknown here
        auto name = fmt::format("check-{}", n);
        create_service(name, {"--secret", fmt::format("source=k@{},target=k", n)});
        EXPECT_TRUE(tasks_hold(name, 1, "k", n, expected[n])) << "version " << n;
    }
}

// `coffer stack deploy` again after a secret file changed: the secret rotates, no service spec
// changes, and each service's tasks get the new bytes by the update mode its x-coffer-update says
// (restart rolls them, live and signal:SIGHUP keep the same processes, none keeps the old bytes);
// a deploy of the same files again changes nothing.
TEST_F(Lifecycle, AStackRedeployWithAChangedSecretFileReachesEachServiceByItsUpdateMode) {
    const std::string v1(128, 'o'), v2(128, 'n');
    auto file = dir_.path() / "db.txt";
    auto write = [](const std::filesystem::path& p, const std::string& text) {
        std::ofstream(p, std::ios::binary | std::ios::trunc) << text;
    };
    write(file, v1);
    std::string yml = R"(version: "3.8"
x-task: &task
  image: busybox
  command: ["sh", "-c", "trap 'echo HUP' HUP; trap 'exit 0' TERM; echo READY; while :; do sleep 3600 & wait $$!; done"]
  deploy: {replicas: 2}
services:
  restart:
    <<: *task
    secrets: [db]
  live:
    <<: *task
    secrets: [{source: db, x-coffer-update: live}]
  hup:
    <<: *task
    secrets: [{source: db, x-coffer-update: "signal:SIGHUP"}]
  none:
    <<: *task
    secrets: [{source: db, x-coffer-update: none}]
secrets:
  db: {file: ./db.txt}
)";
    auto compose = dir_.path() / "stack.yml";
    write(compose, yml);
    auto deploy = [&] {
        return cli({"stack", "deploy", "-c", compose.string(), "--resolve-image", "never", "st"});
    };
    auto r = deploy();
    ASSERT_EQ(r.status, 0) << r.err;
    const std::vector<std::string> modes{"restart", "live", "hup", "none"};
    for (const auto& m : modes)
        ASSERT_TRUE(tasks_hold("st_" + m, 2, "db", 1, v1)) << m << a_->err() << b_->err();
    std::map<std::string, std::int64_t> pid_of;  // task id -> container pid
    for (const auto& m : modes)
        for (const auto& t : running("st_" + m)) pid_of[id_of(t)] = task_pid(t);
    for (const auto& t : running("st_hup"))
        ASSERT_TRUE(wait_until([&] {
            return cli({"service", "logs", id_of(t)}).out.find("READY") != std::string::npos;
        }));
    // The specs (a rolling update writes the service's UpdateStatus, not its spec).
    auto spec_versions = [&] {
        std::map<std::string, std::string> out;
        for (const auto& m : modes) out[m] = json::serialize(get("/services/st_" + m).at("Spec"));
        return out;
    };
    auto specs_before = spec_versions();

    write(file, v2);
    r = deploy();
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.out.find("Rotating secret st_db to version 2"), std::string::npos) << r.out;
    for (const auto& m : modes)
        EXPECT_NE(r.out.find("Service st_" + m + " is unchanged"), std::string::npos) << r.out;
    EXPECT_TRUE(tasks_hold("st_restart", 2, "db", 2, v2)) << a_->err() << b_->err();
    EXPECT_TRUE(tasks_hold("st_live", 2, "db", 2, v2)) << a_->err() << b_->err();
    EXPECT_TRUE(tasks_hold("st_hup", 2, "db", 2, v2)) << a_->err() << b_->err();
    // restart: new tasks; live and signal: the same tasks and processes; none: untouched.
    for (const auto& t : running("st_restart")) EXPECT_FALSE(pid_of.contains(id_of(t)));
    for (const auto& m : {"live", "hup", "none"})
        for (const auto& t : running(std::string("st_") + m)) {
            ASSERT_TRUE(pid_of.contains(id_of(t))) << m << ": a new task";
            EXPECT_EQ(task_pid(t), pid_of[id_of(t)]) << m;
        }
    for (const auto& t : running("st_hup")) {
        EXPECT_TRUE(wait_until(
            [&] {
                return hups(cli({"service", "logs", id_of(t)}).out) >= 1;
            },
            20s));
        EXPECT_EQ(hups(cli({"service", "logs", id_of(t)}).out), 1u);
    }
    auto none = running("st_none");
    ASSERT_EQ(none.size(), 2u);
    for (const auto& t : none) {
        EXPECT_EQ(held_versions(t)["db"], 1u);
        EXPECT_TRUE(file_in_task(t, "db") == v1);
    }
    EXPECT_EQ(spec_versions(), specs_before);

    // The same files again: no rotation, no task replaced.
    std::set<std::string> ids;
    for (const auto& m : modes)
        for (const auto& t : running("st_" + m)) ids.insert(id_of(t));
    r = deploy();
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out.find("Rotating"), std::string::npos) << r.out;
    EXPECT_EQ(current("st_db"), 2u);
    for (const auto& m : modes) EXPECT_TRUE(wait_converged("st_" + m, 2)) << m;
    std::set<std::string> after;
    for (const auto& m : modes)
        for (const auto& t : running("st_" + m)) after.insert(id_of(t));
    EXPECT_EQ(after, ids);
}

}  // namespace
