#include <gtest/gtest.h>

#include "coffer/model/duration.h"
#include "coffer/model/filters.h"
#include "coffer/model/json.h"
#include "coffer/model/secret.h"
#include "coffer/model/time.h"

using namespace coffer;
using namespace coffer::model;

TEST(SecretName, AcceptsDockerNames) {
    for (const std::string& n : std::vector<std::string>{"a", "db_pass", "db-pass.v2", "A1", std::string(64, 'x')})
        EXPECT_TRUE(validate_object_name(n).ok()) << n;
}

TEST(SecretName, RefusesWhatDockerRefuses) {
    for (const std::string& n :
         std::vector<std::string>{"", "-a", "a-", "_a", "a.", "a b", "a/b", "\xc3\xa4", "a\n", std::string(65, 'x')}) {
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
    Secret s{{"l6049huigpebyacg3j6qbcvgu", 23, Timestamp{1}, Timestamp{2}}, {"s1", {{"env", "prod"}}}};
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

TEST(Duration, ParsesGoStyleAndDays) {
    using std::chrono::seconds;
    EXPECT_EQ(parse_duration("2160h"), seconds(2160 * 3600));
    EXPECT_EQ(parse_duration("90m30s"), seconds(90 * 60 + 30));
    EXPECT_EQ(parse_duration("30d"), seconds(30 * 86400));
    for (auto bad : {"", "h", "10", "10x", "-1h", "1h-", "99999999999999999999h"})
        EXPECT_FALSE(parse_duration(bad)) << bad;
}
