// Backups of the store: one file holding every record as stored (sealed) at one point in time,
// the DEKs wrapped under the KEK, and a MAC under a key derived from the KEK. The file format is
// the store's, not RocksDB's: any backend that keeps the same sealed records can restore it.
//
//   header   "COFFERBK" | version u16 | kek u8 (1 file, 2 autolock) | 0 u8 | created i64
//   entries  0x01 key record  key_len u16 | key | value_len u32 | value   (meta "dek/...")
//            0x02 table       name_len u8 | name
//            0x03 record      key_len u16 | key | value_len u32 | value   (of the last table)
//            0x04 end         count u64 (key records + records)
//   mac      32 bytes: keyed BLAKE2b-256 of everything before it
//
// Integers are big-endian. Key records come first, in key order; then each table at most once,
// in the order of all_tables, its records in strictly increasing key order. Nothing in the file
// is plaintext: values are sealed as in the store, and the KEK is not in it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "coffer/base/error.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/store/store.h"

namespace coffer::store {

inline constexpr std::string_view backup_magic = "COFFERBK";
inline constexpr std::uint16_t backup_version = 1;
inline constexpr std::size_t backup_header_bytes = 20;
inline constexpr std::size_t backup_mac_bytes = 32;
// Limits a reader enforces (hostile files): record keys are ids, values sealed specs and data.
inline constexpr std::size_t backup_max_key = 4096;
inline constexpr std::size_t backup_max_value = 64u << 20;

enum class BackupKek : std::uint8_t { file = 1, autolock = 2 };

struct BackupRecord {
    Table table;
    std::string_view key;
    std::string_view sealed;
};

// A backup whose structure was checked; views into the bytes parsed. The MAC is not checked
// here: that needs the KEK (restore_backup does it).
struct ParsedBackup {
    std::uint16_t version = 0;
    BackupKek kek = BackupKek::file;
    std::int64_t created = 0;               // unix seconds
    std::vector<BackupRecord> key_records;  // meta "dek/...", sealed under the KEK
    std::vector<BackupRecord> records;      // every other record
    std::span<const std::uint8_t> authenticated;
    std::span<const std::uint8_t> mac;
};

// Errc::invalid_argument with the offset and what is wrong: bad magic, unknown version or KEK
// mode, a length beyond the limits or the file, an unknown table, a table twice or out of
// order, keys out of order or repeated, a DEK record among the tables' records, a wrong count,
// truncation, bytes after the MAC.
Result<ParsedBackup> parse_backup(std::span<const std::uint8_t> file);

struct RestoreOptions {
    std::filesystem::path dir;  // must not exist (its parent must) or be empty
    std::span<const std::uint8_t> backup;
    // The key the backup needs, whichever its header names: the 32 bytes of the KEK file (kek
    // "file"), or the unlock key text "COFFERKEY-1-..." (autolock). Borrowed for the call.
    const crypto::SecureBuffer* key = nullptr;
    // Set: the records go to this etcd prefix, which must hold none (the migration path from
    // the embedded store); the directory gets the marker and the KEK file.
    std::optional<EtcdOptions> etcd;
};

struct RestoreStats {
    BackupKek kek = BackupKek::file;
    std::uint64_t records = 0;
    std::int64_t created = 0;
};

// Creates a store in options.dir from a backup, after checking all of it: its structure, that
// the key opens its DEKs, its MAC, and that every value opens. With kek "file" the key becomes
// the new store's KEK file; with autolock nothing of the key is stored and the store opens
// locked. On any failure nothing is left in dir (a directory it created is removed).
Result<RestoreStats> restore_backup(const RestoreOptions& options);

}  // namespace coffer::store
