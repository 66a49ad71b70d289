// Networks: addresses and subnets, the create request's checks, the stored record, and what the
// manager allocates.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "coffer/manager/networks.h"
#include "coffer/model/json.h"
#include "coffer/model/network.h"
#include "coffer/model/service.h"
#include "coffer/model/service_json.h"

using namespace coffer;
using namespace coffer::model;
using namespace coffer::manager::network_alloc;
namespace json = boost::json;

namespace {

Ipv4Prefix cidr(std::string_view s) {
    auto n = parse_ipv4_prefix(s);
    EXPECT_TRUE(n) << s;
    return n.value_or(Ipv4Prefix{});
}

Result<NetworkSpec> request(std::string_view body, std::vector<std::string>* warnings = nullptr) {
    std::vector<std::string> w;
    auto r = network_spec_from_request(json::parse(body), warnings ? *warnings : w);
    return r;
}

}  // namespace

TEST(NetworkAllocation, SubnetsAreTheFirstFree24sFrom10_0_1) {
    EXPECT_EQ(free_subnet({}), cidr("10.0.1.0/24"));
    EXPECT_EQ(free_subnet({cidr("10.0.0.0/24"), cidr("10.0.1.0/24")}), cidr("10.0.2.0/24"));
    // A freed one is taken again first.
    EXPECT_EQ(free_subnet({cidr("10.0.0.0/24"), cidr("10.0.2.0/24")}), cidr("10.0.1.0/24"));
    // A wide given subnet is stepped over as a whole.
    EXPECT_EQ(free_subnet({cidr("10.0.0.0/16")}), cidr("10.1.0.0/24"));
    std::vector<Ipv4Prefix> all{cidr("10.0.0.0/8")};
    EXPECT_FALSE(free_subnet(all));
}

TEST(NetworkAllocation, VnisAreTheLowestFreeFrom4097) {
    EXPECT_EQ(free_vni({}), 4097u);
    EXPECT_EQ(free_vni({4096, 4097, 4099}), 4098u);
}

TEST(NetworkAllocation, AddressesSkipNetworkBroadcastAndUsed) {
    auto n = cidr("10.0.1.0/29");
    EXPECT_EQ(free_address(n, std::nullopt, {}), 0x0a000101u);
    EXPECT_EQ(free_address(n, std::nullopt, {0x0a000101u, 0x0a000102u}), 0x0a000103u);
    // .1 to .6 are the hosts of a /29.
    EXPECT_FALSE(free_address(
        n, std::nullopt,
        {0x0a000101u, 0x0a000102u, 0x0a000103u, 0x0a000104u, 0x0a000105u, 0x0a000106u}));
    // Within a range only.
    EXPECT_EQ(free_address(cidr("10.20.0.0/16"), cidr("10.20.5.0/24"), {}), 0x0a140500u);
    EXPECT_EQ(free_address(cidr("10.20.0.0/16"), cidr("10.20.0.0/24"), {}), 0x0a140001u);
}

TEST(NetworkRequest, TakesDockerCliRequests) {
    auto r = request(R"({"Name":"app_default","CheckDuplicate":true,"Driver":"","Scope":"",
        "EnableIPv4":true,"EnableIPv6":false,"IPAM":{"Driver":"default","Config":[{"Subnet":
        "10.9.0.0/24","Gateway":"10.9.0.9","IPRange":"10.9.0.128/25"}],"Options":{}},
        "Internal":true,"Attachable":true,"Ingress":false,"ConfigOnly":false,
        "ConfigFrom":{"Network":""},"Options":{},"Labels":{"com.docker.stack.namespace":"app"}})");
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->name, "app_default");
    EXPECT_EQ(r->driver, "overlay");
    EXPECT_TRUE(r->internal);
    EXPECT_TRUE(r->attachable);
    ASSERT_EQ(r->ipam.size(), 1u);
    EXPECT_EQ(r->ipam[0], (IpamConfig{"10.9.0.0/24", "10.9.0.9", "10.9.0.128/25"}));
    EXPECT_EQ(r->labels.at("com.docker.stack.namespace"), "app");
    auto bridge = request(R"({"Name":"b","Driver":"bridge"})");
    ASSERT_TRUE(bridge);
    EXPECT_EQ(bridge->driver, "bridge");
}

TEST(NetworkRequest, RefusesWhatItCannotDoNamingIt) {
    for (
        auto [body, says] : std::initializer_list<std::pair<const char*, const char*>>{
            {R"({"Name":"n","EnableIPv4":false})", "EnableIPv4"},
            {R"({"Name":"n","EnableIPv6":true})", "EnableIPv6"},
            {R"({"Name":"n","Ingress":true})", "Ingress"},
            {R"({"Name":"n","Unknown":"x"})", "Unknown"},
            {R"({"Name":"n","IPAM":{"Config":[{"Subnet":"10.0.0.0/30"}]}})", "prefix length"},
            {R"({"Name":"n","IPAM":{"Config":[{"Subnet":"10.9.0.0/24","IPRange":"10.8.0.0/25"}]}})",
             "invalid ip range"},
            {R"({"Name":"n","IPAM":{"Config":[{"Gateway":"10.8.0.1"}]}})", "needs a subnet"},
            {R"({"Name":"n","IPAM":{"Config":[{"Subnet":"127.0.0.0/8"}]}})", "loopback"},
            {R"({"Name":"n","IPAM":{"Config":[{"Subnet":"127.1.0.0/24"}]}})", "loopback"},
            {R"({"Name":"n","IPAM":{"Config":[{"Subnet":"169.254.0.0/16"}]}})", "link-local"},
            {R"({"Name":"n","IPAM":{"Config":[{"Subnet":"224.0.0.0/8"}]}})", "multicast"},
            {R"({"Name":"n","IPAM":{"Config":[{"Subnet":"0.0.0.0/8"}]}})", "this network"},
            {R"({"Name":"n","IPAM":{"Config":[{"Subnet":"10.9.0.0/24","Odd":1}]}})", "Odd"},
            {R"({"Name":"n","IPAM":{"Options":{"a":"b"}}})", "IPAM.Options"},
            {R"({"Name":"n","Options":{"com.docker.network.driver.overlay.vxlanid_list":"5"}})",
             "VNI"},
            {R"({"Name":"-n"})", "invalid network name"},
        }) {
        auto r = request(body);
        ASSERT_FALSE(r) << body;
        EXPECT_EQ(r.error().code, Errc::invalid_argument) << body;
        EXPECT_NE(r.error().message.find(says), std::string::npos)
            << body << ": " << r.error().message;
    }
}

TEST(NetworkRecord, RoundTripsWithItsAllocation) {
    Network n;
    n.meta = {"abc", 7, Timestamp{1000}, Timestamp{2000}};
    n.spec.name = "back";
    n.spec.labels = {{"a", "b"}};
    n.spec.internal = true;
    n.spec.options = {{"x", "y"}};
    n.spec.ipam = {{"10.9.0.0/24", "", "10.9.0.0/25"}};
    n.subnet = "10.9.0.0/24";
    n.gateway = "10.9.0.1";
    n.vni = 4100;
    n.node_addresses = {{"node1", "10.9.0.2"}};
    auto back = network_from_record(json::parse(json::serialize(network_record(n))));
    ASSERT_TRUE(back) << back.error().message;
    EXPECT_EQ(back->meta.id, n.meta.id);
    EXPECT_EQ(back->meta.version, 7u);
    EXPECT_EQ(back->spec, n.spec);
    EXPECT_EQ(back->subnet, n.subnet);
    EXPECT_EQ(back->gateway, n.gateway);
    EXPECT_EQ(back->vni, n.vni);
    EXPECT_EQ(back->node_addresses, n.node_addresses);
    auto shown = to_json(n);
    EXPECT_EQ(shown.at("Options").at("com.docker.network.driver.overlay.vxlanid_list"), "4100");
    EXPECT_EQ(shown.at("IPAM").at("Config").at(0).at("IPRange"), "10.9.0.0/25");
}

TEST(ServiceEndpoint, ValidatesAsSwarmDoes) {
    auto check = [](std::string_view body) -> Result<void> {
        auto spec = service_spec_from_json(json::parse(body));
        if (!spec) return std::move(spec).error();
        return validate_service_spec(*spec);
    };
    EXPECT_TRUE(check(R"({"Name":"a","TaskTemplate":{"ContainerSpec":{"Image":"b"}},
        "EndpointSpec":{"Mode":"vip","Ports":[{"TargetPort":80,"PublishedPort":8080},
        {"TargetPort":80,"PublishedPort":8080,"Protocol":"udp"}]}})"));
    for (auto [body, says] : std::initializer_list<std::pair<const char*, const char*>>{
             {R"({"Name":"a","TaskTemplate":{"ContainerSpec":{"Image":"b"}},"EndpointSpec":{
                "Mode":"dnsrr","Ports":[{"TargetPort":80}]}})",
              "port published with ingress mode can't be used with dnsrr mode"},
             {R"({"Name":"a","TaskTemplate":{"ContainerSpec":{"Image":"b"}},"EndpointSpec":{
                "Ports":[{"TargetPort":80,"PublishedPort":1},{"TargetPort":81,"PublishedPort":1}]}})",
              "EndpointSpec: duplicate published ports provided"},
             {R"({"Name":"a","TaskTemplate":{"ContainerSpec":{"Image":"b"}},"EndpointSpec":{
                "Ports":[{"TargetPort":80,"Protocol":"sctp"}]}})",
              "sctp"},
             {R"({"Name":"a","TaskTemplate":{"ContainerSpec":{"Image":"b"}},"EndpointSpec":{
                "Ports":[{"TargetPort":80,"PublishMode":"host"}]}})",
              "host mode must name its published port"},
             {R"({"Name":"a","TaskTemplate":{"ContainerSpec":{"Image":"b"}},"EndpointSpec":{
                "Mode":"round"}})",
              "invalid resolution mode"},
             {R"({"Name":"a","TaskTemplate":{"ContainerSpec":{"Image":"b"},
                "Networks":[{"Target":"x"}]},"Networks":[{"Target":"y"}]})",
              "cannot both be given"},
         }) {
        auto r = check(body);
        ASSERT_FALSE(r) << body;
        EXPECT_NE(r.error().message.find(says), std::string::npos)
            << body << ": " << r.error().message;
    }
}

namespace {

Network make_network(std::string id, std::string name, std::string subnet, std::uint32_t vni) {
    Network n;
    n.meta.id = std::move(id);
    n.spec.name = std::move(name);
    n.subnet = std::move(subnet);
    n.gateway = n.subnet.substr(0, n.subnet.rfind('.')) + ".1";
    n.vni = vni;
    return n;
}

Task make_task(std::string id, const Service& s, std::uint64_t slot, std::string node,
               TaskState state) {
    Task t;
    t.meta.id = std::move(id);
    t.service_id = s.meta.id;
    t.service_name = s.spec.name;
    t.slot = slot;
    t.node_id = std::move(node);
    t.status.state = state;
    return t;
}

Node make_node(std::string id, std::string addr) {
    Node n;
    n.meta.id = std::move(id);
    n.addr = std::move(addr);
    n.state = NodeState::ready;
    return n;
}

}  // namespace

TEST(NetworkAllocation, TasksVipsAndNodesNeverShareAnAddressAndEndedTasksFreeTheirs) {
    std::vector<Network> networks{make_network("n1", "back", "10.0.1.0/29", 4097)};
    Service s;
    s.meta.id = "s1";
    s.spec.name = "db";
    s.spec.task.networks = {{"n1", {"database"}}};
    // The VIP first: .2 (.1 is the IPAM gateway).
    auto vips = manager::plan_virtual_ips(s, {s}, networks, {});
    ASSERT_TRUE(vips);
    ASSERT_EQ(vips->size(), 1u);
    EXPECT_EQ(vips->front().addr, "10.0.1.2/29");
    s.virtual_ips = *vips;
    EXPECT_FALSE(manager::plan_virtual_ips(s, {s}, networks, {}));
    networks[0].node_addresses = {{"node1", "10.0.1.3"}};

    std::map<std::string, Task, std::less<>> tasks;
    tasks["t1"] = make_task("t1", s, 1, "node1", TaskState::running);
    tasks["t2"] = make_task("t2", s, 2, "", TaskState::pending);
    auto changed = manager::allocate_task_networks(tasks, {s}, networks);
    EXPECT_EQ(changed, (std::vector<std::string>{"t1", "t2"}));
    ASSERT_EQ(tasks["t1"].networks.size(), 1u);
    EXPECT_EQ(tasks["t1"].networks[0].address, "10.0.1.4/29");
    EXPECT_EQ(tasks["t1"].networks[0].aliases, (std::vector<std::string>{"database"}));
    EXPECT_EQ(tasks["t2"].networks[0].address, "10.0.1.5/29");
    // Allocated once.
    EXPECT_TRUE(manager::allocate_task_networks(tasks, {s}, networks).empty());

    // .6 is the last host address; a fourth task finds none, then the ended one's.
    tasks["t3"] = make_task("t3", s, 3, "", TaskState::pending);
    tasks["t4"] = make_task("t4", s, 4, "", TaskState::pending);
    std::map<std::string, std::string> full;
    manager::allocate_task_networks(tasks, {s}, networks, &full);
    EXPECT_EQ(tasks["t3"].networks[0].address, "10.0.1.6/29");
    EXPECT_EQ(full, (std::map<std::string, std::string>{{"t4", "back"}}));
    EXPECT_FALSE(tasks["t4"].networks_allocated);
    tasks["t1"].status.state = TaskState::failed;
    manager::allocate_task_networks(tasks, {s}, networks);
    ASSERT_TRUE(tasks["t4"].networks_allocated);
    EXPECT_EQ(tasks["t4"].networks[0].address, "10.0.1.4/29");
}

TEST(NetworkAllocation, HostNetworkAndHostPortsGoToTheTask) {
    auto host = make_network("h", "host", "", 0);
    host.spec.driver = "host";
    host.subnet.clear();
    std::vector<Network> networks{host};
    Service s;
    s.meta.id = "s1";
    s.spec.name = "web";
    s.spec.task.networks = {{"h", {}}};
    s.endpoint_ports = {{"", "tcp", 80, 8080, PublishMode::host}};
    std::map<std::string, Task, std::less<>> tasks;
    tasks["t1"] = make_task("t1", s, 1, "", TaskState::pending);
    manager::allocate_task_networks(tasks, {s}, networks);
    EXPECT_EQ(tasks["t1"].network_mode, "host");
    EXPECT_TRUE(tasks["t1"].networks.empty());
    ASSERT_EQ(tasks["t1"].host_ports.size(), 1u);
    EXPECT_EQ(tasks["t1"].host_ports[0].published_port, 8080u);
}

TEST(NetworksMessage, ShowsANodeItsNetworksPeersRunningTasksAndIngress) {
    auto back = make_network("n1", "back", "10.0.1.0/24", 4097);
    back.node_addresses = {{"A", "10.0.1.2"}, {"B", "10.0.1.3"}};
    auto other = make_network("n2", "other", "10.0.2.0/24", 4098);
    other.node_addresses = {{"B", "10.0.2.2"}};
    auto ingress = make_network("in", "ingress", "10.0.0.0/24", 4096);
    ingress.spec.ingress = true;
    ingress.node_addresses = {{"A", "10.0.0.2"}, {"B", "10.0.0.3"}};
    std::vector<Network> networks{back, other, ingress};

    Service db;
    db.meta.id = "s1";
    db.spec.name = "db";
    db.spec.task.networks = {{"n1", {"database"}}};
    db.virtual_ips = {{"n1", "10.0.1.4/24"}};
    Service web;
    web.meta.id = "s2";
    web.spec.name = "web";
    web.spec.endpoint.mode = "dnsrr";
    web.spec.task.networks = {{"n1", {}}};
    web.endpoint_ports = {{"", "tcp", 80, 8080, PublishMode::ingress}};
    Service lone;
    lone.meta.id = "s3";
    lone.spec.name = "lone";
    lone.spec.task.networks = {{"n2", {}}};

    auto t1 = make_task("t1", db, 1, "A", TaskState::running);
    t1.networks = {{"n1", "10.0.1.5/24", {"database"}}};
    auto t2 = make_task("t2", db, 2, "B", TaskState::starting);  // not running: not listed
    t2.networks = {{"n1", "10.0.1.6/24", {"database"}}};
    auto t3 = make_task("t3", web, 1, "B", TaskState::running);
    t3.networks = {{"n1", "10.0.1.7/24", {}}, {"in", "10.0.0.5/24", {}}};
    auto t4 = make_task("t4", lone, 1, "B", TaskState::running);
    t4.networks = {{"n2", "10.0.2.5/24", {}}};
    std::vector<Node> nodes{make_node("A", "192.0.2.5:40000"), make_node("B", "192.0.2.6:40001")};

    auto m = manager::networks_message("A", networks, {db, web, lone}, {t1, t2, t3, t4}, nodes);
    ASSERT_EQ(m.networks.size(), 2u);  // back (its task) and ingress (a port); not other
    const auto& n = m.networks[0];
    EXPECT_EQ(n.id, "n1");
    EXPECT_EQ(n.name, "back");
    EXPECT_EQ(n.subnet, "10.0.1.0/24");
    EXPECT_EQ(n.gateway, "10.0.1.2");
    EXPECT_EQ(n.vni, 4097u);
    EXPECT_EQ(n.peers, (std::vector<std::string>{"192.0.2.6"}));
    ASSERT_EQ(n.services.size(), 2u);
    EXPECT_EQ(n.services[0].name, "db");
    EXPECT_EQ(n.services[0].vip, "10.0.1.4");
    EXPECT_EQ(n.services[0].aliases, (std::vector<std::string>{"database"}));
    ASSERT_EQ(n.services[0].tasks.size(), 1u);
    EXPECT_EQ(n.services[0].tasks[0], (nodeproto::NetworkTask{"t1", "db.1.t1", "10.0.1.5"}));
    EXPECT_EQ(n.services[1].endpoint_mode, "dnsrr");
    EXPECT_EQ(n.services[1].vip, "");
    EXPECT_EQ(m.networks[1].id, "in");
    EXPECT_TRUE(m.networks[1].ingress);
    ASSERT_EQ(m.ingress.size(), 1u);
    EXPECT_EQ(m.ingress[0].service_id, "s2");
    EXPECT_EQ(m.ingress[0].published_port, 8080);
    EXPECT_EQ(m.ingress[0].backends, (std::vector<std::string>{"10.0.0.5"}));

    // A node without an address on a network does not get it yet.
    back.node_addresses.erase("A");
    auto later = manager::networks_message("A", {back, other, ingress}, {db, web, lone},
                                           {t1, t2, t3, t4}, nodes);
    ASSERT_EQ(later.networks.size(), 1u);
    EXPECT_EQ(later.networks[0].id, "in");
    EXPECT_EQ(manager::underlay_address("192.0.2.6:4000"), "192.0.2.6");
    EXPECT_EQ(manager::underlay_address("[fd00::1]:4000"), "");
}
