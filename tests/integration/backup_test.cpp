// `coffer cluster backup` and `cofferd --restore` against real cofferd processes: a backup taken
// while clients create secrets holds every create acknowledged before it began and no half of
// any, holds no plaintext, restores into a fresh directory only, with the right key, from an
// unaltered file only; an autolocked cluster's restore starts locked.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "coffer/crypto/encoding.h"
#include "coffer/crypto/random.h"
#include "coffer/net/http_client.h"
#include "coffer/store/store.h"
#include "harness.h"
#include "manager_fixture.h"

using namespace coffer;
using namespace coffer::test;
namespace fs = std::filesystem;
namespace json = boost::json;
using namespace std::chrono_literals;

namespace {

std::string str(const crypto::SecureBuffer& b) {
    return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

std::span<const std::uint8_t> bytes_of(std::string_view s) {
    return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

std::string random_text(std::size_t n) {
    crypto::SecureBuffer raw(n);
    crypto::random_bytes(raw.span());
    return str(crypto::base64url_encode_secure(raw.span()));
}

std::string base64(std::string_view s) {
    return str(crypto::base64_encode_secure(bytes_of(s)));
}

// Creates a secret over the API; its ID, or "" when the manager did not acknowledge it.
std::string create_secret(net::HttpClient& http, const std::string& name, std::string_view data) {
    auto body = json::serialize(json::object{{"Name", name}, {"Data", base64(data)}});
    auto r = http.request("POST", "/v1.41/secrets/create", bytes_of(body));
    if (!r || r->status != 201) return "";
    return std::string(json::parse(r->body).at("ID").as_string());
}

std::set<std::string> secret_names(const std::string& host) {
    auto http = net::HttpClient::connect(host);
    if (!http) return {};
    auto r = (*http)->request("GET", "/v1.41/secrets");
    std::set<std::string> out;
    if (!r || r->status != 200) return out;
    auto list = json::parse(r->body);
    for (const auto& s : list.as_array())
        out.insert(std::string(s.at("Spec").at("Name").as_string()));
    return out;
}

class Backup : public ManagerTest {
  protected:
    fs::path data() const { return dir_.path() / "data"; }

    // cofferd --restore FILE --restore-key KEY on a data directory and socket of its own.
    std::unique_ptr<Daemon> restored(const fs::path& backup, const fs::path& key,
                                     const fs::path& into, const std::string& tag) {
        return std::make_unique<Daemon>(
            into, dir_.path() / (tag + ".sock"),
            std::vector<std::string>{"--restore", backup.string(), "--restore-key", key.string(),
                                     "--listen", "127.0.0.1:0"});
    }

    // A copy of the KEK file, as an operator keeps one away from the backups.
    fs::path save_kek() {
        auto copy = dir_.path() / "kek.saved";
        fs::copy_file(data() / "kek", copy);
        fs::permissions(copy, fs::perms::owner_read | fs::perms::owner_write);
        return copy;
    }

    fs::path backup(const std::string& name = "backup.cbk") {
        auto file = dir_.path() / name;
        auto r = cli({"cluster", "backup", file.string()});
        EXPECT_EQ(r.status, 0) << r.err;
        return file;
    }

    // cofferd --restore run to its failure: the exit status and what it printed.
    CliResult restore_fails(const fs::path& backup, const fs::path& key, const fs::path& into) {
        auto cofferd = std::getenv("COFFERD");
        return run_program({cofferd ? cofferd : "cofferd", "--restore", backup.string(),
                            "--restore-key", key.string(), "--data-dir", into.string(), "--socket",
                            (dir_.path() / "failed.sock").string(), "--listen", "127.0.0.1:0"});
    }
};

}  // namespace

TEST_F(Backup, UnderWriteLoadHoldsEveryAcknowledgedCreateAndNoHalfOfAny) {
    constexpr int writers = 6;
    std::mutex mu;
    std::map<std::string, std::string> acked;  // name -> data, acknowledged
    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    for (int w = 0; w < writers; ++w)
        threads.emplace_back([&, w] {
            auto http = net::HttpClient::connect(daemon_->host());
            if (!http) return;
            for (int i = 0; !stop; ++i) {
                auto name = fmt::format("load-{}-{}", w, i);
                auto data = random_text(24) + " canary-" + random_text(12);
                if (create_secret(**http, name, data).empty()) return;
                std::lock_guard lock(mu);
                acked.emplace(name, data);
            }
        });
    std::this_thread::sleep_for(1500ms);
    std::map<std::string, std::string> before;
    {
        std::lock_guard lock(mu);
        before = acked;
    }
    auto start = std::chrono::steady_clock::now();
    auto file = backup();
    auto took = std::chrono::steady_clock::now() - start;
    std::this_thread::sleep_for(300ms);
    stop = true;
    for (auto& t : threads) t.join();
    ASSERT_GT(before.size(), 50u) << "too few creates to test anything";
    ASSERT_GT(acked.size(), before.size()) << "no create ran during the backup";

    struct stat st {};
    ASSERT_EQ(::stat(file.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    std::cout << "backup of " << before.size() << "+ secrets: " << st.st_size << " bytes in "
              << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms\n";

    // No plaintext: no secret's bytes, nor a piece of them, nor their base64 (the API's form).
    auto text = read_file(file);
    auto kek = read_file(data() / "kek");
    for (const auto& [name, data] : acked) {
        ASSERT_EQ(text.find(data), std::string::npos) << name;
        ASSERT_EQ(text.find(data.substr(data.find("canary-"))), std::string::npos) << name;
        ASSERT_EQ(text.find(data.substr(0, 16)), std::string::npos) << name;
        ASSERT_EQ(text.find(base64(data)), std::string::npos) << name;
    }
    EXPECT_EQ(text.find(kek), std::string::npos);
    EXPECT_EQ(text.find(base64(kek)), std::string::npos);

    auto key = save_kek();
    daemon_.reset();
    auto second = restored(file, key, dir_.path() / "restored", "restored");
    ASSERT_TRUE(second->ready()) << second->stdout_text();
    auto names = secret_names(second->host());
    for (const auto& [name, data] : before) ASSERT_TRUE(names.contains(name)) << name << " lost";
    for (const auto& name : names) EXPECT_TRUE(acked.contains(name)) << name;
    second.reset();

    // The restored store itself: every secret listed has its bytes, and nothing else is there.
    auto s = store::Store::open({.dir = dir_.path() / "restored"});
    ASSERT_TRUE(s.ok()) << s.error().message;
    std::multiset<std::string> values;
    ASSERT_TRUE(s->store
                    ->scan(store::Table::secret_data,
                           [&](std::string_view, crypto::SecureBuffer v) {
                               values.insert(str(v));
                               return true;
                           })
                    .ok());
    EXPECT_EQ(values.size(), names.size());
    for (const auto& name : names) EXPECT_EQ(values.count(acked.at(name)), 1u) << name;
}

TEST_F(Backup, ARestoreRefusesATamperedOrTruncatedFileAWrongKeyAndANonEmptyDirectory) {
    ASSERT_FALSE(create_secret(*http(), "one", "bytes of one").empty());
    auto file = backup();
    auto key = save_kek();
    auto good = read_file(file);
    auto write = [&](const std::string& name, const std::string& bytes) {
        auto p = dir_.path() / name;
        std::ofstream(p, std::ios::binary) << bytes;
        return p;
    };

    auto tampered = good;
    tampered[tampered.size() / 2] = static_cast<char>(tampered[tampered.size() / 2] ^ 0x20);
    auto r = restore_fails(write("tampered.cbk", tampered), key, dir_.path() / "t");
    EXPECT_NE(r.status, 0);
    EXPECT_TRUE(r.err.find("MAC does not match") != std::string::npos ||
                r.err.find("not a valid coffer backup") != std::string::npos)
        << r.err;
    EXPECT_FALSE(fs::exists(dir_.path() / "t"));

    r = restore_fails(write("short.cbk", good.substr(0, good.size() - 40)), key, dir_.path() / "t");
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.err.find("truncated"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(dir_.path() / "t"));

    auto wrong = write("wrong.kek", random_text(24).substr(0, 32));
    fs::permissions(wrong, fs::perms::owner_read | fs::perms::owner_write);
    r = restore_fails(file, wrong, dir_.path() / "t");
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.err.find("does not open this backup's keys"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(dir_.path() / "t"));

    // A key file others may read is refused before anything is read from it.
    auto open_key = write("open.kek", read_file(key));
    fs::permissions(open_key, fs::perms::owner_read | fs::perms::group_read);
    r = restore_fails(file, open_key, dir_.path() / "t");
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.err.find("chmod 600"), std::string::npos) << r.err;

    // The running manager's own data directory, or any directory with something in it.
    r = restore_fails(file, key, data());
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.err.find("not empty"), std::string::npos) << r.err;
    EXPECT_EQ(secret_names(daemon_->host()), std::set<std::string>{"one"});
}

TEST_F(Backup, IsRefusedWhileLockedAndAnAutolockedRestoreStartsLockedUntilUnlocked) {
    daemon_.reset();
    fs::remove_all(data());
    auto unlock_key = dir_.path() / "unlock.key";
    start({"--autolock", "--unlock-key-file", unlock_key.string()});
    ASSERT_FALSE(create_secret(*http(), "locked-one", "autolocked bytes").empty());
    auto file = backup();

    // Restarted, the manager is locked: no backup.
    start();
    auto r = cli({"cluster", "backup", (dir_.path() / "while-locked.cbk").string()});
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.err.find("locked"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(dir_.path() / "while-locked.cbk"));
    daemon_.reset();

    auto second = restored(file, unlock_key, dir_.path() / "restored", "restored");
    ASSERT_TRUE(second->ready()) << second->stdout_text();
    EXPECT_FALSE(fs::exists(dir_.path() / "restored" / "kek"));
    auto listed = coffer_cli(second->host(), {"secret", "ls"});
    EXPECT_NE(listed.status, 0);
    EXPECT_NE(listed.err.find("locked"), std::string::npos) << listed.err;
    auto unlocked = coffer_cli(second->host(), {"cluster", "unlock"}, read_file(unlock_key));
    ASSERT_EQ(unlocked.status, 0) << unlocked.err;
    EXPECT_EQ(secret_names(second->host()), std::set<std::string>{"locked-one"});
}
