#include "coffer/agent/volumes.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <fstream>
#include <memory>
#include <sstream>

#include "coffer/base/log.h"
#include "coffer/base/mount.h"
#include "coffer/base/unique_fd.h"
#include "coffer/model/service.h"
#include "coffer/model/time.h"
#include "json_util.h"

namespace coffer::agent {

namespace json = boost::json;

namespace {

constexpr int max_copy_depth = 256;

UniqueFd open_dir_at(int dir, const char* name) {
    UniqueFd fd(::openat(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) throw_errno(fmt::format("open directory {}", name));
    return fd;
}

void copy_file_contents(int from, int to) {
    char buf[64 * 1024];
    for (;;) {
        auto n = ::read(from, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno("read");
        }
        if (n == 0) return;
        for (ssize_t done = 0; done < n;) {
            auto w = ::write(to, buf + done, static_cast<std::size_t>(n - done));
            if (w < 0) {
                if (errno == EINTR) continue;
                throw_errno("write");
            }
            done += w;
        }
    }
}

void copy_level(int src, int dst, int depth) {
    if (depth > max_copy_depth) throw SystemError(ELOOP, "copy: directories nested too deep");
    UniqueFd listing(::fcntl(src, F_DUPFD_CLOEXEC, 0));
    if (!listing) throw_errno("dup");
    DIR* d = ::fdopendir(listing.get());
    if (d == nullptr) throw_errno("fdopendir");
    (void)listing.release();
    std::unique_ptr<DIR, int (*)(DIR*)> guard(d, ::closedir);
    ::rewinddir(d);
    while (auto* e = ::readdir(d)) {
        std::string_view n = e->d_name;
        if (n == "." || n == "..") continue;
        const char* name = e->d_name;
        struct stat st {};
        if (::fstatat(src, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            throw_errno(fmt::format("stat {}", n));
        auto perms = st.st_mode & 07777;
        if (S_ISDIR(st.st_mode)) {
            if (::mkdirat(dst, name, 0700) != 0) throw_errno(fmt::format("mkdir {}", n));
            auto from = open_dir_at(src, name);
            auto to = open_dir_at(dst, name);
            copy_level(from.get(), to.get(), depth + 1);
            if (::fchown(to.get(), st.st_uid, st.st_gid) != 0 || ::fchmod(to.get(), perms) != 0)
                throw_errno(fmt::format("set owner and mode of {}", n));
        } else if (S_ISREG(st.st_mode)) {
            UniqueFd from(::openat(src, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
            if (!from) throw_errno(fmt::format("open {}", n));
            UniqueFd to(
                ::openat(dst, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
            if (!to) throw_errno(fmt::format("create {}", n));
            copy_file_contents(from.get(), to.get());
            if (::fchown(to.get(), st.st_uid, st.st_gid) != 0 || ::fchmod(to.get(), perms) != 0)
                throw_errno(fmt::format("set owner and mode of {}", n));
        } else if (S_ISLNK(st.st_mode)) {
            std::string target(static_cast<std::size_t>(st.st_size) + 1, '\0');
            auto len = ::readlinkat(src, name, target.data(), target.size());
            if (len < 0) throw_errno(fmt::format("readlink {}", n));
            target.resize(static_cast<std::size_t>(len));
            if (::symlinkat(target.c_str(), dst, name) != 0)
                throw_errno(fmt::format("symlink {}", n));
            if (::fchownat(dst, name, st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) != 0)
                throw_errno(fmt::format("set owner of {}", n));
        }
        // Devices, sockets and FIFOs are not copied.
    }
}

bool dir_empty(const std::string& path) {
    return list_dir(path).empty();
}

}  // namespace

void copy_tree(int src_dir, int dst_dir) {
    copy_level(src_dir, dst_dir, 0);
    struct stat st {};
    if (::fstat(src_dir, &st) != 0) throw_errno("stat copy source");
    if (::fchown(dst_dir, st.st_uid, st.st_gid) != 0 || ::fchmod(dst_dir, st.st_mode & 07777) != 0)
        throw_errno("set owner and mode of the volume");
}

VolumeStore::VolumeStore(std::string root) : root_(std::move(root)) {
    make_dir(root_, 0700);
}

Result<VolumeStore::Acquired> VolumeStore::acquire(const std::string& name,
                                                   const std::map<std::string, std::string>& labels,
                                                   const std::string& task_id) {
    if (!model::valid_volume_name(name))
        return make_error(Errc::invalid_argument, fmt::format("invalid volume name \"{}\"", name));
    std::lock_guard g(mu_);
    auto dir = root_ + "/" + name;
    Acquired out;
    out.data = dir + "/_data";
    struct stat st {};
    if (::lstat(dir.c_str(), &st) != 0) {
        if (errno != ENOENT) throw_errno(fmt::format("stat volume {}", name));
        // Made under a temporary name and renamed into place: a crash leaves no half volume.
        auto tmp = root_ + "/." + name + ".new";
        remove_tree(tmp);
        make_dir(tmp, 0701);
        make_dir(tmp + "/_data", 0755);
        json::object l;
        for (const auto& [k, v] : labels) l[k] = v;
        write_file(tmp + "/meta.json",
                   json::serialize(
                       json::object{{"CreatedAt", model::format_rfc3339(model::Timestamp::now())},
                                    {"Labels", std::move(l)}}));
        if (::rename(tmp.c_str(), dir.c_str()) != 0)
            throw_errno(fmt::format("create volume {}", name));
        log::info("runner", "volume {} created", name);
    } else if (!S_ISDIR(st.st_mode)) {
        return make_error(Errc::internal, fmt::format("volume {}: not a directory", name));
    }
    auto& users = users_[name];
    out.fresh = users.empty() && dir_empty(out.data);
    users.insert(task_id);
    return out;
}

void VolumeStore::release(const std::string& name, const std::string& task_id) noexcept {
    std::lock_guard g(mu_);
    auto it = users_.find(name);
    if (it == users_.end()) return;
    it->second.erase(task_id);
    if (it->second.empty()) users_.erase(it);
}

VolumeInfo VolumeStore::info_locked(const std::string& name) const {
    VolumeInfo v;
    v.name = name;
    v.mountpoint = root_ + "/" + name + "/_data";
    std::ifstream in(root_ + "/" + name + "/meta.json");
    std::stringstream text;
    text << in.rdbuf();
    boost::system::error_code ec;
    auto meta = json::parse(text.str(), ec);
    if (!ec && meta.is_object()) {
        const auto& o = meta.as_object();
        if (auto* c = o.if_contains("CreatedAt"); c && c->is_string())
            v.created_at = std::string(c->as_string());
        if (auto* l = o.if_contains("Labels"); l && l->is_object())
            for (const auto& [k, val] : l->as_object())
                if (val.is_string()) v.labels.emplace(std::string(k), std::string(val.as_string()));
    }
    if (auto it = users_.find(name); it != users_.end())
        v.used_by.assign(it->second.begin(), it->second.end());
    return v;
}

std::vector<VolumeInfo> VolumeStore::list() const {
    std::lock_guard g(mu_);
    std::vector<VolumeInfo> out;
    for (const auto& name : list_dir(root_, true))
        if (model::valid_volume_name(name)) out.push_back(info_locked(name));
    return out;
}

Result<void> VolumeStore::remove(std::string_view name) {
    if (!model::valid_volume_name(name))
        return make_error(Errc::not_found, fmt::format("get {}: no such volume", name));
    std::lock_guard g(mu_);
    std::string n(name);
    struct stat st {};
    if (::lstat((root_ + "/" + n).c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
        return make_error(Errc::not_found, fmt::format("get {}: no such volume", name));
    if (auto it = users_.find(name); it != users_.end() && !it->second.empty()) {
        std::string ids;
        for (const auto& id : it->second) ids += (ids.empty() ? "" : " ") + id;
        return make_error(Errc::conflict,
                          fmt::format("remove {}: volume is in use - [{}]", name, ids));
    }
    remove_tree(root_ + "/" + n);
    log::info("runner", "volume {} removed", name);
    return {};
}

}  // namespace coffer::agent
