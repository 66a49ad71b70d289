// Request bodies parsed into secure memory (secret create/update, unlock).
#include <cstdint>
#include <string_view>

#include "request_json.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    auto parsed = coffer::manager::SecureJson::parse(text);
    if (parsed.ok()) (void)(*parsed)->object().if_contains("Data");
    return 0;
}
