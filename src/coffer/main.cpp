#include "coffer/base/process.h"
#include "coffer/cli/cli.h"

int main(int argc, char** argv) {
    // The CLI holds secret bytes while it sends them: no core dumps, no ptrace by others.
    coffer::harden_process();
    return coffer::cli::run(argc, argv);
}
