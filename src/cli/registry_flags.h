// The registry flags of `coffer service create|update`, and what --with-registry-auth reads: the
// docker CLI's login state (its config.json) turned into Docker's X-Registry-Auth header for one
// image. Credentials stay in secure memory from the file's bytes to the header's.
#pragma once

#include <boost/json/fwd.hpp>

#include <optional>
#include <string>
#include <string_view>

#include "coffer/base/error.h"
#include "coffer/crypto/secure_buffer.h"

namespace CLI {
class App;
}

namespace coffer::cli {

// The registry flags of create and update: --registry-auth-secret NAME (coffer's: the secret
// holding a docker config.json to pull with), --resolve-image always|changed|never and
// --with-registry-auth (the docker CLI's login state, sent as X-Registry-Auth).
struct RegistryFlags {
    std::string auth_secret;
    std::string resolve_image;
    bool with_registry_auth = false;

    // default_resolve: "always" for create, "changed" for update, as the docker CLI's.
    void add(CLI::App* cmd, std::string_view default_resolve);
    // Whether --registry-auth-secret was given (on update, "" removes the credentials).
    bool auth_secret_given(const CLI::App* cmd) const;
    // The query parameter the request carries ("resolveImage=always"), once the flags are checked:
    // a usage error for another --resolve-image value, or for --with-registry-auth with
    // --registry-auth-secret.
    Result<std::string> query(const CLI::App* cmd) const;
};
// A --resolve-image value: always, changed or never.
Result<std::string> parse_resolve_image(const std::string& v);
// Sets the spec's TaskTemplate.ContainerSpec.CofferRegistryAuth to {"SecretID","SecretName"} of
// `secret` (a GET /secrets/{name} answer), or to null (the credentials removed) when secret is
// null.
Result<void> set_registry_auth(boost::json::object& spec, const boost::json::value* secret);

// The key Docker Hub's credentials have in config.json (the docker CLI's IndexServer).
inline constexpr std::string_view docker_hub_auth_key = "https://index.docker.io/v1/";

// The registry an image is pulled from, as Docker reads a reference: its first path component
// when that has a '.' or a ':' or is "localhost", else Docker Hub ("docker.io").
std::string image_registry(std::string_view image);

// The directory of the docker CLI's config.json: $DOCKER_CONFIG, else ~/.docker.
std::string docker_config_dir();

// The X-Registry-Auth value for pulling `image`, from config_dir/config.json: base64url (padded,
// as the docker CLI sends it) of {"username","password","serveraddress"}, or of
// {"identitytoken","serveraddress"} when the entry has an identity token. nullopt when the file
// holds no credentials for the image's registry (no file, no entry). An error when a credential
// helper (credsStore, credHelpers) would hold them, or the file is malformed; no message ever
// carries a credential.
Result<std::optional<crypto::SecureBuffer>> registry_auth_header(std::string_view image,
                                                                 const std::string& config_dir);

// --with-registry-auth: the X-Registry-Auth for image from the docker CLI's login state; none,
// with a warning on stderr, when it holds no credentials for the image's registry. Exits on a
// config it cannot use (a credential helper, a malformed file).
std::optional<crypto::SecureBuffer> login_state_header(const std::string& image);

}  // namespace coffer::cli
