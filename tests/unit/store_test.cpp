// The sealed store: round trips, what reaches the disk, tampering, autolock, DEK rotation and
// its crash safety (a child process killed at several points while it rotates and writes).
//
// This binary has its own main(): started with --store-crash-child it is the child of the
// crash tests (spawned with exec, so it starts as a clean process, without gtest's or
// RocksDB's threads), otherwise it runs the tests.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "coffer/base/process.h"
#include "coffer/base/unique_fd.h"
#include "coffer/crypto/aead.h"
#include "coffer/crypto/encoding.h"
#include "coffer/crypto/random.h"
#include "coffer/store/store.h"
#include "scratch_dir.h"

using namespace coffer;
using namespace coffer::store;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

constexpr std::string_view crash_child_flag = "--store-crash-child";
constexpr std::string_view locked_message =
    R"(coffer is locked: run "coffer cluster unlock" with the unlock key)";

std::string str(const crypto::SecureBuffer& b) {
    return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

std::span<const std::uint8_t> bytes(std::string_view s) {
    return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

// The value the tests store under key: checkable without remembering it.
std::string value_for(std::string_view key) {
    std::string v = "value of ";
    v.append(key);
    v.append(" / padding to look like a small spec ");
    return v;
}

class TempDir : public coffer::test::ScratchDir {
  public:
    TempDir() : ScratchDir("coffer-store-test") {}
    // Where tests put the store: created by the store itself.
    fs::path store() const { return path() / "store"; }
};

std::unique_ptr<Store> open_store(const fs::path& dir, bool autolock = false) {
    auto opened = Store::open({.dir = dir, .autolock = autolock});
    if (!opened) throw std::runtime_error(opened.error().message);
    return std::move(opened->store);
}

void put(Store& store, Table table, const std::string& key, std::string_view value) {
    Batch b;
    b.put(table, key, std::string(value));
    auto r = store.write(std::move(b));
    if (!r) throw std::runtime_error(r.error().message);
}

// Writes n records key-0 .. key-(n-1) into table, value_for(key) each.
void fill(Store& store, Table table, std::string_view prefix, int n) {
    constexpr int per_batch = 1000;
    for (int i = 0; i < n; i += per_batch) {
        Batch b;
        for (int j = i; j < std::min(n, i + per_batch); ++j) {
            auto key = fmt::format("{}-{:06}", prefix, j);
            b.put(table, key, value_for(key));
        }
        auto r = store.write(std::move(b));
        if (!r) throw std::runtime_error(r.error().message);
    }
}

// Every record of table has its value_for(key); returns how many there are.
std::size_t check_values(Store& store, Table table) {
    std::size_t n = 0;
    auto r = store.scan(table, [&](std::string_view key, crypto::SecureBuffer value) {
        EXPECT_EQ(str(value), value_for(key)) << key;
        ++n;
        return true;
    });
    EXPECT_TRUE(r.ok()) << r.error().message;
    return n;
}

// The database under a store, opened directly: what someone with the disk sees and can change.
// The store must be closed while it is open.
class RawDb {
  public:
    explicit RawDb(const fs::path& store_dir) {
        auto path = (store_dir / "db").string();
        rocksdb::DBOptions options;
        std::vector<std::string> names;
        check(rocksdb::DB::ListColumnFamilies(options, path, &names));
        std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
        for (const auto& n : names) descriptors.emplace_back(n, rocksdb::ColumnFamilyOptions());
        rocksdb::DB* db = nullptr;
        check(rocksdb::DB::Open(options, path, descriptors, &handles_, &db));
        db_.reset(db);
        names_ = std::move(names);
    }
    RawDb(const RawDb&) = delete;
    RawDb& operator=(const RawDb&) = delete;
    ~RawDb() {
        for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
        db_->Close();
    }

    std::optional<std::string> get(Table t, const std::string& key) {
        std::string v;
        auto s = db_->Get(rocksdb::ReadOptions(), cf(t), key, &v);
        if (s.IsNotFound()) return std::nullopt;
        check(s);
        return v;
    }
    void put(Table t, const std::string& key, const std::string& value) {
        rocksdb::WriteOptions o;
        o.sync = true;
        check(db_->Put(o, cf(t), key, value));
    }
    std::map<std::string, std::string> all(Table t) {
        std::map<std::string, std::string> out;
        std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cf(t)));
        for (it->SeekToFirst(); it->Valid(); it->Next())
            out[it->key().ToString()] = it->value().ToString();
        check(it->status());
        return out;
    }
    // How many values of the tables (not the key records) each DEK id seals.
    std::map<std::uint32_t, std::size_t> values_per_dek() {
        std::map<std::uint32_t, std::size_t> out;
        for (Table t : all_tables) {
            for (const auto& [key, value] : all(t)) {
                if (t == Table::meta && key.starts_with("dek/")) continue;
                ++out[crypto::sealed_key_id(value).value_or(0)];
            }
        }
        return out;
    }

  private:
    static void check(const rocksdb::Status& s) {
        if (!s.ok()) throw std::runtime_error(s.ToString());
    }
    rocksdb::ColumnFamilyHandle* cf(Table t) {
        for (std::size_t i = 0; i < names_.size(); ++i)
            if (names_[i] == table_name(t)) return handles_[i];
        throw std::runtime_error("no column family");
    }
    std::unique_ptr<rocksdb::DB> db_;
    std::vector<rocksdb::ColumnFamilyHandle*> handles_;
    std::vector<std::string> names_;
};

unsigned mode_of(const fs::path& p) {
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0) throw std::runtime_error("stat " + p.string());
    return st.st_mode & 07777;
}

std::string read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

// An unlock key in the right format that opens nothing.
std::string some_other_unlock_key() {
    std::uint8_t raw[32];
    crypto::random_bytes(raw);
    return "COFFERKEY-1-" + crypto::base64url_encode(raw);
}

}  // namespace

TEST(Store, PutGetEraseScanRoundTrip) {
    TempDir tmp;
    auto store = open_store(tmp.store());
    EXPECT_FALSE(store->locked());
    EXPECT_FALSE(store->autolock());
    EXPECT_EQ(store->current_dek_id(), 1u);

    Batch b;
    b.put(Table::secrets, "b", std::string("two"));
    b.put(Table::secrets, "a", crypto::SecureBuffer::copy_of(std::string_view("one")));
    b.put(Table::secrets, "c", std::string("three"));
    b.put(Table::secret_data, "a", std::string("\0binary\xff", 8));
    b.put(Table::nodes, "empty", std::string());
    ASSERT_TRUE(store->write(std::move(b)).ok());

    auto a = store->get(Table::secrets, "a");
    ASSERT_TRUE(a.ok());
    ASSERT_TRUE(a->has_value());
    EXPECT_EQ(str(**a), "one");
    EXPECT_EQ(str(**store->get(Table::secret_data, "a")), std::string("\0binary\xff", 8));
    EXPECT_EQ(str(**store->get(Table::nodes, "empty")), "");
    EXPECT_FALSE(store->get(Table::services, "a")->has_value());

    Batch e;
    e.erase(Table::secrets, "b");
    e.erase(Table::secrets, "never-there");
    ASSERT_TRUE(store->write(std::move(e)).ok());
    EXPECT_FALSE(store->get(Table::secrets, "b")->has_value());

    std::vector<std::pair<std::string, std::string>> seen;
    ASSERT_TRUE(store
                    ->scan(Table::secrets,
                           [&](std::string_view k, crypto::SecureBuffer v) {
                               seen.emplace_back(k, str(v));
                               return true;
                           })
                    .ok());
    EXPECT_EQ(seen,
              (std::vector<std::pair<std::string, std::string>>{{"a", "one"}, {"c", "three"}}));

    int calls = 0;
    ASSERT_TRUE(store->scan(Table::secrets, [&](auto, auto) { return ++calls < 1; }).ok());
    EXPECT_EQ(calls, 1);
    EXPECT_TRUE(store->write(Batch()).ok());
}

TEST(Store, ReopenKeepsData) {
    TempDir tmp;
    {
        auto store = open_store(tmp.store());
        fill(*store, Table::services, "svc", 100);
        put(*store, Table::pki, "ca-key", "not really a key");
    }
    auto store = open_store(tmp.store());
    EXPECT_EQ(check_values(*store, Table::services), 100u);
    EXPECT_EQ(str(**store->get(Table::pki, "ca-key")), "not really a key");
}

TEST(Store, MetaKeyRecordsAreReserved) {
    TempDir tmp;
    auto store = open_store(tmp.store());
    put(*store, Table::meta, "cluster-id", "abc");
    put(*store, Table::secrets, "dek/1", "an ordinary key in another table");

    Batch b;
    b.put(Table::meta, "dek/1", std::string("overwrite a DEK"));
    auto w = store->write(std::move(b));
    ASSERT_FALSE(w.ok());
    EXPECT_EQ(w.error().code, Errc::invalid_argument);
    auto g = store->get(Table::meta, "dek/current");
    ASSERT_FALSE(g.ok());
    EXPECT_EQ(g.error().code, Errc::invalid_argument);
    Batch empty_key;
    empty_key.put(Table::meta, "", std::string("x"));
    EXPECT_EQ(store->write(std::move(empty_key)).error().code, Errc::invalid_argument);

    std::vector<std::string> keys;
    ASSERT_TRUE(store
                    ->scan(Table::meta,
                           [&](std::string_view k, auto) {
                               keys.emplace_back(k);
                               return true;
                           })
                    .ok());
    EXPECT_EQ(keys, std::vector<std::string>{"cluster-id"});
}

TEST(Store, ValuesNeverReachTheDiskInPlaintext) {
    TempDir tmp;
    const std::string marker = "<<coffer plaintext marker: 4f1d9c2ab7e0536 must never hit disk>>";
    ASSERT_EQ(marker.size(), 64u);
    {
        auto store = open_store(tmp.store());
        fill(*store, Table::tasks, "task", 500);
        put(*store, Table::secret_data, "db_password", marker);
        put(*store, Table::meta, "settings", marker);
        ASSERT_TRUE(store->rotate_dek().ok());
        store->wait_rotation();
        ASSERT_TRUE(store->compact().ok());
        EXPECT_EQ(str(**store->get(Table::secret_data, "db_password")), marker);
    }
    const std::string needles[] = {marker, crypto::base64_encode(bytes(marker)),
                                   crypto::base64url_encode(bytes(marker)),
                                   crypto::hex_encode(bytes(marker))};
    std::set<std::string> kinds;
    for (const auto& entry : fs::recursive_directory_iterator(tmp.store())) {
        if (!entry.is_regular_file()) continue;
        auto name = entry.path().filename().string();
        if (name.ends_with(".sst")) kinds.insert("sst");
        if (name.ends_with(".log")) kinds.insert("wal");
        if (name.starts_with("MANIFEST")) kinds.insert("manifest");
        if (name.starts_with("LOG")) kinds.insert("info log");
        auto content = read_file(entry.path());
        for (const auto& needle : needles)
            EXPECT_EQ(content.find(needle), std::string::npos)
                << entry.path() << " holds the marker";
    }
    // The check looked where the data went: compacted tables, the WAL, the logs.
    EXPECT_EQ(kinds, (std::set<std::string>{"sst", "wal", "manifest", "info log"}));
}

TEST(StoreDir, CreatesAPrivateDirectoryWithAKekFile) {
    TempDir tmp;
    auto old_umask = ::umask(0);
    auto store = open_store(tmp.store());
    ::umask(old_umask);
    store.reset();
    EXPECT_EQ(mode_of(tmp.store()), 0700u);
    EXPECT_EQ(mode_of(tmp.store() / "kek"), 0600u);
    EXPECT_EQ(fs::file_size(tmp.store() / "kek"), 32u);
    EXPECT_EQ(read_file(tmp.store() / "format"), "{\"format\":1,\"kek\":\"file\"}\n");
}

TEST(StoreDir, MakesTheMissingParentsOfTheDirectory) {
    TempDir tmp;
    auto deep = tmp.store() / "var" / "lib" / "coffer";
    auto store = open_store(deep);
    store.reset();
    EXPECT_EQ(mode_of(deep), 0700u);
    EXPECT_TRUE(fs::exists(deep / "format"));
}

TEST(StoreDir, RefusesAStoreDirectoryOthersCanEnter) {
    TempDir tmp;
    open_store(tmp.store());
    fs::permissions(tmp.store(), fs::perms::group_read | fs::perms::group_exec,
                    fs::perm_options::add);
    auto opened = Store::open({.dir = tmp.store()});
    ASSERT_FALSE(opened.ok());
    EXPECT_EQ(opened.error().code, Errc::permission_denied);
    EXPECT_NE(opened.error().message.find("chmod 700"), std::string::npos)
        << opened.error().message;
}

TEST(StoreDir, MakesAnExistingEmptyDirectoryPrivate) {
    TempDir tmp;
    fs::create_directory(tmp.store());
    fs::permissions(tmp.store(), fs::perms::all);
    open_store(tmp.store());
    EXPECT_EQ(mode_of(tmp.store()), 0700u);
}

TEST(StoreDir, RefusesADirectoryHoldingSomethingElse) {
    TempDir tmp;
    fs::create_directory(tmp.store());
    std::ofstream(tmp.store() / "precious.txt") << "not ours";
    auto opened = Store::open({.dir = tmp.store()});
    ASSERT_FALSE(opened.ok());
    EXPECT_NE(opened.error().message.find("precious.txt"), std::string::npos);
    EXPECT_TRUE(fs::exists(tmp.store() / "precious.txt"));
}

TEST(StoreDir, CleansUpAnInterruptedInitialisation) {
    TempDir tmp;
    fs::create_directory(tmp.store());
    std::ofstream(tmp.store() / "kek.tmp") << "half a key";
    fs::create_directory(tmp.store() / "db");
    auto store = open_store(tmp.store());
    put(*store, Table::meta, "k", "v");
    EXPECT_FALSE(fs::exists(tmp.store() / "kek.tmp"));
}

TEST(StoreDir, MissingKekFileFailsClearly) {
    TempDir tmp;
    {
        auto store = open_store(tmp.store());
        put(*store, Table::secrets, "s", "v");
    }
    fs::remove(tmp.store() / "kek");
    auto opened = Store::open({.dir = tmp.store()});
    ASSERT_FALSE(opened.ok());
    EXPECT_NE(opened.error().message.find("KEK file"), std::string::npos) << opened.error().message;
    EXPECT_NE(opened.error().message.find("missing"), std::string::npos) << opened.error().message;
}

TEST(StoreDir, AnotherStoresKekFileDoesNotOpenIt) {
    TempDir a, b;
    open_store(a.store());
    open_store(b.store());
    fs::copy_file(b.store() / "kek", a.store() / "kek", fs::copy_options::overwrite_existing);
    auto opened = Store::open({.dir = a.store()});
    ASSERT_FALSE(opened.ok());
    EXPECT_EQ(opened.error().code, Errc::internal);
    EXPECT_NE(opened.error().message.find("does not open"), std::string::npos);
}

namespace {

// Stores value under table/key, closes the store, lets change(raw, sealed value) alter the
// database directly, and reopens the store.
template <typename Change>
std::unique_ptr<Store> tampered(const TempDir& tmp, Table table, const std::string& key,
                                std::string_view value, Change change) {
    {
        auto store = open_store(tmp.store());
        put(*store, table, key, value);
        put(*store, table, key + "-untouched", value);
    }
    {
        RawDb raw(tmp.store());
        change(raw, *raw.get(table, key));
    }
    auto store = open_store(tmp.store());
    EXPECT_EQ(str(**store->get(table, key + "-untouched")), value);
    return store;
}

// get(table, key) fails as corruption, naming the record and nothing of value.
void expect_corrupt(Store& store, Table table, const std::string& key, std::string_view value,
                    std::string_view why) {
    auto r = store.get(table, key);
    ASSERT_FALSE(r.ok()) << key;
    EXPECT_EQ(r.error().code, Errc::internal);
    const auto& message = r.error().message;
    EXPECT_NE(message.find(fmt::format("record {}/{} is corrupt", table_name(table), key)),
              std::string::npos)
        << message;
    EXPECT_NE(message.find(why), std::string::npos) << message;
    EXPECT_EQ(message.find(value), std::string::npos) << message;
}

}  // namespace

TEST(Tampering, AlteredValueFailsAsCorruption) {
    TempDir tmp;
    const std::string secret = "the secret value itself";
    auto store = tampered(tmp, Table::secret_data, "s1", secret, [](RawDb& raw, std::string v) {
        v[v.size() / 2] ^= 0x20;
        raw.put(Table::secret_data, "s1", v);
    });
    expect_corrupt(*store, Table::secret_data, "s1", secret, "does not open under key 1");
    auto s = store->scan(Table::secret_data, [](auto, auto) { return true; });
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().code, Errc::internal);
}

TEST(Tampering, ValueMovedToAnotherRecordFails) {
    TempDir tmp;
    const std::string secret = "mine's value";
    auto store = tampered(tmp, Table::secret_data, "mine", secret, [](RawDb& raw, std::string v) {
        raw.put(Table::secret_data, "yours", v);
        raw.put(Table::pki, "mine", v);
    });
    EXPECT_EQ(str(**store->get(Table::secret_data, "mine")), secret);
    expect_corrupt(*store, Table::secret_data, "yours", secret, "moved from another record");
    expect_corrupt(*store, Table::pki, "mine", secret, "moved from another record");
}

TEST(Tampering, ValueUnderAnUnknownDekFails) {
    TempDir tmp;
    auto store = tampered(tmp, Table::nodes, "n1", "node spec", [](RawDb& raw, std::string v) {
        v[4] = 7;  // the low byte of the key id
        raw.put(Table::nodes, "n1", v);
    });
    expect_corrupt(*store, Table::nodes, "n1", "node spec", "key 7, which the store does not have");
}

TEST(Robustness, RandomAndTruncatedSealedValuesNeverCrash) {
    TempDir tmp;
    std::vector<std::string> good;
    {
        auto store = open_store(tmp.store());
        fill(*store, Table::secrets, "good", 20);
    }
    std::mt19937 rng(20240601);
    auto below = [&](std::size_t n) {
        return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng);
    };
    constexpr int cases = 3000;
    {
        RawDb raw(tmp.store());
        for (const auto& [k, v] : raw.all(Table::secrets)) good.push_back(v);
        for (int i = 0; i < cases; ++i) {
            std::string v = good[below(good.size())];
            switch (i % 5) {
                case 0:  // random bytes
                    v.resize(below(120));
                    for (auto& c : v) c = static_cast<char>(below(256));
                    break;
                case 1:
                    v.resize(below(v.size()));
                    break;
                case 2:
                    v[below(v.size())] ^= static_cast<char>(1 + below(255));
                    break;
                case 3:
                    for (int j = 1; j <= 4; ++j) v[j] = static_cast<char>(below(256));
                    v[0] = static_cast<char>(below(3));
                    break;
                default:
                    v += std::string(1 + below(40), static_cast<char>(below(256)));
            }
            raw.put(Table::secrets, fmt::format("fuzz-{:05}", i), v);
        }
    }
    auto store = open_store(tmp.store());
    for (int i = 0; i < cases; ++i) {
        auto r = store->get(Table::secrets, fmt::format("fuzz-{:05}", i));
        ASSERT_FALSE(r.ok()) << i;
        EXPECT_EQ(r.error().code, Errc::internal);
    }
    EXPECT_FALSE(store->scan(Table::secrets, [](auto, auto) { return true; }).ok());
    // The re-sealer meets the same records: it stops, keeps the old DEK, and does not hang.
    ASSERT_TRUE(store->rotate_dek().ok());
    store->wait_rotation();
    EXPECT_TRUE(store->rotation_pending());
    EXPECT_EQ(str(**store->get(Table::secrets, "good-000003")), value_for("good-000003"));
}

// The key is handed over before the store exists: when that fails, no store is left that
// nobody could unlock, and the next open starts afresh.
TEST(Autolock, TheKeyIsHandedOverBeforeTheStoreIsCommitted) {
    TempDir tmp;
    std::string handed;
    auto failing =
        Store::open({.dir = tmp.store(),
                     .autolock = true,
                     .hand_over_unlock_key = [&](const crypto::SecureBuffer& k) -> Result<void> {
                         handed = str(k);
                         EXPECT_FALSE(fs::exists(tmp.store() / "format"));
                         return make_error(Errc::invalid_argument, "nowhere to put it");
                     }});
    ASSERT_FALSE(failing.ok());
    EXPECT_NE(failing.error().message.find("autolock: nowhere to put it"), std::string::npos)
        << failing.error().message;
    EXPECT_TRUE(handed.starts_with("COFFERKEY-1-"));
    EXPECT_FALSE(fs::exists(tmp.store())) << "the directory this open made is removed";

    std::string second;
    auto opened =
        Store::open({.dir = tmp.store(),
                     .autolock = true,
                     .hand_over_unlock_key = [&](const crypto::SecureBuffer& k) -> Result<void> {
                         second = str(k);
                         return {};
                     }});
    ASSERT_TRUE(opened.ok()) << opened.error().message;
    EXPECT_NE(second, handed);
    EXPECT_EQ(str(*opened->new_unlock_key), second);
    opened->store.reset();
    auto locked =
        Store::open({.dir = tmp.store(),
                     .autolock = true,
                     .hand_over_unlock_key = [&](const crypto::SecureBuffer&) -> Result<void> {
                         ADD_FAILURE() << "an existing store hands over no key";
                         return {};
                     }});
    ASSERT_TRUE(locked.ok());
    EXPECT_FALSE((*locked->store).unlock(handed).ok());
    EXPECT_TRUE((*locked->store).unlock(second).ok());
}

TEST(Autolock, UnlockKeyIsShownOnceAndStoreStartsLocked) {
    TempDir tmp;
    std::string key;
    {
        auto opened = Store::open({.dir = tmp.store(), .autolock = true});
        ASSERT_TRUE(opened.ok()) << opened.error().message;
        ASSERT_TRUE(opened->new_unlock_key.has_value());
        key = str(*opened->new_unlock_key);
        EXPECT_TRUE(key.starts_with("COFFERKEY-1-"));
        EXPECT_EQ(key.size(), 12u + 43u);
        auto& store = *opened->store;
        EXPECT_TRUE(store.autolock());
        EXPECT_FALSE(store.locked());
        EXPECT_EQ(str(*store.unlock_key()), key);
        put(store, Table::secrets, "s", "sealed away");
    }
    EXPECT_FALSE(fs::exists(tmp.store() / "kek"));
    EXPECT_EQ(read_file(tmp.store() / "format"), "{\"format\":1,\"kek\":\"autolock\"}\n");
    for (const auto& entry : fs::recursive_directory_iterator(tmp.store())) {
        if (!entry.is_regular_file()) continue;
        EXPECT_EQ(read_file(entry.path()).find(key.substr(12)), std::string::npos) << entry.path();
    }

    auto opened = Store::open({.dir = tmp.store()});
    ASSERT_TRUE(opened.ok());
    EXPECT_FALSE(opened->new_unlock_key.has_value());
    auto& store = *opened->store;
    EXPECT_TRUE(store.locked());
    EXPECT_FALSE(store.unlock_key().has_value());
    EXPECT_EQ(store.current_dek_id(), 0u);
    auto g = store.get(Table::secrets, "s");
    ASSERT_FALSE(g.ok());
    EXPECT_EQ(g.error().code, Errc::locked);
    EXPECT_EQ(g.error().message, locked_message);
    Batch b;
    b.put(Table::secrets, "t", std::string("x"));
    EXPECT_EQ(store.write(std::move(b)).error().code, Errc::locked);
    EXPECT_EQ(store.scan(Table::secrets, [](auto, auto) { return true; }).error().code,
              Errc::locked);
    EXPECT_EQ(store.rotate_dek().error().code, Errc::locked);
    EXPECT_EQ(store.rotate_unlock_key().error().code, Errc::locked);

    for (std::string bad : {std::string("nonsense"), std::string("COFFERKEY-1-short"),
                            some_other_unlock_key(), key.substr(0, key.size() - 1) + "A"}) {
        if (bad == key) continue;
        auto u = store.unlock(bad);
        ASSERT_FALSE(u.ok()) << bad;
        EXPECT_EQ(u.error().code, Errc::invalid_argument);
        EXPECT_EQ(u.error().message, "invalid unlock key");
        EXPECT_TRUE(store.locked());
    }
    ASSERT_TRUE(store.unlock(key + "\n").ok());
    EXPECT_FALSE(store.locked());
    EXPECT_EQ(str(*store.unlock_key()), key);
    EXPECT_EQ(str(**store.get(Table::secrets, "s")), "sealed away");
    auto again = store.unlock(key);
    ASSERT_FALSE(again.ok());
    EXPECT_EQ(again.error().code, Errc::conflict);
    EXPECT_EQ(again.error().message, "not locked");
}

TEST(Autolock, RotatedUnlockKeyReplacesTheOldOne) {
    TempDir tmp;
    std::string old_key, new_key;
    {
        auto opened = Store::open({.dir = tmp.store(), .autolock = true});
        ASSERT_TRUE(opened.ok());
        old_key = str(*opened->new_unlock_key);
        auto& store = *opened->store;
        fill(store, Table::secrets, "s", 50);
        // Two DEKs at once, so that re-wrapping covers more than one.
        ASSERT_TRUE(store.rotate_dek().ok());
        auto rotated = store.rotate_unlock_key();
        ASSERT_TRUE(rotated.ok()) << rotated.error().message;
        new_key = str(*rotated);
        EXPECT_NE(new_key, old_key);
        EXPECT_EQ(str(*store.unlock_key()), new_key);
        store.wait_rotation();
    }
    auto store = open_store(tmp.store());
    ASSERT_TRUE(store->locked());
    auto u = store->unlock(old_key);
    ASSERT_FALSE(u.ok());
    EXPECT_EQ(u.error().message, "invalid unlock key");
    ASSERT_TRUE(store->unlock(new_key).ok());
    EXPECT_EQ(check_values(*store, Table::secrets), 50u);
}

TEST(Autolock, InterruptedRotationResumesAfterUnlock) {
    TempDir tmp;
    std::string key;
    {
        auto opened = Store::open({.dir = tmp.store(), .autolock = true});
        ASSERT_TRUE(opened.ok());
        key = str(*opened->new_unlock_key);
        fill(*opened->store, Table::tasks, "t", 3000);
        ASSERT_TRUE(opened->store->rotate_dek().ok());
        // Closed at once: the destructor stops the re-sealer wherever it is.
    }
    auto store = open_store(tmp.store());
    store->wait_rotation();  // locked: nothing can run, and it returns
    ASSERT_TRUE(store->unlock(key).ok());
    store->wait_rotation();
    EXPECT_FALSE(store->rotation_pending());
    EXPECT_EQ(store->current_dek_id(), 2u);
    EXPECT_EQ(check_values(*store, Table::tasks), 3000u);
}

TEST(FileKek, HasNoUnlockKey) {
    TempDir tmp;
    auto store = open_store(tmp.store(), /*autolock=*/false);
    EXPECT_FALSE(store->unlock_key().has_value());
    auto u = store->unlock(some_other_unlock_key());
    ASSERT_FALSE(u.ok());
    EXPECT_EQ(u.error().code, Errc::conflict);
    EXPECT_EQ(u.error().message, "not locked");
    EXPECT_EQ(store->rotate_unlock_key().error().code, Errc::conflict);
}

TEST(DekRotation, ReSealsEveryValueAndRetiresTheOldDek) {
    TempDir tmp;
    {
        auto store = open_store(tmp.store());
        fill(*store, Table::secret_data, "d", 1000);
        fill(*store, Table::secrets, "s", 1000);
        put(*store, Table::meta, "cluster", value_for("cluster"));
        EXPECT_EQ(store->current_dek_id(), 1u);
        ASSERT_TRUE(store->rotate_dek().ok());
        EXPECT_EQ(store->current_dek_id(), 2u);
        store->wait_rotation();
        EXPECT_FALSE(store->rotation_pending());
        EXPECT_EQ(check_values(*store, Table::secret_data), 1000u);
        EXPECT_EQ(check_values(*store, Table::secrets), 1000u);
        EXPECT_EQ(check_values(*store, Table::meta), 1u);
    }
    RawDb raw(tmp.store());
    EXPECT_EQ(raw.values_per_dek(), (std::map<std::uint32_t, std::size_t>{{2u, 2001u}}));
    EXPECT_FALSE(raw.get(Table::meta, "dek/1").has_value());
    EXPECT_TRUE(raw.get(Table::meta, "dek/2").has_value());
    EXPECT_TRUE(raw.get(Table::meta, "dek/current").has_value());
}

TEST(DekRotation, WritersAndReadersDuringRotationLoseNothing) {
    TempDir tmp;
    auto store = open_store(tmp.store());
    fill(*store, Table::tasks, "bulk", 5000);
    constexpr int writers = 4, keys_per_writer = 20, rounds = 30;
    std::atomic<bool> failed{false};
    std::atomic<int> scans{0};
    std::atomic<bool> done{false};
    std::vector<std::thread> threads;
    for (int w = 0; w < writers; ++w) {
        threads.emplace_back([&, w] {
            for (int round = 0; round < rounds && !failed; ++round) {
                Batch b;
                for (int k = 0; k < keys_per_writer; ++k)
                    b.put(Table::services, fmt::format("w{}-k{}", w, k),
                          fmt::format("round {}", round));
                if (!store->write(std::move(b))) failed = true;
            }
        });
    }
    std::thread reader([&] {
        while (!done && !failed) {
            if (!store->scan(Table::tasks, [](auto, auto) { return true; })) failed = true;
            ++scans;
        }
    });
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(store->rotate_dek().ok());
    for (auto& t : threads) t.join();
    store->wait_rotation();
    done = true;
    reader.join();
    ASSERT_FALSE(failed);
    EXPECT_FALSE(store->rotation_pending());
    EXPECT_EQ(store->current_dek_id(), 4u);
    for (int w = 0; w < writers; ++w)
        for (int k = 0; k < keys_per_writer; ++k)
            EXPECT_EQ(str(**store->get(Table::services, fmt::format("w{}-k{}", w, k))),
                      fmt::format("round {}", rounds - 1));
    EXPECT_EQ(check_values(*store, Table::tasks), 5000u);
    store.reset();
    RawDb raw(tmp.store());
    auto per_dek = raw.values_per_dek();
    EXPECT_EQ(per_dek.size(), 1u);
    EXPECT_EQ(per_dek.begin()->first, 4u);
}

// --- Crash safety: a child process (this binary, --store-crash-child) is SIGKILLed. ---

namespace {

std::string child_key(std::string_view tag, int n) {
    return fmt::format("child-{}-{:06}", tag, n);
}

// What the child reports on its stdout, one byte per event.
constexpr char opened_event = 'O', rotating_event = 'R', written_event = 'W';

// A child's progress as read from its pipe.
struct ChildProgress {
    bool opened = false;
    bool rotating = false;
    int written = 0;  // writes that returned success
};

class CrashChild {
  public:
    CrashChild(std::string_view mode, const fs::path& dir, std::string_view tag) {
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
        out_.reset(fds[0]);
        UniqueFd write_end(fds[1]);
        child_ = Child::spawn({.argv = {"/proc/self/exe", std::string(crash_child_flag),
                                        std::string(mode), dir.string(), std::string(tag)},
                               .stdout_fd = write_end.get()});
    }

    // Reads events until done(progress) holds; false when the child ended or the deadline passed.
    template <typename Pred>
    bool wait_until(Pred done, std::chrono::seconds timeout = 60s) {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        while (!done(progress_)) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0) return false;
            pollfd p{out_.get(), POLLIN, 0};
            int rc = ::poll(&p, 1, static_cast<int>(left.count()));
            if (rc < 0 && errno == EINTR) continue;
            if (rc <= 0) return false;
            char buf[256];
            ssize_t n = ::read(out_.get(), buf, sizeof buf);
            if (n <= 0) return false;
            // Events are consumed one at a time so that done() sees every intermediate state.
            for (ssize_t i = 0; i < n; ++i) {
                if (buf[i] == opened_event) progress_.opened = true;
                if (buf[i] == rotating_event) progress_.rotating = true;
                if (buf[i] == written_event) ++progress_.written;
            }
        }
        return true;
    }

    // SIGKILL, reaped; the progress seen up to here.
    ChildProgress kill() {
        child_.signal(SIGKILL);
        int status = child_.wait();
        EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;
        return progress_;
    }

  private:
    Child child_;
    UniqueFd out_;
    ChildProgress progress_;
};

void report(char event) {
    while (::write(STDOUT_FILENO, &event, 1) < 0 && errno == EINTR) {
    }
}

// The child: opens the store, rotates the DEK ("rotate") and writes records child-<tag>-N one
// by one, reporting each write that returned; or writes one record and waits ("write").
int crash_child(int argc, char** argv) {
    if (argc != 5) return 2;
    std::string_view mode = argv[2];
    std::string tag = argv[4];
    auto opened = Store::open({.dir = argv[3]});
    if (!opened) {
        std::cerr << "crash child: " << opened.error().message << "\n";
        return 3;
    }
    auto& store = *opened->store;
    report(opened_event);
    if (mode == "rotate") {
        if (!store.rotate_dek()) return 4;
        report(rotating_event);
    }
    for (int n = 0; n < 1'000'000; ++n) {
        Batch b;
        auto key = child_key(tag, n);
        b.put(Table::tasks, key, value_for(key));
        if (!store.write(std::move(b))) return 5;
        report(written_event);
        if (mode == "write") {
            for (;;) ::pause();
        }
    }
    return 0;
}

}  // namespace

TEST(CrashSafety, AcknowledgedWriteSurvivesKill) {
    TempDir tmp;
    open_store(tmp.store());
    CrashChild child("write", tmp.store(), "ack");
    ASSERT_TRUE(child.wait_until([](const ChildProgress& p) { return p.written == 1; }));
    child.kill();
    auto store = open_store(tmp.store());
    auto v = store->get(Table::tasks, child_key("ack", 0));
    ASSERT_TRUE(v.ok()) << v.error().message;
    ASSERT_TRUE(v->has_value());
    EXPECT_EQ(str(**v), value_for(child_key("ack", 0)));
}

TEST(CrashSafety, RotationKilledAnywhereLosesNothingAndResumes) {
    TempDir tmp;
    constexpr int records = 20000;
    {
        auto store = open_store(tmp.store());
        fill(*store, Table::secret_data, "base", records);
    }
    struct KillPoint {
        bool after_rotation_started;
        int after_writes;
    };
    // From "somewhere in open or rotate_dek" through the re-sealing (the child's writes wait
    // for its chunks) to well after it finished.
    const KillPoint points[] = {{false, 0}, {true, 0},  {true, 1},  {true, 5},
                                {true, 15}, {true, 40}, {true, 400}};
    std::map<std::string, int> acknowledged;  // tag -> writes that returned before the kill
    for (std::size_t i = 0; i < std::size(points); ++i) {
        const auto point = points[i];
        const auto tag = std::to_string(i);
        SCOPED_TRACE("kill point " + tag);
        CrashChild child("rotate", tmp.store(), tag);
        ASSERT_TRUE(child.wait_until([&](const ChildProgress& p) {
            return p.opened && (!point.after_rotation_started || p.rotating) &&
                   p.written >= point.after_writes;
        }));
        acknowledged[tag] = child.kill().written;
        {
            RawDb raw(tmp.store());
            std::cout << "killed at point " << i << " (" << acknowledged[tag]
                      << " writes acknowledged): values per DEK";
            for (auto [id, n] : raw.values_per_dek()) std::cout << " " << id << ":" << n;
            std::cout << "\n";
        }
        auto store = open_store(tmp.store());
        EXPECT_EQ(check_values(*store, Table::secret_data), static_cast<std::size_t>(records));
        for (const auto& [t, n] : acknowledged) {
            for (int k = 0; k < n; ++k) {
                auto v = store->get(Table::tasks, child_key(t, k));
                ASSERT_TRUE(v.ok()) << v.error().message;
                ASSERT_TRUE(v->has_value()) << child_key(t, k);
                EXPECT_EQ(str(**v), value_for(child_key(t, k)));
            }
        }
        check_values(*store, Table::tasks);
        // Every other time the rotation is finished here; otherwise the next child starts with
        // one unfinished and adds another DEK on top.
        if (i % 2 == 1) {
            store->wait_rotation();
            EXPECT_FALSE(store->rotation_pending());
        }
    }
    std::uint32_t current = 0;
    {
        auto store = open_store(tmp.store());
        store->wait_rotation();
        EXPECT_FALSE(store->rotation_pending());
        current = store->current_dek_id();
        EXPECT_GE(current, 2u);
        EXPECT_EQ(check_values(*store, Table::secret_data), static_cast<std::size_t>(records));
    }
    RawDb raw(tmp.store());
    auto per_dek = raw.values_per_dek();
    ASSERT_EQ(per_dek.size(), 1u);
    EXPECT_EQ(per_dek.begin()->first, current);
    std::vector<std::string> key_records;
    for (const auto& [k, v] : raw.all(Table::meta))
        if (k.starts_with("dek/")) key_records.push_back(k);
    EXPECT_EQ(key_records,
              (std::vector<std::string>{"dek/" + std::to_string(current), "dek/current"}));
}

// gtest's own main is not used: see the top of this file.
int main(int argc, char** argv) {
    if (argc >= 2 && argv[1] == crash_child_flag) return crash_child(argc, argv);
    ::testing::InitGoogleTest(&argc, argv);
    return RUN_ALL_TESTS();
}
