#include "coffer/model/secret.h"

#include <algorithm>

namespace coffer::model {
namespace {

bool alnum(char c) noexcept {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

}  // namespace

Result<void> validate_object_name(std::string_view name) {
    if (name.empty()) return make_error(Errc::invalid_argument, "name must be provided");
    bool ok = name.size() <= 64 && alnum(name.front()) && alnum(name.back()) &&
              std::all_of(name.begin(), name.end(),
                          [](char c) { return alnum(c) || c == '-' || c == '_' || c == '.'; });
    if (!ok)
        return make_error(Errc::invalid_argument,
                          "invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the start "
                          "and end character must be [a-zA-Z0-9]");
    return {};
}

Result<void> validate_secret_size(std::size_t size) {
    return validate_data_size("secret", size, max_secret_size);
}

Result<void> validate_data_size(std::string_view kind, std::size_t size, std::size_t max) {
    if (size < 1 || size > max)
        return make_error(
            Errc::invalid_argument,
            fmt::format("{} data must be larger than 0 and less than {} bytes", kind, max + 1));
    return {};
}

Result<void> validate_labels(const Labels& labels) {
    constexpr std::size_t max_len = 4096;
    for (const auto& [k, v] : labels) {
        if (k.empty()) return make_error(Errc::invalid_argument, "label key must not be empty");
        if (k.size() > max_len || v.size() > max_len)
            return make_error(Errc::invalid_argument,
                              "label key and value must be at most 4096 bytes");
        if (k.find('\0') != std::string::npos || v.find('\0') != std::string::npos)
            return make_error(Errc::invalid_argument, "labels must not contain NUL bytes");
    }
    if (labels.size() > 256) return make_error(Errc::invalid_argument, "at most 256 labels");
    return {};
}

std::string to_lower(std::string_view s) {
    std::string out(s);
    for (auto& c : out)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    return out;
}

}  // namespace coffer::model
