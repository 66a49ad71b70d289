// coffer network create|ls|inspect|rm: the cluster's networks, as the docker CLI's network
// commands show them.
#include <algorithm>
#include <cstdio>

#include "client.h"
#include "common.h"
#include "format.h"
#include "output.h"

namespace coffer::cli {

namespace json = boost::json;

namespace {

struct CreateFlags {
    std::string name;
    std::string driver;
    std::string subnet;
    std::string gateway;
    std::string ip_range;
    bool attachable = false;
    bool internal = false;
    std::vector<std::string> labels;
};

// network create [-d DRIVER] [--subnet CIDR] [--gateway IP] [--ip-range CIDR] [--attachable]
// [--internal] [-l k=v]... NAME
void add_create(CLI::App& group, Globals& g) {
    auto* cmd = group.add_subcommand("create", "Create a network");
    auto f = std::make_shared<CreateFlags>();
    // The choices shown (and completed); the manager refuses any other driver by name.
    cmd->add_option("-d,--driver", f->driver, "Driver: overlay (the default) or bridge")
        ->type_name("TEXT:{overlay,bridge}");
    cmd->add_option("--subnet", f->subnet, "Subnet in CIDR format (default: a free /24)");
    cmd->add_option("--gateway", f->gateway, "Gateway of the subnet");
    cmd->add_option("--ip-range", f->ip_range, "Allocate task addresses from this range");
    cmd->add_flag("--attachable", f->attachable, "Enable manual container attachment");
    cmd->add_flag("--internal", f->internal, "Restrict external access to the network");
    one_value_per_flag(cmd->add_option("-l,--label", f->labels, "Network labels (key=value)"));
    cmd->add_option("name", f->name, "Network name")->required();
    cmd->callback([&g, f] {
        if (f->subnet.empty() && (!f->gateway.empty() || !f->ip_range.empty()))
            fail(usage("--gateway and --ip-range need --subnet"));
        json::object labels;
        for (const auto& l : f->labels) {
            auto [k, v] = split_kv(l);
            labels[k] = v;
        }
        json::array config;
        if (!f->subnet.empty()) {
            json::object c{{"Subnet", f->subnet}};
            if (!f->gateway.empty()) c["Gateway"] = f->gateway;
            if (!f->ip_range.empty()) c["IPRange"] = f->ip_range;
            config.push_back(std::move(c));
        }
        json::object body{{"Name", f->name},
                          {"Driver", f->driver},
                          {"Internal", f->internal},
                          {"Attachable", f->attachable},
                          {"Labels", std::move(labels)},
                          {"IPAM", json::object{{"Driver", "default"}, {"Config", config}}}};
        ApiClient api(g.host);
        auto r = api.call("POST", "/networks/create", json::value(std::move(body)));
        if (!r) fail(r.error());
        if (auto w = field(*r, {"Warning"}); !w.empty())
            std::fprintf(stderr, "WARNING: %s\n", w.c_str());
        std::printf("%s\n", field(*r, {"Id"}).c_str());
    });
}

const ListFormat network_list{
    "network ls",
    {{"ID", "NETWORK ID"},
     {"Name", "NAME"},
     {"Driver", "DRIVER"},
     {"Scope", "SCOPE"},
     {"Subnet", "SUBNET"},
     {"Internal", "INTERNAL"},
     {"CreatedAt", "CREATED"},
     {"Labels", "LABELS"}},
    "{{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}\t{{.Subnet}}",
};

json::object row_of(const json::value& n) {
    std::vector<std::string> labels;
    if (auto* l = at(n, {"Labels"}); l && l->is_object())
        for (const auto& [k, v] : l->as_object()) labels.push_back(std::string(k) + "=" + str(v));
    std::sort(labels.begin(), labels.end());
    std::string joined;
    for (const auto& l : labels) joined += (joined.empty() ? "" : ",") + l;
    std::string subnet;
    if (auto* c = at(n, {"IPAM", "Config"}); c && c->is_array() && !c->as_array().empty())
        subnet = field(c->as_array().front(), {"Subnet"});
    const auto* internal = at(n, {"Internal"});
    return {
        {"ID", truncate_id(field(n, {"Id"}))},
        {"Name", field(n, {"Name"})},
        {"Driver", field(n, {"Driver"})},
        {"Scope", field(n, {"Scope"})},
        {"Subnet", subnet},
        {"Internal", internal && internal->is_bool() && internal->get_bool() ? "true" : "false"},
        {"CreatedAt", time_ago(field(n, {"Created"}))},
        {"Labels", joined}};
}

// network ls [-q] [-f k=v]... [--format FORMAT]
void add_ls(CLI::App& group, Globals& g) {
    auto* cmd = group.add_subcommand("ls", "List networks");
    cmd->alias("list");
    auto flags = std::make_shared<ListFlags>();
    flags->add(cmd);
    cmd->callback([&g, flags] {
        ApiClient api(g.host);
        auto r = api.call("GET", "/networks" + filters_query(flags->filters));
        if (!r) fail(r.error());
        if (!r->is_array()) fail({Errc::internal, "malformed answer"});
        auto items = r->as_array();
        std::sort(items.begin(), items.end(), [](const auto& a, const auto& b) {
            return field(a, {"Name"}) < field(b, {"Name"});
        });
        std::vector<json::object> rows;
        for (const auto& n : items) rows.push_back(row_of(n));
        flags->print(network_list, rows);
    });
}

void add_inspect(CLI::App& group, Globals& g) {
    auto* cmd =
        group.add_subcommand("inspect", "Display detailed information on one or more networks");
    auto names = std::make_shared<std::vector<std::string>>();
    auto format = std::make_shared<std::string>();
    add_inspect_format(cmd, *format);
    cmd->add_option("network", *names, "Network name or ID")->required();
    cmd->callback([&g, names, format] {
        ApiClient api(g.host);
        inspect_all(api, "/networks/", *names, "", *format, "network inspect");
    });
}

void add_rm(CLI::App& group, Globals& g) {
    auto* cmd = group.add_subcommand("rm", "Remove one or more networks");
    cmd->alias("remove");
    auto names = std::make_shared<std::vector<std::string>>();
    cmd->add_option("network", *names, "Network name or ID")->required();
    cmd->callback([&g, names] {
        ApiClient api(g.host);
        remove_all(api, "/networks/", *names);
    });
}

}  // namespace

void add_network_commands(CLI::App& app, Globals& g) {
    auto* group = app.add_subcommand("network", "Manage networks");
    group->require_subcommand(1);
    add_create(*group, g);
    add_ls(*group, g);
    add_inspect(*group, g);
    add_rm(*group, g);
}

}  // namespace coffer::cli
