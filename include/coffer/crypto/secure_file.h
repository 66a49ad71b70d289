// Reading secret bytes from a file straight into secure memory, never through a std::string.
#pragma once

#include <string_view>

#include "coffer/crypto/secure_buffer.h"

namespace coffer::crypto {

// Reads at most max_bytes from fd (until end of file) into secure memory. Throws SystemError with
// "read <what>" when a read fails.
SecureBuffer read_secure(int fd, std::size_t max_bytes, std::string_view what);

}  // namespace coffer::crypto
