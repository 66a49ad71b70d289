// The host's cgroup layout (v1, hybrid, pure v2) behind one small interface: where a task's
// cgroups are, whether the kernel OOM-killed in them, and how to remove them.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace coffer::agent {

enum class CgroupMode { v1, hybrid, v2 };
std::string_view to_string(CgroupMode m) noexcept;

class Cgroups {
  public:
    virtual ~Cgroups() = default;
    virtual CgroupMode mode() const noexcept = 0;
    // Hierarchy roots the runtime creates a task's cgroup in.
    virtual std::vector<std::string> hierarchies() const = 0;
    // Whether the kernel's OOM killer acted in the cgroup rel ("/coffer/<id>").
    virtual bool oom_killed(std::string_view rel) const = 0;
    // Whether memory+swap can be limited (v1 needs swap accounting).
    virtual bool can_limit_swap() const = 0;
    // Hybrid: where the cgroup2 hierarchy beside the v1 ones is mounted; otherwise empty.
    virtual std::string unified_mount() const { return {}; }

    // Directories of rel that exist, one per hierarchy.
    std::vector<std::string> dirs(std::string_view rel) const;
    // Kills what is left in rel and below, then removes the directories (children first).
    // Returns false if something remains when the deadline passes.
    bool remove(std::string_view rel, std::chrono::milliseconds deadline) const;
    // Names of the cgroups below parent ("/coffer") in any hierarchy.
    std::vector<std::string> children(std::string_view parent) const;

    // Reads this process's mount table.
    static std::unique_ptr<Cgroups> detect();
};

// A task's cgroup (created by the runtime): removed on destruction.
class CgroupDir {
  public:
    CgroupDir() = default;
    CgroupDir(const Cgroups& cgroups, std::string rel) : cgroups_(&cgroups), rel_(std::move(rel)) {}
    CgroupDir(CgroupDir&& o) noexcept : cgroups_(o.cgroups_), rel_(std::exchange(o.rel_, {})) {}
    CgroupDir& operator=(CgroupDir&& o) noexcept {
        if (this != &o) {
            reset();
            cgroups_ = o.cgroups_;
            rel_ = std::exchange(o.rel_, {});
        }
        return *this;
    }
    ~CgroupDir() { reset(); }
    const std::string& rel() const noexcept { return rel_; }
    void reset() noexcept;

  private:
    const Cgroups* cgroups_ = nullptr;  // borrowed: the runner's, outlives every task
    std::string rel_;
};

}  // namespace coffer::agent
