#include "guard.h"

#include <algorithm>

namespace coffer::nodeconn::detail {

std::string source_of(const boost::asio::ip::address& address) {
    if (address.is_v4()) return address.to_string();
    auto v6 = address.to_v6();
    if (v6.is_v4_mapped())
        return boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, v6).to_string();
    auto bytes = v6.to_bytes();
    std::fill(bytes.begin() + 8, bytes.end(), 0);
    return boost::asio::ip::address_v6(bytes).to_string() + "/64";
}

Admission::Admission(std::size_t total, std::size_t per_source)
    : total_limit_(total), per_source_(std::max<std::size_t>(per_source, 1)), busy_(total / 2) {}

Admission::Verdict Admission::admit(const std::string& source) {
    std::lock_guard lock(mutex_);
    if (total_ >= total_limit_) return Verdict::full;
    auto it = by_source_.find(source);
    const std::size_t held = it == by_source_.end() ? 0 : it->second;
    if (total_ >= busy_ && held >= per_source_) return Verdict::source_full;
    ++total_;
    if (it == by_source_.end())
        by_source_.emplace(source, 1);
    else
        ++it->second;
    return Verdict::admitted;
}

void Admission::release(const std::string& source) noexcept {
    std::lock_guard lock(mutex_);
    auto it = by_source_.find(source);
    if (it == by_source_.end()) return;
    --total_;
    if (--it->second == 0) by_source_.erase(it);
}

std::size_t Admission::count() const {
    std::lock_guard lock(mutex_);
    return total_;
}

std::size_t Admission::count(const std::string& source) const {
    std::lock_guard lock(mutex_);
    auto it = by_source_.find(source);
    return it == by_source_.end() ? 0 : it->second;
}

JoinRate::JoinRate(std::size_t burst, std::chrono::milliseconds interval)
    : burst_(static_cast<double>(std::max<std::size_t>(burst, 1))),
      interval_(std::max(interval, std::chrono::milliseconds(1))) {}

double JoinRate::refill(const Bucket& b, GuardClock::time_point now) const {
    const std::chrono::duration<double> passed = now - b.at;
    return std::min(burst_, b.tokens + passed / interval_);
}

bool JoinRate::allow(const std::string& source, GuardClock::time_point now) {
    std::lock_guard lock(mutex_);
    auto it = buckets_.find(source);
    return it == buckets_.end() || refill(it->second, now) >= 1.0;
}

void JoinRate::refused(const std::string& source, GuardClock::time_point now) {
    std::lock_guard lock(mutex_);
    // Full buckets say nothing a new one would not: they go when the map grows.
    if (buckets_.size() >= 4096)
        std::erase_if(buckets_, [&](const auto& kv) { return refill(kv.second, now) >= burst_; });
    auto [it, fresh] = buckets_.try_emplace(source, Bucket{burst_, now});
    auto& b = it->second;
    b.tokens = std::max(0.0, refill(b, now) - 1.0);
    b.at = now;
}

RefusalLog::RefusalLog(std::string category, std::chrono::milliseconds interval,
                       std::size_t max_sources)
    : category_(std::move(category)), interval_(interval), max_sources_(max_sources) {}

void RefusalLog::summarise(const Entry& e) const {
    if (e.more == 0) return;
    log::emit(category_, e.level, "{} from {}: {} more in the last {} s (the last: {})", e.what,
              e.source, e.more, std::chrono::duration_cast<std::chrono::seconds>(interval_).count(),
              e.reason);
}

void RefusalLog::refused(log::Level level, std::string_view what, const std::string& source,
                         std::string_view reason, GuardClock::time_point now) {
    std::lock_guard lock(mutex_);
    std::string key = fmt::format("{} {}", what, source);
    auto it = entries_.find(key);
    if (it != entries_.end() && now - it->second.since < interval_) {
        ++it->second.more;
        it->second.reason = std::string(reason);
        return;
    }
    if (it != entries_.end()) {
        summarise(it->second);
        entries_.erase(it);
    } else if (entries_.size() >= max_sources_) {
        if (others_ == 0) others_since_ = now;
        ++others_;
        return;
    }
    log::emit(category_, level, "{} from {}: {}", what, source, reason);
    entries_.emplace(std::move(key),
                     Entry{level, std::string(what), source, std::string(reason), now, 0});
}

void RefusalLog::flush(GuardClock::time_point now, bool all) {
    std::lock_guard lock(mutex_);
    for (auto it = entries_.begin(); it != entries_.end();) {
        if (all || now - it->second.since >= interval_) {
            summarise(it->second);
            it = entries_.erase(it);
        } else {
            ++it;
        }
    }
    if (others_ != 0 && (all || now - others_since_ >= interval_)) {
        log::warn(category_, "{} more refusals from more than {} other sources", others_,
                  max_sources_);
        others_ = 0;
    }
}

}  // namespace coffer::nodeconn::detail
