// Named local volumes on a node: a directory each, <data>/volumes/<name>/_data, made by the first
// task that mounts it and kept across that task's restarts and updates until `volume rm`. The
// store knows which of its tasks use which volume, so that one in use is never removed.
#pragma once

#include <map>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "coffer/base/error.h"

namespace coffer::agent {

struct VolumeInfo {
    std::string name;
    std::string mountpoint;  // the _data directory on the node
    std::string created_at;  // RFC 3339
    std::map<std::string, std::string> labels;
    std::vector<std::string> used_by;  // ids of the tasks mounting it, sorted
};

class VolumeStore {
  public:
    // root: <data>/volumes, made when missing.
    explicit VolumeStore(std::string root);

    struct Acquired {
        std::string data;  // the _data directory
        // Empty and used by no other task: the caller may copy the image's content into it.
        bool fresh = false;
    };
    // The volume's directory, made (with its labels) when it does not exist yet; task_id is
    // recorded as a user until release(). The name is model::valid_volume_name's.
    Result<Acquired> acquire(const std::string& name,
                             const std::map<std::string, std::string>& labels,
                             const std::string& task_id);
    void release(const std::string& name, const std::string& task_id) noexcept;

    std::vector<VolumeInfo> list() const;
    // not_found when there is no such volume; conflict, in Docker's words, when a task uses it
    // ("remove NAME: volume is in use - [ids]").
    Result<void> remove(std::string_view name);

  private:
    VolumeInfo info_locked(const std::string& name) const;
    std::string root_;
    mutable std::mutex mu_;
    std::map<std::string, std::set<std::string>, std::less<>> users_;
};

// A task's use of a volume: released on destruction. Leaves only by moving.
class VolumeUse {
  public:
    VolumeUse() = default;
    VolumeUse(VolumeStore& store, std::string name, std::string task)
        : store_(&store), name_(std::move(name)), task_(std::move(task)) {}
    VolumeUse(VolumeUse&& o) noexcept
        : store_(std::exchange(o.store_, nullptr)),
          name_(std::move(o.name_)),
          task_(std::move(o.task_)) {}
    VolumeUse& operator=(VolumeUse&&) = delete;
    VolumeUse(const VolumeUse&) = delete;
    VolumeUse& operator=(const VolumeUse&) = delete;
    ~VolumeUse() {
        if (store_ != nullptr) store_->release(name_, task_);
    }

  private:
    VolumeStore* store_ = nullptr;
    std::string name_;
    std::string task_;
};

// Copies the tree below the directory src_dir into the empty directory dst_dir as the image has
// it: directories, regular files and symbolic links (as links, never followed) with their owners
// and modes; other kinds of file are left out. Neither side is followed out of itself. Throws
// SystemError.
void copy_tree(int src_dir, int dst_dir);

}  // namespace coffer::agent
