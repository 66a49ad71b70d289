#include "coffer/crypto/secure_file.h"

#include <unistd.h>

#include <sodium.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "coffer/base/error.h"

namespace coffer::crypto {

SecureBuffer read_secure(int fd, std::size_t max_bytes, std::string_view what) {
    SecureBuffer buf(max_bytes);
    std::size_t got = 0;
    while (got < buf.size()) {
        auto n = ::read(fd, buf.data() + got, buf.size() - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_errno(fmt::format("read {}", what));
        if (n == 0) break;
        got += static_cast<std::size_t>(n);
    }
    buf.truncate(got);
    return buf;
}

SecureBuffer take_secret_argument(std::string& parsed, std::span<const std::string> copies,
                                  std::string_view flag, const char* env_name, int argc,
                                  char** argv) {
    auto secret = SecureBuffer::copy_of(parsed);
    sodium_memzero(parsed.data(), parsed.size());
    parsed.clear();
    // The parser's strings are the caller's to overwrite.
    for (const auto& c : copies) sodium_memzero(const_cast<char*>(c.data()), c.size());
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        if (arg == flag && i + 1 < argc)
            sodium_memzero(argv[i + 1], std::strlen(argv[i + 1]));
        else if (arg.starts_with(flag) && arg.size() > flag.size() && arg[flag.size()] == '=')
            sodium_memzero(argv[i] + flag.size() + 1, arg.size() - flag.size() - 1);
    }
    if (char* env = std::getenv(env_name)) sodium_memzero(env, std::strlen(env));
    return secret;
}

}  // namespace coffer::crypto
