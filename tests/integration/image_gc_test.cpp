// `coffer-agent image prune` on a store of real images (make-test-images): what is pulled goes,
// what is imported by hand only with --all, an image a task uses never, nor one used within
// --unused-for; what goes takes its blobs, its unpacked rootfs and its record of use with it.
// A pull is stood for by the annotation a pull writes into the layout's index.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <fmt/format.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>

#include "harness.h"

namespace coffer::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// "name digest" lines into a map.
std::map<std::string, std::string> images_in(const std::string& out) {
    std::map<std::string, std::string> m;
    for (const auto& line : lines_of(out)) {
        std::istringstream in(line);
        std::string name, digest;
        if (in >> name >> digest) m[name] = digest;
    }
    return m;
}

std::string hex_of(const std::string& digest) {
    return digest.substr(digest.find(':') + 1);
}

std::uintmax_t bytes_under(const fs::path& dir) {
    std::uintmax_t n = 0;
    for (const auto& e : fs::recursive_directory_iterator(dir))
        if (e.is_regular_file()) n += e.file_size();
    return n;
}

class ImageGc : public ::testing::Test {
  protected:
    void SetUp() override {
        if (::geteuid() != 0) GTEST_SKIP() << "needs root";
        if (agent_program().empty()) GTEST_SKIP() << "COFFER_AGENT is not set";
        ASSERT_FALSE(image_layout().empty());
        auto r = coffer_agent({"image", "import", image_layout().string()});
        ASSERT_EQ(r.status, 0) << r.err;
        imported_ = images_in(r.out);
        ASSERT_TRUE(imported_.contains("busybox:latest")) << r.out;
        ASSERT_TRUE(imported_.contains("healthcheck:latest")) << r.out;
        ASSERT_NE(imported_["busybox:latest"], imported_["healthcheck:latest"]);
    }
    void TearDown() override {
        // Whatever a failed test left of a task run by `coffer-agent run`.
        if (!agent_program().empty() && ::geteuid() == 0) (void)coffer_agent({"cleanup"});
    }

    std::string data() const { return work_.path() + "/data"; }
    std::string run() const { return work_.path() + "/run"; }
    fs::path store() const { return fs::path(data()) / "images"; }
    fs::path used_record(const std::string& digest) const {
        return store() / "used" / hex_of(digest);
    }

    CliResult coffer_agent(std::vector<std::string> args) const {
        std::vector<std::string> argv{agent_program(), "--data-dir",  data(), "--run-dir",
                                      run(),           "--log-level", "warn"};
        argv.insert(argv.end(), args.begin(), args.end());
        return run_program(argv);
    }
    std::map<std::string, std::string> listed() const {
        auto r = coffer_agent({"image", "ls"});
        EXPECT_EQ(r.status, 0) << r.err;
        return images_in(r.out);
    }
    std::map<std::string, std::string> prune(std::vector<std::string> options = {}) const {
        options.insert(options.begin(), {"image", "prune"});
        auto r = coffer_agent(options);
        EXPECT_EQ(r.status, 0) << r.err;
        return images_in(r.out);
    }

    // A task of this node runs on digest, as the runner records it.
    void use_in_task(const std::string& id, const std::string& digest) const {
        fs::create_directories(fs::path(run()) / "tasks" / id);
        std::ofstream(fs::path(run()) / "tasks" / id / "image") << digest;
    }
    // Marks name as pulled from a registry: the annotation ImageStore::pull writes.
    void mark_pulled(const std::string& name) const {
        auto index = store() / "oci" / "index.json";
        auto r = run_program(
            {"jq", "-c", "--arg", "n", name,
             R"((.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $n)
                | .annotations["io.coffer.registry.digest"]) = "sha256:)" +
                 std::string(64, 'e') + "\"",
             index.string()});
        ASSERT_EQ(r.status, 0) << r.err;
        std::ofstream(index) << r.out;
    }
    // Sets the image's last use `ago` back.
    void last_used(const std::string& digest, std::chrono::seconds ago) const {
        auto path = used_record(digest);
        ASSERT_TRUE(fs::exists(path)) << path;
        timespec t{};
        ::clock_gettime(CLOCK_REALTIME, &t);
        t.tv_sec -= ago.count();
        const timespec times[2] = {t, t};
        ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0) << path;
    }
    std::chrono::seconds age_of_record(const std::string& digest) const {
        struct stat st {};
        EXPECT_EQ(::stat(used_record(digest).c_str(), &st), 0);
        return std::chrono::seconds(::time(nullptr) - st.st_mtim.tv_sec);
    }

    MountDir work_;  // a real filesystem: `coffer-agent run` mounts an overlay in it
    std::map<std::string, std::string> imported_;
};

TEST_F(ImageGc, PruneWithoutAllLeavesImportedImages) {
    EXPECT_TRUE(prune().empty());
    EXPECT_EQ(listed(), imported_);
}

TEST_F(ImageGc, PruneAllRemovesEveryImageWithItsBlobsCacheAndRecord) {
    const auto blobs = store() / "oci" / "blobs";
    const auto before = bytes_under(blobs);
    // An unpacked rootfs as a task's start leaves it.
    const auto busybox = imported_["busybox:latest"];
    fs::create_directories(store() / "rootfs" / hex_of(busybox) / "bin");
    ASSERT_TRUE(fs::exists(used_record(busybox)));

    EXPECT_EQ(prune({"--all"}), imported_);
    EXPECT_TRUE(listed().empty());
    EXPECT_LT(bytes_under(blobs), before);
    EXPECT_EQ(bytes_under(blobs), 0u);
    EXPECT_FALSE(fs::exists(store() / "rootfs" / hex_of(busybox)));
    EXPECT_TRUE(fs::is_empty(store() / "used"));
    // The store still takes images.
    auto again = coffer_agent({"image", "import", image_layout().string(), "busybox:latest"});
    EXPECT_EQ(again.status, 0) << again.err;
}

TEST_F(ImageGc, AnImageATaskUsesIsNeverRemoved) {
    const auto busybox = imported_["busybox:latest"];
    use_in_task("web-1", busybox);
    mark_pulled("busybox:latest");
    last_used(busybox, 48h);

    auto removed = prune({"--all"});
    EXPECT_FALSE(removed.contains("busybox:latest"));
    EXPECT_TRUE(removed.contains("healthcheck:latest"));
    EXPECT_EQ(listed(), (std::map<std::string, std::string>{{"busybox:latest", busybox}}));
    EXPECT_TRUE(prune({"--all", "--unused-for", "3600"}).empty());
    // In use counts as used now: its period starts when its last task ends.
    EXPECT_LT(age_of_record(busybox), 60s);

    fs::remove_all(fs::path(run()) / "tasks" / "web-1");
    EXPECT_EQ(prune(), (std::map<std::string, std::string>{{"busybox:latest", busybox}}));
    EXPECT_TRUE(listed().empty());
}

TEST_F(ImageGc, PruneWithoutAllRemovesOnlyPulledImages) {
    mark_pulled("hostile-run:latest");
    EXPECT_EQ(prune(), (std::map<std::string, std::string>{
                           {"hostile-run:latest", imported_["hostile-run:latest"]}}));
    auto left = imported_;
    left.erase("hostile-run:latest");
    EXPECT_EQ(listed(), left);
}

TEST_F(ImageGc, UnusedForRemovesNothingUsedWithinThePeriod) {
    // Imported just now.
    EXPECT_TRUE(prune({"--all", "--unused-for", "3600"}).empty());
    EXPECT_EQ(listed(), imported_);

    // Without a record (a store from before records): used now, and recorded.
    const auto healthcheck = imported_["healthcheck:latest"];
    fs::remove(used_record(healthcheck));
    for (const auto& [name, digest] : imported_)
        if (digest != healthcheck) last_used(digest, 2h);
    // Used again now: imported once more.
    auto again = coffer_agent({"image", "import", image_layout().string(), "busybox:latest"});
    ASSERT_EQ(again.status, 0) << again.err;

    auto removed = prune({"--all", "--unused-for", "3600"});
    EXPECT_FALSE(removed.contains("busybox:latest"));
    EXPECT_FALSE(removed.contains("healthcheck:latest"));
    EXPECT_TRUE(fs::exists(used_record(healthcheck)));
    auto expected = imported_;
    expected.erase("busybox:latest");
    expected.erase("healthcheck:latest");
    EXPECT_EQ(removed, expected);
    EXPECT_EQ(listed().size(), 2u);
}

TEST_F(ImageGc, ATaskStartRecordsTheUseOfItsImage) {
    if (::access("/usr/bin/crun", X_OK) != 0 && ::access("/usr/sbin/runc", X_OK) != 0)
        GTEST_SKIP() << "no OCI runtime";
    const auto busybox = imported_["busybox:latest"];
    mark_pulled("busybox:latest");
    last_used(busybox, 48h);
    const auto spec = work_.path() + "/spec.json";
    std::ofstream(spec) << fmt::format(
        R"({{"id":"gc-{}","image":"busybox","args":["true"],"limits":{{"pids":16}}}})", ::getpid());

    auto r = coffer_agent({"run", "--spec", spec});
    ASSERT_EQ(r.status, 0) << r.out << r.err;
    EXPECT_LT(age_of_record(busybox), 60s);
    EXPECT_TRUE(prune({"--unused-for", "3600"}).empty());
    EXPECT_TRUE(listed().contains("busybox:latest"));
}

}  // namespace
}  // namespace coffer::test
