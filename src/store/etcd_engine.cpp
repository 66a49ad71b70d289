#include "etcd_engine.h"

#include <unistd.h>

#include <boost/json.hpp>

#include <algorithm>
#include <map>

#include "coffer/base/log.h"
#include "coffer/crypto/encoding.h"
#include "keys.h"

namespace coffer::store::detail {
namespace {

namespace json = boost::json;

// Records per range request while scanning: a page of the data tables (values up to about
// 700 KB sealed, base64 in the answer) stays within a few MB.
std::int64_t page_records(Table table) {
    return table == Table::secret_data || table == Table::config_data ? 4 : 256;
}
// What a transaction carries besides its operations' keys and values.
constexpr std::size_t txn_overhead = 4096;

std::string b64(std::string_view bytes) {
    return crypto::base64_encode(
        {reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()});
}

// Gateway answers carry keys and sealed values, never plaintext: plain heap is fine here.
std::optional<std::string> unb64(const json::value* v) {
    if (v == nullptr || !v->is_string()) return std::string();
    auto decoded = crypto::base64_decode_secure(v->get_string());
    if (!decoded) return std::nullopt;
    return std::string(reinterpret_cast<const char*>(decoded->data()), decoded->size());
}

// etcd's int64 fields arrive as JSON strings; absent is 0.
std::int64_t int_field(const json::object& o, std::string_view name) {
    const auto* v = o.if_contains(name);
    if (v == nullptr) return 0;
    if (v->is_int64()) return v->get_int64();
    if (v->is_uint64()) return static_cast<std::int64_t>(v->get_uint64());
    if (v->is_string()) {
        try {
            return std::stoll(std::string(v->get_string()));
        } catch (const std::exception&) {
        }
    }
    return 0;
}

// The smallest key after every key that begins with prefix (etcd's range_end for a prefix).
std::string prefix_end(std::string prefix) {
    while (!prefix.empty()) {
        auto& last = reinterpret_cast<unsigned char&>(prefix.back());
        if (last < 0xff) {
            ++last;
            return prefix;
        }
        prefix.pop_back();
    }
    return std::string(1, '\0');  // every key
}

Error unreadable(std::string_view what) {
    return make_error(Errc::internal, fmt::format("etcd: unreadable answer to {}", what));
}

Result<json::object> parse_object(const std::string& text, std::string_view what) {
    boost::system::error_code ec;
    auto v = json::parse(text, ec);
    if (ec || !v.is_object()) return unreadable(what);
    return std::move(v.as_object());
}

// Whether a transaction's answer says its compares held.
bool succeeded(const json::object& txn) {
    const auto* ok = txn.if_contains("succeeded");
    return ok != nullptr && ok->is_bool() && ok->get_bool();
}

// "cofferd pid N on HOST (node port ADDR)" from an owner key's value.
std::string describe_holder(const std::string& value) {
    boost::system::error_code ec;
    auto v = json::parse(value, ec);
    if (ec || !v.is_object()) return value.empty() ? "another cofferd" : value;
    const auto& o = v.get_object();
    auto text = [&](std::string_view name) -> std::string {
        const auto* f = o.if_contains(name);
        return f != nullptr && f->is_string() ? std::string(f->get_string()) : std::string();
    };
    auto pid = int_field(o, "pid");
    auto out = fmt::format("cofferd pid {} on {}", pid, text("host"));
    if (auto addr = text("addr"); !addr.empty()) out += fmt::format(" (node port {})", addr);
    return out;
}

}  // namespace

class EtcdEngine::View final : public EngineView {
  public:
    View(EtcdEngine& engine, std::int64_t revision) : engine_(engine), revision_(revision) {}
    Result<void> scan(Table table, std::string_view from, const RawVisit& fn) override {
        return engine_.scan_at(table, from, revision_, fn);
    }

  private:
    EtcdEngine& engine_;
    const std::int64_t revision_;
};

EtcdEngine::EtcdEngine(EtcdOptions options)
    : options_(std::move(options)),
      tls_{options_.ca_file, options_.cert_file, options_.key_file},
      owner_key_(options_.prefix + "owner"),
      idle_(options_.endpoints.size()) {}

std::unique_ptr<EtcdEngine> EtcdEngine::open(const EtcdOptions& options, bool create) {
    if (options.endpoints.empty())
        throw ErrorException(make_error(Errc::invalid_argument, "etcd: no endpoint given"));
    if (options.prefix.empty() || options.prefix.back() != '/')
        throw ErrorException(
            make_error(Errc::invalid_argument,
                       fmt::format("etcd: the key prefix \"{}\" must end with /", options.prefix)));
    if (options.lease_ttl.count() < 2)
        throw ErrorException(
            make_error(Errc::invalid_argument, "etcd: the lease TTL must be 2 s or more"));
    if (options.max_txn_ops < 4 || options.max_request_bytes < 64 * 1024)
        throw ErrorException(
            make_error(Errc::invalid_argument,
                       "etcd: transactions of at least 4 operations and 64 KiB must be allowed"));
    std::unique_ptr<EtcdEngine> engine(new EtcdEngine(options));
    engine->claim(create);
    return engine;
}

EtcdEngine::~EtcdEngine() {
    {
        std::lock_guard l(keeper_mu_);
        stopping_ = true;
    }
    keeper_cv_.notify_all();
    if (keeper_.joinable()) keeper_.join();
    if (looker_.joinable()) looker_.join();
    // Frees the store at once for the next manager (otherwise it waits out the lease).
    if (lease_ != 0 && !lost_)
        (void)call("/v3/lease/revoke",
                   json::serialize(json::object{{"ID", std::to_string(lease_)}}));
}

std::string EtcdEngine::describe() const {
    return fmt::format("etcd {} (prefix {})", fmt::join(options_.endpoints, ","), options_.prefix);
}

BatchLimits EtcdEngine::limits() const {
    // One compare and the owner's key travel with every transaction, and every key carries
    // the prefix.
    auto per_op_key = options_.prefix.size() + 16;
    auto budget = options_.max_request_bytes - txn_overhead;
    auto bytes = budget > options_.max_txn_ops * per_op_key
                     ? budget - options_.max_txn_ops * per_op_key
                     : budget / 2;
    return {options_.max_txn_ops, bytes};
}

std::string EtcdEngine::record_key(Table table, std::string_view key) const {
    std::string out = options_.prefix;
    out += table_name(table);
    out += '/';
    out += key;
    return out;
}

Result<std::string> EtcdEngine::call(std::string_view path, const std::string& body) {
    const auto n = options_.endpoints.size();
    const auto first = member_.load();
    // Why each member did not serve: all of them when none did (an outage names every member).
    std::vector<std::string> why;
    auto last = [&] {
        if (why.size() == 1) return make_error(Errc::unavailable, fmt::format("etcd {}", why[0]));
        return make_error(Errc::unavailable,
                          fmt::format("etcd: no member could serve the request (a majority of "
                                      "the members must be up and reach each other): {}",
                                      fmt::join(why, "; ")));
    };
    for (std::size_t i = 0; i < n; ++i) {
        auto m = (first + i) % n;
        const auto& endpoint = options_.endpoints[m];
        std::unique_ptr<net::HttpClient> client;
        {
            std::lock_guard l(pool_mu_);
            if (!idle_[m].empty()) {
                client = std::move(idle_[m].back());
                idle_[m].pop_back();
            }
        }
        if (!client) {
            auto c = net::HttpClient::connect(endpoint, &tls_, std::chrono::seconds(5));
            if (!c) {
                why.push_back(c.error().message);  // names the endpoint
                continue;
            }
            client = std::move(*c);
        }
        auto r = client->request("POST", path,
                                 {reinterpret_cast<const std::uint8_t*>(body.data()), body.size()});
        if (!r) {
            why.push_back(fmt::format("{}: {}", endpoint, r.error().message));
            continue;  // the client is dropped: its connection is broken
        }
        if (r->status != 200) {
            // {"error": "...", "code": N, "message": "..."}: etcd's own words, never a value.
            std::string message = fmt::format("HTTP {}", r->status);
            std::int64_t code = 0;
            if (auto o = parse_object(r->body, path); o) {
                if (const auto* m2 = o->if_contains("message"); m2 && m2->is_string())
                    message = std::string(m2->get_string());
                else if (const auto* e = o->if_contains("error"); e && e->is_string())
                    message = std::string(e->get_string());
                code = int_field(*o, "code");
            }
            {
                std::lock_guard l(pool_mu_);
                idle_[m].push_back(std::move(client));
            }
            // gRPC codes: 14 unavailable (no leader here, shutting down) and 4 deadline
            // exceeded: another member may do; anything else is the request's own fault.
            if (code == 14 || code == 4 || r->status == 503) {
                why.push_back(fmt::format("{}: {}", endpoint, message));
                continue;
            }
            auto errc = message.find("too large") != std::string::npos ||
                                message.find("too many operations") != std::string::npos
                            ? Errc::too_large
                            : Errc::internal;
            return make_error(errc, fmt::format("etcd: {}", message));
        }
        member_ = m;
        {
            std::lock_guard l(pool_mu_);
            idle_[m].push_back(std::move(client));
        }
        return std::move(r->body);
    }
    return last();
}

void EtcdEngine::claim(bool create) {
    auto fail = [](Result<std::string> r, std::string_view what) -> json::object {
        if (!r) throw ErrorException(std::move(r).error().context(what));
        auto o = parse_object(*r, what);
        if (!o) throw ErrorException(std::move(o).error());
        return std::move(*o);
    };
    // Whether the prefix holds a store's records.
    auto holds_store = [&] {
        auto range = fail(
            call("/v3/kv/range", json::serialize(json::object{
                                     {"key", b64(record_key(Table::meta, {}))},
                                     {"range_end", b64(prefix_end(record_key(Table::meta, {})))},
                                     {"count_only", true}})),
            "read the store's keys");
        return int_field(range, "count") > 0;
    };
    // Before anything is claimed.
    bool holds = holds_store();
    if (create && holds)
        throw ErrorException(make_error(
            Errc::invalid_argument,
            fmt::format("etcd prefix {} already holds a coffer store, which this data directory "
                        "did not make: give it the data directory (its KEK) that did, or "
                        "another --etcd-prefix",
                        options_.prefix)));
    if (!create && !holds)
        throw ErrorException(make_error(
            Errc::invalid_argument,
            fmt::format("etcd prefix {} holds no coffer store, though this data directory says "
                        "it has one there: is it the right etcd cluster and --etcd-prefix?",
                        options_.prefix)));

    // Kept alive from now on: waiting out a dead holder's lease takes about as long as ours.
    if (auto r = take_lease(); !r) throw ErrorException(std::move(r).error());
    announce();
    const auto holder = self_value();
    bool waited = false, unreachable = false;
    // Waits between tries; false when the manager stops meanwhile.
    auto asked_to_stop = [&] {
        return options_.stop_standing_by != nullptr && options_.stop_standing_by->load();
    };
    auto pause = [&](std::chrono::milliseconds d) {
        // In slices: a stop comes from a signal handler, which cannot notify.
        const auto until = std::chrono::steady_clock::now() + d;
        std::unique_lock l(keeper_mu_);
        while (!asked_to_stop()) {
            auto slice =
                std::min(until, std::chrono::steady_clock::now() + std::chrono::milliseconds(50));
            if (keeper_cv_.wait_until(l, slice, [&] { return stopping_; })) return false;
            if (slice == until) return true;
        }
        return false;
    };
    auto stopped = [] {
        return ErrorException(make_error(Errc::unavailable, "stopped while standing by"));
    };
    for (;;) {
        // A standby rides out an etcd outage (no quorum, members down): it tries again, with a
        // new lease if its own ended meanwhile, and takes the store when it can.
        if (lost_) {
            if (keeper_.joinable()) keeper_.join();  // it ended with the lease
            if (!take_lease()) {
                if (!pause(std::chrono::seconds(1))) throw stopped();
                continue;
            }
            try {
                announce();
            } catch (const ErrorException& e) {
                log::warn("store", "standing by: {}", e.error().message);
            }
            log::info("store",
                      "standing by: took a new etcd lease {:x} (the last one ended while "
                      "etcd could not be reached)",
                      lease_);
        }
        json::object put{
            {"key", b64(owner_key_)}, {"value", b64(holder)}, {"lease", std::to_string(lease_)}};
        json::object get{{"key", b64(owner_key_)}};
        auto answer =
            call("/v3/kv/txn",
                 json::serialize(json::object{
                     {"compare", json::array{json::object{{"key", b64(owner_key_)},
                                                          {"target", "CREATE"},
                                                          {"result", "EQUAL"},
                                                          {"create_revision", "0"}}}},
                     {"success", json::array{json::object{{"request_put", std::move(put)}}}},
                     {"failure", json::array{json::object{{"request_range", std::move(get)}}}}}));
        if (!answer && answer.error().code == Errc::unavailable) {
            if (!unreachable)
                log::warn("store",
                          "standing by for etcd prefix {}: etcd cannot serve ({}); trying again "
                          "every second",
                          options_.prefix, answer.error().message);
            unreachable = true;
            if (!pause(std::chrono::seconds(1))) throw stopped();
            continue;
        }
        auto txn = fail(std::move(answer), "claim the store");
        if (unreachable) log::info("store", "standing by: etcd serves again");
        unreachable = false;
        if (succeeded(txn)) break;
        // Held by this cofferd's own lease: an earlier claim took it, and its answer was lost.
        const json::object* held = nullptr;
        try {
            held = &txn.at("responses").at(0).at("response_range").at("kvs").at(0).as_object();
        } catch (const std::exception&) {
        }
        if (held != nullptr && int_field(*held, "lease") == lease_) break;
        // Held: by a manager that died, its lease ends within one TTL; by a live one, when it
        // stops or is cut off from etcd.
        std::string other;
        if (held != nullptr)
            if (auto v = unb64(held->if_contains("value")); v) other = *v;
        // Another cofferd started on the empty prefix first and is making its store: this one
        // would make a second, with keys of its own, over it once that one stopped.
        if (create)
            throw ErrorException(make_error(
                Errc::conflict,
                fmt::format("etcd prefix {} is held by {}, which is making a coffer store there: "
                            "join that cluster with the manager join token (--join-token), or "
                            "give this cofferd another --etcd-prefix",
                            options_.prefix, describe_holder(other))));
        if (!waited) {
            log::warn("store",
                      "standing by: etcd prefix {} is held by {}; this cofferd takes the store "
                      "when that one's lease ends",
                      options_.prefix, describe_holder(other));
        }
        waited = true;
        if (!pause(std::chrono::milliseconds(200))) throw stopped();
    }
    holding_ = true;
    if (create) {
        // Held now, and still empty: no other cofferd made a store here since it was counted.
        if (holds_store())
            throw ErrorException(make_error(
                Errc::conflict,
                fmt::format("another cofferd made a coffer store in etcd prefix {} while this one "
                            "started: join it with the manager join token (--join-token), or "
                            "give this cofferd another --etcd-prefix",
                            options_.prefix)));
    }
    log::info("store", "holding etcd prefix {} (lease {:x}, TTL {} s)", options_.prefix, lease_,
              options_.lease_ttl.count());
    prefer_raft_leader();
    looker_ = std::thread([this] { look_for_raft_leader(); });
}

Result<void> EtcdEngine::take_lease() {
    auto granted =
        call("/v3/lease/grant",
             json::serialize(json::object{{"TTL", std::to_string(options_.lease_ttl.count())}}));
    if (!granted) return std::move(granted).error().context("grant a lease");
    auto o = parse_object(*granted, "lease grant");
    if (!o) return std::move(o).error();
    auto id = int_field(*o, "ID");
    if (id == 0) return unreadable("lease grant");
    lease_ = id;
    lost_ = false;
    keeper_ = std::thread([this] { keep_alive(); });
    return {};
}

std::string EtcdEngine::self_value() const {
    char host[256] = {};
    (void)::gethostname(host, sizeof host - 1);
    return json::serialize(json::object{{"addr", options_.advertise},
                                        {"host", host},
                                        {"pid", static_cast<std::int64_t>(::getpid())}});
}

void EtcdEngine::announce() {
    if (options_.advertise.empty()) return;
    const auto value = self_value();
    json::array puts{
        json::object{{"request_put",
                      json::object{{"key", b64(options_.prefix + "managers/" + options_.advertise)},
                                   {"value", b64(value)}}}},
        json::object{{"request_put",
                      json::object{{"key", b64(options_.prefix + "alive/" + options_.advertise)},
                                   {"value", b64(value)},
                                   {"lease", std::to_string(lease_)}}}}};
    auto r = call("/v3/kv/txn", json::serialize(json::object{{"success", std::move(puts)}}));
    if (!r) throw ErrorException(std::move(r).error().context("announce this manager"));
}

Result<void> EtcdEngine::put_shared(std::string_view name, std::string value) {
    return write_held(
        json::array{json::object{
            {"request_put", json::object{{"key", b64(options_.prefix + std::string(name))},
                                         {"value", b64(value)}}}}},
        fmt::format("write {}", name));
}

Result<void> EtcdEngine::write_held(json::array ops, std::string_view what) {
    if (auto w = writable(); !w) return w;
    json::object txn{{"compare", held_compare()}, {"success", std::move(ops)}};
    auto r = call("/v3/kv/txn", json::serialize(txn));
    if (!r) return std::move(r).error().context(what);
    auto o = parse_object(*r, "txn");
    if (!o) return std::move(o).error();
    if (succeeded(*o)) return {};
    lost_ = true;
    log::error("store", "lost the hold on etcd prefix {}: another holder or no lease",
               options_.prefix);
    return writable();
}

Result<std::optional<std::string>> EtcdEngine::read_shared(const EtcdOptions& options,
                                                           std::string_view name) {
    if (options.endpoints.empty())
        return make_error(Errc::invalid_argument, "etcd: no endpoint given");
    EtcdEngine engine(options);
    return engine.read_key(options.prefix + std::string(name), name);
}

std::unique_ptr<EtcdEngine> EtcdEngine::unclaimed(const EtcdOptions& options) {
    if (options.endpoints.empty())
        throw ErrorException(make_error(Errc::invalid_argument, "etcd: no endpoint given"));
    std::unique_ptr<EtcdEngine> engine(new EtcdEngine(options));
    engine->lost_ = true;  // it never held the store: writable() refuses every write
    return engine;
}

Result<std::vector<StoreManager>> EtcdEngine::managers() {
    auto range = [&](const std::string& prefix) {
        return json::object{
            {"request_range",
             json::object{{"key", b64(prefix)}, {"range_end", b64(prefix_end(prefix))}}}};
    };
    const auto known = options_.prefix + "managers/", alive = options_.prefix + "alive/";
    // One transaction: the three reads at one revision.
    auto r = call(
        "/v3/kv/txn",
        json::serialize(json::object{
            {"success", json::array{range(known), range(alive),
                                    json::object{{"request_range",
                                                  json::object{{"key", b64(owner_key_)}}}}}}}));
    if (!r) return std::move(r).error().context("read the managers");
    auto o = parse_object(*r, "txn");
    if (!o) return std::move(o).error();
    std::vector<std::map<std::string, std::string>> tables(3);
    try {
        const auto& responses = o->at("responses").as_array();
        for (std::size_t i = 0; i < 3; ++i) {
            const auto* kvs = responses.at(i).at("response_range").as_object().if_contains("kvs");
            if (kvs == nullptr) continue;
            for (const auto& kv : kvs->as_array()) {
                auto key = unb64(kv.as_object().if_contains("key"));
                auto value = unb64(kv.as_object().if_contains("value"));
                if (!key || !value) return unreadable("managers");
                tables[i][*key] = *value;
            }
        }
    } catch (const std::exception&) {
        return unreadable("managers");
    }
    auto field = [](const std::string& text, std::string_view name) -> json::value {
        boost::system::error_code ec;
        auto v = json::parse(text, ec);
        if (ec || !v.is_object()) return nullptr;
        const auto* f = v.get_object().if_contains(name);
        return f != nullptr ? *f : json::value(nullptr);
    };
    std::string leader;
    if (!tables[2].empty())
        if (auto a = field(tables[2].begin()->second, "addr"); a.is_string())
            leader = a.get_string();
    std::vector<StoreManager> out;
    for (const auto& [key, value] : tables[0]) {
        StoreManager m;
        m.addr = key.substr(known.size());
        if (auto h = field(value, "host"); h.is_string()) m.host = h.get_string();
        if (auto p = field(value, "pid"); p.is_int64()) m.pid = p.get_int64();
        auto live = tables[1].find(alive + m.addr);
        m.reachable = live != tables[1].end();
        if (m.reachable) {
            if (auto h = field(live->second, "host"); h.is_string()) m.host = h.get_string();
            if (auto p = field(live->second, "pid"); p.is_int64()) m.pid = p.get_int64();
        }
        m.leader = !leader.empty() && m.addr == leader;
        out.push_back(std::move(m));
    }
    return out;
}

Result<void> EtcdEngine::forget_manager(std::string_view addr) {
    const auto known = options_.prefix + "managers/" + std::string(addr);
    auto compare = held_compare();
    compare.push_back(json::object{{"key", b64(options_.prefix + "alive/" + std::string(addr))},
                                   {"target", "CREATE"},
                                   {"result", "EQUAL"},
                                   {"create_revision", "0"}});
    compare.push_back(json::object{{"key", b64(known)},
                                   {"target", "CREATE"},
                                   {"result", "GREATER"},
                                   {"create_revision", "0"}});
    auto r =
        call("/v3/kv/txn",
             json::serialize(json::object{
                 {"compare", std::move(compare)},
                 {"success", json::array{json::object{
                                 {"request_delete_range", json::object{{"key", b64(known)}}}}}}}));
    if (!r) return std::move(r).error().context("forget a manager");
    auto o = parse_object(*r, "txn");
    if (!o) return std::move(o).error();
    if (succeeded(*o)) return {};
    if (auto w = writable(); !w) return w;
    auto all = managers();
    if (!all) return std::move(all).error();
    for (const auto& m : *all)
        if (m.addr == addr)
            return make_error(Errc::conflict,
                              fmt::format("the manager at {} runs (cofferd pid {} on {}): stop it "
                                          "first",
                                          addr, m.pid, m.host));
    return make_error(Errc::not_found, fmt::format("no manager at {}", addr));
}

void EtcdEngine::prefer_raft_leader() {
    auto status = call("/v3/maintenance/status", "{}");
    if (!status) return;
    auto o = parse_object(*status, "member status");
    if (!o) return;
    // uint64 ids, as decimal strings in the gateway's JSON
    auto id = [](const json::value* v) -> std::string {
        if (v == nullptr) return {};
        if (v->is_string()) return std::string(v->get_string());
        if (v->is_uint64()) return std::to_string(v->get_uint64());
        if (v->is_int64()) return std::to_string(v->get_int64());
        return {};
    };
    auto leader = id(o->if_contains("leader"));
    if (leader.empty() || leader == "0") return;
    const json::value* header = o->if_contains("header");
    if (header != nullptr && header->is_object() &&
        id(header->get_object().if_contains("member_id")) == leader)
        return;  // the member that answered (member_ now) leads
    auto members = call("/v3/cluster/member/list", "{}");
    if (!members) return;
    auto list = parse_object(*members, "member list");
    if (!list) return;
    const auto* all = list->if_contains("members");
    if (all == nullptr || !all->is_array()) return;
    for (const auto& m : all->get_array()) {
        if (!m.is_object() || id(m.get_object().if_contains("ID")) != leader) continue;
        const auto* urls = m.get_object().if_contains("clientURLs");
        if (urls == nullptr || !urls->is_array()) return;
        for (const auto& url : urls->get_array()) {
            if (!url.is_string()) continue;
            for (std::size_t i = 0; i < options_.endpoints.size(); ++i)
                if (options_.endpoints[i] == url.get_string()) {
                    if (member_.exchange(i) != i)
                        log::debug("store", "etcd: writes go to {}, the raft leader",
                                   options_.endpoints[i]);
                    return;
                }
        }
        return;
    }
}

void EtcdEngine::look_for_raft_leader() {
    // The raft leader may change: looked for again every 10 s.
    std::unique_lock l(keeper_mu_);
    while (!lost_) {
        if (keeper_cv_.wait_for(l, std::chrono::seconds(10), [&] { return stopping_; })) return;
        l.unlock();
        prefer_raft_leader();
        l.lock();
    }
}

void EtcdEngine::keep_alive() {
    // A third of the TTL between renewals: two may fail before the lease ends.
    const auto every =
        std::chrono::duration_cast<std::chrono::milliseconds>(options_.lease_ttl) / 3;
    std::unique_lock l(keeper_mu_);
    while (!lost_) {
        if (keeper_cv_.wait_for(l, every, [&] { return stopping_; })) return;
        l.unlock();
        auto r = call("/v3/lease/keepalive",
                      json::serialize(json::object{{"ID", std::to_string(lease_)}}));
        l.lock();
        if (!r) {
            log::warn("store", "renewing the etcd lease: {}", r.error().message);
            continue;
        }
        auto o = parse_object(*r, "lease keepalive");
        const json::object* result = nullptr;
        if (o)
            if (const auto* v = o->if_contains("result"); v && v->is_object())
                result = &v->get_object();
        if (result != nullptr && int_field(*result, "TTL") > 0) continue;
        lost_ = true;
        if (!holding_) {
            log::warn("store",
                      "standing by: this cofferd's etcd lease ended (etcd could not be reached "
                      "for longer than {} s); it takes a new one",
                      options_.lease_ttl.count());
            return;
        }
        log::error("store",
                   "lost the hold on etcd prefix {}: its lease ended (cut off from etcd for "
                   "longer than {} s); no write can succeed: restart cofferd",
                   options_.prefix, options_.lease_ttl.count());
    }
}

Result<std::optional<std::string>> EtcdEngine::get(Table table, std::string_view key) {
    return read_key(record_key(table, key), "");
}

Result<std::optional<std::string>> EtcdEngine::read_key(const std::string& key,
                                                        std::string_view what) {
    auto r = call("/v3/kv/range", json::serialize(json::object{{"key", b64(key)}}));
    if (!r)
        return std::move(r).error().context(what.empty() ? std::string("read")
                                                         : fmt::format("read {}", what));
    auto o = parse_object(*r, "range");
    if (!o) return std::move(o).error();
    const auto* kvs = o->if_contains("kvs");
    if (kvs == nullptr || !kvs->is_array() || kvs->get_array().empty())
        return std::optional<std::string>();
    const auto& kv = kvs->get_array().front();
    if (!kv.is_object()) return unreadable("range");
    auto value = unb64(kv.get_object().if_contains("value"));
    if (!value) return unreadable("range");
    return std::optional<std::string>(std::move(*value));
}

json::array EtcdEngine::held_compare() const {
    return json::array{json::object{{"key", b64(owner_key_)},
                                    {"target", "LEASE"},
                                    {"result", "EQUAL"},
                                    {"lease", std::to_string(lease_)}}};
}

Result<void> EtcdEngine::writable() const {
    if (lost_)
        return make_error(Errc::unavailable,
                          fmt::format("this cofferd lost its hold on etcd prefix {}: restart it",
                                      options_.prefix));
    return {};
}

Result<void> EtcdEngine::write(const RawBatch& batch) {
    if (batch.empty()) return {};
    // etcd refuses a transaction that names a key twice: the last operation on a key is what
    // applying them in order leaves.
    std::map<std::pair<Table, std::string_view>, std::size_t> last;
    for (std::size_t i = 0; i < batch.size(); ++i) last[{batch[i].table, batch[i].key}] = i;
    json::array success;
    success.reserve(last.size());
    for (std::size_t i = 0; i < batch.size(); ++i) {
        const auto& op = batch[i];
        if (last[{op.table, op.key}] != i) continue;
        if (op.value)
            success.push_back(json::object{
                {"request_put", json::object{{"key", b64(record_key(op.table, op.key))},
                                             {"value", b64(*op.value)}}}});
        else
            success.push_back(
                json::object{{"request_delete_range",
                              json::object{{"key", b64(record_key(op.table, op.key))}}}});
    }
    return write_held(std::move(success), "write");
}

Result<void> EtcdEngine::scan_at(Table table, std::string_view from, std::int64_t revision,
                                 const RawVisit& fn) {
    const auto table_prefix = record_key(table, {});
    const auto end = prefix_end(table_prefix);
    std::string start = table_prefix + std::string(from);
    for (;;) {
        json::object req{{"key", b64(start)},
                         {"range_end", b64(end)},
                         {"limit", std::to_string(page_records(table))}};
        if (revision != 0) req["revision"] = std::to_string(revision);
        auto r = call("/v3/kv/range", json::serialize(req));
        if (!r) return std::move(r).error().context(fmt::format("scan {}", table_name(table)));
        auto o = parse_object(*r, "range");
        if (!o) return std::move(o).error();
        if (revision == 0) {
            const auto* header = o->if_contains("header");
            if (header == nullptr || !header->is_object()) return unreadable("range");
            revision = int_field(header->get_object(), "revision");
        }
        const auto* kvs = o->if_contains("kvs");
        if (kvs == nullptr) return {};
        if (!kvs->is_array()) return unreadable("range");
        std::string last;
        for (const auto& kv : kvs->get_array()) {
            if (!kv.is_object()) return unreadable("range");
            auto key = unb64(kv.get_object().if_contains("key"));
            auto value = unb64(kv.get_object().if_contains("value"));
            if (!key || !value || !key->starts_with(table_prefix)) return unreadable("range");
            if (!fn(std::string_view(*key).substr(table_prefix.size()), *value)) return {};
            last = std::move(*key);
        }
        const auto* more = o->if_contains("more");
        if (more == nullptr || !more->is_bool() || !more->get_bool() || last.empty()) return {};
        start = last + '\0';
    }
}

Result<void> EtcdEngine::scan(Table table, std::string_view from, const RawVisit& fn) {
    return scan_at(table, from, 0, fn);
}

Result<void> EtcdEngine::discard() {
    for (Table table : all_tables) {
        auto prefix = record_key(table, {});
        json::object txn{
            {"compare", held_compare()},
            {"success",
             json::array{json::object{
                 {"request_delete_range",
                  json::object{{"key", b64(prefix)}, {"range_end", b64(prefix_end(prefix))}}}}}}};
        auto r = call("/v3/kv/txn", json::serialize(txn));
        if (!r) return std::move(r).error().context("erase the store");
    }
    return {};
}

Result<std::int64_t> EtcdEngine::current_revision() {
    auto r = call("/v3/kv/range", json::serialize(json::object{{"key", b64(owner_key_)}}));
    if (!r) return std::move(r).error();
    auto o = parse_object(*r, "range");
    if (!o) return std::move(o).error();
    const auto* header = o->if_contains("header");
    if (header == nullptr || !header->is_object()) return unreadable("range");
    auto rev = int_field(header->get_object(), "revision");
    if (rev <= 0) return unreadable("range");
    return rev;
}

Result<std::unique_ptr<EngineView>> EtcdEngine::snapshot() {
    auto rev = current_revision();
    if (!rev) return std::move(rev).error().context("snapshot");
    return std::unique_ptr<EngineView>(std::make_unique<View>(*this, *rev));
}

Result<void> EtcdEngine::compact() {
    auto rev = current_revision();
    if (!rev) return std::move(rev).error().context("compact");
    auto r =
        call("/v3/kv/compaction",
             json::serialize(json::object{{"revision", std::to_string(*rev)}, {"physical", true}}));
    // Nothing written since the last compaction: there is nothing to give back.
    if (!r && r.error().message.find("compacted") == std::string::npos)
        return std::move(r).error().context("compact");
    return {};
}

}  // namespace coffer::store::detail
