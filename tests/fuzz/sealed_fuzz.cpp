// Sealed records as read back from disk: any bytes must fail cleanly, never crash.
#include <cstdint>
#include <string_view>

#include "coffer/crypto/aead.h"
#include "coffer/crypto/encoding.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const auto key = coffer::crypto::Key::generate(1);
    std::string_view text(reinterpret_cast<const char*>(data), size);
    (void)coffer::crypto::sealed_key_id(text);
    (void)coffer::crypto::open(key, text, "secrets\0id");
    (void)coffer::crypto::base64_decode_secure(text);
    (void)coffer::crypto::base64url_decode_secure(text);
    return 0;
}
