// One thread watching every task's container process (pidfd) and output pipe (epoll), so that
// the runner learns of exits at once and task output reaches its bounded log. Once a second it
// also reaps the orphans this subreaper inherited that ended, and checks the watched processes.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "coffer/base/unique_fd.h"

namespace coffer::agent {

// A task's output file, bounded: when it passes half the limit it is rotated to <path>.1, so
// the two together stay under the limit.
class LogFile {
  public:
    LogFile(std::string path, std::uint64_t max_bytes) : path_(std::move(path)), max_(max_bytes) {}
    void append(const char* data, std::size_t n);
    const std::string& path() const noexcept { return path_; }

  private:
    std::string path_;
    std::uint64_t max_;
    UniqueFd fd_;
    std::uint64_t size_ = 0;
};

class Monitor {
  public:
    Monitor();
    ~Monitor();
    Monitor(const Monitor&) = delete;
    Monitor& operator=(const Monitor&) = delete;

    // Once the child behind pidfd exits, reaps it and calls on_exit(wait status) on the monitor
    // thread (keep it short: hand work to a queue).
    void watch_exit(UniqueFd pidfd, std::function<void(int status)> on_exit);
    // Copies what arrives on fd into log until end of file, then calls on_eof.
    void watch_output(UniqueFd fd, std::shared_ptr<LogFile> log, std::function<void()> on_eof);

  private:
    struct Watch {
        UniqueFd fd;
        bool is_exit = false;
        std::function<void(int)> on_exit;
        std::shared_ptr<LogFile> log;
        std::function<void()> on_eof;
        bool seen_ended = false;  // by the last sweep, under mu_
    };
    static constexpr std::chrono::milliseconds sweep_period{1000};
    void add(int fd, Watch w);
    void run();
    void handle(int fd);
    // Every sweep_period: reaps orphans that ended, and exits whose event was not seen.
    void sweep();

    UniqueFd epoll_;
    UniqueFd wake_;  // eventfd: stop
    std::mutex mu_;
    std::map<int, std::shared_ptr<Watch>> watches_;
    std::thread thread_;
};

}  // namespace coffer::agent
