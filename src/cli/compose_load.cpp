// Reading compose files: YAML into Nodes that remember file and line, interpolation, the
// normal forms that make Docker's merge rules simple (lists keyed as maps), and the merge.
#include <fcntl.h>
#include <unistd.h>

#include <yaml-cpp/yaml.h>

#include <fmt/format.h>
#include <algorithm>
#include <cstring>
#include <set>

#include "coffer/base/unique_fd.h"
#include "compose.h"

extern char** environ;

namespace coffer::cli::compose {

const Node* Node::get(std::string_view key) const {
    if (kind != Kind::map) return nullptr;
    for (const auto& [k, v] : map)
        if (k == key) return &v;
    return nullptr;
}

Node* Node::get(std::string_view key) {
    return const_cast<Node*>(static_cast<const Node*>(this)->get(key));
}

void Node::set(std::string key, Node value) {
    if (auto* n = get(key)) {
        *n = std::move(value);
        return;
    }
    kind = Kind::map;
    map.emplace_back(std::move(key), std::move(value));
}

void Node::erase(std::string_view key) {
    std::erase_if(map, [&](const auto& kv) { return kv.first == key; });
}

void Problems::add(const Node& at, std::string_view what) {
    auto file = at.file >= 0 && at.file < static_cast<int>(files.size()) ? files[at.file]
                                                                         : std::string("compose");
    if (at.line > 0)
        errors.push_back(fmt::format("{}:{}: {}", file, at.line, what));
    else
        errors.push_back(fmt::format("{}: {}", file, what));
}

void Problems::add_file(int file, std::string_view what) {
    Node n;
    n.file = file;
    add(n, what);
}

std::string Problems::text() const {
    std::string out;
    for (const auto& e : errors) {
        if (!out.empty()) out += '\n';
        out += e;
    }
    return out;
}

namespace {

bool valid_var_char(char c, bool first) {
    return c == '_' || std::isalpha(static_cast<unsigned char>(c)) ||
           (!first && std::isdigit(static_cast<unsigned char>(c)));
}

std::optional<std::string> read_all(const std::string& path, std::string& error) {
    UniqueFd fd(path == "-" ? ::dup(STDIN_FILENO)
                            : ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
    if (!fd) {
        error = std::strerror(errno);
        return std::nullopt;
    }
    std::string text;
    char buf[8192];
    for (;;) {
        ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            error = std::strerror(errno);
            return std::nullopt;
        }
        if (n == 0) break;
        text.append(buf, static_cast<std::size_t>(n));
        if (text.size() > 16 * 1024 * 1024) {
            error = "larger than 16 MiB";
            return std::nullopt;
        }
    }
    return text;
}

}  // namespace

std::optional<std::string> interpolate(std::string_view in, const Environment& env,
                                       std::string& error) {
    std::string out;
    for (std::size_t i = 0; i < in.size(); ++i) {
        char c = in[i];
        if (c != '$') {
            out += c;
            continue;
        }
        if (i + 1 >= in.size()) {
            out += '$';
            continue;
        }
        char n = in[i + 1];
        if (n == '$') {
            out += '$';
            ++i;
            continue;
        }
        if (valid_var_char(n, true)) {
            std::size_t j = i + 1;
            while (j < in.size() && valid_var_char(in[j], false)) ++j;
            auto name = std::string(in.substr(i + 1, j - i - 1));
            if (auto it = env.find(name); it != env.end()) out += it->second;
            i = j - 1;
            continue;
        }
        if (n != '{') {
            error = fmt::format("invalid interpolation format for \"{}\"", in);
            return std::nullopt;
        }
        // ${...}: find the matching brace (defaults may hold nested ${...}).
        std::size_t depth = 1, j = i + 2;
        for (; j < in.size() && depth > 0; ++j) {
            if (in[j] == '{') ++depth;
            if (in[j] == '}') --depth;
        }
        if (depth != 0) {
            error = fmt::format("invalid interpolation format for \"{}\": unterminated ${{", in);
            return std::nullopt;
        }
        auto body = in.substr(i + 2, j - i - 3);
        i = j - 1;
        std::size_t k = 0;
        while (k < body.size() && valid_var_char(body[k], k == 0)) ++k;
        auto name = std::string(body.substr(0, k));
        if (name.empty()) {
            error = fmt::format("invalid interpolation format for \"{}\"", in);
            return std::nullopt;
        }
        auto it = env.find(name);
        bool set = it != env.end();
        bool nonempty = set && !it->second.empty();
        auto rest = body.substr(k);
        if (rest.empty()) {
            if (set) out += it->second;
            continue;
        }
        bool colon = rest[0] == ':';
        if (colon) rest.remove_prefix(1);
        if (rest.empty() || (rest[0] != '-' && rest[0] != '?' && rest[0] != '+')) {
            error = fmt::format("invalid interpolation format for \"{}\"", in);
            return std::nullopt;
        }
        char op = rest[0];
        auto arg_raw = rest.substr(1);
        bool present = colon ? nonempty : set;
        auto arg = [&]() -> std::optional<std::string> { return interpolate(arg_raw, env, error); };
        if (op == '-') {
            if (present) {
                out += it->second;
            } else {
                auto a = arg();
                if (!a) return std::nullopt;
                out += *a;
            }
        } else if (op == '+') {
            if (present) {
                auto a = arg();
                if (!a) return std::nullopt;
                out += *a;
            }
        } else {
            if (!present) {
                auto a = arg();
                if (!a) return std::nullopt;
                error = fmt::format("required variable {} is missing a value{}", name,
                                    a->empty() ? "" : ": " + *a);
                return std::nullopt;
            }
            out += it->second;
        }
    }
    return out;
}

Environment process_environment() {
    Environment env;
    for (char** e = environ; e && *e; ++e) {
        std::string_view kv(*e);
        auto eq = kv.find('=');
        if (eq == std::string_view::npos) continue;
        env.emplace(std::string(kv.substr(0, eq)), std::string(kv.substr(eq + 1)));
    }
    return env;
}

Environment read_env_file(const std::string& path, Problems& problems, int file) {
    Environment env;
    if (::access(path.c_str(), F_OK) != 0) return env;
    std::string error;
    auto text = read_all(path, error);
    if (!text) {
        problems.add_file(file, fmt::format("cannot read {}: {}", path, error));
        return env;
    }
    std::size_t pos = 0;
    int line_no = 0;
    while (pos <= text->size()) {
        auto end = text->find('\n', pos);
        if (end == std::string::npos) end = text->size();
        std::string line = text->substr(pos, end - pos);
        pos = end + 1;
        ++line_no;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        auto first = line.find_first_not_of(" \t");
        if (first == std::string::npos || line[first] == '#') continue;
        line = line.substr(first);
        if (line.starts_with("export ")) line = line.substr(7);
        auto eq = line.find('=');
        auto key = line.substr(0, eq);
        while (!key.empty() && (key.back() == ' ' || key.back() == '\t')) key.pop_back();
        bool ok =
            !key.empty() && valid_var_char(key[0], true) &&
            std::all_of(key.begin(), key.end(), [](char c) { return valid_var_char(c, false); });
        if (!ok) {
            Node at;
            at.file = file;
            at.line = line_no;
            problems.errors.push_back(
                fmt::format("{}:{}: invalid variable name in .env file", path, line_no));
            continue;
        }
        std::string value = eq == std::string::npos ? "" : line.substr(eq + 1);
        auto vfirst = value.find_first_not_of(" \t");
        value = vfirst == std::string::npos ? "" : value.substr(vfirst);
        if (value.size() >= 2 && (value[0] == '"' || value[0] == '\'') &&
            value.back() == value[0]) {
            value = value.substr(1, value.size() - 2);
        } else if (auto hash = value.find(" #"); hash != std::string::npos) {
            value = value.substr(0, hash);
            while (!value.empty() && (value.back() == ' ' || value.back() == '\t'))
                value.pop_back();
        }
        env[key] = value;
        if (pos > text->size()) break;
    }
    return env;
}

namespace {

Node from_yaml(const YAML::Node& y, int file, Problems& problems, int depth = 0) {
    Node n;
    n.file = file;
    n.line = y.Mark().line >= 0 ? y.Mark().line + 1 : 0;
    if (depth > 64) {
        problems.add(n, "nesting too deep");
        return n;
    }
    switch (y.Type()) {
        case YAML::NodeType::Scalar:
            n.kind = Node::Kind::scalar;
            n.scalar = y.Scalar();
            n.quoted = y.Tag() == "!";
            break;
        case YAML::NodeType::Sequence:
            n.kind = Node::Kind::seq;
            for (const auto& e : y) n.seq.push_back(from_yaml(e, file, problems, depth + 1));
            break;
        case YAML::NodeType::Map: {
            n.kind = Node::Kind::map;
            std::vector<Node> merges;
            for (const auto& kv : y) {
                Node key = from_yaml(kv.first, file, problems, depth + 1);
                if (!key.is_scalar()) {
                    problems.add(key, "a mapping key must be a string");
                    continue;
                }
                Node value = from_yaml(kv.second, file, problems, depth + 1);
                if (key.scalar == "<<" && !key.quoted) {
                    merges.push_back(std::move(value));
                    continue;
                }
                if (n.get(key.scalar)) {
                    problems.add(key, fmt::format("duplicate key \"{}\"", key.scalar));
                    continue;
                }
                n.map.emplace_back(key.scalar, std::move(value));
            }
            // YAML merge keys: explicit keys win, then earlier merged maps over later ones.
            for (auto& m : merges) {
                std::vector<Node*> sources;
                if (m.is_map()) sources.push_back(&m);
                if (m.is_seq())
                    for (auto& e : m.seq) sources.push_back(&e);
                for (auto* s : sources) {
                    if (!s->is_map()) {
                        problems.add(*s, "a merge key (<<) takes a mapping or a list of them");
                        continue;
                    }
                    for (auto& [k, v] : s->map)
                        if (!n.get(k)) n.map.emplace_back(k, v);
                }
            }
            break;
        }
        default:
            break;
    }
    return n;
}

void interpolate_tree(Node& n, const Environment& env, Problems& problems,
                      const std::string& path) {
    if (n.is_scalar()) {
        if (n.scalar.find('$') == std::string::npos) return;
        std::string error;
        auto v = interpolate(n.scalar, env, error);
        if (!v)
            problems.add(n, fmt::format("{}: {}", path, error));
        else
            n.scalar = std::move(*v), n.quoted = true;
        return;
    }
    for (auto& e : n.seq) interpolate_tree(e, env, problems, path);
    for (auto& [k, v] : n.map)
        interpolate_tree(v, env, problems, path.empty() ? k : path + "." + k);
}

Node scalar_like(const Node& at, std::string value) {
    Node n;
    n.kind = Node::Kind::scalar;
    n.scalar = std::move(value);
    n.quoted = true;
    n.file = at.file;
    n.line = at.line;
    return n;
}

// ["A=1", "B"] -> {A: "1", B: null}; a map stays.
void list_to_map(Node& n, Problems& problems, std::string_view what) {
    if (!n.is_seq()) return;
    Node m;
    m.kind = Node::Kind::map;
    m.file = n.file;
    m.line = n.line;
    for (const auto& e : n.seq) {
        if (!e.is_scalar()) {
            problems.add(e, fmt::format("{} entries must be strings", what));
            continue;
        }
        auto eq = e.scalar.find('=');
        if (eq == std::string::npos) {
            Node v;
            v.file = e.file;
            v.line = e.line;
            m.set(e.scalar, v);
        } else {
            m.set(e.scalar.substr(0, eq), scalar_like(e, e.scalar.substr(eq + 1)));
        }
    }
    n = std::move(m);
}

// A short-syntax secret or config reference -> {source: NAME}.
void refs_to_long(Node& n, Problems& problems, std::string_view what) {
    if (n.is_null()) return;
    if (!n.is_seq()) {
        problems.add(n, fmt::format("{} must be a list", what));
        return;
    }
    for (auto& e : n.seq) {
        if (e.is_scalar()) {
            Node m;
            m.kind = Node::Kind::map;
            m.file = e.file;
            m.line = e.line;
            m.set("source", e);
            e = std::move(m);
        } else if (!e.is_map() || !e.get("source")) {
            problems.add(e, fmt::format("{} entries need a source", what));
        }
    }
}

// Short-syntax ports ("8080:80/udp", "80", 80) -> long maps, as the docker CLI expands them.
void ports_to_long(Node& n, Problems& problems) {
    if (n.is_null()) return;
    if (!n.is_seq()) {
        problems.add(n, "ports must be a list");
        return;
    }
    std::vector<Node> out;
    for (auto& e : n.seq) {
        if (e.is_map()) {
            out.push_back(e);
            continue;
        }
        if (!e.is_scalar()) {
            problems.add(e, "a port must be a string, a number or a mapping");
            continue;
        }
        std::string s = e.scalar, proto = "tcp";
        if (auto slash = s.rfind('/'); slash != std::string::npos) {
            proto = s.substr(slash + 1);
            s = s.substr(0, slash);
        }
        std::string published, target = s;
        if (auto colon = s.rfind(':'); colon != std::string::npos) {
            target = s.substr(colon + 1);
            published = s.substr(0, colon);
            if (published.find(':') != std::string::npos) {
                problems.add(
                    e, fmt::format("port {}: a host IP is not supported by services", e.scalar));
                continue;
            }
        }
        auto range = [](const std::string& r, long& lo, long& hi) {
            auto dash = r.find('-');
            try {
                std::size_t used = 0;
                lo = std::stol(r.substr(0, dash), &used);
                if (used != r.substr(0, dash).size()) return false;
                hi = lo;
                if (dash != std::string::npos) {
                    hi = std::stol(r.substr(dash + 1), &used);
                    if (used != r.substr(dash + 1).size()) return false;
                }
            } catch (...) {
                return false;
            }
            return lo > 0 && hi >= lo && hi <= 65535;
        };
        long tlo = 0, thi = 0, plo = 0, phi = 0;
        if (!range(target, tlo, thi) || (!published.empty() && !range(published, plo, phi)) ||
            (!published.empty() && phi - plo != thi - tlo) ||
            (proto != "tcp" && proto != "udp" && proto != "sctp")) {
            problems.add(e, fmt::format("invalid port \"{}\"", e.scalar));
            continue;
        }
        for (long i = 0; i <= thi - tlo; ++i) {
            Node m;
            m.kind = Node::Kind::map;
            m.file = e.file;
            m.line = e.line;
            m.set("mode", scalar_like(e, "ingress"));
            m.set("target", scalar_like(e, std::to_string(tlo + i)));
            if (!published.empty()) m.set("published", scalar_like(e, std::to_string(plo + i)));
            m.set("protocol", scalar_like(e, proto));
            for (auto& kv : m.map) kv.second.quoted = false;
            out.push_back(std::move(m));
        }
    }
    n.seq = std::move(out);
}

// Short-syntax volumes ("data:/var/lib:ro", "/host:/c", "/anon") -> long maps.
void volumes_to_long(Node& n, Problems& problems) {
    if (n.is_null()) return;
    if (!n.is_seq()) {
        problems.add(n, "volumes must be a list");
        return;
    }
    for (auto& e : n.seq) {
        if (e.is_map()) continue;
        if (!e.is_scalar()) {
            problems.add(e, "a volume must be a string or a mapping");
            continue;
        }
        std::vector<std::string> parts;
        std::size_t start = 0;
        for (;;) {
            auto c = e.scalar.find(':', start);
            parts.push_back(e.scalar.substr(start, c - start));
            if (c == std::string::npos) break;
            start = c + 1;
        }
        Node m;
        m.kind = Node::Kind::map;
        m.file = e.file;
        m.line = e.line;
        if (parts.size() == 1) {
            m.set("type", scalar_like(e, "volume"));
            m.set("target", scalar_like(e, parts[0]));
        } else if (parts.size() <= 3) {
            const auto& src = parts[0];
            bool bind = src.starts_with("/") || src.starts_with(".") || src.starts_with("~");
            m.set("type", scalar_like(e, bind ? "bind" : "volume"));
            m.set("source", scalar_like(e, src));
            m.set("target", scalar_like(e, parts[1]));
            if (parts.size() == 3) {
                std::string rest = parts[2];
                std::size_t s2 = 0;
                for (;;) {
                    auto c = rest.find(',', s2);
                    auto opt = rest.substr(s2, c - s2);
                    if (opt == "ro") {
                        m.set("read_only", scalar_like(e, "true"));
                    } else if (opt == "rw") {
                    } else if (opt == "nocopy" && !bind) {
                        Node v;
                        v.kind = Node::Kind::map;
                        v.set("nocopy", scalar_like(e, "true"));
                        m.set("volume", v);
                    } else if (bind && (opt == "rprivate" || opt == "private" || opt == "rshared" ||
                                        opt == "shared" || opt == "rslave" || opt == "slave")) {
                        Node v;
                        v.kind = Node::Kind::map;
                        v.set("propagation", scalar_like(e, opt));
                        m.set("bind", v);
                    } else {
                        problems.add(
                            e, fmt::format("volume \"{}\": unknown option \"{}\"", e.scalar, opt));
                    }
                    if (c == std::string::npos) break;
                    s2 = c + 1;
                }
            }
        } else {
            problems.add(e, fmt::format("invalid volume \"{}\"", e.scalar));
            continue;
        }
        e = std::move(m);
    }
}

const std::set<std::string_view> unsupported_keys = {
    "build",        "cgroupns_mode",  "cgroup_parent", "devices",
    "domainname",   "external_links", "ipc",           "links",
    "mac_address",  "network_mode",   "pid",           "privileged",
    "security_opt", "shm_size",       "userns_mode",   "container_name",
    "expose"};

const std::map<std::string_view, std::string_view> forbidden_keys = {
    {"extends",
     "extends is not supported: write the service out in full, or merge files with "
     "several -c"},
    {"volume_driver", "define a volume in the top-level volumes and set its driver there"},
    {"volumes_from", "share a volume through the top-level volumes"},
    {"cpu_quota", "set resource limits with deploy.resources"},
    {"cpu_shares", "set resource limits with deploy.resources"},
    {"cpuset", "set resource limits with deploy.resources"},
    {"mem_limit", "set resource limits with deploy.resources"},
    {"memswap_limit", "set resource limits with deploy.resources"},
};

// Checks one file's top level and brings its services to the normal form.
void normalise(Node& root, Problems& problems, std::set<std::string>& unsupported) {
    if (root.is_null()) {
        root.kind = Node::Kind::map;
        return;
    }
    if (!root.is_map()) {
        problems.add(root, "the top level must be a mapping");
        root = Node{};
        root.kind = Node::Kind::map;
        return;
    }
    for (auto& [k, v] : root.map) {
        if (k == "version") {
            if (!v.is_scalar() || !(v.scalar == "3" || v.scalar.starts_with("3.")))
                problems.add(v, fmt::format("unsupported compose file version \"{}\": this is "
                                            "a version 3.x or version-less file's reader",
                                            v.scalar));
        } else if (k == "services" || k == "secrets" || k == "configs" || k == "networks" ||
                   k == "volumes" || k == "name" || k.starts_with("x-")) {
            if (k != "name" && !k.starts_with("x-") && !v.is_map() && !v.is_null())
                problems.add(v, fmt::format("{} must be a mapping", k));
        } else {
            problems.add(v, fmt::format("unknown top-level key \"{}\"", k));
        }
    }
    for (std::string_view kind : {"secrets", "configs", "networks", "volumes"})
        if (auto* objs = root.get(kind); objs && objs->is_map())
            for (auto& [k, v] : objs->map)
                if (auto* l = v.get("labels")) list_to_map(*l, problems, "labels");
    auto* services = root.get("services");
    if (!services || !services->is_map()) return;
    for (auto& [name, s] : services->map) {
        if (s.is_null()) s.kind = Node::Kind::map;
        if (!s.is_map()) {
            problems.add(s, fmt::format("service \"{}\" must be a mapping", name));
            continue;
        }
        std::vector<std::string> drop;
        for (auto& [k, v] : s.map) {
            if (auto f = forbidden_keys.find(k); f != forbidden_keys.end())
                problems.add(v, fmt::format("service \"{}\": {}: {}", name, k, f->second));
            if (unsupported_keys.count(k)) {
                unsupported.insert(k);
                drop.push_back(k);
            }
        }
        for (const auto& k : drop) s.erase(k);
        for (std::string_view k : {"environment", "labels", "sysctls"})
            if (auto* n = s.get(k)) list_to_map(*n, problems, k);
        if (auto* d = s.get("deploy"); d && d->is_map())
            if (auto* l = d->get("labels")) list_to_map(*l, problems, "deploy.labels");
        if (auto* n = s.get("secrets")) refs_to_long(*n, problems, "secrets");
        if (auto* n = s.get("configs")) refs_to_long(*n, problems, "configs");
        if (auto* n = s.get("ports")) ports_to_long(*n, problems);
        if (auto* n = s.get("volumes")) volumes_to_long(*n, problems);
        if (auto* n = s.get("networks"); n && n->is_seq()) {
            Node m;
            m.kind = Node::Kind::map;
            m.file = n->file;
            m.line = n->line;
            for (const auto& e : n->seq) {
                if (!e.is_scalar()) {
                    problems.add(e, "networks entries must be names");
                    continue;
                }
                Node v;
                v.file = e.file;
                v.line = e.line;
                m.set(e.scalar, v);
            }
            *n = std::move(m);
        }
    }
}

// A list keyed by key (ports by published, secrets and configs by source, volumes by target):
// override's entries replace base's with the same key, new ones are appended.
void merge_keyed(Node& base, const Node& over, std::string_view key) {
    if (!base.is_seq() || !over.is_seq()) {
        base = over;
        return;
    }
    auto key_of = [&](const Node& e) {
        const auto* k = e.get(key);
        return k && k->is_scalar() ? k->scalar : std::string();
    };
    // As Docker: both lists become maps by key (a later entry wins), override over base.
    std::vector<Node> out;
    auto put = [&](const Node& e) {
        auto it = std::find_if(out.begin(), out.end(),
                               [&](const Node& b) { return key_of(b) == key_of(e); });
        if (it != out.end())
            *it = e;
        else
            out.push_back(e);
    };
    for (const auto& e : base.seq) put(e);
    for (const auto& e : over.seq) put(e);
    base.seq = std::move(out);
}

void merge_deep(Node& base, const Node& over) {
    if (base.is_map() && over.is_map()) {
        for (const auto& [k, v] : over.map) {
            auto* b = base.get(k);
            if (!b) {
                base.map.emplace_back(k, v);
            } else if (v.is_null()) {
                continue;
            } else if (k == "command" || k == "entrypoint" || k == "ulimits") {
                *b = v;
            } else {
                merge_deep(*b, v);
            }
        }
        return;
    }
    if (base.is_seq() && over.is_seq()) {
        for (const auto& e : over.seq) base.seq.push_back(e);
        return;
    }
    if (!over.is_null()) base = over;
}

void merge_service(Node& base, const Node& over) {
    for (const auto& [k, v] : over.map) {
        auto* b = base.get(k);
        if (!b) {
            base.map.emplace_back(k, v);
        } else if (k == "ports") {
            merge_keyed(*b, v, "published");
        } else if (k == "secrets" || k == "configs") {
            merge_keyed(*b, v, "source");
        } else if (k == "volumes") {
            merge_keyed(*b, v, "target");
        } else if (k == "command" || k == "entrypoint") {
            *b = v;
        } else {
            merge_deep(*b, v);
        }
    }
}

void merge_file(Node& base, const Node& over) {
    for (const auto& [k, v] : over.map) {
        auto* b = base.get(k);
        if (!b || !b->is_map() || !v.is_map()) {
            if (!v.is_null() || !b) base.set(k, v);
            continue;
        }
        if (k == "services") {
            for (const auto& [name, s] : v.map) {
                auto* bs = b->get(name);
                if (bs && bs->is_map() && s.is_map())
                    merge_service(*bs, s);
                else
                    b->set(name, s);
            }
        } else if (k.starts_with("x-")) {
            base.set(k, v);
        } else if (k != "version") {
            for (const auto& [name, o] : v.map) b->set(name, o);
        } else {
            base.set(k, v);
        }
    }
}

}  // namespace

Loaded load_texts(const std::vector<std::pair<std::string, std::string>>& texts,
                  const std::string& working_dir, Problems& problems,
                  const Environment& process_env) {
    Loaded out;
    out.working_dir = working_dir;
    for (const auto& t : texts) out.files.push_back(t.first);
    problems.files = out.files;
    out.env = read_env_file(working_dir + "/.env", problems, 0);
    for (const auto& [k, v] : process_env) out.env[k] = v;
    std::set<std::string> unsupported;
    out.merged.kind = Node::Kind::map;
    for (std::size_t i = 0; i < texts.size(); ++i) {
        int file = static_cast<int>(i);
        Node root;
        try {
            auto y = YAML::Load(texts[i].second);
            root = from_yaml(y, file, problems);
        } catch (const YAML::Exception& e) {
            Node at;
            at.file = file;
            at.line = e.mark.line >= 0 ? e.mark.line + 1 : 0;
            problems.add(at, e.msg);
            continue;
        }
        interpolate_tree(root, out.env, problems, "");
        normalise(root, problems, unsupported);
        merge_file(out.merged, root);
    }
    out.unsupported.assign(unsupported.begin(), unsupported.end());
    return out;
}

Loaded load(const std::vector<std::string>& paths, Problems& problems,
            const Environment& process_env) {
    std::vector<std::pair<std::string, std::string>> texts;
    problems.files = paths;
    bool failed = false;
    for (std::size_t i = 0; i < paths.size(); ++i) {
        std::string error;
        auto t = read_all(paths[i], error);
        if (!t) {
            problems.add_file(static_cast<int>(i), fmt::format("cannot read: {}", error));
            failed = true;
            texts.emplace_back(paths[i], "");
            continue;
        }
        texts.emplace_back(paths[i], std::move(*t));
    }
    std::string dir = ".";
    if (!paths.empty() && paths[0] != "-") {
        auto slash = paths[0].rfind('/');
        if (slash != std::string::npos) dir = slash == 0 ? "/" : paths[0].substr(0, slash);
    }
    auto errors = std::move(problems.errors);
    auto loaded = load_texts(texts, dir, problems, process_env);
    errors.insert(errors.end(), problems.errors.begin(), problems.errors.end());
    problems.errors = std::move(errors);
    (void)failed;
    return loaded;
}

namespace {

void emit(YAML::Emitter& e, const Node& n) {
    switch (n.kind) {
        case Node::Kind::null:
            e << YAML::Null;
            break;
        case Node::Kind::scalar:
            if (n.quoted) e << YAML::DoubleQuoted;
            e << n.scalar;
            break;
        case Node::Kind::seq:
            e << YAML::BeginSeq;
            for (const auto& x : n.seq) emit(e, x);
            e << YAML::EndSeq;
            break;
        case Node::Kind::map:
            e << YAML::BeginMap;
            for (const auto& [k, v] : n.map) {
                e << YAML::Key << k << YAML::Value;
                emit(e, v);
            }
            e << YAML::EndMap;
            break;
    }
}

}  // namespace

std::string to_yaml(const Node& n) {
    YAML::Emitter e;
    emit(e, n);
    return std::string(e.c_str()) + "\n";
}

}  // namespace coffer::cli::compose
