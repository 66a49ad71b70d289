// Images from a registry across a real cluster (cluster_fixture.h): docker-registry with TLS from
// a test CA and htpasswd authentication runs in the manager's namespace; cofferd resolves tags
// to digests there and both agents pull from it, with the CA named by --registry-certs.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <fstream>

#include "cluster_fixture.h"
#include "registry_fixture.h"

using namespace coffer;
using namespace coffer::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

std::string base64(const std::string& text) {
    auto r = run_program({"base64", "-w0"}, text);
    return r.out;
}

// A docker config.json for host with user:password.
std::string config_json(const std::string& host, const std::string& user,
                        const std::string& password) {
    return fmt::format(R"({{"auths":{{"{}":{{"auth":"{}"}}}}}})", host,
                       base64(user + ":" + password));
}

// Every regular file under dir whose bytes hold needle.
std::vector<std::string> files_holding(const fs::path& dir, const std::string& needle) {
    std::vector<std::string> out;
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(
             dir, fs::directory_options::skip_permission_denied, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
        if (!it->is_regular_file(ec) || it->is_symlink(ec)) continue;
        if (read_file(it->path()).find(needle) != std::string::npos)
            out.push_back(it->path().string());
    }
    return out;
}

class RegistryE2E : public ClusterTest {
  protected:
    RegistryE2E() {
        manager_args_ = {"--registry-certs", certs().string()};
        agent_args_ = {"--registry-certs", certs().string()};
    }
    fs::path certs() { return dir_.path() / "certs.d"; }

    void SetUp() override {
        for (const auto* p : {"/usr/bin/docker-registry", "skopeo", "htpasswd", "openssl"})
            if (run_program({"sh", "-c", fmt::format("command -v {}", p)}).status != 0)
                GTEST_SKIP() << p << " is not installed";
        ClusterTest::SetUp();
        if (HasFatalFailure() || IsSkipped()) return;
        // On the manager's address, which both nodes route to.
        auto host = listen_.substr(0, listen_.rfind(':'));
        registry_ = std::make_unique<Registry>(dir_.path() / "registry", host, manager_ns_.get());
        ASSERT_EQ(registry_->error(), "");
        fs::create_directories(certs() / registry_->host());
        fs::copy_file(registry_->ca_cert(), certs() / registry_->host() / "ca.crt");
        ASSERT_EQ(registry_->push("oci:" + image_layout().string() + ":busybox:latest", "app:1"),
                  "");
        image_ = registry_->host() + "/app:1";
    }
    void TearDown() override {
        ClusterTest::TearDown();
        registry_.reset();
    }

    CliResult docker(const std::vector<std::string>& args) {
        std::vector<std::string> argv{"docker"};
        argv.insert(argv.end(), args.begin(), args.end());
        return run_program(argv, "",
                           {"DOCKER_HOST=" + daemon_->host(), "DOCKER_CONFIG=" + docker_config()});
    }
    std::string docker_config() { return (dir_.path() / "dc").string(); }
    // What `docker login` leaves: the registry's credentials in the docker CLI's config.json.
    void docker_login_state() {
        fs::create_directories(docker_config());
        std::ofstream(fs::path(docker_config()) / "config.json")
            << config_json(registry_->host(), registry_->user(), registry_->password());
    }
    // A coffer secret holding a docker config.json with user:password for the registry.
    void creds_secret(const std::string& name, const std::string& password) {
        auto r = cli({"secret", "create", name, "-"},
                     config_json(registry_->host(), registry_->user(), password));
        ASSERT_EQ(r.status, 0) << r.err;
    }
    std::string image_of(const boost::json::object& task) {
        return std::string(task.at("Spec").at("ContainerSpec").at("Image").as_string());
    }
    // The first task of the service that ended, once one has: its Status.Err.
    std::string refusal(const std::string& service) {
        std::string why;
        wait_until(
            [&] {
                for (const auto& t : tasks(service)) {
                    const auto& st = t.at("Status").as_object();
                    auto state = std::string(st.at("State").as_string());
                    if (state == "rejected" || state == "failed") {
                        why = st.contains("Err") ? std::string(st.at("Err").as_string()) : "?";
                        return true;
                    }
                }
                return false;
            },
            60s);
        return why;
    }
    // Every place the password must never reach, listed when it does.
    std::vector<std::string> leaks(const std::string& password) {
        const std::string encoded = base64(registry_->user() + ":" + password);
        std::vector<std::string> out;
        for (const auto& needle : {password, encoded}) {
            for (const auto& f : files_holding(dir_.path() / "data", needle)) out.push_back(f);
            if (daemon_->stdout_text().find(needle) != std::string::npos)
                out.push_back("cofferd's log");
            for (auto* agent : {a_.get(), b_.get()}) {
                if (agent->err().find(needle) != std::string::npos)
                    out.push_back(agent->hostname + "'s log");
                for (const auto& f : files_holding(agent->data, needle))
                    if (f.find("/images/") == std::string::npos) out.push_back(f);
                for (const auto& f : files_holding(agent->run, needle)) out.push_back(f);
            }
        }
        return out;
    }

    std::unique_ptr<Registry> registry_;
    std::string image_;
};

TEST_F(RegistryE2E, ATaggedImageRunsOnBothNodesAtOneDigestWithDockerLoginCredentialsKeptSealed) {
    docker_login_state();
    auto created = docker({"service", "create", "--detach", "--with-registry-auth", "--name", "app",
                           "--replicas", "2", "--replicas-max-per-node", "1", image_, "sh", "-c",
                           "trap 'exit 0' TERM; echo PULLED; sleep 3600 & wait"});
    ASSERT_EQ(created.status, 0) << created.err;
    ASSERT_TRUE(wait_converged("app", 2)) << a_->err() << b_->err();
    const auto digest = registry_->digest("app:1");
    ASSERT_FALSE(digest.empty());
    auto running_tasks = running("app");
    ASSERT_EQ(running_tasks.size(), 2u);
    for (const auto& t : running_tasks) EXPECT_EQ(image_of(t), image_ + "@" + digest);

    // The credentials: a sealed secret of the service's, named in its spec and nowhere shown.
    auto raw = docker({"service", "inspect", "app"});
    ASSERT_EQ(raw.status, 0) << raw.err;
    EXPECT_EQ(raw.out.find(registry_->password()), std::string::npos);
    auto svc = get("/services/app");
    ASSERT_TRUE(svc.is_object());
    const auto& auth =
        svc.at("Spec").at("TaskTemplate").at("ContainerSpec").at("CofferRegistryAuth");
    EXPECT_EQ(auth.at("SecretName"), "registry-auth.app");
    auto secret = get("/secrets/registry-auth.app");
    ASSERT_TRUE(secret.is_object());
    EXPECT_EQ(secret.at("Spec").at("Labels").at("io.coffer.registry-auth.service"), "app");
    // In use while the service is: refused.
    EXPECT_NE(docker({"secret", "rm", "registry-auth.app"}).status, 0);
    auto all_leaks = leaks(registry_->password());
    EXPECT_TRUE(all_leaks.empty()) << fmt::format("{}", fmt::join(all_leaks, "\n"));
    // Dropped on the nodes after the pull: neither agent holds them in memory.
    for (auto* agent : {a_.get(), b_.get()})
        EXPECT_TRUE(
            wait_until([&] { return !memory_contains(agent->pid(), registry_->password()); }, 30s))
            << agent->hostname;

    // The secret goes with the service.
    ASSERT_EQ(docker({"service", "rm", "app"}).status, 0);
    EXPECT_TRUE(wait_until([&] { return get("/secrets/registry-auth.app").is_null(); }, 10s));
}

TEST_F(RegistryE2E, CredentialsReachOnlyTheNodeThatPullsAndWrongOnesAreRefusedWithTheReason) {
    creds_secret("regcreds", registry_->password());
    auto r = cli({"service", "create", "--detach", "--name", "onlya", "--registry-auth-secret",
                  "regcreds", "--constraint", "node.hostname==node-a", image_, "sh", "-c",
                  "trap 'exit 0' TERM; sleep 3600 & wait"});
    ASSERT_EQ(r.status, 0) << r.err;
    ASSERT_TRUE(wait_converged("onlya", 1, a_->node_id())) << a_->err();
    EXPECT_EQ(image_of(running("onlya").at(0)), image_ + "@" + registry_->digest("app:1"));
    // The delivery record: node-a held the credentials in memory for the pull, never mounted
    // them, and dropped them once the task ran.
    EXPECT_TRUE(wait_until(
        [&] {
            auto h = get("/secrets/regcreds/history");
            if (!h.is_array() || h.as_array().size() != 1) return false;
            const auto& d = h.as_array()[0].as_object();
            return d.at("NodeID").as_string() == a_->node_id() && d.contains("SentAt") &&
                   !d.contains("MountedAt") && d.contains("RemovedAt");
        },
        30s))
        << boost::json::serialize(get("/secrets/regcreds/history"));
    // node-b runs nothing of it and was never sent the credentials.
    EXPECT_FALSE(memory_contains(b_->pid(), registry_->password()));
    EXPECT_EQ(b_->err().find("regcreds"), std::string::npos);
    auto all_leaks = leaks(registry_->password());
    EXPECT_TRUE(all_leaks.empty()) << fmt::format("{}", fmt::join(all_leaks, "\n"));

    // Wrong credentials: the task is refused with the registry's reason.
    const std::string wrong = random_password();
    creds_secret("wrongcreds", wrong);
    r = cli({"service", "create", "--detach", "--name", "wrong", "--registry-auth-secret",
             "wrongcreds", "--resolve-image", "never", image_, "true"});
    ASSERT_EQ(r.status, 0) << r.err;
    auto why = refusal("wrong");
    EXPECT_NE(why.find("pull access denied for " + image_), std::string::npos) << why;
    EXPECT_NE(why.find("authentication required"), std::string::npos) << why;
    EXPECT_EQ(why.find(wrong), std::string::npos);
    // None at all: the same.
    r = cli({"service", "create", "--detach", "--name", "anonymous", "--resolve-image", "never",
             image_, "true"});
    ASSERT_EQ(r.status, 0) << r.err;
    why = refusal("anonymous");
    EXPECT_NE(why.find("pull access denied for " + image_), std::string::npos) << why;
    EXPECT_TRUE(leaks(wrong).empty());
}

TEST_F(RegistryE2E, AMovedTagChangesNoTaskUntilTheServiceNamesTheImageAgain) {
    // The coffer CLI's --with-registry-auth reads the docker CLI's login state too.
    docker_login_state();
    ::setenv("DOCKER_CONFIG", docker_config().c_str(), 1);
    auto r = cli({"service", "create", "--detach", "--name", "moving", "--with-registry-auth",
                  "--no-healthcheck", image_, "sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"});
    ::unsetenv("DOCKER_CONFIG");
    ASSERT_EQ(r.status, 0) << r.err;
    ASSERT_TRUE(wait_converged("moving", 1)) << a_->err() << b_->err();
    const auto first = registry_->digest("app:1");
    const auto task = std::string(running("moving").at(0).at("ID").as_string());
    EXPECT_EQ(image_of(running("moving").at(0)), image_ + "@" + first);

    // The tag moves to another image.
    ASSERT_EQ(registry_->push("oci:" + image_layout().string() + ":healthcheck:latest", "app:1"),
              "");
    const auto second = registry_->digest("app:1");
    ASSERT_NE(first, second);
    // A forced update replaces the task, at the digest the service holds.
    r = cli({"service", "update", "--detach", "--force", "moving"});
    ASSERT_EQ(r.status, 0) << r.err;
    ASSERT_TRUE(wait_until(
        [&] {
            auto now = running("moving");
            return now.size() == 1 && now.at(0).at("ID").as_string() != task;
        },
        60s));
    EXPECT_EQ(image_of(running("moving").at(0)), image_ + "@" + first);
    // The credentials stayed with the service through the update that did not name them.
    auto auth = get("/services/moving")
                    .at("Spec")
                    .at("TaskTemplate")
                    .at("ContainerSpec")
                    .at("CofferRegistryAuth");
    EXPECT_EQ(auth.at("SecretName"), "registry-auth.moving");
    // Naming the image again resolves the tag anew.
    r = cli({"service", "update", "--detach", "--image", image_, "moving"});
    ASSERT_EQ(r.status, 0) << r.err;
    ASSERT_TRUE(wait_until(
        [&] {
            auto now = running("moving");
            return now.size() == 1 && image_of(now.at(0)) == image_ + "@" + second;
        },
        60s))
        << a_->err() << b_->err();
}

TEST_F(RegistryE2E, AStackDeployedWithRegistryAuthPullsAtOneDigestAndKeepsItsCredentials) {
    docker_login_state();
    const auto compose = dir_.path() / "stack.yml";
    std::ofstream(compose) << fmt::format(
        "services:\n"
        "  web:\n"
        "    image: {}\n"
        "    command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; sleep 3600 & wait\"]\n",
        image_);
    ::setenv("DOCKER_CONFIG", docker_config().c_str(), 1);
    auto r = cli({"stack", "deploy", "--with-registry-auth", "-c", compose.string(), "st"});
    ::unsetenv("DOCKER_CONFIG");
    ASSERT_EQ(r.status, 0) << r.err;
    ASSERT_TRUE(wait_converged("st_web", 1)) << a_->err() << b_->err();
    EXPECT_EQ(image_of(running("st_web").at(0)), image_ + "@" + registry_->digest("app:1"));
    auto secret = get("/secrets/registry-auth.st_web");
    ASSERT_TRUE(secret.is_object());
    // Deployed again without the flag: unchanged, the credentials kept.
    r = cli({"stack", "deploy", "-c", compose.string(), "st"});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.out.find("Service st_web is unchanged"), std::string::npos) << r.out;
    auto svc = get("/services/st_web");
    EXPECT_EQ(svc.at("Spec")
                  .at("TaskTemplate")
                  .at("ContainerSpec")
                  .at("CofferRegistryAuth")
                  .at("SecretName"),
              "registry-auth.st_web");
    EXPECT_TRUE(leaks(registry_->password()).empty());
    // stack rm takes the credentials with the service.
    ASSERT_EQ(cli({"stack", "rm", "st"}).status, 0);
    EXPECT_TRUE(wait_until([&] { return get("/secrets/registry-auth.st_web").is_null(); }, 10s));
}

}  // namespace
