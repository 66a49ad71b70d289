// Key management records and unlock keys.
//
// The meta table holds the DEKs as records "dek/<id>" (32 key bytes) and "dek/current" (the id,
// in decimal), each sealed under the KEK (key id 0) with the associated data of any record,
// "meta\0<key>". The prefix "dek/" is reserved: callers of the store can neither read nor
// write it.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "coffer/base/error.h"
#include "coffer/crypto/aead.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/store/store.h"

namespace coffer::store::detail {

inline constexpr std::string_view key_record_prefix = "dek/";
inline constexpr std::uint32_t kek_id = 0;
// On a store shared by several managers (etcd), after the first rotation of its unlock key: the
// current unlock key, sealed under the current DEK, so that a manager standing by that holds the
// DEKs (it was given the previous key) follows the rotation, as a running Swarm manager follows
// one through raft. It is not a DEK record: read_key_records leaves it out, and so do backups.
// Whoever holds only a previous key cannot open it: the DEKs are sealed under the new KEK.
inline constexpr std::string_view unlock_key_record = "dek/unlock-key";

// "<table>\0<key>": what every sealed value is bound to.
std::string record_ad(Table table, std::string_view key);
bool is_key_record(Table table, std::string_view key) noexcept;

// A record id for messages: printable ASCII as is, other bytes as \xNN.
std::string printable_key(std::string_view key);

// The KEK of an autolocked store, derived from its unlock key.
struct UnlockKey {
    crypto::SecureBuffer text;  // "COFFERKEY-1-<base64url of 32 bytes>"
    crypto::Key kek;
};
UnlockKey generate_unlock_key();
// nullopt when text is not an unlock key at all.
std::optional<UnlockKey> parse_unlock_key(std::string_view text);

crypto::Key kek_from_file_bytes(crypto::SecureBuffer bytes);

// The DEKs of a store, opened.
struct Deks {
    std::uint32_t current = 0;
    std::map<std::uint32_t, std::shared_ptr<const crypto::Key>> keys;

    const crypto::Key* find(std::uint32_t id) const noexcept;
    std::uint32_t next_id() const noexcept { return keys.empty() ? 1 : keys.rbegin()->first + 1; }
};

struct KeyRecord {
    std::string key;     // in the meta table
    std::string sealed;  // under the KEK
};

// Opens the key records read from the meta table. Errc::invalid_argument when none opens (the
// KEK is wrong); Errc::internal when some open and others do not, or they do not name a current
// DEK that exists (the store is damaged).
Result<Deks> open_key_records(const crypto::Key& kek, const std::vector<KeyRecord>& records);
// The records for one DEK and for "dek/current".
KeyRecord wrap_dek(const crypto::Key& kek, const crypto::Key& dek);
KeyRecord wrap_current(const crypto::Key& kek, std::uint32_t id);
std::string dek_record_key(std::uint32_t id);
// How many of the records are DEKs (all but "dek/current"); needs no key.
std::size_t count_deks(const std::vector<KeyRecord>& records) noexcept;

// A value as stored: sealed under dek, bound to table and key.
std::string seal_value(const crypto::Key& dek, Table table, std::string_view key,
                       std::span<const std::uint8_t> plaintext);
// Opens a stored value with whichever DEK it names. A value that is malformed, names a DEK the
// store does not have or fails to open is corruption: Errc::internal, naming table and key.
Result<crypto::SecureBuffer> open_value(const Deks& deks, Table table, std::string_view key,
                                        std::string_view sealed);
// As open_value, into scratch (grown when too small); returns the plaintext's length.
Result<std::size_t> open_value_into(const Deks& deks, Table table, std::string_view key,
                                    std::string_view sealed, crypto::SecureBuffer& scratch);

}  // namespace coffer::store::detail
