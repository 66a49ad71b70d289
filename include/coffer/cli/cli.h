// The `coffer` command line: Docker's verbs against cofferd's API.
#pragma once

namespace coffer::cli {

// Runs the command line; returns the process exit status.
int run(int argc, char** argv);

}  // namespace coffer::cli
