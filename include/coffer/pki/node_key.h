// The node's side of enrolment: a private key generated on the node, and a certificate signing
// request that offers the manager nothing but the public key.
#pragma once

#include <string>
#include <string_view>

#include "coffer/base/error.h"
#include "coffer/crypto/secure_buffer.h"

namespace coffer::pki {

struct NodeKey {
    crypto::SecureBuffer key_pem;  // PKCS#8 "PRIVATE KEY", ECDSA P-256
    std::string csr_pem;           // signed with key_pem, empty subject

    static NodeKey generate();
};

// A CSR for an existing key (certificate renewal keeps the key unless asked to rotate it).
Result<std::string> make_csr(const crypto::SecureBuffer& key_pem);

// The public key a CSR asks to certify (base64 DER SubjectPublicKeyInfo, as in NodeIdentity),
// after checking the CSR's signature. invalid_argument for anything malformed or badly signed.
Result<std::string> csr_public_key(std::string_view csr_pem);

}  // namespace coffer::pki
