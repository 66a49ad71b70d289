#include "coffer/base/mount.h"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "coffer/base/error.h"
#include "coffer/base/log.h"
#include "coffer/base/unique_fd.h"

namespace coffer {

Mount Mount::make(const std::string& source, const std::string& target, const char* fstype,
                  unsigned long flags, const std::string& data) {
    if (::mount(source.c_str(), target.c_str(), fstype, flags,
                data.empty() ? nullptr : data.c_str()) != 0)
        throw_errno(fmt::format("mount {} at {}", fstype ? fstype : "bind", target));
    return Mount(target);
}

Mount& Mount::operator=(Mount&& other) noexcept {
    if (this != &other) {
        reset();
        target_ = std::exchange(other.target_, {});
    }
    return *this;
}

void Mount::remount(unsigned long flags, const std::string& data) const {
    if (::mount(nullptr, target_.c_str(), nullptr, MS_REMOUNT | flags,
                data.empty() ? nullptr : data.c_str()) != 0)
        throw_errno(fmt::format("remount {}", target_));
}

void Mount::unmount() {
    if (target_.empty()) return;
    if (::umount2(target_.c_str(), UMOUNT_NOFOLLOW) != 0) {
        int err = errno;
        if (err == EINVAL || err == ENOENT) {
            target_.clear();  // not mounted any more
            return;
        }
        if (::umount2(target_.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0)
            throw SystemError(err, fmt::format("unmount {}", target_));
    }
    target_.clear();
}

void Mount::reset() noexcept {
    if (target_.empty()) return;
    if (::umount2(target_.c_str(), UMOUNT_NOFOLLOW) != 0 && errno == EBUSY)
        ::umount2(target_.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW);
    target_.clear();
}

namespace {

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\\' && i + 3 < s.size()) {
            int v = 0;
            bool ok = true;
            for (std::size_t k = 1; k <= 3; ++k) {
                char c = s[i + k];
                if (c < '0' || c > '7') ok = false;
                v = v * 8 + (c - '0');
            }
            if (ok) {
                out.push_back(static_cast<char>(v));
                i += 3;
                continue;
            }
        }
        out.push_back(s[i]);
    }
    return out;
}

}  // namespace

std::vector<MountInfo> read_mountinfo(std::string_view pid) {
    std::string path = fmt::format("/proc/{}/mountinfo", pid);
    std::ifstream in(path);
    if (!in) throw_errno(fmt::format("open {}", path));
    std::vector<MountInfo> out;
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream ls(line);
        MountInfo m;
        std::string devno, root, point, opts, word;
        ls >> m.id >> m.parent >> devno >> root >> point >> opts;
        while (ls >> word && word != "-") {
        }
        std::string fstype, source, super;
        ls >> fstype >> source >> super;
        m.root = unescape(root);
        m.mount_point = unescape(point);
        m.options = opts;
        m.fstype = fstype;
        m.source = unescape(source);
        m.super_options = super;
        out.push_back(std::move(m));
    }
    return out;
}

std::vector<std::string> mounts_under(std::string_view prefix) {
    std::string p(prefix);
    while (p.size() > 1 && p.back() == '/') p.pop_back();
    std::vector<std::string> out;
    for (auto& m : read_mountinfo()) {
        const auto& mp = m.mount_point;
        if (mp == p || (mp.size() > p.size() && mp.compare(0, p.size(), p) == 0 &&
                        (p == "/" || mp[p.size()] == '/')))
            out.push_back(mp);
    }
    // Deepest first, and a mount point stacked twice appears twice.
    std::stable_sort(out.begin(), out.end(), [](const std::string& a, const std::string& b) {
        return a.size() > b.size();
    });
    return out;
}

void enter_private_mount_namespace() {
    if (::unshare(CLONE_NEWNS) != 0) throw_errno("unshare(CLONE_NEWNS)");
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) != 0)
        throw_errno("make / a recursive slave mount");
}

namespace {

void remove_below(int dirfd, dev_t dev, const std::string& path) {
    UniqueFd dup(::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dup) throw_errno(fmt::format("open {}", path));
    DIR* d = ::fdopendir(dup.get());
    if (!d) throw_errno(fmt::format("opendir {}", path));
    (void)dup.release();
    struct Closer {
        DIR* d;
        ~Closer() { ::closedir(d); }
    } closer{d};
    std::vector<std::string> names;
    while (auto* e = ::readdir(d)) {
        std::string_view n = e->d_name;
        if (n != "." && n != "..") names.emplace_back(n);
    }
    for (const auto& n : names) {
        struct stat st {};
        if (::fstatat(dirfd, n.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno == ENOENT) continue;
            throw_errno(fmt::format("stat {}/{}", path, n));
        }
        if (S_ISDIR(st.st_mode)) {
            if (st.st_dev != dev)
                throw SystemError(EBUSY, fmt::format("remove {}/{}: a mount point", path, n));
            UniqueFd sub(
                ::openat(dirfd, n.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            if (!sub) throw_errno(fmt::format("open {}/{}", path, n));
            remove_below(sub.get(), dev, path + "/" + n);
            if (::unlinkat(dirfd, n.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT)
                throw_errno(fmt::format("rmdir {}/{}", path, n));
        } else if (::unlinkat(dirfd, n.c_str(), 0) != 0 && errno != ENOENT) {
            throw_errno(fmt::format("unlink {}/{}", path, n));
        }
    }
}

}  // namespace

void remove_tree(const std::string& path) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) return;
        throw_errno(fmt::format("stat {}", path));
    }
    if (!S_ISDIR(st.st_mode)) {
        if (::unlink(path.c_str()) != 0 && errno != ENOENT)
            throw_errno(fmt::format("unlink {}", path));
        return;
    }
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) throw_errno(fmt::format("open {}", path));
    // The parent's device: path itself may be a mount point (it is then still left alone).
    auto slash = path.find_last_of('/');
    std::string parent = slash == std::string::npos ? "."
                         : slash == 0               ? "/"
                                                    : path.substr(0, slash);
    struct stat pst {};
    if (::stat(parent.c_str(), &pst) == 0 && pst.st_dev != st.st_dev)
        throw SystemError(EBUSY, fmt::format("remove {}: a mount point", path));
    remove_below(fd.get(), st.st_dev, path);
    if (::rmdir(path.c_str()) != 0 && errno != ENOENT) throw_errno(fmt::format("rmdir {}", path));
}

std::vector<std::string> list_dir(const std::string& dir, bool dirs_only) {
    std::vector<std::string> out;
    DIR* d = ::opendir(dir.c_str());
    if (!d) return out;
    while (auto* e = ::readdir(d)) {
        std::string_view n = e->d_name;
        if (n == "." || n == "..") continue;
        if (dirs_only && e->d_type != DT_DIR) continue;
        out.emplace_back(n);
    }
    ::closedir(d);
    return out;
}

void make_dir(const std::string& path, unsigned mode) {
    if (::mkdir(path.c_str(), static_cast<mode_t>(mode)) != 0 && errno != EEXIST)
        throw_errno(fmt::format("mkdir {}", path));
}

OwnedDir::OwnedDir(std::string path, unsigned mode) {
    if (::mkdir(path.c_str(), static_cast<mode_t>(mode)) != 0)
        throw_errno(fmt::format("mkdir {}", path));
    path_ = std::move(path);
}

OwnedDir& OwnedDir::operator=(OwnedDir&& other) noexcept {
    if (this != &other) {
        reset();
        path_ = std::exchange(other.path_, {});
    }
    return *this;
}

void OwnedDir::reset() noexcept {
    if (path_.empty()) return;
    try {
        remove_tree(path_);
    } catch (const std::exception& e) {
        log::warn("base", "remove {}: {}", path_, e.what());
    }
    path_.clear();
}

}  // namespace coffer
