#include "ossl.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>

#include <ctime>

#include "coffer/crypto/encoding.h"

namespace coffer::pki::ossl {

Error error(Errc code, std::string_view what) {
    std::string reason;
    while (unsigned long e = ERR_get_error()) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        if (!reason.empty()) reason += "; ";
        reason += buf;
    }
    if (reason.empty()) return make_error(code, std::string(what));
    return make_error(code, fmt::format("{}: {}", what, reason));
}

void fail(std::string_view what) {
    throw ErrorException(error(Errc::internal, what));
}

Bio read_bio(std::string_view bytes) {
    Bio bio(BIO_new_mem_buf(bytes.data(), static_cast<int>(bytes.size())));
    if (!bio) fail("allocate memory BIO");
    return bio;
}

Result<Req> read_verified_csr(std::string_view csr_pem) {
    if (csr_pem.size() > max_pem_bytes)
        return make_error(Errc::too_large, "certificate request too large");
    auto bio = read_bio(csr_pem);
    Req req(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
    if (!req) return error(Errc::invalid_argument, "read certificate request");
    EVP_PKEY* pub = X509_REQ_get0_pubkey(req.get());
    if (pub == nullptr) return error(Errc::invalid_argument, "certificate request has no key");
    if (X509_REQ_verify(req.get(), pub) != 1)
        return error(Errc::invalid_argument, "certificate request signature does not verify");
    return req;
}

namespace {

std::string drain(BIO* bio) {
    char* data = nullptr;
    long len = BIO_get_mem_data(bio, &data);
    return std::string(data, static_cast<std::size_t>(len));
}

Bio write_bio() {
    Bio bio(BIO_new(BIO_s_mem()));
    if (!bio) fail("allocate memory BIO");
    return bio;
}

}  // namespace

std::string to_pem(const X509* cert) {
    auto bio = write_bio();
    if (PEM_write_bio_X509(bio.get(), cert) != 1) fail("encode certificate");
    return drain(bio.get());
}

std::string to_pem(const X509_REQ* req) {
    auto bio = write_bio();
    if (PEM_write_bio_X509_REQ(bio.get(), req) != 1) fail("encode certificate request");
    return drain(bio.get());
}

crypto::SecureBuffer to_pem(const EVP_PKEY* key) {
    // BIO_s_secmem: its buffer comes from OpenSSL's secure heap when one is set up and is
    // cleared when freed in any case.
    Bio bio(BIO_new(BIO_s_secmem()));
    if (!bio) fail("allocate memory BIO");
    if (PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
        fail("encode private key");
    char* data = nullptr;
    long len = BIO_get_mem_data(bio.get(), &data);
    return crypto::SecureBuffer::copy_of(std::string_view(data, static_cast<std::size_t>(len)));
}

Result<X509Ptr> read_cert(std::string_view pem) {
    if (pem.size() > max_pem_bytes) return make_error(Errc::too_large, "certificate too large");
    auto bio = read_bio(pem);
    X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (!cert) return error(Errc::invalid_argument, "read certificate");
    return cert;
}

Result<Pkey> read_key(const crypto::SecureBuffer& key_pem) {
    auto bio = read_bio({reinterpret_cast<const char*>(key_pem.data()), key_pem.size()});
    // A null password callback with no default password: an encrypted key fails, never prompts.
    Pkey key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, const_cast<char*>("")));
    if (!key) return error(Errc::invalid_argument, "read private key");
    return key;
}

Pkey generate_p256() {
    Pkey key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
    if (!key) fail("generate ECDSA P-256 key");
    return key;
}

bool is_p256(const EVP_PKEY* key) noexcept {
    if (EVP_PKEY_get_base_id(key) != EVP_PKEY_EC) return false;
    char group[64] = {};
    std::size_t len = 0;
    if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                       &len) != 1)
        return false;
    return std::string_view(group, len) == SN_X9_62_prime256v1;
}

void set_random_serial(X509* cert) {
    std::unique_ptr<BIGNUM, Deleter<BN_free>> bn(BN_new());
    if (!bn || BN_rand(bn.get(), 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1)
        fail("generate serial number");
    if (BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert)) == nullptr)
        fail("set serial number");
}

void set_validity(X509* cert, std::chrono::system_clock::time_point not_before,
                  std::chrono::system_clock::time_point not_after) {
    if (ASN1_TIME_set(X509_getm_notBefore(cert),
                      std::chrono::system_clock::to_time_t(not_before)) == nullptr ||
        ASN1_TIME_set(X509_getm_notAfter(cert), std::chrono::system_clock::to_time_t(not_after)) ==
            nullptr)
        fail("set validity");
}

void add_extension(X509* cert, X509* issuer, int nid, const char* value) {
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
    std::unique_ptr<X509_EXTENSION, Deleter<X509_EXTENSION_free>> ext(
        X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
    if (!ext || X509_add_ext(cert, ext.get(), -1) != 1)
        fail(fmt::format("add extension {}", value));
}

std::chrono::system_clock::time_point to_time_point(const ASN1_TIME* t) {
    std::tm tm{};
    if (ASN1_TIME_to_tm(t, &tm) != 1) fail("read certificate time");
    return std::chrono::system_clock::from_time_t(timegm(&tm));
}

namespace {

// An object's DER encoding (OpenSSL's i2d_* convention), in base64.
template <typename T>
std::string der_base64(const T* object, int (*encode)(const T*, unsigned char**),
                       const char* what) {
    unsigned char* der = nullptr;
    int len = encode(object, &der);
    if (len <= 0) fail(what);
    std::unique_ptr<unsigned char, Deleter<[](unsigned char* p) { OPENSSL_free(p); }>> owned(der);
    return crypto::base64_encode({der, static_cast<std::size_t>(len)});
}

}  // namespace

std::string public_key_base64(const EVP_PKEY* key) {
    return der_base64(key, &i2d_PUBKEY, "encode public key");
}

std::string name_base64(const X509_NAME* name) {
    return der_base64(name, &i2d_X509_NAME, "encode name");
}

}  // namespace coffer::pki::ossl
