#include "registry_flags.h"

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/json.hpp>

#include <CLI/CLI.hpp>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "coffer/base/unique_fd.h"
#include "coffer/crypto/encoding.h"
#include "coffer/model/secure_json.h"
#include "common.h"
#include "secret_input.h"
#include "service_flags.h"

namespace coffer::cli {

namespace json = boost::json;

namespace {

// More than any login state needs; a bigger file is refused rather than read.
constexpr std::size_t max_config_size = 4 * 1024 * 1024;

constexpr std::string_view docker_hub = "docker.io";

// A config.json key as the docker CLI's ConvertToHostname reads it: without its scheme and path.
std::string_view key_host(std::string_view key) {
    for (std::string_view scheme : {"http://", "https://"})
        if (key.starts_with(scheme)) key.remove_prefix(scheme.size());
    return key.substr(0, key.find('/'));
}

// Whether a config.json key names the registry; Docker Hub's keys are its index's address
// (what `docker login` writes) or its short names.
bool names_registry(std::string_view key, std::string_view registry) {
    auto host = key_host(key);
    if (registry == docker_hub) return host == "index.docker.io" || host == docker_hub;
    return host == registry;
}

// The value of the member of `o` whose key names the registry: the key `docker login` writes
// first, else the first key that names it. nullptr when none does.
const json::value* entry_for(const json::object& o, std::string_view registry) {
    auto exact = registry == docker_hub ? docker_hub_auth_key : registry;
    if (auto* v = o.if_contains(exact)) return v;
    for (const auto& [key, v] : o)
        if (names_registry(key, registry)) return &v;
    return nullptr;
}

std::string_view string_member(const json::object& o, std::string_view key) {
    auto* v = o.if_contains(key);
    return v != nullptr && v->is_string() ? std::string_view(v->get_string()) : std::string_view();
}

// The config file's bytes in secure memory; nullopt when there is no file (no login state).
Result<std::optional<crypto::SecureBuffer>> read_config(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
    if (!fd) {
        if (errno == ENOENT) return std::optional<crypto::SecureBuffer>();
        return make_error(Errc::invalid_argument,
                          fmt::format("cannot read {}: {}", path, std::strerror(errno)));
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 0)
        return std::optional<crypto::SecureBuffer>();
    auto data = read_secret(fd.get(), max_config_size, path);
    if (!data) return std::move(data).error();
    return std::optional<crypto::SecureBuffer>(std::move(*data));
}

}  // namespace

Result<std::string> parse_resolve_image(const std::string& v) {
    if (v == "always" || v == "changed" || v == "never") return v;
    return usage(fmt::format(
        "invalid argument \"{}\" for \"--resolve-image\" flag: use always, changed or never", v));
}

void RegistryFlags::add(CLI::App* cmd, std::string_view default_resolve) {
    resolve_image = default_resolve;
    cmd->add_option("--registry-auth-secret", auth_secret,
                    "Secret (name or ID) holding a docker config.json to pull the image with "
                    "(\"\" on update: none)");
    cmd->add_option("--resolve-image", resolve_image,
                    "Query the registry to resolve the image digest (\"always\", \"changed\", "
                    "\"never\")")
        // The choices shown (and completed); parse_resolve_image checks them as docker does.
        ->type_name("TEXT:{always,changed,never}")
        ->capture_default_str();
    cmd->add_flag("--with-registry-auth", with_registry_auth,
                  "Send registry authentication details (from the docker CLI's config.json) to "
                  "the manager");
}

bool RegistryFlags::auth_secret_given(const CLI::App* cmd) const {
    return cmd->count("--registry-auth-secret") > 0;
}

Result<std::string> RegistryFlags::query(const CLI::App* cmd) const {
    auto mode = parse_resolve_image(resolve_image);
    if (!mode) return std::move(mode).error();
    if (with_registry_auth && auth_secret_given(cmd))
        return usage("--with-registry-auth and --registry-auth-secret cannot be used together");
    return "resolveImage=" + *mode;
}

Result<void> set_registry_auth(json::object& spec, const json::value* secret) {
    auto& cs = obj(obj(spec, "TaskTemplate"), "ContainerSpec");
    if (secret == nullptr) {
        cs["CofferRegistryAuth"] = nullptr;
        return {};
    }
    auto id = field(*secret, {"ID"});
    auto name = field(*secret, {"Spec", "Name"});
    if (id.empty() || name.empty())
        return make_error(Errc::internal,
                          "malformed answer from cofferd: a secret without ID or name");
    cs["CofferRegistryAuth"] = json::object{{"SecretID", id}, {"SecretName", name}};
    return {};
}

std::string image_registry(std::string_view image) {
    auto slash = image.find('/');
    if (slash == std::string_view::npos) return std::string(docker_hub);
    auto first = image.substr(0, slash);
    if (first.find_first_of(".:") == std::string_view::npos && first != "localhost")
        return std::string(docker_hub);
    // Docker Hub's other names are Docker Hub too.
    if (first == "index.docker.io" || first == "registry-1.docker.io")
        return std::string(docker_hub);
    return std::string(first);
}

std::string docker_config_dir() {
    if (const char* dir = std::getenv("DOCKER_CONFIG"); dir != nullptr && *dir != '\0') return dir;
    std::string home;
    if (const char* h = std::getenv("HOME"); h != nullptr && *h != '\0') {
        home = h;
    } else {
        struct passwd pw {};
        struct passwd* found = nullptr;
        std::vector<char> buf(16 * 1024);
        if (::getpwuid_r(::getuid(), &pw, buf.data(), buf.size(), &found) == 0 &&
            found != nullptr && found->pw_dir != nullptr)
            home = found->pw_dir;
    }
    return home + "/.docker";
}

Result<std::optional<crypto::SecureBuffer>> registry_auth_header(std::string_view image,
                                                                 const std::string& config_dir) {
    using Header = std::optional<crypto::SecureBuffer>;
    const auto path = config_dir + "/config.json";
    const auto registry = image_registry(image);
    const std::string server = registry == docker_hub ? std::string(docker_hub_auth_key) : registry;

    auto text = read_config(path);
    if (!text) return std::move(text).error();
    if (!*text) return Header();
    // The whole file is parsed in secure memory: its "auth" members are credentials.
    auto parsed = model::SecureJson::parse(**text);
    if (!parsed)
        return make_error(Errc::invalid_argument,
                          fmt::format("{}: {}", path, parsed.error().message));
    text->reset();
    if (!parsed->value().is_object())
        return make_error(Errc::invalid_argument, fmt::format("{}: not a JSON object", path));
    const auto& root = parsed->value().get_object();

    const auto helper_refused = make_error(
        Errc::invalid_argument,
        fmt::format("{} keeps the credentials for {} in a credential helper, which coffer does "
                    "not read: use --registry-auth-secret with a secret holding a config.json "
                    "for the registry instead of --with-registry-auth",
                    path, registry));
    if (!string_member(root, "credsStore").empty()) return helper_refused;
    if (auto* helpers = root.if_contains("credHelpers"); helpers && helpers->is_object())
        if (entry_for(helpers->get_object(), registry) != nullptr) return helper_refused;

    const auto* auths = root.if_contains("auths");
    const auto* entry =
        auths && auths->is_object() ? entry_for(auths->get_object(), registry) : nullptr;
    if (entry == nullptr || !entry->is_object()) return Header();
    auto token = string_member(entry->get_object(), "identitytoken");
    auto auth = string_member(entry->get_object(), "auth");
    if (token.empty() && auth.empty()) return Header();

    // {"username","password","serveraddress"} or {"identitytoken","serveraddress"}, built and
    // serialised in secure memory.
    json::value out(json::object_kind, parsed->storage());
    auto& o = out.get_object();
    if (!token.empty()) {
        o["identitytoken"] = token;
    } else {
        // Copied into `out`; the decoded pair is wiped when it goes out of scope.
        auto pair = crypto::base64_decode_secure(auth);
        const auto* begin = pair ? reinterpret_cast<const char*>(pair->data()) : nullptr;
        const auto* colon = pair && !pair->empty()
                                ? static_cast<const char*>(std::memchr(begin, ':', pair->size()))
                                : nullptr;
        if (colon == nullptr)
            return make_error(Errc::invalid_argument,
                              fmt::format("{}: the \"auth\" of {} is not base64 of user:password",
                                          path, registry));
        const auto user = static_cast<std::size_t>(colon - begin);
        o["username"] = std::string_view(begin, user);
        o["password"] = std::string_view(colon + 1, pair->size() - user - 1);
    }
    o["serveraddress"] = server;
    auto text_json = model::serialize_secure(out);
    // Docker's base64.URLEncoding: the URL-safe alphabet, padding kept.
    auto header = crypto::base64_encode_secure(text_json.span());
    for (auto& c : header.span()) {
        if (c == '+') c = '-';
        if (c == '/') c = '_';
    }
    return Header(std::move(header));
}

// --with-registry-auth: the X-Registry-Auth for the image from the docker CLI's login state;
// none, with a warning, when it holds no credentials for the image's registry.
std::optional<crypto::SecureBuffer> login_state_header(const std::string& image) {
    auto dir = docker_config_dir();
    auto header = must(registry_auth_header(image, dir));
    if (!header)
        std::fprintf(stderr,
                     "WARNING: no credentials for registry %s in %s/config.json: the image will be "
                     "pulled without any\n",
                     image_registry(image).c_str(), dir.c_str());
    return header;
}

}  // namespace coffer::cli
