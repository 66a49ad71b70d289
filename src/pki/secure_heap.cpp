#include "coffer/pki/secure_heap.h"

#include <openssl/crypto.h>

namespace coffer::pki {

Result<void> init_secure_heap() {
    if (CRYPTO_secure_malloc_initialized()) return {};
    // 1 MiB in blocks of at least 32 bytes: room for a few hundred EC keys at once.
    if (CRYPTO_secure_malloc_init(1 << 20, 32) == 0)
        return make_error(Errc::unavailable,
                          "cannot set up OpenSSL's secure heap (mlock refused?)");
    return {};
}

}  // namespace coffer::pki
