// The options of a task's process and its view of the system (ContainerSpec's User, Groups,
// Init, StopSignal, Sysctls, Ulimits, Hosts, DNSConfig, OomScoreAdj): what is valid, in one
// place for the manager (a bad spec is refused with 400) and the agent (a bad assignment is
// rejected).
#pragma once

#include <cstdint>

#include <optional>
#include <string_view>

#include "coffer/base/error.h"
#include "coffer/model/service.h"

namespace coffer::model {

// The signal number of "SIGQUIT", "QUIT" (any case) or "3"; nullopt for anything else.
std::optional<int> signal_number(std::string_view s) noexcept;

// Whether a sysctl may be set for one task: only those the kernel keeps per network or IPC
// namespace (net.*, fs.mqueue.*, kernel.msg*, kernel.sem, kernel.shm*), as Docker allows.
bool namespaced_sysctl(std::string_view key) noexcept;

// The RLIMIT_* resource of a ulimit name ("nofile", "nproc", ...); nullopt for an unknown one.
std::optional<int> ulimit_resource(std::string_view name) noexcept;

// An IPv4 or IPv6 address in text form.
bool valid_ip(std::string_view s) noexcept;

// A user or group name, or a number: no separator (':'), blank or control character.
bool valid_account_name(std::string_view s) noexcept;

// The largest uid or gid of a task's process or of a file in its secret mount, as runc's user
// lookup allows: (uid_t)-1 means "leave unchanged" to setresuid(2), that is root, and larger
// ids wrap.
inline constexpr std::uint32_t max_account_id = 2147483647;
// Whether s is a number (all digits) above max_account_id.
bool account_id_out_of_range(std::string_view s) noexcept;

// invalid_argument naming the field and the value at fault.
Result<void> validate_task_options(const ContainerSpec& c);

}  // namespace coffer::model
