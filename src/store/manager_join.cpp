// A manager joining a store on etcd with the manager join token.
//
// The leading manager publishes <prefix>join:
//   {"version":1,"kek":"file"|"autolock","check":<base64>[,"sealed":<base64>]}
// where, with W = derive_key(token text, "coffer manager join"),
//   check  = keyed_mac(W, "coffer manager join check", [kek mode])  (the token is this one)
//   sealed = seal(W, the KEK file's 32 bytes, "coffer manager join")  (kek "file" only)
// The token's text names the CA digest and the secret, so a rotated token or CA changes W. etcd
// and its operators see the KEK only sealed under a key that needs the token; holding the token
// already makes one a manager of the cluster.
#include <sodium.h>

#include <boost/json.hpp>

#include "coffer/base/log.h"
#include "coffer/crypto/aead.h"
#include "coffer/crypto/encoding.h"
#include "data_dir.h"
#include "etcd_engine.h"
#include "keys.h"
#include "sealed_store.h"

namespace coffer::store {
namespace {

namespace json = boost::json;

constexpr std::string_view record_name = "join";
constexpr std::string_view wrap_context = "coffer manager join";
constexpr std::string_view check_context = "coffer manager join check";

crypto::SecureBuffer wrap_key(const crypto::SecureBuffer& token) {
    return crypto::derive_key(token.span(), wrap_context);
}

std::span<const std::uint8_t> bytes_of(std::string_view s) {
    return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

crypto::SecureBuffer check_of(const crypto::SecureBuffer& wrap, std::string_view mode) {
    return crypto::keyed_mac(wrap, check_context, {bytes_of(mode)});
}

}  // namespace

namespace detail {

Result<void> SealedStore::publish_manager_join(const crypto::SecureBuffer& manager_token) {
    if (!engine_->shared()) return {};
    if (locked()) return locked_error();
    auto wrap = wrap_key(manager_token);
    auto mode = kek_mode_name(mode_);
    auto check = check_of(wrap, mode);
    json::object record{
        {"version", 1}, {"kek", mode}, {"check", crypto::base64_encode(check.span())}};
    if (mode_ == KekMode::file) {
        auto raw = dir_.read_kek();
        record["sealed"] = crypto::base64_encode(
            bytes_of(crypto::seal(crypto::Key{0, std::move(wrap)}, raw.span(), wrap_context)));
    }
    return engine_->put_shared(record_name, json::serialize(record));
}

}  // namespace detail

Result<void> join_store(const JoinOptions& options) {
    auto fail = [&](Errc code, std::string_view message) {
        return make_error(
            code, fmt::format("join through etcd prefix {}: {}", options.etcd.prefix, message));
    };
    if (options.manager_token == nullptr) return fail(Errc::invalid_argument, "no token");
    try {
        crypto::init();
        auto dir = detail::DataDir::open(options.dir);
        // A refused join leaves the directory as it was (none, when it made it).
        detail::NewStoreGuard joining(dir);
        if (dir.format())
            return fail(Errc::already_exists,
                        fmt::format("{} already holds a store: start cofferd without "
                                    "--join-token, or give it an empty --data-dir",
                                    options.dir.string()));
        auto text = detail::EtcdEngine::read_shared(options.etcd, record_name);
        if (!text) return std::move(text).error();
        if (!*text)
            return fail(Errc::not_found,
                        "it holds no coffer store a manager may join (start the first cofferd "
                        "there, and let it run until it leads)");
        boost::system::error_code ec;
        auto v = json::parse(**text, ec);
        const json::object* o = (!ec && v.is_object()) ? &v.get_object() : nullptr;
        auto field = [&](std::string_view name) -> std::string {
            const auto* f = o != nullptr ? o->if_contains(name) : nullptr;
            return f != nullptr && f->is_string() ? std::string(f->get_string()) : std::string();
        };
        auto mode = field("kek");
        if (o == nullptr || (mode != "file" && mode != "autolock"))
            return fail(Errc::internal, "the join record is unreadable");
        auto wrap = wrap_key(*options.manager_token);
        auto check = crypto::base64_decode_secure(field("check"));
        auto expected = check_of(wrap, mode);
        if (!check || check->size() != expected.size() ||
            sodium_memcmp(check->data(), expected.data(), expected.size()) != 0)
            return fail(Errc::permission_denied,
                        "the token is not this cluster's current manager join token (a worker "
                        "token, or one rotated since)");
        dir.prepare_new();
        if (mode == "file") {
            auto sealed = crypto::base64_decode_secure(field("sealed"));
            std::optional<crypto::SecureBuffer> kek;
            if (sealed)
                kek = crypto::open(
                    crypto::Key{0, std::move(wrap)},
                    std::string_view(reinterpret_cast<const char*>(sealed->data()), sealed->size()),
                    wrap_context);
            if (!kek) return fail(Errc::internal, "the join record's KEK does not open");
            dir.write_kek(*kek);
        }
        dir.write_format(
            {mode == "file" ? detail::KekMode::file : detail::KekMode::autolock, true});
        joining.commit();
        log::info("store", "joined the store in etcd prefix {} as a manager ({})",
                  options.etcd.prefix,
                  mode == "file" ? "its KEK is now in the data directory"
                                 : "autolocked: unlock this manager with the unlock key");
        return {};
    } catch (const ErrorException& e) {
        return fail(e.error().code, e.error().message);
    } catch (const std::exception& e) {
        return fail(Errc::internal, e.what());
    }
}

namespace {

// The format of a data directory whose store is on etcd; conflict for any other.
Result<detail::DirFormat> etcd_format(const detail::DataDir& dir,
                                      const std::filesystem::path& dir_path) {
    auto format = dir.format();
    if (!format || !format->etcd)
        return make_error(Errc::conflict,
                          fmt::format("{} holds no store on etcd", dir_path.string()));
    return *format;
}

}  // namespace

Result<void> check_unlock_key(const std::filesystem::path& dir_path, const EtcdOptions& etcd,
                              std::string_view unlock_key) {
    try {
        auto dir = detail::DataDir::open(dir_path);
        auto format = etcd_format(dir, dir_path);
        if (!format) return std::move(format).error();
        if (format->kek != detail::KekMode::autolock)
            return make_error(Errc::conflict, "the store is not autolocked: it has no unlock key");
        auto parsed = detail::parse_unlock_key(unlock_key);
        if (!parsed) return make_error(Errc::invalid_argument, "invalid unlock key");
        auto engine = detail::EtcdEngine::unclaimed(etcd);
        auto records = detail::read_key_records(*engine);
        if (!records) return std::move(records).error();
        auto deks = detail::open_key_records(parsed->kek, *records);
        if (!deks && deks.error().code == Errc::invalid_argument)
            return make_error(Errc::invalid_argument, "invalid unlock key");
        if (!deks) return std::move(deks).error();
        return {};
    } catch (const ErrorException& e) {
        return e.error();
    } catch (const std::exception& e) {
        return make_error(Errc::internal, fmt::format("check the unlock key: {}", e.what()));
    }
}

namespace {

class EtcdStandbyReader final : public StandbyReader {
  public:
    EtcdStandbyReader(std::unique_ptr<detail::EtcdEngine> engine, crypto::Key kek)
        : engine_(std::move(engine)), kek_(std::move(kek)) {}

    Result<void> read_keys() {
        auto records = detail::read_key_records(*engine_);
        if (!records) return std::move(records).error();
        auto deks = detail::open_key_records(kek_, *records);
        if (!deks && deks.error().code == Errc::invalid_argument)
            return make_error(Errc::invalid_argument,
                              "the store's keys on etcd do not open with this manager's key");
        if (!deks) return std::move(deks).error();
        deks_ = std::move(*deks);
        return {};
    }

    Result<void> refresh() override {
        auto read = read_keys();
        if (read || read.error().code != Errc::invalid_argument || deks_.keys.empty()) return read;
        // The key no longer opens them: the unlock key was rotated. The leader left the new one
        // sealed under the current DEK, which this reader may hold.
        auto sealed = engine_->get(Table::meta, detail::unlock_key_record);
        if (!sealed) return std::move(sealed).error();
        if (!*sealed) return read;
        auto text = detail::open_value(deks_, Table::meta, detail::unlock_key_record, **sealed);
        if (!text) return read;  // under a DEK made since: the key is needed again
        auto parsed = detail::parse_unlock_key(
            std::string_view(reinterpret_cast<const char*>(text->data()), text->size()));
        if (!parsed)
            return make_error(Errc::internal, "the store's record of its unlock key is not one");
        std::swap(kek_, parsed->kek);
        if (auto again = read_keys(); !again) {
            std::swap(kek_, parsed->kek);
            return again;
        }
        followed_ = std::move(parsed->text);
        return {};
    }

    std::optional<crypto::SecureBuffer> take_followed_unlock_key() override {
        return std::exchange(followed_, std::nullopt);
    }

    Result<std::optional<crypto::SecureBuffer>> get(Table table, std::string_view key) override {
        auto sealed = engine_->get(table, key);
        if (!sealed) return std::move(sealed).error();
        if (!*sealed) return std::optional<crypto::SecureBuffer>();
        auto id = crypto::sealed_key_id(**sealed);
        if (id && deks_.find(*id) == nullptr)
            if (auto r = refresh(); !r) return std::move(r).error();
        auto value = detail::open_value(deks_, table, key, **sealed);
        if (!value) return std::move(value).error();
        return std::optional<crypto::SecureBuffer>(std::move(*value));
    }

    Result<std::string> leader() override {
        auto managers = engine_->managers();
        if (!managers) return std::move(managers).error();
        for (const auto& m : *managers)
            if (m.leader && m.reachable) return m.addr;
        return std::string();
    }

  private:
    std::unique_ptr<detail::EtcdEngine> engine_;
    crypto::Key kek_;
    detail::Deks deks_;
    std::optional<crypto::SecureBuffer> followed_;
};

}  // namespace

Result<std::unique_ptr<StandbyReader>> StandbyReader::open(const std::filesystem::path& dir_path,
                                                           const EtcdOptions& etcd,
                                                           const crypto::SecureBuffer* unlock_key) {
    try {
        auto dir = detail::DataDir::open(dir_path);
        auto format = etcd_format(dir, dir_path);
        if (!format) return std::move(format).error();
        std::optional<crypto::Key> kek;
        if (format->kek == detail::KekMode::autolock) {
            if (unlock_key == nullptr)
                return make_error(Errc::locked,
                                  "this standby manager is locked: run `coffer cluster unlock` "
                                  "against it with the unlock key");
            auto parsed = detail::parse_unlock_key(std::string_view(
                reinterpret_cast<const char*>(unlock_key->data()), unlock_key->size()));
            if (!parsed) return make_error(Errc::invalid_argument, "invalid unlock key");
            kek = std::move(parsed->kek);
        } else {
            kek = detail::kek_from_file_bytes(dir.read_kek());
        }
        auto reader = std::make_unique<EtcdStandbyReader>(detail::EtcdEngine::unclaimed(etcd),
                                                          std::move(*kek));
        if (auto r = reader->read_keys(); !r) return std::move(r).error();
        return std::unique_ptr<StandbyReader>(std::move(reader));
    } catch (const ErrorException& e) {
        return e.error();
    } catch (const std::exception& e) {
        return make_error(Errc::internal, fmt::format("read the store: {}", e.what()));
    }
}

}  // namespace coffer::store
