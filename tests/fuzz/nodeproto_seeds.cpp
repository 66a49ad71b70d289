// Writes the seed corpus of the nodeproto fuzz target: one file per message kind, each made by the
// protocol's own encoder. Run by hand when a message changes:
//   ninja -C build tests/fuzz/nodeproto-seeds && build/tests/fuzz/nodeproto-seeds
//   tests/fuzz/corpus/nodeproto
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "coffer/nodeproto/assignments.h"
#include "coffer/nodeproto/join.h"
#include "coffer/nodeproto/networks.h"
#include "coffer/nodeproto/session.h"
#include "coffer/nodeproto/status.h"
#include "coffer/nodeproto/volumes.h"

using namespace coffer;
using namespace coffer::nodeproto;

namespace {

void write(const std::filesystem::path& dir, const char* name, std::string_view bytes) {
    std::ofstream(dir / name, std::ios::binary) << bytes;
}

void write(const std::filesystem::path& dir, const char* name, const crypto::SecureBuffer& b) {
    write(dir, name, std::string_view(reinterpret_cast<const char*>(b.data()), b.size()));
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s DIRECTORY\n", argv[0]);
        return 2;
    }
    std::filesystem::path dir(argv[1]);
    std::filesystem::create_directories(dir);

    TaskPayload task;
    task.id = "q3v8x0c2m5k7n9p1r4t6w8y0z";
    task.service_id = "h2j4l6n8p0r2t4v6x8z0b2d4f";
    task.slot = 1;
    task.image = "busybox:latest";
    task.args = {"sh", "-c", "cat /run/secrets/db_pass"};
    task.env = {"MODE=prod"};
    task.user = "1000:1000";
    task.hostname = "web";
    task.limits = {64 << 20, 500'000'000, 64};
    task.cap_drop = {"NET_RAW"};
    task.secrets = {
        {"a1b2c3d4e5f6g7h8i9j0k1l2m", "db_pass", "", "0", "0", 0444},
        {"n3o4p5q6r7s8t9u0v1w2x3y4z", "tls_key", "/etc/tls/key.pem", "1000", "1000", 0400}};
    task.healthcheck = HealthCheck{{"CMD-SHELL", "test -f /tmp/ok"}, 1'000'000'000, 0, 0, 0, 3};
    task.mounts = {
        {MountPayload::Type::volume,
         "dbdata",
         "/var/lib/db",
         false,
         false,
         false,
         {{"app", "db"}},
         0,
         0},
        {MountPayload::Type::tmpfs, "", "/scratch", true, false, false, {}, 1 << 20, 0750},
        {MountPayload::Type::bind, "/srv/static", "/static", true, true, false, {}, 0, 0}};
    task.configs = {{"c1d2e3f4g5h6i7j8k9l0m1n2o", "app.conf", "/etc/app.conf", "0", "0", 0444}};
    task.networks = {{"w1x2y3z4a5b6c7d8e9f0g1h2i", "10.0.1.7/24", {"db"}}};
    task.host_ports = {{"tcp", 80, 8080}};
    Assignments complete{true, 1, {}};
    Change config;
    config.is_secret = true;
    config.is_config = true;
    config.id = "c1d2e3f4g5h6i7j8k9l0m1n2o";
    config.secret = SecretPayload{config.id, "app.conf",
                                  crypto::SecureBuffer::copy_of(std::string_view("listen 80"))};
    complete.changes.push_back(std::move(config));
    Change secret;
    secret.is_secret = true;
    secret.id = "a1b2c3d4e5f6g7h8i9j0k1l2m";
    secret.secret = SecretPayload{secret.id, "db_pass",
                                  crypto::SecureBuffer::copy_of(std::string_view("s3cr3t"))};
    complete.changes.push_back(std::move(secret));
    Change add;
    add.id = task.id;
    add.task = task;
    complete.changes.push_back(std::move(add));
    write(dir, "assignments-complete.json", encode(complete));
    Assignments incremental{false, 2, {}};
    Change remove_task;
    remove_task.action = Change::Action::remove;
    remove_task.id = task.id;
    incremental.changes.push_back(std::move(remove_task));
    Change remove_secret;
    remove_secret.action = Change::Action::remove;
    remove_secret.is_secret = true;
    remove_secret.id = "a1b2c3d4e5f6g7h8i9j0k1l2m";
    incremental.changes.push_back(std::move(remove_secret));
    write(dir, "assignments-incremental.json", encode(incremental));

    NetworksMessage networks;
    networks.sequence = 3;
    networks.networks.push_back({"w1x2y3z4a5b6c7d8e9f0g1h2i",
                                 "app_backend",
                                 "overlay",
                                 "10.0.1.0/24",
                                 "10.0.1.2",
                                 4097,
                                 1450,
                                 false,
                                 false,
                                 {"192.0.2.6"},
                                 {{task.service_id,
                                   "db",
                                   "vip",
                                   "10.0.1.3",
                                   {"database"},
                                   {{task.id, "db.1.x", "10.0.1.7"}}}}});
    networks.ingress.push_back({task.service_id, "tcp", 8080, 80, {"10.0.0.5"}});
    write(dir, "networks.json", encode(networks));

    StatusMessage status{true, {}};
    status.statuses.push_back({task.id, model::TaskState::running, "started", "",
                               model::ContainerStatus{task.id, 4242, 0, "healthy"}});
    status.statuses.push_back({"b0c1d2e3f4g5h6i7j8k9l0m1n", model::TaskState::failed, "failed",
                               "exit status 3",
                               model::ContainerStatus{"b0c1d2e3f4g5h6i7j8k9l0m1n", 0, 3}});
    write(dir, "status.json", encode(status));
    status.volumes = std::vector<VolumeReport>{{"dbdata",
                                                "/var/lib/coffer-agent/volumes/dbdata/_data",
                                                "2026-12-05T07:00:00Z",
                                                {{"app", "db"}}}};
    write(dir, "status-volumes.json", encode(status));
    write(dir, "volume-remove.json", encode(VolumeRemove{"k2m4p6r8t0v2x4z6b8d0f2h4j", "dbdata"}));
    write(dir, "volume-removed.json",
          encode(VolumeRemoved{"k2m4p6r8t0v2x4z6b8d0f2h4j", "dbdata",
                               "remove dbdata: volume is in use - [t1]", "in_use"}));

    write(dir, "certificate.json",
          encode(CertificateMessage{
              "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
              "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n"}));
    write(dir, "renew-request.json", encode(RenewRequest{"CA rotation"}));
    write(dir, "managers.json",
          encode(ManagersMessage{{"10.0.0.1:2377", "manager-2.example:2377", "[fd00::3]:2377"}}));
    write(dir, "description.json",
          encode(DescriptionMessage{
              "linux", "x86_64", 4'000'000'000, 8LL << 30, {{"gpu", "GPU-1", 0}, {"ssd", "", 3}}}));
    write(dir, "renew.json",
          encode(Renew{
              "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"}));
    write(dir, "error.json",
          encode(ErrorMessage{"no task q3v8x0c2m5k7n9p1r4t6w8y0z on this node",
                              "k2m4p6r8t0v2x4z6b8d0f2h4j"}));
    write(
        dir, "logs-request.json",
        encode(LogsRequest{std::string("k2m4p6r8t0v2x4z6b8d0f2h4j"), task.id, 100, std::nullopt}));
    write(dir, "logs.json",
          encode(LogsReply{std::string("k2m4p6r8t0v2x4z6b8d0f2h4j"), task.id, "one\ntwo\n",
                           std::nullopt}));
    write(dir, "logs-error.json",
          encode(LogsReply{std::string("k2m4p6r8t0v2x4z6b8d0f2h4j"), task.id, "",
                           "this agent keeps no task logs"}));
    write(dir, "join-request.json",
          encode(JoinRequest{
              1, crypto::SecureBuffer::copy_of(std::string_view("COFFERTKN-1-abc123-def456")),
              "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n",
              "node-1"}));
    write(dir, "join-answer.json",
          encode(JoinAnswer{"z9y8x7w6v5u4t3s2r1q0p9o8n",
                            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
                            "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n"}));
    write(dir, "version-header.txt", "1");
    return 0;
}
