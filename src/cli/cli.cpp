#include "coffer/cli/cli.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "client.h"
#include "common.h"
#include "complete.h"

namespace coffer::cli {

namespace {

constexpr const char* default_host = "unix:///run/coffer/coffer.sock";
constexpr int usage_error_status = 125;

}  // namespace

int run(int argc, char** argv) {
    CLI::App app{"coffer: secrets for containerized services"};
    app.require_subcommand(1);
    Globals g;
    const char* env = std::getenv("COFFER_HOST");
    g.host = env && *env ? env : default_host;
    app.add_option("-H,--host", g.host,
                   "Daemon socket to connect to (unix:///path); also COFFER_HOST");
    add_secret_commands(app, g);
    add_config_commands(app, g);
    add_cluster_commands(app, g);
    add_service_commands(app, g);
    add_node_commands(app, g);
    add_network_commands(app, g);
    add_stack_commands(app, g);
    app.add_subcommand("version", "Show the client and server version")->callback([&g] {
        std::printf("Client: coffer %s\n", COFFER_VERSION);
        ApiClient api(g.host);
        auto r = api.call("GET", "/version");
        if (!r) throw CLI::RuntimeError(report(r.error()));
        std::printf("Server: coffer %s (API %s)\n", field(*r, {"Version"}).c_str(),
                    field(*r, {"ApiVersion"}).c_str());
    });
    // The shell completion's question (dist/completion/coffer.bash), answered from the tree
    // built above; not a command of its own, so neither help nor completion shows it.
    if (argc >= 2 && std::string_view(argv[1]) == "__complete")
        return print_completions(app, {argv + 2, argv + argc}, g.host);
    try {
        app.parse(argc, argv);
    } catch (const CLI::RuntimeError& e) {
        return e.get_exit_code();
    } catch (const CLI::ParseError& e) {
        // As the docker CLI: 0 after help, 1 for missing or extra arguments, 125 for an
        // option it does not know or a value it refuses.
        auto printed = app.exit(e);
        if (printed == 0) return 0;
        if (dynamic_cast<const CLI::RequiredError*>(&e) != nullptr ||
            dynamic_cast<const CLI::ArgumentMismatch*>(&e) != nullptr)
            return 1;
        // Extra words: arguments too many (1), unless one of them is an option (125).
        if (dynamic_cast<const CLI::ExtrasError*>(&e) != nullptr) {
            std::string_view what = e.what();
            auto listed = what.substr(std::min(what.find(": "), what.size()));
            return listed.find(" -") == std::string_view::npos ? 1 : usage_error_status;
        }
        return usage_error_status;
    }
    return 0;
}

}  // namespace coffer::cli
