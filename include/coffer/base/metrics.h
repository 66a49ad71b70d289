// Metrics in the Prometheus text exposition format (version 0.0.4): counters, gauges and
// histograms, alone or in families by label values, plus collectors that report values computed
// at scrape time. Updating a metric is a relaxed atomic add (no lock); looking up a family's child
// takes a shared lock, so hot paths look a child up once and keep the reference, which stays
// valid as long as its registry.
//
// Label values are never secret names or ids (names may be sensitive): routes are templates
// ("/secrets/{id}"), states and kinds come from fixed sets. See docs/metrics.md.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace coffer::metrics {

class Counter {
  public:
    void inc(std::uint64_t n = 1) noexcept { value_.fetch_add(n, std::memory_order_relaxed); }
    std::uint64_t value() const noexcept { return value_.load(std::memory_order_relaxed); }

  private:
    std::atomic<std::uint64_t> value_{0};
};

class Gauge {
  public:
    void set(std::int64_t v) noexcept { value_.store(v, std::memory_order_relaxed); }
    void add(std::int64_t n = 1) noexcept { value_.fetch_add(n, std::memory_order_relaxed); }
    void sub(std::int64_t n = 1) noexcept { value_.fetch_sub(n, std::memory_order_relaxed); }
    std::int64_t value() const noexcept { return value_.load(std::memory_order_relaxed); }

  private:
    std::atomic<std::int64_t> value_{0};
};

// Observations are unsigned integers in a unit of the caller's (nanoseconds, items); the
// exposition divides bucket bounds and the sum by `per_unit` (nanoseconds_per_second turns
// nanoseconds into the seconds Prometheus expects; 1 keeps counts as they are).
class Histogram {
  public:
    // bounds: ascending upper bounds (inclusive), without +Inf; borrowed for the histogram's
    // lifetime (a static array).
    Histogram(std::span<const std::uint64_t> bounds, std::uint64_t per_unit);

    void observe(std::uint64_t v) noexcept;
    void observe(std::chrono::nanoseconds d) noexcept {
        observe(static_cast<std::uint64_t>(d.count() < 0 ? 0 : d.count()));
    }
    void observe_since(std::chrono::steady_clock::time_point start) noexcept {
        observe(std::chrono::steady_clock::now() - start);
    }

    struct Snapshot {
        std::vector<std::uint64_t> cumulative;  // per bound, then +Inf (== count)
        std::uint64_t count = 0;
        std::uint64_t sum = 0;  // unscaled
    };
    Snapshot snapshot() const;
    std::span<const std::uint64_t> bounds() const noexcept { return bounds_; }
    std::uint64_t per_unit() const noexcept { return per_unit_; }

  private:
    std::span<const std::uint64_t> bounds_;
    std::uint64_t per_unit_;
    std::unique_ptr<std::atomic<std::uint64_t>[]> buckets_;  // bounds_.size() + 1
    std::atomic<std::uint64_t> sum_{0};
};

// Bucket bounds for durations in nanoseconds: 100 µs to 30 s; and for batch sizes: 1 to 256.
std::span<const std::uint64_t> duration_buckets() noexcept;
std::span<const std::uint64_t> slow_duration_buckets() noexcept;  // 1 ms to 5 min
std::span<const std::uint64_t> size_buckets() noexcept;
inline constexpr std::uint64_t nanoseconds_per_second = 1'000'000'000;

// What a collector reports at scrape time: one sample per call, label values in the order of
// the family's label names.
class Sink {
  public:
    virtual void sample(std::initializer_list<std::string_view> label_values, double value) = 0;

  protected:
    ~Sink() = default;
};

enum class Type { counter, gauge, histogram };

class Registry;

// Removes a collector from its registry when destroyed (collectors capture objects that may go
// before the registry).
class Registration {
  public:
    Registration() = default;
    Registration(Registration&& o) noexcept;
    Registration& operator=(Registration&& o) noexcept;
    ~Registration();
    void reset() noexcept;

  private:
    friend class Registry;
    Registration(Registry* r, std::uint64_t id) : registry_(r), id_(id) {}
    Registry* registry_ = nullptr;
    std::uint64_t id_ = 0;
};

template <typename Metric>
class Family;

class Registry {
  public:
    Registry();
    ~Registry();
    Registry(const Registry&) = delete;
    Registry& operator=(const Registry&) = delete;

    // A metric of this name registered again (same type and labels) returns the first one.
    // A bad name, or the same name with another type or labels, throws std::invalid_argument.
    Counter& counter(std::string_view name, std::string_view help);
    Gauge& gauge(std::string_view name, std::string_view help);
    Histogram& histogram(std::string_view name, std::string_view help,
                         std::span<const std::uint64_t> bounds, std::uint64_t per_unit);
    Family<Counter>& counter_family(std::string_view name, std::string_view help,
                                    std::vector<std::string> labels);
    Family<Gauge>& gauge_family(std::string_view name, std::string_view help,
                                std::vector<std::string> labels);
    Family<Histogram>& histogram_family(std::string_view name, std::string_view help,
                                        std::vector<std::string> labels,
                                        std::span<const std::uint64_t> bounds,
                                        std::uint64_t per_unit);

    // Values computed at scrape time (gauges of what is in memory, counters kept elsewhere).
    // collect runs on the scraping thread under the registry's lock: it must not call into the
    // registry. Several collectors may share a name (and type and labels): their samples are
    // listed together.
    [[nodiscard]] Registration collector(std::string_view name, std::string_view help, Type type,
                                         std::vector<std::string> labels,
                                         std::function<void(Sink&)> collect);

    // Every metric in the text exposition format 0.0.4, families in name order.
    std::string expose() const;

    struct Impl;

  private:
    friend class Registration;
    void remove_collector(std::uint64_t id) noexcept;
    std::unique_ptr<Impl> impl_;
};

// The process's registry: what the manager's or agent's metrics listener serves.
Registry& registry();

namespace detail {
struct FamilyCore;
void* family_child(FamilyCore& core, std::initializer_list<std::string_view> values);
}  // namespace detail

// Children by label values, made on first use. with() throws std::invalid_argument when the
// number of values differs from the number of labels.
template <typename Metric>
class Family {
  public:
    explicit Family(detail::FamilyCore& core) : core_(core) {}
    Metric& with(std::initializer_list<std::string_view> values) {
        return *static_cast<Metric*>(detail::family_child(core_, values));
    }

  private:
    detail::FamilyCore& core_;
};

// Text format escapes: label values ('\\', '"', newline) and help text ('\\', newline).
std::string escape_label_value(std::string_view v);
std::string escape_help(std::string_view v);

}  // namespace coffer::metrics
