// The node protocol's codecs: every message decodes to what was encoded, malformed input is
// refused with a reason, and an unknown protocol version is named as such.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "coffer/nodeproto/assignments.h"
#include "coffer/nodeproto/join.h"
#include "coffer/nodeproto/session.h"
#include "coffer/nodeproto/status.h"
#include "coffer/nodeproto/version.h"

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
