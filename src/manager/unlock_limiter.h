// How often unlock keys may be tried. Each source (on the unix socket: the connecting uid, as
// the kernel tells it; nothing else on that socket tells callers apart) may fail a few times,
// then waits after each failure twice as long as after the one before, up to a ceiling; every
// source together may fail only so often, so that many sources do not add up to a fast guesser.
// A success forgets every count. Not thread-safe: the API serialises unlock attempts.
#pragma once

#include <chrono>
#include <cstddef>
#include <map>
#include <string>

namespace coffer::manager {

class UnlockLimiter {
  public:
    using Clock = std::chrono::steady_clock;

    struct Options {
        unsigned free_failures = 5;  // failures in a row a source makes before it waits
        Clock::duration first_wait = std::chrono::seconds(1);
        Clock::duration max_wait = std::chrono::minutes(5);
        Clock::duration forget_after = std::chrono::minutes(15);  // a quiet source starts afresh
        unsigned global_burst = 30;  // failures of all sources together, then ...
        Clock::duration global_interval = std::chrono::seconds(2);  // ... one per interval
        std::size_t max_sources = 4096;  // beyond it, new sources share one record
    };

    UnlockLimiter() : UnlockLimiter(Options{}) {}
    explicit UnlockLimiter(Options options);

    struct Verdict {
        bool allowed = true;
        Clock::duration wait{};  // when refused: how long until the next attempt may be made
        bool global = false;     // refused for every source, not this one alone
    };
    // Whether source may try a key now. A refusal is counted (see Failure::refused).
    Verdict admit(const std::string& source, Clock::time_point now);

    struct Failure {
        unsigned in_a_row = 0;      // this source's failures since its last success or quiet spell
        unsigned long refused = 0;  // attempts refused for this source since its previous failure
        Clock::duration wait{};     // before this source may try again (zero: at once)
    };
    Failure failed(const std::string& source, Clock::time_point now);
    // Attempts refused for source since its last failure; forgets every source's record.
    unsigned long succeeded(const std::string& source);

    std::size_t sources() const noexcept { return sources_.size(); }

  private:
    struct Record {
        unsigned in_a_row = 0;
        unsigned long refused = 0;
        Clock::time_point last{};
        Clock::time_point next{};  // no attempt before
    };
    // The source's record, or the one sources share once max_sources are known; null when none.
    Record* find(const std::string& source);
    Record& record(const std::string& source, Clock::time_point now);
    void refill(Clock::time_point now);

    Options options_;
    std::map<std::string, Record, std::less<>> sources_;
    // The global budget: failures that may still be made at once, refilled one per interval.
    unsigned tokens_;
    Clock::time_point refilled_{};
};

}  // namespace coffer::manager
