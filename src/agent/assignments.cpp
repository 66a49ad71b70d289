#include "coffer/agent/assignments.h"

#include <charconv>

#include "coffer/model/service.h"
#include "coffer/nodeproto/assignments.h"

namespace coffer::agent {

namespace {

// The decoder checked it: "" or a decimal number that fits.
std::uint32_t id_number(std::string_view text) {
    std::uint32_t n = 0;
    std::from_chars(text.data(), text.data() + text.size(), n);
    return n;
}

TaskAssignment task_of(nodeproto::TaskPayload&& p) {
    TaskAssignment a;
    TaskSpec& s = a.spec;
    s.id = std::move(p.id);
    a.service_id = std::move(p.service_id);
    s.image = std::move(p.image);
    s.args = std::move(p.args);
    s.env = std::move(p.env);
    s.user = std::move(p.user);
    s.workdir = std::move(p.dir);
    s.hostname = std::move(p.hostname);
    s.read_only_rootfs = p.read_only;
    s.limits = {p.limits.memory_bytes, p.limits.nano_cpus, p.limits.pids};
    s.cap_add = std::move(p.cap_add);
    s.cap_drop = std::move(p.cap_drop);
    a.stop_grace = std::chrono::milliseconds(p.stop_grace_ns / 1'000'000);
    a.secret_signal = std::move(p.secret_signal);
    // The decoder took only these.
    if (p.secret_mount == "tmpfs") s.secret_mount = SecretBackend::tmpfs;
    if (p.secret_mount == "fuse") s.secret_mount = SecretBackend::fuse;
    if (!p.registry_auth_id.empty())
        s.registry_auth = secret_store_key(p.registry_auth_id, p.registry_auth_version);
    auto file_ref = [](nodeproto::SecretFile& f) {
        SecretRef r;
        r.secret_id = std::move(f.secret_id);
        r.name = std::move(f.name);
        r.target = f.target.empty() ? r.name : std::move(f.target);  // under /run/secrets
        r.uid = id_number(f.uid);
        r.gid = id_number(f.gid);
        r.mode = f.mode;
        return r;
    };
    for (auto& f : p.secrets) {
        auto version = f.version;
        auto r = file_ref(f);
        r.secret_id = secret_store_key(r.secret_id, version);
        s.secrets.push_back(std::move(r));
    }
    // A config's file is at its target when absolute, else under / (Docker's rule).
    for (auto& f : p.configs) {
        auto r = file_ref(f);
        r.secret_id = config_store_key(r.secret_id);
        r.target = model::config_target_path(r.target);
        s.secrets.push_back(std::move(r));
    }
    if (p.healthcheck) {
        auto& h = *p.healthcheck;
        s.healthcheck = HealthCheck{std::move(h.test), h.interval_ns,       h.timeout_ns,
                                    h.start_period_ns, h.start_interval_ns, h.retries};
    }
    s.groups = std::move(p.groups);
    s.init = p.init;
    s.stop_signal = std::move(p.stop_signal);
    s.sysctls = std::move(p.sysctls);
    for (auto& u : p.ulimits) s.ulimits.push_back({std::move(u.name), u.soft, u.hard});
    s.extra_hosts = std::move(p.hosts);
    s.dns = {std::move(p.dns_nameservers), std::move(p.dns_search), std::move(p.dns_options)};
    if (p.oom_score_adj) s.oom_score_adj = static_cast<int>(*p.oom_score_adj);
    for (auto& m : p.mounts) {
        TaskMount t;
        t.type = m.type == nodeproto::MountPayload::Type::bind    ? TaskMount::Type::bind
                 : m.type == nodeproto::MountPayload::Type::tmpfs ? TaskMount::Type::tmpfs
                                                                  : TaskMount::Type::volume;
        t.source = std::move(m.source);
        t.target = std::move(m.target);
        t.read_only = m.read_only;
        t.non_recursive = m.non_recursive;
        t.no_copy = m.no_copy;
        t.labels = std::move(m.labels);
        t.size_bytes = m.size_bytes;
        t.mode = m.mode;
        s.mounts.push_back(std::move(t));
    }
    s.host_network = p.network_mode == "host";
    for (auto& n : p.networks)
        s.networks.push_back({std::move(n.network_id), std::move(n.address), std::move(n.aliases)});
    for (auto& hp : p.host_ports)
        s.host_ports.push_back({std::move(hp.protocol), hp.target_port, hp.published_port});
    return a;
}

}  // namespace

std::string config_store_key(std::string_view config_id) {
    return "config:" + std::string(config_id);
}

std::string secret_store_key(std::string_view secret_id, std::uint64_t version) {
    return version == 0 ? std::string(secret_id) : fmt::format("{}@{}", secret_id, version);
}

Result<Assignments> parse_assignments(const crypto::SecureBuffer& text) {
    auto decoded = nodeproto::decode_assignments(text);
    if (!decoded) return std::move(decoded).error();
    Assignments out;
    out.complete = decoded->complete;
    out.sequence = decoded->sequence;
    out.changes.reserve(decoded->changes.size());
    for (auto& w : decoded->changes) {
        Change c;
        c.action = w.action == nodeproto::Change::Action::add ? Change::Action::add
                                                              : Change::Action::remove;
        c.is_secret = w.is_secret;
        c.id = w.is_config && !w.id.empty()   ? config_store_key(w.id)
               : w.is_secret && !w.id.empty() ? secret_store_key(w.id, w.version)
                                              : std::move(w.id);
        c.invalid = std::move(w.invalid);
        if (w.task) c.task = task_of(std::move(*w.task));
        if (w.secret)
            c.secret = SecretAssignment{c.id, std::move(w.secret->name), std::move(w.secret->data)};
        out.changes.push_back(std::move(c));
    }
    return out;
}

}  // namespace coffer::agent
