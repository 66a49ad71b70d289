#include "task_user.h"

#include <algorithm>
#include <charconv>
#include <optional>

#include "coffer/agent/in_root.h"
#include "coffer/model/task_options.h"

namespace coffer::agent {

namespace {

constexpr std::size_t max_account_file = 4 << 20;

struct Entry {
    std::string name;
    std::uint32_t id = 0;
    std::uint32_t gid = 0;             // passwd only
    std::vector<std::string> members;  // group only
};

bool parse_id(std::string_view s, std::uint32_t& out) {
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && p == s.data() + s.size() && !s.empty();
}

std::vector<std::string_view> split(std::string_view s, char sep) {
    std::vector<std::string_view> out;
    for (;;) {
        auto at = s.find(sep);
        out.push_back(s.substr(0, at));
        if (at == std::string_view::npos) return out;
        s.remove_prefix(at + 1);
    }
}

// The well-formed lines of a passwd ("name:x:uid:gid:...") or group ("name:x:gid:a,b") file;
// others (comments, NIS "+" lines, garbage) are skipped, as libc does.
std::vector<Entry> parse_entries(std::string_view text, bool is_group) {
    std::vector<Entry> out;
    for (auto line : split(text, '\n')) {
        if (line.empty() || line.front() == '#' || line.front() == '+' || line.front() == '-')
            continue;
        auto f = split(line, ':');
        if (f.size() < (is_group ? 3u : 4u) || f[0].empty()) continue;
        Entry e;
        e.name = std::string(f[0]);
        if (!parse_id(f[2], e.id)) continue;
        if (!is_group && !parse_id(f[3], e.gid)) continue;
        if (is_group && f.size() > 3)
            for (auto m : split(f[3], ','))
                if (!m.empty()) e.members.emplace_back(m);
        out.push_back(std::move(e));
    }
    return out;
}

Error invalid(std::string message) {
    return make_error(Errc::invalid_argument, std::move(message));
}

Result<std::uint32_t> group_id(std::string_view g, const std::vector<Entry>& groups) {
    std::uint32_t id = 0;
    if (parse_id(g, id)) return id;
    for (const auto& e : groups)
        if (e.name == g) return e.id;
    return invalid(fmt::format("unable to find group {}: no matching entries in group file", g));
}

}  // namespace

Result<ProcessUser> resolve_user(std::string_view user,
                                 const std::vector<std::string>& extra_groups,
                                 const AccountFiles& files) {
    auto colon = user.find(':');
    std::string_view user_part = user.substr(0, colon);
    std::optional<std::string_view> group_part;
    if (colon != std::string_view::npos) group_part = user.substr(colon + 1);
    if (user_part.empty() && group_part)
        return invalid(fmt::format("invalid user \"{}\": no user before the group", user));
    if (group_part && group_part->empty())
        return invalid(fmt::format("invalid user \"{}\": empty group", user));

    auto users = parse_entries(files.passwd, false);
    auto groups = parse_entries(files.group, true);
    ProcessUser out;
    std::uint32_t uid = 0;
    bool numeric = user_part.empty() || parse_id(user_part, uid);
    const Entry* entry = nullptr;
    for (const auto& e : users)
        if (numeric ? e.id == uid : e.name == user_part) {
            entry = &e;
            break;
        }
    if (!numeric && entry == nullptr)
        return invalid(
            fmt::format("unable to find user {}: no matching entries in passwd file", user_part));
    out.uid = entry ? entry->id : uid;
    out.gid = entry ? entry->gid : 0;
    if (group_part) {
        auto g = group_id(*group_part, groups);
        if (!g) return std::move(g).error();
        out.gid = *g;
    }
    if (entry != nullptr)
        for (const auto& g : groups)
            if (std::find(g.members.begin(), g.members.end(), entry->name) != g.members.end())
                out.additional_gids.push_back(g.id);
    for (const auto& name : extra_groups) {
        auto g = group_id(name, groups);
        if (!g) return std::move(g).error();
        out.additional_gids.push_back(*g);
    }
    // An id the image's files or the spec give beyond the range would run the process as root
    // ((uid_t)-1 leaves setresuid's ids unchanged) or as a wrapped id.
    for (auto id : {out.uid, out.gid})
        if (id > model::max_account_id)
            return invalid(fmt::format("user {}: uids and gids must be in range 0-{}: {}", user,
                                       model::max_account_id, id));
    for (auto id : out.additional_gids)
        if (id > model::max_account_id)
            return invalid(fmt::format("user {}: uids and gids must be in range 0-{}: {}", user,
                                       model::max_account_id, id));
    std::sort(out.additional_gids.begin(), out.additional_gids.end());
    out.additional_gids.erase(std::unique(out.additional_gids.begin(), out.additional_gids.end()),
                              out.additional_gids.end());
    return out;
}

Result<AccountFiles> read_account_files(int root_fd) {
    AccountFiles files;
    for (auto [path, out] :
         {std::pair{"/etc/passwd", &files.passwd}, {"/etc/group", &files.group}}) {
        auto text = read_file_in_root(root_fd, path, max_account_file);
        if (!text) return std::move(text).error();
        if (*text) *out = std::move(**text);
    }
    return files;
}

}  // namespace coffer::agent
