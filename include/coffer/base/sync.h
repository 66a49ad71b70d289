// Shared state behind its lock: the only way to the value is through a guard.
#pragma once

#include <mutex>
#include <shared_mutex>
#include <utility>

namespace coffer {

template <typename T, typename Mutex = std::shared_mutex>
class Sync {
  public:
    template <typename... Args>
    explicit Sync(Args&&... args) : value_(std::forward<Args>(args)...) {}

    template <typename V, typename Lock>
    class Guard {
      public:
        Guard(V& v, Mutex& m) : v_(v), lock_(m) {}
        V& operator*() const { return v_; }
        V* operator->() const { return &v_; }

      private:
        V& v_;
        Lock lock_;
    };

    Guard<T, std::unique_lock<Mutex>> lock() { return {value_, mutex_}; }
    Guard<const T, std::shared_lock<Mutex>> read() const { return {value_, mutex_}; }

  private:
    T value_;
    mutable Mutex mutex_;
};

}  // namespace coffer
