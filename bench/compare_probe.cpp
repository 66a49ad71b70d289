// What bench/compare-swarm times, observed from inside the tasks and the same way for Docker
// Swarm and for coffer (root):
//
//   bench-compare-probe ready --marker M --count N --expect NAME [--timeout S] -- CMD...
//   bench-compare-probe gone --marker M --mountinfo FILE --mount-match TEXT [--timeout S] -- CMD...
//
// Both start CMD (a docker CLI call) and time from just before its start. The tasks under test
// run `sh -c SCRIPT M`: their processes are found by their command line (argv[0] "sh", last
// argument M), whichever system started them. `ready` ends once N distinct tasks (told apart by
// their mount namespace) have written /tmp/report holding the line NAME, read through
// /proc/PID/root: the task read its secrets and listed them. `gone` ends once no such process is
// left and no line of FILE (the instance's mountinfo) contains TEXT: the secret mounts are gone.
// Prints "<milliseconds until observed> <milliseconds until CMD exited>" (and, with
// --wall-clock, the start in seconds since the epoch); exits 1 when CMD failed or the deadline
// passed.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "coffer/base/process.h"

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

std::string slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

std::vector<std::string> split_nul(const std::string& s) {
    std::vector<std::string> out;
    std::size_t start = 0;
    while (start < s.size()) {
        auto end = s.find('\0', start);
        if (end == std::string::npos) end = s.size();
        out.push_back(s.substr(start, end - start));
        start = end + 1;
    }
    return out;
}

// The pids of the tasks' processes: `sh -c SCRIPT marker`.
std::vector<int> task_processes(const std::string& marker) {
    std::vector<int> out;
    DIR* d = ::opendir("/proc");
    if (!d) return out;
    while (auto* e = ::readdir(d)) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
        auto args = split_nul(slurp(std::string("/proc/") + e->d_name + "/cmdline"));
        if (args.size() >= 3 && args[0] == "sh" && args[1] == "-c" && args.back() == marker)
            out.push_back(std::atoi(e->d_name));
    }
    ::closedir(d);
    return out;
}

std::optional<ino_t> mount_namespace(int pid) {
    struct stat st {};
    if (::stat(("/proc/" + std::to_string(pid) + "/ns/mnt").c_str(), &st) != 0) return {};
    return st.st_ino;
}

bool has_line(const std::string& text, const std::string& line) {
    std::istringstream in(text);
    for (std::string l; std::getline(in, l);)
        if (l == line) return true;
    return false;
}

double ms(Clock::duration d) {
    return std::chrono::duration<double, std::milli>(d).count();
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"bench/compare-swarm's observer of tasks"};
    app.require_subcommand(1);
    std::string marker, expect, mountinfo, mount_match;
    int count = 1;
    double timeout = 60;
    std::vector<std::string> command;
    auto* ready = app.add_subcommand("ready", "until COUNT tasks report NAME");
    auto* gone = app.add_subcommand("gone", "until no task process and no matching mount is left");
    for (auto* sub : {ready, gone}) {
        sub->add_option("--marker", marker, "last argument of the tasks' sh -c")->required();
        sub->add_option("--timeout", timeout, "seconds")->capture_default_str();
        sub->add_option("command", command, "the command to time")->required();
    }
    bool wall_clock = false;
    app.add_flag("--wall-clock", wall_clock,
                 "also print when the command started (seconds since the epoch), to line up "
                 "with logs");
    ready->add_option("--count", count, "tasks")->capture_default_str();
    ready->add_option("--expect", expect, "a line the report must hold")->required();
    gone->add_option("--mountinfo", mountinfo, "the instance's /proc/PID/mountinfo")->required();
    gone->add_option("--mount-match", mount_match, "text of a secret mount's line")->required();
    CLI11_PARSE(app, argc, argv);

    auto observed = [&]() -> bool {
        if (ready->parsed()) {
            std::set<ino_t> tasks;
            for (int pid : task_processes(marker)) {
                auto ns = mount_namespace(pid);
                if (!ns || tasks.count(*ns)) continue;
                if (has_line(slurp("/proc/" + std::to_string(pid) + "/root/tmp/report"), expect))
                    tasks.insert(*ns);
            }
            return static_cast<int>(tasks.size()) >= count;
        }
        if (!task_processes(marker).empty()) return false;
        return slurp(mountinfo).find(mount_match) == std::string::npos;
    };

    // The command's output (a service's id) is not ours to print.
    int null_fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    auto wall_t0 = std::chrono::system_clock::now();
    auto t0 = Clock::now();
    auto child = coffer::Child::spawn({.argv = command, .stdout_fd = null_fd});
    ::close(null_fd);
    std::optional<double> seen_ms, exited_ms;
    auto deadline = t0 + std::chrono::duration<double>(timeout);
    while (!seen_ms || !exited_ms) {
        if (Clock::now() > deadline) {
            std::fprintf(stderr, "bench-compare-probe: deadline of %.0f s passed (%s)\n", timeout,
                         seen_ms ? "the command did not exit" : "not observed");
            return 1;
        }
        if (!exited_ms) {
            if (auto status = child.wait_for(0ms)) {
                exited_ms = ms(Clock::now() - t0);
                if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
                    std::fprintf(stderr, "bench-compare-probe: the command failed\n");
                    return 1;
                }
            }
        }
        if (!seen_ms && observed()) seen_ms = ms(Clock::now() - t0);
        std::this_thread::sleep_for(1ms);
    }
    if (wall_clock)
        std::printf("%.3f %.3f %.6f\n", *seen_ms, *exited_ms,
                    std::chrono::duration<double>(wall_t0.time_since_epoch()).count());
    else
        std::printf("%.3f %.3f\n", *seen_ms, *exited_ms);
    return 0;
}
