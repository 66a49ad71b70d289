#include "cgroups.h"

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#include <algorithm>
#include <cstring>

#include <fstream>
#include <sstream>
#include <thread>

#include "coffer/base/error.h"
#include "coffer/base/log.h"
#include "coffer/base/mount.h"

namespace coffer::agent {
namespace {

bool exists(const std::string& p) {
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0;
}

// The value after key in a "key value" file (memory.events, memory.oom_control).
long long read_keyed(const std::string& file, std::string_view key) {
    std::ifstream in(file);
    std::string k;
    long long v;
    while (in >> k >> v)
        if (k == key) return v;
    return 0;
}

std::vector<int> procs(const std::string& dir) {
    std::vector<int> out;
    std::ifstream in(dir + "/cgroup.procs");
    int pid;
    while (in >> pid) out.push_back(pid);
    return out;
}

// Removes dir and its children, killing what is left in them. False when something remains.
bool remove_cgroup(const std::string& dir, std::chrono::steady_clock::time_point deadline) {
    bool ok = true;
    for (const auto& c : list_dir(dir, true)) ok = remove_cgroup(dir + "/" + c, deadline) && ok;
    auto backoff = std::chrono::microseconds(200);
    while (true) {
        for (int pid : procs(dir)) ::kill(pid, SIGKILL);
        if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return ok;
        if (errno != EBUSY || std::chrono::steady_clock::now() >= deadline) {
            log::warn("runner", "cannot remove cgroup {}: {}", dir, std::strerror(errno));
            return false;
        }
        // The kernel releases a cgroup shortly after its last process is reaped.
        std::this_thread::sleep_for(backoff);
        backoff = std::min(backoff * 2, std::chrono::microseconds(20000));
    }
}

class V1 final : public Cgroups {
  public:
    V1(std::vector<std::string> roots, std::string memory, std::string unified)
        : roots_(std::move(roots)), memory_(std::move(memory)), unified_(std::move(unified)) {}
    CgroupMode mode() const noexcept override {
        return unified_.empty() ? CgroupMode::v1 : CgroupMode::hybrid;
    }
    std::vector<std::string> hierarchies() const override { return roots_; }
    bool oom_killed(std::string_view rel) const override {
        return read_keyed(fmt::format("{}{}/memory.oom_control", memory_, rel), "oom_kill") > 0;
    }
    bool can_limit_swap() const override {
        return exists(memory_ + "/memory.memsw.limit_in_bytes");
    }
    std::string unified_mount() const override { return unified_; }

  private:
    std::vector<std::string> roots_;
    std::string memory_;
    std::string unified_;
};

class V2 final : public Cgroups {
  public:
    explicit V2(std::string root) : root_(std::move(root)) {}
    CgroupMode mode() const noexcept override { return CgroupMode::v2; }
    std::vector<std::string> hierarchies() const override { return {root_}; }
    bool oom_killed(std::string_view rel) const override {
        return read_keyed(fmt::format("{}{}/memory.events", root_, rel), "oom_kill") > 0;
    }
    bool can_limit_swap() const override { return true; }

  private:
    std::string root_;
};

}  // namespace

std::string_view to_string(CgroupMode m) noexcept {
    switch (m) {
        case CgroupMode::v1:
            return "v1";
        case CgroupMode::hybrid:
            return "hybrid";
        case CgroupMode::v2:
            return "v2";
    }
    return "?";
}

std::vector<std::string> Cgroups::dirs(std::string_view rel) const {
    std::vector<std::string> out;
    for (const auto& h : hierarchies()) {
        auto p = fmt::format("{}{}", h, rel);
        if (exists(p)) out.push_back(std::move(p));
    }
    return out;
}

bool Cgroups::remove(std::string_view rel, std::chrono::milliseconds deadline) const {
    auto until = std::chrono::steady_clock::now() + deadline;
    bool ok = true;
    for (const auto& d : dirs(rel)) ok = remove_cgroup(d, until) && ok;
    return ok;
}

std::vector<std::string> Cgroups::children(std::string_view parent) const {
    std::vector<std::string> out;
    for (const auto& h : hierarchies())
        for (auto& c : list_dir(fmt::format("{}{}", h, parent), true))
            if (std::find(out.begin(), out.end(), c) == out.end()) out.push_back(std::move(c));
    return out;
}

std::unique_ptr<Cgroups> Cgroups::detect() {
    std::vector<std::string> v1;
    std::string memory, unified;
    for (const auto& m : read_mountinfo()) {
        if (m.fstype == "cgroup2") {
            if (unified.empty()) unified = m.mount_point;
        } else if (m.fstype == "cgroup") {
            // One root per hierarchy (a hierarchy can be mounted more than once).
            if (std::find(v1.begin(), v1.end(), m.mount_point) != v1.end()) continue;
            v1.push_back(m.mount_point);
            std::istringstream opts(m.super_options);
            for (std::string o; std::getline(opts, o, ',');)
                if (o == "memory" && memory.empty()) memory = m.mount_point;
        }
    }
    if (v1.empty()) {
        if (unified.empty())
            throw ErrorException(make_error(Errc::unavailable, "no cgroup filesystem mounted"));
        return std::make_unique<V2>(unified);
    }
    if (memory.empty())
        throw ErrorException(
            make_error(Errc::unavailable, "cgroup v1 without the memory controller"));
    if (!unified.empty()) v1.push_back(unified);
    return std::make_unique<V1>(std::move(v1), std::move(memory), std::move(unified));
}

void CgroupDir::reset() noexcept {
    if (rel_.empty() || !cgroups_) return;
    try {
        cgroups_->remove(rel_, std::chrono::seconds(5));
    } catch (const std::exception& e) {
        log::warn("runner", "remove cgroup {}: {}", rel_, e.what());
    }
    rel_.clear();
}

}  // namespace coffer::agent
