// The messages a test's manager end received from a node, and what their status messages say of
// each task, as the manager's own decoder (nodeproto::decode_status) reads them. Shared by the
// executor's unit and integration tests; safe from any thread. received() and of_type() keep the
// raw JSON for the tests that check the wire form itself.
#pragma once

#include <gtest/gtest.h>
#include <boost/json.hpp>

#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "coffer/crypto/secure_buffer.h"
#include "coffer/model/service.h"
#include "coffer/nodeproto/status.h"

namespace coffer::test {

class NodeReports {
  public:
    // One message as the node sent it. A status message the manager's decoder refuses fails the
    // test.
    void add(const crypto::SecureBuffer& text) {
        boost::system::error_code ec;
        auto v = boost::json::parse(
            std::string_view(reinterpret_cast<const char*>(text.data()), text.size()), ec);
        EXPECT_FALSE(ec) << ec.message();
        if (ec) return;
        std::optional<nodeproto::StatusMessage> status;
        if (v.is_object() && v.as_object().contains("type") &&
            v.as_object().at("type") == "status") {
            auto decoded = nodeproto::decode_status(text);
            EXPECT_TRUE(decoded) << (decoded ? "" : decoded.error().message);
            if (decoded) status = std::move(*decoded);
        }
        std::lock_guard l(mu_);
        received_.push_back(std::move(v));
        if (status) status_messages_.push_back(std::move(*status));
    }
    std::vector<boost::json::value> received() const {
        std::lock_guard l(mu_);
        return received_;
    }
    // The received messages of one "type", in order.
    std::vector<boost::json::object> of_type(std::string_view type) const {
        std::vector<boost::json::object> out;
        for (const auto& v : received())
            if (v.as_object().at("type").as_string() == type) out.push_back(v.as_object());
        return out;
    }
    // The status messages, decoded, in order.
    std::vector<nodeproto::StatusMessage> status_messages() const {
        std::lock_guard l(mu_);
        return status_messages_;
    }
    // Every status reported for a task, in order, whole.
    std::vector<nodeproto::TaskReport> statuses(std::string_view task) const {
        std::vector<nodeproto::TaskReport> out;
        for (const auto& m : status_messages())
            for (const auto& s : m.statuses)
                if (s.task_id == task) out.push_back(s);
        return out;
    }
    // Every state reported for a task, in order, as the wire names it.
    std::vector<std::string> states(std::string_view task) const {
        std::vector<std::string> out;
        for (const auto& s : statuses(task)) out.emplace_back(model::to_string(s.state));
        return out;
    }
    std::string last_state(std::string_view task) const {
        auto s = states(task);
        return s.empty() ? "" : s.back();
    }
    nodeproto::TaskReport last_status(std::string_view task) const {
        auto s = statuses(task);
        return s.empty() ? nodeproto::TaskReport{} : s.back();
    }

  private:
    mutable std::mutex mu_;
    std::vector<boost::json::value> received_;
    std::vector<nodeproto::StatusMessage> status_messages_;
};

}  // namespace coffer::test
