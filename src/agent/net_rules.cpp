#include "coffer/agent/net_rules.h"

#include <arpa/inet.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string_view>

#include "coffer/base/process.h"
#include "coffer/base/unique_fd.h"

namespace coffer::agent {
namespace {

// The address re-printed by inet_ntop: nothing but an IPv4 address reaches the rules text.
std::optional<std::string> ipv4(const std::string& text) {
    in_addr a{};
    if (::inet_pton(AF_INET, text.c_str(), &a) != 1) return std::nullopt;
    char buf[INET_ADDRSTRLEN];
    if (!::inet_ntop(AF_INET, &a, buf, sizeof buf)) return std::nullopt;
    return std::string(buf);
}

// One rule per choice: the i-th of n is taken with probability 1/(n-i) among what the earlier
// ones left, so each is taken with 1/n; the last takes what remains.
void spread(std::string& out, const std::string& match, const std::vector<std::string>& targets) {
    std::size_t n = targets.size();
    for (std::size_t i = 0; i < n; ++i) {
        out += "-A " + match;
        if (i + 1 < n)
            out += fmt::format(" -m statistic --mode random --probability {:.11f}",
                               1.0 / static_cast<double>(n - i));
        out += " -j DNAT --to-destination " + targets[i] + "\n";
    }
}

std::vector<std::string> words(std::string_view line) {
    std::vector<std::string> out;
    std::istringstream in{std::string(line)};
    for (std::string w; in >> w;) out.push_back(w);
    return out;
}

bool builtin_chain(const std::string& c) {
    return c == "PREROUTING" || c == "INPUT" || c == "FORWARD" || c == "OUTPUT" ||
           c == "POSTROUTING";
}

// The chain a rule's words jump to ("-j X"), or "".
std::string jump_of(const std::vector<std::string>& w) {
    for (std::size_t i = 0; i + 1 < w.size(); ++i)
        if (w[i] == "-j" || w[i] == "--jump") return w[i + 1];
    return {};
}

Result<CommandResult> run(std::vector<std::string> argv, const std::string* input = nullptr) {
    Child::Options o;
    o.argv = std::move(argv);
    UniqueFd in;
    if (input) {
        in = UniqueFd(::memfd_create("coffer-iptables", MFD_CLOEXEC));
        if (!in) return make_error(Errc::internal, fmt::format("memfd: {}", std::strerror(errno)));
        std::size_t done = 0;
        while (done < input->size()) {
            ssize_t n = ::write(in.get(), input->data() + done, input->size() - done);
            if (n <= 0)
                return make_error(Errc::internal,
                                  fmt::format("write rules: {}", std::strerror(errno)));
            done += static_cast<std::size_t>(n);
        }
        ::lseek(in.get(), 0, SEEK_SET);
        o.stdin_fd = in.get();
    }
    try {
        return run_command(std::move(o));
    } catch (const std::exception& e) {
        return make_error(Errc::internal, e.what());
    }
}

// Applies rules with iptables-restore --noflush, each command prefixed by prefix (nsenter).
Result<void> apply(const std::vector<std::string>& prefix, const std::string& rules) {
    std::string text;
    std::string table;
    std::istringstream in(rules);
    for (std::string line; std::getline(in, line);) {
        if (line.starts_with("*")) table = line.substr(1);
        auto w = words(line);
        if (w.size() >= 2 && w[0] == "-A" && builtin_chain(w[1]) &&
            jump_of(w).starts_with("COFFER-")) {
            // A jump from a built-in chain is kept by --noflush: add it only when missing.
            std::vector<std::string> check = prefix;
            for (const char* a : {"iptables", "-w", "-t"}) check.emplace_back(a);
            check.push_back(table);
            check.emplace_back("-C");
            check.insert(check.end(), w.begin() + 1, w.end());
            auto r = run(check);
            if (!r) return std::move(r).error();
            if (r->ok()) continue;
        }
        text += line + "\n";
    }
    std::vector<std::string> restore = prefix;
    restore.emplace_back("iptables-restore");
    restore.emplace_back("--noflush");
    auto r = run(restore, &text);
    if (!r) return std::move(r).error().context("iptables-restore");
    if (!r->ok())
        return make_error(Errc::internal, fmt::format("iptables-restore: {}", r->describe()));
    return {};
}

}  // namespace

std::string task_vip_rules(const nodeproto::NetworksMessage& m,
                           const std::vector<std::string>& task_network_ids) {
    std::map<std::string, std::vector<std::string>> backends;  // VIP -> task addresses
    for (const auto& net : m.networks) {
        if (std::find(task_network_ids.begin(), task_network_ids.end(), net.id) ==
            task_network_ids.end())
            continue;
        for (const auto& svc : net.services) {
            if (svc.endpoint_mode == "dnsrr") continue;
            auto vip = ipv4(svc.vip);
            if (!vip || backends.contains(*vip)) continue;
            auto& b = backends[*vip];
            for (const auto& t : svc.tasks)
                if (auto a = ipv4(t.address)) b.push_back(*a);
        }
    }
    std::string nat = fmt::format("*nat\n:{} - [0:0]\n", vip_chain);
    std::string filter = fmt::format("*filter\n:{} - [0:0]\n", vip_chain);
    for (const auto& [vip, tasks] : backends) {
        if (tasks.empty()) {
            filter += fmt::format("-A {} -d {}/32 -p tcp -j REJECT --reject-with tcp-reset\n",
                                  vip_chain, vip);
            filter += fmt::format("-A {} -d {}/32 -j REJECT --reject-with icmp-port-unreachable\n",
                                  vip_chain, vip);
        } else {
            spread(nat, fmt::format("{} -d {}/32", vip_chain, vip), tasks);
        }
    }
    nat += fmt::format("-A OUTPUT -j {}\nCOMMIT\n", vip_chain);
    filter += fmt::format("-A OUTPUT -j {}\nCOMMIT\n", vip_chain);
    return nat + filter;
}

Result<void> apply_in_netns(const std::string& netns_path, const std::string& rules) {
    if (!netns_path.starts_with("/"))
        return make_error(Errc::invalid_argument,
                          fmt::format("network namespace {}: not an absolute path", netns_path));
    auto r = apply({"nsenter", "--net=" + netns_path}, rules);
    if (!r) return std::move(r).error().context(fmt::format("rules in {}", netns_path));
    return {};
}

std::string node_ingress_rules(const nodeproto::NetworksMessage& m) {
    std::string out =
        fmt::format("*nat\n:{} - [0:0]\n:{} - [0:0]\n", ingress_chain, ingress_postrouting_chain);
    std::set<std::string> masquerades;
    std::string post;
    for (const auto& p : m.ingress) {
        if ((p.protocol != "tcp" && p.protocol != "udp") || p.published_port == 0 ||
            p.target_port == 0)
            continue;
        std::vector<std::string> targets;
        for (const auto& b : p.backends) {
            auto a = ipv4(b);
            if (!a) continue;
            targets.push_back(fmt::format("{}:{}", *a, p.target_port));
            auto rule = fmt::format(
                "-A {} -d {}/32 -p {} --dport {} -m conntrack --ctstate DNAT --ctorigdstport {} "
                "-j MASQUERADE\n",
                ingress_postrouting_chain, *a, p.protocol, p.target_port, p.published_port);
            if (masquerades.insert(rule).second) post += rule;
        }
        spread(out, fmt::format("{} -p {} --dport {}", ingress_chain, p.protocol, p.published_port),
               targets);
    }
    out += post;
    out += fmt::format("-A PREROUTING -m addrtype --dst-type LOCAL -j {}\n", ingress_chain);
    out += fmt::format("-A OUTPUT -m addrtype --dst-type LOCAL -j {}\n", ingress_chain);
    out += fmt::format("-A POSTROUTING -j {}\n", ingress_postrouting_chain);
    out += "COMMIT\n";
    return out;
}

Result<void> apply_node_rules(const std::string& rules) {
    auto r = apply({}, rules);
    if (!r) return std::move(r).error().context("ingress rules");
    return {};
}

Result<void> remove_node_rules() {
    auto saved = run({"iptables-save", "-t", "nat"});
    if (!saved) return std::move(saved).error().context("remove ingress rules");
    if (!saved->ok())
        return make_error(Errc::internal, fmt::format("remove ingress rules: iptables-save: {}",
                                                      saved->describe()));
    const std::set<std::string> ours = {ingress_chain, ingress_postrouting_chain};
    std::string deletes;
    std::vector<std::string> present;
    std::istringstream in(saved->out);
    for (std::string line; std::getline(in, line);) {
        auto w = words(line);
        if (w.empty()) continue;
        if (w[0].starts_with(":") && ours.contains(w[0].substr(1)))
            present.push_back(w[0].substr(1));
        if (w.size() >= 2 && w[0] == "-A" && !ours.contains(w[1]) && ours.contains(jump_of(w)))
            deletes += "-D" + line.substr(2) + "\n";
    }
    if (present.empty() && deletes.empty()) return {};
    std::string text = "*nat\n" + deletes;
    for (const auto& c : present) text += fmt::format(":{} - [0:0]\n", c);
    for (const auto& c : present) text += fmt::format("-X {}\n", c);
    text += "COMMIT\n";
    auto r = run({"iptables-restore", "--noflush"}, &text);
    if (!r) return std::move(r).error().context("remove ingress rules");
    if (!r->ok())
        return make_error(Errc::internal,
                          fmt::format("remove ingress rules: iptables-restore: {}", r->describe()));
    return {};
}

}  // namespace coffer::agent
