// The CLI's view of the API: one connection, JSON in and out, errors carrying the server's message.
#pragma once

#include <boost/json.hpp>

#include <memory>
#include <optional>
#include <span>
#include <string>

#include "coffer/base/error.h"
#include "coffer/net/http_client.h"

namespace coffer::crypto {
class SecureBuffer;
}

namespace coffer::cli {

class ApiClient {
  public:
    explicit ApiClient(std::string host) : host_(std::move(host)) {}

    // A 2xx answer's body parsed as JSON (null for an empty body); any other status is an
    // Error with the server's {"message"} (or the raw body when it is not JSON).
    Result<boost::json::value> call(std::string_view method, std::string_view path,
                                    std::span<const std::uint8_t> body = {});
    Result<boost::json::value> call(std::string_view method, std::string_view path,
                                    const boost::json::value& body);
    // As call(), sending the header too, on a connection of its own that closes after the
    // answer.
    Result<boost::json::value> call(std::string_view method, std::string_view path,
                                    const boost::json::value& body,
                                    const net::SecretHeader& header);
    // GET path: a 2xx answer's body as it is (a log stream); errors as call().
    Result<std::string> get_raw(std::string_view path);
    // The longest answer accepted (net::HttpClient::set_body_limit).
    void set_body_limit(std::uint64_t bytes) noexcept { body_limit_ = bytes; }

  private:
    Result<net::ClientResponse> request(std::string_view method, std::string_view path,
                                        std::span<const std::uint8_t> body,
                                        const net::SecretHeader* secret = nullptr);

    std::string host_;
    std::unique_ptr<net::HttpClient> http_;
    std::optional<std::uint64_t> body_limit_;
};

}  // namespace coffer::cli
