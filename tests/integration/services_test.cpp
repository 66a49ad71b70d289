// Services end to end: a real cofferd built with test hooks (two registered nodes and fake agents
// that report every assigned task running), driven by the docker CLI, the coffer CLI and raw HTTP.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <cstdlib>
#include <fstream>

#include "coffer/crypto/encoding.h"
#include "coffer/net/http.h"
#include "coffer/net/http_client.h"
#include "harness.h"
#include "hooked_daemon.h"

using namespace coffer;
using namespace coffer::test;
namespace json = boost::json;

namespace {

class Services : public HookedDaemonTest {
  protected:
    void SetUp() override { start_daemon(); }

    json::value get(std::string_view target) {
        auto r = request("GET", target);
        EXPECT_EQ(r.status, 200) << r.body;
        return json::parse(r.body);
    }
    std::string secret(const std::string& name) {
        auto r = request(
            "POST", "/secrets/create",
            json::serialize(json::object{
                {"Name", name}, {"Data", crypto::base64_encode(std::vector<std::uint8_t>{'x'})}}));
        EXPECT_EQ(r.status, 201) << r.body;
        return std::string(json::parse(r.body).at("ID").as_string());
    }
    // The body `docker service create` sends, for a service named name using secret refs.
    std::string body(const std::string& name, const json::array& secrets) {
        return json::serialize(json::object{
            {"Name", name},
            {"Labels", json::object{}},
            {"TaskTemplate",
             json::object{
                 {"ContainerSpec", json::object{{"Image", "localbusybox:1"},
                                                {"Args", json::array{"sleep", "3600"}},
                                                {"Init", false},
                                                {"DNSConfig", json::object{}},
                                                {"Secrets", secrets}}},
                 {"Resources", json::object{{"Limits", json::object{{"MemoryBytes", 67108864}}},
                                            {"Reservations", json::object{}}}},
                 {"Placement", json::object{}},
                 {"ForceUpdate", 0}}},
            {"Mode", json::object{{"Replicated", json::object{{"Replicas", 2}}}}},
            {"EndpointSpec", json::object{{"Mode", "vip"}}}});
    }
    json::object ref(const std::string& id, const std::string& name, const std::string& target) {
        return json::object{
            {"File", json::object{{"Name", target}, {"UID", "0"}, {"GID", "0"}, {"Mode", 292}}},
            {"SecretID", id},
            {"SecretName", name}};
    }
    bool replicas_running(const std::string& service, int n) {
        return wait_until([&] {
            auto v = get("/services?status=true");
            for (const auto& s : v.as_array())
                if (s.at("Spec").at("Name") == service.c_str())
                    return s.at("ServiceStatus").at("RunningTasks").as_int64() == n;
            return false;
        });
    }
};

std::string message(const net::ClientResponse& r) {
    return std::string(json::parse(r.body).at("message").as_string());
}

}  // namespace

TEST_F(Services, ApiRefusesWhatSwarmRefuses) {
    auto s1 = secret("s1");
    auto created = request("POST", "/v1.41/services/create",
                           body("web", json::array{ref(s1, "s1", "s1"), ref(s1, "s1", "alt")}));
    ASSERT_EQ(created.status, 201) << created.body;
    auto id = std::string(json::parse(created.body).at("ID").as_string());

    auto dup = request("POST", "/services/create", body("web", {}));
    EXPECT_EQ(dup.status, 409);
    EXPECT_EQ(message(dup), "name conflicts with an existing object: service web already exists");

    auto missing =
        request("POST", "/services/create",
                body("api", json::array{ref("nosuchsecretid0000000000a", "nosuch", "x")}));
    EXPECT_EQ(missing.status, 400);
    EXPECT_EQ(message(missing), "secret not found: nosuch");

    auto conflicting = request("POST", "/services/create",
                               body("api", json::array{ref(s1, "s1", "x"), ref(s1, "s2", "x")}));
    EXPECT_EQ(conflicting.status, 400);
    EXPECT_EQ(message(conflicting),
              "secret references 's1' and 's2' have a conflicting target: 'x'");

    auto in_use = request("DELETE", "/secrets/s1");
    EXPECT_EQ(in_use.status, 400);
    EXPECT_EQ(message(in_use), "secret 's1' is in use by the following service: web");

    auto svc = get("/services/web?insertDefaults=false");
    auto version = svc.at("Version").at("Index").to_number<std::uint64_t>();
    auto stale = request("POST", fmt::format("/services/{}/update?version={}", id, version - 1),
                         body("web", {}));
    EXPECT_EQ(stale.status, 409);
    EXPECT_EQ(message(stale), "update out of sequence");
    auto gone = request("POST", fmt::format("/services/{}/update?version={}", id, version),
                        body("web", json::array{ref("nosuchsecretid0000000000a", "a", "a"),
                                                ref("nosuchsecretid0000000000b", "b", "b")}));
    EXPECT_EQ(gone.status, 400);
    EXPECT_EQ(message(gone), "secrets not found: a, b");
    auto ok = request("POST", fmt::format("/services/{}/update?version={}", id, version),
                      body("web", {}));
    EXPECT_EQ(ok.status, 200);
    EXPECT_EQ(ok.body, R"({"Warnings":null})");
    EXPECT_EQ(request("DELETE", "/secrets/s1").status, 204);

    auto defaults = get("/services/web?insertDefaults=true");
    EXPECT_EQ(defaults.at("Spec").at("UpdateConfig").at("Order"), "stop-first");
    EXPECT_EQ(defaults.at("Spec").at("EndpointSpec").at("Mode"), "vip");  // kept as given
    EXPECT_TRUE(defaults.as_object().contains("PreviousSpec"));

    // A reference Docker would not accept is refused before any registry is asked.
    auto bad_ref = request("GET", "/distribution/Local..Busybox:1/json");
    EXPECT_EQ(bad_ref.status, 400);
    EXPECT_NE(bad_ref.body.find("Local..Busybox"), std::string::npos) << bad_ref.body;
    auto rm = request("DELETE", "/services/web");
    EXPECT_EQ(rm.status, 200);
    EXPECT_TRUE(rm.body.empty());
    EXPECT_EQ(request("GET", "/services/web").status, 404);
}

// Docker's list flags take one value each: `--secret db IMAGE sh -c ...` is one secret, then the
// image and its command (with its own dashes).
TEST_F(Services, ListFlagsTakeOneValueEachAndTheCommandKeepsItsDashes) {
    ASSERT_EQ(cli({"secret", "create", "db", "-"}, "pw").status, 0);
    auto created = cli({"service", "create", "--name", "web", "--constraint", "node.role==worker",
                        "--secret", "db", "-e", "A=1", "busybox:1", "sh", "-c", "echo hi"});
    ASSERT_EQ(created.status, 0) << created.err;
    auto inspect = cli({"service", "inspect", "web"});
    ASSERT_EQ(inspect.status, 0) << inspect.err;
    auto spec = json::parse(inspect.out).as_array().at(0).at("Spec").at("TaskTemplate");
    auto& c = spec.at("ContainerSpec");
    EXPECT_EQ(c.at("Image").as_string(), "busybox:1");
    EXPECT_EQ(c.at("Secrets").as_array().size(), 1u);
    EXPECT_EQ(c.at("Env").as_array().size(), 1u);
    EXPECT_EQ(spec.at("Placement").at("Constraints").as_array().size(), 1u);
    EXPECT_NE(inspect.out.find("\"-c\""), std::string::npos) << inspect.out;
    EXPECT_NE(inspect.out.find("echo hi"), std::string::npos) << inspect.out;
    auto update = cli({"service", "update", "--secret-rm", "db", "--env-add", "B=2", "web"});
    EXPECT_EQ(update.status, 0) << update.err;
}

TEST_F(Services, CofferCliCreatesWaitsUpdatesAndRemoves) {
    ASSERT_EQ(cli({"secret", "create", "db", "-"}, "pw").status, 0);
    auto created = cli({"service", "create", "--name", "web", "--secret",
                        "source=db,target=db_pass,mode=0400", "--replicas", "2", "--limit-memory",
                        "64m", "--detach=false", "--timeout", "30", "busybox:1", "sleep", "3600"});
    ASSERT_EQ(created.status, 0) << created.err;
    EXPECT_NE(created.out.find("converged"), std::string::npos) << created.out;
    auto ls = cli({"service", "ls"});
    EXPECT_NE(ls.out.find("2/2"), std::string::npos) << ls.out;

    auto refused = cli({"secret", "rm", "db"});
    EXPECT_EQ(refused.status, 1);
    EXPECT_NE(refused.err.find("secret 'db' is in use by the following service: web"),
              std::string::npos)
        << refused.err;
    auto missing = cli({"service", "create", "--secret", "nosuch", "busybox:1"});
    EXPECT_EQ(missing.status, 1);
    EXPECT_NE(missing.err.find("secret not found: nosuch"), std::string::npos) << missing.err;

    auto updated =
        cli({"service", "update", "--secret-rm", "db", "--env-add", "A=1", "--detach", "web"});
    ASSERT_EQ(updated.status, 0) << updated.err;
    auto inspect = json::parse(cli({"service", "inspect", "web"}).out);
    const auto& cs = inspect.at(0).at("Spec").at("TaskTemplate").at("ContainerSpec");
    EXPECT_TRUE(cs.at("Secrets").as_array().empty());
    EXPECT_EQ(cs.at("Env").at(0), "A=1");
    EXPECT_TRUE(wait_until(
        [&] {
            return cli({"service", "inspect", "web"}).out.find("\"completed\"") !=
                   std::string::npos;
        },
        std::chrono::seconds(30)));
    EXPECT_EQ(cli({"secret", "rm", "db"}).status, 0);

    ASSERT_EQ(cli({"service", "scale", "web=3"}).status, 0);
    EXPECT_TRUE(replicas_running("web", 3));
    auto ps = cli({"service", "ps", "web"});
    EXPECT_NE(ps.out.find("web.3"), std::string::npos) << ps.out;
    EXPECT_NE(ps.out.find("\\_ web.1"), std::string::npos)
        << ps.out;  // the replaced task, as history

    auto nodes = cli({"node", "ls"});
    EXPECT_NE(nodes.out.find("node-a"), std::string::npos) << nodes.out;
    ASSERT_EQ(cli({"node", "update", "--availability", "drain", "node-a"}).status, 0);
    EXPECT_TRUE(wait_until([&] {
        auto tasks =
            get("/tasks?filters=" + net::percent_encode(R"({"desired-state":{"running":true}})"));
        for (const auto& t : tasks.as_array())
            if (t.at("Status").at("State") != "running") return false;
        return tasks.as_array().size() == 3;
    }));
    auto refused_rm = cli({"node", "rm", "node-b"});
    EXPECT_EQ(refused_rm.status, 1);
    EXPECT_NE(refused_rm.err.find("is not down and can't be removed"), std::string::npos)
        << refused_rm.err;
    EXPECT_EQ(cli({"service", "rm", "web"}).status, 0);
}

TEST_F(Services, AServiceWithoutANameGetsOneAndDashDIsAFlag) {
    // `-d` must not swallow the image, and a service without --name is named for the user.
    auto created = cli({"service", "create", "-d", "busybox:1", "sh", "-c", "sleep 3600"});
    ASSERT_EQ(created.status, 0) << created.err;
    auto id = created.out.substr(0, created.out.find('\n'));
    auto got = request("GET", "/services/" + id);
    ASSERT_EQ(got.status, 200) << got.body;
    auto spec = json::parse(got.body).at("Spec");
    auto name = std::string(spec.at("Name").as_string());
    EXPECT_NE(name.find('_'), std::string::npos) << name;
    EXPECT_EQ(spec.at("TaskTemplate").at("ContainerSpec").at("Image").as_string(), "busybox:1");
}

TEST_F(Services, DockerServiceCommandsWork) {
    if (!have_docker()) GTEST_SKIP() << "no docker CLI on this machine";
    ASSERT_EQ(docker({"secret", "create", "s1", "-"}, "x").status, 0);
    ASSERT_EQ(docker({"secret", "create", "s3", "-"}, "y").status, 0);
    auto created =
        docker({"service", "create", "--detach", "--no-resolve-image", "--name", "web", "--secret",
                "s1", "--secret", "source=s1,target=alt,uid=1000,gid=1000,mode=0400", "--replicas",
                "2", "--limit-memory", "64m", "localbusybox:1", "sleep", "3600"});
    ASSERT_EQ(created.status, 0) << created.err;
    EXPECT_EQ(created.out.size(), 26u) << created.out;
    EXPECT_TRUE(replicas_running("web", 2));

    // Without --detach the CLI polls services, tasks and nodes until the tasks run and are stable.
    auto updated = docker({"service", "update", "--secret-add", "s3", "web"});
    ASSERT_EQ(updated.status, 0) << updated.err;
    EXPECT_NE(updated.out.find("converged"), std::string::npos) << updated.out;

    auto ls = docker({"service", "ls"});
    EXPECT_NE(ls.out.find("web"), std::string::npos);
    EXPECT_NE(ls.out.find("2/2"), std::string::npos) << ls.out;
    auto ps = docker({"service", "ps", "web"});
    ASSERT_EQ(ps.status, 0) << ps.err;
    EXPECT_NE(ps.out.find("node-"), std::string::npos) << ps.out;
    EXPECT_NE(ps.out.find("\\_ web.1"), std::string::npos) << ps.out;
    auto inspect = docker({"service", "inspect", "web"});
    ASSERT_EQ(inspect.status, 0) << inspect.err;
    auto v = json::parse(inspect.out);
    EXPECT_EQ(
        v.at(0).at("Spec").at("TaskTemplate").at("ContainerSpec").at("Secrets").as_array().size(),
        3u);
    EXPECT_EQ(v.at(0).at("UpdateStatus").at("State"), "completed");
    auto pretty = docker({"service", "inspect", "--pretty", "web"});
    EXPECT_NE(pretty.out.find("Memory:"), std::string::npos) << pretty.out;

    auto in_use = docker({"secret", "rm", "s1"});
    EXPECT_EQ(in_use.status, 1);
    EXPECT_NE(in_use.err.find("secret 's1' is in use by the following service: web"),
              std::string::npos)
        << in_use.err;
    auto removed = docker({"service", "update", "--detach", "--secret-rm", "s1", "web"});
    ASSERT_EQ(removed.status, 0) << removed.err;
    EXPECT_EQ(docker({"secret", "rm", "s1"}).status, 0);

    auto missing = docker({"service", "create", "--detach", "--no-resolve-image", "--secret",
                           "nosuch", "localbusybox:1"});
    EXPECT_EQ(missing.status, 1);
    EXPECT_NE(missing.err.find("secret not found: nosuch"), std::string::npos) << missing.err;
    auto nodes = docker({"node", "ls"});
    EXPECT_NE(nodes.out.find("node-a"), std::string::npos) << nodes.out;

    auto rm = docker({"service", "rm", "web"});
    EXPECT_EQ(rm.status, 0) << rm.err;
    EXPECT_EQ(rm.out, "web\n");
}

TEST_F(Services, DockerStackDeployAndRemove) {
    if (!have_docker()) GTEST_SKIP() << "no docker CLI on this machine";
    ASSERT_EQ(docker({"secret", "create", "ext1", "-"}, "e").status, 0);
    {
        std::ofstream(dir_.path() / "x.txt") << "stack-file-secret";
        std::ofstream(dir_.path() / "stack.yml") << R"(version: "3.8"
services:
  app:
    image: localbusybox:1
    command: ["sleep", "3600"]
    deploy: {replicas: 1, resources: {limits: {memory: 64M}}}
    secrets:
      - filesec
      - source: ext1
        target: ext_target
        uid: "1000"
        gid: "1000"
        mode: 0400
secrets:
  filesec: {file: ./x.txt}
  ext1: {external: true}
)";
    }
    auto stack_file = (dir_.path() / "stack.yml").string();
    auto deploy = docker({"stack", "deploy", "--resolve-image", "never", "-c", stack_file, "app"});
    ASSERT_EQ(deploy.status, 0) << deploy.err;
    EXPECT_NE(deploy.out.find("Creating service app_app"), std::string::npos) << deploy.out;
    auto again = docker({"stack", "deploy", "--resolve-image", "never", "-c", stack_file, "app"});
    ASSERT_EQ(again.status, 0) << again.err;
    EXPECT_NE(again.out.find("Updating service app_app"), std::string::npos) << again.out;

    auto ls = docker({"stack", "ls"});
    EXPECT_NE(ls.out.find("app"), std::string::npos) << ls.out;
    EXPECT_TRUE(replicas_running("app_app", 1));
    auto services = docker({"stack", "services", "app"});
    EXPECT_NE(services.out.find("1/1"), std::string::npos) << services.out;
    auto ps = docker({"stack", "ps", "app"});
    ASSERT_EQ(ps.status, 0) << ps.err;
    EXPECT_NE(ps.out.find("app_app.1"), std::string::npos) << ps.out;

    auto rm = docker({"stack", "rm", "app"});
    ASSERT_EQ(rm.status, 0) << rm.err;
    EXPECT_NE(rm.out.find("Removing secret app_filesec"), std::string::npos) << rm.out;
    auto secrets = docker({"secret", "ls"});
    EXPECT_EQ(secrets.out.find("app_filesec"), std::string::npos) << secrets.out;
    EXPECT_NE(secrets.out.find("ext1"), std::string::npos) << secrets.out;
}

TEST_F(Services, DockerStackDeployWaitsForAServiceWithoutReplicasAndCreatesItsNetwork) {
    if (!have_docker()) GTEST_SKIP() << "no docker CLI on this machine";
    std::ofstream(dir_.path() / "plain.yml") << R"(version: "3.8"
services:
  app:
    image: localbusybox:1
    command: ["sleep", "3600"]
)";
    auto file = (dir_.path() / "plain.yml").string();
    // --detach=false reads the stored mode back: a service stored without Replicas failed here
    // with "unrecognized service mode".
    auto deploy = docker(
        {"stack", "deploy", "--detach=false", "--resolve-image", "never", "-c", file, "plain"});
    ASSERT_EQ(deploy.status, 0) << deploy.out << deploy.err;
    EXPECT_EQ(deploy.err.find("unrecognized service mode"), std::string::npos) << deploy.err;
    EXPECT_TRUE(replicas_running("plain_app", 1));
    auto mode =
        docker({"service", "inspect", "-f", "{{.Spec.Mode.Replicated.Replicas}}", "plain_app"});
    EXPECT_EQ(mode.out, "1\n") << mode.err;
    // The stack attaches the service to its default network, which it created: the service's
    // attachment names it, and a redeploy warns of nothing about networks.
    auto net = docker({"network", "inspect", "-f", "{{.Id}} {{.Driver}}", "plain_default"});
    ASSERT_EQ(net.status, 0) << net.err;
    auto id = net.out.substr(0, net.out.find(' '));
    EXPECT_EQ(net.out.substr(net.out.find(' ') + 1), "overlay\n");
    auto target = docker({"service", "inspect", "-f",
                          "{{range .Spec.TaskTemplate.Networks}}{{.Target}}{{end}}", "plain_app"});
    EXPECT_EQ(target.out, id + "\n") << target.err;
    auto again = docker({"stack", "deploy", "--resolve-image", "never", "-c", file, "plain"});
    ASSERT_EQ(again.status, 0) << again.err;
    EXPECT_EQ(again.err.find("Networks"), std::string::npos) << again.err;
    EXPECT_EQ(docker({"stack", "rm", "plain"}).status, 0);
}
