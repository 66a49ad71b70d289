// Every field of Docker's ServiceSpec, walked one at a time: each is acted on (it reaches the
// parsed spec the orchestrator and the nodes use), refused (400 naming it) or warned about
// (a Warnings entry naming it). A field added to the API, or to coffer's table, without one of
// these fails here.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <string_view>

#include "coffer/model/json.h"
#include "coffer/model/service_json.h"
#include "coffer/model/spec_fields.h"

namespace coffer::model {
namespace {
namespace json = boost::json;

// One field of Docker's ServiceSpec (moby api/types/swarm: ServiceSpec, TaskSpec, ContainerSpec,
// mount.Mount, HealthConfig, ...), with a value that asks for something, another value (empty:
// the field left out), and for a field inside an array item, the rest of that item.
struct DockerField {
    std::string_view path;
    std::string_view sample;
    std::string_view other = {};
    std::string_view item = {};
};

constexpr std::string_view secret_item =
    R"({"SecretID":"sid1","SecretName":"s1","File":{"Name":"s1","UID":"0","GID":"0","Mode":292}})";
constexpr std::string_view config_item =
    R"({"ConfigID":"cid1","ConfigName":"c1","File":{"Name":"/c1","UID":"0","GID":"0","Mode":292}})";
constexpr std::string_view tmpfs_item = R"({"Type":"tmpfs","Target":"/scratch"})";
constexpr std::string_view bind_item = R"({"Type":"bind","Source":"/srv","Target":"/srv"})";
constexpr std::string_view volume_item = R"({"Type":"volume","Source":"data","Target":"/data"})";

// clang-format off
const DockerField docker_fields[] = {
    {"Name", R"("web")", R"("api")"},
    {"Labels", R"({"tier":"front"})"},
    {"TaskTemplate.ContainerSpec.Image", R"("busybox:1")", R"("busybox:2")"},
    {"TaskTemplate.ContainerSpec.Labels", R"({"a":"b"})"},
    {"TaskTemplate.ContainerSpec.Command", R"(["sleep"])"},
    {"TaskTemplate.ContainerSpec.Args", R"(["60"])"},
    {"TaskTemplate.ContainerSpec.Hostname", R"("h1")"},
    {"TaskTemplate.ContainerSpec.Env", R"(["A=1"])"},
    {"TaskTemplate.ContainerSpec.Dir", R"("/srv")"},
    {"TaskTemplate.ContainerSpec.User", R"("1000:1000")"},
    {"TaskTemplate.ContainerSpec.Groups", R"(["audio"])"},
    {"TaskTemplate.ContainerSpec.Privileges.CredentialSpec.Config", R"("c")"},
    {"TaskTemplate.ContainerSpec.Privileges.CredentialSpec.File", R"("f")"},
    {"TaskTemplate.ContainerSpec.Privileges.CredentialSpec.Registry", R"("r")"},
    {"TaskTemplate.ContainerSpec.Privileges.SELinuxContext.Disable", "true"},
    {"TaskTemplate.ContainerSpec.Privileges.SELinuxContext.User", R"("u")"},
    {"TaskTemplate.ContainerSpec.Privileges.SELinuxContext.Role", R"("r")"},
    {"TaskTemplate.ContainerSpec.Privileges.SELinuxContext.Type", R"("t")"},
    {"TaskTemplate.ContainerSpec.Privileges.SELinuxContext.Level", R"("s0")"},
    {"TaskTemplate.ContainerSpec.Privileges.Seccomp.Mode", R"("unconfined")"},
    {"TaskTemplate.ContainerSpec.Privileges.Seccomp.Profile", R"("e30=")"},
    {"TaskTemplate.ContainerSpec.Privileges.AppArmor.Mode", R"("disabled")"},
    {"TaskTemplate.ContainerSpec.Privileges.NoNewPrivileges", "true"},
    {"TaskTemplate.ContainerSpec.Init", "true"},
    {"TaskTemplate.ContainerSpec.StopSignal", R"("SIGINT")"},
    {"TaskTemplate.ContainerSpec.TTY", "true"},
    {"TaskTemplate.ContainerSpec.OpenStdin", "true"},
    {"TaskTemplate.ContainerSpec.ReadOnly", "true"},
    {"TaskTemplate.ContainerSpec.Mounts[].Type", R"("tmpfs")", R"("volume")",
     R"({"Source":"","Target":"/scratch"})"},
    {"TaskTemplate.ContainerSpec.Mounts[].Source", R"("data")", R"("logs")",
     R"({"Type":"volume","Target":"/data"})"},
    {"TaskTemplate.ContainerSpec.Mounts[].Target", R"("/data")", R"("/logs")",
     R"({"Type":"volume","Source":"data"})"},
    {"TaskTemplate.ContainerSpec.Mounts[].ReadOnly", "true", {}, volume_item},
    {"TaskTemplate.ContainerSpec.Mounts[].Consistency", R"("cached")", {}, bind_item},
    {"TaskTemplate.ContainerSpec.Mounts[].BindOptions.Propagation", R"("rslave")", {}, bind_item},
    {"TaskTemplate.ContainerSpec.Mounts[].BindOptions.NonRecursive", "true", {}, bind_item},
    {"TaskTemplate.ContainerSpec.Mounts[].BindOptions.CreateMountpoint", "true", {}, bind_item},
    {"TaskTemplate.ContainerSpec.Mounts[].BindOptions.ReadOnlyNonRecursive", "true", {},
     bind_item},
    {"TaskTemplate.ContainerSpec.Mounts[].BindOptions.ReadOnlyForceRecursive", "true", {},
     bind_item},
    {"TaskTemplate.ContainerSpec.Mounts[].VolumeOptions.NoCopy", "true", {}, volume_item},
    {"TaskTemplate.ContainerSpec.Mounts[].VolumeOptions.Labels", R"({"a":"b"})", {},
     volume_item},
    {"TaskTemplate.ContainerSpec.Mounts[].VolumeOptions.Subpath", R"("sub")", {}, volume_item},
    {"TaskTemplate.ContainerSpec.Mounts[].VolumeOptions.DriverConfig.Name", R"("nfs")", {},
     volume_item},
    {"TaskTemplate.ContainerSpec.Mounts[].VolumeOptions.DriverConfig.Options",
     R"({"type":"nfs"})", {}, volume_item},
    {"TaskTemplate.ContainerSpec.Mounts[].ImageOptions.Subpath", R"("sub")", {},
     R"({"Type":"image","Source":"busybox","Target":"/img"})"},
    {"TaskTemplate.ContainerSpec.Mounts[].TmpfsOptions.SizeBytes", "1048576", {}, tmpfs_item},
    {"TaskTemplate.ContainerSpec.Mounts[].TmpfsOptions.Mode", "448", {}, tmpfs_item},
    {"TaskTemplate.ContainerSpec.Mounts[].TmpfsOptions.Options", R"([["noexec"]])", {},
     tmpfs_item},
    {"TaskTemplate.ContainerSpec.Mounts[].ClusterOptions", "{}", {},
     R"({"Type":"cluster","Source":"c","Target":"/c"})"},
    {"TaskTemplate.ContainerSpec.StopGracePeriod", "3000000000"},
    {"TaskTemplate.ContainerSpec.Healthcheck.Test", R"(["CMD","true"])"},
    {"TaskTemplate.ContainerSpec.Healthcheck.Interval", "2000000000", {},
     R"({"Test":["CMD","true"]})"},
    {"TaskTemplate.ContainerSpec.Healthcheck.Timeout", "2000000000"},
    {"TaskTemplate.ContainerSpec.Healthcheck.Retries", "5"},
    {"TaskTemplate.ContainerSpec.Healthcheck.StartPeriod", "2000000000"},
    {"TaskTemplate.ContainerSpec.Healthcheck.StartInterval", "2000000000"},
    {"TaskTemplate.ContainerSpec.Hosts", R"(["10.0.0.1 db"])"},
    {"TaskTemplate.ContainerSpec.DNSConfig.Nameservers", R"(["10.0.0.53"])"},
    {"TaskTemplate.ContainerSpec.DNSConfig.Search", R"(["example.org"])"},
    {"TaskTemplate.ContainerSpec.DNSConfig.Options", R"(["ndots:2"])"},
    {"TaskTemplate.ContainerSpec.Secrets[].SecretID", R"("sid2")", R"("sid1")",
     R"({"SecretName":"s1","File":{"Name":"s1","UID":"0","GID":"0","Mode":292}})"},
    {"TaskTemplate.ContainerSpec.Secrets[].SecretName", R"("s2")", R"("s1")",
     R"({"SecretID":"sid1","File":{"Name":"s1","UID":"0","GID":"0","Mode":292}})"},
    {"TaskTemplate.ContainerSpec.Secrets[].File.Name", R"("other")", R"("s1")", secret_item},
    {"TaskTemplate.ContainerSpec.Secrets[].File.UID", R"("1000")", R"("0")", secret_item},
    {"TaskTemplate.ContainerSpec.Secrets[].File.GID", R"("1000")", R"("0")", secret_item},
    {"TaskTemplate.ContainerSpec.Secrets[].File.Mode", "256", "292", secret_item},
    {"TaskTemplate.ContainerSpec.Configs[].ConfigID", R"("cid2")", R"("cid1")", config_item},
    {"TaskTemplate.ContainerSpec.Configs[].ConfigName", R"("c2")", R"("c1")", config_item},
    {"TaskTemplate.ContainerSpec.Configs[].File.Name", R"("/other")", R"("/c1")", config_item},
    {"TaskTemplate.ContainerSpec.Configs[].File.UID", R"("1000")", R"("0")", config_item},
    {"TaskTemplate.ContainerSpec.Configs[].File.GID", R"("1000")", R"("0")", config_item},
    {"TaskTemplate.ContainerSpec.Configs[].File.Mode", "256", "292", config_item},
    {"TaskTemplate.ContainerSpec.Configs[].Runtime", "{}", {},
     R"({"ConfigID":"cid1","ConfigName":"c1"})"},
    {"TaskTemplate.ContainerSpec.Isolation", R"("hyperv")"},
    {"TaskTemplate.ContainerSpec.Sysctls", R"({"net.ipv4.ip_forward":"1"})"},
    {"TaskTemplate.ContainerSpec.CapabilityAdd", R"(["NET_ADMIN"])"},
    {"TaskTemplate.ContainerSpec.CapabilityDrop", R"(["CHOWN"])"},
    {"TaskTemplate.ContainerSpec.Ulimits[].Name", R"("nofile")", R"("nproc")",
     R"({"Soft":100,"Hard":200})"},
    {"TaskTemplate.ContainerSpec.Ulimits[].Soft", "50", "100",
     R"({"Name":"nofile","Hard":200})"},
    {"TaskTemplate.ContainerSpec.Ulimits[].Hard", "300", "200",
     R"({"Name":"nofile","Soft":100})"},
    {"TaskTemplate.ContainerSpec.OomScoreAdj", "500"},
    {"TaskTemplate.PluginSpec", R"({"Name":"p"})"},
    {"TaskTemplate.NetworkAttachmentSpec", R"({"ContainerID":"c"})"},
    {"TaskTemplate.Resources.Limits.NanoCPUs", "500000000"},
    {"TaskTemplate.Resources.Limits.MemoryBytes", "67108864"},
    {"TaskTemplate.Resources.Limits.Pids", "100"},
    {"TaskTemplate.Resources.Reservations.NanoCPUs", "500000000"},
    {"TaskTemplate.Resources.Reservations.MemoryBytes", "67108864"},
    {"TaskTemplate.Resources.Reservations.GenericResources[].NamedResourceSpec.Kind",
     R"("gpu")", R"("fpga")", R"({"NamedResourceSpec":{"Value":"g1"}})"},
    {"TaskTemplate.Resources.Reservations.GenericResources[].NamedResourceSpec.Value",
     R"("g2")", R"("g1")", R"({"NamedResourceSpec":{"Kind":"gpu"}})"},
    {"TaskTemplate.Resources.Reservations.GenericResources[].DiscreteResourceSpec.Kind",
     R"("ssd")", R"("hdd")", R"({"DiscreteResourceSpec":{"Value":2}})"},
    {"TaskTemplate.Resources.Reservations.GenericResources[].DiscreteResourceSpec.Value",
     "3", "2", R"({"DiscreteResourceSpec":{"Kind":"ssd"}})"},
    {"TaskTemplate.Resources.SwapBytes", "1048576"},
    {"TaskTemplate.Resources.MemorySwappiness", "10"},
    {"TaskTemplate.RestartPolicy.Condition", R"("none")"},
    {"TaskTemplate.RestartPolicy.Delay", "1000000000"},
    {"TaskTemplate.RestartPolicy.MaxAttempts", "3"},
    {"TaskTemplate.RestartPolicy.Window", "60000000000"},
    {"TaskTemplate.Placement.Constraints", R"(["node.role==worker"])"},
    {"TaskTemplate.Placement.Preferences[].Spread.SpreadDescriptor", R"("node.labels.zone")",
     R"("node.labels.rack")", "{}"},
    {"TaskTemplate.Placement.MaxReplicas", "2"},
    {"TaskTemplate.Placement.Platforms[].Architecture", R"("arm64")", R"("amd64")",
     R"({"OS":"linux"})"},
    {"TaskTemplate.Placement.Platforms[].OS", R"("windows")", R"("linux")",
     R"({"Architecture":"amd64"})"},
    {"TaskTemplate.Networks[].Target", R"("backend")", {}, R"({"Aliases":["db"]})"},
    {"TaskTemplate.Networks[].Aliases", R"(["db"])", {}, R"({"Target":"backend"})"},
    {"TaskTemplate.Networks[].DriverOpts", R"({"a":"b"})", {}, R"({"Target":"backend"})"},
    {"TaskTemplate.LogDriver.Name", R"("syslog")"},
    {"TaskTemplate.LogDriver.Options", R"({"tag":"x"})"},
    {"TaskTemplate.ForceUpdate", "2"},
    {"TaskTemplate.Runtime", R"("plugin")"},
    {"Mode.Replicated.Replicas", "3"},
    {"Mode.Global", "{}"},
    {"Mode.ReplicatedJob.MaxConcurrent", "2"},
    {"Mode.ReplicatedJob.TotalCompletions", "4"},
    {"Mode.GlobalJob", "{}"},
    {"UpdateConfig.Parallelism", "3"},
    {"UpdateConfig.Delay", "1000000000"},
    {"UpdateConfig.FailureAction", R"("continue")"},
    {"UpdateConfig.Monitor", "1000000000"},
    {"UpdateConfig.MaxFailureRatio", "0.5"},
    {"UpdateConfig.Order", R"("start-first")"},
    {"RollbackConfig.Parallelism", "3"},
    {"RollbackConfig.Delay", "1000000000"},
    {"RollbackConfig.FailureAction", R"("continue")"},
    {"RollbackConfig.Monitor", "1000000000"},
    {"RollbackConfig.MaxFailureRatio", "0.5"},
    {"RollbackConfig.Order", R"("start-first")"},
    {"Networks[].Target", R"("backend")", {}, R"({"Aliases":["db"]})"},
    {"Networks[].Aliases", R"(["db"])", {}, R"({"Target":"backend"})"},
    {"Networks[].DriverOpts", R"({"a":"b"})", {}, R"({"Target":"backend"})"},
    {"EndpointSpec.Mode", R"("dnsrr")"},
    {"EndpointSpec.Ports[].Name", R"("http")", {}, R"({"TargetPort":80})"},
    {"EndpointSpec.Ports[].Protocol", R"("udp")", {}, R"({"TargetPort":80})"},
    {"EndpointSpec.Ports[].TargetPort", "80", "81", R"({"Protocol":"tcp"})"},
    {"EndpointSpec.Ports[].PublishedPort", "8080", {}, R"({"TargetPort":80})"},
    {"EndpointSpec.Ports[].PublishMode", R"("host")", {}, R"({"TargetPort":80,"PublishedPort":8080})"},
};
// clang-format on

json::value parse(std::string_view text) {
    auto v = parse_json(text);
    EXPECT_TRUE(v) << text;
    return v ? std::move(*v) : json::value();
}

// Sets a dotted path (no arrays) inside o, creating the objects on the way.
void set_path(json::object& o, std::string_view path, const json::value& value) {
    auto dot = path.find('.');
    if (dot == std::string_view::npos) {
        o[path] = value;
        return;
    }
    auto& next = o[path.substr(0, dot)];
    if (!next.is_object()) next = json::object{};
    set_path(next.as_object(), path.substr(dot + 1), value);
}

// Copies into o the members of from it lacks, object members merged the same way.
void add_missing(json::object& o, const json::object& from) {
    for (const auto& [key, value] : from) {
        auto* mine = o.if_contains(key);
        if (mine == nullptr)
            o[key] = value;
        else if (mine->is_object() && value.is_object())
            add_missing(mine->as_object(), value.as_object());
    }
}

// The smallest valid spec, with the field set to value (or left out when value is empty).
json::value spec_with(const DockerField& f, std::string_view value) {
    json::object spec =
        parse(R"({"Name":"web","TaskTemplate":{"ContainerSpec":{"Image":"busybox"}}})").as_object();
    auto bracket = f.path.find("[]");
    if (bracket == std::string_view::npos) {
        if (!value.empty()) set_path(spec, f.path, parse(value));
        return spec;
    }
    // The field first, so that a refusal of it is the first one met.
    json::object item;
    if (!value.empty()) set_path(item, f.path.substr(bracket + 3), parse(value));
    if (!f.item.empty()) add_missing(item, parse(f.item).as_object());
    set_path(spec, f.path.substr(0, bracket), json::array{item});
    return spec;
}

// The parsed spec, without the serialized JSON it keeps (that differs for any change).
Result<ServiceSpec> parsed(const json::value& v) {
    auto s = service_spec_from_json(v);
    if (!s) return s;
    if (auto ok = validate_service_spec(*s); !ok) return std::move(ok).error();
    s->json.clear();
    s->task.json.clear();
    return s;
}

TEST(SpecFields, TheTableNamesEveryFieldOfDockersServiceSpecAndNoOther) {
    std::set<std::string_view> docker;
    for (const auto& f : docker_fields) {
        EXPECT_TRUE(docker.insert(f.path).second) << "listed twice: " << f.path;
        EXPECT_NE(find_spec_field(f.path), nullptr) << "no use decided for " << f.path;
    }
    for (const auto& f : service_spec_fields())
        EXPECT_TRUE(docker.count(f.path)) << "not a field of Docker's ServiceSpec: " << f.path;
}

TEST(SpecFields, EveryFieldIsActedOnRefusedOrWarnedAbout) {
    for (const auto& f : docker_fields) {
        SCOPED_TRACE(std::string(f.path));
        const auto* use = find_spec_field(f.path);
        ASSERT_NE(use, nullptr);
        auto with = spec_with(f, f.sample);
        auto checked = check_service_spec_fields(with);
        bool inert = !use->inert.empty() && use->inert == f.sample;
        if (use->use == FieldUse::refused && !inert) {
            ASSERT_FALSE(checked) << "accepted";
            EXPECT_NE(checked.error().message.find(std::string(f.path)), std::string::npos)
                << checked.error().message;
            continue;
        }
        ASSERT_TRUE(checked) << checked.error().message;
        bool named = false;
        for (const auto& w : *checked) named = named || w.starts_with(std::string(f.path) + ":");
        if (use->use == FieldUse::warned) {
            EXPECT_TRUE(named) << "no warning names it";
            continue;
        }
        EXPECT_FALSE(named);
        if (inert) continue;
        // Acted on: it reaches the parsed spec, which is what the orchestrator and nodes use.
        auto a = parsed(with);
        auto b = parsed(spec_with(f, f.other));
        ASSERT_TRUE(a) << a.error().message;
        ASSERT_TRUE(b) << b.error().message;
        EXPECT_FALSE(*a == *b) << "accepted, but the parsed spec does not change with it";
    }
}

// docs/compatibility.md shows the table to users: one row per field, its use as the first word.
TEST(SpecFields, TheCompatibilityTableInDocsSaysWhatTheCodeDoes) {
    std::ifstream in(COFFER_SOURCE_ROOT "/docs/compatibility.md");
    ASSERT_TRUE(in) << "docs/compatibility.md";
    std::stringstream text;
    text << in.rdbuf();
    auto doc = text.str();
    for (const auto& f : service_spec_fields()) {
        auto word = f.use == FieldUse::refused  ? "refused"
                    : f.use == FieldUse::warned ? "warned"
                    : f.note.empty()            ? "works"
                                                : "differs";
        auto row = fmt::format("| `{}` | {}", f.path, word);
        EXPECT_NE(doc.find(row), std::string::npos) << "docs/compatibility.md lacks: " << row;
    }
}

TEST(SpecFields, AnUnknownFieldIsRefusedUnlessItAsksForNothing) {
    auto asks = check_service_spec_fields(
        parse(R"({"Name":"web","TaskTemplate":{"ContainerSpec":{"Image":"b","Shiny":true}}})"));
    ASSERT_FALSE(asks);
    EXPECT_NE(asks.error().message.find("TaskTemplate.ContainerSpec.Shiny"), std::string::npos);
    EXPECT_TRUE(check_service_spec_fields(
        parse(R"({"Name":"web","TaskTemplate":{"ContainerSpec":{"Image":"b","Shiny":false}}})")));
}

TEST(SpecFields, WhatTheDockerCliSendsByDefaultIsAcceptedWithoutWarnings) {
    // docker service create (CLI 28) and docker stack deploy without networks or ports.
    for (auto body : {
             R"({"Name":"web","Labels":{},"TaskTemplate":{"ContainerSpec":{"Image":"b",
                "Args":["sleep","3600"],"Init":false,"DNSConfig":{}},"Resources":{"Limits":{},
                "Reservations":{}},"Placement":{},"ForceUpdate":0},
                "Mode":{"Replicated":{"Replicas":2}},"EndpointSpec":{"Mode":"vip"}})",
             R"({"Name":"app_app","Labels":{"com.docker.stack.namespace":"app"},
                "TaskTemplate":{"ContainerSpec":{"Image":"b","Privileges":{"CredentialSpec":null,
                "SELinuxContext":null,"NoNewPrivileges":false}},"Placement":{},"ForceUpdate":0},
                "Mode":{"Replicated":{"Replicas":1}},"EndpointSpec":{}})",
         }) {
        auto checked = check_service_spec_fields(parse(body));
        ASSERT_TRUE(checked) << checked.error().message;
        EXPECT_TRUE(checked->empty());
    }
}

TEST(SpecFields, AFieldOfTheWrongShapeIsRefused) {
    auto r = check_service_spec_fields(
        parse(R"({"Name":"web","TaskTemplate":{"ContainerSpec":{"Image":"b","Privileges":"x"}}})"));
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("TaskTemplate.ContainerSpec.Privileges"), std::string::npos);
}

}  // namespace
}  // namespace coffer::model
