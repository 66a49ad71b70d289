#include "unlock_limiter.h"

#include <algorithm>

namespace coffer::manager {

namespace {

// Not a source the API names ("uid N", "unknown peer").
constexpr std::string_view shared_record = "(other sources)";

}  // namespace

UnlockLimiter::UnlockLimiter(Options options) : options_(options), tokens_(options.global_burst) {}

void UnlockLimiter::refill(Clock::time_point now) {
    if (tokens_ >= options_.global_burst) {
        refilled_ = now;
        return;
    }
    if (now <= refilled_) return;
    auto intervals = static_cast<unsigned long>((now - refilled_) / options_.global_interval);
    if (intervals == 0) return;
    auto room = static_cast<unsigned long>(options_.global_burst - tokens_);
    tokens_ += static_cast<unsigned>(std::min(intervals, room));
    refilled_ =
        tokens_ >= options_.global_burst
            ? now
            : refilled_ + static_cast<Clock::duration::rep>(intervals) * options_.global_interval;
}

UnlockLimiter::Record* UnlockLimiter::find(const std::string& source) {
    if (auto it = sources_.find(source); it != sources_.end()) return &it->second;
    if (sources_.size() >= options_.max_sources)
        if (auto it = sources_.find(shared_record); it != sources_.end()) return &it->second;
    return nullptr;
}

UnlockLimiter::Record& UnlockLimiter::record(const std::string& source, Clock::time_point now) {
    if (auto* r = find(source)) return *r;
    if (sources_.size() >= options_.max_sources) {
        // Forget the sources that have been quiet long enough; share one record beyond that.
        std::erase_if(sources_, [&](const auto& entry) {
            return now - entry.second.last >= options_.forget_after && now >= entry.second.next;
        });
        if (sources_.size() >= options_.max_sources) return sources_[std::string(shared_record)];
    }
    return sources_[source];
}

UnlockLimiter::Verdict UnlockLimiter::admit(const std::string& source, Clock::time_point now) {
    refill(now);
    Verdict v;
    auto* r = find(source);
    if (r != nullptr && now < r->next) {
        v.allowed = false;
        v.wait = r->next - now;
    } else if (tokens_ == 0) {
        v.allowed = false;
        v.global = true;
        v.wait = refilled_ + options_.global_interval - now;
    }
    if (!v.allowed && r != nullptr) ++r->refused;
    return v;
}

UnlockLimiter::Failure UnlockLimiter::failed(const std::string& source, Clock::time_point now) {
    refill(now);
    auto& r = record(source, now);
    if (r.in_a_row > 0 && now - r.last >= options_.forget_after && now >= r.next) r.in_a_row = 0;
    ++r.in_a_row;
    r.last = now;
    Clock::duration wait{};
    if (r.in_a_row >= options_.free_failures) {
        wait = options_.first_wait;
        for (auto n = options_.free_failures; n < r.in_a_row && wait < options_.max_wait; ++n)
            wait *= 2;
        wait = std::min(wait, options_.max_wait);
    }
    r.next = now + wait;
    if (tokens_ > 0) --tokens_;
    Failure f{r.in_a_row, r.refused, wait};
    r.refused = 0;
    return f;
}

unsigned long UnlockLimiter::succeeded(const std::string& source) {
    auto* r = find(source);
    unsigned long refused = r != nullptr ? r->refused : 0;
    sources_.clear();
    tokens_ = options_.global_burst;
    return refused;
}

}  // namespace coffer::manager
