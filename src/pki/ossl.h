// OpenSSL plumbing shared by the pki sources: owners for OpenSSL objects, PEM in and out, and
// errors that carry OpenSSL's reason (never key material: OpenSSL does not put any there).
#pragma once

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "coffer/base/error.h"
#include "coffer/crypto/secure_buffer.h"

namespace coffer::pki::ossl {

template <auto Free>
struct Deleter {
    template <typename T>
    void operator()(T* p) const noexcept {
        Free(p);
    }
};

using Bio = std::unique_ptr<BIO, Deleter<BIO_free_all>>;
using Pkey = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY_free>>;
using X509Ptr = std::unique_ptr<X509, Deleter<X509_free>>;
using Req = std::unique_ptr<X509_REQ, Deleter<X509_REQ_free>>;
using Name = std::unique_ptr<X509_NAME, Deleter<X509_NAME_free>>;
using Store = std::unique_ptr<X509_STORE, Deleter<X509_STORE_free>>;
using StoreCtx = std::unique_ptr<X509_STORE_CTX, Deleter<X509_STORE_CTX_free>>;
inline void free_cert_stack(STACK_OF(X509) * s) noexcept {
    sk_X509_pop_free(s, X509_free);
}
using Stack = std::unique_ptr<STACK_OF(X509), Deleter<free_cert_stack>>;

// Upper bound for any PEM we parse from a peer (a CSR, a chain, a CA bundle).
inline constexpr std::size_t max_pem_bytes = 64 * 1024;

// "what: <OpenSSL reason>", draining the thread's OpenSSL error queue.
Error error(Errc code, std::string_view what);
[[noreturn]] void fail(std::string_view what);

// A read-only memory BIO over bytes the caller keeps alive.
Bio read_bio(std::string_view bytes);

// A PEM certificate request whose signature verifies under its own key (the key:
// X509_REQ_get0_pubkey, owned by the request). too_large over max_pem_bytes, invalid_argument
// for anything malformed.
Result<Req> read_verified_csr(std::string_view csr_pem);

std::string to_pem(const X509* cert);
std::string to_pem(const X509_REQ* req);
// PKCS#8 PEM through a clearing memory BIO, copied into secure memory.
crypto::SecureBuffer to_pem(const EVP_PKEY* key);

Result<X509Ptr> read_cert(std::string_view pem);
Result<Pkey> read_key(const crypto::SecureBuffer& key_pem);

Pkey generate_p256();
bool is_p256(const EVP_PKEY* key) noexcept;

// A random positive 127-bit serial.
void set_random_serial(X509* cert);
void set_validity(X509* cert, std::chrono::system_clock::time_point not_before,
                  std::chrono::system_clock::time_point not_after);
void add_extension(X509* cert, X509* issuer, int nid, const char* value);
std::chrono::system_clock::time_point to_time_point(const ASN1_TIME* t);

// Base64 of the DER SubjectPublicKeyInfo: how a key is named (and compared) outside OpenSSL.
std::string public_key_base64(const EVP_PKEY* key);
// Base64 of a name's DER encoding (Docker's CertIssuerSubject).
std::string name_base64(const X509_NAME* name);

}  // namespace coffer::pki::ossl
