// A few threads running posted jobs in order; the runner's blocking work (runtime delete,
// unmounts) goes here, never onto the monitor thread.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace coffer::agent {

class WorkQueue {
  public:
    explicit WorkQueue(unsigned threads) {
        for (unsigned i = 0; i < std::max(1u, threads); ++i)
            threads_.emplace_back([this] { loop(); });
    }
    // Runs what was posted, then joins.
    ~WorkQueue() {
        {
            std::lock_guard g(mu_);
            stopping_ = true;
        }
        cv_.notify_all();
        for (auto& t : threads_) t.join();
    }
    void post(std::function<void()> job) {
        {
            std::lock_guard g(mu_);
            jobs_.push_back(std::move(job));
        }
        cv_.notify_one();
    }

  private:
    void loop() {
        while (true) {
            std::function<void()> job;
            {
                std::unique_lock l(mu_);
                cv_.wait(l, [&] { return stopping_ || !jobs_.empty(); });
                if (jobs_.empty()) return;
                job = std::move(jobs_.front());
                jobs_.pop_front();
            }
            job();
        }
    }
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::function<void()>> jobs_;
    bool stopping_ = false;
    std::vector<std::thread> threads_;
};

}  // namespace coffer::agent
