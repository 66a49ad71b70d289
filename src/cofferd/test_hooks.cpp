#include "test_hooks.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <thread>
#include <vector>

#include "coffer/base/log.h"
#include "coffer/crypto/random.h"
#include "coffer/manager/cluster.h"
#include "coffer/nodeproto/networks.h"

namespace coffer::testhooks {
namespace {

// The nodes' side of `service logs`: every task's log is three generated lines
// ("line N of task ID"); the nodes named in COFFER_TEST_LOGS_DOWN do not answer.
class FakeLogs : public manager::NodeTransport {
  public:
    FakeLogs(manager::Cluster& m, std::set<std::string> down)
        : manager_(m), down_(std::move(down)) {}

    void fetch_logs(const std::string& node_id, const std::string& task_id, std::size_t tail,
                    std::chrono::milliseconds, LogsDone done) override {
        auto node = manager_.nodes().find(node_id);
        if (!node || down_.count(node->description.hostname))
            return done(
                make_error(Errc::unavailable, fmt::format("node {} is not connected", node_id)));
        std::string out;
        for (int i = 1; i <= 3; ++i)
            if (tail == 0 || i > 3 - static_cast<int>(std::min<std::size_t>(tail, 3)))
                out += fmt::format("line {} of task {}\n", i, task_id);
        done(std::move(out));
    }

  private:
    manager::Cluster& manager_;
    std::set<std::string> down_;
};

std::set<std::string> split_names(const char* list) {
    std::set<std::string> out;
    std::string_view rest = list ? list : "";
    while (!rest.empty()) {
        auto comma = rest.find(',');
        out.emplace(rest.substr(0, comma));
        rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    }
    return out;
}

class FakeAgents : public Hooks {
  public:
    explicit FakeAgents(manager::Cluster& m) : manager_(m) {}
    ~FakeAgents() override {
        if (logs_) manager_.set_node_transport(nullptr);
        stop_ = true;
        for (auto& t : threads_) t.join();
    }

    void serve_logs(std::set<std::string> down) {
        logs_ = std::make_unique<FakeLogs>(manager_, std::move(down));
        manager_.set_node_transport(logs_.get());
    }

    // COFFER_TEST_NETWORKS_DIR: each fake agent writes the last networks message it got, as
    // the wire carries it (encoded, then decoded as an agent decodes it), to <dir>/<host>.json.
    static void keep_networks(const std::string& host, const nodeproto::NetworksMessage& m) {
        const char* dir = std::getenv("COFFER_TEST_NETWORKS_DIR");
        if (dir == nullptr || *dir == 0) return;
        auto wire = nodeproto::encode(m);
        std::string path = std::string(dir) + "/" + host + ".json";
        auto decoded = nodeproto::decode_networks(wire);
        std::ofstream out(path + ".tmp", std::ios::trunc);
        if (!decoded) {
            out << "refused: " << decoded.error().message;
        } else {
            out.write(reinterpret_cast<const char*>(wire.data()),
                      static_cast<std::streamsize>(wire.size()));
        }
        out.close();
        std::rename((path + ".tmp").c_str(), path.c_str());
    }

    void run_agent(std::string node_id, std::string host) {
        threads_.emplace_back([this, node_id, host] {
            auto stream = manager_.dispatcher().subscribe(node_id);
            if (!stream) return;
            while (!stop_) {
                // As the node port does: the networks first, then the tasks that need them.
                if (auto n = (*stream)->poll_networks()) keep_networks(host, *n);
                auto msg = (*stream)->next(std::chrono::milliseconds(100));
                if (!msg) continue;
                std::vector<manager::StatusReport> reports;
                for (const auto& c : msg->changes) {
                    if (c.is_secret) continue;
                    manager::StatusReport r;
                    r.task_id = c.id;
                    if (c.action == manager::AssignmentChange::Action::add) {
                        r.state = model::TaskState::running;
                        r.message = "started";
                        r.container = model::ContainerStatus{"fake-" + c.id, 1, 0};
                    } else {
                        r.state = model::TaskState::shutdown;
                        r.message = "shutdown";
                        r.container = model::ContainerStatus{"fake-" + c.id, 0, 0};
                    }
                    reports.push_back(std::move(r));
                }
                if (!reports.empty()) (void)manager_.dispatcher().report(node_id, reports);
            }
        });
    }

  private:
    manager::Cluster& manager_;
    std::atomic<bool> stop_{false};
    std::vector<std::thread> threads_;
    std::unique_ptr<FakeLogs> logs_;
};

}  // namespace

std::unique_ptr<Hooks> start(manager::Cluster& m) {
    auto hooks = std::make_unique<FakeAgents>(m);
    const char* nodes = std::getenv("COFFER_TEST_NODES");
    if (!nodes || !*nodes || m.locked()) return hooks;
    const char* agents = std::getenv("COFFER_TEST_AGENTS");
    if (const char* logs = std::getenv("COFFER_TEST_LOGS"); logs && std::string_view(logs) == "1")
        hooks->serve_logs(split_names(std::getenv("COFFER_TEST_LOGS_DOWN")));
    std::string_view rest = nodes;
    while (!rest.empty()) {
        auto comma = rest.find(',');
        std::string_view entry = rest.substr(0, comma);
        rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
        // host[/CPUS/MEMORY_BYTES]: the resources the node reports.
        auto slash = entry.find('/');
        std::string host(entry.substr(0, slash));
        manager::NodeRegistration reg;
        reg.id = crypto::random_id();
        reg.description.hostname = host;
        if (slash != std::string_view::npos) {
            std::string res(entry.substr(slash + 1));
            reg.description.nano_cpus = std::atoll(res.c_str()) * model::second_ns;
            if (auto mem = res.find('/'); mem != std::string::npos)
                reg.description.memory_bytes = std::atoll(res.c_str() + mem + 1);
        }
        reg.addr = "127.0.0.1";
        auto n = m.nodes().register_node(std::move(reg));
        if (!n) continue;
        log::warn("manager", "test hook: node {} ({}) registered", n->meta.id, host);
        if (agents && std::string_view(agents) == "1") hooks->run_agent(n->meta.id, host);
    }
    return hooks;
}

}  // namespace coffer::testhooks
