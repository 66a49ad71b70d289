// What a node reported, read from the messages a test's manager end received (the status
// messages of the session protocol, docs/design.md). Shared by the executor's unit and
// integration tests.
#pragma once

#include <boost/json.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace coffer::test {

// The received messages of one "type", in order.
inline std::vector<boost::json::object> of_type(const std::vector<boost::json::value>& received,
                                                std::string_view type) {
    std::vector<boost::json::object> out;
    for (const auto& v : received)
        if (v.as_object().at("type").as_string() == type) out.push_back(v.as_object());
    return out;
}

// Every status reported for a task, in order, whole.
inline std::vector<boost::json::object> statuses(const std::vector<boost::json::value>& received,
                                                 std::string_view task) {
    std::vector<boost::json::object> out;
    for (const auto& m : of_type(received, "status"))
        for (const auto& s : m.at("statuses").as_array())
            if (s.at("task_id").as_string() == task) out.push_back(s.as_object());
    return out;
}

// Every state reported for a task, in order.
inline std::vector<std::string> states(const std::vector<boost::json::value>& received,
                                       std::string_view task) {
    std::vector<std::string> out;
    for (const auto& s : statuses(received, task)) out.emplace_back(s.at("state").as_string());
    return out;
}

}  // namespace coffer::test
