// Reading secret bytes from a file or standard input straight into secure memory.
#pragma once

#include <string>

#include "coffer/base/error.h"
#include "coffer/crypto/secure_buffer.h"

namespace coffer::cli {

// Reads all of fd (binary-safe) up to limit bytes; more is an error, as is nothing at all.
// what names the source in messages ("STDIN", a path).
Result<crypto::SecureBuffer> read_secret(int fd, std::size_t limit, std::string_view what);
// "-" reads standard input; anything else is a path.
Result<crypto::SecureBuffer> read_secret_source(const std::string& source, std::size_t limit);

}  // namespace coffer::cli
