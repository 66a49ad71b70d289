#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "coffer/crypto/aead.h"
#include "coffer/crypto/encoding.h"
#include "coffer/crypto/random.h"
#include "coffer/crypto/secure_buffer.h"
#include "secure_pool.h"

using namespace coffer::crypto;
using namespace std::string_view_literals;

namespace {
std::span<const std::uint8_t> bytes(std::string_view s) {
    return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}
std::string str(const SecureBuffer& b) {
    return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}
}  // namespace

TEST(SecureBuffer, CopiesMovesAndCompares) {
    auto a = SecureBuffer::copy_of(std::string_view("hunter2"));
    EXPECT_EQ(a.size(), 7u);
    auto b = std::move(a);
    EXPECT_TRUE(a.empty());
    EXPECT_TRUE(b.equals(bytes("hunter2")));
    EXPECT_FALSE(b.equals(bytes("hunter3")));
    EXPECT_FALSE(b.equals(bytes("hunter")));
    auto c = b.clone();
    EXPECT_TRUE(c.equals(b.span()));
}

TEST(ConstantTime, ComparesStrings) {
    EXPECT_TRUE(constant_time_equal(std::string_view("abc"), std::string_view("abc")));
    EXPECT_FALSE(constant_time_equal(std::string_view("abc"), std::string_view("abd")));
    EXPECT_FALSE(constant_time_equal(std::string_view("abc"), std::string_view("ab")));
}

TEST(RandomId, Is25LowerCaseAlphanumericAndUnique) {
    std::set<std::string> seen;
    for (int i = 0; i < 1000; ++i) {
        auto id = random_id();
        ASSERT_EQ(id.size(), 25u);
        for (char ch : id) ASSERT_TRUE((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z')) << id;
        seen.insert(id);
    }
    EXPECT_EQ(seen.size(), 1000u);
}

TEST(PublicRandom, NeverRepeatsAndAForkedChildDoesNotRepeatItsParent) {
    std::set<std::string> seen;
    for (int i = 0; i < 200; ++i) {  // several refills of the pool
        std::array<std::uint8_t, 24> b{};
        public_random_bytes(b);
        EXPECT_TRUE(seen.emplace(reinterpret_cast<const char*>(b.data()), b.size()).second);
    }
    std::array<std::uint8_t, 24> large_first{};
    std::array<std::uint8_t, 100> large{};  // over the pool's limit: from the kernel
    public_random_bytes(large_first);
    public_random_bytes(large);
    EXPECT_NE(std::count(large.begin(), large.end(), 0), 100);

    // The pool holds bytes now; a child must not hand out the ones its parent hands out next.
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        std::array<std::uint8_t, 24> b{};
        public_random_bytes(b);
        auto n = ::write(fds[1], b.data(), b.size());
        ::_exit(n == static_cast<ssize_t>(b.size()) ? 0 : 1);
    }
    ::close(fds[1]);
    std::array<std::uint8_t, 24> mine{}, childs{};
    public_random_bytes(mine);
    ASSERT_EQ(::read(fds[0], childs.data(), childs.size()), static_cast<ssize_t>(childs.size()));
    ::close(fds[0]);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    EXPECT_NE(mine, childs);
}

TEST(DerivedId, IsAnIdThatTheSameInputsAlwaysGive) {
    auto a = derived_id("coffer test context", "value");
    EXPECT_EQ(a, derived_id("coffer test context", "value"));
    ASSERT_EQ(a.size(), 25u) << "the shape of random_id()";
    for (char ch : a) EXPECT_TRUE((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z')) << a;
    EXPECT_NE(a, derived_id("coffer test context", "value2"));
    EXPECT_NE(a, derived_id("coffer other context", "value"));
    EXPECT_THROW(derived_id("too short", "value"), std::invalid_argument);
}

TEST(Base64, RoundTripsAndRejectsGarbage) {
    std::string data("\x00\x01\xff binary", 10);
    auto enc = base64_encode(bytes(data));
    auto dec = base64_decode_secure(enc);
    ASSERT_TRUE(dec);
    EXPECT_EQ(str(*dec), data);
    EXPECT_EQ(base64_encode(bytes("x")), "eA==");
    EXPECT_FALSE(base64_decode_secure("not base64!"));
    EXPECT_FALSE(base64_decode_secure("eA="));
    EXPECT_FALSE(base64_decode_secure("eA==trailing"));
}

TEST(Base64Url, SecureEncodingMatchesPlainEncoding) {
    for (std::string_view data : {""sv, "x"sv, "\xfb\xff"sv, "\0\x01\xff binary"sv,
                                  "32 bytes of key material........."sv}) {
        auto secure = base64url_encode_secure(bytes(data));
        EXPECT_EQ(str(secure), base64url_encode(bytes(data)));
        auto back = base64url_decode_secure(str(secure));
        ASSERT_TRUE(back);
        EXPECT_EQ(str(*back), data);
    }
}

TEST(Sealing, OpensWhatItSealed) {
    auto key = Key::generate(1);
    auto sealed = seal(key, bytes("s3cr3t"), "secrets/abc");
    EXPECT_EQ(sealed.size(), 6 + sealed_overhead);
    EXPECT_EQ(sealed.find("s3cr3t"), std::string::npos);
    auto opened = open(key, sealed, "secrets/abc");
    ASSERT_TRUE(opened);
    EXPECT_EQ(str(*opened), "s3cr3t");
    EXPECT_EQ(sealed_key_id(sealed), 1u);
}

TEST(Sealing, OpensIntoACallersBuffer) {
    auto key = Key::generate(3);
    auto sealed = seal(key, bytes("s3cr3t"), "secrets/abc");
    SecureBuffer scratch(64);
    auto n = open_into(key, sealed, "secrets/abc", scratch.span());
    ASSERT_TRUE(n);
    EXPECT_EQ(std::string_view(reinterpret_cast<const char*>(scratch.data()), *n), "s3cr3t");
    EXPECT_FALSE(open_into(key, sealed, "secrets/abc", scratch.span().first(5)));
    EXPECT_TRUE(open_into(key, sealed, "secrets/abc", scratch.span().first(6)));
    EXPECT_FALSE(open_into(key, sealed, "secrets/abd", scratch.span()));
    EXPECT_FALSE(
        open_into(key, sealed.substr(0, sealed_overhead - 1), "secrets/abc", scratch.span()));
}

TEST(Sealing, EmptyPlaintextRoundTrips) {
    auto key = Key::generate(2);
    auto sealed = seal(key, {}, "meta/x");
    auto opened = open(key, sealed, "meta/x");
    ASSERT_TRUE(opened);
    EXPECT_TRUE(opened->empty());
}

TEST(Sealing, NoncesDiffer) {
    auto key = Key::generate(1);
    EXPECT_NE(seal(key, bytes("same"), "a"), seal(key, bytes("same"), "a"));
}

TEST(Sealing, RejectsTamperedCiphertext) {
    auto key = Key::generate(1);
    auto sealed = seal(key, bytes("value"), "ad");
    for (std::size_t i = 0; i < sealed.size(); ++i) {
        auto t = sealed;
        t[i] ^= 0x01;
        EXPECT_FALSE(open(key, t, "ad")) << "byte " << i;
    }
}

TEST(Sealing, RejectsWrongKey) {
    auto key = Key::generate(1);
    auto other = Key::generate(1);
    EXPECT_FALSE(open(other, seal(key, bytes("value"), "ad"), "ad"));
    auto other_id = Key::generate(2);
    other_id.bytes = key.bytes.clone();
    EXPECT_FALSE(open(other_id, seal(key, bytes("value"), "ad"), "ad"));
}

TEST(Sealing, RejectsValueMovedToAnotherKey) {
    auto key = Key::generate(1);
    auto sealed = seal(key, bytes("value"), "secrets\0aaa"sv);
    EXPECT_FALSE(open(key, sealed, "secrets\0bbb"sv));
    EXPECT_FALSE(open(key, sealed, "services\0aaa"sv));
}

TEST(Sealing, RejectsTruncatedValue) {
    auto key = Key::generate(1);
    auto sealed = seal(key, bytes("value"), "ad");
    for (std::size_t n = 0; n < sealed.size(); ++n)
        EXPECT_FALSE(open(key, sealed.substr(0, n), "ad"));
}

TEST(DeriveKey, DependsOnContextAndInput) {
    auto a = derive_key(bytes("input key material 32 bytes....."), "coffer kek v1");
    auto b = derive_key(bytes("input key material 32 bytes....."), "coffer kek v1");
    auto c = derive_key(bytes("input key material 32 bytes....."), "other");
    EXPECT_TRUE(a.equals(b.span()));
    EXPECT_FALSE(a.equals(c.span()));
    EXPECT_EQ(a.size(), 32u);
}

TEST(KeyedMac, DependsOnKeyContextAndEachPartsBoundaries) {
    auto k1 = Key::generate(1).bytes, k2 = Key::generate(2).bytes;
    auto a = keyed_mac(k1, "ctx", {bytes("ab"), bytes("c")});
    EXPECT_EQ(a.size(), 32u);
    EXPECT_TRUE(a.equals(keyed_mac(k1, "ctx", {bytes("ab"), bytes("c")}).span()));
    EXPECT_FALSE(a.equals(keyed_mac(k2, "ctx", {bytes("ab"), bytes("c")}).span()));
    EXPECT_FALSE(a.equals(keyed_mac(k1, "other", {bytes("ab"), bytes("c")}).span()));
    EXPECT_FALSE(a.equals(keyed_mac(k1, "ctx", {bytes("a"), bytes("bc")}).span()));
    EXPECT_FALSE(a.equals(keyed_mac(k1, "ctx", {bytes("abc")}).span()));
    EXPECT_FALSE(a.equals(keyed_mac(k1, "ctxab", {bytes("c")}).span()));
    auto short_key = SecureBuffer(16);
    EXPECT_THROW(keyed_mac(short_key, "ctx", {bytes("x")}), std::invalid_argument);
}

TEST(Base36, EncodesBigEndianNumbersZeroPadded) {
    const std::uint8_t n256[] = {0x01, 0x00};
    EXPECT_EQ(base36_encode(n256, 4), "0074");
    const std::uint8_t zero[] = {0, 0};
    EXPECT_EQ(base36_encode(zero, 3), "000");
    const std::uint8_t max[] = {0xff, 0xff, 0xff, 0xff};  // 4294967295 = 1z141z3 in base 36
    EXPECT_EQ(base36_encode(max, 7), "1z141z3");
    EXPECT_EQ(base36_encode(max, 3), "1z3");
    EXPECT_EQ(str(base36_encode_secure(max, 9)), "001z141z3");
}

// A burst of blocks of one size takes slabs; once they are all released, the pool keeps no more
// than a few slabs' worth of that size (the rest went back to the system), every block it hands
// out again is wiped, and blocks of other sizes are untouched.
TEST(SecurePool, GivesEmptySlabsBackOnceEnoughOfTheirSizeStaysFree) {
    using namespace coffer::crypto::detail;
    constexpr std::size_t block = 4096, slab = 64 * 1024, burst = 64 * (slab / block);
    void* other = pool_allocate(100);
    std::memset(other, 0x5a, 100);
    auto before = secure_memory_use().pool_bytes;
    std::vector<void*> blocks;
    for (std::size_t i = 0; i < burst; ++i) {
        blocks.push_back(pool_allocate(block));
        std::memset(blocks.back(), 0xaa, block);
    }
    auto peak = secure_memory_use().pool_bytes;
    EXPECT_GE(peak - before, 63 * slab);
    for (auto* p : blocks) pool_release(p, block);
    auto after = secure_memory_use().pool_bytes;
    EXPECT_LE(after, before + 4 * slab) << "peak " << peak;
    // Blocks handed out again hold nothing of what was written (kept slabs' blocks were wiped,
    // new slabs come filled by libsodium).
    std::vector<void*> again;
    for (std::size_t i = 0; i < 8 * (slab / block); ++i) {
        again.push_back(pool_allocate(block));
        const auto* b = static_cast<const unsigned char*>(again.back());
        ASSERT_TRUE(std::none_of(b, b + block, [](unsigned char c) { return c == 0xaa; }));
    }
    for (auto* p : again) pool_release(p, block);
    const auto* o = static_cast<const unsigned char*>(other);
    EXPECT_TRUE(std::all_of(o, o + 100, [](unsigned char c) { return c == 0x5a; }));
    pool_release(other, 100);
}

// A block given back under a smaller size than it was asked with (Boost.JSON's monotonic_resource
// does: its header is left out) goes back to its own class, wiped whole: handed out again, none
// of its bytes is what was written, and the pool's use is what it was.
TEST(SecurePool, ABlockReleasedUnderASmallerSizeIsWipedWholeInItsOwnClass) {
    using namespace coffer::crypto::detail;
    constexpr std::size_t asked = 4096 + 32;  // an 8 KiB block
    auto before = secure_memory_use();
    auto* p = static_cast<unsigned char*>(pool_allocate(asked));
    std::memset(p, 0xaa, asked);
    pool_release(p, 4096);
    EXPECT_EQ(secure_memory_use().pool_in_use_bytes, before.pool_in_use_bytes);
    auto* again = static_cast<unsigned char*>(pool_allocate(asked));
    EXPECT_EQ(again, p);  // the same block, from its own class
    EXPECT_TRUE(std::none_of(again, again + asked, [](unsigned char c) { return c == 0xaa; }));
    pool_release(again, asked);
}
