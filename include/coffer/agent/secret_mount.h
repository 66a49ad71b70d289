// A task's secrets as files on a tmpfs of their own: validated targets, owners and modes,
// size- and inode-limited, noswap where the kernel has it, read-only once written.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "coffer/agent/task.h"
#include "coffer/base/error.h"
#include "coffer/base/mount.h"

namespace coffer::agent {

// Where relative targets land in the container.
inline constexpr std::string_view secrets_dir = "/run/secrets";

// One file to write: a validated, normalised absolute container path.
struct SecretFile {
    std::string secret_id;
    std::string path;  // "/run/secrets/db_pass", "/etc/app/key.pem"
    std::uint32_t uid = 0;
    std::uint32_t gid = 0;
    std::uint32_t mode = 0444;
};

// Validates and normalises the task's secret references before anything runs. Refuses `..`,
// empty names, the secrets directory itself, `/`, /proc, /sys and /dev, modes beyond 0777, and
// two targets that name the same path after normalisation (`a`, `./a`, `/run/secrets/a`) or
// where one would sit inside the other.
Result<std::vector<SecretFile>> plan_secret_files(const std::vector<SecretRef>& refs);

// Whether a normalised container path may receive a mount (not /, not in /proc, /sys, /dev).
bool is_forbidden_destination(std::string_view path) noexcept;

// What the runtime bind-mounts, read-only, into the container.
struct SecretBind {
    std::string source;       // on the agent's side, inside the task's secret mount
    std::string destination;  // in the container (before in-root resolution)
    bool directory = false;
};

// Where a task's files lie in its secret mount, whatever serves it: a file under /run/secrets at
// run/<its path below /run/secrets>, any other at abs/<n> (n counting those); and the binds that
// put them in the container: run/ on /run/secrets (when a file is under it, or there is no file
// at all), then each abs/<n> on its target.
struct SecretLayout {
    std::vector<std::string> files;  // relative to the mount, as files
    std::vector<SecretBind> binds;
};
SecretLayout secret_layout(const std::string& dir, const std::vector<SecretFile>& files);

// Whether the running kernel's tmpfs takes `noswap`, tried once with a scratch mount on dir (an
// existing empty directory, left empty); SecretMount::create() uses the answer.
bool probe_tmpfs_noswap(const std::string& dir);

class SecretMount {
  public:
    struct Options {
        std::uint32_t uid_shift = 0;  // added to every owner (user namespace mapping)
        std::uint32_t gid_shift = 0;
        std::uint64_t slack_bytes = 64 * 1024;
    };

    using Bind = SecretBind;

    // Mounts a tmpfs on dir (an existing empty directory), writes every file from bytes (each
    // file's secret_id must be there), then remounts it read-only. Throws on failure; what was
    // mounted is unmounted again.
    static SecretMount create(const std::string& dir, const std::vector<SecretFile>& files,
                              const SecretBytes& bytes, const Options& options);

    SecretMount() = default;
    SecretMount(SecretMount&&) noexcept = default;
    SecretMount& operator=(SecretMount&&) noexcept = default;
    // Unmounts (without wiping) if wipe_and_unmount() was not called.
    ~SecretMount() = default;

    const std::vector<Bind>& binds() const noexcept { return binds_; }
    const std::string& dir() const noexcept { return mount_.target(); }
    std::uint64_t size_limit() const noexcept { return size_limit_; }

    // Replaces the files whose secret_id differs in files (the same paths as at create(), in the
    // same order; only files under /run/secrets may change) with the bytes of their new
    // secret_id: each new file is written beside the tree, then renamed over the old one, so a
    // reader opening the path gets the whole old or the whole new file, never a part or none.
    // The tmpfs is writable meanwhile in the agent's mount namespace only (the container's
    // binds of it stay read-only), and read-only again afterwards. Throws on failure (files
    // replaced before it keep their new bytes).
    void replace(const std::vector<SecretFile>& files, const SecretBytes& bytes);

    // Makes the tmpfs writable again, overwrites every file with zeros (freed tmpfs pages are not
    // cleared by the kernel), and unmounts. Throws SystemError; the mount is then still owned.
    void wipe_and_unmount();

    // Whether tmpfs accepted `noswap` on this host (known after the first create()).
    static bool noswap_supported() noexcept;

  private:
    Mount mount_;
    std::vector<Bind> binds_;
    std::vector<std::string> files_;  // relative to the mount, for the wipe
    std::vector<std::string> paths_;  // each file's container path, as files_
    std::vector<std::string> ids_;    // each file's secret_id (store key), as files_
    std::uint64_t size_limit_ = 0;
    std::uint64_t inodes_ = 0;
    std::string options_;
    std::string extra_options_;  // ",noswap" when the kernel took it
    Options create_options_;
};

}  // namespace coffer::agent
