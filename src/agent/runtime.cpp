#include "runtime.h"

#include <boost/json.hpp>
#include <fstream>
#include <optional>
#include <sys/stat.h>
#include <unistd.h>

#include "coffer/base/log.h"
#include "coffer/base/mount.h"
#include "coffer/base/process.h"

namespace coffer::agent {
namespace {

std::string find_in_path(std::string_view name) {
    const char* path = ::getenv("PATH");
    std::string_view p = path ? path : "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";
    while (!p.empty()) {
        auto colon = p.find(':');
        auto dir = p.substr(0, colon);
        p = colon == std::string_view::npos ? std::string_view{} : p.substr(colon + 1);
        auto full = fmt::format("{}/{}", dir.empty() ? "." : dir, name);
        if (::access(full.c_str(), X_OK) == 0) return full;
    }
    return {};
}

// The last error the runtime wrote to its JSON log ({"level":"error","msg":...}).
std::string last_logged_error(const std::string& file) {
    std::ifstream in(file);
    std::string line, last;
    while (std::getline(in, line)) {
        boost::system::error_code ec;
        auto v = boost::json::parse(line, ec);
        if (ec || !v.is_object()) continue;
        auto& o = v.as_object();
        auto* level = o.if_contains("level");
        auto* msg = o.if_contains("msg");
        if (level && msg && level->is_string() && msg->is_string() &&
            (level->as_string() == "error" || level->as_string() == "fatal"))
            last = std::string(msg->as_string());
    }
    return last;
}

class CliRuntime final : public OciRuntime {
public:
    CliRuntime(std::string name, std::string binary, std::string root)
        : name_(std::move(name)), binary_(std::move(binary)), root_(std::move(root)) {
        // Run from a sealed copy, the runtime skips copying itself into sealed memory and
        // executing that copy again for every container (13 ms of a 68 ms `runc run` here). The
        // binary as it was at agent start is what runs until the agent restarts.
        try {
            sealed_.emplace(binary_);
            program_ = sealed_->path();
        } catch (const std::exception& e) {
            log::warn("runner", "{}: running {} from its file: {}", name_, binary_, e.what());
            program_ = binary_;
        }
    }

    const std::string& name() const noexcept override { return name_; }

    Result<void> run(const std::string& id, const std::string& bundle,
                     const std::string& pid_file, const std::string& log_file, int stdout_fd,
                     int stderr_fd) override {
        Child::Options o;
        o.argv = base();
        o.program = program_;
        if (name_ == "crun") {
            o.argv.push_back("--log=file:" + log_file);
            o.argv.push_back("--log-format=json");
        } else {
            o.argv.insert(o.argv.end(), {"--log", log_file, "--log-format", "json"});
        }
        o.argv.insert(o.argv.end(),
                      {"run", "--detach", "--bundle", bundle, "--pid-file", pid_file, id});
        o.stdout_fd = stdout_fd;
        o.stderr_fd = stderr_fd;
        int status = Child::spawn(o).wait();
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return {};
        auto why = last_logged_error(log_file);
        return make_error(Errc::internal, why.empty() ? fmt::format("{} run failed", name_) : why);
    }

    Result<std::string> state(const std::string& id) override {
        auto argv = base();
        argv.insert(argv.end(), {"state", id});
        auto r = run_command(argv, program_);
        if (!r.ok()) {
            if (r.err.find("does not exist") != std::string::npos ||
                r.err.find("not exist") != std::string::npos)
                return make_error(Errc::not_found, fmt::format("container {} not found", id));
            return make_error(Errc::internal, fmt::format("{} state: {}", name_, r.describe()));
        }
        boost::system::error_code ec;
        auto v = boost::json::parse(r.out, ec);
        if (ec || !v.is_object() || !v.as_object().contains("status"))
            return make_error(Errc::internal, fmt::format("{} state: unreadable answer", name_));
        return std::string(v.as_object().at("status").as_string());
    }

    Result<void> kill(const std::string& id, int sig, bool all) override {
        std::vector<std::string> args{"kill"};
        if (all) args.push_back("--all");
        args.insert(args.end(), {id, std::to_string(sig)});
        return simple(args);
    }

    Result<void> remove(const std::string& id, bool force) override {
        std::vector<std::string> args{"delete"};
        if (force) args.push_back("--force");
        args.push_back(id);
        return simple(args);
    }

    Result<void> forget_stopped(const std::string& id) override {
        // Both runtimes keep a container's state in <root>/<id>: state.json (runc), status and
        // config.json (crun). Nothing of it is a mount, and it holds no secret bytes.
        auto dir = fmt::format("{}/{}", root_, id);
        struct stat st {};
        if (id.empty() || id.find('/') != std::string::npos || id.starts_with('.') ||
            ::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
            return make_error(Errc::not_found, fmt::format("no state directory for {}", id));
        try {
            remove_tree(dir);
        } catch (const std::exception& e) {
            return make_error(Errc::internal, fmt::format("remove {}: {}", dir, e.what()));
        }
        return {};
    }

    std::vector<std::string> list() override {
        // Both runtimes keep a directory per container under their root: none there, none to
        // list, and the runtime's own start-up (tens of milliseconds) is saved at agent start.
        if (list_dir(root_, true).empty()) return {};
        auto argv = base();
        argv.insert(argv.end(), {"list", "--quiet"});
        auto r = run_command(argv, program_);
        std::vector<std::string> out;
        if (!r.ok()) return out;
        std::string_view s = r.out;
        while (!s.empty()) {
            auto nl = s.find('\n');
            auto line = s.substr(0, nl);
            if (!line.empty()) out.emplace_back(line);
            s = nl == std::string_view::npos ? std::string_view{} : s.substr(nl + 1);
        }
        return out;
    }

private:
    std::vector<std::string> base() const { return {name_, "--root", root_}; }

    Result<void> simple(const std::vector<std::string>& args) {
        auto argv = base();
        argv.insert(argv.end(), args.begin(), args.end());
        auto r = run_command(argv, program_);
        if (r.ok()) return {};
        return make_error(Errc::internal, fmt::format("{} {}: {}", name_, args[0], r.describe()));
    }

    std::string name_;
    std::string binary_;
    std::string root_;
    std::optional<SealedProgram> sealed_;
    std::string program_;  // what is executed: the sealed copy, or binary_
};

}  // namespace

Result<std::unique_ptr<OciRuntime>> make_runtime(std::string_view preferred,
                                                 const std::string& state_root, CgroupMode mode) {
    std::vector<std::string_view> candidates;
    if (!preferred.empty()) {
        if (preferred != "runc" && preferred != "crun")
            return make_error(Errc::invalid_argument,
                              fmt::format("unknown runtime {} (runc or crun)", preferred));
        if (preferred == "crun" && mode == CgroupMode::hybrid)
            return make_error(Errc::unavailable, "crun does not run on a hybrid cgroup host");
        candidates = {preferred};
    } else if (mode == CgroupMode::v2) {
        candidates = {"crun", "runc"};  // crun starts containers faster
    } else {
        candidates = {"runc", "crun"};
        if (mode == CgroupMode::hybrid) candidates.pop_back();
    }
    for (auto c : candidates) {
        auto bin = find_in_path(c);
        if (bin.empty()) continue;
        return std::unique_ptr<OciRuntime>(
            std::make_unique<CliRuntime>(std::string(c), std::move(bin), state_root));
    }
    return make_error(Errc::unavailable,
                      fmt::format("no usable OCI runtime found (tried {})", fmt::join(candidates, ", ")));
}

void Container::reset_stopped() noexcept {
    if (id_.empty() || !rt_) return;
    try {
        auto r = rt_->forget_stopped(id_);
        if (r) {
            id_.clear();
            return;
        }
        log::warn("runner", "forget container {}: {}; deleting it through {}", id_, r.error().message,
                  rt_->name());
    } catch (const std::exception& e) {
        log::warn("runner", "forget container {}: {}", id_, e.what());
    }
    reset();
}

void Container::reset() noexcept {
    if (id_.empty() || !rt_) return;
    try {
        if (auto r = rt_->remove(id_, true); !r)
            log::warn("runner", "delete container {}: {}", id_, r.error().message);
    } catch (const std::exception& e) {
        log::warn("runner", "delete container {}: {}", id_, e.what());
    }
    id_.clear();
}

}  // namespace coffer::agent
