// The node's secret bytes: each secret once, in secure memory, for as long as something leases
// it. The executor leases a secret while the manager assigns it to the node, and a task's start
// leases the task's secrets; the runner keeps a task's lease until its secrets are unmounted and
// wiped. The last lease to go wipes the bytes (SecureBuffer wipes on free).
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "coffer/agent/task.h"
#include "coffer/base/error.h"
#include "coffer/crypto/secure_buffer.h"

namespace coffer::agent {

class SecretStore;

// Keeps a set of secrets in a store until it is reset or destroyed. Move-only; must not outlive
// its store.
class SecretLease {
  public:
    SecretLease() = default;
    SecretLease(SecretLease&& other) noexcept;
    SecretLease& operator=(SecretLease&& other) noexcept;
    SecretLease(const SecretLease&) = delete;
    SecretLease& operator=(const SecretLease&) = delete;
    ~SecretLease() { reset(); }

    // The secrets held, each once, sorted.
    const std::vector<std::string>& ids() const noexcept { return ids_; }
    bool holds(std::string_view id) const noexcept;
    void reset() noexcept;

  private:
    friend class SecretStore;
    SecretLease(SecretStore* store, std::vector<std::string> ids) noexcept;

    SecretStore* store_ = nullptr;
    std::vector<std::string> ids_;
};

class SecretStore {
  public:
    SecretStore() = default;
    SecretStore(const SecretStore&) = delete;
    SecretStore& operator=(const SecretStore&) = delete;

    // Holds bytes under id and leases it. A secret id names bytes that never change: when the
    // store holds id already, it keeps what it holds and bytes are wiped.
    SecretLease put(std::string id, crypto::SecureBuffer bytes);
    // Leases every secret in ids (a repeated id counts once). The bytes of one the store does not
    // hold come from supplied (moved out of it). not_found, naming the first secret that is
    // neither held nor supplied, leases nothing and takes nothing from supplied.
    Result<SecretLease> lease(const std::vector<std::string>& ids, SecretBytes& supplied);
    Result<SecretLease> lease(const std::vector<std::string>& ids);

    // Calls read with the bytes of every secret held, under the store's lock: borrowed for the
    // call only (read must not keep a reference, nor call back into the store).
    void read(const std::function<void(const SecretBytes&)>& read) const;

    // How many secrets are held.
    std::size_t size() const;

  private:
    friend class SecretLease;
    void release(const std::vector<std::string>& ids) noexcept;

    mutable std::mutex mu_;
    SecretBytes bytes_;
    std::map<std::string, std::size_t, std::less<>> leases_;  // per secret held, never 0
};

}  // namespace coffer::agent
