#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <set>

#include "coffer/base/error.h"
#include "coffer/base/log.h"
#include "coffer/base/mount.h"
#include "served.h"

namespace coffer::fuse_mount {
namespace {

constexpr const char* subtype = "coffer-secrets";
constexpr std::size_t max_component = 255;

[[noreturn]] void invalid(std::string why) {
    throw ErrorException(make_error(Errc::invalid_argument, std::move(why)));
}

std::vector<std::string> split_path(const File& f) {
    std::vector<std::string> parts;
    std::string_view rest = f.path;
    while (true) {
        auto slash = rest.find('/');
        auto part = rest.substr(0, slash);
        if (part.empty() || part == "." || part == ".." || part.size() > max_component ||
            part.find('\0') != std::string_view::npos)
            invalid(
                fmt::format("secret file path \"{}\" is not a normalised relative path", f.path));
        parts.emplace_back(part);
        if (slash == std::string_view::npos) return parts;
        rest = rest.substr(slash + 1);
    }
}

timespec now() {
    timespec t{};
    ::clock_gettime(CLOCK_REALTIME, &t);
    return t;
}

std::shared_ptr<const Content> content_of(const File& f, const Bytes& bytes,
                                          const FuseMount::Options& o) {
    auto it = bytes.find(f.secret_id);
    if (it == bytes.end()) invalid(fmt::format("no bytes for secret {}", f.secret_id));
    if (f.mode > 0777) invalid(fmt::format("mode {:o} of {} beyond 0777", f.mode, f.path));
    auto c = std::make_shared<Content>();
    c->secret_id = f.secret_id;
    c->bytes = it->second.clone();
    c->uid = f.uid + o.uid_shift;
    c->gid = f.gid + o.gid_shift;
    c->mode = f.mode;
    c->changed = now();
    return c;
}

// The tree of files; refuses a path that is already there or that runs through a file.
void build_tree(FuseMount::Served& s, const std::vector<File>& files, const Bytes& bytes,
                const FuseMount::Options& o) {
    s.nodes.emplace_back();  // the root
    for (const auto& f : files) {
        auto parts = split_path(f);
        fuse_ino_t at = FUSE_ROOT_ID;
        for (std::size_t i = 0; i < parts.size(); ++i) {
            auto& children = s.nodes[at - 1].children;
            auto it = children.find(parts[i]);
            bool leaf = i + 1 == parts.size();
            if (it != children.end()) {
                if (leaf || s.nodes[it->second - 1].file >= 0)
                    invalid(fmt::format("secret files {} and another overlap", f.path));
                at = it->second;
                continue;
            }
            Node n;
            n.parent = at;
            if (leaf) n.file = static_cast<int>(s.files.size());
            s.nodes.push_back(std::move(n));
            fuse_ino_t ino = s.nodes.size();
            s.nodes[at - 1].children.emplace(parts[i], ino);
            at = ino;
        }
        ServedFile sf;
        sf.secret_id = f.secret_id;
        sf.ino = at;
        sf.content = content_of(f, bytes, o);
        sf.reads.path = f.path;
        sf.reads.secret_id = f.secret_id;
        s.files.push_back(std::move(sf));
    }
}

// Mount points in mountinfo escape space, tab, newline and backslash as \ooo.
std::string unescape(std::string_view s) {
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\\' && i + 3 < s.size()) {
            out +=
                static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
            i += 3;
        } else {
            out += s[i];
        }
    }
    return out;
}

// Our mounts in this process's table: mount point and connection number, in table order.
std::vector<std::pair<std::string, unsigned>> our_mounts() {
    std::ifstream in("/proc/self/mountinfo");
    if (!in) throw_errno("read /proc/self/mountinfo");
    std::vector<std::pair<std::string, unsigned>> out;
    std::string line;
    while (std::getline(in, line)) {
        // id parent major:minor root mount-point options [optional...] - fstype source super
        std::vector<std::string_view> f;
        std::string_view rest = line;
        while (!rest.empty()) {
            auto sp = rest.find(' ');
            f.push_back(rest.substr(0, sp));
            rest = sp == std::string_view::npos ? std::string_view{} : rest.substr(sp + 1);
        }
        auto dash = std::find(f.begin(), f.end(), "-");
        if (f.size() < 5 || dash == f.end() || dash + 1 == f.end() || *(dash + 1) != fstype)
            continue;
        auto colon = f[2].find(':');
        if (colon == std::string_view::npos) continue;
        unsigned minor_number = 0;
        for (char c : f[2].substr(colon + 1)) minor_number = minor_number * 10 + (c - '0');
        out.emplace_back(unescape(f[4]), minor_number);
    }
    return out;
}

bool is_under(std::string_view path, std::string_view dir) {
    if (dir.size() > 1 && dir.back() == '/') dir.remove_suffix(1);
    return path == dir || dir == "/" ||
           (path.size() > dir.size() && path.starts_with(dir) && path[dir.size()] == '/');
}

}  // namespace

bool abort_connection(const std::string& control, unsigned conn) {
    if (control.empty()) return false;
    auto path = fmt::format("{}/{}/abort", control, conn);
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    return fd && ::write(fd.get(), "1", 1) == 1;
}

FuseMount::Served::~Served() {
    if (session != nullptr) fuse_session_destroy(session);
}

void FuseMount::Served::close() {
    std::lock_guard lock(mu);
    closed = true;
    open_files.clear();
    for (auto& f : files) f.content.reset();
}

FuseMount FuseMount::create(FuseServer& server, const std::string& dir,
                            const std::vector<File>& files, const Bytes& bytes,
                            const Options& options) {
    auto s = std::make_shared<Served>();
    s->created = now();
    s->before_read = options.before_read;
    s->uid_shift = options.uid_shift;
    s->gid_shift = options.gid_shift;
    build_tree(*s, files, bytes, options);

    UniqueFd dev(::open("/dev/fuse", O_RDWR | O_NONBLOCK | O_CLOEXEC));
    if (!dev) throw_errno("open /dev/fuse");
    // Read-only, and checked by the kernel against each file's owner and mode
    // (default_permissions) for every user (allow_other: the task's processes are not us).
    auto data =
        fmt::format("fd={},rootmode=40755,user_id={},group_id={},default_permissions,allow_other",
                    dev.get(), ::geteuid(), ::getegid());
    Mount mounted = Mount::make(subtype, dir, fstype.data(),
                                MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, data);

    const char* argv[] = {"coffer-agent", nullptr};
    fuse_args args = FUSE_ARGS_INIT(1, const_cast<char**>(argv));
    s->session = fuse_session_new(&args, &secret_ops(), sizeof(fuse_lowlevel_ops), s.get());
    fuse_opt_free_args(&args);
    if (s->session == nullptr)
        throw ErrorException(
            make_error(Errc::internal, fmt::format("start a FUSE session for {}", dir)));
    // "/dev/fd/N": the session takes the fd of the mount made above.
    if (fuse_session_mount(s->session, fmt::format("/dev/fd/{}", dev.get()).c_str()) != 0)
        throw ErrorException(
            make_error(Errc::internal, fmt::format("attach the FUSE session for {}", dir)));
    s->fd = dev.release();

    auto table = our_mounts();
    auto it = std::find_if(table.rbegin(), table.rend(),
                           [&](const auto& m) { return m.first == mounted.target(); });
    if (it == table.rend())
        throw ErrorException(make_error(
            Errc::internal, fmt::format("the FUSE mount at {} is not in the mount table", dir)));
    s->conn = it->second;

    server.impl_->add(s);
    FuseMount m;
    m.server_ = server.impl_;
    m.served_ = std::move(s);
    m.dir_ = mounted.release();
    return m;
}

FuseMount::FuseMount(FuseMount&&) noexcept = default;

FuseMount& FuseMount::operator=(FuseMount&& other) noexcept {
    if (this != &other) {
        try {
            unmount();
        } catch (const std::exception& e) {
            log::error("fuse", "{}", e.what());
        }
        server_ = std::move(other.server_);
        served_ = std::move(other.served_);
        dir_ = std::move(other.dir_);
    }
    return *this;
}

FuseMount::~FuseMount() {
    try {
        unmount();
    } catch (const std::exception& e) {
        log::error("fuse", "{}", e.what());
    }
}

void FuseMount::replace(const std::vector<File>& files, const Bytes& bytes) {
    if (!served_) invalid("the task's secrets are unmounted");
    auto& s = *served_;
    std::vector<std::size_t> changed;
    {
        std::lock_guard lock(s.mu);
        if (files.size() != s.files.size()) invalid("the task's secret files changed");
        for (std::size_t i = 0; i < files.size(); ++i) {
            if (files[i].path != s.files[i].reads.path)
                invalid(
                    fmt::format("secret file {} is not {}", files[i].path, s.files[i].reads.path));
            if (files[i].secret_id != s.files[i].secret_id) changed.push_back(i);
        }
    }
    // Every copy is made before any file changes (and outside the lock: secure memory is slow
    // to allocate).
    Options shift;
    shift.uid_shift = s.uid_shift;
    shift.gid_shift = s.gid_shift;
    std::vector<std::shared_ptr<const Content>> contents;
    for (auto i : changed) contents.push_back(content_of(files[i], bytes, shift));
    std::vector<fuse_ino_t> inodes;
    {
        std::lock_guard lock(s.mu);
        for (std::size_t k = 0; k < changed.size(); ++k) {
            auto& f = s.files[changed[k]];
            f.content = std::move(contents[k]);  // open files keep the old one until released
            f.secret_id = files[changed[k]].secret_id;
            f.earlier.push_back(std::move(f.reads));
            f.reads = FileReads{f.earlier.back().path, f.secret_id};
            inodes.push_back(f.ino);
        }
    }
    // The kernel keeps attributes (ops.cpp): drop its copy (offset -1: attributes only, there
    // are no cached pages), so that the next stat or open asks for the new size, owner and
    // mode. The kernel has done so when the write to the device returns. ENOENT: the kernel
    // holds no inode for the file, so nothing to drop.
    for (auto ino : inodes)
        if (int r = fuse_lowlevel_notify_inval_inode(s.session, ino, -1, 0); r != 0 && r != -ENOENT)
            log::warn("fuse",
                      "dropping the kernel's attributes of a replaced secret file in {}: {}", dir_,
                      std::strerror(-r));
}

std::vector<FileReads> FuseMount::reads() const {
    std::vector<FileReads> out;
    if (!served_) return out;
    std::lock_guard lock(served_->mu);
    for (const auto& f : served_->files) {
        out.insert(out.end(), f.earlier.begin(), f.earlier.end());
        out.push_back(f.reads);
    }
    return out;
}

void FuseMount::unmount() {
    if (!served_) return;
    auto s = std::move(served_);
    auto server = std::move(server_);
    fuse_session_exit(s->session);  // a reply that can no longer be sent is not an error now
    server->remove(*s);
    int err = 0;
    if (::umount2(dir_.c_str(), UMOUNT_NOFOLLOW) != 0) {
        err = errno;
        if (err == EINVAL) err = 0;  // not mounted any more
    }
    // A reader keeps the mount busy, or the mount is bound elsewhere too (a task's mount
    // namespace): end the connection, so that no reader waits on it, then detach.
    abort_connection(server->control, s->conn);
    // Releasing our end of the device ends the connection too, also where the control
    // filesystem is not mounted. A thread still answering one of the mount's requests writes
    // to /dev/null instead; the fd number stays valid until the session is destroyed.
    if (UniqueFd null(::open("/dev/null", O_RDWR | O_CLOEXEC)); null)
        ::dup3(null.get(), s->fd, O_CLOEXEC);
    if (err == EBUSY) err = ::umount2(dir_.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) == 0 ? 0 : errno;
    s->close();
    if (err != 0) throw SystemError(err, fmt::format("unmount secrets at {}", dir_));
}

std::size_t remove_leftover_fuse_mounts(const FuseServer& server, std::string_view root) {
    std::vector<std::pair<std::string, unsigned>> found;
    for (auto& m : our_mounts())
        if (is_under(m.first, root)) found.push_back(std::move(m));
    // Deepest first; of two at one place the later one (on top) first.
    std::reverse(found.begin(), found.end());
    std::stable_sort(found.begin(), found.end(), [](const auto& a, const auto& b) {
        return std::count(a.first.begin(), a.first.end(), '/') >
               std::count(b.first.begin(), b.first.end(), '/');
    });
    std::size_t removed = 0;
    for (const auto& [path, conn] : found) {
        abort_connection(server.impl_->control, conn);
        if (::umount2(path.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0) {
            if (errno == EINVAL) continue;
            throw_errno(fmt::format("detach the leftover secrets mount at {}", path));
        }
        log::info("fuse", "removed the leftover secrets mount at {}", path);
        ++removed;
    }
    return removed;
}

}  // namespace coffer::fuse_mount
