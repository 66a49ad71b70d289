#include "coffer/crypto/aead.h"

#include <sodium.h>

#include <cstring>
#include <stdexcept>

#include "coffer/crypto/random.h"

namespace coffer::crypto {
namespace {

constexpr std::size_t nonce_bytes = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
constexpr std::size_t header_bytes = 1 + 4 + nonce_bytes;
static_assert(nonce_bytes == 24);
static_assert(crypto_aead_xchacha20poly1305_ietf_ABYTES == 16);
static_assert(crypto_aead_xchacha20poly1305_ietf_KEYBYTES == key_bytes);

// The authenticated data covers the header too, so the version and key id cannot be altered.
std::string full_ad(std::string_view header, std::string_view ad) {
    std::string out;
    out.reserve(header.size() + ad.size());
    out.append(header);
    out.append(ad);
    return out;
}

}  // namespace

Key Key::generate(std::uint32_t id) {
    Key k{id, SecureBuffer(key_bytes)};
    random_bytes(k.bytes.span());
    return k;
}

std::string seal(const Key& key, std::span<const std::uint8_t> plaintext, std::string_view ad) {
    if (key.bytes.size() != key_bytes) throw std::invalid_argument("seal: key is not 32 bytes");
    std::string out(header_bytes + plaintext.size() + crypto_aead_xchacha20poly1305_ietf_ABYTES,
                    '\0');
    auto* p = reinterpret_cast<std::uint8_t*>(out.data());
    p[0] = sealed_version;
    p[1] = static_cast<std::uint8_t>(key.id >> 24);
    p[2] = static_cast<std::uint8_t>(key.id >> 16);
    p[3] = static_cast<std::uint8_t>(key.id >> 8);
    p[4] = static_cast<std::uint8_t>(key.id);
    public_random_bytes({p + 5, nonce_bytes});
    auto aad = full_ad(std::string_view(out.data(), header_bytes), ad);
    unsigned long long clen = 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt(p + header_bytes, &clen, plaintext.data(),
                                               plaintext.size(),
                                               reinterpret_cast<const std::uint8_t*>(aad.data()),
                                               aad.size(), nullptr, p + 5, key.bytes.data());
    out.resize(header_bytes + clen);
    return out;
}

std::optional<std::uint32_t> sealed_key_id(std::string_view sealed) noexcept {
    if (sealed.size() < sealed_overhead) return std::nullopt;
    auto* p = reinterpret_cast<const std::uint8_t*>(sealed.data());
    if (p[0] != sealed_version) return std::nullopt;
    return (std::uint32_t{p[1]} << 24) | (std::uint32_t{p[2]} << 16) | (std::uint32_t{p[3]} << 8) |
           std::uint32_t{p[4]};
}

std::optional<SecureBuffer> open(const Key& key, std::string_view sealed, std::string_view ad) {
    if (sealed.size() < sealed_overhead) return std::nullopt;
    SecureBuffer out(sealed.size() - sealed_overhead);
    if (!open_into(key, sealed, ad, out.span())) return std::nullopt;
    return out;
}

std::optional<std::size_t> open_into(const Key& key, std::string_view sealed, std::string_view ad,
                                     std::span<std::uint8_t> out) {
    auto id = sealed_key_id(sealed);
    if (!id || *id != key.id || key.bytes.size() != key_bytes) return std::nullopt;
    auto* p = reinterpret_cast<const std::uint8_t*>(sealed.data());
    std::size_t clen = sealed.size() - header_bytes;
    if (out.size() < clen - crypto_aead_xchacha20poly1305_ietf_ABYTES) return std::nullopt;
    auto aad = full_ad(sealed.substr(0, header_bytes), ad);
    unsigned long long mlen = 0;
    // An empty plaintext still needs a valid output pointer.
    std::uint8_t dummy;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(
            out.empty() ? &dummy : out.data(), &mlen, nullptr, p + header_bytes, clen,
            reinterpret_cast<const std::uint8_t*>(aad.data()), aad.size(), p + 5,
            key.bytes.data()) != 0)
        return std::nullopt;
    return static_cast<std::size_t>(mlen);
}

SecureBuffer derive_key(std::span<const std::uint8_t> ikm, std::string_view context) {
    init();
    SecureBuffer out(key_bytes);
    crypto_generichash_state st;
    crypto_generichash_init(&st, nullptr, 0, key_bytes);
    crypto_generichash_update(&st, reinterpret_cast<const std::uint8_t*>(context.data()),
                              context.size());
    std::uint8_t sep = 0;
    crypto_generichash_update(&st, &sep, 1);
    crypto_generichash_update(&st, ikm.data(), ikm.size());
    crypto_generichash_final(&st, out.data(), key_bytes);
    sodium_memzero(&st, sizeof st);
    return out;
}

SecureBuffer keyed_mac(const SecureBuffer& key, std::string_view context,
                       std::initializer_list<std::span<const std::uint8_t>> parts) {
    init();
    if (key.size() != key_bytes) throw std::invalid_argument("keyed_mac: the key must be 32 bytes");
    SecureBuffer out(key_bytes);
    crypto_generichash_state st;
    crypto_generichash_init(&st, key.data(), key.size(), key_bytes);
    auto add = [&](std::span<const std::uint8_t> bytes) {
        std::uint8_t length[8];
        for (int i = 0; i < 8; ++i)
            length[i] =
                static_cast<std::uint8_t>(static_cast<std::uint64_t>(bytes.size()) >> (8 * i));
        crypto_generichash_update(&st, length, sizeof length);
        crypto_generichash_update(&st, bytes.data(), bytes.size());
    };
    add({reinterpret_cast<const std::uint8_t*>(context.data()), context.size()});
    for (auto part : parts) add(part);
    crypto_generichash_final(&st, out.data(), key_bytes);
    sodium_memzero(&st, sizeof st);
    return out;
}

}  // namespace coffer::crypto
