// The CLI's reading of Docker's log stream (demultiplexing, the details of each line, the
// "name.slot.taskid@node" label the docker CLI prints before it), of the service flags, and of
// the docker CLI's login state for --with-registry-auth.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "coffer/base/unique_fd.h"
#include "coffer/cli/cli.h"
#include "coffer/crypto/encoding.h"
#include "format.h"
#include "logs_cmd.h"
#include "registry_flags.h"
#include "service_flags.h"

using namespace coffer;
using namespace coffer::cli;

namespace {

std::string frame(char stream, const std::string& payload) {
    auto n = payload.size();
    std::string h{stream,
                  0,
                  0,
                  0,
                  static_cast<char>(n >> 24),
                  static_cast<char>(n >> 16),
                  static_cast<char>(n >> 8),
                  static_cast<char>(n)};
    return h + payload;
}

}  // namespace

TEST(LogStream, DemuxSplitsFramesByStream) {
    auto body =
        frame(1, "out\n") + frame(2, std::string(300, 'e')) + frame(3, "Error grabbing logs: x\n");
    auto frames = demux(body);
    ASSERT_TRUE(frames.ok()) << frames.error().message;
    ASSERT_EQ(frames->size(), 3u);
    EXPECT_EQ((*frames)[0].stream, 1);
    EXPECT_EQ((*frames)[0].payload, "out\n");
    EXPECT_EQ((*frames)[1].stream, 2);
    EXPECT_EQ((*frames)[1].payload.size(), 300u);
    EXPECT_EQ((*frames)[2].stream, 3);
    EXPECT_TRUE(demux("")->empty());
}

TEST(LogStream, DemuxRefusesCutOrUnknownFrames) {
    auto whole = frame(1, "hello\n");
    EXPECT_FALSE(demux(whole.substr(0, 5)).ok());
    EXPECT_FALSE(demux(whole.substr(0, whole.size() - 1)).ok());
    EXPECT_FALSE(demux(frame(7, "x")).ok());
}

TEST(LogStream, LineDetailsNameNodeServiceAndTask) {
    auto line = parse_log_line(
        "com.docker.swarm.node.id=n1,com.docker.swarm.service.id=s1,com.docker.swarm.task.id=t1,x="
        "a+b%2C hi there\n",
        false);
    ASSERT_TRUE(line.ok()) << line.error().message;
    EXPECT_EQ(line->node_id, "n1");
    EXPECT_EQ(line->service_id, "s1");
    EXPECT_EQ(line->task_id, "t1");
    EXPECT_EQ(line->extra.at("x"), "a b,");
    EXPECT_EQ(line->text, "hi there\n");

    auto stamped = parse_log_line(
        "2024-01-02T03:04:05.000000000Z "
        "com.docker.swarm.node.id=n,com.docker.swarm.service.id=s,com.docker.swarm.task.id=t x\n",
        true);
    ASSERT_TRUE(stamped.ok());
    EXPECT_EQ(stamped->timestamp, "2024-01-02T03:04:05.000000000Z");
    EXPECT_EQ(stamped->text, "x\n");

    EXPECT_FALSE(parse_log_line("no-details-here\n", false).ok());
    EXPECT_FALSE(parse_log_line("com.docker.swarm.node.id=n line\n", false).ok());
    EXPECT_FALSE(parse_log_line("k=%zz,com.docker.swarm.node.id=n line\n", false).ok());
}

TEST(LogStream, TaskLabelAsTheDockerCliPrintsIt) {
    const std::string id = "abcdefghijklmnopqrstuvwxy";
    EXPECT_EQ(task_label({}, "web", 1, id, "node-a"), "web.1.abcdefghijkl@node-a");
    EXPECT_EQ(task_label({.no_trunc = true}, "web", 1, id, "node-a"), "web.1." + id + "@node-a");
    EXPECT_EQ(task_label({.no_task_ids = true}, "web", 1, id, "node-a"), "web.1@node-a");
    // Slots line up: 10 replicas pad one-digit slots by one space.
    EXPECT_EQ(task_label({.width = 2}, "web", 3, id, "n"), "web.3.abcdefghijkl@n ");
    EXPECT_EQ(task_label({.width = 2}, "web", 10, id, "n"), "web.10.abcdefghijkl@n");
}

// ---- service flags ---------------------------------------------------------------------------

namespace {

namespace json = boost::json;

template <typename T>
std::string error_of(const Result<T>& r) {
    return r.ok() ? "(no error)" : r.error().message;
}

// "a b c" -> {"a", "b", "c"}.
std::vector<std::string> words(const std::string& line) {
    std::vector<std::string> out;
    std::istringstream in(line);
    for (std::string w; in >> w;) out.push_back(w);
    return out;
}

// Parses a command line with the given flags registered on a fresh command.
template <typename Flags>
void parse(Flags& flags, std::vector<std::string> args, CLI::App& cmd) {
    flags.add(&cmd);
    std::vector<const char*> argv{"service"};
    for (const auto& a : args) argv.push_back(a.c_str());
    cmd.parse(static_cast<int>(argv.size()), argv.data());
}

Result<json::object> apply(std::vector<std::string> args, json::object spec = {}) {
    CLI::App cmd;
    SpecFlags flags;
    parse(flags, std::move(args), cmd);
    if (auto r = flags.apply(spec); !r) return std::move(r).error();
    return spec;
}

}  // namespace

TEST(ServiceFlags, SecretSpecIsANameOrKeyValuePairs) {
    auto plain = parse_secret_opt("db_pass");
    ASSERT_TRUE(plain.ok()) << plain.error().message;
    EXPECT_EQ(plain->source, "db_pass");
    EXPECT_EQ(plain->target, "db_pass");
    EXPECT_EQ(plain->uid, "0");
    EXPECT_EQ(plain->gid, "0");
    EXPECT_EQ(plain->mode, 0444u);

    auto full = parse_secret_opt("source=db_pass,target=/etc/pw,uid=33,gid=44,mode=0400");
    ASSERT_TRUE(full.ok()) << full.error().message;
    EXPECT_EQ(full->source, "db_pass");
    EXPECT_EQ(full->target, "/etc/pw");
    EXPECT_EQ(full->uid, "33");
    EXPECT_EQ(full->gid, "44");
    EXPECT_EQ(full->mode, 0400u);

    // src is source's short name; the target defaults to the source's name.
    auto short_form = parse_secret_opt("src=api_key,mode=7777");
    ASSERT_TRUE(short_form.ok()) << short_form.error().message;
    EXPECT_EQ(short_form->source, "api_key");
    EXPECT_EQ(short_form->target, "api_key");
    EXPECT_EQ(short_form->mode, 07777u);
}

TEST(ServiceFlags, SecretSpecRefusesWhatDockerRefuses) {
    EXPECT_EQ(error_of(parse_secret_opt("source=a,mode=0999")), "invalid mode specified: 0999");
    EXPECT_EQ(error_of(parse_secret_opt("source=a,mode=10000")), "invalid mode specified: 10000");
    EXPECT_EQ(error_of(parse_secret_opt("source=a,mode=")), "invalid mode specified: ");
    EXPECT_EQ(error_of(parse_secret_opt("source=a,mode=04x")), "invalid mode specified: 04x");
    EXPECT_EQ(error_of(parse_secret_opt("source=a,owner=me")),
              "invalid field 'owner=me' must be a key=value pair");
    EXPECT_EQ(error_of(parse_secret_opt("source=a,,target=b")),
              "invalid field '' must be a key=value pair");
    EXPECT_EQ(error_of(parse_secret_opt("target=/x,uid=1")), "source is required");
    EXPECT_EQ(error_of(parse_secret_opt("source=")), "source is required");
    EXPECT_EQ(parse_secret_opt("source=a,mode=0999").error().code, Errc::invalid_argument);
}

TEST(ServiceFlags, SizesAre1024BasedWithOptionalUnit) {
    EXPECT_EQ(*parse_bytes("100"), 100);
    EXPECT_EQ(*parse_bytes("100b"), 100);
    EXPECT_EQ(*parse_bytes("512k"), 512 * 1024);
    EXPECT_EQ(*parse_bytes("64m"), 64LL << 20);
    EXPECT_EQ(*parse_bytes("64MB"), 64LL << 20);
    EXPECT_EQ(*parse_bytes("64MiB"), 64LL << 20);
    EXPECT_EQ(*parse_bytes("1g"), 1LL << 30);
    EXPECT_EQ(*parse_bytes("2GiB"), 2LL << 30);
    EXPECT_EQ(*parse_bytes("1.5m"), 3LL << 19);
    EXPECT_EQ(*parse_bytes("0"), 0);
    EXPECT_EQ(*parse_bytes("8e9g"), 8'000'000'000LL << 30);
}

TEST(ServiceFlags, SizesRefuseNoNumberNegativesUnknownUnitsAndWhatNoInt64Holds) {
    for (const char* bad : {"", "m", "abc", "-1m", "64x", "64 m", "1t", "64mm", "inf", "nan",
                            "-nan", "1e300", "9e9g"})
        EXPECT_EQ(error_of(parse_bytes(bad)), fmt::format("invalid size: '{}'", bad)) << bad;
}

TEST(ServiceFlags, CpusAreNanoCpus) {
    EXPECT_EQ(*parse_nano_cpus("0.5"), 500'000'000);
    EXPECT_EQ(*parse_nano_cpus("2"), 2'000'000'000);
    EXPECT_EQ(*parse_nano_cpus("0.0000000016"), 2);  // rounded to the nearest nano CPU
    EXPECT_EQ(*parse_nano_cpus("0"), 0);
    EXPECT_EQ(*parse_nano_cpus("9e9"), 9'000'000'000'000'000'000);
    for (const char* bad : {"", "half", "0.5c", "-1", "1,5", "inf", "nan", "1e10"})
        EXPECT_EQ(error_of(parse_nano_cpus(bad)),
                  fmt::format("invalid argument \"{}\" for \"--limit-cpu\" flag", bad))
            << bad;
}

TEST(ServiceFlags, CountsAreNonNegativeIntegers) {
    EXPECT_EQ(*parse_count("--replicas", "0"), 0);
    EXPECT_EQ(*parse_count("--replicas", "12"), 12);
    for (const char* bad : {"", "-1", "1.5", "12a", "x"})
        EXPECT_EQ(error_of(parse_count("--limit-pids", bad)),
                  fmt::format("invalid argument \"{}\" for \"--limit-pids\" flag", bad))
            << bad;
}

TEST(ServiceFlags, DurationsAreGoDurationsInNanoseconds) {
    EXPECT_EQ(*duration_flag("--update-delay", "10s"), 10'000'000'000);
    EXPECT_EQ(*duration_flag("--update-delay", "1m30s"), 90'000'000'000);
    EXPECT_EQ(*duration_flag("--update-delay", "250ms"), 250'000'000);
    EXPECT_EQ(*duration_flag("--update-delay", "0"), 0);
    for (const char* bad : {"", "10", "x", "5d", "-1s"})
        EXPECT_EQ(
            error_of(duration_flag("--restart-delay", bad)),
            fmt::format("invalid argument \"{0}\" for \"--restart-delay\" flag: time: invalid "
                        "duration \"{0}\"",
                        bad))
            << bad;
}

TEST(ServiceFlags, ScaleArgumentsAreServiceEqualsReplicas) {
    auto web = parse_scale_arg("web=3");
    ASSERT_TRUE(web.ok()) << web.error().message;
    EXPECT_EQ(web->service, "web");
    EXPECT_EQ(web->replicas, 3);
    EXPECT_EQ(parse_scale_arg("db=0")->replicas, 0);
    EXPECT_EQ(error_of(parse_scale_arg("web")),
              "invalid replicas value : must be a non-negative integer");
    EXPECT_EQ(error_of(parse_scale_arg("web=")),
              "invalid replicas value : must be a non-negative integer");
    EXPECT_EQ(error_of(parse_scale_arg("web=-1")),
              "invalid replicas value -1: must be a non-negative integer");
    EXPECT_EQ(error_of(parse_scale_arg("web=two")),
              "invalid replicas value two: must be a non-negative integer");
}

TEST(ServiceFlags, LabelsAreKeyValuePairs) {
    EXPECT_EQ(labels_object({"a=b", "c", "d=e=f", "a=z"}),
              (json::object{{"a", "z"}, {"c", ""}, {"d", "e=f"}}));
    EXPECT_TRUE(labels_object({}).empty());
}

TEST(ServiceFlags, EnvUpdateRemovesThenAddsByKey) {
    std::vector<std::string> env{"A=1", "B=2", "A=3", "C"};
    // --env-rm names keys (a value is ignored); --env-add replaces every entry of its key.
    EXPECT_EQ(update_env(env, {"B=9", "D=4"}, {"A=whatever"}),
              (std::vector<std::string>{"C", "B=9", "D=4"}));
    EXPECT_EQ(update_env(env, {}, {"C"}), (std::vector<std::string>{"A=1", "B=2", "A=3"}));
    EXPECT_EQ(update_env({}, {"A=1", "A=2"}, {}), (std::vector<std::string>{"A=2"}));
    EXPECT_EQ(update_env(env, {}, {"Z"}), env);
}

TEST(ServiceFlags, SecretRmDropsEveryReferenceToTheName) {
    json::value current = json::array{
        json::object{{"SecretName", "a"}, {"File", json::object{{"Name", "/one"}}}},
        json::object{{"SecretName", "b"}},
        json::object{{"SecretName", "a"}, {"File", json::object{{"Name", "/two"}}}},
    };
    EXPECT_EQ(remove_secret_refs(&current, {"a"}),
              (json::array{json::object{{"SecretName", "b"}}}));
    EXPECT_EQ(remove_secret_refs(&current, {}), current.as_array());
    EXPECT_TRUE(remove_secret_refs(&current, {"a", "b"}).empty());
    EXPECT_TRUE(remove_secret_refs(nullptr, {"a"}).empty());
    json::value not_a_list = "a";
    EXPECT_TRUE(remove_secret_refs(&not_a_list, {}).empty());
}

TEST(ServiceFlags, SpecFlagsSetTheFieldsOfTheFlagsGiven) {
    // A spec as `service create` builds it.
    auto spec = apply(
        words("--replicas 3 -u 33:44 -w /srv --limit-memory 64m --limit-cpu 0.5 --limit-pids 100 "
              "--read-only --cap-add NET_ADMIN --cap-drop CHOWN --restart-condition on-failure "
              "--restart-delay 5s --restart-max-attempts 2 --update-parallelism 2 "
              "--update-delay 10s --update-order start-first --update-failure-action rollback"),
        json::parse(R"({"Name": "web", "Labels": {},
                        "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}, "ForceUpdate": 0},
                        "Mode": {"Replicated": {"Replicas": 1}}})")
            .as_object());
    ASSERT_TRUE(spec.ok()) << spec.error().message;
    auto expected = json::parse(R"({
        "Name": "web", "Labels": {},
        "TaskTemplate": {
            "ContainerSpec": {"Image": "busybox", "User": "33:44", "Dir": "/srv", "ReadOnly": true,
                              "CapabilityAdd": ["NET_ADMIN"], "CapabilityDrop": ["CHOWN"]},
            "Resources": {"Limits": {"MemoryBytes": 67108864, "NanoCPUs": 500000000, "Pids": 100}},
            "RestartPolicy": {"Condition": "on-failure", "Delay": 5000000000, "MaxAttempts": 2},
            "ForceUpdate": 0
        },
        "Mode": {"Replicated": {"Replicas": 3}},
        "UpdateConfig": {"Parallelism": 2, "Delay": 10000000000, "Order": "start-first",
                         "FailureAction": "rollback"}
    })");
    EXPECT_EQ(json::value(*spec), expected) << json::serialize(*spec);
}

TEST(ServiceFlags, TaskOptionFlagsSetTheirFieldsAsDockerDoes) {
    auto spec = apply(
        words("--hostname h1 --init --stop-signal SIGUSR1 --stop-grace-period 20s "
              "--oom-score-adj -5 --group audio --group 50 --sysctl net.ipv4.ip_forward=1 "
              "--ulimit nofile=512:1024 --ulimit nproc=77 --host db:10.0.0.5 --host v6:fd00::1 "
              "--dns 9.9.9.9 --dns-search example.org --dns-option ndots:3"));
    ASSERT_TRUE(spec.ok()) << spec.error().message;
    auto expected = json::parse(R"({
        "Hostname": "h1", "Init": true, "StopSignal": "SIGUSR1", "StopGracePeriod": 20000000000,
        "OomScoreAdj": -5, "Groups": ["audio", "50"], "Sysctls": {"net.ipv4.ip_forward": "1"},
        "Ulimits": [{"Name": "nofile", "Soft": 512, "Hard": 1024},
                    {"Name": "nproc", "Soft": 77, "Hard": 77}],
        "Hosts": ["10.0.0.5 db", "fd00::1 v6"],
        "DNSConfig": {"Nameservers": ["9.9.9.9"], "Search": ["example.org"],
                      "Options": ["ndots:3"]}})");
    EXPECT_EQ(spec->at("TaskTemplate").at("ContainerSpec"), expected) << json::serialize(*spec);
    EXPECT_FALSE(apply(words("--ulimit nofile")).ok());
    EXPECT_FALSE(apply(words("--ulimit nofile=x")).ok());
    EXPECT_FALSE(apply(words("--host nocolon")).ok());
}

TEST(ServiceFlags, SpecFlagsAddATaskTemplateToASpecWithoutOne) {
    // The spec's table is full once TaskTemplate is added: setting the Mode grows it.
    auto spec = apply(words("--replicas 2 -u 33 --limit-memory 1k --restart-condition any"),
                      json::parse(R"({"Mode": {"Replicated": {"Replicas": 1}}})").as_object());
    ASSERT_TRUE(spec.ok()) << spec.error().message;
    EXPECT_EQ(json::value(*spec), json::parse(R"({
        "Mode": {"Replicated": {"Replicas": 2}},
        "TaskTemplate": {"ContainerSpec": {"User": "33"},
                         "Resources": {"Limits": {"MemoryBytes": 1024}},
                         "RestartPolicy": {"Condition": "any"}}
    })"))
        << json::serialize(*spec);
}

TEST(ServiceFlags, SpecFlagsLeaveWhatWasNotGivenAlone) {
    auto current = json::parse(R"({
        "Name": "web",
        "Mode": {"Replicated": {"Replicas": 5}},
        "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "User": "1"},
                         "Resources": {"Limits": {"MemoryBytes": 1024}},
                         "RestartPolicy": {"Condition": "any", "Delay": 1}},
        "UpdateConfig": {"Parallelism": 1, "Order": "stop-first"}
    })")
                       .as_object();
    auto spec = apply({"--limit-cpu", "2", "--update-order", "start-first"}, current);
    ASSERT_TRUE(spec.ok()) << spec.error().message;
    auto expected = current;
    expected["TaskTemplate"]
        .as_object()["Resources"]
        .as_object()["Limits"]
        .as_object()["NanoCPUs"] = 2'000'000'000;
    expected["UpdateConfig"].as_object()["Order"] = "start-first";
    EXPECT_EQ(*spec, expected) << json::serialize(*spec);

    // Nothing given: only the (empty) objects the flags would fill are added.
    auto untouched = apply({}, json::object{{"Name", "x"}});
    ASSERT_TRUE(untouched.ok());
    EXPECT_EQ(json::value(*untouched),
              json::parse(R"({"Name": "x", "TaskTemplate": {"ContainerSpec": {},
                              "Resources": {"Limits": {}}}})"));
}

TEST(ServiceFlags, SpecFlagsRefuseBadValuesWithTheFlagsName) {
    EXPECT_EQ(error_of(apply({"--replicas", "-2"})),
              "invalid argument \"-2\" for \"--replicas\" flag");
    EXPECT_EQ(error_of(apply({"--replicas", "2"},
                             json::object{{"Mode", json::object{{"Global", json::object{}}}}})),
              "replicas can only be used with replicated mode");
    EXPECT_EQ(error_of(apply({"--limit-memory", "lots"})), "invalid size: 'lots'");
    EXPECT_EQ(error_of(apply({"--limit-cpu", "all"})),
              "invalid argument \"all\" for \"--limit-cpu\" flag");
    EXPECT_EQ(error_of(apply({"--limit-pids", "1e3"})),
              "invalid argument \"1e3\" for \"--limit-pids\" flag");
    EXPECT_EQ(error_of(apply({"--restart-max-attempts", "x"})),
              "invalid argument \"x\" for \"--restart-max-attempts\" flag");
    EXPECT_EQ(error_of(apply({"--restart-delay", "5"})),
              "invalid argument \"5\" for \"--restart-delay\" flag: time: invalid duration \"5\"");
    EXPECT_EQ(error_of(apply({"--update-parallelism", "one"})),
              "invalid argument \"one\" for \"--update-parallelism\" flag");
    EXPECT_EQ(
        error_of(apply({"--update-delay", "soon"})),
        "invalid argument \"soon\" for \"--update-delay\" flag: time: invalid duration \"soon\"");
}

TEST(ServiceFlags, DetachFlagDecidesWhetherToWait) {
    {
        CLI::App cmd;
        WaitFlags w;
        parse(w, {"-d"}, cmd);
        EXPECT_FALSE(w.wait(&cmd));
        EXPECT_EQ(w.timeout, 120);
    }
    {
        CLI::App cmd;
        WaitFlags w;
        parse(w, {"--detach=false", "--timeout", "7"}, cmd);
        EXPECT_TRUE(w.wait(&cmd));
        EXPECT_EQ(w.timeout, 7);
    }
    {
        // Without the flag: wait only when standard output is a terminal.
        CLI::App cmd;
        WaitFlags w;
        parse(w, {}, cmd);
        EXPECT_EQ(w.wait(&cmd), ::isatty(STDOUT_FILENO) != 0);
    }
}

namespace {

const ListFormat demo_list{
    "demo ls",
    {{"ID", "ID"}, {"Name", "NAME"}, {"Self", ""}, {"Extra", "EXTRA", false}},
    "{{.ID}}\t{{.Name}}",
};

std::vector<boost::json::object> demo_rows() {
    return {{{"ID", "abc"}, {"Name", "first"}, {"Self", false}, {"Extra", "x"}},
            {{"ID", "defghijklmno"}, {"Name", "<b&>"}, {"Self", true}, {"Extra", "y"}}};
}

std::string list(std::string_view format, bool quiet = false) {
    auto out = format_list(demo_list, format, quiet, demo_rows());
    return out ? *out : "ERROR " + out.error().message;
}

}  // namespace

TEST(Format, DefaultIsATableWithDockersTitlesAndTabwriterWidths) {
    // Every column but the last is at least ten wide, or its widest cell plus three.
    EXPECT_EQ(list(""), "ID             NAME\nabc            first\ndefghijklmno   <b&>\n");
    EXPECT_EQ(list("table"), list(""));
}

TEST(Format, QuietPrintsIdsOnlyForTheDefaultTable) {
    EXPECT_EQ(list("", true), "abc\ndefghijklmno\n");
    EXPECT_EQ(list("table", true), "abc\ndefghijklmno\n");
    // A template of the user's own wins over -q, as in the docker CLI.
    EXPECT_EQ(list("{{.Name}}", true), "first\n<b&>\n");
}

TEST(Format, TemplateReplacesFieldsAndEscapes) {
    EXPECT_EQ(list("{{.Name}}: {{.ID}}"), "first: abc\n<b&>: defghijklmno\n");
    EXPECT_EQ(list("{{.ID}}\\t{{.Self}}"), "abc\tfalse\ndefghijklmno\ttrue\n");
    EXPECT_EQ(list("{{ .Name }}"), "first\n<b&>\n");
    EXPECT_EQ(list("a {{- .ID -}} b"), "aabcb\nadefghijklmnob\n");
}

TEST(Format, TablePrefixPrintsHeaderRow) {
    EXPECT_EQ(list("table {{.Name}}\\t{{.Extra}}"), "NAME      EXTRA\nfirst     x\n<b&>      y\n");
}

TEST(Format, JsonPrintsOneSortedObjectPerLineWithoutCofferFields) {
    auto expected =
        "{\"ID\":\"abc\",\"Name\":\"first\",\"Self\":false}\n"
        "{\"ID\":\"defghijklmno\",\"Name\":\"\\u003cb\\u0026\\u003e\",\"Self\":true}\n";
    EXPECT_EQ(list("json"), expected);
    EXPECT_EQ(list("{{json .}}"), expected);
    EXPECT_EQ(list("{{json .Name}}"), "\"first\"\n\"\\u003cb\\u0026\\u003e\"\n");
}

TEST(Format, UnknownFieldIsAnErrorNamingTheKnownOnes) {
    auto out = format_list(demo_list, "{{.Foo}}", false, {});
    ASSERT_FALSE(out.ok());
    EXPECT_EQ(out.error().message,
              "template: field .Foo is not known for demo ls; known: .Extra .ID .Name .Self");
    EXPECT_FALSE(format_list(demo_list, "table {{.ID.Sub}}", false, {}).ok());
}

TEST(Format, UnsupportedActionsAreRefused) {
    for (auto text :
         {"{{if .Self}}*{{end}}", "{{.ID", "{{upper .Name}}", "{{range .}}{{end}}", "{{}}"}) {
        auto t = Template::parse(text);
        ASSERT_FALSE(t.ok()) << text;
        EXPECT_EQ(t.error().message.rfind("template: ", 0), 0u) << t.error().message;
    }
}

TEST(Format, InspectWalksNestedFieldsAndFailsOnMissingOnes) {
    auto obj = boost::json::parse(
        R"({"ID":"x1","Spec":{"Name":"db","Labels":{"a":"b"}},"Version":{"Index":7}})");
    auto out = format_inspect("secret inspect",
                              "{{.Spec.Name}} {{.Version.Index}} {{json .Spec.Labels}}", {obj});
    ASSERT_TRUE(out.ok()) << out.error().message;
    EXPECT_EQ(*out, "db 7 {\"a\":\"b\"}\n");
    auto json = format_inspect("secret inspect", "json", {obj});
    ASSERT_TRUE(json.ok());
    EXPECT_EQ(boost::json::parse(*json), obj);
    auto missing = format_inspect("secret inspect", "{{.Spec.Nme}}", {obj});
    ASSERT_FALSE(missing.ok());
    EXPECT_EQ(
        missing.error().message,
        "template: field .Spec.Nme is not known for secret inspect in .Spec; known: .Labels .Name");
}

TEST(Format, AlignColumnsCountsCharactersNotBytes) {
    EXPECT_EQ(align_columns("a\u2026\tb\nccc\td\n"), "a\u2026        b\nccc       d\n");
    EXPECT_EQ(align_columns("id\t\n"), "id        \n");
}

TEST(Format, ImagesLoseTheirDigestOnlyWhenTagged) {
    EXPECT_EQ(image_without_digest("busybox:1@sha256:abc"), "busybox:1");
    EXPECT_EQ(image_without_digest("docker.io/library/busybox:1@sha256:abc"), "busybox:1");
    EXPECT_EQ(image_without_digest("reg:5000/busybox@sha256:abc"), "reg:5000/busybox@sha256:abc");
    EXPECT_EQ(image_without_digest("busybox:1"), "busybox:1");
    EXPECT_EQ(truncate_id("0123456789abcdef"), "0123456789ab");
}

TEST(ServiceFlags, HealthFlagsSetTheHealthcheckAsTheDockerCliDoes) {
    std::vector<std::string> args{
        "--health-cmd",          "test -f /ok", "--health-interval",       "2s",
        "--health-timeout",      "500ms",       "--health-retries",        "4",
        "--health-start-period", "1m",          "--health-start-interval", "3s"};
    auto spec = apply(args);
    ASSERT_TRUE(spec.ok()) << spec.error().message;
    EXPECT_EQ(json::value(spec->at("TaskTemplate").at("ContainerSpec").at("Healthcheck")),
              json::parse(R"({"Test": ["CMD-SHELL", "test -f /ok"], "Interval": 2000000000,
                             "Timeout": 500000000, "StartPeriod": 60000000000,
                             "StartInterval": 3000000000, "Retries": 4})"));

    // An update changes only what it names, and a command replaces NONE.
    auto updated = apply(words("--health-retries 1"),
                         json::parse(R"({"TaskTemplate": {"ContainerSpec": {"Healthcheck":
                             {"Test": ["NONE"], "Interval": 1000000}}}})")
                             .as_object());
    ASSERT_TRUE(updated.ok()) << updated.error().message;
    EXPECT_EQ(json::value(updated->at("TaskTemplate").at("ContainerSpec").at("Healthcheck")),
              json::parse(R"({"Interval": 1000000, "Retries": 1})"));

    auto off = apply(words("--no-healthcheck"),
                     json::parse(R"({"TaskTemplate": {"ContainerSpec": {"Healthcheck":
                         {"Test": ["CMD", "true"], "Interval": 1000000}}}})")
                         .as_object());
    ASSERT_TRUE(off.ok()) << off.error().message;
    EXPECT_EQ(json::value(off->at("TaskTemplate").at("ContainerSpec").at("Healthcheck")),
              json::parse(R"({"Test": ["NONE"]})"));

    auto both = apply(words("--no-healthcheck --health-retries 2"));
    ASSERT_FALSE(both.ok());
    EXPECT_EQ(both.error().message, "--no-healthcheck conflicts with --health-* options");
    auto bad = apply(words("--health-interval soon"));
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().message.find("--health-interval"), std::string::npos);
}

TEST(ServiceFlags, MountSpecsAreReadAsTheDockerCliReadsThem) {
    auto tmp = parse_mount_opt("type=tmpfs,target=/scratch,tmpfs-size=1m,tmpfs-mode=0750,ro");
    ASSERT_TRUE(tmp) << tmp.error().message;
    EXPECT_EQ(boost::json::serialize(*tmp),
              R"({"Type":"tmpfs","Target":"/scratch","ReadOnly":true,)"
              R"("TmpfsOptions":{"SizeBytes":1048576,"Mode":488}})");
    auto bind = parse_mount_opt(
        "type=bind,src=/srv,dst=/data,readonly=false,bind-propagation=rprivate,bind-nonrecursive");
    ASSERT_TRUE(bind) << bind.error().message;
    EXPECT_EQ(boost::json::serialize(*bind),
              R"({"Type":"bind","Source":"/srv","Target":"/data","ReadOnly":false,)"
              R"("BindOptions":{"Propagation":"rprivate","NonRecursive":true}})");
    auto vol = parse_mount_opt("source=db,target=/db,volume-nocopy,volume-label=app=db");
    ASSERT_TRUE(vol) << vol.error().message;
    EXPECT_EQ(boost::json::serialize(*vol),
              R"({"Source":"db","Target":"/db","Type":"volume",)"
              R"("VolumeOptions":{"NoCopy":true,"Labels":{"app":"db"}}})");
    EXPECT_FALSE(parse_mount_opt("type=volume,source=db"));                       // no target
    EXPECT_FALSE(parse_mount_opt("type=bind,source=/a,target=/b,tmpfs-size=1"));  // mixed
    EXPECT_FALSE(parse_mount_opt("type=tmpfs,target=/b,tmpfs-mode=9"));
    EXPECT_FALSE(parse_mount_opt("type=tmpfs,target=/b,colour=red"));
    EXPECT_FALSE(parse_mount_opt("type=tmpfs,target=/b,readonly=maybe"));

    boost::json::array current{boost::json::object{{"Target", "/a"}},
                               boost::json::object{{"Target", "/b"}}};
    boost::json::value cur(current);
    auto left = remove_mounts(&cur, {"/a"});
    ASSERT_EQ(left.size(), 1u);
    EXPECT_EQ(left[0].at("Target").as_string(), "/b");
}

// ---- registry flags --------------------------------------------------------------------------

namespace {

// The registry flags of a command line, as the command sees them.
struct RegistryArgs {
    Result<std::string> query;  // the resolveImage parameter, or the flags' error
    RegistryFlags flags;
    bool auth_secret_given = false;
};

RegistryArgs registry_args(std::vector<std::string> args,
                           std::string_view default_resolve = "always") {
    CLI::App cmd;
    RegistryFlags flags;
    flags.add(&cmd, default_resolve);
    std::vector<const char*> argv{"service"};
    for (const auto& a : args) argv.push_back(a.c_str());
    cmd.parse(static_cast<int>(argv.size()), argv.data());
    return {flags.query(&cmd), flags, flags.auth_secret_given(&cmd)};
}

Result<std::string> registry_query(std::vector<std::string> args,
                                   std::string_view default_resolve = "always") {
    return registry_args(std::move(args), default_resolve).query;
}

}  // namespace

TEST(RegistryFlags, ResolveImageDefaultsAsDockersAndTakesOnlyItsThreeValues) {
    EXPECT_EQ(error_of(parse_resolve_image("changed")), "(no error)");
    EXPECT_EQ(*parse_resolve_image("never"), "never");
    EXPECT_EQ(error_of(parse_resolve_image("sometimes")),
              "invalid argument \"sometimes\" for \"--resolve-image\" flag: use always, changed "
              "or never");
    EXPECT_FALSE(parse_resolve_image(""));
    EXPECT_FALSE(parse_resolve_image("Always"));

    EXPECT_EQ(*registry_query({}), "resolveImage=always");
    EXPECT_EQ(*registry_query({}, "changed"), "resolveImage=changed");
    EXPECT_EQ(*registry_query({"--resolve-image", "never"}), "resolveImage=never");
    EXPECT_EQ(*registry_query({"--resolve-image=always"}, "changed"), "resolveImage=always");
    auto bad = registry_query({"--resolve-image", "latest"});
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().code, Errc::invalid_argument);
    EXPECT_NE(bad.error().message.find("--resolve-image"), std::string::npos);
}

TEST(RegistryFlags, RegistryAuthSecretMayBeEmptyButNotBesideWithRegistryAuth) {
    auto removed = registry_args({"--registry-auth-secret", ""}, "changed");
    ASSERT_TRUE(removed.query) << removed.query.error().message;
    EXPECT_TRUE(removed.auth_secret_given);
    EXPECT_EQ(removed.flags.auth_secret, "");
    auto named = registry_args({"--registry-auth-secret", "hub-login"}, "changed");
    EXPECT_TRUE(named.auth_secret_given);
    EXPECT_EQ(named.flags.auth_secret, "hub-login");
    auto login = registry_args({"--with-registry-auth"}, "changed");
    ASSERT_TRUE(login.query) << login.query.error().message;
    EXPECT_FALSE(login.auth_secret_given);
    EXPECT_TRUE(login.flags.with_registry_auth);
    EXPECT_EQ(error_of(registry_query({"--with-registry-auth", "--registry-auth-secret", "x"})),
              "--with-registry-auth and --registry-auth-secret cannot be used together");
}

TEST(RegistryFlags, RegistryAuthSecretNamesTheSecretInTheContainerSpec) {
    json::object spec{
        {"Name", "web"},
        {"TaskTemplate", json::object{{"ContainerSpec", json::object{{"Image", "app:1"}}}}}};
    auto secret = json::parse(R"({"ID":"s3cr3tid","Spec":{"Name":"hub-login"}})");
    ASSERT_TRUE(set_registry_auth(spec, &secret));
    EXPECT_EQ(json::serialize(spec),
              R"({"Name":"web","TaskTemplate":{"ContainerSpec":{"Image":"app:1",)"
              R"("CofferRegistryAuth":{"SecretID":"s3cr3tid","SecretName":"hub-login"}}}})");
    // Removal is an explicit null, which the manager reads as "no credentials".
    ASSERT_TRUE(set_registry_auth(spec, nullptr));
    EXPECT_EQ(json::serialize(spec),
              R"({"Name":"web","TaskTemplate":{"ContainerSpec":{"Image":"app:1",)"
              R"("CofferRegistryAuth":null}}})");
    json::object bare;
    ASSERT_TRUE(set_registry_auth(bare, &secret));
    EXPECT_EQ(json::serialize(bare), R"({"TaskTemplate":{"ContainerSpec":{"CofferRegistryAuth":)"
                                     R"({"SecretID":"s3cr3tid","SecretName":"hub-login"}}}})");
    auto nameless = json::parse(R"({"ID":"x"})");
    EXPECT_FALSE(set_registry_auth(bare, &nameless));
}

TEST(RegistryAuth, ImageRegistryIsTheFirstComponentWhenItIsAHost) {
    EXPECT_EQ(image_registry("busybox"), "docker.io");
    EXPECT_EQ(image_registry("busybox:1.36"), "docker.io");
    EXPECT_EQ(image_registry("team/app:1"), "docker.io");
    EXPECT_EQ(image_registry("docker.io/library/busybox"), "docker.io");
    EXPECT_EQ(image_registry("index.docker.io/team/app"), "docker.io");
    EXPECT_EQ(image_registry("registry.example/app@sha256:abc"), "registry.example");
    EXPECT_EQ(image_registry("registry.example:5000/team/app:1"), "registry.example:5000");
    EXPECT_EQ(image_registry("localhost/app"), "localhost");
    EXPECT_EQ(image_registry("localhost:5000/app"), "localhost:5000");
}

namespace {

// A temporary DOCKER_CONFIG directory, removed with what it holds.
class ConfigDir {
  public:
    ConfigDir() {
        std::string tmpl = (std::filesystem::temp_directory_path() / "coffer-cli-XXXXXX").string();
        if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
        path_ = tmpl;
    }
    ~ConfigDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    ConfigDir(const ConfigDir&) = delete;
    ConfigDir& operator=(const ConfigDir&) = delete;

    const std::string& path() const { return path_; }
    void write(const std::string& config) const {
        std::ofstream(path_ + "/config.json", std::ios::trunc) << config;
    }

  private:
    std::string path_;
};

std::string b64(std::string_view s) {
    return crypto::base64_encode(
        std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(s.data()), s.size()));
}

std::string text_of(const crypto::SecureBuffer& b) {
    return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

// The header's JSON, decoded as the manager decodes it (URL-safe alphabet, padding kept).
json::object decode_header(const crypto::SecureBuffer& header) {
    auto text = text_of(header);
    EXPECT_EQ(text.find_first_of("+/"), std::string::npos) << "not the URL-safe alphabet";
    EXPECT_EQ(text.size() % 4, 0u) << "padding dropped";
    for (auto& c : text) {
        if (c == '-') c = '+';
        if (c == '_') c = '/';
    }
    auto decoded = crypto::base64_decode_secure(text);
    if (!decoded) {
        ADD_FAILURE() << "not base64";
        return {};
    }
    return json::parse(text_of(*decoded)).as_object();
}

}  // namespace

TEST(RegistryAuth, HeaderCarriesTheLoginOfTheImagesRegistry) {
    ConfigDir dir;
    // '?' and '>' runs make the standard alphabet's '/' and '+' appear in the encoding.
    const std::string password =
        "pa:??????"
        ">>>>>>ss";
    dir.write(R"({"auths":{"https://index.docker.io/v1/":{"auth":")" + b64("alice:" + password) +
              R"("},"https://registry.example:5000":{"auth":")" + b64("bob:builder") +
              R"("},"localhost:5000":{"auth":"x","identitytoken":"tok-123"}}})");

    auto hub = registry_auth_header("team/app:1", dir.path());
    ASSERT_TRUE(hub) << hub.error().message;
    ASSERT_TRUE(hub->has_value());
    auto hub_json = decode_header(**hub);
    EXPECT_EQ(hub_json, (json::object{{"username", "alice"},
                                      {"password", password},
                                      {"serveraddress", "https://index.docker.io/v1/"}}));
    auto standard = b64(json::serialize(hub_json));
    ASSERT_NE(standard.find_first_of("+/"), std::string::npos);

    // A key with a scheme names its host, as the docker CLI reads legacy keys.
    auto priv = registry_auth_header("registry.example:5000/team/app", dir.path());
    ASSERT_TRUE(priv) << priv.error().message;
    ASSERT_TRUE(priv->has_value());
    EXPECT_EQ(decode_header(**priv), (json::object{{"username", "bob"},
                                                   {"password", "builder"},
                                                   {"serveraddress", "registry.example:5000"}}));

    // An identity token is sent instead of the user and password.
    auto token = registry_auth_header("localhost:5000/app", dir.path());
    ASSERT_TRUE(token) << token.error().message;
    ASSERT_TRUE(token->has_value());
    EXPECT_EQ(decode_header(**token),
              (json::object{{"identitytoken", "tok-123"}, {"serveraddress", "localhost:5000"}}));
}

TEST(RegistryAuth, HubCredentialsMayBeUnderItsShortNames) {
    ConfigDir dir;
    dir.write(R"({"auths":{"docker.io":{"auth":")" + b64("carol:pw") + R"("}}})");
    auto hub = registry_auth_header("busybox", dir.path());
    ASSERT_TRUE(hub) << hub.error().message;
    ASSERT_TRUE(hub->has_value());
    EXPECT_EQ(decode_header(**hub),
              (json::object{{"username", "carol"},
                            {"password", "pw"},
                            {"serveraddress", "https://index.docker.io/v1/"}}));
}

TEST(RegistryAuth, NoEntryNoFileNoHeader) {
    ConfigDir dir;
    auto missing = registry_auth_header("busybox", dir.path());
    ASSERT_TRUE(missing) << missing.error().message;
    EXPECT_FALSE(missing->has_value());

    dir.write(R"({"auths":{"registry.example":{"auth":")" + b64("dave:pw") + R"("}}})");
    for (const char* image : {"busybox", "other.example/app", "registry.example:5000/app"}) {
        auto none = registry_auth_header(image, dir.path());
        ASSERT_TRUE(none) << image << ": " << none.error().message;
        EXPECT_FALSE(none->has_value()) << image;
    }
    // An entry without credentials (what `docker login` leaves beside a helper) is none too.
    dir.write(R"({"auths":{"registry.example":{}}})");
    auto empty = registry_auth_header("registry.example/app", dir.path());
    ASSERT_TRUE(empty) << empty.error().message;
    EXPECT_FALSE(empty->has_value());
}

TEST(RegistryAuth, CredentialHelpersAreRefusedWithoutNamingCredentials) {
    ConfigDir dir;
    const std::string auth = b64("erin:hunter2-secret");
    dir.write(R"({"auths":{"registry.example":{"auth":")" + auth +
              R"("}},"credsStore":"desktop"})");
    auto store = registry_auth_header("registry.example/app", dir.path());
    ASSERT_FALSE(store);
    EXPECT_NE(store.error().message.find("credential helper"), std::string::npos);
    EXPECT_NE(store.error().message.find("--registry-auth-secret"), std::string::npos);
    EXPECT_EQ(store.error().message.find("hunter2"), std::string::npos);
    EXPECT_EQ(store.error().message.find(auth), std::string::npos);

    dir.write(R"({"auths":{"registry.example":{"auth":")" + auth +
              R"("}},"credHelpers":{"registry.example":"ecr-login"}})");
    auto helper = registry_auth_header("registry.example/app", dir.path());
    ASSERT_FALSE(helper);
    EXPECT_NE(helper.error().message.find("credential helper"), std::string::npos);
    // A helper for another registry leaves this one's credentials usable.
    auto other = registry_auth_header("elsewhere.example/app", dir.path());
    ASSERT_TRUE(other) << other.error().message;
    EXPECT_FALSE(other->has_value());
}

TEST(RegistryAuth, MalformedConfigsAreErrorsWithoutTheirContent) {
    ConfigDir dir;
    dir.write(R"({"auths":{"registry.example":{"auth":"hunter2!"}}})");
    auto bad = registry_auth_header("registry.example/app", dir.path());
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().message.find("hunter2"), std::string::npos);
    dir.write(R"({"auths":{"registry.example":{"auth":")" + b64("no-colon-here") + R"("}}})");
    EXPECT_FALSE(registry_auth_header("registry.example/app", dir.path()));
    dir.write(R"({"auths":)");
    EXPECT_FALSE(registry_auth_header("registry.example/app", dir.path()));
}

TEST(RegistryAuth, ConfigDirIsDockerConfigElseHomeDotDocker) {
    auto saved = [](const char* name) -> std::optional<std::string> {
        const char* v = std::getenv(name);
        return v ? std::optional<std::string>(v) : std::nullopt;
    };
    auto docker_config = saved("DOCKER_CONFIG");
    auto home = saved("HOME");
    ::setenv("DOCKER_CONFIG", "/etc/somewhere", 1);
    EXPECT_EQ(docker_config_dir(), "/etc/somewhere");
    ::unsetenv("DOCKER_CONFIG");
    ::setenv("HOME", "/home/someone", 1);
    EXPECT_EQ(docker_config_dir(), "/home/someone/.docker");
    for (auto [name, value] :
         {std::pair{"DOCKER_CONFIG", &docker_config}, std::pair{"HOME", &home}})
        if (*value)
            ::setenv(name, (*value)->c_str(), 1);
        else
            ::unsetenv(name);
}

// ---- the commands against a fake cofferd ------------------------------------------------------

namespace {

struct SeenRequest {
    std::string method, target, head, body;
};

// A cofferd stand-in on a unix socket in a temporary directory: answers each request with
// `answer(method, target)` ({status, JSON body}) and records what it was sent.
class FakeDaemon {
  public:
    using Answer = std::function<std::pair<int, std::string>(const SeenRequest&)>;

    explicit FakeDaemon(Answer answer) : answer_(std::move(answer)) {
        socket_ = dir_.path() + "/cofferd.sock";
        listener_ = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", socket_.c_str());
        if (!listener_ ||
            ::bind(listener_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) ||
            ::listen(listener_.get(), 4))
            throw std::runtime_error("fake cofferd cannot listen");
        thread_ = std::thread([this] { serve(); });
    }
    ~FakeDaemon() {
        stop_ = true;
        thread_.join();
        for (auto& t : connections_) t.join();
    }
    FakeDaemon(const FakeDaemon&) = delete;
    FakeDaemon& operator=(const FakeDaemon&) = delete;

    std::string host() const { return "unix://" + socket_; }
    // What was sent, once the command has returned.
    std::vector<SeenRequest> seen() {
        std::lock_guard lock(mu_);
        return seen_;
    }

  private:
    void serve() {
        while (!stop_) {
            pollfd p{listener_.get(), POLLIN, 0};
            if (::poll(&p, 1, 20) <= 0) continue;
            // A thread per connection: a command keeps its first open while it sends a request
            // with a secret header on another.
            UniqueFd conn(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
            if (conn)
                connections_.emplace_back([this, c = std::make_shared<UniqueFd>(std::move(conn))] {
                    serve_connection(c->get());
                });
        }
    }

    // read(2), giving up once the daemon stops: a test that fails cannot hang on it.
    ssize_t read_some(int fd, char* buf, std::size_t size) {
        for (;;) {
            if (stop_) return -1;
            pollfd p{fd, POLLIN, 0};
            if (::poll(&p, 1, 20) > 0) return ::read(fd, buf, size);
        }
    }

    // Requests one after another until the client closes (or asks to close).
    void serve_connection(int fd) {
        std::string in;
        char buf[4096];
        for (;;) {
            auto end = in.find("\r\n\r\n");
            while (end == std::string::npos) {
                auto n = read_some(fd, buf, sizeof buf);
                if (n <= 0) return;
                in.append(buf, static_cast<std::size_t>(n));
                end = in.find("\r\n\r\n");
            }
            SeenRequest r;
            r.head = in.substr(0, end);
            std::istringstream line(r.head);
            line >> r.method >> r.target;
            std::size_t length = 0;
            if (auto cl = r.head.find("Content-Length: "); cl != std::string::npos)
                length = std::stoul(r.head.substr(cl + 16));
            while (in.size() < end + 4 + length) {
                auto n = read_some(fd, buf, sizeof buf);
                if (n <= 0) return;
                in.append(buf, static_cast<std::size_t>(n));
            }
            r.body = in.substr(end + 4, length);
            in.erase(0, end + 4 + length);
            auto [status, body] = answer_(r);
            {
                std::lock_guard lock(mu_);
                seen_.push_back(r);
            }
            auto reply = fmt::format(
                "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
                status, body.size(), body);
            if (::write(fd, reply.data(), reply.size()) != static_cast<ssize_t>(reply.size()))
                return;
        }
    }

    ConfigDir dir_;
    std::string socket_;
    UniqueFd listener_;
    Answer answer_;
    std::atomic<bool> stop_{false};
    std::mutex mu_;
    std::vector<SeenRequest> seen_;
    std::vector<std::thread> connections_;  // used by the accepting thread only
    std::thread thread_;
};

int run_cli(std::vector<std::string> args) {
    std::vector<char*> argv{const_cast<char*>("coffer")};
    for (auto& a : args) argv.push_back(a.data());
    return coffer::cli::run(static_cast<int>(argv.size()), argv.data());
}

// The header's value as the fake daemon saw it ("" when absent).
std::string header_value(const SeenRequest& r, std::string_view name) {
    auto at = r.head.find(std::string("\r\n") + std::string(name) + ": ");
    if (at == std::string::npos) return "";
    at += name.size() + 4;
    return r.head.substr(at, r.head.find("\r\n", at) - at);
}

// A DOCKER_CONFIG for the test's duration, restored after.
class DockerConfigEnv {
  public:
    explicit DockerConfigEnv(const std::string& dir) {
        if (const char* v = std::getenv("DOCKER_CONFIG")) saved_ = v;
        ::setenv("DOCKER_CONFIG", dir.c_str(), 1);
    }
    ~DockerConfigEnv() {
        if (saved_)
            ::setenv("DOCKER_CONFIG", saved_->c_str(), 1);
        else
            ::unsetenv("DOCKER_CONFIG");
    }
    DockerConfigEnv(const DockerConfigEnv&) = delete;
    DockerConfigEnv& operator=(const DockerConfigEnv&) = delete;

  private:
    std::optional<std::string> saved_;
};

}  // namespace

// Usage errors end as the docker CLI's do, with no request sent: 1 for missing or extra
// arguments, 125 for an unknown option, 0 after help.
TEST(Usage, ExitStatusesAreTheDockerClis) {
    FakeDaemon daemon([](const SeenRequest&) -> std::pair<int, std::string> {
        return {500, R"({"message":"no request was expected"})"};
    });
    EXPECT_EQ(run_cli({"-H", daemon.host(), "secret", "create"}), 1);
    EXPECT_EQ(run_cli({"-H", daemon.host(), "secret", "create", "a", "b", "c"}), 1);
    EXPECT_EQ(run_cli({"-H", daemon.host(), "secret", "ls", "--bogus"}), 125);
    EXPECT_EQ(run_cli({"-H", daemon.host(), "secret", "ls", "x", "--bogus"}), 125);
    EXPECT_EQ(run_cli({"-H", daemon.host(), "secret", "ls", "--help"}), 0);
    EXPECT_TRUE(daemon.seen().empty());
}

TEST(ServiceCommands, CreateSendsTheRegistryFlags) {
    FakeDaemon daemon([](const SeenRequest& r) -> std::pair<int, std::string> {
        if (r.method == "GET" && r.target == "/v1.41/secrets/hub-login")
            return {200, R"({"ID":"sid1","Spec":{"Name":"hub-login"}})"};
        if (r.method == "POST" && r.target.starts_with("/v1.41/services/create"))
            return {201, R"({"ID":"svc1"})"};
        return {404, R"({"message":"no such thing"})"};
    });
    ASSERT_EQ(run_cli({"-H", daemon.host(), "service", "create", "-d", "--name", "web",
                       "--registry-auth-secret", "hub-login", "--resolve-image", "never",
                       "registry.example/app:1"}),
              0);
    auto seen = daemon.seen();
    ASSERT_EQ(seen.size(), 2u);
    EXPECT_EQ(seen[1].target, "/v1.41/services/create?resolveImage=never");
    EXPECT_EQ(header_value(seen[1], "X-Registry-Auth"), "");
    auto body = json::parse(seen[1].body);
    EXPECT_EQ(json::serialize(body.at_pointer("/TaskTemplate/ContainerSpec/CofferRegistryAuth")),
              R"({"SecretID":"sid1","SecretName":"hub-login"})");

    // An unknown secret, a bad --resolve-image: refused, the second before any request.
    EXPECT_EQ(run_cli({"-H", daemon.host(), "service", "create", "-d", "--registry-auth-secret",
                       "nope", "app"}),
              1);
    auto before = daemon.seen().size();
    EXPECT_EQ(run_cli({"-H", daemon.host(), "service", "create", "-d", "--resolve-image", "maybe",
                       "app"}),
              1);
    EXPECT_EQ(daemon.seen().size(), before);
}

TEST(ServiceCommands, WithRegistryAuthSendsTheLoginAsXRegistryAuth) {
    ConfigDir config;
    config.write(R"({"auths":{"registry.example":{"auth":")" + b64("alice:pw:1") + R"("}}})");
    DockerConfigEnv env(config.path());
    FakeDaemon daemon([](const SeenRequest& r) -> std::pair<int, std::string> {
        if (r.method == "GET" && r.target.starts_with("/v1.41/services/web"))
            return {200, R"({"ID":"svc1","Version":{"Index":7},"Spec":{"Name":"web",)"
                         R"("TaskTemplate":{"ContainerSpec":{"Image":"registry.example/app:1",)"
                         R"("CofferRegistryAuth":{"SecretID":"old","SecretName":"old"}}}}})"};
        if (r.method == "POST") return {200, R"({})"};
        return {404, R"({"message":"no such thing"})"};
    });
    ASSERT_EQ(
        run_cli({"-H", daemon.host(), "service", "update", "-d", "--with-registry-auth", "web"}),
        0);
    auto seen = daemon.seen();
    ASSERT_EQ(seen.size(), 2u);
    EXPECT_EQ(seen[1].target, "/v1.41/services/svc1/update?version=7&resolveImage=changed");
    auto header = header_value(seen[1], "X-Registry-Auth");
    ASSERT_FALSE(header.empty());
    EXPECT_EQ(
        decode_header(crypto::SecureBuffer::copy_of(header)),
        (json::object{
            {"username", "alice"}, {"password", "pw:1"}, {"serveraddress", "registry.example"}}));
    // Without --registry-auth-secret, the spec's CofferRegistryAuth goes back as it was.
    EXPECT_EQ(
        json::serialize(
            json::parse(seen[1].body).at_pointer("/TaskTemplate/ContainerSpec/CofferRegistryAuth")),
        R"({"SecretID":"old","SecretName":"old"})");

    // --registry-auth-secret "" sends an explicit null; no login for the image: no header.
    ASSERT_EQ(run_cli({"-H", daemon.host(), "service", "update", "-d", "--registry-auth-secret", "",
                       "--image", "other.example/app:2", "web"}),
              0);
    ASSERT_EQ(run_cli({"-H", daemon.host(), "service", "update", "-d", "--with-registry-auth",
                       "--image", "other.example/app:2", "web"}),
              0);
    seen = daemon.seen();
    ASSERT_EQ(seen.size(), 6u);
    EXPECT_TRUE(json::parse(seen[3].body)
                    .at_pointer("/TaskTemplate/ContainerSpec/CofferRegistryAuth")
                    .is_null());
    EXPECT_EQ(header_value(seen[5], "X-Registry-Auth"), "");

    // A credential helper: refused before the update is sent.
    config.write(R"({"credsStore":"desktop"})");
    EXPECT_EQ(
        run_cli({"-H", daemon.host(), "service", "update", "-d", "--with-registry-auth", "web"}),
        1);
    EXPECT_EQ(daemon.seen().size(), 7u);  // the service's GET only
}
