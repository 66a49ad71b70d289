// A small synchronous HTTP/1.1 client, one keep-alive connection: over a unix socket, TCP, or TLS
// over TCP.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "coffer/base/error.h"

namespace coffer::net {

struct ClientResponse {
    int status = 0;
    std::string body;
    std::map<std::string, std::string, std::less<>> headers;  // names lower-cased
};

// A request header whose value is a secret (X-Registry-Auth): kept in secure memory, written from
// there to the socket, never logged. Borrowed for the call only.
struct SecretHeader {
    std::string_view name;
    std::span<const std::uint8_t> value;
};

// TLS for an https:// host: the CA that signs the server's certificate (empty: the system's
// trust store), and a client certificate with its key (both or neither), all PEM files.
struct ClientTls {
    std::string ca_file;
    std::string cert_file;
    std::string key_file;
};

class HttpClient {
  public:
    // host: "unix:///path/to.sock" or a plain path, "http://HOST:PORT" or "https://HOST:PORT"
    // (the server's certificate must name HOST). Errc::unavailable when nothing listens.
    // A read or write that waits longer than io_timeout fails (TCP only).
    static Result<std::unique_ptr<HttpClient>> connect(
        std::string_view host, const ClientTls* tls = nullptr,
        std::chrono::milliseconds io_timeout = std::chrono::seconds(10));
    ~HttpClient();

    // body is sent as is (it may point into secure memory; it is not copied in user space).
    Result<ClientResponse> request(std::string_view method, std::string_view target,
                                   std::span<const std::uint8_t> body = {},
                                   std::string_view content_type = "application/json",
                                   const SecretHeader* secret = nullptr);

    // Answers with a longer body fail; 64 MiB unless set (a backup may be larger).
    void set_body_limit(std::uint64_t bytes) noexcept;

  private:
    struct Impl;
    explicit HttpClient(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace coffer::net
