// The manager's NodePort in process, with a scripted node on the other end of a real session:
// what the node port sends and how it answers (complete set first, log requests, renewal, role
// changes, malformed messages, overlapping sessions). cofferd with real agents: node_port_test.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <atomic>
#include <condition_variable>
#include <future>
#include <mutex>

#include "coffer/crypto/random.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/manager/cluster.h"
#include "coffer/manager/node_port.h"
#include "coffer/nodeconn/client.h"
#include "coffer/nodeconn/server.h"
#include "coffer/nodeproto/session.h"
#include "coffer/pki/node_key.h"
#include "harness.h"

using namespace coffer;
using namespace std::chrono_literals;
namespace json = boost::json;

namespace {

std::string str(const crypto::SecureBuffer& b) {
    return {reinterpret_cast<const char*>(b.data()), b.size()};
}

// A node's session, recording what the manager sends; `answer` may reply from the I/O thread.
class FakeNode {
  public:
    using Answer = std::function<void(nodeconn::Session&, const json::object&)>;

    static Result<std::unique_ptr<FakeNode>> connect(std::uint16_t port,
                                                     const nodeconn::Credentials& c,
                                                     Answer answer = {}) {
        std::unique_ptr<FakeNode> n(new FakeNode());
        n->answer_ = std::move(answer);
        nodeconn::SessionHandlers h;
        h.on_message = [p = n.get()](const std::shared_ptr<nodeconn::Session>& s,
                                     nodeconn::Message m) {
            auto o = json::parse(str(m.json)).as_object();
            if (p->answer_) p->answer_(*s, o);
            std::lock_guard l(p->m_);
            p->received_.push_back(std::move(o));
            p->cv_.notify_all();
        };
        auto client = nodeconn::NodeClient::connect({"127.0.0.1", port}, c.clone(), std::move(h));
        if (!client) return std::move(client).error();
        n->client_ = std::move(*client);
        return n;
    }
    // The first message of this type received, waiting for it.
    std::optional<json::object> wait_for(std::string_view type,
                                         std::chrono::milliseconds within = 10s) {
        std::unique_lock l(m_);
        std::optional<json::object> found;
        cv_.wait_for(l, within, [&] {
            for (const auto& o : received_)
                if (o.at("type").as_string() == type) return found.emplace(o), true;
            return false;
        });
        return found;
    }
    bool send(const std::string& text) {
        return client_->session()->send(crypto::SecureBuffer::copy_of(text));
    }
    bool send(crypto::SecureBuffer message) { return client_->session()->send(std::move(message)); }
    bool closed() const { return client_->session()->closed(); }
    // Who served the session: the manager's certificate as the client verified it.
    const pki::NodeIdentity& manager() const { return client_->session()->peer(); }
    void close() { client_.reset(); }

  private:
    FakeNode() = default;
    Answer answer_;
    std::mutex m_;
    std::condition_variable cv_;
    std::vector<json::object> received_;
    std::unique_ptr<nodeconn::NodeClient> client_;
};

class NodePortSession : public ::testing::Test {
  protected:
    void SetUp() override {
        crypto::init();
        manager::NodePortOptions o;
        o.address = "127.0.0.1";
        o.port = 0;
        auto opened = manager::Cluster::open({.data_dir = dir_.path() / "data", .node_port = o});
        ASSERT_TRUE(opened) << opened.error().message;
        manager_ = std::move(opened->cluster);
        port_ = manager_->node_port();
        ASSERT_NE(port_, nullptr);

        auto key = pki::NodeKey::generate();
        auto joined = nodeconn::join({"127.0.0.1", port_->port()},
                                     manager_->trust().token(pki::Role::worker), key.csr_pem);
        ASSERT_TRUE(joined) << joined.error().message;
        node_id_ = joined->node_id;
        credentials_ = {joined->certificate_pem, std::move(key.key_pem), joined->ca_bundle_pem};
    }
    void TearDown() override {
        if (manager_) {
            manager_->stop_node_port();
            EXPECT_EQ(manager_->node_port(), nullptr);
        }
    }
    std::string state() {
        auto n = manager_->nodes().get(node_id_);
        return n ? std::string(model::to_string(n->state)) : "";
    }

    test::TempDir dir_;
    std::unique_ptr<manager::Cluster> manager_;
    manager::NodePort* port_ = nullptr;  // the cluster's
    std::string node_id_;
    nodeconn::Credentials credentials_;
};

TEST_F(NodePortSession, JoinRegistersTheNodeWithTheRoleOfItsToken) {
    auto n = manager_->nodes().get(node_id_);
    ASSERT_TRUE(n);
    EXPECT_EQ(n->spec.role, model::NodeRole::worker);
    EXPECT_EQ(n->description.hostname, "127.0.0.1");
    EXPECT_TRUE(n->certificate_expiry);
    EXPECT_EQ(state(), "down") << "ready only once its session is up";
}

TEST_F(NodePortSession, EverySessionStartsWithTheCompleteSetAndMarksTheNodeReady) {
    auto node = FakeNode::connect(port_->port(), credentials_);
    ASSERT_TRUE(node) << node.error().message;
    auto first = (*node)->wait_for("assignments");
    ASSERT_TRUE(first);
    EXPECT_EQ(first->at("Type").as_string(), "complete");
    EXPECT_TRUE(test::wait_until([&] { return state() == "ready"; }));
    (*node)->close();
    EXPECT_TRUE(test::wait_until([&] { return state() == "down"; }));
    auto again = FakeNode::connect(port_->port(), credentials_);
    ASSERT_TRUE(again);
    auto complete = (*again)->wait_for("assignments");
    ASSERT_TRUE(complete);
    EXPECT_EQ(complete->at("Type").as_string(), "complete");
    EXPECT_TRUE(test::wait_until([&] { return state() == "ready"; }));
}

TEST_F(NodePortSession, AnOlderSessionEndingLeavesTheNewerOneReady) {
    auto older = FakeNode::connect(port_->port(), credentials_);
    ASSERT_TRUE(older);
    ASSERT_TRUE(test::wait_until([&] { return state() == "ready"; }));
    auto newer = FakeNode::connect(port_->port(), credentials_);
    ASSERT_TRUE(newer);
    ASSERT_TRUE((*newer)->wait_for("assignments"));
    (*older)->close();
    ASSERT_TRUE(test::wait_until([&] { return port_->session_count() == 1; }));
    // Give a wrong "down" the time to be written, then check it was not.
    EXPECT_FALSE(test::wait_until([&] { return state() != "ready"; }, 1s)) << state();
}

TEST_F(NodePortSession, LogsComeBackFromTheNodeOrFailWhenItDoesNotAnswer) {
    std::atomic<bool> answer{true};
    auto node = FakeNode::connect(
        port_->port(), credentials_, [&](nodeconn::Session& s, const json::object& o) {
            if (o.at("type").as_string() != "logs_request" || !answer) return;
            EXPECT_EQ(o.at("tail").to_number<std::int64_t>(), 5);
            s.send(nodeproto::encode(nodeproto::LogsReply{std::string(o.at("request").as_string()),
                                                          std::string(o.at("task_id").as_string()),
                                                          "hello\n", std::nullopt}));
        });
    ASSERT_TRUE(node);
    ASSERT_TRUE(test::wait_until([&] { return state() == "ready"; }));

    auto fetch = [&](std::chrono::milliseconds timeout) {
        std::promise<Result<std::string>> p;
        auto f = p.get_future();
        port_->fetch_logs(node_id_, crypto::random_id(), 5, timeout,
                          [&p](Result<std::string> r) { p.set_value(std::move(r)); });
        EXPECT_EQ(f.wait_for(10s), std::future_status::ready);
        return f.get();
    };
    auto logs = fetch(5s);
    ASSERT_TRUE(logs) << logs.error().message;
    EXPECT_EQ(*logs, "hello\n");

    answer = false;
    auto silent = fetch(300ms);
    ASSERT_FALSE(silent);
    EXPECT_EQ(silent.error().code, Errc::unavailable);

    auto unknown = std::promise<Result<std::string>>();
    port_->fetch_logs(crypto::random_id(), crypto::random_id(), 0, 5s,
                      [&](Result<std::string> r) { unknown.set_value(std::move(r)); });
    auto r = unknown.get_future().get();
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, Errc::unavailable);
}

TEST_F(NodePortSession, APendingLogRequestFailsWhenTheNodeDisconnects) {
    auto node = FakeNode::connect(port_->port(), credentials_);
    ASSERT_TRUE(node);
    ASSERT_TRUE(test::wait_until([&] { return state() == "ready"; }));
    std::promise<Result<std::string>> p;
    port_->fetch_logs(node_id_, crypto::random_id(), 0, 60s,
                      [&](Result<std::string> r) { p.set_value(std::move(r)); });
    ASSERT_TRUE((*node)->wait_for("logs_request"));
    (*node)->close();
    auto f = p.get_future();
    ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
    EXPECT_FALSE(f.get());
}

TEST_F(NodePortSession,
       RenewIsAnsweredAndUnknownTypesAreIgnoredButMalformedStatusClosesTheSession) {
    auto node = FakeNode::connect(port_->port(), credentials_);
    ASSERT_TRUE(node);
    ASSERT_TRUE((*node)->wait_for("assignments"));
    // A CSR that is not one is refused with a reason; the session stays.
    ASSERT_TRUE((*node)->send(R"({"type":"renew","csr":"x"})"));
    auto e = (*node)->wait_for("error");
    ASSERT_TRUE(e);
    EXPECT_NE(e->at("message").as_string().find("certificate request"), std::string_view::npos);
    // A CSR for the node's own key: a new certificate for the same node, role and cluster.
    auto csr = pki::make_csr(credentials_.key_pem);
    ASSERT_TRUE(csr);
    ASSERT_TRUE((*node)->send(nodeproto::encode(nodeproto::Renew{*csr})));
    auto c = (*node)->wait_for("certificate");
    ASSERT_TRUE(c);
    auto info = pki::read_certificate(std::string(c->at("certificate").as_string()));
    ASSERT_TRUE(info);
    EXPECT_EQ(info->common_name, node_id_);
    EXPECT_EQ(info->organizational_unit, "coffer-worker");
    EXPECT_EQ(info->organization, manager_->cluster_id());
    EXPECT_FALSE(c->at("ca_bundle").as_string().empty());

    ASSERT_TRUE((*node)->send(R"({"type":"from_the_future"})"));
    ASSERT_TRUE((*node)->send(R"({"type":"status","complete":true,"statuses":[]})"));
    EXPECT_FALSE(test::wait_until([&] { return (*node)->closed(); }, 500ms));
    ASSERT_TRUE(
        (*node)->send(R"({"type":"status","statuses":[{"task_id":"abc","state":"exploded"}]})"));
    EXPECT_TRUE(test::wait_until([&] { return (*node)->closed(); }, 5s));
    EXPECT_TRUE(test::wait_until([&] { return state() == "down"; }));
}

TEST_F(NodePortSession, ARoleChangeAsksForANewCertificateAndRemovalCutsTheNode) {
    auto node = FakeNode::connect(port_->port(), credentials_);
    ASSERT_TRUE(node);
    ASSERT_TRUE(test::wait_until([&] { return state() == "ready"; }));
    auto n = manager_->nodes().get(node_id_);
    auto spec = n->spec;
    spec.role = model::NodeRole::manager;
    ASSERT_TRUE(manager_->nodes().update(node_id_, n->meta.version, spec));
    manager_->events().node_role_changed(node_id_);
    auto renew = (*node)->wait_for("renew_request");
    ASSERT_TRUE(renew);
    EXPECT_EQ(renew->at("reason").as_string(), "role");
    // Its certificate still says worker: a new session is admitted and asked to renew at once,
    // and the renewal carries the new role.
    auto again = FakeNode::connect(port_->port(), credentials_);
    ASSERT_TRUE(again);
    auto asked = (*again)->wait_for("renew_request");
    ASSERT_TRUE(asked);
    EXPECT_EQ(asked->at("reason").as_string(), "role");
    auto csr = pki::make_csr(credentials_.key_pem);
    ASSERT_TRUE(csr);
    ASSERT_TRUE((*again)->send(nodeproto::encode(nodeproto::Renew{*csr})));
    auto c = (*again)->wait_for("certificate");
    ASSERT_TRUE(c);
    auto info = pki::read_certificate(std::string(c->at("certificate").as_string()));
    ASSERT_TRUE(info);
    EXPECT_EQ(info->organizational_unit, "coffer-manager");

    ASSERT_TRUE(manager_->nodes().remove(node_id_, true));
    manager_->events().node_removed(node_id_);
    EXPECT_TRUE(test::wait_until([&] { return (*node)->closed() && (*again)->closed(); }, 5s));
    auto removed = FakeNode::connect(port_->port(), credentials_);
    ASSERT_FALSE(removed);
    EXPECT_EQ(removed.error().code, Errc::permission_denied);
}

// A node joined with the manager token holds a real certificate of this cluster, with the
// manager role. Serving the node port with it, it must not pass for the manager: a node's client
// refuses the session, and a joining node does not hand it its token. The real manager passes.
TEST_F(NodePortSession, ANodeJoinedWithTheManagerTokenCannotPassForTheManager) {
    auto key = pki::NodeKey::generate();
    auto joined =
        nodeconn::join({"127.0.0.1", port_->port()}, manager_->trust().token(pki::Role::manager),
                       key.csr_pem, {}, "would-be-manager");
    ASSERT_TRUE(joined) << joined.error().message;
    auto n = manager_->nodes().get(joined->node_id);
    ASSERT_TRUE(n);
    EXPECT_EQ(n->spec.role, model::NodeRole::manager);

    std::atomic<int> sessions{0}, joins{0};
    nodeconn::ServerOptions so;
    so.cluster_id = manager_->trust().cluster_id();
    so.limits.handshake_timeout = 5s;
    nodeconn::ServerHandlers h;
    h.authorize = [](const pki::NodeIdentity&) { return Result<void>{}; };
    h.on_join = [&](nodeconn::JoinRequest) -> Result<nodeconn::JoinResponse> {
        ++joins;
        return make_error(Errc::unavailable, "an impostor");
    };
    h.session.on_open = [&](const std::shared_ptr<nodeconn::Session>&) { ++sessions; };
    auto impostor = nodeconn::NodeServer::start(
        std::move(so), {joined->certificate_pem, key.key_pem.clone(), joined->ca_bundle_pem},
        std::move(h));
    ASSERT_TRUE(impostor) << impostor.error().message;

    auto fooled = FakeNode::connect((*impostor)->port(), credentials_);
    EXPECT_FALSE(fooled) << "a node's certificate was taken for the manager's";
    auto other = pki::NodeKey::generate();
    auto leaked = nodeconn::join({"127.0.0.1", (*impostor)->port()},
                                 manager_->trust().token(pki::Role::worker), other.csr_pem);
    EXPECT_FALSE(leaked);
    EXPECT_EQ(joins.load(), 0) << "a joining node sent its token to a node";
    EXPECT_EQ(sessions.load(), 0);

    auto real = FakeNode::connect(port_->port(), credentials_);
    ASSERT_TRUE(real) << real.error().message;
    EXPECT_TRUE((*real)->wait_for("assignments"));
}

// A node's hostname is a placement key (node.hostname==X): a second node may not join under the
// name of an active one. Once that node is removed, the name is free again.
TEST_F(NodePortSession, AJoinUnderTheHostnameOfAnActiveNodeIsRefused) {
    auto join_as = [&](const std::string& host) {
        auto key = pki::NodeKey::generate();
        return nodeconn::join({"127.0.0.1", port_->port()},
                              manager_->trust().token(pki::Role::worker), key.csr_pem, {}, host);
    };
    auto first = join_as("node-a");
    ASSERT_TRUE(first) << first.error().message;
    auto count = [&] { return manager_->nodes().list().size(); };
    auto before = count();

    for (const char* name : {"node-a", "NODE-A"}) {
        auto second = join_as(name);
        ASSERT_FALSE(second) << name;
        EXPECT_EQ(second.error().code, Errc::already_exists) << second.error().message;
        EXPECT_NE(second.error().message.find("hostname " + std::string(name)), std::string::npos)
            << second.error().message;
        EXPECT_NE(second.error().message.find(first->node_id), std::string::npos)
            << second.error().message;
        EXPECT_EQ(count(), before) << "nothing is registered for a refused join";
    }
    // Its address stands for a node that names itself not; the same rule holds.
    auto nameless = [&] {
        auto key = pki::NodeKey::generate();
        return nodeconn::join({"127.0.0.1", port_->port()},
                              manager_->trust().token(pki::Role::worker), key.csr_pem);
    };
    auto by_address = nameless();
    EXPECT_FALSE(by_address) << "the fixture's node already joined as 127.0.0.1";
    EXPECT_TRUE(join_as("node-b"));

    ASSERT_TRUE(manager_->nodes().remove(first->node_id, true));
    manager_->events().node_removed(first->node_id);
    auto reuse = join_as("node-a");
    ASSERT_TRUE(reuse) << reuse.error().message;
    EXPECT_NE(reuse->node_id, first->node_id);
    auto n = manager_->nodes().get(reuse->node_id);
    ASSERT_TRUE(n);
    EXPECT_EQ(n->description.hostname, "node-a");
}

// A node whose join answer was lost asks again with the same key: it is the node it already is,
// with a new certificate, and no second node is registered. Another key is another node.
TEST_F(NodePortSession, AJoinAskedAgainWithTheSameKeyIsTheSameNode) {
    auto key = pki::NodeKey::generate();
    auto join = [&](pki::Role role, const std::string& host) {
        return nodeconn::join({"127.0.0.1", port_->port()}, manager_->trust().token(role),
                              key.csr_pem, {}, host);
    };
    auto count = [&] { return manager_->nodes().list().size(); };
    auto first = join(pki::Role::worker, "node-k");
    ASSERT_TRUE(first) << first.error().message;
    auto before = count();

    auto again = join(pki::Role::worker, "node-k");
    ASSERT_TRUE(again) << again.error().message;
    EXPECT_EQ(again->node_id, first->node_id);
    EXPECT_EQ(count(), before) << "no second node for the same key";
    // Both certificates name the node; the new one serves a session.
    nodeconn::Credentials c{again->certificate_pem, crypto::SecureBuffer::copy_of(str(key.key_pem)),
                            again->ca_bundle_pem};
    auto node = FakeNode::connect(port_->port(), c);
    ASSERT_TRUE(node) << node.error().message;
    ASSERT_TRUE(node.value()->wait_for("assignments"));
    EXPECT_EQ(node.value()->manager().cluster_id, manager_->cluster_id());
    auto n = manager_->nodes().get(first->node_id);
    ASSERT_TRUE(n);
    EXPECT_EQ(n->description.hostname, "node-k");

    // The same key under another name, or with another role's token, is refused and changes
    // nothing.
    for (auto [role, host] :
         {std::pair{pki::Role::worker, "node-other"}, std::pair{pki::Role::manager, "node-k"}}) {
        auto refused = join(role, host);
        ASSERT_FALSE(refused) << host;
        // 409 on the wire, read back as already_exists.
        EXPECT_EQ(refused.error().code, Errc::already_exists) << refused.error().message;
        EXPECT_NE(refused.error().message.find(first->node_id), std::string::npos)
            << refused.error().message;
        EXPECT_EQ(count(), before);
    }

    auto other = pki::NodeKey::generate();
    auto second =
        nodeconn::join({"127.0.0.1", port_->port()}, manager_->trust().token(pki::Role::worker),
                       other.csr_pem, {}, "node-l");
    ASSERT_TRUE(second) << second.error().message;
    EXPECT_NE(second->node_id, first->node_id);
    EXPECT_EQ(count(), before + 1);
}

// The node port's own certificate is replaced when it is due (here: the first at once, the next
// not for a day), so a long-running manager never serves an expired one.
TEST_F(NodePortSession, TheNodePortReplacesItsOwnCertificateWhenDue) {
    manager_->stop_node_port();
    std::mutex m;
    std::vector<pki::CertificateInfo> issued;
    manager::NodePortOptions o;
    o.address = "127.0.0.1";
    o.port = 0;
    o.server_renewal_time = [&](const pki::CertificateInfo& c) {
        std::lock_guard l(m);
        issued.push_back(c);
        return issued.size() == 1 ? pki::Clock::now() : pki::Clock::now() + 24h;
    };
    auto started = manager_->start_node_port(std::move(o));
    ASSERT_TRUE(started) << started.error().message;
    port_ = manager_->node_port();
    auto count = [&] {
        std::lock_guard l(m);
        return issued.size();
    };
    ASSERT_TRUE(test::wait_until([&] { return count() == 2; }));
    std::string first, second;
    {
        std::lock_guard l(m);
        first = issued[0].common_name;
        second = issued[1].common_name;
        EXPECT_EQ(issued[1].organizational_unit, pki::manager_server_unit);
        EXPECT_NE(issued[0].public_key, issued[1].public_key) << "a fresh key as well";
    }
    EXPECT_NE(first, second);
    std::string served;
    EXPECT_TRUE(test::wait_until([&] {
        auto node = FakeNode::connect(port_->port(), credentials_);
        if (!node) return false;
        served = (*node)->manager().node_id;
        return served == second;
    })) << "still served by "
        << served;
    EXPECT_EQ(count(), 2u) << "replaced once, then not again before it is due";
}

}  // namespace
