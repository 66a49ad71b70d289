// A task's health check, as Docker runs one: the service's check merged with the image's
// HEALTHCHECK, a probe every interval (every start interval while the task has not been healthy
// within its start period), killed at its timeout, and the task unhealthy after `retries`
// failures in a row. Failures within the start period do not count until the first success.
#pragma once

#include <boost/json/fwd.hpp>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "coffer/agent/task.h"
#include "coffer/base/error.h"
#include "coffer/base/unique_fd.h"

namespace coffer::agent {

using HealthClock = std::chrono::steady_clock;

// Docker's defaults and limits.
inline constexpr std::chrono::nanoseconds default_probe_interval = std::chrono::seconds(30);
inline constexpr std::chrono::nanoseconds default_probe_timeout = std::chrono::seconds(30);
inline constexpr std::chrono::nanoseconds default_start_interval = std::chrono::seconds(5);
inline constexpr int default_probe_retries = 3;
inline constexpr std::size_t max_probe_output = 4096;  // bytes of one probe's output kept

// The check a task runs: what the probe executes and when.
struct EffectiveHealth {
    std::vector<std::string> argv;  // CMD's arguments, or /bin/sh -c <CMD-SHELL's command>
    std::chrono::nanoseconds interval = default_probe_interval;
    std::chrono::nanoseconds timeout = default_probe_timeout;
    std::chrono::nanoseconds start_period{0};
    std::chrono::nanoseconds start_interval = default_start_interval;
    int retries = default_probe_retries;
};

// The service's check (absent: none given) merged field by field with the image's, as Docker
// merges a container's config with its image's. nullopt: no check (none anywhere, or NONE).
// invalid_argument for a test of another kind or without a command.
Result<std::optional<EffectiveHealth>> effective_healthcheck(
    const std::optional<HealthCheck>& service, const std::optional<HealthCheck>& image);

// An image config's "Healthcheck" object (Docker's image config). invalid_argument when it is
// not one (wrong types, negative values).
Result<HealthCheck> healthcheck_from_image_json(const boost::json::value& v);

// One probe's outcome. exit_code 0 is healthy; anything else (or a timeout) is a failure.
struct ProbeResult {
    int exit_code = -1;
    std::string output;  // the probe's own output, at most max_probe_output bytes; never logged
};

// The state machine, without a clock of its own: the times are given.
class HealthTracker {
  public:
    HealthTracker(const EffectiveHealth& check, HealthClock::time_point started);
    // How long after a probe ends (or the task started) the next one begins.
    std::chrono::nanoseconds next_interval(HealthClock::time_point now) const;
    // A probe that began at `began` ended with r: the health afterwards.
    Health record(const ProbeResult& r, HealthClock::time_point began);
    Health health() const noexcept { return health_; }
    int failing_streak() const noexcept { return streak_; }

  private:
    EffectiveHealth check_;
    HealthClock::time_point started_;
    Health health_ = Health::starting;
    int streak_ = 0;
};

// Runs the probes of one task on a thread of its own (a probe blocks for up to its timeout).
// on_change is called on that thread when the health changes (starting -> healthy, -> unhealthy;
// healthy again after failures does not change it), with the probe that changed it; after
// unhealthy no more probes run. stop() (also the destructor) cancels a probe under way and waits
// for it to end.
class HealthMonitor {
  public:
    // Runs argv in the task; ends it at timeout, or at once when cancel_fd (an eventfd) becomes
    // readable.
    using Probe = std::function<ProbeResult(std::chrono::nanoseconds timeout, int cancel_fd)>;
    using OnChange = std::function<void(Health, const ProbeResult&)>;

    HealthMonitor(EffectiveHealth check, Probe probe, OnChange on_change);
    ~HealthMonitor();
    HealthMonitor(const HealthMonitor&) = delete;
    HealthMonitor& operator=(const HealthMonitor&) = delete;

    // No probe starts after this returns; one under way is cancelled and has ended (its result
    // is dropped). A task's teardown calls it: a probe must not hold it up for its timeout
    // (a runtime's exec into a container whose init is dying may never end by itself).
    void stop();
    Health health() const;

  private:
    void run();

    Probe probe_;
    OnChange on_change_;
    HealthTracker tracker_;
    std::chrono::nanoseconds timeout_;
    UniqueFd cancel_;  // eventfd: written once by stop()
    mutable std::mutex mu_;
    std::condition_variable cv_;
    bool stopping_ = false;
    std::thread thread_;
};

// A probe's output as it may appear in a task's error: printable ASCII (others become '?'),
// whitespace runs as one space, trimmed, at most max_chars (then "...").
std::string probe_output_summary(std::string_view output, std::size_t max_chars = 512);

}  // namespace coffer::agent
