#include "registry_fixture.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <signal.h>

#include <fstream>
#include <random>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "coffer/base/error.h"
#include "coffer/base/unique_fd.h"

namespace coffer::test {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

constexpr auto start_deadline = 30s;
constexpr auto stop_deadline = 10s;
constexpr auto skopeo_deadline = "120s";
constexpr auto docker_registry = "/usr/bin/docker-registry";

std::string script(const char* env, const char* name) {
    return env_or(env, std::string(COFFER_INTEGRATION_SOURCE_DIR) + "/" + name);
}

std::vector<std::string> in_namespace(const NetworkNamespace* ns, std::vector<std::string> argv) {
    if (!ns) return argv;
    auto full = ns->enter();
    full.insert(full.end(), argv.begin(), argv.end());
    return full;
}

bool is_ipv6(const std::string& address) {
    return address.find(':') != std::string::npos;
}

std::string join_host(const std::string& address, int port) {
    return is_ipv6(address) ? fmt::format("[{}]:{}", address, port)
                            : fmt::format("{}:{}", address, port);
}

std::string subject_alt_name(const std::string& address) {
    unsigned char buf[16];
    bool ip = ::inet_pton(is_ipv6(address) ? AF_INET6 : AF_INET, address.c_str(), buf) == 1;
    if (!ip) return fmt::format("DNS:{},DNS:localhost", address);
    return fmt::format("IP:{},DNS:localhost", address);
}

UniqueFd open_log(const fs::path& p) {
    UniqueFd fd(::open(p.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
    if (!fd) throw_errno(fmt::format("open {}", p.string()));
    return fd;
}

// The status GET path answers with, "" when nothing answered. ca empty: plain HTTP.
std::string http_status(const NetworkNamespace* ns, const std::string& address, int port,
                        const std::string& path, const fs::path& ca) {
    static constexpr auto probe = R"(
import http.client, ssl, sys
host, port, path, ca = sys.argv[1:5]
if ca:
    c = http.client.HTTPSConnection(host, int(port), timeout=2,
                                    context=ssl.create_default_context(cafile=ca))
else:
    c = http.client.HTTPConnection(host, int(port), timeout=2)
c.request("GET", path)
print(c.getresponse().status)
)";
    try {
        auto r = run_command(in_namespace(
            ns, {"python3", "-c", probe, address, std::to_string(port), path, ca.string()}));
        if (!r.ok()) return "";
        return r.out.substr(0, r.out.find('\n'));
    } catch (const std::exception&) {
        return "";
    }
}

void remove_dir(const fs::path& dir) {
    std::error_code ec;
    fs::remove_all(dir, ec);
}

// The port docker-registry logs once it listens: `msg="listening on 127.0.0.1:39787, tls"`.
int logged_port(const std::string& log) {
    static constexpr std::string_view marker = "listening on ";
    auto at = log.find(marker);
    if (at == std::string::npos) return 0;
    auto begin = at + marker.size();
    auto end = log.find_first_of(",\" \n", begin);
    auto address = log.substr(begin, end - begin);
    auto colon = address.rfind(':');
    if (colon == std::string::npos) return 0;
    try {
        return std::stoi(address.substr(colon + 1));
    } catch (const std::exception&) {
        return 0;
    }
}

}  // namespace

std::string random_password() {
    static constexpr char alphabet[] =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    std::random_device rd;
    std::string s;
    for (int i = 0; i < 24; ++i) s += alphabet[rd() % (sizeof(alphabet) - 1)];
    return s;
}

CommandResult run_skopeo(const std::vector<std::string>& args, const NetworkNamespace* ns) {
    std::vector<std::string> argv{"skopeo", "--insecure-policy", "--command-timeout",
                                  skopeo_deadline};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_command(in_namespace(ns, std::move(argv)));
}

// ---- Registry

Registry::Registry(fs::path dir, std::string address, const NetworkNamespace* ns, Options o)
    : dir_(std::move(dir)), address_(std::move(address)), ns_(ns), options_(std::move(o)) {
    try {
        error_ = start();
    } catch (const std::exception& e) {
        error_ = e.what();
    }
}

Registry::~Registry() {
    stop_child(child_, stop_deadline);
    remove_dir(dir_);
}

std::string Registry::start() {
    const auto tls = dir_ / "tls";
    for (const auto& d : {dir_ / "storage", tls, cert_dir()}) fs::create_directories(d);

    std::string config =
        fmt::format(R"(version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: "{}"
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: "{}"
  secret: "{}"
)",
                    (dir_ / "storage").string(), join_host(address_, 0), random_password());

    if (options_.tls) {
        // A CA of this registry's own, and a server certificate it signed for the address.
        if (auto e = make_test_ca(tls, "coffer test registry CA"); !e.empty()) return e;
        fs::copy_file(tls / "ca.crt", ca_cert());
        if (auto e = sign_test_certificate(
                tls, "server", address_,
                fmt::format("subjectAltName={}\nextendedKeyUsage=serverAuth\n",
                            subject_alt_name(address_)));
            !e.empty())
            return e;
        config += fmt::format("  tls:\n    certificate: \"{}\"\n    key: \"{}\"\n",
                              (tls / "server.crt").string(), (tls / "server.key").string());
    }

    if (options_.auth) {
        auto r = run_command({"htpasswd", "-Bbn", options_.user, options_.password});
        if (!r.ok()) return "htpasswd: " + r.describe();
        write_text(dir_ / "htpasswd", r.out);
        config += fmt::format("auth:\n  htpasswd:\n    realm: coffer-test\n    path: \"{}\"\n",
                              (dir_ / "htpasswd").string());
    }
    write_text(dir_ / "config.yml", config);

    auto log_fd = open_log(dir_ / "registry.log");
    child_ = Child::spawn(
        {.argv = in_namespace(ns_, {docker_registry, "serve", (dir_ / "config.yml").string()}),
         .stdout_fd = log_fd.get(),
         .stderr_fd = log_fd.get()});

    bool listening = wait_until(
        [&] {
            if (exited(child_)) return true;
            port_ = logged_port(log());
            return port_ != 0;
        },
        start_deadline);
    if (port_ == 0) {
        return fmt::format("docker-registry {} listening:\n{}", listening ? "exited before" : "not",
                           log());
    }
    // The listener is open once logged; the first answer shows the TLS and auth setup works.
    const std::string want = options_.auth ? "401" : "200";
    std::string got;
    wait_until(
        [&] {
            got = http_status(ns_, address_, port_, "/v2/", options_.tls ? ca_cert() : fs::path());
            return got == want || exited(child_);
        },
        start_deadline);
    if (got != want) {
        return fmt::format("docker-registry at {}: GET /v2/ answered \"{}\", not {}:\n{}", host(),
                           got, want, log());
    }
    return "";
}

std::string Registry::host() const {
    return join_host(address_, port_);
}

std::string Registry::log() const {
    return read_file(dir_ / "registry.log");
}

std::string Registry::tls_flag(const std::string& prefix) const {
    if (!options_.tls) return "--" + prefix + "tls-verify=false";
    return "--" + prefix + "cert-dir=" + cert_dir().string();
}

std::string Registry::push(const std::string& source, const std::string& repo_tag) const {
    std::vector<std::string> args{"copy", tls_flag("dest-")};
    if (options_.auth) args.push_back("--dest-creds=" + creds());
    args.insert(args.end(), {source, "docker://" + host() + "/" + repo_tag});
    try {
        auto r = skopeo(args);
        return r.ok() ? "" : fmt::format("skopeo copy {} {}: {}", source, repo_tag, r.describe());
    } catch (const std::exception& e) {
        return fmt::format("skopeo copy {} {}: {}", source, repo_tag, e.what());
    }
}

std::string Registry::digest(const std::string& repo_tag) const {
    std::vector<std::string> args{"inspect", "--format={{.Digest}}", tls_flag("")};
    if (options_.auth) args.push_back("--creds=" + creds());
    args.push_back("docker://" + host() + "/" + repo_tag);
    auto r = skopeo(args);
    if (!r.ok()) {
        fmt::print(stderr, "skopeo inspect {}: {}\n", repo_tag, r.describe());
        return "";
    }
    auto d = r.out.substr(0, r.out.find('\n'));
    return d.starts_with("sha256:") ? d : "";
}

// ---- hostile images

std::string make_hostile_layouts(const fs::path& layout) {
    try {
        auto r = run_command(
            {"python3", script("COFFER_MAKE_HOSTILE_IMAGES", "make-hostile-images"), layout});
        return r.ok() ? "" : "make-hostile-images: " + r.describe();
    } catch (const std::exception& e) {
        return fmt::format("make-hostile-images: {}", e.what());
    }
}

// ---- LyingRegistry

LyingRegistry::LyingRegistry(fs::path dir, std::string address, const NetworkNamespace* ns)
    : dir_(std::move(dir)), address_(std::move(address)), ns_(ns) {
    try {
        error_ = start();
    } catch (const std::exception& e) {
        error_ = e.what();
    }
}

LyingRegistry::~LyingRegistry() {
    stop_child(child_, stop_deadline);
    remove_dir(dir_);
}

std::string LyingRegistry::start() {
    fs::create_directories(dir_);
    const auto port_file = dir_ / "port";
    auto err_fd = open_log(dir_ / "stderr");
    child_ =
        Child::spawn({.argv = in_namespace(
                          ns_, {"python3", script("COFFER_LYING_REGISTRY", "lying-registry"),
                                address_, port_file.string(), (dir_ / "requests.log").string()}),
                      .stderr_fd = err_fd.get()});
    // The script renames the port file into place once it listens.
    wait_until([&] { return fs::exists(port_file) || exited(child_); }, start_deadline);
    try {
        port_ = std::stoi(read_file(port_file));
    } catch (const std::exception&) {
        return fmt::format("lying-registry did not start:\n{}", read_file(dir_ / "stderr"));
    }
    if (auto got = http_status(ns_, address_, port_, "/v2/", {}); got != "200")
        return fmt::format("lying-registry at {}: GET /v2/ answered \"{}\"", host(), got);
    return "";
}

std::string LyingRegistry::host() const {
    return join_host(address_, port_);
}

std::vector<std::string> LyingRegistry::requests() const {
    return lines_of(read_file(dir_ / "requests.log"));
}

}  // namespace coffer::test
