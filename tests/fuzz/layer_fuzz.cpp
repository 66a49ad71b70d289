// Layer blobs as a registry may send them: the bytes, under their own digest, checked as a gzip
// layer and as a plain tar layer.
#include <openssl/evp.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <string>

#include "coffer/agent/layer_check.h"
#include "coffer/base/unique_fd.h"

namespace {

std::string sha256(const std::uint8_t* data, std::size_t size) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (EVP_Digest(data, size, md, &n, EVP_sha256(), nullptr) != 1) __builtin_trap();
    static constexpr char digits[] = "0123456789abcdef";
    std::string out = "sha256:";
    for (unsigned int i = 0; i < n; ++i) {
        out += digits[md[i] >> 4];
        out += digits[md[i] & 0xf];
    }
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    coffer::UniqueFd fd(::memfd_create("layer", MFD_CLOEXEC));
    if (!fd) __builtin_trap();
    for (std::size_t done = 0; done < size;) {
        auto n = ::write(fd.get(), data + done, size - done);
        if (n <= 0) __builtin_trap();
        done += static_cast<std::size_t>(n);
    }
    const auto digest = sha256(data, size);
    const auto prefix = "layer " + digest.substr(0, 19);
    // Small limits keep a run quick and reach the limit checks.
    const coffer::agent::LayerLimits limits{.max_unpacked = 4 << 20, .max_entries = 1000};
    for (std::string_view type : {"application/vnd.oci.image.layer.v1.tar+gzip",
                                  "application/vnd.oci.image.layer.v1.tar"}) {
        if (::lseek(fd.get(), 0, SEEK_SET) != 0) __builtin_trap();
        auto r = coffer::agent::check_layer(fd.get(), type, digest, size, limits);
        if (r) {
            if (r->unpacked > limits.max_unpacked || r->entries > limits.max_entries)
                __builtin_trap();
            if (r->diff_id.size() != digest.size()) __builtin_trap();
        } else if (r.error().code != coffer::Errc::invalid_argument ||
                   !r.error().message.starts_with(prefix)) {
            __builtin_trap();
        }
    }
    return 0;
}
