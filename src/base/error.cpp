#include "coffer/base/error.h"

#include <cstring>

namespace coffer {

int http_status(Errc code) noexcept {
    switch (code) {
        case Errc::invalid_argument:
            return 400;
        case Errc::unauthenticated:
            return 401;
        case Errc::permission_denied:
            return 403;
        case Errc::not_found:
            return 404;
        case Errc::already_exists:
            return 409;
        case Errc::conflict:
            return 409;
        case Errc::too_large:
            return 413;
        case Errc::locked:
            return 503;
        case Errc::unavailable:
            return 503;
        case Errc::internal:
            return 500;
    }
    return 500;
}

SystemError::SystemError(int err, std::string_view what)
    : std::runtime_error(fmt::format("{}: {}", what, std::strerror(err))), errno_(err) {}

void throw_errno(std::string_view what) {
    throw SystemError(errno, what);
}

}  // namespace coffer
