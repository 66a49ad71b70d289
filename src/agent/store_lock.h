// An exclusive lock on the image store across agent processes (the CLI and the daemon).
#pragma once

#include <fcntl.h>
#include <sys/file.h>

#include <cerrno>
#include <string>

#include "coffer/base/error.h"
#include "coffer/base/unique_fd.h"

namespace coffer::agent {

class StoreLock {
  public:
    explicit StoreLock(const std::string& dir)
        : fd_(::open((dir + "/lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600)) {
        if (!fd_) throw_errno("open image store lock");
        while (::flock(fd_.get(), LOCK_EX) != 0)
            if (errno != EINTR) throw_errno("lock image store");
    }

  private:
    UniqueFd fd_;
};

}  // namespace coffer::agent
