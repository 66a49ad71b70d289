#include "coffer/cli/cli.h"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "client.h"
#include "common.h"
#include "complete.h"

namespace coffer::cli {

namespace {

constexpr const char* default_host = "unix:///run/coffer/coffer.sock";

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
        return app.exit(e);
    }
    return 0;
}

}  // namespace coffer::cli
