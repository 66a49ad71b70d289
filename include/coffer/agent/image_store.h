// The agent's local image store: an OCI layout in its data directory, and a read-only rootfs
// cache unpacked once per manifest digest.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
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
#include "coffer/crypto/secure_buffer.h"
#include "coffer/registry/registry.h"

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

// How a node reaches registries, and how large an image it takes.
using PullOptions = registry::Options;

// Which images ImageStore::prune removes.
struct PruneOptions {
    bool all = false;  // also images imported by hand, not only those pulled from a registry
    // Only images no task has resolved (and nothing pulled) for longer than this; 0: any.
    std::chrono::seconds unused_for{0};
};

class ImageStore {
  public:
    // dir holds oci/ (the layout), rootfs/<hex>/ (the cache), used/<hex> (when each image was
    // last used) and a lock file. Created if missing.
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
    // Removes every name options select whose image in_use(digest) does not claim, then the
    // blobs and unpacked rootfs no remaining name needs; returns the names removed. An image's
    // last use is the last resolve, pull or import of it; one without a record counts as used
    // now (and gets a record), so that no image goes before it had a full period unused.
    Result<std::vector<ImageInfo>> prune(const std::function<bool(std::string_view digest)>& in_use,
                                         const PruneOptions& options);
    // "name[:tag]" (tag defaults to latest), "name[:tag]@sha256:..." (the image pulled with that
    // registry digest, whatever the name now points to) or a manifest digest. Unpacks on first
    // use; records the use (see prune).
    Result<ResolvedImage> resolve(std::string_view ref);

    // Pulls ref from its registry unless the store has it (by its digest when ref names one):
    // the manifest is read first and refused when larger than options allow, the blobs are
    // copied (skopeo) into a staging layout, every layer is checked (digest, size, diff id, no
    // entry that leaves the image, no device node) and only then added to the store; a failure
    // leaves nothing behind. auth: a docker config.json with the registry's credentials, or
    // null; it reaches skopeo through locked memory, never a file on disk. Several callers for
    // one reference share one pull. Errors carry the registry's reason.
    Result<ImageInfo> pull(std::string_view ref, const crypto::SecureBuffer* auth,
                           const PullOptions& options);

    const std::string& dir() const noexcept { return dir_; }

    // "busybox" -> "busybox:latest"; invalid_argument for names the store will not take.
    static Result<std::string> normalize_name(std::string_view name);

  private:
    Result<std::string> digest_of(std::string_view ref) const;
    Result<ImageInfo> pull_once(std::string_view ref, const crypto::SecureBuffer* auth,
                                const PullOptions& options);
    // The local digest of the image pulled with this registry digest, or "".
    std::string by_registry_digest(std::string_view digest) const;
    // Records that the image with this manifest digest was used now (used/<hex>).
    void touch_used(std::string_view digest) const;
    std::string dir_;
    std::string layout_;
    std::mutex mu_;  // serialises unpacking within the process; a file lock across processes
    std::map<std::string, ResolvedImage, std::less<>> resolved_;
    // Pulls under way, by reference: the others wait for the first.
    struct Pull {
        bool done = false;
        Result<ImageInfo> result = make_error(Errc::internal, "pull under way");
    };
    std::mutex pulls_mu_;
    std::condition_variable pulls_cv_;
    std::map<std::string, std::shared_ptr<Pull>, std::less<>> pulls_;
};

}  // namespace coffer::agent
