// The scheduler through the real orchestrator and registries over a sealed store, with an
// injected clock: placement preferences, MaxReplicas, reservations, platforms, the reasons a task
// waits, and the enforcement that moves tasks off nodes that stopped matching.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <filesystem>

#include "coffer/crypto/random.h"
#include "coffer/manager/committer.h"
#include "coffer/manager/dispatcher.h"
#include "coffer/manager/nodes.h"
#include "coffer/manager/orchestrator.h"
#include "coffer/manager/scheduler.h"
#include "coffer/manager/secrets.h"
#include "coffer/manager/services.h"
#include "coffer/model/service_json.h"
#include "coffer/nodeproto/session.h"
#include "coffer/store/store.h"

using namespace coffer;
using namespace coffer::manager;
using model::TaskState;
namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

constexpr std::int64_t sec = model::second_ns;
constexpr std::int64_t gib = 1LL << 30;

struct NodeSetup {
    model::Labels labels;
    std::int64_t cpus = 4;
    std::int64_t memory = 4 * gib;
    std::vector<model::GenericResource> generic;
    std::string architecture = "x86_64";
};

class Scheduler : public ::testing::Test {
  protected:
    void SetUp() override {
        crypto::init();
        auto pattern = (fs::temp_directory_path() / "coffer-scheduler-test-XXXXXX").string();
        ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
        dir_ = pattern;
        auto opened = store::Store::open({.dir = dir_ / "data"});
        ASSERT_TRUE(opened.ok());
        store_ = std::move(opened->store);
        committer_ = std::make_unique<Committer>(*store_);
        secrets_ = SecretRegistry::load(*store_, *committer_, counter_).value();
        configs_ = ConfigRegistry::load(*store_, *committer_, counter_).value();
        services_ = ServiceRegistry::load(*store_, counter_, *secrets_, *configs_).value();
        tasks_ = TaskRegistry::load(*store_, counter_).value();
        nodes_ = NodeRegistry::load(*store_, counter_).value();
        orch_ =
            std::make_unique<Orchestrator>(*services_, *tasks_, *nodes_, [this] { return now_; });
        dispatcher_ = std::make_unique<Dispatcher>(*tasks_, *nodes_, *secrets_, *configs_,
                                                   [this] { return now_; });
    }
    void TearDown() override {
        orch_.reset();
        dispatcher_.reset();
        committer_.reset();
        services_.reset();
        store_.reset();
        fs::remove_all(dir_);
    }

    // A spec as the docker CLI sends it, with these TaskTemplate fields added.
    static Result<model::ServiceSpec> spec_of(const std::string& name, int replicas,
                                              json::object extra = {}) {
        json::object tt{{"ContainerSpec", json::object{{"Image", "busybox:1"},
                                                       {"Args", json::array{"sleep", "1d"}}}},
                        {"RestartPolicy", json::object{{"Condition", "any"}, {"Delay", 0}}}};
        for (auto& [k, v] : extra) tt[k] = v;
        json::object o{{"Name", name}, {"TaskTemplate", tt}};
        o["Mode"] = replicas < 0
                        ? json::object{{"Global", json::object{}}}
                        : json::object{{"Replicated", json::object{{"Replicas", replicas}}}};
        auto s = model::service_spec_from_json(o);
        if (!s) return std::move(s).error();
        if (auto v = model::validate_service_spec(*s); !v) return std::move(v).error();
        return s;
    }
    std::string service(const std::string& name, int replicas, json::object extra = {}) {
        auto s = spec_of(name, replicas, std::move(extra));
        EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message);
        auto created = services_->create(*s);
        EXPECT_TRUE(created.ok());
        return created->meta.id;
    }
    std::string node(const std::string& host, NodeSetup setup = {}) {
        NodeRegistration r;
        r.id = crypto::random_id();
        r.description.hostname = host;
        r.description.nano_cpus = setup.cpus * sec;
        r.description.memory_bytes = setup.memory;
        r.description.generic = setup.generic;
        r.description.architecture = setup.architecture;
        auto n = nodes_->register_node(std::move(r));
        EXPECT_TRUE(n.ok());
        if (!setup.labels.empty()) relabel(n->meta.id, setup.labels);
        hosts_[n->meta.id] = host;
        return n->meta.id;
    }
    void relabel(const std::string& id, model::Labels labels) {
        auto n = nodes_->get(id);
        ASSERT_TRUE(n);
        auto spec = n->spec;
        spec.labels = std::move(labels);
        ASSERT_TRUE(nodes_->update(id, n->meta.version, spec).ok());
    }

    void pass() { ASSERT_TRUE(orch_->reconcile(now_).ok()); }
    // Passes with the nodes starting what they are given, until nothing changes.
    void settle() {
        for (int i = 0; i < 6; ++i) {
            pass();
            for (const auto& t : tasks_->list()) {
                if (t.node_id.empty() || model::is_terminal(t.status.state)) continue;
                TaskState s =
                    t.desired == TaskState::running ? TaskState::running : TaskState::shutdown;
                if (t.desired == TaskState::ready || t.status.state == s ||
                    t.status.state < TaskState::assigned)
                    continue;
                StatusReport r{t.meta.id, s, std::string(model::to_string(s)), "",
                               model::ContainerStatus{"c", 1, 0}};
                ASSERT_TRUE(dispatcher_->report(t.node_id, {r}).ok());
            }
        }
    }
    std::vector<model::Task> live(const std::string& service_id) {
        return tasks_->list([&](const model::Task& t) {
            return t.service_id == service_id && t.desired <= TaskState::running;
        });
    }
    // Hostname -> tasks of the service placed there.
    std::map<std::string, int> spread_of(const std::string& service_id) {
        std::map<std::string, int> out;
        for (const auto& t : live(service_id))
            if (!t.node_id.empty()) ++out[hosts_[t.node_id]];
        return out;
    }
    std::vector<model::Task> pending(const std::string& service_id) {
        std::vector<model::Task> out;
        for (const auto& t : live(service_id))
            if (t.status.state == TaskState::pending) out.push_back(t);
        return out;
    }

    fs::path dir_;
    std::unique_ptr<store::Store> store_;
    std::unique_ptr<Committer> committer_;
    VersionCounter counter_;
    std::unique_ptr<SecretRegistry> secrets_;
    std::unique_ptr<ConfigRegistry> configs_;
    std::unique_ptr<ServiceRegistry> services_;
    std::unique_ptr<TaskRegistry> tasks_;
    std::unique_ptr<NodeRegistry> nodes_;
    std::unique_ptr<Orchestrator> orch_;
    std::unique_ptr<Dispatcher> dispatcher_;
    std::map<std::string, std::string> hosts_;
    model::Timestamp now_{1'800'000'000 * sec};
};

json::object spread(std::initializer_list<const char*> labels, json::object placement = {}) {
    json::array prefs;
    for (const auto* l : labels)
        prefs.push_back(json::object{{"Spread", json::object{{"SpreadDescriptor", l}}}});
    placement["Preferences"] = std::move(prefs);
    return json::object{{"Placement", std::move(placement)}};
}

json::object reserve(std::int64_t memory, std::int64_t nano_cpus, json::array generic = {}) {
    json::object r{{"MemoryBytes", memory}, {"NanoCPUs", nano_cpus}};
    if (!generic.empty()) r["GenericResources"] = std::move(generic);
    return json::object{{"Resources", json::object{{"Reservations", std::move(r)}}}};
}

json::object discrete(const char* kind, std::int64_t n) {
    return json::object{{"DiscreteResourceSpec", json::object{{"Kind", kind}, {"Value", n}}}};
}

}  // namespace

TEST_F(Scheduler, SpreadEvensTasksOverALabelsValuesAndNodesWithoutItFormTheirOwnGroup) {
    node("a1", {.labels = {{"zone", "a"}}});
    node("a2", {.labels = {{"zone", "a"}}});
    node("a3", {.labels = {{"zone", "a"}}});
    node("b1", {.labels = {{"zone", "b"}}});
    node("none");
    auto web = service("web", 6, spread({"node.labels.zone"}));
    settle();
    auto on = spread_of(web);
    // Three groups (a, b, no label) of two tasks each, however many nodes each has.
    EXPECT_EQ(on["a1"] + on["a2"] + on["a3"], 2);
    EXPECT_EQ(on["b1"], 2);
    EXPECT_EQ(on["none"], 2);
    // Within zone a, the least loaded nodes.
    EXPECT_LE(std::max({on["a1"], on["a2"], on["a3"]}), 1);

    // Without the preference the same service spreads over nodes: zone a would get 3 of 5.
    auto plain = service("plain", 5);
    settle();
    auto p = spread_of(plain);
    EXPECT_EQ(p["a1"] + p["a2"] + p["a3"], 3);
}

TEST_F(Scheduler, NestedPreferencesSpreadLevelByLevel) {
    node("a-r1", {.labels = {{"zone", "a"}, {"rack", "1"}}});
    node("a-r2", {.labels = {{"zone", "a"}, {"rack", "2"}}});
    node("b-r1", {.labels = {{"zone", "b"}, {"rack", "1"}}});
    auto web = service("web", 4, spread({"node.labels.zone", "node.labels.rack"}));
    settle();
    auto on = spread_of(web);
    // Two per zone; zone a's two split over its racks, zone b's both on its one node.
    EXPECT_EQ(on["a-r1"], 1);
    EXPECT_EQ(on["a-r2"], 1);
    EXPECT_EQ(on["b-r1"], 2);
}

TEST_F(Scheduler, SpreadCountsTheTasksAlreadyRunning) {
    node("a", {.labels = {{"zone", "a"}}});
    auto web = service("web", 2, spread({"node.labels.zone"}));
    settle();
    EXPECT_EQ(spread_of(web)["a"], 2);
    node("b", {.labels = {{"zone", "b"}}});
    auto s = services_->get(web);
    auto bigger = s->spec;
    bigger.replicas = 4;
    ASSERT_TRUE(services_->update(web, s->meta.version, bigger).ok());
    settle();
    // The two new tasks go to zone b, which has none.
    EXPECT_EQ(spread_of(web)["b"], 2);
}

TEST_F(Scheduler, MaxReplicasLeavesTheRestPendingWithTheReasonUntilANodeComes) {
    node("n1");
    node("n2");
    auto web = service("web", 3, {{"Placement", json::object{{"MaxReplicas", 1}}}});
    settle();
    auto on = spread_of(web);
    EXPECT_EQ(on["n1"], 1);
    EXPECT_EQ(on["n2"], 1);
    auto waiting = pending(web);
    ASSERT_EQ(waiting.size(), 1u);
    EXPECT_EQ(waiting[0].status.err, "no suitable node (max replicas per node limit exceed)");
    EXPECT_EQ(waiting[0].status.message, "pending task scheduling");
    EXPECT_TRUE(waiting[0].node_id.empty());

    node("n3");
    settle();
    EXPECT_TRUE(pending(web).empty());
    auto placed = tasks_->get(waiting[0].meta.id);
    ASSERT_TRUE(placed);
    EXPECT_EQ(hosts_[placed->node_id], "n3");
    EXPECT_EQ(placed->status.err, "");  // cleared once placed
}

TEST_F(Scheduler, ReservationsFitInWhatNodesReportLessWhatTheirTasksReserve) {
    node("n1", {.cpus = 2, .memory = 1 * gib});
    node("n2", {.cpus = 2, .memory = 1 * gib});
    auto mem = service("mem", 3, reserve(600 << 20, 0));
    settle();
    EXPECT_EQ(spread_of(mem)["n1"], 1);
    EXPECT_EQ(spread_of(mem)["n2"], 1);
    auto waiting = pending(mem);
    ASSERT_EQ(waiting.size(), 1u);
    EXPECT_EQ(waiting[0].status.err, "no suitable node (insufficient resources on 2 nodes)");

    // CPUs are counted the same way, across services: 1.5 of each node's 2 are left.
    auto cpu = service("cpu", 2, reserve(0, 1'500'000'000));
    settle();
    EXPECT_TRUE(pending(cpu).empty());
    auto more = service("more", 1, reserve(0, 1'000'000'000));
    settle();
    ASSERT_EQ(pending(more).size(), 1u);
    EXPECT_EQ(pending(more)[0].status.err, "no suitable node (insufficient resources on 2 nodes)");

    // Scaling the memory service down frees its reservation for the pending task.
    auto s = services_->get(mem);
    auto fewer = s->spec;
    fewer.replicas = 1;
    ASSERT_TRUE(services_->update(mem, s->meta.version, fewer).ok());
    settle();
    EXPECT_TRUE(pending(mem).empty());
}

TEST_F(Scheduler, GenericResourcesCountNamedUnitsAndDiscreteCounts) {
    node("gpus", {.generic = {{"gpu", "GPU-1", 0}, {"gpu", "GPU-2", 0}}});
    node("ssd", {.generic = {{"ssd", "", 3}}});
    node("plain");
    auto gpu = service("gpu", 3, reserve(0, 0, json::array{discrete("gpu", 1)}));
    auto ssd = service("ssd", 2, reserve(0, 0, json::array{discrete("ssd", 2)}));
    settle();
    EXPECT_EQ(spread_of(gpu)["gpus"], 2);
    ASSERT_EQ(pending(gpu).size(), 1u);
    EXPECT_EQ(pending(gpu)[0].status.err, "no suitable node (insufficient resources on 3 nodes)");
    EXPECT_EQ(spread_of(ssd)["ssd"], 1);
    EXPECT_EQ(pending(ssd).size(), 1u);
}

TEST_F(Scheduler, PlatformsMustMatchTheNodes) {
    node("amd");
    auto arm_only = service(
        "arm", 1,
        {{"Placement",
          json::object{{"Platforms",
                        json::array{json::object{{"Architecture", "arm64"}, {"OS", "linux"}}}}}}});
    auto amd = service(
        "amd", 1,
        {{"Placement",
          json::object{{"Platforms", json::array{json::object{{"Architecture", "amd64"}}}}}}});
    settle();
    EXPECT_EQ(spread_of(amd)["amd"], 1);  // x86_64 is amd64
    ASSERT_EQ(pending(arm_only).size(), 1u);
    EXPECT_EQ(pending(arm_only)[0].status.err, "no suitable node (unsupported platform on 1 node)");
    node("arm", {.architecture = "aarch64"});
    settle();
    EXPECT_EQ(spread_of(arm_only)["arm"], 1);
}

TEST_F(Scheduler, ReasonsAreCountedPerNodeAndListedMostFrequentFirst) {
    auto down = node("down");
    ASSERT_TRUE(nodes_->set_status(down, model::NodeState::down, "").ok());
    node("small", {.memory = 1 * gib});
    node("x", {.labels = {{"disk", "hdd"}}});
    node("y", {.labels = {{"disk", "hdd"}}});
    auto web = service("web", 1, [] {
        auto o = reserve(2 * gib, 0);
        o["Placement"] = json::object{{"Constraints", json::array{"node.labels.disk==ssd"}}};
        return o;
    }());
    settle();
    ASSERT_EQ(pending(web).size(), 1u);
    EXPECT_EQ(pending(web)[0].status.err,
              "no suitable node (scheduling constraints not satisfied on 2 nodes; 1 node not "
              "available for new tasks; insufficient resources on 1 node)");
}

TEST_F(Scheduler, ATaskWhoseNodeStopsMatchingIsRejectedAndPlacedAgain) {
    auto a = node("a", {.labels = {{"ssd", "yes"}}});
    auto b = node("b");
    auto web = service(
        "web", 1,
        {{"Placement", json::object{{"Constraints", json::array{"node.labels.ssd==yes"}}}}});
    settle();
    auto first = live(web).at(0);
    ASSERT_EQ(first.node_id, a);
    ASSERT_EQ(first.status.state, TaskState::running);

    relabel(a, {});
    pass();
    auto rejected = tasks_->get(first.meta.id);
    EXPECT_EQ(rejected->status.state, TaskState::rejected);
    EXPECT_EQ(rejected->status.message, "task rejected by constraint enforcer");
    EXPECT_EQ(rejected->status.err, "assigned node no longer meets constraints");
    // Its replacement waits for a node that matches.
    ASSERT_EQ(pending(web).size(), 1u);
    EXPECT_EQ(pending(web)[0].status.err,
              "no suitable node (scheduling constraints not satisfied on 2 nodes)");

    relabel(b, {{"ssd", "yes"}});
    settle();
    ASSERT_EQ(live(web).size(), 1u);
    EXPECT_EQ(live(web)[0].node_id, b);
    EXPECT_EQ(live(web)[0].status.state, TaskState::running);
}

TEST_F(Scheduler, TasksBeyondANodesShrunkResourcesAreMoved) {
    auto a = node("a", {.memory = 2 * gib});
    auto web = service("web", 2, reserve(gib, 0));
    settle();
    ASSERT_EQ(spread_of(web)["a"], 2);
    node("b", {.memory = 2 * gib});

    auto d = nodes_->get(a)->description;
    d.memory_bytes = gib + gib / 2;
    ASSERT_TRUE(nodes_->set_description(a, d).ok());
    settle();
    auto on = spread_of(web);
    EXPECT_EQ(on["a"], 1);
    EXPECT_EQ(on["b"], 1);
    std::size_t rejected = 0;
    for (const auto& t : tasks_->list())
        if (t.status.state == TaskState::rejected && t.node_id == a) ++rejected;
    EXPECT_EQ(rejected, 1u);
}

TEST_F(Scheduler, AGlobalServiceLeavesANodeThatStopsMatching) {
    auto a = node("a", {.labels = {{"web", "1"}}});
    auto b = node("b", {.labels = {{"web", "1"}}});
    auto web =
        service("web", -1,
                {{"Placement", json::object{{"Constraints", json::array{"node.labels.web==1"}}}}});
    settle();
    ASSERT_EQ(live(web).size(), 2u);
    relabel(b, {});
    settle();
    auto left = live(web);
    ASSERT_EQ(left.size(), 1u);
    EXPECT_EQ(left[0].node_id, a);
}

TEST_F(Scheduler, AGlobalTaskIsToldWhatItsNodeLacks) {
    node("a", {.memory = gib});
    auto web = service("web", -1, reserve(2 * gib, 0));
    settle();
    auto waiting = pending(web);
    ASSERT_EQ(waiting.size(), 1u);
    EXPECT_EQ(waiting[0].status.err, "insufficient resources on 1 node");
}

TEST_F(Scheduler, NoNodesIsNoSuitableNode) {
    auto web = service("web", 1);
    settle();
    ASSERT_EQ(pending(web).size(), 1u);
    EXPECT_EQ(pending(web)[0].status.err, "no suitable node");
}

TEST(SchedulerSpecs, WhatSwarmRefusesIsRefused) {
    auto refused = [](json::object extra) {
        json::object tt{{"ContainerSpec", json::object{{"Image", "busybox:1"}}}};
        for (auto& [k, v] : extra) tt[k] = v;
        auto s = model::service_spec_from_json(json::object{{"Name", "x"}, {"TaskTemplate", tt}});
        if (!s) return s.error().message;
        auto v = model::validate_service_spec(*s);
        return v ? std::string() : v.error().message;
    };
    EXPECT_EQ(refused(spread({"engine.labels.zone"})),
              "TaskTemplate.Placement.Preferences: spread descriptor 'engine.labels.zone' is not "
              "supported (node.labels.<label>)");
    EXPECT_EQ(refused({{"Placement",
                        json::object{{"Preferences", json::array{json::object{{"Pack", 1}}}}}}}),
              "TaskTemplate.Placement.Preferences: each preference must be "
              "{\"Spread\":{\"SpreadDescriptor\":\"node.labels.<label>\"}}");
    EXPECT_EQ(refused(reserve(1024, 0)), "invalid memory value 1024: Must be at least 4MiB");
    EXPECT_EQ(refused(reserve(0, 1000)), "invalid cpu value 1e-06: Must be at least 0.001");
    EXPECT_EQ(refused(reserve(
                  0, 0,
                  json::array{json::object{
                      {"NamedResourceSpec", json::object{{"Kind", "gpu"}, {"Value", "GPU-1"}}}}})),
              "invalid argument for resource gpu");
    EXPECT_EQ(refused({{"Placement", json::object{{"MaxReplicas", -1}}}}),
              "field TaskTemplate.Placement.MaxReplicas cannot be negative");
    EXPECT_EQ(refused(spread({"node.labels.zone"}, json::object{{"MaxReplicas", 2}})), "");
}

TEST(SchedulerSpecs, NodeResourcesRoundTripThroughTheirJson) {
    model::Node n;
    n.meta.id = crypto::random_id();
    n.description.hostname = "h";
    n.description.nano_cpus = 8 * sec;
    n.description.memory_bytes = 16 * gib;
    n.description.generic = {{"gpu", "GPU-1", 0}, {"ssd", "", 3}};
    auto o = model::to_json(n);
    auto& res = o.at("Description").at("Resources").as_object();
    EXPECT_EQ(res.at("NanoCPUs").as_int64(), 8 * sec);
    EXPECT_EQ(json::serialize(res.at("GenericResources")),
              R"([{"NamedResourceSpec":{"Kind":"gpu","Value":"GPU-1"}},)"
              R"({"DiscreteResourceSpec":{"Kind":"ssd","Value":3}}])");
    auto back = model::node_from_json(o);
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(back->description.generic, n.description.generic);
    EXPECT_EQ(back->description.memory_bytes, 16 * gib);
}

TEST(NodeDescriptionMessage, RoundTripsAndRefusesWhatTheSchedulerCannotUse) {
    nodeproto::DescriptionMessage m{
        "linux", "x86_64", 4 * sec, 8 * gib, {{"gpu", "GPU-1", 0}, {"ssd", "", 2}}};
    auto back = nodeproto::decode_description(nodeproto::encode(m));
    ASSERT_TRUE(back.ok()) << back.error().message;
    EXPECT_EQ(*back, m);
    auto decode = [](std::string_view text) {
        auto r = nodeproto::decode_description(crypto::SecureBuffer::copy_of(text));
        return r ? std::string() : r.error().message;
    };
    EXPECT_EQ(decode(R"({"type":"description","os":"linux","architecture":"x86_64"})"), "");
    EXPECT_NE(decode(R"({"type":"description","os":"Linux OS","architecture":"x86_64"})"), "");
    EXPECT_NE(decode(R"({"type":"description","os":"linux","architecture":"x86_64",)"
                     R"("memory_bytes":-1})"),
              "");
    EXPECT_NE(decode(R"({"type":"description","os":"linux","architecture":"x86_64",)"
                     R"("generic":[{"kind":"gpu","count":0}]})"),
              "");
    EXPECT_NE(decode(R"({"type":"description","os":"linux","architecture":"x86_64",)"
                     R"("generic":[{"kind":"gpu","value":"a","count":1}]})"),
              "");
    EXPECT_NE(decode(R"({"type":"description","os":"linux","architecture":"x86_64",)"
                     R"("generic":[{"kind":"g p u","value":"a"}]})"),
              "");
}
