#include "coffer/agent/task_secrets.h"

#include <sys/mount.h>
#include <unistd.h>

#include <map>

#include "coffer/base/log.h"
#include "coffer/base/mount.h"

namespace coffer::agent {
namespace {

std::int64_t unix_ns(std::chrono::system_clock::time_point t) {
    if (t == std::chrono::system_clock::time_point{}) return 0;
    return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

[[noreturn]] void refuse(std::string why) {
    throw ErrorException(make_error(Errc::invalid_argument, std::move(why)));
}

}  // namespace

std::string_view to_string(SecretBackend b) noexcept {
    switch (b) {
        case SecretBackend::automatic:
            return "auto";
        case SecretBackend::tmpfs:
            return "tmpfs";
        case SecretBackend::fuse:
            return "fuse";
    }
    return "auto";
}

std::optional<SecretBackend> secret_backend_from(std::string_view text) noexcept {
    if (text == "auto") return SecretBackend::automatic;
    if (text == "tmpfs") return SecretBackend::tmpfs;
    if (text == "fuse") return SecretBackend::fuse;
    return std::nullopt;
}

SecretBackends::SecretBackends(SecretBackend fallback)
    : fallback_(fallback == SecretBackend::automatic ? SecretBackend::tmpfs : fallback) {}

SecretBackends::~SecretBackends() = default;

fuse_mount::FuseServer& SecretBackends::fuse() {
    std::lock_guard g(mu_);
    if (!fuse_) fuse_ = std::make_unique<fuse_mount::FuseServer>(2, "/sys/fs/fuse/connections");
    return *fuse_;
}

std::size_t SecretBackends::remove_leftovers(std::string_view root) {
    auto under = [&](std::string_view p) {
        return p == root ||
               (p.starts_with(root) && p.size() > root.size() && p[root.size()] == '/');
    };
    bool any = false;
    for (const auto& m : read_mountinfo())
        if (m.fstype == fuse_mount::fstype && under(m.mount_point)) any = true;
    if (!any) return 0;
    return fuse_mount::remove_leftover_fuse_mounts(fuse(), root);
}

SecretBackend resolve_secret_backend(SecretBackend requested, const std::string& scratch) {
    if (requested != SecretBackend::automatic) return requested;
    ::umount2(scratch.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW);  // left by a crash, if at all
    ::rmdir(scratch.c_str());
    OwnedDir dir(scratch, 0700);
    if (probe_tmpfs_noswap(dir.path())) return SecretBackend::tmpfs;
    log::info("runner", "tmpfs takes no noswap on this kernel: secret files are served by FUSE");
    return SecretBackend::fuse;
}

void TaskSecretMount::replace(const std::vector<SecretFile>& files, const SecretBytes& bytes) {
    if (backend_ == SecretBackend::tmpfs) {
        tmpfs_.replace(files, bytes);
        return;
    }
    if (!fuse_.active()) refuse("the task's secrets are unmounted");
    if (files.size() != paths_.size()) refuse("the task's secret targets changed");
    std::vector<fuse_mount::File> served;
    for (std::size_t i = 0; i < files.size(); ++i) {
        if (files[i].path != paths_[i])
            refuse(fmt::format("secret target {} is not {}", files[i].path, paths_[i]));
        served.push_back({files[i].secret_id, rel_[i], files[i].uid, files[i].gid, files[i].mode});
    }
    fuse_.replace(served, bytes);
}

std::vector<SecretReads> TaskSecretMount::reads() const {
    if (backend_ != SecretBackend::fuse || !fuse_.active()) return {};
    std::vector<SecretReads> out;
    std::map<std::string, std::size_t, std::less<>> index;
    for (const auto& f : fuse_.reads()) {
        auto [it, added] = index.emplace(f.secret_id, out.size());
        if (added) out.push_back({f.secret_id});
        auto& r = out[it->second];
        r.opens += f.opens;
        r.reads += f.reads;
        auto first = unix_ns(f.first_read), last = unix_ns(f.last_read);
        if (first != 0 && (r.first_read_ns == 0 || first < r.first_read_ns))
            r.first_read_ns = first;
        r.last_read_ns = std::max(r.last_read_ns, last);
    }
    return out;
}

void TaskSecretMount::wipe_and_unmount() {
    if (backend_ == SecretBackend::fuse)
        fuse_.unmount();
    else
        tmpfs_.wipe_and_unmount();
}

TaskSecretMount mount_task_secrets(const std::string& dir, const TaskSpec& spec,
                                   const std::vector<SecretFile>& files, const SecretStore& store,
                                   std::uint32_t userns_base, SecretBackends& backends) {
    std::uint32_t shift = spec.user_namespace ? userns_base : 0;
    TaskSecretMount m;
    m.backend_ = backends.resolve(spec.secret_mount);
    for (const auto& f : files) {
        m.paths_.push_back(f.path);
    }
    if (m.backend_ == SecretBackend::tmpfs) {
        SecretMount::Options options;
        options.uid_shift = options.gid_shift = shift;
        store.read([&](const SecretBytes& bytes) {
            m.tmpfs_ = SecretMount::create(dir, files, bytes, options);
        });
        m.binds_ = m.tmpfs_.binds();
        return m;
    }
    auto layout = secret_layout(dir, files);
    std::vector<fuse_mount::File> served;
    for (std::size_t i = 0; i < files.size(); ++i)
        served.push_back(
            {files[i].secret_id, layout.files[i], files[i].uid, files[i].gid, files[i].mode});
    // With no file there is no run/ directory: the empty root is what /run/secrets gets.
    if (files.empty()) layout.binds.front().source = dir;
    auto& server = backends.fuse();
    fuse_mount::FuseMount::Options options;
    options.uid_shift = options.gid_shift = shift;
    store.read([&](const SecretBytes& bytes) {
        m.fuse_ = fuse_mount::FuseMount::create(server, dir, served, bytes, options);
    });
    m.rel_ = std::move(layout.files);
    m.binds_ = std::move(layout.binds);
    return m;
}

Result<std::vector<SecretFile>> plan_secret_update(const std::vector<SecretRef>& refs,
                                                   const SecretLease& lease) {
    auto files = plan_secret_files(refs);
    if (!files) return std::move(files).error();
    for (const auto& ref : refs)
        if (!lease.holds(ref.secret_id))
            return make_error(Errc::invalid_argument,
                              fmt::format("no lease on secret {}", ref.secret_id));
    return files;
}

Result<void> replace_task_secrets(std::string_view task_id, TaskSecretMount& mount,
                                  const std::vector<SecretFile>& files, const SecretStore& store) {
    try {
        store.read([&](const SecretBytes& bytes) { mount.replace(files, bytes); });
    } catch (const ErrorException& e) {
        return e.error();
    } catch (const std::exception& e) {
        return make_error(Errc::internal,
                          fmt::format("task {}: replace secret files: {}", task_id, e.what()));
    }
    return {};
}

void unmount_task_secrets(std::string_view task_id, TaskSecretMount& mount) noexcept {
    try {
        mount.wipe_and_unmount();
    } catch (const std::exception& e) {
        log::warn("runner", "task {}: wipe secrets: {}", task_id, e.what());
    }
}

}  // namespace coffer::agent
