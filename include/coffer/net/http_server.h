// An HTTP/1.1 server on a unix socket: a coroutine per connection, limits on every stream
// (header and body size, idle timeout), blocking handlers on a worker pool, and a drain on stop.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "coffer/net/http.h"

namespace coffer::net {

class Service {
  public:
    virtual ~Service() = default;
    // Called on an I/O thread: true when handle() may block (store writes, waits) and must run
    // on the worker pool; false when it answers from memory at once.
    virtual bool blocking(const Request& r) const = 0;
    virtual Response handle(Request& r) = 0;

    // Requests answered asynchronously: handle_async is called on the I/O thread, must not
    // block, and calls done exactly once, from any thread. Used where a request waits for a
    // shared resource (a group commit) rather than holding a thread while it waits.
    virtual bool asynchronous(const Request&) const { return false; }
    virtual void handle_async(Request& r, std::function<void(Response)> done) { done(handle(r)); }
};

struct ServerOptions {
    std::filesystem::path socket_path;
    mode_t socket_mode = 0660;
    std::size_t header_limit = 16 * 1024;
    std::size_t body_limit = 1024 * 1024;
    std::chrono::seconds idle_timeout{120};
    unsigned io_threads = 2;
    unsigned worker_threads = 32;
    // Sent with every response (Api-Version, Server, ...).
    std::vector<std::pair<std::string, std::string>> headers;
};

class HttpServer {
  public:
    // Binds the socket (replacing a stale one; refusing when another server answers on it).
    HttpServer(ServerOptions options, Service& service);  // service: borrowed for the lifetime
    ~HttpServer();
    HttpServer(const HttpServer&) = delete;
    HttpServer& operator=(const HttpServer&) = delete;

    // Serves until stop() or SIGTERM/SIGINT (when handle_signals), then drains: stops accepting,
    // lets requests in flight finish, closes idle connections. Returns after every thread ended.
    void run(bool handle_signals);
    // Thread-safe; run() returns soon after.
    void stop();

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace coffer::net
