#include "harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "coffer/base/error.h"
#include "coffer/base/mount.h"
#include "coffer/base/unique_fd.h"
#include "coffer/net/http_client.h"

extern char** environ;

namespace coffer::test {

namespace fs = std::filesystem;

std::string env_or(const char* name, const std::string& fallback) {
    const char* v = std::getenv(name);
    return v ? v : fallback;
}

TempDir::TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "coffer-test-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw_errno("mkdtemp");
    path_ = tmpl;
}

TempDir::~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
}

MountDir::MountDir() {
    std::string t = "/var/tmp/coffer-test-XXXXXX";
    if (::mkdtemp(t.data()) == nullptr) throw_errno("mkdtemp");
    path_ = t;
}

MountDir::~MountDir() {
    for (auto& m : mounts_under(path_)) ::umount2(m.c_str(), MNT_DETACH);
    try {
        remove_tree(path_);
    } catch (...) {
    }
}

bool wait_until(const std::function<bool()>& cond, std::chrono::milliseconds deadline) {
    auto end = std::chrono::steady_clock::now() + deadline;
    auto pause = std::chrono::milliseconds(2);
    for (;;) {
        if (cond()) return true;
        if (std::chrono::steady_clock::now() >= end) return cond();
        std::this_thread::sleep_for(pause);
        pause = std::min(pause * 2, std::chrono::milliseconds(50));
    }
}

std::string read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::string cofferd_path() {
    const char* p = std::getenv("COFFERD");
    return p ? p : "cofferd";
}

std::string coffer_path() {
    const char* p = std::getenv("COFFER");
    return p ? p : "coffer";
}

Daemon::Daemon(fs::path data_dir, fs::path socket, std::vector<std::string> extra,
               std::vector<std::string> prefix)
    : data_dir_(std::move(data_dir)), socket_(std::move(socket)) {
    out_ = socket_.parent_path() / fmt::format("cofferd-{}.out", socket_.filename().string());
    UniqueFd out(::open(out_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
    if (!out) throw_errno("open daemon output");
    std::vector<std::string> argv{cofferd_path(), "--data-dir",     data_dir_.string(),
                                  "--socket",     socket_.string(), "--log-level",
                                  "warn"};
    // Tests run side by side: a node port on any free loopback port unless a test picks one.
    if (std::find(extra.begin(), extra.end(), "--listen") == extra.end())
        argv.insert(argv.end(), {"--listen", "127.0.0.1:0"});
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.insert(argv.begin(), prefix.begin(), prefix.end());
    child_ = Child::spawn({.argv = argv, .stdout_fd = out.get()});
}

Daemon::~Daemon() {
    if (child_.running()) {
        try {
            terminate();
        } catch (...) {
        }
    }
}

bool Daemon::ready(std::chrono::milliseconds deadline) {
    return wait_until(
        [&] {
            if (!child_.running()) return false;
            auto c = net::HttpClient::connect(host());
            if (!c) return false;
            auto r = (*c)->request("GET", "/_ping");
            // A standby manager forwards to the leader: ready is this one serving.
            return r && r->status == 200 && !r->headers.contains("x-coffer-standby");
        },
        deadline);
}

void Daemon::kill9() {
    child_.signal(SIGKILL);
    child_.wait();
}

int Daemon::terminate() {
    child_.signal(SIGTERM);
    auto st = child_.wait_for(std::chrono::seconds(20));
    if (!st) {
        child_.signal(SIGKILL);
        return child_.wait();
    }
    return *st;
}

std::string Daemon::stdout_text() const {
    return read_file(out_);
}

namespace {

std::string random_suffix(std::size_t n) {
    static constexpr char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    std::random_device rd;
    std::string s;
    for (std::size_t i = 0; i < n; ++i) s += alphabet[rd() % (sizeof(alphabet) - 1)];
    return s;
}

}  // namespace

std::string run_step(const std::vector<std::string>& argv) {
    try {
        auto r = run_command(argv);
        return r.ok() ? "" : fmt::format("{}: {}", fmt::join(argv, " "), r.describe());
    } catch (const std::exception& e) {
        return fmt::format("{}: {}", fmt::join(argv, " "), e.what());
    }
}

void write_text(const fs::path& p, const std::string& text) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out.flush()) throw std::runtime_error("write " + p.string());
}

std::string make_test_ca(const fs::path& dir, const std::string& name) {
    return run_step({"openssl",
                     "req",
                     "-x509",
                     "-newkey",
                     "ec",
                     "-pkeyopt",
                     "ec_paramgen_curve:P-256",
                     "-nodes",
                     "-keyout",
                     (dir / "ca.key").string(),
                     "-out",
                     (dir / "ca.crt").string(),
                     "-days",
                     "2",
                     "-subj",
                     "/CN=" + name,
                     "-addext",
                     "basicConstraints=critical,CA:TRUE",
                     "-addext",
                     "keyUsage=critical,keyCertSign,cRLSign"});
}

std::string sign_test_certificate(const fs::path& dir, const std::string& stem,
                                  const std::string& cn, const std::string& extensions) {
    auto file = [&](const char* suffix) { return (dir / (stem + suffix)).string(); };
    write_text(file(".ext"),
               "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,"
               "digitalSignature\n" +
                   extensions);
    std::random_device rd;
    if (auto e = run_step({"openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                           "-nodes", "-keyout", file(".key"), "-out", file(".csr"), "-subj",
                           "/CN=" + cn});
        !e.empty())
        return e;
    return run_step({"openssl", "x509", "-req", "-in", file(".csr"), "-CA",
                     (dir / "ca.crt").string(), "-CAkey", (dir / "ca.key").string(), "-set_serial",
                     fmt::format("0x{:08x}{:08x}", rd(), rd()), "-days", "2", "-extfile",
                     file(".ext"), "-out", file(".crt")});
}

bool exited(Child& child) {
    return !child.running() || child.wait_for(std::chrono::milliseconds(0)).has_value();
}

void stop_child(Child& child, std::chrono::milliseconds deadline) {
    if (!child.running()) return;
    child.signal(SIGTERM);
    if (!child.wait_for(deadline)) {
        child.signal(SIGKILL);
        child.wait();
    }
}

NetworkNamespace::NetworkNamespace(const std::string& tag)
    : name_("coffer-" + tag + "-" + random_suffix(6)) {
    error_ = run_step({"ip", "netns", "add", name_});
    if (error_.empty()) error_ = ip({"link", "set", "lo", "up"});
}

NetworkNamespace::~NetworkNamespace() {
    (void)run_step({"ip", "netns", "del", name_});
}

std::string NetworkNamespace::ip(const std::vector<std::string>& args) const {
    std::vector<std::string> argv{"ip", "-n", name_};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_step(argv);
}

bool NetworkNamespace::available() {
    if (::geteuid() != 0) return false;
    return run_step({"ip", "netns", "list"}).empty();
}

std::string connect(const NetworkNamespace& a, const std::string& a_address,
                    const NetworkNamespace& b, const std::string& b_address) {
    // Interface names: at most 15 characters, unique on the host while the pair is created.
    auto suffix = random_suffix(8);
    auto ea = "cva" + suffix, eb = "cvb" + suffix;
    for (auto step : std::vector<std::function<std::string()>>{
             [&] {
                 return a.ip({"link", "add", ea, "type", "veth", "peer", "name", eb});
             },
             [&] {
                 return a.ip({"link", "set", eb, "netns", b.name()});
             },
             [&] {
                 return a.ip({"addr", "add", a_address + "/30", "dev", ea});
             },
             [&] {
                 return b.ip({"addr", "add", b_address + "/30", "dev", eb});
             },
             [&] {
                 return a.ip({"link", "set", ea, "up"});
             },
             [&] {
                 return b.ip({"link", "set", eb, "up"});
             },
         }) {
        if (auto e = step(); !e.empty()) return e;
    }
    return "";
}

std::string random_subnet(int second) {
    std::random_device rd;
    return fmt::format("10.{}.{}", second, 1 + rd() % 250);
}

std::uint16_t free_port() {
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sa);
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), len) != 0 ||
        ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&sa), &len) != 0)
        throw std::runtime_error("free_port");
    return ntohs(sa.sin_port);
}

CliResult run_program(const std::vector<std::string>& argv, const std::string& stdin_data,
                      const std::vector<std::string>& env) {
    TempDir io;
    UniqueFd out(::open((io.path() / "out").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    UniqueFd err(::open((io.path() / "err").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) throw_errno("pipe2");
    UniqueFd rd(p[0]), wr(p[1]);
    // The inherited environment with env's entries in place of those of the same name (a
    // variable given twice is read first-wins by some programs, last-wins by others).
    std::vector<std::string> full_env;
    if (!env.empty()) {
        auto name_of = [](std::string_view entry) { return entry.substr(0, entry.find('=')); };
        for (char** e = environ; *e; ++e)
            if (std::none_of(env.begin(), env.end(),
                             [&](const std::string& x) { return name_of(x) == name_of(*e); }))
                full_env.emplace_back(*e);
        full_env.insert(full_env.end(), env.begin(), env.end());
    }
    auto child = Child::spawn({.argv = argv,
                               .env = full_env,
                               .stdin_fd = rd.get(),
                               .stdout_fd = out.get(),
                               .stderr_fd = err.get()});
    rd.reset();
    // A writer thread, so a child that exits without reading cannot block the test.
    std::thread writer([fd = wr.release(), &stdin_data] {
        UniqueFd w(fd);
        std::size_t off = 0;
        while (off < stdin_data.size()) {
            ssize_t n = ::write(w.get(), stdin_data.data() + off, stdin_data.size() - off);
            if (n <= 0) break;
            off += static_cast<std::size_t>(n);
        }
    });
    auto st = child.wait_for(std::chrono::seconds(60));
    if (!st) {
        child.signal(SIGKILL);
        st = child.wait();
    }
    writer.join();
    CliResult r;
    r.status = WIFEXITED(*st) ? WEXITSTATUS(*st) : 128 + WTERMSIG(*st);
    r.out = read_file(io.path() / "out");
    r.err = read_file(io.path() / "err");
    return r;
}

CliResult coffer_cli(const std::string& host, const std::vector<std::string>& args,
                     const std::string& stdin_data) {
    std::vector<std::string> argv{coffer_path(), "-H", host};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_program(argv, stdin_data);
}

namespace {

struct Mapping {
    std::uintptr_t begin = 0, end = 0;
    std::string perms, name;
    std::size_t locked_kb = 0;
};

std::vector<Mapping> mappings(const std::string& pid) {
    std::vector<Mapping> out;
    std::ifstream smaps("/proc/" + pid + "/smaps");
    for (std::string line; std::getline(smaps, line);) {
        std::istringstream in(line);
        std::string first;
        in >> first;
        if (auto dash = first.find('-');
            dash != std::string::npos && first.back() != ':' &&
            first.find_first_not_of("0123456789abcdef-") == std::string::npos) {
            Mapping m;
            m.begin = std::stoull(first.substr(0, dash), nullptr, 16);
            m.end = std::stoull(first.substr(dash + 1), nullptr, 16);
            std::string offset, dev, inode;
            in >> m.perms >> offset >> dev >> inode;
            std::getline(in >> std::ws, m.name);
            out.push_back(std::move(m));
        } else if (first == "Locked:" && !out.empty()) {
            in >> out.back().locked_kb;
        }
    }
    return out;
}

}  // namespace

std::vector<std::string> find_in_unlocked_memory(
    const std::string& pid,
    const std::vector<std::pair<std::string, const crypto::SecureBuffer*>>& needles) {
    std::vector<std::string> found;
    int mem = ::open(("/proc/" + pid + "/mem").c_str(), O_RDONLY | O_CLOEXEC);
    if (mem < 0) {
        found.push_back(fmt::format("cannot open /proc/{}/mem: {}", pid, std::strerror(errno)));
        return found;
    }
    std::size_t longest = 0;
    for (auto& [_, n] : needles) longest = std::max(longest, n->size());
    constexpr std::size_t chunk = 1 << 20;
    crypto::SecureBuffer window(chunk + longest);
    for (const auto& m : mappings(pid)) {
        if (m.perms.size() < 2 || m.perms[0] != 'r' || m.perms[1] != 'w' || m.locked_kb != 0)
            continue;
        if (m.name == "[vvar]" || m.name == "[vsyscall]") continue;
        for (std::uintptr_t at = m.begin; at < m.end; at += chunk) {
            const std::size_t want = std::min<std::size_t>(chunk + longest, m.end - at);
            ssize_t n = ::pread(mem, window.data(), want, static_cast<off_t>(at));
            if (n <= 0) break;
            for (auto& [name, needle] : needles) {
                const auto* hay = window.data();
                const auto* end = hay + n;
                for (const void* p = hay;
                     (p = ::memmem(
                          p, static_cast<std::size_t>(end - static_cast<const std::uint8_t*>(p)),
                          needle->data(), needle->size())) != nullptr;
                     p = static_cast<const std::uint8_t*>(p) + 1) {
                    auto offset = static_cast<const std::uint8_t*>(p) - hay;
                    if (static_cast<std::size_t>(offset) >= chunk) break;  // the next chunk's
                    found.push_back(fmt::format("{} {} +{:#x}: {}",
                                                m.name.empty() ? "[anon]" : m.name, m.perms,
                                                at + offset - m.begin, name));
                }
            }
        }
    }
    ::close(mem);
    return found;
}

std::string join_lines(const std::vector<std::string>& lines) {
    std::string out;
    for (auto& l : lines) out += l + "\n";
    return out;
}

bool have_docker() {
    return run_program({"sh", "-c", "command -v docker"}).status == 0;
}

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
}

std::string agent_program() {
    return env_or("COFFER_AGENT", "");
}

const fs::path& image_layout() {
    static std::once_flag once;
    static std::unique_ptr<TempDir> dir;
    static fs::path layout;
    std::call_once(once, [] {
        dir = std::make_unique<TempDir>();
        auto out = dir->path() / "layout";
        auto r =
            run_command({env_or("COFFER_MAKE_TEST_IMAGES", "tests/integration/make-test-images"),
                         out.string()});
        if (r.ok())
            layout = out;
        else
            fmt::print(stderr, "make-test-images: {}\n", r.describe());
    });
    return layout;
}

}  // namespace coffer::test

namespace {
// A CLI that exits before reading its input must not kill the test with SIGPIPE.
const bool sigpipe_ignored = [] {
    ::signal(SIGPIPE, SIG_IGN);
    return true;
}();
}  // namespace
