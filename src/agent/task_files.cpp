#include "task_files.h"

#include <algorithm>

#include <fmt/format.h>

namespace coffer::agent {

namespace {

std::vector<std::string_view> words(std::string_view line) {
    std::vector<std::string_view> out;
    while (!line.empty()) {
        auto start = line.find_first_not_of(" \t\r");
        if (start == std::string_view::npos) break;
        line.remove_prefix(start);
        auto end = line.find_first_of(" \t\r");
        out.push_back(line.substr(0, end));
        line = end == std::string_view::npos ? std::string_view{} : line.substr(end);
    }
    return out;
}

bool loopback(std::string_view ip) {
    return ip.starts_with("127.") || ip == "::1" || ip == "0:0:0:0:0:0:0:1";
}

}  // namespace

std::string hosts_file(std::string_view hostname, const std::vector<std::string>& extra_hosts) {
    return hosts_file(hostname, extra_hosts, {});
}

std::string hosts_file(std::string_view hostname, const std::vector<std::string>& extra_hosts,
                       const std::vector<std::string>& addresses) {
    std::string out =
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "fe00::0\tip6-localnet\n"
        "ff00::0\tip6-mcastprefix\n"
        "ff02::1\tip6-allnodes\n"
        "ff02::2\tip6-allrouters\n";
    if (addresses.empty()) out += fmt::format("127.0.1.1\t{}\n", hostname);
    for (const auto& a : addresses) out += fmt::format("{}\t{}\n", a, hostname);
    for (const auto& h : extra_hosts) {
        auto w = words(h);
        if (w.size() < 2) continue;  // checked before: "IP host [aliases...]"
        out += fmt::format("{}\t{}\n", w[0], fmt::join(w.begin() + 1, w.end(), " "));
    }
    return out;
}

std::string resolv_conf(const DnsSettings& dns, std::string_view node) {
    std::vector<std::string> nameservers, search, options;
    while (!node.empty()) {
        auto end = node.find('\n');
        auto w = words(node.substr(0, end));
        node = end == std::string_view::npos ? std::string_view{} : node.substr(end + 1);
        if (w.empty() || w[0].starts_with('#') || w[0].starts_with(';')) continue;
        if (w[0] == "nameserver" && w.size() >= 2 && !loopback(w[1]))
            nameservers.emplace_back(w[1]);
        else if (w[0] == "search" || w[0] == "domain")
            search.assign(w.begin() + 1, w.end());  // the last one wins, as in the resolver
        else if (w[0] == "options")
            options.insert(options.end(), w.begin() + 1, w.end());
    }
    if (!dns.nameservers.empty()) nameservers = dns.nameservers;
    if (!dns.search.empty()) search = dns.search;
    if (!dns.options.empty()) options = dns.options;
    if (nameservers.empty()) nameservers = {"8.8.8.8", "8.8.4.4"};
    std::string out;
    for (const auto& n : nameservers) out += fmt::format("nameserver {}\n", n);
    if (!search.empty()) out += fmt::format("search {}\n", fmt::join(search, " "));
    if (!options.empty()) out += fmt::format("options {}\n", fmt::join(options, " "));
    return out;
}

std::string resolv_conf_for_resolver(const DnsSettings& dns, std::string_view node,
                                     std::string_view nameserver) {
    DnsSettings mine;
    mine.nameservers = {std::string(nameserver)};
    mine.search = dns.search;
    mine.options = dns.options;
    bool ndots = std::any_of(mine.options.begin(), mine.options.end(),
                             [](const std::string& o) { return o.starts_with("ndots:"); });
    if (!ndots) mine.options.push_back("ndots:0");
    return resolv_conf(mine, node);
}

}  // namespace coffer::agent
