// The registry fixtures themselves: a real registry that takes pushes with its credentials only,
// hostile images that can be pushed to it, and a lying registry that skopeo pulls from.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

#include "harness.h"
#include "registry_fixture.h"

namespace coffer::test {
namespace {

namespace fs = std::filesystem;

bool have(const std::string& program) {
    return run_program({"sh", "-c", "command -v " + program}).status == 0;
}

std::string missing_tool() {
    for (const auto* p : {"/usr/bin/docker-registry", "skopeo", "htpasswd", "openssl", "python3"})
        if (!have(p)) return p;
    return "";
}

#define SKIP_WITHOUT_TOOLS()                                        \
    do {                                                            \
        if (auto m = missing_tool(); !m.empty()) GTEST_SKIP() << m; \
    } while (0)

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return s;
}

// The busybox test image; "" when it could not be built.
std::string busybox_layout(const fs::path& out) {
    auto r = run_command(
        {env_or("COFFER_MAKE_TEST_IMAGES", "tests/integration/make-test-images"), out.string()});
    if (!r.ok()) {
        ADD_FAILURE() << "make-test-images: " << r.describe();
        return "";
    }
    return out.string();
}

std::string local_digest(const std::string& reference) {
    auto r = run_skopeo({"inspect", "--format={{.Digest}}", reference});
    EXPECT_TRUE(r.ok()) << reference << ": " << r.describe();
    return r.out.substr(0, r.out.find('\n'));
}

TEST(Registry, TakesPushesAndAnswersOnlyItsCredentials) {
    SKIP_WITHOUT_TOOLS();
    TempDir tmp;
    Registry registry(tmp.path() / "registry", "127.0.0.1");
    ASSERT_EQ(registry.error(), "");
    auto layout = busybox_layout(tmp.path() / "layout");
    ASSERT_NE(layout, "");

    ASSERT_EQ(registry.push("oci:" + layout + ":busybox:latest", "coffer/busybox:latest"), "");
    auto digest = registry.digest("coffer/busybox:latest");
    EXPECT_EQ(digest, local_digest("oci:" + layout + ":busybox:latest"));

    const auto ref = "docker://" + registry.host() + "/coffer/busybox:latest";
    auto right =
        registry.skopeo({"inspect", registry.tls_flag(""), "--creds=" + registry.creds(), ref});
    EXPECT_TRUE(right.ok()) << right.describe();

    auto wrong =
        registry.skopeo({"inspect", registry.tls_flag(""),
                         "--creds=" + registry.user() + ":not-" + registry.password(), ref});
    EXPECT_FALSE(wrong.ok());
    EXPECT_NE(lower(wrong.err).find("unauthorized"), std::string::npos) << wrong.err;

    auto anonymous = registry.skopeo({"inspect", registry.tls_flag(""), "--no-creds", ref});
    EXPECT_FALSE(anonymous.ok());
    EXPECT_NE(lower(anonymous.err).find("unauthorized"), std::string::npos) << anonymous.err;

    // Without the test CA the server certificate is not trusted.
    auto untrusted = registry.skopeo({"inspect", "--creds=" + registry.creds(), ref});
    EXPECT_FALSE(untrusted.ok());
    EXPECT_NE(untrusted.err.find("x509"), std::string::npos) << untrusted.err;
}

TEST(Registry, TakesHostileImages) {
    SKIP_WITHOUT_TOOLS();
    TempDir tmp;
    Registry registry(tmp.path() / "registry", "127.0.0.1");
    ASSERT_EQ(registry.error(), "");
    const auto layout = tmp.path() / "hostile";
    ASSERT_EQ(make_hostile_layouts(layout), "");

    for (const auto* tag : {"good", "dotdot", "absolute", "device", "hardlink", "pax-dotdot"}) {
        SCOPED_TRACE(tag);
        const auto source = fmt::format("oci:{}:{}", layout.string(), tag);
        ASSERT_EQ(registry.push(source, fmt::format("hostile:{}", tag)), "");
        // Pushed unchanged: the registry names the manifest the layout holds.
        EXPECT_EQ(registry.digest(fmt::format("hostile:{}", tag)), local_digest(source));
    }
}

TEST(Registry, ServesPlainHttpAndWithoutAuthWhenAskedTo) {
    SKIP_WITHOUT_TOOLS();
    TempDir tmp;
    const auto layout = tmp.path() / "hostile";
    ASSERT_EQ(make_hostile_layouts(layout), "");
    const auto source = "oci:" + layout.string() + ":good";
    for (auto [tls, auth] :
         {std::pair{false, false}, std::pair{false, true}, std::pair{true, false}}) {
        SCOPED_TRACE(fmt::format("tls {} auth {}", tls, auth));
        Registry registry(tmp.path() / "registry", "127.0.0.1", nullptr,
                          {.tls = tls, .auth = auth});
        ASSERT_EQ(registry.error(), "");
        ASSERT_EQ(registry.push(source, "hostile:good"), "");
        EXPECT_EQ(registry.digest("hostile:good"), local_digest(source));
        auto anonymous = registry.skopeo({"inspect", registry.tls_flag(""), "--no-creds",
                                          "docker://" + registry.host() + "/hostile:good"});
        EXPECT_EQ(anonymous.ok(), !auth) << anonymous.describe();
    }
}

TEST(LyingRegistry, SkopeoRefusesABlobThatIsNotItsDigest) {
    SKIP_WITHOUT_TOOLS();
    TempDir tmp;
    LyingRegistry liar(tmp.path() / "liar", "127.0.0.1");
    ASSERT_EQ(liar.error(), "");

    auto pull = [&](const std::string& tag) {
        return liar.skopeo({"copy", "--src-tls-verify=false",
                            fmt::format("docker://{}/liar:{}", liar.host(), tag),
                            fmt::format("oci:{}:x", (tmp.path() / ("pulled-" + tag)).string())});
    };
    auto digest = pull("digest");
    EXPECT_FALSE(digest.ok()) << digest.out;
    EXPECT_NE(lower(digest.err).find("digest did not match"), std::string::npos) << digest.err;

    // What skopeo makes of the other lies is recorded, not asserted.
    for (const auto* tag : {"digest", "size", "huge"}) {
        auto r = std::string(tag) == "digest" ? digest : pull(tag);
        auto said = r.ok() ? std::string("accepted (exit 0)") : "refused: " + r.describe();
        fmt::print("skopeo copy liar:{}: {}\n", tag, said);
        ::testing::Test::RecordProperty(fmt::format("skopeo-{}", tag), said);
    }

    auto requests = liar.requests();
    EXPECT_TRUE(std::any_of(requests.begin(), requests.end(), [](const std::string& l) {
        return l.starts_with("GET /v2/liar/manifests/digest ");
    })) << join_lines(requests);
}

TEST(Registry, ServesInsideANetworkNamespace) {
    SKIP_WITHOUT_TOOLS();
    if (!NetworkNamespace::available()) GTEST_SKIP() << "no network namespaces here";
    NetworkNamespace ns("registry");
    ASSERT_EQ(ns.error(), "");
    TempDir tmp;
    Registry registry(tmp.path() / "registry", "127.0.0.1", &ns);
    ASSERT_EQ(registry.error(), "");
    LyingRegistry liar(tmp.path() / "liar", "127.0.0.1", &ns);
    ASSERT_EQ(liar.error(), "");

    const auto layout = tmp.path() / "hostile";
    ASSERT_EQ(make_hostile_layouts(layout), "");
    const auto source = "oci:" + layout.string() + ":good";
    ASSERT_EQ(registry.push(source, "hostile:good"), "");
    EXPECT_EQ(registry.digest("hostile:good"), local_digest(source));

    auto digest = liar.skopeo({"copy", "--src-tls-verify=false",
                               fmt::format("docker://{}/liar:digest", liar.host()),
                               fmt::format("oci:{}:x", (tmp.path() / "pulled").string())});
    EXPECT_FALSE(digest.ok());
}

}  // namespace
}  // namespace coffer::test
