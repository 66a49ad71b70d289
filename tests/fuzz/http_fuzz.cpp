// Request targets (path and query) as they arrive on the socket.
#include <cstdint>
#include <string_view>

#include "coffer/net/http.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    coffer::net::Request r;
    coffer::net::parse_target(text, r);
    (void)coffer::net::percent_decode(text, true);
    (void)coffer::net::percent_encode(text);
    return 0;
}
