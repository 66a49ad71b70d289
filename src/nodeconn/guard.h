// What keeps one source from taking the node port: a share of the connections that have not yet
// shown a certificate, a rate for refused joins, and refusal log lines counted per source instead
// of written one by one. Internal; thread-safe.
#pragma once

#include <boost/asio/ip/address.hpp>

#include <chrono>
#include <cstddef>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

#include "coffer/base/log.h"

namespace coffer::nodeconn::detail {

using GuardClock = std::chrono::steady_clock;

// The unit a share is counted in: an IPv4 address (IPv4-mapped IPv6 included), or an IPv6 /64,
// the least a single host or site is handed.
std::string source_of(const boost::asio::ip::address& address);

// Connections that have not yet presented a cluster certificate. Below `busy` of them, any source
// may open more; from `busy` on, a source that already holds `per_source` is refused; at `total`
// everyone is.
class Admission {
  public:
    enum class Verdict { admitted, full, source_full };
    Admission(std::size_t total, std::size_t per_source);
    Verdict admit(const std::string& source);
    void release(const std::string& source) noexcept;
    std::size_t count() const;
    std::size_t count(const std::string& source) const;

  private:
    mutable std::mutex mutex_;
    std::size_t total_limit_;
    std::size_t per_source_;
    std::size_t busy_;
    std::size_t total_ = 0;
    std::map<std::string, std::size_t, std::less<>> by_source_;
};

// Refused joins per source: a burst, then one every `interval` (a token bucket per source that
// refusals drain). A source with none left is refused before its join is looked at; joins that
// succeed cost nothing, so nodes joining in numbers from one address are not held back.
class JoinRate {
  public:
    JoinRate(std::size_t burst, std::chrono::milliseconds interval);
    bool allow(const std::string& source, GuardClock::time_point now = GuardClock::now());
    void refused(const std::string& source, GuardClock::time_point now = GuardClock::now());

  private:
    struct Bucket {
        double tokens;
        GuardClock::time_point at;
    };
    double refill(const Bucket& b, GuardClock::time_point now) const;

    std::mutex mutex_;
    double burst_;
    std::chrono::duration<double> interval_;
    std::map<std::string, Bucket, std::less<>> buckets_;
};

// Refusal lines: the first of a kind from a source in an interval is written at once; the
// others are counted and written as one line when the interval has passed (flush). Past
// max_sources sources in one interval, the rest are counted together.
class RefusalLog {
  public:
    RefusalLog(std::string category, std::chrono::milliseconds interval,
               std::size_t max_sources = 1024);
    // what: "connection refused", "join refused"; reason: a sentence without secrets.
    void refused(log::Level level, std::string_view what, const std::string& source,
                 std::string_view reason, GuardClock::time_point now = GuardClock::now());
    // Writes the counts of the intervals that have passed (all of them when `all`).
    void flush(GuardClock::time_point now = GuardClock::now(), bool all = false);

  private:
    struct Entry {
        log::Level level;
        std::string what, source, reason;
        GuardClock::time_point since;
        std::size_t more = 0;
    };
    void summarise(const Entry& e) const;

    std::string category_;
    std::chrono::milliseconds interval_;
    std::size_t max_sources_;
    std::mutex mutex_;
    std::map<std::string, Entry, std::less<>> entries_;  // by what + source
    std::size_t others_ = 0;                             // refusals past max_sources
    GuardClock::time_point others_since_{};
};

}  // namespace coffer::nodeconn::detail
