#include "coffer/base/unique_fd.h"

#include <unistd.h>

namespace coffer {

void UniqueFd::reset(int fd) noexcept {
    int old = std::exchange(fd_, fd);
    // close() on Linux releases the descriptor even when it reports EINTR: never retry.
    if (old >= 0) ::close(old);
}

}  // namespace coffer
