#include "coffer/crypto/secure_file.h"

#include <unistd.h>

#include <cerrno>

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

}  // namespace coffer::crypto
