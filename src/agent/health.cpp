#include "health.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <boost/json.hpp>

#include <algorithm>
#include <limits>

#include "coffer/base/log.h"

namespace coffer::agent {

namespace json = boost::json;
using std::chrono::nanoseconds;

namespace {

Error invalid(std::string why) {
    return make_error(Errc::invalid_argument, std::move(why));
}

// Waits this long at most between probes: a longer interval is the same as never, and the sum
// with a steady clock reading cannot overflow.
constexpr nanoseconds longest_wait = std::chrono::hours(24 * 365 * 10);

nanoseconds or_default(std::int64_t ns, nanoseconds fallback) {
    return ns > 0 ? std::min(nanoseconds(ns), longest_wait) : fallback;
}

}  // namespace

std::string_view to_string(Health h) noexcept {
    switch (h) {
        case Health::none:
            return "";
        case Health::starting:
            return "starting";
        case Health::healthy:
            return "healthy";
        case Health::unhealthy:
            return "unhealthy";
    }
    return "";
}

Result<std::optional<EffectiveHealth>> effective_healthcheck(
    const std::optional<HealthCheck>& service, const std::optional<HealthCheck>& image) {
    if (!service && !image) return std::optional<EffectiveHealth>{};
    HealthCheck h = service.value_or(HealthCheck{});
    if (image) {
        if (h.test.empty()) h.test = image->test;
        if (h.interval_ns == 0) h.interval_ns = image->interval_ns;
        if (h.timeout_ns == 0) h.timeout_ns = image->timeout_ns;
        if (h.start_period_ns == 0) h.start_period_ns = image->start_period_ns;
        if (h.start_interval_ns == 0) h.start_interval_ns = image->start_interval_ns;
        if (h.retries == 0) h.retries = image->retries;
    }
    if (h.test.empty() || h.test.front() == "NONE") return std::optional<EffectiveHealth>{};
    EffectiveHealth e;
    const auto& kind = h.test.front();
    if (kind == "CMD") {
        e.argv.assign(h.test.begin() + 1, h.test.end());
    } else if (kind == "CMD-SHELL") {
        std::string command;
        for (auto it = h.test.begin() + 1; it != h.test.end(); ++it) {
            if (!command.empty()) command += ' ';
            command += *it;
        }
        e.argv = {"/bin/sh", "-c", std::move(command)};
    } else {
        return invalid(fmt::format("health check: unknown test type \"{}\" (CMD or CMD-SHELL)",
                                   probe_output_summary(kind, 32)));
    }
    if (e.argv.empty() || e.argv.front().empty())
        return invalid(fmt::format("health check: {} without a command", kind));
    if (h.retries < 0) return invalid("health check: negative retries");
    e.interval = or_default(h.interval_ns, default_probe_interval);
    e.timeout = or_default(h.timeout_ns, default_probe_timeout);
    e.start_period = or_default(h.start_period_ns, nanoseconds(0));
    e.start_interval = or_default(h.start_interval_ns, default_start_interval);
    e.retries =
        h.retries > 0
            ? static_cast<int>(std::min<std::int64_t>(h.retries, std::numeric_limits<int>::max()))
            : default_probe_retries;
    return std::optional<EffectiveHealth>(std::move(e));
}

Result<HealthCheck> healthcheck_from_image_json(const json::value& v) {
    if (!v.is_object()) return invalid("image config: Healthcheck is not an object");
    const auto& o = v.get_object();
    HealthCheck h;
    if (const auto* t = o.if_contains("Test"); t && !t->is_null()) {
        if (!t->is_array()) return invalid("image config: Healthcheck.Test is not a list");
        for (const auto& s : t->get_array()) {
            if (!s.is_string() || s.get_string().find('\0') != json::string::npos)
                return invalid("image config: Healthcheck.Test holds a non-string");
            h.test.emplace_back(s.get_string());
        }
    }
    struct Field {
        const char* name;
        std::int64_t* out;
    };
    for (auto [name, out] :
         {Field{"Interval", &h.interval_ns}, Field{"Timeout", &h.timeout_ns},
          Field{"StartPeriod", &h.start_period_ns}, Field{"StartInterval", &h.start_interval_ns},
          Field{"Retries", &h.retries}}) {
        const auto* n = o.if_contains(name);
        if (n == nullptr || n->is_null()) continue;
        if (n->is_int64() && n->get_int64() >= 0)
            *out = n->get_int64();
        else if (n->is_uint64() &&
                 n->get_uint64() <= std::uint64_t(std::numeric_limits<std::int64_t>::max()))
            *out = static_cast<std::int64_t>(n->get_uint64());
        else
            return invalid(
                fmt::format("image config: Healthcheck.{} is not a non-negative integer", name));
    }
    return h;
}

// ---- HealthTracker ----------------------------------------------------------------------------

HealthTracker::HealthTracker(const EffectiveHealth& check, HealthClock::time_point started)
    : check_(check), started_(started) {}

nanoseconds HealthTracker::next_interval(HealthClock::time_point now) const {
    if (health_ == Health::starting && now - started_ < check_.start_period)
        return check_.start_interval;
    return check_.interval;
}

Health HealthTracker::record(const ProbeResult& r, HealthClock::time_point began) {
    if (health_ == Health::unhealthy) return health_;
    if (r.exit_code == 0) {
        streak_ = 0;
        health_ = Health::healthy;
        return health_;
    }
    // Before the first success, failures within the start period do not count.
    if (health_ == Health::starting && began - started_ < check_.start_period) return health_;
    if (++streak_ >= check_.retries) health_ = Health::unhealthy;
    return health_;
}

// ---- HealthMonitor ----------------------------------------------------------------------------

HealthMonitor::HealthMonitor(EffectiveHealth check, Probe probe, OnChange on_change)
    : probe_(std::move(probe)),
      on_change_(std::move(on_change)),
      tracker_(check, HealthClock::now()),
      timeout_(check.timeout),
      cancel_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    if (!cancel_) throw_errno("health check: eventfd");
    thread_ = std::thread([this] { run(); });
}

HealthMonitor::~HealthMonitor() {
    stop();
}

void HealthMonitor::stop() {
    {
        std::lock_guard l(mu_);
        stopping_ = true;
    }
    cv_.notify_all();
    std::uint64_t one = 1;
    (void)!::write(cancel_.get(), &one, sizeof one);
    if (thread_.joinable()) thread_.join();
}

Health HealthMonitor::health() const {
    std::lock_guard l(mu_);
    return tracker_.health();
}

void HealthMonitor::run() {
    std::unique_lock l(mu_);
    auto next = HealthClock::now() + tracker_.next_interval(HealthClock::now());
    for (;;) {
        if (cv_.wait_until(l, next, [&] { return stopping_; })) return;
        l.unlock();
        auto began = HealthClock::now();
        ProbeResult r;
        try {
            r = probe_(timeout_, cancel_.get());
        } catch (const std::exception& e) {
            log::warn("health", "probe: {}", e.what());
            r = {-1, "the health check could not be run"};
        }
        l.lock();
        if (stopping_) return;
        auto before = tracker_.health();
        auto after = tracker_.record(r, began);
        if (after != before) {
            l.unlock();
            on_change_(after, r);
            l.lock();
        }
        if (after == Health::unhealthy) return;
        auto now = HealthClock::now();
        next = now + tracker_.next_interval(now);
    }
}

std::string probe_output_summary(std::string_view output, std::size_t max_chars) {
    std::string out;
    bool space = false;
    for (unsigned char c : output) {
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            space = !out.empty();
            continue;
        }
        if (out.size() >= max_chars) {
            out += "...";
            return out;
        }
        if (space) out += ' ';
        space = false;
        out += c > 0x20 && c < 0x7f ? static_cast<char>(c) : '?';
    }
    return out;
}

}  // namespace coffer::agent
