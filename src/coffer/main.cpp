#include "coffer/cli/cli.h"

int main(int argc, char** argv) { return coffer::cli::run(argc, argv); }
