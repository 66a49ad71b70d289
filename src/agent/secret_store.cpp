#include "coffer/agent/secret_store.h"

#include <algorithm>
#include <set>

#include <fmt/format.h>

namespace coffer::agent {

SecretLease::SecretLease(SecretStore* store, std::vector<std::string> ids) noexcept
    : store_(store), ids_(std::move(ids)) {}

SecretLease::SecretLease(SecretLease&& other) noexcept
    : store_(std::exchange(other.store_, nullptr)), ids_(std::exchange(other.ids_, {})) {}

SecretLease& SecretLease::operator=(SecretLease&& other) noexcept {
    if (this != &other) {
        reset();
        store_ = std::exchange(other.store_, nullptr);
        ids_ = std::exchange(other.ids_, {});
    }
    return *this;
}

bool SecretLease::holds(std::string_view id) const noexcept {
    return std::binary_search(ids_.begin(), ids_.end(), id);
}

void SecretLease::reset() noexcept {
    if (store_ != nullptr) store_->release(ids_);
    store_ = nullptr;
    ids_.clear();
}

SecretLease SecretStore::put(std::string id, crypto::SecureBuffer bytes) {
    std::lock_guard g(mu_);
    bytes_.try_emplace(id, std::move(bytes));  // held already: bytes goes out of scope, wiped
    ++leases_[id];
    return SecretLease(this, {std::move(id)});
}

Result<SecretLease> SecretStore::lease(const std::vector<std::string>& ids, SecretBytes& supplied) {
    std::set<std::string, std::less<>> unique(ids.begin(), ids.end());
    std::lock_guard g(mu_);
    for (const auto& id : unique)
        if (!bytes_.contains(id) && !supplied.contains(id))
            return make_error(Errc::not_found, fmt::format("no bytes for secret {}", id));
    for (const auto& id : unique) {
        if (!bytes_.contains(id)) bytes_.insert(supplied.extract(supplied.find(id)));
        ++leases_[id];
    }
    return SecretLease(this, {unique.begin(), unique.end()});
}

Result<SecretLease> SecretStore::lease(const std::vector<std::string>& ids) {
    SecretBytes none;
    return lease(ids, none);
}

void SecretStore::read(const std::function<void(const SecretBytes&)>& read) const {
    std::lock_guard g(mu_);
    read(bytes_);
}

std::size_t SecretStore::size() const {
    std::lock_guard g(mu_);
    return bytes_.size();
}

void SecretStore::release(const std::vector<std::string>& ids) noexcept {
    std::lock_guard g(mu_);
    for (const auto& id : ids) {
        auto it = leases_.find(id);
        if (it == leases_.end()) continue;
        if (--it->second == 0) {
            leases_.erase(it);
            bytes_.erase(id);  // SecureBuffer wipes on free
        }
    }
}

}  // namespace coffer::agent
