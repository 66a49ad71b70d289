#include "log_tail.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "coffer/base/unique_fd.h"

namespace coffer::agent {

namespace {

// Up to `max` bytes from the end of the file; sets truncated when the file had more.
Result<std::string> read_end(const std::string& path, std::size_t max, bool& truncated) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK));
    if (!fd) {
        if (errno == ENOENT) return std::string();
        return make_error(Errc::internal, fmt::format("read {}: {}", path, std::strerror(errno)));
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode))
        return make_error(Errc::internal, fmt::format("read {}: not a regular file", path));
    auto size = static_cast<std::size_t>(st.st_size);
    auto want = std::min(size, max);
    truncated = size > max;
    std::string out(want, '\0');
    std::size_t got = 0;
    auto offset = static_cast<off_t>(size - want);
    while (got < want) {
        auto n = ::pread(fd.get(), out.data() + got, want - got, offset + static_cast<off_t>(got));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0)
            return make_error(Errc::internal,
                              fmt::format("read {}: {}", path, std::strerror(errno)));
        if (n == 0) break;  // shrank meanwhile (rotated)
        got += static_cast<std::size_t>(n);
    }
    out.resize(got);
    return out;
}

}  // namespace

Result<std::string> read_log_tail(const std::string& path, std::size_t lines,
                                  std::size_t max_bytes) {
    bool truncated = false;
    auto current = read_end(path, max_bytes, truncated);
    if (!current) return current;
    std::string text;
    if (current->size() < max_bytes && !truncated) {
        auto older = read_end(path + ".1", max_bytes - current->size(), truncated);
        if (!older) return older;
        text = std::move(*older);
    }
    text += *current;
    if (truncated) {
        // The first line was cut by the bound: leave it out.
        auto nl = text.find('\n');
        text.erase(0, nl == std::string::npos ? text.size() : nl + 1);
    }
    if (lines == 0 || text.empty()) return text;
    // Count lines from the end; a final newline does not start another line.
    std::size_t end = text.size();
    if (text[end - 1] == '\n') --end;
    std::size_t found = 0;
    for (std::size_t i = end; i > 0; --i) {
        if (text[i - 1] == '\n' && ++found == lines) return text.substr(i);
    }
    return text;
}

}  // namespace coffer::agent
