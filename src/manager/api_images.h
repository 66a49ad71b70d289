// Images on registries, for the API: a service's pull credentials (Docker's X-Registry-Auth, kept
// as a sealed coffer secret of the service's own), tags resolved to digests, and GET
// /distribution/{name}/json.
#pragma once

#include <boost/json/fwd.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "api_util.h"

namespace coffer::model {
struct Service;
}

namespace coffer::manager {

class Cluster;

// The label that marks a secret as the registry credentials coffer keeps for a service; its
// value is the service's name. Such a secret goes when its service does.
inline constexpr std::string_view registry_auth_label = "io.coffer.registry-auth.service";

// What a service create or update request does about registries, before its spec is stored:
//   - X-Registry-Auth with credentials: they become (or rotate) the secret
//     "registry-auth.<service>" and the spec's ContainerSpec.CofferRegistryAuth names it;
//   - an update whose spec leaves CofferRegistryAuth out keeps the service's (from its spec, or
//     from its previous spec with registryAuthFrom=previous-spec), as Swarm keeps its pull
//     options; "CofferRegistryAuth": null removes them;
//   - ?resolveImage=always|changed|never: the image tag is resolved to a digest on its registry
//     with those credentials (a failure is a warning, as Docker's is, and the tag stays).
// undo() reverses the secret's creation or rotation when the request then fails.
class RegistryStep {
  public:
    RegistryStep(Cluster& cluster, const net::Request& r) : cluster_(cluster), request_(r) {}
    // spec: the request's ServiceSpec, already checked and named; current: the service an
    // update changes.
    Result<void> apply(boost::json::object& spec, const model::Service* current,
                       std::vector<std::string>& warnings);
    void undo();

  private:
    Cluster& cluster_;
    const net::Request& request_;
    std::string created_;             // the secret created for this request
    std::string rotated_;             // the secret rotated for this request,
    std::uint64_t rotated_from_ = 0;  // and its version before
};

// After a service is removed: the registry credentials secret coffer kept for it, if no other
// service uses it.
void remove_registry_auth(Cluster& cluster, const model::Service& removed);

// GET /distribution/{name}/json with the request's X-Registry-Auth: Docker's
// {"Descriptor":{"mediaType","digest","size"},"Platforms":[...]}.
net::Response distribution_inspect(Cluster& cluster, const net::Request& r,
                                   const std::string& name);

}  // namespace coffer::manager
