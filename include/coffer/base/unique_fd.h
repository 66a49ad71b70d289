// An owned file descriptor: closed on destruction, leaves only through release().
#pragma once

#include <utility>

namespace coffer {

class UniqueFd {
  public:
    UniqueFd() = default;
    explicit UniqueFd(int fd) noexcept : fd_(fd) {}
    UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
    UniqueFd& operator=(UniqueFd&& other) noexcept {
        reset(other.release());
        return *this;
    }
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;
    ~UniqueFd() { reset(); }

    int get() const noexcept { return fd_; }
    bool valid() const noexcept { return fd_ >= 0; }
    explicit operator bool() const noexcept { return valid(); }

    // Gives up ownership; the caller now owns the descriptor.
    [[nodiscard]] int release() noexcept { return std::exchange(fd_, -1); }
    // Closes the held descriptor (if any) and takes ownership of fd.
    void reset(int fd = -1) noexcept;

  private:
    int fd_ = -1;
};

}  // namespace coffer
