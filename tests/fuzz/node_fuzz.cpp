// What a joining node or a session peer sends: join tokens, certificate requests, certificate
// bundles and session messages. Any bytes must fail cleanly, never crash.
#include <cstdint>
#include <string_view>

#include "coffer/nodeconn/message.h"
#include "coffer/pki/ca.h"
#include "coffer/pki/certificate.h"
#include "coffer/pki/token.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const auto ca = coffer::pki::CertificateAuthority::create_root();
    std::string_view text(reinterpret_cast<const char*>(data), size);
    if (auto token = coffer::pki::JoinToken::parse(text)) (void)token->text();
    (void)ca.issue(text, {"node1", coffer::pki::Role::worker, "cluster1"});
    (void)coffer::pki::split_bundle(text);
    (void)coffer::pki::verify_chain(text, ca.certificate_pem());
    (void)coffer::pki::verify_node_certificate(text, ca.certificate_pem(), "cluster1");
    (void)coffer::pki::verify_manager_certificate(text, ca.certificate_pem(), "cluster1");
    (void)coffer::nodeconn::make_message(coffer::crypto::SecureBuffer::copy_of(text));
    return 0;
}
