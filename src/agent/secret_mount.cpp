#include "coffer/agent/secret_mount.h"

#include "coffer/model/service.h"
#include "coffer/model/task_options.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <set>

#include "coffer/base/log.h"
#include "coffer/base/process.h"
#include "coffer/base/unique_fd.h"

namespace coffer::agent {
namespace {

constexpr std::uint64_t page = 4096;
constexpr std::size_t max_component = 255;
constexpr std::size_t max_path = 4096;

// -1 unknown, 0 no, 1 yes.
std::atomic<int> noswap_state{-1};

bool is_under(std::string_view path, std::string_view dir) {
    return path == dir ||
           (path.size() > dir.size() && path.starts_with(dir) && path[dir.size()] == '/');
}

Error invalid(const SecretRef& r, std::string_view why) {
    return make_error(Errc::invalid_argument,
                      fmt::format("secret {} target \"{}\": {}", r.name, r.target, why));
}

// The part of a normalised path below /run/secrets, or empty when it is elsewhere.
std::string_view below_secrets_dir(std::string_view path) {
    if (path.size() > secrets_dir.size() + 1 && is_under(path, secrets_dir))
        return path.substr(secrets_dir.size() + 1);
    return {};
}

void write_all(int fd, const std::uint8_t* p, std::size_t n, std::string_view what) {
    while (n > 0) {
        auto w = ::write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            throw_errno(what);
        }
        p += w;
        n -= static_cast<std::size_t>(w);
    }
}

// Creates the directories of rel (all but the last component) below dirfd; returns the fd of
// the innermost one and the leaf's name.
std::pair<UniqueFd, std::string> make_parents(int dirfd, std::string_view rel) {
    UniqueFd cur(::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!cur) throw_errno("open secrets tmpfs");
    while (true) {
        auto slash = rel.find('/');
        if (slash == std::string_view::npos) return {std::move(cur), std::string(rel)};
        std::string part(rel.substr(0, slash));
        rel = rel.substr(slash + 1);
        if (::mkdirat(cur.get(), part.c_str(), 0755) != 0 && errno != EEXIST)
            throw_errno(fmt::format("mkdir {} in secrets tmpfs", part));
        UniqueFd next(
            ::openat(cur.get(), part.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!next) throw_errno(fmt::format("open {} in secrets tmpfs", part));
        cur = std::move(next);
    }
}

}  // namespace

bool is_forbidden_destination(std::string_view path) noexcept {
    return model::forbidden_destination(path);
}

Result<std::vector<SecretFile>> plan_secret_files(const std::vector<SecretRef>& refs) {
    std::vector<SecretFile> out;
    std::set<std::string> paths;
    for (const auto& r : refs) {
        if (r.secret_id.empty()) return invalid(r, "no secret id");
        std::string_view target = r.target.empty() ? std::string_view(r.name) : r.target;
        if (r.mode > 0777) return invalid(r, fmt::format("mode {:o} beyond 0777", r.mode));
        if (r.uid > model::max_account_id || r.gid > model::max_account_id)
            return invalid(
                r, fmt::format("uids and gids must be in range 0-{}", model::max_account_id));
        // The same path the manager checked the spec with.
        auto placed = model::secret_file_path(target);
        if (!placed) return invalid(r, placed.error().message);
        auto path = std::move(*placed);
        for (const auto& p : paths) {
            if (p == path) return invalid(r, fmt::format("{} is already a target", path));
            if (is_under(p, path) || is_under(path, p))
                return invalid(r, fmt::format("{} and {} overlap", path, p));
        }
        paths.insert(path);
        out.push_back({r.secret_id, std::move(path), r.uid, r.gid, r.mode});
    }
    return out;
}

SecretLayout secret_layout(const std::string& dir, const std::vector<SecretFile>& files) {
    SecretLayout out;
    std::size_t abs_index = 0;
    bool any_relative = false;
    for (const auto& f : files) {
        if (auto below = below_secrets_dir(f.path); !below.empty()) {
            out.files.push_back(fmt::format("run/{}", below));
            any_relative = true;
        } else {
            out.files.push_back(fmt::format("abs/{}", abs_index++));
            out.binds.push_back({fmt::format("{}/{}", dir, out.files.back()), f.path, false});
        }
    }
    if (any_relative || files.empty())
        out.binds.insert(out.binds.begin(), {dir + "/run", std::string(secrets_dir), true});
    return out;
}

bool probe_tmpfs_noswap(const std::string& dir) {
    int state = noswap_state.load();
    if (state >= 0) return state == 1;
    try {
        auto probe = Mount::make("coffer-secrets", dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                                 "size=4096,nr_inodes=2,noswap");
        probe.unmount();
        noswap_state.store(1);
        return true;
    } catch (const SystemError& e) {
        if (e.code() != EINVAL) throw;
        noswap_state.store(0);
        return false;
    }
}

bool SecretMount::noswap_supported() noexcept {
    return noswap_state.load() == 1;
}

SecretMount SecretMount::create(const std::string& dir, const std::vector<SecretFile>& files,
                                const SecretBytes& bytes, const Options& o) {
    // Limits: every file takes at least a page, every directory one more.
    std::uint64_t size = o.slack_bytes + 4 * page;
    std::uint64_t inodes = 8;
    std::set<std::string> dirs;
    for (const auto& f : files) {
        auto it = bytes.find(f.secret_id);
        if (it == bytes.end())
            throw ErrorException(make_error(Errc::invalid_argument,
                                            fmt::format("no bytes for secret {}", f.secret_id)));
        size += (it->second.size() + page - 1) / page * page + page;
        inodes += 1;
        auto rel = below_secrets_dir(f.path);
        for (auto s = rel.find('/'); s != std::string_view::npos; s = rel.find('/', s + 1))
            dirs.emplace(rel.substr(0, s));
    }
    size += dirs.size() * page;
    inodes += dirs.size();

    SecretMount m;
    m.size_limit_ = size;
    m.inodes_ = inodes;
    m.create_options_ = o;
    m.options_ = fmt::format("size={},nr_inodes={},mode=0755", size, inodes);
    constexpr unsigned long flags = MS_NOSUID | MS_NODEV | MS_NOEXEC;
    int state = noswap_state.load();
    if (state != 0) {
        try {
            m.mount_ = Mount::make("coffer-secrets", dir, "tmpfs", flags, m.options_ + ",noswap");
            m.options_ += ",noswap";
            m.extra_options_ = ",noswap";
            if (state < 0) noswap_state.store(1);
        } catch (const SystemError& e) {
            if (e.code() != EINVAL || state == 1) throw;
            noswap_state.store(0);
            log::warn(
                "runner",
                "tmpfs does not support noswap on this kernel: secret files could reach swap");
        }
    }
    if (!m.mount_.active())
        m.mount_ = Mount::make("coffer-secrets", dir, "tmpfs", flags, m.options_);

    UniqueFd root(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!root) throw_errno(fmt::format("open {}", dir));
    auto layout = secret_layout(dir, files);
    m.binds_ = std::move(layout.binds);
    // No runtime started meanwhile by another task may inherit a file open for writing here:
    // the read-only remount below would fail.
    {
        SpawnFence fence;
        for (std::size_t i = 0; i < files.size(); ++i) {
            const auto& f = files[i];
            auto& rel = layout.files[i];
            auto [parent, leaf] = make_parents(root.get(), rel);
            UniqueFd fd(::openat(parent.get(), leaf.c_str(),
                                 O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0600));
            if (!fd) throw_errno(fmt::format("create secret file for {}", f.path));
            const auto& b = bytes.find(f.secret_id)->second;
            write_all(fd.get(), b.data(), b.size(),
                      fmt::format("write secret file for {}", f.path));
            if (::fchown(fd.get(), f.uid + o.uid_shift, f.gid + o.gid_shift) != 0)
                throw_errno(fmt::format("chown secret file for {}", f.path));
            if (::fchmod(fd.get(), f.mode) != 0)
                throw_errno(fmt::format("chmod secret file for {}", f.path));
            m.files_.push_back(std::move(rel));
            m.paths_.push_back(f.path);
            m.ids_.push_back(f.secret_id);
        }
    }
    if (!m.binds_.empty() && m.binds_.front().directory &&
        ::mkdirat(root.get(), "run", 0755) != 0 && errno != EEXIST)
        throw_errno("mkdir run");
    m.mount_.remount(flags | MS_RDONLY, m.options_);
    return m;
}

void SecretMount::replace(const std::vector<SecretFile>& files, const SecretBytes& bytes) {
    auto refuse = [](std::string why) {
        throw ErrorException(make_error(Errc::invalid_argument, std::move(why)));
    };
    if (!mount_.active()) refuse("the task's secrets are unmounted");
    if (files.size() != paths_.size()) refuse("the task's secret targets changed");
    std::vector<std::size_t> changed;
    std::uint64_t extra = 0;
    for (std::size_t i = 0; i < files.size(); ++i) {
        if (files[i].path != paths_[i])
            refuse(fmt::format("secret target {} is not {}", files[i].path, paths_[i]));
        if (files[i].secret_id == ids_[i]) continue;
        // A file bind-mounted at an absolute target pins its inode: a rename is not seen there.
        if (below_secrets_dir(files[i].path).empty())
            refuse(fmt::format("{} is outside {}: its file cannot be replaced in place",
                               files[i].path, secrets_dir));
        auto it = bytes.find(files[i].secret_id);
        if (it == bytes.end()) refuse(fmt::format("no bytes for secret {}", files[i].secret_id));
        extra += (it->second.size() + page - 1) / page * page + page;
        changed.push_back(i);
    }
    if (changed.empty()) return;
    // Room for each new file beside the old one (a reader may keep the old one open).
    size_limit_ += extra;
    inodes_ += changed.size();
    options_ =
        fmt::format("size={},nr_inodes={},mode=0755{}", size_limit_, inodes_, extra_options_);
    constexpr unsigned long flags = MS_NOSUID | MS_NODEV | MS_NOEXEC;
    constexpr const char* scratch = ".coffer-replace";
    mount_.remount(flags, options_);
    try {
        UniqueFd root(
            ::open(mount_.target().c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!root) throw_errno(fmt::format("open {}", mount_.target()));
        // As in create(): no runtime started meanwhile may inherit a file open for writing.
        SpawnFence fence;
        for (auto i : changed) {
            const auto& f = files[i];
            auto [parent, leaf] = make_parents(root.get(), files_[i]);
            ::unlinkat(root.get(), scratch, 0);  // left by a replace that failed
            UniqueFd fd(::openat(root.get(), scratch,
                                 O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0600));
            if (!fd) throw_errno(fmt::format("create new secret file for {}", f.path));
            const auto& b = bytes.find(f.secret_id)->second;
            write_all(fd.get(), b.data(), b.size(),
                      fmt::format("write new secret file for {}", f.path));
            if (::fchown(fd.get(), f.uid + create_options_.uid_shift,
                         f.gid + create_options_.gid_shift) != 0)
                throw_errno(fmt::format("chown new secret file for {}", f.path));
            if (::fchmod(fd.get(), f.mode) != 0)
                throw_errno(fmt::format("chmod new secret file for {}", f.path));
            fd.reset();
            // The old file's pages are freed once the last reader closes it; they cannot be
            // wiped before that without a reader seeing zeros.
            if (::renameat(root.get(), scratch, parent.get(), leaf.c_str()) != 0)
                throw_errno(fmt::format("rename new secret file over {}", f.path));
            ids_[i] = f.secret_id;
        }
    } catch (...) {
        try {
            mount_.remount(flags | MS_RDONLY, options_);
        } catch (const std::exception& e) {
            log::warn("runner", "secrets at {} stay writable: {}", mount_.target(), e.what());
        }
        throw;
    }
    mount_.remount(flags | MS_RDONLY, options_);
}

void SecretMount::wipe_and_unmount() {
    if (!mount_.active()) return;
    mount_.remount(MS_NOSUID | MS_NODEV | MS_NOEXEC, options_);
    UniqueFd root(::open(mount_.target().c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!root) throw_errno(fmt::format("open {}", mount_.target()));
    static const std::uint8_t zeros[4096] = {};
    {
        SpawnFence fence;  // as in create(): for the unmount
        for (const auto& rel : files_) {
            UniqueFd fd(::openat(root.get(), rel.c_str(), O_WRONLY | O_NOFOLLOW | O_CLOEXEC));
            if (!fd) continue;  // already gone
            struct stat st {};
            if (::fstat(fd.get(), &st) != 0) continue;
            for (off_t left = st.st_size; left > 0;) {
                auto n = std::min<off_t>(left, sizeof zeros);
                write_all(fd.get(), zeros, static_cast<std::size_t>(n), "wipe secret file");
                left -= n;
            }
        }
    }
    root.reset();
    mount_.unmount();
}

}  // namespace coffer::agent
