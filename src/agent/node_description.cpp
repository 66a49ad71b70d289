#include "coffer/agent/node_description.h"

#include <sched.h>
#include <sys/utsname.h>

#include <cerrno>
#include <charconv>
#include <fstream>
#include <string>

namespace coffer::agent {

namespace {

Error invalid(std::string message) {
    return make_error(Errc::invalid_argument, std::move(message));
}

// MemTotal of /proc/meminfo, in bytes.
Result<std::int64_t> mem_total() {
    std::ifstream in("/proc/meminfo");
    std::string key, unit;
    std::int64_t kib = 0;
    while (in >> key >> kib) {
        std::getline(in, unit);
        if (key == "MemTotal:") return kib * 1024;
    }
    return make_error(Errc::internal, "read MemTotal from /proc/meminfo");
}

}  // namespace

Result<model::GenericResource> parse_generic_resource(std::string_view text) {
    auto eq = text.find('=');
    if (eq == std::string_view::npos || eq == 0 || eq + 1 == text.size())
        return invalid(fmt::format("generic resource '{}' is not NAME=VALUE", text));
    model::GenericResource g;
    g.kind = std::string(text.substr(0, eq));
    auto value = text.substr(eq + 1);
    std::int64_t n = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
    if (ec == std::errc() && end == value.data() + value.size()) {
        if (n <= 0)
            return invalid(fmt::format("generic resource '{}': a count must be positive", text));
        g.discrete = n;
    } else {
        g.named = std::string(value);
    }
    // The manager's rules for what a node reports: checked here, so a bad flag stops the agent
    // at start rather than its session later.
    nodeproto::DescriptionMessage probe{"linux", "x", 0, 0, {g}};
    if (auto ok = nodeproto::decode_description(nodeproto::encode(probe)); !ok)
        return invalid(fmt::format("generic resource '{}': {}", text, ok.error().message));
    return g;
}

Result<nodeproto::DescriptionMessage> describe_host(std::vector<model::GenericResource> generic) {
    nodeproto::DescriptionMessage d;
    struct utsname u {};
    if (::uname(&u) != 0) return make_error(Errc::internal, "uname failed");
    d.os = "linux";
    d.architecture = u.machine;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(0, sizeof set, &set) != 0)
        return make_error(Errc::internal, fmt::format("sched_getaffinity: errno {}", errno));
    d.nano_cpus = static_cast<std::int64_t>(CPU_COUNT(&set)) * 1'000'000'000;
    auto memory = mem_total();
    if (!memory) return std::move(memory).error();
    d.memory_bytes = *memory;
    d.generic = std::move(generic);
    return d;
}

}  // namespace coffer::agent
