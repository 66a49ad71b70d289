#include "test_hooks.h"

#include <atomic>
#include <cstdlib>
#include <thread>
#include <vector>

#include "coffer/base/log.h"
#include "coffer/crypto/random.h"
#include "coffer/manager/manager.h"

namespace coffer::testhooks {
namespace {

class FakeAgents : public Hooks {
public:
    explicit FakeAgents(manager::Manager& m) : manager_(m) {}
    ~FakeAgents() override {
        stop_ = true;
        for (auto& t : threads_) t.join();
    }

    void run_agent(std::string node_id) {
        threads_.emplace_back([this, node_id] {
            auto stream = manager_.dispatcher().subscribe(node_id);
            if (!stream) return;
            while (!stop_) {
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
    manager::Manager& manager_;
    std::atomic<bool> stop_{false};
    std::vector<std::thread> threads_;
};

}  // namespace

std::unique_ptr<Hooks> start(manager::Manager& m) {
    auto hooks = std::make_unique<FakeAgents>(m);
    const char* nodes = std::getenv("COFFER_TEST_NODES");
    if (!nodes || !*nodes || m.locked()) return hooks;
    const char* agents = std::getenv("COFFER_TEST_AGENTS");
    std::string_view rest = nodes;
    while (!rest.empty()) {
        auto comma = rest.find(',');
        std::string host(rest.substr(0, comma));
        rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
        manager::NodeRegistration reg;
        reg.id = crypto::random_id();
        reg.description.hostname = host;
        reg.addr = "127.0.0.1";
        auto n = m.nodes().register_node(std::move(reg));
        if (!n) continue;
        log::warn("manager", "test hook: node {} ({}) registered", n->meta.id, host);
        if (agents && std::string_view(agents) == "1") hooks->run_agent(n->meta.id);
    }
    return hooks;
}

}  // namespace coffer::testhooks
