// Enrolment writes the identity into a fresh directory next to its final place and renames it
// in at the end: a crash or a failure midway never leaves a half identity that load_identity
// would have to make sense of.
#include "coffer/agent/enrollment.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <charconv>
#include <cstdio>
#include <filesystem>

#include "coffer/base/log.h"
#include "coffer/base/unique_fd.h"
#include "coffer/crypto/random.h"
#include "coffer/crypto/secure_file.h"
#include "coffer/pki/node_key.h"
#include "coffer/pki/token.h"

namespace coffer::agent {

namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

constexpr const char* key_file = "node.key";
constexpr const char* cert_file = "node.crt";
constexpr const char* ca_file = "ca.crt";
constexpr const char* config_file = "node.json";
constexpr std::size_t max_file_bytes = 1024 * 1024;

UniqueFd open_dir(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) throw_errno(fmt::format("open {}", path));
    return fd;
}

void write_all(int fd, std::span<const std::uint8_t> bytes, const std::string& where) {
    std::size_t done = 0;
    while (done < bytes.size()) {
        auto n = ::write(fd, bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_errno(fmt::format("write {}", where));
        done += static_cast<std::size_t>(n);
    }
}

std::span<const std::uint8_t> bytes_of(std::string_view s) {
    return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

// A new file (never an existing one, never through a symlink), synced before it counts.
void create_file(int dir, const std::string& dir_path, const char* name,
                 std::span<const std::uint8_t> bytes, mode_t mode) {
    auto where = fmt::format("{}/{}", dir_path, name);
    UniqueFd fd(::openat(dir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode));
    if (!fd) throw_errno(fmt::format("create {}", where));
    if (::fchmod(fd.get(), mode) != 0) throw_errno(fmt::format("chmod {}", where));
    write_all(fd.get(), bytes, where);
    if (::fsync(fd.get()) != 0) throw_errno(fmt::format("fsync {}", where));
}

// Replaces name in dir with bytes: written to a temporary name beside it, synced, renamed over
// it. The caller fsyncs the directory.
void replace_file(int dir, const std::string& dir_path, const char* name,
                  std::span<const std::uint8_t> bytes, mode_t mode) {
    auto temp = fmt::format(".{}-{}", name, crypto::random_id());
    try {
        create_file(dir, dir_path, temp.c_str(), bytes, mode);
    } catch (...) {
        ::unlinkat(dir, temp.c_str(), 0);
        throw;
    }
    if (::renameat(dir, temp.c_str(), dir, name) != 0) {
        int e = errno;
        ::unlinkat(dir, temp.c_str(), 0);
        throw SystemError(e, fmt::format("rename {}/{} to {}", dir_path, temp, name));
    }
}

// A private file of the identity: regular, ours, bounded, read straight into secure memory.
// The key file must not be readable by anyone else.
crypto::SecureBuffer read_file(int dir, const std::string& dir_path, const char* name,
                               bool private_key) {
    auto where = fmt::format("{}/{}", dir_path, name);
    UniqueFd fd(::openat(dir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) throw_errno(fmt::format("open {}", where));
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) throw_errno(fmt::format("stat {}", where));
    if (!S_ISREG(st.st_mode))
        throw ErrorException(
            make_error(Errc::invalid_argument, fmt::format("{} is not a regular file", where)));
    if (private_key && (st.st_mode & 077) != 0)
        throw ErrorException(make_error(
            Errc::permission_denied,
            fmt::format(
                "the node key {} has mode {:04o}: only its owner may read it (chmod 600 {})", where,
                st.st_mode & 07777, where)));
    if (private_key && st.st_uid != ::geteuid())
        throw ErrorException(
            make_error(Errc::permission_denied,
                       fmt::format("the node key {} belongs to uid {}, not to this agent's uid {}",
                                   where, st.st_uid, ::geteuid())));
    if (static_cast<std::size_t>(st.st_size) > max_file_bytes)
        throw ErrorException(make_error(Errc::too_large, fmt::format("{} is too large", where)));
    return crypto::read_secure(fd.get(), static_cast<std::size_t>(st.st_size), where);
}

std::string text_of(const crypto::SecureBuffer& b) {
    return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

std::string config_json(const NodeConfig& c) {
    return json::serialize(json::object{{"node_id", c.node_id},
                                        {"role", pki::role_name(c.role)},
                                        {"cluster_id", c.cluster_id},
                                        {"manager", c.manager}});
}

Result<NodeConfig> parse_config(std::string_view text, const std::string& where) {
    boost::system::error_code ec;
    auto doc = json::parse(text, ec);
    auto bad = [&](std::string_view what) {
        return make_error(Errc::invalid_argument, fmt::format("{}: {}", where, what));
    };
    if (ec || !doc.is_object()) return bad("not a JSON object");
    auto& o = doc.as_object();
    auto field = [&](const char* k) -> const json::string* {
        auto* v = o.if_contains(k);
        return v && v->is_string() ? &v->get_string() : nullptr;
    };
    auto *id = field("node_id"), *role = field("role"), *cluster = field("cluster_id"),
         *manager = field("manager");
    if (!id || !role || !cluster || !manager)
        return bad("needs node_id, role, cluster_id and manager");
    auto r = pki::parse_role(*role);
    if (!r) return bad("unknown role");
    return NodeConfig{std::string(*id), *r, std::string(*cluster), std::string(*manager)};
}

// What the manager sent must be a certificate for our key, from the CA we pinned, naming the
// node id it gave us.
Result<NodeConfig> check_issued(const nodeconn::JoinResponse& r, const crypto::SecureBuffer& key,
                                std::string manager) {
    auto info = pki::read_certificate(r.certificate_pem);
    if (!info) return std::move(info).error().context("the manager's certificate");
    auto id = pki::verify_node_certificate(r.certificate_pem, r.ca_bundle_pem, info->organization);
    if (!id) return std::move(id).error().context("the manager's certificate");
    if (id->node_id != r.node_id)
        return make_error(Errc::internal, "the manager's certificate names another node");
    if (!pki::key_matches_certificate(key, r.certificate_pem))
        return make_error(Errc::internal, "the manager's certificate is not for this node's key");
    return NodeConfig{id->node_id, id->role, id->cluster_id, std::move(manager)};
}

// Removes a partly written identity directory unless disarmed.
struct PartialDir {
    std::string path;
    bool armed = true;
    ~PartialDir() {
        if (!armed) return;
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

// Writes the identity next to its place and renames it in.
void store(const std::string& data_dir, const NodeConfig& node,
           const nodeconn::JoinResponse& joined, const crypto::SecureBuffer& key);

}  // namespace

Result<nodeconn::Endpoint> parse_endpoint(std::string_view host_port) {
    auto colon = host_port.rfind(':');
    auto bad = make_error(Errc::invalid_argument,
                          fmt::format("manager address \"{}\" is not HOST:PORT", host_port));
    if (colon == std::string_view::npos || colon == 0) return bad;
    auto host = host_port.substr(0, colon);
    if (host.front() == '[') {
        if (host.size() < 3 || host.back() != ']') return bad;
        host = host.substr(1, host.size() - 2);
    }
    auto port_text = host_port.substr(colon + 1);
    unsigned port = 0;
    auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (ec != std::errc{} || end != port_text.data() + port_text.size() || port == 0 ||
        port > 65535)
        return bad;
    return nodeconn::Endpoint{std::string(host), static_cast<std::uint16_t>(port)};
}

std::string format_endpoint(const nodeconn::Endpoint& endpoint) {
    if (endpoint.host.find(':') != std::string::npos)
        return fmt::format("[{}]:{}", endpoint.host, endpoint.port);
    return fmt::format("{}:{}", endpoint.host, endpoint.port);
}

std::string identity_dir(const std::string& data_dir) {
    return data_dir + "/identity";
}

bool identity_exists(const std::string& data_dir) {
    struct stat st {};
    return ::lstat(identity_dir(data_dir).c_str(), &st) == 0;
}

Result<Identity> enroll(const std::string& data_dir, std::string_view manager,
                        const crypto::SecureBuffer& token_text, const nodeconn::Limits& limits,
                        std::string_view hostname) {
    return enroll(data_dir, manager, token_text, pki::NodeKey::generate(), limits, hostname);
}

Result<Identity> enroll(const std::string& data_dir, std::string_view manager,
                        const crypto::SecureBuffer& token_text, const pki::NodeKey& key,
                        const nodeconn::Limits& limits, std::string_view hostname) {
    auto endpoint = parse_endpoint(manager);
    if (!endpoint) return std::move(endpoint).error();
    auto token = pki::JoinToken::parse(
        {reinterpret_cast<const char*>(token_text.data()), token_text.size()});
    if (!token) return std::move(token).error().context("join token");
    if (identity_exists(data_dir))
        return make_error(Errc::already_exists,
                          fmt::format("this node already has an identity in {}: to join another "
                                      "cluster, remove that directory first",
                                      identity_dir(data_dir)));

    auto joined = nodeconn::join(*endpoint, token_text, key.csr_pem, limits, hostname);
    if (!joined) return std::move(joined).error().context(fmt::format("join through {}", manager));
    auto node = check_issued(*joined, key.key_pem, std::string(manager));
    if (!node) return std::move(node).error().context(fmt::format("join through {}", manager));

    try {
        store(data_dir, *node, *joined, key.key_pem);
    } catch (const SystemError& e) {
        return make_error(Errc::internal, fmt::format("store the node identity: {}", e.what()));
    }
    log::info("agent", "joined cluster {} as node {} ({})", node->cluster_id, node->node_id,
              pki::role_name(node->role));
    return Identity{std::move(*node),
                    {std::move(joined->certificate_pem), key.key_pem.clone(),
                     std::move(joined->ca_bundle_pem)}};
}

namespace {

void store(const std::string& data_dir, const NodeConfig& node,
           const nodeconn::JoinResponse& joined, const crypto::SecureBuffer& key) {
    std::error_code ec;
    fs::create_directories(data_dir, ec);
    if (ec) throw SystemError(ec.value(), fmt::format("create {}", data_dir));
    auto parent = open_dir(data_dir);
    PartialDir partial{fmt::format("{}/.identity-{}", data_dir, crypto::random_id())};
    auto partial_name = fs::path(partial.path).filename().string();
    if (::mkdirat(parent.get(), partial_name.c_str(), 0700) != 0)
        throw_errno(fmt::format("create {}", partial.path));
    {
        auto dir = open_dir(partial.path);
        if (::fchmod(dir.get(), 0700) != 0) throw_errno(fmt::format("chmod {}", partial.path));
        create_file(dir.get(), partial.path, key_file, key.span(), 0600);
        create_file(dir.get(), partial.path, cert_file, bytes_of(joined.certificate_pem), 0644);
        create_file(dir.get(), partial.path, ca_file, bytes_of(joined.ca_bundle_pem), 0644);
        create_file(dir.get(), partial.path, config_file, bytes_of(config_json(node)), 0644);
        if (::fsync(dir.get()) != 0) throw_errno(fmt::format("fsync {}", partial.path));
    }
    // RENAME_NOREPLACE: an identity that appeared meanwhile is kept, ours is dropped.
    if (::renameat2(parent.get(), partial_name.c_str(), parent.get(), "identity",
                    RENAME_NOREPLACE) != 0)
        throw_errno(fmt::format("rename {} to {}", partial.path, identity_dir(data_dir)));
    partial.armed = false;
    if (::fsync(parent.get()) != 0) throw_errno(fmt::format("fsync {}", data_dir));
}

}  // namespace

Result<Identity> store_renewal(const std::string& data_dir, const Identity& current,
                               std::string_view cert_chain_pem, std::string_view ca_bundle_pem) {
    auto id = pki::verify_node_certificate(cert_chain_pem, ca_bundle_pem, current.node.cluster_id);
    if (!id) return std::move(id).error().context("the renewed certificate");
    if (id->node_id != current.node.node_id)
        return make_error(Errc::permission_denied, "the renewed certificate names another node");
    if (!pki::key_matches_certificate(current.credentials.key_pem, cert_chain_pem))
        return make_error(Errc::permission_denied,
                          "the renewed certificate is not for this node's key");
    NodeConfig node = current.node;
    node.role = id->role;
    auto path = identity_dir(data_dir);
    try {
        auto dir = open_dir(path);
        replace_file(dir.get(), path, ca_file, bytes_of(ca_bundle_pem), 0644);
        replace_file(dir.get(), path, cert_file, bytes_of(cert_chain_pem), 0644);
        if (node.role != current.node.role)
            replace_file(dir.get(), path, config_file, bytes_of(config_json(node)), 0644);
        if (::fsync(dir.get()) != 0) throw_errno(fmt::format("fsync {}", path));
    } catch (const SystemError& e) {
        return make_error(Errc::internal,
                          fmt::format("store the renewed certificate: {}", e.what()));
    }
    return Identity{std::move(node),
                    {std::string(cert_chain_pem), current.credentials.key_pem.clone(),
                     std::string(ca_bundle_pem)}};
}

Result<Identity> load_identity(const std::string& data_dir) {
    auto path = identity_dir(data_dir);
    try {
        auto dir = open_dir(path);
        auto key = read_file(dir.get(), path, key_file, true);
        auto cert = text_of(read_file(dir.get(), path, cert_file, false));
        auto ca = text_of(read_file(dir.get(), path, ca_file, false));
        auto config_where = fmt::format("{}/{}", path, config_file);
        auto node =
            parse_config(text_of(read_file(dir.get(), path, config_file, false)), config_where);
        if (!node) return std::move(node).error();
        if (!pki::key_matches_certificate(key, cert))
            return make_error(Errc::invalid_argument,
                              fmt::format("{}/{} is not the certificate of {}/{}", path, cert_file,
                                          path, key_file));
        auto id = pki::verify_node_certificate(cert, ca, node->cluster_id);
        if (!id) return std::move(id).error().context(fmt::format("{}/{}", path, cert_file));
        if (id->node_id != node->node_id)
            return make_error(Errc::invalid_argument,
                              fmt::format("{} names node {}, its certificate {}", config_where,
                                          node->node_id, id->node_id));
        return Identity{std::move(*node), {std::move(cert), std::move(key), std::move(ca)}};
    } catch (const ErrorException& e) {
        return e.error();
    } catch (const SystemError& e) {
        return make_error(e.code() == ENOENT ? Errc::not_found : Errc::internal,
                          fmt::format("load the node identity: {}", e.what()));
    }
}

}  // namespace coffer::agent
