// Session messages: one JSON object per WebSocket message, with a string "type". Messages may
// carry secrets (a node's assignments), so their text stays in secure memory end to end and is
// parsed into JSON whose storage is secure memory as well.
#pragma once

#include <memory>
#include <string>

#include <boost/json/monotonic_resource.hpp>
#include <boost/json/value.hpp>

#include "coffer/base/error.h"
#include "coffer/crypto/secure_buffer.h"

namespace coffer::nodeconn {

inline constexpr std::size_t max_type_chars = 64;

struct Message {
    std::string type;
    crypto::SecureBuffer json;  // the whole message text
};

// A parsed JSON value whose every allocation lives in secure memory and is wiped when this
// object goes away.
class SecureJson {
  public:
    // invalid_argument when text is not JSON.
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

// Checks that text is a JSON object with a string "type" of at most max_type_chars and returns
// the message; invalid_argument otherwise.
Result<Message> make_message(crypto::SecureBuffer text);

// The serialised value, written straight into secure memory.
crypto::SecureBuffer serialize_secure(const boost::json::value& value);

}  // namespace coffer::nodeconn
