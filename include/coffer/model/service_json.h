// JSON codecs of services, tasks and nodes in the Docker Engine API's shapes. Includes
// Boost.JSON: include it only where JSON is produced or consumed.
#pragma once

#include <boost/json.hpp>

#include "coffer/base/error.h"
#include "coffer/model/service.h"

namespace coffer::model {

// A ServiceSpec from a request body or a stored record. Fields coffer interprets are type-checked
// (semantic checks: validate_service_spec); every other field is kept as given in spec.json.
Result<ServiceSpec> service_spec_from_json(const boost::json::value& v);
Result<TaskTemplate> task_template_from_json(const boost::json::value& v);
// The spec as given, with Docker's defaults filled in when insert_defaults (as
// GET /services/{id}?insertDefaults=true does).
boost::json::object spec_json(const ServiceSpec& spec, bool insert_defaults);

boost::json::object to_json(const Service& s, bool insert_defaults = false);
Result<Service> service_from_json(const boost::json::value& v);

// internal: also the fields only the manager keeps (restart delay, service name).
boost::json::object to_json(const Task& t, bool internal = false);
Result<Task> task_from_json(const boost::json::value& v);

boost::json::object to_json(const Node& n);
Result<Node> node_from_json(const boost::json::value& v);
// Spec{Labels, Role, Availability} of POST /nodes/{id}/update.
Result<NodeSpec> node_spec_from_json(const boost::json::value& v);

}  // namespace coffer::model
