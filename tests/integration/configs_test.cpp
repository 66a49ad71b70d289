// Configs end to end on cofferd-test (two registered nodes, fake agents that report every
// assigned task running): the docker CLI's config commands, services that reference configs, a
// stack with a configs section, and the API's refusals.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <fstream>
#include <map>

#include "coffer/crypto/encoding.h"
#include "coffer/net/http.h"
#include "coffer/net/http_client.h"
#include "harness.h"
#include "hooked_daemon.h"

using namespace coffer;
using namespace coffer::test;
namespace json = boost::json;

namespace {

class Configs : public HookedDaemonTest {
  protected:
    void SetUp() override { start_daemon(); }

    static std::string b64(std::string_view text) {
        return crypto::base64_encode(
            {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()});
    }
    static std::string message(const net::ClientResponse& r) {
        return std::string(json::parse(r.body).at("message").as_string());
    }
    json::value inspect(const std::string& what) {
        auto r = docker({"config", "inspect", what});
        EXPECT_EQ(r.status, 0) << r.err;
        return json::parse(r.out);
    }
};

}  // namespace

TEST_F(Configs, DockerConfigCommandsCreateListInspectAndRemove) {
    if (!have_docker()) GTEST_SKIP() << "no docker CLI on this machine";
    auto created =
        docker({"config", "create", "--label", "env=prod", "app.conf", "-"}, "listen 8080\n");
    ASSERT_EQ(created.status, 0) << created.err;
    auto id = created.out.substr(0, created.out.find('\n'));
    EXPECT_EQ(id.size(), 25u) << created.out;

    auto v = inspect("app.conf");
    ASSERT_EQ(v.as_array().size(), 1u);
    const auto& c = v.at(0);
    EXPECT_EQ(c.at("ID"), id.c_str());
    EXPECT_EQ(c.at("Spec").at("Name"), "app.conf");
    EXPECT_EQ(c.at("Spec").at("Labels").at("env"), "prod");
    // Unlike a secret's, a config's data is shown.
    EXPECT_EQ(c.at("Spec").at("Data"), b64("listen 8080\n").c_str());
    auto pretty = docker({"config", "inspect", "--pretty", "app.conf"});
    ASSERT_EQ(pretty.status, 0) << pretty.err;
    EXPECT_NE(pretty.out.find("listen 8080"), std::string::npos) << pretty.out;

    auto twice = docker({"config", "create", "app.conf", "-"}, "other");
    EXPECT_EQ(twice.status, 1);
    EXPECT_NE(twice.err.find("config app.conf already exists"), std::string::npos) << twice.err;

    ASSERT_EQ(docker({"config", "create", "other", "-"}, "x").status, 0);
    auto ls = docker({"config", "ls"});
    ASSERT_EQ(ls.status, 0) << ls.err;
    EXPECT_NE(ls.out.find("app.conf"), std::string::npos) << ls.out;
    EXPECT_NE(ls.out.find("other"), std::string::npos) << ls.out;
    auto filtered = docker({"config", "ls", "-q", "--filter", "label=env=prod"});
    EXPECT_EQ(filtered.out, id + "\n");
    auto by_name = docker({"config", "ls", "--format", "{{.Name}}", "--filter", "name=oth"});
    EXPECT_EQ(by_name.out, "other\n");

    auto rm = docker({"config", "rm", "app.conf", "other"});
    ASSERT_EQ(rm.status, 0) << rm.err;
    EXPECT_EQ(rm.out, "app.conf\nother\n");
    auto gone = docker({"config", "inspect", "app.conf"});
    EXPECT_EQ(gone.status, 1);
    EXPECT_NE(gone.err.find("config app.conf not found"), std::string::npos) << gone.err;
    EXPECT_EQ(docker({"config", "ls", "-q"}).out, "");
}

TEST_F(Configs, ApiRefusesWhatSwarmRefuses) {
    auto empty = request("POST", "/configs/create", R"({"Name":"e"})");
    EXPECT_EQ(empty.status, 400);
    EXPECT_EQ(message(empty), "config data must be larger than 0 and less than 1024000 bytes");
    auto tmpl = request(
        "POST", "/configs/create",
        json::serialize(json::object{
            {"Name", "t"}, {"Data", b64("x")}, {"Templating", json::object{{"Name", "golang"}}}}));
    EXPECT_EQ(tmpl.status, 400);
    EXPECT_EQ(message(tmpl), "config templating is not supported");
    auto bad_name = request("POST", "/configs/create",
                            json::serialize(json::object{{"Name", "-x"}, {"Data", b64("x")}}));
    EXPECT_EQ(bad_name.status, 400);
    EXPECT_EQ(request("GET", "/configs").body, "[]");

    // A config bigger than a secret may be: Docker allows up to 1,023,999 bytes.
    std::string big(600 * 1024, 'a');
    auto large = request("POST", "/configs/create",
                         json::serialize(json::object{{"Name", "big"}, {"Data", b64(big)}}));
    EXPECT_EQ(large.status, 201) << large.body;

    auto made = request("POST", "/configs/create",
                        json::serialize(json::object{{"Name", "c"}, {"Data", b64("one")}}));
    ASSERT_EQ(made.status, 201) << made.body;
    auto id = std::string(json::parse(made.body).at("ID").as_string());
    auto version = [&] {
        auto r = request("GET", "/configs/" + id);
        return json::parse(r.body).at("Version").at("Index").to_number<std::uint64_t>();
    };
    auto changed = request("POST", fmt::format("/configs/{}/update?version={}", id, version()),
                           json::serialize(json::object{{"Name", "c"}, {"Data", b64("two")}}));
    EXPECT_EQ(changed.status, 400);
    EXPECT_EQ(message(changed), "only updates to Labels are allowed");
    auto renamed = request("POST", fmt::format("/configs/{}/update?version={}", id, version()),
                           json::serialize(json::object{{"Name", "d"}}));
    EXPECT_EQ(renamed.status, 400);
    auto labelled =
        request("POST", fmt::format("/configs/{}/update?version={}", id, version()),
                json::serialize(json::object{
                    {"Name", "c"}, {"Data", b64("one")}, {"Labels", json::object{{"k", "v"}}}}));
    EXPECT_EQ(labelled.status, 200) << labelled.body;
    auto after = json::parse(request("GET", "/configs/c").body);
    EXPECT_EQ(after.at("Spec").at("Labels").at("k"), "v");
    EXPECT_EQ(after.at("Spec").at("Data"), b64("one").c_str());
    auto stale = request("POST", fmt::format("/configs/{}/update?version=1", id),
                         json::serialize(json::object{{"Name", "c"}}));
    EXPECT_EQ(stale.status, 409);
    EXPECT_EQ(message(stale), "update out of sequence");

    // A secret and a config of the same name are different objects.
    auto secret = request("POST", "/secrets/create",
                          json::serialize(json::object{{"Name", "c"}, {"Data", b64("s")}}));
    EXPECT_EQ(secret.status, 201) << secret.body;
    EXPECT_EQ(request("GET", "/secrets/" + id).status, 404);

    // A runtime target (a credential spec) is refused, not ignored.
    auto runtime = request(
        "POST", "/services/create",
        fmt::format(R"({{"Name":"rt","TaskTemplate":{{"ContainerSpec":{{"Image":"localbusybox:1",
            "Configs":[{{"ConfigID":"{}","ConfigName":"c","Runtime":{{}}}}]}}}}}})",
                    id));
    EXPECT_EQ(runtime.status, 400);
    EXPECT_NE(message(runtime).find("runtime target"), std::string::npos) << runtime.body;
    auto missing = request("POST", "/services/create",
                           R"({"Name":"m","TaskTemplate":{"ContainerSpec":{"Image":"localbusybox:1",
            "Configs":[{"ConfigID":"nosuchid","ConfigName":"nosuch",
              "File":{"Name":"/x","UID":"0","GID":"0","Mode":292}}]}}})");
    EXPECT_EQ(missing.status, 400);
    EXPECT_EQ(message(missing), "config not found: nosuch");
}

TEST_F(Configs, DockerServicesMountConfigsAndProtectThem) {
    if (!have_docker()) GTEST_SKIP() << "no docker CLI on this machine";
    ASSERT_EQ(docker({"config", "create", "c1", "-"}, "one").status, 0);
    ASSERT_EQ(docker({"config", "create", "c2", "-"}, "two").status, 0);
    auto created =
        docker({"service", "create", "--detach", "--no-resolve-image", "--name", "web", "--config",
                "c1", "--config", "src=c2,target=/etc/app.conf,uid=1000,gid=1000,mode=0440",
                "localbusybox:1", "sleep", "3600"});
    ASSERT_EQ(created.status, 0) << created.err;
    auto spec = json::parse(docker({"service", "inspect", "web"}).out);
    const auto& refs =
        spec.at(0).at("Spec").at("TaskTemplate").at("ContainerSpec").at("Configs").as_array();
    ASSERT_EQ(refs.size(), 2u);
    // The docker CLI sends the references in no fixed order.
    const bool c1_first = refs[0].at("ConfigName") == "c1";
    const auto& c1 = refs[c1_first ? 0 : 1];
    const auto& c2 = refs[c1_first ? 1 : 0];
    EXPECT_EQ(c1.at("ConfigName"), "c1");
    EXPECT_EQ(c1.at("File").at("Name"), "c1");
    EXPECT_EQ(c2.at("ConfigName"), "c2");
    EXPECT_EQ(c2.at("File").at("Name"), "/etc/app.conf");
    EXPECT_EQ(c2.at("File").at("UID"), "1000");
    EXPECT_EQ(c2.at("File").at("Mode"), 0440);

    auto in_use = docker({"config", "rm", "c1"});
    EXPECT_EQ(in_use.status, 1);
    EXPECT_NE(in_use.err.find("config 'c1' is in use by the following service: web"),
              std::string::npos)
        << in_use.err;

    auto tasks_of_spec = [&] {
        return docker({"service", "ps", "-q", "--filter", "desired-state=running", "web"}).out;
    };
    auto before = tasks_of_spec();
    auto removed = docker({"service", "update", "--detach", "--config-rm", "c1", "web"});
    ASSERT_EQ(removed.status, 0) << removed.err;
    // The update rolls the task: the running one is a new task.
    EXPECT_TRUE(wait_until([&] {
        auto now = tasks_of_spec();
        return !now.empty() && now != before;
    }));
    auto after = json::parse(docker({"service", "inspect", "web"}).out);
    EXPECT_EQ(after.at(0)
                  .at("Spec")
                  .at("TaskTemplate")
                  .at("ContainerSpec")
                  .at("Configs")
                  .as_array()
                  .size(),
              1u);
    EXPECT_EQ(docker({"config", "rm", "c1"}).status, 0);
    auto added = docker({"service", "update", "--detach", "--config-add",
                         "source=c2,target=/etc/other.conf", "web"});
    ASSERT_EQ(added.status, 0) << added.err;
    auto missing = docker({"service", "update", "--detach", "--config-add", "nosuch", "web"});
    EXPECT_EQ(missing.status, 1);
    EXPECT_EQ(docker({"service", "rm", "web"}).status, 0);
    EXPECT_EQ(docker({"config", "rm", "c2"}).status, 0);
}

TEST_F(Configs, CofferCliConfigCommandsAndServiceFlags) {
    auto created = cli({"config", "create", "-l", "a=b", "app", "-"}, "hello");
    ASSERT_EQ(created.status, 0) << created.err;
    auto ls = cli({"config", "ls"});
    EXPECT_NE(ls.out.find("app"), std::string::npos) << ls.out;
    EXPECT_EQ(ls.out.find("DRIVER"), std::string::npos) << ls.out;
    auto v = json::parse(cli({"config", "inspect", "app"}).out);
    EXPECT_EQ(v.at(0).at("Spec").at("Data"), b64("hello").c_str());

    auto svc = cli({"service", "create", "--detach", "--name", "s", "--config",
                    "source=app,target=/etc/app,mode=0400", "localbusybox:1"});
    ASSERT_EQ(svc.status, 0) << svc.err;
    auto spec = json::parse(request("GET", "/services/s").body);
    const auto& refs = spec.at("Spec").at("TaskTemplate").at("ContainerSpec").at("Configs");
    ASSERT_EQ(refs.as_array().size(), 1u);
    EXPECT_EQ(refs.at(0).at("File").at("Name"), "/etc/app");
    EXPECT_EQ(refs.at(0).at("File").at("Mode"), 0400);
    EXPECT_EQ(cli({"config", "rm", "app"}).status, 1);
    auto rm = cli({"service", "update", "--detach", "--config-rm", "app", "s"});
    ASSERT_EQ(rm.status, 0) << rm.err;
    auto updated = json::parse(request("GET", "/services/s").body);
    EXPECT_TRUE(
        updated.at("Spec").at("TaskTemplate").at("ContainerSpec").at("Configs").as_array().empty());
    EXPECT_EQ(cli({"config", "rm", "app"}).status, 0);
}

TEST_F(Configs, DockerStackDeployCreatesAndRemovesItsConfigs) {
    if (!have_docker()) GTEST_SKIP() << "no docker CLI on this machine";
    ASSERT_EQ(docker({"config", "create", "ext1", "-"}, "e").status, 0);
    {
        std::ofstream(dir_.path() / "app.conf") << "stack-file-config";
        std::ofstream(dir_.path() / "stack.yml") << R"(version: "3.8"
services:
  app:
    image: localbusybox:1
    command: ["sleep", "3600"]
    configs:
      - fileconf
      - source: ext1
        target: /etc/ext.conf
        uid: "1000"
        gid: "1000"
        mode: 0440
configs:
  fileconf: {file: ./app.conf}
  ext1: {external: true}
)";
    }
    auto stack_file = (dir_.path() / "stack.yml").string();
    auto deploy = docker({"stack", "deploy", "--resolve-image", "never", "-c", stack_file, "st"});
    ASSERT_EQ(deploy.status, 0) << deploy.err;
    EXPECT_NE(deploy.out.find("Creating config st_fileconf"), std::string::npos) << deploy.out;
    auto conf = inspect("st_fileconf");
    EXPECT_EQ(conf.at(0).at("Spec").at("Labels").at("com.docker.stack.namespace"), "st");
    EXPECT_EQ(conf.at(0).at("Spec").at("Data"), b64("stack-file-config").c_str());
    // Deploying again updates the unchanged config (labels only) and the service.
    auto again = docker({"stack", "deploy", "--resolve-image", "never", "-c", stack_file, "st"});
    ASSERT_EQ(again.status, 0) << again.err;
    EXPECT_NE(again.out.find("Updating service st_app"), std::string::npos) << again.out;

    auto spec = json::parse(docker({"service", "inspect", "st_app"}).out);
    const auto& refs =
        spec.at(0).at("Spec").at("TaskTemplate").at("ContainerSpec").at("Configs").as_array();
    ASSERT_EQ(refs.size(), 2u);
    std::map<std::string, std::string> targets;
    for (const auto& r : refs)
        targets[std::string(r.at("ConfigName").as_string())] = r.at("File").at("Name").as_string();
    EXPECT_EQ(targets["ext1"], "/etc/ext.conf");
    EXPECT_EQ(targets["st_fileconf"], "fileconf");

    auto rm = docker({"stack", "rm", "st"});
    ASSERT_EQ(rm.status, 0) << rm.err;
    EXPECT_NE(rm.out.find("Removing config st_fileconf"), std::string::npos) << rm.out;
    auto configs = docker({"config", "ls"});
    EXPECT_EQ(configs.out.find("st_fileconf"), std::string::npos) << configs.out;
    EXPECT_NE(configs.out.find("ext1"), std::string::npos) << configs.out;
}
