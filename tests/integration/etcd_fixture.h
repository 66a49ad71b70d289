// A real etcd cluster for tests (Debian's etcd-server): members on loopback, each a process of
// its own on free ports with a data directory under the fixture's, optionally serving clients
// over TLS with client certificates required (a CA of the fixture's own). The owner stops every
// member and removes the directory, also when a test fails.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "coffer/base/process.h"
#include "harness.h"

namespace coffer::test {

struct EtcdClusterOptions {
    int members = 1;
    bool tls = false;  // clients over https, with a client certificate (--client-cert-auth)
    // Transactions: etcd's --max-txn-ops and --max-request-bytes (0: etcd's defaults).
    int max_txn_ops = 0;
    int max_request_bytes = 0;
    // Runs before etcd and etcdctl, e.g. NetworkNamespace::enter(): the members then listen on
    // that namespace's loopback.
    std::vector<std::string> enter;
};

class EtcdCluster {
  public:
    using Options = EtcdClusterOptions;

    // Returns once every member answers, or with error() set.
    EtcdCluster(std::filesystem::path dir, Options o = {});
    ~EtcdCluster();
    EtcdCluster(const EtcdCluster&) = delete;
    EtcdCluster& operator=(const EtcdCluster&) = delete;

    // "" once serving, else what failed (with the members' logs).
    const std::string& error() const { return error_; }
    // Client URLs, one per member: http(s)://127.0.0.1:PORT.
    std::vector<std::string> endpoints() const;
    std::string endpoints_csv() const;
    // SIGKILL of one member; start() brings it back on its data directory ("" or the error),
    // returning once it answers.
    void kill(int member);
    std::string start(int member);
    // The CA of the members' certificates, and a client certificate it signed (TLS only).
    std::filesystem::path ca() const { return dir_ / "tls" / "ca.crt"; }
    std::filesystem::path client_cert() const { return dir_ / "tls" / "client.crt"; }
    std::filesystem::path client_key() const { return dir_ / "tls" / "client.key"; }
    // Every member's data directory (for searching their files).
    std::filesystem::path data_root() const { return dir_ / "data"; }
    // etcdctl (API v3) against every member, with the client certificate under TLS.
    CommandResult etcdctl(const std::vector<std::string>& args) const;
    std::string logs() const;

  private:
    std::string make_certificates();
    std::string healthy(int member) const;  // "" when it answers

    std::filesystem::path dir_;
    Options options_;
    std::vector<int> client_ports_, peer_ports_;
    std::vector<Child> children_;
    std::string error_;
};

}  // namespace coffer::test
