// OpenSSL's own secure heap, for the private keys it decodes and generates (the CA key, node keys):
// locked, excluded from core dumps, guarded, and cleared when freed, like our own secure memory.
#pragma once

#include "coffer/base/error.h"

namespace coffer::pki {

// Once per process, before any key is read. unavailable when the kernel refuses the lock.
Result<void> init_secure_heap();

}  // namespace coffer::pki
