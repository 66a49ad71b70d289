#include "coffer/pki/token.h"

#include <sodium.h>

#include <algorithm>
#include <array>
#include <vector>

#include "coffer/crypto/encoding.h"
#include "coffer/crypto/random.h"

namespace coffer::pki {
namespace {

constexpr std::string_view token_version = "1";

bool base36_digits(std::string_view s) noexcept {
    return std::all_of(s.begin(), s.end(),
                       [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z'); });
}

Error invalid(std::string_view why) {
    return make_error(Errc::invalid_argument, fmt::format("invalid join token: {}", why));
}

std::string_view view(const crypto::SecureBuffer& b) noexcept {
    return {reinterpret_cast<const char*>(b.data()), b.size()};
}

}  // namespace

std::string ca_digest(std::string_view ca_bundle_pem) {
    crypto::init();
    std::array<std::uint8_t, crypto_hash_sha256_BYTES> digest{};
    crypto_hash_sha256(digest.data(), reinterpret_cast<const unsigned char*>(ca_bundle_pem.data()),
                       ca_bundle_pem.size());
    return crypto::base36_encode(digest, ca_digest_chars);
}

JoinToken JoinToken::generate(std::string_view ca_bundle_pem) {
    crypto::SecureBuffer raw(token_secret_bytes);
    crypto::random_bytes(raw.span());
    return JoinToken(pki::ca_digest(ca_bundle_pem),
                     crypto::base36_encode_secure(raw.span(), token_secret_chars));
}

Result<JoinToken> JoinToken::parse(std::string_view text) {
    // Nothing from the token is ever quoted back: it may be a mistyped secret.
    if (text.size() > 256) return invalid("too long");
    std::vector<std::string_view> parts;
    for (std::size_t start = 0;;) {
        auto dash = text.find('-', start);
        parts.push_back(text.substr(start, dash == std::string_view::npos ? dash : dash - start));
        if (dash == std::string_view::npos) break;
        start = dash + 1;
    }
    if (parts.size() != 4) return invalid("expected COFFERTKN-1-<CA digest>-<secret>");
    if (parts[0] != join_token_prefix) return invalid("does not start with COFFERTKN");
    if (parts[1] != token_version) return invalid("unsupported version");
    if (parts[2].size() != ca_digest_chars || !base36_digits(parts[2]))
        return invalid("CA digest must be 50 characters [0-9a-z]");
    if (parts[3].size() != token_secret_chars || !base36_digits(parts[3]))
        return invalid("secret must be 25 characters [0-9a-z]");
    return JoinToken(std::string(parts[2]), crypto::SecureBuffer::copy_of(parts[3]));
}

JoinToken JoinToken::with_ca(std::string_view ca_bundle_pem) const {
    return JoinToken(pki::ca_digest(ca_bundle_pem), secret_.clone());
}

crypto::SecureBuffer JoinToken::text() const {
    std::string head = fmt::format("{}-{}-{}-", join_token_prefix, token_version, digest_);
    crypto::SecureBuffer out(head.size() + secret_.size());
    std::copy(head.begin(), head.end(), out.data());
    std::copy(secret_.data(), secret_.data() + secret_.size(), out.data() + head.size());
    return out;
}

bool JoinToken::matches(const JoinToken& expected) const noexcept {
    // Both comparisons run whatever the first one says.
    bool digest = crypto::constant_time_equal(digest_, expected.digest_);
    bool secret = crypto::constant_time_equal(view(secret_), view(expected.secret_));
    return digest & secret;
}

bool JoinToken::pins(std::string_view ca_bundle_pem) const {
    return crypto::constant_time_equal(digest_, pki::ca_digest(ca_bundle_pem));
}

}  // namespace coffer::pki
