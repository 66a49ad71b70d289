// The annotations of the image store's index entries (its OCI layout's index.json), shared by the
// store and its pulls. Internal to the agent.
#pragma once

#include <string_view>

namespace coffer::agent {

// The image's name in the store ("busybox:latest").
constexpr std::string_view ref_annotation = "org.opencontainers.image.ref.name";
// Set on an image pulled from a registry: the manifest digest the registry served.
constexpr std::string_view registry_digest_annotation = "io.coffer.registry.digest";
// And, when it was chosen from a manifest list, the list's digest.
constexpr std::string_view list_digest_annotation = "io.coffer.registry.list-digest";

}  // namespace coffer::agent
