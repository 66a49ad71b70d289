#include "coffer/manager/deliveries.h"

#include <boost/json.hpp>

#include <algorithm>
#include <charconv>
#include <set>

#include "coffer/base/log.h"
#include "coffer/base/metrics.h"
#include "coffer/manager/committer.h"
#include "coffer/model/json.h"
#include "coffer/store/store.h"

namespace coffer::manager {

namespace json = boost::json;

namespace {

constexpr std::string_view prefix = "delivery/";

// Registered when the program starts, so that every scrape lists them.
metrics::Counter& deliveries_sent = metrics::registry().counter(
    "coffer_secret_deliveries_total",
    "Secret versions sent to a node for a task (each task and version once).");
metrics::Counter& deliveries_withdrawn = metrics::registry().counter(
    "coffer_secret_withdrawals_total",
    "Secret versions a node was sent for a task and told to drop before the task mounted them.");

std::string key_of(const std::string& secret, const std::string& task, std::uint64_t version) {
    return fmt::format("{}{}/{}/{}", prefix, secret, task, version);
}

std::string encode(const Delivery& d) {
    json::object o{{"SecretID", d.secret_id}, {"Version", d.version},
                   {"TaskID", d.task_id},     {"ServiceID", d.service_id},
                   {"NodeID", d.node_id},     {"SentAt", model::format_rfc3339(d.sent)}};
    if (d.mounted) o["MountedAt"] = model::format_rfc3339(*d.mounted);
    if (d.removed) o["RemovedAt"] = model::format_rfc3339(*d.removed);
    if (d.reads_counted) o["Reads"] = d.reads;
    if (d.first_read) o["FirstReadAt"] = model::format_rfc3339(*d.first_read);
    if (d.last_read) o["LastReadAt"] = model::format_rfc3339(*d.last_read);
    return json::serialize(o);
}

std::optional<Delivery> decode(std::string_view text) {
    auto v = model::parse_json(text);
    if (!v || !v->is_object()) return std::nullopt;
    const auto& o = v->as_object();
    Delivery d;
    auto str = [&](std::string_view k, std::string& out) {
        auto* f = o.if_contains(k);
        if (f == nullptr || !f->is_string()) return false;
        out = std::string(f->as_string());
        return true;
    };
    auto* version = o.if_contains("Version");
    if (!str("SecretID", d.secret_id) || !str("TaskID", d.task_id) ||
        !str("ServiceID", d.service_id) || !str("NodeID", d.node_id) || version == nullptr ||
        !version->is_number())
        return std::nullopt;
    d.version = version->to_number<std::uint64_t>();
    // A time field: absent (nullopt in out), or valid.
    auto time = [&](std::string_view k, std::optional<model::Timestamp>& out) {
        std::string field;
        if (!str(k, field)) return !o.contains(k);
        auto t = model::parse_rfc3339(field);
        if (t) out = *t;
        return t.has_value();
    };
    std::optional<model::Timestamp> sent;
    if (!time("SentAt", sent) || !time("MountedAt", d.mounted) || !time("RemovedAt", d.removed) ||
        !time("FirstReadAt", d.first_read) || !time("LastReadAt", d.last_read))
        return std::nullopt;
    if (auto* reads = o.if_contains("Reads")) {
        if (!reads->is_number()) return std::nullopt;
        d.reads = reads->to_number<std::uint64_t>();
        d.reads_counted = true;
    }
    // A record from before SentAt was kept has its mount only.
    if (!sent && !d.mounted) return std::nullopt;
    d.sent = sent ? *sent : *d.mounted;
    return d;
}

// "<id>@<version>" -> (id, version).
std::optional<std::pair<std::string, std::uint64_t>> split(std::string_view held) {
    auto at = held.rfind('@');
    if (at == std::string_view::npos) return std::nullopt;
    std::uint64_t n = 0;
    auto digits = held.substr(at + 1);
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
    if (ec != std::errc{} || end != digits.data() + digits.size()) return std::nullopt;
    return std::pair{std::string(held.substr(0, at)), n};
}

}  // namespace

Result<std::unique_ptr<DeliveryLog>> DeliveryLog::load(store::Store& store, Committer& committer) {
    std::unique_ptr<DeliveryLog> out(new DeliveryLog(store, committer));
    auto state = out->state_.lock();
    auto scanned =
        store.scan(store::Table::meta, [&](std::string_view key, crypto::SecureBuffer value) {
            if (!key.starts_with(prefix)) return true;
            auto d = decode({reinterpret_cast<const char*>(value.data()), value.size()});
            if (!d) {
                log::warn("secrets", "delivery record {} is corrupt: skipped", key);
                return true;
            }
            state->records.emplace(Key{d->secret_id, d->task_id, d->version}, std::move(*d));
            return true;
        });
    if (!scanned) return std::move(scanned).error().context("load the delivery record");
    return out;
}

void DeliveryLog::open(State& s, const DeliveryReport& r, const std::string& secret,
                       std::uint64_t version, model::Timestamp now, bool mounted,
                       std::vector<Delivery>& changed) {
    Key key{secret, r.task_id, version};
    if (auto it = s.records.find(key); it != s.records.end() && !it->second.removed) {
        if (!mounted || it->second.mounted) return;
        it->second.mounted = now;
        changed.push_back(it->second);
        return;
    }
    Delivery d{secret,    version, r.task_id,    r.service_id,
               r.node_id, now,     std::nullopt, std::nullopt};
    if (mounted) d.mounted = now;
    s.records[key] = d;
    changed.push_back(std::move(d));
}

void DeliveryLog::sent(const std::vector<DeliveryReport>& handed, model::Timestamp now) {
    std::vector<Delivery> changed;
    std::vector<Key> erased;
    {
        auto s = state_.lock();
        for (const auto& r : handed)
            for (const auto& h : r.secrets)
                if (auto p = split(h)) open(*s, r, p->first, p->second, now, false, changed);
        if (!changed.empty()) evict(*s, erased);
    }
    deliveries_sent.inc(changed.size());
    persist(std::move(changed), std::move(erased));
}

void DeliveryLog::withdrawn(const std::string& node_id, const std::vector<std::string>& secrets,
                            model::Timestamp now) {
    std::set<std::pair<std::string, std::uint64_t>> gone;
    for (const auto& h : secrets)
        if (auto p = split(h)) gone.insert(*p);
    std::vector<Delivery> changed;
    {
        auto s = state_.lock();
        for (auto& [key, d] : s->records) {
            if (d.removed || d.mounted || d.node_id != node_id ||
                !gone.count({d.secret_id, d.version}))
                continue;
            d.removed = now;
            changed.push_back(d);
        }
    }
    deliveries_withdrawn.inc(changed.size());
    persist(std::move(changed), {});
}

void DeliveryLog::observe(const std::vector<DeliveryReport>& reports, model::Timestamp now) {
    std::vector<Delivery> changed;
    std::vector<Key> erased;
    {
        auto s = state_.lock();
        for (const auto& r : reports) {
            std::set<std::pair<std::string, std::uint64_t>> held;
            bool mounted =
                r.state == model::TaskState::running || r.state == model::TaskState::starting;
            if (mounted)
                for (const auto& h : r.secrets)
                    if (auto p = split(h)) held.insert(*p);
            // Close what it no longer holds: a mount it no longer lists (a version sent but not
            // mounted yet, for a live update, stays open), everything once it ended.
            for (auto& [key, d] : s->records) {
                if (d.task_id != r.task_id || d.removed) continue;
                if (model::is_terminal(r.state) ||
                    (mounted && d.mounted && !held.count({d.secret_id, d.version}))) {
                    d.removed = now;
                    changed.push_back(d);
                }
            }
            for (const auto& [secret, version] : held)
                open(*s, r, secret, version, now, true, changed);
            for (const auto& read : r.reads) {
                auto p = split(read.secret);
                if (!p) continue;
                auto it = s->records.find(Key{p->first, r.task_id, p->second});
                if (it == s->records.end()) continue;
                auto& d = it->second;
                auto at = [](std::int64_t ns) {
                    return ns == 0 ? std::nullopt : std::optional(model::Timestamp{ns});
                };
                if (d.reads_counted && d.reads == read.reads &&
                    d.first_read == at(read.first_read_ns) && d.last_read == at(read.last_read_ns))
                    continue;
                d.reads_counted = true;
                d.reads = read.reads;
                d.first_read = at(read.first_read_ns);
                d.last_read = at(read.last_read_ns);
                changed.push_back(d);
            }
        }
        if (!changed.empty()) evict(*s, erased);
    }
    persist(std::move(changed), std::move(erased));
}

void DeliveryLog::close_ended(const std::map<std::string, model::Task, std::less<>>& tasks,
                              model::Timestamp now) {
    std::vector<Delivery> changed;
    {
        auto s = state_.lock();
        for (auto& [key, d] : s->records) {
            if (d.removed) continue;
            auto it = tasks.find(d.task_id);
            if (it != tasks.end() && !model::is_terminal(it->second.status.state)) continue;
            d.removed = now;
            changed.push_back(d);
        }
    }
    persist(std::move(changed), {});
}

void DeliveryLog::evict(State& s, std::vector<Key>& erased) {
    // Per secret, then in all: the oldest finished records go (open ones stay: they are true).
    std::map<std::string, std::vector<const Delivery*>> by_secret;
    for (const auto& [key, d] : s.records) by_secret[d.secret_id].push_back(&d);
    auto drop = [&](std::vector<const Delivery*> list, std::size_t keep) {
        if (list.size() <= keep) return;
        std::sort(list.begin(), list.end(),
                  [](const Delivery* a, const Delivery* b) { return a->sent < b->sent; });
        std::size_t excess = list.size() - keep;
        for (const auto* d : list) {
            if (excess == 0) break;
            if (!d->removed) continue;
            erased.push_back(Key{d->secret_id, d->task_id, d->version});
            --excess;
        }
    };
    for (auto& [secret, list] : by_secret) drop(list, max_per_secret);
    for (const auto& k : erased) s.records.erase(k);
    if (s.records.size() > max_total) {
        std::vector<const Delivery*> all;
        for (const auto& [key, d] : s.records) all.push_back(&d);
        std::size_t before = erased.size();
        drop(all, max_total);
        for (std::size_t i = before; i < erased.size(); ++i) s.records.erase(erased[i]);
    }
}

void DeliveryLog::persist(std::vector<Delivery> changed, std::vector<Key> erased) {
    if (changed.empty() && erased.empty()) return;
    store::Batch batch;
    for (const auto& d : changed)
        batch.put(store::Table::meta, key_of(d.secret_id, d.task_id, d.version), encode(d));
    for (const auto& [secret, task, version] : erased)
        batch.erase(store::Table::meta, key_of(secret, task, version));
    committer_.submit(std::move(batch), [](Result<void> written) {
        if (!written)
            log::warn("secrets", "delivery record not written: {}", written.error().message);
    });
}

std::vector<Delivery> DeliveryLog::of(const std::string& secret_id) const {
    std::vector<Delivery> out;
    auto s = state_.read();
    for (auto it = s->records.lower_bound(Key{secret_id, "", 0});
         it != s->records.end() && std::get<0>(it->first) == secret_id; ++it)
        out.push_back(it->second);
    std::sort(out.begin(), out.end(),
              [](const Delivery& a, const Delivery& b) { return a.sent < b.sent; });
    return out;
}

}  // namespace coffer::manager
