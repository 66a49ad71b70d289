// `coffer stack` against cofferd-test (fake agents): deploy, an unchanged redeploy that updates
// nothing, --prune, rm, all or nothing, and the same file deployed by `docker stack deploy`
// storing the same specs.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <algorithm>
#include <fstream>

#include "harness.h"
#include "hooked_daemon.h"

using namespace coffer;
using namespace coffer::test;
namespace json = boost::json;

namespace {

class Stack : public HookedDaemonTest {
  protected:
    void SetUp() override { start_daemon(); }
    std::string write(const std::string& name, const std::string& text) {
        auto p = (dir_.path() / name).string();
        std::ofstream(p) << text;
        return p;
    }
    json::value get(const std::string& path) {
        auto r = request("GET", "/v1.41" + path);
        EXPECT_EQ(r.status, 200) << path << " " << r.body;
        return json::parse(r.body);
    }
    json::value services(const std::string& stack) {
        return get("/services?filters=%7B%22label%22%3A%7B%22com.docker.stack.namespace%3D" +
                   stack + "%22%3Atrue%7D%7D");
    }
};

const char* stack_yml = R"(version: "3.8"
services:
  app:
    image: localbusybox:1
    command: ["sleep", "3600"]
    environment: [A=1]
    deploy: {replicas: 1, resources: {limits: {memory: 64M}}, labels: {tier: web}}
    secrets:
      - filesec
      - source: filesec
        target: other
        uid: "1000"
        gid: "1000"
        mode: 0400
  extra:
    image: localbusybox:1
    command: ["sleep", "3600"]
secrets:
  filesec: {file: ./x.txt, labels: {k: v}}
)";

TEST_F(Stack, DeployRedeployPruneRemove) {
    write("x.txt", "stack-file-secret");
    auto f = write("stack.yml", stack_yml);
    auto r = cli({"stack", "deploy", "-c", f, "--resolve-image", "never", "app"});
    ASSERT_EQ(r.status, 0) << r.err;
    auto list = services("app");
    ASSERT_EQ(list.as_array().size(), 2u);
    auto secret = get("/secrets/app_filesec");
    EXPECT_EQ(secret.at("Spec").at("Labels"),
              (json::object{{"k", "v"}, {"com.docker.stack.namespace", "app"}}));
    // The manager writes each service's virtual IPs once it has allocated them: a write of
    // its own, not an update, so the versions are taken after it.
    ASSERT_TRUE(wait_until([&] {
        auto now = services("app");
        for (const auto& s : now.as_array()) {
            const auto* e = s.as_object().if_contains("Endpoint");
            const auto* v = e ? e->as_object().if_contains("VirtualIPs") : nullptr;
            if (!v || v->as_array().empty()) return false;
        }
        return true;
    }));
    list = services("app");
    std::map<std::string, std::int64_t> versions;
    for (const auto& s : list.as_array())
        versions[std::string(s.at("Spec").at("Name").as_string())] =
            s.at("Version").at("Index").as_int64();

    // Unchanged: no service is updated.
    r = cli({"stack", "deploy", "-c", f, "--resolve-image", "never", "app"});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.out.find("Service app_app is unchanged"), std::string::npos) << r.out;
    auto again = services("app");
    for (const auto& s : again.as_array()) {
        EXPECT_EQ(s.at("Version").at("Index").as_int64(),
                  versions[std::string(s.at("Spec").at("Name").as_string())])
            << r.out;
        EXPECT_FALSE(s.as_object().contains("PreviousSpec")) << json::serialize(s);
    }

    // A changed secret file rotates the secret to a new version; the services are not updated
    // (their tasks get the version by their update mode); the same bytes again add none.
    write("x.txt", "other bytes");
    r = cli({"stack", "deploy", "-c", f, "--resolve-image", "never", "app"});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.out.find("Rotating secret app_filesec to version 2"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("Service app_app is unchanged"), std::string::npos) << r.out;
    auto rotated = get("/secrets/app_filesec");
    EXPECT_EQ(rotated.at("CofferVersions").as_array().size(), 2u) << json::serialize(rotated);
    EXPECT_EQ(json::serialize(rotated).find("other bytes"), std::string::npos);
    r = cli({"stack", "deploy", "-c", f, "--resolve-image", "never", "app"});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out.find("Rotating"), std::string::npos) << r.out;
    EXPECT_EQ(get("/secrets/app_filesec").at("CofferVersions").as_array().size(), 2u);
    // x-coffer-update sets the service's update mode for its secrets.
    std::string live(stack_yml);
    live.replace(live.find("      - filesec\n"), 16,
                 "      - {source: filesec, x-coffer-update: live}\n");
    auto fl = write("live.yml", live);
    r = cli({"stack", "deploy", "-c", fl, "--resolve-image", "never", "app"});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(get("/services/app_app").at("Spec").at("Labels").at("coffer.secret-update"), "live");
    ASSERT_EQ(cli({"stack", "deploy", "-c", f, "--resolve-image", "never", "app"}).status, 0);

    // --prune removes the service no longer in the file.
    std::string smaller(stack_yml);
    smaller = smaller.substr(0, smaller.find("  extra:")) +
              "secrets:\n  filesec: {file: ./x.txt, labels: {k: v}}\n";
    auto f2 = write("small.yml", smaller);
    r = cli({"stack", "deploy", "-c", f2, "--prune", "--resolve-image", "never", "app"});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.out.find("Removing service app_extra"), std::string::npos) << r.out;
    EXPECT_EQ(services("app").as_array().size(), 1u);

    r = cli({"stack", "ls"});
    EXPECT_NE(r.out.find("app"), std::string::npos) << r.out;
    r = cli({"stack", "services", "app"});
    EXPECT_NE(r.out.find("app_app"), std::string::npos) << r.out;

    // rm: services and the stack's secret; an external secret stays.
    r = cli({"stack", "rm", "app"});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(services("app").as_array().size(), 0u);
    EXPECT_EQ(request("GET", "/v1.41/secrets/app_filesec").status, 404);
}

TEST_F(Stack, ABadFileCreatesNothing) {
    write("x.txt", "s");
    auto f = write("bad.yml", R"(services:
  a:
    image: localbusybox:1
    secrets: [filesec, nosuch]
  b:
    image: localbusybox:1
    deploy: {mode: sideways}
secrets:
  filesec: {file: ./x.txt}
  ext: {external: true}
  missing: {file: ./missing.txt}
)");
    auto r = cli({"stack", "deploy", "-c", f, "app"});
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.err.find("bad.yml:4: service \"a\": undefined secret \"nosuch\""),
              std::string::npos)
        << r.err;
    EXPECT_NE(r.err.find("unknown mode: sideways"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("missing.txt"), std::string::npos) << r.err;
    EXPECT_EQ(get("/services").as_array().size(), 0u);
    EXPECT_EQ(get("/secrets").as_array().size(), 0u);
    // Valid file, missing external secret: refused before anything is created.
    auto g = write("ext.yml", R"(services:
  a:
    image: localbusybox:1
    secrets: [filesec, ext]
secrets:
  filesec: {file: ./x.txt}
  ext: {external: true}
)");
    r = cli({"stack", "deploy", "-c", g, "--resolve-image", "never", "app"});
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.err.find("secret not found: ext (external)"), std::string::npos) << r.err;
    EXPECT_EQ(get("/services").as_array().size(), 0u);
    EXPECT_EQ(get("/secrets").as_array().size(), 0u);
}

// Names and IDs differ between the two stacks; everything else must be the same.
json::value without_names(json::value v, const std::string& stack) {
    if (v.is_object()) {
        json::object out;
        for (auto& [k, x] : v.as_object()) {
            if (k == "SecretID" || k == "ConfigID" || k == "ID" || k == "Version" ||
                k == "CreatedAt" || k == "UpdatedAt")
                continue;
            out[k] = without_names(x, stack);
        }
        return out;
    }
    if (v.is_array()) {
        json::array out;
        for (auto& x : v.as_array()) out.push_back(without_names(x, stack));
        return out;
    }
    if (v.is_string()) {
        std::string s(v.as_string());
        if (s.starts_with(stack + "_")) s = "STACK_" + s.substr(stack.size() + 1);
        if (s == stack) s = "STACK";
        return json::string(s);
    }
    return v;
}

TEST_F(Stack, SameSpecsAsDockerStackDeploy) {
    if (!have_docker()) GTEST_SKIP() << "no docker CLI";
    write("x.txt", "stack-file-secret");
    auto f = write("stack.yml", stack_yml);
    auto r = cli({"stack", "deploy", "-c", f, "--resolve-image", "never", "cof"});
    ASSERT_EQ(r.status, 0) << r.err;
    auto d = docker({"stack", "deploy", "-c", f, "--resolve-image", "never", "dock"});
    ASSERT_EQ(d.status, 0) << d.err;
    for (std::string svc : {"app", "extra"}) {
        auto a = get("/services/cof_" + svc + "?insertDefaults=false").at("Spec");
        auto b = get("/services/dock_" + svc + "?insertDefaults=false").at("Spec");
        // Both store network attachments by ID: compare them by the network's name.
        for (auto* spec : {&a, &b})
            if (auto* nets = spec->at("TaskTemplate").as_object().if_contains("Networks"))
                for (auto& n : nets->as_array())
                    n.as_object()["Target"] =
                        get("/networks/" + std::string(n.at("Target").as_string())).at("Name");
        auto ca = without_names(a, "cof"), cb = without_names(b, "dock");
        // The docker CLI orders references to one secret by target in map order, which
        // changes from run to run: compare both sorted by name, then target.
        for (auto* spec : {&ca, &cb}) {
            auto& cs = spec->as_object()["TaskTemplate"].as_object()["ContainerSpec"].as_object();
            for (std::string key : {"Secrets", "Configs"})
                if (auto* refs = cs.if_contains(key)) {
                    auto& arr = refs->as_array();
                    auto order = [&](const json::value& x) {
                        return std::pair(x.at(key.substr(0, key.size() - 1) + "Name").as_string(),
                                         x.at("File").at("Name").as_string());
                    };
                    std::sort(arr.begin(), arr.end(),
                              [&](const json::value& x, const json::value& y) {
                                  return order(x) < order(y);
                              });
                }
        }
        for (const auto& [k, v] : cb.as_object())
            EXPECT_EQ(ca.as_object()[k], v)
                << svc << " " << k << ": " << json::serialize(ca.as_object()[k]) << " vs "
                << json::serialize(v);
        EXPECT_EQ(ca.as_object().size(), cb.as_object().size());
    }
    auto sa = get("/secrets/cof_filesec").at("Spec");
    auto sb = get("/secrets/dock_filesec").at("Spec");
    EXPECT_EQ(without_names(sa, "cof"), without_names(sb, "dock"));
}

}  // namespace
