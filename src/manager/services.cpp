#include "coffer/manager/services.h"

#include <algorithm>

#include "coffer/base/log.h"
#include "coffer/crypto/random.h"
#include "coffer/model/json.h"
#include "coffer/model/service_json.h"

namespace coffer::manager {

namespace json = boost::json;
using model::Service;
using model::Task;

namespace {

template <typename T, auto decode>
Result<T> decode_record(std::string_view text) {
    auto v = model::parse_json(text);
    if (!v) return std::move(v).error();
    return decode(*v);
}

// Full ID, then exact name (services only), then unique ID prefix, as Docker resolves them.
template <typename T, typename NameOf>
Result<T> lookup(const std::map<std::string, T, std::less<>>& items, std::string_view key,
                 std::string_view kind, NameOf name_of) {
    auto not_found = [&] {
        return make_error(Errc::not_found, fmt::format("{} {} not found", kind, key));
    };
    if (key.empty()) return not_found();
    if (auto it = items.find(key); it != items.end()) return it->second;
    for (const auto& [id, t] : items)
        if (name_of(t) == key) return t;
    const T* found = nullptr;
    int matches = 0;
    for (auto it = items.lower_bound(key); it != items.end() && it->first.starts_with(key); ++it) {
        found = &it->second;
        ++matches;
    }
    if (matches > 1)
        return make_error(Errc::invalid_argument,
                          fmt::format("{} {} is ambiguous ({} matches found)", kind, key, matches));
    if (found) return *found;
    return not_found();
}

template <typename Ref>
std::vector<std::string> ids_of(const std::vector<Ref>& refs, std::string Ref::*id) {
    std::vector<std::string> ids;
    for (const auto& ref : refs) ids.push_back(ref.*id);
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    return ids;
}

// "secret not found: a" / "configs not found: a, b": the names of refs whose id is in missing.
template <typename Ref>
Error not_found_error(std::string_view kind, const std::vector<Ref>& refs,
                      const std::vector<std::string>& missing, std::string Ref::*id,
                      std::string Ref::*name) {
    std::vector<std::string> names;
    for (const auto& ref : refs)
        if (std::find(missing.begin(), missing.end(), ref.*id) != missing.end() &&
            std::find(names.begin(), names.end(), ref.*name) == names.end())
            names.push_back(ref.*name);
    return make_error(Errc::invalid_argument,
                      fmt::format("{}{} not found: {}", kind, names.size() > 1 ? "s" : "",
                                  fmt::join(names, ", ")));
}

// The service's Endpoint.Ports: the spec's, with each ingress port published at 0 given a port
// of [first_dynamic_port, last_dynamic_port] (the one it had, when it had one). An ingress port
// another service publishes is refused in Swarm's words.
Result<std::vector<model::PortConfig>> allocate_ports(
    const std::map<std::string, Service, std::less<>>& items, std::string_view self,
    const model::ServiceSpec& spec, const std::vector<model::PortConfig>& current) {
    using model::PublishMode;
    std::map<std::pair<std::uint32_t, std::string>, const Service*> taken;
    for (const auto& [id, s] : items) {
        if (id == self) continue;
        for (const auto& p : s.endpoint_ports)
            if (p.publish_mode == PublishMode::ingress)
                taken.emplace(std::pair{p.published_port, p.protocol}, &s);
    }
    std::vector<model::PortConfig> out = spec.endpoint.ports;
    std::set<std::pair<std::uint32_t, std::string>> mine;
    for (const auto& p : out) {
        if (p.publish_mode != PublishMode::ingress || p.published_port == 0) continue;
        if (auto it = taken.find({p.published_port, p.protocol}); it != taken.end())
            return make_error(
                Errc::invalid_argument,
                fmt::format("port '{}' is already in use by service '{}' ({}) as an "
                            "ingress port",
                            p.published_port, it->second->spec.name, it->second->meta.id));
        mine.emplace(p.published_port, p.protocol);
    }
    auto free = [&](std::uint32_t port, const std::string& proto) {
        return !taken.count({port, proto}) && !mine.count({port, proto});
    };
    for (auto& p : out) {
        if (p.publish_mode != PublishMode::ingress || p.published_port != 0) continue;
        for (const auto& c : current)
            if (c.publish_mode == PublishMode::ingress && c.target_port == p.target_port &&
                c.protocol == p.protocol && c.published_port >= model::first_dynamic_port &&
                c.published_port <= model::last_dynamic_port &&
                free(c.published_port, p.protocol)) {
                p.published_port = c.published_port;
                break;
            }
        for (auto port = model::first_dynamic_port; p.published_port == 0; ++port) {
            if (port > model::last_dynamic_port)
                return make_error(Errc::unavailable,
                                  "no free port left in the dynamic range 30000-32767");
            if (free(port, p.protocol)) p.published_port = port;
        }
        mine.emplace(p.published_port, p.protocol);
    }
    return out;
}

bool same_name(const Service& s, std::string_view name) {
    return model::to_lower(s.spec.name) == model::to_lower(name);
}

}  // namespace

// ---- tasks -----------------------------------------------------------------------------------

Result<std::unique_ptr<TaskRegistry>> TaskRegistry::load(store::Store& store,
                                                         VersionCounter& counter) {
    std::unique_ptr<TaskRegistry> reg(new TaskRegistry(
        store, store::Table::tasks, counter,
        [](const Task& t) { return json::serialize(model::to_json(t, true)); },
        decode_record<Task, model::task_from_json>));
    if (auto r = reg->ObjectTable::load(); !r) return std::move(r).error().context("load tasks");
    return reg;
}

Result<Task> TaskRegistry::find(std::string_view id) const {
    return read([&](const Map& m) {
        return lookup<Task>(m, id, "task", [](const Task&) { return std::string_view{}; });
    });
}

// ---- services --------------------------------------------------------------------------------

ServiceRegistry::ServiceRegistry(store::Store& store, VersionCounter& counter,
                                 SecretRegistry& secrets, ConfigRegistry& configs)
    : table_(
          store, store::Table::services, counter,
          [](const Service& s) { return json::serialize(model::to_json(s)); },
          decode_record<Service, model::service_from_json>),
      secrets_(secrets),
      configs_(configs) {}

ServiceRegistry::~ServiceRegistry() {
    secrets_.set_users({});
    configs_.set_users({});
}

Result<std::unique_ptr<ServiceRegistry>> ServiceRegistry::load(store::Store& store,
                                                               VersionCounter& counter,
                                                               SecretRegistry& secrets,
                                                               ConfigRegistry& configs) {
    std::unique_ptr<ServiceRegistry> reg(new ServiceRegistry(store, counter, secrets, configs));
    if (auto r = reg->table_.load(); !r) return std::move(r).error().context("load services");
    secrets.set_users([r = reg.get()](const std::string& id) { return r->users_of(id); });
    configs.set_users([r = reg.get()](const std::string& id) { return r->users_of(id); });
    log::info("services", "loaded {} services", reg->table_.list().size());
    return reg;
}

std::vector<std::string> ServiceRegistry::users_of(const std::string& object_id) const {
    std::set<std::string> names;
    {
        auto pending = pending_.read();
        for (const auto& [name, id] : *pending)
            if (id == object_id) names.insert(name);
    }
    table_.read([&](const auto& items) {
        for (const auto& [id, s] : items) {
            const auto& c = s.spec.task.container;
            for (const auto& ref : c.secrets)
                if (ref.secret_id == object_id) names.insert(s.spec.name);
            for (const auto& ref : c.configs)
                if (ref.config_id == object_id) names.insert(s.spec.name);
            if (c.registry_auth && c.registry_auth->secret_id == object_id)
                names.insert(s.spec.name);
        }
        return 0;
    });
    return {names.begin(), names.end()};
}

Result<void> ServiceRegistry::reserve_secrets(const std::string& service_name,
                                              const model::ServiceSpec& spec) {
    using model::ConfigReference;
    using model::SecretReference;
    const auto& c = spec.task.container;
    auto secret_ids = ids_of(c.secrets, &SecretReference::secret_id);
    if (c.registry_auth) secret_ids.push_back(c.registry_auth->secret_id);
    auto config_ids = ids_of(c.configs, &ConfigReference::config_id);
    {
        auto pending = pending_.lock();
        for (const auto& id : secret_ids) pending->emplace(service_name, id);
        for (const auto& id : config_ids) pending->emplace(service_name, id);
    }
    // The order matters: the references are visible to a concurrent removal before the objects
    // are checked, and a removal marks its object before it asks for users. Either the removal
    // sees this service, or this check sees the object as gone.
    auto missing_secrets = secrets_.unavailable(secret_ids);
    auto missing_configs = configs_.unavailable(config_ids);
    if (missing_secrets.empty() && missing_configs.empty()) {
        // A reference that names its object names the one its id is: what tasks get and what
        // inspect shows must agree (a removal checks users by id).
        auto misnamed = [&](std::string_view kind, const auto& registry, const std::string& id,
                            const std::string& name) -> std::optional<Error> {
            if (name.empty()) return std::nullopt;
            auto found = registry.find(id);
            if (!found || found->spec.name == name) return std::nullopt;
            return make_error(Errc::invalid_argument,
                              fmt::format("{} reference {}: {}ID {} is the {} {}, not {}", kind,
                                          name, kind == "secret" ? "Secret" : "Config", id, kind,
                                          found->spec.name, name));
        };
        std::optional<Error> wrong;
        for (const auto& ref : c.secrets)
            if (!wrong) wrong = misnamed("secret", secrets_, ref.secret_id, ref.secret_name);
        if (!wrong && c.registry_auth)
            wrong = misnamed("secret", secrets_, c.registry_auth->secret_id,
                             c.registry_auth->secret_name);
        for (const auto& ref : c.configs)
            if (!wrong) wrong = misnamed("config", configs_, ref.config_id, ref.config_name);
        if (wrong) {
            release_secrets(service_name);
            return *wrong;
        }
        // A pin must name a version the secret keeps.
        for (const auto& ref : c.secrets) {
            if (ref.pinned_version == 0 || secrets_.has_version(ref.secret_id, ref.pinned_version))
                continue;
            release_secrets(service_name);
            return make_error(Errc::not_found, fmt::format("secret {} has no version {}",
                                                           ref.secret_name, ref.pinned_version));
        }
        return {};
    }
    release_secrets(service_name);
    if (c.registry_auth && std::find(missing_secrets.begin(), missing_secrets.end(),
                                     c.registry_auth->secret_id) != missing_secrets.end())
        return make_error(
            Errc::invalid_argument,
            fmt::format("secret not found: {} (the registry credentials)",
                        c.registry_auth->secret_name.empty() ? c.registry_auth->secret_id
                                                             : c.registry_auth->secret_name));
    if (!missing_secrets.empty())
        return not_found_error("secret", c.secrets, missing_secrets, &SecretReference::secret_id,
                               &SecretReference::secret_name);
    return not_found_error("config", c.configs, missing_configs, &ConfigReference::config_id,
                           &ConfigReference::config_name);
}

void ServiceRegistry::release_secrets(const std::string& service_name) {
    pending_.lock()->erase(service_name);
}

Result<Service> ServiceRegistry::create(model::ServiceSpec spec) {
    if (auto r = model::validate_service_spec(spec); !r) return std::move(r).error();
    std::string name = spec.name;
    bool reserved = false;
    auto written = table_.commit([&](const auto& items) -> Result<ObjectTable<Service>::Changes> {
        for (const auto& [id, s] : items)
            if (same_name(s, spec.name))
                return make_error(
                    Errc::already_exists,
                    fmt::format("name conflicts with an existing object: service {} already exists",
                                spec.name));
        if (auto r = reserve_secrets(name, spec); !r) return std::move(r).error();
        auto ports = allocate_ports(items, "", spec, {});
        if (!ports) {
            release_secrets(name);
            return std::move(ports).error();
        }
        reserved = true;
        auto now = model::Timestamp::now();
        Service s{{crypto::random_id(), 0, now, now}, std::move(spec), std::nullopt, std::nullopt};
        s.endpoint_ports = std::move(*ports);
        return ObjectTable<Service>::Changes{{std::move(s)}, {}};
    });
    if (reserved) release_secrets(name);
    if (!written) return std::move(written).error();
    return written->front();
}

Result<Service> ServiceRegistry::update(std::string_view key, std::uint64_t version,
                                        model::ServiceSpec spec) {
    if (auto r = model::validate_service_spec(spec); !r) return std::move(r).error();
    std::string name = spec.name;
    bool reserved = false;
    auto written = table_.commit([&](const auto& items) -> Result<ObjectTable<Service>::Changes> {
        auto current = lookup<Service>(
            items, key, "service", [](const Service& s) { return std::string_view(s.spec.name); });
        if (!current) return std::move(current).error();
        if (current->meta.version != version)
            return make_error(Errc::conflict, "update out of sequence");
        if (current->spec.name != spec.name)
            return make_error(Errc::invalid_argument, "renaming services is not supported");
        if (auto r = reserve_secrets(name, spec); !r) return std::move(r).error();
        reserved = true;
        auto ports = allocate_ports(items, current->meta.id, spec, current->endpoint_ports);
        if (!ports) return std::move(ports).error();
        Service next = std::move(*current);
        next.endpoint_ports = std::move(*ports);
        // A new spec starts a new update (also after a paused one), as in Swarm.
        next.update_status.reset();
        next.previous = std::move(next.spec);
        next.spec = std::move(spec);
        next.meta.updated = model::Timestamp::now();
        return ObjectTable<Service>::Changes{{std::move(next)}, {}};
    });
    if (reserved) release_secrets(name);
    if (!written) return std::move(written).error();
    return written->front();
}

Result<Service> ServiceRegistry::roll_back(std::string_view key, std::uint64_t version,
                                           model::Timestamp now) {
    std::string name;
    auto written = table_.commit([&](const auto& items) -> Result<ObjectTable<Service>::Changes> {
        auto current = lookup<Service>(
            items, key, "service", [](const Service& s) { return std::string_view(s.spec.name); });
        if (!current) return std::move(current).error();
        if (current->meta.version != version)
            return make_error(Errc::conflict, "update out of sequence");
        if (!current->previous)
            return make_error(
                Errc::invalid_argument,
                fmt::format("service {} does not have a previous spec", current->meta.id));
        // The previous spec is not protected from secret removal (as in Swarm, only the
        // current one is): a rollback to a spec whose secrets are gone is refused.
        name = current->spec.name;
        if (auto r = reserve_secrets(name, *current->previous); !r) {
            name.clear();
            return std::move(r).error();
        }
        auto ports =
            allocate_ports(items, current->meta.id, *current->previous, current->endpoint_ports);
        if (!ports) return std::move(ports).error();
        Service next = std::move(*current);
        next.endpoint_ports = std::move(*ports);
        std::swap(next.spec, *next.previous);
        next.update_status = model::UpdateStatus{model::UpdateState::rollback_started, now,
                                                 std::nullopt, "manually requested rollback"};
        next.meta.updated = now;
        return ObjectTable<Service>::Changes{{std::move(next)}, {}};
    });
    if (!name.empty()) release_secrets(name);
    if (!written) return std::move(written).error();
    return written->front();
}

Result<Service> ServiceRegistry::remove(std::string_view key) {
    std::optional<Service> removed;
    auto written = table_.commit([&](const auto& items) -> Result<ObjectTable<Service>::Changes> {
        auto current = lookup<Service>(
            items, key, "service", [](const Service& s) { return std::string_view(s.spec.name); });
        if (!current) return std::move(current).error();
        removed = *current;
        return ObjectTable<Service>::Changes{{}, {current->meta.id}};
    });
    if (!written) return std::move(written).error();
    return std::move(*removed);
}

Result<Service> ServiceRegistry::find(std::string_view key) const {
    return table_.read([&](const auto& items) {
        return lookup<Service>(items, key, "service",
                               [](const Service& s) { return std::string_view(s.spec.name); });
    });
}

Result<void> ServiceRegistry::set_update_status(const std::string& id,
                                                std::optional<model::UpdateStatus> status,
                                                bool roll_back) {
    std::string name;
    auto written = table_.commit([&](const auto& items) -> Result<ObjectTable<Service>::Changes> {
        auto it = items.find(id);
        if (it == items.end()) return ObjectTable<Service>::Changes{};
        Service next = it->second;
        next.update_status = std::move(status);
        if (roll_back && next.previous) {
            // The previous spec is not protected from secret removal (as in Swarm, only the
            // current one is): a rollback to a spec whose secrets are gone is refused.
            name = next.spec.name;
            if (auto r = reserve_secrets(name, *next.previous); !r) return std::move(r).error();
            auto ports = allocate_ports(items, next.meta.id, *next.previous, next.endpoint_ports);
            if (!ports) return std::move(ports).error();
            next.endpoint_ports = std::move(*ports);
            next.spec = std::move(*next.previous);
            next.previous.reset();
        }
        next.meta.updated = model::Timestamp::now();
        return ObjectTable<Service>::Changes{{std::move(next)}, {}};
    });
    if (!name.empty()) release_secrets(name);
    if (!written) return std::move(written).error();
    return {};
}

Result<void> ServiceRegistry::set_virtual_ips(const std::string& id,
                                              std::vector<model::VirtualIp> vips) {
    auto written = table_.commit([&](const auto& items) -> Result<ObjectTable<Service>::Changes> {
        auto it = items.find(id);
        if (it == items.end() || it->second.virtual_ips == vips)
            return ObjectTable<Service>::Changes{};
        Service next = it->second;
        next.virtual_ips = std::move(vips);
        return ObjectTable<Service>::Changes{{std::move(next)}, {}};
    });
    if (!written) return std::move(written).error();
    return {};
}

}  // namespace coffer::manager
