// The manager's HTTP API in the Docker Engine API's shapes: paths with or without a /v1.NN
// prefix, JSON bodies, errors as {"message": ...} with Docker's status codes.
#pragma once

#include "coffer/net/http_server.h"

namespace coffer::manager {

class Manager;

inline constexpr const char* api_version = "1.41";
inline constexpr const char* min_api_version = "1.24";

class Api : public net::Service {
public:
    explicit Api(Manager& manager) : manager_(manager) {}  // borrowed for the Api's lifetime

    bool blocking(const net::Request& r) const override;
    net::Response handle(net::Request& r) override;
    // Secret creation waits on the group commit, and the logs routes on the nodes' answers,
    // without holding a thread.
    bool asynchronous(const net::Request& r) const override;
    void handle_async(net::Request& r, std::function<void(net::Response)> done) override;

private:
    Manager& manager_;
};

// Headers every response carries (Api-Version, Server, ...).
std::vector<std::pair<std::string, std::string>> api_headers();

}  // namespace coffer::manager
