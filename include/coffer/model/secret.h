// A secret's metadata: everything but its bytes, which travel separately in secure memory.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "coffer/base/error.h"
#include "coffer/model/time.h"

namespace coffer::model {

using Labels = std::map<std::string, std::string>;

struct ObjectMeta {
    std::string id;
    std::uint64_t version = 0;  // Version.Index, for optimistic concurrency
    Timestamp created;
    Timestamp updated;
};

struct SecretSpec {
    std::string name;
    Labels labels;
};

// One of a secret's versions: numbered from 1 under the secret's ID and name. Its bytes are in
// the store (never in this record), and no digest of them is kept anywhere.
struct SecretVersion {
    std::uint64_t number = 1;
    Timestamp created;
    bool operator==(const SecretVersion&) const = default;
};

struct Secret {
    ObjectMeta meta;
    SecretSpec spec;
    // The versions kept, oldest first; empty only for a config (a secret has at least one).
    std::vector<SecretVersion> versions;
    std::uint64_t current = 1;  // the version a reference without a pin follows
};

// The newest N versions of a secret are kept by default (the cluster setting's default).
inline constexpr std::uint64_t default_secret_versions_kept = 5;
inline constexpr std::uint64_t max_secret_versions_kept = 1000;

// A config is a named object with data, as a secret is, but its bytes are not secret: inspect
// and list show them (Spec.Data), so the manager keeps them in its index beside the metadata.
struct Config {
    ObjectMeta meta;
    SecretSpec spec;
    std::string data;
};

// Docker's limits: 1 to 511,999 bytes for a secret, 1 to 1,023,999 for a config.
inline constexpr std::size_t max_secret_size = 500 * 1024 - 1;
inline constexpr std::size_t max_config_size = 1000 * 1024 - 1;

// 1–64 characters, [a-zA-Z0-9] at both ends and [a-zA-Z0-9-_.] between (Docker's rule and words).
Result<void> validate_object_name(std::string_view name);
Result<void> validate_secret_size(std::size_t size);
// "<kind> data must be larger than 0 and less than <max + 1> bytes" (Docker's words).
Result<void> validate_data_size(std::string_view kind, std::size_t size, std::size_t max);
// Label keys must be non-empty; keys and values at most 4 KiB each, no NUL bytes.
Result<void> validate_labels(const Labels& labels);

std::string to_lower(std::string_view s);

}  // namespace coffer::model
