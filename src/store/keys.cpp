#include "keys.h"

#include <algorithm>
#include <charconv>
#include <cstring>

#include "coffer/crypto/encoding.h"
#include "coffer/crypto/random.h"

namespace coffer::store::detail {
namespace {

constexpr std::string_view unlock_key_prefix = "COFFERKEY-1-";
constexpr std::string_view kek_context = "coffer kek v1";
constexpr std::string_view current_record = "dek/current";

std::span<const std::uint8_t> bytes_of(std::string_view s) {
    return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

std::string_view text_of(const crypto::SecureBuffer& b) {
    return {reinterpret_cast<const char*>(b.data()), b.size()};
}

// A decimal id without sign or leading zeros; 0 is not an id.
std::optional<std::uint32_t> parse_id(std::string_view text) {
    std::uint32_t id = 0;
    if (text.empty() || text[0] == '0') return std::nullopt;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
    if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
    return id;
}

Error damaged(std::string message) {
    return make_error(Errc::internal, "the store's keys are damaged: " + message);
}

}  // namespace

std::string record_ad(Table table, std::string_view key) {
    auto name = table_name(table);
    std::string ad;
    ad.reserve(name.size() + 1 + key.size());
    ad.append(name);
    ad.push_back('\0');
    ad.append(key);
    return ad;
}

bool is_key_record(Table table, std::string_view key) noexcept {
    return table == Table::meta && key.starts_with(key_record_prefix);
}

std::string printable_key(std::string_view key) {
    std::string out;
    for (unsigned char c : key) {
        if (c >= 0x20 && c < 0x7f && c != '\\')
            out.push_back(static_cast<char>(c));
        else
            out += fmt::format("\\x{:02x}", c);
    }
    return out;
}

UnlockKey generate_unlock_key() {
    crypto::SecureBuffer raw(crypto::key_bytes);
    crypto::random_bytes(raw.span());
    auto encoded = crypto::base64url_encode_secure(raw.span());
    crypto::SecureBuffer text(unlock_key_prefix.size() + encoded.size());
    std::memcpy(text.data(), unlock_key_prefix.data(), unlock_key_prefix.size());
    std::memcpy(text.data() + unlock_key_prefix.size(), encoded.data(), encoded.size());
    return UnlockKey{std::move(text),
                     crypto::Key{kek_id, crypto::derive_key(raw.span(), kek_context)}};
}

std::optional<UnlockKey> parse_unlock_key(std::string_view text) {
    // Tolerate what a paste adds around the key.
    auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
    while (!text.empty() && space(text.front())) text.remove_prefix(1);
    while (!text.empty() && space(text.back())) text.remove_suffix(1);
    if (!text.starts_with(unlock_key_prefix)) return std::nullopt;
    auto raw = crypto::base64url_decode_secure(text.substr(unlock_key_prefix.size()));
    if (!raw || raw->size() != crypto::key_bytes) return std::nullopt;
    return UnlockKey{crypto::SecureBuffer::copy_of(text),
                     crypto::Key{kek_id, crypto::derive_key(raw->span(), kek_context)}};
}

crypto::Key kek_from_file_bytes(crypto::SecureBuffer bytes) {
    return crypto::Key{kek_id, std::move(bytes)};
}

const crypto::Key* Deks::find(std::uint32_t id) const noexcept {
    auto it = keys.find(id);
    return it == keys.end() ? nullptr : it->second.get();
}

std::string dek_record_key(std::uint32_t id) {
    return fmt::format("{}{}", key_record_prefix, id);
}

std::size_t count_deks(const std::vector<KeyRecord>& records) noexcept {
    return static_cast<std::size_t>(std::count_if(
        records.begin(), records.end(), [](const auto& r) { return r.key != current_record; }));
}

std::string seal_value(const crypto::Key& dek, Table table, std::string_view key,
                       std::span<const std::uint8_t> plaintext) {
    return crypto::seal(dek, plaintext, record_ad(table, key));
}

Result<std::size_t> open_value_into(const Deks& deks, Table table, std::string_view key,
                                    std::string_view sealed, crypto::SecureBuffer& scratch) {
    auto corrupt = [&](std::string what) {
        return make_error(Errc::internal, fmt::format("record {}/{} is corrupt: {}",
                                                      table_name(table), printable_key(key), what));
    };
    auto id = crypto::sealed_key_id(sealed);
    if (!id) return corrupt("not a sealed value");
    const auto* dek = deks.find(*id);
    if (!dek)
        return corrupt(fmt::format("sealed under key {}, which the store does not have", *id));
    if (auto need = sealed.size() - crypto::sealed_overhead; scratch.size() < need)
        scratch = crypto::SecureBuffer(need);
    auto n = crypto::open_into(*dek, sealed, record_ad(table, key), scratch.span());
    if (!n)
        return corrupt(
            fmt::format("does not open under key {} (altered, or moved from another "
                        "record)",
                        *id));
    return *n;
}

Result<crypto::SecureBuffer> open_value(const Deks& deks, Table table, std::string_view key,
                                        std::string_view sealed) {
    crypto::SecureBuffer value;
    auto n = open_value_into(deks, table, key, sealed, value);
    if (!n) return std::move(n).error();
    value.truncate(*n);
    return value;
}

KeyRecord wrap_dek(const crypto::Key& kek, const crypto::Key& dek) {
    auto key = dek_record_key(dek.id);
    auto sealed = crypto::seal(kek, dek.bytes.span(), record_ad(Table::meta, key));
    return {std::move(key), std::move(sealed)};
}

KeyRecord wrap_current(const crypto::Key& kek, std::uint32_t id) {
    auto text = std::to_string(id);
    std::string key(current_record);
    auto sealed = crypto::seal(kek, bytes_of(text), record_ad(Table::meta, key));
    return {std::move(key), std::move(sealed)};
}

Result<Deks> open_key_records(const crypto::Key& kek, const std::vector<KeyRecord>& records) {
    if (records.empty()) return damaged("no data encryption key records");
    Deks deks;
    std::optional<std::uint32_t> current;
    std::vector<std::string_view> failed;
    for (const auto& r : records) {
        auto plain = crypto::open(kek, r.sealed, record_ad(Table::meta, r.key));
        if (!plain) {
            failed.push_back(r.key);
            continue;
        }
        if (r.key == current_record) {
            current = parse_id(text_of(*plain));
            if (!current) return damaged(fmt::format("{} holds no key id", current_record));
            continue;
        }
        auto id = parse_id(std::string_view(r.key).substr(key_record_prefix.size()));
        if (!id) return damaged(fmt::format("unexpected record {}", printable_key(r.key)));
        if (plain->size() != crypto::key_bytes)
            return damaged(fmt::format("{} is not a {}-byte key", r.key, crypto::key_bytes));
        deks.keys.emplace(*id,
                          std::make_shared<const crypto::Key>(crypto::Key{*id, std::move(*plain)}));
    }
    if (failed.size() == records.size())
        return make_error(Errc::invalid_argument,
                          "the key encryption key does not open the data encryption keys");
    if (!failed.empty())
        return damaged(
            fmt::format("{} does not open under the key encryption key that opens "
                        "the others",
                        printable_key(failed.front())));
    if (!current) return damaged(fmt::format("{} is missing", current_record));
    if (!deks.find(*current))
        return damaged(
            fmt::format("{} names key {}, which does not exist", current_record, *current));
    deks.current = *current;
    return deks;
}

}  // namespace coffer::store::detail
