// POST /swarm/unlock, as the manager's API and a standby's answer it: the body's UnlockKey,
// attempts one at a time, limited per caller and in all (UnlockLimiter; 429 with Retry-After when
// too many failed), each failure logged with its caller and count, never with the key.
#pragma once

#include <functional>
#include <mutex>
#include <string_view>

#include "coffer/base/error.h"
#include "coffer/net/http.h"
#include "unlock_limiter.h"

namespace coffer::manager {

class UnlockGate {
  public:
    // locked: whether there is anything to unlock (conflict "coffer is not locked" otherwise).
    // try_key: the attempt itself; its invalid_argument counts as a failed guess.
    net::Response attempt(net::Request& r, const std::function<bool()>& locked,
                          const std::function<Result<void>(std::string_view key)>& try_key);

  private:
    std::mutex mutex_;
    UnlockLimiter limiter_;  // under mutex_
};

}  // namespace coffer::manager
