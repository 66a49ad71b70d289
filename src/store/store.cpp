#include "coffer/store/store.h"

#include <sodium.h>

#include "coffer/base/log.h"
#include "data_dir.h"
#include "database.h"
#include "etcd_engine.h"
#include "sealed_store.h"

namespace coffer::store {

std::string_view table_name(Table t) noexcept {
    switch (t) {
        case Table::meta:
            return "meta";
        case Table::secrets:
            return "secrets";
        case Table::secret_data:
            return "secret_data";
        case Table::nodes:
            return "nodes";
        case Table::services:
            return "services";
        case Table::tasks:
            return "tasks";
        case Table::pki:
            return "pki";
        case Table::configs:
            return "configs";
        case Table::config_data:
            return "config_data";
        case Table::networks:
            return "networks";
    }
    return "unknown";
}

void Batch::put(Table table, std::string key, std::string value) {
    auto secure = crypto::SecureBuffer::copy_of(std::string_view(value));
    // The caller gave the string up; do not leave its bytes behind in the heap.
    ::sodium_memzero(value.data(), value.size());
    put(table, std::move(key), std::move(secure));
}

void Batch::put(Table table, std::string key, crypto::SecureBuffer value) {
    bytes_ += key.size() + value.size() + op_overhead;
    ops_.push_back(Op{table, std::move(key), std::move(value)});
}

void Batch::erase(Table table, std::string key) {
    bytes_ += key.size() + op_overhead;
    ops_.push_back(Op{table, std::move(key), std::nullopt});
}

namespace detail {

EngineMaker engine_maker(const std::optional<EtcdOptions>& etcd) {
    if (etcd)
        return [options = *etcd](const DataDir&, bool create) {
            return std::unique_ptr<Engine>(EtcdEngine::open(options, create));
        };
    return [](const DataDir& d, bool create) {
        return std::unique_ptr<Engine>(Database::open(d.db_path(), create));
    };
}

}  // namespace detail

Result<Store::Opened> Store::open(const Options& options) {
    auto fail = [&](Errc code, std::string_view message) {
        return make_error(code, fmt::format("open store {}: {}", options.dir.string(), message));
    };
    try {
        crypto::init();
        auto dir = detail::DataDir::open(options.dir);
        auto existing = dir.format();
        if (existing && existing->etcd && !options.etcd)
            return fail(Errc::invalid_argument,
                        "its records are in etcd: start cofferd with --store etcd and the "
                        "cluster's --etcd-endpoints");
        if (existing && !existing->etcd && options.etcd)
            return fail(Errc::invalid_argument,
                        "it holds an embedded store, not one in etcd (to move it there, take a "
                        "backup and restore it with --store etcd)");
        auto make = detail::engine_maker(options.etcd);
        if (existing)
            return Opened{detail::SealedStore::open(std::move(dir), existing->kek, make),
                          std::nullopt};
        detail::DirFormat format{
            options.autolock ? detail::KekMode::autolock : detail::KekMode::file,
            options.etcd.has_value()};
        return detail::SealedStore::create(std::move(dir), format, make,
                                           options.hand_over_unlock_key);
    } catch (const ErrorException& e) {
        return fail(e.error().code, e.error().message);
    } catch (const std::exception& e) {
        return fail(Errc::internal, e.what());
    }
}

}  // namespace coffer::store
