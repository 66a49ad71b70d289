// The forwarded request's proof and envelope (forward.h); the client is in
// node_session_client.cpp, the leader's side in node_session_server.cpp.
#include "coffer/nodeconn/forward.h"

#include <openssl/ssl.h>
#include <sodium.h>

#include <charconv>
#include <cstring>

#include "coffer/crypto/aead.h"
#include "coffer/crypto/encoding.h"
#include "tls_context.h"

namespace coffer::nodeconn {

namespace {

constexpr std::string_view proof_context = "coffer forwarded request";
constexpr std::string_view exporter_label = "EXPORTER-coffer-forward";

void put_length(std::uint8_t* at, std::size_t n) {
    for (int i = 0; i < 4; ++i) at[i] = static_cast<std::uint8_t>(n >> (24 - 8 * i));
}

std::size_t get_length(const std::uint8_t* at) {
    std::size_t n = 0;
    for (int i = 0; i < 4; ++i) n = (n << 8) | at[i];
    return n;
}

}  // namespace

namespace detail {

Result<std::array<std::uint8_t, 32>> forward_binding(SSL* ssl) {
    std::array<std::uint8_t, 32> out{};
    if (SSL_export_keying_material(ssl, out.data(), out.size(), exporter_label.data(),
                                   exporter_label.size(), nullptr, 0, 0) != 1)
        return make_error(Errc::internal, "TLS: no keying material to bind a forwarded request to");
    return out;
}

}  // namespace detail

std::string forward_proof(const crypto::SecureBuffer& key, std::span<const std::uint8_t> binding) {
    auto mac = crypto::keyed_mac(key, proof_context, {binding});
    return crypto::hex_encode({mac.data(), mac.size()});
}

bool forward_proof_holds(const crypto::SecureBuffer& key, std::span<const std::uint8_t> binding,
                         std::string_view proof) {
    auto expected = forward_proof(key, binding);
    if (proof.size() != expected.size()) return false;
    return ::sodium_memcmp(expected.data(), proof.data(), expected.size()) == 0;
}

crypto::SecureBuffer forward_envelope(const net::Request& request) {
    const auto auth = request.registry_auth.size(), body = request.body.size();
    crypto::SecureBuffer out(8 + auth + body);
    auto* at = out.data();
    put_length(at, auth);
    if (auth) std::memcpy(at + 4, request.registry_auth.data(), auth);
    put_length(at + 4 + auth, body);
    if (body) std::memcpy(at + 8 + auth, request.body.data(), body);
    return out;
}

Result<void> open_forward_envelope(const crypto::SecureBuffer& envelope, net::Request& into) {
    auto bad = [] {
        return make_error(Errc::invalid_argument, "a forwarded request's body is malformed");
    };
    const auto* at = envelope.data();
    const auto size = envelope.size();
    if (size < 8) return bad();
    auto auth = get_length(at);
    if (auth > size - 8) return bad();
    auto body = get_length(at + 4 + auth);
    if (body != size - 8 - auth) return bad();
    into.registry_auth = auth ? crypto::SecureBuffer(auth) : crypto::SecureBuffer();
    if (auth) std::memcpy(into.registry_auth.data(), at + 4, auth);
    into.body = body ? crypto::SecureBuffer(body) : crypto::SecureBuffer();
    if (body) std::memcpy(into.body.data(), at + 8 + auth, body);
    return {};
}

}  // namespace coffer::nodeconn
