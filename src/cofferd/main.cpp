// cofferd: the manager daemon. Options, wiring, run.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <atomic>
#include <charconv>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <thread>

#include "coffer/base/daemon_options.h"
#include "coffer/base/log.h"
#include "coffer/base/process.h"
#include "coffer/base/unique_fd.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/crypto/secure_file.h"
#include "coffer/crypto/secure_memory_metrics.h"
#include "coffer/manager/api.h"
#include "coffer/manager/cluster.h"
#include "coffer/manager/metrics.h"
#include "coffer/manager/standby_api.h"
#include "coffer/model/time.h"
#include "coffer/net/http_server.h"
#include "coffer/nodeproto/session.h"
#include "coffer/pki/secure_heap.h"
#include "coffer/store/backup.h"
#ifdef COFFER_TEST_HOOKS
#include "test_hooks.h"
#endif

namespace {

using coffer::Result;

struct ListenAddress {
    std::string address;
    std::uint16_t port = 0;
};

// "ADDRESS:PORT", "[V6ADDRESS]:PORT". The address itself is checked when binding.
Result<ListenAddress> parse_listen(std::string_view text) {
    auto bad = [&] {
        return coffer::make_error(coffer::Errc::invalid_argument,
                                  fmt::format("--listen {}: expected ADDRESS:PORT", text));
    };
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos || colon == 0) return bad();
    auto host = text.substr(0, colon), port = text.substr(colon + 1);
    if (host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    unsigned value = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (host.empty() || port.empty() || ec != std::errc() || end != port.data() + port.size() ||
        value > 65535)
        return bad();
    return ListenAddress{std::string(host), static_cast<std::uint16_t>(value)};
}

// A locked manager starts its node port only at unlock; refuse a port that is taken now, at
// start, rather than fail later where no one sees it.
Result<void> probe_listen(const ListenAddress& where) {
    sockaddr_storage sa{};
    socklen_t len = 0;
    auto* v4 = reinterpret_cast<sockaddr_in*>(&sa);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&sa);
    if (::inet_pton(AF_INET, where.address.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(where.port);
        len = sizeof(*v4);
    } else if (::inet_pton(AF_INET6, where.address.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(where.port);
        len = sizeof(*v6);
    } else {
        return coffer::make_error(coffer::Errc::invalid_argument,
                                  fmt::format("bad address {}", where.address));
    }
    coffer::UniqueFd fd(::socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    int on = 1;
    if (!fd || ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
        ::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), len) != 0 || ::listen(fd.get(), 1) != 0)
        return coffer::make_error(
            coffer::Errc::unavailable,
            fmt::format("listen on {}:{}: {}", where.address, where.port, std::strerror(errno)));
    return {};
}

// A message around the unlock key, built in secure memory.
coffer::crypto::SecureBuffer key_message(std::string_view head,
                                         const coffer::crypto::SecureBuffer& key,
                                         std::string_view tail) {
    coffer::crypto::SecureBuffer out(head.size() + key.size() + tail.size());
    std::memcpy(out.data(), head.data(), head.size());
    std::memcpy(out.data() + head.size(), key.data(), key.size());
    std::memcpy(out.data() + head.size() + key.size(), tail.data(), tail.size());
    return out;
}

Result<void> write_all(int fd, const coffer::crypto::SecureBuffer& bytes, std::string_view where) {
    std::size_t off = 0;
    while (off < bytes.size()) {
        auto n = ::write(fd, bytes.data() + off, bytes.size() - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0)
            return coffer::make_error(coffer::Errc::unavailable,
                                      fmt::format("write the unlock key to {}: {}", where,
                                                  n < 0 ? std::strerror(errno) : "short write"));
        off += static_cast<std::size_t>(n);
    }
    return {};
}

// The unlock key of a new autolocked store, into a file the operator named: created (never
// replaced, never through a symlink) with mode 0600, and on disk before the store is committed.
Result<void> write_key_file(const coffer::crypto::SecureBuffer& key, const std::string& path) {
    auto fail = [&](std::string_view what) {
        return coffer::make_error(
            coffer::Errc::invalid_argument,
            fmt::format("--unlock-key-file {}: {}: {}", path, what, std::strerror(errno)));
    };
    coffer::UniqueFd fd(
        ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd && errno == EEXIST)
        return coffer::make_error(
            coffer::Errc::already_exists,
            fmt::format("--unlock-key-file {} exists: refusing to replace it (it "
                        "may hold another store's key)",
                        path));
    if (!fd) return fail("create");
    auto written = [&]() -> Result<void> {
        if (::fchmod(fd.get(), 0600) != 0) return fail("chmod");
        if (auto r = write_all(fd.get(), key_message("", key, "\n"), path); !r) return r;
        if (::fsync(fd.get()) != 0) return fail("fsync");
        auto dir = std::filesystem::path(path).parent_path();
        coffer::UniqueFd d(
            ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!d || ::fsync(d.get()) != 0) return fail("fsync its directory");
        return {};
    }();
    if (!written) ::unlink(path.c_str());  // ours (O_EXCL), and holding no usable key
    return written;
}

// The unlock key of a new autolocked store, to the operator's terminal only: standard output
// when it is one, else the controlling terminal. Never to a pipe or file standard output may be
// (a service manager keeps those in its journal).
Result<void> show_key_on_terminal(const coffer::crypto::SecureBuffer& key) {
    constexpr std::string_view head =
        "coffer is autolocked. The unlock key, shown this once and stored nowhere:\n\n    ";
    constexpr std::string_view tail = "\n\nEvery restart needs it: `coffer cluster unlock`.\n";
    auto message = key_message(head, key, tail);
    if (::isatty(STDOUT_FILENO) == 1) return write_all(STDOUT_FILENO, message, "standard output");
    coffer::UniqueFd tty(::open("/dev/tty", O_WRONLY | O_NOCTTY | O_CLOEXEC));
    if (tty) return write_all(tty.get(), message, "/dev/tty");
    return coffer::make_error(
        coffer::Errc::invalid_argument,
        "the new unlock key can be shown on a terminal only, and cofferd has none (its output is "
        "not a terminal, and it has no controlling terminal): name a file for it with "
        "--unlock-key-file PATH, or start cofferd --autolock from a terminal the first time");
}

// Reads a whole regular file that holds nothing secret (a backup: its values are sealed).
Result<std::string> read_backup_file(const std::string& path) {
    auto fail = [&](std::string_view what) {
        return coffer::make_error(
            coffer::Errc::invalid_argument,
            fmt::format("--restore {}: {}: {}", path, what, std::strerror(errno)));
    };
    coffer::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return fail("open");
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return fail("stat");
    if (!S_ISREG(st.st_mode))
        return coffer::make_error(coffer::Errc::invalid_argument,
                                  fmt::format("--restore {}: not a regular file", path));
    std::string out(static_cast<std::size_t>(st.st_size), '\0');
    std::size_t off = 0;
    while (off < out.size()) {
        auto n = ::read(fd.get(), out.data() + off, out.size() - off);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fail("read");
        if (n == 0) break;
        off += static_cast<std::size_t>(n);
    }
    out.resize(off);
    return out;
}

// The key a restore needs, from a file only its owner may read: the old cluster's KEK file (32
// bytes), or a file holding its unlock key.
Result<coffer::crypto::SecureBuffer> read_restore_key(const std::string& path) {
    auto fail = [&](std::string_view what) {
        return coffer::make_error(
            coffer::Errc::invalid_argument,
            fmt::format("--restore-key {}: {}: {}", path, what, std::strerror(errno)));
    };
    coffer::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) return fail("open");
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return fail("stat");
    if (!S_ISREG(st.st_mode) || (st.st_mode & 077) != 0)
        return coffer::make_error(
            coffer::Errc::permission_denied,
            fmt::format("--restore-key {}: must be a regular file that only its owner may read "
                        "(chmod 600 {})",
                        path, path));
    return coffer::crypto::read_secure(fd.get(), 4096, path);
}

// cofferd --restore: a new store in data_dir from the backup, before anything else starts.
Result<void> restore(const std::string& backup_path, const std::string& key_path,
                     const std::string& data_dir,
                     const std::optional<coffer::store::EtcdOptions>& etcd) {
    auto backup = read_backup_file(backup_path);
    if (!backup) return std::move(backup).error();
    std::optional<coffer::crypto::SecureBuffer> key;
    if (!key_path.empty()) {
        auto read = read_restore_key(key_path);
        if (!read) return std::move(read).error();
        key = std::move(*read);
    }
    auto restored = coffer::store::restore_backup(
        {.dir = data_dir,
         .backup = {reinterpret_cast<const std::uint8_t*>(backup->data()), backup->size()},
         .key = key ? &*key : nullptr,
         .etcd = etcd});
    if (!restored) return std::move(restored).error();
    coffer::log::warn(
        "manager",
        "restored {} records from {} (taken at {}) into {}{}: tasks are scheduled "
        "again as after a restart; nodes reconnect with their certificates",
        restored->records, backup_path,
        coffer::model::format_rfc3339({restored->created * 1'000'000'000}),
        etcd ? fmt::format("{} (records in etcd, prefix {})", data_dir, etcd->prefix) : data_dir,
        restored->kek == coffer::store::BackupKek::autolock
            ? " (autolocked: unlock it with the unlock key)"
            : "");
    return {};
}

// The standby API (requests forwarded to the leader) served from a thread until destroyed.
// SIGTERM or SIGINT before the API serves (a standby, or a store still opening): noted here,
// and the manager ends cleanly once the open returns. The API's server takes both signals over.
std::atomic<bool> stop_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free);

void note_stop(int) {
    stop_requested.store(true);
}

void note_stop_signals() {
    struct sigaction action {};
    action.sa_handler = note_stop;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGTERM, &action, nullptr);
    ::sigaction(SIGINT, &action, nullptr);
}

class StandbyServer {
  public:
    StandbyServer(const std::string& socket, const std::string& data_dir,
                  const coffer::store::EtcdOptions& etcd)
        : api_(data_dir, etcd),
          server_(coffer::net::ServerOptions{.socket_path = socket,
                                             .io_threads = 1,
                                             // The unlock's: forwarded requests hold none.
                                             .worker_threads = 2,
                                             .headers = coffer::manager::api_headers()},
                  api_),
          thread_([this] { server_.run(false); }),
          keeper_([this] { keep_keys(); }) {}
    ~StandbyServer() {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        stop_.notify_all();
        keeper_.join();
        api_.stop_forwarding();
        server_.stop();
        thread_.join();
    }
    StandbyServer(const StandbyServer&) = delete;
    StandbyServer& operator=(const StandbyServer&) = delete;

    std::optional<coffer::crypto::SecureBuffer> take_unlock_key() { return api_.take_unlock_key(); }

  private:
    // The store's keys read again every few seconds, so that a rotation of the DEK and then of
    // the unlock key is followed one step at a time.
    void keep_keys() {
        std::unique_lock lock(mutex_);
        while (!stop_.wait_for(lock, std::chrono::seconds(5), [this] { return stopping_; })) {
            lock.unlock();
            api_.keep_keys();
            lock.lock();
        }
    }

    coffer::manager::StandbyApi api_;
    coffer::net::HttpServer server_;
    std::thread thread_;
    std::mutex mutex_;
    std::condition_variable stop_;
    bool stopping_ = false;  // under mutex_
    std::thread keeper_;
};

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"cofferd: the coffer manager"};
    // Options from a file too (/etc/coffer/cofferd.conf in the systemd unit): `name = value`
    // lines, one per long option; what the command line gives wins, and an unknown name is an
    // error rather than a setting silently ignored.
    app.set_config("--config", "",
                   "Read options from this file (`name = value` per line, e.g. data-dir = "
                   "\"/var/lib/coffer\"); the command line wins");
    app.allow_config_extras(CLI::config_extras_mode::error);
    std::string data_dir = "/var/lib/coffer";
    std::string socket = "/run/coffer/coffer.sock";
    std::string log_spec = "info";
    std::string listen = "0.0.0.0:4243";
    bool autolock = false;
    app.add_option("--data-dir", data_dir, "Data directory (created 0700)")->capture_default_str();
    app.add_option("--socket", socket, "Unix socket for the API (mode 0660)")
        ->capture_default_str();
    app.add_option("--listen", listen,
                   "Node port (ADDRESS:PORT): nodes join and keep their sessions here")
        ->capture_default_str();
    std::string unlock_key_file;
    auto* autolock_flag = app.add_flag(
        "--autolock", autolock,
        "At first start: protect the store with an unlock key shown once (on the terminal, or in "
        "--unlock-key-file) and never stored in the clear");
    app.add_option("--unlock-key-file", unlock_key_file,
                   "With --autolock, at first start: write the unlock key to this new file (mode "
                   "0600) instead "
                   "of the terminal")
        ->needs(autolock_flag);
    std::string restore_file, restore_key_file;
    auto* restore_option =
        app.add_option("--restore", restore_file,
                       "Start a new cluster from this backup (`coffer cluster backup`) in "
                       "--data-dir, which must not exist or be empty (the backup says whether "
                       "it is autolocked: --autolock does not apply)");
    app.add_option("--restore-key", restore_key_file,
                   "With --restore: a copy of the backed-up cluster's KEK file (its "
                   "<data-dir>/kek), or with autolock a file holding its unlock key; mode 0600")
        ->needs(restore_option);
    app.add_option("--log-level", log_spec, "Log levels: LEVEL[,CATEGORY=LEVEL...]")
        ->capture_default_str();
    std::string log_format = "text", metrics_addr;
    app.add_option("--log-format", log_format,
                   "Log lines as text or json (one object per line: time, level, category, "
                   "message)")
        ->check(CLI::IsMember({"text", "json"}))
        ->capture_default_str();
    app.add_option("--metrics-addr", metrics_addr,
                   "Serve Prometheus metrics (GET /metrics) and a health check for load balancers "
                   "(GET /health) on ADDRESS:PORT, without authentication; off when empty");
    coffer::registry::Options registry;
    app.add_option("--registry-certs", registry.certs_dir,
                   "DIR/HOST:PORT/ holds the CA certificates (*.crt) a registry's TLS certificate "
                   "is checked against when a service's image tag is resolved to a digest")
        ->capture_default_str();
    app.add_option("--insecure-registry", registry.insecure,
                   "HOST:PORT of a registry reached over plain HTTP or unverified TLS "
                   "(repeatable; no other registry is)");
    std::int64_t resolve_timeout = 30;
    app.add_option("--resolve-timeout", resolve_timeout,
                   "seconds the resolution of an image tag to a digest may take")
        ->check(CLI::Range(1, 3600))
        ->capture_default_str();
    std::string store_kind = "embedded", etcd_endpoints;
    coffer::store::EtcdOptions etcd;
    std::int64_t etcd_lease_ttl = etcd.lease_ttl.count();
    app.add_option("--store", store_kind,
                   "Where the records are: embedded (RocksDB in --data-dir) or etcd (an etcd v3 "
                   "cluster; --data-dir then keeps the KEK file). Fixed when the store is made")
        ->check(CLI::IsMember({"embedded", "etcd"}))
        ->capture_default_str();
    std::vector<CLI::Option*> etcd_flags;
    etcd_flags.push_back(
        app.add_option("--etcd-endpoints", etcd_endpoints,
                       "With --store etcd: the members, http(s)://HOST:PORT separated by commas"));
    etcd_flags.push_back(
        app.add_option("--etcd-prefix", etcd.prefix,
                       "With --store etcd: the prefix of every key of the store (ends with /)")
            ->capture_default_str());
    etcd_flags.push_back(
        app.add_option("--etcd-ca", etcd.ca_file,
                       "With --store etcd over https: the CA of the members' certificates (PEM)"));
    etcd_flags.push_back(
        app.add_option("--etcd-cert", etcd.cert_file,
                       "With --store etcd over https: the client certificate etcd asks for (PEM)"));
    etcd_flags.push_back(
        app.add_option("--etcd-key", etcd.key_file,
                       "With --store etcd over https: the client certificate's key (PEM)"));
    etcd_flags.push_back(
        app.add_option(
               "--etcd-lease-ttl", etcd_lease_ttl,
               "With --store etcd: seconds after which the store is free for another cofferd "
               "when this one died or was cut off from etcd")
            ->check(CLI::Range(2, 300))
            ->capture_default_str());
    etcd_flags.push_back(app.add_option("--etcd-max-txn-ops", etcd.max_txn_ops,
                                        "With --store etcd: the members' --max-txn-ops")
                             ->check(CLI::Range(4, 1 << 20))
                             ->capture_default_str());
    etcd_flags.push_back(app.add_option("--etcd-max-request-bytes", etcd.max_request_bytes,
                                        "With --store etcd: the members' --max-request-bytes")
                             ->check(CLI::Range(64 << 10, 1 << 30))
                             ->capture_default_str());
    std::string join_token_text;
    auto* join_token_option =
        app.add_option("--join-token", join_token_text,
                       "With --store etcd, at first start (an empty --data-dir): join the "
                       "cluster another cofferd made in --etcd-prefix as one more manager, with "
                       "its manager join token (`coffer cluster join-token manager`)")
            ->envname("COFFER_JOIN_TOKEN");
    // A secret: never from the config file, which outlives the join.
    join_token_option->configurable(false);
    etcd_flags.push_back(join_token_option);
    std::string advertise;
    etcd_flags.push_back(app.add_option(
        "--advertise-addr", advertise,
        "With --store etcd: HOST:PORT at which agents and the other managers reach this "
        "manager's node port (default: --listen, or this host's name when --listen is a "
        "wildcard address)"));
    if (auto status = coffer::daemon::parse_daemon_arguments(app, argc, argv, "cofferd"))
        return *status;
    std::optional<coffer::crypto::SecureBuffer> join_token;
    if (join_token_option->count() > 0 || !join_token_text.empty())
        join_token =
            coffer::crypto::take_secret_argument(join_token_text, join_token_option->results(),
                                                 "--join-token", "COFFER_JOIN_TOKEN", argc, argv);
    join_token_option->clear();
    registry.timeout = std::chrono::seconds(resolve_timeout);
    etcd.lease_ttl = std::chrono::seconds(etcd_lease_ttl);
    std::optional<coffer::store::EtcdOptions> etcd_store;
    if (store_kind == "etcd") {
        std::string_view rest = etcd_endpoints;
        while (!rest.empty()) {
            auto comma = rest.find(',');
            auto one = rest.substr(0, comma);
            if (!one.empty()) etcd.endpoints.emplace_back(one);
            rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
        }
        if (etcd.endpoints.empty()) {
            std::fprintf(stderr, "cofferd: --store etcd needs --etcd-endpoints\n");
            return coffer::daemon::usage_error;
        }
        if (advertise.empty()) {
            auto at = parse_listen(listen);
            if (at && at->port == 0) {
                // Any free port: known only once bound, after the store is open.
            } else if (at && at->address != "0.0.0.0" && at->address != "::") {
                advertise = at->address.find(':') != std::string::npos
                                ? fmt::format("[{}]:{}", at->address, at->port)
                                : fmt::format("{}:{}", at->address, at->port);
            } else if (at) {
                char host[256] = {};
                (void)::gethostname(host, sizeof host - 1);
                advertise = fmt::format("{}:{}", host, at->port);
            }
        }
        if (!advertise.empty() && !coffer::nodeproto::valid_manager_address(advertise)) {
            std::fprintf(stderr, "cofferd: --advertise-addr %s: expected HOST:PORT\n",
                         advertise.c_str());
            return coffer::daemon::usage_error;
        }
        etcd.advertise = advertise;
        etcd_store = std::move(etcd);
    } else {
        if (join_token) {
            std::fprintf(stderr, "cofferd: --join-token needs --store etcd\n");
            return coffer::daemon::usage_error;
        }
        for (const auto* o : etcd_flags)
            if (o->count() > 0) {
                std::fprintf(stderr, "cofferd: %s needs --store etcd\n", o->get_name().c_str());
                return coffer::daemon::usage_error;
            }
    }

    if (auto why = coffer::log::configure(log_spec); !why.empty()) {
        std::fprintf(stderr, "cofferd: --log-level: %s\n", why.c_str());
        return coffer::daemon::usage_error;
    }
    coffer::log::set_format(log_format);
    if (etcd_store && etcd_store->advertise.empty())
        coffer::log::warn("manager",
                          "--listen {} has no fixed port: this manager is not announced to the "
                          "other managers and the agents (give --advertise-addr)",
                          listen);
    auto listen_at = parse_listen(listen);
    if (!listen_at) {
        coffer::log::fatal("cofferd", listen_at.error().message);
        return coffer::daemon::usage_error;
    }
    try {
        coffer::harden_process();
        // A descriptor per node session and per API connection.
        auto descriptors = coffer::raise_descriptor_limit();
        coffer::crypto::init();
        if (auto r = coffer::pki::init_secure_heap(); !r)
            coffer::log::warn("manager", "{}: private keys use ordinary memory", r.error().message);
        ::umask(077);
        ::signal(SIGPIPE, SIG_IGN);

        if (join_token) {
            if (!restore_file.empty()) {
                std::fprintf(stderr, "cofferd: --join-token and --restore exclude each other\n");
                return 1;
            }
            auto joined = coffer::store::join_store(
                {.dir = data_dir, .etcd = *etcd_store, .manager_token = &*join_token});
            join_token.reset();
            if (!joined && joined.error().code == coffer::Errc::already_exists)
                coffer::log::warn("manager", "{}: --join-token is not used",
                                  joined.error().message);
            else if (!joined) {
                coffer::log::fatal("cofferd", joined.error().message);
                return 1;
            }
        }
        if (!restore_file.empty())
            if (auto r = restore(restore_file, restore_key_file, data_dir, etcd_store); !r) {
                coffer::log::fatal("cofferd", r.error().message);
                return 1;
            }
        auto hand_over = [&](const coffer::crypto::SecureBuffer& key) -> Result<void> {
            if (unlock_key_file.empty()) return show_key_on_terminal(key);
            if (auto r = write_key_file(key, unlock_key_file); !r) return r;
            coffer::log::warn(
                "manager", "the unlock key is in {} (mode 0600): keep it safe, away from this host",
                unlock_key_file);
            return {};
        };
        // On etcd the store may be held by another manager: until this one holds it, its API
        // says so instead of not answering. SIGTERM ends standing by: the standby's socket goes
        // and its lease is revoked (its announcement ends at once).
        note_stop_signals();
        if (etcd_store) etcd_store->stop_standing_by = &stop_requested;
        std::optional<StandbyServer> standby;
        if (etcd_store) standby.emplace(socket, data_dir, *etcd_store);
        // A standby's health for load balancers: it serves the API (forwarded to the leader).
        // Its metrics address is the leader's once it leads.
        std::unique_ptr<coffer::metrics::Server> standby_metrics;
        if (etcd_store && !metrics_addr.empty())
            standby_metrics = std::make_unique<coffer::metrics::Server>(
                metrics_addr, coffer::metrics::standard_routes([] {
                    return coffer::metrics::Answer{200, "application/json",
                                                   R"({"status":"standby"})"};
                }));
        // The node port exists from the moment the store is unlocked (now, or when `coffer
        // cluster unlock` succeeds) until shutdown.
        auto opened = coffer::manager::Cluster::open(
            {.data_dir = data_dir,
             .etcd = etcd_store,
             .autolock = autolock,
             .hand_over_unlock_key = hand_over,
             .node_port = coffer::manager::NodePortOptions{.address = listen_at->address,
                                                           .port = listen_at->port},
             .registry = registry});
        // An unlock key given while standing by unlocks the manager now that it leads.
        auto standby_key = standby ? standby->take_unlock_key() : std::nullopt;
        standby_metrics.reset();
        standby.reset();
        if (stop_requested) {
            // A store opened meanwhile is let go of by its destructor.
            coffer::log::info("manager", "stopped {}",
                              opened ? "before serving" : "while standing by");
            return 0;
        }
        if (!opened) {
            coffer::log::fatal("cofferd", opened.error().message);
            return 1;
        }
        auto& cluster = *opened->cluster;
        opened->new_unlock_key.reset();  // handed over above, before the store was committed
        if (standby_key && cluster.locked()) {
            const auto& key = *standby_key;
            if (auto r = cluster.unlock({reinterpret_cast<const char*>(key.data()), key.size()});
                !r)
                coffer::log::warn("manager", "the unlock key given while standing by: {}",
                                  r.error().message);
            else
                coffer::log::info("manager", "unlocked with the key given while standing by");
        }
        standby_key.reset();
        if (cluster.locked()) {
            coffer::log::warn("manager", "store is locked: run `coffer cluster unlock`");
            if (auto r = probe_listen(*listen_at); !r) {
                coffer::log::fatal("cofferd", "node port: " + r.error().message);
                return 1;
            }
        }

        // Scrapes read the cluster: the listener and collectors go before it.
        std::vector<coffer::metrics::Registration> collectors;
        std::unique_ptr<coffer::metrics::Server> metrics;
        if (!metrics_addr.empty()) {
            collectors = coffer::manager::register_metrics(cluster);
            collectors.push_back(coffer::crypto::register_secure_memory_metrics());
            metrics = std::make_unique<coffer::metrics::Server>(
                metrics_addr, coffer::metrics::standard_routes(
                                  [&cluster] { return coffer::manager::health(cluster); }));
            coffer::log::info("manager", "metrics on http://{}/metrics, health on /health",
                              metrics->address());
        }
        coffer::net::HttpServer server(
            {.socket_path = socket, .headers = coffer::manager::api_headers()}, cluster.api());
        coffer::log::info("manager",
                          "serving on unix://{} (data in {} on {}; up to {} open "
                          "descriptors)",
                          socket, data_dir, cluster.store().engine(), descriptors);
#ifdef COFFER_TEST_HOOKS
        auto hooks = coffer::testhooks::start(cluster);
#endif
        if (stop_requested) server.stop();  // a signal before the server's own handlers
        server.run(true);
        // The nodes' sessions end now; no unlock starts the node port again.
        cluster.stop_node_port();
        coffer::log::info("manager", "stopped");
    } catch (const std::exception& e) {
        coffer::log::fatal("cofferd", e.what());
        return 1;
    }
    return 0;
}
