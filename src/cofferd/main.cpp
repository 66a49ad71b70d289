// cofferd: the manager daemon. Options, wiring, run.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <sodium.h>

#include <cstdio>

#include "coffer/base/log.h"
#include "coffer/base/process.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/manager/api.h"
#include "coffer/manager/manager.h"
#include "coffer/net/http_server.h"
#ifdef COFFER_TEST_HOOKS
#include "test_hooks.h"
#endif

int main(int argc, char** argv) {
    CLI::App app{"cofferd: the coffer manager"};
    std::string data_dir = "/var/lib/coffer";
    std::string socket = "/run/coffer/coffer.sock";
    std::string log_spec = "info";
    bool autolock = false;
    app.add_option("--data-dir", data_dir, "Data directory (created 0700)")->capture_default_str();
    app.add_option("--socket", socket, "Unix socket for the API (mode 0660)")->capture_default_str();
    app.add_flag("--autolock", autolock,
                 "At first start: protect the store with an unlock key shown once and never stored");
    app.add_option("--log-level", log_spec, "Log levels: LEVEL[,CATEGORY=LEVEL...]")->capture_default_str();
    CLI11_PARSE(app, argc, argv);

    coffer::log::configure(log_spec);
    try {
        coffer::harden_process();
        coffer::crypto::init();
        ::umask(077);
        ::signal(SIGPIPE, SIG_IGN);

        auto opened = coffer::manager::Manager::open({.data_dir = data_dir, .autolock = autolock});
        if (!opened) {
            std::fprintf(stderr, "cofferd: %s\n", opened.error().message.c_str());
            return 1;
        }
        auto& manager = *opened->manager;
        if (opened->new_unlock_key) {
            const auto& k = *opened->new_unlock_key;
            std::string line(reinterpret_cast<const char*>(k.data()), k.size());
            std::printf("coffer is autolocked. The unlock key, shown this once and stored nowhere:\n\n"
                        "    %s\n\nEvery restart needs it: `coffer cluster unlock`.\n", line.c_str());
            std::fflush(stdout);
            sodium_memzero(line.data(), line.size());
        }
        if (manager.locked())
            coffer::log::warn("manager", "store is locked: run `coffer cluster unlock`");

        coffer::manager::Api api(manager);
        coffer::net::HttpServer server({.socket_path = socket, .headers = coffer::manager::api_headers()},
                                       api);
        coffer::log::info("manager", "serving on unix://{} (data in {})", socket, data_dir);
#ifdef COFFER_TEST_HOOKS
        auto hooks = coffer::testhooks::start(manager);
#endif
        server.run(true);
        coffer::log::info("manager", "stopped");
    } catch (const std::exception& e) {
        std::fprintf(stderr, "cofferd: %s\n", e.what());
        return 1;
    }
    return 0;
}
