// A reader-writer lock on which a waiting writer goes before new readers. glibc's default (and so
// std::shared_mutex) prefers readers: with a steady stream of them, a writer waits forever.
// Not recursive: a thread that holds it shared must not take it shared again.
#pragma once

#include <pthread.h>

#include <system_error>

namespace coffer::store::detail {

class RwLock {
  public:
    RwLock() {
        pthread_rwlockattr_t attr;
        ::pthread_rwlockattr_init(&attr);
        ::pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
        int rc = ::pthread_rwlock_init(&rw_, &attr);
        ::pthread_rwlockattr_destroy(&attr);
        if (rc != 0) throw std::system_error(rc, std::generic_category(), "pthread_rwlock_init");
    }
    RwLock(const RwLock&) = delete;
    RwLock& operator=(const RwLock&) = delete;
    ~RwLock() { ::pthread_rwlock_destroy(&rw_); }

    void lock() { check(::pthread_rwlock_wrlock(&rw_)); }
    bool try_lock() { return ::pthread_rwlock_trywrlock(&rw_) == 0; }
    void unlock() { ::pthread_rwlock_unlock(&rw_); }
    void lock_shared() { check(::pthread_rwlock_rdlock(&rw_)); }
    bool try_lock_shared() { return ::pthread_rwlock_tryrdlock(&rw_) == 0; }
    void unlock_shared() { ::pthread_rwlock_unlock(&rw_); }

  private:
    static void check(int rc) {
        if (rc != 0) throw std::system_error(rc, std::generic_category(), "pthread_rwlock");
    }
    pthread_rwlock_t rw_;
};

}  // namespace coffer::store::detail
