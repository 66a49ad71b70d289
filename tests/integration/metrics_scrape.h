// Reading a metrics listener in tests: one HTTP GET, the exposition parsed into samples, and the
// metric names docs/metrics.md lists for a program.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace coffer::test {

struct HttpAnswer {
    int status = 0;
    std::string head, body;
};

inline HttpAnswer parse_http_answer(const std::string& raw) {
    HttpAnswer a;
    auto end = raw.find("\r\n\r\n");
    if (raw.rfind("HTTP/1.1 ", 0) != 0 || end == std::string::npos) return a;
    a.status = std::stoi(raw.substr(9, 3));
    a.head = raw.substr(0, end);
    a.body = raw.substr(end + 4);
    return a;
}

// GET path from 127.0.0.1:port (this network namespace).
inline HttpAnswer http_get(std::uint16_t port, const std::string& path) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    std::string raw;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0) {
        auto req = "GET " + path + " HTTP/1.1\r\nHost: localhost\r\n\r\n";
        (void)!::write(fd, req.data(), req.size());
        char buf[8192];
        for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) raw.append(buf, n);
    }
    ::close(fd);
    return parse_http_answer(raw);
}

struct Exposition {
    std::map<std::string, double> samples;     // "name{labels}" -> value
    std::map<std::string, std::string> types;  // name -> counter, gauge, histogram
    std::vector<std::string> bad_lines;        // lines that are not of the text format

    // The sample's value, or -1 when absent.
    double value(const std::string& series) const {
        auto it = samples.find(series);
        return it == samples.end() ? -1 : it->second;
    }
};

// Checks each line against the text format 0.0.4 as it parses it.
inline Exposition parse_exposition(const std::string& text) {
    static const std::regex help(R"(# HELP [a-zA-Z_:][a-zA-Z0-9_:]* .*)");
    static const std::regex type(R"(# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram))");
    static const std::regex sample(
        R"(([a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\["\\n])*",?)*\})?) )"
        R"(([-+]?([0-9.]+(e[-+]?[0-9]+)?|Inf)|NaN))");
    Exposition e;
    std::istringstream in(text);
    std::smatch m;
    for (std::string line; std::getline(in, line);) {
        if (std::regex_match(line, m, type))
            e.types[m[1]] = m[2];
        else if (std::regex_match(line, help))
            continue;
        else if (std::regex_match(line, m, sample))
            e.samples[m[1]] = std::stod(m[5]);
        else
            e.bad_lines.push_back(line);
    }
    return e;
}

// The metric names docs/metrics.md lists for program ("cofferd", "coffer-agent", or "both"
// rows, which count for each): rows of the form "| `name` | type | program | ... |".
inline std::map<std::string, std::string> documented_metrics(const std::string& program) {
    std::ifstream in(std::string(COFFER_SOURCE_ROOT) + "/docs/metrics.md");
    static const std::regex row(
        R"(\| `([a-z_:]+)` \| (counter|gauge|histogram) \| ([a-z-]+) \|.*)");
    std::map<std::string, std::string> out;
    std::smatch m;
    for (std::string line; std::getline(in, line);)
        if (std::regex_match(line, m, row) && (m[3] == program || m[3] == "both")) out[m[1]] = m[2];
    return out;
}

}  // namespace coffer::test
