// Networks across a real cluster (cluster_fixture.h): a server service on node-a guards a page
// with a password from its secret; a client service on node-b, on the same overlay network,
// fetches it by the service's name with the same secret; a client on another network cannot.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <fstream>

#include "cluster_fixture.h"

using namespace coffer;
using namespace coffer::test;
using namespace std::chrono_literals;

namespace {

bool has_line(const std::string& text, const std::string& line) {
    for (const auto& l : lines_of(text))
        if (l == line) return true;
    return false;
}

class NetworksE2E : public ClusterTest {
  protected:
    CliResult docker(const std::vector<std::string>& args) {
        std::vector<std::string> argv{"docker"};
        argv.insert(argv.end(), args.begin(), args.end());
        return run_program(
            argv, "",
            {"DOCKER_HOST=" + daemon_->host(), "DOCKER_CONFIG=" + (dir_.path() / "dc").string()});
    }
    // The node's address as the manager sees it (Status.Addr).
    std::string node_addr(const NodeAgent& agent) {
        auto n = get("/nodes/" + agent.node_id());
        if (!n.is_object()) return "";
        return std::string(n.at("Status").at("Addr").as_string());
    }
    // GET http://host:port/ from the manager's namespace (neither node's): the body, or "" when
    // nothing answered within 3 s.
    std::string fetch(const std::string& host, int port) {
        auto argv = manager_ns_->enter();
        for (std::string a : {"timeout", "3", "busybox", "wget", "-q", "-O", "-"})
            argv.push_back(a);
        argv.push_back(fmt::format("http://{}:{}/", host, port));
        auto r = run_program(argv);
        return r.status == 0 ? r.out : std::string();
    }
    // Waits until fetch answers `body` (bounded by the deadline).
    bool answers(const std::string& host, int port, const std::string& body,
                 std::chrono::milliseconds within = 60s) {
        return wait_until([&] { return fetch(host, port) == body; }, within);
    }
    // A busybox httpd service serving one page, with more arguments for `service create`.
    CliResult page_service(const std::string& name, const std::string& page, int port,
                           const std::vector<std::string>& more) {
        std::vector<std::string> args{"service", "create", "--detach", "--no-resolve-image",
                                      "--name",  name};
        args.insert(args.end(), more.begin(), more.end());
        for (std::string a : {"busybox", "sh", "-c"}) args.push_back(a);
        args.push_back(
            fmt::format("mkdir -p /tmp/www && echo {} > /tmp/www/index.html && exec "
                        "httpd -f -p {} -h /tmp/www",
                        page, port));
        return docker(args);
    }

    // The log of the service's running task on the agent, once it holds line.
    std::string log_with(const std::string& service, NodeAgent& agent, const std::string& line) {
        std::string log;
        wait_until(
            [&] {
                auto r = running(service);
                if (r.empty()) return false;
                log = agent.task_log(std::string(r.at(0).at("ID").as_string()));
                return has_line(log, line);
            },
            90s);
        return log;
    }
};

// The server: httpd on port 80 whose only page needs user:<secret> (httpd.conf's "/:user:pass"
// line, made from /run/secrets/webpass at start).
const char* server_script =
    "mkdir -p /tmp/www && echo guarded-page > /tmp/www/index.html && "
    "echo \"/:user:$(cat /run/secrets/webpass)\" > /tmp/httpd.conf && echo READY && "
    "exec httpd -f -p 80 -h /tmp/www -c /tmp/httpd.conf -r coffer";

// A client: tries the URLs in $URLS (each with user:<secret>@ before the host) and without the
// password, up to 60 times, then waits to be stopped.
const char* client_script =
    "trap 'exit 0' TERM; p=$(cat /run/secrets/webpass); "
    "for i in $(seq 1 60); do "
    "  for h in $HOSTS; do "
    "    if out=$(timeout 3 wget -q -O - http://user:$p@$h/ 2>/dev/null); then "
    "      echo \"FETCHED $h $out\"; "
    "      timeout 3 wget -q -O - http://$h/ >/dev/null 2>&1 && echo \"OPEN $h\" || "
    "        echo \"REFUSED $h\"; "
    "      echo DONE; sleep 3600 & wait; exit 0; "
    "    fi; "
    "  done; "
    "  [ $i -ge $TRIES ] && break; sleep 1; "
    "done; echo UNREACHABLE; echo DONE; sleep 3600 & wait";

TEST_F(NetworksE2E, AClientReachesAServerOnAnotherNodeByNameWithTheSecretOnlyOnItsNetwork) {
    if (!have_docker()) GTEST_SKIP() << "no docker CLI on this machine";
    auto password = hex(random_bytes(12));
    ASSERT_EQ(cli({"secret", "create", "webpass", "-"}, password).status, 0);
    ASSERT_EQ(docker({"network", "create", "--driver", "overlay", "backend"}).status, 0);
    ASSERT_EQ(docker({"network", "create", "--driver", "overlay", "elsewhere"}).status, 0);

    auto server = docker({"service", "create", "--detach", "--no-resolve-image", "--name", "web",
                          "--network", "backend", "--secret", "webpass", "--constraint",
                          "node.hostname==node-a", "busybox", "sh", "-c", server_script});
    ASSERT_EQ(server.status, 0) << server.err;
    auto server_log = log_with("web", *a_, "READY");
    ASSERT_TRUE(has_line(server_log, "READY")) << server_log << a_->err();
    auto web = running("web").at(0);

    auto client = docker({"service",  "create",   "--detach",     "--no-resolve-image",
                          "--name",   "client",   "--network",    "backend",
                          "--secret", "webpass",  "--env",        "HOSTS=web",
                          "--env",    "TRIES=60", "--constraint", "node.hostname==node-b",
                          "busybox",  "sh",       "-c",           client_script});
    ASSERT_EQ(client.status, 0) << client.err;
    auto client_log = log_with("client", *b_, "DONE");
    EXPECT_TRUE(has_line(client_log, "FETCHED web guarded-page")) << client_log << b_->err();
    EXPECT_TRUE(has_line(client_log, "REFUSED web")) << client_log;  // no password: 401

    // The server's own address on backend, as the manager allocated it.
    std::string web_address;
    if (auto* nets = web.if_contains("NetworksAttachments"); nets && nets->is_array())
        for (const auto& n : nets->as_array())
            if (auto* a = n.as_object().if_contains("Addresses");
                a && a->is_array() && !a->as_array().empty())
                web_address = std::string(a->as_array().at(0).as_string());
    web_address = web_address.substr(0, web_address.find('/'));
    ASSERT_FALSE(web_address.empty()) << boost::json::serialize(web);

    auto outsider = docker({"service",  "create",   "--detach",     "--no-resolve-image",
                            "--name",   "outsider", "--network",    "elsewhere",
                            "--secret", "webpass",  "--env",        "HOSTS=web " + web_address,
                            "--env",    "TRIES=5",  "--constraint", "node.hostname==node-b",
                            "busybox",  "sh",       "-c",           client_script});
    ASSERT_EQ(outsider.status, 0) << outsider.err;
    auto outsider_log = log_with("outsider", *b_, "DONE");
    EXPECT_TRUE(has_line(outsider_log, "UNREACHABLE")) << outsider_log << b_->err();
}

// Published ports seen from outside the nodes (the manager's namespace): ingress mode answers
// on both nodes wherever the task runs, host mode only on the task's node, and a task on the
// host network listens on its node's own address.
TEST_F(NetworksE2E, PublishedPortsAnswerOnEveryNodeInIngressModeAndOnItsNodeInHostMode) {
    if (!have_docker()) GTEST_SKIP() << "no docker CLI on this machine";
    auto a = node_addr(*a_), b = node_addr(*b_);
    ASSERT_FALSE(a.empty());
    ASSERT_FALSE(b.empty());
    ASSERT_NE(a, b);

    auto r = page_service(
        "mesh", "mesh-page", 80,
        {"--publish", "published=8080,target=80", "--constraint", "node.hostname==node-a"});
    ASSERT_EQ(r.status, 0) << r.err;
    r = page_service("local", "local-page", 80,
                     {"--publish", "mode=host,published=8081,target=80", "--constraint",
                      "node.hostname==node-a"});
    ASSERT_EQ(r.status, 0) << r.err;
    r = page_service("onhost", "onhost-page", 8082,
                     {"--network", "host", "--constraint", "node.hostname==node-b"});
    ASSERT_EQ(r.status, 0) << r.err;
    ASSERT_TRUE(wait_converged("mesh", 1));
    ASSERT_TRUE(wait_converged("local", 1));
    ASSERT_TRUE(wait_converged("onhost", 1));

    EXPECT_TRUE(answers(a, 8080, "mesh-page\n")) << a_->err();
    EXPECT_TRUE(answers(b, 8080, "mesh-page\n")) << b_->err();  // the task runs on node-a
    EXPECT_TRUE(answers(a, 8081, "local-page\n")) << a_->err();
    EXPECT_EQ(fetch(b, 8081), "");  // host mode: nothing on the node without the task
    EXPECT_TRUE(answers(b, 8082, "onhost-page\n")) << b_->err();
    EXPECT_EQ(fetch(a, 8082), "");

    auto ls = docker({"service", "ls", "--format", "{{.Name}} {{.Ports}}"});
    EXPECT_NE(ls.out.find("mesh *:8080->80/tcp"), std::string::npos) << ls.out;
    // As the docker CLI shows it: host-mode ports are not in the PORTS column.
    EXPECT_NE(ls.out.find("local \n"), std::string::npos) << ls.out;

    // Gone with the service: the port no longer answers on either node.
    ASSERT_EQ(docker({"service", "rm", "mesh"}).status, 0);
    EXPECT_TRUE(wait_until([&] { return fetch(a, 8080).empty() && fetch(b, 8080).empty(); }, 30s));
}

// A stack with a network of its own, an external network and a published port: it deploys,
// a client of the stack reaches the server by name over the stack's network, the port answers
// on both nodes, and `stack rm` removes the stack's network and leaves the external one.
TEST_F(NetworksE2E, AStackWithItsNetworksAndAPublishedPortWorksAndRemovesItsNetwork) {
    if (!have_docker()) GTEST_SKIP() << "no docker CLI on this machine";
    ASSERT_EQ(docker({"network", "create", "--driver", "overlay", "shared"}).status, 0);
    auto file = (dir_.path() / "stack.yml").string();
    std::ofstream(file) << R"(version: "3.8"
services:
  web:
    image: busybox
    command: ["sh", "-c", "mkdir -p /tmp/www && echo stack-page > /tmp/www/index.html && exec httpd -f -p 80 -h /tmp/www"]
    networks: [back, shared]
    ports: ["8090:80"]
    deploy: {placement: {constraints: [node.hostname==node-a]}}
  client:
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; for i in $$(seq 1 60); do if out=$$(timeout 3 wget -q -O - http://web/ 2>/dev/null); then echo \"GOT $$out\"; break; fi; sleep 1; done; echo DONE; sleep 3600 & wait"]
    networks: [back]
    deploy: {placement: {constraints: [node.hostname==node-b]}}
networks:
  back: {driver: overlay}
  shared: {external: true}
)";
    auto r = cli({"stack", "deploy", "-c", file, "--resolve-image", "never", "st"});
    ASSERT_EQ(r.status, 0) << r.out << r.err;
    EXPECT_NE(r.out.find("Creating network st_back"), std::string::npos) << r.out;
    ASSERT_TRUE(wait_converged("st_web", 1));
    auto log = log_with("st_client", *b_, "DONE");
    EXPECT_TRUE(has_line(log, "GOT stack-page")) << log << b_->err();
    auto a = node_addr(*a_), b = node_addr(*b_);
    EXPECT_TRUE(answers(a, 8090, "stack-page\n")) << a_->err();
    EXPECT_TRUE(answers(b, 8090, "stack-page\n")) << b_->err();

    r = cli({"stack", "rm", "st"});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_TRUE(wait_until(
        [&] {
            return docker({"network", "inspect", "st_back"}).status != 0;
        },
        60s))
        << docker({"network", "ls"}).out;
    EXPECT_EQ(docker({"network", "inspect", "shared"}).status, 0);
}

}  // namespace

// A second agent started in the network namespace of a running one (a second run dir, or the
// unit's agent started again by hand) ends at once, before it touches anything: bridges, VXLAN
// devices and COFFER-* chains are named alike by every agent, and it would take the running
// one's for leftovers of its own.
TEST_F(NetworksE2E, ASecondAgentInTheNamespaceOfARunningOneLeavesItsNetworksAlone) {
    // Stands in for a network of the running agent's: what leftovers removal takes.
    const std::string bridge = "cfb0123456789";
    ASSERT_EQ(a_ns_->ip({"link", "add", bridge, "type", "bridge"}), "");
    auto second = make_agent(*a_ns_, "node-c");
    second->start(token("worker"));
    EXPECT_TRUE(wait_until(
        [&] {
            return second->err().find("another coffer-agent runs in this network namespace") !=
                   std::string::npos;
        },
        30s))
        << second->err();
    EXPECT_NE(second->stop(), std::optional<int>(0)) << "it ended, and not well";
    EXPECT_EQ(a_ns_->ip({"link", "show", bridge}), "") << "the running agent's bridge is kept";
    EXPECT_EQ(a_ns_->ip({"link", "del", bridge}), "");
    EXPECT_EQ(node_state(a_->node_id()), "ready");
}
