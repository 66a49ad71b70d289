#include "complete.h"

#include <algorithm>
#include <cstdio>
#include <set>
#include <string_view>

#include "client.h"
#include "common.h"

namespace coffer::cli {

namespace json = boost::json;

namespace {

bool starts_with(std::string_view s, std::string_view prefix) {
    return s.starts_with(prefix);
}

// An option that takes a value (flags take none).
bool takes_value(const CLI::Option* o) {
    return o->get_items_expected_max() > 0;
}

// The objects an argument names, by the argument's name in the command tree: positionals are
// named after what they take ("secret", "service"...), and so are the options that take a
// secret, config or network. An argument that names a new object (`secret create name`) is
// called something else and completes nothing.
NameKind kind_of(const CLI::Option* o) {
    struct Entry {
        std::string_view name;
        NameKind kind;
    };
    static constexpr Entry positionals[] = {
        {"secret", NameKind::secret},  {"config", NameKind::config}, {"service", NameKind::service},
        {"target", NameKind::service}, {"node", NameKind::node},     {"network", NameKind::network},
        {"stack", NameKind::stack},
    };
    static constexpr Entry options[] = {
        {"secret", NameKind::secret},       {"secret-add", NameKind::secret},
        {"secret-rm", NameKind::secret},    {"registry-auth-secret", NameKind::secret},
        {"config", NameKind::config},       {"config-add", NameKind::config},
        {"config-rm", NameKind::config},    {"network", NameKind::network},
        {"network-add", NameKind::network}, {"network-rm", NameKind::network},
    };
    if (o->get_positional()) {
        for (const auto& e : positionals)
            if (o->get_name() == e.name) return e.kind;
        return NameKind::none;
    }
    for (const auto& name : o->get_lnames())
        for (const auto& e : options)
            if (name == e.name) return e.kind;
    return NameKind::none;
}

// The fixed values an argument takes, as CLI11 shows an IsMember check in its type name:
// "TEXT:{worker,manager}".
std::vector<std::string> choices_of(const CLI::Option* o) {
    std::vector<std::string> out;
    auto type = o->get_type_name();
    auto open = type.find('{'), close = type.rfind('}');
    if (open == std::string::npos || close == std::string::npos || close < open) return out;
    std::string_view list(type.data() + open + 1, close - open - 1);
    while (!list.empty()) {
        auto comma = list.find(',');
        auto item = list.substr(0, comma);
        while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
        if (!item.empty()) out.emplace_back(item);
        if (comma == std::string_view::npos) break;
        list.remove_prefix(comma + 1);
    }
    return out;
}

std::vector<CLI::App*> visible_subcommands(CLI::App* cmd) {
    return cmd->get_subcommands([](CLI::App* a) {
        return !a->get_name().empty() && !a->get_group().empty() && !a->get_disabled();
    });
}

CLI::App* find_subcommand(CLI::App* cmd, const std::string& word) {
    for (auto* sub : visible_subcommands(cmd))
        if (sub->check_name(word)) return sub;
    return nullptr;
}

// The option a word such as "-q", "--format" or "--format=json" names, if `cmd` has it.
CLI::Option* find_option(CLI::App* cmd, std::string_view word) {
    auto name = std::string(word.substr(0, word.find('=')));
    auto* o = cmd->get_option_no_throw(name);
    return o != nullptr && !o->get_positional() ? o : nullptr;
}

// The positional that takes the argument after `given` others of `cmd`, if any.
CLI::Option* positional_at(CLI::App* cmd, std::size_t given) {
    for (auto* p : cmd->get_options([](CLI::Option* o) { return o->get_positional(); })) {
        auto n = static_cast<std::size_t>(p->get_items_expected_max());
        if (given < n) return p;
        given -= n;
    }
    return nullptr;
}

void add_matching(std::vector<std::string>& out, std::string candidate, std::string_view current) {
    if (starts_with(candidate, current)) out.push_back(std::move(candidate));
}

// Completes the value of `o` (after `prefix`, "--opt=" when the value is in the same word).
void complete_value(CompletionRequest& r, const CLI::Option* o, std::string_view prefix) {
    auto typed = std::string_view(r.current).substr(prefix.size());
    for (auto& c : choices_of(o))
        if (starts_with(c, typed)) r.candidates.push_back(std::string(prefix) + c);
    if (r.candidates.empty()) {
        r.names = kind_of(o);
        r.name_prefix = prefix;
    }
}

}  // namespace

CompletionRequest completion_for(CLI::App& app, const std::vector<std::string>& words,
                                 std::string host) {
    CompletionRequest r;
    r.host = std::move(host);
    r.current = words.empty() ? "" : words.back();
    CLI::App* cmd = &app;
    auto* host_option = app.get_option_no_throw("--host");
    std::size_t positionals = 0;
    bool options_ended = false;
    const CLI::Option* value_for = nullptr;  // the option whose value is being typed
    for (std::size_t i = 0; i + 1 < words.size(); ++i) {
        const auto& w = words[i];
        if (!options_ended && w == "--") {
            options_ended = true;
            continue;
        }
        if (!options_ended && w.size() > 1 && w[0] == '-') {
            auto* o = find_option(cmd, w);
            if (o == nullptr || !takes_value(o)) continue;
            auto eq = w.find('=');
            if (eq != std::string::npos) {
                if (o == host_option) r.host = w.substr(eq + 1);
                continue;
            }
            if (i + 2 == words.size()) {
                value_for = o;
                break;
            }
            if (o == host_option) r.host = words[i + 1];
            ++i;
            continue;
        }
        if (!options_ended) {
            if (auto* sub = find_subcommand(cmd, w)) {
                cmd = sub;
                positionals = 0;
                continue;
            }
        }
        ++positionals;
    }

    if (value_for != nullptr) {
        complete_value(r, value_for, "");
        return r;
    }
    if (!options_ended && starts_with(r.current, "-")) {
        auto eq = r.current.find('=');
        if (eq != std::string::npos) {
            if (auto* o = find_option(cmd, r.current); o != nullptr && takes_value(o))
                complete_value(r, o, std::string_view(r.current).substr(0, eq + 1));
            return r;
        }
        for (auto* o : cmd->get_options()) {
            if (o->get_positional()) continue;
            for (const auto& l : o->get_lnames()) add_matching(r.candidates, "--" + l, r.current);
            for (const auto& s : o->get_snames()) add_matching(r.candidates, "-" + s, r.current);
        }
        return r;
    }
    for (auto* sub : visible_subcommands(cmd)) {
        add_matching(r.candidates, sub->get_name(), r.current);
        for (const auto& a : sub->get_aliases()) add_matching(r.candidates, a, r.current);
    }
    if (auto* p = positional_at(cmd, positionals)) complete_value(r, p, "");
    return r;
}

namespace {

// The distinct, non-empty names `name_of` finds in the items of the list at `path`.
std::vector<std::string> listed_names(const std::string& host, const char* path,
                                      std::string (*name_of)(const json::value&)) {
    ApiClient api(host);
    auto listed = api.call("GET", path);
    if (!listed || !listed->is_array()) return {};
    std::set<std::string> names;
    for (const auto& item : listed->as_array())
        if (auto name = name_of(item); !name.empty()) names.insert(std::move(name));
    return {names.begin(), names.end()};
}

std::string spec_name(const json::value& v) {
    return field(v, {"Spec", "Name"});
}

}  // namespace

std::vector<std::string> object_names(NameKind kind, const std::string& host) {
    switch (kind) {
        case NameKind::secret:
            return listed_names(host, "/secrets", spec_name);
        case NameKind::config:
            return listed_names(host, "/configs", spec_name);
        case NameKind::service:
            return listed_names(host, "/services", spec_name);
        case NameKind::node:
            return listed_names(host, "/nodes", [](const json::value& v) {
                return field(v, {"Description", "Hostname"});
            });
        case NameKind::network:
            return listed_names(host, "/networks",
                                [](const json::value& v) { return field(v, {"Name"}); });
        case NameKind::stack:
            // A stack is its services' namespace label (stacks are the client's idea).
            return listed_names(host, "/services", [](const json::value& v) {
                return field(v, {"Spec", "Labels", "com.docker.stack.namespace"});
            });
        case NameKind::none:
            break;
    }
    return {};
}

int print_completions(CLI::App& app, const std::vector<std::string>& words,
                      const std::string& host) {
    auto r = completion_for(app, words, host);
    for (const auto& c : r.candidates) std::printf("%s\n", c.c_str());
    if (r.names != NameKind::none)
        for (const auto& name : object_names(r.names, r.host))
            if (auto c = r.name_prefix + name; starts_with(c, r.current))
                std::printf("%s\n", c.c_str());
    return 0;
}

}  // namespace coffer::cli
