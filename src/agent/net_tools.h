// The network tools the agent drives as child processes (ip, bridge, iptables, iptables-restore,
// the CNI plugins): input on stdin, output captured, a deadline on each run.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "coffer/base/error.h"

namespace coffer::agent {

struct ToolRun {
    std::vector<std::string> argv;  // argv[0] looked up in PATH unless program is set
    std::string program;
    std::string input;             // on stdin
    std::vector<std::string> env;  // empty: inherit
    std::chrono::milliseconds timeout{30'000};
};

struct ToolResult {
    int status = 0;  // wait status
    std::string out;
    std::string err;
    bool ok() const noexcept;
    // "ip link add ...: exit 2: RTNETLINK answers: File exists"
    std::string describe(const std::vector<std::string>& argv) const;
};

// Runs the tool to completion (killed at its deadline). Throws SystemError when it cannot be
// started.
ToolResult run_tool(const ToolRun& run);

// Runs argv; its stdout, or internal "<command>: <why>" when it did not exit with 0.
Result<std::string> tool(const std::vector<std::string>& argv, const std::string& input = {});

}  // namespace coffer::agent
