#include "coffer/model/service_json.h"

#include <charconv>

#include "coffer/model/json.h"

namespace coffer::model {

namespace json = boost::json;

namespace {

Error invalid(std::string message) {
    return make_error(Errc::invalid_argument, std::move(message));
}

// Typed optional members; a wrong type is an error naming the field's path.
class Reader {
  public:
    Reader(const json::object& o, std::string path) : o_(o), path_(std::move(path)) {}

    std::string name(std::string_view key) const {
        return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
    }
    const json::value* get(std::string_view key) const {
        auto* v = o_.if_contains(key);
        return v == nullptr || v->is_null() ? nullptr : v;
    }
    void str(std::string_view key, std::string& out) {
        if (auto* v = get(key)) {
            if (v->is_string())
                out = std::string(v->as_string());
            else
                fail(fmt::format("field {} must be a string", name(key)));
        }
    }
    void boolean(std::string_view key, bool& out) {
        if (auto* v = get(key)) {
            if (v->is_bool())
                out = v->as_bool();
            else
                fail(fmt::format("field {} must be a boolean", name(key)));
        }
    }
    template <typename Int>
    bool integer(std::string_view key, Int& out) {
        auto* v = get(key);
        if (v == nullptr) return false;
        if (v->is_int64()) {
            auto i = v->as_int64();
            if (std::is_unsigned_v<Int> && i < 0) {
                fail(fmt::format("field {} cannot be negative", name(key)));
                return false;
            }
            out = static_cast<Int>(i);
            return true;
        }
        if (v->is_uint64() && !std::is_signed_v<Int>) {
            out = static_cast<Int>(v->as_uint64());
            return true;
        }
        fail(fmt::format("field {} must be an integer", name(key)));
        return false;
    }
    void number(std::string_view key, double& out) {
        if (auto* v = get(key)) {
            if (v->is_number())
                out = v->to_number<double>();
            else
                fail(fmt::format("field {} must be a number", name(key)));
        }
    }
    void strings(std::string_view key, std::vector<std::string>& out) {
        auto* v = get(key);
        if (v == nullptr) return;
        if (!v->is_array())
            return fail(fmt::format("field {} must be an array of strings", name(key)));
        for (const auto& item : v->as_array()) {
            if (!item.is_string())
                return fail(fmt::format("field {} must be an array of strings", name(key)));
            out.emplace_back(item.as_string());
        }
    }
    const json::object* object(std::string_view key) {
        auto* v = get(key);
        if (v == nullptr) return nullptr;
        if (!v->is_object()) {
            fail(fmt::format("field {} must be an object", name(key)));
            return nullptr;
        }
        return &v->as_object();
    }
    const json::array* array(std::string_view key) {
        auto* v = get(key);
        if (v == nullptr) return nullptr;
        if (!v->is_array()) {
            fail(fmt::format("field {} must be an array", name(key)));
            return nullptr;
        }
        return &v->as_array();
    }
    void fail(std::string message) {
        if (!error_) error_ = invalid(std::move(message));
    }
    void merge(const Reader& other) {
        if (!error_ && other.error_) error_ = other.error_;
    }
    const std::optional<Error>& error() const { return error_; }

  private:
    const json::object& o_;
    std::string path_;
    std::optional<Error> error_;
};

std::optional<FailureAction> failure_action_from(std::string_view s) {
    if (s == "pause") return FailureAction::pause;
    if (s == "continue") return FailureAction::cont;
    if (s == "rollback") return FailureAction::rollback;
    return std::nullopt;
}

void read_update_config(Reader& parent, std::string_view key, UpdateConfig& u) {
    auto* o = parent.object(key);
    if (o == nullptr) return;
    Reader r(*o, parent.name(key));
    r.integer("Parallelism", u.parallelism);
    r.integer("Delay", u.delay);
    r.integer("Monitor", u.monitor);
    r.number("MaxFailureRatio", u.max_failure_ratio);
    std::string action, order;
    r.str("FailureAction", action);
    r.str("Order", order);
    if (!action.empty()) {
        auto a = failure_action_from(action);
        if (!a)
            r.fail(fmt::format("unrecognized failure action {}", action));
        else
            u.failure_action = *a;
    }
    if (order == "start-first")
        u.order = UpdateOrder::start_first;
    else if (!order.empty() && order != "stop-first")
        r.fail(fmt::format("unrecognized update order {}", order));
    parent.merge(r);
}

// ContainerSpec.Secrets and ContainerSpec.Configs: the same shape with the kind's id and name keys.
// "name@N" in a secret reference's SecretName pins version N (coffer's; a secret name cannot
// hold '@', so no Docker name is read as a pin).
void split_pin(Reader& ref, SecretReference& s) {
    auto at = s.secret_name.rfind('@');
    if (at == std::string::npos) return;
    std::string_view digits = std::string_view(s.secret_name).substr(at + 1);
    std::uint64_t n = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
    if (digits.empty() || ec != std::errc{} || end != digits.data() + digits.size() || n == 0) {
        ref.fail(fmt::format("{}: invalid secret version in '{}' (expected NAME@N, N >= 1)",
                             ref.name("SecretName"), s.secret_name));
        return;
    }
    s.pinned_version = n;
    s.secret_name.resize(at);
}

template <typename Ref>
void read_file_refs(Reader& parent, const json::object& cs, std::string_view key,
                    std::string_view kind, std::vector<Ref>& out, std::string Ref::*id_of,
                    std::string Ref::*name_of) {
    Reader r(cs, parent.name("ContainerSpec"));
    auto* refs = r.array(key);
    if (refs == nullptr) return parent.merge(r);
    const std::string id_key = kind == "secret" ? "SecretID" : "ConfigID";
    const std::string name_key = kind == "secret" ? "SecretName" : "ConfigName";
    for (const auto& item : *refs) {
        if (!item.is_object()) {
            r.fail(fmt::format("malformed {} reference", kind));
            break;
        }
        Reader ref(item.as_object(), r.name(key));
        Ref s;
        ref.str(id_key, s.*id_of);
        ref.str(name_key, s.*name_of);
        if (auto* file = ref.object("File")) {
            Reader f(*file, ref.name("File"));
            f.str("Name", s.file_name);
            f.str("UID", s.uid);
            f.str("GID", s.gid);
            f.integer("Mode", s.mode);
            ref.merge(f);
        }
        // A runtime target hands a config to the runtime (Windows credential specs).
        if (ref.get("Runtime"))
            ref.fail(
                fmt::format("{}.Runtime: {} references with a runtime target are not "
                            "supported",
                            r.name(key), kind));
        if constexpr (std::is_same_v<Ref, SecretReference>) split_pin(ref, s);
        r.merge(ref);
        out.push_back(std::move(s));
    }
    parent.merge(r);
}

// GenericResources[]: {"NamedResourceSpec":{"Kind","Value":"..."}} or
// {"DiscreteResourceSpec":{"Kind","Value":N}}; discrete_only for a task's reservations, which
// Swarm refuses to name resources.
void read_generic_resources(Reader& parent, std::string_view key, bool discrete_only,
                            std::vector<GenericResource>& out) {
    auto* list = parent.array(key);
    if (list == nullptr) return;
    for (const auto& item : *list) {
        if (!item.is_object()) {
            parent.fail(fmt::format("field {} must be an array of objects", parent.name(key)));
            return;
        }
        Reader g(item.as_object(), parent.name(key));
        auto* named = g.object("NamedResourceSpec");
        auto* discrete = g.object("DiscreteResourceSpec");
        GenericResource res;
        if ((named == nullptr) == (discrete == nullptr)) {
            g.fail(
                fmt::format("{}: each resource is one of NamedResourceSpec or "
                            "DiscreteResourceSpec",
                            parent.name(key)));
        } else if (named != nullptr) {
            Reader n(*named, g.name("NamedResourceSpec"));
            n.str("Kind", res.kind);
            n.str("Value", res.named);
            if (!n.error() && discrete_only)
                n.fail(fmt::format("invalid argument for resource {}", res.kind));
            else if (!n.error() && (res.kind.empty() || res.named.empty()))
                n.fail(
                    fmt::format("{}: a named resource needs a Kind and a Value", parent.name(key)));
            g.merge(n);
        } else {
            Reader d(*discrete, g.name("DiscreteResourceSpec"));
            d.str("Kind", res.kind);
            d.integer("Value", res.discrete);
            if (!d.error() && (res.kind.empty() || res.discrete <= 0))
                d.fail(fmt::format("{}: a discrete resource needs a Kind and a positive Value",
                                   parent.name(key)));
            g.merge(d);
        }
        parent.merge(g);
        if (parent.error()) return;
        out.push_back(std::move(res));
    }
}

json::array generic_resources_json(const std::vector<GenericResource>& list) {
    json::array out;
    for (const auto& g : list)
        if (g.is_named())
            out.push_back(json::object{
                {"NamedResourceSpec", json::object{{"Kind", g.kind}, {"Value", g.named}}}});
        else
            out.push_back(json::object{
                {"DiscreteResourceSpec", json::object{{"Kind", g.kind}, {"Value", g.discrete}}}});
    return out;
}

void read_healthcheck(Reader& parent, const json::object& cs, ContainerSpec& c) {
    Reader r(cs, parent.name("ContainerSpec"));
    auto* hc = r.object("Healthcheck");
    if (hc == nullptr) return parent.merge(r);
    Reader h(*hc, r.name("Healthcheck"));
    HealthConfig out;
    h.strings("Test", out.test);
    h.integer("Interval", out.interval);
    h.integer("Timeout", out.timeout);
    h.integer("StartPeriod", out.start_period);
    h.integer("StartInterval", out.start_interval);
    h.integer("Retries", out.retries);
    r.merge(h);
    parent.merge(r);
    c.healthcheck = std::move(out);
}

// The task options (model/task_options.h), and the fields of ContainerSpec coffer does not
// support: refused, never kept and ignored.
void read_task_options(Reader& parent, const json::object& cs, ContainerSpec& c) {
    Reader r(cs, parent.name("ContainerSpec"));
    r.strings("Groups", c.groups);
    r.boolean("Init", c.init);
    r.str("StopSignal", c.stop_signal);
    if (auto* sysctls = r.object("Sysctls")) {
        for (const auto& [k, v] : *sysctls) {
            if (!v.is_string()) {
                r.fail(fmt::format("field {}.{} must be a string", r.name("Sysctls"),
                                   std::string_view(k)));
                break;
            }
            c.sysctls.emplace(std::string(k), std::string(v.as_string()));
        }
    }
    if (auto* ulimits = r.array("Ulimits")) {
        for (const auto& item : *ulimits) {
            if (!item.is_object()) {
                r.fail(fmt::format("field {} must be an array of objects", r.name("Ulimits")));
                break;
            }
            Reader u(item.as_object(), r.name("Ulimits"));
            Ulimit limit;
            u.str("Name", limit.name);
            u.integer("Soft", limit.soft);
            u.integer("Hard", limit.hard);
            r.merge(u);
            c.ulimits.push_back(std::move(limit));
        }
    }
    r.strings("Hosts", c.hosts);
    if (auto* dns = r.object("DNSConfig")) {
        Reader d(*dns, r.name("DNSConfig"));
        d.strings("Nameservers", c.dns.nameservers);
        d.strings("Search", c.dns.search);
        d.strings("Options", c.dns.options);
        r.merge(d);
    }
    std::int64_t oom = 0;
    if (r.integer("OomScoreAdj", oom)) c.oom_score_adj = oom;

    auto unsupported = [&](std::string_view field) {
        r.fail(fmt::format("field {} is not supported by coffer", r.name(field)));
    };
    bool on = false;
    r.boolean("TTY", on);
    if (on) unsupported("TTY");
    on = false;
    r.boolean("OpenStdin", on);
    if (on) unsupported("OpenStdin");
    std::string isolation;
    r.str("Isolation", isolation);
    if (!isolation.empty() && isolation != "default") unsupported("Isolation");
    if (auto* priv = r.object("Privileges")) {
        // NoNewPrivileges: every task runs with no_new_privs already.
        for (auto field : {"CredentialSpec", "SELinuxContext", "Seccomp", "AppArmor"}) {
            auto* v = priv->if_contains(field);
            if (v == nullptr || v->is_null()) continue;
            // {"Mode": "default"} asks for what every task gets: the default profile.
            if ((std::string_view(field) == "Seccomp" || std::string_view(field) == "AppArmor") &&
                v->is_object()) {
                const auto& o = v->as_object();
                const auto* mode = o.if_contains("Mode");
                const auto* profile = o.if_contains("Profile");
                bool only_default = mode != nullptr && mode->is_string() &&
                                    mode->as_string() == "default" &&
                                    (profile == nullptr || profile->is_null() ||
                                     (profile->is_string() && profile->as_string().empty())) &&
                                    o.size() == 1u + (profile != nullptr ? 1u : 0u);
                if (only_default) continue;
            }
            unsupported(fmt::format("Privileges.{}", field));
        }
    }
    parent.merge(r);
}

// A field coffer does not act on is refused when it asks for something, accepted when empty.
void refuse_set(Reader& r, std::string_view key, std::string_view why) {
    auto* v = r.get(key);
    if (v == nullptr) return;
    bool unset = (v->is_bool() && !v->as_bool()) || (v->is_string() && v->as_string().empty()) ||
                 (v->is_array() && v->as_array().empty()) ||
                 (v->is_object() && v->as_object().empty());
    if (!unset) r.fail(fmt::format("field {} is not supported: {}", r.name(key), why));
}

MountSpec read_mount(Reader& r) {
    MountSpec m;
    std::string type;
    r.str("Type", type);
    if (type == "bind")
        m.type = MountType::bind;
    else if (type == "volume" || type.empty())
        m.type = MountType::volume;
    else if (type == "tmpfs")
        m.type = MountType::tmpfs;
    else
        r.fail(
            fmt::format("mount type unknown: \"{}\" (bind, volume and tmpfs are supported)", type));
    r.str("Source", m.source);
    r.str("Target", m.target);
    r.boolean("ReadOnly", m.read_only);
    std::string consistency;
    r.str("Consistency", consistency);
    if (!consistency.empty() && consistency != "default")
        r.fail(fmt::format("field {} is not supported: only \"default\" applies on Linux",
                           r.name("Consistency")));
    refuse_set(r, "ClusterVolumeOptions", "cluster volumes are not supported");
    auto kind_only = [&](std::string_view key, MountType kind) {
        if (r.get(key) != nullptr && m.type != kind)
            r.fail(fmt::format("invalid mount config: {} must not be specified with type {}", key,
                               type.empty() ? "volume" : type));
    };
    kind_only("BindOptions", MountType::bind);
    kind_only("VolumeOptions", MountType::volume);
    kind_only("TmpfsOptions", MountType::tmpfs);
    if (auto* b = r.object("BindOptions")) {
        Reader br(*b, r.name("BindOptions"));
        std::string propagation;
        br.str("Propagation", propagation);
        if (!propagation.empty() && propagation != "rprivate" && propagation != "private")
            br.fail(fmt::format(
                "field {} is not supported: \"{}\" (bind mounts are rprivate, or private)",
                br.name("Propagation"), propagation));
        br.boolean("NonRecursive", m.non_recursive);
        refuse_set(br, "CreateMountpoint", "a bind source must exist on the node");
        refuse_set(br, "ReadOnlyNonRecursive", "a read-only bind is read-only recursively");
        refuse_set(br, "ReadOnlyForceRecursive", "a read-only bind is read-only recursively");
        r.merge(br);
    }
    if (auto* v = r.object("VolumeOptions")) {
        Reader vr(*v, r.name("VolumeOptions"));
        vr.boolean("NoCopy", m.no_copy);
        auto labels = labels_from_json(v->if_contains("Labels"), vr.name("Labels"));
        if (labels)
            m.volume_labels = std::move(*labels);
        else
            vr.fail(labels.error().message);
        if (auto* d = vr.object("DriverConfig")) {
            Reader dr(*d, vr.name("DriverConfig"));
            std::string driver;
            dr.str("Name", driver);
            if (!driver.empty() && driver != "local")
                dr.fail(
                    fmt::format("volume driver \"{}\" is not supported (only \"local\")", driver));
            refuse_set(dr, "Options", "the local driver takes no options here");
            vr.merge(dr);
        }
        refuse_set(vr, "Subpath", "a volume is mounted whole");
        r.merge(vr);
    }
    if (auto* t = r.object("TmpfsOptions")) {
        Reader tr(*t, r.name("TmpfsOptions"));
        tr.integer("SizeBytes", m.tmpfs_size);
        tr.integer("Mode", m.tmpfs_mode);
        refuse_set(tr, "Options", "only SizeBytes and Mode are supported");
        r.merge(tr);
    }
    return m;
}

void read_mounts(Reader& parent, const json::object& cs, ContainerSpec& c) {
    Reader r(cs, parent.name("ContainerSpec"));
    auto* mounts = r.array("Mounts");
    if (mounts == nullptr) return parent.merge(r);
    for (const auto& item : *mounts) {
        if (!item.is_object()) {
            r.fail(fmt::format("field {} must be an array of objects", r.name("Mounts")));
            break;
        }
        Reader m(item.as_object(), r.name("Mounts"));
        c.mounts.push_back(read_mount(m));
        r.merge(m);
    }
    parent.merge(r);
}

}  // namespace

// Networks[] of a task template or of the (deprecated) spec root.
void read_networks(Reader& parent, std::string_view key,
                   std::vector<NetworkAttachmentConfig>& out) {
    auto* list = parent.array(key);
    if (list == nullptr) return;
    for (const auto& item : *list) {
        if (!item.is_object())
            return parent.fail(fmt::format("field {}[] must be an object", parent.name(key)));
        Reader n(item.as_object(), parent.name(key) + "[]");
        NetworkAttachmentConfig a;
        n.str("Target", a.target);
        n.strings("Aliases", a.aliases);
        if (auto* opts = n.object("DriverOpts"); opts && !opts->empty())
            n.fail(
                fmt::format("field {}.DriverOpts is not supported: coffer's networks take no "
                            "driver options per attachment",
                            n.name("")));
        parent.merge(n);
        out.push_back(std::move(a));
    }
}

void read_endpoint(Reader& parent, EndpointSpec& e) {
    auto* ep = parent.object("EndpointSpec");
    if (ep == nullptr) return;
    Reader r(*ep, "EndpointSpec");
    r.str("Mode", e.mode);
    if (e.mode.empty()) e.mode = "vip";
    if (e.mode != "vip" && e.mode != "dnsrr")
        r.fail(fmt::format("EndpointSpec: invalid resolution mode {}", e.mode));
    if (auto* ports = r.array("Ports")) {
        for (const auto& item : *ports) {
            if (!item.is_object()) {
                r.fail("field EndpointSpec.Ports[] must be an object");
                break;
            }
            Reader p(item.as_object(), "EndpointSpec.Ports[]");
            PortConfig pc;
            p.str("Name", pc.name);
            p.str("Protocol", pc.protocol);
            if (pc.protocol.empty()) pc.protocol = "tcp";
            if (pc.protocol == "sctp")
                p.fail(
                    "EndpointSpec.Ports[].Protocol sctp is not supported: coffer publishes tcp "
                    "and udp ports");
            else if (pc.protocol != "tcp" && pc.protocol != "udp")
                p.fail(fmt::format("EndpointSpec.Ports[]: invalid protocol {}", pc.protocol));
            p.integer("TargetPort", pc.target_port);
            p.integer("PublishedPort", pc.published_port);
            if (pc.target_port > 65535 || pc.published_port > 65535)
                p.fail("EndpointSpec.Ports[]: a port must be at most 65535");
            if (!p.error() && pc.target_port == 0)
                p.fail("EndpointSpec.Ports[]: TargetPort must be given");
            std::string mode;
            p.str("PublishMode", mode);
            if (mode == "host")
                pc.publish_mode = PublishMode::host;
            else if (!mode.empty() && mode != "ingress")
                p.fail(fmt::format("EndpointSpec.Ports[]: invalid publish mode {}", mode));
            r.merge(p);
            e.ports.push_back(std::move(pc));
        }
    }
    parent.merge(r);
}

Result<TaskTemplate> task_template_from_json(const json::value& v) {
    TaskTemplate t;
    if (!v.is_object()) return invalid("field TaskTemplate must be an object");
    t.json = json::serialize(v);
    Reader r(v.as_object(), "TaskTemplate");
    if (auto* cs = r.object("ContainerSpec")) {
        Reader c(*cs, "TaskTemplate.ContainerSpec");
        auto& ct = t.container;
        c.str("Image", ct.image);
        c.strings("Command", ct.command);
        c.strings("Args", ct.args);
        c.strings("Env", ct.env);
        c.str("User", ct.user);
        c.str("Dir", ct.dir);
        c.str("Hostname", ct.hostname);
        c.boolean("ReadOnly", ct.read_only);
        c.strings("CapabilityAdd", ct.cap_add);
        c.strings("CapabilityDrop", ct.cap_drop);
        std::int64_t grace = 0;
        if (c.integer("StopGracePeriod", grace)) ct.stop_grace_period = grace;
        r.merge(c);
        read_file_refs(r, *cs, "Secrets", "secret", ct.secrets, &SecretReference::secret_id,
                       &SecretReference::secret_name);
        read_file_refs(r, *cs, "Configs", "config", ct.configs, &ConfigReference::config_id,
                       &ConfigReference::config_name);
        if (auto* auth = c.object("CofferRegistryAuth")) {
            Reader a(*auth, "TaskTemplate.ContainerSpec.CofferRegistryAuth");
            SecretReference ref;
            a.str("SecretID", ref.secret_id);
            a.str("SecretName", ref.secret_name);
            if (ref.secret_id.empty())
                a.fail("TaskTemplate.ContainerSpec.CofferRegistryAuth: SecretID must be given");
            c.merge(a);
            ct.registry_auth = std::move(ref);
        }
        r.merge(c);
        read_healthcheck(r, *cs, ct);
        read_task_options(r, *cs, ct);
        read_mounts(r, *cs, ct);
    } else if (r.get("PluginSpec") || r.get("NetworkAttachmentSpec")) {
        r.fail("only container services are supported");
    }
    if (auto* res = r.object("Resources")) {
        Reader rr(*res, "TaskTemplate.Resources");
        if (auto* lim = rr.object("Limits")) {
            Reader l(*lim, "TaskTemplate.Resources.Limits");
            l.integer("MemoryBytes", t.limits.memory_bytes);
            l.integer("NanoCPUs", t.limits.nano_cpus);
            l.integer("Pids", t.limits.pids);
            rr.merge(l);
        }
        if (auto* reserved = rr.object("Reservations")) {
            Reader rv(*reserved, "TaskTemplate.Resources.Reservations");
            rv.integer("MemoryBytes", t.reservations.memory_bytes);
            rv.integer("NanoCPUs", t.reservations.nano_cpus);
            read_generic_resources(rv, "GenericResources", true, t.reservations.generic);
            rr.merge(rv);
        }
        r.merge(rr);
    }
    if (auto* rp = r.object("RestartPolicy")) {
        Reader p(*rp, "TaskTemplate.RestartPolicy");
        std::string cond;
        p.str("Condition", cond);
        if (cond == "none")
            t.restart.condition = RestartCondition::none;
        else if (cond == "on-failure")
            t.restart.condition = RestartCondition::on_failure;
        else if (!cond.empty() && cond != "any")
            p.fail(fmt::format("invalid RestartCondition: \"{}\"", cond));
        p.integer("Delay", t.restart.delay);
        p.integer("MaxAttempts", t.restart.max_attempts);
        p.integer("Window", t.restart.window);
        r.merge(p);
    }
    if (auto* pl = r.object("Placement")) {
        Reader p(*pl, "TaskTemplate.Placement");
        std::vector<std::string> exprs;
        p.strings("Constraints", exprs);
        for (const auto& e : exprs) {
            auto c = parse_constraint(e);
            if (!c) {
                p.fail(c.error().message);
                break;
            }
            t.constraints.push_back(std::move(*c));
        }
        if (auto* prefs = p.array("Preferences")) {
            for (const auto& item : *prefs) {
                const auto* spread =
                    item.is_object() ? item.as_object().if_contains("Spread") : nullptr;
                const auto* desc = spread && spread->is_object()
                                       ? spread->as_object().if_contains("SpreadDescriptor")
                                       : nullptr;
                if (desc == nullptr || !desc->is_string()) {
                    p.fail(
                        "TaskTemplate.Placement.Preferences: each preference must be "
                        "{\"Spread\":{\"SpreadDescriptor\":\"node.labels.<label>\"}}");
                    break;
                }
                std::string_view d = desc->as_string();
                constexpr std::string_view prefix = "node.labels.";
                if (d.size() <= prefix.size() || to_lower(d.substr(0, prefix.size())) != prefix) {
                    p.fail(
                        fmt::format("TaskTemplate.Placement.Preferences: spread descriptor '{}' "
                                    "is not supported (node.labels.<label>)",
                                    d));
                    break;
                }
                t.spread.emplace_back(d.substr(prefix.size()));
            }
        }
        p.integer("MaxReplicas", t.max_replicas);
        if (auto* platforms = p.array("Platforms")) {
            for (const auto& item : *platforms) {
                if (!item.is_object()) {
                    p.fail("field TaskTemplate.Placement.Platforms must be an array of objects");
                    break;
                }
                Reader pf(item.as_object(), "TaskTemplate.Placement.Platforms");
                Platform platform;
                pf.str("Architecture", platform.architecture);
                pf.str("OS", platform.os);
                p.merge(pf);
                t.platforms.push_back(std::move(platform));
            }
        }
        r.merge(p);
    }
    r.integer("ForceUpdate", t.force_update);
    read_networks(r, "Networks", t.networks);
    if (r.error()) return *r.error();
    return t;
}

Result<ServiceSpec> service_spec_from_json(const json::value& v) {
    if (!v.is_object()) return invalid("service spec must be an object");
    ServiceSpec s;
    const auto& o = v.as_object();
    s.json = json::serialize(v);
    Reader r(o, "");
    r.str("Name", s.name);
    auto labels = labels_from_json(o.if_contains("Labels"), "Labels");
    if (!labels) return std::move(labels).error();
    s.labels = std::move(*labels);
    auto* tt = o.if_contains("TaskTemplate");
    auto task = task_template_from_json(tt && !tt->is_null() ? *tt : json::value(json::object{}));
    if (!task) return std::move(task).error();
    s.task = std::move(*task);
    if (auto* mode = r.object("Mode")) {
        Reader m(*mode, "Mode");
        auto* rep = m.object("Replicated");
        auto* glob = m.object("Global");
        if (m.get("ReplicatedJob") || m.get("GlobalJob")) m.fail("job services are not supported");
        if (rep && glob) m.fail("Mode: only one of Replicated or Global may be given");
        if (glob) {
            s.mode = ServiceMode::global;
        } else if (rep) {
            Reader rr(*rep, "Mode.Replicated");
            rr.integer("Replicas", s.replicas);
            m.merge(rr);
        }
        r.merge(m);
    }
    read_update_config(r, "UpdateConfig", s.update);
    read_update_config(r, "RollbackConfig", s.rollback);
    read_networks(r, "Networks", s.networks);
    read_endpoint(r, s.endpoint);
    if (r.error()) return *r.error();
    if (s.mode == ServiceMode::replicated) {
        // As Docker stores it: a replicated service always names its replica count (1 when the
        // request left Mode, or Mode.Replicated.Replicas, out), so clients reading it back see a
        // known mode.
        auto* mode = o.if_contains("Mode");
        auto* rep =
            mode && mode->is_object() ? mode->as_object().if_contains("Replicated") : nullptr;
        auto* replicas =
            rep && rep->is_object() ? rep->as_object().if_contains("Replicas") : nullptr;
        if (replicas == nullptr || replicas->is_null()) {
            json::object copy = o;
            auto& m = copy["Mode"];
            if (!m.is_object()) m = json::object{};
            auto& rp = m.as_object()["Replicated"];
            if (!rp.is_object()) rp = json::object{};
            rp.as_object()["Replicas"] = s.replicas;
            s.json = json::serialize(copy);
        }
    }
    return s;
}

namespace {

json::object& obj(json::object& parent, std::string_view key) {
    auto& v = parent[key];
    if (!v.is_object()) v = json::object{};
    return v.as_object();
}

void default_update_config(json::object& u) {
    u.emplace("Parallelism", 1);
    u.emplace("FailureAction", "pause");
    u.emplace("Monitor", 5 * second_ns);
    u.emplace("MaxFailureRatio", 0);
    u.emplace("Order", "stop-first");
}

json::object parse_object(const std::string& text) {
    auto v = parse_json(text);
    return v && v->is_object() ? std::move(v->as_object()) : json::object{};
}

}  // namespace

static json::object port_json(const PortConfig& p) {
    json::object o;
    if (!p.name.empty()) o["Name"] = p.name;
    o["Protocol"] = p.protocol;
    o["TargetPort"] = p.target_port;
    o["PublishedPort"] = p.published_port;
    o["PublishMode"] = p.publish_mode == PublishMode::host ? "host" : "ingress";
    return o;
}

static json::object endpoint_spec_json(const EndpointSpec& e) {
    json::object o{{"Mode", e.mode}};
    if (!e.ports.empty()) {
        json::array ports;
        for (const auto& p : e.ports) ports.push_back(port_json(p));
        o["Ports"] = std::move(ports);
    }
    return o;
}

json::object spec_json(const ServiceSpec& spec, bool insert_defaults) {
    auto o = parse_object(spec.json);
    if (!insert_defaults) return o;
    auto& tt = obj(o, "TaskTemplate");
    obj(tt, "ContainerSpec").emplace("StopGracePeriod", 10 * second_ns);
    auto& rp = obj(tt, "RestartPolicy");
    rp.emplace("Condition", "any");
    rp.emplace("Delay", 5 * second_ns);
    rp.emplace("MaxAttempts", 0);
    default_update_config(obj(o, "UpdateConfig"));
    default_update_config(obj(o, "RollbackConfig"));
    return o;
}

json::object to_json(const Service& s, bool insert_defaults) {
    auto o = to_json(s.meta);
    o["Spec"] = spec_json(s.spec, insert_defaults);
    if (s.previous) o["PreviousSpec"] = spec_json(*s.previous, insert_defaults);
    json::object endpoint{{"Spec", parse_object(s.spec.json).contains("EndpointSpec")
                                       ? endpoint_spec_json(s.spec.endpoint)
                                       : json::object{}}};
    if (!s.endpoint_ports.empty()) {
        json::array ports;
        for (const auto& p : s.endpoint_ports) ports.push_back(port_json(p));
        endpoint["Ports"] = std::move(ports);
    }
    if (!s.virtual_ips.empty()) {
        json::array vips;
        for (const auto& v : s.virtual_ips)
            vips.push_back(json::object{{"NetworkID", v.network_id}, {"Addr", v.addr}});
        endpoint["VirtualIPs"] = std::move(vips);
    }
    o["Endpoint"] = std::move(endpoint);
    if (s.update_status) {
        const auto& u = *s.update_status;
        json::object us{{"State", to_string(u.state)},
                        {"StartedAt", format_rfc3339(u.started)},
                        {"Message", u.message}};
        if (u.completed) us["CompletedAt"] = format_rfc3339(*u.completed);
        o["UpdateStatus"] = std::move(us);
    }
    return o;
}

namespace {

Result<ObjectMeta> meta_of(const json::object& o) {
    // Reuse the secret decoder's metadata rules by decoding a secret-shaped view.
    json::object view{{"ID", o.contains("ID") ? o.at("ID") : json::value()},
                      {"Version", o.contains("Version") ? o.at("Version") : json::value()},
                      {"CreatedAt", o.contains("CreatedAt") ? o.at("CreatedAt") : json::value()},
                      {"UpdatedAt", o.contains("UpdatedAt") ? o.at("UpdatedAt") : json::value()},
                      {"Spec", json::object{{"Name", "x"}}}};
    auto s = secret_from_json(view);
    if (!s) return std::move(s).error();
    return s->meta;
}

std::optional<Timestamp> time_at(const json::object& o, std::string_view key) {
    auto* v = o.if_contains(key);
    if (v == nullptr || !v->is_string()) return std::nullopt;
    return parse_rfc3339(v->as_string());
}

}  // namespace

Result<Service> service_from_json(const json::value& v) {
    if (!v.is_object()) return invalid("service must be an object");
    const auto& o = v.as_object();
    Service s;
    auto meta = meta_of(o);
    if (!meta) return std::move(meta).error();
    s.meta = std::move(*meta);
    auto spec = service_spec_from_json(o.contains("Spec") ? o.at("Spec") : json::value());
    if (!spec) return std::move(spec).error();
    s.spec = std::move(*spec);
    if (auto* prev = o.if_contains("PreviousSpec"); prev && !prev->is_null()) {
        auto p = service_spec_from_json(*prev);
        if (!p) return std::move(p).error();
        s.previous = std::move(*p);
    }
    if (auto* us = o.if_contains("UpdateStatus"); us && us->is_object()) {
        const auto& u = us->as_object();
        UpdateStatus out;
        auto state = u.contains("State") && u.at("State").is_string()
                         ? update_state_from(std::string_view(u.at("State").as_string()))
                         : std::nullopt;
        if (!state) return invalid("service has no valid UpdateStatus.State");
        out.state = *state;
        out.message = u.contains("Message") && u.at("Message").is_string()
                          ? std::string(u.at("Message").as_string())
                          : "";
        out.started = time_at(u, "StartedAt").value_or(Timestamp{});
        out.completed = time_at(u, "CompletedAt");
        s.update_status = std::move(out);
    }
    if (auto* ep = o.if_contains("Endpoint"); ep && ep->is_object()) {
        const auto& e = ep->as_object();
        if (auto* ports = e.if_contains("Ports"); ports && ports->is_array()) {
            // Read back through the spec reader: the same checks as a request's ports.
            auto read = service_spec_from_json(
                json::object{{"Name", "x"}, {"EndpointSpec", json::object{{"Ports", *ports}}}});
            if (!read) return std::move(read).error();
            s.endpoint_ports = std::move(read->endpoint.ports);
        }
        if (auto* vips = e.if_contains("VirtualIPs"); vips && vips->is_array()) {
            for (const auto& item : vips->as_array()) {
                if (!item.is_object())
                    return invalid("service has a malformed Endpoint.VirtualIPs");
                Reader r(item.as_object(), "Endpoint.VirtualIPs[]");
                VirtualIp vip;
                r.str("NetworkID", vip.network_id);
                r.str("Addr", vip.addr);
                if (r.error()) return *r.error();
                s.virtual_ips.push_back(std::move(vip));
            }
        }
    }
    return s;
}

json::object to_json(const Task& t, bool internal) {
    auto o = to_json(t.meta);
    o["Labels"] = json::object{};
    o["Spec"] = parse_object(t.spec.json);
    o["ServiceID"] = t.service_id;
    o["Slot"] = t.slot;
    if (!t.node_id.empty()) o["NodeID"] = t.node_id;
    json::object st{{"Timestamp", format_rfc3339(t.status.timestamp)},
                    {"State", to_string(t.status.state)},
                    {"Message", t.status.message}};
    if (!t.status.err.empty()) st["Err"] = t.status.err;
    if (t.status.container) {
        json::object cs{{"ContainerID", t.status.container->container_id},
                        {"PID", t.status.container->pid},
                        {"ExitCode", t.status.container->exit_code}};
        // Not in Swarm's ContainerStatus: the health Docker shows as State.Health.Status.
        if (!t.status.container->health.empty())
            cs["Health"] = json::object{{"Status", t.status.container->health}};
        st["ContainerStatus"] = std::move(cs);
    }
    st["PortStatus"] = json::object{};
    o["Status"] = std::move(st);
    o["DesiredState"] = to_string(t.desired);
    if (!t.networks.empty()) {
        // The API layer fills in each Network (it knows the networks); the store keeps the ID.
        json::array attachments;
        for (const auto& a : t.networks) {
            json::object n{{"Network", json::object{{"ID", a.network_id}}},
                           {"Addresses", json::array{json::value(a.address)}}};
            if (internal && !a.aliases.empty()) {
                json::array aliases;
                for (const auto& x : a.aliases) aliases.emplace_back(x);
                n["Aliases"] = std::move(aliases);
            }
            attachments.push_back(std::move(n));
        }
        o["NetworksAttachments"] = std::move(attachments);
    }
    // coffer's: the secret version each reference holds (task inspect shows it).
    if (!t.spec.container.secrets.empty()) {
        json::array held;
        for (std::size_t i = 0; i < t.spec.container.secrets.size(); ++i) {
            const auto& ref = t.spec.container.secrets[i];
            held.push_back(json::object{{"SecretID", ref.secret_id},
                                        {"SecretName", ref.secret_name},
                                        {"File", ref.file_name},
                                        {"Version", t.secret_version(i)},
                                        {"Pinned", ref.pinned_version != 0}});
        }
        o["CofferSecretVersions"] = std::move(held);
        if (!t.secret_signal.empty()) o["CofferSecretSignal"] = t.secret_signal;
    }
    if (t.registry_auth_version != 0) o["CofferRegistryAuthVersion"] = t.registry_auth_version;
    if (!t.secret_mount.empty()) o["CofferSecretMount"] = t.secret_mount;
    if (internal) {
        o["NotBefore"] = t.not_before.nanos;
        o["ServiceName"] = t.service_name;
        o["Restarts"] = t.restarts;
        if (!t.network_mode.empty()) o["NetworkMode"] = t.network_mode;
        if (t.networks_allocated) o["NetworksAllocated"] = true;
        if (!t.host_ports.empty()) {
            json::array ports;
            for (const auto& p : t.host_ports) ports.push_back(port_json(p));
            o["HostPorts"] = std::move(ports);
        }
    }
    return o;
}

Result<Task> task_from_json(const json::value& v) {
    if (!v.is_object()) return invalid("task must be an object");
    const auto& o = v.as_object();
    Task t;
    auto meta = meta_of(o);
    if (!meta) return std::move(meta).error();
    t.meta = std::move(*meta);
    auto spec = task_template_from_json(o.contains("Spec") ? o.at("Spec") : json::value());
    if (!spec) return std::move(spec).error();
    t.spec = std::move(*spec);
    Reader r(o, "");
    r.str("ServiceID", t.service_id);
    r.integer("Slot", t.slot);
    r.str("NodeID", t.node_id);
    r.str("ServiceName", t.service_name);
    r.integer("NotBefore", t.not_before.nanos);
    r.integer("Restarts", t.restarts);
    if (auto* held = o.if_contains("CofferSecretVersions"); held && held->is_array()) {
        for (const auto& item : held->as_array()) {
            const auto* n = item.is_object() ? item.as_object().if_contains("Version") : nullptr;
            if (n == nullptr || !n->is_number() || n->to_number<std::int64_t>() < 1)
                return invalid("task has a malformed CofferSecretVersions");
            t.secret_versions.push_back(n->to_number<std::uint64_t>());
        }
    }
    r.str("CofferSecretSignal", t.secret_signal);
    r.integer("CofferRegistryAuthVersion", t.registry_auth_version);
    r.str("CofferSecretMount", t.secret_mount);
    if (!t.secret_mount.empty() && t.secret_mount != "tmpfs" && t.secret_mount != "fuse")
        return invalid("task has a malformed CofferSecretMount");
    std::string desired;
    r.str("DesiredState", desired);
    auto d = task_state_from(desired);
    if (!d) return invalid("task has no valid DesiredState");
    t.desired = *d;
    auto* st = r.object("Status");
    if (st == nullptr) return invalid("task has no Status");
    Reader s(*st, "Status");
    std::string state;
    s.str("State", state);
    auto ts = task_state_from(state);
    if (!ts) return invalid("task has no valid Status.State");
    t.status.state = *ts;
    s.str("Message", t.status.message);
    s.str("Err", t.status.err);
    t.status.timestamp = time_at(*st, "Timestamp").value_or(Timestamp{});
    if (auto* cs = s.object("ContainerStatus")) {
        Reader c(*cs, "Status.ContainerStatus");
        ContainerStatus out;
        c.str("ContainerID", out.container_id);
        c.integer("PID", out.pid);
        c.integer("ExitCode", out.exit_code);
        if (auto* health = c.object("Health")) {
            Reader hr(*health, "Status.ContainerStatus.Health");
            hr.str("Status", out.health);
            c.merge(hr);
        }
        s.merge(c);
        t.status.container = std::move(out);
    }
    r.merge(s);
    r.str("NetworkMode", t.network_mode);
    r.boolean("NetworksAllocated", t.networks_allocated);
    if (auto* list = r.array("NetworksAttachments")) {
        for (const auto& item : *list) {
            if (!item.is_object()) return invalid("task has a malformed NetworksAttachments");
            Reader a(item.as_object(), "NetworksAttachments[]");
            TaskNetworkAttachment att;
            if (auto* n = a.object("Network")) {
                Reader nr(*n, "NetworksAttachments[].Network");
                nr.str("ID", att.network_id);
                a.merge(nr);
            }
            std::vector<std::string> addresses;
            a.strings("Addresses", addresses);
            a.strings("Aliases", att.aliases);
            if (addresses.size() != 1)
                return invalid("task has a malformed NetworksAttachments[].Addresses");
            att.address = std::move(addresses.front());
            r.merge(a);
            t.networks.push_back(std::move(att));
        }
    }
    if (auto* ports = r.array("HostPorts")) {
        auto read = service_spec_from_json(
            json::object{{"Name", "x"}, {"EndpointSpec", json::object{{"Ports", *ports}}}});
        if (!read) return std::move(read).error();
        t.host_ports = std::move(read->endpoint.ports);
    }
    if (r.error()) return *r.error();
    return t;
}

json::object to_json(const Node& n) {
    auto o = to_json(n.meta);
    o["Spec"] = json::object{{"Labels", to_json(n.spec.labels)},
                             {"Role", to_string(n.spec.role)},
                             {"Availability", to_string(n.spec.availability)}};
    o["Description"] = json::object{
        {"Hostname", n.description.hostname},
        {"Platform",
         json::object{{"Architecture", n.description.architecture}, {"OS", n.description.os}}},
        {"Resources", json::object{{"NanoCPUs", n.description.nano_cpus},
                                   {"MemoryBytes", n.description.memory_bytes}}}};
    if (!n.description.generic.empty())
        o["Description"].as_object()["Resources"].as_object()["GenericResources"] =
            generic_resources_json(n.description.generic);
    o["Status"] = json::object{{"State", to_string(n.state)}, {"Addr", n.addr}};
    if (n.certificate_expiry) o["CertificateExpiry"] = format_rfc3339(*n.certificate_expiry);
    return o;
}

Result<NodeSpec> node_spec_from_json(const json::value& v) {
    if (!v.is_object()) return invalid("node spec must be an object");
    NodeSpec spec;
    auto labels = labels_from_json(v.as_object().if_contains("Labels"), "Labels");
    if (!labels) return std::move(labels).error();
    spec.labels = std::move(*labels);
    Reader r(v.as_object(), "");
    std::string role, availability;
    r.str("Role", role);
    r.str("Availability", availability);
    if (r.error()) return *r.error();
    if (role == "manager")
        spec.role = NodeRole::manager;
    else if (role.empty() || role == "worker")
        spec.role = NodeRole::worker;
    else
        return invalid(fmt::format("invalid role {}", role));
    if (availability == "pause")
        spec.availability = NodeAvailability::pause;
    else if (availability == "drain")
        spec.availability = NodeAvailability::drain;
    else if (availability.empty() || availability == "active")
        spec.availability = NodeAvailability::active;
    else
        return invalid(fmt::format("invalid availability {}", availability));
    return spec;
}

Result<Node> node_from_json(const json::value& v) {
    if (!v.is_object()) return invalid("node must be an object");
    const auto& o = v.as_object();
    Node n;
    auto meta = meta_of(o);
    if (!meta) return std::move(meta).error();
    n.meta = std::move(*meta);
    auto spec =
        node_spec_from_json(o.contains("Spec") ? o.at("Spec") : json::value(json::object{}));
    if (!spec) return std::move(spec).error();
    n.spec = std::move(*spec);
    Reader r(o, "");
    if (auto* d = r.object("Description")) {
        Reader dr(*d, "Description");
        dr.str("Hostname", n.description.hostname);
        if (auto* p = dr.object("Platform")) {
            Reader pr(*p, "Description.Platform");
            pr.str("Architecture", n.description.architecture);
            pr.str("OS", n.description.os);
            dr.merge(pr);
        }
        if (auto* res = dr.object("Resources")) {
            Reader rr(*res, "Description.Resources");
            rr.integer("NanoCPUs", n.description.nano_cpus);
            rr.integer("MemoryBytes", n.description.memory_bytes);
            read_generic_resources(rr, "GenericResources", false, n.description.generic);
            dr.merge(rr);
        }
        r.merge(dr);
    }
    if (auto* st = r.object("Status")) {
        Reader sr(*st, "Status");
        std::string state;
        sr.str("State", state);
        sr.str("Addr", n.addr);
        n.state = state == "ready"          ? NodeState::ready
                  : state == "down"         ? NodeState::down
                  : state == "disconnected" ? NodeState::disconnected
                                            : NodeState::unknown;
        r.merge(sr);
    }
    n.certificate_expiry = time_at(o, "CertificateExpiry");
    if (r.error()) return *r.error();
    return n;
}

}  // namespace coffer::model
