#include "task_secrets.h"

#include "coffer/base/log.h"

namespace coffer::agent {

SecretMount mount_task_secrets(const std::string& dir, const TaskSpec& spec,
                               const std::vector<SecretFile>& files, const SecretStore& store,
                               std::uint32_t userns_base) {
    SecretMount::Options options;
    if (spec.user_namespace) options.uid_shift = options.gid_shift = userns_base;
    SecretMount mount;
    store.read(
        [&](const SecretBytes& bytes) { mount = SecretMount::create(dir, files, bytes, options); });
    return mount;
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

Result<void> replace_task_secrets(std::string_view task_id, SecretMount& mount,
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

void unmount_task_secrets(std::string_view task_id, SecretMount& mount) noexcept {
    try {
        mount.wipe_and_unmount();
    } catch (const std::exception& e) {
        log::warn("runner", "task {}: wipe secrets: {}", task_id, e.what());
    }
}

}  // namespace coffer::agent
