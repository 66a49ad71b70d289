// The data directory: its permissions, the format marker that says how the KEK is kept, and the
// KEK file. Only the KEK file's content is secret.
//
//   <dir>/          0700
//   <dir>/format    {"format":1,"kek":"file"} or {"format":1,"kek":"autolock"}; with the records
//                   in etcd, also "records":"etcd" (then there is no db/)
//   <dir>/kek       32 random bytes, 0600 (kek "file" only)
//   <dir>/db/       RocksDB
//
// Failures that are the directory's state (wrong permissions, no KEK file, not a store) are
// thrown as ErrorException with a message that says what to do; failed syscalls as SystemError.
#pragma once

#include <filesystem>
#include <optional>
#include <span>
#include <string_view>

#include "coffer/base/unique_fd.h"
#include "coffer/crypto/secure_buffer.h"

namespace coffer::store::detail {

enum class KekMode { file, autolock };

struct DirFormat {
    KekMode kek = KekMode::file;
    bool etcd = false;  // the records are in etcd, not in db/
};

std::string_view kek_mode_name(KekMode mode) noexcept;

class DataDir {
  public:
    // Opens dir, creating it 0700 when it does not exist, with its missing parents.
    static DataDir open(const std::filesystem::path& dir);

    const std::filesystem::path& path() const noexcept { return path_; }
    std::filesystem::path db_path() const;

    // What the format marker says; nullopt when there is no marker, that is no store.
    std::optional<DirFormat> format() const;
    // Refuses a store directory that group or others may enter.
    void check_private() const;
    // Readies a directory without a marker for a new store: makes it 0700 and removes what an
    // interrupted initialisation left (kek, temporary files, db/); refuses anything else.
    void prepare_new();
    // Written last when a store is created: until the marker exists, nothing is committed.
    void write_format(DirFormat format);

    crypto::SecureBuffer read_kek() const;
    void write_kek(const crypto::SecureBuffer& kek);

    // Undoes a creation that failed before its marker: removes what prepare_new would (the KEK
    // first), and the directory itself when open() made it. Nothing once the marker exists.
    void discard_new() noexcept;

  private:
    DataDir(std::filesystem::path path, UniqueFd fd, bool created)
        : path_(std::move(path)), fd_(std::move(fd)), created_(created) {}
    // Atomically: a new file holding bytes with mode, or an error if name exists.
    void create_file(std::string_view name, std::span<const std::uint8_t> bytes, unsigned mode);

    std::filesystem::path path_;
    UniqueFd fd_;
    bool created_ = false;  // by open()
};

// A store's creation in a data directory, undone (DataDir::discard_new) unless committed.
class NewStoreGuard {
  public:
    explicit NewStoreGuard(DataDir& dir) : dir_(&dir) {}
    ~NewStoreGuard() {
        if (dir_ != nullptr) dir_->discard_new();
    }
    NewStoreGuard(const NewStoreGuard&) = delete;
    NewStoreGuard& operator=(const NewStoreGuard&) = delete;
    void commit() noexcept { dir_ = nullptr; }

  private:
    DataDir* dir_;
};

}  // namespace coffer::store::detail
