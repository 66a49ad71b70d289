#include "backup_format.h"

#include <algorithm>

#include "keys.h"

namespace coffer::store::detail {
namespace {

enum Tag : std::uint8_t { key_record_tag = 1, table_tag = 2, record_tag = 3, end_tag = 4 };

constexpr std::size_t flush_at = 1 << 20;
constexpr std::string_view mac_context = "coffer backup mac v1";
constexpr std::string_view dek_prefix = "dek/";

void put_be(std::string& out, std::uint64_t value, int bytes) {
    for (int i = bytes - 1; i >= 0; --i) out.push_back(static_cast<char>(value >> (8 * i)));
}

std::span<const std::uint8_t> bytes_of(std::string_view s) {
    return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

// Reads the file front to back; every read checks that the bytes are there.
class Reader {
  public:
    explicit Reader(std::span<const std::uint8_t> file) : file_(file) {}

    std::size_t offset() const noexcept { return pos_; }
    std::size_t left() const noexcept { return file_.size() - pos_; }

    std::optional<std::uint64_t> be(std::size_t bytes) {
        if (left() < bytes) return std::nullopt;
        std::uint64_t v = 0;
        for (std::size_t i = 0; i < bytes; ++i) v = (v << 8) | file_[pos_ + i];
        pos_ += bytes;
        return v;
    }
    std::optional<std::string_view> bytes(std::size_t n) {
        if (left() < n) return std::nullopt;
        std::string_view v(reinterpret_cast<const char*>(file_.data() + pos_), n);
        pos_ += n;
        return v;
    }

  private:
    std::span<const std::uint8_t> file_;
    std::size_t pos_ = 0;
};

Error bad(std::size_t offset, std::string_view what) {
    return make_error(Errc::invalid_argument,
                      fmt::format("not a valid coffer backup: {} (at byte {})", what, offset));
}

Error truncated(std::size_t offset) {
    return bad(offset, "the file ends early (truncated?)");
}

std::optional<Table> table_named(std::string_view name) {
    for (Table t : all_tables)
        if (table_name(t) == name) return t;
    return std::nullopt;
}

std::size_t table_index(Table t) {
    return static_cast<std::size_t>(std::find(std::begin(all_tables), std::end(all_tables), t) -
                                    std::begin(all_tables));
}

// A key and a sealed value, as a key record and a record are laid out.
Result<BackupRecord> read_pair(Reader& in, Table table) {
    auto at = in.offset();
    auto key_len = in.be(2);
    if (!key_len) return truncated(at);
    if (*key_len == 0 || *key_len > backup_max_key)
        return bad(at, fmt::format("a record key of {} bytes (1 to {} allowed)", *key_len,
                                   backup_max_key));
    auto key = in.bytes(*key_len);
    if (!key) return truncated(at);
    at = in.offset();
    auto value_len = in.be(4);
    if (!value_len) return truncated(at);
    if (*value_len < crypto::sealed_overhead || *value_len > backup_max_value)
        return bad(at, fmt::format("a sealed value of {} bytes ({} to {} allowed)", *value_len,
                                   crypto::sealed_overhead, backup_max_value));
    auto value = in.bytes(*value_len);
    if (!value) return truncated(at);
    return BackupRecord{table, *key, *value};
}

}  // namespace

crypto::SecureBuffer backup_mac_key(const crypto::Key& kek) {
    return crypto::derive_key(kek.bytes.span(), mac_context);
}

bool backup_mac_matches(const crypto::SecureBuffer& key,
                        std::span<const std::uint8_t> authenticated,
                        std::span<const std::uint8_t> mac) {
    if (mac.size() != backup_mac_bytes) return false;
    std::uint8_t computed[backup_mac_bytes];
    crypto_generichash(computed, sizeof computed, authenticated.data(), authenticated.size(),
                       key.data(), key.size());
    bool same = ::sodium_memcmp(computed, mac.data(), sizeof computed) == 0;
    ::sodium_memzero(computed, sizeof computed);
    return same;
}

BackupWriter::BackupWriter(const BackupSink& sink, const crypto::SecureBuffer& mac_key,
                           BackupKek kek, std::int64_t created)
    : sink_(sink) {
    crypto_generichash_init(&mac_, mac_key.data(), mac_key.size(), backup_mac_bytes);
    buffer_.reserve(flush_at + (64 << 10));
    buffer_.append(backup_magic);
    put_be(buffer_, backup_version, 2);
    buffer_.push_back(static_cast<char>(kek));
    buffer_.push_back(0);
    put_be(buffer_, static_cast<std::uint64_t>(created), 8);
}

BackupWriter::~BackupWriter() {
    ::sodium_memzero(&mac_, sizeof mac_);
}

Result<void> BackupWriter::key_record(std::string_view key, std::string_view sealed) {
    return entry(key_record_tag, key, sealed);
}

Result<void> BackupWriter::table(Table table) {
    auto name = table_name(table);
    buffer_.push_back(static_cast<char>(table_tag));
    buffer_.push_back(static_cast<char>(name.size()));
    buffer_.append(name);
    return flush(false);
}

Result<void> BackupWriter::record(std::string_view key, std::string_view sealed) {
    return entry(record_tag, key, sealed);
}

Result<void> BackupWriter::entry(std::uint8_t tag, std::string_view key, std::string_view sealed) {
    // What a reader would refuse is refused here, so that no backup is written that cannot be
    // restored.
    if (key.empty() || key.size() > backup_max_key || sealed.size() < crypto::sealed_overhead ||
        sealed.size() > backup_max_value)
        return make_error(Errc::internal,
                          fmt::format("a record of {} key bytes and {} value bytes cannot be "
                                      "backed up",
                                      key.size(), sealed.size()));
    buffer_.push_back(static_cast<char>(tag));
    put_be(buffer_, key.size(), 2);
    buffer_.append(key);
    put_be(buffer_, sealed.size(), 4);
    buffer_.append(sealed);
    ++stats_.records;
    return flush(false);
}

Result<void> BackupWriter::flush(bool force) {
    if (buffer_.empty() || (!force && buffer_.size() < flush_at)) return {};
    auto bytes = bytes_of(buffer_);
    crypto_generichash_update(&mac_, bytes.data(), bytes.size());
    if (auto r = sink_(bytes); !r) return r;
    stats_.bytes += bytes.size();
    buffer_.clear();
    return {};
}

Result<BackupStats> BackupWriter::finish() {
    buffer_.push_back(static_cast<char>(end_tag));
    put_be(buffer_, stats_.records, 8);
    if (auto r = flush(true); !r) return std::move(r).error();
    std::uint8_t mac[backup_mac_bytes];
    crypto_generichash_final(&mac_, mac, sizeof mac);
    if (auto r = sink_({mac, sizeof mac}); !r) return std::move(r).error();
    stats_.bytes += sizeof mac;
    return stats_;
}

}  // namespace coffer::store::detail

namespace coffer::store {

Result<ParsedBackup> parse_backup(std::span<const std::uint8_t> file) {
    using namespace detail;
    Reader in(file);
    ParsedBackup out;
    auto magic = in.bytes(backup_magic.size());
    if (!magic || *magic != backup_magic) return bad(0, "it does not begin with COFFERBK");
    auto version = in.be(2);
    if (!version) return truncated(in.offset());
    if (*version != backup_version)
        return bad(8, fmt::format("format version {}, and this coffer reads version {} (written "
                                  "by a newer coffer?)",
                                  *version, backup_version));
    out.version = static_cast<std::uint16_t>(*version);
    auto kek = in.be(1), reserved = in.be(1);
    if (!kek || !reserved) return truncated(in.offset());
    if (*kek != static_cast<std::uint8_t>(BackupKek::file) &&
        *kek != static_cast<std::uint8_t>(BackupKek::autolock))
        return bad(10, fmt::format("unknown KEK mode {}", *kek));
    if (*reserved != 0) return bad(11, "a reserved byte is not 0");
    out.kek = static_cast<BackupKek>(*kek);
    auto created = in.be(8);
    if (!created) return truncated(in.offset());
    out.created = static_cast<std::int64_t>(*created);

    std::optional<Table> table;  // the table whose records follow
    std::optional<std::size_t> last_table;
    std::string_view last_key;
    bool any_key = false;
    for (;;) {
        auto at = in.offset();
        auto tag = in.be(1);
        if (!tag) return truncated(at);
        if (*tag == key_record_tag) {
            if (table) return bad(at, "a key record after the tables began");
            auto r = read_pair(in, Table::meta);
            if (!r) return std::move(r).error();
            if (!r->key.starts_with(dek_prefix)) return bad(at, "a key record not named dek/...");
            if (any_key && r->key <= last_key) return bad(at, "key records out of order");
            last_key = r->key;
            any_key = true;
            out.key_records.push_back(*r);
        } else if (*tag == table_tag) {
            auto len = in.be(1);
            if (!len) return truncated(at);
            auto name = in.bytes(*len);
            if (!name) return truncated(at);
            auto t = table_named(*name);
            if (!t)
                return bad(at, fmt::format("unknown table \"{}\" (written by a newer coffer?)",
                                           printable_key(*name)));
            auto index = table_index(*t);
            if (last_table && index <= *last_table)
                return bad(at, fmt::format("table {} repeated or out of order", *name));
            table = t;
            last_table = index;
            any_key = false;
        } else if (*tag == record_tag) {
            if (!table) return bad(at, "a record before any table");
            auto r = read_pair(in, *table);
            if (!r) return std::move(r).error();
            if (*table == Table::meta && r->key.starts_with(dek_prefix))
                return bad(at, "a key record among the meta table's records");
            if (any_key && r->key <= last_key)
                return bad(
                    at, fmt::format("records of {} out of order or repeated", table_name(*table)));
            last_key = r->key;
            any_key = true;
            out.records.push_back(*r);
        } else if (*tag == end_tag) {
            auto count = in.be(8);
            if (!count) return truncated(at);
            if (*count != out.key_records.size() + out.records.size())
                return bad(at, fmt::format("the end says {} records, the file holds {}", *count,
                                           out.key_records.size() + out.records.size()));
            break;
        } else {
            return bad(at, fmt::format("unknown entry type {}", *tag));
        }
    }
    if (out.key_records.empty()) return bad(backup_header_bytes, "no data encryption keys");
    out.authenticated = file.first(in.offset());
    if (in.left() < backup_mac_bytes) return truncated(in.offset());
    if (in.left() > backup_mac_bytes)
        return bad(in.offset() + backup_mac_bytes, "bytes after the MAC");
    out.mac = file.subspan(in.offset());
    return out;
}

}  // namespace coffer::store
