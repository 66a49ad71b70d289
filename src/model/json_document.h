// The one JSON parser behind parse_json() and SecureJson::parse().
#pragma once

#include <boost/json/storage_ptr.hpp>
#include <boost/json/value.hpp>

#include <optional>
#include <string_view>

#include "coffer/base/error.h"

namespace coffer::model::detail {

// One JSON document (nothing after it but whitespace), at most max_depth deep. The value lives
// in `result`; the parser's temporaries (partial strings, the value stack) in `temporaries`, or
// on the stack first when there is none.
// An object with a key twice is refused ("malformed JSON: key "Name" appears twice in an
// object"): Boost.JSON would keep the last value silently, and another reader of the same text
// may keep the first.
Result<boost::json::value> parse_document(std::string_view text, boost::json::storage_ptr result,
                                          std::optional<boost::json::storage_ptr> temporaries,
                                          unsigned max_depth);

// The check parse_document makes, for a value parsed from text by another parser: an object
// of the text with a key twice is refused, with the same message.
Result<void> check_keys_once(std::string_view text, const boost::json::value& value,
                             unsigned max_depth);

}  // namespace coffer::model::detail
