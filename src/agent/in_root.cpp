#include "coffer/agent/in_root.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <deque>
#include <vector>

#include "coffer/base/unique_fd.h"

namespace coffer::agent {
namespace {

void push_components(std::deque<std::string>& queue, std::string_view path) {
    std::vector<std::string> parts;
    while (!path.empty()) {
        auto slash = path.find('/');
        auto part = path.substr(0, slash);
        if (!part.empty() && part != ".") parts.emplace_back(part);
        path = slash == std::string_view::npos ? std::string_view{} : path.substr(slash + 1);
    }
    queue.insert(queue.begin(), parts.begin(), parts.end());
}

Error bad(std::string_view path, std::string_view why) {
    return make_error(Errc::invalid_argument, fmt::format("{} in the image: {}", path, why));
}

std::string join(const std::vector<std::string>& parts) {
    std::string out;
    for (const auto& p : parts) out += "/" + p;
    return out.empty() ? "/" : out;
}

}  // namespace

Result<std::string> make_mountpoint_in_root(int root_fd, std::string_view path, Leaf leaf) {
    std::deque<std::string> queue;
    push_components(queue, path);
    std::vector<std::string> resolved;
    std::vector<UniqueFd> dirs;  // dirs[i] is the directory resolved[0..i) names
    dirs.emplace_back(::openat(root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dirs.back()) throw_errno("open rootfs");
    int links = 0;
    bool on_file = false;

    while (!queue.empty()) {
        std::string name = std::move(queue.front());
        queue.pop_front();
        if (name == "..") {
            if (!resolved.empty()) {
                resolved.pop_back();
                dirs.pop_back();
            }
            continue;
        }
        bool last = queue.empty();
        int cur = dirs.back().get();
        struct stat st {};
        if (::fstatat(cur, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno != ENOENT) throw_errno(fmt::format("stat {}/{}", join(resolved), name));
            if (!last || leaf == Leaf::directory) {
                if (::mkdirat(cur, name.c_str(), 0755) != 0 && errno != EEXIST)
                    throw_errno(fmt::format("mkdir {}/{} in rootfs", join(resolved), name));
            } else {
                UniqueFd f(::openat(cur, name.c_str(),
                                    O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0444));
                if (!f && errno != EEXIST)
                    throw_errno(fmt::format("create {}/{} in rootfs", join(resolved), name));
            }
            queue.push_front(std::move(name));  // look again at what is there now
            continue;
        }
        if (S_ISLNK(st.st_mode)) {
            if (++links > 40) return bad(path, "too many levels of symbolic links");
            std::string target(static_cast<std::size_t>(st.st_size) + 1, '\0');
            auto n = ::readlinkat(cur, name.c_str(), target.data(), target.size());
            if (n < 0) throw_errno(fmt::format("readlink {}/{}", join(resolved), name));
            target.resize(static_cast<std::size_t>(n));
            if (!target.empty() && target.front() == '/') {
                resolved.clear();
                dirs.resize(1);
            }
            push_components(queue, target);
            continue;
        }
        if (S_ISDIR(st.st_mode)) {
            if (last && leaf == Leaf::file)
                return bad(path, fmt::format("{}/{} is a directory", join(resolved), name));
            UniqueFd d(
                ::openat(cur, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            if (!d) throw_errno(fmt::format("open {}/{} in rootfs", join(resolved), name));
            dirs.push_back(std::move(d));
            resolved.push_back(std::move(name));
            continue;
        }
        if (!last) return bad(path, fmt::format("{}/{} is not a directory", join(resolved), name));
        if (leaf == Leaf::directory)
            return bad(path, fmt::format("{}/{} is not a directory", join(resolved), name));
        if (!S_ISREG(st.st_mode))
            return bad(path, fmt::format("{}/{} is not a regular file", join(resolved), name));
        resolved.push_back(std::move(name));
        on_file = true;
    }
    if (leaf == Leaf::file && !on_file) return bad(path, "resolves to a directory");
    return join(resolved);
}

Result<void> check_runtime_path_in_root(int root_fd, std::string_view path, Leaf leaf) {
    std::deque<std::string> queue;
    push_components(queue, path);
    UniqueFd cur(::openat(root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!cur) throw_errno("open rootfs");
    std::string seen;
    while (!queue.empty()) {
        std::string name = std::move(queue.front());
        queue.pop_front();
        seen += "/" + name;
        if (name == "..")
            return make_error(Errc::invalid_argument,
                              fmt::format("{}: `..` in a runtime path", path));
        bool last = queue.empty();
        struct stat st {};
        if (::fstatat(cur.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno == ENOENT) return {};  // the runtime creates the rest, below a real directory
            throw_errno(fmt::format("stat {} in rootfs", seen));
        }
        if (S_ISLNK(st.st_mode))
            return make_error(Errc::invalid_argument, fmt::format("{} is a symbolic link", seen));
        if (last && leaf == Leaf::file) {
            if (!S_ISREG(st.st_mode))
                return make_error(Errc::invalid_argument,
                                  fmt::format("{} is not a regular file", seen));
            return {};
        }
        if (!S_ISDIR(st.st_mode))
            return make_error(Errc::invalid_argument, fmt::format("{} is not a directory", seen));
        if (last) return {};
        // O_NOFOLLOW: should the directory have become a link since the stat, this fails.
        UniqueFd next(
            ::openat(cur.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!next) throw_errno(fmt::format("open {} in rootfs", seen));
        cur = std::move(next);
    }
    return {};
}

namespace {

// The kernel's in-root resolution; -1 with errno (ENOSYS before Linux 5.6).
int open_in_root(int root_fd, const std::string& path) {
    struct open_how how {};
    how.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    return static_cast<int>(::syscall(SYS_openat2, root_fd, path.c_str(), &how, sizeof how));
}

// The same, step by step with O_NOFOLLOW for kernels without openat2.
int open_in_root_by_steps(int root_fd, std::string_view path) {
    std::deque<std::string> queue;
    push_components(queue, path);
    std::vector<UniqueFd> dirs;
    dirs.emplace_back(::openat(root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dirs.back()) return -1;
    int links = 0;
    while (!queue.empty()) {
        std::string name = std::move(queue.front());
        queue.pop_front();
        if (name == "..") {
            if (dirs.size() > 1) dirs.pop_back();
            continue;
        }
        int cur = dirs.back().get();
        struct stat st {};
        if (::fstatat(cur, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return -1;
        if (S_ISLNK(st.st_mode)) {
            if (++links > 40) {
                errno = ELOOP;
                return -1;
            }
            std::string target(static_cast<std::size_t>(st.st_size) + 1, '\0');
            auto n = ::readlinkat(cur, name.c_str(), target.data(), target.size());
            if (n < 0) return -1;
            target.resize(static_cast<std::size_t>(n));
            if (!target.empty() && target.front() == '/') dirs.resize(1);
            push_components(queue, target);
            continue;
        }
        if (queue.empty())
            return ::openat(cur, name.c_str(),
                            O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | O_NOFOLLOW);
        UniqueFd d(::openat(cur, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!d) return -1;
        dirs.push_back(std::move(d));
    }
    return ::openat(dirs.back().get(), ".", O_RDONLY | O_CLOEXEC);
}

}  // namespace

Result<std::optional<std::string>> read_file_in_root(int root_fd, std::string_view path,
                                                     std::size_t max_bytes) {
    std::string p(path);
    UniqueFd fd(open_in_root(root_fd, p));
    if (!fd && errno == ENOSYS) fd.reset(open_in_root_by_steps(root_fd, path));
    if (!fd) {
        if (errno == ENOENT || errno == ENOTDIR) return std::optional<std::string>{};
        if (errno == ELOOP || errno == EXDEV) return bad(path, "unresolvable links");
        throw_errno(fmt::format("open {} in rootfs", path));
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) throw_errno(fmt::format("stat {} in rootfs", path));
    if (!S_ISREG(st.st_mode)) return bad(path, "not a regular file");
    if (static_cast<std::uint64_t>(st.st_size) > max_bytes)
        return bad(path, fmt::format("larger than {} bytes", max_bytes));
    std::string out;
    char buf[8192];
    for (;;) {
        auto n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_errno(fmt::format("read {} in rootfs", path));
        if (n == 0) break;
        out.append(buf, static_cast<std::size_t>(n));
        if (out.size() > max_bytes)
            return bad(path, fmt::format("larger than {} bytes", max_bytes));
    }
    return std::optional<std::string>(std::move(out));
}

Result<UniqueFd> open_dir_in_root(int root_fd, std::string_view path) {
    std::deque<std::string> queue;
    push_components(queue, path);
    UniqueFd cur(::openat(root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!cur) throw_errno("open rootfs");
    for (const auto& name : queue) {
        if (name == "..") return bad(path, "`..` in a resolved path");
        UniqueFd next(
            ::openat(cur.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!next) {
            if (errno == ELOOP || errno == ENOTDIR)
                return bad(path, fmt::format("{} is not a directory", name));
            throw_errno(fmt::format("open {} in rootfs", path));
        }
        cur = std::move(next);
    }
    return cur;
}

}  // namespace coffer::agent
