// Reading secret bytes from a file straight into secure memory, never through a std::string.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "coffer/crypto/secure_buffer.h"

namespace coffer::crypto {

// Reads at most max_bytes from fd (until end of file) into secure memory. Throws SystemError with
// "read <what>" when a read fails.
SecureBuffer read_secure(int fd, std::size_t max_bytes, std::string_view what);

// A secret given on the command line (a join token): moved into secure memory, and every other
// copy wiped: parsed (the option's variable), copies (what the option parser kept), the process's
// arguments after `flag` (`flag VALUE` and `flag=VALUE`, which also hides it from
// /proc/<pid>/cmdline), and the environment variable env_name.
SecureBuffer take_secret_argument(std::string& parsed, std::span<const std::string> copies,
                                  std::string_view flag, const char* env_name, int argc,
                                  char** argv);

}  // namespace coffer::crypto
