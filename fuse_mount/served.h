// What the server threads and a mount share: the session, the file tree and its contents.
#pragma once

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>

#include <condition_variable>
#include <cstdint>
#include <ctime>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "coffer/base/mount.h"
#include "coffer/base/unique_fd.h"
#include "coffer/fuse_mount/fuse_mount.h"

namespace coffer::fuse_mount {

// One version of a file: what an open() pins until its release().
struct Content {
    std::string secret_id;
    crypto::SecureBuffer bytes;
    std::uint32_t uid = 0;
    std::uint32_t gid = 0;
    std::uint32_t mode = 0;
    timespec changed{};  // mtime and ctime
};

// Inode number - 1 indexes the tree; the root is FUSE_ROOT_ID.
struct Node {
    fuse_ino_t parent = FUSE_ROOT_ID;
    std::map<std::string, fuse_ino_t, std::less<>> children;  // directories only
    int file = -1;                                            // files: index in Served::files
};

struct ServedFile {
    std::string secret_id;
    fuse_ino_t ino = 0;
    std::shared_ptr<const Content> content;
    FileReads reads;                 // of content
    std::vector<FileReads> earlier;  // of the contents before it, oldest first
    // The reads of c: this file's current content or one it held before.
    FileReads& reads_of(const Content& c) {
        if (&c == content.get() || earlier.empty()) return reads;
        for (auto it = earlier.rbegin(); it != earlier.rend(); ++it)
            if (it->secret_id == c.secret_id) return *it;
        return reads;
    }
};

struct OpenFile {
    std::shared_ptr<const Content> content;
    int file = -1;
};

struct FuseMount::Served {
    Served() = default;
    Served(const Served&) = delete;
    Served& operator=(const Served&) = delete;
    // Destroys the session, closing its device fd (the kernel then ends the connection if the
    // mount was not aborted before).
    ~Served();

    // Set once before the session is served, then only read.
    fuse_session* session = nullptr;
    int fd = -1;           // the session's /dev/fuse fd, owned by session
    std::uint64_t id = 0;  // the server's key for it
    unsigned conn = 0;     // the connection's number (minor device number of the mount)
    std::vector<Node> nodes;
    timespec created{};  // the directories' times
    std::uint32_t uid_shift = 0;
    std::uint32_t gid_shift = 0;
    std::function<void(std::string_view)> before_read;

    // Everything below, and the bytes they own, only under mu. A reply carrying bytes is
    // written while mu is held, so close() cannot wipe them under a reader.
    mutable std::mutex mu;
    bool closed = false;
    std::vector<ServedFile> files;
    std::map<std::uint64_t, OpenFile> open_files;
    std::uint64_t next_handle = 1;

    // Drops every copy of the bytes; later requests get EIO.
    void close();
};

// How long the kernel may keep names and attributes, in seconds (see ops.cpp).
inline constexpr double cache_timeout = 24 * 60 * 60;

// Ends connection conn through the fuse control filesystem at control: every request waiting on
// it fails, and so does every later one. Whether it worked.
bool abort_connection(const std::string& control, unsigned conn);

// The operations, userdata = the Served.
const fuse_lowlevel_ops& secret_ops() noexcept;

struct FuseServer::Impl {
    Impl() = default;
    Impl(const Impl&) = delete;
    Impl& operator=(const Impl&) = delete;

    // Serves s from now on (s->id is set here).
    void add(const std::shared_ptr<FuseMount::Served>& s);
    // No request of s is taken after this returns (one already taken may still be answered).
    void remove(FuseMount::Served& s) noexcept;
    void run() noexcept;
    void stop() noexcept;

    // Where the fuse control filesystem is; empty: nowhere. control_mount when we mounted it.
    std::string control;
    Mount control_mount;
    UniqueFd epoll;
    UniqueFd wake;  // eventfd: readable once the threads must end
    std::vector<std::thread> threads;
    std::mutex mu;
    std::map<std::uint64_t, std::shared_ptr<FuseMount::Served>> sessions;
    std::uint64_t next_id = 1;  // 0 is the wake fd
};

}  // namespace coffer::fuse_mount
