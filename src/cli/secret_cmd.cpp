// coffer secret create|ls|inspect|rm.
#include <algorithm>
#include <cstdio>
#include <cstring>

#include "client.h"
#include "coffer/crypto/encoding.h"
#include "coffer/crypto/secure_buffer.h"
#include "common.h"
#include "format.h"
#include "output.h"
#include "secret_input.h"

namespace coffer::cli {

namespace json = boost::json;

namespace {

// The most a client sends: twice Docker's secret size limit, so the server's own check answers.
constexpr std::size_t secret_read_limit = 2 * 500 * 1024;

// secret create [--label k=v]... NAME FILE|-
void add_secret_create(CLI::App& secret, Globals& g) {
    auto* cmd = secret.add_subcommand("create", "Create a secret from a file or STDIN as content");
    auto name = std::make_shared<std::string>();
    auto source = std::make_shared<std::string>();
    auto labels = std::make_shared<std::vector<std::string>>();
    one_value_per_flag(cmd->add_option("-l,--label", *labels, "Secret labels (key=value)"));
    cmd->add_option("name", *name, "Secret name")->required();
    cmd->add_option("file", *source, "File to read the secret from, or - for STDIN")->required();
    cmd->callback([&g, name, source, labels] {
        auto data = read_secret_source(*source, secret_read_limit);
        if (!data) throw CLI::RuntimeError(report(data.error()));
        json::object lab;
        for (const auto& l : *labels) {
            auto [k, v] = split_kv(l);
            lab[k] = v;
        }
        // The body is assembled in secure memory around the base64 of the secret bytes.
        auto head = fmt::format("{{\"Name\":{},\"Labels\":{},\"Data\":\"",
                                json::serialize(json::string(*name)), json::serialize(lab));
        auto b64 = crypto::base64_encode_secure(data->span());
        crypto::SecureBuffer body(head.size() + b64.size() + 2);
        std::memcpy(body.data(), head.data(), head.size());
        std::memcpy(body.data() + head.size(), b64.data(), b64.size());
        std::memcpy(body.data() + head.size() + b64.size(), "\"}", 2);
        ApiClient api(g.host);
        auto r = api.call("POST", "/secrets/create", body.span());
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

json::object secret_row(const json::value& s) {
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

// secret ls [-q] [-f k=v]... [--format FORMAT]
void add_secret_ls(CLI::App& secret, Globals& g) {
    auto* cmd = secret.add_subcommand("ls", "List secrets");
    cmd->alias("list");
    auto flags = std::make_shared<ListFlags>();
    flags->add(cmd);
    cmd->callback([&g, flags] {
        ApiClient api(g.host);
        auto r = api.call("GET", "/secrets" + filters_query(flags->filters));
        if (!r) throw CLI::RuntimeError(report(r.error()));
        if (!r->is_array()) throw CLI::RuntimeError(report({Errc::internal, "malformed answer"}));
        auto items = r->as_array();
        std::sort(items.begin(), items.end(), [](const auto& a, const auto& b) {
            return field(a, {"Spec", "Name"}) < field(b, {"Spec", "Name"});
        });
        std::vector<json::object> rows;
        for (const auto& s : items) rows.push_back(secret_row(s));
        flags->print(secret_list, rows);
    });
}

// secret inspect NAME|ID...
void add_secret_inspect(CLI::App& secret, Globals& g) {
    auto* cmd =
        secret.add_subcommand("inspect", "Display detailed information on one or more secrets");
    auto names = std::make_shared<std::vector<std::string>>();
    auto format = std::make_shared<std::string>();
    add_inspect_format(cmd, *format);
    cmd->add_option("secret", *names, "Secret name or ID")->required();
    cmd->callback([&g, names, format] {
        ApiClient api(g.host);
        inspect_all(api, "/secrets/", *names, "", *format, "secret inspect");
    });
}

// secret rm NAME|ID...
void add_secret_rm(CLI::App& secret, Globals& g) {
    auto* cmd = secret.add_subcommand("rm", "Remove one or more secrets");
    cmd->alias("remove");
    auto names = std::make_shared<std::vector<std::string>>();
    cmd->add_option("secret", *names, "Secret name or ID")->required();
    cmd->callback([&g, names] {
        ApiClient api(g.host);
        remove_all(api, "/secrets/", *names);
    });
}

}  // namespace

void add_secret_commands(CLI::App& app, Globals& g) {
    auto* secret = app.add_subcommand("secret", "Manage secrets");
    secret->require_subcommand(1);
    add_secret_create(*secret, g);
    add_secret_ls(*secret, g);
    add_secret_inspect(*secret, g);
    add_secret_rm(*secret, g);
}

}  // namespace coffer::cli
