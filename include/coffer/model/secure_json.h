// JSON whose text, parse tree and parser temporaries live in secure memory: for request bodies
// and session messages that may carry secret bytes (base64 of a secret, an unlock key, a node's
// assignments). Includes Boost.JSON: include it only where such JSON is handled.
#pragma once

#include <boost/json/memory_resource.hpp>
#include <boost/json/storage_ptr.hpp>
#include <boost/json/value.hpp>

#include <string_view>

#include "coffer/base/error.h"
#include "coffer/crypto/secure_buffer.h"

namespace coffer::model {

// A fresh monotonic storage over secure memory, for one JSON document and its temporaries.
boost::json::storage_ptr secure_storage();

// A parsed JSON value whose every allocation lives in secure memory and is wiped when this
// object goes away.
class SecureJson {
  public:
    // invalid_argument "malformed JSON: <reason>" when text is not JSON, or when an object has
    // a key twice.
    static Result<SecureJson> parse(std::string_view text);
    static Result<SecureJson> parse(const crypto::SecureBuffer& text);

    SecureJson(SecureJson&&) noexcept = default;
    SecureJson& operator=(SecureJson&&) noexcept = default;

    boost::json::value& value() noexcept { return value_; }
    const boost::json::value& value() const noexcept { return value_; }
    // A storage to build new values in secure memory (e.g. a reply holding secret data).
    boost::json::storage_ptr storage() const noexcept { return storage_; }

  private:
    SecureJson();

    boost::json::storage_ptr storage_;
    boost::json::value value_;
};

// The serialised value, written straight into secure memory.
crypto::SecureBuffer serialize_secure(const boost::json::value& value);

}  // namespace coffer::model
