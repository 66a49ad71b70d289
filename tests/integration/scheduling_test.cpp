// The scheduler as the docker and coffer CLIs drive it, against cofferd built with test hooks:
// three nodes reporting 2 CPUs and 1 GiB each, fake agents that run every task they are given.
// Placement preferences, --replicas-max-per-node, reservations, the reason `service ps` shows for a
// pending task, and a task moved when its node loses the label its constraint needs.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <map>
#include <sstream>

#include "harness.h"
#include "hooked_daemon.h"

using namespace coffer::test;
namespace json = boost::json;

namespace {

class Scheduling : public HookedDaemonTest {
  protected:
    void SetUp() override {
        if (!have_docker()) GTEST_SKIP() << "no docker CLI on this machine";
        nodes_ = "node-a/2/1073741824,node-b/2/1073741824,node-c/2/1073741824";
        start_daemon();
    }

    void must(const CliResult& r) { ASSERT_EQ(r.status, 0) << r.out << r.err; }

    // `docker service ps` lines of the service's tasks still wanted, as "NODE|STATE|ERROR".
    std::vector<std::string> ps(const std::string& service) {
        auto r = docker({"service", "ps", "--no-trunc", "--filter", "desired-state=running",
                         "--format", "{{.Node}}|{{.CurrentState}}|{{.Error}}", service});
        EXPECT_EQ(r.status, 0) << r.err;
        std::vector<std::string> lines;
        std::istringstream in(r.out);
        for (std::string line; std::getline(in, line);) {
            if (line.empty()) continue;
            // The docker CLI quotes the error.
            if (line.ends_with("\"") && line.find("|\"") != std::string::npos)
                line = line.substr(0, line.find("|\"") + 1) +
                       line.substr(line.find("|\"") + 2, line.size() - line.find("|\"") - 3);
            lines.push_back(line);
        }
        return lines;
    }
    // Node -> running tasks; "" counts the pending ones.
    std::map<std::string, int> placement(const std::string& service) {
        std::map<std::string, int> out;
        for (const auto& l : ps(service)) {
            auto node = l.substr(0, l.find('|'));
            bool running = l.find("|Running") != std::string::npos;
            bool pending = l.find("|Pending") != std::string::npos;
            if (running) ++out[node];
            if (pending) ++out[""];
        }
        return out;
    }
    // The Err of the service's one pending task, once there is exactly one and all others run.
    std::string pending_error(const std::string& service, int running) {
        std::string err;
        wait_until([&] {
            auto p = placement(service);
            int run = 0;
            for (const auto& [node, n] : p)
                if (!node.empty()) run += n;
            if (run != running || p[""] != 1) return false;
            for (const auto& l : ps(service))
                if (l.find("|Pending") != std::string::npos) err = l.substr(l.rfind('|') + 1);
            return !err.empty();
        });
        return err;
    }
};

TEST_F(Scheduling, PlacementPreferencesSpreadOverALabelsValues) {
    must(docker({"node", "update", "--label-add", "zone=a", "node-a"}));
    must(docker({"node", "update", "--label-add", "zone=a", "node-b"}));
    must(docker({"node", "update", "--label-add", "zone=b", "node-c"}));
    must(
        docker({"service", "create", "-d", "--no-resolve-image", "--name", "web", "--replicas", "4",
                "--placement-pref", "spread=node.labels.zone", "busybox:1", "sleep", "3600"}));
    std::map<std::string, int> p;
    ASSERT_TRUE(wait_until([&] {
        p = placement("web");
        return p["node-a"] + p["node-b"] + p["node-c"] == 4;
    })) << p.size();
    // Two per zone: node-c alone holds zone b's two.
    EXPECT_EQ(p["node-c"], 2);
    EXPECT_EQ(p["node-a"], 1);
    EXPECT_EQ(p["node-b"], 1);
    auto spec = docker({"service", "inspect", "--format",
                        "{{json .Spec.TaskTemplate.Placement.Preferences}}", "web"});
    EXPECT_EQ(spec.out, "[{\"Spread\":{\"SpreadDescriptor\":\"node.labels.zone\"}}]\n");
}

TEST_F(Scheduling, APendingTaskShowsWhyInServicePs) {
    must(docker({"service", "create", "-d", "--no-resolve-image", "--name", "one", "--replicas",
                 "4", "--replicas-max-per-node", "1", "busybox:1", "sleep", "3600"}));
    EXPECT_EQ(pending_error("one", 3), "no suitable node (max replicas per node limit exceed)");

    must(docker({"service", "create", "-d", "--no-resolve-image", "--name", "big", "--replicas",
                 "4", "--reserve-memory", "600m", "busybox:1", "sleep", "3600"}));
    EXPECT_EQ(pending_error("big", 3), "no suitable node (insufficient resources on 3 nodes)");

    // Scaling down frees a node's memory; nothing stays pending.
    must(docker({"service", "scale", "-d", "big=3"}));
    ASSERT_TRUE(wait_until([&] {
        auto p = placement("big");
        return p[""] == 0 && p["node-a"] + p["node-b"] + p["node-c"] == 3;
    }));
}

TEST_F(Scheduling, ATaskMovesWhenItsNodeLosesTheLabelItsConstraintNeeds) {
    must(docker({"node", "update", "--label-add", "disk=ssd", "node-c"}));
    must(docker({"service", "create", "-d", "--no-resolve-image", "--name", "db", "--restart-delay",
                 "0s", "--constraint", "node.labels.disk==ssd", "busybox:1", "sleep", "3600"}));
    ASSERT_TRUE(wait_until([&] { return placement("db")["node-c"] == 1; }));

    must(docker({"node", "update", "--label-rm", "disk", "node-c"}));
    EXPECT_EQ(pending_error("db", 0),
              "no suitable node (scheduling constraints not satisfied on 3 nodes)");
    // The task that ran on node-c was rejected, with the reason.
    auto all = docker({"service", "ps", "--no-trunc", "--format",
                       "{{.Node}}|{{.CurrentState}}|{{.Error}}", "db"});
    EXPECT_NE(all.out.find("node-c|Rejected"), std::string::npos) << all.out;
    EXPECT_NE(all.out.find("assigned node no longer meets constraints"), std::string::npos);

    must(docker({"node", "update", "--label-add", "disk=ssd", "node-a"}));
    std::map<std::string, int> p;
    EXPECT_TRUE(wait_until([&] {
        p = placement("db");
        return p["node-a"] == 1 && p[""] == 0;
    }));
}

TEST_F(Scheduling, NodesShowTheResourcesTheyReport) {
    auto r = docker({"node", "inspect", "--format",
                     "{{.Description.Resources.NanoCPUs}} {{.Description.Resources.MemoryBytes}}",
                     "node-a"});
    EXPECT_EQ(r.out, "2000000000 1073741824\n");
}

TEST_F(Scheduling, TheCofferCliSetsTheSameFields) {
    auto r = cli({"service",
                  "create",
                  "--detach",
                  "--name",
                  "gpu",
                  "--replicas",
                  "2",
                  "--placement-pref",
                  "spread=node.labels.zone",
                  "--replicas-max-per-node",
                  "1",
                  "--reserve-memory",
                  "64m",
                  "--reserve-cpu",
                  "0.5",
                  "--generic-resource",
                  "gpu=1",
                  "busybox:1",
                  "sleep",
                  "3600"});
    ASSERT_EQ(r.status, 0) << r.err;
    auto spec = docker({"service", "inspect", "--format", "{{json .Spec.TaskTemplate}}", "gpu"});
    ASSERT_EQ(spec.status, 0) << spec.err;
    auto tt = json::parse(spec.out).as_object();
    EXPECT_EQ(json::serialize(tt.at("Placement")),
              R"({"Preferences":[{"Spread":{"SpreadDescriptor":"node.labels.zone"}}],)"
              R"("MaxReplicas":1})");
    EXPECT_EQ(json::serialize(tt.at("Resources").at("Reservations")),
              R"({"NanoCPUs":500000000,"MemoryBytes":67108864,)"
              R"("GenericResources":[{"DiscreteResourceSpec":{"Kind":"gpu","Value":1}}]})");
    // No node offers a gpu.
    std::string err;
    EXPECT_TRUE(wait_until([&] {
        auto lines = ps("gpu");
        return lines.size() == 2 && std::all_of(lines.begin(), lines.end(), [](auto& l) {
                   return l.ends_with("|no suitable node (insufficient resources on 3 nodes)");
               });
    })) << ps("gpu").size();

    // Without the gpu, both run, one per node.
    auto updated = cli({"service", "update", "--detach", "--generic-resource-rm", "gpu",
                        "--placement-pref-rm", "spread=node.labels.zone", "gpu"});
    ASSERT_EQ(updated.status, 0) << updated.err;
    spec = docker({"service", "inspect", "--format",
                   "{{json .Spec.TaskTemplate.Placement.Preferences}} "
                   "{{json .Spec.TaskTemplate.Resources.Reservations.GenericResources}}",
                   "gpu"});
    EXPECT_EQ(spec.out, "[] []\n");
    EXPECT_TRUE(wait_until([&] {
        auto p = placement("gpu");
        return p[""] == 0 && p["node-a"] + p["node-b"] + p["node-c"] == 2 && p["node-a"] <= 1 &&
               p["node-b"] <= 1 && p["node-c"] <= 1;
    }));

    auto bad = cli({"service", "create", "--detach", "--name", "bad", "--placement-pref",
                    "pack=node.labels.zone", "busybox:1"});
    EXPECT_NE(bad.status, 0);
    EXPECT_NE(bad.err.find("unsupported placement preference pack (only spread is supported)"),
              std::string::npos)
        << bad.err;
}

TEST_F(Scheduling, WhatTheSchedulerCannotActOnIsRefused) {
    auto r = docker({"service", "create", "-d", "--no-resolve-image", "--name", "x",
                     "--reserve-memory", "1k", "busybox:1"});
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.err.find("invalid memory value 1024: Must be at least 4MiB"), std::string::npos)
        << r.err;
}

}  // namespace
