// Store backups: the file format as hostile input, point-in-time consistency under writers,
// restores in both KEK modes, and what a restore refuses (leaving nothing behind).
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "coffer/crypto/encoding.h"
#include "coffer/crypto/random.h"
#include "coffer/store/backup.h"
#include "coffer/store/store.h"
#include "scratch_dir.h"

using namespace coffer;
using namespace coffer::store;
namespace fs = std::filesystem;

namespace {

std::string str(const crypto::SecureBuffer& b) {
    return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

std::span<const std::uint8_t> bytes(std::string_view s) {
    return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

class TempDir : public coffer::test::ScratchDir {
  public:
    TempDir() : ScratchDir("coffer-backup-test") {}
};

std::unique_ptr<Store> must_open(const fs::path& dir, bool autolock = false,
                                 std::optional<crypto::SecureBuffer>* unlock_key = nullptr) {
    auto opened = Store::open({.dir = dir, .autolock = autolock});
    if (!opened) throw std::runtime_error(opened.error().message);
    if (unlock_key) *unlock_key = std::move(opened->new_unlock_key);
    return std::move(opened->store);
}

void put(Store& s, Table table, const std::string& key, std::string_view value) {
    Batch b;
    b.put(table, key, std::string(value));
    auto r = s.write(std::move(b));
    if (!r) throw std::runtime_error(r.error().message);
}

std::string take_backup(Store& s) {
    std::string out;
    auto r = s.backup([&](std::span<const std::uint8_t> chunk) -> Result<void> {
        out.append(reinterpret_cast<const char*>(chunk.data()), chunk.size());
        return {};
    });
    if (!r) throw std::runtime_error(r.error().message);
    EXPECT_EQ(r->bytes, out.size());
    return out;
}

crypto::SecureBuffer kek_of(const fs::path& dir) {
    std::ifstream in(dir / "kek", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return crypto::SecureBuffer::copy_of(std::string_view(bytes));
}

Result<RestoreStats> restore(const fs::path& dir, std::string_view backup,
                             const crypto::SecureBuffer* key) {
    return restore_backup({.dir = dir, .backup = bytes(backup), .key = key});
}

std::map<std::string, std::string> contents(Store& s, Table table) {
    std::map<std::string, std::string> out;
    auto r = s.scan(table, [&](std::string_view key, crypto::SecureBuffer value) {
        out.emplace(key, str(value));
        return true;
    });
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    return out;
}

// A store with a few records in several tables, its backup and its KEK.
struct Source {
    TempDir tmp;
    std::unique_ptr<Store> store;
    std::string backup;
    crypto::SecureBuffer kek;

    Source() {
        store = must_open(tmp.path() / "src");
        put(*store, Table::secrets, "s1", R"({"Name":"db"})");
        put(*store, Table::secret_data, "s1/1", "hunter2");
        put(*store, Table::services, "svc", R"({"Name":"web"})");
        put(*store, Table::meta, "cluster", "id");
        put(*store, Table::pki, "ca", "a CA key");
        backup = take_backup(*store);
        kek = kek_of(tmp.path() / "src");
    }
};

void expect_refused(std::string_view backup, std::string_view why) {
    auto parsed = parse_backup(bytes(backup));
    ASSERT_FALSE(parsed.ok()) << why;
    EXPECT_EQ(parsed.error().code, Errc::invalid_argument) << why;
}

// Offsets of the first entries in Source's backup: the header, then the key records.
constexpr std::size_t version_at = 8;

}  // namespace

TEST(Backup, RestoresEveryRecordIntoAStoreThatOpensWithTheSameKek) {
    Source src;
    TempDir dst;
    auto stats = restore(dst.path() / "data", src.backup, &src.kek);
    ASSERT_TRUE(stats.ok()) << stats.error().message;
    EXPECT_EQ(stats->kek, BackupKek::file);
    EXPECT_EQ(stats->records, 7u);  // 5 records, dek/1 and dek/current
    struct stat st {};
    ASSERT_EQ(::stat((dst.path() / "data").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0700u);
    ASSERT_EQ(::stat((dst.path() / "data" / "kek").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    auto restored = must_open(dst.path() / "data");
    EXPECT_FALSE(restored->locked());
    for (Table t : all_tables) EXPECT_EQ(contents(*restored, t), contents(*src.store, t));
    EXPECT_EQ(restored->current_dek_id(), src.store->current_dek_id());
    // It is a store like any other: it takes writes and opens again.
    put(*restored, Table::secrets, "s2", "more");
    restored.reset();
    EXPECT_EQ(contents(*must_open(dst.path() / "data"), Table::secrets).size(), 2u);
}

TEST(Backup, AutolockRestoreNeedsTheUnlockKeyAndStartsLocked) {
    TempDir tmp;
    std::optional<crypto::SecureBuffer> key;
    auto s = must_open(tmp.path() / "src", /*autolock=*/true, &key);
    ASSERT_TRUE(key);
    put(*s, Table::secret_data, "x/1", "autolocked bytes");
    auto backup = take_backup(*s);

    auto wrong = crypto::SecureBuffer::copy_of(
        std::string_view("COFFERKEY-1-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
    auto refused = restore(tmp.path() / "dst", backup, &wrong);
    ASSERT_FALSE(refused.ok());
    EXPECT_NE(refused.error().message.find("does not open this backup's keys"), std::string::npos)
        << refused.error().message;
    EXPECT_FALSE(fs::exists(tmp.path() / "dst"));
    EXPECT_FALSE(restore(tmp.path() / "dst", backup, nullptr).ok());

    auto stats = restore(tmp.path() / "dst", backup, &*key);
    ASSERT_TRUE(stats.ok()) << stats.error().message;
    EXPECT_EQ(stats->kek, BackupKek::autolock);
    EXPECT_FALSE(fs::exists(tmp.path() / "dst" / "kek"));
    auto restored = must_open(tmp.path() / "dst");
    EXPECT_TRUE(restored->locked());
    EXPECT_EQ(restored->get(Table::secret_data, "x/1").error().code, Errc::locked);
    ASSERT_TRUE(restored->unlock(str(*key)).ok());
    EXPECT_EQ(str(**restored->get(Table::secret_data, "x/1")), "autolocked bytes");
}

TEST(Backup, IsRefusedWhileLocked) {
    TempDir tmp;
    must_open(tmp.path() / "s", /*autolock=*/true);
    auto s = must_open(tmp.path() / "s");
    ASSERT_TRUE(s->locked());
    auto r = s->backup([](std::span<const std::uint8_t>) -> Result<void> { return {}; });
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, Errc::locked);
}

TEST(Backup, RefusesAWrongKekOrANonEmptyDirectoryAndLeavesNothing) {
    Source src;
    TempDir dst;
    auto other = crypto::SecureBuffer(32);
    crypto::random_bytes(other.span());
    auto r = restore(dst.path() / "data", src.backup, &other);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("another cluster's"), std::string::npos) << r.error().message;
    EXPECT_FALSE(fs::exists(dst.path() / "data"));

    auto short_kek = crypto::SecureBuffer(16);
    EXPECT_FALSE(restore(dst.path() / "data", src.backup, &short_kek).ok());
    EXPECT_FALSE(restore(dst.path() / "data", src.backup, nullptr).ok());

    fs::create_directory(dst.path() / "busy");
    std::ofstream(dst.path() / "busy" / "something") << "x";
    r = restore(dst.path() / "busy", src.backup, &src.kek);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("not empty"), std::string::npos) << r.error().message;
    EXPECT_EQ(std::distance(fs::directory_iterator(dst.path() / "busy"), fs::directory_iterator()),
              1);

    // An existing empty directory is fine.
    fs::create_directory(dst.path() / "empty");
    EXPECT_TRUE(restore(dst.path() / "empty", src.backup, &src.kek).ok());
}

TEST(Backup, EveryTruncationIsRefused) {
    Source src;
    for (std::size_t n = 0; n < src.backup.size(); ++n)
        expect_refused(std::string_view(src.backup).substr(0, n), fmt::format("{} bytes", n));
    EXPECT_TRUE(parse_backup(bytes(src.backup)).ok());
    expect_refused(src.backup + "x", "a byte after the MAC");
}

TEST(Backup, HeaderFieldsAreChecked) {
    Source src;
    auto edit = [&](std::size_t at, char byte) {
        auto copy = src.backup;
        copy[at] = byte;
        return copy;
    };
    expect_refused(edit(0, 'X'), "magic");
    expect_refused(edit(version_at + 1, 2), "version 2");
    auto v2 = parse_backup(bytes(edit(version_at + 1, 2)));
    EXPECT_NE(v2.error().message.find("format version 2"), std::string::npos) << v2.error().message;
    expect_refused(edit(10, 3), "kek mode 3");
    expect_refused(edit(11, 1), "reserved byte");
    expect_refused(edit(backup_header_bytes, 9), "unknown entry type");
}

TEST(Backup, AnAlteredByteAnywhereFailsTheMacOrTheParse) {
    Source src;
    TempDir dst;
    std::size_t refused_by_mac = 0;
    // Every byte after the header: the parse refuses it, or else the restore does.
    for (std::size_t at = backup_header_bytes; at < src.backup.size(); ++at) {
        auto copy = src.backup;
        copy[at] = static_cast<char>(copy[at] ^ 0x01);
        auto r = restore(dst.path() / "data", copy, &src.kek);
        ASSERT_FALSE(r.ok()) << "byte " << at;
        if (r.error().message.find("MAC does not match") != std::string::npos) ++refused_by_mac;
        ASSERT_FALSE(fs::exists(dst.path() / "data")) << "byte " << at;
    }
    EXPECT_GT(refused_by_mac, 0u);
    // The header's created time is covered by the MAC too.
    auto copy = src.backup;
    copy[19] = static_cast<char>(copy[19] ^ 0x01);
    auto r = restore(dst.path() / "data", copy, &src.kek);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("MAC does not match"), std::string::npos) << r.error().message;
}

// A backup built by hand: entries as the format describes them, with a MAC no one checks.
struct Builder {
    std::string out;
    Builder() {
        out = "COFFERBK";
        be(1, 2);
        out.push_back(1);
        out.push_back(0);
        be(0, 8);
    }
    void be(std::uint64_t v, int n) {
        for (int i = n - 1; i >= 0; --i) out.push_back(static_cast<char>(v >> (8 * i)));
    }
    void pair(std::uint8_t tag, std::string_view key, std::size_t value_len) {
        out.push_back(static_cast<char>(tag));
        be(key.size(), 2);
        out.append(key);
        be(value_len, 4);
        out.append(std::min<std::size_t>(value_len, 1000), 'v');
    }
    void table(std::string_view name) {
        out.push_back(2);
        out.push_back(static_cast<char>(name.size()));
        out.append(name);
    }
    std::string end(std::uint64_t count) {
        out.push_back(4);
        be(count, 8);
        return out + std::string(32, 'm');
    }
};

TEST(Backup, HostileStructuresAreRefused) {
    {
        Builder b;
        b.pair(1, "dek/1", 80);
        EXPECT_TRUE(parse_backup(bytes(b.end(1))).ok());
    }
    {
        Builder b;  // no DEK records at all
        b.table("secrets");
        EXPECT_FALSE(parse_backup(bytes(b.end(0))).ok());
    }
    auto with_dek = [] {
        Builder b;
        b.pair(1, "dek/1", 80);
        return b;
    };
    {
        auto b = with_dek();
        b.table("nonsense");
        expect_refused(b.end(1), "unknown table");
    }
    {
        auto b = with_dek();
        b.table("secrets");
        b.table("meta");
        expect_refused(b.end(1), "tables out of order");
    }
    {
        auto b = with_dek();
        b.table("secrets");
        b.table("secrets");
        expect_refused(b.end(1), "a table twice");
    }
    {
        auto b = with_dek();
        b.table("secrets");
        b.pair(3, "b", 80);
        b.pair(3, "a", 80);
        expect_refused(b.end(3), "keys out of order");
    }
    {
        auto b = with_dek();
        b.table("secrets");
        b.pair(3, "a", 80);
        b.pair(3, "a", 80);
        expect_refused(b.end(3), "a key twice");
    }
    {
        auto b = with_dek();
        b.pair(3, "a", 80);
        expect_refused(b.end(2), "a record before any table");
    }
    {
        auto b = with_dek();
        b.table("meta");
        b.pair(3, "dek/2", 80);
        expect_refused(b.end(2), "a DEK among the records");
    }
    {
        auto b = with_dek();
        b.table("secrets");
        b.pair(1, "dek/2", 80);
        expect_refused(b.end(2), "a key record after the tables");
    }
    {
        auto b = with_dek();
        b.table("secrets");
        b.pair(3, "a", 80);
        expect_refused(b.end(5), "a wrong count");
    }
    {
        auto b = with_dek();
        b.table("secrets");
        b.pair(3, "a", 10);
        expect_refused(b.end(2), "a value shorter than sealing's overhead");
    }
    {
        auto b = with_dek();
        b.table("secrets");
        b.pair(3, "a", 0xffffffff);
        expect_refused(b.end(2), "a value longer than the limit (and the file)");
    }
    {
        auto b = with_dek();
        b.table("secrets");
        b.pair(3, "", 80);
        expect_refused(b.end(2), "an empty key");
    }
    {
        auto b = with_dek();
        b.table("secrets");
        b.pair(3, std::string(backup_max_key + 1, 'k'), 80);
        expect_refused(b.end(2), "a key beyond the limit");
    }
}

TEST(Backup, HoldsNoPlaintextValue) {
    TempDir tmp;
    auto s = must_open(tmp.path() / "src");
    std::vector<std::string> canaries;
    for (int i = 0; i < 20; ++i) {
        crypto::SecureBuffer raw(24);
        crypto::random_bytes(raw.span());
        auto canary = "canary-" + str(crypto::base64url_encode_secure(raw.span()));
        put(*s, Table::secret_data, fmt::format("s{}/1", i), canary);
        canaries.push_back(canary);
    }
    auto backup = take_backup(*s);
    auto kek = kek_of(tmp.path() / "src");
    for (const auto& c : canaries) {
        EXPECT_EQ(backup.find(c), std::string::npos);
        EXPECT_EQ(backup.find(str(crypto::base64_encode_secure(bytes(c)))), std::string::npos);
        // A shorter run of the canary's random part.
        EXPECT_EQ(backup.find(c.substr(7, 16)), std::string::npos);
    }
    EXPECT_EQ(backup.find(str(kek)), std::string::npos);
}

// Writers commit batches of two records (a/N in the first table, b/N in the last) while backups
// are taken: every batch that returned before a backup began is in it, and no backup holds half
// a batch. A large table in between makes a backup take long enough for writes to land while
// it runs.
TEST(Backup, IsAPointInTimeUnderConcurrentWriters) {
    TempDir tmp;
    auto s = must_open(tmp.path() / "src");
    for (int chunk = 0; chunk < 40; ++chunk) {
        Batch b;
        for (int i = 0; i < 1000; ++i)
            b.put(Table::tasks, fmt::format("task-{:03}-{:04}", chunk, i), std::string(200, 't'));
        ASSERT_TRUE(s->write(std::move(b)).ok());
    }
    constexpr int writers = 4;
    std::atomic<bool> stop{false};
    std::vector<std::atomic<int>> acknowledged(writers);
    std::vector<std::thread> threads;
    for (int w = 0; w < writers; ++w)
        threads.emplace_back([&, w] {
            for (int i = 0; !stop; ++i) {
                Batch b;
                auto id = fmt::format("{}-{:08}", w, i);
                b.put(Table::meta, "a/" + id, std::string("spec ") + id);
                b.put(Table::networks, "b/" + id, std::string("data ") + id);
                if (!s->write(std::move(b))) return;
                acknowledged[w] = i + 1;
            }
        });
    std::vector<std::pair<std::vector<int>, std::string>> backups;
    for (int k = 0; k < 5; ++k) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        std::vector<int> before;
        for (auto& a : acknowledged) before.push_back(a.load());
        backups.emplace_back(before, take_backup(*s));
        if (k == 2) {
            ASSERT_TRUE(s->rotate_dek().ok());  // a rotation under way changes nothing
        }
    }
    stop = true;
    for (auto& t : threads) t.join();
    auto kek = kek_of(tmp.path() / "src");
    for (std::size_t k = 0; k < backups.size(); ++k) {
        TempDir dst;
        auto r = restore(dst.path() / "d", backups[k].second, &kek);
        ASSERT_TRUE(r.ok()) << r.error().message;
        auto restored = must_open(dst.path() / "d");
        auto specs = contents(*restored, Table::meta);
        auto data = contents(*restored, Table::networks);
        ASSERT_EQ(specs.size(), data.size()) << "backup " << k;
        for (const auto& [key, value] : specs) {
            auto id = key.substr(2);
            EXPECT_EQ(value, "spec " + id);
            auto d = data.find("b/" + id);
            ASSERT_NE(d, data.end()) << "half a batch: " << id;
            EXPECT_EQ(d->second, "data " + id);
        }
        for (int w = 0; w < writers; ++w) {
            for (int i = 0; i < backups[k].first[w]; ++i) {
                ASSERT_TRUE(specs.contains(fmt::format("a/{}-{:08}", w, i)))
                    << "backup " << k << " lost an acknowledged write";
            }
        }
        EXPECT_GT(specs.size(), 0u);
    }
}
