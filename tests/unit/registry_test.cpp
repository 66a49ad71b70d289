// Image references as Docker reads them, and X-Registry-Auth turned into a docker config.json.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "coffer/crypto/encoding.h"
#include "coffer/model/image_ref.h"
#include "coffer/registry/registry.h"

namespace coffer {
namespace {

using model::parse_image_ref;

TEST(ImageRef, ReadsDomainPathTagAndDigestAsDockerDoes) {
    auto hub = parse_image_ref("busybox");
    ASSERT_TRUE(hub);
    EXPECT_EQ(hub->domain, "docker.io");
    EXPECT_EQ(hub->path, "library/busybox");
    EXPECT_EQ(hub->tag, "latest");
    EXPECT_EQ(hub->familiar(), "busybox");
    EXPECT_EQ(hub->transport(), "docker://docker.io/library/busybox:latest");

    auto team = parse_image_ref("team/app:1.4");
    ASSERT_TRUE(team);
    EXPECT_EQ(team->domain, "docker.io");
    EXPECT_EQ(team->path, "team/app");
    EXPECT_EQ(team->str(), "team/app:1.4");

    auto local = parse_image_ref("localhost/app");
    ASSERT_TRUE(local);
    EXPECT_EQ(local->domain, "localhost");

    const std::string digest = "sha256:" + std::string(64, 'a');
    auto pinned = parse_image_ref("registry.example:5000/team/app:1.4@" + digest);
    ASSERT_TRUE(pinned);
    EXPECT_EQ(pinned->domain, "registry.example:5000");
    EXPECT_EQ(pinned->path, "team/app");
    EXPECT_EQ(pinned->tag, "1.4");
    EXPECT_EQ(pinned->digest, digest);
    EXPECT_EQ(pinned->transport(), "docker://registry.example:5000/team/app@" + digest);
    EXPECT_EQ(pinned->str(), "registry.example:5000/team/app:1.4@" + digest);
    auto only_digest = parse_image_ref("10.0.0.1:5000/app@" + digest);
    ASSERT_TRUE(only_digest);
    EXPECT_EQ(only_digest->tag, "");
    EXPECT_EQ(only_digest->familiar_tagged(), "10.0.0.1:5000/app:latest");
    EXPECT_EQ(parse_image_ref("index.docker.io/library/busybox:1")->familiar(), "busybox");
}

TEST(ImageRef, RefusesWhatDockerRefusesNamingTheReference) {
    for (const std::string& bad : std::vector<std::string>{
             "", "UPPER/app", "app:", "app:-x", "app@sha256:abc", "reg.example:x/app", "a//b",
             "app/", "-app", "a..b", "reg.example:5000/", "app@md5:" + std::string(32, '0'),
             std::string(600, 'a')}) {
        auto r = parse_image_ref(bad);
        EXPECT_FALSE(r) << bad;
        if (!r) {
            EXPECT_EQ(r.error().code, Errc::invalid_argument);
            EXPECT_NE(r.error().message.find("invalid image reference"), std::string::npos);
        }
    }
}

std::string header_of(std::string_view json) {
    auto b64 =
        crypto::base64_encode({reinterpret_cast<const std::uint8_t*>(json.data()), json.size()});
    // base64url, without padding, as some clients send it.
    for (auto& c : b64) {
        if (c == '+') c = '-';
        if (c == '/') c = '_';
    }
    while (!b64.empty() && b64.back() == '=') b64.pop_back();
    return b64;
}

TEST(RegistryAuth, AHeaderBecomesAConfigJsonForTheImagesRegistry) {
    auto ref = parse_image_ref("reg.example:5000/app:1");
    ASSERT_TRUE(ref);
    auto config = registry::config_from_header(
        header_of(R"({"username":"puller","password":"p+/ss?>","serveraddress":"x"})"), *ref);
    ASSERT_TRUE(config) << config.error().message;
    auto v = boost::json::parse(
        std::string_view(reinterpret_cast<const char*>(config->data()), config->size()));
    auto auth = std::string(v.at("auths").at("reg.example:5000").at("auth").as_string());
    auto decoded = crypto::base64_decode_secure(auth);
    ASSERT_TRUE(decoded);
    EXPECT_EQ(std::string_view(reinterpret_cast<const char*>(decoded->data()), decoded->size()),
              "puller:p+/ss?>");

    auto token = registry::config_from_header(header_of(R"({"identitytoken":"tok"})"), *ref);
    ASSERT_TRUE(token);
    auto t = boost::json::parse(
        std::string_view(reinterpret_cast<const char*>(token->data()), token->size()));
    EXPECT_EQ(t.at("auths").at("reg.example:5000").at("identitytoken"), "tok");
}

TEST(RegistryAuth, NoCredentialsGiveNothingAndGarbageIsRefusedWithoutEchoingIt) {
    auto ref = parse_image_ref("app");
    ASSERT_TRUE(ref);
    auto none = registry::config_from_header(header_of("{}"), *ref);
    ASSERT_TRUE(none);
    EXPECT_TRUE(none->empty());
    auto empty = registry::config_from_header("", *ref);
    ASSERT_TRUE(empty);
    EXPECT_TRUE(empty->empty());
    for (const std::string& bad : std::vector<std::string>{
             "!!!secret-looking!!!", header_of("[1,2]"), header_of("not json secretvalue")}) {
        auto r = registry::config_from_header(bad, *ref);
        ASSERT_FALSE(r) << bad;
        EXPECT_EQ(r.error().code, Errc::invalid_argument);
        EXPECT_EQ(r.error().message.find("secret"), std::string::npos) << r.error().message;
    }
}

}  // namespace
}  // namespace coffer
