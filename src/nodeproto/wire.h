// Shared pieces of the node protocol's codecs (not part of the module's interface).
#pragma once

#include <boost/json.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "coffer/base/error.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/model/secure_json.h"

namespace coffer::nodeproto::wire {

namespace json = boost::json;

inline Error malformed(std::string_view what) {
    return make_error(Errc::invalid_argument, fmt::format("malformed message: {}", what));
}

// The message parsed into secure memory, checked to be an object of this type.
Result<model::SecureJson> object_of_type(const crypto::SecureBuffer& text, std::string_view type);

// The field as a string of at most max bytes; nullopt when absent or null; an error for another
// type or a longer string.
Result<std::optional<std::string>> optional_string(const json::object& o, std::string_view field,
                                                   std::size_t max);

// An ordinary (non-secret) message, copied into secure memory as every session message is.
crypto::SecureBuffer text_of(const json::object& o);

// Message text assembled from ordinary JSON pieces and, for secret bytes, pieces in secure memory,
// written straight into one secure buffer.
class SecureText {
  public:
    void add(std::string s) { parts_.emplace_back(std::move(s)); }
    void add(crypto::SecureBuffer b) { parts_.emplace_back(std::move(b)); }
    crypto::SecureBuffer finish() const;

  private:
    struct Part {
        explicit Part(std::string s) : plain(std::move(s)) {}
        explicit Part(crypto::SecureBuffer b) : secure(std::move(b)) {}
        std::string plain;
        std::optional<crypto::SecureBuffer> secure;
    };
    std::vector<Part> parts_;
};

}  // namespace coffer::nodeproto::wire
