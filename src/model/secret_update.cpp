#include "coffer/model/secret_update.h"

#include <fmt/format.h>

#include "coffer/model/task_options.h"

namespace coffer::model {

Result<SecretUpdate> secret_update_of(const Labels& labels) {
    auto it = labels.find(std::string(secret_update_label));
    if (it == labels.end()) return SecretUpdate{};
    const std::string_view v = it->second;
    if (v == "restart") return SecretUpdate{SecretUpdateMode::restart, {}};
    if (v == "live") return SecretUpdate{SecretUpdateMode::live, {}};
    if (v == "none") return SecretUpdate{SecretUpdateMode::none, {}};
    constexpr std::string_view prefix = "signal:";
    if (v.starts_with(prefix)) {
        auto sig = v.substr(prefix.size());
        if (!signal_number(sig))
            return make_error(Errc::invalid_argument, fmt::format("label {}: unknown signal '{}'",
                                                                  secret_update_label, sig));
        return SecretUpdate{SecretUpdateMode::signal, std::string(sig)};
    }
    return make_error(Errc::invalid_argument,
                      fmt::format("label {}: '{}' is not restart, live, signal:<SIGNAL> or none",
                                  secret_update_label, v));
}

Result<std::string> secret_mount_of(const Labels& labels) {
    auto it = labels.find(std::string(secret_mount_label));
    if (it == labels.end() || it->second == "auto") return std::string();
    if (it->second == "tmpfs" || it->second == "fuse") return it->second;
    return make_error(
        Errc::invalid_argument,
        fmt::format("label {}: '{}' is not tmpfs, fuse or auto", secret_mount_label, it->second));
}

}  // namespace coffer::model
