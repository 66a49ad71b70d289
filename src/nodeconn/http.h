// The small HTTP exchanges of the node port (GET /ca, POST /join, the session upgrade).
// Internal. Bodies may hold a join token, so they are read into secure memory.
#pragma once

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/dynamic_body.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

#include <boost/json/value.hpp>

#include <optional>
#include <string_view>

#include "secure_memory.h"

namespace coffer::nodeconn::detail {

namespace http = boost::beast::http;

using SecureFlatBuffer = boost::beast::basic_flat_buffer<SecureAllocator<char>>;
using SecureBody = http::basic_dynamic_body<SecureFlatBuffer>;
using Request = http::request<SecureBody>;
using Response = http::response<SecureBody>;

inline constexpr std::size_t max_header_bytes = 8 * 1024;

template <bool IsRequest>
std::string_view body_view(const http::message<IsRequest, SecureBody>& m) {
    auto data = m.body().cdata();
    return {static_cast<const char*>(data.data()), data.size()};
}

// The string field `name` of a JSON object (the join request and answer), or nullopt.
inline std::optional<std::string_view> string_field(const boost::json::value& v,
                                                    std::string_view name) {
    const auto* object = v.if_object();
    const auto* field = object != nullptr ? object->if_contains(name) : nullptr;
    if (field == nullptr || !field->is_string()) return std::nullopt;
    return std::string_view(field->get_string());
}

}  // namespace coffer::nodeconn::detail
