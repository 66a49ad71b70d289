// Mounts owned like file descriptors, the mount table, and the process's own mount namespace.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace coffer {

// A mount this process made: unmounted on destruction (lazily, MNT_DETACH, if busy).
// Leaves only through release().
class Mount {
  public:
    Mount() = default;
    // mount(2) with context in the error ("mount tmpfs at /x: ..."). Throws SystemError.
    static Mount make(const std::string& source, const std::string& target, const char* fstype,
                      unsigned long flags, const std::string& data = {});
    // Takes ownership of an existing mount at target.
    explicit Mount(std::string target) : target_(std::move(target)) {}

    Mount(Mount&& other) noexcept : target_(std::exchange(other.target_, {})) {}
    Mount& operator=(Mount&& other) noexcept;
    Mount(const Mount&) = delete;
    Mount& operator=(const Mount&) = delete;
    ~Mount() { reset(); }

    const std::string& target() const noexcept { return target_; }
    bool active() const noexcept { return !target_.empty(); }
    // Changes the mount's flags (MS_REMOUNT is added). Throws SystemError.
    void remount(unsigned long flags, const std::string& data = {}) const;
    // Unmounts now. Throws SystemError when neither a plain nor a lazy unmount worked.
    void unmount();
    [[nodiscard]] std::string release() noexcept { return std::exchange(target_, {}); }

  private:
    void reset() noexcept;
    std::string target_;
};

// One line of /proc/<pid>/mountinfo.
struct MountInfo {
    int id = 0;
    int parent = 0;
    std::string root;
    std::string mount_point;
    std::string options;
    std::string fstype;
    std::string source;
    std::string super_options;
};

// The mount table as a process sees it ("self" or a pid). Throws SystemError.
std::vector<MountInfo> read_mountinfo(std::string_view pid = "self");

// Mount points at or below prefix in this process's table, deepest first.
std::vector<std::string> mounts_under(std::string_view prefix);

// Moves the calling process into a mount namespace of its own whose mounts do not propagate
// back to the host (the root becomes a recursive slave: host mounts still appear). Must be called
// before any thread starts (unshare(CLONE_NEWNS) needs an unshared fs context).
void enter_private_mount_namespace();

// Removes path and everything below it without following symlinks and without crossing into
// another filesystem (a mount point below path is left alone and reported as an error).
// A missing path is not an error. Throws SystemError.
void remove_tree(const std::string& path);

// Names in dir (not . and ..), only subdirectories when dirs_only. A missing dir is empty.
std::vector<std::string> list_dir(const std::string& dir, bool dirs_only = false);

// mkdir that accepts an existing directory. Throws SystemError.
void make_dir(const std::string& path, unsigned mode = 0700);

// A directory this process made: removed with everything below it on destruction (remove_tree:
// never crossing into a mount below it; a failure is logged). Leaves only through release().
class OwnedDir {
  public:
    OwnedDir() = default;
    // Makes path, which must not exist yet. Throws SystemError (and then owns nothing).
    explicit OwnedDir(std::string path, unsigned mode = 0700);
    OwnedDir(OwnedDir&& other) noexcept : path_(std::exchange(other.path_, {})) {}
    OwnedDir& operator=(OwnedDir&& other) noexcept;
    OwnedDir(const OwnedDir&) = delete;
    OwnedDir& operator=(const OwnedDir&) = delete;
    ~OwnedDir() { reset(); }

    const std::string& path() const noexcept { return path_; }
    // Removes the directory now.
    void reset() noexcept;
    [[nodiscard]] std::string release() noexcept { return std::exchange(path_, {}); }

  private:
    std::string path_;
};

}  // namespace coffer
