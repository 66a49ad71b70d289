// JSON codecs of the model in the Docker Engine API's shapes. Includes Boost.JSON: include it
// only where JSON is produced or consumed, not from other headers.
#pragma once

#include <boost/json.hpp>

#include <cstdint>
#include <optional>

#include "coffer/base/error.h"
#include "coffer/model/secret.h"

namespace coffer::model {

// Built in sp (a list builds every entry in one monotonic resource).
boost::json::object to_json(const ObjectMeta& m, boost::json::storage_ptr sp = {});
boost::json::object to_json(const Secret& s, boost::json::storage_ptr sp = {});
Result<Secret> secret_from_json(const boost::json::value& v);
// As Docker shows a config: the secret's shape with Spec.Data (base64).
boost::json::object to_json(const Config& c, boost::json::storage_ptr sp = {});

boost::json::object to_json(const Labels& labels, boost::json::storage_ptr sp = {});
// Labels from a JSON object (null or absent: empty); other shapes are an error naming field.
Result<Labels> labels_from_json(const boost::json::value* v, std::string_view field);

// A required string member; "missing field X" / "field X must be a string".
Result<std::string> string_field(const boost::json::object& o, std::string_view field);

// An optional integer member within [min, max] (max >= 0): nullopt when absent or null;
// "field X must be an integer" / "field X is out of range" otherwise. Never quotes the value.
Result<std::optional<std::int64_t>> integer_field(const boost::json::object& o,
                                                  std::string_view field, std::int64_t min,
                                                  std::int64_t max);

// Parses text into a value; malformed JSON is invalid_argument with the parser's reason. An
// object with a key twice is malformed JSON here ("key "Name" appears twice in an object").
Result<boost::json::value> parse_json(std::string_view text, boost::json::storage_ptr sp = {});

// {"message": text}
std::string error_body(std::string_view message);

}  // namespace coffer::model
