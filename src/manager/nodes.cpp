#include "coffer/manager/nodes.h"

#include <algorithm>
#include <cctype>

#include "coffer/base/log.h"
#include "coffer/model/ids.h"
#include "coffer/model/json.h"
#include "coffer/model/service_json.h"

namespace coffer::manager {

namespace json = boost::json;
using model::Node;
using Changes = ObjectTable<Node>::Changes;

namespace {

Result<const Node*> lookup(const ObjectTable<Node>::Map& items, std::string_view key) {
    auto not_found = [&] {
        return make_error(Errc::not_found, fmt::format("node {} not found", key));
    };
    if (key.empty()) return not_found();
    if (auto it = items.find(key); it != items.end()) return &it->second;
    const Node* found = nullptr;
    int matches = 0;
    for (const auto& [id, n] : items)
        if (n.description.hostname == key) found = &n, ++matches;
    if (matches == 1) return found;
    if (matches > 1)
        return make_error(Errc::invalid_argument,
                          fmt::format("node {} is ambiguous ({} matches found)", key, matches));
    for (auto it = items.lower_bound(key); it != items.end() && it->first.starts_with(key); ++it)
        found = &it->second, ++matches;
    if (matches > 1)
        return make_error(Errc::invalid_argument,
                          fmt::format("node {} is ambiguous ({} matches found)", key, matches));
    if (found) return found;
    return not_found();
}

bool same_name(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::tolower(static_cast<unsigned char>(x)) ==
                      std::tolower(static_cast<unsigned char>(y));
           });
}

bool holds_its_name(const Node& n, model::Timestamp now) {
    if (n.state == model::NodeState::ready || n.state == model::NodeState::disconnected)
        return true;
    return now.nanos - n.meta.updated.nanos < hostname_hold;
}

// The node holding hostname now, and the node (no longer active) whose name it was, if any.
struct NameHolders {
    const Node* active = nullptr;
    const Node* former = nullptr;
};

NameHolders holders_of(const ObjectTable<Node>::Map& items, std::string_view hostname,
                       model::Timestamp now) {
    NameHolders h;
    for (const auto& [id, n] : items) {
        if (!same_name(n.description.hostname, hostname)) continue;
        if (holds_its_name(n, now)) {
            h.active = &n;
            break;
        }
        h.former = &n;
    }
    return h;
}

Error name_taken(std::string_view hostname, const Node& holder) {
    return make_error(
        Errc::already_exists,
        fmt::format("hostname {} is taken by node {} ({}): join under another name "
                    "(coffer-agent --hostname), or remove that node first (coffer node "
                    "rm {})",
                    hostname, holder.meta.id, model::to_string(holder.state), holder.meta.id));
}

}  // namespace

Result<std::unique_ptr<NodeRegistry>> NodeRegistry::load(store::Store& store,
                                                         VersionCounter& counter) {
    std::unique_ptr<NodeRegistry> reg(new NodeRegistry(
        store, store::Table::nodes, counter,
        [](const Node& n) { return json::serialize(model::to_json(n)); },
        [](std::string_view text) -> Result<Node> {
            auto v = model::parse_json(text);
            if (!v) return std::move(v).error();
            return model::node_from_json(*v);
        }));
    if (auto r = reg->ObjectTable::load(); !r) return std::move(r).error().context("load nodes");
    // No session survives a restart: a node that was up is unknown until it connects again
    // (its tasks keep running meanwhile; the orchestrator treats it as down after a grace period).
    auto marked = reg->commit([](const Map& items) -> Result<Changes> {
        Changes c;
        auto now = model::Timestamp::now();
        for (const auto& [id, n] : items)
            if (n.state == model::NodeState::ready || n.state == model::NodeState::disconnected) {
                c.put.push_back(n);
                c.put.back().state = model::NodeState::unknown;
                c.put.back().meta.updated = now;
            }
        return c;
    });
    if (!marked) return std::move(marked).error();
    return reg;
}

namespace {

// A node record as a registration first makes it (the manager keeps the role from then on).
Node new_node(const NodeRegistration& reg, model::Timestamp now) {
    Node n;
    n.meta = {reg.id, 0, now, now};
    n.spec.role = reg.role;
    return n;
}

// What a registration says of the node, at its join and at every later registration.
void apply(Node& n, NodeRegistration&& reg) {
    n.description = std::move(reg.description);
    n.addr = std::move(reg.addr);
    n.certificate_expiry = reg.certificate_expiry;
    n.state = reg.state;
}

}  // namespace

Result<Node> NodeRegistry::register_node(NodeRegistration reg) {
    if (!model::valid_node_id(reg.id)) return make_error(Errc::invalid_argument, "invalid node id");
    auto written = commit([&](const Map& items) -> Result<Changes> {
        auto now = model::Timestamp::now();
        auto it = items.find(reg.id);
        Node n = it != items.end() ? it->second : new_node(reg, now);
        apply(n, std::move(reg));
        n.meta.updated = now;
        return Changes{{std::move(n)}, {}};
    });
    if (!written) return std::move(written).error();
    log::info("nodes", "node {} ({}) registered", written->front().meta.id,
              written->front().description.hostname);
    return written->front();
}

Result<void> NodeRegistry::check_hostname(std::string_view hostname, model::Timestamp now) const {
    return read([&](const Map& items) -> Result<void> {
        if (auto h = holders_of(items, hostname, now); h.active)
            return name_taken(hostname, *h.active);
        return {};
    });
}

Result<Node> NodeRegistry::join(NodeRegistration reg, model::Timestamp now) {
    if (!model::valid_node_id(reg.id)) return make_error(Errc::invalid_argument, "invalid node id");
    if (reg.description.hostname.empty())
        return make_error(Errc::invalid_argument, "a node needs a hostname");
    std::optional<Node> former;
    auto written = commit([&](const Map& items) -> Result<Changes> {
        if (items.count(reg.id))
            return make_error(Errc::already_exists, fmt::format("node {} already exists", reg.id));
        auto h = holders_of(items, reg.description.hostname, now);
        if (h.active) return name_taken(reg.description.hostname, *h.active);
        if (h.former) former = *h.former;
        Node n = new_node(reg, now);
        apply(n, std::move(reg));
        return Changes{{std::move(n)}, {}};
    });
    if (!written) return std::move(written).error();
    const auto& n = written->front();
    if (former)
        log::warn("nodes",
                  "node {} joins under the hostname {} of node {}, {} since {}: that node no "
                  "longer holds it",
                  n.meta.id, n.description.hostname, former->meta.id,
                  model::to_string(former->state), model::format_rfc3339(former->meta.updated));
    log::info("nodes", "node {} ({}) joined", n.meta.id, n.description.hostname);
    return n;
}

Result<void> NodeRegistry::set_status(std::string_view id, model::NodeState state,
                                      std::string_view addr) {
    auto written = commit([&](const Map& items) -> Result<Changes> {
        auto it = items.find(id);
        if (it == items.end())
            return make_error(Errc::not_found, fmt::format("node {} not found", id));
        if (it->second.state == state && it->second.addr == addr) return Changes{};
        Node n = it->second;
        n.state = state;
        n.addr = std::string(addr);
        n.meta.updated = model::Timestamp::now();
        return Changes{{std::move(n)}, {}};
    });
    if (!written) return std::move(written).error();
    return {};
}

Result<void> NodeRegistry::set_description(std::string_view id,
                                           model::NodeDescription description) {
    auto written = commit([&](const Map& items) -> Result<Changes> {
        auto it = items.find(id);
        if (it == items.end())
            return make_error(Errc::not_found, fmt::format("node {} not found", id));
        const auto& d = it->second.description;
        description.hostname = d.hostname;
        if (d.os == description.os && d.architecture == description.architecture &&
            d.nano_cpus == description.nano_cpus && d.memory_bytes == description.memory_bytes &&
            d.generic == description.generic)
            return Changes{};
        Node n = it->second;
        n.description = std::move(description);
        n.meta.updated = model::Timestamp::now();
        return Changes{{std::move(n)}, {}};
    });
    if (!written) return std::move(written).error();
    return {};
}

Result<Node> NodeRegistry::update(std::string_view key, std::uint64_t version,
                                  model::NodeSpec spec) {
    if (auto r = model::validate_labels(spec.labels); !r) return std::move(r).error();
    auto written = commit([&](const Map& items) -> Result<Changes> {
        auto n = lookup(items, key);
        if (!n) return std::move(n).error();
        if ((*n)->meta.version != version)
            return make_error(Errc::conflict, "update out of sequence");
        Node next = **n;
        next.spec = std::move(spec);
        next.meta.updated = model::Timestamp::now();
        return Changes{{std::move(next)}, {}};
    });
    if (!written) return std::move(written).error();
    return written->front();
}

Result<Node> NodeRegistry::remove(std::string_view key, bool force) {
    std::optional<Node> removed;
    auto written = commit([&](const Map& items) -> Result<Changes> {
        auto n = lookup(items, key);
        if (!n) return std::move(n).error();
        if (!force && (*n)->state == model::NodeState::ready)
            return make_error(
                Errc::invalid_argument,
                fmt::format("node {} is not down and can't be removed", (*n)->meta.id));
        removed = **n;
        return Changes{{}, {(*n)->meta.id}};
    });
    if (!written) return std::move(written).error();
    log::info("nodes", "node {} removed: its hostname {} is free", removed->meta.id,
              removed->description.hostname);
    return std::move(*removed);
}

Result<Node> NodeRegistry::find(std::string_view key) const {
    return read([&](const Map& items) -> Result<Node> {
        auto n = lookup(items, key);
        if (!n) return std::move(n).error();
        return **n;
    });
}

}  // namespace coffer::manager
