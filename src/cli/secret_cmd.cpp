// coffer secret create|ls|inspect|rm and coffer config create|ls|inspect|rm: the same commands
// for the two kinds of named objects with data.
#include <algorithm>
#include <cstdio>

#include "client.h"
#include "coffer/crypto/encoding.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/model/secret.h"
#include "coffer/net/http.h"
#include "common.h"
#include "format.h"
#include "output.h"
#include "secret_input.h"

namespace coffer::cli {

namespace json = boost::json;

namespace {

// What differs between `coffer secret` and `coffer config`.
struct Kind {
    std::string_view word;        // "secret"
    std::string_view collection;  // "secrets": the API's path
    std::string_view title;       // "Secret", for help texts
    // The most a client sends: twice Docker's size limit, so the server's own check answers.
    std::size_t read_limit;
    const ListFormat* list;
};

// kind create [--label k=v]... NAME FILE|-
void add_create(CLI::App& group, Globals& g, const Kind& k) {
    auto* cmd = group.add_subcommand(
        "create", fmt::format("Create a {} from a file or STDIN as content", k.word));
    auto name = std::make_shared<std::string>();
    auto source = std::make_shared<std::string>();
    auto labels = std::make_shared<std::vector<std::string>>();
    one_value_per_flag(
        cmd->add_option("-l,--label", *labels, fmt::format("{} labels (key=value)", k.title)));
    cmd->add_option("name", *name, fmt::format("{} name", k.title))->required();
    cmd->add_option("file", *source,
                    fmt::format("File to read the {} from, or - for STDIN", k.word))
        ->required();
    cmd->callback([&g, &k, name, source, labels] {
        auto data = read_secret_source(*source, k.read_limit);
        if (!data) throw CLI::RuntimeError(report(data.error()));
        json::object lab;
        for (const auto& l : *labels) {
            auto [key, v] = split_kv(l);
            lab[key] = v;
        }
        auto body = data_body(*name, lab, *data);
        ApiClient api(g.host);
        auto r = api.call("POST", fmt::format("/{}/create", k.collection), body.span());
        if (!r) throw CLI::RuntimeError(report(r.error()));
        std::printf("%s\n", field(*r, {"ID"}).c_str());
    });
}

const ListFormat secret_list{
    "secret ls",
    {{"ID", "ID"},
     {"Name", "NAME"},
     {"Driver", "DRIVER"},
     {"CreatedAt", "CREATED"},
     {"UpdatedAt", "UPDATED"},
     {"Labels", "LABELS"}},
    "{{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.CreatedAt}}\t{{.UpdatedAt}}",
};

// docker config ls has no DRIVER column.
const ListFormat config_list{
    "config ls",
    {{"ID", "ID"},
     {"Name", "NAME"},
     {"CreatedAt", "CREATED"},
     {"UpdatedAt", "UPDATED"},
     {"Labels", "LABELS"}},
    "{{.ID}}\t{{.Name}}\t{{.CreatedAt}}\t{{.UpdatedAt}}",
};

const Kind secret_kind{"secret", "secrets", "Secret", 2 * (model::max_secret_size + 1),
                       &secret_list};
const Kind config_kind{"config", "configs", "Config", 2 * (model::max_config_size + 1),
                       &config_list};

json::object row_of(const json::value& s) {
    std::vector<std::string> labels;
    if (auto* l = at(s, {"Spec", "Labels"}); l && l->is_object())
        for (const auto& [k, v] : l->as_object()) labels.push_back(std::string(k) + "=" + str(v));
    std::sort(labels.begin(), labels.end());
    std::string joined;
    for (const auto& l : labels) joined += (joined.empty() ? "" : ",") + l;
    return {{"ID", field(s, {"ID"})},
            {"Name", field(s, {"Spec", "Name"})},
            {"Driver", field(s, {"Spec", "Driver", "Name"})},
            {"CreatedAt", time_ago(field(s, {"CreatedAt"}))},
            {"UpdatedAt", time_ago(field(s, {"UpdatedAt"}))},
            {"Labels", joined}};
}

// kind ls [-q] [-f k=v]... [--format FORMAT]
void add_ls(CLI::App& group, Globals& g, const Kind& k) {
    auto* cmd = group.add_subcommand("ls", fmt::format("List {}", k.collection));
    cmd->alias("list");
    auto flags = std::make_shared<ListFlags>();
    flags->add(cmd);
    cmd->callback([&g, &k, flags] {
        ApiClient api(g.host);
        auto r = api.call("GET", fmt::format("/{}", k.collection) + filters_query(flags->filters));
        if (!r) throw CLI::RuntimeError(report(r.error()));
        if (!r->is_array()) throw CLI::RuntimeError(report({Errc::internal, "malformed answer"}));
        auto items = r->as_array();
        std::sort(items.begin(), items.end(), [](const auto& a, const auto& b) {
            return field(a, {"Spec", "Name"}) < field(b, {"Spec", "Name"});
        });
        std::vector<json::object> rows;
        for (const auto& s : items) rows.push_back(row_of(s));
        flags->print(*k.list, rows);
    });
}

// kind inspect NAME|ID...
void add_inspect(CLI::App& group, Globals& g, const Kind& k) {
    auto* cmd = group.add_subcommand(
        "inspect", fmt::format("Display detailed information on one or more {}", k.collection));
    auto names = std::make_shared<std::vector<std::string>>();
    auto format = std::make_shared<std::string>();
    add_inspect_format(cmd, *format);
    cmd->add_option(std::string(k.word), *names, fmt::format("{} name or ID", k.title))->required();
    cmd->callback([&g, &k, names, format] {
        ApiClient api(g.host);
        inspect_all(api, fmt::format("/{}/", k.collection), *names, "", *format,
                    fmt::format("{} inspect", k.word));
    });
}

// kind rm NAME|ID...
void add_rm(CLI::App& group, Globals& g, const Kind& k) {
    auto* cmd = group.add_subcommand("rm", fmt::format("Remove one or more {}", k.collection));
    cmd->alias("remove");
    auto names = std::make_shared<std::vector<std::string>>();
    cmd->add_option(std::string(k.word), *names, fmt::format("{} name or ID", k.title))->required();
    cmd->callback([&g, &k, names] {
        ApiClient api(g.host);
        remove_all(api, fmt::format("/{}/", k.collection), *names);
    });
}

// secret rotate [--only-if-different] NAME FILE|-: a new version, made current.
void add_rotate(CLI::App& group, Globals& g, const Kind& k) {
    auto* cmd = group.add_subcommand(
        "rotate", "Add a version of a secret from a file or STDIN and make it current");
    auto name = std::make_shared<std::string>();
    auto source = std::make_shared<std::string>();
    auto only_if_different = std::make_shared<bool>(false);
    cmd->add_flag("--only-if-different", *only_if_different,
                  "Add no version when the bytes equal the current version's");
    cmd->add_option("secret", *name, "Secret name or ID")->required();
    cmd->add_option("file", *source, "File to read the new version from, or - for STDIN")
        ->required();
    cmd->callback([&g, &k, name, source, only_if_different] {
        auto data = read_secret_source(*source, k.read_limit);
        if (!data) throw CLI::RuntimeError(report(data.error()));
        auto body = body_with_data("", *data);
        ApiClient api(g.host);
        auto r = api.call("POST",
                          fmt::format("/secrets/{}/rotate{}", net::percent_encode(*name),
                                      *only_if_different ? "?onlyIfDifferent=true" : ""),
                          body.span());
        if (!r) throw CLI::RuntimeError(report(r.error()));
        if (at(*r, {"Changed"}) && at(*r, {"Changed"})->is_bool() &&
            !at(*r, {"Changed"})->as_bool())
            std::printf("%s unchanged: version %lld is current\n", name->c_str(),
                        static_cast<long long>(number(*r, {"Version"})));
        else
            std::printf("%s version %lld\n", name->c_str(),
                        static_cast<long long>(number(*r, {"Version"})));
    });
}

// secret rollback NAME [--to N]: an earlier version current again.
void add_rollback(CLI::App& group, Globals& g) {
    auto* cmd =
        group.add_subcommand("rollback", "Make an earlier version of a secret current again");
    auto name = std::make_shared<std::string>();
    auto to = std::make_shared<std::uint64_t>(0);
    cmd->add_option("--to", *to, "The version to make current (default: the previous one)")
        ->check(CLI::PositiveNumber);
    cmd->add_option("secret", *name, "Secret name or ID")->required();
    cmd->callback([&g, name, to] {
        ApiClient api(g.host);
        auto r = api.call("POST", fmt::format("/secrets/{}/rollback{}", net::percent_encode(*name),
                                              *to ? fmt::format("?to={}", *to) : std::string()));
        if (!r) throw CLI::RuntimeError(report(r.error()));
        std::printf("%s version %lld\n", name->c_str(),
                    static_cast<long long>(number(*r, {"Version"})));
    });
}

// secret history NAME: which version reached which task, service and node, and when.
void add_history(CLI::App& group, Globals& g) {
    auto* cmd = group.add_subcommand("history",
                                     "Show which version of a secret reached which task, and when");
    auto name = std::make_shared<std::string>();
    cmd->add_option("secret", *name, "Secret name or ID")->required();
    cmd->callback([&g, name] {
        ApiClient api(g.host);
        auto r = api.call("GET", fmt::format("/secrets/{}/history", net::percent_encode(*name)));
        if (!r) throw CLI::RuntimeError(report(r.error()));
        if (!r->is_array()) throw CLI::RuntimeError(report({Errc::internal, "malformed answer"}));
        std::printf("%-8s %-26s %-26s %-26s %-31s %-31s %-31s %-6s %s\n", "VERSION", "TASK",
                    "SERVICE", "NODE", "SENT", "MOUNTED", "REMOVED", "READS", "LAST READ");
        auto or_dash = [](std::string s) { return s.empty() ? std::string("-") : s; };
        for (const auto& d : r->as_array()) {
            // Reads are counted where the task's secrets are on FUSE; "-" elsewhere.
            bool counted = d.is_object() && d.as_object().contains("Reads");
            auto reads = counted ? std::to_string(number(d, {"Reads"})) : std::string("-");
            std::printf("%-8lld %-26s %-26s %-26s %-31s %-31s %-31s %-6s %s\n",
                        static_cast<long long>(number(d, {"Version"})),
                        field(d, {"TaskID"}).c_str(), field(d, {"ServiceID"}).c_str(),
                        field(d, {"NodeID"}).c_str(), field(d, {"SentAt"}).c_str(),
                        or_dash(field(d, {"MountedAt"})).c_str(),
                        or_dash(field(d, {"RemovedAt"})).c_str(), reads.c_str(),
                        or_dash(field(d, {"LastReadAt"})).c_str());
        }
    });
}

void add_commands(CLI::App& app, Globals& g, const Kind& k) {
    auto* group = app.add_subcommand(std::string(k.word), fmt::format("Manage {}", k.collection));
    group->require_subcommand(1);
    add_create(*group, g, k);
    add_ls(*group, g, k);
    add_inspect(*group, g, k);
    add_rm(*group, g, k);
    if (k.word == "secret") {
        add_rotate(*group, g, k);
        add_rollback(*group, g);
        add_history(*group, g);
    }
}

}  // namespace

void add_secret_commands(CLI::App& app, Globals& g) {
    add_commands(app, g, secret_kind);
}

void add_config_commands(CLI::App& app, Globals& g) {
    add_commands(app, g, config_kind);
}

}  // namespace coffer::cli
