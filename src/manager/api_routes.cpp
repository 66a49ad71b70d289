#include "api_routes.h"

#include <array>
#include <atomic>
#include <string>

#include "coffer/base/metrics.h"

namespace coffer::manager {

namespace {

struct Route {
    std::string_view method;
    std::string_view path;  // "{...}" segments match any one segment
};

// Every route the API serves (see api*.cpp), literal routes before those with a parameter in
// the same place. GET /distribution/{name}/json takes a name of any number of segments.
constexpr Route routes[] = {
    {"GET", "/_ping"},
    {"HEAD", "/_ping"},
    {"GET", "/version"},
    {"GET", "/info"},
    {"GET", "/swarm"},
    {"GET", "/swarm/unlockkey"},
    {"POST", "/swarm/unlock"},
    {"POST", "/swarm/update"},
    {"POST", "/swarm/rotate-dek"},
    {"GET", "/cluster/backup"},
    {"GET", "/secrets"},
    {"POST", "/secrets/create"},
    {"GET", "/secrets/{id}"},
    {"DELETE", "/secrets/{id}"},
    {"POST", "/secrets/{id}/update"},
    {"GET", "/secrets/{id}/history"},
    {"POST", "/secrets/{id}/rotate"},
    {"POST", "/secrets/{id}/rollback"},
    {"GET", "/configs"},
    {"POST", "/configs/create"},
    {"GET", "/configs/{id}"},
    {"DELETE", "/configs/{id}"},
    {"POST", "/configs/{id}/update"},
    {"GET", "/services"},
    {"POST", "/services/create"},
    {"GET", "/services/{id}"},
    {"DELETE", "/services/{id}"},
    {"POST", "/services/{id}/update"},
    {"GET", "/services/{id}/logs"},
    {"GET", "/tasks"},
    {"GET", "/tasks/{id}"},
    {"GET", "/tasks/{id}/logs"},
    {"GET", "/nodes"},
    {"GET", "/nodes/{id}"},
    {"DELETE", "/nodes/{id}"},
    {"POST", "/nodes/{id}/update"},
    {"GET", "/networks"},
    {"POST", "/networks/create"},
    {"POST", "/networks/prune"},
    {"GET", "/networks/{id}"},
    {"DELETE", "/networks/{id}"},
    {"GET", "/volumes"},
    {"POST", "/volumes/create"},
    {"POST", "/volumes/prune"},
    {"GET", "/volumes/{name}"},
    {"DELETE", "/volumes/{name}"},
    {"GET", "/distribution/{name}/json"},
};
constexpr std::size_t route_count = std::size(routes);
// Then one "unmatched" route per method; methods other than these count as "other".
constexpr std::string_view methods[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "other"};
constexpr std::string_view unmatched = "unmatched";
constexpr std::size_t index_count = route_count + std::size(methods);

// Status codes with a counter slot of their own per route; others are looked up in the family.
constexpr int known_codes[] = {200, 201, 204, 304, 400, 401, 403, 404,
                               409, 413, 429, 431, 500, 501, 503};

bool matches(std::string_view pattern, const std::vector<std::string_view>& seg) {
    std::size_t i = 0;
    pattern.remove_prefix(1);
    while (!pattern.empty()) {
        auto slash = pattern.find('/');
        auto part = pattern.substr(0, slash);
        pattern = slash == std::string_view::npos ? std::string_view{} : pattern.substr(slash + 1);
        if (i == seg.size()) return false;
        if (!(part.starts_with('{') || part == seg[i])) return false;
        ++i;
    }
    return i == seg.size();
}

std::size_t method_slot(std::string_view method) {
    for (std::size_t i = 0; i + 1 < std::size(methods); ++i)
        if (methods[i] == method) return i;
    return std::size(methods) - 1;
}

// The families are registered when the program starts, so that every scrape lists them; a
// route's series appear with its first request. Children found once are kept here, so a request
// takes no lock.
struct Handles {
    metrics::Family<metrics::Counter>& requests = metrics::registry().counter_family(
        "coffer_api_requests_total",
        "API requests answered, by method, route template and status code.",
        {"method", "route", "code"});
    metrics::Family<metrics::Histogram>& durations = metrics::registry().histogram_family(
        "coffer_api_request_duration_seconds",
        "Time from a request's arrival to its answer, by method and route template.",
        {"method", "route"}, metrics::duration_buckets(), metrics::nanoseconds_per_second);
    std::array<std::atomic<metrics::Histogram*>, index_count> duration_of{};
    std::array<std::array<std::atomic<metrics::Counter*>, std::size(known_codes)>, index_count>
        count_of{};
};

Handles handles;

// The child in cell, looked up (under the family's lock) the first time only.
template <typename Metric, typename Lookup>
Metric& cached(std::atomic<Metric*>& cell, Lookup lookup) {
    auto* m = cell.load(std::memory_order_acquire);
    if (m == nullptr) {
        m = &lookup();
        cell.store(m, std::memory_order_release);
    }
    return *m;
}

}  // namespace

std::size_t route_index(std::string_view method, const std::vector<std::string_view>& seg) {
    if (seg.size() >= 3 && seg[0] == "distribution" && seg.back() == "json") {
        if (method == "GET") return route_count - 1;
    } else {
        for (std::size_t i = 0; i + 1 < route_count; ++i)
            if (routes[i].method == method && matches(routes[i].path, seg)) return i;
    }
    return unrouted_index(method);
}

std::size_t unrouted_index(std::string_view method) {
    return route_count + method_slot(method);
}

std::string_view route_method(std::size_t index) {
    return index < route_count ? routes[index].method : methods[index - route_count];
}

std::string_view route_template(std::size_t index) {
    return index < route_count ? routes[index].path : unmatched;
}

void record_request(std::size_t index, int status, std::chrono::steady_clock::time_point start) {
    if (index >= index_count) index = unrouted_index("other");
    auto method = route_method(index), route = route_template(index);
    cached(handles.duration_of[index], [&]() -> metrics::Histogram& {
        return handles.durations.with({method, route});
    }).observe_since(start);
    auto counter = [&]() -> metrics::Counter& {
        return handles.requests.with({method, route, std::to_string(status)});
    };
    std::size_t slot = 0;
    while (slot < std::size(known_codes) && known_codes[slot] != status) ++slot;
    if (slot == std::size(known_codes))
        counter().inc();
    else
        cached(handles.count_of[index][slot], counter).inc();
}

}  // namespace coffer::manager
