// Networks across a real cluster (cluster_fixture.h): a server service on node-a guards a page
// with a password from its secret; a client service on node-b, on the same overlay network,
// fetches it by the service's name with the same secret; a client on another network cannot.
#include <gtest/gtest.h>

#include <fmt/format.h>

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
    // The manager's namespace routes between the nodes (their VXLAN traffic crosses it).
    ASSERT_EQ(run_program({"nsenter", "--net=" + manager_ns_->path(), "sysctl", "-qw",
                           "net.ipv4.ip_forward=1"})
                  .status,
              0);
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

}  // namespace
