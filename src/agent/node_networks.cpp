// The node's networks: bridges, VXLAN devices and iptables chains from the manager's networks
// message, and the tasks' namespaces and interfaces through the CNI plugins. Links are made with
// `ip` and `bridge`, rules with `iptables-restore`, each run in the calling thread's network
// namespace (the node's).
#include "coffer/agent/node_networks.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "cni.h"
#include "coffer/base/log.h"
#include "coffer/base/mount.h"
#include "coffer/base/unique_fd.h"
#include "net_namespace.h"
#include "net_tools.h"

namespace coffer::agent {

namespace json = boost::json;
using nodeproto::NetworkPayload;
using nodeproto::NetworksMessage;

namespace {

constexpr std::string_view bridge_prefix = "cfb";
constexpr std::string_view vxlan_prefix = "cfv";
constexpr const char* forward_chain = "COFFER-FORWARD";
constexpr const char* nat_chain = "COFFER-POSTROUTING";
constexpr const char* flood_mac = "00:00:00:00:00:00";

std::string link_name(std::string_view prefix, std::string_view id) {
    unsigned char digest[5];
    crypto_generichash(digest, sizeof digest, reinterpret_cast<const unsigned char*>(id.data()),
                       id.size(), nullptr, 0);
    std::string name(prefix);
    for (unsigned char b : digest) name += fmt::format("{:02x}", b);
    return name;  // 13 characters: within IFNAMSIZ
}

bool ours(std::string_view ifname) {
    return ifname.size() == 13 &&
           (ifname.starts_with(bridge_prefix) || ifname.starts_with(vxlan_prefix));
}

bool valid_ipv4(std::string_view text) {
    in_addr a{};
    return ::inet_pton(AF_INET, std::string(text).c_str(), &a) == 1;
}

// "10.0.1.0/24" -> 24; -1 when not IPv4/prefix.
int prefix_of(std::string_view cidr) {
    auto slash = cidr.find('/');
    if (slash == std::string_view::npos || !valid_ipv4(cidr.substr(0, slash))) return -1;
    auto bits = cidr.substr(slash + 1);
    if (bits.empty() || bits.size() > 2 ||
        !std::all_of(bits.begin(), bits.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return -1;
    int n = std::stoi(std::string(bits));
    return n <= 32 ? n : -1;
}

std::string without_prefix(std::string_view cidr) {
    return std::string(cidr.substr(0, cidr.find('/')));
}

void check(Result<std::string> r, std::string_view what) {
    if (!r) throw ErrorException(std::move(r).error().context(what));
}

// Links of this namespace: name -> kind ("bridge", "vxlan", "" ...).
std::map<std::string, std::string> links() {
    auto out = tool({"ip", "-j", "-d", "link", "show"});
    if (!out) throw ErrorException(std::move(out).error());
    std::map<std::string, std::string> m;
    boost::system::error_code ec;
    auto v = json::parse(*out, ec);
    if (ec || !v.is_array()) return m;
    for (auto& l : v.as_array()) {
        if (!l.is_object()) continue;
        auto* name = l.as_object().if_contains("ifname");
        if (!name || !name->is_string()) continue;
        std::string kind;
        if (auto* li = l.as_object().if_contains("linkinfo"); li && li->is_object())
            if (auto* k = li->as_object().if_contains("info_kind"); k && k->is_string())
                kind = std::string(k->as_string());
        m.emplace(std::string(name->as_string()), kind);
    }
    return m;
}

void write_sysctl(const char* file, std::string_view value) {
    UniqueFd fd(::open(file, O_WRONLY | O_CLOEXEC));
    if (!fd) throw_errno(fmt::format("open {}", file));
    if (::write(fd.get(), value.data(), value.size()) != static_cast<ssize_t>(value.size()))
        throw_errno(fmt::format("write {}", file));
}

// Whether `iptables -t table -C rule...` finds the rule.
bool has_rule(const std::string& table, const std::vector<std::string>& rule) {
    std::vector<std::string> argv{"iptables", "-w", "-t", table, "-C"};
    argv.insert(argv.end(), rule.begin(), rule.end());
    ToolRun run;
    run.argv = argv;
    return run_tool(run).ok();
}

void ensure_rule(const std::string& table, const std::string& how,
                 const std::vector<std::string>& rule) {
    if (has_rule(table, rule)) return;
    std::vector<std::string> argv{"iptables", "-w", "-t", table, how};
    argv.insert(argv.end(), rule.begin(), rule.end());
    if (how == "-I") argv.insert(argv.begin() + 6, "1");
    check(tool(argv), "add iptables rule");
}

// The firewall plugin accepts a task's traffic in its CNI-FORWARD chain, which it puts first in
// FORWARD; CNI-ADMIN, which it jumps to before accepting, is where an administrator's rules go:
// the isolation must come first there too.
void ensure_admin_jump() {
    std::vector<std::string> rule{"CNI-ADMIN", "-j", forward_chain};
    if (has_rule("filter", rule)) return;
    ToolRun run;
    run.argv = {"iptables", "-w", "-t", "filter", "-A", "CNI-ADMIN", "-j", forward_chain};
    auto r = run_tool(run);
    if (!r.ok()) log::debug("network", "no CNI-ADMIN chain yet: {}", r.describe(run.argv));
}

struct NetState {
    NetworkPayload payload;
    std::string bridge;
    std::string vxlan;  // overlay only
    std::set<std::string> peers;
    bool listed = true;
};

}  // namespace

struct NodeNetworks::Impl {
    NodeNetworksOptions opt;
    UniqueFd claim;       // claim_namespace()'s, for the networks' life
    std::mutex apply_mu;  // one apply at a time; taken before mu
    mutable std::mutex mu;
    std::condition_variable cv;
    NetworksMessage current;
    std::map<std::string, NetState> nets;  // made on this node
    std::map<std::string, int> uses;       // network id -> tasks attached
    struct TaskEntry {
        std::string netns;
        std::vector<std::string> networks;
    };
    std::map<std::string, TaskEntry> tasks;  // attached, by task id

    // submit(): the next message to apply, and the thread that applies it.
    std::mutex submit_mu;
    std::condition_variable submit_cv;
    std::optional<NetworksMessage> pending;
    bool stopping = false;
    std::thread applier;

    // mu held by the caller for the map, the tools run under apply_mu.
    void make_network(NetState& s);
    void update_network(NetState& s, const NetworkPayload& p);
    void remove_network(const NetState& s);
    void apply_rules();
    void prune();  // networks no longer listed and unused
    void release(const std::string& task_id, const std::vector<std::string>& networks);
};

void NodeNetworks::Impl::make_network(NetState& s) {
    const auto& p = s.payload;
    auto prefix = prefix_of(p.subnet);
    if (prefix < 0 || !valid_ipv4(p.gateway))
        throw ErrorException(make_error(Errc::invalid_argument,
                                        fmt::format("network {}: bad subnet or gateway", p.id)));
    auto mtu = std::to_string(p.mtu);
    auto existing = links();
    if (existing.contains(s.bridge))
        check(tool({"ip", "link", "del", s.bridge}), "remove old bridge");
    check(tool({"ip", "link", "add", "name", s.bridge, "mtu", mtu, "type", "bridge"}),
          fmt::format("network {}: add bridge {}", p.id, s.bridge));
    check(tool({"ip", "addr", "add", fmt::format("{}/{}", p.gateway, prefix), "dev", s.bridge}),
          fmt::format("network {}: address of bridge", p.id));
    if (p.driver == "overlay") {
        if (existing.contains(s.vxlan))
            check(tool({"ip", "link", "del", s.vxlan}), "remove old vxlan");
        check(tool({"ip", "link", "add", s.vxlan, "mtu", mtu, "type", "vxlan", "id",
                    std::to_string(p.vni), "dstport", "4789", "learning"}),
              fmt::format("network {}: add vxlan {}", p.id, s.vxlan));
        check(tool({"ip", "link", "set", s.vxlan, "master", s.bridge, "up"}),
              fmt::format("network {}: enslave vxlan", p.id));
    }
    check(tool({"ip", "link", "set", s.bridge, "up"}), fmt::format("network {}: bridge up", p.id));
    s.peers.clear();
    update_network(s, p);
}

void NodeNetworks::Impl::update_network(NetState& s, const NetworkPayload& p) {
    const auto& old = s.payload;
    auto prefix = prefix_of(p.subnet);
    if (old.gateway != p.gateway || old.subnet != p.subnet) {
        (void)tool({"ip", "addr", "del", fmt::format("{}/{}", old.gateway, prefix_of(old.subnet)),
                    "dev", s.bridge});
        check(tool({"ip", "addr", "add", fmt::format("{}/{}", p.gateway, prefix), "dev", s.bridge}),
              fmt::format("network {}: address of bridge", p.id));
    }
    if (old.mtu != p.mtu) {
        check(tool({"ip", "link", "set", s.bridge, "mtu", std::to_string(p.mtu)}), "bridge mtu");
        if (!s.vxlan.empty())
            check(tool({"ip", "link", "set", s.vxlan, "mtu", std::to_string(p.mtu)}), "vxlan mtu");
    }
    if (!s.vxlan.empty()) {
        std::set<std::string> want;
        for (const auto& peer : p.peers)
            if (valid_ipv4(peer)) want.insert(peer);
        std::vector<std::string> gone;
        for (const auto& peer : s.peers)
            if (!want.contains(peer)) gone.push_back(peer);
        for (const auto& peer : gone)
            check(tool({"bridge", "fdb", "del", flood_mac, "dev", s.vxlan, "dst", peer}),
                  fmt::format("network {}: remove peer {}", p.id, peer));
        if (!gone.empty()) {
            // What the device learned behind a node that left goes too: "<mac> dst <peer> self".
            auto fdb = tool({"bridge", "fdb", "show", "dev", s.vxlan});
            std::istringstream lines(fdb ? *fdb : std::string());
            std::string line;
            while (std::getline(lines, line)) {
                std::istringstream words(line);
                std::string mac, dst, peer;
                if (!(words >> mac >> dst >> peer) || dst != "dst") continue;
                if (std::find(gone.begin(), gone.end(), peer) == gone.end()) continue;
                (void)tool({"bridge", "fdb", "del", mac, "dev", s.vxlan, "dst", peer});
            }
        }
        for (const auto& peer : want)
            if (!s.peers.contains(peer))
                check(tool({"bridge", "fdb", "append", flood_mac, "dev", s.vxlan, "dst", peer}),
                      fmt::format("network {}: add peer {}", p.id, peer));
        s.peers = std::move(want);
    }
    s.payload = p;
}

void NodeNetworks::Impl::remove_network(const NetState& s) {
    if (!s.vxlan.empty()) {
        if (auto r = tool({"ip", "link", "del", s.vxlan}); !r)
            log::warn("network", "network {}: {}", s.payload.id, r.error().message);
    }
    if (auto r = tool({"ip", "link", "del", s.bridge}); !r)
        log::warn("network", "network {}: {}", s.payload.id, r.error().message);
}

// The isolation and the masquerading, whole, in the agent's own chains.
void NodeNetworks::Impl::apply_rules() {
    std::string filter = fmt::format("*filter\n:{0} - [0:0]\n-F {0}\n", forward_chain);
    std::string nat = fmt::format("*nat\n:{0} - [0:0]\n-F {0}\n", nat_chain);
    for (const auto& [id, s] : nets)  // a network's own traffic stays on its bridge
        filter += fmt::format("-A {0} -i {1} -o {1} -j ACCEPT\n", forward_chain, s.bridge);
    // Between two networks: never.
    filter += fmt::format("-A {0} -i {1}+ -o {1}+ -j DROP\n", forward_chain, bridge_prefix);
    for (const auto& [id, s] : nets) {
        if (s.payload.internal) {
            filter += fmt::format("-A {0} -i {1} -j DROP\n-A {0} -o {1} -j DROP\n", forward_chain,
                                  s.bridge);
            continue;
        }
        filter += fmt::format(
            "-A {0} -i {1} -j ACCEPT\n"
            "-A {0} -o {1} -m conntrack --ctstate RELATED,ESTABLISHED,DNAT -j ACCEPT\n",
            forward_chain, s.bridge);
        nat += fmt::format("-A {0} -s {1} ! -o {2}+ -j MASQUERADE\n", nat_chain, s.payload.subnet,
                           bridge_prefix);
    }
    filter += "COMMIT\n";
    nat += "COMMIT\n";
    check(tool({"iptables-restore", "-w", "--noflush"}, filter + nat), "iptables rules");
    ensure_rule("filter", "-I", {"FORWARD", "-j", forward_chain});
    ensure_rule("nat", "-A", {"POSTROUTING", "-j", nat_chain});
    ensure_admin_jump();
}

void NodeNetworks::Impl::prune() {
    for (auto it = nets.begin(); it != nets.end();) {
        if (!it->second.listed && uses[it->first] == 0) {
            remove_network(it->second);
            uses.erase(it->first);
            it = nets.erase(it);
        } else {
            ++it;
        }
    }
}

void NodeNetworks::Impl::release(const std::string& task_id,
                                 const std::vector<std::string>& networks) {
    std::lock_guard a(apply_mu);
    std::lock_guard g(mu);
    tasks.erase(task_id);
    bool any_gone = false;
    for (const auto& id : networks) {
        if (--uses[id] <= 0) {
            auto it = nets.find(id);
            any_gone = any_gone || (it != nets.end() && !it->second.listed);
        }
    }
    if (!any_gone) return;
    try {
        prune();
        apply_rules();
    } catch (const std::exception& e) {
        log::warn("network", "remove networks no longer listed: {}", e.what());
    }
}

namespace {

class TaskNetworkImpl final : public TaskNetwork {
  public:
    TaskNetworkImpl(std::shared_ptr<NodeNetworks::Impl> node, std::string task_id,
                    std::vector<std::string> networks)
        : node_(std::move(node)), task_id_(std::move(task_id)), networks_(std::move(networks)) {}
    ~TaskNetworkImpl() override {
        // Interfaces first (in reverse), while the namespace still exists, then the namespace.
        for (auto it = caches_.rbegin(); it != caches_.rend(); ++it)
            if (auto r = cni_del(node_->opt.cni_path, *it); !r)
                log::warn("network", "task {}: {}", task_id_, r.error().message);
        ns_.reset();
        node_->release(task_id_, networks_);
    }

    const std::string& netns() const override { return ns_.path(); }
    std::vector<std::string> addresses() const override { return addresses_; }
    std::string nameserver() const override { return nameserver_; }

    std::shared_ptr<NodeNetworks::Impl> node_;
    std::string task_id_;
    std::vector<std::string> networks_;
    NetNamespace ns_;
    std::vector<std::string> caches_;  // CNI caches of the interfaces attached (or being so)
    std::vector<std::string> addresses_;
    std::string nameserver_;
};

json::object bridge_plugin(const NetworkPayload& n, const std::string& bridge,
                           const std::string& address, bool default_route) {
    json::object ipam{
        {"type", "static"},
        {"addresses", json::array{json::object{{"address", address}, {"gateway", n.gateway}}}}};
    if (default_route)
        ipam["routes"] = json::array{json::object{{"dst", "0.0.0.0/0"}, {"gw", n.gateway}}};
    return json::object{{"type", "bridge"},          {"bridge", bridge},       {"isGateway", true},
                        {"isDefaultGateway", false}, {"ipMasq", false},        {"mtu", n.mtu},
                        {"hairpinMode", true},       {"ipam", std::move(ipam)}};
}

}  // namespace

Result<UniqueFd> NodeNetworks::claim_namespace() {
    struct stat ns {};
    if (::stat("/proc/thread-self/ns/net", &ns) != 0)
        return make_error(Errc::internal,
                          fmt::format("read this network namespace: {}", std::strerror(errno)));
    // /run/lock is a tmpfs on Debian: a claim never outlives a boot.
    const char* dir = ::access("/run/lock", W_OK) == 0 ? "/run/lock" : "/run";
    auto path = fmt::format("{}/coffer-agent-netns-{}-{}.lock", dir, ns.st_dev, ns.st_ino);
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd)
        return make_error(Errc::internal, fmt::format("open {}: {}", path, std::strerror(errno)));
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0)
        return make_error(
            Errc::conflict,
            fmt::format("another coffer-agent runs in this network namespace (it holds {}); its "
                        "bridges, VXLAN devices and chains are left alone: stop it first, or run "
                        "this one in a network namespace of its own",
                        path));
    return fd;
}

NodeNetworks::NodeNetworks(NodeNetworksOptions options) : impl_(std::make_shared<Impl>()) {
    impl_->opt = std::move(options);
    auto claimed = claim_namespace();
    if (!claimed) throw ErrorException(std::move(claimed).error());
    impl_->claim = std::move(*claimed);
    if (int n = remove_leftovers(); n > 0)
        log::info("network", "removed {} links and chains an earlier agent left", n);
    impl_->applier = std::thread([this] {
        auto& im = *impl_;
        for (;;) {
            NetworksMessage m;
            {
                std::unique_lock g(im.submit_mu);
                im.submit_cv.wait(g, [&] { return im.stopping || im.pending; });
                if (im.stopping) return;
                m = std::move(*im.pending);
                im.pending.reset();
            }
            if (auto r = apply(m); !r)
                log::warn("network", "networks message {}: {}", m.sequence, r.error().message);
            else
                log::debug("network", "networks message {}: {} networks", m.sequence,
                           m.networks.size());
        }
    });
}

void NodeNetworks::submit(NetworksMessage m) {
    {
        std::lock_guard g(impl_->submit_mu);
        impl_->pending = std::move(m);
    }
    impl_->submit_cv.notify_one();
}

NodeNetworks::~NodeNetworks() {
    {
        std::lock_guard g(impl_->submit_mu);
        impl_->stopping = true;
    }
    impl_->submit_cv.notify_one();
    impl_->applier.join();
    std::lock_guard a(impl_->apply_mu);
    std::lock_guard g(impl_->mu);
    for (const auto& [id, s] : impl_->nets) impl_->remove_network(s);
    impl_->nets.clear();
    try {
        remove_leftovers();
    } catch (const std::exception& e) {
        log::warn("network", "remove chains: {}", e.what());
    }
}

std::string NodeNetworks::bridge_name(std::string_view id) {
    return link_name(bridge_prefix, id);
}

std::string NodeNetworks::vxlan_name(std::string_view id) {
    return link_name(vxlan_prefix, id);
}

NetworksMessage NodeNetworks::current() const {
    std::lock_guard g(impl_->mu);
    return impl_->current;
}

Result<void> NodeNetworks::apply(const NetworksMessage& m) {
    auto& im = *impl_;
    std::vector<std::pair<std::string, std::vector<std::string>>> task_rules;
    {
        std::lock_guard a(im.apply_mu);
        std::lock_guard g(im.mu);
        if (m.sequence != 0 && m.sequence < im.current.sequence) return {};
        try {
            write_sysctl("/proc/sys/net/ipv4/ip_forward", "1");
            std::set<std::string> listed;
            for (const auto& p : m.networks) {
                listed.insert(p.id);
                auto it = im.nets.find(p.id);
                bool remake = it != im.nets.end() && (it->second.payload.driver != p.driver ||
                                                      it->second.payload.vni != p.vni);
                if (it == im.nets.end() || remake) {
                    NetState s;
                    s.payload = p;
                    s.bridge = bridge_name(p.id);
                    if (p.driver == "overlay") s.vxlan = vxlan_name(p.id);
                    im.make_network(s);
                    im.nets.insert_or_assign(p.id, std::move(s));
                } else {
                    it->second.listed = true;
                    im.update_network(it->second, p);
                }
            }
            for (auto& [id, s] : im.nets) s.listed = listed.contains(id);
            im.prune();
            im.apply_rules();
        } catch (const ErrorException& e) {
            return Error(e.error()).context("apply networks");
        } catch (const std::exception& e) {
            return make_error(Errc::internal, fmt::format("apply networks: {}", e.what()));
        }
        im.current = m;
        for (const auto& [id, t] : im.tasks) task_rules.emplace_back(t.netns, t.networks);
    }
    im.cv.notify_all();
    if (im.opt.on_applied) {
        try {
            im.opt.on_applied(m);
        } catch (const std::exception& e) {
            log::warn("network", "networks {}: {}", m.sequence, e.what());
        }
    }
    if (im.opt.on_task)
        for (const auto& [netns, ids] : task_rules) {
            try {
                im.opt.on_task(m, netns, ids);
            } catch (const std::exception& e) {
                log::warn("network", "task rules in {}: {}", netns, e.what());
            }
        }
    return {};
}

Result<std::unique_ptr<TaskNetwork>> NodeNetworks::attach(const TaskSpec& spec,
                                                          const std::string& task_dir) {
    auto& im = *impl_;
    if (spec.networks.empty())
        return make_error(Errc::invalid_argument, "the task has no network to attach");
    std::vector<std::string> ids;
    for (const auto& n : spec.networks) {
        if (prefix_of(n.address) < 0)
            return make_error(Errc::invalid_argument, fmt::format("network {}: invalid address {}",
                                                                  n.network_id, n.address));
        if (std::find(ids.begin(), ids.end(), n.network_id) != ids.end())
            return make_error(Errc::invalid_argument,
                              fmt::format("network {} is attached twice", n.network_id));
        ids.push_back(n.network_id);
    }
    for (const auto& hp : spec.host_ports)
        if ((hp.protocol != "tcp" && hp.protocol != "udp") || hp.target_port == 0 ||
            hp.published_port == 0)
            return make_error(Errc::invalid_argument,
                              fmt::format("invalid host port {}:{}/{}", hp.published_port,
                                          hp.target_port, hp.protocol));
    std::vector<std::pair<NetworkPayload, std::string>> nets;  // with the bridge name
    {
        std::unique_lock g(im.mu);
        std::string missing;
        auto known = [&] {
            for (const auto& id : ids) {
                auto it = im.nets.find(id);
                if (it == im.nets.end() || !it->second.listed) {
                    missing = id;
                    return false;
                }
            }
            return true;
        };
        if (!im.cv.wait_for(g, im.opt.wait_for_networks, known))
            return make_error(Errc::unavailable,
                              fmt::format("network {} is not known on this node (no networks "
                                          "message listed it within {} s)",
                                          missing,
                                          std::chrono::duration_cast<std::chrono::seconds>(
                                              im.opt.wait_for_networks)
                                              .count()));
        for (const auto& id : ids) {
            const auto& s = im.nets.at(id);
            nets.emplace_back(s.payload, s.bridge);
            ++im.uses[id];
        }
    }
    // From here the task holds its networks: whatever fails, its destructor gives back all.
    auto tn = std::make_unique<TaskNetworkImpl>(impl_, spec.id, ids);
    try {
        std::map<std::string, std::string> net_sysctls;
        for (const auto& [k, v] : spec.sysctls)
            if (k.starts_with("net.")) net_sysctls.emplace(k, v);
        tn->ns_ = NetNamespace::create(task_dir + "/netns", net_sysctls);
        make_dir(task_dir + "/cni", 0700);
        std::size_t route_via = nets.size();
        for (std::size_t i = 0; i < nets.size(); ++i)
            if (!nets[i].first.internal) {
                route_via = i;
                break;
            }
        for (std::size_t i = 0; i < nets.size(); ++i) {
            const auto& [payload, bridge] = nets[i];
            const auto& address = spec.networks[i].address;
            if (prefix_of(address) != prefix_of(payload.subnet))
                return make_error(Errc::invalid_argument,
                                  fmt::format("network {}: address {} is not in subnet {}",
                                              payload.id, address, payload.subnet));
            CniAttachment a;
            a.network_name = "coffer-" + payload.id;
            a.container_id = spec.id;
            a.netns = tn->ns_.path();
            a.ifname = fmt::format("eth{}", i);
            a.plugins.push_back(bridge_plugin(payload, bridge, address, i == route_via));
            if (i == 0 && !spec.host_ports.empty()) {
                json::array mappings;
                for (const auto& hp : spec.host_ports)
                    mappings.push_back(json::object{{"hostPort", hp.published_port},
                                                    {"containerPort", hp.target_port},
                                                    {"protocol", hp.protocol}});
                a.capability_args["portMappings"] = std::move(mappings);
                a.plugins.push_back(json::object{{"type", "portmap"},
                                                 {"capabilities", {{"portMappings", true}}},
                                                 {"snat", true}});
            }
            a.plugins.push_back(json::object{{"type", "firewall"}, {"backend", "iptables"}});
            auto cache = fmt::format("{}/cni/{}.json", task_dir, a.ifname);
            tn->caches_.push_back(cache);
            auto r = cni_add(im.opt.cni_path, a, cache);
            if (!r)
                return std::move(r).error().context(
                    fmt::format("attach network {} ({})", payload.name, payload.id));
            tn->addresses_.push_back(without_prefix(address));
        }
        tn->nameserver_ = nets.front().first.gateway;
        ensure_admin_jump();
        NetworksMessage msg;
        {
            std::lock_guard g(im.mu);
            im.tasks[spec.id] = {tn->ns_.path(), ids};
            msg = im.current;
        }
        if (im.opt.on_task) im.opt.on_task(msg, tn->ns_.path(), ids);
    } catch (const ErrorException& e) {
        return Error(e.error()).context("attach networks");
    } catch (const std::exception& e) {
        return make_error(Errc::internal, fmt::format("attach networks: {}", e.what()));
    }
    return std::unique_ptr<TaskNetwork>(std::move(tn));
}

int NodeNetworks::remove_leftovers() {
    int n = 0;
    // VXLAN devices first (enslaved to the bridges), then the bridges.
    auto all = links();
    for (int pass = 0; pass < 2; ++pass)
        for (const auto& [name, kind] : all) {
            if (!ours(name) || name.starts_with(pass == 0 ? bridge_prefix : vxlan_prefix)) continue;
            if (auto r = tool({"ip", "link", "del", name}); r)
                ++n;
            else
                log::warn("network", "remove {}: {}", name, r.error().message);
        }
    // The COFFER-* chains and every rule that jumps to one, table by table.
    auto saved = tool({"iptables-save"});
    if (!saved) {
        log::warn("network", "{}", saved.error().message);
        return n;
    }
    std::istringstream in(*saved);
    std::string line, table, script;
    std::vector<std::string> chains, deletes;
    auto flush_table = [&] {
        if (table.empty() || (chains.empty() && deletes.empty())) return;
        script += "*" + table + "\n";
        for (auto& d : deletes) script += d + "\n";
        for (auto& c : chains) script += "-F " + c + "\n";
        for (auto& c : chains) script += "-X " + c + "\n";
        script += "COMMIT\n";
        n += static_cast<int>(chains.size() + deletes.size());
    };
    while (std::getline(in, line)) {
        if (line.starts_with("*")) {
            table = line.substr(1);
            chains.clear();
            deletes.clear();
        } else if (line == "COMMIT") {
            flush_table();
            table.clear();
        } else if (line.starts_with(":COFFER-")) {
            chains.push_back(line.substr(1, line.find(' ') - 1));
        } else if (line.starts_with("-A ") && !line.starts_with("-A COFFER-") &&
                   line.find(" -j COFFER-") != std::string::npos) {
            deletes.push_back("-D " + line.substr(3));
        }
    }
    if (!script.empty()) {
        if (auto r = tool({"iptables-restore", "-w", "--noflush"}, script); !r)
            log::warn("network", "remove COFFER chains: {}", r.error().message);
    }
    return n;
}

int NodeNetworks::remove_task_leftovers(const std::string& task_dir, const std::string& cni_path) {
    int n = 0;
    auto files = list_dir(task_dir + "/cni");
    std::sort(files.rbegin(), files.rend());  // eth1 before eth0
    for (const auto& f : files) {
        if (!f.ends_with(".json")) continue;
        if (auto r = cni_del(cni_path, fmt::format("{}/cni/{}", task_dir, f)); !r)
            log::warn("network", "{}: {}", task_dir, r.error().message);
        else
            ++n;
    }
    remove_net_namespace(task_dir + "/netns");
    return n;
}

}  // namespace coffer::agent
