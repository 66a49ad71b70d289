#include <gtest/gtest.h>
#include <csignal>
#include <cstdio>
#include <ctime>

#include <functional>
#include <random>
#include <set>

#include "coffer/crypto/random.h"
#include "coffer/model/duration.h"
#include "coffer/model/filters.h"
#include "coffer/model/ids.h"
#include "coffer/model/ipv4.h"
#include "coffer/model/json.h"
#include "coffer/model/secret.h"
#include "coffer/model/secure_json.h"
#include "coffer/model/time.h"

using namespace coffer;
using namespace coffer::model;
namespace json = boost::json;

TEST(SecretName, AcceptsDockerNames) {
    for (const std::string& n :
         std::vector<std::string>{"a", "db_pass", "db-pass.v2", "A1", std::string(64, 'x')})
        EXPECT_TRUE(validate_object_name(n).ok()) << n;
}

TEST(SecretName, RefusesWhatDockerRefuses) {
    for (const std::string& n : std::vector<std::string>{"", "-a", "a-", "_a", "a.", "a b", "a/b",
                                                         "\xc3\xa4", "a\n", std::string(65, 'x')}) {
        auto r = validate_object_name(n);
        ASSERT_FALSE(r.ok()) << n;
        EXPECT_EQ(r.error().code, Errc::invalid_argument);
    }
    EXPECT_EQ(validate_object_name("-x").error().message,
              "invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end "
              "character must be [a-zA-Z0-9]");
}

TEST(SecretSize, OneTo511999Bytes) {
    EXPECT_FALSE(validate_secret_size(0).ok());
    EXPECT_TRUE(validate_secret_size(1).ok());
    EXPECT_TRUE(validate_secret_size(511999).ok());
    EXPECT_FALSE(validate_secret_size(512000).ok());
    EXPECT_EQ(validate_secret_size(0).error().message,
              "secret data must be larger than 0 and less than 512000 bytes");
}

TEST(Labels, RefuseEmptyKeys) {
    EXPECT_TRUE(validate_labels({{"k", ""}, {"env", "prod"}}).ok());
    EXPECT_FALSE(validate_labels({{"", "v"}}).ok());
}

TEST(Time, FormatsWithNanoseconds) {
    Timestamp t{1795423230781457278};
    EXPECT_EQ(format_rfc3339(t), "2026-11-23T08:40:30.781457278Z");
    EXPECT_EQ(parse_rfc3339("2026-11-23T08:40:30.781457278Z"), t);
    EXPECT_EQ(parse_rfc3339("2026-11-23T09:40:30.781457278+01:00"), t);
    EXPECT_FALSE(parse_rfc3339("2026-11-23 08:40:30Z"));
    EXPECT_FALSE(parse_rfc3339("2026-13-23T08:40:30Z"));
    EXPECT_FALSE(parse_rfc3339("2026-11-23T08:40:30.Z"));
}

// The calendar arithmetic against the C library's gmtime_r, over leap days, century and
// 400-year boundaries, the epoch and times before it, and random instants over the whole range
// a Timestamp holds (1677 to 2262).
TEST(Time, FormatsAsGmtimeDoes) {
    auto expected = [](std::int64_t nanos) {
        std::int64_t secs = nanos / 1'000'000'000, frac = nanos % 1'000'000'000;
        if (frac < 0) frac += 1'000'000'000, --secs;
        time_t tt = static_cast<time_t>(secs);
        struct tm tm {};
        ::gmtime_r(&tt, &tm);
        char text[64];
        std::snprintf(text, sizeof text, "%04d-%02d-%02dT%02d:%02d:%02d.%09lldZ", tm.tm_year + 1900,
                      tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                      static_cast<long long>(frac));
        return std::string(text);
    };
    std::vector<std::int64_t> secs{0,
                                   -1,
                                   86'399,
                                   86'400,
                                   951'782'400,
                                   951'868'799,
                                   4'107'542'400,
                                   4'107'628'800,
                                   -2'208'988'800,
                                   946'684'799,
                                   946'684'800,
                                   -5'000'000'000};
    std::mt19937_64 rng(7);
    for (int i = 0; i < 20'000; ++i)
        secs.push_back(static_cast<std::int64_t>(rng() % 18'000'000'000ULL) - 9'000'000'000);
    for (auto s : secs)
        for (std::int64_t frac : {std::int64_t{0}, std::int64_t{1}, std::int64_t{999'999'999}}) {
            auto nanos = s * 1'000'000'000 + frac;
            ASSERT_EQ(format_rfc3339(Timestamp{nanos}), expected(nanos)) << nanos;
        }
}

TEST(Filters, ParsesBothShapes) {
    auto a = Filters::parse(R"({"name":{"s":true},"label":{"env=prod":true}})", {"name", "label"});
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(a->get("name"), std::vector<std::string>{"s"});
    auto b = Filters::parse(R"({"name":["s1","s2"]})", {"name"});
    ASSERT_TRUE(b.ok());
    EXPECT_EQ(b->get("name").size(), 2u);
}

TEST(Filters, RefusesUnknownKeysAndBadJson) {
    EXPECT_EQ(Filters::parse(R"({"bogus":{"x":true}})", {"name"}).error().message,
              "invalid filter 'bogus'");
    EXPECT_FALSE(Filters::parse("{", {"name"}).ok());
    EXPECT_FALSE(Filters::parse(R"({"name":"x"})", {"name"}).ok());
}

TEST(Filters, MatchPrefixExactAndLabels) {
    auto f = Filters::parse(R"({"name":{"s":true},"label":{"env=prod":true,"team":true}})",
                            {"name", "label"});
    ASSERT_TRUE(f.ok());
    EXPECT_TRUE(f->match_prefix("name", "s1"));
    EXPECT_FALSE(f->match_prefix("name", "db_pass"));
    EXPECT_TRUE(f->match_prefix("id", "anything"));
    EXPECT_TRUE(f->match_labels({{"env", "prod"}, {"team", ""}}));
    EXPECT_FALSE(f->match_labels({{"env", "dev"}, {"team", ""}}));
    EXPECT_FALSE(f->match_labels({{"env", "prod"}}));
}

TEST(SecretJson, RoundTripsWithoutData) {
    Secret s{{"l6049huigpebyacg3j6qbcvgu", 23, Timestamp{1}, Timestamp{2}},
             {"s1", {{"env", "prod"}}}};
    auto j = to_json(s);
    EXPECT_FALSE(j.at("Spec").as_object().contains("Data"));
    EXPECT_EQ(j.at("Version").at("Index").as_uint64(), 23u);
    auto back = secret_from_json(j);
    ASSERT_TRUE(back.ok()) << back.error().message;
    EXPECT_EQ(back->spec.name, "s1");
    EXPECT_EQ(back->spec.labels.at("env"), "prod");
    EXPECT_EQ(back->meta.created, Timestamp{1});
}

TEST(Json, MalformedIsInvalidArgument) {
    auto r = parse_json("{\"Name\": ");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, Errc::invalid_argument);
    EXPECT_EQ(error_body("secret x not found"), R"({"message":"secret x not found"})");
}

// Boost.JSON keeps the last of two equal keys; another reader may keep the first. Both
// parsers refuse such a document, at any depth, naming the key.
TEST(Json, AKeyTwiceInAnObjectIsRefused) {
    for (std::string_view text : {
             R"({"Name":"a","Name":"b"})", R"({"Name":"a","Labels":{},"Name":"a"})",
             R"({"Spec":{"Labels":{"x":"1","Name":"2","Name":"3"}}})",
             R"([1,{"a":[{"b":0}]},{"Name":null,"c":{"Name":1},"Name":{}}])",
             R"({"N\u0061me":1,"Name":2})",  // equal once unescaped
         }) {
        SCOPED_TRACE(text);
        auto plain = parse_json(text);
        ASSERT_FALSE(plain.ok());
        EXPECT_EQ(plain.error().code, Errc::invalid_argument);
        EXPECT_EQ(plain.error().message,
                  R"(malformed JSON: key "Name" appears twice in an object)");
        auto secure = SecureJson::parse(text);
        ASSERT_FALSE(secure.ok());
        EXPECT_EQ(secure.error().message, plain.error().message);
    }
    // The key is quoted printable and short, whatever it holds.
    auto odd = parse_json("{\"a\\\"\\u0001\":1,\"a\\\"\\u0001\":2}");
    ASSERT_FALSE(odd.ok());
    EXPECT_EQ(odd.error().message, R"(malformed JSON: key "a\x22\x01" appears twice in an object)");
    auto long_key = std::string(100, 'k');
    auto long_doc = parse_json(fmt::format(R"({{"{0}":1,"{0}":1}})", long_key));
    ASSERT_FALSE(long_doc.ok());
    EXPECT_EQ(long_doc.error().message,
              fmt::format(R"(malformed JSON: key "{}..." appears twice in an object)",
                          std::string(64, 'k')));
}

TEST(Json, EqualKeysInDifferentObjectsAndOtherJsonAreAccepted) {
    for (std::string_view text : {
             R"({"a":{"x":1},"b":{"x":2},"c":[{"x":3},{"x":4}]})",
             R"([{"a":1},{"a":1}])",
             R"({"a":{"a":{"a":{}}}})",
             R"({"Name":"a","name":"b","NAME":"c"})",
             R"({})",
             R"("text")",
         }) {
        SCOPED_TRACE(text);
        auto plain = parse_json(text);
        ASSERT_TRUE(plain.ok()) << plain.error().message;
        EXPECT_EQ(*plain, json::parse(text));
        auto secure = SecureJson::parse(text);
        ASSERT_TRUE(secure.ok()) << secure.error().message;
        EXPECT_EQ(secure->value(), json::parse(text));
    }
    for (std::string_view bad : {"{} x", "{\"a\":}", "", "[1,]"}) {
        EXPECT_FALSE(parse_json(bad).ok()) << bad;
        EXPECT_FALSE(SecureJson::parse(bad).ok()) << bad;
    }
}

// Random documents over few keys, so that duplicates are common at every depth: refused exactly
// when some object repeats a key, otherwise read as Boost.JSON reads them.
TEST(Json, RandomDocumentsAreRefusedExactlyWhenAnObjectRepeatsAKey) {
    std::mt19937_64 rng(20261204);
    std::size_t refused = 0, accepted = 0;
    for (int i = 0; i < 3000; ++i) {
        bool duplicate = false;
        std::function<std::string(int)> gen = [&](int depth) -> std::string {
            auto kind = depth > 4 ? 0 : rng() % 3;
            if (kind == 0) return std::to_string(rng() % 10);
            std::vector<std::string> parts;
            auto n = rng() % 5;
            if (kind == 1) {
                for (std::size_t k = 0; k < n; ++k) parts.push_back(gen(depth + 1));
                return "[" + fmt::format("{}", fmt::join(parts, ",")) + "]";
            }
            std::set<std::string> keys;
            for (std::size_t k = 0; k < n; ++k) {
                std::string key(1, static_cast<char>('a' + rng() % 6));
                if (!keys.insert(key).second) duplicate = true;
                parts.push_back(fmt::format(R"("{}":{})", key, gen(depth + 1)));
            }
            return "{" + fmt::format("{}", fmt::join(parts, ",")) + "}";
        };
        auto text = gen(0);
        auto plain = parse_json(text);
        auto secure = SecureJson::parse(text);
        ASSERT_EQ(plain.ok(), !duplicate) << text;
        ASSERT_EQ(secure.ok(), !duplicate) << text;
        if (duplicate) {
            ++refused;
            EXPECT_NE(plain.error().message.find("appears twice"), std::string::npos) << text;
        } else {
            ++accepted;
            EXPECT_EQ(*plain, json::parse(text)) << text;
            EXPECT_EQ(secure->value(), json::parse(text)) << text;
        }
    }
    EXPECT_GT(refused, 300u);
    EXPECT_GT(accepted, 300u);
}

TEST(Duration, ParsesGoStyleAndDays) {
    using std::chrono::seconds;
    EXPECT_EQ(parse_duration("2160h"), seconds(2160 * 3600));
    EXPECT_EQ(parse_duration("90m30s"), seconds(90 * 60 + 30));
    EXPECT_EQ(parse_duration("30d"), seconds(30 * 86400));
    for (auto bad : {"", "h", "10", "10x", "-1h", "1h-", "99999999999999999999h"})
        EXPECT_FALSE(parse_duration(bad)) << bad;
}

// ---- services ---------------------------------------------------------------------------------

#include "coffer/model/service_json.h"
#include "coffer/model/task_options.h"

namespace {

// The body `docker stack deploy` sent (transcript), with fields coffer does not interpret.
constexpr const char* stack_body = R"({
  "Name": "app_app",
  "Labels": {"com.docker.stack.image": "localbusybox:1", "com.docker.stack.namespace": "app"},
  "TaskTemplate": {
    "ContainerSpec": {
      "Image": "localbusybox:1",
      "Labels": {"com.docker.stack.namespace": "app"},
      "Args": ["sleep", "3600"],
      "Privileges": {"CredentialSpec": null, "SELinuxContext": null, "NoNewPrivileges": false},
      "Secrets": [
        {"File": {"Name": "filesec", "UID": "0", "GID": "0", "Mode": 292},
         "SecretID": "bvjui3xpv48u9gx9cya2y63q9", "SecretName": "app_filesec"},
        {"File": {"Name": "ext_target", "UID": "1000", "GID": "1000", "Mode": 256},
         "SecretID": "j4jcybyhrgopm3ekk7u1ahr1m", "SecretName": "ext1"}
      ]
    },
    "Resources": {"Limits": {"MemoryBytes": 67108864}},
    "Placement": {},
    "Networks": [{"Target": "app_default", "Aliases": ["app"]}],
    "ForceUpdate": 0
  },
  "Mode": {"Replicated": {"Replicas": 1}},
  "EndpointSpec": {}
})";

coffer::Result<coffer::model::ServiceSpec> spec_of(std::string_view text) {
    return coffer::model::service_spec_from_json(boost::json::parse(text));
}

std::string invalid_message(std::string_view text) {
    auto s = spec_of(text);
    if (!s) return s.error().message;
    auto v = coffer::model::validate_service_spec(*s);
    return v ? "" : v.error().message;
}

}  // namespace

TEST(ServiceSpec, StackDeployBodyParsesAndEchoesUnchanged) {
    auto s = spec_of(stack_body);
    ASSERT_TRUE(s.ok()) << s.error().message;
    EXPECT_TRUE(coffer::model::validate_service_spec(*s).ok());
    EXPECT_EQ(s->name, "app_app");
    EXPECT_EQ(s->replicas, 1u);
    ASSERT_EQ(s->task.container.secrets.size(), 2u);
    EXPECT_EQ(s->task.container.secrets[1].file_name, "ext_target");
    EXPECT_EQ(s->task.container.secrets[1].uid, "1000");
    EXPECT_EQ(s->task.container.secrets[1].mode, 0400u);
    EXPECT_EQ(s->task.limits.memory_bytes, 64 * 1024 * 1024);
    EXPECT_EQ(boost::json::value(coffer::model::spec_json(*s, false)),
              boost::json::parse(stack_body));
}

// `docker stack deploy` sends {"Replicated":{}} for a service without deploy.replicas, and the
// docker CLI refuses a service read back without a replica count ("unrecognized service mode").
TEST(ServiceSpec, AReplicatedServiceAlwaysStoresItsReplicaCount) {
    auto replicas_of = [](std::string_view text) -> boost::json::value {
        auto s = spec_of(text);
        EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message);
        if (!s.ok()) return nullptr;
        auto o = coffer::model::spec_json(*s, false);
        const auto* r = o.if_contains("Mode");
        if (!r || !r->is_object() || !r->as_object().contains("Replicated")) return nullptr;
        const auto& rep = r->as_object().at("Replicated").as_object();
        return rep.contains("Replicas") ? rep.at("Replicas") : nullptr;
    };
    const char* image = R"("TaskTemplate":{"ContainerSpec":{"Image":"busybox"}})";
    EXPECT_EQ(replicas_of(fmt::format(R"({{"Name":"a",{}}})", image)), 1);
    EXPECT_EQ(replicas_of(fmt::format(R"({{"Name":"a",{},"Mode":{{}}}})", image)), 1);
    EXPECT_EQ(replicas_of(fmt::format(R"({{"Name":"a",{},"Mode":{{"Replicated":{{}}}}}})", image)),
              1);
    EXPECT_EQ(replicas_of(fmt::format(
                  R"({{"Name":"a",{},"Mode":{{"Replicated":{{"Replicas":null}}}}}})", image)),
              1);
    EXPECT_EQ(replicas_of(fmt::format(
                  R"({{"Name":"a",{},"Mode":{{"Replicated":{{"Replicas":3}}}}}})", image)),
              3);
    auto global = spec_of(fmt::format(R"({{"Name":"a",{},"Mode":{{"Global":{{}}}}}})", image));
    ASSERT_TRUE(global.ok());
    EXPECT_FALSE(
        coffer::model::spec_json(*global, false).at("Mode").as_object().contains("Replicated"));
}

TEST(ServiceSpec, ATemplateIsRefusedRatherThanPassedOnUnexpanded) {
    for (auto [fields, field] : {
             std::pair{R"("Env":["SLOT={{.Task.Slot}}"])", "TaskTemplate.ContainerSpec.Env"},
             std::pair{R"("Hostname":"web-{{.Task.Slot}}")", "TaskTemplate.ContainerSpec.Hostname"},
             std::pair{R"("Mounts":[{"Type":"volume","Source":"d-{{.Task.Slot}}","Target":"/d"}])",
                       "TaskTemplate.ContainerSpec.Mounts"},
         }) {
        auto message = invalid_message(fmt::format(
            R"({{"Name":"t","TaskTemplate":{{"ContainerSpec":{{"Image":"b",{}}}}}}})", fields));
        EXPECT_EQ(message, fmt::format("field {} uses a template ({{{{...}}}}): service templates "
                                       "are not supported by coffer",
                                       field))
            << fields;
    }
    EXPECT_EQ(invalid_message(R"({"Name":"t","TaskTemplate":{"ContainerSpec":{"Image":"b",
        "Env":["BRACES={not a template}"]}}})"),
              "");
}

TEST(ServiceSpec, InsertDefaultsFillsDockersDefaults) {
    auto s = spec_of(stack_body);
    auto o = coffer::model::spec_json(*s, true);
    EXPECT_EQ(o.at("TaskTemplate").at("ContainerSpec").at("StopGracePeriod"), 10'000'000'000);
    EXPECT_EQ(o.at("TaskTemplate").at("RestartPolicy").at("Condition"), "any");
    EXPECT_EQ(o.at("TaskTemplate").at("RestartPolicy").at("Delay"), 5'000'000'000);
    EXPECT_EQ(o.at("UpdateConfig").at("Order"), "stop-first");
    EXPECT_EQ(o.at("RollbackConfig").at("FailureAction"), "pause");
    EXPECT_EQ(o.at("UpdateConfig").at("Monitor"), 5'000'000'000);
}

TEST(ServiceSpec, ValidationUsesDockersWords) {
    auto with = [](std::string_view fields) {
        return fmt::format(
            R"({{"Name":"web","TaskTemplate":{{"ContainerSpec":{{"Image":"busybox"{}}}}}}})",
            fields);
    };
    EXPECT_EQ(invalid_message(R"({"Name":"-web","TaskTemplate":{"ContainerSpec":{"Image":"x"}}})"),
              "name must be valid as a DNS name component");
    EXPECT_EQ(invalid_message(fmt::format(
                  R"({{"Name":"{}","TaskTemplate":{{"ContainerSpec":{{"Image":"x"}}}}}})",
                  std::string(64, 'a'))),
              "name must be 63 characters or fewer");
    EXPECT_EQ(invalid_message(R"({"TaskTemplate":{"ContainerSpec":{"Image":"x"}}})"),
              "meta: name must be provided");
    EXPECT_EQ(invalid_message(R"({"Name":"web","TaskTemplate":{"ContainerSpec":{}}})"),
              "ContainerSpec: image reference must be provided");
    EXPECT_EQ(invalid_message(with(R"(,"Secrets":[{"File":{"Name":"x"},"SecretName":"a"}])")),
              "malformed secret reference");
    EXPECT_EQ(invalid_message(
                  with(R"(,"Secrets":[{"File":{"Name":"x"},"SecretID":"i1","SecretName":"a"},)"
                       R"({"File":{"Name":"x"},"SecretID":"i2","SecretName":"b"}])")),
              "secret references 'a' and 'b' have a conflicting target: 'x'");
    EXPECT_EQ(
        invalid_message(
            R"({"Name":"web","TaskTemplate":{"ContainerSpec":{"Image":"x"},"RestartPolicy":{"Delay":-1}}})"),
        "TaskSpec: restart-delay cannot be negative");
    EXPECT_EQ(
        invalid_message(
            R"({"Name":"web","TaskTemplate":{"ContainerSpec":{"Image":"x"}},"Mode":{"Replicated":{"Replicas":-2}}})"),
        "field Mode.Replicated.Replicas cannot be negative");
    EXPECT_EQ(
        invalid_message(
            R"({"Name":"web","TaskTemplate":{"ContainerSpec":{"Image":"x"}},"Mode":{"Replicated":{},"Global":{}}})"),
        "Mode: only one of Replicated or Global may be given");
    EXPECT_EQ(
        invalid_message(
            R"({"Name":"web","TaskTemplate":{"ContainerSpec":{"Image":"x"},"Placement":{"Constraints":["node.zone=a"]}}})"),
        "constraint expected one operator from ==, != (got 'node.zone=a')");
    EXPECT_EQ(
        invalid_message(
            R"({"Name":"web","TaskTemplate":{"ContainerSpec":{"Image":"x"}},"UpdateConfig":{"Order":"sideways"}})"),
        "unrecognized update order sideways");
    EXPECT_EQ(invalid_message(with(R"(,"Env":"A=1")")),
              "field TaskTemplate.ContainerSpec.Env must be an array of strings");
    // A reference no node would pull is refused at once, not rejected by every node forever.
    auto upper = invalid_message(
        R"({"Name":"web","TaskTemplate":{"ContainerSpec":{"Image":"Busybox:Latest"}}})");
    EXPECT_TRUE(upper.starts_with("ContainerSpec: invalid reference format: ")) << upper;
    EXPECT_NE(upper.find("lowercase"), std::string::npos) << upper;
}

TEST(ServiceSpec, DurationsAsGoWritesThem) {
    EXPECT_EQ(coffer::model::parse_go_duration("1.5s"), 1'500'000'000);
    EXPECT_EQ(coffer::model::parse_go_duration("1h30m"), 5'400'000'000'000);
    EXPECT_EQ(coffer::model::parse_go_duration("300ms"), 300'000'000);
    EXPECT_FALSE(coffer::model::parse_go_duration("5"));
    EXPECT_FALSE(coffer::model::parse_go_duration("-1s"));
    EXPECT_EQ(coffer::model::format_go_duration(10'000'000'000), "10s");
    EXPECT_EQ(coffer::model::format_go_duration(90'000'000'000), "1m30s");
}

// One rule per kind of id; every id the manager generates passes each of them.
TEST(Ids, EveryGeneratedIdPassesEveryKind) {
    for (int i = 0; i < 100; ++i) {
        auto id = crypto::random_id();
        EXPECT_TRUE(valid_generated_id(id)) << id;
        EXPECT_TRUE(valid_node_id(id)) << id;
        EXPECT_TRUE(valid_service_id(id)) << id;
        EXPECT_TRUE(valid_task_id(id)) << id;
        EXPECT_TRUE(valid_secret_id(id)) << id;
    }
}

TEST(Ids, EachKindKeepsItsRule) {
    for (auto bad : {"", "abcdefghijklmnopqrstuvwx", "abcdefghijklmnopqrstuvwxyz",
                     "Abcdefghijklmnopqrstuvwxy", "abcdefghijklmnopqrstuvwx-"})
        EXPECT_FALSE(valid_node_id(bad)) << bad;
    EXPECT_TRUE(valid_task_id("t1"));
    EXPECT_TRUE(valid_task_id("web-1.2_x"));
    EXPECT_TRUE(valid_task_id(std::string(64, 'a')));
    for (auto bad : {"", "-a", ".a", "A", "a/b", "..", "a b", "a\n"})
        EXPECT_FALSE(valid_task_id(bad)) << bad;
    EXPECT_FALSE(valid_task_id(std::string(65, 'a')));
    EXPECT_TRUE(valid_secret_id("s1"));
    EXPECT_TRUE(valid_secret_id("Secret-1.x_Y"));
    EXPECT_TRUE(valid_secret_id(std::string(128, 'S')));
    for (auto bad : {"", "a/b", "a b", "../x/y", "a\n", "caf\xc3\xa9"})
        EXPECT_FALSE(valid_secret_id(bad)) << bad;
    EXPECT_FALSE(valid_secret_id(std::string(129, 'a')));
}

TEST(UpdateState, EveryStateRoundTripsThroughDockersString) {
    using coffer::model::UpdateState;
    const std::pair<UpdateState, std::string_view> states[] = {
        {UpdateState::updating, "updating"},
        {UpdateState::paused, "paused"},
        {UpdateState::completed, "completed"},
        {UpdateState::rollback_started, "rollback_started"},
        {UpdateState::rollback_paused, "rollback_paused"},
        {UpdateState::rollback_completed, "rollback_completed"},
    };
    for (auto [state, text] : states) {
        EXPECT_EQ(coffer::model::to_string(state), text);
        EXPECT_EQ(coffer::model::update_state_from(text), state) << text;
        EXPECT_EQ(coffer::model::is_rollback(state), text.starts_with("rollback")) << text;
    }
    EXPECT_FALSE(coffer::model::update_state_from(""));
    EXPECT_FALSE(coffer::model::update_state_from("Updating"));
    EXPECT_FALSE(coffer::model::update_state_from("rollback"));
}

namespace {

// A stored service record (as the registry writes it) with the given UpdateStatus.State.
boost::json::object service_record(std::string_view state) {
    coffer::model::Service s;
    s.meta = {"svc1", 3, coffer::model::Timestamp{1'000'000'000},
              coffer::model::Timestamp{2'000'000'000}};
    s.spec = *spec_of(stack_body);
    s.update_status = coffer::model::UpdateStatus{coffer::model::UpdateState::rollback_paused,
                                                  coffer::model::Timestamp{5'000'000'000},
                                                  std::nullopt, "paused"};
    auto o = coffer::model::to_json(s, false);
    o["UpdateStatus"].as_object()["State"] = state;
    return o;
}

}  // namespace

TEST(UpdateState, ServiceRecordsKeepDockersStringsAndReadBack) {
    for (std::string_view text : {"updating", "paused", "completed", "rollback_started",
                                  "rollback_paused", "rollback_completed"}) {
        auto s = coffer::model::service_from_json(service_record(text));
        ASSERT_TRUE(s.ok()) << text << ": " << s.error().message;
        ASSERT_TRUE(s->update_status);
        EXPECT_EQ(coffer::model::to_string(s->update_status->state), text);
        EXPECT_EQ(s->update_status->started.nanos, 5'000'000'000);
        EXPECT_EQ(s->update_status->message, "paused");
        EXPECT_EQ(coffer::model::to_json(*s, false).at("UpdateStatus").at("State").as_string(),
                  text);
    }
}

TEST(UpdateState, AnUnknownOrMissingStateIsRefused) {
    for (std::string_view text : {"", "Paused", "rolling", "completed "}) {
        auto s = coffer::model::service_from_json(service_record(text));
        ASSERT_FALSE(s.ok()) << text;
        EXPECT_EQ(s.error().message, "service has no valid UpdateStatus.State");
    }
    auto missing = service_record("paused");
    missing["UpdateStatus"].as_object().erase("State");
    EXPECT_FALSE(coffer::model::service_from_json(missing).ok());
    auto number = service_record("paused");
    number["UpdateStatus"].as_object()["State"] = 1;
    EXPECT_FALSE(coffer::model::service_from_json(number).ok());
}

TEST(ServiceSpec, AHealthcheckIsReadAndCheckedAsSwarmDoes) {
    auto s = spec_of(R"({"Name":"h","TaskTemplate":{"ContainerSpec":{"Image":"busybox",
        "Healthcheck":{"Test":["CMD-SHELL","test -f /ok"],"Interval":1000000000,
        "Timeout":2000000000,"StartPeriod":3000000000,"StartInterval":4000000000,"Retries":5}}}})");
    ASSERT_TRUE(s) << s.error().message;
    ASSERT_TRUE(s->task.container.healthcheck);
    EXPECT_EQ(*s->task.container.healthcheck,
              (coffer::model::HealthConfig{{"CMD-SHELL", "test -f /ok"},
                                           1'000'000'000,
                                           2'000'000'000,
                                           3'000'000'000,
                                           4'000'000'000,
                                           5}));
    EXPECT_EQ(invalid_message(R"({"Name":"h","TaskTemplate":{"ContainerSpec":{"Image":"b",
        "Healthcheck":{"Test":["NONE"]}}}})"),
              "");
    EXPECT_EQ(invalid_message(R"({"Name":"h","TaskTemplate":{"ContainerSpec":{"Image":"b",
        "Healthcheck":{"Interval":1000000}}}})"),
              "")
        << "1ms, and no test (the image's)";
    EXPECT_FALSE(spec_of(R"({"Name":"h","TaskTemplate":{"ContainerSpec":{"Image":"b",
        "Healthcheck":{"Test":"CMD true"}}}})"));
    struct Case {
        const char* healthcheck;
        const char* error;
    };
    for (auto [hc, error] : {
             Case{R"({"Interval":999999})",
                  "ContainerSpec: Interval in HealthConfig cannot be less than 1ms"},
             Case{R"({"Timeout":1})",
                  "ContainerSpec: Timeout in HealthConfig cannot be less than 1ms"},
             Case{R"({"StartPeriod":-5})",
                  "ContainerSpec: StartPeriod in HealthConfig cannot be negative"},
             Case{R"({"StartInterval":10})",
                  "ContainerSpec: StartInterval in HealthConfig cannot be less than 1ms"},
             Case{R"({"Retries":-1})", "ContainerSpec: Retries in HealthConfig cannot be negative"},
             Case{R"({"Test":["CMD"]})", "ContainerSpec: a CMD health check needs a command"},
             Case{R"({"Test":["NONE","x"]})",
                  "ContainerSpec: a NONE health check takes no command"},
             Case{R"({"Test":["SHELL","x"]})",
                  "ContainerSpec: unknown health check type \"SHELL\" (NONE, CMD or CMD-SHELL)"},
         }) {
        auto body = fmt::format(
            R"({{"Name":"h","TaskTemplate":{{"ContainerSpec":{{"Image":"b","Healthcheck":{}}}}}}})",
            hc);
        EXPECT_EQ(invalid_message(body), error) << hc;
    }
}

TEST(TaskJson, HealthIsShownInContainerStatusAndReadBack) {
    coffer::model::Task t;
    t.meta.id = "t1";
    t.spec.json = "{}";
    t.status.state = coffer::model::TaskState::starting;
    t.status.container = coffer::model::ContainerStatus{"t1", 42, 0, "starting"};
    auto o = coffer::model::to_json(t, true);
    EXPECT_EQ(o.at("Status").at("ContainerStatus").at("Health").at("Status"), "starting");
    auto back = coffer::model::task_from_json(o);
    ASSERT_TRUE(back) << back.error().message;
    ASSERT_TRUE(back->status.container);
    EXPECT_EQ(back->status.container->health, "starting");
    t.status.container->health.clear();
    EXPECT_FALSE(coffer::model::to_json(t, true)
                     .at("Status")
                     .at("ContainerStatus")
                     .as_object()
                     .contains("Health"));
}

namespace {

std::string with_container(std::string_view fields) {
    return fmt::format(R"({{"Name":"web","TaskTemplate":{{"ContainerSpec":{{"Image":"x",{}}}}}}})",
                       fields);
}

std::string with_mounts(std::string_view mounts) {
    return fmt::format(
        R"({{"Name":"db","TaskTemplate":{{"ContainerSpec":{{"Image":"busybox","Mounts":{}}}}}}})",
        mounts);
}

}  // namespace

TEST(TaskOptions, AreParsedFromTheContainerSpec) {
    auto s = spec_of(with_container(
        R"("User":"app:staff","Groups":["audio","7"],"Init":true,"StopSignal":"SIGUSR1",
           "Sysctls":{"net.ipv4.ip_forward":"1"},"Ulimits":[{"Name":"nofile","Soft":100,"Hard":200}],
           "Hosts":["10.0.0.5 db db.local"],"OomScoreAdj":-5,
           "DNSConfig":{"Nameservers":["9.9.9.9"],"Search":["example.com"],"Options":["ndots:2"]},
           "Isolation":"default","TTY":false)"));
    ASSERT_TRUE(s) << s.error().message;
    const auto& c = s->task.container;
    EXPECT_EQ(c.user, "app:staff");
    EXPECT_EQ(c.groups, (std::vector<std::string>{"audio", "7"}));
    EXPECT_TRUE(c.init);
    EXPECT_EQ(c.stop_signal, "SIGUSR1");
    EXPECT_EQ(c.sysctls.at("net.ipv4.ip_forward"), "1");
    ASSERT_EQ(c.ulimits.size(), 1u);
    EXPECT_EQ(c.ulimits[0].name, "nofile");
    EXPECT_EQ(c.ulimits[0].soft, 100);
    EXPECT_EQ(c.ulimits[0].hard, 200);
    EXPECT_EQ(c.hosts, (std::vector<std::string>{"10.0.0.5 db db.local"}));
    EXPECT_EQ(c.dns.nameservers, (std::vector<std::string>{"9.9.9.9"}));
    EXPECT_EQ(c.dns.search, (std::vector<std::string>{"example.com"}));
    EXPECT_EQ(c.dns.options, (std::vector<std::string>{"ndots:2"}));
    EXPECT_EQ(c.oom_score_adj, -5);
    EXPECT_TRUE(coffer::model::validate_service_spec(*s));
}

TEST(TaskOptions, UnsupportedFieldsAreRefusedByName) {
    EXPECT_EQ(invalid_message(with_container(R"("TTY":true)")),
              "field TaskTemplate.ContainerSpec.TTY is not supported by coffer");
    EXPECT_EQ(invalid_message(with_container(R"("OpenStdin":true)")),
              "field TaskTemplate.ContainerSpec.OpenStdin is not supported by coffer");
    EXPECT_EQ(invalid_message(with_container(R"("Isolation":"hyperv")")),
              "field TaskTemplate.ContainerSpec.Isolation is not supported by coffer");
    EXPECT_EQ(
        invalid_message(with_container(R"("Privileges":{"SELinuxContext":{"User":"u"}})")),
        "field TaskTemplate.ContainerSpec.Privileges.SELinuxContext is not supported by coffer");
}

// The default profiles are what every task gets: asking for them is accepted; anything else
// is refused. NoNewPrivileges false (the docker CLI's default) does not lift no_new_privs.
TEST(TaskOptions, DefaultSecurityProfilesAreAcceptedOthersRefused) {
    EXPECT_EQ(invalid_message(with_container(R"("Privileges":{"Seccomp":{"Mode":"default"}})")),
              "");
    EXPECT_EQ(invalid_message(with_container(R"("Privileges":{"AppArmor":{"Mode":"default"}})")),
              "");
    EXPECT_EQ(invalid_message(with_container(R"("Privileges":{"NoNewPrivileges":false})")), "");
    EXPECT_NE(invalid_message(with_container(R"("Privileges":{"Seccomp":{"Mode":"unconfined"}})")),
              "");
    EXPECT_NE(invalid_message(with_container(
                  R"("Privileges":{"Seccomp":{"Mode":"default","Profile":"e30="}})")),
              "");
    EXPECT_NE(invalid_message(with_container(R"("Privileges":{"AppArmor":{"Mode":"disabled"}})")),
              "");
}

TEST(TaskOptions, BadValuesAreRefusedNamingTheFieldAndKey) {
    auto msg = invalid_message(with_container(R"("Sysctls":{"kernel.hostname":"x"})"));
    EXPECT_NE(msg.find("TaskTemplate.ContainerSpec.Sysctls"), std::string::npos) << msg;
    EXPECT_NE(msg.find("kernel.hostname"), std::string::npos) << msg;
    EXPECT_NE(invalid_message(with_container(R"("Sysctls":{"vm.swappiness":"1"})")), "");
    EXPECT_NE(invalid_message(with_container(R"("Sysctls":{"net/../../x":"1"})")), "");
    EXPECT_EQ(
        invalid_message(with_container(
            R"("Sysctls":{"fs.mqueue.msg_max":"20","kernel.sem":"1 2 3 4","kernel.shmmax":"9"})")),
        "");
    EXPECT_EQ(invalid_message(with_container(R"("StopSignal":"SIGNOPE")")),
              "field TaskTemplate.ContainerSpec.StopSignal: invalid signal: SIGNOPE");
    EXPECT_EQ(invalid_message(with_container(R"("StopSignal":"usr2")")), "");
    EXPECT_EQ(invalid_message(with_container(R"("StopSignal":"RTMIN+3")")), "");
    EXPECT_EQ(
        invalid_message(with_container(R"("Ulimits":[{"Name":"nofiles","Soft":1,"Hard":1}])")),
        "field TaskTemplate.ContainerSpec.Ulimits: invalid ulimit type: nofiles");
    EXPECT_NE(invalid_message(with_container(R"("Ulimits":[{"Name":"nofile","Soft":9,"Hard":1}])")),
              "");
    EXPECT_NE(invalid_message(with_container(R"("Hosts":["db:10.0.0.5"])")), "");
    EXPECT_NE(invalid_message(with_container(R"("Hosts":["not-an-ip db"])")), "");
    EXPECT_NE(invalid_message(with_container(R"("DNSConfig":{"Nameservers":["dns.example"]})")),
              "");
    EXPECT_NE(invalid_message(with_container(R"("User":"app\nroot")")), "");
    EXPECT_NE(invalid_message(with_container(R"("Groups":["a:b"])")), "");
    EXPECT_NE(invalid_message(with_container(R"("OomScoreAdj":1001)")), "");
}

// What would run a task as root, or fail on every node, is refused at the API.
TEST(ServiceSpec, IdsCountsAndSourcesNoNodeCouldTakeAreRefused) {
    auto msg = invalid_message(with_container(R"("User":"4294967295:4294967295")"));
    EXPECT_NE(msg.find("uids and gids must be in range 0-2147483647"), std::string::npos) << msg;
    EXPECT_NE(invalid_message(with_container(R"("User":"app:2147483648")")), "");
    EXPECT_NE(invalid_message(with_container(R"("Groups":["4294967295"])")), "");
    EXPECT_EQ(invalid_message(with_container(R"("User":"2147483647:0002147483647")")), "");
    auto secret = [](std::string_view uid, int mode) {
        return with_container(fmt::format(
            R"("Secrets":[{{"SecretID":"s1","SecretName":"a","File":{{"Name":"a","UID":"{}","GID":"0","Mode":{}}}}}])",
            uid, mode));
    };
    EXPECT_NE(invalid_message(secret("4294967295", 0444)), "");
    EXPECT_NE(invalid_message(secret("0", 04444)), "");
    EXPECT_EQ(invalid_message(secret("2147483647", 0444)), "");
    EXPECT_NE(
        invalid_message(with_container(R"("Ulimits":[{"Name":"nofile","Soft":-1,"Hard":-1}])")),
        "");
    auto replicas = [](std::string_view n) {
        return invalid_message(fmt::format(
            R"({{"Name":"m","TaskTemplate":{{"ContainerSpec":{{"Image":"x"}}}},"Mode":{{"Replicated":{{"Replicas":{}}}}}}})",
            n));
    };
    EXPECT_NE(replicas("18446744073709551615"), "");
    EXPECT_EQ(replicas("100000"), "");
    auto cpus = R"({"Name":"m","TaskTemplate":{"ContainerSpec":{"Image":"x"},)"
                R"("Resources":{"Limits":{"NanoCPUs":9223372036854775807}}}})";
    EXPECT_NE(invalid_message(cpus), "");
    for (auto source : {"/proc", "/proc/1/root", "/sys", "/sys/fs/cgroup"}) {
        auto m = invalid_message(with_mounts(
            fmt::format(R"([{{"Type":"bind","Source":"{}","Target":"/host"}}])", source)));
        EXPECT_NE(m.find("other tasks' processes and secrets"), std::string::npos) << source << m;
    }
    EXPECT_EQ(invalid_message(with_mounts(R"([{"Type":"bind","Source":"/procfs","Target":"/h"}])")),
              "");
    auto slash =
        invalid_message(with_mounts(R"([{"Type":"bind","Source":"/srv/","Target":"/h"}])"));
    EXPECT_NE(slash.find("or a trailing slash"), std::string::npos) << slash;
    auto relative =
        invalid_message(with_mounts(R"([{"Type":"bind","Source":"srv","Target":"/h"}])"));
    EXPECT_NE(relative.find("mount path must be absolute"), std::string::npos) << relative;
}

// A target every node would reject is refused at the API, after the same normalisation.
TEST(ServiceSpec, SecretTargetsNoNodeTakesAreRefused) {
    auto with_targets = [](std::vector<std::string> targets) {
        std::string refs;
        for (std::size_t i = 0; i < targets.size(); ++i)
            refs += fmt::format(
                R"({}{{"SecretID":"s{}","SecretName":"n{}","File":{{"Name":"{}","UID":"0","GID":"0","Mode":292}}}})",
                i == 0 ? "" : ",", i, i, targets[i]);
        return with_container(fmt::format(R"("Secrets":[{}])", refs));
    };
    for (auto bad :
         {".", "/", "/run/secrets", "/run/secrets/", "/run", "/proc/x", "/sys/y", "/dev/z", "./."})
        EXPECT_NE(invalid_message(with_targets({bad})), "") << bad;
    auto dup = invalid_message(with_targets({"canary", "/run/secrets/canary"}));
    EXPECT_NE(dup.find("/run/secrets/canary is already a target"), std::string::npos) << dup;
    EXPECT_NE(invalid_message(with_targets({"a//b", "./a/b"})), "");
    EXPECT_NE(invalid_message(with_targets({"a", "a/b"})), "");
    EXPECT_EQ(invalid_message(with_targets({"a", "b/c", "/etc/app.key"})), "");
    EXPECT_NE(invalid_message(with_container(R"("Env":["A=x\u0000y"])")), "");
    EXPECT_NE(invalid_message(with_container(R"("Args":["a\u0000b"])")), "");
    EXPECT_NE(invalid_message(with_container(R"("Hostname":"a\nb")")), "");
    EXPECT_NE(
        invalid_message(with_container(fmt::format(R"("Hostname":"{}")", std::string(70, 'h')))),
        "");
    EXPECT_NE(invalid_message(with_container(R"("StopGracePeriod":9223372036854775807)")), "");
    EXPECT_NE(invalid_message(with_container(R"("Dir":"../../")")), "");
    EXPECT_EQ(invalid_message(with_container(R"("Dir":"/srv","Hostname":"web-1.local")")), "");
    for (auto target : {"/dev/shm", "/proc/x", "/sys"})
        EXPECT_NE(invalid_message(
                      with_mounts(fmt::format(R"([{{"Type":"tmpfs","Target":"{}"}}])", target))),
                  "")
            << target;
    EXPECT_NE(
        invalid_message(with_container(
            R"("Secrets":[{"SecretID":"s","SecretName":"a","File":{"Name":"a","UID":"0","GID":"0","Mode":292}}],"Mounts":[{"Type":"tmpfs","Target":"/run"}])")),
        "");
    auto config = invalid_message(with_container(
        R"("Configs":[{"ConfigID":"c1","ConfigName":"c","File":{"Name":"/proc/c","UID":"0","GID":"0","Mode":292}}])"));
    EXPECT_NE(config.find("not allowed in /proc, /sys or /dev"), std::string::npos) << config;
}

TEST(TaskOptions, SignalNames) {
    using coffer::model::signal_number;
    EXPECT_EQ(signal_number("SIGTERM"), SIGTERM);
    EXPECT_EQ(signal_number("quit"), SIGQUIT);
    EXPECT_EQ(signal_number("10"), 10);
    EXPECT_EQ(signal_number("RTMIN"), SIGRTMIN);
    EXPECT_EQ(signal_number("RTMAX-1"), SIGRTMAX - 1);
    EXPECT_FALSE(signal_number("0"));
    EXPECT_FALSE(signal_number("65"));
    EXPECT_FALSE(signal_number(""));
    EXPECT_FALSE(signal_number("SIG"));
}

TEST(ServiceSpec, MountsAreParsedWithTheirOptions) {
    auto s = spec_of(with_mounts(
        R"([{"Type":"tmpfs","Target":"/scratch","ReadOnly":true,
             "TmpfsOptions":{"SizeBytes":1048576,"Mode":488}},
            {"Type":"bind","Source":"/srv/data","Target":"/data",
             "BindOptions":{"Propagation":"rprivate","NonRecursive":true}},
            {"Type":"volume","Source":"dbdata","Target":"/var/lib/db",
             "VolumeOptions":{"NoCopy":true,"Labels":{"app":"db"},"DriverConfig":{"Name":"local"}}},
            {"Target":"/anon"}])"));
    ASSERT_TRUE(s) << s.error().message;
    ASSERT_TRUE(validate_service_spec(*s));
    const auto& m = s->task.container.mounts;
    ASSERT_EQ(m.size(), 4u);
    EXPECT_EQ(m[0].type, MountType::tmpfs);
    EXPECT_TRUE(m[0].read_only);
    EXPECT_EQ(m[0].tmpfs_size, 1048576);
    EXPECT_EQ(m[0].tmpfs_mode, 0750u);
    EXPECT_EQ(m[1].type, MountType::bind);
    EXPECT_EQ(m[1].source, "/srv/data");
    EXPECT_TRUE(m[1].non_recursive);
    EXPECT_EQ(m[2].type, MountType::volume);
    EXPECT_TRUE(m[2].no_copy);
    EXPECT_EQ(m[2].volume_labels.at("app"), "db");
    EXPECT_EQ(m[3].type, MountType::volume);  // Docker's default type
    EXPECT_EQ(m[3].source, "");
}

TEST(ServiceSpec, MountOptionsCofferDoesNotActOnAreRefusedByName) {
    struct Case {
        const char* mounts;
        const char* says;
    } cases[] = {
        {R"([{"Type":"npipe","Target":"/x"}])", "mount type unknown"},
        {R"([{"Type":"cluster","Target":"/x"}])", "mount type unknown"},
        {R"([{"Type":"bind","Source":"/a","Target":"/x","BindOptions":{"Propagation":"rshared"}}])",
         "BindOptions.Propagation"},
        {R"([{"Type":"bind","Source":"/a","Target":"/x","BindOptions":{"CreateMountpoint":true}}])",
         "BindOptions.CreateMountpoint"},
        {R"([{"Type":"bind","Source":"/a","Target":"/x","BindOptions":{"ReadOnlyNonRecursive":true}}])",
         "ReadOnlyNonRecursive"},
        {R"([{"Type":"bind","Source":"/a","Target":"/x","Consistency":"cached"}])", "Consistency"},
        {R"([{"Type":"volume","Source":"v","Target":"/x","VolumeOptions":{"DriverConfig":{"Name":"nfs"}}}])",
         "volume driver \"nfs\" is not supported"},
        {R"([{"Type":"volume","Source":"v","Target":"/x","VolumeOptions":{"DriverConfig":{"Options":{"o":"x"}}}}])",
         "DriverConfig.Options"},
        {R"([{"Type":"volume","Source":"v","Target":"/x","VolumeOptions":{"Subpath":"a"}}])",
         "Subpath"},
        {R"([{"Type":"tmpfs","Target":"/x","TmpfsOptions":{"Options":[["exec"]]}}])",
         "TmpfsOptions.Options"},
        {R"([{"Type":"tmpfs","Target":"/x","BindOptions":{}}])",
         "BindOptions must not be specified"},
        {R"([{"Type":"bind","Target":"/x"}])", "field Source must not be empty"},
        {R"([{"Type":"bind","Source":"rel","Target":"/x"}])", "must be absolute"},
        {R"([{"Type":"tmpfs","Source":"x","Target":"/x"}])", "Source must not be specified"},
        {R"([{"Type":"tmpfs","Target":"x"}])", "must be absolute"},
        {R"([{"Type":"tmpfs","Target":"/a/../b"}])", "must be absolute"},
        {R"([{"Type":"tmpfs","Target":"/"}])", "must be absolute"},
        {R"([{"Type":"tmpfs","Target":"/x","TmpfsOptions":{"Mode":4096}}])", "invalid tmpfs mode"},
        {R"([{"Type":"volume","Source":"../x","Target":"/x"}])", "invalid volume name"},
        {R"([{"Type":"tmpfs","Target":"/x"},{"Type":"tmpfs","Target":"/x"}])",
         "duplicate mount point"},
        {R"([{"Type":"tmpfs","Target":"/x"},{"Type":"tmpfs","Target":"/x/y"}])", "overlap"},
        {R"({"Type":"tmpfs"})", "must be an array"},
    };
    for (const auto& c : cases) {
        auto message = invalid_message(with_mounts(c.mounts));
        EXPECT_NE(message.find(c.says), std::string::npos) << c.mounts << " -> " << message;
    }
}

TEST(ServiceSpec, VolumeNamesAreDockers) {
    EXPECT_TRUE(valid_volume_name("dbdata"));
    EXPECT_TRUE(valid_volume_name("a.b_c-1"));
    EXPECT_FALSE(valid_volume_name("a"));
    EXPECT_FALSE(valid_volume_name(".hidden"));
    EXPECT_FALSE(valid_volume_name("a/b"));
    EXPECT_FALSE(valid_volume_name(std::string(256, 'a')));
}

TEST(ConfigRefs, ParseWithTheirFileTargets) {
    auto s = spec_of(R"({"Name":"web","TaskTemplate":{"ContainerSpec":{"Image":"busybox",
        "Configs":[{"ConfigID":"c1","ConfigName":"app","File":{"Name":"/etc/app.conf",
          "UID":"1000","GID":"1001","Mode":288}},
          {"ConfigID":"c2","ConfigName":"plain","File":{"Name":"plain","UID":"0","GID":"0",
          "Mode":292}}]}}})");
    ASSERT_TRUE(s.ok()) << s.error().message;
    EXPECT_TRUE(coffer::model::validate_service_spec(*s).ok());
    const auto& refs = s->task.container.configs;
    ASSERT_EQ(refs.size(), 2u);
    EXPECT_EQ(refs[0].config_id, "c1");
    EXPECT_EQ(refs[0].config_name, "app");
    EXPECT_EQ(refs[0].file_name, "/etc/app.conf");
    EXPECT_EQ(refs[0].uid, "1000");
    EXPECT_EQ(refs[0].gid, "1001");
    EXPECT_EQ(refs[0].mode, 0440u);
    // Docker's rule: a relative target is under /.
    EXPECT_EQ(coffer::model::config_target_path(refs[1].file_name), "/plain");
    EXPECT_EQ(coffer::model::config_target_path("/etc/x"), "/etc/x");
}

TEST(ConfigRefs, ValidationUsesDockersWords) {
    auto with = [](std::string_view configs, std::string_view secrets = "[]") {
        return fmt::format(
            R"({{"Name":"web","TaskTemplate":{{"ContainerSpec":{{"Image":"busybox",
                "Secrets":{},"Configs":{}}}}}}})",
            secrets, configs);
    };
    auto ref = [](std::string_view id, std::string_view name, std::string_view file) {
        return fmt::format(
            R"({{"ConfigID":"{}","ConfigName":"{}","File":{{"Name":"{}","UID":"0","GID":"0","Mode":292}}}})",
            id, name, file);
    };
    EXPECT_EQ(invalid_message(with(fmt::format("[{}]", ref("", "a", "/a")))),
              "malformed config reference");
    EXPECT_EQ(invalid_message(with(R"([{"ConfigID":"c","ConfigName":"a"}])")),
              "malformed file config reference, invalid target file name provided");
    EXPECT_EQ(
        invalid_message(with(fmt::format("[{},{}]", ref("c1", "a", "/x"), ref("c2", "b", "/x")))),
        "config references 'a' and 'b' have a conflicting target: '/x'");
    EXPECT_EQ(invalid_message(with(fmt::format("[{}]", ref("c1", "a", "/etc/../x")))),
              "invalid config target '/etc/../x'");
    // A runtime target (a credential spec) is refused, not ignored.
    EXPECT_NE(invalid_message(with(R"([{"ConfigID":"c","ConfigName":"a","Runtime":{}}])"))
                  .find("runtime target"),
              std::string::npos);
    // A secret and a config on the same file.
    EXPECT_EQ(
        invalid_message(with(
            fmt::format("[{}]", ref("c1", "a", "/run/secrets/s")),
            R"([{"SecretID":"s1","SecretName":"s","File":{"Name":"s","UID":"0","GID":"0","Mode":292}}])")),
        "config reference 'a' and a secret reference have a conflicting target: '/run/secrets/s'");
    EXPECT_EQ(
        invalid_message(with(fmt::format("[{},{}]", ref("c1", "a", "/x"), ref("c2", "b", "y")))),
        "");
}

TEST(ConfigSize, OneTo1023999Bytes) {
    using coffer::model::max_config_size;
    using coffer::model::validate_data_size;
    EXPECT_FALSE(validate_data_size("config", 0, max_config_size).ok());
    EXPECT_TRUE(validate_data_size("config", 1, max_config_size).ok());
    EXPECT_TRUE(validate_data_size("config", 1023999, max_config_size).ok());
    auto r = validate_data_size("config", 1024000, max_config_size);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().message, "config data must be larger than 0 and less than 1024000 bytes");
}

TEST(ConfigJson, ShowsItsDataAsBase64) {
    coffer::model::Config c;
    c.meta.id = "abc";
    c.spec.name = "app";
    c.data = std::string("a\0b", 3);
    auto o = coffer::model::to_json(c);
    EXPECT_EQ(o.at("Spec").at("Data"), "YQBi");
    EXPECT_EQ(o.at("Spec").at("Name"), "app");
}

TEST(Ipv4, DottedQuadsAndPrefixes) {
    EXPECT_EQ(model::parse_ipv4("10.0.1.7"), 0x0a000107u);
    EXPECT_EQ(model::parse_ipv4("255.255.255.255"), 0xffffffffu);
    for (auto bad : {"", "10.0.1", "10.0.1.7.", "10.0.1.256", "010.0.0.1", "10..1.7", " 10.0.1.7",
                     "10.0.1.7/24", "1e1.0.0.1"})
        EXPECT_FALSE(model::parse_ipv4(bad)) << bad;
    EXPECT_EQ(model::format_ipv4(0x0a000107u), "10.0.1.7");

    auto p = model::parse_ipv4_prefix("10.0.1.7/24");
    ASSERT_TRUE(p);
    EXPECT_EQ(p->network(), 0x0a000100u);
    EXPECT_EQ(p->broadcast(), 0x0a0001ffu);
    EXPECT_TRUE(p->contains(0x0a0001feu));
    EXPECT_FALSE(p->contains(0x0a000201u));
    EXPECT_EQ(p->to_string(), "10.0.1.7/24");
    EXPECT_TRUE(p->overlaps(*model::parse_ipv4_prefix("10.0.0.0/16")));
    EXPECT_FALSE(p->overlaps(*model::parse_ipv4_prefix("10.0.2.0/24")));
    auto all = model::parse_ipv4_prefix("0.0.0.0/0");
    ASSERT_TRUE(all);
    EXPECT_TRUE(all->contains(0xffffffffu));
    for (auto bad : {"10.0.1.0", "10.0.1.0/33", "10.0.1.0/", "10.0.1.0/08", "10.0.1.0/2a"})
        EXPECT_FALSE(model::parse_ipv4_prefix(bad)) << bad;
}

// ---- secret versions --------------------------------------------------------------------------

#include "coffer/model/secret_update.h"

TEST(SecretVersions, RoundTripAndRefuseMalformed) {
    Secret s{{"l6049huigpebyacg3j6qbcvgu", 5, Timestamp{1}, Timestamp{2}},
             {"s1", {}},
             {{2, Timestamp{10}}, {4, Timestamp{20}}},
             2};
    auto j = to_json(s);
    auto back = secret_from_json(j);
    ASSERT_TRUE(back.ok()) << back.error().message;
    EXPECT_EQ(back->versions, s.versions);
    EXPECT_EQ(back->current, 2u);
    auto bad = j;
    bad["CofferCurrentVersion"] = 3;  // names no version
    EXPECT_FALSE(secret_from_json(bad).ok());
    bad = j;
    bad["CofferVersions"] = json::array{};
    EXPECT_FALSE(secret_from_json(bad).ok());
    bad = j;
    bad["CofferVersions"].as_array()[1].as_object()["Version"] = 1;  // out of order
    EXPECT_FALSE(secret_from_json(bad).ok());
}

TEST(SecretVersions, APinIsReadFromTheSecretNameAndABadOneRefused) {
    auto spec_with = [](std::string_view name) {
        auto body = fmt::format(
            R"({{"Name":"w","TaskTemplate":{{"ContainerSpec":{{"Image":"b","Secrets":[{{"File":{{"Name":"t"}},"SecretID":"bvjui3xpv48u9gx9cya2y63q9","SecretName":"{}"}}]}}}}}})",
            name);
        return service_spec_from_json(json::parse(body));
    };
    auto pinned = spec_with("db@3");
    ASSERT_TRUE(pinned.ok()) << pinned.error().message;
    EXPECT_EQ(pinned->task.container.secrets[0].secret_name, "db");
    EXPECT_EQ(pinned->task.container.secrets[0].pinned_version, 3u);
    auto follows = spec_with("db");
    ASSERT_TRUE(follows.ok());
    EXPECT_EQ(follows->task.container.secrets[0].pinned_version, 0u);
    for (auto bad : {"db@", "db@0", "db@x", "db@-1", "db@1x"})
        EXPECT_FALSE(spec_with(bad).ok()) << bad;
}

TEST(SecretVersions, TheUpdateModeLabel) {
    EXPECT_EQ(secret_update_of({})->mode, SecretUpdateMode::restart);
    EXPECT_EQ(secret_update_of({{"coffer.secret-update", "live"}})->mode, SecretUpdateMode::live);
    EXPECT_EQ(secret_update_of({{"coffer.secret-update", "none"}})->mode, SecretUpdateMode::none);
    auto sig = secret_update_of({{"coffer.secret-update", "signal:SIGHUP"}});
    ASSERT_TRUE(sig.ok());
    EXPECT_EQ(sig->mode, SecretUpdateMode::signal);
    EXPECT_EQ(sig->signal, "SIGHUP");
    for (auto bad : {"", "Live", "signal:", "signal:SIGNOPE", "reload"})
        EXPECT_FALSE(secret_update_of({{"coffer.secret-update", bad}}).ok()) << bad;
    // Live replacement cannot reach a file bind-mounted at an absolute target.
    auto spec = service_spec_from_json(json::parse(
        R"({"Name":"w","Labels":{"coffer.secret-update":"live"},"TaskTemplate":{"ContainerSpec":{"Image":"b","Secrets":[{"File":{"Name":"/etc/k"},"SecretID":"bvjui3xpv48u9gx9cya2y63q9","SecretName":"k"}]}}})"));
    ASSERT_TRUE(spec.ok());
    auto checked = validate_service_spec(*spec);
    ASSERT_FALSE(checked.ok());
    EXPECT_NE(checked.error().message.find("outside /run/secrets"), std::string::npos);
}

// coffer.secret-mount: tmpfs, fuse or auto (the node's default, ""); on FUSE a live update may
// follow a secret mounted at an absolute target.
TEST(SecretVersions, TheSecretMountLabel) {
    EXPECT_EQ(secret_mount_of({}).value(), "");
    EXPECT_EQ(secret_mount_of({{"coffer.secret-mount", "auto"}}).value(), "");
    EXPECT_EQ(secret_mount_of({{"coffer.secret-mount", "tmpfs"}}).value(), "tmpfs");
    EXPECT_EQ(secret_mount_of({{"coffer.secret-mount", "fuse"}}).value(), "fuse");
    for (auto bad : {"", "FUSE", "ramfs", "fuse "}) {
        auto r = secret_mount_of({{"coffer.secret-mount", bad}});
        ASSERT_FALSE(r.ok()) << bad;
        EXPECT_NE(r.error().message.find("coffer.secret-mount"), std::string::npos);
    }
    auto with = [](std::string_view mount) {
        return service_spec_from_json(json::parse(fmt::format(
            R"({{"Name":"w","Labels":{{"coffer.secret-update":"live","coffer.secret-mount":"{}"}},"TaskTemplate":{{"ContainerSpec":{{"Image":"b","Secrets":[{{"File":{{"Name":"/etc/k"}},"SecretID":"bvjui3xpv48u9gx9cya2y63q9","SecretName":"k"}}]}}}}}})",
            mount)));
    };
    EXPECT_TRUE(validate_service_spec(with("fuse").value()).ok());
    EXPECT_FALSE(validate_service_spec(with("tmpfs").value()).ok());
    EXPECT_FALSE(validate_service_spec(with("auto").value()).ok());
    EXPECT_FALSE(validate_service_spec(with("fusee").value()).ok());
}

TEST(SecretVersions, ATaskKeepsItsVersionsThroughItsRecord) {
    Task t;
    t.meta = {"abcdefghijklmnopqrstuvwxy", 1, Timestamp{1}, Timestamp{1}};
    auto spec = service_spec_from_json(json::parse(
        R"({"Name":"w","TaskTemplate":{"ContainerSpec":{"Image":"b","Secrets":[{"File":{"Name":"t"},"SecretID":"bvjui3xpv48u9gx9cya2y63q9","SecretName":"db"}]}}})"));
    ASSERT_TRUE(spec.ok());
    t.spec = spec->task;
    t.secret_versions = {7};
    t.secret_signal = "HUP";
    auto back = task_from_json(to_json(t, true));
    ASSERT_TRUE(back.ok()) << back.error().message;
    EXPECT_EQ(back->secret_versions, (std::vector<std::uint64_t>{7}));
    EXPECT_EQ(back->secret_signal, "HUP");
    EXPECT_EQ(back->secret_version(0), 7u);
    EXPECT_EQ(Task{}.secret_version(0), 1u);
}
