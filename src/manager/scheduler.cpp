#include "coffer/manager/scheduler.h"

#include <algorithm>
#include <array>
#include <tuple>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace coffer::manager {

using model::Node;
using model::Task;
using model::TaskState;

namespace {

// The checks a node must pass, in the order Swarm's pipeline runs them; a node that fails one
// is counted against the first it fails.
enum Check : std::size_t {
    ready,
    resources,
    constraints,
    platform,
    host_port,
    max_replicas,
    check_count
};

std::string explain(Check c, std::size_t nodes) {
    auto n = fmt::format("{} node{}", nodes, nodes == 1 ? "" : "s");
    switch (c) {
        case ready:
            return n + " not available for new tasks";
        case resources:
            return "insufficient resources on " + n;
        case constraints:
            return "scheduling constraints not satisfied on " + n;
        case platform:
            return "unsupported platform on " + n;
        case host_port:
            return "host-mode port already in use on " + n;
        case max_replicas:
        case check_count:
            break;
    }
    return "max replicas per node limit exceed";
}

bool reserves(const model::TaskTemplate& spec) {
    const auto& r = spec.reservations;
    return r.memory_bytes != 0 || r.nano_cpus != 0 || !r.generic.empty();
}

bool has_room(const Node& n, const model::TaskTemplate& spec, const NodeLoad& load) {
    const auto& r = spec.reservations;
    const auto& d = n.description;
    if (r.nano_cpus > d.nano_cpus - load.nano_cpus) return false;
    if (r.memory_bytes > d.memory_bytes - load.memory_bytes) return false;
    for (const auto& g : r.generic) {
        auto held = load.generic.find(g.kind);
        auto reserved = held == load.generic.end() ? 0 : held->second;
        if (g.discrete > generic_total(d, g.kind) - reserved) return false;
    }
    return true;
}

std::size_t of_service(const NodeLoad& load, std::string_view service_id) {
    auto it = load.by_service.find(service_id);
    return it == load.by_service.end() ? 0 : it->second;
}

// A node's value for a spread label; nodes without the label form the group "".
std::string_view label_of(const Node& n, const std::string& label) {
    auto it = n.spec.labels.find(label);
    return it == n.spec.labels.end() ? std::string_view() : std::string_view(it->second);
}

// Among the eligible nodes: at each preference level, the group of label values whose nodes (all
// of them, eligible or not, within the groups chosen so far) run the fewest tasks of the service;
// then the least loaded node of the last group.
const Node* choose(const Task& task, std::vector<const Node*> candidates,
                   const std::vector<Node>& all, const Loads& loads) {
    const auto& spread = task.spec.spread;
    for (std::size_t level = 0; level < spread.size(); ++level) {
        std::map<std::string_view, std::size_t> tasks_in;
        for (const auto* n : candidates) tasks_in.emplace(label_of(*n, spread[level]), 0);
        for (const auto& n : all) {
            bool on_path = true;
            for (std::size_t i = 0; i < level && on_path; ++i)
                on_path = label_of(n, spread[i]) == label_of(*candidates.front(), spread[i]);
            auto group = on_path ? tasks_in.find(label_of(n, spread[level])) : tasks_in.end();
            if (group != tasks_in.end())
                group->second += of_service(loads.of(n.meta.id), task.service_id);
        }
        auto best = std::min_element(tasks_in.begin(), tasks_in.end(), [](auto& a, auto& b) {
            return std::tie(a.second, a.first) < std::tie(b.second, b.first);
        });
        auto value = best->first;
        std::erase_if(candidates,
                      [&](const Node* n) { return label_of(*n, spread[level]) != value; });
    }
    auto load = [&](const Node* n) {
        const auto& l = loads.of(n->meta.id);
        return std::tuple{of_service(l, task.service_id), l.total, std::string_view(n->meta.id)};
    };
    return *std::min_element(candidates.begin(), candidates.end(),
                             [&](const Node* a, const Node* b) { return load(a) < load(b); });
}

std::string_view normal_arch(std::string_view a) {
    if (a == "x86_64") return "amd64";
    if (a == "aarch64") return "arm64";
    return a;
}

}  // namespace

void Loads::add(const Task& t) {
    if (t.node_id.empty() || t.status.state < TaskState::assigned ||
        model::is_terminal(t.status.state))
        return;
    auto& l = nodes_[t.node_id];
    ++l.total;
    if (t.desired <= TaskState::running) ++l.by_service[t.service_id];
    l.memory_bytes += t.spec.reservations.memory_bytes;
    l.nano_cpus += t.spec.reservations.nano_cpus;
    for (const auto& g : t.spec.reservations.generic) l.generic[g.kind] += g.discrete;
    for (const auto& p : t.host_ports) l.host_ports.emplace(p.protocol, p.published_port);
}

const NodeLoad& Loads::of(const std::string& node_id) const {
    static const NodeLoad none;
    auto it = nodes_.find(node_id);
    return it == nodes_.end() ? none : it->second;
}

std::int64_t generic_total(const model::NodeDescription& d, std::string_view kind) {
    std::int64_t total = 0;
    for (const auto& g : d.generic)
        if (g.kind == kind) total += g.is_named() ? 1 : g.discrete;
    return total;
}

bool platform_matches(const Node& node, const std::vector<model::Platform>& platforms) {
    if (platforms.empty()) return true;
    auto arch = normal_arch(node.description.architecture);
    return std::any_of(platforms.begin(), platforms.end(), [&](const model::Platform& p) {
        return (p.architecture.empty() || normal_arch(p.architecture) == arch) &&
               (p.os.empty() || p.os == node.description.os);
    });
}

bool satisfies(const Node& node, const std::vector<model::Constraint>& constraints) {
    for (const auto& c : constraints) {
        std::optional<std::string> actual;
        if (c.key == "node.id")
            actual = node.meta.id;
        else if (c.key == "node.hostname")
            actual = node.description.hostname;
        else if (c.key == "node.role")
            actual = std::string(model::to_string(node.spec.role));
        else if (auto it = node.spec.labels.find(c.key.substr(12)); it != node.spec.labels.end())
            actual = it->second;
        // A missing label never equals a value and always differs from it, as in Swarm.
        bool equal = actual && *actual == c.value;
        if (equal != c.equal) return false;
    }
    return true;
}

Placement place(const Task& task, const std::vector<Node>& nodes, const Loads& loads) {
    const auto& spec = task.spec;
    std::array<std::size_t, check_count> failed{};
    std::vector<const Node*> eligible;
    for (const auto& n : nodes) {
        if (!task.node_id.empty() && n.meta.id != task.node_id) continue;
        const auto& load = loads.of(n.meta.id);
        Check miss = check_count;
        if (n.state != model::NodeState::ready ||
            n.spec.availability != model::NodeAvailability::active)
            miss = ready;
        else if (reserves(spec) && !has_room(n, spec, load))
            miss = resources;
        else if (!satisfies(n, spec.constraints))
            miss = constraints;
        else if (!platform_matches(n, spec.platforms))
            miss = platform;
        else if (std::any_of(task.host_ports.begin(), task.host_ports.end(),
                             [&](const model::PortConfig& p) {
                                 return load.host_ports.count({p.protocol, p.published_port}) > 0;
                             }))
            miss = host_port;
        else if (spec.max_replicas > 0 && of_service(load, task.service_id) >= spec.max_replicas)
            miss = max_replicas;
        if (miss == check_count)
            eligible.push_back(&n);
        else
            ++failed[miss];
    }
    if (!eligible.empty()) return {choose(task, std::move(eligible), nodes, loads)->meta.id, {}};
    std::array<Check, check_count> order{ready,    resources, constraints,
                                         platform, host_port, max_replicas};
    std::stable_sort(order.begin(), order.end(),
                     [&](Check a, Check b) { return failed[a] > failed[b]; });
    std::vector<std::string> why;
    for (auto c : order)
        if (failed[c] > 0) why.push_back(explain(c, failed[c]));
    auto reasons = fmt::format("{}", fmt::join(why, "; "));
    // A task bound to its node (a global service's) is told what that node lacks, as in Swarm.
    if (!task.node_id.empty() && !reasons.empty()) return {{}, reasons};
    return {{}, reasons.empty() ? "no suitable node" : "no suitable node (" + reasons + ")"};
}

}  // namespace coffer::manager
