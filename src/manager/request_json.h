// Parsing request bodies that may carry secret bytes: the JSON tree (and the parser's scratch
// space) lives in secure memory, so a secret's base64 text never lands on the ordinary heap.
#pragma once

#include <boost/json.hpp>

#include <memory>

#include "coffer/base/error.h"
#include "coffer/crypto/secure_buffer.h"

namespace coffer::manager {

class SecureJson {
public:
    // Errc::invalid_argument for malformed JSON or a non-object; "request body" in the message.
    static Result<std::unique_ptr<SecureJson>> parse(std::string_view body);
    const boost::json::object& object() const { return value_.as_object(); }

private:
    SecureJson() = default;
    crypto::SecureBuffer arena_;
    std::unique_ptr<boost::json::monotonic_resource> resource_;
    boost::json::value value_;
};

}  // namespace coffer::manager
