#include "net_tools.h"

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include "coffer/base/process.h"
#include "coffer/base/unique_fd.h"

namespace coffer::agent {

namespace {

constexpr std::size_t max_output = 4 << 20;

UniqueFd memory_file(const char* name) {
    UniqueFd fd(::memfd_create(name, MFD_CLOEXEC));
    if (!fd) throw_errno("memfd_create");
    return fd;
}

std::string read_all(int fd) {
    std::string text;
    if (::lseek(fd, 0, SEEK_SET) < 0) throw_errno("seek");
    char buf[8192];
    ssize_t n;
    while (text.size() < max_output && (n = ::read(fd, buf, sizeof buf)) > 0)
        text.append(buf, static_cast<std::size_t>(n));
    return text;
}

std::string last_line(std::string_view text) {
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.remove_suffix(1);
    auto nl = text.rfind('\n');
    return std::string(nl == std::string_view::npos ? text : text.substr(nl + 1));
}

}  // namespace

bool ToolResult::ok() const noexcept {
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

std::string ToolResult::describe(const std::vector<std::string>& argv) const {
    std::string what = WIFEXITED(status)     ? fmt::format("exit {}", WEXITSTATUS(status))
                       : WIFSIGNALED(status) ? fmt::format("signal {}", WTERMSIG(status))
                                             : "did not finish";
    auto line = last_line(err);
    return fmt::format("{}: {}{}{}", fmt::join(argv, " "), what, line.empty() ? "" : ": ", line);
}

ToolResult run_tool(const ToolRun& run) {
    auto in = memory_file("tool-in");
    auto out = memory_file("tool-out");
    auto err = memory_file("tool-err");
    if (!run.input.empty()) {
        std::size_t done = 0;
        while (done < run.input.size()) {
            auto n = ::write(in.get(), run.input.data() + done, run.input.size() - done);
            if (n <= 0) throw_errno("write tool input");
            done += static_cast<std::size_t>(n);
        }
        if (::lseek(in.get(), 0, SEEK_SET) < 0) throw_errno("seek");
    }
    Child::Options o;
    o.argv = run.argv;
    o.program = run.program;
    o.env = run.env;
    o.stdin_fd = run.input.empty() ? -1 : in.get();
    o.stdout_fd = out.get();
    o.stderr_fd = err.get();
    auto child = Child::spawn(o);
    ToolResult r;
    auto status = child.wait_for(run.timeout);
    if (!status) {
        child.signal(SIGKILL);
        r.status = child.wait();
        r.err = "timed out";
        return r;
    }
    r.status = *status;
    r.out = read_all(out.get());
    r.err = read_all(err.get());
    return r;
}

Result<std::string> tool(const std::vector<std::string>& argv, const std::string& input) {
    ToolRun run;
    run.argv = argv;
    run.input = input;
    auto r = run_tool(run);
    if (!r.ok()) return make_error(Errc::internal, r.describe(argv));
    return std::move(r.out);
}

}  // namespace coffer::agent
