#include "coffer/nodeproto/assignments.h"

#include <algorithm>
#include <limits>

#include "coffer/crypto/encoding.h"
#include "coffer/model/ids.h"
#include "coffer/model/ipv4.h"
#include "coffer/model/json.h"
#include "coffer/model/service.h"
#include "coffer/model/task_options.h"
#include "wire.h"

namespace coffer::nodeproto {

namespace json = boost::json;

namespace {

// ---- encode ----------------------------------------------------------------------------------

json::array strings(const std::vector<std::string>& v) {
    return json::array(v.begin(), v.end());
}

std::string_view type_name(MountPayload::Type t) {
    switch (t) {
        case MountPayload::Type::bind:
            return "bind";
        case MountPayload::Type::tmpfs:
            return "tmpfs";
        case MountPayload::Type::volume:
            break;
    }
    return "volume";
}

json::array mounts_wire(const std::vector<MountPayload>& mounts) {
    json::array out;
    for (const auto& m : mounts) {
        json::object labels;
        for (const auto& [k, v] : m.labels) labels[k] = v;
        out.push_back(json::object{{"Type", type_name(m.type)},
                                   {"Source", m.source},
                                   {"Target", m.target},
                                   {"ReadOnly", m.read_only},
                                   {"NonRecursive", m.non_recursive},
                                   {"NoCopy", m.no_copy},
                                   {"Labels", std::move(labels)},
                                   {"SizeBytes", m.size_bytes},
                                   {"Mode", m.mode}});
    }
    return out;
}

json::array files_wire(const std::vector<SecretFile>& files, std::string_view id_key) {
    json::array out;
    for (const auto& f : files) {
        json::object o{{id_key, f.secret_id}, {"Name", f.name}, {"Target", f.target},
                       {"UID", f.uid},        {"GID", f.gid},   {"Mode", f.mode}};
        if (f.version) o["Version"] = f.version;
        out.push_back(std::move(o));
    }
    return out;
}

json::object task_wire(const TaskPayload& t) {
    json::object sysctls;
    for (const auto& [k, v] : t.sysctls) sysctls[k] = v;
    json::array ulimits;
    for (const auto& u : t.ulimits)
        ulimits.push_back(json::object{{"Name", u.name}, {"Soft", u.soft}, {"Hard", u.hard}});
    json::object o{{"ID", t.id},
                   {"ServiceID", t.service_id},
                   {"Slot", t.slot},
                   {"Image", t.image},
                   {"Args", strings(t.args)},
                   {"Env", strings(t.env)},
                   {"User", t.user},
                   {"Dir", t.dir},
                   {"Hostname", t.hostname},
                   {"ReadOnly", t.read_only},
                   {"Limits", json::object{{"MemoryBytes", t.limits.memory_bytes},
                                           {"NanoCPUs", t.limits.nano_cpus},
                                           {"Pids", t.limits.pids}}},
                   {"CapAdd", strings(t.cap_add)},
                   {"CapDrop", strings(t.cap_drop)},
                   {"StopGracePeriod", t.stop_grace_ns},
                   {"Secrets", files_wire(t.secrets, "SecretID")},
                   {"Configs", files_wire(t.configs, "ConfigID")}};
    if (t.healthcheck) {
        const auto& h = *t.healthcheck;
        o["Healthcheck"] = json::object{{"Test", strings(h.test)},
                                        {"Interval", h.interval_ns},
                                        {"Timeout", h.timeout_ns},
                                        {"StartPeriod", h.start_period_ns},
                                        {"StartInterval", h.start_interval_ns},
                                        {"Retries", h.retries}};
    }
    o["Groups"] = strings(t.groups);
    o["Init"] = t.init;
    o["StopSignal"] = t.stop_signal;
    o["Sysctls"] = std::move(sysctls);
    o["Ulimits"] = std::move(ulimits);
    o["Hosts"] = strings(t.hosts);
    o["DNSConfig"] = json::object{{"Nameservers", strings(t.dns_nameservers)},
                                  {"Search", strings(t.dns_search)},
                                  {"Options", strings(t.dns_options)}};
    if (t.oom_score_adj) o["OomScoreAdj"] = *t.oom_score_adj;
    // Only when there are any: a task without mounts reads as it did before mounts existed.
    if (!t.mounts.empty()) o["Mounts"] = mounts_wire(t.mounts);
    // Likewise for networks.
    if (!t.network_mode.empty()) o["NetworkMode"] = t.network_mode;
    if (!t.networks.empty()) {
        json::array networks;
        for (const auto& n : t.networks)
            networks.push_back(json::object{{"NetworkID", n.network_id},
                                            {"Address", n.address},
                                            {"Aliases", strings(n.aliases)}});
        o["Networks"] = std::move(networks);
    }
    if (!t.host_ports.empty()) {
        json::array ports;
        for (const auto& p : t.host_ports)
            ports.push_back(json::object{{"Protocol", p.protocol},
                                         {"TargetPort", p.target_port},
                                         {"PublishedPort", p.published_port}});
        o["HostPorts"] = std::move(ports);
    }
    if (!t.secret_signal.empty()) o["SecretSignal"] = t.secret_signal;
    if (!t.secret_mount.empty()) o["SecretMount"] = t.secret_mount;
    if (!t.registry_auth_id.empty())
        o["RegistryAuth"] =
            json::object{{"SecretID", t.registry_auth_id}, {"Version", t.registry_auth_version}};
    return o;
}

// ---- decode ----------------------------------------------------------------------------------

// Bounds on what one task may carry; the session's message limit bounds the rest.
constexpr std::size_t max_strings = 4096;
constexpr std::size_t max_string_chars = 64 * 1024;
constexpr std::size_t max_secret_refs = 256;
constexpr std::size_t max_mounts = 256;
constexpr std::size_t max_labels = 256;
constexpr std::size_t max_name_chars = 256;
constexpr std::int64_t max_secret_version = std::int64_t{1} << 53;  // exact in JSON numbers
constexpr std::int64_t day_ns = 86'400LL * 1'000'000'000LL;

// Reading one change: a failure is a reason, thrown and caught per change.
struct Bad {
    std::string why;
};

[[noreturn]] void bad(std::string why) {
    throw Bad{std::move(why)};
}

const json::object& object_of(const json::value& v, std::string_view what) {
    if (!v.is_object()) bad(fmt::format("{}: expected an object", what));
    return v.get_object();
}

// A string field; missing or null is empty.
std::string text_at(const json::object& o, std::string_view key,
                    std::size_t max = max_string_chars) {
    const auto* v = o.if_contains(key);
    if (v == nullptr || v->is_null()) return {};
    if (!v->is_string()) bad(fmt::format("{}: expected a string", key));
    const auto& s = v->get_string();
    if (s.size() > max) bad(fmt::format("{}: longer than {} characters", key, max));
    if (s.find('\0') != json::string::npos) bad(fmt::format("{}: contains a NUL character", key));
    return std::string(s);
}

// A name that may reach a log line: no control characters.
std::string name_at(const json::object& o, std::string_view key) {
    auto s = text_at(o, key, max_name_chars);
    if (std::any_of(s.begin(), s.end(),
                    [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; }))
        bad(fmt::format("{}: contains a control character", key));
    return s;
}

// A string array; missing or null (Go's nil slice) is empty.
std::vector<std::string> texts_at(const json::object& o, std::string_view key) {
    const auto* v = o.if_contains(key);
    if (v == nullptr || v->is_null()) return {};
    if (!v->is_array()) bad(fmt::format("{}: expected an array of strings", key));
    const auto& a = v->get_array();
    if (a.size() > max_strings) bad(fmt::format("{}: more than {} entries", key, max_strings));
    std::vector<std::string> out;
    out.reserve(a.size());
    for (const auto& e : a) {
        if (!e.is_string()) bad(fmt::format("{}: expected an array of strings", key));
        const auto& s = e.get_string();
        if (s.size() > max_string_chars || s.find('\0') != json::string::npos)
            bad(fmt::format("{}: an entry is too long or contains NUL", key));
        out.emplace_back(s);
    }
    return out;
}

std::int64_t int_at(const json::object& o, std::string_view key, std::int64_t fallback,
                    std::int64_t min, std::int64_t max) {
    auto n = model::integer_field(o, key, min, max);
    if (!n) bad(n.error().message);
    return n->value_or(fallback);
}

// UID and GID are strings in Docker's API ("1000"); integers are accepted too and read as their
// decimal text.
std::string id_number_at(const json::object& o, std::string_view key) {
    const auto* v = o.if_contains(key);
    if (v == nullptr || v->is_null()) return {};
    if (v->is_string()) {
        const auto& s = v->get_string();
        if (s.empty()) return {};
        if (s.size() > 10 ||
            !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
            bad(fmt::format("{}: expected a number", key));
        if (std::stoull(std::string(s)) > std::numeric_limits<std::uint32_t>::max())
            bad(fmt::format("{}: out of range", key));
        return std::string(s);
    }
    return std::to_string(int_at(o, key, 0, 0, std::numeric_limits<std::uint32_t>::max()));
}

bool bool_at(const json::object& o, std::string_view key) {
    const auto* v = o.if_contains(key);
    if (v == nullptr || v->is_null()) return false;
    if (!v->is_bool()) bad(fmt::format("{}: expected a boolean", key));
    return v->get_bool();
}

// An entry of "Secrets" (id_key "SecretID") or "Configs" ("ConfigID"); ids follow one rule.
SecretFile secret_file(const json::value& v, std::string_view list, std::string_view id_key) {
    const auto& o = object_of(v, list);
    SecretFile f;
    f.secret_id = text_at(o, id_key, max_name_chars);
    if (!model::valid_secret_id(f.secret_id)) bad(fmt::format("{}: invalid {}", list, id_key));
    f.name = name_at(o, "Name");
    if (f.name.empty()) bad(fmt::format("{}: {} has no Name", list, f.secret_id));
    f.target = text_at(o, "Target", 4096);
    f.uid = id_number_at(o, "UID");
    f.gid = id_number_at(o, "GID");
    f.mode = static_cast<std::uint32_t>(int_at(o, "Mode", 0444, 0, 0777));
    f.version = static_cast<std::uint64_t>(int_at(o, "Version", 0, 0, max_secret_version));
    return f;
}

HealthCheck healthcheck(const json::value& v) {
    const auto& o = object_of(v, "Healthcheck");
    HealthCheck h;
    h.test = texts_at(o, "Test");
    if (!h.test.empty()) {
        const auto& kind = h.test.front();
        if (kind == "NONE" ? h.test.size() != 1
                           : (kind != "CMD" && kind != "CMD-SHELL") || h.test.size() < 2)
            bad("Healthcheck: Test must be NONE, CMD with a command or CMD-SHELL with a command");
    }
    constexpr auto max = std::numeric_limits<std::int64_t>::max();
    h.interval_ns = int_at(o, "Interval", 0, 0, max);
    h.timeout_ns = int_at(o, "Timeout", 0, 0, max);
    h.start_period_ns = int_at(o, "StartPeriod", 0, 0, max);
    h.start_interval_ns = int_at(o, "StartInterval", 0, 0, max);
    h.retries = int_at(o, "Retries", 0, 0, std::numeric_limits<std::int32_t>::max());
    return h;
}

// The task options, checked as the manager checks a service's spec.
void task_options(const json::object& t, TaskPayload& p) {
    p.groups = texts_at(t, "Groups");
    p.init = bool_at(t, "Init");
    p.stop_signal = text_at(t, "StopSignal", 32);
    p.secret_signal = text_at(t, "SecretSignal", 32);
    p.secret_mount = text_at(t, "SecretMount", 8);
    if (!p.secret_mount.empty() && p.secret_mount != "tmpfs" && p.secret_mount != "fuse")
        bad("SecretMount: expected tmpfs or fuse");
    if (const auto* s = t.if_contains("Sysctls"); s != nullptr && !s->is_null()) {
        const auto& so = object_of(*s, "Sysctls");
        if (so.size() > max_strings) bad("Sysctls: too many");
        for (const auto& [k, v] : so) {
            if (!v.is_string()) bad("Sysctls: expected string values");
            p.sysctls.emplace(std::string(k), text_at(so, k));
        }
    }
    if (const auto* u = t.if_contains("Ulimits"); u != nullptr && !u->is_null()) {
        if (!u->is_array()) bad("Ulimits: expected an array");
        if (u->get_array().size() > 64) bad("Ulimits: too many");
        constexpr auto max = std::numeric_limits<std::int64_t>::max();
        for (const auto& e : u->get_array()) {
            const auto& uo = object_of(e, "Ulimits");
            p.ulimits.push_back({name_at(uo, "Name"), int_at(uo, "Soft", 0, -1, max),
                                 int_at(uo, "Hard", 0, -1, max)});
        }
    }
    p.hosts = texts_at(t, "Hosts");
    if (const auto* d = t.if_contains("DNSConfig"); d != nullptr && !d->is_null()) {
        const auto& dn = object_of(*d, "DNSConfig");
        p.dns_nameservers = texts_at(dn, "Nameservers");
        p.dns_search = texts_at(dn, "Search");
        p.dns_options = texts_at(dn, "Options");
    }
    if (t.if_contains("OomScoreAdj") != nullptr && !t.at("OomScoreAdj").is_null())
        p.oom_score_adj = int_at(t, "OomScoreAdj", 0, -1000, 1000);

    model::ContainerSpec c;
    c.user = p.user;
    c.groups = p.groups;
    c.stop_signal = p.stop_signal;
    c.sysctls = model::Labels(p.sysctls.begin(), p.sysctls.end());
    for (const auto& u : p.ulimits) c.ulimits.push_back({u.name, u.soft, u.hard});
    c.hosts = p.hosts;
    c.dns = {p.dns_nameservers, p.dns_search, p.dns_options};
    c.oom_score_adj = p.oom_score_adj;
    if (auto ok = model::validate_task_options(c); !ok) bad(ok.error().message);
}

// An absolute path without NUL; "." and ".." components are refused (a target is resolved in the
// rootfs, a source names a host path as given).
std::string path_at(const json::object& o, std::string_view key) {
    auto p = text_at(o, key, 4096);
    if (p.empty() || p.front() != '/') bad(fmt::format("{}: expected an absolute path", key));
    for (std::size_t start = 1; start <= p.size();) {
        auto end = p.find('/', start);
        auto part =
            std::string_view(p).substr(start, end == std::string::npos ? p.npos : end - start);
        if (part == "." || part == "..") bad(fmt::format("{}: has a . or .. component", key));
        if (end == std::string::npos) break;
        start = end + 1;
    }
    return p;
}

MountPayload mount_of(const json::value& v) {
    const auto& o = object_of(v, "Mounts");
    MountPayload m;
    auto type = text_at(o, "Type", 16);
    if (type == "bind")
        m.type = MountPayload::Type::bind;
    else if (type == "volume")
        m.type = MountPayload::Type::volume;
    else if (type == "tmpfs")
        m.type = MountPayload::Type::tmpfs;
    else
        bad("Mounts: Type must be bind, volume or tmpfs");
    m.target = path_at(o, "Target");
    if (m.target == "/") bad("Mounts: Target cannot be /");
    if (m.type == MountPayload::Type::bind) {
        m.source = path_at(o, "Source");
    } else if (m.type == MountPayload::Type::volume) {
        m.source = text_at(o, "Source", 255);
        if (!m.source.empty() && !model::valid_volume_name(m.source))
            bad("Mounts: invalid volume name");
    } else if (!text_at(o, "Source", 16).empty()) {
        bad("Mounts: a tmpfs has no Source");
    }
    m.read_only = bool_at(o, "ReadOnly");
    m.non_recursive = bool_at(o, "NonRecursive");
    m.no_copy = bool_at(o, "NoCopy");
    if (const auto* l = o.if_contains("Labels"); l != nullptr && !l->is_null()) {
        const auto& lo = object_of(*l, "Mounts: Labels");
        if (lo.size() > max_labels) bad("Mounts: too many Labels");
        for (const auto& [k, val] : lo) {
            if (!val.is_string()) bad("Mounts: Labels: expected strings");
            if (k.size() > max_string_chars || val.get_string().size() > max_string_chars)
                bad("Mounts: Labels: too long");
            m.labels.emplace(std::string(k), std::string(val.get_string()));
        }
    }
    m.size_bytes = int_at(o, "SizeBytes", 0, 0, std::numeric_limits<std::int64_t>::max());
    m.mode = static_cast<std::uint32_t>(int_at(o, "Mode", 0, 0, 07777));
    return m;
}

// NetworkMode, Networks and HostPorts.
void task_networks(const json::object& t, TaskPayload& p) {
    p.network_mode = text_at(t, "NetworkMode", 16);
    if (!p.network_mode.empty() && p.network_mode != "host") bad("NetworkMode: expected host");
    if (const auto* ns = t.if_contains("Networks"); ns != nullptr && !ns->is_null()) {
        if (!ns->is_array()) bad("Networks: expected an array");
        if (ns->get_array().size() > 64) bad("Networks: too many");
        for (const auto& v : ns->get_array()) {
            const auto& o = object_of(v, "Networks");
            TaskNetwork n;
            n.network_id = text_at(o, "NetworkID", 64);
            if (!model::valid_generated_id(n.network_id)) bad("Networks: invalid NetworkID");
            n.address = text_at(o, "Address", 18);
            auto prefix = model::parse_ipv4_prefix(n.address);
            if (!prefix || prefix->length < 8 || prefix->length > 30 ||
                prefix->address == prefix->network() || prefix->address == prefix->broadcast())
                bad("Networks: Address must be an IPv4 host address with its prefix");
            n.aliases = texts_at(o, "Aliases");
            if (n.aliases.size() > 64) bad("Networks: too many Aliases");
            for (const auto& a : n.aliases)
                if (a.empty() || a.size() > 255 ||
                    std::any_of(a.begin(), a.end(), [](char c) { return c <= 0x20 || c >= 0x7f; }))
                    bad("Networks: an alias is not a printable name");
            p.networks.push_back(std::move(n));
        }
    }
    if (p.network_mode == "host" && !p.networks.empty())
        bad("Networks: a task in the host's network has no other network");
    if (const auto* hp = t.if_contains("HostPorts"); hp != nullptr && !hp->is_null()) {
        if (!hp->is_array()) bad("HostPorts: expected an array");
        if (hp->get_array().size() > 1024) bad("HostPorts: too many");
        for (const auto& v : hp->get_array()) {
            const auto& o = object_of(v, "HostPorts");
            HostPort port;
            port.protocol = text_at(o, "Protocol", 8);
            if (port.protocol != "tcp" && port.protocol != "udp")
                bad("HostPorts: Protocol must be tcp or udp");
            // Both required: a missing one is 0, below the range.
            port.target_port = static_cast<std::uint16_t>(int_at(o, "TargetPort", 0, 0, 65535));
            port.published_port =
                static_cast<std::uint16_t>(int_at(o, "PublishedPort", 0, 0, 65535));
            if (port.target_port == 0 || port.published_port == 0)
                bad("HostPorts: TargetPort and PublishedPort must be 1 to 65535");
            p.host_ports.push_back(port);
        }
    }
}

TaskPayload task_add(const json::object& t) {
    TaskPayload p;
    p.id = text_at(t, "ID", 64);
    p.service_id = text_at(t, "ServiceID", max_name_chars);
    p.slot = static_cast<std::uint64_t>(
        int_at(t, "Slot", 0, 0, std::numeric_limits<std::int64_t>::max()));
    p.image = text_at(t, "Image", 1024);
    if (p.image.empty()) bad("Image: missing");
    p.args = texts_at(t, "Args");
    p.env = texts_at(t, "Env");
    p.user = text_at(t, "User", max_name_chars);
    p.dir = text_at(t, "Dir", 4096);
    p.hostname = text_at(t, "Hostname", max_name_chars);
    p.read_only = bool_at(t, "ReadOnly");
    if (const auto* l = t.if_contains("Limits"); l != nullptr && !l->is_null()) {
        const auto& lo = object_of(*l, "Limits");
        constexpr auto max = std::numeric_limits<std::int64_t>::max();
        p.limits.memory_bytes = int_at(lo, "MemoryBytes", 0, 0, max);
        p.limits.nano_cpus = int_at(lo, "NanoCPUs", 0, 0, max);
        p.limits.pids = int_at(lo, "Pids", 0, 0, max);
    }
    p.cap_add = texts_at(t, "CapAdd");
    p.cap_drop = texts_at(t, "CapDrop");
    // Nanoseconds, as in Docker; capped at a day so conversions cannot overflow.
    p.stop_grace_ns = int_at(t, "StopGracePeriod", default_stop_grace_ns, 0, day_ns);
    for (auto [list, id_key, out] : {std::tuple{"Secrets", "SecretID", &p.secrets},
                                     std::tuple{"Configs", "ConfigID", &p.configs}}) {
        const auto* refs = t.if_contains(list);
        if (refs == nullptr || refs->is_null()) continue;
        if (!refs->is_array()) bad(fmt::format("{}: expected an array", list));
        if (refs->get_array().size() > max_secret_refs) bad(fmt::format("{}: too many", list));
        for (const auto& r : refs->get_array()) out->push_back(secret_file(r, list, id_key));
    }
    if (const auto* h = t.if_contains("Healthcheck"); h != nullptr && !h->is_null())
        p.healthcheck = healthcheck(*h);
    task_options(t, p);
    if (const auto* mounts = t.if_contains("Mounts"); mounts != nullptr && !mounts->is_null()) {
        if (!mounts->is_array()) bad("Mounts: expected an array");
        if (mounts->get_array().size() > max_mounts) bad("Mounts: too many");
        for (const auto& m : mounts->get_array()) p.mounts.push_back(mount_of(m));
    }
    task_networks(t, p);
    if (const auto* a = t.if_contains("RegistryAuth"); a != nullptr && !a->is_null()) {
        const auto& ao = object_of(*a, "RegistryAuth");
        p.registry_auth_id = text_at(ao, "SecretID", max_name_chars);
        if (!model::valid_secret_id(p.registry_auth_id)) bad("RegistryAuth: invalid SecretID");
        p.registry_auth_version =
            static_cast<std::uint64_t>(int_at(ao, "Version", 0, 0, max_secret_version));
    }
    return p;
}

SecretPayload secret_add(const json::object& o) {
    SecretPayload s;
    s.id = text_at(o, "ID", max_name_chars);
    s.name = name_at(o, "Name");
    if (s.name.empty()) bad("Name: missing");
    const auto* data = o.if_contains("Data");
    if (data == nullptr || !data->is_string()) bad("Data: expected base64");
    // The base64 text sits in the message's secure storage; the bytes go to secure memory.
    const auto& text = data->get_string();
    auto bytes = crypto::base64_decode_secure(std::string_view(text.data(), text.size()));
    if (!bytes) bad("Data: not valid base64");
    s.data = std::move(*bytes);
    s.version = static_cast<std::uint64_t>(int_at(o, "Version", 0, 0, max_secret_version));
    return s;
}

Change change(const json::value& v) {
    Change c;
    try {
        const auto& o = object_of(v, "change");
        auto action = text_at(o, "Action", 16);
        if (action == "add")
            c.action = Change::Action::add;
        else if (action == "remove")
            c.action = Change::Action::remove;
        else
            bad("Action: expected add or remove");
        const auto* task = o.if_contains("Task");
        const auto* secret = o.if_contains("Secret");
        const auto* config = o.if_contains("Config");
        if ((task != nullptr) + (secret != nullptr) + (config != nullptr) != 1)
            bad("expected exactly one of Task, Secret and Config");
        c.is_config = config != nullptr;
        c.is_secret = secret != nullptr || c.is_config;
        const auto& body = object_of(c.is_config   ? *config
                                     : c.is_secret ? *secret
                                                   : *task,
                                     c.is_config   ? "Config"
                                     : c.is_secret ? "Secret"
                                                   : "Task");
        auto id = text_at(body, "ID", max_name_chars);
        if (c.is_secret ? !model::valid_secret_id(id) : !model::valid_task_id(id))
            bad("ID: missing or invalid");
        c.id = std::move(id);
        if (c.is_secret && !c.is_config)
            c.version =
                static_cast<std::uint64_t>(int_at(body, "Version", 0, 0, max_secret_version));
        if (c.action == Change::Action::add) {
            if (c.is_secret)
                c.secret = secret_add(body);
            else
                c.task = task_add(body);
        }
    } catch (const Bad& b) {
        c.invalid = b.why;
        c.task.reset();
        c.secret.reset();
    }
    return c;
}

}  // namespace

crypto::SecureBuffer encode(const Assignments& m) {
    wire::SecureText text;
    text.add(fmt::format(R"({{"type":"assignments","Type":"{}","Sequence":{},"Changes":[)",
                         m.complete ? "complete" : "incremental", m.sequence));
    bool first = true;
    for (const auto& c : m.changes) {
        if (!first) text.add(",");
        first = false;
        const char* object_key = c.is_config ? "Config" : c.is_secret ? "Secret" : "Task";
        if (c.action == Change::Action::remove) {
            json::object body{{"ID", c.id}};
            if (c.version) body["Version"] = c.version;
            text.add(
                json::serialize(json::object{{"Action", "remove"}, {object_key, std::move(body)}}));
        } else if (c.task) {
            text.add(
                json::serialize(json::object{{"Action", "add"}, {"Task", task_wire(*c.task)}}));
        } else if (c.secret) {
            text.add(fmt::format(R"({{"Action":"add","{}":{{"ID":{},"Name":{},{}"Data":")",
                                 object_key, json::serialize(json::string(c.secret->id)),
                                 json::serialize(json::string(c.secret->name)),
                                 c.secret->version
                                     ? fmt::format(R"("Version":{},)", c.secret->version)
                                     : std::string()));
            text.add(crypto::base64_encode_secure(c.secret->data.span()));
            text.add("\"}}");
        }
    }
    text.add("]}");
    return text.finish();
}

Result<Assignments> decode_assignments(const crypto::SecureBuffer& text) {
    auto parsed = model::SecureJson::parse(text);
    if (!parsed) return make_error(Errc::invalid_argument, "assignments: not JSON");
    const auto* o = parsed->value().if_object();
    if (o == nullptr) return make_error(Errc::invalid_argument, "assignments: not a JSON object");
    Assignments out;
    const auto* type = o->if_contains("Type");
    if (type == nullptr || !type->is_string() ||
        (type->get_string() != "complete" && type->get_string() != "incremental"))
        return make_error(Errc::invalid_argument,
                          "assignments: Type must be complete or incremental");
    out.complete = type->get_string() == "complete";
    const auto* seq = o->if_contains("Sequence");
    if (seq == nullptr || !(seq->is_uint64() || (seq->is_int64() && seq->get_int64() >= 0)))
        return make_error(Errc::invalid_argument,
                          "assignments: Sequence must be a non-negative integer");
    out.sequence =
        seq->is_uint64() ? seq->get_uint64() : static_cast<std::uint64_t>(seq->get_int64());
    const auto* changes = o->if_contains("Changes");
    if (changes == nullptr || !(changes->is_array() || changes->is_null()))
        return make_error(Errc::invalid_argument, "assignments: Changes must be an array");
    if (changes->is_array()) {
        out.changes.reserve(changes->get_array().size());
        for (const auto& c : changes->get_array()) out.changes.push_back(change(c));
    }
    return out;
}

}  // namespace coffer::nodeproto
