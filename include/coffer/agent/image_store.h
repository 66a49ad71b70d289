// The agent's local image store: an OCI layout in its data directory, and a read-only rootfs
// cache unpacked once per manifest digest.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "coffer/agent/task.h"
#include "coffer/base/error.h"

namespace coffer::agent {

// What the image says about how to run it (the OCI image config).
struct ImageConfig {
    std::vector<std::string> entrypoint;
    std::vector<std::string> cmd;
    std::vector<std::string> env;
    std::string workdir;
    std::string user;
    std::optional<HealthCheck> healthcheck{};  // Docker's "Healthcheck" (HEALTHCHECK)
    std::string healthcheck_error{};           // why the image's Healthcheck is unreadable
};

struct ImageInfo {
    std::string name;    // "busybox:latest"
    std::string digest;  // manifest digest, "sha256:..."
};

struct ResolvedImage {
    std::string digest;
    std::string rootfs;  // read-only by convention: tasks get an overlay on top
    ImageConfig config;
};

class ImageStore {
  public:
    // dir holds oci/ (the layout), rootfs/<hex>/ (the cache) and a lock file. Created if missing.
    explicit ImageStore(std::string dir);

    // Imports a `docker save` archive, an OCI archive or an OCI layout directory (skopeo).
    // name "" takes the name recorded in the archive; a layout with several tagged images and no
    // name imports them all. Returns what was imported.
    Result<std::vector<ImageInfo>> import(const std::string& source, std::string_view name = {});
    Result<std::vector<ImageInfo>> list() const;
    // Removes the name; the blobs and the unpacked rootfs go when no other name needs them and
    // in_use(digest) says no task runs on them.
    Result<void> remove(std::string_view ref,
                        const std::function<bool(std::string_view digest)>& in_use = {});
    // "name[:tag]" (tag defaults to latest) or a manifest digest. Unpacks on first use.
    Result<ResolvedImage> resolve(std::string_view ref);

    const std::string& dir() const noexcept { return dir_; }

    // "busybox" -> "busybox:latest"; invalid_argument for names the store will not take.
    static Result<std::string> normalize_name(std::string_view name);

  private:
    Result<std::string> digest_of(std::string_view ref) const;
    std::string dir_;
    std::string layout_;
    std::mutex mu_;  // serialises unpacking within the process; a file lock across processes
    std::map<std::string, ResolvedImage, std::less<>> resolved_;
};

}  // namespace coffer::agent
