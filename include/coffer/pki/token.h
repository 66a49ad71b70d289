// Join tokens: COFFERTKN-1-<CA digest>-<secret>. The digest (sha256 of the CA certificate PEM
// bundle in base 36, 50 characters) lets a joining node pin the CA before it trusts anything; the
// secret (16 random bytes in base 36, 25 characters) proves the node may join, in one role.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "coffer/base/error.h"
#include "coffer/crypto/secure_buffer.h"

namespace coffer::pki {

inline constexpr std::string_view join_token_prefix = "COFFERTKN";
inline constexpr std::size_t ca_digest_chars = 50;
inline constexpr std::size_t token_secret_bytes = 16;
inline constexpr std::size_t token_secret_chars = 25;

// The digest a join token carries for this CA bundle (the exact bytes served to joining nodes).
std::string ca_digest(std::string_view ca_bundle_pem);

class JoinToken {
  public:
    // A fresh token for the CA bundle, with a new random secret.
    static JoinToken generate(std::string_view ca_bundle_pem);
    // Strict: anything but COFFERTKN-1-<50 [0-9a-z]>-<25 [0-9a-z]> is an invalid_argument error
    // saying what is wrong, never repeating the token.
    static Result<JoinToken> parse(std::string_view text);

    // The same secret pinning another CA bundle (CA rotation changes the digest only).
    JoinToken with_ca(std::string_view ca_bundle_pem) const;

    const std::string& ca_digest() const noexcept { return digest_; }
    // The token as typed by users; it holds the secret, so it stays in secure memory.
    crypto::SecureBuffer text() const;

    // Constant time in the secret: does this (presented) token equal the expected one?
    bool matches(const JoinToken& expected) const noexcept;
    // Does the token pin this CA bundle?
    bool pins(std::string_view ca_bundle_pem) const;

  private:
    JoinToken(std::string digest, crypto::SecureBuffer secret)
        : digest_(std::move(digest)), secret_(std::move(secret)) {}

    std::string digest_;
    crypto::SecureBuffer secret_;  // the 25 base-36 characters
};

}  // namespace coffer::pki
