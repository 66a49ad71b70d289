#include "coffer/model/task_options.h"

#include <arpa/inet.h>
#include <signal.h>
#include <sys/resource.h>

#include <algorithm>
#include <charconv>
#include <string>

namespace coffer::model {

namespace {

Error invalid(std::string message) {
    return make_error(Errc::invalid_argument, std::move(message));
}

struct Named {
    std::string_view name;
    int value;
};

constexpr Named signals[] = {
    {"HUP", SIGHUP},       {"INT", SIGINT},   {"QUIT", SIGQUIT},     {"ILL", SIGILL},
    {"TRAP", SIGTRAP},     {"ABRT", SIGABRT}, {"IOT", SIGIOT},       {"BUS", SIGBUS},
    {"FPE", SIGFPE},       {"KILL", SIGKILL}, {"USR1", SIGUSR1},     {"SEGV", SIGSEGV},
    {"USR2", SIGUSR2},     {"PIPE", SIGPIPE}, {"ALRM", SIGALRM},     {"TERM", SIGTERM},
    {"STKFLT", SIGSTKFLT}, {"CHLD", SIGCHLD}, {"CONT", SIGCONT},     {"STOP", SIGSTOP},
    {"TSTP", SIGTSTP},     {"TTIN", SIGTTIN}, {"TTOU", SIGTTOU},     {"URG", SIGURG},
    {"XCPU", SIGXCPU},     {"XFSZ", SIGXFSZ}, {"VTALRM", SIGVTALRM}, {"PROF", SIGPROF},
    {"WINCH", SIGWINCH},   {"IO", SIGIO},     {"POLL", SIGPOLL},     {"PWR", SIGPWR},
    {"SYS", SIGSYS},
};

// The names of github.com/docker/go-units' ulimits.
constexpr Named ulimits[] = {
    {"core", RLIMIT_CORE},         {"cpu", RLIMIT_CPU},
    {"data", RLIMIT_DATA},         {"fsize", RLIMIT_FSIZE},
    {"locks", RLIMIT_LOCKS},       {"memlock", RLIMIT_MEMLOCK},
    {"msgqueue", RLIMIT_MSGQUEUE}, {"nice", RLIMIT_NICE},
    {"nofile", RLIMIT_NOFILE},     {"nproc", RLIMIT_NPROC},
    {"rss", RLIMIT_RSS},           {"rtprio", RLIMIT_RTPRIO},
    {"rttime", RLIMIT_RTTIME},     {"sigpending", RLIMIT_SIGPENDING},
    {"stack", RLIMIT_STACK},
};

constexpr std::string_view ipc_sysctls[] = {
    "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
    "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"};

bool plain_text(std::string_view s, std::size_t max) {
    return !s.empty() && s.size() <= max && std::none_of(s.begin(), s.end(), [](char c) {
        auto u = static_cast<unsigned char>(c);
        return u <= 0x20 || u == 0x7f;
    });
}

bool to_int(std::string_view s, int& out) {
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && p == s.data() + s.size() && !s.empty();
}

std::string upper(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(),
                   [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    return out;
}

constexpr std::string_view spec = "TaskTemplate.ContainerSpec";

}  // namespace

std::optional<int> signal_number(std::string_view s) noexcept {
    int n = 0;
    if (to_int(s, n)) return n >= 1 && n <= SIGRTMAX ? std::optional(n) : std::nullopt;
    auto name = upper(s);
    if (name.starts_with("SIG")) name.erase(0, 3);
    for (const auto& sig : signals)
        if (sig.name == name) return sig.value;
    // RTMIN, RTMIN+n, RTMAX, RTMAX-n
    for (auto [base, sign] : {std::pair{std::string_view("RTMIN"), 1}, {"RTMAX", -1}}) {
        if (!std::string_view(name).starts_with(base)) continue;
        auto rest = std::string_view(name).substr(base.size());
        int off = 0;
        if (!rest.empty() &&
            (rest.front() != (sign > 0 ? '+' : '-') || !to_int(rest.substr(1), off)))
            return std::nullopt;
        int v = (sign > 0 ? SIGRTMIN : SIGRTMAX) + sign * off;
        if (v < SIGRTMIN || v > SIGRTMAX) return std::nullopt;
        return v;
    }
    return std::nullopt;
}

bool namespaced_sysctl(std::string_view key) noexcept {
    if (std::find(std::begin(ipc_sysctls), std::end(ipc_sysctls), key) != std::end(ipc_sysctls))
        return true;
    return (key.starts_with("net.") && key.size() > 4) ||
           (key.starts_with("fs.mqueue.") && key.size() > 10);
}

std::optional<int> ulimit_resource(std::string_view name) noexcept {
    for (const auto& u : ulimits)
        if (u.name == name) return u.value;
    return std::nullopt;
}

bool valid_ip(std::string_view s) noexcept {
    if (s.empty() || s.size() >= INET6_ADDRSTRLEN) return false;
    std::string text(s);
    unsigned char buf[16];
    return ::inet_pton(AF_INET, text.c_str(), buf) == 1 ||
           ::inet_pton(AF_INET6, text.c_str(), buf) == 1;
}

bool valid_account_name(std::string_view s) noexcept {
    return plain_text(s, 256) && s.find(':') == std::string_view::npos;
}

bool account_id_out_of_range(std::string_view s) noexcept {
    if (s.empty() || s.find_first_not_of("0123456789") != std::string_view::npos) return false;
    auto digits = s.substr(std::min(s.find_first_not_of('0'), s.size()));
    return digits.size() > 10 || (digits.size() == 10 && digits > "2147483647");
}

Result<void> validate_task_options(const ContainerSpec& c) {
    const auto out_of_range = [](std::string_view field, std::string_view value) {
        return invalid(fmt::format("field {}.{}: uids and gids must be in range 0-{}: {}", spec,
                                   field, max_account_id, value));
    };
    if (!c.user.empty()) {
        auto colon = c.user.find(':');
        auto name = std::string_view(c.user).substr(0, colon);
        auto group = colon == std::string::npos ? std::string_view{}
                                                : std::string_view(c.user).substr(colon + 1);
        if (!valid_account_name(name) || (colon != std::string::npos && !valid_account_name(group)))
            return invalid(fmt::format("field {}.User: invalid user \"{}\"", spec, c.user));
        if (account_id_out_of_range(name) || account_id_out_of_range(group))
            return out_of_range("User", c.user);
    }
    for (const auto& g : c.groups) {
        if (!valid_account_name(g))
            return invalid(fmt::format("field {}.Groups: invalid group \"{}\"", spec, g));
        if (account_id_out_of_range(g)) return out_of_range("Groups", g);
    }
    if (!c.stop_signal.empty() && !signal_number(c.stop_signal))
        return invalid(fmt::format("field {}.StopSignal: invalid signal: {}", spec, c.stop_signal));
    for (const auto& [key, value] : c.sysctls) {
        bool key_ok = key.size() <= 256 && key.find("..") == std::string::npos &&
                      !key.ends_with(".") && std::all_of(key.begin(), key.end(), [](char ch) {
                          return std::isalnum(static_cast<unsigned char>(ch)) || ch == '.' ||
                                 ch == '_' || ch == '-';
                      });
        if (!key_ok || !namespaced_sysctl(key))
            return invalid(fmt::format(
                "field {}.Sysctls: sysctl '{}' is not allowed: only namespaced sysctls (net.*, "
                "fs.mqueue.*, kernel.msg*, kernel.sem, kernel.shm*) can be set for a task",
                spec, key));
        if (value.size() > 4096 || std::any_of(value.begin(), value.end(), [](char ch) {
                return static_cast<unsigned char>(ch) < 0x20 && ch != '\t';
            }))
            return invalid(fmt::format("field {}.Sysctls: invalid value for {}", spec, key));
    }
    for (std::size_t i = 0; i < c.ulimits.size(); ++i) {
        const auto& u = c.ulimits[i];
        if (!ulimit_resource(u.name))
            return invalid(fmt::format("field {}.Ulimits: invalid ulimit type: {}", spec, u.name));
        for (std::size_t j = 0; j < i; ++j)
            if (c.ulimits[j].name == u.name)
                return invalid(fmt::format("field {}.Ulimits: {} given twice", spec, u.name));
        if (u.soft < -1 || u.hard < -1)
            return invalid(
                fmt::format("field {}.Ulimits: {}: a limit is a number, or -1 for "
                            "unlimited",
                            spec, u.name));
        // The kernel caps open files at fs.nr_open: "unlimited" cannot be set, and the task
        // would fail to start on every node.
        if (u.name == "nofile" && (u.soft == -1 || u.hard == -1))
            return invalid(fmt::format(
                "field {}.Ulimits: nofile cannot be unlimited (-1): give a number", spec));
        if (u.hard != -1 && (u.soft == -1 || u.soft > u.hard))
            return invalid(
                fmt::format("field {}.Ulimits: ulimit soft limit must be less than or "
                            "equal to hard limit: {}: {} > {}",
                            spec, u.name, u.soft, u.hard));
    }
    for (const auto& h : c.hosts) {
        std::vector<std::string_view> fields;
        std::string_view rest = h;
        while (!rest.empty()) {
            auto start = rest.find_first_not_of(" \t");
            if (start == std::string_view::npos) break;
            rest.remove_prefix(start);
            auto end = rest.find_first_of(" \t");
            fields.push_back(rest.substr(0, end));
            rest = end == std::string_view::npos ? std::string_view{} : rest.substr(end);
        }
        bool ok = fields.size() >= 2 && valid_ip(fields[0]) &&
                  std::all_of(fields.begin() + 1, fields.end(),
                              [](std::string_view f) { return plain_text(f, 253); });
        if (!ok)
            return invalid(fmt::format(
                "field {}.Hosts: invalid host entry \"{}\": expected \"IP host [aliases...]\"",
                spec, h));
    }
    for (const auto& ns : c.dns.nameservers)
        if (!valid_ip(ns))
            return invalid(
                fmt::format("field {}.DNSConfig.Nameservers: {} is not an IP address", spec, ns));
    for (const auto& s : c.dns.search)
        if (!plain_text(s, 253))
            return invalid(
                fmt::format("field {}.DNSConfig.Search: invalid domain \"{}\"", spec, s));
    for (const auto& o : c.dns.options)
        if (!plain_text(o, 256))
            return invalid(
                fmt::format("field {}.DNSConfig.Options: invalid option \"{}\"", spec, o));
    if (c.oom_score_adj && (*c.oom_score_adj < -1000 || *c.oom_score_adj > 1000))
        return invalid(fmt::format("field {}.OomScoreAdj: {} is not within -1000..1000", spec,
                                   *c.oom_score_adj));
    return {};
}

}  // namespace coffer::model
