#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <cerrno>
#include <chrono>

#include "served.h"

// The kernel asks; every answer comes from the Served, in memory. Files open with direct_io and
// without keep_cache, so no byte of a secret stays in the page cache, and every read reaches
// us (to be counted, and to see a replacement). Names and attributes are cached by the kernel
// (cache_timeout): the tree never changes, and a file's attributes change only in replace(),
// which invalidates them before it returns, so a replaced file's size, owner and mode are right
// at the next stat and open. With timeout 0 every open of run/x cost eight requests (GETATTR and
// LOOKUP for each step of the path, for default_permissions) instead of two or three. Whatever
// would change the tree or a file answers EROFS; the mount is read-only too, so the kernel
// refuses most of it before asking.

namespace coffer::fuse_mount {
namespace {

FuseMount::Served& served(fuse_req_t req) {
    return *static_cast<FuseMount::Served*>(fuse_req_userdata(req));
}

bool valid(const FuseMount::Served& s, fuse_ino_t ino) {
    return ino >= FUSE_ROOT_ID && ino <= s.nodes.size();
}

const Node& node(const FuseMount::Served& s, fuse_ino_t ino) {
    return s.nodes[ino - 1];
}

// Caller holds s.mu.
struct stat attributes(const FuseMount::Served& s, fuse_ino_t ino) {
    struct stat st {};
    const auto& n = node(s, ino);
    st.st_ino = ino;
    st.st_blksize = 4096;
    if (n.file < 0) {
        st.st_mode = S_IFDIR | 0755;
        st.st_nlink = 2;
        for (const auto& [name, child] : n.children)
            if (node(s, child).file < 0) ++st.st_nlink;
        st.st_mtim = st.st_ctim = st.st_atim = s.created;
        return st;
    }
    const auto& c = *s.files[static_cast<std::size_t>(n.file)].content;
    st.st_mode = S_IFREG | c.mode;
    st.st_nlink = 1;
    st.st_uid = c.uid;
    st.st_gid = c.gid;
    st.st_size = static_cast<off_t>(c.bytes.size());
    st.st_blocks = static_cast<blkcnt_t>((c.bytes.size() + 511) / 512);
    st.st_mtim = st.st_ctim = st.st_atim = c.changed;
    return st;
}

void refuse(fuse_req_t req) {
    fuse_reply_err(req, EROFS);
}

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
    auto& s = served(req);
    fuse_entry_param e{};
    {
        std::lock_guard lock(s.mu);
        if (s.closed || !valid(s, parent)) return (void)fuse_reply_err(req, EIO);
        const auto& p = node(s, parent);
        if (p.file >= 0) return (void)fuse_reply_err(req, ENOTDIR);
        auto it = p.children.find(std::string_view(name));
        if (it == p.children.end()) return (void)fuse_reply_err(req, ENOENT);
        e.ino = it->second;
        e.attr = attributes(s, e.ino);
    }
    e.attr_timeout = cache_timeout;
    e.entry_timeout = cache_timeout;
    fuse_reply_entry(req, &e);
}

void op_forget(fuse_req_t req, fuse_ino_t, std::uint64_t) {
    fuse_reply_none(req);  // the tree never changes: nothing to forget
}

void op_forget_multi(fuse_req_t req, std::size_t, fuse_forget_data*) {
    fuse_reply_none(req);
}

void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
    auto& s = served(req);
    struct stat st {};
    {
        std::lock_guard lock(s.mu);
        if (s.closed || !valid(s, ino)) return (void)fuse_reply_err(req, EIO);
        st = attributes(s, ino);
    }
    fuse_reply_attr(req, &st, cache_timeout);
}

void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    auto& s = served(req);
    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC) != 0) return refuse(req);
    {
        std::lock_guard lock(s.mu);
        if (s.closed || !valid(s, ino)) return (void)fuse_reply_err(req, EIO);
        const auto& n = node(s, ino);
        if (n.file < 0) return (void)fuse_reply_err(req, EISDIR);
        auto& f = s.files[static_cast<std::size_t>(n.file)];
        fi->fh = s.next_handle++;
        s.open_files.emplace(fi->fh, OpenFile{f.content, n.file});
        ++f.reads.opens;
    }
    fi->direct_io = 1;
    fi->keep_cache = 0;
    fi->noflush = 1;
    // When the open was interrupted meanwhile, libfuse calls op_release itself.
    fuse_reply_open(req, fi);
}

void op_read(fuse_req_t req, fuse_ino_t, std::size_t size, off_t off, fuse_file_info* fi) {
    auto& s = served(req);
    if (s.before_read) {
        std::string path;
        {
            std::lock_guard lock(s.mu);
            if (auto it = s.open_files.find(fi->fh); it != s.open_files.end())
                path = s.files[static_cast<std::size_t>(it->second.file)].reads.path;
        }
        s.before_read(path);
    }
    std::lock_guard lock(s.mu);
    auto it = s.open_files.find(fi->fh);
    if (s.closed || it == s.open_files.end()) return (void)fuse_reply_err(req, EIO);
    const auto& bytes = it->second.content->bytes;
    auto start = std::min(static_cast<std::size_t>(std::max<off_t>(off, 0)), bytes.size());
    auto n = std::min(size, bytes.size() - start);
    if (n > 0) {
        auto& r = s.files[static_cast<std::size_t>(it->second.file)].reads_of(*it->second.content);
        auto now = std::chrono::system_clock::now();
        if (r.reads++ == 0) r.first_read = now;
        r.last_read = now;
    }
    // Written to the device while mu is held: close() cannot wipe the bytes meanwhile.
    fuse_reply_buf(req, reinterpret_cast<const char*>(bytes.data()) + start, n);
}

void op_release(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
    auto& s = served(req);
    {
        std::lock_guard lock(s.mu);
        s.open_files.erase(fi->fh);
    }
    fuse_reply_err(req, 0);
}

void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    auto& s = served(req);
    {
        std::lock_guard lock(s.mu);
        if (s.closed || !valid(s, ino)) return (void)fuse_reply_err(req, EIO);
        if (node(s, ino).file >= 0) return (void)fuse_reply_err(req, ENOTDIR);
    }
    fi->fh = 0;
    fuse_reply_open(req, fi);
}

void op_readdir(fuse_req_t req, fuse_ino_t ino, std::size_t size, off_t off, fuse_file_info*) {
    auto& s = served(req);
    struct Entry {
        std::string name;
        fuse_ino_t ino;
        mode_t type;
    };
    std::vector<Entry> entries;
    {
        std::lock_guard lock(s.mu);
        if (s.closed || !valid(s, ino)) return (void)fuse_reply_err(req, EIO);
        const auto& n = node(s, ino);
        if (n.file >= 0) return (void)fuse_reply_err(req, ENOTDIR);
        entries.push_back({".", ino, S_IFDIR});
        entries.push_back({"..", n.parent, S_IFDIR});
        for (const auto& [name, child] : n.children)
            entries.push_back(
                {name, child, static_cast<mode_t>(node(s, child).file < 0 ? S_IFDIR : S_IFREG)});
    }
    std::vector<char> buf(size);
    std::size_t used = 0;
    for (auto i = static_cast<std::size_t>(std::max<off_t>(off, 0)); i < entries.size(); ++i) {
        struct stat st {};
        st.st_ino = entries[i].ino;
        st.st_mode = entries[i].type;
        auto need = fuse_add_direntry(req, buf.data() + used, size - used, entries[i].name.c_str(),
                                      &st, static_cast<off_t>(i + 1));
        if (need > size - used) break;
        used += need;
    }
    fuse_reply_buf(req, buf.data(), used);
}

void op_releasedir(fuse_req_t req, fuse_ino_t, fuse_file_info*) {
    fuse_reply_err(req, 0);
}

void op_statfs(fuse_req_t req, fuse_ino_t) {
    auto& s = served(req);
    struct statvfs sv {};
    sv.f_bsize = 4096;
    sv.f_frsize = 4096;
    sv.f_namemax = 255;
    sv.f_files = s.nodes.size();
    fuse_reply_statfs(req, &sv);
}

void op_getxattr(fuse_req_t req, fuse_ino_t, const char*, std::size_t) {
    fuse_reply_err(req, ENODATA);
}

void op_listxattr(fuse_req_t req, fuse_ino_t, std::size_t size) {
    if (size == 0)
        fuse_reply_xattr(req, 0);
    else
        fuse_reply_buf(req, nullptr, 0);
}

void op_flush(fuse_req_t req, fuse_ino_t, fuse_file_info*) {
    fuse_reply_err(req, 0);
}

void op_setattr(fuse_req_t req, fuse_ino_t, struct stat*, int, fuse_file_info*) {
    refuse(req);
}
void op_mknod(fuse_req_t req, fuse_ino_t, const char*, mode_t, dev_t) {
    refuse(req);
}
void op_mkdir(fuse_req_t req, fuse_ino_t, const char*, mode_t) {
    refuse(req);
}
void op_unlink(fuse_req_t req, fuse_ino_t, const char*) {
    refuse(req);
}
void op_symlink(fuse_req_t req, const char*, fuse_ino_t, const char*) {
    refuse(req);
}
void op_rename(fuse_req_t req, fuse_ino_t, const char*, fuse_ino_t, const char*, unsigned) {
    refuse(req);
}
void op_link(fuse_req_t req, fuse_ino_t, fuse_ino_t, const char*) {
    refuse(req);
}
void op_write(fuse_req_t req, fuse_ino_t, const char*, std::size_t, off_t, fuse_file_info*) {
    refuse(req);
}
void op_setxattr(fuse_req_t req, fuse_ino_t, const char*, const char*, std::size_t, int) {
    refuse(req);
}
void op_removexattr(fuse_req_t req, fuse_ino_t, const char*) {
    refuse(req);
}
void op_create(fuse_req_t req, fuse_ino_t, const char*, mode_t, fuse_file_info*) {
    refuse(req);
}
void op_fallocate(fuse_req_t req, fuse_ino_t, int, off_t, off_t, fuse_file_info*) {
    refuse(req);
}
void op_copy_file_range(fuse_req_t req, fuse_ino_t, off_t, fuse_file_info*, fuse_ino_t, off_t,
                        fuse_file_info*, std::size_t, int) {
    refuse(req);
}

fuse_lowlevel_ops make_ops() {
    fuse_lowlevel_ops o{};
    o.lookup = op_lookup;
    o.forget = op_forget;
    o.forget_multi = op_forget_multi;
    o.getattr = op_getattr;
    o.open = op_open;
    o.read = op_read;
    o.release = op_release;
    o.flush = op_flush;
    o.opendir = op_opendir;
    o.readdir = op_readdir;
    o.releasedir = op_releasedir;
    o.statfs = op_statfs;
    o.getxattr = op_getxattr;
    o.listxattr = op_listxattr;
    o.setattr = op_setattr;
    o.mknod = op_mknod;
    o.mkdir = op_mkdir;
    o.unlink = op_unlink;
    o.rmdir = op_unlink;
    o.symlink = op_symlink;
    o.rename = op_rename;
    o.link = op_link;
    o.write = op_write;
    o.setxattr = op_setxattr;
    o.removexattr = op_removexattr;
    o.create = op_create;
    o.fallocate = op_fallocate;
    o.copy_file_range = op_copy_file_range;
    return o;
}

}  // namespace

const fuse_lowlevel_ops& secret_ops() noexcept {
    static const fuse_lowlevel_ops ops = make_ops();
    return ops;
}

}  // namespace coffer::fuse_mount
