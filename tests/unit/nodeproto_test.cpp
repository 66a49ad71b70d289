// The node protocol's codecs: every message decodes to what was encoded, malformed input is
// refused with a reason, and an unknown protocol version is named as such.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <fmt/format.h>

#include "coffer/nodeproto/assignments.h"
#include "coffer/nodeproto/join.h"
#include "coffer/nodeproto/networks.h"
#include "coffer/nodeproto/session.h"
#include "coffer/nodeproto/status.h"
#include "coffer/nodeproto/version.h"
#include "coffer/nodeproto/volumes.h"

using namespace coffer;
using namespace coffer::nodeproto;
namespace json = boost::json;

namespace {

crypto::SecureBuffer msg(std::string_view text) {
    return crypto::SecureBuffer::copy_of(text);
}

std::string str(const crypto::SecureBuffer& b) {
    return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

TaskPayload sample_task() {
    TaskPayload t;
    t.id = "abcdefghijklmnopqrstuvwxy";
    t.service_id = "s0000000000000000000000001";
    t.slot = 3;
    t.image = "busybox:latest";
    t.args = {"sh", "-c", "echo \"hi\""};
    t.env = {"A=1", "B="};
    t.user = "1000:1000";
    t.dir = "/srv";
    t.hostname = "web-3";
    t.read_only = true;
    t.limits = {64 << 20, 500'000'000, 100};
    t.cap_add = {"NET_ADMIN"};
    t.cap_drop = {"ALL"};
    t.stop_grace_ns = 3'000'000'000;
    t.secrets = {{"sec1", "db_pass", "", "0", "0", 0444},
                 {"sec2", "tls.key", "/etc/key", "1000", "", 0400}};
    t.groups = {"audio", "50"};
    t.init = true;
    t.stop_signal = "SIGQUIT";
    t.sysctls = {{"net.ipv4.ip_forward", "1"}};
    t.ulimits = {{"nofile", 100, 200}, {"core", -1, -1}};
    t.hosts = {"10.0.0.5 db"};
    t.dns_nameservers = {"9.9.9.9"};
    t.dns_search = {"example.com"};
    t.dns_options = {"ndots:2"};
    t.oom_score_adj = -10;
    t.networks = {{"n000000000000000000000001", "10.0.1.7/24", {"db", "primary"}},
                  {"n000000000000000000000002", "10.0.0.9/24", {}}};
    t.host_ports = {{"udp", 53, 5353}};
    return t;
}

Assignments sample_assignments() {
    Assignments a;
    a.complete = true;
    a.sequence = 7;
    Change secret;
    secret.is_secret = true;
    secret.id = "sec1";
    secret.secret = SecretPayload{
        "sec1", "db_pass", crypto::SecureBuffer::copy_of(std::string_view("hunter2\0\xff", 9))};
    a.changes.push_back(std::move(secret));
    Change task;
    task.id = sample_task().id;
    task.task = sample_task();
    a.changes.push_back(std::move(task));
    Change gone;
    gone.action = Change::Action::remove;
    gone.id = "t-old";
    a.changes.push_back(std::move(gone));
    Change gone_secret;
    gone_secret.action = Change::Action::remove;
    gone_secret.is_secret = true;
    gone_secret.id = "sec0";
    a.changes.push_back(std::move(gone_secret));
    return a;
}

}  // namespace

TEST(Assignments, RoundTrip) {
    auto a = sample_assignments();
    auto d = decode_assignments(encode(a));
    ASSERT_TRUE(d) << d.error().message;
    EXPECT_EQ(d->complete, a.complete);
    EXPECT_EQ(d->sequence, a.sequence);
    ASSERT_EQ(d->changes.size(), a.changes.size());
    for (std::size_t i = 0; i < a.changes.size(); ++i) {
        const auto& want = a.changes[i];
        const auto& got = d->changes[i];
        EXPECT_FALSE(got.invalid) << *got.invalid;
        EXPECT_EQ(got.action, want.action);
        EXPECT_EQ(got.is_secret, want.is_secret);
        EXPECT_EQ(got.id, want.id);
        EXPECT_EQ(got.task, want.task);
        ASSERT_EQ(got.secret.has_value(), want.secret.has_value());
        if (want.secret) {
            EXPECT_EQ(got.secret->id, want.secret->id);
            EXPECT_EQ(got.secret->name, want.secret->name);
            EXPECT_TRUE(got.secret->data.equals(want.secret->data.span()));
        }
    }
}

TEST(Assignments, TaskOptionsAreCheckedAsTheManagerChecksThem) {
    for (auto field :
         {R"("Sysctls":{"kernel.hostname":"x"})", R"("StopSignal":"SIGNOPE")",
          R"("Ulimits":[{"Name":"nofiles","Soft":1,"Hard":1}])", R"("Hosts":["db 10.0.0.1"])",
          R"("OomScoreAdj":5000)", R"("DNSConfig":{"Nameservers":["x y"]})", R"("User":"a:b:c")"}) {
        auto text = fmt::format(
            R"({{"type":"assignments","Type":"complete","Sequence":1,"Changes":[{{"Action":"add",)"
            R"("Task":{{"ID":"abcdefghijklmnopqrstuvwxy","Image":"busybox",{}}}}}]}})",
            field);
        auto d = decode_assignments(msg(text));
        ASSERT_TRUE(d) << text;
        ASSERT_EQ(d->changes.size(), 1u);
        EXPECT_TRUE(d->changes[0].invalid) << field;
        EXPECT_EQ(d->changes[0].id, "abcdefghijklmnopqrstuvwxy");
    }
}

TEST(Assignments, AnIncrementalEmptySetRoundTrips) {
    Assignments a;
    a.sequence = 2;
    auto d = decode_assignments(encode(a));
    ASSERT_TRUE(d);
    EXPECT_FALSE(d->complete);
    EXPECT_EQ(d->sequence, 2u);
    EXPECT_TRUE(d->changes.empty());
}

TEST(Assignments, SecretDataIsBase64OnTheWire) {
    auto wire = json::parse(str(encode(sample_assignments())));
    EXPECT_EQ(wire.at("type"), "assignments");
    EXPECT_EQ(wire.at("Type"), "complete");
    EXPECT_EQ(wire.at("Changes").at(0).at("Secret").at("Data"), "aHVudGVyMgD/");
    EXPECT_EQ(wire.at("Changes").at(1).at("Task").at("Secrets").at(0).at("UID"), "0");
}

TEST(Assignments, UnreadableMessagesAreRefused) {
    for (auto text :
         {"", "not json", "[]", R"({"Type":"complete","Sequence":1})",
          R"({"Type":"partial","Sequence":1,"Changes":[]})",
          R"({"Type":"complete","Sequence":-1,"Changes":[]})",
          R"({"Type":"complete","Changes":[]})", R"({"Type":"complete","Sequence":1,"Changes":{}})",
          R"({"Type":"complete","Sequence":1,"Changes":[],"Changes":[]})"})
        EXPECT_FALSE(decode_assignments(msg(text))) << text;
}

TEST(Assignments, ABadChangeIsMarkedAndTheOthersKept) {
    auto d = decode_assignments(msg(
        R"({"Type":"incremental","Sequence":2,"Changes":[)"
        R"({"Action":"add","Task":{"ID":"t1","Image":"x","Limits":{"Pids":-1}}},)"
        R"({"Action":"add","Task":{"ID":"../x","Image":"x"}},)"
        R"({"Action":"add","Secret":{"ID":"s1","Name":"n","Data":"***"}},)"
        R"({"Action":"add","Secret":{"ID":"s1","Name":"n\u0001","Data":""}},)"
        R"({"Action":"add","Task":{"ID":"t2","Image":"x","Secrets":[{"SecretID":"s1","Name":"n","UID":"4294967296"}]}},)"
        R"({"Action":"explode","Task":{"ID":"t3"}},)"
        R"({"Action":"remove","Task":{"ID":"t4"},"Secret":{"ID":"s4"}},)"
        R"(17,)"
        R"({"Action":"add","Task":{"ID":"t5","Image":"x","Secrets":[{"SecretID":"s1","Name":"n","UID":7}]}}]})"));
    ASSERT_TRUE(d) << d.error().message;
    ASSERT_EQ(d->changes.size(), 9u);
    for (std::size_t i = 0; i < 8; ++i) EXPECT_TRUE(d->changes[i].invalid) << i;
    EXPECT_EQ(d->changes[0].id, "t1");  // named, so the node can reject it
    EXPECT_TRUE(d->changes[1].id.empty());
    EXPECT_FALSE(d->changes[0].task);
    EXPECT_NE(d->changes[3].invalid->find("control character"), std::string::npos);
    EXPECT_FALSE(d->changes[8].invalid);
    EXPECT_EQ(d->changes[8].task->secrets.at(0).uid, "7");
}

TEST(Status, RoundTrip) {
    StatusMessage m;
    m.complete = true;
    m.statuses.push_back({"abcdefghijklmnopqrstuvwxy", model::TaskState::running, "started", "",
                          model::ContainerStatus{"abcdefghijklmnopqrstuvwxy", 42, 0}});
    m.statuses.push_back(
        {"t1", model::TaskState::failed, "failed", "exit 3", model::ContainerStatus{"t1", 0, -3}});
    m.statuses.push_back({"t2", model::TaskState::preparing, "preparing", "", std::nullopt});
    auto d = decode_status(encode(m));
    ASSERT_TRUE(d) << d.error().message;
    EXPECT_EQ(d->complete, m.complete);
    ASSERT_EQ(d->statuses.size(), m.statuses.size());
    for (std::size_t i = 0; i < m.statuses.size(); ++i) {
        const auto& a = m.statuses[i];
        const auto& b = d->statuses[i];
        EXPECT_EQ(b.task_id, a.task_id);
        EXPECT_EQ(b.state, a.state);
        EXPECT_EQ(b.message, a.message);
        EXPECT_EQ(b.err, a.err);
        ASSERT_EQ(b.container.has_value(), a.container.has_value());
        if (a.container) {
            EXPECT_EQ(b.container->container_id, a.container->container_id);
            EXPECT_EQ(b.container->pid, a.container->pid);
            EXPECT_EQ(b.container->exit_code, a.container->exit_code);
        }
    }
}

TEST(Status, MalformedReportsAreRefused) {
    for (
        auto text : {
            R"({"type":"status"})",
            R"({"type":"status","statuses":{}})",
            R"({"type":"logs","statuses":[]})",
            R"({"type":"status","complete":1,"statuses":[]})",
            R"({"type":"status","statuses":[{"task_id":"t1","state":"assigned"}]})",
            R"({"type":"status","statuses":[{"task_id":"T1","state":"running"}]})",
            R"({"type":"status","statuses":[{"state":"running"}]})",
            R"({"type":"status","statuses":[{"task_id":"t1"}]})",
            R"({"type":"status","statuses":[{"task_id":"t1","state":"running","pid":-1}]})",
            R"({"type":"status","statuses":[{"task_id":"t1","state":"running","container_id":"a/b"}]})",
            R"({"type":"status","statuses":[{"task_id":"t1","state":"running","message":7}]})",
        }) {
        auto d = decode_status(msg(text));
        ASSERT_FALSE(d) << text;
        EXPECT_EQ(d.error().code, Errc::invalid_argument);
    }
}

// What a running or ended task read of each secret version (FUSE) goes with its status.
TEST(Status, ReadsRoundTripAndAreChecked) {
    StatusMessage m;
    TaskReport r{"t1", model::TaskState::running, "started", "", std::nullopt};
    r.secrets = {"bvjui3xpv48u9gx9cya2y63q9@2"};
    r.reads = {{"bvjui3xpv48u9gx9cya2y63q9@2", 7, 1000, 5000},
               {"0m1vq2b8x5a7d9zq0cl2s3k4e@1", 0, 0, 0}};
    m.statuses.push_back(r);
    auto d = decode_status(encode(m));
    ASSERT_TRUE(d) << d.error().message;
    EXPECT_EQ(d->statuses.at(0).reads, r.reads);
    for (auto reads : {
             R"({})",
             R"([{"secret":"nope","reads":1,"first":1,"last":1}])",
             R"([{"secret":"bvjui3xpv48u9gx9cya2y63q9","reads":1,"first":1,"last":1}])",
             R"([{"secret":"bvjui3xpv48u9gx9cya2y63q9@1","reads":-1,"first":1,"last":1}])",
             R"([{"secret":"bvjui3xpv48u9gx9cya2y63q9@1","reads":1,"first":5,"last":1}])",
             R"([{"secret":"bvjui3xpv48u9gx9cya2y63q9@1","reads":"1","first":1,"last":1}])",
             R"([7])",
         }) {
        auto text = fmt::format(
            R"({{"type":"status","statuses":[{{"task_id":"t1","state":"running","reads":{}}}]}})",
            reads);
        auto bad = decode_status(msg(text));
        ASSERT_FALSE(bad) << text;
        EXPECT_EQ(bad.error().code, Errc::invalid_argument);
    }
}

TEST(SessionMessages, RoundTrip) {
    CertificateMessage cert{"-----BEGIN CERTIFICATE-----\n...", "bundle"};
    EXPECT_EQ(decode_certificate(encode(cert)).value(), cert);
    RenewRequest rr{"CA rotation"};
    EXPECT_EQ(decode_renew_request(encode(rr)).value(), rr);
    Renew renew{"-----BEGIN CERTIFICATE REQUEST-----\n..."};
    EXPECT_EQ(decode_renew(encode(renew)).value(), renew);
    ErrorMessage bare{"no", std::nullopt};
    EXPECT_EQ(decode_error(encode(bare)).value(), bare);
    ErrorMessage answering{"no such task", "r1"};
    EXPECT_EQ(decode_error(encode(answering)).value(), answering);
}

TEST(SessionMessages, LogsRoundTrip) {
    for (RequestId id : {RequestId{std::string("r1")}, RequestId{std::int64_t{7}},
                         RequestId{std::uint64_t{18'000'000'000'000'000'000u}}}) {
        LogsRequest r{id, "t1", 20, std::nullopt};
        auto d = decode_logs_request(encode(r));
        ASSERT_TRUE(d);
        EXPECT_EQ(d->request, r.request);
        EXPECT_EQ(d->task_id, r.task_id);
        EXPECT_EQ(d->tail, r.tail);
        EXPECT_FALSE(d->invalid);
    }
    LogsReply data{std::string("r1"), "t1", std::string("one\ntwo\0\n", 9), std::nullopt};
    EXPECT_EQ(decode_logs_reply(encode(data)).value(), data);
    LogsReply error{std::string("r2"), "t1", "", "no task t1 on this node"};
    EXPECT_EQ(decode_logs_reply(encode(error)).value(), error);
}

TEST(SessionMessages, MalformedInputIsRefused) {
    EXPECT_FALSE(decode_certificate(msg(R"({"type":"certificate","certificate":"x"})")));
    EXPECT_FALSE(decode_certificate(msg(R"({"type":"renew","certificate":"x","ca_bundle":"y"})")));
    EXPECT_FALSE(decode_renew(msg(R"({"type":"renew","csr":""})")));
    EXPECT_FALSE(decode_renew(msg(R"({"type":"renew","csr":7})")));
    EXPECT_FALSE(decode_renew_request(msg("[")));
    EXPECT_FALSE(decode_error(msg(R"({"type":"error","message":"x","request":7})")));
    EXPECT_FALSE(decode_logs_request(msg(R"({"type":"logs_request","task_id":"t1"})")));
    EXPECT_FALSE(
        decode_logs_request(msg(R"({"type":"logs_request","request":[],"task_id":"t1"})")));
    EXPECT_FALSE(decode_logs_request(msg(fmt::format(R"({{"type":"logs_request","request":"{}"}})",
                                                     std::string(max_node_request_id + 1, 'r')))));
    EXPECT_FALSE(decode_logs_reply(msg(R"({"type":"logs","request":"r1"})")));
    EXPECT_FALSE(decode_logs_reply(msg(R"({"type":"logs","request":"r1","data":"***"})")));
    EXPECT_FALSE(decode_logs_reply(msg(R"({"type":"logs","request":7,"data":""})")));
    EXPECT_FALSE(decode_logs_reply(msg(R"({"type":"logs","data":""})")));
}

// A logs request the node cannot serve still has an id to answer to, with why.
TEST(SessionMessages, ALogsRequestWithABadTaskOrTailIsAnsweredNotDropped) {
    auto bad_task =
        decode_logs_request(msg(R"({"type":"logs_request","request":"r1","task_id":"../etc"})"));
    ASSERT_TRUE(bad_task);
    EXPECT_EQ(bad_task->invalid.value_or(""), "invalid task id");
    EXPECT_TRUE(bad_task->task_id.empty());
    auto bad_tail = decode_logs_request(
        msg(R"({"type":"logs_request","request":"r1","task_id":"t1","tail":-1})"));
    ASSERT_TRUE(bad_tail);
    EXPECT_EQ(bad_tail->invalid.value_or(""), "tail must be a non-negative integer");
}

TEST(Managers, RoundTrip) {
    ManagersMessage m{{"10.0.0.1:2377", "manager-2.example:2377", "[fd00::3]:1", "m_3:65535"}};
    auto d = decode_managers(encode(m));
    ASSERT_TRUE(d) << d.error().message;
    EXPECT_EQ(*d, m);
    EXPECT_EQ(str(encode(ManagersMessage{{"a:1"}})), R"({"type":"managers","managers":["a:1"]})");
    ManagersMessage none;
    EXPECT_EQ(decode_managers(encode(none)).value(), none);
    ManagersMessage most;
    for (std::size_t i = 0; i < max_managers; ++i)
        most.managers.push_back(fmt::format("m{}:2377", i));
    EXPECT_EQ(decode_managers(encode(most)).value(), most);
}

TEST(Managers, AMissingOrNonArrayListIsRefused) {
    for (auto text : {R"({"type":"managers"})", R"({"type":"managers","managers":null})",
                      R"({"type":"managers","managers":"a:1"})",
                      R"({"type":"managers","managers":{"a":"b:1"}})",
                      R"({"type":"error","managers":["a:1"]})", "[]"}) {
        auto d = decode_managers(msg(text));
        ASSERT_FALSE(d) << text;
        EXPECT_EQ(d.error().code, Errc::invalid_argument) << text;
    }
    auto d = decode_managers(msg(R"({"type":"managers","managers":7})"));
    ASSERT_FALSE(d);
    EXPECT_NE(d.error().message.find("managers must be an array"), std::string::npos)
        << d.error().message;
}

TEST(Managers, MoreThanTheLimitIsRefused) {
    ManagersMessage many;
    for (std::size_t i = 0; i <= max_managers; ++i)
        many.managers.push_back(fmt::format("m{}:2377", i));
    auto d = decode_managers(encode(many));
    ASSERT_FALSE(d);
    EXPECT_EQ(d.error().code, Errc::invalid_argument);
    EXPECT_NE(d.error().message.find("more than 64"), std::string::npos) << d.error().message;
}

TEST(Managers, AnEntryThatIsNotHostAndPortIsRefusedWithoutQuotingIt) {
    const std::string long_host(254, 'h');
    for (const auto& bad : std::vector<std::string>{"",
                                                    "host",
                                                    "host:",
                                                    ":2377",
                                                    "host:0",
                                                    "host:65536",
                                                    "host:99999",
                                                    "host:123456",
                                                    "host:+1",
                                                    "host:-1",
                                                    "host:12x",
                                                    "host :1",
                                                    "ho/st:1",
                                                    "ho:st:1",
                                                    "::1:1",
                                                    "[::1]",
                                                    "[::1:1",
                                                    "[]:1",
                                                    "[not-v6]:1",
                                                    "[::1%eth0]:1",
                                                    "[10.0.0.1]:1",
                                                    "h\xc3\xa9:1",
                                                    long_host + ":1"}) {
        auto d = decode_managers(msg(fmt::format(R"({{"type":"managers","managers":["a:1",{}]}})",
                                                 json::serialize(json::value(bad)))));
        ASSERT_FALSE(d) << bad;
        EXPECT_EQ(d.error().code, Errc::invalid_argument) << bad;
        EXPECT_NE(d.error().message.find("not HOST:PORT"), std::string::npos) << d.error().message;
        if (!bad.empty()) {
            EXPECT_EQ(d.error().message.find(bad), std::string::npos) << bad;
        }
    }
    auto cut = decode_managers(msg(R"({"type":"managers","managers":["[::1\u0000junk]:1"]})"));
    EXPECT_FALSE(cut) << "a NUL inside the brackets";
    auto number = decode_managers(msg(R"({"type":"managers","managers":[2377]})"));
    ASSERT_FALSE(number);
    EXPECT_EQ(number.error().code, Errc::invalid_argument);
    // The edges that are good.
    const std::string longest_host(253, 'h');
    EXPECT_TRUE(decode_managers(encode(ManagersMessage{{longest_host + ":65535", "a:1"}})));
}

TEST(Join, RoundTrip) {
    JoinRequest r{protocol_version,
                  crypto::SecureBuffer::copy_of(std::string_view("COFFERTKN-1-abc-def")),
                  "-----BEGIN CERTIFICATE REQUEST-----\n...", "node-1.example"};
    auto d = decode_join_request(encode(r));
    ASSERT_TRUE(d) << d.error().message;
    EXPECT_EQ(d->version, protocol_version);
    EXPECT_TRUE(d->token.equals(r.token.span()));
    EXPECT_EQ(d->csr, r.csr);
    EXPECT_EQ(d->hostname, r.hostname);
    JoinAnswer a{"abcdefghijklmnopqrstuvwxy", "CERT", "BUNDLE"};
    EXPECT_EQ(decode_join_answer(encode(a)).value(), a);
}

TEST(Join, MalformedRequestsAreRefused) {
    auto refusal = [](std::string_view text) {
        auto d = decode_join_request(msg(text));
        return d ? std::string() : d.error().message;
    };
    EXPECT_EQ(refusal("nope"), "join request is not JSON");
    EXPECT_EQ(refusal(R"({"token":"t"})"), "join request needs token and csr");
    EXPECT_EQ(refusal(R"({"token":"t","csr":7})"), "join request needs token and csr");
    EXPECT_NE(refusal(R"({"token":"t","csr":"c","hostname":"a b"})").find("hostname"),
              std::string::npos);
    EXPECT_NE(refusal(R"({"version":"1","token":"t","csr":"c"})").find("version"),
              std::string::npos);
    EXPECT_EQ(refusal(R"({"token":"t","csr":"c"})"), "");  // nodes from before the version: 1
    EXPECT_FALSE(decode_join_answer(R"({"node_id":"n","certificate":"c"})"));
    EXPECT_FALSE(decode_join_answer("<html>"));
}

TEST(Version, AnUnknownVersionIsNamedNotMisread) {
    auto d = decode_join_request(msg(R"({"version":7,"something_else":true})"));
    ASSERT_FALSE(d);
    EXPECT_EQ(d.error().code, Errc::invalid_argument);
    EXPECT_EQ(d.error().message,
              "node protocol version 7 is not supported by this manager (supports 1)");
    auto h = check_version_header("7");
    ASSERT_FALSE(h);
    EXPECT_EQ(h.error().message,
              "node protocol version 7 is not supported by this manager (supports 1)");
    EXPECT_TRUE(check_version_header("1"));
    EXPECT_TRUE(check_version_header(""));  // a node from before the header
    EXPECT_FALSE(check_version_header("1x"));
    EXPECT_FALSE(check_version_header("-1"));
    EXPECT_FALSE(check_version_header("99999999999999999999999"));
}

TEST(Assignments, AHealthcheckRoundTripsAndAbsentStaysAbsent) {
    auto checked = sample_task();
    checked.healthcheck =
        HealthCheck{{"CMD", "/bin/check", "--fast"}, 1'000'000, 2'000'000'000, 0, 5, 7};
    auto unchecked = sample_task();
    unchecked.id = "t2";
    Assignments a;
    a.sequence = 1;
    for (const auto& t : {checked, unchecked}) {
        Change c;
        c.id = t.id;
        c.task = t;
        a.changes.push_back(std::move(c));
    }
    auto d = decode_assignments(encode(a));
    ASSERT_TRUE(d) << d.error().message;
    ASSERT_EQ(d->changes.size(), 2u);
    EXPECT_EQ(d->changes[0].task, checked);
    EXPECT_EQ(d->changes[1].task, unchecked);
    EXPECT_FALSE(d->changes[1].task->healthcheck);
}

TEST(Assignments, ABadHealthcheckRejectsItsTask) {
    for (auto hc : {R"({"Test":["SHELL","x"]})", R"({"Test":["CMD"]})", R"({"Test":["NONE","x"]})",
                    R"({"Interval":-1})", R"({"Retries":-2})", R"({"Test":"CMD true"})", R"([])"}) {
        auto text = fmt::format(
            R"({{"type":"assignments","Type":"incremental","Sequence":1,"Changes":[{{"Action":"add","Task":{{"ID":"t1","Image":"busybox","Healthcheck":{}}}}}]}})",
            hc);
        auto d = decode_assignments(msg(text));
        ASSERT_TRUE(d) << hc;
        ASSERT_EQ(d->changes.size(), 1u);
        EXPECT_TRUE(d->changes[0].invalid) << hc;
        EXPECT_EQ(d->changes[0].id, "t1") << "so the task is rejected, not lost";
    }
}

TEST(Status, HealthRoundTripsAndOnlyItsThreeValuesAreAccepted) {
    StatusMessage m;
    for (auto h : {"starting", "healthy", "unhealthy", ""})
        m.statuses.push_back({"t1", model::TaskState::running, "started", "",
                              model::ContainerStatus{"t1", 42, 0, h}});
    auto d = decode_status(encode(m));
    ASSERT_TRUE(d) << d.error().message;
    ASSERT_EQ(d->statuses.size(), 4u);
    for (std::size_t i = 0; i < 4; ++i) {
        ASSERT_TRUE(d->statuses[i].container);
        EXPECT_EQ(d->statuses[i].container->health, m.statuses[i].container->health);
    }
    EXPECT_EQ(str(encode(m)).find(R"("health":"")"), std::string::npos) << "none is not sent";
    auto bad = decode_status(
        msg(R"({"type":"status","statuses":[{"task_id":"t1","state":"running","health":"ok"}]})"));
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().code, Errc::invalid_argument);
}

TEST(Assignments, MountsRoundTripAndAreLeftOutWhenThereAreNone) {
    auto t = sample_task();
    MountPayload tmp;
    tmp.type = MountPayload::Type::tmpfs;
    tmp.target = "/scratch";
    tmp.size_bytes = 1 << 20;
    tmp.mode = 0750;
    tmp.read_only = true;
    MountPayload bind;
    bind.type = MountPayload::Type::bind;
    bind.source = "/srv/data";
    bind.target = "/data";
    bind.non_recursive = true;
    MountPayload vol;
    vol.source = "dbdata";
    vol.target = "/var/lib/db";
    vol.no_copy = true;
    vol.labels = {{"app", "db"}};
    t.mounts = {tmp, bind, vol};
    Assignments a;
    Change c;
    c.id = t.id;
    c.task = t;
    a.changes.push_back(std::move(c));
    auto d = decode_assignments(encode(a));
    ASSERT_TRUE(d) << d.error().message;
    ASSERT_EQ(d->changes.size(), 1u);
    ASSERT_FALSE(d->changes[0].invalid) << *d->changes[0].invalid;
    EXPECT_EQ(d->changes[0].task, t);

    // Without mounts the task reads as it did before mounts existed.
    Assignments plain;
    Change p;
    p.id = sample_task().id;
    p.task = sample_task();
    plain.changes.push_back(std::move(p));
    EXPECT_EQ(str(encode(plain)).find("Mounts"), std::string::npos);
}

TEST(Assignments, ABadMountRejectsItsTask) {
    auto with_mount = [](std::string_view mount) {
        return msg(fmt::format(
            R"({{"type":"assignments","Type":"complete","Sequence":1,"Changes":[)"
            R"({{"Action":"add","Task":{{"ID":"t1","Image":"busybox","Mounts":[{}]}}}}]}})",
            mount));
    };
    for (auto bad : {R"({"Type":"nfs","Target":"/x"})", R"({"Type":"tmpfs","Target":"x"})",
                     R"({"Type":"tmpfs","Target":"/"})", R"({"Type":"tmpfs","Target":"/a/../b"})",
                     R"({"Type":"bind","Source":"rel","Target":"/x"})",
                     R"({"Type":"volume","Source":"../up","Target":"/x"})",
                     R"({"Type":"tmpfs","Source":"x","Target":"/x"})",
                     R"({"Type":"tmpfs","Target":"/x","Mode":4096})",
                     R"({"Type":"tmpfs","Target":"/x","SizeBytes":-1})"}) {
        auto d = decode_assignments(with_mount(bad));
        ASSERT_TRUE(d) << bad;
        ASSERT_EQ(d->changes.size(), 1u);
        EXPECT_TRUE(d->changes[0].invalid) << bad;
        EXPECT_EQ(d->changes[0].id, "t1") << bad;
    }
}

TEST(Status, VolumesRoundTripAndAreOptional) {
    StatusMessage m;
    m.complete = true;
    m.volumes = std::vector<VolumeReport>{{"dbdata",
                                           "/var/lib/coffer-agent/volumes/dbdata/_data",
                                           "2026-12-05T07:00:00Z",
                                           {{"app", "db"}}}};
    auto d = decode_status(encode(m));
    ASSERT_TRUE(d) << d.error().message;
    EXPECT_EQ(d->volumes, m.volumes);
    // Absent: the node said nothing about volumes; empty: it has none.
    auto without = decode_status(msg(R"({"type":"status","statuses":[]})"));
    ASSERT_TRUE(without);
    EXPECT_FALSE(without->volumes);
    auto none = decode_status(msg(R"({"type":"status","statuses":[],"volumes":[]})"));
    ASSERT_TRUE(none);
    ASSERT_TRUE(none->volumes);
    EXPECT_TRUE(none->volumes->empty());
    EXPECT_FALSE(
        decode_status(msg(R"({"type":"status","statuses":[],"volumes":[{"name":"../x"}]})")));
    EXPECT_FALSE(decode_status(msg(R"({"type":"status","statuses":[],"volumes":{}})")));
}

TEST(Volumes, RemoveAndItsAnswerRoundTrip) {
    VolumeRemove r{"req1", "dbdata"};
    auto d = decode_volume_remove(encode(r));
    ASSERT_TRUE(d) << d.error().message;
    EXPECT_EQ(*d, r);
    EXPECT_FALSE(
        decode_volume_remove(msg(R"({"type":"volume_remove","request":"r","name":"/etc"})")));
    EXPECT_FALSE(decode_volume_remove(msg(R"({"type":"volume_remove","name":"v1"})")));

    VolumeRemoved ok{"req1", "dbdata", "", ""};
    auto o = decode_volume_removed(encode(ok));
    ASSERT_TRUE(o) << o.error().message;
    EXPECT_EQ(*o, ok);
    VolumeRemoved refused{"req1", "dbdata", "remove dbdata: volume is in use - [t1]", "in_use"};
    auto f = decode_volume_removed(encode(refused));
    ASSERT_TRUE(f) << f.error().message;
    EXPECT_EQ(*f, refused);
    EXPECT_FALSE(decode_volume_removed(
        msg(R"({"type":"volume_removed","request":"r","error":"x","code":"weird"})")));
}

TEST(Assignments, ConfigsRoundTripUnderTheirOwnKeys) {
    Assignments a;
    a.sequence = 2;
    Change config;
    config.is_secret = true;
    config.is_config = true;
    config.id = "cfg1";
    config.secret =
        SecretPayload{"cfg1", "app.conf", crypto::SecureBuffer::copy_of(std::string_view("x=1"))};
    a.changes.push_back(std::move(config));
    Change task;
    task.id = sample_task().id;
    task.task = sample_task();
    task.task->configs = {{"cfg1", "app.conf", "/etc/app.conf", "1000", "0", 0440}};
    a.changes.push_back(std::move(task));
    Change gone;
    gone.action = Change::Action::remove;
    gone.is_secret = true;
    gone.is_config = true;
    gone.id = "cfg0";
    a.changes.push_back(std::move(gone));
    auto text = encode(a);
    auto v = json::parse(str(text));
    EXPECT_EQ(v.at("Changes").at(0).at("Config").at("Data"), "eD0x");
    EXPECT_EQ(v.at("Changes").at(1).at("Task").at("Configs").at(0).at("ConfigID"), "cfg1");
    EXPECT_EQ(v.at("Changes").at(2).at("Config").at("ID"), "cfg0");
    auto d = decode_assignments(text);
    ASSERT_TRUE(d) << d.error().message;
    ASSERT_EQ(d->changes.size(), 3u);
    for (std::size_t i = 0; i < 3; ++i) {
        EXPECT_FALSE(d->changes[i].invalid) << i;
        EXPECT_EQ(d->changes[i].is_config, a.changes[i].is_config) << i;
        EXPECT_EQ(d->changes[i].is_secret, a.changes[i].is_secret) << i;
        EXPECT_EQ(d->changes[i].id, a.changes[i].id) << i;
    }
    EXPECT_TRUE(d->changes[0].secret->data.equals(a.changes[0].secret->data.span()));
    EXPECT_EQ(d->changes[1].task, a.changes[1].task);

    // One object per change: a Secret and a Config together is refused.
    auto both = decode_assignments(
        msg(R"({"type":"assignments","Type":"incremental","Sequence":1,"Changes":[)"
            R"({"Action":"remove","Secret":{"ID":"a"},"Config":{"ID":"a"}}]})"));
    ASSERT_TRUE(both);
    ASSERT_TRUE(both->changes.at(0).invalid);
}

namespace {

NetworksMessage sample_networks() {
    NetworksMessage m;
    m.sequence = 4;
    NetworkPayload n;
    n.id = "n000000000000000000000001";
    n.name = "app_backend";
    n.subnet = "10.0.1.0/24";
    n.gateway = "10.0.1.2";
    n.vni = 4097;
    n.peers = {"192.0.2.6", "192.0.2.10"};
    n.services = {{"s000000000000000000000001",
                   "db",
                   "vip",
                   "10.0.1.3",
                   {"database"},
                   {{"t1", "db.1.t1", "10.0.1.7"}, {"t2", "db.2.t2", "10.0.1.8"}}},
                  {"s000000000000000000000002", "web", "dnsrr", "", {}, {}}};
    m.networks.push_back(n);
    NetworkPayload b;
    b.id = "n000000000000000000000002";
    b.name = "local";
    b.driver = "bridge";
    b.subnet = "10.0.2.0/24";
    b.gateway = "10.0.2.1";
    b.internal = true;
    m.networks.push_back(b);
    m.ingress = {{"s000000000000000000000002", "tcp", 8080, 80, {"10.0.0.5", "10.0.0.6"}}};
    return m;
}

std::string networks_text(std::string_view network_fields) {
    return fmt::format(
        R"({{"type":"networks","Sequence":1,"Networks":[{{"ID":"n000000000000000000000001",)"
        R"("Name":"n","Driver":"overlay","Subnet":"10.0.1.0/24","Gateway":"10.0.1.2","VNI":4097,)"
        R"("MTU":1450{}}}]}})",
        network_fields);
}

}  // namespace

TEST(Networks, RoundTrip) {
    auto m = sample_networks();
    auto d = decode_networks(encode(m));
    ASSERT_TRUE(d) << d.error().message;
    EXPECT_EQ(*d, m);
}

TEST(Networks, AMinimalNetworkIsRead) {
    auto d = decode_networks(msg(networks_text("")));
    ASSERT_TRUE(d) << d.error().message;
    ASSERT_EQ(d->networks.size(), 1u);
    EXPECT_EQ(d->networks[0].gateway, "10.0.1.2");
    EXPECT_FALSE(d->networks[0].internal);
}

TEST(Networks, WrongAddressesAndNamesAreRefused) {
    for (
        auto fields : {
            R"(,"Gateway":"10.0.2.1")",     // outside the subnet (the later key wins)
            R"(,"Gateway":"10.0.1.0")",     // the network's own address
            R"(,"Gateway":"10.0.1.255")",   // its broadcast
            R"(,"Subnet":"10.0.1.1/24")",   // host bits set
            R"(,"Subnet":"10.0.1.0/31")",   // too small
            R"(,"VNI":16777216)",           // out of range
            R"(,"VNI":0)",                  // an overlay without one
            R"(,"Driver":"macvlan")",       // not a driver of coffer's
            R"(,"Peers":["192.0.2.300"])",  // not an address
            R"(,"Peers":"192.0.2.3")",      // not an array
            R"(,"Internal":"yes")",         // not a boolean
            R"(,"Services":[{"ID":"s000000000000000000000001","Name":"db","EndpointMode":"vip","VIP":"10.0.9.3"}])",
            R"(,"Services":[{"ID":"s000000000000000000000001","Name":"db","EndpointMode":"dnsrr","VIP":"10.0.1.3"}])",
            R"(,"Services":[{"ID":"s000000000000000000000001","Name":"../x","EndpointMode":"dnsrr"}])",
            R"(,"Services":[{"ID":"s000000000000000000000001","Name":"db","EndpointMode":"dnsrr","Tasks":[{"ID":"t1","Name":"db.1.t1","Address":"10.0.8.7"}]}])",
            R"(,"Services":[{"ID":"s000000000000000000000001","Name":"db","EndpointMode":"dnsrr","Aliases":["a b"]}])",
        }) {
        auto d = decode_networks(msg(networks_text(fields)));
        EXPECT_FALSE(d) << fields;
        if (!d) {
            EXPECT_NE(d.error().message.find("malformed message"), std::string::npos);
        }
    }
    // The same network twice.
    auto twice = sample_networks();
    twice.networks.push_back(twice.networks.front());
    EXPECT_FALSE(decode_networks(encode(twice)));
}

TEST(Assignments, TaskNetworksAreChecked) {
    for (
        auto field :
        {R"("NetworkMode":"bridge")", R"("Networks":[{"NetworkID":"x","Address":"10.0.1.7/24"}])",
         R"("Networks":[{"NetworkID":"n000000000000000000000001","Address":"10.0.1.7"}])",
         R"("Networks":[{"NetworkID":"n000000000000000000000001","Address":"10.0.1.0/24"}])",
         R"("NetworkMode":"host","Networks":[{"NetworkID":"n000000000000000000000001","Address":"10.0.1.7/24"}])",
         R"("HostPorts":[{"Protocol":"sctp","TargetPort":1,"PublishedPort":1}])",
         R"("HostPorts":[{"Protocol":"tcp","TargetPort":0,"PublishedPort":1}])",
         R"("HostPorts":[{"Protocol":"tcp","TargetPort":80,"PublishedPort":70000}])"}) {
        auto text = fmt::format(
            R"({{"type":"assignments","Type":"complete","Sequence":1,"Changes":[{{"Action":"add",)"
            R"("Task":{{"ID":"abcdefghijklmnopqrstuvwxy","Image":"busybox",{}}}}}]}})",
            field);
        auto d = decode_assignments(msg(text));
        ASSERT_TRUE(d) << text;
        ASSERT_EQ(d->changes.size(), 1u);
        EXPECT_TRUE(d->changes[0].invalid) << field;
    }
}

// The secret versions a task's mount holds travel with its status; anything but
// "<secret id>@<version>" is refused. Secret versions travel with assignments.
TEST(SecretVersions, StatusAndAssignmentsCarryThem) {
    StatusMessage m;
    m.statuses.push_back({"t1",
                          model::TaskState::running,
                          "started",
                          "",
                          std::nullopt,
                          {"bvjui3xpv48u9gx9cya2y63q9@3"}});
    auto d = decode_status(encode(m));
    ASSERT_TRUE(d) << d.error().message;
    EXPECT_EQ(d->statuses.at(0).secrets, m.statuses[0].secrets);
    for (auto bad :
         {R"(["x/y@1"])", R"(["bvjui3xpv48u9gx9cya2y63q9"])", R"(["bvjui3xpv48u9gx9cya2y63q9@"])",
          R"(["bvjui3xpv48u9gx9cya2y63q9@1a"])", R"("bvjui3xpv48u9gx9cya2y63q9@1")", R"([7])"}) {
        auto text = fmt::format(
            R"({{"type":"status","statuses":[{{"task_id":"t1","state":"running","secrets":{}}}]}})",
            bad);
        EXPECT_FALSE(decode_status(msg(text))) << bad;
    }

    Assignments a;
    Change s;
    s.is_secret = true;
    s.id = "bvjui3xpv48u9gx9cya2y63q9";
    s.version = 4;
    s.secret = SecretPayload{s.id, "db", crypto::SecureBuffer::copy_of(std::string_view("b")), 4};
    a.changes.push_back(std::move(s));
    Change t;
    t.id = "abcdefghijklmnopqrstuvwxy";
    t.task = TaskPayload{};
    t.task->id = t.id;
    t.task->image = "busybox";
    t.task->secrets.push_back({"bvjui3xpv48u9gx9cya2y63q9", "db", "db", "0", "0", 0444, 4});
    t.task->secret_signal = "SIGHUP";
    t.task->secret_mount = "fuse";
    a.changes.push_back(std::move(t));
    Change rm;
    rm.action = Change::Action::remove;
    rm.is_secret = true;
    rm.id = "bvjui3xpv48u9gx9cya2y63q9";
    rm.version = 3;
    a.changes.push_back(std::move(rm));
    auto back = decode_assignments(encode(a));
    ASSERT_TRUE(back) << back.error().message;
    ASSERT_EQ(back->changes.size(), 3u);
    EXPECT_EQ(back->changes[0].version, 4u);
    EXPECT_EQ(back->changes[0].secret->version, 4u);
    ASSERT_TRUE(back->changes[1].task) << *back->changes[1].invalid;
    EXPECT_EQ(back->changes[1].task->secrets.at(0).version, 4u);
    EXPECT_EQ(back->changes[1].task->secret_signal, "SIGHUP");
    EXPECT_EQ(back->changes[1].task->secret_mount, "fuse");
    EXPECT_EQ(back->changes[2].version, 3u);
    EXPECT_EQ(back->changes[2].action, Change::Action::remove);
    // Only tmpfs and fuse: a task with anything else is invalid, the rest of the message stands.
    a.changes[1].task->secret_mount = "ramfs";
    auto odd = decode_assignments(encode(a));
    ASSERT_TRUE(odd) << odd.error().message;
    EXPECT_FALSE(odd->changes[1].task);
    ASSERT_TRUE(odd->changes[1].invalid);
    EXPECT_NE(odd->changes[1].invalid->find("SecretMount"), std::string::npos);
}
