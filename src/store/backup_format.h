// Writing the backup file format (include/coffer/store/backup.h describes it; parse_backup reads
// it). The writer streams: entries go to the sink in chunks while the MAC is computed over them.
#pragma once

#include <sodium.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "coffer/crypto/aead.h"
#include "coffer/store/backup.h"
#include "coffer/store/store.h"

namespace coffer::store::detail {

// The backup MAC's key: derived from the KEK, so only who holds the KEK can make or check one.
crypto::SecureBuffer backup_mac_key(const crypto::Key& kek);

// Whether mac is the MAC of authenticated under key (constant time).
bool backup_mac_matches(const crypto::SecureBuffer& key,
                        std::span<const std::uint8_t> authenticated,
                        std::span<const std::uint8_t> mac);

class BackupWriter {
  public:
    // sink and mac_key are borrowed for the writer's life.
    BackupWriter(const BackupSink& sink, const crypto::SecureBuffer& mac_key, BackupKek kek,
                 std::int64_t created);
    ~BackupWriter();
    BackupWriter(const BackupWriter&) = delete;
    BackupWriter& operator=(const BackupWriter&) = delete;

    Result<void> key_record(std::string_view key, std::string_view sealed);
    Result<void> table(Table table);
    Result<void> record(std::string_view key, std::string_view sealed);
    // The end entry and the MAC; nothing may be added after.
    Result<BackupStats> finish();

  private:
    Result<void> entry(std::uint8_t tag, std::string_view key, std::string_view sealed);
    // Hands what is buffered to the MAC and the sink once it passes flush_at (always when force).
    Result<void> flush(bool force);

    const BackupSink& sink_;
    crypto_generichash_state mac_{};
    std::string buffer_;
    BackupStats stats_;
};

}  // namespace coffer::store::detail
