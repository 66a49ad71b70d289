// Session messages: one JSON object per WebSocket message, with a string "type". Messages may
// carry secrets (a node's assignments), so their text stays in secure memory end to end and is
// parsed into JSON whose storage is secure memory as well.
#pragma once

#include <memory>
#include <string>

#include "coffer/base/error.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/model/secure_json.h"

namespace coffer::nodeconn {

inline constexpr std::size_t max_type_chars = 64;

struct Message {
    std::string type;
    crypto::SecureBuffer json;  // the whole message text
};

using model::SecureJson;
using model::serialize_secure;

// Checks that text is a JSON object with a string "type" of at most max_type_chars and returns
// the message; invalid_argument otherwise.
Result<Message> make_message(crypto::SecureBuffer text);

}  // namespace coffer::nodeconn
