// HTTP/1.1 requests and responses as the API layer sees them, free of Beast and Asio.
// A request body lives in secure memory: it may carry secret bytes. So may a response built
// with secure_json (join tokens, the unlock key).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "coffer/base/error.h"
#include "coffer/crypto/secure_buffer.h"

namespace coffer::net {

// The process at the other end of a unix socket connection, as the kernel reported it when it
// connected (SO_PEERCRED).
struct Peer {
    uid_t uid = 0;
    gid_t gid = 0;
    pid_t pid = 0;
};

struct Request {
    std::string method;  // "GET", "HEAD", "POST", ...
    std::string target;  // as received, still percent-encoded (path and query)
    std::string path;    // percent-decoded, without the query
    std::map<std::string, std::string, std::less<>> query;  // percent-decoded
    std::string content_type;
    crypto::SecureBuffer body;
    // The X-Registry-Auth header (registry credentials, base64url JSON); empty when absent.
    crypto::SecureBuffer registry_auth;
    std::optional<Peer> peer;  // unset when the kernel did not say
    // When the server had read the whole request (before it waited for a worker).
    std::chrono::steady_clock::time_point received{};

    std::string_view body_view() const noexcept {
        return {reinterpret_cast<const char*>(body.data()), body.size()};
    }
    // The query parameter or "" when absent.
    std::string_view param(std::string_view name) const;
};

struct Response {
    int status = 200;
    std::string body;
    std::string content_type = "application/json";
    std::vector<std::pair<std::string, std::string>> headers;
    // A body that carries secret bytes. When not empty it is sent instead of body, straight from
    // this secure memory (no copy in user space), and wiped once written.
    crypto::SecureBuffer secure_body;

    static Response json(int status, std::string body);
    static Response secure_json(int status, crypto::SecureBuffer body);
    // {"message": ...} with the status the error's code maps to.
    static Response error(const Error& e);
    static Response empty(int status);
};

// "a%20b" -> "a b"; '+' stays '+' in paths, becomes ' ' in query values. nullopt-free: invalid
// escapes are kept literally.
std::string percent_decode(std::string_view s, bool plus_is_space);
// Keeps target in r.target, splits "path?query" and decodes both into r.path and r.query.
void parse_target(std::string_view target, Request& r);
std::string percent_encode(std::string_view s);

}  // namespace coffer::net
