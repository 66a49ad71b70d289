#include "api_images.h"

#include <boost/json.hpp>

#include <future>

#include "coffer/base/log.h"
#include "coffer/manager/cluster.h"
#include "coffer/model/image_ref.h"
#include "coffer/model/service.h"
#include "coffer/registry/registry.h"

namespace coffer::manager {

namespace json = boost::json;
using net::Request;
using net::Response;

namespace {

// "registry-auth.<service>", within the 64 characters of a secret name: a long service name is
// cut and ends with a digest of the whole, so that two long names never meet.
std::string registry_auth_secret_name(const std::string& service) {
    std::string name = "registry-auth." + service;
    if (name.size() <= 64) return name;
    return fmt::format("registry-auth.{}.{}", service.substr(0, 40),
                       registry::sha256_of(service).substr(7, 8));
}

json::object* object_at(json::object& o, std::string_view key) {
    auto* v = o.if_contains(key);
    return v != nullptr && v->is_object() ? &v->as_object() : nullptr;
}

std::string string_at(const json::object& o, std::string_view key) {
    auto* v = o.if_contains(key);
    return v != nullptr && v->is_string() ? std::string(v->as_string()) : std::string();
}

// The service's registry credentials as its spec names them: {"SecretID","SecretName"}.
std::optional<json::object> auth_reference(const model::ServiceSpec& spec) {
    const auto& a = spec.task.container.registry_auth;
    if (!a) return std::nullopt;
    return json::object{{"SecretID", a->secret_id}, {"SecretName", a->secret_name}};
}

// The request's X-Registry-Auth as a config.json for ref's registry (empty: none given).
Result<crypto::SecureBuffer> request_config(const Request& r, const model::ImageRef& ref) {
    return registry::config_from_header(
        std::string_view(reinterpret_cast<const char*>(r.registry_auth.data()),
                         r.registry_auth.size()),
        ref);
}

}  // namespace

Result<void> RegistryStep::apply(json::object& spec, const model::Service* current,
                                 std::vector<std::string>& warnings) {
    auto* tt = object_at(spec, "TaskTemplate");
    auto* cs = tt != nullptr ? object_at(*tt, "ContainerSpec") : nullptr;
    if (cs == nullptr) return {};
    const std::string image = string_at(*cs, "Image");
    auto* secrets = cluster_.secrets();
    if (secrets == nullptr) return make_error(Errc::unavailable, "the cluster is locked");

    // 1. The credentials the request brings.
    if (!request_.registry_auth.empty()) {
        auto ref = model::parse_image_ref(image);
        if (!ref)
            return make_error(Errc::invalid_argument,
                              "X-Registry-Auth needs an image reference: " + ref.error().message);
        auto config = request_config(request_, *ref);
        if (!config) return std::move(config).error();
        if (!config->empty()) {
            const std::string service = string_at(spec, "Name");
            const std::string name = registry_auth_secret_name(service);
            if (auto existing = secrets->find(name); existing && existing->spec.name == name) {
                auto owner = existing->spec.labels.find(std::string(registry_auth_label));
                if (owner == existing->spec.labels.end() || owner->second != service)
                    return make_error(
                        Errc::conflict,
                        fmt::format("secret {} exists and does not hold the registry credentials "
                                    "of service {}: remove or rename it",
                                    name, service));
                auto before = existing->current;
                auto rotated = secrets->rotate(existing->meta.id, std::move(*config), true);
                if (!rotated) return std::move(rotated).error();
                if (rotated->changed) {
                    rotated_ = existing->meta.id;
                    rotated_from_ = before;
                }
                (*cs)["CofferRegistryAuth"] =
                    json::object{{"SecretID", existing->meta.id}, {"SecretName", name}};
            } else {
                model::SecretSpec s{name, {{std::string(registry_auth_label), service}}};
                std::promise<Result<model::Secret>> made;
                auto done = made.get_future();
                secrets->create(std::move(s), std::move(*config),
                                [&made](Result<model::Secret> o) { made.set_value(std::move(o)); });
                auto o = done.get();
                if (!o) return std::move(o).error();
                created_ = o->meta.id;
                log::info("api", "registry credentials of service {} kept as secret {}", service,
                          name);
                (*cs)["CofferRegistryAuth"] =
                    json::object{{"SecretID", o->meta.id}, {"SecretName", name}};
            }
        }
    }

    // 2. An update keeps the service's credentials unless it names others or removes them.
    if (auto* given = cs->if_contains("CofferRegistryAuth"); given == nullptr) {
        if (current != nullptr) {
            auto from = request_.param("registryAuthFrom");
            if (!from.empty() && from != "spec" && from != "previous-spec")
                return make_error(Errc::invalid_argument,
                                  fmt::format("invalid registryAuthFrom value '{}': use spec or "
                                              "previous-spec",
                                              from));
            const model::ServiceSpec* source = &current->spec;
            if (from == "previous-spec") {
                if (!current->previous)
                    return make_error(Errc::invalid_argument,
                                      "service has no previous spec to take the registry "
                                      "credentials from");
                source = &*current->previous;
            }
            if (auto ref = auth_reference(*source)) (*cs)["CofferRegistryAuth"] = std::move(*ref);
        }
    } else if (given->is_null()) {
        cs->erase("CofferRegistryAuth");
    }

    // 3. The tag resolved to a digest.
    auto mode = request_.param("resolveImage");
    if (mode.empty() || mode == "never") return {};
    if (mode != "always" && mode != "changed")
        return make_error(Errc::invalid_argument,
                          fmt::format("invalid resolveImage value '{}': use always, changed or "
                                      "never",
                                      mode));
    auto ref = model::parse_image_ref(image);
    if (!ref) return {};  // the spec's own checks name it
    if (!ref->digest.empty()) return {};
    // An update that sends the image back as it is keeps it, with the digest it was resolved
    // to; one without a digest names the image anew.
    if (mode == "changed" && current != nullptr && current->spec.task.container.image == image)
        return {};
    std::optional<crypto::SecureBuffer> config;
    if (auto* a = object_at(*cs, "CofferRegistryAuth")) {
        auto data = secrets->data(string_at(*a, "SecretID"));
        if (data) config = std::move(*data);
    }
    std::optional<registry::AuthFile> auth;
    if (config && !config->empty()) auth.emplace(*config);
    config.reset();
    auto m = registry::inspect(*ref, ref->transport(), auth ? &*auth : nullptr,
                               cluster_.registry_options());
    if (!m) {
        warnings.push_back(fmt::format(
            "image {} could not be accessed on a registry to record its digest ({}). Each node "
            "will access {} independently, possibly leading to different nodes running "
            "different versions of the image.",
            image, m.error().message, image));
        return {};
    }
    ref->digest = m->digest;
    (*cs)["Image"] = ref->str();
    log::info("api", "image {} resolved to {}", image, registry::short_digest(m->digest));
    return {};
}

void RegistryStep::undo() {
    auto* secrets = cluster_.secrets();
    if (secrets == nullptr) return;
    if (!created_.empty())
        if (auto r = secrets->remove(created_); !r)
            log::warn("api", "registry credentials secret {} not removed: {}", created_,
                      r.error().message);
    if (!rotated_.empty())
        if (auto r = secrets->rollback(rotated_, rotated_from_); !r)
            log::warn("api", "registry credentials secret {} not rolled back: {}", rotated_,
                      r.error().message);
    created_.clear();
    rotated_.clear();
}

void remove_registry_auth(Cluster& cluster, const model::Service& removed) {
    const auto& a = removed.spec.task.container.registry_auth;
    auto* secrets = cluster.secrets();
    if (!a || secrets == nullptr) return;
    auto s = secrets->find(a->secret_id);
    if (!s) return;
    auto owner = s->spec.labels.find(std::string(registry_auth_label));
    if (owner == s->spec.labels.end() || owner->second != removed.spec.name) return;
    if (auto r = secrets->remove(s->meta.id); r)
        log::info("api", "registry credentials secret {} removed with service {}", s->spec.name,
                  removed.spec.name);
    else
        log::info("api", "registry credentials secret {} kept: {}", s->spec.name,
                  r.error().message);
}

Response distribution_inspect(Cluster& cluster, const Request& r, const std::string& name) {
    auto ref = model::parse_image_ref(name);
    if (!ref) return Response::error(ref.error());
    auto config = request_config(r, *ref);
    if (!config) return Response::error(config.error());
    std::optional<registry::AuthFile> auth;
    if (!config->empty()) auth.emplace(*config);
    config = crypto::SecureBuffer{};
    auto m = registry::inspect(*ref, ref->transport(), auth ? &*auth : nullptr,
                               cluster.registry_options());
    if (!m) return Response::error(m.error());
    boost::system::error_code ec;
    auto manifest = json::parse(m->raw, ec);
    if (ec || !manifest.is_object())
        return Response::error(make_error(
            Errc::unavailable, fmt::format("{}: the registry's manifest is not JSON", ref->str())));
    const auto& o = manifest.as_object();
    std::string media_type = string_at(o, "mediaType");
    if (media_type.empty())
        media_type = o.contains("manifests") ? "application/vnd.oci.image.index.v1+json"
                                             : "application/vnd.oci.image.manifest.v1+json";
    json::array platforms;
    if (auto* list = o.if_contains("manifests"); list != nullptr && list->is_array())
        for (const auto& e : list->as_array()) {
            if (!e.is_object()) continue;
            auto* p = e.as_object().if_contains("platform");
            if (p == nullptr || !p->is_object()) continue;
            json::object out{{"architecture", string_at(p->as_object(), "architecture")},
                             {"os", string_at(p->as_object(), "os")}};
            if (auto v = string_at(p->as_object(), "variant"); !v.empty()) out["variant"] = v;
            platforms.push_back(std::move(out));
        }
    json::object answer{
        {"Descriptor", json::object{{"mediaType", media_type},
                                    {"digest", m->digest},
                                    {"size", static_cast<std::int64_t>(m->raw.size())}}},
        {"Platforms", std::move(platforms)}};
    return Response::json(200, json::serialize(answer));
}

}  // namespace coffer::manager
