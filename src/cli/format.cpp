#include "format.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

namespace coffer::cli {

namespace json = boost::json;

namespace {

Error template_error(std::string message) {
    return make_error(Errc::invalid_argument, "template: " + std::move(message));
}

std::string join_path(const std::vector<std::string>& path) {
    std::string out;
    for (const auto& p : path) out += "." + p;
    return out.empty() ? "." : out;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
    return s;
}

// ".", ".A", ".A.B" -> the path; anything else is not a field.
std::optional<std::vector<std::string>> parse_path(std::string_view s) {
    if (s == ".") return std::vector<std::string>{};
    if (s.empty() || s[0] != '.') return std::nullopt;
    std::vector<std::string> path;
    while (!s.empty()) {
        if (s[0] != '.') return std::nullopt;
        s.remove_prefix(1);
        std::size_t n = 0;
        while (n < s.size() && (std::isalnum(static_cast<unsigned char>(s[n])) || s[n] == '_')) ++n;
        if (n == 0) return std::nullopt;
        path.emplace_back(s.substr(0, n));
        s.remove_prefix(n);
    }
    return path;
}

std::string known_fields(const json::object& o) {
    std::vector<std::string> keys;
    for (const auto& [k, v] : o) keys.emplace_back("." + std::string(k));
    std::sort(keys.begin(), keys.end());
    std::string out;
    for (const auto& k : keys) out += (out.empty() ? "" : " ") + k;
    return out;
}

// A value as Go's template prints it; objects and arrays print as JSON.
std::string print_value(const json::value& v) {
    if (v.is_string()) return std::string(v.as_string());
    if (v.is_null()) return "<nil>";
    return go_json(v);
}

std::size_t display_width(std::string_view s) {
    // UTF-8 code points: every byte but continuation bytes starts one.
    return static_cast<std::size_t>(std::count_if(
        s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

}  // namespace

Result<Template> Template::parse(std::string_view text) {
    std::string unescaped;
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '\\' && i + 1 < text.size() && (text[i + 1] == 't' || text[i + 1] == 'n')) {
            unescaped += text[i + 1] == 't' ? '\t' : '\n';
            ++i;
        } else {
            unescaped += text[i];
        }
    }
    Template t;
    std::string_view rest = unescaped;
    while (!rest.empty()) {
        auto open = rest.find("{{");
        auto literal = rest.substr(0, open);
        if (open == std::string_view::npos) {
            t.parts_.push_back({Part::literal, std::string(literal), {}});
            break;
        }
        auto close = rest.find("}}", open + 2);
        if (close == std::string_view::npos) return template_error("unclosed action (no \"}}\")");
        auto action = rest.substr(open + 2, close - open - 2);
        rest.remove_prefix(close + 2);
        // {{- and -}} trim the white space on their side, as in Go.
        if (action.starts_with("- ")) {
            while (!literal.empty() && std::isspace(static_cast<unsigned char>(literal.back())))
                literal.remove_suffix(1);
            action.remove_prefix(1);
        }
        if (action.ends_with(" -")) {
            while (!rest.empty() && std::isspace(static_cast<unsigned char>(rest.front())))
                rest.remove_prefix(1);
            action.remove_suffix(1);
        }
        if (!literal.empty()) t.parts_.push_back({Part::literal, std::string(literal), {}});
        auto body = trim(action);
        auto kind = Part::field;
        if (body.starts_with("json ") || body.starts_with("json\t")) {
            kind = Part::json;
            body = trim(body.substr(4));
        }
        auto path = parse_path(body);
        if (!path)
            return template_error(fmt::format(
                "unsupported action \"{{{{{}}}}}\": coffer's templates take {{{{.Field}}}}, "
                "{{{{.Field.Sub}}}}, {{{{json .}}}} and {{{{json .Field}}}}",
                action));
        t.parts_.push_back({kind, "", std::move(*path)});
    }
    return t;
}

std::vector<std::string> Template::fields() const {
    std::vector<std::string> out;
    for (const auto& p : parts_) {
        if (p.kind == Part::literal || p.path.empty()) continue;
        std::string name;
        for (const auto& s : p.path) name += (name.empty() ? "" : ".") + s;
        out.push_back(std::move(name));
    }
    return out;
}

Result<std::string> Template::render(const json::value& dot, std::string_view what,
                                     const json::value* json_dot) const {
    std::string out;
    for (const auto& p : parts_) {
        if (p.kind == Part::literal) {
            out += p.text;
            continue;
        }
        const json::value* v = p.path.empty() && p.kind == Part::json && json_dot ? json_dot : &dot;
        std::vector<std::string> walked;
        for (const auto& name : p.path) {
            walked.push_back(name);
            const json::value* next = v->is_object() ? v->as_object().if_contains(name) : nullptr;
            if (next == nullptr) {
                auto known = v->is_object() ? known_fields(v->as_object()) : "";
                auto where =
                    walked.size() > 1
                        ? fmt::format(" in {}", join_path({walked.begin(), walked.end() - 1}))
                        : std::string();
                return template_error(fmt::format("field {} is not known for {}{}; known: {}",
                                                  join_path(walked), what, where,
                                                  known.empty() ? "(none)" : known));
            }
            v = next;
        }
        out += p.kind == Part::json ? go_json(*v) : print_value(*v);
    }
    return out;
}

std::string Template::header(const json::object& titles) const {
    std::string out;
    for (const auto& p : parts_) {
        if (p.kind == Part::literal)
            out += p.text;
        else if (p.kind == Part::field && p.path.size() == 1)
            if (auto* t = titles.if_contains(p.path[0]); t && t->is_string())
                out += std::string(t->as_string());
    }
    return out;
}

Result<std::string> format_list(const ListFormat& list, std::string_view format, bool quiet,
                                const std::vector<json::object>& rows) {
    std::string text(trim(format));
    if (text.empty() || text == "table") text = quiet ? list.quiet : "table " + list.table;
    bool table = text.starts_with("table");
    if (table) text = std::string(trim(std::string_view(text).substr(5)));
    if (text == "json") text = "{{json .}}";
    auto tmpl = Template::parse(text);
    if (!tmpl) return std::move(tmpl).error();

    json::object titles;
    std::vector<std::string> names;
    for (const auto& c : list.columns) {
        titles[c.name] = c.title;
        names.push_back(c.name);
    }
    for (const auto& f : tmpl->fields())
        if (std::find(names.begin(), names.end(), f) == names.end()) {
            std::sort(names.begin(), names.end());
            std::string known;
            for (const auto& n : names) known += (known.empty() ? "." : " .") + n;
            return template_error(
                fmt::format("field .{} is not known for {}; known: {}", f, list.what, known));
        }

    std::string out;
    if (table) out += tmpl->header(titles) + "\n";
    for (const auto& row : rows) {
        // What `{{json .}}` prints: the docker-shaped fields, by name (Go marshals a map sorted).
        std::vector<const Column*> shown;
        for (const auto& c : list.columns)
            if (c.in_json && row.contains(c.name)) shown.push_back(&c);
        std::sort(shown.begin(), shown.end(), [](auto* a, auto* b) { return a->name < b->name; });
        json::object docker_shape;
        for (auto* c : shown) docker_shape[c->name] = row.at(c->name);
        json::value dot(row), jdot(std::move(docker_shape));
        auto line = tmpl->render(dot, list.what, &jdot);
        if (!line) return std::move(line).error();
        out += *line + "\n";
    }
    return table ? align_columns(out) : out;
}

Result<std::string> format_inspect(std::string_view what, std::string_view format,
                                   const std::vector<json::value>& objects) {
    std::string text(trim(format));
    if (text == "json") text = "{{json .}}";
    auto tmpl = Template::parse(text);
    if (!tmpl) return std::move(tmpl).error();
    std::string out;
    for (const auto& o : objects) {
        auto line = tmpl->render(o, what);
        if (!line) return std::move(line).error();
        out += *line + "\n";
    }
    return out;
}

std::string align_columns(std::string_view text) {
    std::vector<std::vector<std::string_view>> lines;
    while (!text.empty()) {
        auto nl = text.find('\n');
        auto line = text.substr(0, nl);
        std::vector<std::string_view> cells;
        for (;;) {
            auto tab = line.find('\t');
            cells.push_back(line.substr(0, tab));
            if (tab == std::string_view::npos) break;
            line.remove_prefix(tab + 1);
        }
        lines.push_back(std::move(cells));
        if (nl == std::string_view::npos) break;
        text.remove_prefix(nl + 1);
    }
    constexpr std::size_t min_width = 10, padding = 3;
    std::vector<std::size_t> width;
    for (const auto& cells : lines)
        for (std::size_t i = 0; i + 1 < cells.size(); ++i) {
            if (width.size() <= i) width.push_back(min_width);
            width[i] = std::max(width[i], display_width(cells[i]) + padding);
        }
    std::string out;
    for (const auto& cells : lines) {
        for (std::size_t i = 0; i < cells.size(); ++i) {
            out += cells[i];
            if (i + 1 < cells.size()) out.append(width[i] - display_width(cells[i]), ' ');
        }
        out += '\n';
    }
    return out;
}

std::string go_json(const json::value& v) {
    auto text = json::serialize(v);
    std::string out;
    out.reserve(text.size());
    for (char c : text) {
        if (c == '<')
            out += "\\u003c";
        else if (c == '>')
            out += "\\u003e";
        else if (c == '&')
            out += "\\u0026";
        else
            out += c;
    }
    return out;
}

std::string truncate_id(std::string_view id) {
    return std::string(id.substr(0, 12));
}

std::string image_without_digest(std::string_view image) {
    auto at = image.find('@');
    if (at == std::string_view::npos) return std::string(image);
    auto name = image.substr(0, at);
    auto slash = name.rfind('/');
    // Only a tagged reference drops its digest: a bare name@digest would name nothing else.
    if (name.find(':', slash == std::string_view::npos ? 0 : slash) == std::string_view::npos)
        return std::string(image);
    for (std::string_view prefix : {"docker.io/library/", "docker.io/"})
        if (name.starts_with(prefix)) {
            name.remove_prefix(prefix.size());
            break;
        }
    return std::string(name);
}

}  // namespace coffer::cli
