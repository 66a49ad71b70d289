// Group commit for the manager's writes. Requests hand their batch to the committer and are
// answered when it is durable; the committer thread merges every batch waiting at that moment
// into one synchronous store write (one fsync), so a burst of requests costs one disk flush and
// no thread per waiting request. Batches must be independent (their keys reserved by the caller).
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "coffer/base/error.h"
#include "coffer/store/store.h"

namespace coffer::manager {

class Committer {
  public:
    using Done = std::function<void(Result<void>)>;

    explicit Committer(store::Store& store);  // borrowed for the committer's lifetime
    // Commits what was submitted, then stops.
    ~Committer();
    Committer(const Committer&) = delete;
    Committer& operator=(const Committer&) = delete;

    // done runs on the committer thread once the batch is durable, or failed.
    void submit(store::Batch batch, Done done);

  private:
    void run();

    struct Pending {
        store::Batch batch;
        Done done;
    };
    store::Store& store_;
    const store::BatchLimits limits_;
    std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<Pending> queue_;
    bool stopping_ = false;
    std::thread thread_;
};

}  // namespace coffer::manager
