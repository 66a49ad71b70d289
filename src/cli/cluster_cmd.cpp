// coffer cluster unlock|unlock-key|join-token|update|ca|rotate-dek|backup|inspect.
#include <fcntl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <thread>

#include "client.h"
#include "coffer/base/unique_fd.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/model/duration.h"
#include "common.h"
#include "output.h"

namespace coffer::cli {

namespace json = boost::json;

namespace {

// Reads the unlock key from the terminal without echo, or from a pipe.
Result<crypto::SecureBuffer> read_unlock_key() {
    bool tty = ::isatty(STDIN_FILENO);
    termios saved{};
    if (tty) {
        std::fputs("Enter unlock key: ", stderr);
        ::tcgetattr(STDIN_FILENO, &saved);
        termios quiet = saved;
        quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
        ::tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
    }
    crypto::SecureBuffer buf(256);
    std::size_t used = 0;
    for (;;) {
        ssize_t n = ::read(STDIN_FILENO, buf.data() + used, buf.size() - used);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        used += static_cast<std::size_t>(n);
        if (tty && std::memchr(buf.data(), '\n', used)) break;
        if (used == buf.size()) break;
    }
    if (tty) {
        ::tcsetattr(STDIN_FILENO, TCSANOW, &saved);
        std::fputs("\n", stderr);
    }
    // Trim surrounding white space.
    std::size_t start = 0, end = used;
    auto space = [&](std::size_t i) { return std::isspace(buf.data()[i]) != 0; };
    while (start < end && space(start)) ++start;
    while (end > start && space(end - 1)) --end;
    if (start == end) return make_error(Errc::invalid_argument, "no unlock key was given");
    return crypto::SecureBuffer::copy_of(buf.span().subspan(start, end - start));
}

// POST /swarm/update with the cluster's current version and the given flags.
Result<json::value> swarm_update(ApiClient& api, const std::string& query,
                                 const json::value& spec) {
    auto current = api.call("GET", "/swarm");
    if (!current) return std::move(current).error();
    auto* version = at(*current, {"Version", "Index"});
    auto v = version && version->is_number() ? version->to_number<std::uint64_t>() : 0;
    return api.call("POST", fmt::format("/swarm/update?version={}{}", v, query), spec);
}

// cluster unlock: the key from STDIN.
void add_cluster_unlock(CLI::App& cluster, Globals& g) {
    auto* cmd =
        cluster.add_subcommand("unlock", "Unlock a locked manager (reads the key from STDIN)");
    cmd->callback([&g] {
        auto key = read_unlock_key();
        if (!key) throw CLI::RuntimeError(report(key.error()));
        // {"UnlockKey":"<key>"} in secure memory; the key's characters need no escaping
        // (base64url), anything else is refused by the server as an invalid key.
        for (auto c : key->span())
            if (c == '"' || c == '\\' || c < 0x20)
                throw CLI::RuntimeError(report({Errc::invalid_argument, "invalid unlock key"}));
        constexpr std::string_view head = "{\"UnlockKey\":\"", tail = "\"}";
        crypto::SecureBuffer body(head.size() + key->size() + tail.size());
        std::memcpy(body.data(), head.data(), head.size());
        std::memcpy(body.data() + head.size(), key->data(), key->size());
        std::memcpy(body.data() + head.size() + key->size(), tail.data(), tail.size());
        ApiClient api(g.host);
        auto r = api.call("POST", "/swarm/unlock", body.span());
        if (!r) throw CLI::RuntimeError(report(r.error()));
    });
}

// cluster unlock-key [--rotate] [-q]
void add_cluster_unlock_key(CLI::App& cluster, Globals& g) {
    auto* cmd = cluster.add_subcommand("unlock-key", "Show or rotate the unlock key");
    auto rotate = std::make_shared<bool>(false);
    auto quiet = std::make_shared<bool>(false);
    cmd->add_flag("--rotate", *rotate, "Rotate the unlock key");
    cmd->add_flag("-q,--quiet", *quiet, "Only display the key");
    cmd->callback([&g, rotate, quiet] {
        ApiClient api(g.host);
        if (*rotate) {
            auto r = swarm_update(api, "&rotateManagerUnlockKey=true", json::object{});
            if (!r) throw CLI::RuntimeError(report(r.error()));
            if (!*quiet) std::printf("Successfully rotated manager unlock key.\n\n");
        }
        auto r = api.call("GET", "/swarm/unlockkey");
        if (!r) throw CLI::RuntimeError(report(r.error()));
        auto key = field(*r, {"UnlockKey"});
        if (key.empty())
            throw CLI::RuntimeError(
                report({Errc::invalid_argument, "no unlock key is set: autolock is off"}));
        if (*quiet) {
            std::printf("%s\n", key.c_str());
        } else {
            std::printf(
                "To unlock a locked manager, run `coffer cluster unlock`\n"
                "and provide the following key:\n\n    %s\n\n"
                "Keep it somewhere safe: without it a restarted manager cannot be unlocked.\n",
                key.c_str());
        }
    });
}

// cluster join-token worker|manager [--rotate] [-q]
void add_cluster_join_token(CLI::App& cluster, Globals& g) {
    auto* cmd = cluster.add_subcommand("join-token", "Show or rotate the token nodes join with");
    auto role = std::make_shared<std::string>();
    auto rotate = std::make_shared<bool>(false);
    auto quiet = std::make_shared<bool>(false);
    cmd->add_option("role", *role, "worker or manager")
        ->required()
        ->check(CLI::IsMember({"worker", "manager"}));
    cmd->add_flag("--rotate", *rotate, "Replace the token; the old one stops working at once");
    cmd->add_flag("-q,--quiet", *quiet, "Only display the token");
    cmd->callback([&g, role, rotate, quiet] {
        ApiClient api(g.host);
        std::string field_name = *role == "worker" ? "Worker" : "Manager";
        if (*rotate) {
            auto r =
                swarm_update(api, fmt::format("&rotate{}Token=true", field_name), json::object{});
            if (!r) throw CLI::RuntimeError(report(r.error()));
            if (!*quiet) std::printf("Successfully rotated %s join token.\n\n", role->c_str());
        }
        auto r = api.call("GET", "/swarm");
        if (!r) throw CLI::RuntimeError(report(r.error()));
        auto token = field(*r, {"JoinTokens", field_name});
        if (*quiet) {
            std::printf("%s\n", token.c_str());
        } else if (*role == "manager") {
            // A manager is a cofferd on the same store on etcd; an agent given this token is a
            // node of role manager, not a manager.
            std::printf(
                "To add a manager to this cluster (its store must be on etcd), run on the new "
                "machine:\n\n"
                "    COFFER_JOIN_TOKEN=%s \\\n"
                "        cofferd --data-dir /var/lib/coffer --store etcd \\\n"
                "        --etcd-endpoints ENDPOINTS --listen ADDRESS:4243\n\n"
                "with this manager's --etcd-endpoints and --etcd-prefix, and the address the "
                "nodes\n"
                "reach the new manager's node port at. A coffer-agent given this token joins as a\n"
                "node of role manager (for node.role==manager constraints), not as a manager.\n"
                "Keep the token out of command lines (--join-token): every user can read those.\n",
                token.c_str());
        } else {
            // The token goes in the environment: a command line is visible to every user (ps,
            // /proc/PID/cmdline) for as long as the agent runs.
            std::printf(
                "To add a %s to this cluster, run on the new node:\n\n"
                "    COFFER_JOIN_TOKEN=%s \\\n"
                "        coffer-agent --data-dir /var/lib/coffer-agent --manager MANAGER:4243\n\n"
                "where MANAGER is an address of this manager's node port. Keep the token out of\n"
                "command lines (--join-token): every user of the node can read those.\n",
                role->c_str(), token.c_str());
        }
    });
}

// cluster update [--cert-expiry DURATION] [--secret-versions-kept N]
void add_cluster_update(CLI::App& cluster, Globals& g) {
    auto* cmd = cluster.add_subcommand("update", "Change cluster settings");
    auto expiry = std::make_shared<std::string>();
    auto kept = std::make_shared<std::uint64_t>(0);
    cmd->add_option("--cert-expiry", *expiry,
                    "Validity of node certificates (e.g. 2160h, 90d; at least 1h)");
    cmd->add_option("--secret-versions-kept", *kept,
                    "How many of a secret's newest versions are kept (older ones are wiped "
                    "once no task holds them)")
        ->check(CLI::PositiveNumber);
    cmd->callback([&g, expiry, kept] {
        if (expiry->empty() && *kept == 0)
            throw CLI::RuntimeError(
                report({Errc::invalid_argument, "give --cert-expiry or --secret-versions-kept"}));
        json::object spec;
        if (!expiry->empty()) {
            auto seconds = model::parse_duration(*expiry);
            if (!seconds)
                throw CLI::RuntimeError(
                    report({Errc::invalid_argument, "invalid duration " + *expiry}));
            spec["CAConfig"] = json::object{{"NodeCertExpiry", seconds->count() * 1'000'000'000}};
        }
        if (*kept) spec["CofferSecrets"] = json::object{{"VersionsKept", *kept}};
        ApiClient api(g.host);
        auto r = swarm_update(api, "", spec);
        if (!r) throw CLI::RuntimeError(report(r.error()));
        std::printf("Cluster updated.\n");
    });
}

// cluster ca [--rotate [-d] [-q] [--timeout DURATION]]: the root CA certificate; --rotate waits for
// the nodes.
void add_cluster_ca(CLI::App& cluster, Globals& g) {
    auto* cmd = cluster.add_subcommand("ca", "Show the root CA certificate, or rotate the CA");
    auto rotate = std::make_shared<bool>(false);
    auto detach = std::make_shared<bool>(false);
    auto quiet = std::make_shared<bool>(false);
    auto timeout = std::make_shared<std::string>("10m");
    cmd->add_flag(
        "--rotate", *rotate,
        "Make a new root CA; nodes renew their certificates, then the old root is dropped");
    cmd->add_flag("-d,--detach", *detach, "Do not wait for the rotation to finish");
    cmd->add_flag("-q,--quiet", *quiet, "Print no progress");
    cmd->add_option("--timeout", *timeout, "How long to wait for the rotation (e.g. 90s, 10m)")
        ->capture_default_str();
    cmd->callback([&g, rotate, detach, quiet, timeout] {
        auto limit = model::parse_duration(*timeout);
        if (!limit || limit->count() <= 0)
            throw CLI::RuntimeError(
                report({Errc::invalid_argument, "invalid duration " + *timeout}));
        ApiClient api(g.host);
        auto current = api.call("GET", "/swarm");
        if (!current) throw CLI::RuntimeError(report(current.error()));
        if (*rotate) {
            // What `docker swarm ca --rotate` sends: ForceRotate incremented.
            auto* version = at(*current, {"Version", "Index"});
            auto* force = at(*current, {"Spec", "CAConfig", "ForceRotate"});
            auto v = version && version->is_number() ? version->to_number<std::uint64_t>() : 0;
            auto f = force && force->is_number() ? force->to_number<std::uint64_t>() : 0;
            json::object spec{{"CAConfig", json::object{{"ForceRotate", f + 1}}}};
            auto r = api.call("POST", fmt::format("/swarm/update?version={}", v), spec);
            if (!r) throw CLI::RuntimeError(report(r.error()));
            if (!*quiet) std::fprintf(stderr, "CA rotation started.\n");
            auto deadline = std::chrono::steady_clock::now() + *limit;
            std::string shown;
            while (!*detach) {
                current = api.call("GET", "/swarm");
                if (!current) throw CLI::RuntimeError(report(current.error()));
                auto* busy = at(*current, {"RootRotation", "InProgress"});
                if (!busy || !busy->is_bool() || !busy->as_bool()) break;
                auto* renewed = at(*current, {"RootRotation", "NodesRenewed"});
                auto* total = at(*current, {"RootRotation", "NodesTotal"});
                auto progress =
                    fmt::format("{}/{} nodes renewed", renewed ? json::serialize(*renewed) : "?",
                                total ? json::serialize(*total) : "?");
                if (!*quiet && progress != shown)
                    std::fprintf(stderr, "rotating the CA: %s\n", progress.c_str());
                shown = progress;
                if (std::chrono::steady_clock::now() >= deadline)
                    throw CLI::RuntimeError(report(
                        {Errc::unavailable,
                         fmt::format(
                             "the CA rotation did not finish within {} ({}); it goes on in the "
                             "background: `coffer cluster ca` shows the root when it is done",
                             *timeout, progress)}));
                std::this_thread::sleep_for(std::chrono::milliseconds(500));
            }
            if (*detach && !*quiet)
                std::fprintf(stderr,
                             "Not waiting: the old root is dropped once every node has renewed.\n");
        }
        std::printf("%s", field(*current, {"TLSInfo", "TrustRoot"}).c_str());
    });
}

// cluster rotate-dek
void add_cluster_rotate_dek(CLI::App& cluster, Globals& g) {
    auto* cmd =
        cluster.add_subcommand("rotate-dek", "Re-seal every stored value under a fresh data key");
    cmd->callback([&g] {
        ApiClient api(g.host);
        auto r = api.call("POST", "/swarm/rotate-dek");
        if (!r) throw CLI::RuntimeError(report(r.error()));
        auto* id = at(*r, {"ID"});
        std::printf(
            "Data encryption key rotated (key %s); values are re-sealed in the background.\n",
            id ? json::serialize(*id).c_str() : "?");
    });
}

// A backup is the whole store, sealed; the manager builds it in memory, so its size is bounded
// by the manager's memory long before this.
constexpr std::uint64_t max_backup_bytes = 16ull << 30;

// Writes bytes to path atomically: a new 0600 file beside it, synced, renamed over path, the
// directory synced. A reader of path sees the old file or the whole new one, never a part.
Result<void> write_file_atomically(const std::string& path, std::string_view bytes) {
    auto target = std::filesystem::path(path);
    auto dir = target.parent_path();
    if (dir.empty()) dir = ".";
    auto tmp = (dir / ("." + target.filename().string() + ".XXXXXX")).string();
    auto fail = [&](std::string_view what) {
        return make_error(Errc::invalid_argument,
                          fmt::format("{} {}: {}", what, path, std::strerror(errno)));
    };
    UniqueFd fd(::mkostemp(tmp.data(), O_CLOEXEC));
    if (!fd) return fail("create a temporary file for");
    auto written = [&]() -> Result<void> {
        if (::fchmod(fd.get(), 0600) != 0) return fail("chmod");
        for (std::size_t off = 0; off < bytes.size();) {
            auto n = ::write(fd.get(), bytes.data() + off, bytes.size() - off);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return fail("write");
            off += static_cast<std::size_t>(n);
        }
        if (::fsync(fd.get()) != 0) return fail("fsync");
        if (::rename(tmp.c_str(), path.c_str()) != 0) return fail("rename the new file to");
        UniqueFd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!d || ::fsync(d.get()) != 0) return fail("fsync the directory of");
        return {};
    }();
    if (!written) ::unlink(tmp.c_str());
    return written;
}

// cluster backup FILE
void add_cluster_backup(CLI::App& cluster, Globals& g) {
    auto* cmd = cluster.add_subcommand(
        "backup",
        "Write a backup of the whole cluster, at one moment and still sealed, to FILE (mode 0600)");
    auto file = std::make_shared<std::string>();
    cmd->add_option("FILE", *file, "Where to write it (replaced atomically)")->required();
    cmd->callback([&g, file] {
        ApiClient api(g.host);
        api.set_body_limit(max_backup_bytes);
        auto start = std::chrono::steady_clock::now();
        auto r = api.get_raw("/cluster/backup");
        if (!r) throw CLI::RuntimeError(report(r.error()));
        if (!r->starts_with("COFFERBK"))
            throw CLI::RuntimeError(
                report({Errc::internal, "the manager's answer is not a coffer backup"}));
        if (auto w = write_file_atomically(*file, *r); !w)
            throw CLI::RuntimeError(report(w.error()));
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - start)
                      .count();
        std::printf(
            "Backup written to %s (%zu bytes, %lld ms).\n"
            "It is sealed: restoring it needs the cluster's KEK file, or its unlock key "
            "with autolock (cofferd --restore %s --restore-key FILE).\n",
            file->c_str(), r->size(), static_cast<long long>(ms), file->c_str());
    });
}

// cluster inspect
void add_cluster_inspect(CLI::App& cluster, Globals& g) {
    auto* cmd = cluster.add_subcommand("inspect", "Show the cluster");
    cmd->callback([&g] {
        ApiClient api(g.host);
        auto r = api.call("GET", "/swarm");
        if (!r) throw CLI::RuntimeError(report(r.error()));
        std::printf("%s\n", pretty_json(*r).c_str());
    });
}

}  // namespace

void add_cluster_commands(CLI::App& app, Globals& g) {
    auto* cluster = app.add_subcommand("cluster", "Manage the cluster: unlock, keys, CA, backups");
    cluster->require_subcommand(1);
    add_cluster_unlock(*cluster, g);
    add_cluster_unlock_key(*cluster, g);
    add_cluster_join_token(*cluster, g);
    add_cluster_update(*cluster, g);
    add_cluster_ca(*cluster, g);
    add_cluster_rotate_dek(*cluster, g);
    add_cluster_backup(*cluster, g);
    add_cluster_inspect(*cluster, g);
}

}  // namespace coffer::cli
