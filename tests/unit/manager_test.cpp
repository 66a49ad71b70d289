// The manager's services, scheduler, orchestrator and dispatcher over a real sealed store, driven
// with fake node reports and an injected clock.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <thread>

#include "coffer/crypto/aead.h"
#include "coffer/crypto/random.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/manager/committer.h"
#include "coffer/manager/deliveries.h"
#include "coffer/manager/dispatcher.h"
#include "coffer/manager/nodes.h"
#include "coffer/manager/orchestrator.h"
#include "coffer/manager/secrets.h"
#include "coffer/manager/services.h"
#include "coffer/model/secret_update.h"
#include "coffer/model/service_json.h"
#include "coffer/nodeproto/session.h"
#include "coffer/nodeproto/status.h"
#include "coffer/store/store.h"
#include "unlock_limiter.h"

using namespace coffer;
using namespace coffer::manager;
using model::TaskState;
namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

// The dispatcher re-evaluates its streams when tasks or nodes change, as in the manager.
class DispatcherEvents : public ClusterEvents {
  public:
    std::unique_ptr<Dispatcher>* dispatcher = nullptr;
    void tasks_changed() override { (*dispatcher)->changed(); }
    void nodes_changed() override { (*dispatcher)->changed(); }
};

constexpr std::int64_t sec = model::second_ns;

class Cluster : public ::testing::Test {
  protected:
    void SetUp() override {
        crypto::init();
        auto pattern = (fs::temp_directory_path() / "coffer-manager-test-XXXXXX").string();
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
        events_.dispatcher = &dispatcher_;
        tasks_->emit_changes(events_, &ClusterEvents::tasks_changed);
        nodes_->emit_changes(events_, &ClusterEvents::nodes_changed);
    }
    void TearDown() override {
        orch_.reset();
        dispatcher_.reset();
        committer_.reset();
        services_.reset();
        store_.reset();
        fs::remove_all(dir_);
    }

    std::string secret(const std::string& name, std::string_view bytes) {
        std::promise<Result<model::Secret>> p;
        secrets_->create({name, {}}, crypto::SecureBuffer::copy_of(bytes),
                         [&](Result<model::Secret> s) { p.set_value(std::move(s)); });
        auto s = p.get_future().get();
        EXPECT_TRUE(s.ok());
        return s->meta.id;
    }

    std::string config(const std::string& name, std::string_view bytes) {
        std::promise<Result<model::Config>> p;
        configs_->create({name, {}}, crypto::SecureBuffer::copy_of(bytes),
                         [&](Result<model::Config> c) { p.set_value(std::move(c)); });
        auto c = p.get_future().get();
        EXPECT_TRUE(c.ok()) << (c.ok() ? "" : c.error().message);
        return c.ok() ? c->meta.id : "";
    }

    // A spec as the docker CLI sends it.
    model::ServiceSpec spec(const std::string& name, int replicas,
                            std::vector<std::pair<std::string, std::string>> secrets = {},
                            json::object extra_template = {}) {
        json::array refs;
        for (const auto& [sname, target] : secrets)
            refs.push_back(json::object{
                {"File", json::object{{"Name", target}, {"UID", "0"}, {"GID", "0"}, {"Mode", 292}}},
                {"SecretID", secrets_->find(sname)->meta.id},
                {"SecretName", sname}});
        json::object tt{{"ContainerSpec", json::object{{"Image", "busybox:1"},
                                                       {"Args", json::array{"sleep", "1d"}},
                                                       {"Secrets", refs}}},
                        {"RestartPolicy", json::object{{"Condition", "any"}, {"Delay", 2 * sec}}}};
        for (auto& [k, v] : extra_template) tt[k] = v;
        json::object o{{"Name", name}, {"TaskTemplate", tt}};
        if (replicas < 0)
            o["Mode"] = json::object{{"Global", json::object{}}};
        else
            o["Mode"] = json::object{{"Replicated", json::object{{"Replicas", replicas}}}};
        o["UpdateConfig"] = json::object{{"Parallelism", 1}, {"Monitor", 1 * sec}};
        auto s = model::service_spec_from_json(o);
        EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message);
        return *s;
    }

    std::string node(const std::string& host, model::Labels labels = {}) {
        NodeRegistration r;
        r.id = crypto::random_id();
        r.description.hostname = host;
        auto n = nodes_->register_node(std::move(r));
        EXPECT_TRUE(n.ok());
        if (!labels.empty()) {
            auto spec = n->spec;
            spec.labels = std::move(labels);
            EXPECT_TRUE(nodes_->update(n->meta.id, n->meta.version, spec).ok());
        }
        return n->meta.id;
    }

    void pass() { ASSERT_TRUE(orch_->reconcile(now_).ok()); }
    void advance(std::int64_t ns) { now_.nanos += ns; }

    std::vector<model::Task> tasks_of(const std::string& service_id, bool live_only = true) {
        return tasks_->list([&](const model::Task& t) {
            return t.service_id == service_id && (!live_only || t.desired <= TaskState::running);
        });
    }
    void report(const model::Task& t, TaskState s, int exit_code = 0) {
        StatusReport r{t.meta.id, s, std::string(model::to_string(s)), "",
                       model::ContainerStatus{"c", 1, exit_code}};
        ASSERT_TRUE(dispatcher_->report(t.node_id, {r}).ok());
    }
    // Agents: every assigned task with desired running starts; every task desired shut down stops.
    void agents_act() {
        for (const auto& t : tasks_->list()) {
            if (t.node_id.empty() || model::is_terminal(t.status.state)) continue;
            if (t.desired == TaskState::running && t.status.state < TaskState::running &&
                t.status.state >= TaskState::assigned)
                report(t, TaskState::running);
            if (t.desired == TaskState::shutdown && t.status.state >= TaskState::assigned)
                report(t, TaskState::shutdown);
        }
    }
    std::size_t running(const std::string& service_id) {
        std::size_t n = 0;
        for (const auto& t : tasks_of(service_id))
            if (t.status.state == TaskState::running) ++n;
        return n;
    }

    fs::path dir_;
    DispatcherEvents events_;
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
    model::Timestamp now_{1'800'000'000 * sec};
};

template <typename T>
std::string message(const Result<T>& r) {
    return r.ok() ? "" : r.error().message;
}

}  // namespace

TEST_F(Cluster, SecretInUseCannotBeRemoved) {
    secret("s1", "x");
    ASSERT_TRUE(services_->create(spec("web", 1, {{"s1", "s1"}})).ok());
    auto r = secrets_->remove("s1");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, Errc::invalid_argument);
    EXPECT_EQ(r.error().message, "secret 's1' is in use by the following service: web");
    ASSERT_TRUE(services_->create(spec("api", 1, {{"s1", "s1"}})).ok());
    EXPECT_EQ(secrets_->remove("s1").error().message,
              "secret 's1' is in use by the following services: api, web");
    ASSERT_TRUE(services_->remove("web").ok());
    ASSERT_TRUE(services_->remove("api").ok());
    EXPECT_TRUE(secrets_->remove("s1").ok());
}

// Configs: a named object with data like a secret, whose bytes the index keeps (inspect shows
// them), sealed in tables of their own, protected while a service references them.
TEST_F(Cluster, ConfigsKeepTheirDataAndAreProtectedWhileInUse) {
    auto id = config("app", "listen 80");
    auto found = configs_->find("app");
    ASSERT_TRUE(found.ok());
    EXPECT_EQ(found->meta.id, id);
    EXPECT_EQ(found->data, "listen 80");
    EXPECT_EQ(message(configs_->find("nosuch")), "config nosuch not found");
    // A secret of the same name is another object.
    secret("app", "secret-bytes");
    EXPECT_EQ(configs_->find("app")->data, "listen 80");
    EXPECT_EQ(configs_->size(), 1u);

    auto other = crypto::SecureBuffer::copy_of(std::string_view("listen 81"));
    EXPECT_EQ(message(configs_->update("app", found->meta.version, {"app", {}}, &other)),
              "only updates to Labels are allowed");
    auto same = crypto::SecureBuffer::copy_of(std::string_view("listen 80"));
    auto labelled = configs_->update("app", found->meta.version, {"app", {{"k", "v"}}}, &same);
    ASSERT_TRUE(labelled.ok()) << labelled.error().message;
    EXPECT_EQ(labelled->data, "listen 80");
    auto f = model::Filters::parse(R"({"label":{"k=v":true}})", {"id", "name", "names", "label"});
    ASSERT_TRUE(f.ok());
    EXPECT_EQ(configs_->list(*f).size(), 1u);

    auto sp = spec("web", 1);
    sp.task.container.configs = {{id, "app", "/etc/app.conf", "0", "0", 0444}};
    ASSERT_TRUE(services_->create(sp).ok());
    EXPECT_EQ(message(configs_->remove("app")),
              "config 'app' is in use by the following service: web");
    // The secret of the same name is not in use.
    EXPECT_TRUE(secrets_->remove("app").ok());
    ASSERT_TRUE(services_->remove("web").ok());
    EXPECT_TRUE(configs_->remove("app").ok());
    sp.name = "api";
    EXPECT_EQ(message(services_->create(sp)), "config not found: app");
}

TEST_F(Cluster, ConfigsSurviveARestartSealed) {
    auto id = config("app", "listen 80");
    services_.reset();
    configs_ = ConfigRegistry::load(*store_, *committer_, counter_).value();
    services_ = ServiceRegistry::load(*store_, counter_, *secrets_, *configs_).value();
    EXPECT_EQ(configs_->find(id)->data, "listen 80");
    EXPECT_TRUE(configs_->data(id)->equals(
        crypto::SecureBuffer::copy_of(std::string_view("listen 80")).span()));
    // Sealed at rest: the bytes are nowhere in the store's files.
    for (const auto& e : fs::recursive_directory_iterator(dir_ / "data")) {
        if (!e.is_regular_file()) continue;
        std::ifstream in(e.path(), std::ios::binary);
        std::string text((std::istreambuf_iterator<char>(in)), {});
        EXPECT_EQ(text.find("listen 80"), std::string::npos) << e.path();
    }
}

TEST_F(Cluster, MissingSecretsRefusedAtCreateAndUpdate) {
    secret("a", "x");
    secret("b", "y");
    auto sp = spec("web", 1, {{"a", "a"}, {"b", "b"}});
    ASSERT_TRUE(secrets_->remove("a").ok());
    EXPECT_EQ(message(services_->create(sp)), "secret not found: a");
    ASSERT_TRUE(secrets_->remove("b").ok());
    EXPECT_EQ(message(services_->create(sp)), "secrets not found: a, b");
    secret("c", "z");
    auto created = services_->create(spec("web", 1, {{"c", "c"}}));
    ASSERT_TRUE(created.ok());
    EXPECT_EQ(message(services_->update("web", created->meta.version, sp)),
              "secrets not found: a, b");
}

// A reference's SecretName must be the name of the secret its SecretID is: the task would get
// one secret's bytes while inspect and removal go by the other's name.
TEST_F(Cluster, AReferenceWhoseNameIsNotItsSecretsIsRefused) {
    secret("canary", "x");
    secret("h5", "y");
    auto sp = spec("web", 1, {{"canary", "m"}});
    sp.task.container.secrets[0].secret_name = "h5";
    EXPECT_EQ(message(services_->create(sp)),
              fmt::format("secret reference h5: SecretID {} is the secret canary, not h5",
                          secrets_->find("canary")->meta.id));
    EXPECT_TRUE(services_->list().empty());
    EXPECT_TRUE(secrets_->remove("h5").ok()) << "the refused service holds nothing";
    sp.task.container.secrets[0].secret_name = "canary";
    EXPECT_TRUE(services_->create(sp).ok());
}

TEST_F(Cluster, UpdatesAreOptimisticallyLocked) {
    auto s = services_->create(spec("web", 1));
    ASSERT_TRUE(s.ok());
    EXPECT_EQ(message(services_->create(spec("web", 2))),
              "name conflicts with an existing object: service web already exists");
    auto u = services_->update(s->meta.id, s->meta.version, spec("web", 3));
    ASSERT_TRUE(u.ok());
    EXPECT_EQ(u->previous->replicas, 1u);
    auto stale = services_->update("web", s->meta.version, spec("web", 4));
    EXPECT_EQ(stale.error().code, Errc::conflict);
    EXPECT_EQ(stale.error().message, "update out of sequence");
}

TEST_F(Cluster, SchedulerSpreadsAndHonoursConstraints) {
    auto n1 = node("n1", {{"zone", "a"}});
    auto n2 = node("n2", {{"zone", "b"}});
    auto web = services_->create(spec("web", 4))->meta.id;
    pass();
    std::map<std::string, int> per_node;
    for (const auto& t : tasks_of(web)) ++per_node[t.node_id];
    EXPECT_EQ(per_node[n1], 2);
    EXPECT_EQ(per_node[n2], 2);

    auto pinned = services_->create(
        spec("pinned", 2, {},
             {{"Placement", json::object{{"Constraints", json::array{"node.labels.zone==b"}}}}}));
    pass();
    for (const auto& t : tasks_of(pinned->meta.id)) EXPECT_EQ(t.node_id, n2);

    auto nowhere = services_->create(spec(
        "nowhere", 1, {},
        {{"Placement",
          json::object{{"Constraints", json::array{"node.hostname!=n1", "node.role==manager"}}}}}));
    pass();
    auto t = tasks_of(nowhere->meta.id).at(0);
    EXPECT_EQ(t.status.state, TaskState::pending);
    EXPECT_EQ(t.status.message, "pending task scheduling");
    EXPECT_EQ(t.status.err, "no suitable node (scheduling constraints not satisfied on 2 nodes)");
    EXPECT_TRUE(t.node_id.empty());
}

TEST_F(Cluster, FailedTaskIsRestartedAfterTheDelay) {
    node("n1");
    auto web = services_->create(spec("web", 1))->meta.id;
    pass();
    agents_act();
    auto first = tasks_of(web).at(0);
    report(first, TaskState::failed, 1);
    pass();
    auto live = tasks_of(web);
    ASSERT_EQ(live.size(), 1u);
    EXPECT_NE(live[0].meta.id, first.meta.id);
    EXPECT_EQ(live[0].desired, TaskState::ready);  // held back for the 2 s delay
    advance(2 * sec);
    pass();
    live = tasks_of(web);
    EXPECT_EQ(live[0].desired, TaskState::running);
    EXPECT_EQ(live[0].status.state, TaskState::assigned);
    EXPECT_EQ(live[0].slot, 1u);
}

TEST_F(Cluster, RollingUpdateReplacesOneSlotAtATime) {
    node("n1");
    node("n2");
    auto created = services_->create(spec("web", 3));
    auto web = created->meta.id;
    pass();
    agents_act();
    ASSERT_EQ(running(web), 3u);
    auto s = *services_->get(web);
    auto next = spec("web", 3, {}, {{"ForceUpdate", 1}});
    ASSERT_TRUE(services_->update(web, s.meta.version, next).ok());
    for (int round = 0; round < 20; ++round) {
        pass();
        // Never more than one slot in flight: at most one slot without a running task.
        EXPECT_GE(running(web) + 1, 3u);
        agents_act();
        pass();
        advance(sec);
        if (model::to_string(services_->get(web)->update_status->state) == "completed") break;
    }
    auto done = *services_->get(web);
    ASSERT_TRUE(done.update_status);
    EXPECT_EQ(model::to_string(done.update_status->state), "completed");
    EXPECT_EQ(done.update_status->message, "update completed");
    for (const auto& t : tasks_of(web)) EXPECT_EQ(t.spec.json, done.spec.task.json);
    EXPECT_EQ(running(web), 3u);
    EXPECT_EQ(tasks_of(web, false).size(), 6u);  // three replaced tasks kept as history
}

TEST_F(Cluster, NextUpdateBatchStartsOnceThePreviousRunsAndTheMonitorHoldsOnlyCompletion) {
    node("n1");
    auto web = services_->create(spec("web", 3))->meta.id;
    pass();
    agents_act();
    ASSERT_EQ(running(web), 3u);
    auto s = *services_->get(web);
    ASSERT_TRUE(
        services_->update(web, s.meta.version, spec("web", 3, {}, {{"ForceUpdate", 1}})).ok());
    // Parallelism 1, monitor 5 s (the defaults): no time passes, yet every slot is replaced.
    for (int i = 0; i < 12; ++i) {
        pass();
        EXPECT_GE(running(web) + 1, 3u);
        agents_act();
    }
    auto current = *services_->get(web);
    std::size_t replaced = 0;
    for (const auto& t : tasks_of(web))
        if (t.spec.json == current.spec.task.json && t.status.state == TaskState::running)
            ++replaced;
    EXPECT_EQ(replaced, 3u);
    EXPECT_EQ(model::to_string(current.update_status->state), "updating");
    advance(6 * sec);
    pass();
    EXPECT_EQ(model::to_string(services_->get(web)->update_status->state), "completed");
}

TEST_F(Cluster, FailedUpdatePausesWithTheReason) {
    node("n1");
    auto web = services_->create(spec("web", 2))->meta.id;
    pass();
    agents_act();
    auto s = *services_->get(web);
    ASSERT_TRUE(
        services_->update(web, s.meta.version, spec("web", 2, {}, {{"ForceUpdate", 1}})).ok());
    for (int i = 0; i < 3; ++i) {
        pass();
        agents_act();
    }
    for (const auto& t : tasks_of(web))
        if (t.spec.json == services_->get(web)->spec.task.json &&
            t.status.state == TaskState::running)
            report(t, TaskState::failed, 2);
    pass();
    auto st = services_->get(web)->update_status;
    ASSERT_TRUE(st);
    EXPECT_EQ(model::to_string(st->state), "paused");
    EXPECT_TRUE(
        st->message.starts_with("update paused due to failure or early termination of task "))
        << st->message;
}

TEST_F(Cluster, ScaleDownAndDrainMoveTasks) {
    auto n1 = node("n1");
    auto n2 = node("n2");
    auto web = services_->create(spec("web", 4))->meta.id;
    pass();
    agents_act();
    auto n = *nodes_->get(n1);
    auto drained = n.spec;
    drained.availability = model::NodeAvailability::drain;
    ASSERT_TRUE(nodes_->update(n1, n.meta.version, drained).ok());
    pass();
    agents_act();
    pass();
    for (const auto& t : tasks_of(web)) EXPECT_EQ(t.node_id, n2);
    EXPECT_EQ(tasks_of(web).size(), 4u);
    auto s = *services_->get(web);
    ASSERT_TRUE(services_->update(web, s.meta.version, spec("web", 1)).ok());
    pass();
    std::set<std::uint64_t> slots;
    for (const auto& t : tasks_of(web)) slots.insert(t.slot);
    // The scale-down and the spec change (replicas only: the template is the same) keep slot 1.
    EXPECT_EQ(slots, std::set<std::uint64_t>{1});
}

TEST_F(Cluster, GlobalServiceRunsOnePerEligibleNode) {
    node("n1");
    auto n2 = node("n2", {{"gpu", "yes"}});
    auto all = services_->create(spec("all", -1))->meta.id;
    auto gpu =
        services_
            ->create(spec("gpu", -1, {},
                          {{"Placement",
                            json::object{{"Constraints", json::array{"node.labels.gpu==yes"}}}}}))
            ->meta.id;
    pass();
    EXPECT_EQ(tasks_of(all).size(), 2u);
    ASSERT_EQ(tasks_of(gpu).size(), 1u);
    EXPECT_EQ(tasks_of(gpu)[0].node_id, n2);
    node("n3");
    pass();
    EXPECT_EQ(tasks_of(all).size(), 3u);
}

TEST_F(Cluster, NodeGetsOnlyTheSecretsItsTasksReference) {
    auto n1 = node("n1");
    auto n2 = node("n2");
    secret("s1", "one");
    secret("s2", "two");
    auto pin = [](const std::string& host) {
        return json::object{
            {"Placement",
             json::object{{"Constraints", json::array{json::string("node.hostname==" + host)}}}}};
    };
    auto a = services_->create(spec("a", 1, {{"s1", "s1"}}, pin("n1")))->meta.id;
    ASSERT_TRUE(services_->create(spec("b", 1, {{"s2", "s2"}}, pin("n2"))).ok());
    pass();
    auto s1 = dispatcher_->subscribe(n1);
    ASSERT_TRUE(s1.ok());
    auto m = (*s1)->poll();
    ASSERT_TRUE(m);
    EXPECT_TRUE(m->complete);
    ASSERT_EQ(m->changes.size(), 2u);
    EXPECT_TRUE(m->changes[0].is_secret);  // the secret before the task that mounts it
    EXPECT_EQ(m->changes[0].secret->name, "s1");
    EXPECT_TRUE(m->changes[0].secret->data.equals(
        crypto::SecureBuffer::copy_of(std::string_view("one")).span()));
    EXPECT_TRUE(m->changes[1].task.has_value());
    auto wire = m->to_json();
    std::string text(reinterpret_cast<const char*>(wire.data()), wire.size());
    auto v = json::parse(text);
    EXPECT_EQ(v.at("type"), "assignments");
    EXPECT_EQ(v.at("Type"), "complete");
    EXPECT_EQ(v.at("Changes").at(0).at("Secret").at("Data"), "b25l");
    EXPECT_EQ(text.find("dHdv"), std::string::npos);  // never n2's secret
    EXPECT_FALSE((*s1)->poll());

    // The task ends: the task is withdrawn, then its secret.
    auto t = tasks_of(a).at(0);
    report(t, TaskState::running);
    (void)(*s1)->poll();
    report(t, TaskState::complete);
    m = (*s1)->next(std::chrono::milliseconds(1000));
    ASSERT_TRUE(m);
    EXPECT_FALSE(m->complete);
    ASSERT_EQ(m->changes.size(), 2u);
    EXPECT_FALSE(m->changes[0].is_secret);
    EXPECT_EQ(m->changes[0].action, AssignmentChange::Action::remove);
    EXPECT_TRUE(m->changes[1].is_secret);
    EXPECT_EQ(m->changes[1].action, AssignmentChange::Action::remove);

    // A node cannot report on another node's task.
    auto other = tasks_->list([&](const model::Task& x) { return x.node_id == n2; }).at(0);
    auto applied =
        dispatcher_->report(n1, {{other.meta.id, TaskState::failed, "", "", std::nullopt}});
    EXPECT_EQ(*applied, 0u);
}

TEST_F(Cluster, NodeGetsTheConfigsItsTasksReferenceBeforeTheTasks) {
    auto n1 = node("n1");
    auto id = config("app", "listen 80");
    config("unused", "nope");
    auto sp = spec("web", 1);
    sp.task.container.configs = {{id, "app", "/etc/app.conf", "0", "0", 0444}};
    auto web = services_->create(sp)->meta.id;
    pass();
    auto s1 = dispatcher_->subscribe(n1);
    ASSERT_TRUE(s1.ok());
    auto m = (*s1)->poll();
    ASSERT_TRUE(m);
    ASSERT_EQ(m->changes.size(), 2u);
    EXPECT_TRUE(m->changes[0].is_config);
    EXPECT_EQ(m->changes[0].secret->name, "app");
    EXPECT_TRUE(m->changes[1].task.has_value());
    auto wire = m->to_json();
    std::string text(reinterpret_cast<const char*>(wire.data()), wire.size());
    auto v = json::parse(text);
    EXPECT_EQ(v.at("Changes").at(0).at("Config").at("Data"), "bGlzdGVuIDgw");
    EXPECT_EQ(text.find("bm9wZQ"), std::string::npos);  // never a config no task uses

    auto t = tasks_of(web).at(0);
    report(t, TaskState::running);
    (void)(*s1)->poll();
    report(t, TaskState::complete);
    m = (*s1)->next(std::chrono::milliseconds(1000));
    ASSERT_TRUE(m);
    ASSERT_EQ(m->changes.size(), 2u);
    EXPECT_FALSE(m->changes[0].is_secret);
    EXPECT_TRUE(m->changes[1].is_config);
    EXPECT_EQ(m->changes[1].action, AssignmentChange::Action::remove);
}

TEST_F(Cluster, RegistriesSurviveARestart) {
    auto n1 = node("n1");
    auto web = services_->create(spec("web", 2))->meta.id;
    pass();
    auto before = tasks_->list();
    orch_.reset();
    dispatcher_.reset();
    services_.reset();
    tasks_ = TaskRegistry::load(*store_, counter_).value();
    nodes_ = NodeRegistry::load(*store_, counter_).value();
    services_ = ServiceRegistry::load(*store_, counter_, *secrets_, *configs_).value();
    EXPECT_EQ(services_->find("web")->meta.id, web);
    EXPECT_EQ(tasks_->list().size(), before.size());
    EXPECT_EQ(nodes_->get(n1)->state, model::NodeState::unknown);  // until its session is back
}

TEST_F(Cluster, FailedUpdateRollsBackWhenAskedTo) {
    node("n1");
    auto web = services_->create(spec("web", 1))->meta.id;
    pass();
    agents_act();
    auto s = *services_->get(web);
    auto next = spec("web", 1, {}, {{"ForceUpdate", 1}});
    auto o = model::spec_json(next, false);
    o["UpdateConfig"] = json::object{{"FailureAction", "rollback"}, {"Monitor", sec}};
    next = *model::service_spec_from_json(o);
    ASSERT_TRUE(services_->update(web, s.meta.version, next).ok());
    for (int i = 0; i < 3; ++i) {
        pass();
        agents_act();
    }
    for (const auto& t : tasks_of(web))
        if (t.spec.json == next.task.json) report(t, TaskState::failed, 1);
    pass();
    auto rolled = *services_->get(web);
    ASSERT_TRUE(rolled.update_status);
    EXPECT_EQ(model::to_string(rolled.update_status->state), "rollback_started");
    EXPECT_EQ(rolled.spec.task.json, s.spec.task.json);  // the previous spec is current again
    for (int i = 0; i < 6; ++i) {
        pass();
        agents_act();
        advance(sec);
    }
    pass();
    EXPECT_EQ(model::to_string(services_->get(web)->update_status->state), "rollback_completed");
    EXPECT_EQ(tasks_of(web).at(0).spec.json, s.spec.task.json);
    EXPECT_EQ(running(web), 1u);
}

TEST_F(Cluster, RollbackWithoutPreviousSpecIsRefusedAndChangesNothing) {
    node("n1");
    auto web = services_->create(spec("web", 1))->meta.id;
    auto before = *services_->get(web);
    auto r = services_->roll_back(web, before.meta.version);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, Errc::invalid_argument);
    EXPECT_EQ(r.error().message, "service " + web + " does not have a previous spec");
    EXPECT_EQ(services_->get(web)->meta.version, before.meta.version);
    EXPECT_FALSE(services_->get(web)->update_status);
}

TEST_F(Cluster, ManualRollbackSwapsSpecsAndRollsTasksBackUnderRollbackConfig) {
    node("n1");
    node("n2");
    auto old_spec = spec("web", 2);
    auto o = model::spec_json(old_spec, false);
    // Updates one at a time stop-first; rollbacks both slots at once, start-first.
    o["RollbackConfig"] =
        json::object{{"Parallelism", 0}, {"Order", "start-first"}, {"Monitor", sec}};
    old_spec = *model::service_spec_from_json(o);
    auto web = services_->create(old_spec)->meta.id;
    pass();
    agents_act();
    auto next_o = o;
    next_o["TaskTemplate"].as_object()["ContainerSpec"].as_object()["Image"] = "busybox:2";
    auto next = *model::service_spec_from_json(next_o);
    ASSERT_TRUE(services_->update(web, services_->get(web)->meta.version, next).ok());
    for (int i = 0; i < 10; ++i) {
        pass();
        agents_act();
        advance(sec);
    }
    ASSERT_EQ(model::to_string(services_->get(web)->update_status->state), "completed");
    for (const auto& t : tasks_of(web)) EXPECT_EQ(t.spec.json, next.task.json);

    auto current = *services_->get(web);
    auto rolled = services_->roll_back("web", current.meta.version, now_);
    ASSERT_TRUE(rolled.ok()) << rolled.error().message;
    EXPECT_EQ(rolled->spec.task.json, old_spec.task.json);
    ASSERT_TRUE(rolled->previous);
    EXPECT_EQ(rolled->previous->task.json, next.task.json);  // Swarm keeps the other one
    EXPECT_EQ(model::to_string(rolled->update_status->state), "rollback_started");
    EXPECT_EQ(rolled->update_status->message, "manually requested rollback");
    // A stale version is refused.
    EXPECT_EQ(services_->roll_back(web, current.meta.version).error().code, Errc::conflict);

    // Parallelism 0, start-first: both slots get an old-spec task while the new ones still run.
    pass();
    auto live = tasks_of(web);
    std::size_t old_ones = 0, new_running = 0;
    for (const auto& t : live) {
        if (t.spec.json == old_spec.task.json) ++old_ones;
        if (t.spec.json == next.task.json && t.desired == TaskState::running) ++new_running;
    }
    EXPECT_EQ(old_ones, 2u);
    EXPECT_EQ(new_running, 2u);
    for (int i = 0; i < 10; ++i) {
        pass();
        agents_act();
        advance(sec);
    }
    pass();
    auto done = *services_->get(web);
    EXPECT_EQ(model::to_string(done.update_status->state), "rollback_completed");
    ASSERT_EQ(tasks_of(web).size(), 2u);
    for (const auto& t : tasks_of(web)) {
        EXPECT_EQ(t.spec.json, old_spec.task.json);
        EXPECT_EQ(t.status.state, TaskState::running);
    }
}

TEST_F(Cluster, TaskHistoryLimitIsTheClustersSetting) {
    node("n1");
    auto web = services_->create(spec("web", 1))->meta.id;
    orch_->set_task_history_limit(-1);  // keep every task
    pass();
    agents_act();
    for (int i = 1; i <= 6; ++i) {
        auto next = spec("web", 1, {}, {{"ForceUpdate", i}});
        ASSERT_TRUE(services_->update(web, services_->get(web)->meta.version, next).ok());
        for (int k = 0; k < 4; ++k) {
            pass();
            agents_act();
            advance(sec);
        }
    }
    EXPECT_EQ(tasks_of(web, false).size(), 7u);
    orch_->set_task_history_limit(2);
    pass();
    auto kept = tasks_of(web, false);
    ASSERT_EQ(kept.size(), 2u);
    EXPECT_EQ(running(web), 1u);
}

TEST_F(Cluster, StartFirstStartsTheNewTaskBeforeStoppingTheOld) {
    node("n1");
    auto web = services_->create(spec("web", 1))->meta.id;
    pass();
    agents_act();
    auto old = tasks_of(web).at(0);
    auto s = *services_->get(web);
    auto next = spec("web", 1, {}, {{"ForceUpdate", 1}});
    auto o = model::spec_json(next, false);
    o["UpdateConfig"] = json::object{{"Order", "start-first"}, {"Monitor", sec}};
    ASSERT_TRUE(services_->update(web, s.meta.version, *model::service_spec_from_json(o)).ok());
    pass();
    EXPECT_EQ(tasks_->get(old.meta.id)->desired, TaskState::running);  // still serving
    EXPECT_EQ(tasks_of(web).size(), 2u);
    agents_act();
    pass();
    EXPECT_EQ(tasks_->get(old.meta.id)->desired, TaskState::shutdown);
    EXPECT_EQ(tasks_of(web).size(), 1u);
}

TEST_F(Cluster, RestartsStopAfterMaxAttemptsAndHistoryIsBounded) {
    node("n1");
    auto sp = spec("web", 1);
    auto o = model::spec_json(sp, false);
    o["TaskTemplate"].as_object()["RestartPolicy"] =
        json::object{{"Condition", "on-failure"}, {"Delay", 0}, {"MaxAttempts", 7}};
    auto web = services_->create(*model::service_spec_from_json(o))->meta.id;
    pass();
    for (int i = 0; i < 10; ++i) {
        agents_act();
        auto live = tasks_of(web);
        ASSERT_EQ(live.size(), 1u);
        if (model::is_terminal(live[0].status.state)) break;
        report(live[0], TaskState::failed, 1);
        pass();
    }
    auto all = tasks_of(web, false);
    EXPECT_EQ(all.size(), task_history_limit);
    EXPECT_EQ(tasks_of(web).at(0).status.state,
              TaskState::failed);  // no 8th restart: the slot stays failed
}

TEST_F(Cluster, ServiceCreateAndSecretRemoveNeverBothSucceed) {
    // A service created while its secret is being removed either blocks the removal or is
    // refused: never a service referencing a removed secret.
    int created = 0, removed = 0;
    for (int i = 0; i < 40; ++i) {
        auto name = fmt::format("s{}", i);
        secret(name, "x");
        auto sp = spec(fmt::format("svc{}", i), 0, {{name, name}});
        Result<model::Service> made = make_error(Errc::internal, "not run");
        Result<model::Secret> gone = make_error(Errc::internal, "not run");
        std::thread a([&] { made = services_->create(sp); });
        std::thread b([&] { gone = secrets_->remove(name); });
        a.join();
        b.join();
        EXPECT_FALSE(made.ok() && gone.ok()) << "iteration " << i;
        if (made.ok()) {
            ++created;
            EXPECT_TRUE(secrets_->find(name).ok());
            ASSERT_TRUE(services_->remove(made->meta.id).ok());
        }
        if (gone.ok())
            ++removed;
        else
            (void)secrets_->remove(name);
    }
    EXPECT_GT(created + removed, 0);
}

TEST_F(Cluster, TasksOnADownNodeAreMoved) {
    auto n1 = node("n1");
    auto n2 = node("n2");
    auto web = services_->create(spec("web", 2))->meta.id;
    pass();
    agents_act();
    ASSERT_TRUE(nodes_->set_status(n1, model::NodeState::down, "").ok());
    pass();
    for (const auto& t : tasks_of(web)) EXPECT_EQ(t.node_id, n2);
    EXPECT_EQ(tasks_of(web).size(), 2u);
    // The node's stream, should it come back, holds nothing: its tasks are no longer wanted.
    ASSERT_TRUE(nodes_->set_status(n1, model::NodeState::ready, "10.0.0.1").ok());
    auto s = dispatcher_->subscribe(n1);
    ASSERT_TRUE(s.ok());
    auto m = (*s)->poll();
    ASSERT_TRUE(m);
    EXPECT_TRUE(m->complete);
    EXPECT_TRUE(m->changes.empty());
}

TEST_F(Cluster, TasksOnAnUnknownNodeStayForTheGracePeriod) {
    now_ = model::Timestamp::now();  // node records are stamped with the real time
    auto n1 = node("n1");
    node("n2");
    auto web = services_->create(spec("web", 2))->meta.id;
    pass();
    agents_act();
    auto before = tasks_of(web);
    ASSERT_TRUE(nodes_->set_status(n1, model::NodeState::unknown, "").ok());
    pass();
    EXPECT_EQ(tasks_of(web).size(), 2u);
    for (const auto& t : before) EXPECT_EQ(tasks_->get(t.meta.id)->desired, TaskState::running);
    advance(node_unknown_grace + sec);
    pass();
    for (const auto& t : tasks_of(web)) EXPECT_NE(t.node_id, n1);
}

// A hostname is a placement key: while a node holds it (ready, or down or unknown for less than
// hostname_hold), no other node joins under it, in any case. After the hold, or once the node
// is removed, a new node may.
TEST_F(Cluster, AHostnameBelongsToOneActiveNodeAtATime) {
    auto joining = [](std::string host) {
        NodeRegistration r;
        r.id = crypto::random_id();
        r.description.hostname = std::move(host);
        r.state = model::NodeState::down;
        return r;
    };
    auto a = nodes_->join(joining("node-a"));
    ASSERT_TRUE(a.ok()) << a.error().message;
    auto refused = [&](const std::string& host, model::Timestamp at) {
        auto r = nodes_->join(joining(host), at);
        if (r.ok()) return false;
        EXPECT_EQ(r.error().code, Errc::already_exists);
        EXPECT_NE(r.error().message.find(a->meta.id), std::string::npos) << r.error().message;
        EXPECT_FALSE(nodes_->check_hostname(host, at).ok());
        return true;
    };
    auto count = nodes_->list().size();
    EXPECT_TRUE(refused("node-a", model::Timestamp::now())) << "just joined, not yet connected";
    for (auto state : {model::NodeState::ready, model::NodeState::disconnected,
                       model::NodeState::down, model::NodeState::unknown}) {
        ASSERT_TRUE(nodes_->set_status(a->meta.id, state, "10.0.0.1").ok());
        auto since = nodes_->get(a->meta.id)->meta.updated;
        EXPECT_TRUE(refused("node-a", since)) << model::to_string(state);
        EXPECT_TRUE(refused("NODE-a", since)) << model::to_string(state);
        EXPECT_TRUE(refused("node-a", {since.nanos + hostname_hold - 1}))
            << model::to_string(state);
        if (state == model::NodeState::ready || state == model::NodeState::disconnected) {
            EXPECT_TRUE(refused("node-a", {since.nanos + 10 * hostname_hold}))
                << "a connected node holds its name however long ago it changed";
        }
    }
    EXPECT_EQ(nodes_->list().size(), count) << "refused joins register nothing";
    EXPECT_TRUE(nodes_->check_hostname("node-b").ok());

    // Down for the whole hold: the name may be taken, and the old record stays.
    ASSERT_TRUE(nodes_->set_status(a->meta.id, model::NodeState::down, "10.0.0.3").ok());
    auto later = model::Timestamp{nodes_->get(a->meta.id)->meta.updated.nanos + hostname_hold};
    auto b = nodes_->join(joining("node-a"), later);
    ASSERT_TRUE(b.ok()) << b.error().message;
    EXPECT_TRUE(nodes_->get(a->meta.id));
    EXPECT_EQ(nodes_->list().size(), count + 1);
    // The new node holds it now.
    auto third = nodes_->join(joining("Node-A"), later);
    ASSERT_FALSE(third.ok());
    EXPECT_NE(third.error().message.find(b->meta.id), std::string::npos) << third.error().message;
    // Removing a node frees its name at once.
    ASSERT_TRUE(nodes_->remove(b->meta.id).ok());
    EXPECT_TRUE(nodes_->join(joining("node-a"), later).ok());
}

// A task that ended by itself is not lost with its node: with a restart policy that does not
// restart it, it never runs again, and a node that comes back gets neither it nor its secrets.
TEST_F(Cluster, AnEndedTaskIsNotRestartedWhenItsNodeGoesDownOrIsDrained) {
    secret("s1", "one");
    struct Case {
        std::string condition;
        TaskState end;
        int exit_code;
    };
    for (const auto& c : {Case{"none", TaskState::complete, 0}, Case{"none", TaskState::failed, 1},
                          Case{"on-failure", TaskState::complete, 0}}) {
        SCOPED_TRACE(c.condition + " " + std::string(model::to_string(c.end)));
        auto n1 = node(fmt::format("n1-{}-{}", c.condition, c.exit_code));
        auto name = fmt::format("job-{}-{}", c.condition, c.exit_code);
        auto job = services_->create(
            spec(name, 1, {{"s1", "s1"}},
                 {{"RestartPolicy", json::object{{"Condition", c.condition}}},
                  {"Placement",
                   json::object{{"Constraints", json::array{json::string("node.id==" + n1)}}}}}));
        ASSERT_TRUE(job.ok()) << message(job);
        pass();
        agents_act();
        auto ran = tasks_of(job->meta.id);
        ASSERT_EQ(ran.size(), 1u);
        ASSERT_EQ(ran[0].node_id, n1);
        report(ran[0], c.end, c.exit_code);
        pass();
        auto unchanged = [&] {
            auto all = tasks_of(job->meta.id, false);
            ASSERT_EQ(all.size(), 1u);
            EXPECT_EQ(all[0].meta.id, ran[0].meta.id);
            EXPECT_EQ(all[0].status.state, c.end);
            EXPECT_EQ(all[0].desired, TaskState::running);  // the slot stays filled by it
        };
        unchanged();

        ASSERT_TRUE(nodes_->set_status(n1, model::NodeState::down, "").ok());
        pass();
        unchanged();
        ASSERT_TRUE(nodes_->set_status(n1, model::NodeState::ready, "10.0.0.1").ok());
        pass();
        unchanged();
        auto n = *nodes_->get(n1);
        auto drained = n.spec;
        drained.availability = model::NodeAvailability::drain;
        ASSERT_TRUE(nodes_->update(n1, n.meta.version, drained).ok());
        pass();
        unchanged();
        drained.availability = model::NodeAvailability::active;
        ASSERT_TRUE(nodes_->update(n1, nodes_->get(n1)->meta.version, drained).ok());
        pass();
        unchanged();

        // The node's set holds neither the task nor its secret.
        auto stream = dispatcher_->subscribe(n1);
        ASSERT_TRUE(stream.ok());
        auto m = (*stream)->poll();
        ASSERT_TRUE(m);
        EXPECT_TRUE(m->complete);
        EXPECT_TRUE(m->changes.empty());
    }
}

// The same for a global service: a one-shot task that completed on a node does not run there
// again when the node is drained and made active again; one that restarts is not pinned to a
// drained node.
TEST_F(Cluster, AnEndedGlobalTaskRunsOnceAndIsNotPinnedToADrainedNode) {
    auto n1 = node("n1");
    auto once = services_->create(
        spec("once", -1, {}, {{"RestartPolicy", json::object{{"Condition", "none"}}}}));
    auto always = services_->create(
        spec("always", -1, {}, {{"RestartPolicy", json::object{{"Condition", "any"}}}}));
    ASSERT_TRUE(once.ok()) << message(once);
    ASSERT_TRUE(always.ok()) << message(always);
    pass();
    agents_act();
    auto ran = tasks_of(once->meta.id).at(0);
    report(ran, TaskState::complete);
    report(tasks_of(always->meta.id).at(0), TaskState::complete);
    pass();
    auto set_availability = [&](model::NodeAvailability a) {
        auto n = *nodes_->get(n1);
        auto s = n.spec;
        s.availability = a;
        ASSERT_TRUE(nodes_->update(n1, n.meta.version, s).ok());
    };
    set_availability(model::NodeAvailability::drain);
    advance(10 * sec);
    pass();
    for (const auto& t : tasks_of(always->meta.id))
        EXPECT_NE(t.node_id, n1) << "pinned to a drained node";
    set_availability(model::NodeAvailability::active);
    pass();
    auto all = tasks_of(once->meta.id, false);
    ASSERT_EQ(all.size(), 1u);
    EXPECT_EQ(all[0].meta.id, ran.meta.id);
    EXPECT_EQ(all[0].status.state, TaskState::complete);
    EXPECT_EQ(tasks_of(always->meta.id).size(), 1u);  // runs again on the active node
}

// A task the orchestrator no longer wants (scaled down) whose node went down before it stopped
// is not restarted either, and the node that comes back is not sent it again.
TEST_F(Cluster, ATaskShutDownIsNotRestartedWhenItsNodeGoesDown) {
    auto n1 = node("n1");
    secret("s1", "one");
    auto none = json::object{{"RestartPolicy", json::object{{"Condition", "none"}}}};
    auto web = services_->create(spec("web", 2, {{"s1", "s1"}}, none));
    ASSERT_TRUE(web.ok()) << message(web);
    pass();
    agents_act();
    ASSERT_TRUE(
        services_->update(web->meta.id, web->meta.version, spec("web", 1, {{"s1", "s1"}}, none))
            .ok());
    pass();  // no agent acts: slot 2 is still running, desired shutdown
    std::string stopping;
    for (const auto& t : tasks_of(web->meta.id, false))
        if (t.slot == 2) stopping = t.meta.id;
    ASSERT_FALSE(stopping.empty());
    ASSERT_EQ(tasks_->get(stopping)->desired, TaskState::shutdown);
    ASSERT_EQ(tasks_->get(stopping)->status.state, TaskState::running);
    ASSERT_TRUE(nodes_->set_status(n1, model::NodeState::down, "").ok());
    pass();
    ASSERT_TRUE(nodes_->set_status(n1, model::NodeState::ready, "10.0.0.1").ok());
    pass();
    std::size_t slot2 = 0;
    for (const auto& t : tasks_of(web->meta.id, false)) slot2 += t.slot == 2 ? 1 : 0;
    EXPECT_EQ(slot2, 1u);
    auto stream = dispatcher_->subscribe(n1);
    ASSERT_TRUE(stream.ok());
    auto m = (*stream)->poll();
    ASSERT_TRUE(m);
    for (const auto& change : m->changes) {
        if (change.task) {
            EXPECT_NE(change.task->meta.id, stopping);
        }
    }
}

// The node → manager messages the node port reads.
namespace {

crypto::SecureBuffer msg(std::string_view text) {
    return crypto::SecureBuffer::copy_of(text);
}

}  // namespace

TEST(NodeMessages, StatusReportsParseWithTheirContainer) {
    auto id = crypto::random_id();
    auto m = nodeproto::decode_status(msg(fmt::format(
        R"({{"type":"status","complete":true,"future":1,"statuses":[)"
        R"({{"task_id":"{0}","state":"running","message":"started","container_id":"c-1","pid":42}},)"
        R"({{"task_id":"{0}","state":"failed","err":"exit 3","exit_code":3}},)"
        R"({{"task_id":"{0}","state":"preparing"}}]}})",
        id)));
    ASSERT_TRUE(m) << m.error().message;
    EXPECT_TRUE(m->complete);
    ASSERT_EQ(m->statuses.size(), 3u);
    EXPECT_EQ(m->statuses[0].state, TaskState::running);
    ASSERT_TRUE(m->statuses[0].container);
    EXPECT_EQ(m->statuses[0].container->container_id, "c-1");
    EXPECT_EQ(m->statuses[0].container->pid, 42);
    EXPECT_EQ(m->statuses[1].state, TaskState::failed);
    EXPECT_EQ(m->statuses[1].err, "exit 3");
    ASSERT_TRUE(m->statuses[1].container);
    EXPECT_EQ(m->statuses[1].container->exit_code, 3);
    EXPECT_FALSE(m->statuses[2].container);
}

TEST(NodeMessages, StatusRefusesUnknownStatesWrongTypesAndOversizeFields) {
    auto id = crypto::random_id();
    auto refused = [&](std::string_view status) {
        auto text = fmt::format(R"({{"type":"status","statuses":[{}]}})",
                                fmt::format(fmt::runtime(status), id));
        return !nodeproto::decode_status(msg(text)).ok();
    };
    EXPECT_FALSE(refused(R"({{"task_id":"{}","state":"complete"}})"));  // control
    EXPECT_TRUE(refused(R"({{"task_id":"{}","state":"exploded"}})"));
    EXPECT_TRUE(refused(R"({{"task_id":"{}","state":"assigned"}})"));  // the manager's state
    EXPECT_TRUE(refused(R"({{"task_id":"{}","state":"Running"}})"));
    EXPECT_TRUE(refused(R"({{"task_id":"{}","state":7}})"));
    EXPECT_TRUE(refused(R"({{"task_id":"../x{}","state":"running"}})"));
    EXPECT_TRUE(refused(R"({{"state":"running"}})"));
    EXPECT_TRUE(refused(R"({{"task_id":"{}","state":"running","pid":-1}})"));
    EXPECT_TRUE(refused(R"({{"task_id":"{}","state":"running","pid":"1"}})"));
    EXPECT_TRUE(refused(R"({{"task_id":"{}","state":"running","exit_code":1e100}})"));
    EXPECT_TRUE(refused(R"({{"task_id":"{}","state":"running","container_id":"a b"}})"));
    EXPECT_TRUE(refused(R"("{}")"));
    EXPECT_TRUE(refused(fmt::format(R"({{{{"task_id":"{{}}","state":"running","err":"{}"}}}})",
                                    std::string(nodeproto::max_status_text + 1, 'x'))));
    EXPECT_FALSE(
        nodeproto::decode_status(msg(R"({"type":"status","complete":"yes","statuses":[]})")).ok());
    EXPECT_FALSE(nodeproto::decode_status(msg(R"({"type":"status"})")).ok());
    EXPECT_FALSE(nodeproto::decode_status(msg(R"({"type":"logs","statuses":[]})")).ok());
    EXPECT_FALSE(nodeproto::decode_status(msg(R"({"type":"status","statuses":[)")).ok());
}

// A node's message with a key twice could mean one thing to the node and another to the
// manager: refused, whichever object holds it.
TEST(NodeMessages, AKeyTwiceIsRefused) {
    auto id = crypto::random_id();
    auto ok =
        fmt::format(R"({{"type":"status","statuses":[{{"task_id":"{}","state":"running"}}]}})", id);
    ASSERT_TRUE(nodeproto::decode_status(msg(ok)).ok());
    for (
        auto text : {
            fmt::format(
                R"({{"type":"status","statuses":[{{"task_id":"{0}","state":"running","state":"complete"}}]}})",
                id),
            fmt::format(
                R"({{"type":"status","statuses":[{{"task_id":"{0}","task_id":"{1}","state":"running"}}]}})",
                id, crypto::random_id()),
            fmt::format(
                R"({{"type":"status","statuses":[],"statuses":[{{"task_id":"{}","state":"running"}}]}})",
                id),
        }) {
        auto parsed = nodeproto::decode_status(msg(text));
        ASSERT_FALSE(parsed.ok()) << text;
        EXPECT_NE(parsed.error().message.find("appears twice in an object"), std::string::npos)
            << parsed.error().message;
    }
}

TEST(NodeMessages, LogsAnswersCarryBase64DataOrAnError) {
    auto id = crypto::random_id();
    auto ok = nodeproto::decode_logs_reply(msg(
        fmt::format(R"({{"type":"logs","request":"r1","task_id":"{}","data":"aGVsbG8K"}})", id)));
    ASSERT_TRUE(ok) << ok.error().message;
    EXPECT_EQ(std::get<std::string>(ok->request), "r1");
    EXPECT_EQ(ok->data, "hello\n");
    EXPECT_FALSE(ok->error);
    auto err = nodeproto::decode_logs_reply(
        msg(R"({"type":"logs","request":"r2","error":"no such task"})"));
    ASSERT_TRUE(err);
    EXPECT_EQ(err->error.value_or(""), "no such task");
    EXPECT_FALSE(
        nodeproto::decode_logs_reply(msg(R"({"type":"logs","request":"r3","data":"***"})")).ok());
    EXPECT_FALSE(nodeproto::decode_logs_reply(msg(R"({"type":"logs","data":"aGk="})")).ok());
    EXPECT_FALSE(nodeproto::decode_logs_reply(msg(R"({"type":"logs","request":"r4"})")).ok());
}

TEST(NodeMessages, ManagerMessagesHaveTheirType) {
    auto text = [](const crypto::SecureBuffer& b) {
        return json::parse(std::string_view(reinterpret_cast<const char*>(b.data()), b.size()))
            .as_object();
    };
    auto logs = text(nodeproto::encode(nodeproto::LogsRequest{"r1", "t1", 20, std::nullopt}));
    EXPECT_EQ(logs.at("type").as_string(), "logs_request");
    EXPECT_EQ(logs.at("request").as_string(), "r1");
    EXPECT_EQ(logs.at("task_id").as_string(), "t1");
    EXPECT_EQ(logs.at("tail").to_number<std::int64_t>(), 20);
    EXPECT_EQ(text(nodeproto::encode(nodeproto::RenewRequest{"role"})).at("reason").as_string(),
              "role");
    auto e = text(nodeproto::encode(
        nodeproto::ErrorMessage{"certificate renewal is not available", std::nullopt}));
    EXPECT_EQ(e.at("type").as_string(), "error");
    EXPECT_FALSE(e.contains("request"));
}

TEST_F(Cluster, ACompleteReportClosesTheTasksItsNodeNoLongerHas) {
    auto n1 = node("n1");
    auto n2 = node("n2");
    auto web = services_->create(spec("web", 2))->meta.id;
    pass();
    agents_act();
    ASSERT_EQ(running(web), 2u);
    // n1's agent is killed: its task moves to n2, the old one stays "running" with desired
    // shutdown, since nobody reports on it.
    ASSERT_TRUE(nodes_->set_status(n1, model::NodeState::down, "").ok());
    pass();
    auto stale = tasks_->list([&](const model::Task& t) { return t.node_id == n1; });
    ASSERT_EQ(stale.size(), 1u);
    EXPECT_EQ(stale[0].status.state, TaskState::running);
    EXPECT_EQ(stale[0].desired, TaskState::shutdown);
    // A report that is not complete says nothing about what it does not list.
    ASSERT_TRUE(dispatcher_->report(n1, {}).ok());
    EXPECT_EQ(tasks_->get(stale[0].meta.id)->status.state, TaskState::running);
    // n1 comes back without it: its complete report closes the task.
    auto closed = dispatcher_->report(n1, {}, true);
    ASSERT_TRUE(closed.ok());
    EXPECT_EQ(*closed, 1u);
    EXPECT_EQ(tasks_->get(stale[0].meta.id)->status.state, TaskState::shutdown);
    // A task still wanted is left alone even when unlisted (its assignment may be on the way).
    auto live = tasks_of(web);
    ASSERT_EQ(live.size(), 2u);
    for (const auto& t : live) {
        ASSERT_TRUE(dispatcher_->report(t.node_id, {}, true).ok());
        EXPECT_EQ(tasks_->get(t.meta.id)->status.state, t.status.state);
    }
    (void)n2;
}

// The messages of several nodes go in one write, applied as one after the other would be: a
// later report sees what an earlier one changed (a state never moves back), and a node still
// speaks only for its own tasks.
TEST_F(Cluster, ReportsOfSeveralMessagesApplyInOrderInOneWrite) {
    auto n1 = node("n1");
    auto n2 = node("n2");
    auto web = services_->create(spec("web", 2))->meta.id;
    pass();
    auto tasks = tasks_of(web);
    ASSERT_EQ(tasks.size(), 2u);
    const auto& a = tasks[0];
    const auto& b = tasks[1];
    ASSERT_NE(a.node_id, b.node_id);
    auto status = [](const model::Task& t, TaskState s) {
        return StatusReport{t.meta.id, s, "", "", std::nullopt};
    };
    auto applied = dispatcher_->report(std::vector<Dispatcher::NodeReports>{
        {a.node_id, {status(a, TaskState::running)}},
        {b.node_id, {status(b, TaskState::running)}},
        {a.node_id, {status(a, TaskState::complete)}},
        {a.node_id, {status(a, TaskState::running)}},  // older than what came before it
        {a.node_id, {status(b, TaskState::failed)}},   // not its node's task
    });
    ASSERT_TRUE(applied.ok()) << applied.error().message;
    EXPECT_EQ(*applied, 3u);
    EXPECT_EQ(tasks_->get(a.meta.id)->status.state, TaskState::complete);
    EXPECT_EQ(tasks_->get(b.meta.id)->status.state, TaskState::running);
    (void)n1;
    (void)n2;
}

// A node that reports its whole state again (to a manager that took over) leaves each task's
// status time where its last change put it; a new container status is still taken.
TEST_F(Cluster, AReportThatChangesNoStateKeepsTheStatusTime) {
    auto n1 = node("n1");
    auto web = services_->create(spec("web", 1))->meta.id;
    pass();
    auto task = tasks_of(web).at(0);
    model::ContainerStatus container{"c1", 42, 0, ""};
    auto report = [&](TaskState s, std::optional<model::ContainerStatus> c) {
        return dispatcher_->report(std::vector<Dispatcher::NodeReports>{
            {task.node_id, {StatusReport{task.meta.id, s, "", "", std::move(c)}}}});
    };
    ASSERT_TRUE(report(TaskState::running, container).ok());
    auto first = tasks_->get(task.meta.id)->status;
    ASSERT_EQ(first.state, TaskState::running);
    advance(sec);
    auto again = report(TaskState::running, container);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(*again, 0u);
    EXPECT_EQ(tasks_->get(task.meta.id)->status.timestamp, first.timestamp);
    container.health = "healthy";
    ASSERT_TRUE(report(TaskState::running, container).ok());
    auto healthy = tasks_->get(task.meta.id)->status;
    EXPECT_EQ(healthy.container->health, "healthy");
    EXPECT_EQ(healthy.timestamp, first.timestamp);
    ASSERT_TRUE(report(TaskState::complete, container).ok());
    EXPECT_GT(tasks_->get(task.meta.id)->status.timestamp.nanos, first.timestamp.nanos);
    (void)n1;
}

// Unlock attempts, on a clock the test moves.
namespace {

using std::chrono::seconds;
using LimiterClock = UnlockLimiter::Clock;

}  // namespace

TEST(UnlockLimiter, ASourceWaitsTwiceAsLongAfterEachFailureBeyondTheFreeOnes) {
    UnlockLimiter limiter;  // the defaults cofferd uses: 5 free, 1 s doubling to 5 min
    LimiterClock::time_point now{std::chrono::hours(1000)};
    for (unsigned i = 1; i <= 4; ++i) {
        ASSERT_TRUE(limiter.admit("uid 1000", now).allowed);
        auto f = limiter.failed("uid 1000", now);
        EXPECT_EQ(f.in_a_row, i);
        EXPECT_EQ(f.wait, LimiterClock::duration::zero());
    }
    std::vector<LimiterClock::duration> waits;
    for (int i = 0; i < 12; ++i) {
        ASSERT_TRUE(limiter.admit("uid 1000", now).allowed);
        auto f = limiter.failed("uid 1000", now);
        waits.push_back(f.wait);
        // Refused until the wait is over, then admitted.
        auto v = limiter.admit("uid 1000", now + f.wait - std::chrono::milliseconds(1));
        EXPECT_FALSE(v.allowed);
        EXPECT_FALSE(v.global);
        EXPECT_EQ(v.wait, std::chrono::milliseconds(1));
        now += f.wait;
    }
    std::vector<LimiterClock::duration> expected{
        seconds(1),  seconds(2),   seconds(4),   seconds(8),   seconds(16),  seconds(32),
        seconds(64), seconds(128), seconds(256), seconds(300), seconds(300), seconds(300)};
    EXPECT_EQ(waits, expected);
    // Another user is not held back by this one.
    EXPECT_TRUE(limiter.admit("uid 0", now - seconds(1)).allowed);
    // The refusals are counted and reported with the next failure (one, from the last round).
    auto f = limiter.failed("uid 1000", now);
    EXPECT_EQ(f.refused, 1u);
    EXPECT_FALSE(limiter.admit("uid 1000", now).allowed);
    EXPECT_FALSE(limiter.admit("uid 1000", now).allowed);
    now += f.wait;
    EXPECT_EQ(limiter.failed("uid 1000", now).refused, 2u);
}

TEST(UnlockLimiter, ASuccessOrAQuietSpellStartsAfresh) {
    UnlockLimiter limiter;
    LimiterClock::time_point now{std::chrono::hours(1000)};
    for (int i = 0; i < 5; ++i) (void)limiter.failed("uid 1000", now);
    EXPECT_FALSE(limiter.admit("uid 1000", now).allowed);
    EXPECT_EQ(limiter.succeeded("uid 1000"), 1u);
    EXPECT_TRUE(limiter.admit("uid 1000", now).allowed);
    EXPECT_EQ(limiter.failed("uid 1000", now).in_a_row, 1u);
    for (int i = 0; i < 5; ++i) (void)limiter.failed("uid 1000", now);
    now += std::chrono::minutes(15) + seconds(64);
    EXPECT_TRUE(limiter.admit("uid 1000", now).allowed);
    EXPECT_EQ(limiter.failed("uid 1000", now).in_a_row, 1u);
}

TEST(UnlockLimiter, AllSourcesTogetherFailAtMostTheGlobalRate) {
    UnlockLimiter limiter;  // 30 at once, then one every 2 s
    LimiterClock::time_point now{std::chrono::hours(1000)};
    for (int uid = 0; uid < 30; ++uid) {
        auto source = fmt::format("uid {}", uid);
        ASSERT_TRUE(limiter.admit(source, now).allowed) << uid;
        (void)limiter.failed(source, now);
    }
    auto v = limiter.admit("uid 30", now);
    EXPECT_FALSE(v.allowed);
    EXPECT_TRUE(v.global);
    EXPECT_EQ(v.wait, seconds(2));
    now += seconds(2);
    ASSERT_TRUE(limiter.admit("uid 30", now).allowed);
    (void)limiter.failed("uid 30", now);
    EXPECT_FALSE(limiter.admit("uid 31", now + seconds(1)).allowed);
    // Over 100 s: 50 more failures at most, however many sources try.
    int failures = 0;
    for (int step = 0; step < 1000; ++step) {
        now += std::chrono::milliseconds(100);
        auto source = fmt::format("uid {}", 100 + step);
        if (!limiter.admit(source, now).allowed) continue;
        (void)limiter.failed(source, now);
        ++failures;
    }
    EXPECT_EQ(failures, 50);
    EXPECT_LE(limiter.sources(), 4096u);
}

TEST(UnlockLimiter, SourcesBeyondTheLimitShareOneRecord) {
    UnlockLimiter limiter({.global_burst = 1000, .max_sources = 3});
    LimiterClock::time_point now{std::chrono::hours(1000)};
    for (int uid = 0; uid < 10; ++uid)
        for (int i = 0; i < 5; ++i) (void)limiter.failed(fmt::format("uid {}", uid), now);
    EXPECT_LE(limiter.sources(), 4u);
    EXPECT_FALSE(limiter.admit("uid 9", now).allowed);
    EXPECT_FALSE(limiter.admit("uid 12345", now).allowed);  // shares the record of the many
}

// The rolling update's status step on its own: the pass's tally in, the status changes out.
namespace {

constexpr model::Timestamp t0{100 * sec};
constexpr model::Timestamp t1{200 * sec};

model::UpdateStatus status_of(model::UpdateState state) {
    return {state, t0, std::nullopt, "x"};
}

UpdateTally outdated_tally(std::size_t in_flight = 0) {
    UpdateTally t;
    t.outdated = true;
    t.in_flight = in_flight;
    return t;
}

UpdateTally failing_tally(std::size_t updated, std::size_t failures) {
    UpdateTally t = outdated_tally(1);
    t.updated = updated;
    t.failures = failures;
    t.failed_task = "task-f";
    return t;
}

}  // namespace

TEST(UpdateDecision, OutdatedTasksStartAnUpdateUnlessPaused) {
    model::UpdateConfig cfg;
    auto d = decide_update(std::nullopt, cfg, false, outdated_tally(), t1);
    ASSERT_EQ(d.changes.size(), 1u);
    EXPECT_EQ(d.changes[0].status.state, model::UpdateState::updating);
    EXPECT_EQ(d.changes[0].status.started, t1);
    EXPECT_EQ(d.changes[0].status.message, "update in progress");
    EXPECT_FALSE(d.changes[0].roll_back);
    EXPECT_TRUE(d.started);
    EXPECT_TRUE(d.replace);

    for (auto paused : {model::UpdateState::paused, model::UpdateState::rollback_paused}) {
        auto p = decide_update(status_of(paused), cfg, true, outdated_tally(), t1);
        EXPECT_TRUE(p.changes.empty());
        EXPECT_FALSE(p.started);
        EXPECT_FALSE(p.replace);
    }

    auto going =
        decide_update(status_of(model::UpdateState::updating), cfg, false, outdated_tally(1), t1);
    EXPECT_TRUE(going.changes.empty());
    EXPECT_FALSE(going.started);
    EXPECT_TRUE(going.replace);

    auto idle = decide_update(std::nullopt, cfg, false, UpdateTally{}, t1);
    EXPECT_TRUE(idle.changes.empty());
    EXPECT_FALSE(idle.replace);
}

TEST(UpdateDecision, FailuresAboveTheRatioPauseOrRollBack) {
    model::UpdateConfig cfg;
    cfg.max_failure_ratio = 0.5;
    auto updating = status_of(model::UpdateState::updating);

    EXPECT_TRUE(decide_update(updating, cfg, true, failing_tally(2, 1), t1)
                    .changes.empty());  // 1 of 2: at the ratio

    auto paused = decide_update(updating, cfg, true, failing_tally(3, 2), t1);
    ASSERT_EQ(paused.changes.size(), 1u);
    EXPECT_EQ(paused.changes[0].status.state, model::UpdateState::paused);
    EXPECT_EQ(paused.changes[0].status.started, t0);
    EXPECT_EQ(paused.changes[0].status.message,
              "update paused due to failure or early termination of task task-f");
    EXPECT_FALSE(paused.changes[0].roll_back);
    EXPECT_FALSE(paused.replace);

    cfg.failure_action = model::FailureAction::cont;
    auto cont = decide_update(updating, cfg, true, failing_tally(3, 2), t1);
    EXPECT_TRUE(cont.changes.empty());
    EXPECT_TRUE(cont.replace);

    cfg.failure_action = model::FailureAction::rollback;
    auto back = decide_update(updating, cfg, true, failing_tally(3, 2), t1);
    ASSERT_EQ(back.changes.size(), 1u);
    EXPECT_EQ(back.changes[0].status.state, model::UpdateState::rollback_started);
    EXPECT_EQ(back.changes[0].status.started, t1);
    EXPECT_EQ(back.changes[0].status.message,
              "update rolled back due to failure or early termination of task task-f");
    EXPECT_TRUE(back.changes[0].roll_back);
    EXPECT_FALSE(back.replace);

    // No previous spec to go back to, or already rolling back: pause instead.
    auto no_previous = decide_update(updating, cfg, false, failing_tally(3, 2), t1);
    ASSERT_EQ(no_previous.changes.size(), 1u);
    EXPECT_EQ(no_previous.changes[0].status.state, model::UpdateState::paused);
    auto again = decide_update(status_of(model::UpdateState::rollback_started), cfg, true,
                               failing_tally(3, 2), t1);
    ASSERT_EQ(again.changes.size(), 1u);
    EXPECT_EQ(again.changes[0].status.state, model::UpdateState::rollback_paused);
    EXPECT_FALSE(again.changes[0].roll_back);
}

TEST(UpdateDecision, CompletesWhenNothingIsOutdatedOrInFlight) {
    model::UpdateConfig cfg;
    UpdateTally settled;
    settled.updated = 3;
    auto done = decide_update(status_of(model::UpdateState::updating), cfg, true, settled, t1);
    ASSERT_EQ(done.changes.size(), 1u);
    EXPECT_EQ(done.changes[0].status.state, model::UpdateState::completed);
    EXPECT_EQ(done.changes[0].status.started, t0);
    EXPECT_EQ(done.changes[0].status.completed, t1);
    EXPECT_EQ(done.changes[0].status.message, "update completed");

    auto back =
        decide_update(status_of(model::UpdateState::rollback_started), cfg, true, settled, t1);
    ASSERT_EQ(back.changes.size(), 1u);
    EXPECT_EQ(back.changes[0].status.state, model::UpdateState::rollback_completed);
    EXPECT_EQ(back.changes[0].status.message, "rollback completed");

    UpdateTally flying;
    flying.in_flight = 1;
    EXPECT_TRUE(decide_update(status_of(model::UpdateState::updating), cfg, true, flying, t1)
                    .changes.empty());
    EXPECT_TRUE(decide_update(status_of(model::UpdateState::completed), cfg, true, settled, t1)
                    .changes.empty());
}

namespace {

std::string text_of(const Result<crypto::SecureBuffer>& b) {
    return b.ok() ? std::string(reinterpret_cast<const char*>(b->data()), b->size()) : "<error>";
}

std::vector<std::uint64_t> numbers(const model::Secret& s) {
    std::vector<std::uint64_t> out;
    for (const auto& v : s.versions) out.push_back(v.number);
    return out;
}

}  // namespace

TEST_F(Cluster, SecretVersionsRotateRollBackAndSurviveARestart) {
    auto id = secret("db", "one");
    auto same =
        secrets_->rotate("db", crypto::SecureBuffer::copy_of(std::string_view("one")), true);
    ASSERT_TRUE(same.ok()) << message(same);
    EXPECT_FALSE(same->changed);
    auto r = secrets_->rotate("db", crypto::SecureBuffer::copy_of(std::string_view("two")), true);
    ASSERT_TRUE(r.ok()) << message(r);
    EXPECT_TRUE(r->changed);
    EXPECT_EQ(r->object.current, 2u);
    EXPECT_EQ(numbers(r->object), (std::vector<std::uint64_t>{1, 2}));
    EXPECT_EQ(text_of(secrets_->data(id, 1)), "one");
    EXPECT_EQ(text_of(secrets_->data(id, 2)), "two");
    EXPECT_EQ(text_of(secrets_->data(id)), "two");
    // Docker's update: labels only, and Data (when given) must be the current version's.
    auto two = crypto::SecureBuffer::copy_of(std::string_view("two"));
    auto one = crypto::SecureBuffer::copy_of(std::string_view("one"));
    EXPECT_TRUE(
        secrets_->update("db", secrets_->find("db")->meta.version, {"db", {{"k", "v"}}}, &two)
            .ok());
    EXPECT_EQ(secrets_->update("db", secrets_->find("db")->meta.version, {"db", {}}, &one)
                  .error()
                  .message,
              "only updates to Labels are allowed");
    EXPECT_EQ(numbers(*secrets_->find("db")), (std::vector<std::uint64_t>{1, 2}));
    auto back = secrets_->rollback("db", std::nullopt);
    ASSERT_TRUE(back.ok()) << message(back);
    EXPECT_EQ(back->current, 1u);
    EXPECT_EQ(text_of(secrets_->data(id)), "one");
    EXPECT_EQ(secrets_->rollback("db", 7).error().code, Errc::not_found);
    EXPECT_EQ(secrets_->rollback("db", std::nullopt).error().code, Errc::invalid_argument);
    // A config has no versions.
    config("app", "x");
    EXPECT_FALSE(
        configs_->rotate("app", crypto::SecureBuffer::copy_of(std::string_view("y")), false).ok());

    services_.reset();
    secrets_ = SecretRegistry::load(*store_, *committer_, counter_).value();
    auto loaded = secrets_->find("db");
    ASSERT_TRUE(loaded.ok());
    EXPECT_EQ(numbers(*loaded), (std::vector<std::uint64_t>{1, 2}));
    EXPECT_EQ(loaded->current, 1u);
    EXPECT_EQ(text_of(secrets_->data(id, 2)), "two");
}

TEST_F(Cluster, ASecretStoredBeforeVersionsLoadsAsVersionOne) {
    auto id = crypto::random_id();
    store::Batch b;
    b.put(store::Table::secrets, id,
          json::serialize(json::object{{"ID", id},
                                       {"Version", json::object{{"Index", 3}}},
                                       {"CreatedAt", "2024-01-02T03:04:05.000000006Z"},
                                       {"UpdatedAt", "2024-01-02T03:04:05.000000006Z"},
                                       {"Spec", json::object{{"Name", "old"}}}}));
    b.put(store::Table::secret_data, id, crypto::SecureBuffer::copy_of(std::string_view("bytes")));
    ASSERT_TRUE(store_->write(std::move(b)).ok());
    services_.reset();
    secrets_ = SecretRegistry::load(*store_, *committer_, counter_).value();
    auto s = secrets_->find("old");
    ASSERT_TRUE(s.ok());
    EXPECT_EQ(numbers(*s), (std::vector<std::uint64_t>{1}));
    EXPECT_EQ(s->current, 1u);
    EXPECT_EQ(s->versions[0].created, s->meta.created);
    EXPECT_EQ(text_of(secrets_->data(id)), "bytes");
    auto r = secrets_->rotate("old", crypto::SecureBuffer::copy_of(std::string_view("new")), false);
    ASSERT_TRUE(r.ok()) << message(r);
    EXPECT_EQ(text_of(secrets_->data(id, 1)), "bytes");
    EXPECT_EQ(text_of(secrets_->data(id, 2)), "new");
}

// "Only if different" is decided by each version's keyed MAC, sealed beside it under a key of the
// manager's own: it holds without the stored bytes, survives a reload, differs from an unkeyed
// hash of the bytes, and goes with its version. A version from before MACs compares by bytes.
TEST_F(Cluster, ChangeDetectionUsesTheVersionsKeyedMac) {
    auto id = secret("m", "one");
    auto u8 = [](std::string_view t) {
        return std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(t.data()),
                                             t.size());
    };
    auto meta = [&](const std::string& key) { return store_->get(store::Table::meta, key); };
    auto mac1 = meta(version_mac_key(id, 1));
    ASSERT_TRUE(mac1.ok() && mac1->has_value());
    EXPECT_EQ((*mac1)->size(), 32u);
    auto key = meta("secret-mac-key");
    ASSERT_TRUE(key.ok() && key->has_value());
    auto expected = crypto::keyed_mac(**key, "coffer secret version mac v1", {u8(id), u8("one")});
    EXPECT_TRUE((*mac1)->equals(expected.span()));
    auto unkeyed = crypto::derive_key(u8("one"), "");
    EXPECT_FALSE((*mac1)->equals(unkeyed.span()));
    // Without the stored bytes, the MAC still decides.
    store::Batch gone;
    gone.erase(store::Table::secret_data, version_data_key(id, 1));
    ASSERT_TRUE(store_->write(std::move(gone)).ok());
    auto same = secrets_->rotate("m", crypto::SecureBuffer::copy_of(std::string_view("one")), true);
    ASSERT_TRUE(same.ok()) << message(same);
    EXPECT_FALSE(same->changed);
    auto two = secrets_->rotate("m", crypto::SecureBuffer::copy_of(std::string_view("two")), true);
    ASSERT_TRUE(two.ok()) << message(two);
    EXPECT_TRUE(two->changed);
    // The key is kept: after a reload, the same bytes are still the same.
    services_.reset();
    secrets_ = SecretRegistry::load(*store_, *committer_, counter_).value();
    auto again =
        secrets_->rotate("m", crypto::SecureBuffer::copy_of(std::string_view("two")), true);
    ASSERT_TRUE(again.ok()) << message(again);
    EXPECT_FALSE(again->changed);
    auto key_after = meta("secret-mac-key");
    ASSERT_TRUE(key_after.ok() && key_after->has_value());
    EXPECT_TRUE((*key_after)->equals((*key)->span()));
    // A version without a MAC (written before them) compares by its bytes.
    store::Batch legacy;
    legacy.erase(store::Table::meta, version_mac_key(id, 2));
    ASSERT_TRUE(store_->write(std::move(legacy)).ok());
    auto by_bytes =
        secrets_->rotate("m", crypto::SecureBuffer::copy_of(std::string_view("two")), true);
    ASSERT_TRUE(by_bytes.ok()) << message(by_bytes);
    EXPECT_FALSE(by_bytes->changed);
    auto differ =
        secrets_->rotate("m", crypto::SecureBuffer::copy_of(std::string_view("three")), true);
    ASSERT_TRUE(differ.ok()) << message(differ);
    EXPECT_TRUE(differ->changed);
    // Docker's update compares by the MAC too.
    auto three = crypto::SecureBuffer::copy_of(std::string_view("three"));
    EXPECT_TRUE(
        secrets_->update("m", secrets_->find("m")->meta.version, {"m", {{"k", "v"}}}, &three).ok());
    // rm takes every version's MAC with it.
    ASSERT_TRUE(secrets_->remove("m").ok());
    for (std::uint64_t n : {1, 2, 3}) {
        auto left = meta(version_mac_key(id, n));
        ASSERT_TRUE(left.ok());
        EXPECT_FALSE(left->has_value()) << n;
    }
}

TEST_F(Cluster, OldVersionsAreWipedOnlyWhenNothingHoldsThem) {
    auto id = secret("r", "v1");
    std::map<std::uint64_t, std::size_t> held{{1, 1}};
    secrets_->set_holders([&](const std::string&, bool) { return held; });
    secrets_->set_versions_kept([] { return std::uint64_t{2}; });
    for (auto v : {"v2", "v3", "v4"}) {
        ASSERT_TRUE(
            secrets_->rotate("r", crypto::SecureBuffer::copy_of(std::string_view(v)), false).ok());
        ASSERT_TRUE(secrets_->prune(id).ok());
    }
    EXPECT_EQ(numbers(*secrets_->find("r")), (std::vector<std::uint64_t>{1, 3, 4}));
    EXPECT_EQ(secrets_->data(id, 2).error().code, Errc::not_found);
    EXPECT_FALSE(store_->get(store::Table::meta, version_mac_key(id, 2))->has_value());
    EXPECT_TRUE(store_->get(store::Table::meta, version_mac_key(id, 3))->has_value());
    held.clear();
    ASSERT_TRUE(secrets_->prune(id).ok());
    EXPECT_EQ(numbers(*secrets_->find("r")), (std::vector<std::uint64_t>{3, 4}));
    EXPECT_EQ(secrets_->data(id, 1).error().code, Errc::not_found);
    ASSERT_TRUE(secrets_->remove("r").ok());
    EXPECT_EQ(secrets_->data(id, 4).error().code, Errc::not_found);
}

TEST_F(Cluster, TasksHoldTheVersionTheyWereMadeWithAndLiveTasksAreSentAgain) {
    auto n1 = node("n1");
    auto id = secret("s", "one");
    orch_->set_secret_versions(
        [this](const std::string& sid) { return secrets_->current_version(sid); });
    auto live = spec("live", 1, {{"s", "s"}});
    live.labels[std::string(model::secret_update_label)] = "signal:HUP";
    auto live_id = services_->create(live)->meta.id;
    auto restart_id = services_->create(spec("restart", 1, {{"s", "t"}}))->meta.id;
    // A pin as the API gets it: SecretName "s@1".
    auto pinned_json = json::parse(spec("pinned", 1, {{"s", "p"}}).json);
    pinned_json.at("TaskTemplate")
        .at("ContainerSpec")
        .at("Secrets")
        .at(0)
        .as_object()["SecretName"] = "s@1";
    auto pinned = model::service_spec_from_json(pinned_json);
    ASSERT_TRUE(pinned.ok()) << message(pinned);
    EXPECT_EQ(pinned->task.container.secrets[0].pinned_version, 1u);
    EXPECT_EQ(pinned->task.container.secrets[0].secret_name, "s");
    auto pinned_id = services_->create(*pinned)->meta.id;
    pass();
    auto stream = dispatcher_->subscribe(n1);
    ASSERT_TRUE(stream.ok());
    auto m = (*stream)->poll();
    ASSERT_TRUE(m);
    ASSERT_EQ(m->changes.size(), 4u);  // the secret's version 1, then the three tasks
    EXPECT_EQ(m->changes[0].version, 1u);
    agents_act();
    (void)(*stream)->poll();
    auto live_task = tasks_of(live_id).at(0);
    EXPECT_EQ(live_task.secret_versions, (std::vector<std::uint64_t>{1}));

    ASSERT_TRUE(
        secrets_->rotate("s", crypto::SecureBuffer::copy_of(std::string_view("two")), false).ok());
    pass();
    // live: the same task, holding version 2, sent again after version 2's bytes.
    auto after = tasks_of(live_id);
    ASSERT_EQ(after.size(), 1u);
    EXPECT_EQ(after[0].meta.id, live_task.meta.id);
    EXPECT_EQ(after[0].secret_versions, (std::vector<std::uint64_t>{2}));
    EXPECT_EQ(after[0].secret_signal, "HUP");
    // restart: a replacement holding version 2 (the old one stops first).
    bool restarted = false;
    for (int i = 0; i < 5 && !restarted; ++i) {
        agents_act();
        advance(2 * sec);
        pass();
        for (const auto& t : tasks_of(restart_id))
            if (t.secret_versions == std::vector<std::uint64_t>{2} &&
                t.status.state == TaskState::running)
                restarted = true;
    }
    EXPECT_TRUE(restarted);
    // pinned: unchanged.
    auto pin = tasks_of(pinned_id);
    ASSERT_EQ(pin.size(), 1u);
    EXPECT_EQ(pin[0].secret_versions, (std::vector<std::uint64_t>{1}));

    std::string wire;
    while (auto next = (*stream)->poll()) {
        auto w = next->to_json();
        wire += std::string(reinterpret_cast<const char*>(w.data()), w.size());
    }
    EXPECT_NE(wire.find(fmt::format(R"("ID":"{}","Name":"s","Version":2,"Data":"dHdv")", id)),
              std::string::npos)
        << wire;
    EXPECT_NE(wire.find(live_task.meta.id), std::string::npos);
    EXPECT_NE(wire.find(R"("SecretSignal":"HUP")"), std::string::npos);
}

TEST_F(Cluster, TheDeliveryRecordFollowsTheReportsAndSurvivesARestart) {
    auto log = DeliveryLog::load(*store_, *committer_).value();
    const std::string sid = "bvjui3xpv48u9gx9cya2y63q9";
    log->observe({{"t1", "svc", "n1", TaskState::running, {sid + "@1"}},
                  {"t2", "svc", "n2", TaskState::running, {sid + "@1"}}},
                 model::Timestamp{10});
    // t1 gets version 2 in place; t2 ends.
    log->observe({{"t1", "svc", "n1", TaskState::running, {sid + "@2"}},
                  {"t2", "svc", "n2", TaskState::shutdown, {}}},
                 model::Timestamp{20});
    auto check = [&](const DeliveryLog& l) {
        auto records = l.of(sid);
        ASSERT_EQ(records.size(), 3u);
        std::map<std::pair<std::string, std::uint64_t>, const Delivery*> by;
        for (const auto& d : records) by[{d.task_id, d.version}] = &d;
        EXPECT_EQ(by.at({"t1", 1})->removed, model::Timestamp{20});
        EXPECT_FALSE(by.at({"t1", 2})->removed);
        EXPECT_EQ(by.at({"t1", 2})->mounted, model::Timestamp{20});
        EXPECT_EQ(by.at({"t2", 1})->removed, model::Timestamp{20});
        EXPECT_EQ(by.at({"t2", 1})->node_id, "n2");
    };
    check(*log);
    // A task gone without a report (its node lost) holds nothing any more.
    log->close_ended({}, model::Timestamp{30});
    EXPECT_EQ(log->of(sid).back().removed, model::Timestamp{30});
    committer_.reset();  // drains the record's writes
    committer_ = std::make_unique<Committer>(*store_);
    auto again = DeliveryLog::load(*store_, *committer_).value();
    EXPECT_EQ(again->of(sid).size(), 3u);
    EXPECT_TRUE(again->of("nothing").empty());
}

// A task's reads (from a FUSE mount) go into its records and are kept; a record without reports
// of reads says nothing about them; a node's count for a version it has no record of is dropped.
TEST_F(Cluster, TheDeliveryRecordKeepsWhatTasksRead) {
    auto log = DeliveryLog::load(*store_, *committer_).value();
    const std::string sid = "bvjui3xpv48u9gx9cya2y63q9";
    log->observe({{"t1", "svc", "n1", TaskState::running, {sid + "@1"}, {{sid + "@1", 0, 0, 0}}},
                  {"t2", "svc", "n1", TaskState::running, {sid + "@1"}, {}}},
                 model::Timestamp{10});
    log->observe({{"t1",
                   "svc",
                   "n1",
                   TaskState::running,
                   {sid + "@1"},
                   {{sid + "@1", 3, 100, 300}, {sid + "@9", 5, 1, 2}}}},
                 model::Timestamp{20});
    log->observe({{"t1", "svc", "n1", TaskState::complete, {}, {{sid + "@1", 4, 100, 400}}}},
                 model::Timestamp{30});
    auto check = [&](const DeliveryLog& l) {
        std::map<std::string, Delivery> by;
        for (const auto& d : l.of(sid)) by[d.task_id] = d;
        ASSERT_EQ(by.size(), 2u);
        const auto& t1 = by.at("t1");
        EXPECT_TRUE(t1.reads_counted);
        EXPECT_EQ(t1.reads, 4u);
        EXPECT_EQ(t1.first_read, model::Timestamp{100});
        EXPECT_EQ(t1.last_read, model::Timestamp{400});
        EXPECT_EQ(t1.removed, model::Timestamp{30});
        const auto& t2 = by.at("t2");
        EXPECT_FALSE(t2.reads_counted);
        EXPECT_FALSE(t2.first_read);
    };
    check(*log);
    committer_.reset();
    committer_ = std::make_unique<Committer>(*store_);
    check(*DeliveryLog::load(*store_, *committer_).value());
}

// A record written before SentAt was kept (a mount only) loads with its mount as the send.
TEST_F(Cluster, ADeliveryRecordFromBeforeSentAtLoads) {
    const std::string sid = "bvjui3xpv48u9gx9cya2y63q9";
    store::Batch b;
    b.put(store::Table::meta, "delivery/" + sid + "/t9/1",
          json::serialize(json::object{{"SecretID", sid},
                                       {"Version", 1},
                                       {"TaskID", "t9"},
                                       {"ServiceID", "svc"},
                                       {"NodeID", "n1"},
                                       {"MountedAt", "2026-01-02T03:04:05Z"}}));
    b.put(store::Table::meta, "delivery/" + sid + "/t8/1",
          json::serialize(json::object{{"SecretID", sid}, {"Version", 1}, {"TaskID", "t8"}}));
    ASSERT_TRUE(store_->write(std::move(b)).ok());
    auto log = DeliveryLog::load(*store_, *committer_).value();
    auto records = log->of(sid);
    ASSERT_EQ(records.size(), 1u);  // the malformed one is skipped
    EXPECT_EQ(records[0].task_id, "t9");
    ASSERT_TRUE(records[0].mounted);
    EXPECT_EQ(records[0].sent, *records[0].mounted);
    EXPECT_FALSE(records[0].removed);
}

// A version sent to a node is recorded before any mount: a task that ends before it mounts
// leaves a record with no mount; credentials the node dropped close when withdrawn; a version
// sent for a live update stays open (not mounted) while the task still lists the old one.
TEST_F(Cluster, TheDeliveryRecordKeepsWhatANodeOnlyHeldInMemory) {
    auto log = DeliveryLog::load(*store_, *committer_).value();
    const std::string sid = "bvjui3xpv48u9gx9cya2y63q9", auth = "0m1vq2b8x5a7d9zq0cl2s3k4e";
    log->sent({{"t1", "svc", "n1", TaskState::assigned, {sid + "@1"}},
               {"t2", "svc", "n1", TaskState::assigned, {sid + "@1", auth + "@1"}}},
              model::Timestamp{10});
    // t1 mounts; t2 never does (its image could not be pulled) and ends.
    log->observe({{"t1", "svc", "n1", TaskState::running, {sid + "@1"}},
                  {"t2", "svc", "n1", TaskState::preparing, {}}},
                 model::Timestamp{20});
    log->withdrawn("n1", {auth + "@1"}, model::Timestamp{25});
    log->observe({{"t2", "svc", "n1", TaskState::rejected, {}}}, model::Timestamp{30});
    auto by_task = [&](const std::string& secret) {
        std::map<std::pair<std::string, std::uint64_t>, Delivery> by;
        for (const auto& d : log->of(secret)) by[{d.task_id, d.version}] = d;
        return by;
    };
    auto s = by_task(sid);
    ASSERT_EQ(s.size(), 2u);
    EXPECT_EQ(s.at({"t1", 1}).sent, model::Timestamp{10});
    EXPECT_EQ(s.at({"t1", 1}).mounted, model::Timestamp{20});
    EXPECT_FALSE(s.at({"t1", 1}).removed);
    EXPECT_EQ(s.at({"t2", 1}).sent, model::Timestamp{10});
    EXPECT_FALSE(s.at({"t2", 1}).mounted);
    EXPECT_EQ(s.at({"t2", 1}).removed, model::Timestamp{30});
    auto a = by_task(auth);
    ASSERT_EQ(a.size(), 1u);
    EXPECT_FALSE(a.at({"t2", 1}).mounted);
    EXPECT_EQ(a.at({"t2", 1}).removed, model::Timestamp{25});
    // A live update: version 2 sent, the report still lists 1: both open, 2 not mounted.
    log->sent({{"t1", "svc", "n1", TaskState::running, {sid + "@2"}}}, model::Timestamp{40});
    log->observe({{"t1", "svc", "n1", TaskState::running, {sid + "@1"}}}, model::Timestamp{41});
    s = by_task(sid);
    EXPECT_FALSE(s.at({"t1", 1}).removed);
    EXPECT_FALSE(s.at({"t1", 2}).removed);
    EXPECT_FALSE(s.at({"t1", 2}).mounted);
    // Withdrawing version 1 from the node does not close t1's mount of it: only a report does.
    log->withdrawn("n1", {sid + "@1"}, model::Timestamp{42});
    EXPECT_FALSE(by_task(sid).at({"t1", 1}).removed);
    log->observe({{"t1", "svc", "n1", TaskState::running, {sid + "@2"}}}, model::Timestamp{50});
    s = by_task(sid);
    EXPECT_EQ(s.at({"t1", 1}).removed, model::Timestamp{50});
    EXPECT_EQ(s.at({"t1", 2}).mounted, model::Timestamp{50});
    EXPECT_EQ(s.at({"t1", 2}).sent, model::Timestamp{40});
    // What was written loads the same.
    committer_.reset();
    committer_ = std::make_unique<Committer>(*store_);
    auto again = DeliveryLog::load(*store_, *committer_).value();
    auto reloaded = again->of(sid);
    ASSERT_EQ(reloaded.size(), 3u);
    for (const auto& d : reloaded) {
        const auto& was = s.at({d.task_id, d.version});
        EXPECT_EQ(d.sent, was.sent);
        EXPECT_EQ(d.mounted, was.mounted);
        EXPECT_EQ(d.removed, was.removed);
    }
}
