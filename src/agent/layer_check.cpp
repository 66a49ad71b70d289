#include "coffer/agent/layer_check.h"

#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <vector>

#include <fmt/format.h>

namespace coffer::agent {
namespace {

using Bytes = std::span<const std::uint8_t>;

constexpr std::size_t block_size = 512;
constexpr std::size_t buffer_size = 64 * 1024;
// PAX and GNU long-name contents are held in memory; real ones are a few hundred bytes.
constexpr std::uint64_t max_meta = 1 << 20;
// Sizes above this are corrupt; below it, rounding up to a block cannot overflow.
constexpr std::uint64_t max_size = 1ull << 62;

constexpr std::string_view oci_tar = "application/vnd.oci.image.layer.v1.tar";
constexpr std::string_view docker_tar = "application/vnd.docker.image.rootfs.diff.tar";

Error refuse(std::string message) {
    return make_error(Errc::invalid_argument, std::move(message));
}

// A name from the archive in a message: quoted, escaped and cut short.
std::string quoted(std::string_view s) {
    constexpr std::size_t max = 200;
    if (s.size() <= max) return fmt::format("{:?}", s);
    return fmt::format("{:?}...", s.substr(0, max));
}

std::string short_digest(std::string_view hex) {
    return fmt::format("sha256:{}", hex.substr(0, 12));
}

// The hex of a "sha256:<64 lowercase hex>" digest.
std::optional<std::string_view> sha256_hex(std::string_view digest) {
    if (!digest.starts_with("sha256:")) return std::nullopt;
    auto hex = digest.substr(7);
    auto is_hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); };
    if (hex.size() != 64 || !std::all_of(hex.begin(), hex.end(), is_hex)) return std::nullopt;
    return hex;
}

enum class Compression { none, gzip };

Result<Compression> compression_of(std::string_view media_type) {
    if (media_type == oci_tar) return Compression::none;
    if (media_type == fmt::format("{}+gzip", oci_tar) ||
        media_type == fmt::format("{}.gzip", docker_tar))
        return Compression::gzip;
    std::string_view name;
    if (media_type.starts_with(oci_tar) && media_type.substr(oci_tar.size()).starts_with('+'))
        name = media_type.substr(oci_tar.size() + 1);
    else if (media_type.starts_with(docker_tar) &&
             media_type.substr(docker_tar.size()).starts_with('.'))
        name = media_type.substr(docker_tar.size() + 1);
    else
        return refuse(fmt::format("media type {} is not a layer", quoted(media_type)));
    auto plain = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
    if (name.empty() || name.size() > 16 || !std::all_of(name.begin(), name.end(), plain))
        return refuse(fmt::format("compression {} is not supported", quoted(name)));
    return refuse(fmt::format("compression {} is not supported", name));
}

class Sha256 {
  public:
    Sha256() : ctx_(EVP_MD_CTX_new()) {
        if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1) fail();
    }
    void update(Bytes b) {
        if (EVP_DigestUpdate(ctx_.get(), b.data(), b.size()) != 1) fail();
    }
    std::string hex() {
        std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
        unsigned int n = 0;
        if (EVP_DigestFinal_ex(ctx_.get(), md.data(), &n) != 1) fail();
        static constexpr char digits[] = "0123456789abcdef";
        std::string out;
        for (unsigned int i = 0; i < n; ++i) {
            out += digits[md[i] >> 4];
            out += digits[md[i] & 0xf];
        }
        return out;
    }

  private:
    [[noreturn]] static void fail() {
        throw ErrorException(make_error(Errc::internal, "sha256: OpenSSL failed"));
    }
    struct Free {
        void operator()(EVP_MD_CTX* c) const noexcept { EVP_MD_CTX_free(c); }
    };
    std::unique_ptr<EVP_MD_CTX, Free> ctx_;
};

// Why a path would leave the rootfs it is unpacked into, or nullopt.
std::optional<std::string_view> escape_of(std::string_view p) {
    if (p.starts_with('/')) return "an absolute path";
    while (!p.empty()) {
        auto slash = p.find('/');
        if (p.substr(0, slash) == "..") return "a \"..\" component";
        if (slash == std::string_view::npos) break;
        p.remove_prefix(slash + 1);
    }
    return std::nullopt;
}

Result<void> check_name(std::string_view name) {
    if (name.find('\0') != std::string_view::npos)
        return refuse(fmt::format("entry {} has a NUL byte in its name", quoted(name)));
    if (auto why = escape_of(name))
        return refuse(fmt::format("entry {} leaves the image ({})", quoted(name), *why));
    return {};
}

Result<void> check_hard_link(std::string_view name, std::string_view target) {
    if (target.find('\0') != std::string_view::npos)
        return refuse(fmt::format("hard link {} has a NUL byte in its target", quoted(name)));
    if (auto why = escape_of(target))
        return refuse(fmt::format("hard link {} to {} leaves the image ({})", quoted(name),
                                  quoted(target), *why));
    return {};
}

// A NUL-terminated string field of a header.
std::string_view text_field(Bytes h, std::size_t at, std::size_t len) {
    std::string_view f(reinterpret_cast<const char*>(h.data() + at), len);
    return f.substr(0, f.find('\0'));
}

// A numeric field of a header: octal digits padded with spaces or NULs, or GNU's base-256 (the
// high bit of the first byte set; negative values are refused).
std::optional<std::uint64_t> number_field(Bytes h, std::size_t at, std::size_t len) {
    auto f = h.subspan(at, len);
    std::uint64_t v = 0;
    if (f[0] & 0x80) {
        if (f[0] & 0x40) return std::nullopt;
        v = f[0] & 0x3f;
        for (std::size_t i = 1; i < f.size(); ++i) {
            if (v >> 54) return std::nullopt;
            v = (v << 8) | f[i];
        }
        return v;
    }
    auto pad = [](std::uint8_t c) { return c == ' ' || c == '\0'; };
    while (!f.empty() && pad(f.front())) f = f.subspan(1);
    while (!f.empty() && pad(f.back())) f = f.first(f.size() - 1);
    for (auto c : f) {
        if (c < '0' || c > '7' || (v >> 60)) return std::nullopt;
        v = (v << 3) | static_cast<std::uint64_t>(c - '0');
    }
    return v;
}

// The checksum field against the header's bytes summed with that field as spaces: unsigned as
// POSIX says, or signed as some old writers did.
bool checksum_ok(Bytes h) {
    auto want = number_field(h, 148, 8);
    if (!want) return false;
    std::uint64_t sum = 0;
    std::int64_t signed_sum = 0;
    for (std::size_t i = 0; i < h.size(); ++i) {
        std::uint8_t b = i >= 148 && i < 156 ? ' ' : h[i];
        sum += b;
        signed_sum += static_cast<std::int8_t>(b);
    }
    return *want == sum || static_cast<std::int64_t>(*want) == signed_sum;
}

std::string_view view(const std::optional<std::string>& s) {
    return s ? std::string_view(*s) : std::string_view();
}

std::uint64_t padded(std::uint64_t n) {
    return (n + block_size - 1) / block_size * block_size;
}

std::string type_name(char type) {
    if (type > ' ' && type < 0x7f) return fmt::format("'{}'", type);
    return fmt::format("0x{:02x}", static_cast<unsigned char>(type));
}

// The tar stream, fed in pieces of any size: headers are checked as they complete, entry data is
// skipped.
class TarCheck {
  public:
    explicit TarCheck(const LayerLimits& limits) : limits_(limits) {}

    Result<void> feed(Bytes data);
    // At the end of the stream.
    Result<void> finish() const;
    std::uint64_t entries() const noexcept { return entries_; }

  private:
    enum class State { header, data, meta, end };

    Result<void> on_header();
    Result<void> on_entry(char type, std::uint64_t header_size);
    Result<void> on_meta();
    Result<void> on_pax(bool global);

    const LayerLimits limits_;
    State state_ = State::header;
    std::array<std::uint8_t, block_size> header_{};
    std::size_t filled_ = 0;
    bool zero_block_ = false;  // the previous header block was all zeros
    std::uint64_t skip_ = 0;   // data and padding left of the current entry
    char meta_type_ = 0;       // 'x', 'g', 'L' or 'K'
    std::string meta_;
    std::uint64_t meta_left_ = 0;
    std::uint64_t meta_pad_ = 0;
    // From extended headers: for the next entry only, and for all that follow ('g').
    std::optional<std::string> path_, link_, long_name_, long_link_;
    std::optional<std::uint64_t> size_;
    std::string global_path_, global_link_;
    std::string current_;  // the entry whose data is being skipped
    std::uint64_t entries_ = 0;
};

Result<void> TarCheck::feed(Bytes data) {
    while (!data.empty()) {
        switch (state_) {
            case State::header: {
                auto n = std::min(block_size - filled_, data.size());
                std::memcpy(header_.data() + filled_, data.data(), n);
                filled_ += n;
                data = data.subspan(n);
                if (filled_ < block_size) return {};
                filled_ = 0;
                if (auto r = on_header(); !r) return r;
                break;
            }
            case State::data: {
                auto n = std::min<std::uint64_t>(skip_, data.size());
                skip_ -= n;
                data = data.subspan(n);
                if (skip_ == 0) state_ = State::header;
                break;
            }
            case State::meta: {
                auto n = std::min<std::uint64_t>(meta_left_, data.size());
                meta_.append(reinterpret_cast<const char*>(data.data()), n);
                meta_left_ -= n;
                data = data.subspan(n);
                if (meta_left_ == 0)
                    if (auto r = on_meta(); !r) return r;
                break;
            }
            case State::end:
                // Writers pad the archive to a record with zeros; nothing else may follow.
                if (std::any_of(data.begin(), data.end(), [](std::uint8_t b) { return b != 0; }))
                    return refuse("corrupt archive: data after its end-of-archive marker");
                return {};
        }
    }
    return {};
}

Result<void> TarCheck::finish() const {
    switch (state_) {
        case State::end:
            return {};
        case State::data:
            return refuse(fmt::format("truncated archive: entry {} ends early", quoted(current_)));
        case State::meta:
            return refuse("truncated archive: an extended header ends early");
        case State::header:
            break;
    }
    return refuse("truncated archive: no end-of-archive marker");
}

Result<void> TarCheck::on_header() {
    Bytes h(header_);
    if (std::all_of(h.begin(), h.end(), [](std::uint8_t b) { return b == 0; })) {
        if (zero_block_) state_ = State::end;
        zero_block_ = true;
        return {};
    }
    auto raw_name = text_field(h, 0, 100);
    // Readers differ on a lone zero block (end, or skipped); refusing it leaves no doubt.
    if (zero_block_)
        return refuse(
            fmt::format("corrupt archive: a zero block before entry {}", quoted(raw_name)));
    if (!checksum_ok(h))
        return refuse(
            fmt::format("corrupt archive: entry {} has a bad header checksum", quoted(raw_name)));
    auto size = number_field(h, 124, 12);
    if (!size || *size > max_size)
        return refuse(
            fmt::format("corrupt archive: entry {} has a bad size field", quoted(raw_name)));
    char type = static_cast<char>(h[156]);
    switch (type) {
        case 'x':
        case 'g':
        case 'L':
        case 'K':
            if (*size > max_meta)
                return refuse(
                    fmt::format("an extended header of {} bytes (at most {})", *size, max_meta));
            meta_type_ = type;
            meta_.clear();
            meta_left_ = *size;
            meta_pad_ = padded(*size) - *size;
            state_ = State::meta;
            if (*size == 0) return on_meta();
            return {};
        default:
            return on_entry(type, *size);
    }
}

Result<void> TarCheck::on_meta() {
    switch (meta_type_) {
        case 'x':
        case 'g':
            if (auto r = on_pax(meta_type_ == 'g'); !r) return r;
            break;
        case 'L':
        case 'K': {
            auto& slot = meta_type_ == 'L' ? long_name_ : long_link_;
            if (slot)
                return refuse(fmt::format("corrupt archive: two GNU long {} headers for one entry",
                                          meta_type_ == 'L' ? "name" : "link"));
            // GNU tar and Go read the content up to its first NUL.
            slot = meta_.substr(0, meta_.find('\0'));
            break;
        }
    }
    meta_.clear();
    skip_ = meta_pad_;
    state_ = skip_ > 0 ? State::data : State::header;
    return {};
}

// PAX records, "<length> <key>=<value>\n". Readers disagree on repeated keys and on a second
// extended header for one entry, so both are refused.
Result<void> TarCheck::on_pax(bool global) {
    auto bad = [](std::string_view why) {
        return refuse(fmt::format("corrupt archive: a PAX header {}", why));
    };
    if (!global && (path_ || link_ || size_)) return bad("follows another for the same entry");
    bool seen_path = false, seen_link = false, seen_size = false;
    std::string_view rest = meta_;
    while (!rest.empty()) {
        auto sp = rest.find(' ');
        if (sp == std::string_view::npos || sp == 0 || sp > 18) return bad("has a bad record");
        std::uint64_t n = 0;
        for (char c : rest.substr(0, sp)) {
            if (c < '0' || c > '9') return bad("has a bad record length");
            n = n * 10 + static_cast<std::uint64_t>(c - '0');
        }
        if (n <= sp + 1 || n > rest.size() || rest[n - 1] != '\n')
            return bad("has a bad record length");
        auto record = rest.substr(sp + 1, n - sp - 2);
        rest.remove_prefix(n);
        auto eq = record.find('=');
        if (eq == std::string_view::npos || eq == 0) return bad("has a record without a key");
        auto key = record.substr(0, eq);
        auto value = record.substr(eq + 1);
        if (key.starts_with("GNU.sparse."))
            return refuse("an entry is a sparse file (GNU.sparse PAX records), not supported");
        if (key == "path" || key == "linkpath") {
            auto& seen = key == "path" ? seen_path : seen_link;
            if (seen) return bad(fmt::format("sets {} twice", key));
            seen = true;
            if (value.find('\0') != std::string_view::npos)
                return bad(fmt::format("has a NUL byte in {} {}", key, quoted(value)));
            if (global)
                (key == "path" ? global_path_ : global_link_) = value;
            else
                (key == "path" ? path_ : link_) = std::string(value);
        } else if (key == "size") {
            if (global) return bad("sets the size of every entry (global size)");
            if (seen_size) return bad("sets size twice");
            seen_size = true;
            std::uint64_t v = 0;
            if (value.empty() || value.size() > 18) return bad("has a bad size");
            for (char c : value) {
                if (c < '0' || c > '9') return bad("has a bad size");
                v = v * 10 + static_cast<std::uint64_t>(c - '0');
            }
            if (v > max_size) return bad("has a bad size");
            size_ = v;
        }
    }
    return {};
}

Result<void> TarCheck::on_entry(char type, std::uint64_t header_size) {
    if (++entries_ > limits_.max_entries)
        return refuse(fmt::format("more than {} entries", limits_.max_entries));
    Bytes h(header_);
    // Every name a reader could take for this entry: the ustar name alone, joined to the ustar
    // prefix (155 bytes, or 131 in star's variant), and the extended headers' names.
    auto raw_name = text_field(h, 0, 100);
    auto prefix = text_field(h, 345, 155);
    auto star_prefix = text_field(h, 345, 131);
    auto join = [&](std::string_view p) {
        return p.empty() ? std::string(raw_name) : fmt::format("{}/{}", p, raw_name);
    };
    const bool ustar = std::memcmp(h.data() + 257, "ustar\0", 6) == 0;
    const bool star = ustar && std::memcmp(h.data() + 508, "tar\0", 4) == 0;
    std::string joined = join(prefix);
    std::string star_joined = join(star_prefix);
    std::string_view header_name = ustar ? (star ? star_joined : joined) : raw_name;
    // Which name wins where several are given: PAX, then GNU long name, then global PAX.
    std::string_view name = header_name;
    if (!global_path_.empty()) name = global_path_;
    if (long_name_) name = *long_name_;
    if (path_) name = *path_;
    std::array<std::string_view, 6> names{raw_name,    joined,           star_joined,
                                          view(path_), view(long_name_), global_path_};
    for (auto n : names)
        if (auto r = check_name(n); !r) return r;
    if (name.empty()) return refuse("an entry with an empty name");
    current_ = name;

    std::string_view kind;
    switch (type) {
        case '0':
        case '\0':
        case '7':  // contiguous file: a regular file to every reader that matters
            break;
        case '1': {
            kind = "a hard link";
            auto header_link = text_field(h, 157, 100);
            std::string_view target = header_link;
            if (!global_link_.empty()) target = global_link_;
            if (long_link_) target = *long_link_;
            if (link_) target = *link_;
            if (target.empty())
                return refuse(fmt::format("hard link {} has no target", quoted(name)));
            std::array<std::string_view, 4> targets{header_link, view(link_), view(long_link_),
                                                    global_link_};
            for (auto t : targets)
                if (auto r = check_hard_link(name, t); !r) return r;
            break;
        }
        case '2':
            kind = "a symbolic link";
            break;
        case '3':
            return refuse(fmt::format("device node {} (a character device)", quoted(name)));
        case '4':
            return refuse(fmt::format("device node {} (a block device)", quoted(name)));
        case '5':
            kind = "a directory";
            break;
        case '6':
            kind = "a FIFO";
            break;
        default:
            return refuse(
                fmt::format("entry {} has an unknown type {}", quoted(name), type_name(type)));
    }
    std::uint64_t size = size_ ? *size_ : header_size;
    // Readers disagree on whether such an entry's data follows its header: refused, so that no
    // reader finds headers where this check saw data.
    if (!kind.empty() && size > 0)
        return refuse(fmt::format("entry {} ({}) has {} bytes of data", quoted(name), kind, size));
    if (size > limits_.max_unpacked)
        return refuse(fmt::format("entry {} has {} bytes, more than the {} a layer may unpack to",
                                  quoted(name), size, limits_.max_unpacked));
    path_.reset();
    link_.reset();
    long_name_.reset();
    long_link_.reset();
    size_.reset();
    skip_ = padded(size);
    state_ = skip_ > 0 ? State::data : State::header;
    return {};
}

// A gzip stream of one or more members, inflated into a sink in pieces of at most buffer_size.
class Gunzip {
  public:
    Gunzip() : out_(buffer_size) {
        if (inflateInit2(&z_, 16 + MAX_WBITS) != Z_OK) throw std::bad_alloc();
    }
    ~Gunzip() { inflateEnd(&z_); }
    Gunzip(const Gunzip&) = delete;
    Gunzip& operator=(const Gunzip&) = delete;

    template <typename Sink>
    Result<void> feed(Bytes in, Sink& sink) {
        static constexpr std::array<std::uint8_t, 2> magic{0x1f, 0x8b};
        while (!in.empty()) {
            if (between_) {
                // After a member, only another member may follow.
                if (in[0] != magic[magic_seen_])
                    return refuse("data after the end of the gzip stream");
                in = in.subspan(1);
                if (++magic_seen_ < magic.size()) continue;
                between_ = false;
                magic_seen_ = 0;
                if (inflateReset(&z_) != Z_OK) throw std::bad_alloc();
                auto r = inflate_some(magic, sink);
                if (!r) return std::move(r).error();
                continue;
            }
            auto used = inflate_some(in, sink);
            if (!used) return std::move(used).error();
            if (*used == 0 && !between_) return refuse("corrupt gzip stream");
            in = in.subspan(*used);
        }
        return {};
    }

    // At the end of the input.
    Result<void> finish() const {
        if (between_ && magic_seen_ == 0) return {};
        if (between_) return refuse("data after the end of the gzip stream");
        return refuse("truncated gzip stream");
    }

  private:
    template <typename Sink>
    Result<std::size_t> inflate_some(Bytes in, Sink& sink) {
        // zlib does not write through next_in.
        z_.next_in = const_cast<Bytef*>(in.data());
        z_.avail_in = static_cast<uInt>(in.size());
        for (;;) {
            z_.next_out = out_.data();
            z_.avail_out = static_cast<uInt>(out_.size());
            int rc = ::inflate(&z_, Z_NO_FLUSH);
            std::size_t produced = out_.size() - z_.avail_out;
            if (produced > 0)
                if (auto r = sink(Bytes(out_.data(), produced)); !r) return std::move(r).error();
            if (rc == Z_STREAM_END) {
                between_ = true;
                break;
            }
            if (rc == Z_MEM_ERROR) throw std::bad_alloc();
            if (rc != Z_OK && rc != Z_BUF_ERROR)
                return refuse(
                    fmt::format("corrupt gzip stream ({})", z_.msg ? z_.msg : "inflate failed"));
            if (rc == Z_BUF_ERROR || (z_.avail_in == 0 && z_.avail_out > 0)) break;
        }
        return in.size() - z_.avail_in;
    }

    z_stream z_{};
    std::vector<std::uint8_t> out_;
    bool between_ = false;  // a member has ended, the next has not begun
    std::size_t magic_seen_ = 0;
};

}  // namespace

Result<LayerFacts> check_layer(int fd, std::string_view media_type, std::string_view digest,
                               std::uint64_t size, const LayerLimits& limits) {
    auto want = sha256_hex(digest);
    if (!want)
        return refuse(fmt::format("layer digest {} is not sha256:<64 hex digits>", quoted(digest)));
    const auto label = fmt::format("layer {}", short_digest(*want));
    auto compression = compression_of(media_type);
    if (!compression) return std::move(compression).error().context(label);

    // A file's size is known before anything is read.
    struct stat st {};
    if (::fstat(fd, &st) != 0) throw_errno(fmt::format("stat {}", label));
    if (S_ISREG(st.st_mode)) {
        off_t at = ::lseek(fd, 0, SEEK_CUR);
        if (at < 0) throw_errno(fmt::format("seek {}", label));
        auto left = static_cast<std::uint64_t>(std::max<off_t>(st.st_size - at, 0));
        if (left != size)
            return refuse(fmt::format("{}: {} bytes, the manifest says {}", label, left, size));
    }

    const bool gzip = *compression == Compression::gzip;
    LayerFacts facts;
    Sha256 blob_sha, tar_sha;
    TarCheck tar(limits);
    std::optional<Gunzip> gunzip;
    if (gzip) gunzip.emplace();
    auto sink = [&](Bytes out) -> Result<void> {
        if (out.size() > limits.max_unpacked - facts.unpacked)
            return refuse(fmt::format("unpacks to more than {} bytes", limits.max_unpacked));
        facts.unpacked += out.size();
        if (gzip) tar_sha.update(out);
        return tar.feed(out);
    };

    // A refusal of the content waits for the digest: when the blob is not the one the manifest
    // names, that is the reason to give. The digest is known only at the end, so the rest of the
    // blob (at most `size` bytes) is still read.
    std::optional<Error> refused;
    std::vector<std::uint8_t> buf(buffer_size);
    std::uint64_t total = 0;
    for (;;) {
        ssize_t n = ::read(fd, buf.data(), buf.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno(fmt::format("read {}", label));
        }
        if (n == 0) break;
        total += static_cast<std::uint64_t>(n);
        if (total > size)
            return refuse(
                fmt::format("{}: more than {} bytes, the manifest says {}", label, size, size));
        Bytes chunk(buf.data(), static_cast<std::size_t>(n));
        blob_sha.update(chunk);
        if (refused) continue;
        auto r = gzip ? gunzip->feed(chunk, sink) : sink(chunk);
        if (!r) refused = std::move(r).error();
    }
    if (total != size)
        return refuse(fmt::format("{}: {} bytes, the manifest says {}", label, total, size));
    auto blob_hex = blob_sha.hex();
    if (blob_hex != *want)
        return refuse(fmt::format("{}: digest mismatch (the registry sent {})", label,
                                  short_digest(blob_hex)));
    if (!refused && gzip)
        if (auto r = gunzip->finish(); !r) refused = std::move(r).error();
    if (!refused)
        if (auto r = tar.finish(); !r) refused = std::move(r).error();
    if (refused) return std::move(refused->context(label));

    facts.diff_id = fmt::format("sha256:{}", gzip ? tar_sha.hex() : blob_hex);
    facts.entries = tar.entries();
    return facts;
}

}  // namespace coffer::agent
