// Container registries for tests that pull images: a real one (docker-registry, TLS from a test
// CA, htpasswd auth) and one that lies about its layers (lying-registry), each a process of its
// own on a free port, inside a network namespace when given one. Their owners stop them and
// remove their directories, also when a test fails.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "coffer/base/process.h"
#include "harness.h"

namespace coffer::test {

// 24 random letters and digits.
std::string random_password();

// Runs `skopeo <args>` (signature policy: accept anything) with a deadline, inside ns when given.
CommandResult run_skopeo(const std::vector<std::string>& args,
                         const NetworkNamespace* ns = nullptr);

struct RegistryOptions {
    bool tls = true;   // false: plain HTTP
    bool auth = true;  // false: anyone may pull and push
    std::string user = "puller";
    std::string password = random_password();
};

// docker-registry serving `dir/storage` on address:<free port>. The constructor returns once
// GET /v2/ answers (401 with auth, 200 without), or with error() set.
class Registry {
  public:
    using Options = RegistryOptions;

    // ns, when given, is borrowed for the registry's lifetime: the registry and every skopeo
    // command run here run inside it.
    Registry(std::filesystem::path dir, std::string address, const NetworkNamespace* ns = nullptr,
             Options o = {});
    ~Registry();  // SIGTERM, then SIGKILL after a deadline; removes dir
    Registry(const Registry&) = delete;
    Registry& operator=(const Registry&) = delete;

    // "" once serving, else what failed (with the registry's log when it started at all).
    const std::string& error() const { return error_; }
    std::string host() const;  // "address:port" ("[address]:port" for IPv6)
    // The test CA that signed the server certificate (subjectAltName IP:address, DNS:localhost).
    std::filesystem::path ca_cert() const { return cert_dir() / "ca.crt"; }
    // A directory holding ca.crt only, as skopeo's --cert-dir and Docker's certs.d/<host>/ expect.
    std::filesystem::path cert_dir() const { return dir_ / "certs.d"; }
    const std::string& user() const { return options_.user; }
    const std::string& password() const { return options_.password; }
    std::string log() const;  // what the registry wrote on stderr so far

    // `skopeo copy <source> docker://<host>/<repo_tag>` with the credentials and the CA; source
    // is a skopeo reference such as "oci:/path/layout:busybox". "" or the error.
    std::string push(const std::string& source, const std::string& repo_tag) const;
    // The manifest digest ("sha256:...") of repo_tag, "" when it cannot be read.
    std::string digest(const std::string& repo_tag) const;
    // run_skopeo in the registry's namespace. The flags that reach this registry are the
    // caller's to give (tls_flag, creds below).
    CommandResult skopeo(const std::vector<std::string>& args) const {
        return run_skopeo(args, ns_);
    }
    // "--<prefix>cert-dir=<cert_dir>", or "--<prefix>tls-verify=false" without TLS; prefix is
    // "src-", "dest-" or "" (inspect).
    std::string tls_flag(const std::string& prefix) const;
    std::string creds() const { return options_.user + ":" + options_.password; }

  private:
    std::string start();

    std::filesystem::path dir_;
    std::string address_;
    const NetworkNamespace* ns_;  // borrowed, see the constructor
    Options options_;
    int port_ = 0;
    std::string error_;
    Child child_;
};

// Builds an OCI image layout at `layout` (make-hostile-images) with one-layer images, a tag
// each, whose layer attacks the host that unpacks it: dotdot (an entry ../escape), absolute
// (/etc/evil), device (a character device dev/evil, 1:3), hardlink (bin/x linked to
// ../../etc/shadow), pax-dotdot (ustar name a/escape, PAX path a/../../escape); and good, a
// harmless layer (bin/true). Digests, sizes and configs are all correct. "" or the error.
std::string make_hostile_layouts(const std::filesystem::path& layout);

// lying-registry on address:<free port>, plain HTTP, no auth, in ns when given (borrowed for
// its lifetime). Repository `liar`, one lie per tag:
//   size    the layer descriptor gives half the size of the blob served (digest right)
//   digest  the blob served under the layer's digest is another layer of the same size
//   huge    the layer descriptor claims 64 GiB; the blob served is the real, small one
// Configs are correct; manifests answer HEAD and GET by tag and digest.
class LyingRegistry {
  public:
    LyingRegistry(std::filesystem::path dir, std::string address,
                  const NetworkNamespace* ns = nullptr);
    ~LyingRegistry();  // SIGTERM, then SIGKILL after a deadline; removes dir
    LyingRegistry(const LyingRegistry&) = delete;
    LyingRegistry& operator=(const LyingRegistry&) = delete;

    const std::string& error() const { return error_; }
    std::string host() const;
    // One line per request answered so far, "METHOD PATH STATUS BODY-BYTES-SENT", the fixture's
    // own GET /v2/ first.
    std::vector<std::string> requests() const;
    // run_skopeo in the registry's namespace; reach it with --src-tls-verify=false.
    CommandResult skopeo(const std::vector<std::string>& args) const {
        return run_skopeo(args, ns_);
    }

  private:
    std::string start();

    std::filesystem::path dir_;
    std::string address_;
    const NetworkNamespace* ns_;  // borrowed, see the constructor
    int port_ = 0;
    std::string error_;
    Child child_;
};

}  // namespace coffer::test
