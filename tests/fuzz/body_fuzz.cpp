// Request bodies and session messages parsed into secure memory.
#include <cstdint>
#include <string_view>

#include "coffer/model/secure_json.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    auto parsed = coffer::model::SecureJson::parse(text);
    if (parsed.ok()) (void)coffer::model::serialize_secure(parsed->value());
    return 0;
}
