#include "secret_input.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>

#include "coffer/base/unique_fd.h"

namespace coffer::cli {

Result<crypto::SecureBuffer> read_secret(int fd, std::size_t limit, std::string_view what) {
    crypto::SecureBuffer buf(std::min<std::size_t>(limit + 1, 64 * 1024));
    std::size_t used = 0;
    for (;;) {
        if (used == buf.size()) {
            if (used > limit)
                return make_error(
                    Errc::invalid_argument,
                    fmt::format("error reading from {}: more than {} bytes", what, limit));
            crypto::SecureBuffer bigger(std::min(buf.size() * 2, limit + 1));
            std::memcpy(bigger.data(), buf.data(), used);
            buf = std::move(bigger);
        }
        ssize_t n = ::read(fd, buf.data() + used, buf.size() - used);
        if (n < 0) {
            if (errno == EINTR) continue;
            return make_error(Errc::invalid_argument,
                              fmt::format("error reading from {}: {}", what, std::strerror(errno)));
        }
        if (n == 0) break;
        used += static_cast<std::size_t>(n);
    }
    if (used > limit)
        return make_error(Errc::invalid_argument,
                          fmt::format("error reading from {}: more than {} bytes", what, limit));
    if (used == 0)
        return make_error(Errc::invalid_argument,
                          fmt::format("error reading from {}: data is empty", what));
    buf.truncate(used);
    return buf;
}

Result<crypto::SecureBuffer> read_secret_source(const std::string& source, std::size_t limit) {
    if (source == "-") return read_secret(STDIN_FILENO, limit, "STDIN");
    UniqueFd fd(::open(source.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
    if (!fd)
        return make_error(
            Errc::invalid_argument,
            fmt::format("error reading content from \"{}\": {}", source, std::strerror(errno)));
    return read_secret(fd.get(), limit, fmt::format("\"{}\"", source));
}

}  // namespace coffer::cli
