// The node's identity in the cluster: enrolment with a join token, and the files it leaves in
// <data_dir>/identity/ (0700): node.key (0600), node.crt, ca.crt and node.json.
#pragma once

#include <string>
#include <string_view>

#include "coffer/base/error.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/nodeconn/client.h"
#include "coffer/nodeconn/tls.h"
#include "coffer/pki/certificate.h"
#include "coffer/pki/node_key.h"

namespace coffer::agent {

// node.json: {"node_id", "role" ("coffer-worker"|"coffer-manager"), "cluster_id", "manager"}.
struct NodeConfig {
    std::string node_id;
    pki::Role role = pki::Role::worker;
    std::string cluster_id;
    std::string manager;  // HOST:PORT of the node port it joined through
};

struct Identity {
    NodeConfig node;
    nodeconn::Credentials credentials;  // node.crt, node.key (secure memory), ca.crt
};

// "HOST:PORT" or "[v6]:PORT"; invalid_argument otherwise.
Result<nodeconn::Endpoint> parse_endpoint(std::string_view host_port);
// The endpoint as parse_endpoint reads it: HOST:PORT, an IPv6 host in brackets.
std::string format_endpoint(const nodeconn::Endpoint& endpoint);

std::string identity_dir(const std::string& data_dir);
bool identity_exists(const std::string& data_dir);

// Joins the cluster: parses the token strictly, generates the key and CSR here, joins through
// the manager (pinning its CA by the token's digest), checks what came back (the certificate is
// for our key, issued by that CA, names the node id the manager gave) and only then stores the
// identity, so a refused join leaves nothing. already_exists when an identity is stored. Errors
// never contain the token.
Result<Identity> enroll(const std::string& data_dir, std::string_view manager,
                        const crypto::SecureBuffer& token_text, const nodeconn::Limits& limits = {},
                        std::string_view hostname = {});
// The same with the key given: a join asked again after its answer was lost uses the key it
// first used, so that the manager recognizes the node it registered then (its ID follows from
// the key) instead of registering a second one.
Result<Identity> enroll(const std::string& data_dir, std::string_view manager,
                        const crypto::SecureBuffer& token_text, const pki::NodeKey& key,
                        const nodeconn::Limits& limits = {}, std::string_view hostname = {});

// A certificate the manager renewed: checks it (for current's key, CN = our node id, O = our
// cluster id, chains to a root of ca_bundle_pem) and replaces ca.crt, then node.crt (and
// node.json when the role changed) in <data_dir>/identity: each file written beside its place,
// fsynced, renamed over it, then the directory fsynced. Either order of a crash between the two
// renames leaves a pair that verifies (the bundle a rotation sends holds both roots, and a
// certificate issued during it carries the cross-signed root). Returns the new identity; on
// error nothing changed or only ca.crt did.
Result<Identity> store_renewal(const std::string& data_dir, const Identity& current,
                               std::string_view cert_chain_pem, std::string_view ca_bundle_pem);

// Reads the stored identity back. Refuses a key file that its group or others may read, or that
// belongs to another user, and a certificate that is not for the key.
Result<Identity> load_identity(const std::string& data_dir);

}  // namespace coffer::agent
