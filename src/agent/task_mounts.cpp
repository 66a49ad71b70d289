#include "task_mounts.h"

#include <sys/stat.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <memory>

namespace coffer::agent {

namespace {

bool is_at_or_under(std::string_view path, std::string_view dir) {
    if (dir == "/") return true;
    return path == dir ||
           (path.starts_with(dir) && path.size() > dir.size() && path[dir.size()] == '/');
}

bool overlaps(std::string_view a, std::string_view b) {
    return is_at_or_under(a, b) || is_at_or_under(b, a);
}

Error invalid(std::string message) {
    return make_error(Errc::invalid_argument, std::move(message));
}

std::string real_path(const std::string& p) {
    std::unique_ptr<char, decltype(&std::free)> r(::realpath(p.c_str(), nullptr), &std::free);
    return r ? std::string(r.get()) : p;
}

}  // namespace

OciMount oci_mount_for(const TaskMount& m, std::string source, std::string destination) {
    OciMount out;
    out.destination = std::move(destination);
    if (m.type == TaskMount::Type::tmpfs) {
        out.type = "tmpfs";
        out.source = "tmpfs";
        out.options = {"noexec", "nosuid", "nodev"};
        out.options.push_back(fmt::format("mode={:o}", m.mode == 0 ? 01777 : m.mode));
        if (m.size_bytes > 0) out.options.push_back(fmt::format("size={}", m.size_bytes));
    } else {
        out.type = "bind";
        out.source = std::move(source);
        out.options = {m.non_recursive ? "bind" : "rbind", "rprivate"};
        if (m.type == TaskMount::Type::volume) {
            out.options.emplace_back("nosuid");
            out.options.emplace_back("nodev");
        }
    }
    if (m.read_only) out.options.emplace_back("ro");
    return out;
}

Result<void> check_task_mounts(const std::vector<TaskMount>& mounts,
                               const std::vector<std::string>& secret_targets) {
    for (std::size_t i = 0; i < mounts.size(); ++i) {
        const auto& t = mounts[i].target;
        if (t.empty() || t.front() != '/' || t == "/" || t.find('\0') != std::string::npos)
            return invalid(fmt::format("mount target \"{}\": must be an absolute path", t));
        if (is_at_or_under(t, "/proc") || is_at_or_under(t, "/sys") || is_at_or_under(t, "/dev"))
            return invalid(fmt::format("mount target {}: not allowed in /proc, /sys or /dev", t));
        for (std::size_t j = 0; j < i; ++j)
            if (overlaps(t, mounts[j].target))
                return invalid(fmt::format("mount targets {} and {} overlap", mounts[j].target, t));
        for (const auto& s : secret_targets)
            if (overlaps(t, s))
                return invalid(fmt::format("mount target {} and secret target {} overlap", t, s));
        if (mounts[i].type == TaskMount::Type::bind &&
            (mounts[i].source.empty() || mounts[i].source.front() != '/'))
            return invalid(fmt::format(
                "invalid mount config for type \"bind\": invalid mount path: '{}' mount path must "
                "be absolute",
                mounts[i].source));
    }
    return {};
}

Result<std::string> resolve_bind_source(const std::string& source,
                                        const std::vector<std::string>& agent_dirs) {
    std::unique_ptr<char, decltype(&std::free)> r(::realpath(source.c_str(), nullptr), &std::free);
    if (!r) {
        if (errno == ENOENT || errno == ENOTDIR)
            return invalid(fmt::format(
                "invalid mount config for type \"bind\": bind source path does not exist: {}",
                source));
        return invalid(
            fmt::format("invalid mount config for type \"bind\": bind source path {}: {}", source,
                        std::strerror(errno)));
    }
    std::string resolved(r.get());
    // The host's /proc reaches every process's root (/proc/PID/root), other tasks' secret mounts
    // among them, and /sys the host's devices and kernel settings.
    for (auto kernel : {"/proc", "/sys"})
        if (is_at_or_under(resolved, kernel))
            return invalid(fmt::format(
                "invalid mount config for type \"bind\": bind source {} is or lies in the "
                "host's {}, which would show other tasks' processes and secrets",
                source, kernel));
    for (const auto& dir : agent_dirs) {
        auto d = real_path(dir);
        if (overlaps(resolved, d))
            return invalid(fmt::format(
                "invalid mount config for type \"bind\": bind source {} is, holds or lies in the "
                "node agent's directory {}",
                source, d));
    }
    return resolved;
}

}  // namespace coffer::agent
