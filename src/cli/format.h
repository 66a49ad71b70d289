// The docker CLI's --format for list and inspect commands: "table", "table TEMPLATE", "json" and
// Go-template-style TEMPLATE text with {{.Field}}, {{.Field.Sub}}, {{json .}} and {{json .Field}}
// actions. Anything else Go templates offer (if, range, functions) is refused, not ignored.
#pragma once

#include <boost/json.hpp>

#include <string>
#include <string_view>
#include <vector>

#include "coffer/base/error.h"

namespace coffer::cli {

class Template {
  public:
    // Literal `\t` and `\n` in the text become a tab and a newline, as in the docker CLI.
    static Result<Template> parse(std::string_view text);

    // Every field path named by an action, without the leading dot ("ID", "Spec.Name").
    std::vector<std::string> fields() const;

    // The text with each action replaced by its value in `dot` (a JSON object); a field that
    // `dot` does not have is an error naming `what` ("service ps") and the fields it has.
    // `{{json .}}` prints `json_dot` when given (a list row's docker-shaped object), else `dot`.
    Result<std::string> render(const boost::json::value& dot, std::string_view what,
                               const boost::json::value* json_dot = nullptr) const;

    // What the docker CLI prints as a table's header: each field replaced by its title in
    // `titles` (an object of field name -> title), json actions by nothing.
    std::string header(const boost::json::object& titles) const;

  private:
    struct Part {
        enum Kind { literal, field, json } kind;
        std::string text;               // kind literal
        std::vector<std::string> path;  // kind field, json; empty is `.`
    };
    std::vector<Part> parts_;
};

// One field a list command offers to templates.
struct Column {
    std::string name;     // "DesiredState"
    std::string title;    // "DESIRED STATE"
    bool in_json = true;  // part of `{{json .}}` (false: a coffer addition, by name only)
};

// A list command's output as the docker CLI shapes it.
struct ListFormat {
    std::string what;               // "service ps", for errors
    std::vector<Column> columns;    // every field the command knows
    std::string table;              // the default table's template (without "table ")
    std::string quiet = "{{.ID}}";  // what -q prints
};

// Each row (an object of field name -> string or bool) printed through `format` (the --format
// value; "" is the default table); `quiet` applies to the default table only, as in the docker
// CLI. A template naming an unknown field fails before anything is printed.
Result<std::string> format_list(const ListFormat& list, std::string_view format, bool quiet,
                                const std::vector<boost::json::object>& rows);

// Each object printed through an inspect command's --format ("json" or TEMPLATE), one line each.
Result<std::string> format_inspect(std::string_view what, std::string_view format,
                                   const std::vector<boost::json::value>& objects);

// Lines of tab-separated cells aligned as the docker CLI's tabwriter does: every cell but a
// line's last is padded to its column's widest cell plus three spaces, and at least ten.
std::string align_columns(std::string_view text);

// JSON text as Go's encoder writes it: `<`, `>` and `&` escaped.
std::string go_json(const boost::json::value& v);

// Docker's short forms: a 12-character ID; an image reference without its digest.
std::string truncate_id(std::string_view id);
std::string image_without_digest(std::string_view image);

}  // namespace coffer::cli
