// Parsers of untrusted JSON: filters, secret records, request bodies.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "coffer/model/filters.h"
#include "coffer/model/json.h"
#include "coffer/model/time.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    (void)coffer::model::Filters::parse(text, {"id", "name", "names", "label"});
    auto v = coffer::model::parse_json(text);
    // Boost.JSON's own reading: the same value whenever ours accepts, valid JSON whenever ours
    // refuses a key twice (Boost.JSON then keeps the last value).
    boost::json::parse_options opts;
    opts.max_depth = 64;
    boost::system::error_code ec;
    auto reference = boost::json::parse(text, ec, {}, opts);
    if (v.ok() && (ec || reference != *v)) std::abort();
    if (!v.ok() && v.error().message.find("appears twice") != std::string::npos && ec) std::abort();
    if (v.ok()) {
        (void)coffer::model::secret_from_json(*v);
        if (v->is_object())
            (void)coffer::model::labels_from_json(v->as_object().if_contains("Labels"), "Labels");
    }
    (void)coffer::model::parse_rfc3339(text);
    (void)coffer::model::validate_object_name(text);
    return 0;
}
