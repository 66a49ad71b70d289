// `coffer-agent image pull` against hostile answers: layers that leave the image or carry device
// nodes (from a real registry with TLS and credentials), and a registry that lies about sizes
// and digests. Each is refused with its reason and leaves nothing in the store.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <fstream>

#include "harness.h"
#include "registry_fixture.h"

namespace coffer::test {
namespace {

namespace fs = std::filesystem;

std::string agent() {
    return env_or("COFFER_AGENT", "");
}

class ImagePull : public ::testing::Test {
  protected:
    void SetUp() override {
        if (::geteuid() != 0) GTEST_SKIP() << "needs root";
        if (agent().empty()) GTEST_SKIP() << "COFFER_AGENT is not set";
        for (const auto* p : {"/usr/bin/docker-registry", "skopeo", "htpasswd", "openssl"})
            if (run_program({"sh", "-c", fmt::format("command -v {}", p)}).status != 0)
                GTEST_SKIP() << p << " is not installed";
        registry_ = std::make_unique<Registry>(tmp_.path() / "registry", "127.0.0.1");
        ASSERT_EQ(registry_->error(), "");
        fs::create_directories(certs() / registry_->host());
        fs::copy_file(registry_->ca_cert(), certs() / registry_->host() / "ca.crt");
        std::ofstream(auth_file())
            << fmt::format(R"({{"auths":{{"{}":{{"auth":"{}"}}}}}})", registry_->host(),
                           run_program({"base64", "-w0"}, registry_->creds()).out);
    }

    fs::path certs() { return tmp_.path() / "certs.d"; }
    fs::path auth_file() { return tmp_.path() / "auth.json"; }
    fs::path data() { return tmp_.path() / "data"; }

    CliResult coffer_agent(std::vector<std::string> args) {
        std::vector<std::string> argv{agent(),
                                      "--data-dir",
                                      data().string(),
                                      "--run-dir",
                                      (tmp_.path() / "run").string(),
                                      "--registry-certs",
                                      certs().string()};
        argv.insert(argv.end(), args.begin(), args.end());
        return run_program(argv);
    }
    CliResult pull(const std::string& ref, std::vector<std::string> global = {}) {
        global.insert(global.end(), {"image", "pull", ref, "--auth-file", auth_file().string()});
        return coffer_agent(global);
    }
    // Nothing of a refused pull is left: no name, no staging directory.
    void expect_nothing_left(const std::string& ref) {
        auto ls = coffer_agent({"image", "ls"});
        EXPECT_EQ(ls.out.find(ref), std::string::npos) << ls.out;
        std::error_code ec;
        auto pulls = data() / "images" / "pulls";
        EXPECT_TRUE(!fs::exists(pulls) || fs::is_empty(pulls, ec)) << ref;
    }

    TempDir tmp_;
    std::unique_ptr<Registry> registry_;
};

TEST_F(ImagePull, HostileLayersAreRefusedWithTheirReasonAndLeaveNothing) {
    const auto layout = tmp_.path() / "hostile";
    ASSERT_EQ(make_hostile_layouts(layout), "");
    const std::map<std::string, std::string> reasons = {
        {"dotdot", "leaves the image"},     {"absolute", "leaves the image"},
        {"device", "device node"},          {"hardlink", "leaves the image"},
        {"pax-dotdot", "leaves the image"},
    };
    for (const auto& [tag, reason] : reasons) {
        ASSERT_EQ(registry_->push(fmt::format("oci:{}:{}", layout.string(), tag), "hostile:" + tag),
                  "");
        const auto ref = fmt::format("{}/hostile:{}", registry_->host(), tag);
        auto r = pull(ref);
        EXPECT_NE(r.status, 0) << tag << ": " << r.out;
        EXPECT_NE(r.err.find(reason), std::string::npos) << tag << ": " << r.err;
        expect_nothing_left(ref);
    }
    // The harmless one from the same layout goes in.
    ASSERT_EQ(registry_->push(fmt::format("oci:{}:good", layout.string()), "hostile:good"), "");
    auto good = pull(registry_->host() + "/hostile:good");
    EXPECT_EQ(good.status, 0) << good.err;
    EXPECT_NE(coffer_agent({"image", "ls"}).out.find("hostile:good"), std::string::npos);
}

TEST_F(ImagePull, ABoundedPullRefusesALargerImageAndWrongCredentials) {
    // An image with 2 MiB of random bytes (they do not compress) against a bound of 1 MiB.
    const auto layout = tmp_.path() / "big";
    auto made =
        run_program({"sh", "-c",
                     fmt::format("set -e; umoci init --layout {0}; umoci new --image {0}:big; "
                                 "umoci unpack --rootless --image {0}:big {1}; "
                                 "head -c 2097152 /dev/urandom > {1}/rootfs/noise; "
                                 "umoci repack --image {0}:big {1}",
                                 layout.string(), (tmp_.path() / "bundle").string())});
    ASSERT_EQ(made.status, 0) << made.err;
    ASSERT_EQ(registry_->push(fmt::format("oci:{}:big", layout.string()), "big:1"), "");
    const auto ref = registry_->host() + "/big:1";
    auto r = pull(ref, {"--max-image-size", "1048576"});
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.err.find("larger than"), std::string::npos) << r.err;
    expect_nothing_left(ref);

    std::ofstream(auth_file()) << fmt::format(
        R"({{"auths":{{"{}":{{"auth":"{}"}}}}}})", registry_->host(),
        run_program({"base64", "-w0"}, registry_->user() + ":wrong").out);
    r = pull(ref);
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.err.find("pull access denied for " + ref), std::string::npos) << r.err;
    expect_nothing_left(ref);
}

TEST_F(ImagePull, ARegistryThatLiesAboutSizesOrDigestsIsRefused) {
    LyingRegistry liar(tmp_.path() / "liar", "127.0.0.1");
    ASSERT_EQ(liar.error(), "");
    for (const std::string tag : {"size", "digest", "huge"}) {
        const auto ref = fmt::format("{}/liar:{}", liar.host(), tag);
        auto r = pull(ref, {"--insecure-registry", liar.host()});
        EXPECT_NE(r.status, 0) << tag << ": " << r.out;
        EXPECT_NE(r.err.find("coffer-agent: "), std::string::npos) << tag << ": " << r.err;
        expect_nothing_left(ref);
    }
}

}  // namespace
}  // namespace coffer::test
