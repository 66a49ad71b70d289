// The agent's data plane without a manager: network namespaces stand for the nodes (joined by
// veth pairs through a third that routes between them), each applies a networks message with
// NodeNetworks and attaches task namespaces through the CNI plugins; busybox httpd in one task
// namespace, busybox wget from another. Traffic goes only to addresses inside these namespaces.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <regex>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "coffer/agent/node_networks.h"
#include "coffer/base/log.h"
#include "coffer/base/mount.h"
#include "coffer/base/process.h"
#include "harness.h"
#include "net_namespace.h"

using namespace coffer;
using namespace coffer::agent;
using namespace coffer::test;
using nodeproto::NetworkPayload;
using nodeproto::NetworksMessage;

namespace {

bool have_plugins() {
    for (auto p : {"bridge", "static", "portmap", "firewall"})
        if (::access(fmt::format("/usr/lib/cni/{}", p).c_str(), X_OK) != 0) return false;
    return ::access("/usr/sbin/iptables-restore", X_OK) == 0 && ::access("/bin/busybox", X_OK) == 0;
}

// A node: a network namespace and the NodeNetworks made, used and destroyed in it.
struct Host {
    explicit Host(const std::string& tag) : ns(tag) {}
    ~Host() {
        if (nets) run([&] { nets.reset(); });
    }
    void run(const std::function<void()>& fn) { in_net_namespace(ns.path(), fn); }
    void start() {
        run([&] { nets = std::make_unique<NodeNetworks>(); });
    }
    void apply(const NetworksMessage& m) {
        run([&] {
            auto r = nets->apply(m);
            if (!r) throw std::runtime_error(r.error().message);
        });
    }
    NetworkNamespace ns;
    TempDir run_dir;
    std::unique_ptr<NodeNetworks> nets;
};

// A task's namespace and interfaces on a host, detached in the host's namespace.
struct Task {
    Task(Host& h, TaskSpec spec) : host(h) {
        dir = (h.run_dir.path() / spec.id).string();
        make_dir(dir, 0700);
        std::string error;
        host.run([&] {
            auto r = host.nets->attach(spec, dir);
            if (r)
                net = std::move(*r);
            else
                error = r.error().message;
        });
        if (!net) throw std::runtime_error(error);
    }
    ~Task() {
        host.run([&] { net.reset(); });
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
    }
    std::vector<std::string> enter() const { return {"nsenter", "--net=" + net->netns()}; }
    Host& host;
    std::string dir;
    std::unique_ptr<TaskNetwork> net;
};

TaskSpec spec_on(const std::string& id,
                 const std::vector<std::pair<std::string, std::string>>& nets,
                 std::vector<TaskHostPort> ports = {}) {
    TaskSpec s;
    s.id = id;
    for (const auto& [net, address] : nets) s.networks.push_back({net, address, {}});
    s.host_ports = std::move(ports);
    return s;
}

NetworkPayload network(const std::string& id, const std::string& driver, const std::string& prefix,
                       const std::string& gateway, std::uint32_t vni,
                       std::vector<std::string> peers = {}, bool internal = false) {
    NetworkPayload p;
    p.id = id;
    p.name = "net-" + id.substr(0, 6);
    p.driver = driver;
    p.subnet = prefix + ".0/24";
    p.gateway = gateway;
    p.vni = vni;
    p.internal = internal;
    p.peers = std::move(peers);
    return p;
}

// busybox httpd in a namespace, serving a page; killed by its Child.
struct Httpd {
    Httpd(std::vector<std::string> enter, const std::string& listen, const std::string& page) {
        std::filesystem::create_directories(dir.path() / "www");
        std::ofstream(dir.path() / "www" / "index.html") << page;
        Child::Options o;
        o.argv = std::move(enter);
        o.argv.insert(o.argv.end(), {"busybox", "httpd", "-f", "-p", listen, "-h",
                                     (dir.path() / "www").string()});
        child = Child::spawn(o);
    }
    TempDir dir;
    Child child;
};

// What busybox wget fetched from url inside a namespace; "" when it could not.
std::string fetch(std::vector<std::string> enter, const std::string& url) {
    // Bounded by timeout(1): this busybox's wget -T crashes.
    enter.insert(enter.begin(), {"timeout", "3"});
    enter.insert(enter.end(), {"busybox", "wget", "-q", "-O", "-", url});
    auto r = run_program(enter);
    return r.status == 0 ? r.out : std::string();
}

bool serves(const std::vector<std::string>& enter, const std::string& url,
            const std::string& page) {
    return wait_until([&] { return fetch(enter, url) == page; }, std::chrono::seconds(10));
}

std::string strip_counters(const std::string& text) {
    static const std::regex counters(R"(\[\d+:\d+\])");
    std::string out;
    for (const auto& line : lines_of(text))
        if (!line.starts_with("#")) out += std::regex_replace(line, counters, "") + "\n";
    return out;
}

struct State {
    std::string links, addresses, routes, rules;
};

State state_of(const NetworkNamespace& ns) {
    State s;
    s.links = run_program({"ip", "-n", ns.name(), "-o", "link", "show"}).out;
    // IPv4: the IPv6 link-local addresses of the test's own veths come and go on their own.
    s.addresses = run_program({"ip", "-4", "-n", ns.name(), "-o", "addr", "show"}).out;
    s.routes = run_program({"ip", "-4", "-n", ns.name(), "route", "show", "table", "all"}).out;
    // A bridge's carrier follows its ports a moment later: not state of its own.
    static const std::regex carrier(R"( linkdown|NO-CARRIER,| state (UP|DOWN|UNKNOWN))");
    s.links = std::regex_replace(s.links, carrier, "");
    s.routes = std::regex_replace(s.routes, carrier, "");
    s.rules = strip_counters(run_program({"nsenter", "--net=" + ns.path(), "iptables-save"}).out);
    return s;
}

// Rules in after that were not in before: only the CNI plugins' own shared chains (CNI-FORWARD,
// CNI-ADMIN, CNI-HOSTPORT-*, which they keep once made, by design), nothing of coffer's and
// nothing naming a subnet of the test.
std::vector<std::string> added_rules(const std::string& before, const std::string& after,
                                     const std::string& subnet_prefix) {
    auto old = lines_of(before);
    std::set<std::string> had(old.begin(), old.end());
    std::vector<std::string> bad;
    for (const auto& line : lines_of(after)) {
        if (had.contains(line) || line.starts_with("*") || line == "COMMIT") continue;
        static const std::set<std::string> builtin{":INPUT ACCEPT ", ":FORWARD ACCEPT ",
                                                   ":OUTPUT ACCEPT ", ":PREROUTING ACCEPT ",
                                                   ":POSTROUTING ACCEPT "};
        if (builtin.contains(line)) continue;  // a table listed once it was used
        if (line.find("CNI-") == std::string::npos || line.find("COFFER") != std::string::npos ||
            line.find(subnet_prefix) != std::string::npos)
            bad.push_back(line);
    }
    return bad;
}

std::vector<std::string> mounts_below(const std::string& dir) {
    std::vector<std::string> out;
    for (const auto& m : read_mountinfo())
        if (m.mount_point.starts_with(dir)) out.push_back(m.mount_point);
    return out;
}

class NetDataplane : public ::testing::Test {
  protected:
    void SetUp() override {
        if (!NetworkNamespace::available()) GTEST_SKIP() << "no network namespaces here";
        if (!have_plugins()) GTEST_SKIP() << "no CNI plugins, iptables or busybox";
    }
};

TEST_F(NetDataplane, TasksReachEachOtherAcrossNodesOnlyOnTheirNetworks) {
    Host a("nda"), b("ndb");
    NetworkNamespace router("ndr");
    ASSERT_EQ(a.ns.error(), "");
    ASSERT_EQ(b.ns.error(), "");
    ASSERT_EQ(router.error(), "");
    // The underlay: a (U.1) - router (U.2 | U.6) - b (U.5).
    auto u = random_subnet(231);
    ASSERT_EQ(connect(a.ns, u + ".1", router, u + ".2"), "");
    ASSERT_EQ(connect(b.ns, u + ".5", router, u + ".6"), "");
    ASSERT_EQ(a.ns.ip({"route", "add", u + ".4/30", "via", u + ".2"}), "");
    ASSERT_EQ(b.ns.ip({"route", "add", u + ".0/30", "via", u + ".6"}), "");
    in_net_namespace(router.path(), [] { std::ofstream("/proc/sys/net/ipv4/ip_forward") << "1"; });

    auto s1 = random_subnet(232), s2 = random_subnet(233), s3 = random_subnet(234);
    const std::string n1 = "n1aaaaaaaaaaaaaaaaaaaaaaa", n2 = "n2bbbbbbbbbbbbbbbbbbbbbbb",
                      n3 = "n3ccccccccccccccccccccccc";
    auto vni = static_cast<std::uint32_t>(4096 + (::getpid() % 100000));
    NetworksMessage ma, mb;
    ma.sequence = mb.sequence = 1;
    ma.networks = {network(n1, "overlay", s1, s1 + ".2", vni, {u + ".5"}),
                   network(n2, "overlay", s2, s2 + ".2", vni + 1, {u + ".5"}),
                   network(n3, "bridge", s3, s3 + ".2", 0, {}, true)};
    mb.networks = {network(n1, "overlay", s1, s1 + ".3", vni, {u + ".1"}),
                   network(n2, "overlay", s2, s2 + ".3", vni + 1, {u + ".1"})};
    auto before_a = state_of(a.ns), before_b = state_of(b.ns);
    {
        a.start();
        b.start();
        a.apply(ma);
        b.apply(mb);

        auto vxlan = NodeNetworks::vxlan_name(n1);
        auto fdb = run_program({"bridge", "-n", a.ns.name(), "fdb", "show", "dev", vxlan}).out;
        EXPECT_NE(fdb.find("00:00:00:00:00:00 dst " + u + ".5"), std::string::npos) << fdb;

        Task server(a, spec_on("server", {{n1, s1 + ".10/24"}}, {{"tcp", 80, 18080}}));
        Task client(b, spec_on("client", {{n1, s1 + ".20/24"}}));
        Task other_a(a, spec_on("othera", {{n2, s2 + ".10/24"}}));
        Task other_b(b, spec_on("otherb", {{n2, s2 + ".20/24"}}));
        Task internal(a, spec_on("internal", {{n3, s3 + ".10/24"}}));
        EXPECT_EQ(server.net->addresses(), std::vector<std::string>{s1 + ".10"});
        EXPECT_EQ(server.net->nameserver(), s1 + ".2");

        // The task's side: eth0 with the manager's address and the default route via its node.
        auto routes = run_program({"nsenter", "--net=" + client.net->netns(), "ip", "route"}).out;
        EXPECT_NE(routes.find("default via " + s1 + ".3 dev eth0"), std::string::npos) << routes;
        auto internal_routes =
            run_program({"nsenter", "--net=" + internal.net->netns(), "ip", "route"}).out;
        EXPECT_EQ(internal_routes.find("default"), std::string::npos) << internal_routes;

        Httpd httpd(server.enter(), "80", "server page\n");
        ASSERT_TRUE(serves(server.enter(), "http://127.0.0.1/", "server page\n"));
        // Across nodes over the VXLAN overlay.
        EXPECT_TRUE(serves(client.enter(), fmt::format("http://{}.10/", s1), "server page\n"));
        // A task of another network, on the same node and on the other.
        EXPECT_EQ(fetch(other_a.enter(), fmt::format("http://{}.10/", s1)), "");
        EXPECT_EQ(fetch(other_b.enter(), fmt::format("http://{}.10/", s1)), "");
        // The published port on the node, from the node itself and from the other node.
        EXPECT_TRUE(serves(a.ns.enter(), fmt::format("http://{}.1:18080/", u), "server page\n"));
        EXPECT_TRUE(serves(b.ns.enter(), fmt::format("http://{}.1:18080/", u), "server page\n"));

        // Outside the networks: a listener on b's underlay address. Tasks of networks that are
        // not internal reach it (masqueraded); the internal network's task does not.
        Httpd outside(b.ns.enter(), u + ".5:8081", "outside page\n");
        ASSERT_TRUE(serves(b.ns.enter(), fmt::format("http://{}.5:8081/", u), "outside page\n"));
        EXPECT_TRUE(serves(server.enter(), fmt::format("http://{}.5:8081/", u), "outside page\n"));
        EXPECT_EQ(fetch(internal.enter(), fmt::format("http://{}.5:8081/", u)), "");
        // Nor another network's task on its own node.
        Httpd other_page(other_a.enter(), "80", "other page\n");
        ASSERT_TRUE(serves(other_a.enter(), "http://127.0.0.1/", "other page\n"));
        EXPECT_TRUE(serves(other_b.enter(), fmt::format("http://{}.10/", s2), "other page\n"));
        EXPECT_EQ(fetch(internal.enter(), fmt::format("http://{}.10/", s2)), "");
        EXPECT_EQ(fetch(server.enter(), fmt::format("http://{}.10/", s2)), "");

        // The peers follow the messages.
        auto m2 = ma;
        m2.sequence = 2;
        m2.networks[0].peers = {};
        a.apply(m2);
        fdb = run_program({"bridge", "-n", a.ns.name(), "fdb", "show", "dev", vxlan}).out;
        // Neither the flood entry nor what was learned behind that node.
        EXPECT_EQ(fdb.find("dst " + u + ".5"), std::string::npos) << fdb;
        m2.sequence = 3;
        m2.networks[0].peers = {u + ".5"};
        a.apply(m2);
        EXPECT_TRUE(serves(client.enter(), fmt::format("http://{}.10/", s1), "server page\n"));

        // A network no longer listed stays while a task uses it.
        m2.sequence = 4;
        m2.networks.pop_back();
        a.apply(m2);
        auto links =
            run_program({"ip", "-n", a.ns.name(), "link", "show", NodeNetworks::bridge_name(n3)});
        EXPECT_EQ(links.status, 0) << "the internal network went while its task used it";
    }
    // The tasks are gone: networks not listed go, and with none listed, everything.
    EXPECT_NE(run_program({"ip", "-n", a.ns.name(), "link", "show", NodeNetworks::bridge_name(n3)})
                  .status,
              0);
    NetworksMessage none;
    none.sequence = 5;
    a.apply(none);
    b.apply(none);
    a.run([&] { a.nets.reset(); });
    b.run([&] { b.nets.reset(); });
    for (auto* h : {&a, &b}) {
        auto before = h == &a ? before_a : before_b;
        auto after = state_of(h->ns);
        EXPECT_EQ(after.links, before.links);
        EXPECT_EQ(after.addresses, before.addresses);
        EXPECT_EQ(after.routes, before.routes);
        EXPECT_EQ(added_rules(before.rules, after.rules, s1), std::vector<std::string>{});
        EXPECT_EQ(after.rules.find("COFFER"), std::string::npos) << after.rules;
    }
}

TEST_F(NetDataplane, TwoHundredAttachCyclesLeaveNothing) {
    Host x("ndl");
    ASSERT_EQ(x.ns.error(), "");
    auto s = random_subnet(235);
    const std::string id = "leakleakleakleakleakleak1";
    NetworksMessage m;
    m.sequence = 1;
    m.networks = {network(id, "bridge", s, s + ".1", 0)};
    auto before = state_of(x.ns);
    x.start();
    x.apply(m);
    State after_first;
    // 200 cycles (COFFER_NET_CYCLES: fewer, when timing a change); every tenth publishes a port.
    int cycles = std::max(2, std::atoi(env_or("COFFER_NET_CYCLES", "200").c_str()));
    for (int i = 0; i < cycles; ++i) {
        {
            std::vector<TaskHostPort> ports;
            if (i % 10 == 0) ports.push_back({"tcp", 80, 18081});
            Task t(x, spec_on(fmt::format("cycle{}", i),
                              {{id, fmt::format("{}.{}/24", s, 10 + i % 200)}}, ports));
            if (i == 0) {
                auto addr =
                    run_program({"nsenter", "--net=" + t.net->netns(), "ip", "-o", "addr"}).out;
                ASSERT_NE(addr.find(fmt::format("{}.10/24", s)), std::string::npos) << addr;
            }
        }
        if (i == 0) after_first = state_of(x.ns);
    }
    auto after_all = state_of(x.ns);
    // Nothing per task remains: the 200th detach leaves what the first did.
    EXPECT_EQ(after_all.links, after_first.links);
    EXPECT_EQ(after_all.addresses, after_first.addresses);
    EXPECT_EQ(after_all.routes, after_first.routes);
    EXPECT_EQ(after_all.rules, after_first.rules);
    EXPECT_EQ(list_dir(x.run_dir.path().string()), std::vector<std::string>{});
    EXPECT_EQ(mounts_below(x.run_dir.path().string()), std::vector<std::string>{});
    NetworksMessage none;
    none.sequence = 2;
    x.apply(none);
    x.run([&] { x.nets.reset(); });
    auto after = state_of(x.ns);
    EXPECT_EQ(after.links, before.links);
    EXPECT_EQ(after.addresses, before.addresses);
    EXPECT_EQ(after.routes, before.routes);
    EXPECT_EQ(added_rules(before.rules, after.rules, s), std::vector<std::string>{});
}

// The test binary as a stand-in agent: in the namespace at argv[2], applies one network and
// attaches a task with a published port under run dir argv[3] (as the runner does, in
// <run>/tasks/<id>), says so in <run>/ready, and waits to be killed.
int hold_node(const std::string& netns, const std::string& run, const std::string& subnet) {
    UniqueFd fd(::open(netns.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd || ::setns(fd.get(), CLONE_NEWNET) != 0) return 2;
    NodeNetworks nets;
    NetworksMessage m;
    m.sequence = 1;
    m.networks = {network("killkillkillkillkillkill1", "overlay", subnet, subnet + ".1", 7001,
                          {"192.0.2.1"})};
    if (auto r = nets.apply(m); !r) {
        std::fprintf(stderr, "%s\n", r.error().message.c_str());
        return 3;
    }
    make_dir(run + "/tasks", 0700);
    make_dir(run + "/tasks/killed", 0700);
    auto spec = spec_on("killed", {{m.networks[0].id, subnet + ".9/24"}}, {{"tcp", 80, 18082}});
    auto t = nets.attach(spec, run + "/tasks/killed");
    if (!t) {
        std::fprintf(stderr, "%s\n", t.error().message.c_str());
        return 4;
    }
    std::ofstream(run + "/ready") << "ready\n";
    for (;;) ::pause();
}

TEST_F(NetDataplane, AnAgentKilledWithSigkillLeavesNothingAfterCleanup) {
    auto agent = env_or("COFFER_AGENT", "");
    if (agent.empty()) GTEST_SKIP() << "COFFER_AGENT not set";
    NetworkNamespace x("ndk");
    ASSERT_EQ(x.error(), "");
    TempDir run, data;
    auto s = random_subnet(236);
    auto before = state_of(x);
    {
        Child::Options o;
        o.program = "/proc/self/exe";
        o.argv = {"net-dataplane", "--hold-node", x.path(), run.path().string(), s};
        auto holder = Child::spawn(o);
        ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(run.path() / "ready"); },
                               std::chrono::seconds(30)));
        auto held = state_of(x);
        EXPECT_NE(held.links.find("cfb"), std::string::npos) << held.links;
        EXPECT_NE(held.rules.find("COFFER-FORWARD"), std::string::npos);
        EXPECT_NE(held.rules.find(s + ".9"), std::string::npos) << "no port mapping";
        holder.signal(SIGKILL);
        holder.wait();
    }
    auto r = run_program({"nsenter", "--net=" + x.path(), agent, "--run-dir", run.path().string(),
                          "--data-dir", data.path().string(), "cleanup"});
    ASSERT_EQ(r.status, 0) << r.err;
    auto after = state_of(x);
    EXPECT_EQ(after.links, before.links);
    EXPECT_EQ(after.addresses, before.addresses);
    EXPECT_EQ(after.routes, before.routes);
    EXPECT_EQ(added_rules(before.rules, after.rules, s), std::vector<std::string>{});
    EXPECT_EQ(list_dir(run.path().string() + "/tasks"), std::vector<std::string>{});
    EXPECT_EQ(mounts_below(run.path().string()), std::vector<std::string>{});
}

}  // namespace

int main(int argc, char** argv) {
    if (argc == 5 && std::string_view(argv[1]) == "--hold-node")
        return hold_node(argv[2], argv[3], argv[4]);
    // Before any thread: the task namespaces' mounts stay in this process's mount namespace.
    enter_private_mount_namespace();
    (void)log::configure(env_or("COFFER_LOG", "warn"));
    ::testing::InitGoogleTest(&argc, argv);
    return RUN_ALL_TESTS();
}
