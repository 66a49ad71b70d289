// The metrics listener (--metrics-addr): a small HTTP/1.1 server on TCP for scrapers and load
// balancers, apart from the API. One thread, a bounded number of connections, a bounded request
// head, a deadline per connection, one request per connection (Connection: close). Only GET and
// HEAD are answered; the paths are the ones it is given (/metrics, /health).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace coffer::metrics {

struct Answer {
    int status = 200;
    std::string content_type = "text/plain; charset=utf-8";
    std::string body;
};

// The content type of the Prometheus text format 0.0.4.
inline constexpr const char* exposition_content_type = "text/plain; version=0.0.4; charset=utf-8";

class Server {
  public:
    // Handlers run on the server's thread, one request at a time; they should answer quickly.
    using Handler = std::function<Answer()>;
    using Routes = std::vector<std::pair<std::string, Handler>>;

    // listen: "ADDRESS:PORT" or "[IPV6]:PORT" (port 0: any free port, see port()). Binds and
    // listens before returning; throws std::runtime_error (what names the address) when it
    // cannot.
    Server(std::string_view listen, Routes routes);
    ~Server();  // stops the thread, closes every connection
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    std::uint16_t port() const noexcept;
    // "ADDRESS:PORT" as bound.
    std::string address() const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// The routes a daemon serves: GET /metrics (the registry's exposition) and GET /health (health()
// answers: 200 when ready, 503 otherwise, with a short JSON body).
Server::Routes standard_routes(std::function<Answer()> health);

}  // namespace coffer::metrics
