// The check of an image layer blob from an untrusted registry, made before it is unpacked: the
// blob is the one the manifest names, and no entry of its tar reaches outside the image's rootfs.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "coffer/base/error.h"

namespace coffer::agent {

struct LayerLimits {
    std::uint64_t max_unpacked = 8ull << 30;  // bytes of the uncompressed tar
    std::uint64_t max_entries = 1'000'000;
};

struct LayerFacts {
    std::string diff_id;         // "sha256:<hex>" of the uncompressed tar
    std::uint64_t unpacked = 0;  // bytes of the uncompressed tar
    std::uint64_t entries = 0;
};

// Reads the layer blob from fd (from its current offset to EOF) and checks it as an untrusted
// layer: its sha256 must equal `digest` ("sha256:<hex>") and its size `size` (the manifest's
// descriptor); it is decompressed by media type (OCI tar, tar+gzip, Docker's
// application/vnd.docker.image.rootfs.diff.tar.gzip; anything else, zstd included, refused by
// name); every tar entry is checked. Refused, each with a clear reason naming the entry: a name or
// hard link target that is absolute or has a ".." component; a character or block device node; an
// unknown entry type; a truncated or corrupt archive or compressed stream; more than limits allow.
// Names come from ustar name+prefix, PAX extended headers ('x' path/linkpath, 'g' global) and GNU
// long name/link ('L'/'K'), and every one of them is checked; a leading "./" is fine. Symbolic
// links may point anywhere (they are resolved inside the rootfs later). Returns what was measured.
// The blob is streamed through a fixed buffer. Refusals are Errc::invalid_argument, "layer
// sha256:<12 hex>: <reason>"; a failed read throws SystemError.
Result<LayerFacts> check_layer(int fd, std::string_view media_type, std::string_view digest,
                               std::uint64_t size, const LayerLimits& limits = {});

}  // namespace coffer::agent
