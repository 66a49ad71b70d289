#include "coffer/pki/node_key.h"

#include <openssl/err.h>
#include <openssl/pem.h>

#include "ossl.h"

namespace coffer::pki {
namespace {

std::string csr_for(EVP_PKEY* key) {
    ossl::Req req(X509_REQ_new());
    // An empty subject: the manager names the node, whatever a CSR would ask for.
    if (!req || X509_REQ_set_version(req.get(), X509_REQ_VERSION_1) != 1 ||
        X509_REQ_set_pubkey(req.get(), key) != 1)
        ossl::fail("build certificate request");
    if (X509_REQ_sign(req.get(), key, EVP_sha256()) == 0) ossl::fail("sign certificate request");
    return ossl::to_pem(req.get());
}

}  // namespace

NodeKey NodeKey::generate() {
    auto key = ossl::generate_p256();
    return NodeKey{ossl::to_pem(key.get()), csr_for(key.get())};
}

Result<std::string> make_csr(const crypto::SecureBuffer& key_pem) {
    auto key = ossl::read_key(key_pem);
    if (!key) return std::move(key).error().context("certificate request");
    return csr_for(key->get());
}

Result<std::string> csr_public_key(std::string_view csr_pem) {
    auto req = ossl::read_verified_csr(csr_pem);
    if (!req) return std::move(req).error();
    return ossl::public_key_base64(X509_REQ_get0_pubkey(req->get()));
}

}  // namespace coffer::pki
