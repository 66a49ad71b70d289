#include "api_util.h"

#include <sys/utsname.h>
#include <unistd.h>

#include <charconv>

namespace coffer::manager {

Result<std::uint64_t> version_param(const net::Request& r, std::string_view what) {
    auto v = r.param("version");
    std::uint64_t out = 0;
    auto res = std::from_chars(v.data(), v.data() + v.size(), out);
    if (v.empty() || res.ec != std::errc{} || res.ptr != v.data() + v.size())
        return make_error(Errc::invalid_argument, fmt::format("invalid {} version", what));
    return out;
}

Result<model::SecureJson> parse_body(const net::Request& r) {
    if (r.body.empty()) return make_error(Errc::invalid_argument, "request body is empty");
    auto parsed = model::SecureJson::parse(r.body);
    if (!parsed) return std::move(parsed).error().context("malformed request body");
    if (!parsed->value().is_object())
        return make_error(Errc::invalid_argument, "request body must be a JSON object");
    return parsed;
}

std::string kernel_version() {
    struct utsname u {};
    ::uname(&u);
    return u.release;
}

const std::string& hostname() {
    static const std::string h = [] {
        char buf[256] = {};
        ::gethostname(buf, sizeof buf - 1);
        return std::string(buf);
    }();
    return h;
}

}  // namespace coffer::manager
