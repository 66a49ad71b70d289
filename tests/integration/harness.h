// Integration-test harness: temporary directories, a real cofferd, the real coffer CLI.
// Everything started here is stopped and removed by its owner, also when a test fails.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "coffer/base/process.h"
#include "coffer/crypto/secure_buffer.h"

namespace coffer::test {

// The environment variable `name`, or `fallback` when it is not set.
std::string env_or(const char* name, const std::string& fallback);

// A fresh directory under /tmp, removed with everything in it on destruction.
class TempDir {
  public:
    TempDir();
    ~TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::filesystem::path& path() const { return path_; }

  private:
    std::filesystem::path path_;
};

// A fresh directory under /var/tmp (a real filesystem, so overlay mounts work in it) for tests
// that mount: on destruction every mount below it is detached, then it is removed.
class MountDir {
  public:
    MountDir();
    ~MountDir();
    MountDir(const MountDir&) = delete;
    MountDir& operator=(const MountDir&) = delete;
    const std::string& path() const { return path_; }

  private:
    std::string path_;
};

// Polls cond until it holds or the deadline passes; returns its last value.
bool wait_until(const std::function<bool()>& cond,
                std::chrono::milliseconds deadline = std::chrono::seconds(15));

std::string read_file(const std::filesystem::path& p);

struct CliResult {
    int status = -1;
    std::string out;
    std::string err;
};

// A cofferd on a private data directory and socket.
class Daemon {
  public:
    // prefix runs before cofferd, e.g. {"nsenter", "--net=/run/netns/N"} (it must exec cofferd,
    // so that signals reach it).
    Daemon(std::filesystem::path data_dir, std::filesystem::path socket,
           std::vector<std::string> extra = {}, std::vector<std::string> prefix = {});
    ~Daemon();  // SIGTERM, then SIGKILL after a deadline
    Daemon(const Daemon&) = delete;
    Daemon& operator=(const Daemon&) = delete;

    // Waits until the socket answers /_ping itself (a standby manager forwarding to the leader
    // is not ready). False if the daemon exited or the deadline passed.
    bool ready(std::chrono::milliseconds deadline = std::chrono::seconds(20));
    void kill9();                     // SIGKILL and reap
    int terminate();                  // SIGTERM, wait; returns the wait status
    std::string stdout_text() const;  // what the daemon printed on stdout so far
    std::string host() const { return "unix://" + socket_.string(); }
    const std::filesystem::path& socket() const { return socket_; }
    int pid() const { return child_.pid(); }

  private:
    std::filesystem::path data_dir_, socket_, out_;
    Child child_;
};

// Runs `coffer -H host args...` with stdin_data on standard input.
CliResult coffer_cli(const std::string& host, const std::vector<std::string>& args,
                     const std::string& stdin_data = "");
// Runs any program; env entries are added to the current environment.
CliResult run_program(const std::vector<std::string>& argv, const std::string& stdin_data = "",
                      const std::vector<std::string>& env = {});
// Runs a set-up command: "" when it succeeded, else the command and what failed.
std::string run_step(const std::vector<std::string>& argv);
// Writes text to a new or truncated file; throws when it cannot.
void write_text(const std::filesystem::path& p, const std::string& text);
// Whether the child has exited (then reaped).
bool exited(Child& child);
// SIGTERM, then SIGKILL when it has not ended within deadline; reaped either way.
void stop_child(Child& child, std::chrono::milliseconds deadline);
// A CA of a test's own, made with openssl in dir: ca.key and ca.crt (P-256, two days, subject
// "/CN=<name>"). "" or what failed.
std::string make_test_ca(const std::filesystem::path& dir, const std::string& name);
// A certificate that CA signs: <stem>.key and <stem>.crt in dir, subject "/CN=<cn>", the
// openssl extension lines in extensions (subjectAltName=..., extendedKeyUsage=...). "" or what
// failed.
std::string sign_test_certificate(const std::filesystem::path& dir, const std::string& stem,
                                  const std::string& cn, const std::string& extensions);
// A loopback port nothing listens on right now.
std::uint16_t free_port();
// Whether a docker CLI is installed (tests of the docker CLI against cofferd skip without one).
bool have_docker();
// The lines of a program's output, without their newlines.
std::vector<std::string> lines_of(const std::string& text);

// A network namespace of the test's own (`ip netns add coffer-<tag>-<random>`, loopback up),
// deleted on destruction with the veth ends inside it. error() says what failed, "" when ready.
class NetworkNamespace {
  public:
    explicit NetworkNamespace(const std::string& tag);
    ~NetworkNamespace();
    NetworkNamespace(const NetworkNamespace&) = delete;
    NetworkNamespace& operator=(const NetworkNamespace&) = delete;

    const std::string& name() const { return name_; }
    std::string path() const { return "/run/netns/" + name_; }
    const std::string& error() const { return error_; }
    // Runs `ip -n NAME args...`; "" or what failed.
    std::string ip(const std::vector<std::string>& args) const;
    // A prefix that runs a program in this namespace only. Not `ip netns exec`, which also
    // mounts a fresh /sys and so hides the host's cgroup mounts from an agent's runner.
    std::vector<std::string> enter() const { return {"nsenter", "--net=" + path()}; }

    // True when namespaces can be made here (root and iproute2).
    static bool available();

  private:
    std::string name_, error_;
};

// Joins a and b with a veth pair in a /30: a's end gets a_address, b's end b_address (both up).
// The pair goes with either namespace. "" or what failed.
std::string connect(const NetworkNamespace& a, const std::string& a_address,
                    const NetworkNamespace& b, const std::string& b_address);

// "10.<second>.<random 1..250>": a /24 unlikely to collide with another run's.
std::string random_subnet(int second);

// Where any of `needles` occurs in the writable mappings of process `pid` ("self" for this one)
// that hold no locked page: "<mapping> <perms> +<offset>: <needle name>". The memory is read
// into locked memory, so the scan leaves no copy of what it finds where it looks. Needs root
// (or ptrace rights over pid) to read /proc/PID/mem.
std::vector<std::string> find_in_unlocked_memory(
    const std::string& pid,
    const std::vector<std::pair<std::string, const crypto::SecureBuffer*>>& needles);
// One line per entry, each ended by a newline.
std::string join_lines(const std::vector<std::string>& lines);

std::string cofferd_path();
std::string coffer_path();

// The coffer-agent program the tests run ($COFFER_AGENT), "" when not set.
std::string agent_program();
// The test images (make-test-images: busybox:latest, healthcheck:latest, hostile ones) as an OCI
// layout, built once per test program and removed at exit; "" if it could not be built.
const std::filesystem::path& image_layout();

}  // namespace coffer::test
