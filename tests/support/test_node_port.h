// An in-process node port for tests that run the real coffer-agent against it: lets workers join
// with its token, admits every session, and records what nodes send (NodeReports). Safe from any
// thread.
#pragma once

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <boost/json.hpp>

#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>

#include "coffer/crypto/random.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/nodeconn/server.h"
#include "coffer/pki/ca.h"
#include "coffer/pki/node_key.h"
#include "coffer/pki/token.h"
#include "node_reports.h"

namespace coffer::test {

class TestNodePort : public NodeReports {
  public:
    explicit TestNodePort(nodeconn::ServerOptions options = {})
        : ca_(pki::CertificateAuthority::create_root()),
          token_(pki::JoinToken::generate(ca_.certificate_pem())) {
        options.cluster_id = "cluster1";
        nodeconn::ServerHandlers h;
        h.on_join = [this](nodeconn::JoinRequest req) -> Result<nodeconn::JoinResponse> {
            if (!req.token.matches(token_)) return make_error(Errc::unauthenticated, "bad token");
            auto id = crypto::random_id();
            auto cert = ca_.issue(req.csr_pem, {id, pki::Role::worker, "cluster1"});
            if (!cert) return std::move(cert).error();
            return nodeconn::JoinResponse{id, *cert, ca_.certificate_pem()};
        };
        h.authorize = [](const pki::NodeIdentity&) -> Result<void> { return {}; };
        h.session.on_open = [this](const std::shared_ptr<nodeconn::Session>& s) {
            std::lock_guard l(mu_);
            session_ = s;
            ++sessions_;
        };
        h.session.on_close = [this](const std::shared_ptr<nodeconn::Session>& s, const Error&) {
            std::lock_guard l(mu_);
            if (session_ == s) session_.reset();
        };
        h.session.on_message = [this](const std::shared_ptr<nodeconn::Session>&,
                                      nodeconn::Message m) { add(m.json); };
        auto key = pki::NodeKey::generate();
        auto cert = ca_.issue_manager_server(key.csr_pem, "manager1", "cluster1");
        auto server = nodeconn::NodeServer::start(
            options, {cert.value(), std::move(key.key_pem), ca_.certificate_pem()}, h);
        if (!server) throw std::runtime_error(server.error().message);
        server_ = std::move(*server);
    }

    std::uint16_t port() const { return server_->port(); }
    std::string address() const { return fmt::format("127.0.0.1:{}", server_->port()); }
    std::string token() const {
        const auto& t = token_.text();
        return std::string(t.data(), t.data() + t.size());
    }
    int sessions() {
        std::lock_guard l(mu_);
        return sessions_;
    }
    bool connected() {
        std::lock_guard l(mu_);
        return session_ && !session_->closed();
    }
    bool send(crypto::SecureBuffer json) {
        std::shared_ptr<nodeconn::Session> s;
        {
            std::lock_guard l(mu_);
            s = session_;
        }
        return s && s->send(std::move(json));
    }
    bool send_text(std::string_view text) { return send(crypto::SecureBuffer::copy_of(text)); }

  private:
    pki::CertificateAuthority ca_;
    pki::JoinToken token_;
    std::mutex mu_;
    std::shared_ptr<nodeconn::Session> session_;
    int sessions_ = 0;
    std::unique_ptr<nodeconn::NodeServer> server_;
};

}  // namespace coffer::test
