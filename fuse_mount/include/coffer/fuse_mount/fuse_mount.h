// A task's secrets as a read-only FUSE filesystem served from the agent's locked memory: exactly
// the task's files with the owners, modes and sizes it asked for, nothing writable, no page cache
// (direct_io), permissions checked by the kernel (default_permissions), nosuid, nodev, noexec.
// One FuseServer per agent serves every FuseMount with a small pool of threads.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "coffer/crypto/secure_buffer.h"

namespace coffer::fuse_mount {

// The filesystem type our mounts carry in the mount table ("fuse." + the subtype).
inline constexpr std::string_view fstype = "fuse.coffer-secrets";

// Secret bytes by secret id (the agent's SecretBytes is this type).
using Bytes = std::map<std::string, crypto::SecureBuffer, std::less<>>;

// One file of a mount.
struct File {
    std::string secret_id;
    // Relative to the mount's root, normalised ("run/db_pass", "abs/0"): no "." or ".." parts,
    // no empty parts. Directories on the way are made, owned by root, mode 0755.
    std::string path;
    std::uint32_t uid = 0;
    std::uint32_t gid = 0;
    std::uint32_t mode = 0444;
};

// What a task read of one file while it held one secret's bytes.
struct FileReads {
    std::string path;
    std::string secret_id;
    std::uint64_t opens = 0;
    std::uint64_t reads = 0;                             // read requests answered with bytes
    std::chrono::system_clock::time_point first_read{};  // zero until the first read
    std::chrono::system_clock::time_point last_read{};
};

class FuseMount;

// The threads that answer every mount's requests. Every request is answered from memory without
// waiting on anything else, so a task whose reader stops mid-read holds no thread. Should outlive
// its mounts: the connection of a mount left when it stops is aborted.
class FuseServer {
  public:
    // Starts threads workers (at least one). A connection is aborted through the fuse control
    // filesystem: where /sys/fs/fuse/connections has none, it is mounted on control_dir (made if
    // missing) for the server's life; without either, a connection ends only once every process
    // holding its device has closed it. Throws SystemError.
    explicit FuseServer(unsigned threads = 2, const std::string& control_dir = {});
    FuseServer(const FuseServer&) = delete;
    FuseServer& operator=(const FuseServer&) = delete;
    // Stops and joins the threads; aborts the connections of mounts still served.
    ~FuseServer();

    struct Impl;

  private:
    friend class FuseMount;
    friend std::size_t remove_leftover_fuse_mounts(const FuseServer&, std::string_view);
    std::shared_ptr<Impl> impl_;
};

class FuseMount {
  public:
    struct Options {
        std::uint32_t uid_shift = 0;  // added to every file's owner (user namespace mapping)
        std::uint32_t gid_shift = 0;
        // Tests only: runs on a server thread before each read request is answered.
        std::function<void(std::string_view path)> before_read;
    };

    // Mounts on dir (an existing empty directory) a filesystem holding files, each with a copy of
    // its secret's bytes (each file's secret_id must be in bytes), served by server (borrowed for
    // the mount's life). Throws ErrorException (invalid files) or SystemError; nothing stays
    // mounted then.
    static FuseMount create(FuseServer& server, const std::string& dir,
                            const std::vector<File>& files, const Bytes& bytes,
                            const Options& options);

    FuseMount() = default;
    FuseMount(FuseMount&&) noexcept;
    FuseMount& operator=(FuseMount&&) noexcept;
    // As unmount(), errors logged.
    ~FuseMount();

    bool active() const noexcept { return served_ != nullptr; }
    const std::string& dir() const noexcept { return dir_; }

    // Gives each file whose secret_id differs in files (the same paths as at create(), in the same
    // order) the bytes of its new secret_id, and its uid, gid and mode. Each file changes at
    // once: an open() after it gets the whole new file, a file already open keeps reading the
    // whole old one until closed. Throws ErrorException; no file changed then.
    void replace(const std::vector<File>& files, const Bytes& bytes);

    // Per file, in the order of create(): what was read of each secret it held (the bytes of
    // create(), then of each replace() that changed it; a reader that opened the file before a
    // replace() counts for the bytes it reads), oldest first.
    std::vector<FileReads> reads() const;

    // Stops serving, unmounts (aborting the connection first when a reader keeps the mount busy,
    // detaching as the last resort), ends the FUSE connection so that no reader anywhere waits
    // on it, and wipes every copy of the bytes. Returns promptly even when a reader is blocked
    // inside the filesystem. Throws SystemError when the mount stays; the bytes are wiped anyway.
    void unmount();

    struct Served;

  private:
    std::shared_ptr<FuseServer::Impl> server_;
    std::shared_ptr<Served> served_;
    std::string dir_;
};

// Aborts the connections of and detaches every mount of ours (fstype) at or below root, deepest
// first: what an agent that crashed left. Returns how many it removed. Call before this process
// mounts anything there. Throws SystemError when a mount stays.
std::size_t remove_leftover_fuse_mounts(const FuseServer& server, std::string_view root);

}  // namespace coffer::fuse_mount
