// A table of sealed records indexed in memory: reads take a shared lock on the index and never
// touch the store; writers are serialised, plan their changes against the current records, and
// the index changes only once the store write is durable.
#pragma once

#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "coffer/base/error.h"
#include "coffer/base/sync.h"
#include "coffer/manager/events.h"
#include "coffer/manager/secrets.h"
#include "coffer/store/store.h"

namespace coffer::manager {

template <typename T>
class ObjectTable {
  public:
    using Map = std::map<std::string, T, std::less<>>;
    using Encode = std::function<std::string(const T&)>;
    using Decode = std::function<Result<T>(std::string_view text)>;

    // What a writer changes; every put gets a fresh Version.Index.
    struct Changes {
        std::vector<T> put;
        std::vector<std::string> erase;
        bool empty() const noexcept { return put.empty() && erase.empty(); }
    };
    // Runs under the writers' lock with the current records; returns the changes to make.
    using Plan = std::function<Result<Changes>(const Map& current)>;

    // store and counter are borrowed for the table's lifetime.
    ObjectTable(store::Store& store, store::Table table, VersionCounter& counter, Encode encode,
                Decode decode)
        : store_(store),
          table_(table),
          counter_(counter),
          encode_(std::move(encode)),
          decode_(std::move(decode)) {}

    Result<void> load() {
        std::optional<Error> failure;
        auto items = items_.lock();
        auto scanned = store_.scan(table_, [&](std::string_view key, crypto::SecureBuffer v) {
            auto t = decode_({reinterpret_cast<const char*>(v.data()), v.size()});
            if (!t || t->meta.id != key) {
                failure = make_error(Errc::internal, fmt::format("{} record {} is corrupt",
                                                                 store::table_name(table_), key));
                return false;
            }
            counter_.observe(t->meta.version);
            items->emplace(std::string(key), std::move(*t));
            return true;
        });
        if (!scanned) return std::move(scanned).error();
        if (failure) return std::move(*failure);
        return {};
    }

    std::optional<T> get(std::string_view id) const {
        auto items = items_.read();
        auto it = items->find(id);
        if (it == items->end()) return std::nullopt;
        return it->second;
    }
    // Every record for which keep returns true (all without a predicate), in id order.
    std::vector<T> list(const std::function<bool(const T&)>& keep = {}) const {
        std::vector<T> out;
        auto items = items_.read();
        for (const auto& [id, t] : *items)
            if (!keep || keep(t)) out.push_back(t);
        return out;
    }
    // Reads the whole index under the shared lock (fn must not call back into the table).
    template <typename Fn>
    auto read(Fn&& fn) const {
        auto items = items_.read();
        return fn(*items);
    }

    // Plans and applies one atomic change; returns the records written (with their versions).
    Result<std::vector<T>> commit(const Plan& plan) {
        std::lock_guard writer(write_mutex_);
        auto changes = [&] {
            // Only writers change the map and this thread is the writer: reading it unlocked
            // would be safe, but the shared lock keeps the rule simple.
            auto items = items_.read();
            return plan(*items);
        }();
        if (!changes) return std::move(changes).error();
        if (changes->empty()) return std::vector<T>{};
        store::Batch batch;
        for (auto& t : changes->put) {
            t.meta.version = counter_.next();
            batch.put(table_, t.meta.id, encode_(t));
        }
        for (const auto& id : changes->erase) batch.erase(table_, id);
        if (auto w = store_.write(std::move(batch)); !w)
            return std::move(w).error().context(fmt::format("write {}", store::table_name(table_)));
        {
            auto items = items_.lock();
            for (const auto& id : changes->erase) items->erase(id);
            for (const auto& t : changes->put) (*items)[t.meta.id] = t;
        }
        if (events_) (events_->*changed_)();
        return std::move(changes->put);
    }

    // After every durable change, on the writer's thread and under the writers' lock, the table
    // emits `changed` (e.g. &ClusterEvents::tasks_changed) into events. Set before use; events is
    // borrowed for the table's lifetime.
    using Event = void (ClusterEvents::*)();
    void emit_changes(ClusterEvents& events, Event changed) {
        events_ = &events;
        changed_ = changed;
    }

  private:
    store::Store& store_;
    store::Table table_;
    VersionCounter& counter_;
    Encode encode_;
    Decode decode_;
    Sync<Map> items_;
    std::mutex write_mutex_;
    ClusterEvents* events_ = nullptr;
    Event changed_ = nullptr;
};

}  // namespace coffer::manager
