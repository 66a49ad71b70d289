#include "coffer/cli/cli.h"

#include <termios.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "client.h"
#include "common.h"
#include "coffer/crypto/encoding.h"
#include "coffer/model/duration.h"
#include "coffer/model/json.h"
#include "coffer/net/http.h"
#include "output.h"
#include "secret_input.h"

namespace coffer::cli {

namespace json = boost::json;

namespace {

constexpr const char* default_host = "unix:///run/coffer/coffer.sock";
// The most a client sends: twice Docker's secret size limit, so the server's own check answers.
constexpr std::size_t secret_read_limit = 2 * 500 * 1024;

// ---- secret ----------------------------------------------------------------------------------

void add_secret_commands(CLI::App& app, Globals& g) {
    auto* secret = app.add_subcommand("secret", "Manage secrets");
    secret->require_subcommand(1);

    {
        auto* cmd = secret->add_subcommand("create", "Create a secret from a file or STDIN as content");
        auto name = std::make_shared<std::string>();
        auto source = std::make_shared<std::string>();
        auto labels = std::make_shared<std::vector<std::string>>();
        cmd->add_option("-l,--label", *labels, "Secret labels (key=value)")
            ->allow_extra_args(false);  // one value per flag, as Docker: `--secret s IMAGE` is not two secrets
        cmd->add_option("name", *name, "Secret name")->required();
        cmd->add_option("file", *source, "File to read the secret from, or - for STDIN")->required();
        cmd->callback([&g, name, source, labels] {
            auto data = read_secret_source(*source, secret_read_limit);
            if (!data) throw CLI::RuntimeError(report(data.error()));
            json::object lab;
            for (const auto& l : *labels) {
                auto [k, v] = split_kv(l);
                lab[k] = v;
            }
            // The body is assembled in secure memory around the base64 of the secret bytes.
            auto head = fmt::format("{{\"Name\":{},\"Labels\":{},\"Data\":\"",
                                    json::serialize(json::string(*name)), json::serialize(lab));
            auto b64 = crypto::base64_encode_secure(data->span());
            crypto::SecureBuffer body(head.size() + b64.size() + 2);
            std::memcpy(body.data(), head.data(), head.size());
            std::memcpy(body.data() + head.size(), b64.data(), b64.size());
            std::memcpy(body.data() + head.size() + b64.size(), "\"}", 2);
            ApiClient api(g.host);
            auto r = api.call("POST", "/secrets/create", body.span());
            if (!r) throw CLI::RuntimeError(report(r.error()));
            std::printf("%s\n", field(*r, {"ID"}).c_str());
        });
    }
    {
        auto* cmd = secret->add_subcommand("ls", "List secrets");
        cmd->alias("list");
        auto quiet = std::make_shared<bool>(false);
        auto filters = std::make_shared<std::vector<std::string>>();
        auto format = std::make_shared<std::string>("table");
        cmd->add_flag("-q,--quiet", *quiet, "Only display IDs");
        cmd->add_option("-f,--filter", *filters, "Filter output based on conditions provided");
        cmd->add_option("--format", *format, "table or json")->check(CLI::IsMember({"table", "json"}));
        cmd->callback([&g, quiet, filters, format] {
            ApiClient api(g.host);
            auto r = api.call("GET", "/secrets" + filters_query(*filters));
            if (!r) throw CLI::RuntimeError(report(r.error()));
            if (!r->is_array()) throw CLI::RuntimeError(report({Errc::internal, "malformed answer"}));
            auto items = r->as_array();
            std::sort(items.begin(), items.end(), [](const auto& a, const auto& b) {
                return field(a, {"Spec", "Name"}) < field(b, {"Spec", "Name"});
            });
            if (*quiet) {
                for (const auto& s : items) std::printf("%s\n", field(s, {"ID"}).c_str());
            } else if (*format == "json") {
                for (const auto& s : items) std::printf("%s\n", json::serialize(s).c_str());
            } else {
                std::vector<std::vector<std::string>> rows{{"ID", "NAME", "DRIVER", "CREATED", "UPDATED"}};
                for (const auto& s : items)
                    rows.push_back({field(s, {"ID"}), field(s, {"Spec", "Name"}),
                                    field(s, {"Spec", "Driver", "Name"}),
                                    time_ago(field(s, {"CreatedAt"})),
                                    time_ago(field(s, {"UpdatedAt"}))});
                std::fputs(format_table(rows).c_str(), stdout);
            }
        });
    }
    {
        auto* cmd = secret->add_subcommand("inspect", "Display detailed information on one or more secrets");
        auto names = std::make_shared<std::vector<std::string>>();
        cmd->add_option("secret", *names, "Secret name or ID")->required();
        cmd->callback([&g, names] {
            ApiClient api(g.host);
            inspect_all(api, "/secrets/", *names);
        });
    }
    {
        auto* cmd = secret->add_subcommand("rm", "Remove one or more secrets");
        cmd->alias("remove");
        auto names = std::make_shared<std::vector<std::string>>();
        cmd->add_option("secret", *names, "Secret name or ID")->required();
        cmd->callback([&g, names] {
            ApiClient api(g.host);
            remove_all(api, "/secrets/", *names);
        });
    }
}

// ---- cluster ---------------------------------------------------------------------------------

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
Result<json::value> swarm_update(ApiClient& api, const std::string& query, const json::value& spec) {
    auto current = api.call("GET", "/swarm");
    if (!current) return std::move(current).error();
    auto* version = at(*current, {"Version", "Index"});
    auto v = version && version->is_number() ? version->to_number<std::uint64_t>() : 0;
    return api.call("POST", fmt::format("/swarm/update?version={}{}", v, query), spec);
}

void add_cluster_commands(CLI::App& app, Globals& g) {
    auto* cluster = app.add_subcommand("cluster", "Manage the cluster: unlock, keys, CA");
    cluster->require_subcommand(1);
    {
        auto* cmd = cluster->add_subcommand("unlock", "Unlock a locked manager (reads the key from STDIN)");
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
    {
        auto* cmd = cluster->add_subcommand("unlock-key", "Show or rotate the unlock key");
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
                throw CLI::RuntimeError(report({Errc::invalid_argument, "no unlock key is set: autolock is off"}));
            if (*quiet) {
                std::printf("%s\n", key.c_str());
            } else {
                std::printf("To unlock a locked manager, run `coffer cluster unlock`\n"
                            "and provide the following key:\n\n    %s\n\n"
                            "Keep it somewhere safe: without it a restarted manager cannot be unlocked.\n",
                            key.c_str());
            }
        });
    }
    {
        auto* cmd = cluster->add_subcommand("join-token", "Show or rotate the token nodes join with");
        auto role = std::make_shared<std::string>();
        auto rotate = std::make_shared<bool>(false);
        auto quiet = std::make_shared<bool>(false);
        cmd->add_option("role", *role, "worker or manager")->required()->check(CLI::IsMember({"worker", "manager"}));
        cmd->add_flag("--rotate", *rotate, "Replace the token; the old one stops working at once");
        cmd->add_flag("-q,--quiet", *quiet, "Only display the token");
        cmd->callback([&g, role, rotate, quiet] {
            ApiClient api(g.host);
            std::string field_name = *role == "worker" ? "Worker" : "Manager";
            if (*rotate) {
                auto r = swarm_update(api, fmt::format("&rotate{}Token=true", field_name), json::object{});
                if (!r) throw CLI::RuntimeError(report(r.error()));
                if (!*quiet) std::printf("Successfully rotated %s join token.\n\n", role->c_str());
            }
            auto r = api.call("GET", "/swarm");
            if (!r) throw CLI::RuntimeError(report(r.error()));
            auto token = field(*r, {"JoinTokens", field_name});
            if (*quiet) {
                std::printf("%s\n", token.c_str());
            } else {
                // The token goes in the environment: a command line is visible to every user
                // (ps, /proc/PID/cmdline) for as long as the agent runs.
                std::printf("To add a %s to this cluster, run on the new node:\n\n"
                            "    COFFER_JOIN_TOKEN=%s \\\n"
                            "        coffer-agent --data-dir /var/lib/coffer-agent --manager MANAGER:4243\n\n"
                            "where MANAGER is an address of this manager's node port. Keep the token out of\n"
                            "command lines (--join-token): every user of the node can read those.\n",
                            role->c_str(), token.c_str());
            }
        });
    }
    {
        auto* cmd = cluster->add_subcommand("update", "Change cluster settings");
        auto expiry = std::make_shared<std::string>();
        cmd->add_option("--cert-expiry", *expiry, "Validity of node certificates (e.g. 2160h, 90d; at least 1h)")
            ->required();
        cmd->callback([&g, expiry] {
            auto seconds = model::parse_duration(*expiry);
            if (!seconds) throw CLI::RuntimeError(report({Errc::invalid_argument, "invalid duration " + *expiry}));
            ApiClient api(g.host);
            json::object spec{{"CAConfig", json::object{{"NodeCertExpiry", seconds->count() * 1'000'000'000}}}};
            auto r = swarm_update(api, "", spec);
            if (!r) throw CLI::RuntimeError(report(r.error()));
            std::printf("Cluster updated.\n");
        });
    }
    {
        auto* cmd = cluster->add_subcommand("ca", "Show the root CA certificate, or rotate the CA");
        auto rotate = std::make_shared<bool>(false);
        auto detach = std::make_shared<bool>(false);
        auto quiet = std::make_shared<bool>(false);
        auto timeout = std::make_shared<std::string>("10m");
        cmd->add_flag("--rotate", *rotate,
                      "Make a new root CA; nodes renew their certificates, then the old root is dropped");
        cmd->add_flag("-d,--detach", *detach, "Do not wait for the rotation to finish");
        cmd->add_flag("-q,--quiet", *quiet, "Print no progress");
        cmd->add_option("--timeout", *timeout, "How long to wait for the rotation (e.g. 90s, 10m)")
            ->capture_default_str();
        cmd->callback([&g, rotate, detach, quiet, timeout] {
            auto limit = model::parse_duration(*timeout);
            if (!limit || limit->count() <= 0)
                throw CLI::RuntimeError(report({Errc::invalid_argument, "invalid duration " + *timeout}));
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
                    auto progress = fmt::format("{}/{} nodes renewed",
                                                renewed ? json::serialize(*renewed) : "?",
                                                total ? json::serialize(*total) : "?");
                    if (!*quiet && progress != shown) std::fprintf(stderr, "rotating the CA: %s\n", progress.c_str());
                    shown = progress;
                    if (std::chrono::steady_clock::now() >= deadline)
                        throw CLI::RuntimeError(report(
                            {Errc::unavailable,
                             fmt::format("the CA rotation did not finish within {} ({}); it goes on in the "
                                         "background: `coffer cluster ca` shows the root when it is done",
                                         *timeout, progress)}));
                    std::this_thread::sleep_for(std::chrono::milliseconds(500));
                }
                if (*detach && !*quiet)
                    std::fprintf(stderr, "Not waiting: the old root is dropped once every node has renewed.\n");
            }
            std::printf("%s", field(*current, {"TLSInfo", "TrustRoot"}).c_str());
        });
    }
    {
        auto* cmd = cluster->add_subcommand("rotate-dek", "Re-seal every stored value under a fresh data key");
        cmd->callback([&g] {
            ApiClient api(g.host);
            auto r = api.call("POST", "/swarm/rotate-dek");
            if (!r) throw CLI::RuntimeError(report(r.error()));
            auto* id = at(*r, {"ID"});
            std::printf("Data encryption key rotated (key %s); values are re-sealed in the background.\n",
                        id ? json::serialize(*id).c_str() : "?");
        });
    }
    {
        auto* cmd = cluster->add_subcommand("inspect", "Show the cluster");
        cmd->callback([&g] {
            ApiClient api(g.host);
            auto r = api.call("GET", "/swarm");
            if (!r) throw CLI::RuntimeError(report(r.error()));
            std::printf("%s\n", pretty_json(*r).c_str());
        });
    }
}

}  // namespace

int run(int argc, char** argv) {
    CLI::App app{"coffer: secrets for containerized services"};
    app.require_subcommand(1);
    Globals g;
    const char* env = std::getenv("COFFER_HOST");
    g.host = env && *env ? env : default_host;
    app.add_option("-H,--host", g.host, "Daemon socket to connect to (unix:///path); also COFFER_HOST");
    add_secret_commands(app, g);
    add_cluster_commands(app, g);
    add_service_commands(app, g);
    add_node_commands(app, g);
    app.add_subcommand("version", "Show the client and server version")->callback([&g] {
        std::printf("Client: coffer %s\n", COFFER_VERSION);
        ApiClient api(g.host);
        auto r = api.call("GET", "/version");
        if (!r) throw CLI::RuntimeError(report(r.error()));
        std::printf("Server: coffer %s (API %s)\n", field(*r, {"Version"}).c_str(),
                    field(*r, {"ApiVersion"}).c_str());
    });
    try {
        app.parse(argc, argv);
    } catch (const CLI::RuntimeError& e) {
        return e.get_exit_code();
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    return 0;
}

}  // namespace coffer::cli
