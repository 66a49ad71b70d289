#include "coffer/manager/committer.h"

#include <vector>

#include "coffer/base/metrics.h"

namespace coffer::manager {

namespace {
// A group's size is bounded so one failure fails few requests and latency stays even.
constexpr std::size_t max_group = 256;

// Registered when the program starts, so that every scrape lists it.
metrics::Histogram& group_sizes = metrics::registry().histogram(
    "coffer_store_group_commit_size",
    "Requests merged into one group commit (one synchronous store write).", metrics::size_buckets(),
    1);
}  // namespace

Committer::Committer(store::Store& store)
    : store_(store), limits_(store.batch_limits()), thread_([this] { run(); }) {}

Committer::~Committer() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_one();
    thread_.join();
}

void Committer::submit(store::Batch batch, Done done) {
    {
        std::lock_guard lock(mutex_);
        queue_.push_back({std::move(batch), std::move(done)});
    }
    wake_.notify_one();
}

void Committer::run() {
    std::vector<Pending> group;
    for (;;) {
        {
            std::unique_lock lock(mutex_);
            wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
            if (queue_.empty()) return;  // stopping, and nothing left
            // Within what the store takes in one write (etcd's transaction limits): a request
            // alone beyond them fails by itself, never its neighbours.
            std::size_t ops = 0, bytes = 0;
            while (!queue_.empty() && group.size() < max_group) {
                const auto& next = queue_.front().batch;
                if (!group.empty() &&
                    (ops + next.ops().size() > limits_.ops || bytes + next.bytes() > limits_.bytes))
                    break;
                ops += next.ops().size();
                bytes += next.bytes();
                group.push_back(std::move(queue_.front()));
                queue_.pop_front();
            }
        }
        group_sizes.observe(group.size());
        store::Batch merged;
        for (auto& p : group) merged.append(std::move(p.batch));
        auto result = store_.write(std::move(merged));
        for (auto& p : group) p.done(result);
        group.clear();
    }
}

}  // namespace coffer::manager
