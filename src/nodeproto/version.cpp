#include "coffer/nodeproto/version.h"

#include <algorithm>
#include <charconv>

namespace coffer::nodeproto {

Result<void> check_version(std::uint64_t version) {
    if (version == protocol_version) return {};
    return make_error(
        Errc::invalid_argument,
        fmt::format("node protocol version {} is not supported by this manager (supports {})",
                    version, protocol_version));
}

Result<void> check_version_header(std::string_view text) {
    if (text.empty()) return check_version(1);
    std::uint64_t version = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), version);
    if (ec != std::errc{} || end != text.data() + text.size() ||
        !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return make_error(Errc::invalid_argument,
                          fmt::format("{} is not a version number", version_header));
    return check_version(version);
}

}  // namespace coffer::nodeproto
