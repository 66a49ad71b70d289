// The identity of a task's process from its spec's user and groups, resolved against the
// image's /etc/passwd and /etc/group (read inside its rootfs, never through a link out of it),
// as Docker does.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "coffer/base/error.h"

namespace coffer::agent {

struct ProcessUser {
    std::uint32_t uid = 0;
    std::uint32_t gid = 0;
    std::vector<std::uint32_t> additional_gids;  // sorted, without duplicates
};

// The image's account files, as text (empty when the image has none).
struct AccountFiles {
    std::string passwd;
    std::string group;
};

// user: "", "name", "uid", "name:group", "uid:gid", ... ("" is root). A user found in passwd
// (by name or uid) gets its gid there and its memberships in group as supplementary groups; a
// uid without an entry gets gid 0 and no memberships; an explicit group overrides the gid.
// extra_groups (names or numbers) are added as supplementary groups. invalid_argument with
// Docker's words for a name that is not there: "unable to find user app: no matching entries in
// passwd file".
Result<ProcessUser> resolve_user(std::string_view user,
                                 const std::vector<std::string>& extra_groups,
                                 const AccountFiles& files);

// The image's /etc/passwd and /etc/group, read inside the rootfs below root_fd.
Result<AccountFiles> read_account_files(int root_fd);

}  // namespace coffer::agent
