// The foundation end to end: a real cofferd, driven by the real coffer CLI and raw HTTP.
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <filesystem>
#include <fstream>
#include <random>

#include "coffer/crypto/aead.h"
#include "coffer/crypto/encoding.h"
#include "coffer/net/http.h"
#include "coffer/net/http_client.h"
#include "coffer/store/store.h"
#include "harness.h"
#include "manager_fixture.h"

using namespace coffer;
using namespace coffer::test;
namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

using Secrets = ManagerTest;

std::string message_of(const std::string& body) {
    auto v = json::parse(body);
    return std::string(v.at("message").as_string());
}

// A Daemon prefix that sends cofferd's standard error (its log) to file.
std::vector<std::string> stderr_to(const fs::path& file) {
    return {"sh", "-c", "exec \"$0\" \"$@\" 2>>'" + file.string() + "'"};
}

std::string b64(std::string_view s) {
    return crypto::base64_encode({reinterpret_cast<const std::uint8_t*>(s.data()), s.size()});
}

}  // namespace

TEST_F(Secrets, LifecycleThroughTheCli) {
    auto created = cli({"secret", "create", "--label", "env=prod", "db_pass", "-"}, "hunter2");
    ASSERT_EQ(created.status, 0) << created.err;
    auto id = created.out.substr(0, created.out.find('\n'));
    EXPECT_EQ(id.size(), 25u);

    auto ls = cli({"secret", "ls"});
    ASSERT_EQ(ls.status, 0) << ls.err;
    EXPECT_NE(ls.out.find("ID"), std::string::npos);
    EXPECT_NE(ls.out.find("db_pass"), std::string::npos);
    EXPECT_NE(ls.out.find(id), std::string::npos);

    auto quiet = cli({"secret", "ls", "-q"});
    EXPECT_EQ(quiet.out, id + "\n");

    auto inspect = cli({"secret", "inspect", "db_pass"});
    ASSERT_EQ(inspect.status, 0) << inspect.err;
    auto arr = json::parse(inspect.out).as_array();
    ASSERT_EQ(arr.size(), 1u);
    EXPECT_EQ(arr[0].at("ID").as_string(), id);
    EXPECT_EQ(arr[0].at("Spec").at("Name").as_string(), "db_pass");
    EXPECT_EQ(arr[0].at("Spec").at("Labels").at("env").as_string(), "prod");
    EXPECT_FALSE(arr[0].at("Spec").as_object().contains("Data"));
    EXPECT_EQ(inspect.out.find("hunter2"), std::string::npos);

    // By ID and by unique ID prefix too.
    EXPECT_EQ(cli({"secret", "inspect", id}).status, 0);
    EXPECT_EQ(cli({"secret", "inspect", id.substr(0, 6)}).status, 0);

    auto rm = cli({"secret", "rm", "db_pass"});
    ASSERT_EQ(rm.status, 0) << rm.err;
    EXPECT_EQ(rm.out, "db_pass\n");
    auto gone = cli({"secret", "inspect", "db_pass"});
    EXPECT_EQ(gone.status, 1);
    EXPECT_NE(gone.err.find("secret db_pass not found"), std::string::npos) << gone.err;
    EXPECT_EQ(cli({"secret", "ls", "-q"}).out, "");
}

TEST_F(Secrets, ReadsBinaryDataFromStdinAndFiles) {
    std::string bytes("\x00\x01\xfe\xff\n\r binary \x00", 17);
    ASSERT_EQ(cli({"secret", "create", "bin", "-"}, bytes).status, 0);
    auto path = dir_.path() / "cert.pem";
    std::ofstream(path, std::ios::binary) << "-----BEGIN CERTIFICATE-----\nMIIB\n";
    ASSERT_EQ(cli({"secret", "create", "cert", path.string()}).status, 0);
    daemon_->terminate();
    auto store = open_store();
    ASSERT_TRUE(store);
    int checked = 0;
    auto scanned =
        store->scan(store::Table::secret_data, [&](std::string_view, crypto::SecureBuffer v) {
            std::string got(reinterpret_cast<const char*>(v.data()), v.size());
            EXPECT_TRUE(got == bytes || got == "-----BEGIN CERTIFICATE-----\nMIIB\n");
            ++checked;
            return true;
        });
    EXPECT_TRUE(scanned.ok());
    EXPECT_EQ(checked, 2);
}

TEST_F(Secrets, RefusesBadInputAndChangesNothing) {
    auto bad_name = cli({"secret", "create", "bad!", "-"}, "x");
    EXPECT_EQ(bad_name.status, 1);
    EXPECT_NE(bad_name.err.find("invalid name"), std::string::npos) << bad_name.err;

    auto empty = cli({"secret", "create", "empty", "-"}, "");
    EXPECT_EQ(empty.status, 1);
    EXPECT_NE(empty.err.find("data is empty"), std::string::npos) << empty.err;

    auto big = cli({"secret", "create", "big", "-"}, std::string(512000, 'x'));
    EXPECT_EQ(big.status, 1);
    EXPECT_NE(big.err.find("less than 512000 bytes"), std::string::npos) << big.err;
    EXPECT_EQ(cli({"secret", "create", "max", "-"}, std::string(511999, 'x')).status, 0);

    ASSERT_EQ(cli({"secret", "create", "dup", "-"}, "a").status, 0);
    auto dup = cli({"secret", "create", "DUP", "-"}, "b");
    EXPECT_EQ(dup.status, 1);
    EXPECT_NE(dup.err.find("already exists"), std::string::npos) << dup.err;

    auto missing = cli({"secret", "rm", "nosuch"});
    EXPECT_EQ(missing.status, 1);
    EXPECT_NE(missing.err.find("secret nosuch not found"), std::string::npos);

    auto ls = cli({"secret", "ls", "--format", "json"});
    EXPECT_EQ(std::count(ls.out.begin(), ls.out.end(), '\n'), 2) << ls.out;
}

TEST_F(Secrets, ApiAnswersWithDockerShapesAndStatuses) {
    auto ping = request("HEAD", "/_ping");
    EXPECT_EQ(ping.status, 200);
    EXPECT_EQ(ping.headers["api-version"], "1.41");

    auto created = request("POST", "/v1.41/secrets/create",
                           R"({"Name":"s1","Labels":{"team":""},"Data":")" + b64("x") + "\"}");
    ASSERT_EQ(created.status, 201) << created.body;
    EXPECT_EQ(created.headers["content-type"], "application/json");
    auto id = std::string(json::parse(created.body).at("ID").as_string());

    EXPECT_EQ(request("POST", "/secrets/create", R"({"Name":"s1","Data":"eA=="})").status, 409);
    auto bad64 = request("POST", "/secrets/create", R"({"Name":"s2","Data":"not base64!"})");
    EXPECT_EQ(bad64.status, 400);
    EXPECT_EQ(message_of(bad64.body), "field Data is not valid base64");
    auto malformed = request("POST", "/secrets/create", R"({"Name":"s2",)");
    EXPECT_EQ(malformed.status, 400);
    EXPECT_NE(message_of(malformed.body).find("malformed request body"), std::string::npos);
    EXPECT_EQ(request("POST", "/secrets/create", R"({"Name":7,"Data":"eA=="})").status, 400);
    EXPECT_EQ(request("GET", "/secrets/nosuch").status, 404);
    EXPECT_EQ(message_of(request("GET", "/secrets/nosuch").body), "secret nosuch not found");
    EXPECT_EQ(request("GET", "/v9.99/secrets").status, 400);
    EXPECT_EQ(request("GET", "/version").status, 200);
    EXPECT_EQ(request("GET", "/v1.24/version").status, 200);
    EXPECT_EQ(request("GET", "/nosuch").status, 404);

    // Filters: name prefix, id prefix, label, names exact.
    ASSERT_EQ(request("POST", "/secrets/create", R"({"Name":"s22","Data":"eA=="})").status, 201);
    ASSERT_EQ(request("POST", "/secrets/create", R"({"Name":"db","Data":"eA=="})").status, 201);
    auto count = [&](std::string filter) {
        auto r = request("GET", "/secrets?filters=" + net::percent_encode(filter));
        EXPECT_EQ(r.status, 200) << r.body;
        return r.status == 200 ? json::parse(r.body).as_array().size() : 0;
    };
    EXPECT_EQ(count(R"({"name":{"s":true}})"), 2u);
    EXPECT_EQ(count(R"({"name":{"1":true}})"), 0u);
    EXPECT_EQ(count(R"({"names":{"s1":true}})"), 1u);
    EXPECT_EQ(count(R"({"label":{"team":true}})"), 1u);
    EXPECT_EQ(count(R"({"id":{")" + id.substr(0, 5) + R"(":true}})"), 1u);
    EXPECT_EQ(
        request("GET", "/secrets?filters=" + net::percent_encode(R"({"bogus":{"x":true}})")).status,
        400);

    // Update: labels only, optimistic concurrency; unchanged Data is accepted (stack deploy).
    auto s = json::parse(request("GET", "/secrets/s1").body);
    auto version = s.at("Version").at("Index").to_number<std::uint64_t>();
    auto upd = [&](std::uint64_t v, std::string body) {
        return request("POST", fmt::format("/secrets/{}/update?version={}", id, v), body);
    };
    EXPECT_EQ(upd(version + 100, R"({"Name":"s1","Labels":{"a":"b"}})").status, 409);
    auto changed = upd(version, R"({"Name":"s1","Labels":{},"Data":")" + b64("y") + "\"}");
    EXPECT_EQ(changed.status, 400);
    EXPECT_EQ(message_of(changed.body), "only updates to Labels are allowed");
    EXPECT_EQ(upd(version, R"({"Name":"renamed","Labels":{}})").status, 400);
    auto same = upd(version, R"({"Name":"s1","Labels":{"a":"b"},"Data":")" + b64("x") + "\"}");
    EXPECT_EQ(same.status, 200) << same.body;
    auto after = json::parse(request("GET", "/secrets/s1").body);
    EXPECT_GT(after.at("Version").at("Index").to_number<std::uint64_t>(), version);
    EXPECT_EQ(after.at("Spec").at("Labels").at("a").as_string(), "b");
    EXPECT_EQ(upd(version, R"({"Name":"s1","Labels":{}})").status, 409);  // stale version

    EXPECT_EQ(request("DELETE", "/secrets/" + id).status, 204);
    EXPECT_EQ(request("DELETE", "/secrets/" + id).status, 404);
}

TEST_F(Secrets, RefusesOversizedBodyBeforeReadingIt) {
    // Announce 8 MiB and send none of it: the answer comes from the headers alone.
    auto c = http();
    auto r = c->request("POST", "/secrets/create", {}, "application/json");
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->status, 400);  // empty body

    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, daemon_->socket().c_str(), sizeof addr.sun_path - 1);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    std::string head =
        "POST /secrets/create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 8388608\r\n\r\n";
    ASSERT_EQ(::write(fd, head.data(), head.size()), static_cast<ssize_t>(head.size()));
    std::string answer;
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n <= 0) break;
        answer.append(buf, static_cast<std::size_t>(n));
        if (answer.find("}") != std::string::npos) break;
    }
    ::close(fd);
    EXPECT_NE(answer.find("413"), std::string::npos) << answer;
    EXPECT_NE(answer.find("request body exceeds"), std::string::npos) << answer;
}

TEST_F(Secrets, SurvivesKillNineRightAfterCreate) {
    ASSERT_EQ(cli({"secret", "create", "durable", "-"}, "still-here").status, 0);
    daemon_->kill9();
    start();
    auto inspect = cli({"secret", "inspect", "durable"});
    EXPECT_EQ(inspect.status, 0) << inspect.err;
    daemon_->terminate();
    auto store = open_store();
    ASSERT_TRUE(store);
    bool found = false;
    (void)store->scan(store::Table::secret_data, [&](std::string_view, crypto::SecureBuffer v) {
        found = std::string_view(reinterpret_cast<const char*>(v.data()), v.size()) == "still-here";
        return true;
    });
    EXPECT_TRUE(found);
}

TEST_F(Secrets, NoPlaintextOnDiskAfterFlushAndCompaction) {
    const std::string marker = "PLAINTEXT-MARKER-6f1d2c9a8b7e4d3c-coffer-must-never-write-this";
    ASSERT_EQ(cli({"secret", "create", "marked", "-"}, marker).status, 0);
    auto scan_disk = [&](const char* when) {
        for (const auto& e : fs::recursive_directory_iterator(dir_.path() / "data")) {
            if (!e.is_regular_file()) continue;
            auto content = read_file(e.path());
            EXPECT_EQ(content.find(marker), std::string::npos) << when << ": " << e.path();
            EXPECT_EQ(content.find(b64(marker).substr(0, 40)), std::string::npos)
                << when << ": " << e.path();
            EXPECT_EQ(content.find("PLAINTEXT-MARKER"), std::string::npos)
                << when << ": " << e.path();
        }
    };
    scan_disk("WAL, while running");
    daemon_->kill9();
    scan_disk("after kill -9");
    {
        auto store = open_store();
        ASSERT_TRUE(store);
        ASSERT_TRUE(store->compact().ok());
    }
    scan_disk("after flush and compaction");
}

TEST_F(Secrets, AutolockRestartUnlockAndKeyRotation) {
    daemon_.reset();
    fs::remove_all(dir_.path() / "data");
    auto key_file = dir_.path() / "unlock.key";
    start({"--autolock", "--unlock-key-file", key_file.string()});
    auto key = read_file(key_file);
    ASSERT_EQ(key.rfind("COFFERKEY-1-", 0), 0u) << key;
    ASSERT_EQ(key.back(), '\n');
    key.pop_back();
    ASSERT_EQ(cli({"secret", "create", "locked_secret", "-"}, "v").status, 0);
    EXPECT_EQ(fs::exists(dir_.path() / "data" / "kek"), false);

    auto shown = cli({"cluster", "unlock-key", "-q"});
    EXPECT_EQ(shown.out, key + "\n");

    start();  // a restart comes up locked, and writes no key
    EXPECT_EQ(read_file(key_file), key + "\n");
    EXPECT_EQ(daemon_->stdout_text().find("COFFERKEY-1-"), std::string::npos);
    auto locked = cli({"secret", "ls"});
    EXPECT_EQ(locked.status, 1);
    EXPECT_NE(locked.err.find("locked"), std::string::npos) << locked.err;
    auto wrong =
        cli({"cluster", "unlock"}, "COFFERKEY-1-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n");
    EXPECT_EQ(wrong.status, 1);
    EXPECT_NE(wrong.err.find("invalid unlock key"), std::string::npos) << wrong.err;
    EXPECT_EQ(cli({"secret", "ls"}).status, 1);
    auto garbage = cli({"cluster", "unlock"}, "garbage\n");
    EXPECT_EQ(garbage.status, 1);
    auto unlocked = cli({"cluster", "unlock"}, read_file(key_file));
    ASSERT_EQ(unlocked.status, 0) << unlocked.err;
    EXPECT_NE(cli({"secret", "ls"}).out.find("locked_secret"), std::string::npos);

    auto rotated = cli({"cluster", "unlock-key", "--rotate", "-q"});
    ASSERT_EQ(rotated.status, 0) << rotated.err;
    auto new_key = rotated.out.substr(0, rotated.out.find('\n'));
    EXPECT_NE(new_key, key);
    EXPECT_EQ(new_key.rfind("COFFERKEY-1-", 0), 0u);

    start();
    EXPECT_EQ(cli({"cluster", "unlock"}, key + "\n").status, 1);
    ASSERT_EQ(cli({"cluster", "unlock"}, new_key + "\n").status, 0);
    EXPECT_NE(cli({"secret", "ls"}).out.find("locked_secret"), std::string::npos);
}

// The unlock key of a new store never reaches cofferd's output, which a service manager keeps
// in its journal: it goes to the file the operator names, created 0600, never replacing one.
TEST_F(Secrets, AutolockWritesTheKeyToTheNamedFileOnly) {
    daemon_.reset();
    fs::remove_all(dir_.path() / "data");
    auto key_file = dir_.path() / "unlock.key", err = dir_.path() / "cofferd.err";
    daemon_ = std::make_unique<Daemon>(
        dir_.path() / "data", dir_.path() / "coffer.sock",
        std::vector<std::string>{"--autolock", "--unlock-key-file", key_file.string()},
        stderr_to(err));
    ASSERT_TRUE(daemon_->ready());
    struct stat st {};
    ASSERT_EQ(::lstat(key_file.c_str(), &st), 0);
    EXPECT_TRUE(S_ISREG(st.st_mode));
    EXPECT_EQ(st.st_mode & 07777, 0600u);
    auto key = read_file(key_file);
    ASSERT_EQ(key.rfind("COFFERKEY-1-", 0), 0u) << key;
    EXPECT_EQ(cli({"cluster", "unlock-key", "-q"}).out, key);
    daemon_->terminate();
    auto logged = read_file(err);
    EXPECT_NE(logged.find(key_file.string()), std::string::npos) << logged;  // says where it is
    EXPECT_EQ(logged.find("COFFERKEY"), std::string::npos) << logged;
    EXPECT_EQ(daemon_->stdout_text().find("COFFERKEY"), std::string::npos)
        << daemon_->stdout_text();

    // An existing file (or a link) is never replaced, and no store is created without its key.
    fs::remove_all(dir_.path() / "data");
    for (bool link : {false, true}) {
        SCOPED_TRACE(link ? "symlink" : "file");
        auto target = dir_.path() / (link ? "link.key" : "unlock.key");
        if (link) fs::create_symlink(dir_.path() / "elsewhere", target);
        auto r = run_program({cofferd_path(), "--data-dir", (dir_.path() / "data").string(),
                              "--socket", (dir_.path() / "other.sock").string(), "--listen",
                              "127.0.0.1:0", "--autolock", "--unlock-key-file", target.string()});
        EXPECT_EQ(r.status, 1);
        EXPECT_NE(r.err.find("exists: refusing to replace it"), std::string::npos) << r.err;
        EXPECT_FALSE(fs::exists(dir_.path() / "data" / "format"));
        EXPECT_FALSE(fs::exists(dir_.path() / "elsewhere"));
        EXPECT_EQ(r.out.find("COFFERKEY"), std::string::npos);
        EXPECT_EQ(r.err.find("COFFERKEY"), std::string::npos);
    }
    EXPECT_EQ(read_file(key_file), key);
    // --unlock-key-file belongs to --autolock.
    auto alone = run_program({cofferd_path(), "--data-dir", (dir_.path() / "data").string(),
                              "--unlock-key-file", (dir_.path() / "k").string()});
    EXPECT_NE(alone.status, 0);
    EXPECT_NE(alone.err.find("--autolock"), std::string::npos) << alone.err;
}

// Without a terminal (a service manager's start) and without a key file, autolock refuses to
// create a store whose key it could only lose or leak; nothing is left behind.
TEST_F(Secrets, AutolockWithoutATerminalOrAKeyFileRefusesToInitialise) {
    daemon_.reset();
    fs::remove_all(dir_.path() / "data");
    // setsid: no controlling terminal, whatever runs the tests; standard output is a file.
    auto r = run_program({"timeout", "60", "setsid", "-w", cofferd_path(), "--data-dir",
                          (dir_.path() / "data").string(), "--socket",
                          (dir_.path() / "coffer.sock").string(), "--listen", "127.0.0.1:0",
                          "--autolock"});
    EXPECT_EQ(r.status, 1) << r.out << r.err;
    EXPECT_NE(r.err.find("--unlock-key-file"), std::string::npos) << r.err;
    EXPECT_EQ(r.out.find("COFFERKEY"), std::string::npos) << r.out;
    EXPECT_EQ(r.err.find("COFFERKEY"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(dir_.path() / "data" / "format"));
    // The next start, with somewhere to put the key, creates the store.
    auto key_file = dir_.path() / "unlock.key";
    start({"--autolock", "--unlock-key-file", key_file.string()});
    EXPECT_EQ(cli({"cluster", "unlock-key", "-q"}).out, read_file(key_file));
}

// Guessing unlock keys: a few failures are answered at once, then each caller waits twice as
// long after each failure (429 with Retry-After), the right key included; every failure is
// logged with the caller and its count, never with the key.
TEST_F(Secrets, UnlockAttemptsAreLimitedAndFailuresLogged) {
    daemon_.reset();
    fs::remove_all(dir_.path() / "data");
    auto key_file = dir_.path() / "unlock.key", err = dir_.path() / "cofferd.err";
    start({"--autolock", "--unlock-key-file", key_file.string()});
    daemon_.reset();
    daemon_ = std::make_unique<Daemon>(dir_.path() / "data", dir_.path() / "coffer.sock",
                                       std::vector<std::string>{}, stderr_to(err));
    ASSERT_TRUE(daemon_->ready());
    auto key = read_file(key_file);
    key.pop_back();
    const std::string guess = "COFFERKEY-1-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    auto attempt = [&](const std::string& k) {
        return request("POST", "/v1.41/swarm/unlock", fmt::format(R"({{"UnlockKey":"{}"}})", k));
    };
    int failures = 0;
    std::vector<int> statuses;
    net::ClientResponse refused;
    // Failures until the wait reaches 4 s (the 7th in a row), waiting out the shorter ones.
    while (failures < 20) {
        auto r = attempt(guess);
        statuses.push_back(r.status);
        if (r.status == 400) {
            EXPECT_EQ(message_of(r.body), "invalid unlock key");
            ++failures;
            continue;
        }
        ASSERT_EQ(r.status, 429) << r.body;
        ASSERT_TRUE(r.headers.count("retry-after"));
        if (std::stoi(r.headers.at("retry-after")) >= 4) {
            refused = r;
            break;
        }
        ASSERT_TRUE(wait_until([&] {
            auto again = attempt(guess);
            if (again.status == 400) ++failures;
            return again.status == 400;
        }));
    }
    ASSERT_EQ(refused.status, 429) << fmt::format("{}", fmt::join(statuses, " "));
    EXPECT_GE(failures, 7);
    for (std::size_t i = 0; i < 5; ++i) EXPECT_EQ(statuses.at(i), 400) << i;  // the free ones
    EXPECT_EQ(message_of(refused.body),
              fmt::format("too many failed unlock attempts from this user: try again in {} s",
                          refused.headers.at("retry-after")));
    // The right key waits its turn too: a guesser learns nothing during the wait.
    auto early = attempt(key);
    EXPECT_EQ(early.status, 429) << early.body;
    EXPECT_EQ(request("GET", "/secrets").status, 503);
    auto via_cli = cli({"cluster", "unlock"}, key + "\n");
    EXPECT_EQ(via_cli.status, 1);
    EXPECT_NE(via_cli.err.find("too many failed unlock attempts"), std::string::npos)
        << via_cli.err;
    ASSERT_TRUE(wait_until([&] { return attempt(key).status == 200; }, std::chrono::seconds(30)));
    EXPECT_EQ(request("GET", "/secrets").status, 200);

    daemon_->terminate();
    auto logged = read_file(err);
    auto uid = ::getuid();
    EXPECT_NE(logged.find(fmt::format("unlock failed from uid {} (pid ", uid)), std::string::npos)
        << logged;
    EXPECT_NE(logged.find(fmt::format("invalid unlock key (1 in a row from uid {})", uid)),
              std::string::npos)
        << logged;
    EXPECT_NE(
        logged.find(fmt::format("invalid unlock key ({} in a row from uid {}", failures, uid)),
        std::string::npos)
        << logged;
    EXPECT_NE(logged.find("next attempt allowed in 4 s"), std::string::npos) << logged;
    EXPECT_EQ(logged.find("COFFERKEY"), std::string::npos) << logged;
    EXPECT_EQ(logged.find("AAAAAAAAAA"), std::string::npos) << logged;
}

// Two readers of {"Name":"a","Name":"b"} may disagree on the name: such bodies are refused, at
// any depth, and nothing is created.
TEST_F(Secrets, ABodyWithAKeyTwiceIsRefused) {
    auto dup = request("POST", "/secrets/create",
                       fmt::format(R"({{"Name":"a","Data":"{}","Name":"b"}})", b64("x")));
    EXPECT_EQ(dup.status, 400);
    EXPECT_EQ(message_of(dup.body),
              R"(malformed request body: malformed JSON: key "Name" appears twice in an object)");
    auto nested =
        request("POST", "/secrets/create",
                fmt::format(R"({{"Name":"c","Data":"{}","Labels":{{"env":"dev","env":"prod"}}}})",
                            b64("x")));
    EXPECT_EQ(nested.status, 400);
    EXPECT_EQ(message_of(nested.body),
              R"(malformed request body: malformed JSON: key "env" appears twice in an object)");
    EXPECT_EQ(request("GET", "/secrets").body, "[]");
    auto service = request(
        "POST", "/services/create",
        R"({"Name":"web","TaskTemplate":{"ContainerSpec":{"Image":"busybox","Image":"evil"}},"Mode":{"Replicated":{"Replicas":1}}})");
    EXPECT_EQ(service.status, 400);
    EXPECT_EQ(message_of(service.body),
              R"(malformed request body: malformed JSON: key "Image" appears twice in an object)");
    EXPECT_EQ(request("GET", "/services").body, "[]");
    // The same keys in different objects are fine.
    EXPECT_EQ(
        request("POST", "/secrets/create",
                fmt::format(R"({{"Name":"d","Data":"{}","Labels":{{"Name":"x"}}}})", b64("x")))
            .status,
        201);
}

TEST_F(Secrets, DekRotationReSealsEverythingAndSurvivesRestart) {
    for (int i = 0; i < 50; ++i)
        ASSERT_EQ(request("POST", "/secrets/create",
                          fmt::format(R"({{"Name":"s{}","Data":"{}"}})", i,
                                      b64(fmt::format("value-{}", i))))
                      .status,
                  201);
    auto before =
        json::parse(request("GET", "/swarm").body).at("DataEncryptionKey").at("ID").as_int64();
    auto rotated = cli({"cluster", "rotate-dek"});
    ASSERT_EQ(rotated.status, 0) << rotated.err;
    ASSERT_TRUE(wait_until([&] {
        auto v = json::parse(request("GET", "/swarm").body);
        return !v.at("DataEncryptionKey").at("RotationPending").as_bool();
    }));
    auto after =
        json::parse(request("GET", "/swarm").body).at("DataEncryptionKey").at("ID").as_int64();
    EXPECT_NE(before, after);
    daemon_->terminate();
    auto store = open_store();
    ASSERT_TRUE(store);
    int n = 0;
    (void)store->scan(store::Table::secret_data, [&](std::string_view, crypto::SecureBuffer v) {
        EXPECT_EQ(std::string_view(reinterpret_cast<const char*>(v.data()), v.size()).substr(0, 6),
                  "value-");
        ++n;
        return true;
    });
    EXPECT_EQ(n, 50);
    EXPECT_EQ(store->current_dek_id(), static_cast<std::uint32_t>(after));
    EXPECT_FALSE(store->rotation_pending());
}

TEST_F(Secrets, SigtermShutsDownCleanly) {
    int status = daemon_->terminate();
    EXPECT_TRUE(WIFEXITED(status)) << status;
    EXPECT_EQ(WEXITSTATUS(status), 0);
    EXPECT_FALSE(fs::exists(daemon_->socket()));
}
