// Pieces every part of the manager's API uses.
#pragma once

#include <boost/json.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "coffer/base/error.h"
#include "coffer/model/secure_json.h"
#include "coffer/net/http.h"

namespace coffer::manager {

inline net::Response ok_json(int status, const boost::json::value& v) {
    return net::Response::json(status, boost::json::serialize(v));
}
// An array or object is serialized as it is, not first copied into a value.
inline net::Response ok_json(int status, const boost::json::array& a) {
    return net::Response::json(status, boost::json::serialize(a));
}
inline net::Response ok_json(int status, const boost::json::object& o) {
    return net::Response::json(status, boost::json::serialize(o));
}
// For answers that carry secret bytes: v should be built in model::secure_storage() (so that
// the secret strings never sit on the ordinary heap); its text is written into secure memory and
// sent from there.
inline net::Response ok_secure_json(int status, const boost::json::value& v) {
    return net::Response::secure_json(status, model::serialize_secure(v));
}
inline net::Response fail(Errc code, std::string message) {
    return net::Response::error(Error{code, std::move(message)});
}

// ?version=N as Docker's optimistic concurrency sends it; "invalid <what> version" otherwise.
Result<std::uint64_t> version_param(const net::Request& r, std::string_view what);
// The request body as a JSON object in secure memory; errors say it is the request body.
Result<model::SecureJson> parse_body(const net::Request& r);

// The path's segments without the optional /v1.NN prefix, or the error for a bad prefix.
Result<std::vector<std::string_view>> route_of(const net::Request& r);

std::string kernel_version();
const std::string& hostname();

using Segments = std::vector<std::string_view>;

}  // namespace coffer::manager
