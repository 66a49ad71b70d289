// The CLI's reading of Docker's log stream (demultiplexing, the details of each line, the
// "name.slot.taskid@node" label the docker CLI prints before it) and of the service flags.
#include <gtest/gtest.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "format.h"
#include "logs_cmd.h"
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
