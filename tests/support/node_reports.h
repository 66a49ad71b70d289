// The messages a test's manager end received from a node, and what their status messages (the
// session protocol, docs/design.md) say of each task. Shared by the executor's unit and
// integration tests; safe from any thread.
#pragma once

#include <boost/json.hpp>

#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace coffer::test {

class NodeReports {
  public:
    void add(boost::json::value message) {
        std::lock_guard l(mu_);
        received_.push_back(std::move(message));
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
    // Every status reported for a task, in order, whole.
    std::vector<boost::json::object> statuses(std::string_view task) const {
        std::vector<boost::json::object> out;
        for (const auto& m : of_type("status"))
            for (const auto& s : m.at("statuses").as_array())
                if (s.at("task_id").as_string() == task) out.push_back(s.as_object());
        return out;
    }
    // Every state reported for a task, in order.
    std::vector<std::string> states(std::string_view task) const {
        std::vector<std::string> out;
        for (const auto& s : statuses(task)) out.emplace_back(s.at("state").as_string());
        return out;
    }
    std::string last_state(std::string_view task) const {
        auto s = states(task);
        return s.empty() ? "" : s.back();
    }
    boost::json::object last_status(std::string_view task) const {
        auto s = statuses(task);
        return s.empty() ? boost::json::object() : s.back();
    }

  private:
    mutable std::mutex mu_;
    std::vector<boost::json::value> received_;
};

}  // namespace coffer::test
