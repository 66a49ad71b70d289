// Compose files as `coffer stack` reads them: interpolation, merge, every service field's
// conversion to the Engine API, and every error with its file and line.
#include <gtest/gtest.h>

#include <stdlib.h>
#include <unistd.h>
#include <set>

#include <boost/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>

#include "compose.h"

using namespace coffer::cli::compose;
namespace json = boost::json;

namespace {

// A directory for one test's files, removed at the end.
struct TempDir {
    std::string path;
    TempDir() {
        char t[] = "/tmp/coffer-compose-XXXXXX";
        path = ::mkdtemp(t);
    }
    ~TempDir() { std::filesystem::remove_all(path); }
    void write(const std::string& name, const std::string& text) const {
        std::ofstream(path + "/" + name) << text;
    }
};

struct Result {
    Loaded loaded;
    Stack stack;
    Problems problems;
};

Result load(const std::vector<std::pair<std::string, std::string>>& texts, const TempDir& dir,
            const Environment& env = {}) {
    Result r;
    r.loaded = load_texts(texts, dir.path, r.problems, env);
    if (r.problems.empty()) r.stack = convert(r.loaded, "app", r.problems);
    return r;
}

std::string interp(const std::string& s, const Environment& env) {
    std::string error;
    auto v = interpolate(s, env, error);
    return v ? *v : "ERROR: " + error;
}

json::value at(const json::value& v, std::initializer_list<std::string_view> path) {
    const json::value* p = &v;
    for (auto k : path) {
        if (p->is_array()) {
            p = &p->as_array().at(std::stoul(std::string(k)));
            continue;
        }
        const auto* o = p->as_object().if_contains(k);
        if (!o) return nullptr;
        p = o;
    }
    return *p;
}

bool has_error(const Problems& p, const std::string& text) {
    for (const auto& e : p.errors)
        if (e.find(text) != std::string::npos) return true;
    return false;
}

}  // namespace

TEST(ComposeInterpolation, EveryForm) {
    Environment env{{"SET", "v"}, {"EMPTY", ""}};
    EXPECT_EQ(interp("${SET}", env), "v");
    EXPECT_EQ(interp("$SET/x", env), "v/x");
    EXPECT_EQ(interp("${UNSET}", env), "");
    EXPECT_EQ(interp("${UNSET:-d}", env), "d");
    EXPECT_EQ(interp("${EMPTY:-d}", env), "d");
    EXPECT_EQ(interp("${EMPTY-d}", env), "");
    EXPECT_EQ(interp("${UNSET-d}", env), "d");
    EXPECT_EQ(interp("${SET:+alt}", env), "alt");
    EXPECT_EQ(interp("${EMPTY:+alt}", env), "");
    EXPECT_EQ(interp("${EMPTY+alt}", env), "alt");
    EXPECT_EQ(interp("${UNSET+alt}", env), "");
    EXPECT_EQ(interp("$$SET", env), "$SET");
    EXPECT_EQ(interp("${UNSET:-${SET}}", env), "v");
    EXPECT_EQ(interp("${UNSET:?need it}", env),
              "ERROR: required variable UNSET is missing a value: need it");
    EXPECT_EQ(interp("${EMPTY:?e}", env), "ERROR: required variable EMPTY is missing a value: e");
    EXPECT_EQ(interp("${EMPTY?e}", env), "");
    EXPECT_EQ(interp("${UNSET?e}", env), "ERROR: required variable UNSET is missing a value: e");
    EXPECT_NE(interp("${", env).find("ERROR"), std::string::npos);
    EXPECT_NE(interp("${SET%x}", env).find("ERROR"), std::string::npos);
}

TEST(ComposeLoad, EnvFileBesideTheFirstFileAndTheEnvironmentOverIt) {
    TempDir d;
    d.write(".env", "# comment\nTAG=fromfile\nOTHER='quoted value'\n");
    auto r =
        load({{"a.yml",
               "services:\n  web:\n    image: img:${TAG}\n    environment:\n      O: $OTHER\n"}},
             d, {});
    ASSERT_TRUE(r.problems.empty()) << r.problems.text();
    auto spec = json::value(r.stack.services.at("app_web"));
    EXPECT_EQ(at(spec, {"TaskTemplate", "ContainerSpec", "Image"}), "img:fromfile");
    EXPECT_EQ(at(spec, {"TaskTemplate", "ContainerSpec", "Env", "0"}), "O=quoted value");
    auto r2 = load({{"a.yml", "services:\n  web:\n    image: img:${TAG}\n"}}, d, {{"TAG", "env"}});
    EXPECT_EQ(at(json::value(r2.stack.services.at("app_web")),
                 {"TaskTemplate", "ContainerSpec", "Image"}),
              "img:env");
}

TEST(ComposeConvert, EveryServiceFieldAsTheDockerCli) {
    TempDir d;
    d.write("s.txt", "secret");
    d.write("web.env", "FROM_FILE=1\nA=overridden\n");
    const char* yml = R"(version: "3.9"
x-defaults: &defaults
  user: "1000:1000"
services:
  web:
    <<: *defaults
    image: busybox:1
    command: sh -c 'sleep 100'
    entrypoint: ["/bin/init", "--"]
    environment: [A=1, B]
    env_file: web.env
    working_dir: /srv
    read_only: true
    cap_add: [net_admin]
    cap_drop: [CAP_CHOWN]
    init: true
    healthcheck:
      test: ["CMD", "true"]
      interval: 10s
      timeout: 2s
      retries: 3
      start_period: 1m
    stop_signal: SIGTERM
    stop_grace_period: 20s
    sysctls: {net.core.somaxconn: "1024"}
    ulimits:
      nofile: {soft: 100, hard: 200}
      nproc: 50
    hostname: web-host
    extra_hosts: ["db:10.0.0.2"]
    dns: 1.1.1.1
    dns_search: [example.com]
    networks:
      front: {aliases: [w]}
    ports:
      - "8080:80"
      - target: 443
        published: 8443
        protocol: tcp
        mode: host
    volumes:
      - data:/data:ro
      - type: tmpfs
        target: /cache
        tmpfs: {size: 1m, mode: 0700}
    secrets:
      - s
      - source: s
        target: t
        uid: "10"
        gid: "20"
        mode: 0400
      - source: ext
        target: e
        mode: "0440"
    labels: {c: d}
    deploy:
      mode: replicated
      replicas: 3
      labels: [a=b]
      endpoint_mode: VIP
      resources:
        limits: {cpus: "0.5", memory: 64M, pids: 100}
        reservations:
          memory: 32M
          generic_resources:
            - discrete_resource_spec: {kind: gpu, value: 2}
      restart_policy: {condition: on-failure, delay: 5s, max_attempts: 3, window: 1m}
      update_config: {parallelism: 2, delay: 1s, order: start-first, failure_action: rollback}
      rollback_config: {monitor: 3s}
      placement:
        constraints: [node.role==worker]
        preferences: [{spread: node.labels.zone}]
        max_replicas_per_node: 2
networks:
  front:
    driver: overlay
    attachable: true
    labels: {n: "1"}
    ipam: {config: [{subnet: 10.9.0.0/24}]}
volumes:
  data: {labels: {v: "1"}}
secrets:
  s: {file: ./s.txt, labels: {k: v}}
  ext: {external: true}
)";
    auto r = load({{"stack.yml", yml}}, d);
    ASSERT_TRUE(r.problems.empty()) << r.problems.text();
    auto spec = json::value(r.stack.services.at("app_web"));
    auto cs = at(spec, {"TaskTemplate", "ContainerSpec"});
    EXPECT_EQ(at(spec, {"Name"}), "app_web");
    EXPECT_EQ(at(spec, {"Labels"}), (json::object{{"a", "b"},
                                                  {"com.docker.stack.namespace", "app"},
                                                  {"com.docker.stack.image", "busybox:1"}}));
    EXPECT_EQ(at(cs, {"Labels"}),
              (json::object{{"c", "d"}, {"com.docker.stack.namespace", "app"}}));
    EXPECT_EQ(at(cs, {"Image"}), "busybox:1");
    EXPECT_EQ(at(cs, {"Args"}), (json::array{"sh", "-c", "sleep 100"}));
    EXPECT_EQ(at(cs, {"Command"}), (json::array{"/bin/init", "--"}));
    EXPECT_EQ(at(cs, {"Env"}), (json::array{"A=1", "B", "FROM_FILE=1"}));
    EXPECT_EQ(at(cs, {"User"}), "1000:1000");
    EXPECT_EQ(at(cs, {"Dir"}), "/srv");
    EXPECT_EQ(at(cs, {"ReadOnly"}), true);
    EXPECT_EQ(at(cs, {"CapabilityAdd"}), (json::array{"CAP_NET_ADMIN"}));
    EXPECT_EQ(at(cs, {"CapabilityDrop"}), (json::array{"CAP_CHOWN"}));
    EXPECT_EQ(at(cs, {"Init"}), true);
    EXPECT_EQ(at(cs, {"Healthcheck"}), (json::object{{"Test", json::array{"CMD", "true"}},
                                                     {"Interval", 10000000000},
                                                     {"Timeout", 2000000000},
                                                     {"StartPeriod", 60000000000},
                                                     {"Retries", 3}}));
    EXPECT_EQ(at(cs, {"StopSignal"}), "SIGTERM");
    EXPECT_EQ(at(cs, {"StopGracePeriod"}), 20000000000);
    EXPECT_EQ(at(cs, {"Sysctls"}), (json::object{{"net.core.somaxconn", "1024"}}));
    EXPECT_EQ(at(cs, {"Ulimits"}),
              (json::array{json::object{{"Name", "nofile"}, {"Soft", 100}, {"Hard", 200}},
                           json::object{{"Name", "nproc"}, {"Soft", 50}, {"Hard", 50}}}));
    EXPECT_EQ(at(cs, {"Hostname"}), "web-host");
    EXPECT_EQ(at(cs, {"Hosts"}), (json::array{"10.0.0.2 db"}));
    EXPECT_EQ(at(cs, {"DNSConfig"}), (json::object{{"Nameservers", json::array{"1.1.1.1"}},
                                                   {"Search", json::array{"example.com"}}}));
    EXPECT_EQ(
        at(spec, {"TaskTemplate", "Networks"}),
        (json::array{json::object{{"Target", "app_front"}, {"Aliases", json::array{"w", "web"}}}}));
    EXPECT_EQ(at(spec, {"EndpointSpec"}),
              (json::object{{"Mode", "vip"},
                            {"Ports", json::array{json::object{{"Protocol", "tcp"},
                                                               {"TargetPort", 80},
                                                               {"PublishedPort", 8080},
                                                               {"PublishMode", "ingress"}},
                                                  json::object{{"Protocol", "tcp"},
                                                               {"TargetPort", 443},
                                                               {"PublishedPort", 8443},
                                                               {"PublishMode", "host"}}}}}));
    EXPECT_EQ(
        at(cs, {"Mounts"}),
        (json::array{
            json::object{
                {"Type", "volume"},
                {"Target", "/data"},
                {"ReadOnly", true},
                {"Source", "app_data"},
                {"VolumeOptions",
                 json::object{
                     {"Labels", json::object{{"v", "1"}, {"com.docker.stack.namespace", "app"}}}}}},
            json::object{{"Type", "tmpfs"},
                         {"Target", "/cache"},
                         {"TmpfsOptions", json::object{{"SizeBytes", 1048576}, {"Mode", 0700}}}}}));
    // Sorted by name, as the docker CLI sends them.
    EXPECT_EQ(
        at(cs, {"Secrets"}),
        (json::array{
            json::object{
                {"File", json::object{{"Name", "s"}, {"UID", "0"}, {"GID", "0"}, {"Mode", 0444}}},
                {"SecretName", "app_s"}},
            json::object{
                {"File", json::object{{"Name", "t"}, {"UID", "10"}, {"GID", "20"}, {"Mode", 0400}}},
                {"SecretName", "app_s"}},
            json::object{
                {"File", json::object{{"Name", "e"}, {"UID", "0"}, {"GID", "0"}, {"Mode", 0440}}},
                {"SecretName", "ext"}}}));
    EXPECT_EQ(at(spec, {"Mode"}), (json::object{{"Replicated", json::object{{"Replicas", 3}}}}));
    EXPECT_EQ(
        at(spec, {"TaskTemplate", "Resources"}),
        (json::object{
            {"Limits",
             json::object{{"NanoCPUs", 500000000}, {"MemoryBytes", 67108864}, {"Pids", 100}}},
            {"Reservations",
             json::object{
                 {"MemoryBytes", 33554432},
                 {"GenericResources",
                  json::array{json::object{
                      {"DiscreteResourceSpec", json::object{{"Kind", "gpu"}, {"Value", 2}}}}}}}}}));
    EXPECT_EQ(at(spec, {"TaskTemplate", "RestartPolicy"}),
              (json::object{{"Condition", "on-failure"},
                            {"Delay", 5000000000},
                            {"MaxAttempts", 3},
                            {"Window", 60000000000}}));
    EXPECT_EQ(at(spec, {"UpdateConfig"}), (json::object{{"Parallelism", 2},
                                                        {"Delay", 1000000000},
                                                        {"FailureAction", "rollback"},
                                                        {"Order", "start-first"}}));
    EXPECT_EQ(at(spec, {"RollbackConfig"}),
              (json::object{{"Parallelism", 1}, {"Monitor", 3000000000}}));
    EXPECT_EQ(
        at(spec, {"TaskTemplate", "Placement"}),
        (json::object{{"Constraints", json::array{"node.role==worker"}},
                      {"Preferences",
                       json::array{json::object{
                           {"Spread", json::object{{"SpreadDescriptor", "node.labels.zone"}}}}}},
                      {"MaxReplicas", 2}}));
    // Top-level objects.
    ASSERT_EQ(r.stack.secrets.size(), 2u);
    EXPECT_EQ(r.stack.secrets[0].name, "app_s");
    EXPECT_EQ(r.stack.secrets[0].file, d.path + "/s.txt");
    EXPECT_EQ(json::value(r.stack.secrets[0].labels),
              (json::object{{"k", "v"}, {"com.docker.stack.namespace", "app"}}));
    EXPECT_TRUE(r.stack.secrets[1].external);
    EXPECT_EQ(r.stack.secrets[1].name, "ext");
    ASSERT_EQ(r.stack.networks.size(), 1u);
    EXPECT_EQ(json::value(r.stack.networks[0].create),
              (json::object{
                  {"Attachable", true},
                  {"IPAM",
                   json::object{{"Config", json::array{json::object{{"Subnet", "10.9.0.0/24"}}}}}},
                  {"Name", "app_front"},
                  {"Driver", "overlay"},
                  {"Labels", json::object{{"n", "1"}, {"com.docker.stack.namespace", "app"}}},
                  {"CheckDuplicate", true}}));
}

TEST(ComposeConvert, DefaultNetworkGlobalModeAndNamedObjects) {
    TempDir d;
    ::setenv("COFFER_COMPOSE_TEST_VALUE", "v", 1);
    auto r = load({{"a.yml", R"(services:
  agent:
    image: a
    deploy: {mode: global}
    secrets: [named, fromenv]
secrets:
  named: {external: true, name: real-name}
  fromenv: {environment: COFFER_COMPOSE_TEST_VALUE, name: custom}
)"}},
                  d);
    ::unsetenv("COFFER_COMPOSE_TEST_VALUE");
    ASSERT_TRUE(r.problems.empty()) << r.problems.text();
    auto spec = json::value(r.stack.services.at("app_agent"));
    EXPECT_EQ(at(spec, {"Mode"}), (json::object{{"Global", json::object{}}}));
    EXPECT_EQ(
        at(spec, {"TaskTemplate", "Networks"}),
        (json::array{json::object{{"Target", "app_default"}, {"Aliases", json::array{"agent"}}}}));
    EXPECT_EQ(at(spec, {"TaskTemplate", "ContainerSpec", "Secrets", "0", "SecretName"}), "custom");
    EXPECT_EQ(at(spec, {"TaskTemplate", "ContainerSpec", "Secrets", "1", "SecretName"}),
              "real-name");
    ASSERT_EQ(r.stack.networks.size(), 1u);
    EXPECT_EQ(r.stack.networks[0].name, "app_default");
}

TEST(ComposeConvert, ExternalNetworksKeepTheirNames) {
    TempDir d;
    auto r = load({{"a.yml", R"(services:
  web:
    image: a
    networks: [back, shared, other]
networks:
  back: {}
  shared: {external: true}
  other: {external: {name: real-net}}
)"}},
                  d);
    ASSERT_TRUE(r.problems.empty()) << r.problems.text();
    auto spec = json::value(r.stack.services.at("app_web"));
    std::set<std::string> targets;
    auto nets = at(spec, {"TaskTemplate", "Networks"});
    for (const auto& n : nets.as_array()) targets.insert(std::string(n.at("Target").as_string()));
    EXPECT_EQ(targets, (std::set<std::string>{"app_back", "shared", "real-net"}));
}

TEST(ComposeConvert, XCofferUpdateSetsTheServicesUpdateMode) {
    TempDir d;
    auto r = load({{"a.yml", R"(services:
  web:
    image: a
    secrets: [{source: s, x-coffer-update: "signal:SIGHUP"}, t]
  bad:
    image: a
    secrets: [{source: s, x-coffer-update: sometimes}]
  two:
    image: a
    secrets: [{source: s, x-coffer-update: live}, {source: t, x-coffer-update: none}]
secrets:
  s: {external: true}
  t: {external: true}
)"}},
                  d);
    auto text = r.problems.text();
    EXPECT_NE(text.find("service \"bad\": x-coffer-update: "), std::string::npos) << text;
    EXPECT_NE(text.find("service \"two\": x-coffer-update: live and none"), std::string::npos)
        << text;
    EXPECT_EQ(text.find("service \"web\""), std::string::npos) << text;
    auto spec = json::value(r.stack.services.at("app_web"));
    EXPECT_EQ(at(spec, {"Labels", "coffer.secret-update"}), "signal:SIGHUP");
}

TEST(ComposeMerge, DockerRulesInOrder) {
    TempDir d;
    auto r = load({{"a.yml", R"(services:
  web:
    image: one
    command: [a, b]
    environment: {A: "1", B: "1"}
    dns: [1.1.1.1]
    ports: ["80:80", "81:81"]
    secrets: [s, {source: t, target: x}]
    deploy: {replicas: 1, labels: {k: a}}
  db:
    image: db
secrets:
  s: {external: true}
  t: {external: true}
)"},
                   {"b.yml", R"(services:
  web:
    image: two
    command: [c]
    environment: [B=2, C=3]
    dns: [8.8.8.8]
    ports: [{target: 8000, published: 80}]
    secrets: [{source: t, target: y}]
    deploy: {labels: {j: b}}
secrets:
  t: {external: true, name: other}
)"}},
                  d);
    ASSERT_TRUE(r.problems.empty()) << r.problems.text();
    auto spec = json::value(r.stack.services.at("app_web"));
    auto cs = at(spec, {"TaskTemplate", "ContainerSpec"});
    EXPECT_EQ(at(cs, {"Image"}), "two");
    EXPECT_EQ(at(cs, {"Args"}), (json::array{"c"}));
    EXPECT_EQ(at(cs, {"Env"}), (json::array{"A=1", "B=2", "C=3"}));
    EXPECT_EQ(at(cs, {"DNSConfig", "Nameservers"}), (json::array{"1.1.1.1", "8.8.8.8"}));
    EXPECT_EQ(at(spec, {"EndpointSpec", "Ports"}).as_array().size(), 2u);
    EXPECT_EQ(at(spec, {"EndpointSpec", "Ports", "0", "TargetPort"}), 8000);
    EXPECT_EQ(at(cs, {"Secrets"}).as_array().size(), 2u);
    EXPECT_EQ(at(cs, {"Secrets", "0", "SecretName"}), "other");
    EXPECT_EQ(at(cs, {"Secrets", "0", "File", "Name"}), "y");
    EXPECT_EQ(at(spec, {"Mode", "Replicated", "Replicas"}), 1);
    EXPECT_EQ(at(spec, {"Labels", "k"}), "a");
    EXPECT_EQ(at(spec, {"Labels", "j"}), "b");
    EXPECT_TRUE(r.stack.services.count("app_db"));
}

TEST(ComposeLoad, UnsupportedKeysNamedOnceAndXFieldsIgnored) {
    TempDir d;
    auto r = load({{"a.yml", R"(x-top: {anything: 1}
services:
  web:
    image: a
    build: .
    privileged: true
    x-note: hello
)"},
                   {"b.yml", "services:\n  web:\n    build: ./other\n    links: [db]\n"}},
                  d);
    ASSERT_TRUE(r.problems.empty()) << r.problems.text();
    EXPECT_EQ(r.loaded.unsupported, (std::vector<std::string>{"build", "links", "privileged"}));
}

TEST(ComposeErrors, EveryProblemWithFileAndLine) {
    TempDir d;
    auto r = load({{"a.yml", R"(version: "3.8"
services:
  web:
    image: ${NOPE:?set NOPE}
    extends: base
    secrets: [missing, s]
    deploy:
      mode: sideways
  other:
    image: a
    networks: [nonet]
    volumes: ["novol:/x"]
    secrets:
      - source: s
        mode: "0x9z"
    read_only: maybe
    bogus: 1
secrets:
  s: {file: ./not-there.txt}
  both: {file: ./x, environment: X}
)"}},
                  d);
    // Interpolation and extends are found while loading; the rest of the checks run after.
    EXPECT_TRUE(has_error(r.problems,
                          "a.yml:4: services.web.image: required variable NOPE is "
                          "missing a value: set NOPE"))
        << r.problems.text();
    EXPECT_TRUE(
        has_error(r.problems, "a.yml:5: service \"web\": extends: extends is not supported"))
        << r.problems.text();
    Problems p;
    p.files = {"a.yml"};
    auto loaded = load_texts({{"a.yml", R"(services:
  web:
    image: a
    secrets: [missing, s]
    deploy:
      mode: sideways
  other:
    image: a
    networks: [nonet]
    volumes: ["novol:/x"]
    secrets:
      - source: s
        mode: "0x9z"
    read_only: maybe
    bogus: 1
secrets:
  s: {file: ./not-there.txt}
  both: {file: ./x, environment: X}
)"}},
                             d.path, p, {});
    ASSERT_TRUE(p.empty()) << p.text();
    convert(loaded, "app", p);
    for (const char* want :
         {"a.yml:4: service \"web\": undefined secret \"missing\"",
          "a.yml:6: service \"web\": unknown mode: sideways",
          "a.yml:9: service \"other\": undefined network \"nonet\"",
          "a.yml:10: service \"other\": undefined volume \"novol\"",
          "a.yml:13: service \"other\": mode must be an integer",
          "a.yml:14: service \"other\": read_only must be a boolean",
          "a.yml:15: service \"other\": unknown key \"bogus\"",
          "a.yml:17: secret \"s\": cannot read file",
          "a.yml:18: secret \"both\": needs exactly one of file, environment or external"})
        EXPECT_TRUE(has_error(p, want)) << want << "\n" << p.text();
}

TEST(ComposeErrors, SyntaxVersionAndUnreadableFiles) {
    TempDir d;
    auto r = load({{"a.yml", "services:\n  web:\n    image: [unclosed\n"},
                   {"b.yml", "version: \"2.4\"\nservices: {}\n"}},
                  d);
    EXPECT_TRUE(has_error(r.problems, "a.yml:4:")) << r.problems.text();
    EXPECT_TRUE(has_error(r.problems, "b.yml:1: unsupported compose file version \"2.4\""))
        << r.problems.text();
    Problems p;
    load({d.path + "/nothere.yml"}, p, {});
    EXPECT_TRUE(has_error(p, "nothere.yml: cannot read: No such file or directory")) << p.text();
}

TEST(ComposeOutput, ConfigIsTheMergedTree) {
    TempDir d;
    auto r = load({{"a.yml", "services:\n  web:\n    image: a:${T:-1}\n"},
                   {"b.yml", "services:\n  web:\n    environment: [X=1]\n"}},
                  d);
    ASSERT_TRUE(r.problems.empty()) << r.problems.text();
    auto yaml = to_yaml(r.loaded.merged);
    EXPECT_NE(yaml.find("image: \"a:1\""), std::string::npos) << yaml;
    EXPECT_NE(yaml.find("X: \"1\""), std::string::npos) << yaml;
}
