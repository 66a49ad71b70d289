#include "coffer/agent/manager_list.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string_view>

#include "coffer/agent/enrollment.h"
#include "coffer/base/unique_fd.h"
#include "coffer/crypto/random.h"
#include "coffer/nodeproto/session.h"

namespace coffer::agent {

namespace {

constexpr const char* file_name = "managers";
constexpr std::size_t max_file_bytes = 64 * 1024;

// The syscall that just failed as an error value: "verb path: strerror(errno)".
Error system_error(std::string_view verb, std::string_view path) {
    int err = errno;
    return make_error(Errc::internal, fmt::format("{} {}: {}", verb, path, std::strerror(err)));
}

// The temporary file beside the list: removed unless it was renamed into place.
struct TempFile {
    int dir;
    std::string name;
    bool armed = true;
    ~TempFile() {
        if (armed) ::unlinkat(dir, name.c_str(), 0);
    }
};

Result<void> write_all(int fd, std::string_view bytes, const std::string& where) {
    while (!bytes.empty()) {
        auto n = ::write(fd, bytes.data(), bytes.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return system_error("write", where);
        bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return {};
}

Result<std::string> read_all(int fd, const std::string& where) {
    std::string text(max_file_bytes + 1, '\0');
    std::size_t done = 0;
    while (done < text.size()) {
        auto n = ::read(fd, text.data() + done, text.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return system_error("read", where);
        if (n == 0) break;
        done += static_cast<std::size_t>(n);
    }
    if (done > max_file_bytes)
        return make_error(Errc::too_large,
                          fmt::format("{} is larger than {} bytes", where, max_file_bytes));
    text.resize(done);
    return text;
}

}  // namespace

std::string managers_path(const std::string& data_dir) {
    return fmt::format("{}/{}", data_dir, file_name);
}

Result<StoredManagers> load_managers(const std::string& data_dir) {
    auto path = managers_path(data_dir);
    // O_NONBLOCK: a FIFO put in its place must not hang the agent's start.
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    if (!fd && errno == ENOENT) return StoredManagers{};
    if (!fd && errno == ELOOP)
        return make_error(Errc::invalid_argument, fmt::format("{} is a symlink", path));
    if (!fd) return system_error("open", path);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return system_error("stat", path);
    if (!S_ISREG(st.st_mode))
        return make_error(Errc::invalid_argument, fmt::format("{} is not a regular file", path));
    auto text = read_all(fd.get(), path);
    if (!text) return std::move(text).error();

    StoredManagers out;
    std::string_view rest = *text;
    for (std::size_t line = 1; !rest.empty(); ++line) {
        auto end = rest.find('\n');
        auto address = rest.substr(0, end);
        rest.remove_prefix(end == std::string_view::npos ? rest.size() : end + 1);
        if (address.empty()) continue;
        // The line is not quoted: whatever else is in the file stays out of the logs.
        auto endpoint = parse_endpoint(address);
        if (!endpoint || !nodeproto::valid_manager_address(address)) {
            out.ignored.push_back(fmt::format("{} line {}: not HOST:PORT", path, line));
        } else if (std::find(out.managers.begin(), out.managers.end(), *endpoint) !=
                   out.managers.end()) {
            continue;
        } else if (out.managers.size() == nodeproto::max_managers) {
            out.ignored.push_back(fmt::format("{} line {}: more than {} managers", path, line,
                                              nodeproto::max_managers));
        } else {
            out.managers.push_back(std::move(*endpoint));
        }
    }
    return out;
}

Result<void> store_managers(const std::string& data_dir, const std::vector<std::string>& managers) {
    std::string text;
    for (const auto& address : managers) {
        if (!nodeproto::valid_manager_address(address))
            return make_error(Errc::invalid_argument, "a manager's address is not HOST:PORT");
        text += address;
        text += '\n';
    }
    UniqueFd dir(::open(data_dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!dir) return system_error("open", data_dir);
    TempFile temp{dir.get(), fmt::format(".{}-{}", file_name, crypto::random_id())};
    auto where = fmt::format("{}/{}", data_dir, temp.name);
    // O_EXCL with O_NOFOLLOW: a new file of ours, never one that something else put there.
    UniqueFd fd(::openat(dir.get(), temp.name.c_str(),
                         O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd) {
        temp.armed = false;
        return system_error("create", where);
    }
    if (::fchmod(fd.get(), 0600) != 0) return system_error("chmod", where);
    if (auto written = write_all(fd.get(), text, where); !written) return written;
    if (::fsync(fd.get()) != 0) return system_error("fsync", where);
    // rename replaces whatever has the name, a symlink included, and follows nothing.
    if (::renameat(dir.get(), temp.name.c_str(), dir.get(), file_name) != 0)
        return system_error("rename into place", where);
    temp.armed = false;
    if (::fsync(dir.get()) != 0) return system_error("fsync", data_dir);
    return {};
}

}  // namespace coffer::agent
