#include "json_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "coffer/base/unique_fd.h"

namespace coffer::agent {

Result<boost::json::value> read_json_file(const std::string& path) {
    std::ifstream in(path);
    if (!in) return make_error(Errc::not_found, fmt::format("cannot open {}", path));
    std::stringstream ss;
    ss << in.rdbuf();
    boost::system::error_code ec;
    auto v = boost::json::parse(ss.str(), ec);
    if (ec) return make_error(Errc::invalid_argument, fmt::format("{}: {}", path, ec.message()));
    return v;
}

void write_file(const std::string& path, std::string_view content, int mode) {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode));
    if (!fd) throw_errno(fmt::format("create {}", path));
    while (!content.empty()) {
        auto n = ::write(fd.get(), content.data(), content.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno(fmt::format("write {}", path));
        }
        content.remove_prefix(static_cast<std::size_t>(n));
    }
}

std::string string_at(const boost::json::object& o, std::string_view key) {
    auto* v = o.if_contains(key);
    return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

std::vector<std::string> strings_at(const boost::json::object& o, std::string_view key) {
    std::vector<std::string> out;
    auto* v = o.if_contains(key);
    if (!v || !v->is_array()) return out;
    for (auto& e : v->as_array())
        if (e.is_string()) out.emplace_back(e.as_string());
    return out;
}

}  // namespace coffer::agent
