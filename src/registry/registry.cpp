#include "coffer/registry/registry.h"

#include <sodium.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include <boost/json.hpp>

#include "coffer/crypto/encoding.h"
#include "coffer/model/secure_json.h"

namespace coffer::registry {
namespace {

constexpr std::size_t max_manifest = 4 << 20;

}  // namespace

AuthFile::AuthFile(const crypto::SecureBuffer& config)
    : fd_(::memfd_create("registry-auth", MFD_CLOEXEC)), size_(config.size()) {
    if (!fd_) throw_errno("memfd_create");
    if (size_ == 0) return;
    if (::ftruncate(fd_.get(), static_cast<off_t>(size_)) != 0) throw_errno("ftruncate");
    map_ = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
    if (map_ == MAP_FAILED) {
        map_ = nullptr;
        throw_errno("mmap");
    }
    // Locked through this mapping, the shared pages cannot be swapped out.
    if (::mlock(map_, size_) != 0) {
        ::munmap(map_, size_);
        map_ = nullptr;
        throw_errno("mlock");
    }
    std::memcpy(map_, config.data(), size_);
}

AuthFile::~AuthFile() {
    if (map_) {
        sodium_memzero(map_, size_);
        ::munlock(map_, size_);
        ::munmap(map_, size_);
    }
}

std::string sha256_of(std::string_view bytes) {
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
    std::string out = "sha256:";
    for (auto c : h) out += fmt::format("{:02x}", c);
    return out;
}

std::vector<std::string> flags(const Options& o, const model::ImageRef& ref, bool with_auth,
                               std::string_view prefix) {
    std::vector<std::string> f;
    auto flag = [&](std::string_view name) { return fmt::format("--{}{}", prefix, name); };
    f.push_back(with_auth ? flag("authfile=/dev/stdin") : flag("no-creds"));
    std::error_code ec;
    auto certs = fmt::format("{}/{}", o.certs_dir, ref.domain);
    if (!o.certs_dir.empty() && std::filesystem::is_directory(certs, ec))
        f.push_back(flag("cert-dir=") + certs);
    bool insecure = std::find(o.insecure.begin(), o.insecure.end(), ref.domain) != o.insecure.end();
    f.push_back(flag("tls-verify=") + (insecure ? "false" : "true"));
    return f;
}

CommandResult skopeo(std::vector<std::string> args, const Options& o, const AuthFile* auth) {
    Child::Options c;
    c.argv = {"skopeo", fmt::format("--command-timeout={}s", o.timeout.count())};
    c.argv.insert(c.argv.end(), args.begin(), args.end());
    if (auth) c.stdin_fd = auth->fd();
    return run_command(std::move(c));
}

Error failure(const CommandResult& c, const model::ImageRef& ref) {
    // What skopeo said, without its log decoration: the registry's reason.
    std::string text = c.err.empty() ? c.out : c.err;
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    auto nl = text.rfind('\n');
    std::string why = nl == std::string::npos ? text : text.substr(nl + 1);
    if (auto m = why.find("msg=\""); m != std::string::npos) {
        why = why.substr(m + 5);
        if (auto end = why.rfind('"'); end != std::string::npos) why.resize(end);
        std::string unescaped;
        for (std::size_t i = 0; i < why.size(); ++i) {
            if (why[i] == '\\' && i + 1 < why.size()) ++i;
            unescaped += why[i];
        }
        why = std::move(unescaped);
    }
    // skopeo's wrapping names the reference again.
    if (why.starts_with("Error parsing image name \""))
        if (auto end = why.find("\": "); end != std::string::npos) why = why.substr(end + 3);
    if (why.empty()) why = c.describe();
    if (why.size() > 400) why = why.substr(0, 400) + "...";
    bool denied = why.find("unauthorized") != std::string::npos ||
                  why.find("denied") != std::string::npos ||
                  why.find("authentication required") != std::string::npos;
    return make_error(denied ? Errc::permission_denied : Errc::unavailable,
                      denied ? fmt::format("pull access denied for {}: {}", ref.str(), why)
                             : fmt::format("pull {}: {}", ref.str(), why));
}

Result<Manifest> inspect(const model::ImageRef& ref, const std::string& transport,
                         const AuthFile* auth, const Options& o) {
    auto args = std::vector<std::string>{"inspect", "--raw", "--retry-times=0"};
    auto f = flags(o, ref, auth != nullptr, "");
    args.insert(args.end(), f.begin(), f.end());
    args.push_back(transport);
    auto c = skopeo(std::move(args), o, auth);
    if (!c.ok()) return failure(c, ref);
    if (c.out.size() > max_manifest)
        return make_error(
            Errc::invalid_argument,
            fmt::format("pull {}: the manifest is larger than {} bytes", ref.str(), max_manifest));
    Manifest m;
    m.digest = sha256_of(c.out);
    m.raw = std::move(c.out);
    return m;
}

Result<crypto::SecureBuffer> config_from_header(std::string_view header,
                                                const model::ImageRef& ref) {
    if (header.empty()) return crypto::SecureBuffer{};
    // base64url, padded (the docker CLI) or not: decoded without a copy outside secure memory.
    auto unpadded = header;
    while (unpadded.ends_with('=')) unpadded.remove_suffix(1);
    auto decoded = crypto::base64url_decode_secure(unpadded);
    auto bad = make_error(Errc::invalid_argument,
                          "X-Registry-Auth is not base64url of a JSON object of credentials");
    if (!decoded) return bad;
    auto parsed = model::SecureJson::parse(*decoded);
    if (!parsed || !parsed->value().is_object()) return bad;
    std::string_view user, password, token;
    for (auto [key, out] : {std::pair{"username", &user}, std::pair{"password", &password},
                            std::pair{"identitytoken", &token}}) {
        auto* x = parsed->value().as_object().if_contains(key);
        if (x && x->is_string()) *out = x->as_string();
    }
    if (user.empty() && password.empty() && token.empty()) return crypto::SecureBuffer{};
    // {"auths":{"<registry>":{"auth":"<base64 of user:password>"[,"identitytoken":"..."]}}},
    // built in the same secure storage.
    crypto::SecureBuffer pair(user.size() + 1 + password.size());
    std::memcpy(pair.data(), user.data(), user.size());
    pair.data()[user.size()] = ':';
    std::memcpy(pair.data() + user.size() + 1, password.data(), password.size());
    auto b64 = crypto::base64_encode_secure(pair.span());
    auto st = parsed->storage();
    boost::json::object entry(st);
    entry["auth"] = boost::json::string(
        std::string_view(reinterpret_cast<const char*>(b64.data()), b64.size()), st);
    if (!token.empty()) entry["identitytoken"] = boost::json::string(token, st);
    boost::json::object auths(st);
    auths[ref.domain] = std::move(entry);
    boost::json::object root(st);
    root["auths"] = std::move(auths);
    return model::serialize_secure(root);
}

}  // namespace coffer::registry
