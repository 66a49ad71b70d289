#include "coffer/model/ids.h"

#include <algorithm>

namespace coffer::model {

namespace {

bool lower_alnum(char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

}  // namespace

bool valid_generated_id(std::string_view id) noexcept {
    return id.size() == 25 && std::all_of(id.begin(), id.end(), lower_alnum);
}

bool valid_node_id(std::string_view id) noexcept {
    return valid_generated_id(id);
}

bool valid_service_id(std::string_view id) noexcept {
    return valid_generated_id(id);
}

bool valid_task_id(std::string_view id) noexcept {
    if (id.empty() || id.size() > 64 || !lower_alnum(id.front())) return false;
    return std::all_of(id.begin(), id.end(),
                       [](char c) { return lower_alnum(c) || c == '_' || c == '.' || c == '-'; });
}

bool valid_secret_id(std::string_view id) noexcept {
    if (id.empty() || id.size() > 128) return false;
    return std::all_of(id.begin(), id.end(), [](char c) {
        return lower_alnum(c) || (c >= 'A' && c <= 'Z') || c == '_' || c == '.' || c == '-';
    });
}

}  // namespace coffer::model
