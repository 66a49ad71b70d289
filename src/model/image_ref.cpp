#include "coffer/model/image_ref.h"

#include <algorithm>

namespace coffer::model {
namespace {

bool lower_alnum(char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

// A path component: lowercase letters and digits, separated by '.', '_', '__' or runs of '-'.
bool valid_component(std::string_view c) {
    if (c.empty() || !lower_alnum(c.front()) || !lower_alnum(c.back())) return false;
    for (std::size_t i = 0; i < c.size(); ++i) {
        char ch = c[i];
        if (lower_alnum(ch) || ch == '-') continue;
        if (ch == '.' || ch == '_') {
            if (!lower_alnum(c[i - 1])) {
                // "__" is the one separator of two characters.
                if (!(ch == '_' && c[i - 1] == '_' && i >= 2 && lower_alnum(c[i - 2])))
                    return false;
            }
            continue;
        }
        return false;
    }
    return true;
}

bool valid_domain(std::string_view d) {
    auto colon = d.rfind(':');
    auto host = colon == std::string_view::npos ? d : d.substr(0, colon);
    if (colon != std::string_view::npos) {
        auto port = d.substr(colon + 1);
        if (port.empty() || port.size() > 5 ||
            !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }))
            return false;
    }
    if (host.empty() || host.size() > 253) return false;
    std::size_t start = 0;
    while (start <= host.size()) {
        auto dot = host.find('.', start);
        auto label = host.substr(start, dot == std::string_view::npos ? dot : dot - start);
        if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-' ||
            !std::all_of(label.begin(), label.end(), [](char c) {
                return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                       c == '-';
            }))
            return false;
        if (dot == std::string_view::npos) break;
        start = dot + 1;
    }
    return true;
}

bool valid_tag(std::string_view t) {
    if (t.empty() || t.size() > 128 || t.front() == '.' || t.front() == '-') return false;
    return std::all_of(t.begin(), t.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '.' || c == '-';
    });
}

bool valid_digest(std::string_view d) {
    return d.size() == 71 && d.starts_with("sha256:") &&
           std::all_of(d.begin() + 7, d.end(),
                       [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

}  // namespace

Result<ImageRef> parse_image_ref(std::string_view ref) {
    auto bad = [&](std::string_view why) {
        return make_error(Errc::invalid_argument,
                          fmt::format("invalid image reference \"{}\": {}",
                                      ref.substr(0, std::min<std::size_t>(ref.size(), 300)), why));
    };
    if (ref.empty()) return bad("empty");
    if (ref.size() > 512) return bad("too long");
    ImageRef r;
    std::string_view rest = ref;
    if (auto at = rest.find('@'); at != std::string_view::npos) {
        r.digest = std::string(rest.substr(at + 1));
        rest = rest.substr(0, at);
        if (!valid_digest(r.digest)) return bad("a digest is sha256: and 64 lowercase hex digits");
    }
    auto slash = rest.rfind('/');
    if (auto colon = rest.rfind(':');
        colon != std::string_view::npos && (slash == std::string_view::npos || colon > slash)) {
        r.tag = std::string(rest.substr(colon + 1));
        rest = rest.substr(0, colon);
        if (!valid_tag(r.tag)) return bad("invalid tag");
    }
    auto first = rest.find('/');
    if (first != std::string_view::npos) {
        auto d = rest.substr(0, first);
        if (d.find('.') != std::string_view::npos || d.find(':') != std::string_view::npos ||
            d == "localhost") {
            if (!valid_domain(d)) return bad("invalid registry address");
            r.domain = std::string(d);
            rest = rest.substr(first + 1);
        }
    }
    if (r.domain.empty()) r.domain = "docker.io";
    if (r.domain == "index.docker.io") r.domain = "docker.io";
    if (rest.empty()) return bad("no repository");
    std::size_t start = 0;
    while (true) {
        auto s = rest.find('/', start);
        auto c = rest.substr(start, s == std::string_view::npos ? s : s - start);
        if (!valid_component(c))
            return bad("a repository name is lowercase letters, digits and separators");
        if (s == std::string_view::npos) break;
        start = s + 1;
    }
    r.path = std::string(rest);
    if (r.domain == "docker.io" && r.path.find('/') == std::string::npos)
        r.path = "library/" + r.path;
    if (r.tag.empty() && r.digest.empty()) r.tag = "latest";
    return r;
}

std::string ImageRef::familiar() const {
    if (domain != "docker.io") return repository();
    if (path.starts_with("library/") && path.find('/', 8) == std::string::npos)
        return path.substr(8);
    return path;
}

std::string ImageRef::familiar_tagged() const {
    return familiar() + ":" + (tag.empty() ? "latest" : tag);
}

std::string ImageRef::transport() const {
    if (!digest.empty()) return "docker://" + repository() + "@" + digest;
    return "docker://" + repository() + ":" + tag;
}

std::string ImageRef::str() const {
    auto s = familiar();
    if (!tag.empty()) s += ":" + tag;
    if (!digest.empty()) s += "@" + digest;
    return s;
}

}  // namespace coffer::model
