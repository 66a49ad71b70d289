// Talking to image registries through skopeo: the operator's TLS and insecure settings,
// credentials (a docker config.json) handed over in locked memory, never a file on disk, and
// the registry's own reason when it refuses.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "coffer/base/error.h"
#include "coffer/base/process.h"
#include "coffer/base/unique_fd.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/model/image_ref.h"

namespace coffer::registry {

// How a manager or node reaches registries.
struct Options {
    // <certs_dir>/<host[:port]>/ holds the CA certificates (*.crt) a registry's TLS certificate
    // is checked against, as Docker's certs.d; without one, the system's CAs.
    std::string certs_dir = "/etc/coffer/certs.d";
    // Registries ("host:port") reached over plain HTTP, or TLS without verification. No other.
    std::vector<std::string> insecure;
    std::chrono::seconds timeout{600};     // one skopeo command
    std::uint64_t max_bytes = 8ull << 30;  // the compressed blobs of one image a node pulls
};

// A docker config.json in a memfd whose pages are locked in memory, given to skopeo as its
// standard input (read through /dev/stdin), and wiped when destroyed.
class AuthFile {
  public:
    explicit AuthFile(const crypto::SecureBuffer& config);
    ~AuthFile();
    AuthFile(const AuthFile&) = delete;
    AuthFile& operator=(const AuthFile&) = delete;
    int fd() const noexcept { return fd_.get(); }

  private:
    UniqueFd fd_;
    void* map_ = nullptr;
    std::size_t size_ = 0;
};

// Docker's X-Registry-Auth header (base64url of {"username","password","serveraddress"} or
// {"identitytoken"}) as a config.json for the registry of ref, in secure memory. An empty
// result for a header without credentials; invalid_argument for one that cannot be read.
Result<crypto::SecureBuffer> config_from_header(std::string_view header,
                                                const model::ImageRef& ref);

// "sha256:<hex>" of bytes.
std::string sha256_of(std::string_view bytes);
inline std::string short_digest(std::string_view d) {
    return std::string(d.substr(0, std::min<std::size_t>(d.size(), 19)));
}

// skopeo's flags for ref's registry: --[prefix]authfile=/dev/stdin (with_auth) or
// --[prefix]no-creds, the CA directory, TLS verification.
std::vector<std::string> flags(const Options& o, const model::ImageRef& ref, bool with_auth,
                               std::string_view prefix);
// Runs skopeo with args, bounded by o.timeout, with auth (if any) as its standard input.
CommandResult skopeo(std::vector<std::string> args, const Options& o, const AuthFile* auth);
// What a failed skopeo command means: permission_denied ("pull access denied for <ref>: ...")
// when the registry refused the credentials, else unavailable; the registry's reason either way.
Error failure(const CommandResult& c, const model::ImageRef& ref);

// The raw manifest at transport ("docker://..."), at most 4 MiB, and its digest.
struct Manifest {
    std::string raw;
    std::string digest;
};
Result<Manifest> inspect(const model::ImageRef& ref, const std::string& transport,
                         const AuthFile* auth, const Options& o);

}  // namespace coffer::registry
