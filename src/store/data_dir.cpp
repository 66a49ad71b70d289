#include "data_dir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <string>
#include <system_error>
#include <vector>

#include "coffer/base/error.h"
#include "coffer/base/log.h"
#include "coffer/crypto/aead.h"

namespace coffer::store::detail {
namespace {

constexpr char format_file[] = "format";
constexpr char kek_file[] = "kek";
constexpr char db_dir[] = "db";
constexpr std::string_view format_file_marker[] = {
    R"({"format":1,"kek":"file"})",
    R"({"format":1,"kek":"autolock"})",
    R"({"format":1,"kek":"file","records":"etcd"})",
    R"({"format":1,"kek":"autolock","records":"etcd"})",
};

[[noreturn]] void fail(Errc code, std::string message) {
    throw ErrorException(make_error(code, std::move(message)));
}

std::string tmp_name(std::string_view name) {
    return std::string(name) + ".tmp";
}

void write_all(int fd, std::span<const std::uint8_t> bytes, std::string_view what) {
    while (!bytes.empty()) {
        ssize_t n = ::write(fd, bytes.data(), bytes.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_errno(what);
        bytes = bytes.subspan(static_cast<std::size_t>(n));
    }
}

// Reads until out is full or the file ends; returns the bytes read.
std::size_t read_all(int fd, std::span<std::uint8_t> out, std::string_view what) {
    std::size_t total = 0;
    while (total < out.size()) {
        ssize_t n = ::read(fd, out.data() + total, out.size() - total);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_errno(what);
        if (n == 0) break;
        total += static_cast<std::size_t>(n);
    }
    return total;
}

void fsync_fd(int fd, std::string_view what) {
    if (::fsync(fd) != 0) throw_errno(what);
}

}  // namespace

std::string_view kek_mode_name(KekMode mode) noexcept {
    return mode == KekMode::file ? "file" : "autolock";
}

DataDir DataDir::open(const std::filesystem::path& dir) {
    if (dir.has_parent_path() && !std::filesystem::exists(dir.parent_path())) {
        std::error_code ec;
        std::filesystem::create_directories(dir.parent_path(), ec);
        if (ec)
            fail(Errc::internal,
                 fmt::format("create data directory {}: {}", dir.string(), ec.message()));
    }
    bool created = ::mkdir(dir.c_str(), 0700) == 0;
    if (!created && errno != EEXIST)
        throw_errno(fmt::format("create data directory {}", dir.string()));
    UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) throw_errno(fmt::format("open data directory {}", dir.string()));
    // mkdir's mode passed through the umask; say exactly what we mean.
    if (created && ::fchmod(fd.get(), 0700) != 0)
        throw_errno(fmt::format("chmod {}", dir.string()));
    return DataDir(dir, std::move(fd), created);
}

std::filesystem::path DataDir::db_path() const {
    return path_ / db_dir;
}

std::optional<DirFormat> DataDir::format() const {
    UniqueFd fd(::openat(fd_.get(), format_file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    auto where = (path_ / format_file).string();
    if (!fd) {
        if (errno == ENOENT) return std::nullopt;
        throw_errno(fmt::format("open {}", where));
    }
    std::array<std::uint8_t, 256> buf{};
    auto n = read_all(fd.get(), buf, fmt::format("read {}", where));
    std::string_view text(reinterpret_cast<const char*>(buf.data()), n);
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
    for (std::size_t i = 0; i < std::size(format_file_marker); ++i)
        if (text == format_file_marker[i])
            return DirFormat{i % 2 == 0 ? KekMode::file : KekMode::autolock, i >= 2};
    fail(Errc::internal,
         fmt::format("{} is not a format this cofferd knows (written by a newer coffer?)", where));
}

void DataDir::check_private() const {
    struct stat st {};
    if (::fstat(fd_.get(), &st) != 0) throw_errno(fmt::format("stat {}", path_.string()));
    if ((st.st_mode & 077) != 0)
        fail(Errc::permission_denied,
             fmt::format("data directory {} has mode {:04o}: group and others must have no access "
                         "(chmod 700 {})",
                         path_.string(), st.st_mode & 07777, path_.string()));
}

void DataDir::prepare_new() {
    if (::fchmod(fd_.get(), 0700) != 0) throw_errno(fmt::format("chmod {}", path_.string()));
    const std::string leftovers[] = {std::string(kek_file), tmp_name(kek_file),
                                     tmp_name(format_file), std::string(db_dir)};
    std::vector<std::string> found;
    for (const auto& entry : std::filesystem::directory_iterator(path_)) {
        auto name = entry.path().filename().string();
        if (std::find(std::begin(leftovers), std::end(leftovers), name) == std::end(leftovers))
            fail(Errc::invalid_argument,
                 fmt::format("{} holds {} but no coffer store (no {} file): refusing to create a "
                             "store there",
                             path_.string(), name, format_file));
        found.push_back(std::move(name));
    }
    for (const auto& name : found) {
        log::warn("store", "removing {} left by an interrupted initialisation of {}", name,
                  path_.string());
        std::filesystem::remove_all(path_ / name);
    }
    if (!found.empty()) fsync_fd(fd_.get(), fmt::format("fsync {}", path_.string()));
}

void DataDir::discard_new() noexcept {
    try {
        if (format()) return;
        const std::string leftovers[] = {std::string(kek_file), tmp_name(kek_file),
                                         tmp_name(format_file), std::string(db_dir)};
        std::error_code ec;
        for (const auto& name : leftovers) std::filesystem::remove_all(path_ / name, ec);
        if (created_) std::filesystem::remove(path_, ec);  // only when empty
    } catch (...) {
        // What is left is removed by the next prepare_new.
    }
}

void DataDir::write_format(DirFormat format) {
    std::string text(
        format_file_marker[(format.kek == KekMode::file ? 0 : 1) + (format.etcd ? 2 : 0)]);
    text += '\n';
    create_file(format_file, {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()},
                0644);
}

crypto::SecureBuffer DataDir::read_kek() const {
    auto where = (path_ / kek_file).string();
    UniqueFd fd(::openat(fd_.get(), kek_file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) {
        if (errno == ENOENT)
            fail(Errc::internal,
                 fmt::format("the KEK file {} is missing: without it the store cannot be "
                             "decrypted (restore it from the backup of the data directory)",
                             where));
        throw_errno(fmt::format("open the KEK file {}", where));
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) throw_errno(fmt::format("stat {}", where));
    if (!S_ISREG(st.st_mode)) fail(Errc::internal, fmt::format("{} is not a regular file", where));
    if ((st.st_mode & 077) != 0)
        fail(Errc::permission_denied,
             fmt::format(
                 "the KEK file {} has mode {:04o}: only its owner may read it (chmod 600 {})",
                 where, st.st_mode & 07777, where));
    if (st.st_size != static_cast<off_t>(crypto::key_bytes))
        fail(Errc::internal, fmt::format("the KEK file {} is {} bytes long, not {}", where,
                                         st.st_size, crypto::key_bytes));
    crypto::SecureBuffer kek(crypto::key_bytes);
    if (read_all(fd.get(), kek.span(), fmt::format("read {}", where)) != kek.size())
        fail(Errc::internal, fmt::format("the KEK file {} is truncated", where));
    return kek;
}

void DataDir::write_kek(const crypto::SecureBuffer& kek) {
    create_file(kek_file, kek.span(), 0600);
}

void DataDir::create_file(std::string_view name, std::span<const std::uint8_t> bytes,
                          unsigned mode) {
    auto where = (path_ / name).string();
    auto tmp = tmp_name(name);
    if (::unlinkat(fd_.get(), tmp.c_str(), 0) != 0 && errno != ENOENT)
        throw_errno(fmt::format("remove {}", (path_ / tmp).string()));
    {
        UniqueFd fd(::openat(fd_.get(), tmp.c_str(),
                             O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode));
        if (!fd) throw_errno(fmt::format("create {}", (path_ / tmp).string()));
        if (::fchmod(fd.get(), mode) != 0) throw_errno(fmt::format("chmod {}", where));
        write_all(fd.get(), bytes, fmt::format("write {}", where));
        fsync_fd(fd.get(), fmt::format("fsync {}", where));
    }
    // link() never replaces: a file that appeared meanwhile is an error, not overwritten.
    if (::linkat(fd_.get(), tmp.c_str(), fd_.get(), std::string(name).c_str(), 0) != 0)
        throw_errno(fmt::format("create {}", where));
    if (::unlinkat(fd_.get(), tmp.c_str(), 0) != 0)
        throw_errno(fmt::format("remove {}", (path_ / tmp).string()));
    fsync_fd(fd_.get(), fmt::format("fsync {}", path_.string()));
}

}  // namespace coffer::store::detail
