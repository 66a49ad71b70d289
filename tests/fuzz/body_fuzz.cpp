// Request bodies and session messages parsed into secure memory.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "coffer/model/secure_json.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    auto parsed = coffer::model::SecureJson::parse(text);
    if (parsed.ok()) {
        // What is accepted has no key twice: it reads back the same after a round trip.
        auto again = coffer::model::serialize_secure(parsed->value());
        auto reparsed = coffer::model::SecureJson::parse(again);
        if (!reparsed.ok() || reparsed->value() != parsed->value()) std::abort();
    }
    return 0;
}
