#include "unlock_gate.h"

#include <fmt/format.h>

#include <algorithm>

#include "api_util.h"
#include "coffer/base/log.h"
#include "coffer/model/json.h"

namespace coffer::manager {

net::Response UnlockGate::attempt(
    net::Request& r, const std::function<bool()>& locked,
    const std::function<Result<void>(std::string_view key)>& try_key) {
    auto body = parse_body(r);
    if (!body) return net::Response::error(body.error());
    auto* key = body->value().as_object().if_contains("UnlockKey");
    if (key == nullptr || !key->is_string())
        return fail(Errc::invalid_argument, "field UnlockKey must be a string");
    // The unix socket tells callers apart by the uid the kernel vouches for, nothing else.
    auto source = r.peer ? fmt::format("uid {}", r.peer->uid) : std::string("unknown peer");
    auto caller = r.peer ? fmt::format("uid {} (pid {})", r.peer->uid, r.peer->pid) : source;
    // One attempt at a time, so that concurrent guesses cannot all pass the limit before the
    // first of them is counted.
    std::lock_guard lock(mutex_);
    if (!locked()) return fail(Errc::conflict, "coffer is not locked");
    auto now = UnlockLimiter::Clock::now();
    if (auto v = limiter_.admit(source, now); !v.allowed) {
        auto seconds =
            std::max<std::int64_t>(1, std::chrono::ceil<std::chrono::seconds>(v.wait).count());
        auto resp = net::Response::json(
            429,
            model::error_body(fmt::format("too many failed unlock attempts{}: try again in {} s",
                                          v.global ? "" : " from this user", seconds)));
        resp.headers.emplace_back("Retry-After", std::to_string(seconds));
        log::debug("api", "unlock attempt from {} refused: {} s to wait", caller, seconds);
        return resp;
    }
    const auto& k = key->as_string();
    auto res = try_key({k.data(), k.size()});
    if (!res) {
        if (res.error().code == Errc::invalid_argument) {
            auto f = limiter_.failed(source, now);
            log::warn("api", "unlock failed from {}: {} ({} in a row from {}{}{})", caller,
                      res.error().message, f.in_a_row, source,
                      f.refused ? fmt::format(", {} refused meanwhile", f.refused) : std::string(),
                      f.wait.count() > 0
                          ? fmt::format("; next attempt allowed in {} s",
                                        std::chrono::ceil<std::chrono::seconds>(f.wait).count())
                          : std::string());
        }
        return net::Response::error(res.error());
    }
    auto refused = limiter_.succeeded(source);
    log::info("api", "unlocked by {}{}", caller,
              refused ? fmt::format(" ({} attempts refused before)", refused) : std::string());
    return net::Response::empty(200);
}

}  // namespace coffer::manager
