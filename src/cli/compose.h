// Compose files as `docker stack deploy` reads them: parsed with yaml-cpp into a tree that keeps
// each value's file and line, interpolated, merged in order, and converted to the Engine API's
// specs (compose_convert.cpp).
#pragma once

#include <boost/json.hpp>

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace coffer::cli::compose {

// One YAML value with where it came from (file index into Loaded::files, 1-based line).
struct Node {
    enum class Kind { null, scalar, seq, map };
    Kind kind = Kind::null;
    std::string scalar;
    bool quoted = false;  // a quoted scalar is a string even when it looks like a number
    std::vector<Node> seq;
    std::vector<std::pair<std::string, Node>> map;  // in file order
    int file = -1;
    int line = 0;

    bool is_map() const { return kind == Kind::map; }
    bool is_seq() const { return kind == Kind::seq; }
    bool is_scalar() const { return kind == Kind::scalar; }
    bool is_null() const { return kind == Kind::null; }
    const Node* get(std::string_view key) const;
    Node* get(std::string_view key);
    // Sets key (replacing its value, or appending it).
    void set(std::string key, Node value);
    void erase(std::string_view key);
};

// The problems found, each "FILE:LINE: what" (or "FILE: what" without a line).
struct Problems {
    std::vector<std::string> files;
    std::vector<std::string> errors;
    void add(const Node& at, std::string_view what);
    void add_file(int file, std::string_view what);
    bool empty() const { return errors.empty(); }
    // Every problem, one a line.
    std::string text() const;
};

// The variables interpolation reads: the process environment over the .env file's.
using Environment = std::map<std::string, std::string>;
// Reads a .env file (KEY=VALUE lines, # comments, optional quotes); missing is empty.
Environment read_env_file(const std::string& path, Problems& problems, int file);
// The process environment.
Environment process_environment();

// Interpolates one string (${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?e}, ${VAR?e}, ${VAR:+a},
// ${VAR+a}, $VAR, $$); an error message on failure.
std::optional<std::string> interpolate(std::string_view in, const Environment& env,
                                       std::string& error);

struct Loaded {
    std::vector<std::string> files;        // as named (- is standard input)
    std::string working_dir;               // the first file's directory: relative paths start there
    Node merged;                           // the merged, interpolated, normalised tree
    std::vector<std::string> unsupported;  // service keys coffer skips, sorted
    Environment env;
};

// Loads and merges the files (text of "-" from standard input); every problem found is in
// problems, and the result is usable only when problems is empty.
Loaded load(const std::vector<std::string>& paths, Problems& problems,
            const Environment& process_env);
// The same, from texts already read (for tests and standard input): {name, text}.
Loaded load_texts(const std::vector<std::pair<std::string, std::string>>& texts,
                  const std::string& working_dir, Problems& problems,
                  const Environment& process_env);

// The merged tree as YAML (`stack config`).
std::string to_yaml(const Node& n);

// A top-level secret or config of the stack.
struct FileObject {
    std::string key;   // the key in the file
    std::string name;  // the name in the cluster
    bool external = false;
    std::string file;         // absolute or relative to the working directory
    std::string environment;  // a variable of the CLI's environment
    boost::json::object labels;
    const Node* at = nullptr;
};

struct Network {
    std::string key, name;
    bool external = false;
    boost::json::object create;  // the POST /networks/create body
    const Node* at = nullptr;
};

// A stack converted to the Engine API, with the names it refers to.
struct Stack {
    std::string name;
    std::map<std::string, boost::json::object> services;  // full name -> ServiceSpec
    // Per service, the secret and config names to resolve to IDs (SecretName / ConfigName are
    // set, SecretID / ConfigID empty).
    std::vector<FileObject> secrets, configs;
    std::vector<Network> networks;  // only those some service uses
};

// Converts a loaded tree to specs as the docker CLI does; problems added with file and line.
Stack convert(const Loaded& loaded, const std::string& stack, Problems& problems);

}  // namespace coffer::cli::compose
