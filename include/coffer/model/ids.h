// The ids coffer's objects carry, one rule per kind. Every place that accepts an id from outside
// (the API, a node's message, the manager's message on a node) checks it with the rule for its
// kind, here and nowhere else.
#pragma once

#include <string_view>

namespace coffer::model {

// What crypto::random_id() makes: 25 lower-case base-36 characters. Node, service, secret, task
// and cluster ids the manager creates all have this form.
bool valid_generated_id(std::string_view id) noexcept;

// A node id: the generated form (the manager names every node at join).
bool valid_node_id(std::string_view id) noexcept;
// A service id: the generated form.
bool valid_service_id(std::string_view id) noexcept;
// A task id: [a-z0-9][a-z0-9_.-]{0,63}. It names directories and cgroups on the node, so nothing
// that could leave them; the manager's ids are of this form, and a task run by hand on a node
// (`coffer-agent run`) may be given any such name.
bool valid_task_id(std::string_view id) noexcept;
// A secret id as a node accepts it: [A-Za-z0-9_.-]{1,128} (never a path or a control character).
bool valid_secret_id(std::string_view id) noexcept;

}  // namespace coffer::model
