// Networks end to end on cofferd-test (two registered nodes, fake agents that report every
// assigned task running): the docker CLI's network commands, the API's refusals (each leaving
// nothing behind), allocation across restarts, services attached to networks and publishing
// ports, and stacks with networks.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <filesystem>
#include <fstream>
#include <optional>
#include <set>

#include "coffer/crypto/secure_buffer.h"
#include "coffer/model/ipv4.h"
#include "coffer/net/http.h"
#include "coffer/net/http_client.h"
#include "coffer/nodeproto/networks.h"
#include "harness.h"
#include "hooked_daemon.h"

using namespace coffer;
using namespace coffer::test;
namespace json = boost::json;

namespace {

class NetworksApi : public HookedDaemonTest {
  protected:
    void SetUp() override {
        std::filesystem::create_directories(dir_.path() / "nets");
        ::setenv("COFFER_TEST_NETWORKS_DIR", (dir_.path() / "nets").c_str(), 1);
        start_daemon();
    }
    void TearDown() override {
        HookedDaemonTest::TearDown();
        ::unsetenv("COFFER_TEST_NETWORKS_DIR");
    }
    // The last networks message node's fake agent got, decoded as an agent decodes it.
    std::optional<nodeproto::NetworksMessage> networks_message(const std::string& host) {
        auto path = dir_.path() / "nets" / (host + ".json");
        if (!std::filesystem::exists(path)) return std::nullopt;
        auto text = read_file(path);
        EXPECT_FALSE(text.starts_with("refused")) << text;
        auto m = nodeproto::decode_networks(crypto::SecureBuffer::copy_of(std::string_view(text)));
        if (!m) return std::nullopt;
        return *m;
    }
    json::value tasks_of(const std::string& service) {
        auto r = request("GET", "/v1.41/tasks?filters=" + net::percent_encode(fmt::format(
                                                              R"({{"service":["{}"]}})", service)));
        return json::parse(r.body);
    }

    static std::string message(const net::ClientResponse& r) {
        auto v = json::parse(r.body);
        return std::string(v.at("message").as_string());
    }
    json::value inspect(const std::string& what) {
        auto r = docker({"network", "inspect", what});
        EXPECT_EQ(r.status, 0) << r.err;
        return r.status == 0 ? json::parse(r.out) : json::value(json::array{});
    }
    static std::string subnet_of(const json::value& n) {
        return std::string(n.at("IPAM").at("Config").at(0).at("Subnet").as_string());
    }
    std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }
    // Every network as GET /networks answers: name -> resource.
    std::map<std::string, json::value> networks() {
        auto r = request("GET", "/v1.41/networks");
        EXPECT_EQ(r.status, 200);
        std::map<std::string, json::value> out;
        auto list = json::parse(r.body);
        for (const auto& n : list.as_array()) out[std::string(n.at("Name").as_string())] = n;
        return out;
    }
};

}  // namespace

TEST_F(NetworksApi, PredefinedNetworksExistAndCannotBeRemovedOrTaken) {
    auto all = networks();
    ASSERT_TRUE(all.count("ingress")) << "no ingress network";
    ASSERT_TRUE(all.count("host")) << "no host network";
    EXPECT_EQ(all["ingress"].at("Driver"), "overlay");
    EXPECT_EQ(all["ingress"].at("Ingress"), true);
    EXPECT_EQ(subnet_of(all["ingress"]), "10.0.0.0/24");
    EXPECT_EQ(all["host"].at("Driver"), "host");
    EXPECT_EQ(all["host"].at("Scope"), "local");
    EXPECT_EQ(all["bridge"].at("Driver"), "bridge");
    EXPECT_EQ(all["bridge"].at("Scope"), "local");
    EXPECT_EQ(subnet_of(all["bridge"]), "10.255.0.0/16");
    EXPECT_EQ(request("DELETE", "/v1.41/networks/bridge").status, 403);

    auto rm_host = request("DELETE", "/v1.41/networks/host");
    EXPECT_EQ(rm_host.status, 403);
    EXPECT_EQ(message(rm_host), "host is a pre-defined network and cannot be removed");
    auto rm_ingress = request("DELETE", "/v1.41/networks/ingress");
    EXPECT_EQ(rm_ingress.status, 403);
    auto mk_host = request("POST", "/v1.41/networks/create", R"({"Name":"host"})");
    EXPECT_EQ(mk_host.status, 403);
    EXPECT_EQ(message(mk_host), "host is a pre-defined network and cannot be created");
    auto mk_bridge = request("POST", "/v1.41/networks/create", R"({"Name":"bridge"})");
    EXPECT_EQ(mk_bridge.status, 403);
    auto mk_ingress = request("POST", "/v1.41/networks/create", R"({"Name":"ingress"})");
    EXPECT_EQ(mk_ingress.status, 409);
    EXPECT_EQ(message(mk_ingress), "network with name ingress already exists");
    EXPECT_EQ(networks().size(), 3u);
}

TEST_F(NetworksApi, DockerNetworkCommandsCreateListInspectAndRemove) {
    if (!have_docker()) GTEST_SKIP() << "no docker CLI on this machine";
    auto created = docker(
        {"network", "create", "-d", "overlay", "--attachable", "--label", "env=prod", "backend"});
    ASSERT_EQ(created.status, 0) << created.err;
    auto id = first_line(created.out);
    EXPECT_EQ(id.size(), 25u) << created.out;

    auto v = inspect("backend");
    ASSERT_EQ(v.as_array().size(), 1u);
    const auto& n = v.at(0);
    EXPECT_EQ(n.at("Id"), id.c_str());
    EXPECT_EQ(n.at("Name"), "backend");
    EXPECT_EQ(n.at("Driver"), "overlay");
    EXPECT_EQ(n.at("Scope"), "swarm");
    EXPECT_EQ(n.at("Attachable"), true);
    EXPECT_EQ(n.at("Internal"), false);
    EXPECT_EQ(n.at("Labels").at("env"), "prod");
    EXPECT_EQ(subnet_of(n), "10.0.1.0/24");
    EXPECT_EQ(n.at("IPAM").at("Config").at(0).at("Gateway"), "10.0.1.1");
    EXPECT_EQ(n.at("Options").at("com.docker.network.driver.overlay.vxlanid_list"), "4097");
    // By ID prefix, too.
    EXPECT_EQ(inspect(id.substr(0, 6)).at(0).at("Name"), "backend");

    auto fixed =
        docker({"network", "create", "-d", "bridge", "--internal", "--subnet", "10.20.0.0/16",
                "--gateway", "10.20.0.254", "--ip-range", "10.20.5.0/24", "local"});
    ASSERT_EQ(fixed.status, 0) << fixed.err;
    auto l = inspect("local").at(0);
    EXPECT_EQ(l.at("Driver"), "bridge");
    EXPECT_EQ(l.at("Internal"), true);
    EXPECT_EQ(subnet_of(l), "10.20.0.0/16");
    EXPECT_EQ(l.at("IPAM").at("Config").at(0).at("Gateway"), "10.20.0.254");
    EXPECT_EQ(l.at("IPAM").at("Config").at(0).at("IPRange"), "10.20.5.0/24");

    auto twice = docker({"network", "create", "backend"});
    EXPECT_EQ(twice.status, 1);
    EXPECT_NE(twice.err.find("network with name backend already exists"), std::string::npos)
        << twice.err;
    auto overlap = docker({"network", "create", "--subnet", "10.20.7.0/24", "inside"});
    EXPECT_EQ(overlap.status, 1);
    EXPECT_NE(overlap.err.find("Pool overlaps with other one on this address space"),
              std::string::npos)
        << overlap.err;

    auto ls = docker({"network", "ls"});
    ASSERT_EQ(ls.status, 0) << ls.err;
    for (auto name : {"backend", "local", "ingress", "host"})
        EXPECT_NE(ls.out.find(name), std::string::npos) << ls.out;
    auto by_label = docker({"network", "ls", "-q", "--no-trunc", "--filter", "label=env=prod"});
    EXPECT_EQ(by_label.out, id + "\n");
    auto custom = docker({"network", "ls", "--format", "{{.Name}}", "--filter", "type=custom"});
    EXPECT_EQ(custom.out, "backend\nlocal\n") << custom.out;
    auto bridges = docker({"network", "ls", "--format", "{{.Name}}", "--filter", "driver=bridge"});
    EXPECT_EQ(bridges.out, "bridge\nlocal\n");
    auto by_name = docker({"network", "ls", "--format", "{{.Name}}", "--filter", "name=ack"});
    EXPECT_EQ(by_name.out, "backend\n");
    auto bad_type = docker({"network", "ls", "--filter", "type=odd"});
    EXPECT_NE(bad_type.status, 0);

    auto rm = docker({"network", "rm", "backend", "local"});
    ASSERT_EQ(rm.status, 0) << rm.err;
    EXPECT_EQ(rm.out, "backend\nlocal\n");
    auto gone = docker({"network", "inspect", "backend"});
    EXPECT_NE(gone.status, 0);
    auto rm_gone = request("DELETE", "/v1.41/networks/backend");
    EXPECT_EQ(rm_gone.status, 404);
    EXPECT_EQ(message(rm_gone), "network backend not found");
    EXPECT_EQ(networks().size(), 3u);
}

TEST_F(NetworksApi, RefusedRequestsNameWhyAndCreateNothing) {
    struct Case {
        const char* body;
        const char* says;
    };
    for (
        auto c : std::initializer_list<Case>{
            {R"({"Name":"n","EnableIPv6":true})", "EnableIPv6"},
            {R"({"Name":"n","Ingress":true})", "Ingress"},
            {R"({"Name":"n","ConfigOnly":true})", "ConfigOnly"},
            {R"({"Name":"n","ConfigFrom":{"Network":"x"}})", "ConfigFrom"},
            {R"({"Name":"n","Shiny":1})", "Shiny"},
            {R"({"Name":"n","Driver":"macvlan"})", "macvlan"},
            {R"({"Name":"n","Scope":"local"})", "scope local"},
            {R"({"Name":"n","Options":{"encrypted":""}})", "encrypted"},
            {R"({"Name":"n","IPAM":{"Driver":"dhcp"}})", "IPAM driver dhcp"},
            {R"({"Name":"n","IPAM":{"Config":[{"Subnet":"fd00::/64"}]}})", "IPv6"},
            {R"({"Name":"n","IPAM":{"Config":[{"Subnet":"10.9.0.1/24"}]}})", "host bits"},
            {R"({"Name":"n","IPAM":{"Config":[{"Subnet":"10.9.0.0/24","Gateway":"10.8.0.1"}]}})",
             "invalid gateway"},
            {R"({"Name":"n","IPAM":{"Config":[{"Subnet":"10.9.0.0/24"},{"Subnet":"10.8.0.0/24"}]}})",
             "one subnet"},
            {R"({"Name":"n","IPAM":{"Config":[{"Subnet":"10.9.0.0/24","AuxiliaryAddresses":{"a":"10.9.0.9"}}]}})",
             "AuxiliaryAddresses"},
            {R"({"Name":"bad name"})", "invalid network name"},
            {R"({"Name":""})", "must not be empty"},
            {R"({"Name":"n","Internal":"yes"})", "Internal"},
        }) {
        auto r = request("POST", "/v1.41/networks/create", c.body);
        EXPECT_EQ(r.status, 400) << c.body << " -> " << r.body;
        EXPECT_NE(r.body.find(c.says), std::string::npos) << c.body << " -> " << r.body;
    }
    EXPECT_EQ(networks().size(), 3u);
    // What the docker CLI sends for a plain create is accepted, without a warning.
    auto ok = request("POST", "/v1.41/networks/create",
                      R"({"Name":"plain","CheckDuplicate":true,"Driver":"overlay","Scope":"",
                          "EnableIPv6":false,"IPAM":{"Driver":"default","Config":[],"Options":{}},
                          "Internal":false,"Attachable":false,"Ingress":false,"ConfigOnly":false,
                          "ConfigFrom":null,"Options":{},"Labels":{}})");
    EXPECT_EQ(ok.status, 201) << ok.body;
    EXPECT_EQ(json::parse(ok.body).at("Warning"), "");
    // Another driver option is kept and warned about.
    auto warned =
        request("POST", "/v1.41/networks/create", R"({"Name":"w","Options":{"mtu.x":"1400"}})");
    EXPECT_EQ(warned.status, 201) << warned.body;
    EXPECT_NE(json::parse(warned.body).at("Warning").as_string().find("mtu.x"), std::string::npos);
}

TEST_F(NetworksApi, AllocationIsUniqueAndSurvivesRestarts) {
    auto create = [&](const std::string& name) {
        auto r = request("POST", "/v1.41/networks/create", fmt::format(R"({{"Name":"{}"}})", name));
        EXPECT_EQ(r.status, 201) << r.body;
    };
    create("a");
    create("b");
    auto before = networks();
    daemon_.reset();
    daemon_ = std::make_unique<Daemon>(dir_.path() / "data", dir_.path() / "coffer.sock");
    ASSERT_TRUE(daemon_->ready());
    auto after = networks();
    ASSERT_EQ(after.size(), 5u);
    for (auto name : {"a", "b", "ingress", "host", "bridge"}) {
        EXPECT_EQ(after[name].at("Id"), before[name].at("Id")) << name;
        EXPECT_EQ(after[name].at("IPAM"), before[name].at("IPAM")) << name;
        EXPECT_EQ(after[name].at("Options"), before[name].at("Options")) << name;
    }
    create("c");
    EXPECT_EQ(request("DELETE", "/v1.41/networks/b").status, 204);
    create("d");  // takes what b freed
    auto now = networks();
    EXPECT_EQ(subnet_of(now["a"]), "10.0.1.0/24");
    EXPECT_EQ(subnet_of(now["c"]), "10.0.3.0/24");
    EXPECT_EQ(subnet_of(now["d"]), "10.0.2.0/24");
    std::set<std::string> subnets, vnis;
    for (const auto& [name, n] : now) {
        if (name == "host") continue;
        EXPECT_TRUE(subnets.insert(subnet_of(n)).second) << name;
        if (name == "bridge") continue;  // one node's: no VXLAN
        auto vni = n.at("Options").at("com.docker.network.driver.overlay.vxlanid_list");
        EXPECT_TRUE(vnis.insert(std::string(vni.as_string())).second) << name;
    }
}

TEST_F(NetworksApi, ServicesAttachByNameAndHoldTheirNetworks) {
    if (!have_docker()) GTEST_SKIP() << "no docker CLI on this machine";
    auto net = docker({"network", "create", "backend"});
    ASSERT_EQ(net.status, 0) << net.err;
    auto net_id = first_line(net.out);
    auto svc =
        docker({"service", "create", "--detach", "--no-resolve-image", "--name", "db", "--network",
                "name=backend,alias=database", "localbusybox:1", "sleep", "3600"});
    ASSERT_EQ(svc.status, 0) << svc.err;
    EXPECT_EQ(svc.err.find("Warning"), std::string::npos) << svc.err;
    auto spec = json::parse(docker({"service", "inspect", "db"}).out);
    const auto& nets = spec.at(0).at("Spec").at("TaskTemplate").at("Networks").as_array();
    ASSERT_EQ(nets.size(), 1u);
    // Stored by ID, as Swarm stores it.
    EXPECT_EQ(nets.at(0).at("Target"), net_id.c_str());
    EXPECT_EQ(nets.at(0).at("Aliases").at(0), "database");

    auto rm = docker({"network", "rm", "backend"});
    EXPECT_NE(rm.status, 0);
    EXPECT_NE(rm.err.find("is in use by service"), std::string::npos) << rm.err;
    auto raw_rm = request("DELETE", "/v1.41/networks/backend");
    EXPECT_EQ(raw_rm.status, 400);

    auto unknown = docker({"service", "create", "--detach", "--no-resolve-image", "--name", "x",
                           "--network", "nope", "localbusybox:1"});
    EXPECT_NE(unknown.status, 0);
    EXPECT_NE(unknown.err.find("network nope not found"), std::string::npos) << unknown.err;
    auto ingress = docker({"service", "create", "--detach", "--no-resolve-image", "--name", "x",
                           "--network", "ingress", "localbusybox:1"});
    EXPECT_NE(ingress.status, 0);
    EXPECT_NE(ingress.err.find("cannot be explicitly attached to the ingress network"),
              std::string::npos)
        << ingress.err;
    auto host_and = docker({"service", "create", "--detach", "--no-resolve-image", "--name", "x",
                            "--network", "host", "--network", "backend", "localbusybox:1"});
    EXPECT_NE(host_and.status, 0);
    EXPECT_NE(host_and.err.find("host network cannot be combined"), std::string::npos)
        << host_and.err;
    auto host_ports = docker({"service", "create", "--detach", "--no-resolve-image", "--name", "x",
                              "--network", "host", "-p", "8080:80", "localbusybox:1"});
    EXPECT_NE(host_ports.status, 0);
    auto opts = request("POST", "/v1.41/services/create",
                        R"({"Name":"x","TaskTemplate":{"ContainerSpec":{"Image":"b"},
                            "Networks":[{"Target":"backend","DriverOpts":{"a":"b"}}]}})");
    EXPECT_EQ(opts.status, 400) << opts.body;
    EXPECT_NE(opts.body.find("DriverOpts"), std::string::npos) << opts.body;
    // None of the refused services exists.
    auto ls = docker({"service", "ls", "--format", "{{.Name}}"});
    EXPECT_EQ(ls.out, "db\n");

    // Detached by an update, the network is free again.
    auto upd = docker({"service", "update", "--detach", "--network-rm", "backend", "db"});
    ASSERT_EQ(upd.status, 0) << upd.err;
    EXPECT_EQ(docker({"network", "rm", "backend"}).status, 0);
}

TEST_F(NetworksApi, PublishedPortsAreAllocatedAndShown) {
    if (!have_docker()) GTEST_SKIP() << "no docker CLI on this machine";
    auto web = docker({"service", "create", "--detach", "--no-resolve-image", "--name", "web", "-p",
                       "8080:80", "-p", "published=0,target=443", "-p",
                       "mode=host,published=9090,target=90,protocol=udp", "localbusybox:1"});
    ASSERT_EQ(web.status, 0) << web.err;
    auto v = json::parse(docker({"service", "inspect", "web"}).out).at(0);
    const auto& ports = v.at("Endpoint").at("Ports").as_array();
    ASSERT_EQ(ports.size(), 3u) << v.at("Endpoint");
    EXPECT_EQ(ports.at(0).at("PublishedPort"), 8080);
    EXPECT_EQ(ports.at(1).at("PublishedPort"), 30000);
    EXPECT_EQ(ports.at(1).at("TargetPort"), 443);
    EXPECT_EQ(ports.at(2).at("PublishMode"), "host");
    EXPECT_EQ(ports.at(2).at("Protocol"), "udp");
    auto ls = docker({"service", "ls", "--format", "{{.Ports}}"});
    EXPECT_NE(ls.out.find("*:8080->80/tcp"), std::string::npos) << ls.out;
    EXPECT_NE(ls.out.find("*:30000->443/tcp"), std::string::npos) << ls.out;

    auto clash = docker({"service", "create", "--detach", "--no-resolve-image", "--name", "other",
                         "-p", "8080:81", "localbusybox:1"});
    EXPECT_NE(clash.status, 0);
    EXPECT_NE(clash.err.find(fmt::format("port '8080' is already in use by service 'web' ({}) as "
                                         "an ingress port",
                                         v.at("ID").as_string())),
              std::string::npos)
        << clash.err;
    // udp 8080 is another port; a dynamic one skips 30000.
    auto other = docker({"service", "create", "--detach", "--no-resolve-image", "--name", "other",
                         "-p", "8080:81/udp", "-p", "0:82", "localbusybox:1"});
    ASSERT_EQ(other.status, 0) << other.err;
    auto o = json::parse(docker({"service", "inspect", "other"}).out).at(0);
    EXPECT_EQ(o.at("Endpoint").at("Ports").at(1).at("PublishedPort"), 30001);

    // An update keeps a dynamic port; a duplicate or dnsrr with ingress ports is refused.
    ASSERT_EQ(docker({"service", "update", "--detach", "--env-add", "A=1", "web"}).status, 0);
    auto again = json::parse(docker({"service", "inspect", "web"}).out).at(0);
    EXPECT_EQ(again.at("Endpoint").at("Ports").at(1).at("PublishedPort"), 30000);
    auto dup = docker({"service", "create", "--detach", "--no-resolve-image", "--name", "dup", "-p",
                       "7000:1", "-p", "7000:2", "localbusybox:1"});
    EXPECT_NE(dup.status, 0);
    EXPECT_NE(dup.err.find("EndpointSpec: duplicate published ports provided"), std::string::npos)
        << dup.err;
    auto dnsrr = docker({"service", "create", "--detach", "--no-resolve-image", "--name", "dns",
                         "--endpoint-mode", "dnsrr", "-p", "7001:1", "localbusybox:1"});
    EXPECT_NE(dnsrr.status, 0);
    EXPECT_NE(dnsrr.err.find("port published with ingress mode can't be used with dnsrr mode"),
              std::string::npos)
        << dnsrr.err;
    auto sctp = docker({"service", "create", "--detach", "--no-resolve-image", "--name", "sc", "-p",
                        "7002:1/sctp", "localbusybox:1"});
    EXPECT_NE(sctp.status, 0);
    EXPECT_NE(sctp.err.find("sctp"), std::string::npos) << sctp.err;
    auto names = docker({"service", "ls", "--format", "{{.Name}}"});
    EXPECT_EQ(names.out, "other\nweb\n");

    // Host-mode ports only, no network named: the tasks join the node's bridge network, which
    // no service may name; a network of the bridge driver is warned of.
    auto hp = docker({"service", "create", "--detach", "--no-resolve-image", "--name", "hp", "-p",
                      "mode=host,published=9191,target=91", "localbusybox:1"});
    ASSERT_EQ(hp.status, 0) << hp.err;
    auto bridge_id = std::string(inspect("bridge").at(0).at("Id").as_string());
    EXPECT_TRUE(wait_until([&] {
        auto t = tasks_of("hp");
        if (!t.is_array() || t.as_array().empty()) return false;
        const auto* atts = t.as_array().at(0).as_object().if_contains("NetworksAttachments");
        return atts && atts->as_array().size() == 1 &&
               atts->as_array().at(0).at("Network").at("ID") == bridge_id.c_str();
    })) << tasks_of("hp");
    auto named = docker({"service", "create", "--detach", "--no-resolve-image", "--name", "nb",
                         "--network", "bridge", "localbusybox:1"});
    EXPECT_NE(named.status, 0);
    EXPECT_NE(named.err.find("network bridge cannot be used with services"), std::string::npos)
        << named.err;
    ASSERT_EQ(docker({"network", "create", "-d", "bridge", "onenode"}).status, 0);
    auto local = docker({"service", "create", "--detach", "--no-resolve-image", "--name", "ln",
                         "--network", "onenode", "localbusybox:1"});
    ASSERT_EQ(local.status, 0) << local.err;
    EXPECT_NE(local.err.find("network onenode uses the bridge driver: a task reaches only the "
                             "tasks on its own node"),
              std::string::npos)
        << local.err;
}

TEST_F(NetworksApi, StackDeployCreatesItsNetworksAndStackRmRemovesThem) {
    if (!have_docker()) GTEST_SKIP() << "no docker CLI on this machine";
    ASSERT_EQ(docker({"network", "create", "shared"}).status, 0);
    std::ofstream(dir_.path() / "stack.yml") << R"(version: "3.8"
services:
  app:
    image: localbusybox:1
    command: ["sleep", "3600"]
    networks: [front, shared]
    ports: ["8081:80"]
networks:
  front: {}
  shared: {external: true}
)";
    auto stack_file = (dir_.path() / "stack.yml").string();
    auto deploy = docker({"stack", "deploy", "--resolve-image", "never", "-c", stack_file, "st"});
    ASSERT_EQ(deploy.status, 0) << deploy.err;
    EXPECT_NE(deploy.out.find("Creating network st_front"), std::string::npos) << deploy.out;
    auto front = inspect("st_front").at(0);
    EXPECT_EQ(front.at("Labels").at("com.docker.stack.namespace"), "st");
    auto spec = json::parse(docker({"service", "inspect", "st_app"}).out).at(0);
    std::set<std::string> targets;
    for (const auto& n : spec.at("Spec").at("TaskTemplate").at("Networks").as_array())
        targets.insert(std::string(n.at("Target").as_string()));
    EXPECT_EQ(targets,
              (std::set<std::string>{std::string(front.at("Id").as_string()),
                                     std::string(inspect("shared").at(0).at("Id").as_string())}));
    EXPECT_EQ(spec.at("Endpoint").at("Ports").at(0).at("PublishedPort"), 8081);
    // Deploying again changes nothing about the networks.
    auto again = docker({"stack", "deploy", "--resolve-image", "never", "-c", stack_file, "st"});
    ASSERT_EQ(again.status, 0) << again.err;
    EXPECT_EQ(inspect("st_front").at(0).at("Id"), front.at("Id"));

    auto rm = docker({"stack", "rm", "st"});
    ASSERT_EQ(rm.status, 0) << rm.err;
    EXPECT_NE(rm.out.find("Removing network st_front"), std::string::npos) << rm.out;
    auto all = networks();
    EXPECT_FALSE(all.count("st_front"));
    EXPECT_TRUE(all.count("shared"));
}

TEST_F(NetworksApi, TasksGetAddressesServicesVipsAndNodesTheirNetworksMessage) {
    if (!have_docker()) GTEST_SKIP() << "no docker CLI on this machine";
    auto net =
        docker({"network", "create", "-d", "overlay", "--subnet", "10.30.0.0/24", "backend"});
    ASSERT_EQ(net.status, 0) << net.err;
    auto net_id = first_line(net.out);
    auto db = docker({"service", "create", "--detach", "--no-resolve-image", "--name", "db",
                      "--replicas", "2", "--network", "name=backend,alias=database", "-p",
                      "8080:80", "localbusybox:1", "sleep", "3600"});
    ASSERT_EQ(db.status, 0) << db.err;
    auto running = [&] {
        auto t = tasks_of("db");
        std::size_t n = 0;
        for (const auto& x : t.as_array())
            if (x.at("Status").at("State") == "running") ++n;
        return n == 2;
    };
    ASSERT_TRUE(wait_until(running));

    auto svc = json::parse(docker({"service", "inspect", "db"}).out).at(0);
    std::map<std::string, std::string> vips;  // network ID -> VIP
    ASSERT_TRUE(wait_until([&] {
        svc = json::parse(docker({"service", "inspect", "db"}).out).at(0);
        const auto* v = svc.at("Endpoint").as_object().if_contains("VirtualIPs");
        return v && v->as_array().size() == 2;
    })) << svc.at("Endpoint");
    for (const auto& v : svc.at("Endpoint").at("VirtualIPs").as_array())
        vips[std::string(v.at("NetworkID").as_string())] = v.at("Addr").as_string();
    ASSERT_TRUE(vips.count(net_id));
    auto vip = model::parse_ipv4_prefix(vips[net_id]);
    ASSERT_TRUE(vip);
    auto subnet = *model::parse_ipv4_prefix("10.30.0.0/24");
    EXPECT_TRUE(subnet.contains(vip->address));
    EXPECT_EQ(vip->length, 24);

    std::set<std::string> addresses{model::format_ipv4(vip->address), "10.30.0.1"};
    std::map<std::string, std::string> task_address;  // task ID -> address on backend
    auto db_tasks = tasks_of("db");
    for (const auto& t : db_tasks.as_array()) {
        const auto& atts = t.at("NetworksAttachments").as_array();
        ASSERT_EQ(atts.size(), 2u) << t;  // backend, and ingress for the published port
        for (const auto& a : atts) {
            const auto& n = a.at("Network");
            auto addr = std::string(a.at("Addresses").at(0).as_string());
            auto p = model::parse_ipv4_prefix(addr);
            ASSERT_TRUE(p) << addr;
            if (n.at("ID") == net_id.c_str()) {
                EXPECT_EQ(n.at("Spec").at("Name"), "backend");
                EXPECT_EQ(n.at("Spec").at("DriverConfiguration").at("Name"), "overlay");
                EXPECT_EQ(n.at("IPAMOptions").at("Configs").at(0).at("Subnet"), "10.30.0.0/24");
                EXPECT_TRUE(subnet.contains(p->address)) << addr;
                EXPECT_TRUE(addresses.insert(model::format_ipv4(p->address)).second) << addr;
                task_address[std::string(t.at("ID").as_string())] = model::format_ipv4(p->address);
            } else {
                EXPECT_EQ(n.at("Spec").at("Name"), "ingress");
            }
        }
    }
    ASSERT_EQ(task_address.size(), 2u);

    // What each node's agent got: the network with its own address, the other node as a peer,
    // the service with both running tasks, and the ingress port.
    std::set<std::string> gateways;
    for (auto host : {"node-a", "node-b"}) {
        std::optional<nodeproto::NetworksMessage> m;
        ASSERT_TRUE(wait_until([&] {
            m = networks_message(host);
            if (!m) return false;
            for (const auto& n : m->networks)
                if (n.id == net_id && !n.services.empty() && n.services[0].tasks.size() == 2)
                    return true;
            return false;
        })) << host;
        const nodeproto::NetworkPayload* back = nullptr;
        for (const auto& n : m->networks)
            if (n.id == net_id) back = &n;
        ASSERT_NE(back, nullptr);
        EXPECT_EQ(back->name, "backend");
        EXPECT_EQ(back->subnet, "10.30.0.0/24");
        EXPECT_GE(back->vni, 4097u);
        EXPECT_EQ(back->peers, (std::vector<std::string>{"127.0.0.1"}));
        EXPECT_TRUE(addresses.insert(back->gateway).second) << back->gateway;
        gateways.insert(back->gateway);
        const auto& s = back->services.at(0);
        EXPECT_EQ(s.name, "db");
        EXPECT_EQ(s.endpoint_mode, "vip");
        EXPECT_EQ(s.vip, model::format_ipv4(vip->address));
        EXPECT_EQ(s.aliases, (std::vector<std::string>{"database"}));
        for (const auto& t : s.tasks) {
            EXPECT_EQ(t.address, task_address[t.id]);
            EXPECT_TRUE(t.name.starts_with("db.")) << t.name;
            EXPECT_TRUE(t.name.ends_with("." + t.id)) << t.name;
        }
        ASSERT_EQ(m->ingress.size(), 1u);
        EXPECT_EQ(m->ingress[0].published_port, 8080);
        EXPECT_EQ(m->ingress[0].target_port, 80);
        EXPECT_EQ(m->ingress[0].backends.size(), 2u);
    }
    EXPECT_EQ(gateways.size(), 2u);

    // Scaled down: the ended task leaves the message; its address is free again.
    ASSERT_EQ(docker({"service", "scale", "--detach", "db=1"}).status, 0);
    ASSERT_TRUE(wait_until([&] {
        for (auto host : {"node-a", "node-b"}) {
            auto m = networks_message(host);
            if (!m) continue;
            for (const auto& n : m->networks)
                if (n.id == net_id && n.services.at(0).tasks.size() == 1) return true;
        }
        return false;
    }));

    // Allocation is kept across a restart.
    auto before = tasks_of("db");
    daemon_.reset();
    daemon_ = std::make_unique<Daemon>(dir_.path() / "data", dir_.path() / "coffer.sock");
    ASSERT_TRUE(daemon_->ready());
    auto after_svc = json::parse(docker({"service", "inspect", "db"}).out).at(0);
    EXPECT_EQ(after_svc.at("Endpoint").at("VirtualIPs"), svc.at("Endpoint").at("VirtualIPs"));
    auto after = tasks_of("db");
    for (const auto& t : before.as_array())
        for (const auto& u : after.as_array()) {
            if (u.at("ID") != t.at("ID")) continue;
            EXPECT_EQ(u.at("NetworksAttachments").at(0).at("Addresses"),
                      t.at("NetworksAttachments").at(0).at("Addresses"));
        }
}

TEST_F(NetworksApi, CofferNetworkCommands) {
    auto created = cli({"network", "create", "-d", "bridge", "--subnet", "10.40.0.0/24",
                        "--gateway", "10.40.0.254", "--internal", "-l", "team=a", "mine"});
    ASSERT_EQ(created.status, 0) << created.err;
    auto id = first_line(created.out);
    EXPECT_EQ(id.size(), 25u) << created.out;
    auto v = json::parse(cli({"network", "inspect", "mine"}).out);
    ASSERT_EQ(v.as_array().size(), 1u);
    EXPECT_EQ(v.at(0).at("Driver"), "bridge");
    EXPECT_EQ(v.at(0).at("Internal"), true);
    EXPECT_EQ(v.at(0).at("Labels").at("team"), "a");
    EXPECT_EQ(v.at(0).at("IPAM").at("Config").at(0).at("Gateway"), "10.40.0.254");
    ASSERT_EQ(cli({"network", "create", "--attachable", "other"}).status, 0);

    auto ls = cli({"network", "ls"});
    ASSERT_EQ(ls.status, 0) << ls.err;
    EXPECT_NE(ls.out.find("NETWORK ID"), std::string::npos) << ls.out;
    EXPECT_NE(ls.out.find("10.40.0.0/24"), std::string::npos) << ls.out;
    EXPECT_NE(ls.out.find("10.0.1.0/24"), std::string::npos) << ls.out;
    auto q = cli({"network", "ls", "-q", "-f", "label=team=a"});
    EXPECT_EQ(q.out, id.substr(0, 12) + "\n");
    auto names = cli({"network", "ls", "--format", "{{.Name}}", "-f", "type=builtin"});
    EXPECT_EQ(names.out, "bridge\nhost\ningress\n");

    auto dup = cli({"network", "create", "mine"});
    EXPECT_EQ(dup.status, 1);
    EXPECT_NE(dup.err.find("network with name mine already exists"), std::string::npos) << dup.err;
    auto bad = cli({"network", "create", "-d", "macvlan", "x"});
    EXPECT_EQ(bad.status, 1);
    EXPECT_NE(bad.err.find("macvlan"), std::string::npos) << bad.err;

    auto rm = cli({"network", "rm", "mine", "other", "nope"});
    EXPECT_EQ(rm.status, 1);
    EXPECT_NE(rm.out.find("mine\nother\n"), std::string::npos) << rm.out;
    EXPECT_NE(rm.err.find("network nope not found"), std::string::npos) << rm.err;
    EXPECT_EQ(networks().size(), 3u);
}
