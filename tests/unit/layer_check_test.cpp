// The check of layer blobs from an untrusted registry, on tars written here byte by byte.
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

#include <gtest/gtest.h>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <thread>

#include "coffer/agent/layer_check.h"
#include "coffer/base/unique_fd.h"

using namespace coffer;
using namespace coffer::agent;

namespace {

constexpr std::string_view tar_type = "application/vnd.oci.image.layer.v1.tar";
constexpr std::string_view gzip_type = "application/vnd.oci.image.layer.v1.tar+gzip";
constexpr std::string_view docker_type = "application/vnd.docker.image.rootfs.diff.tar.gzip";

std::string sha256(std::string_view bytes) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EXPECT_EQ(EVP_Digest(bytes.data(), bytes.size(), md, &n, EVP_sha256(), nullptr), 1);
    std::string out = "sha256:";
    for (unsigned int i = 0; i < n; ++i) {
        char hex[3];
        std::snprintf(hex, sizeof hex, "%02x", md[i]);
        out += hex;
    }
    return out;
}

std::string gzip(std::string_view data) {
    z_stream z{};
    EXPECT_EQ(
        deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY),
        Z_OK);
    std::string out(deflateBound(&z, data.size()), '\0');
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
    z.avail_in = static_cast<uInt>(data.size());
    z.next_out = reinterpret_cast<Bytef*>(out.data());
    z.avail_out = static_cast<uInt>(out.size());
    EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
    out.resize(z.total_out);
    deflateEnd(&z);
    return out;
}

void put(std::string& block, std::size_t at, std::string_view s) {
    std::memcpy(block.data() + at, s.data(), s.size());
}

void put_octal(std::string& block, std::size_t at, std::size_t len, std::uint64_t v) {
    put(block, at, fmt::format("{:0{}o}", v, len - 1));
}

// A ustar header block with its checksum.
struct Header {
    std::string name;
    char type = '0';
    std::uint64_t size = 0;
    std::string link{};
    std::string prefix{};
    std::string magic = std::string(
        "ustar\0"
        "00",
        8);

    std::string block() const {
        std::string b(512, '\0');
        put(b, 0, name);
        put_octal(b, 100, 8, type == '5' ? 0755 : 0644);
        put_octal(b, 108, 8, 0);
        put_octal(b, 116, 8, 0);
        put_octal(b, 124, 12, size);
        put_octal(b, 136, 12, 1700000000);
        b[156] = type;
        put(b, 157, link);
        put(b, 257, magic);
        put(b, 265, "root");
        put(b, 297, "root");
        put(b, 345, prefix);
        put(b, 148, "        ");
        unsigned sum = 0;
        for (unsigned char c : b) sum += c;
        put(b, 148, fmt::format("{:06o}", sum));
        b[154] = '\0';
        b[155] = ' ';
        return b;
    }
};

std::string padded(std::string data) {
    data.resize((data.size() + 511) / 512 * 512, '\0');
    return data;
}

std::string pax_record(std::string_view key, std::string_view value) {
    auto body = fmt::format(" {}={}\n", key, value);
    auto len = body.size() + 1;
    while (std::to_string(len).size() + body.size() != len) ++len;
    return fmt::format("{}{}", len, body);
}

// A tar written entry by entry; end() adds the end-of-archive marker and pads to a record.
class Tar {
  public:
    Tar& file(std::string name, std::string_view data) {
        return entry({std::move(name), '0', data.size()}, data);
    }
    Tar& dir(std::string name) { return entry({std::move(name), '5'}); }
    Tar& symlink(std::string name, std::string target) {
        return entry({std::move(name), '2', 0, std::move(target)});
    }
    Tar& hard_link(std::string name, std::string target) {
        return entry({std::move(name), '1', 0, std::move(target)});
    }
    Tar& pax(const std::map<std::string, std::string>& records, char type = 'x') {
        std::string body;
        for (const auto& [k, v] : records) body += pax_record(k, v);
        return entry({"././@PaxHeader", type, body.size()}, body);
    }
    Tar& gnu_long(char type, std::string_view name) {
        std::string body(name);
        body += '\0';
        return entry({"././@LongLink", type, body.size(), {}, {}, std::string("ustar  \0", 8)},
                     body);
    }
    Tar& entry(const Header& h, std::string_view data = {}) {
        bytes_ += h.block();
        bytes_ += padded(std::string(data));
        return *this;
    }
    Tar& raw(std::string_view bytes) {
        bytes_ += bytes;
        return *this;
    }
    std::string unfinished() const { return bytes_; }
    std::string end() const {
        auto out = bytes_ + std::string(1024, '\0');
        out.resize((out.size() + 10239) / 10240 * 10240, '\0');
        return out;
    }

  private:
    std::string bytes_;
};

UniqueFd memfd(std::string_view bytes) {
    UniqueFd fd(::memfd_create("layer", MFD_CLOEXEC));
    EXPECT_TRUE(fd);
    EXPECT_EQ(::write(fd.get(), bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
    EXPECT_EQ(::lseek(fd.get(), 0, SEEK_SET), 0);
    return fd;
}

struct Blob {
    std::string bytes;
    std::string_view media_type = gzip_type;
    std::optional<std::string> digest{};
    std::optional<std::uint64_t> size{};
    LayerLimits limits{};
};

Result<LayerFacts> check(const Blob& b) {
    auto fd = memfd(b.bytes);
    return check_layer(fd.get(), b.media_type, b.digest ? *b.digest : sha256(b.bytes),
                       b.size ? *b.size : b.bytes.size(), b.limits);
}

// The refusal of a gzipped layer of `tar`: its message with "layer sha256:<12 hex>: " removed.
std::string refusal(const Blob& b) {
    auto r = check(b);
    if (r) return "accepted";
    EXPECT_EQ(r.error().code, Errc::invalid_argument);
    auto prefix = fmt::format("layer {}: ", (b.digest ? *b.digest : sha256(b.bytes)).substr(0, 19));
    const auto& m = r.error().message;
    EXPECT_TRUE(m.starts_with(prefix)) << m;
    return m.starts_with(prefix) ? m.substr(prefix.size()) : m;
}

std::string refusal_of_tar(const Tar& t) {
    return refusal({gzip(t.end())});
}

TEST(LayerCheck, AcceptsAnOrdinaryLayerAndMeasuresIt) {
    const std::string long_pax(150, 'p');
    const std::string long_gnu(200, 'g');
    Tar t;
    t.dir("./")
        .dir("./bin/")
        .file("./bin/busybox", std::string(1000, 'x'))
        .symlink("bin/sh", "/bin/busybox")
        .symlink("etc/up", "../../../outside")
        .hard_link("bin/ls", "bin/busybox")
        .hard_link("bin/cat", "./bin/busybox")
        .pax({{"path", "usr/share/" + long_pax}, {"mtime", "1700000000.5"}})
        .file("usr/share/truncated", "pax")
        .gnu_long('L', "usr/lib/" + long_gnu)
        .file("usr/lib/truncated", "gnu")
        .entry({"name", '0', 3, {}, "usr/share/with/prefix"}, "pre")
        .entry({"run/fifo", '6'});
    auto tar = t.end();
    auto r = check({gzip(tar)});
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->diff_id, sha256(tar));
    EXPECT_EQ(r->unpacked, tar.size());
    EXPECT_EQ(r->entries, 11u);
}

TEST(LayerCheck, AcceptsPlainTarAndDockerGzip) {
    auto tar = Tar().dir("etc/").file("etc/hosts", "127.0.0.1 localhost\n").end();
    auto plain = check({tar, tar_type});
    ASSERT_TRUE(plain) << plain.error().message;
    EXPECT_EQ(plain->diff_id, sha256(tar));
    EXPECT_EQ(plain->entries, 2u);
    auto docker = check({gzip(tar), docker_type});
    ASSERT_TRUE(docker) << docker.error().message;
    EXPECT_EQ(docker->diff_id, sha256(tar));
}

TEST(LayerCheck, AcceptsGzipOfSeveralMembers) {
    auto tar = Tar().file("a", std::string(3000, 'a')).file("b", "b").end();
    auto r = check({gzip(tar.substr(0, 1000)) + gzip(tar.substr(1000))});
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->diff_id, sha256(tar));
    EXPECT_EQ(r->entries, 2u);
}

TEST(LayerCheck, AcceptsTheEmptyLayer) {
    auto r = check({gzip(std::string(1024, '\0'))});
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->entries, 0u);
    EXPECT_EQ(r->unpacked, 1024u);
}

TEST(LayerCheck, ReadsFromTheCurrentOffset) {
    auto blob = gzip(Tar().file("a", "a").end());
    auto fd = memfd("junk" + blob);
    ASSERT_EQ(::lseek(fd.get(), 4, SEEK_SET), 4);
    auto r = check_layer(fd.get(), gzip_type, sha256(blob), blob.size());
    EXPECT_TRUE(r) << r.error().message;
}

TEST(LayerCheck, RefusesNamesThatLeaveTheImage) {
    EXPECT_EQ(refusal_of_tar(Tar().file("../etc/passwd", "x")),
              R"(entry "../etc/passwd" leaves the image (a ".." component))");
    EXPECT_EQ(refusal_of_tar(Tar().dir("a/").file("a/../../x", "x")),
              R"(entry "a/../../x" leaves the image (a ".." component))");
    EXPECT_EQ(refusal_of_tar(Tar().file("/etc/passwd", "x")),
              R"(entry "/etc/passwd" leaves the image (an absolute path))");
    EXPECT_EQ(refusal_of_tar(Tar().symlink("..", "/")),
              R"(entry ".." leaves the image (a ".." component))");
    EXPECT_EQ(refusal_of_tar(Tar().entry({"x", '0', 1, {}, "../up"}, "x")),
              R"(entry "../up/x" leaves the image (a ".." component))");
}

TEST(LayerCheck, RefusesNamesFromExtendedHeadersThatLeaveTheImage) {
    EXPECT_EQ(refusal_of_tar(Tar().pax({{"path", "a/../../escape"}}).file("a/escape", "x")),
              R"(entry "a/../../escape" leaves the image (a ".." component))");
    EXPECT_EQ(refusal_of_tar(Tar().pax({{"path", "/etc/cron.d/x"}}).file("etc/cron.d/x", "x")),
              R"(entry "/etc/cron.d/x" leaves the image (an absolute path))");
    EXPECT_EQ(refusal_of_tar(Tar().pax({{"path", "../g"}}, 'g').file("ok", "x")),
              R"(entry "../g" leaves the image (a ".." component))");
    EXPECT_EQ(refusal_of_tar(Tar().gnu_long('L', "x/../../../long").file("x/long", "x")),
              R"(entry "x/../../../long" leaves the image (a ".." component))");
    EXPECT_EQ(refusal_of_tar(Tar().pax({{"path", std::string("ok\0..", 5)}}).file("ok", "x")),
              R"(corrupt archive: a PAX header has a NUL byte in path "ok\x00..")");
}

TEST(LayerCheck, RefusesHardLinksThatLeaveTheImage) {
    EXPECT_EQ(refusal_of_tar(Tar().hard_link("bin/x", "../x")),
              R"(hard link "bin/x" to "../x" leaves the image (a ".." component))");
    EXPECT_EQ(refusal_of_tar(Tar().hard_link("bin/x", "/etc/shadow")),
              R"(hard link "bin/x" to "/etc/shadow" leaves the image (an absolute path))");
    EXPECT_EQ(refusal_of_tar(Tar().pax({{"linkpath", "../../etc/shadow"}}).hard_link("s", "ok")),
              R"(hard link "s" to "../../etc/shadow" leaves the image (a ".." component))");
    EXPECT_EQ(refusal_of_tar(Tar().gnu_long('K', "/etc/shadow").hard_link("s", "ok")),
              R"(hard link "s" to "/etc/shadow" leaves the image (an absolute path))");
    EXPECT_EQ(refusal_of_tar(Tar().hard_link("s", "")), R"(hard link "s" has no target)");
}

TEST(LayerCheck, RefusesDeviceNodesAndUnknownTypes) {
    EXPECT_EQ(refusal_of_tar(Tar().dir("dev/").entry({"dev/sda", '3'})),
              R"(device node "dev/sda" (a character device))");
    EXPECT_EQ(refusal_of_tar(Tar().dir("dev/").entry({"dev/sda", '4'})),
              R"(device node "dev/sda" (a block device))");
    EXPECT_EQ(refusal_of_tar(Tar().entry({"sparse", 'S'})),
              R"(entry "sparse" has an unknown type 'S')");
    EXPECT_EQ(refusal_of_tar(Tar().entry({"dir", '5', 512}, std::string(512, 'h'))),
              R"(entry "dir" (a directory) has 512 bytes of data)");
}

TEST(LayerCheck, RefusesABlobOtherThanTheManifestNames) {
    auto blob = gzip(Tar().file("a", "a").end());
    auto other = sha256("something else");
    EXPECT_EQ(refusal({blob, gzip_type, other}),
              fmt::format("digest mismatch (the registry sent {})", sha256(blob).substr(0, 19)));
    EXPECT_EQ(refusal({blob, gzip_type, {}, blob.size() - 1}),
              fmt::format("{} bytes, the manifest says {}", blob.size(), blob.size() - 1));
    EXPECT_EQ(refusal({blob, gzip_type, {}, blob.size() + 1}),
              fmt::format("{} bytes, the manifest says {}", blob.size(), blob.size() + 1));
    // A hostile blob with the wrong digest is refused for its digest.
    EXPECT_EQ(refusal({gzip(Tar().file("../x", "x").end()), gzip_type, other}).substr(0, 15),
              "digest mismatch");
    auto bad = check({blob, gzip_type, std::string("sha256:ABC")});
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().message, R"(layer digest "sha256:ABC" is not sha256:<64 hex digits>)");
}

TEST(LayerCheck, MeasuresAStreamThatIsNotAFile) {
    auto blob = gzip(Tar().file("a", std::string(5000, 'a')).end());
    ASSERT_LT(blob.size(), 4096u);
    for (std::uint64_t size : {blob.size() - 10, blob.size(), blob.size() + 10}) {
        int p[2];
        ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
        UniqueFd in(p[0]), out(p[1]);
        ASSERT_EQ(::write(out.get(), blob.data(), blob.size()), static_cast<ssize_t>(blob.size()));
        out.reset();
        auto r = check_layer(in.get(), gzip_type, sha256(blob), size);
        if (size == blob.size()) {
            EXPECT_TRUE(r) << r.error().message;
        } else {
            ASSERT_FALSE(r);
            EXPECT_NE(r.error().message.find(fmt::format("the manifest says {}", size)),
                      std::string::npos)
                << r.error().message;
        }
    }
}

TEST(LayerCheck, RefusesTruncatedOrCorruptStreams) {
    auto tar = Tar().file("a", std::string(20000, 'a')).file("b", "b").end();
    auto gz = gzip(tar);
    EXPECT_EQ(refusal({gz.substr(0, gz.size() - 8)}), "truncated gzip stream");
    EXPECT_EQ(refusal({gz.substr(0, 5)}), "truncated gzip stream");
    EXPECT_EQ(refusal({""}), "truncated gzip stream");
    auto flipped = gz;
    flipped[flipped.size() - 6] ^= 0x55;  // the CRC-32
    EXPECT_EQ(refusal({flipped}), "corrupt gzip stream (incorrect data check)");
    EXPECT_EQ(refusal({gz + "garbage"}), "data after the end of the gzip stream");
    EXPECT_EQ(refusal({gz + std::string(1, '\0')}), "data after the end of the gzip stream");
    EXPECT_EQ(refusal({gz + "\x1f"}), "data after the end of the gzip stream");
    EXPECT_EQ(refusal({tar.substr(0, 700), tar_type}),
              R"(truncated archive: entry "a" ends early)");
    EXPECT_EQ(refusal({gzip(Tar().file("a", "a").unfinished())}),
              "truncated archive: no end-of-archive marker");
    EXPECT_EQ(refusal({gzip(Tar().file("a", "a").unfinished() + std::string(512, '\0'))}),
              "truncated archive: no end-of-archive marker");
}

TEST(LayerCheck, RefusesCorruptArchives) {
    auto tar = Tar().file("a", "a").file("b", "b").end();
    auto bad_sum = tar;
    bad_sum[1024] = 'c';
    EXPECT_EQ(refusal({gzip(bad_sum)}), R"(corrupt archive: entry "c" has a bad header checksum)");
    auto after_end = tar;
    after_end.back() = 'x';
    EXPECT_EQ(refusal({gzip(after_end)}), "corrupt archive: data after its end-of-archive marker");
    EXPECT_EQ(refusal_of_tar(Tar().file("a", "a").raw(std::string(512, '\0')).file("b", "b")),
              R"(corrupt archive: a zero block before entry "b")");
    EXPECT_EQ(refusal_of_tar(Tar().pax({{"path", "a"}}).pax({{"path", "b"}}).file("c", "c")),
              "corrupt archive: a PAX header follows another for the same entry");
    EXPECT_EQ(
        refusal_of_tar(Tar().raw(Header{"x", 'x', 6}.block() + padded("9 a=b\n")).file("c", "c")),
        "corrupt archive: a PAX header has a bad record length");
}

TEST(LayerCheck, HonoursThePaxSizeOfAnEntry) {
    // The PAX size says the data is 1024 bytes: the header hidden in it is data, not an entry.
    auto hidden = Header{"../hidden", '0', 0}.block() + std::string(512, 'x');
    auto ok = Tar().pax({{"size", "1024"}}).entry({"a", '0', 0}, hidden).end();
    auto r = check({gzip(ok)});
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->entries, 1u);
    // Without it, the same bytes are the hostile entry.
    auto bare = Tar().entry({"a", '0', 0}).raw(hidden).end();
    EXPECT_EQ(refusal({gzip(bare)}), R"(entry "../hidden" leaves the image (a ".." component))");
}

TEST(LayerCheck, RefusesUnsupportedMediaTypes) {
    auto tar = Tar().file("a", "a").end();
    EXPECT_EQ(refusal({tar, "application/vnd.oci.image.layer.v1.tar+zstd"}),
              "compression zstd is not supported");
    EXPECT_EQ(refusal({tar, "application/vnd.docker.image.rootfs.diff.tar.zstd"}),
              "compression zstd is not supported");
    EXPECT_EQ(refusal({tar, "application/vnd.oci.image.config.v1+json"}),
              R"(media type "application/vnd.oci.image.config.v1+json" is not a layer)");
}

TEST(LayerCheck, RefusesMoreThanTheLimits) {
    auto tar = Tar().file("a", std::string(4000, 'a')).file("b", "b").file("c", "c").end();
    EXPECT_EQ(refusal({gzip(tar), gzip_type, {}, {}, {.max_entries = 2}}), "more than 2 entries");
    EXPECT_EQ(refusal({gzip(tar), gzip_type, {}, {}, {.max_unpacked = 4096}}),
              "unpacks to more than 4096 bytes");
    auto announced = Tar().entry({"a", '0', 4000}).unfinished();
    EXPECT_EQ(refusal({gzip(announced), gzip_type, {}, {}, {.max_unpacked = 3000}}),
              R"(entry "a" has 4000 bytes, more than the 3000 a layer may unpack to)");
    // A bomb: a small blob of zeros after the archive stops at the limit.
    auto bomb = gzip(Tar().file("a", "a").end() + std::string(64 << 20, '\0'));
    EXPECT_LT(bomb.size(), 256u << 10);
    EXPECT_EQ(refusal({bomb, gzip_type, {}, {}, {.max_unpacked = 1 << 20}}),
              "unpacks to more than 1048576 bytes");
}

}  // namespace
