// coffer node ls|inspect|update|rm.
#include <algorithm>

#include "client.h"
#include "coffer/net/http.h"
#include "common.h"
#include "format.h"
#include "output.h"

namespace coffer::cli {

namespace json = boost::json;

namespace {

std::string title(std::string s) {
    if (!s.empty()) s[0] = static_cast<char>(std::toupper(s[0]));
    return s;
}

// The docker CLI's node fields, and two of coffer's by name only: .Role and .CertExpiry (the day
// the node's certificate expires; it renews well before).
const ListFormat node_list{
    "node ls",
    {{"ID", "ID"},
     {"Self", ""},
     {"Hostname", "HOSTNAME"},
     {"Status", "STATUS"},
     {"Availability", "AVAILABILITY"},
     {"ManagerStatus", "MANAGER STATUS"},
     {"TLSStatus", "TLS STATUS"},
     {"EngineVersion", "ENGINE VERSION"},
     {"Role", "ROLE", false},
     {"CertExpiry", "CERT EXPIRY", false},
     {"SelfMark", "", false}},
    // Docker's default marks the node it asks (the manager's own entry, cofferd) with "*" after
    // the ID.
    "{{.ID}} {{.SelfMark}}"
    "\t{{.Hostname}}\t{{.Status}}\t{{.Availability}}\t{{.ManagerStatus}}\t{{.EngineVersion}}",
};

json::object node_row(const json::value& n, const std::string& self_id) {
    bool self = !self_id.empty() && field(n, {"ID"}) == self_id;
    std::string manager;
    if (auto* leader = at(n, {"ManagerStatus", "Leader"});
        leader && leader->is_bool() && leader->as_bool())
        manager = "Leader";
    else
        manager = title(field(n, {"ManagerStatus", "Reachability"}));
    return {{"ID", field(n, {"ID"})},
            {"Self", self},
            {"Hostname", field(n, {"Description", "Hostname"})},
            {"Status", title(field(n, {"Status", "State"}))},
            {"Availability", title(field(n, {"Spec", "Availability"}))},
            {"ManagerStatus", manager},
            // Docker's word when it cannot compare the node's trust root with the cluster's.
            {"TLSStatus", "Unknown"},
            {"EngineVersion", field(n, {"Description", "Engine", "EngineVersion"})},
            {"Role", field(n, {"Spec", "Role"})},
            {"CertExpiry", field(n, {"CertificateExpiry"}).substr(0, 10)},
            {"SelfMark", self ? "*" : " "}};
}

}  // namespace

void add_node_commands(CLI::App& app, Globals& g) {
    auto* node = app.add_subcommand("node", "Manage nodes");
    node->require_subcommand(1);
    {
        auto* cmd = node->add_subcommand("ls", "List nodes");
        cmd->alias("list");
        auto flags = std::make_shared<ListFlags>();
        flags->add(cmd);
        cmd->callback([&g, flags] {
            ApiClient api(g.host);
            // As the docker CLI does: the node answering (cofferd's entry) is Self.
            auto info = must(api.call("GET", "/info"));
            auto self_id = field(info, {"Swarm", "NodeID"});
            auto items = must(api.call("GET", "/nodes" + filters_query(flags->filters))).as_array();
            std::sort(items.begin(), items.end(), [](const auto& a, const auto& b) {
                return field(a, {"Description", "Hostname"}) <
                       field(b, {"Description", "Hostname"});
            });
            std::vector<json::object> rows;
            for (const auto& n : items) rows.push_back(node_row(n, self_id));
            flags->print(node_list, rows);
        });
    }
    {
        auto* cmd =
            node->add_subcommand("inspect", "Display detailed information on one or more nodes");
        auto names = std::make_shared<std::vector<std::string>>();
        auto format = std::make_shared<std::string>();
        add_inspect_format(cmd, *format);
        cmd->add_option("node", *names, "NODE")->required();
        cmd->callback([&g, names, format] {
            ApiClient api(g.host);
            inspect_all(api, "/nodes/", *names, "", *format, "node inspect");
        });
    }
    {
        auto* cmd = node->add_subcommand("update", "Update a node");
        struct Opts {
            std::string target, availability, role;
            std::vector<std::string> label_add, label_rm;
        };
        auto o = std::make_shared<Opts>();
        cmd->add_option("--availability", o->availability,
                        "Availability of the node (active, pause, drain)")
            ->check(CLI::IsMember({"active", "pause", "drain"}));
        cmd->add_option("--role", o->role, "Role of the node (worker, manager)")
            ->check(CLI::IsMember({"worker", "manager"}));
        one_value_per_flag(
            cmd->add_option("--label-add", o->label_add, "Add or update a node label (key=value)"));
        one_value_per_flag(
            cmd->add_option("--label-rm", o->label_rm, "Remove a node label if exists"));
        cmd->add_option("node", o->target, "NODE")->required();
        cmd->callback([&g, o] {
            ApiClient api(g.host);
            auto n = must(api.call("GET", "/nodes/" + net::percent_encode(o->target)));
            auto spec = at(n, {"Spec"}) && at(n, {"Spec"})->is_object()
                            ? at(n, {"Spec"})->as_object()
                            : json::object{};
            if (!o->availability.empty()) spec["Availability"] = o->availability;
            if (!o->role.empty()) spec["Role"] = o->role;
            auto& labels = spec["Labels"];
            if (!labels.is_object()) labels = json::object{};
            for (const auto& k : o->label_rm) labels.as_object().erase(k);
            for (const auto& l : o->label_add) {
                auto [k, v] = split_kv(l);
                labels.as_object()[k] = v;
            }
            must(api.call("POST",
                          fmt::format("/nodes/{}/update?version={}", field(n, {"ID"}),
                                      number(n, {"Version", "Index"})),
                          json::value(std::move(spec))));
            std::printf("%s\n", o->target.c_str());
        });
    }
    {
        auto* cmd = node->add_subcommand("rm", "Remove one or more nodes from the cluster");
        cmd->alias("remove");
        auto names = std::make_shared<std::vector<std::string>>();
        auto force = std::make_shared<bool>(false);
        cmd->add_flag("-f,--force", *force, "Force remove a node from the cluster");
        cmd->add_option("node", *names, "NODE")->required();
        cmd->callback([&g, names, force] {
            ApiClient api(g.host);
            remove_all(api, "/nodes/", *names, *force ? "?force=true" : "");
        });
    }
}

}  // namespace coffer::cli
