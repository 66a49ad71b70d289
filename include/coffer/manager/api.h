// The manager's HTTP API in the Docker Engine API's shapes: paths with or without a /v1.NN
// prefix, JSON bodies, errors as {"message": ...} with Docker's status codes.
#pragma once

#include <memory>

#include "coffer/net/http_server.h"

namespace coffer::manager {

class Cluster;
class UnlockGate;

inline constexpr const char* api_version = "1.41";
inline constexpr const char* min_api_version = "1.24";

class Api : public net::Service {
  public:
    explicit Api(Cluster& manager);  // borrowed for the Api's lifetime
    ~Api() override;

    bool blocking(const net::Request& r) const override;
    net::Response handle(net::Request& r) override;
    // Secret creation waits on the group commit, and the logs routes on the nodes' answers,
    // without holding a thread.
    bool asynchronous(const net::Request& r) const override;
    void handle_async(net::Request& r, std::function<void(net::Response)> done) override;

  private:
    // handle() and handle_async() without the request metrics they record.
    net::Response serve(net::Request& r);
    void serve_async(net::Request& r, std::function<void(net::Response)> done);
    // POST /swarm/unlock: attempts one at a time, limited per caller and in all (429 when too
    // many failed), each failure logged with its caller and count, never with the key.
    net::Response unlock(net::Request& r);

    Cluster& manager_;
    std::unique_ptr<UnlockGate> unlock_gate_;
};

// Headers every response carries (Api-Version, Server, ...).
std::vector<std::pair<std::string, std::string>> api_headers();

}  // namespace coffer::manager
