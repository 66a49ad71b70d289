#include "coffer/base/metrics.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <stdexcept>
#include <utility>

#include <fmt/format.h>

namespace coffer::metrics {

namespace {

constexpr std::uint64_t us = 1'000, ms = 1'000'000, s = 1'000'000'000;
constexpr std::uint64_t duration_bounds[] = {100 * us, 250 * us, 500 * us, 1 * ms,  2500 * us,
                                             5 * ms,   10 * ms,  25 * ms,  50 * ms, 100 * ms,
                                             250 * ms, 500 * ms, 1 * s,    5 * s,   30 * s};
constexpr std::uint64_t slow_duration_bounds[] = {1 * ms,   5 * ms,   10 * ms,  25 * ms, 50 * ms,
                                                  100 * ms, 250 * ms, 500 * ms, 1 * s,   2 * s,
                                                  5 * s,    10 * s,   30 * s,   60 * s,  300 * s};
constexpr std::uint64_t size_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};

bool valid_name(std::string_view n, bool colon) {
    auto first = [&](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':');
    };
    if (n.empty() || !first(n[0])) return false;
    return std::all_of(n.begin() + 1, n.end(),
                       [&](char c) { return first(c) || (c >= '0' && c <= '9'); });
}

// Label values compared against stored children without copying the lookup's values.
struct LabelLess {
    using is_transparent = void;
    template <typename A, typename B>
    bool operator()(const A& a, const B& b) const {
        return std::lexicographical_compare(
            a.begin(), a.end(), b.begin(), b.end(),
            [](std::string_view x, std::string_view y) { return x < y; });
    }
};
using Values = std::vector<std::string>;
using Lookup = std::initializer_list<std::string_view>;

std::string_view type_name(Type t) {
    switch (t) {
        case Type::counter:
            return "counter";
        case Type::gauge:
            return "gauge";
        case Type::histogram:
            return "histogram";
    }
    return "untyped";
}

// A sample value: integers as integers, others in the shortest form that reads back the same.
std::string number(double v) {
    if (std::isnan(v)) return "NaN";
    if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
    if (v == std::trunc(v) && std::fabs(v) < 9.007199254740992e15)
        return fmt::format("{}", static_cast<std::int64_t>(v));
    return fmt::format("{}", v);
}

std::string ratio(std::uint64_t v, std::uint64_t per_unit) {
    if (per_unit == 1) return fmt::format("{}", v);
    return number(static_cast<double>(v) / static_cast<double>(per_unit));
}

// {a="x",b="y"} with an optional extra label (le), or nothing when there are no labels.
std::string label_text(const std::vector<std::string>& names, std::span<const std::string> values,
                       std::string_view extra_name = {}, std::string_view extra_value = {}) {
    if (names.empty() && extra_name.empty()) return {};
    std::string out = "{";
    for (std::size_t i = 0; i < names.size(); ++i) {
        if (i) out += ',';
        out += fmt::format("{}=\"{}\"", names[i], escape_label_value(values[i]));
    }
    if (!extra_name.empty())
        out += fmt::format("{}{}=\"{}\"", names.empty() ? "" : ",", extra_name, extra_value);
    out += '}';
    return out;
}

}  // namespace

Histogram::Histogram(std::span<const std::uint64_t> bounds, std::uint64_t per_unit)
    : bounds_(bounds),
      per_unit_(per_unit == 0 ? 1 : per_unit),
      buckets_(std::make_unique<std::atomic<std::uint64_t>[]>(bounds.size() + 1)) {
    if (!std::is_sorted(bounds.begin(), bounds.end()) ||
        std::adjacent_find(bounds.begin(), bounds.end()) != bounds.end())
        throw std::invalid_argument("histogram bounds must ascend");
}

void Histogram::observe(std::uint64_t v) noexcept {
    auto i = static_cast<std::size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) -
                                      bounds_.begin());
    buckets_[i].fetch_add(1, std::memory_order_relaxed);
    sum_.fetch_add(v, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::snapshot() const {
    Snapshot out;
    out.cumulative.reserve(bounds_.size() + 1);
    // The count is the buckets' total, so +Inf and _count agree even while observations land.
    std::uint64_t total = 0;
    for (std::size_t i = 0; i <= bounds_.size(); ++i) {
        total += buckets_[i].load(std::memory_order_relaxed);
        out.cumulative.push_back(total);
    }
    out.count = total;
    out.sum = sum_.load(std::memory_order_relaxed);
    return out;
}

std::span<const std::uint64_t> duration_buckets() noexcept {
    return duration_bounds;
}
std::span<const std::uint64_t> slow_duration_buckets() noexcept {
    return slow_duration_bounds;
}
std::span<const std::uint64_t> size_buckets() noexcept {
    return size_bounds;
}

std::string escape_label_value(std::string_view v) {
    std::string out;
    out.reserve(v.size());
    for (char c : v) {
        if (c == '\\')
            out += "\\\\";
        else if (c == '"')
            out += "\\\"";
        else if (c == '\n')
            out += "\\n";
        else
            out += c;
    }
    return out;
}

std::string escape_help(std::string_view v) {
    std::string out;
    out.reserve(v.size());
    for (char c : v) {
        if (c == '\\')
            out += "\\\\";
        else if (c == '\n')
            out += "\\n";
        else
            out += c;
    }
    return out;
}

namespace detail {

struct FamilyCore {
    std::string name;
    std::string help;
    Type type;
    std::vector<std::string> labels;
    std::span<const std::uint64_t> bounds;  // histograms
    std::uint64_t per_unit = 1;

    struct Child {
        std::unique_ptr<Counter> counter;
        std::unique_ptr<Gauge> gauge;
        std::unique_ptr<Histogram> histogram;
    };
    mutable std::shared_mutex mutex;
    std::map<Values, Child, LabelLess> children;  // under mutex

    // Collectors of this name, by registration id; a family has children or collectors.
    std::map<std::uint64_t, std::function<void(Sink&)>> collectors;  // under the registry's mutex

    // What the registry hands out for this family, one per kind of metric.
    Family<Counter> counters{*this};
    Family<Gauge> gauges{*this};
    Family<Histogram> histograms{*this};

    Child make() const {
        Child c;
        switch (type) {
            case Type::counter:
                c.counter = std::make_unique<Counter>();
                break;
            case Type::gauge:
                c.gauge = std::make_unique<Gauge>();
                break;
            case Type::histogram:
                c.histogram = std::make_unique<Histogram>(bounds, per_unit);
                break;
        }
        return c;
    }
    static void* pointer(Child& c) {
        if (c.counter) return c.counter.get();
        if (c.gauge) return c.gauge.get();
        return c.histogram.get();
    }
};

void* family_child(FamilyCore& core, Lookup values) {
    if (values.size() != core.labels.size())
        throw std::invalid_argument(fmt::format("metric {}: {} label values for {} labels",
                                                core.name, values.size(), core.labels.size()));
    {
        std::shared_lock lock(core.mutex);
        if (auto it = core.children.find(values); it != core.children.end())
            return FamilyCore::pointer(it->second);
    }
    std::unique_lock lock(core.mutex);
    auto it = core.children.find(values);
    if (it == core.children.end())
        it = core.children.emplace(Values(values.begin(), values.end()), core.make()).first;
    return FamilyCore::pointer(it->second);
}

}  // namespace detail

struct Registry::Impl {
    mutable std::mutex mutex;
    std::map<std::string, std::unique_ptr<detail::FamilyCore>, std::less<>> families;
    std::uint64_t next_id = 1;

    detail::FamilyCore& family(std::string_view name, std::string_view help, Type type,
                               std::vector<std::string> labels,
                               std::span<const std::uint64_t> bounds, std::uint64_t per_unit,
                               bool collector) {
        if (!valid_name(name, true))
            throw std::invalid_argument(fmt::format("bad metric name {:?}", name));
        for (const auto& l : labels)
            if (!valid_name(l, false) || l.starts_with("__") ||
                (type == Type::histogram && l == "le"))
                throw std::invalid_argument(fmt::format("metric {}: bad label {:?}", name, l));
        std::lock_guard lock(mutex);
        if (auto it = families.find(name); it != families.end()) {
            auto& f = *it->second;
            // A family of collectors takes more collectors; one of children is looked up again.
            bool childless = [&] {
                std::shared_lock children(f.mutex);
                return f.children.empty();
            }();
            bool same =
                f.type == type && f.labels == labels &&
                std::equal(f.bounds.begin(), f.bounds.end(), bounds.begin(), bounds.end()) &&
                (collector ? childless : f.collectors.empty());
            if (!same)
                throw std::invalid_argument(
                    fmt::format("metric {} registered again with another shape", name));
            return f;
        }
        auto f = std::make_unique<detail::FamilyCore>();
        f->name = std::string(name);
        f->help = std::string(help);
        f->type = type;
        f->labels = std::move(labels);
        f->bounds = bounds;
        f->per_unit = per_unit;
        auto& out = *f;
        families.emplace(std::string(name), std::move(f));
        return out;
    }
};

Registry::Registry() : impl_(std::make_unique<Impl>()) {}
Registry::~Registry() = default;

Counter& Registry::counter(std::string_view name, std::string_view help) {
    return counter_family(name, help, {}).with({});
}

Gauge& Registry::gauge(std::string_view name, std::string_view help) {
    return gauge_family(name, help, {}).with({});
}

Histogram& Registry::histogram(std::string_view name, std::string_view help,
                               std::span<const std::uint64_t> bounds, std::uint64_t per_unit) {
    return histogram_family(name, help, {}, bounds, per_unit).with({});
}

Family<Counter>& Registry::counter_family(std::string_view name, std::string_view help,
                                          std::vector<std::string> labels) {
    return impl_->family(name, help, Type::counter, std::move(labels), {}, 1, false).counters;
}

Family<Gauge>& Registry::gauge_family(std::string_view name, std::string_view help,
                                      std::vector<std::string> labels) {
    return impl_->family(name, help, Type::gauge, std::move(labels), {}, 1, false).gauges;
}

Family<Histogram>& Registry::histogram_family(std::string_view name, std::string_view help,
                                              std::vector<std::string> labels,
                                              std::span<const std::uint64_t> bounds,
                                              std::uint64_t per_unit) {
    return impl_->family(name, help, Type::histogram, std::move(labels), bounds, per_unit, false)
        .histograms;
}

Registration Registry::collector(std::string_view name, std::string_view help, Type type,
                                 std::vector<std::string> labels,
                                 std::function<void(Sink&)> collect) {
    if (type == Type::histogram)
        throw std::invalid_argument(
            fmt::format("metric {}: collectors report no histograms", name));
    auto& f = impl_->family(name, help, type, std::move(labels), {}, 1, true);
    std::lock_guard lock(impl_->mutex);
    auto id = impl_->next_id++;
    f.collectors.emplace(id, std::move(collect));
    return Registration(this, id);
}

void Registry::remove_collector(std::uint64_t id) noexcept {
    std::lock_guard lock(impl_->mutex);
    for (auto& [name, f] : impl_->families) f->collectors.erase(id);
}

namespace {

// Collects one collector's samples as text lines.
class TextSink final : public Sink {
  public:
    TextSink(const detail::FamilyCore& f, std::string& out) : f_(f), out_(out) {}
    void sample(std::initializer_list<std::string_view> label_values, double value) override {
        if (label_values.size() != f_.labels.size()) return;  // a collector's bug: left out
        std::vector<std::string> values(label_values.begin(), label_values.end());
        out_ += fmt::format("{}{} {}\n", f_.name, label_text(f_.labels, values), number(value));
    }

  private:
    const detail::FamilyCore& f_;
    std::string& out_;
};

void expose_child(const detail::FamilyCore& f, const Values& values,
                  const detail::FamilyCore::Child& c, std::string& out) {
    auto labels = label_text(f.labels, values);
    if (c.counter) {
        out += fmt::format("{}{} {}\n", f.name, labels, c.counter->value());
    } else if (c.gauge) {
        out += fmt::format("{}{} {}\n", f.name, labels, c.gauge->value());
    } else if (c.histogram) {
        const auto& h = *c.histogram;
        auto snap = h.snapshot();
        auto bounds = h.bounds();
        for (std::size_t i = 0; i < bounds.size(); ++i)
            out += fmt::format("{}_bucket{} {}\n", f.name,
                               label_text(f.labels, values, "le", ratio(bounds[i], h.per_unit())),
                               snap.cumulative[i]);
        out += fmt::format("{}_bucket{} {}\n", f.name, label_text(f.labels, values, "le", "+Inf"),
                           snap.count);
        out += fmt::format("{}_sum{} {}\n", f.name, labels, ratio(snap.sum, h.per_unit()));
        out += fmt::format("{}_count{} {}\n", f.name, labels, snap.count);
    }
}

}  // namespace

std::string Registry::expose() const {
    std::string out;
    std::lock_guard lock(impl_->mutex);
    for (const auto& [name, f] : impl_->families) {
        out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, escape_help(f->help), name,
                           type_name(f->type));
        if (!f->collectors.empty()) {
            TextSink sink(*f, out);
            for (const auto& [id, collect] : f->collectors) collect(sink);
            continue;
        }
        std::shared_lock children(f->mutex);
        for (const auto& [values, child] : f->children) expose_child(*f, values, child, out);
    }
    return out;
}

Registration::Registration(Registration&& o) noexcept
    : registry_(std::exchange(o.registry_, nullptr)), id_(o.id_) {}

Registration& Registration::operator=(Registration&& o) noexcept {
    if (this != &o) {
        reset();
        registry_ = std::exchange(o.registry_, nullptr);
        id_ = o.id_;
    }
    return *this;
}

Registration::~Registration() {
    reset();
}

void Registration::reset() noexcept {
    if (registry_ != nullptr) std::exchange(registry_, nullptr)->remove_collector(id_);
}

Registry& registry() {
    // Never destroyed: metrics may be updated by threads and static destructors until exit.
    static Registry* r = new Registry();
    return *r;
}

}  // namespace coffer::metrics
