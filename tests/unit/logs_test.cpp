// The logs routes of the manager's API on a real Cluster (sealed store, orchestrator thread), with
// a test NodeTransport standing in for the node port: framing, Swarm's details, validation, and
// what happens when nodes answer late or not at all.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <condition_variable>
#include <filesystem>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include "api_logs.h"
#include "coffer/crypto/random.h"
#include "coffer/crypto/secure_buffer.h"
#include "coffer/manager/api.h"
#include "coffer/manager/cluster.h"
#include "coffer/model/service_json.h"

using namespace coffer;
using namespace coffer::manager;
namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

// Answers fetch_logs with the text set per node, or an error; with hold() set, keeps the
// callbacks until release() answers them from another thread.
class TestTransport : public NodeTransport {
  public:
    struct Call {
        std::string node_id, task_id;
        std::size_t tail;
        std::chrono::milliseconds timeout;
    };

    void fetch_logs(const std::string& node_id, const std::string& task_id, std::size_t tail,
                    std::chrono::milliseconds timeout, LogsDone done) override {
        std::unique_lock lock(mutex_);
        calls_.push_back({node_id, task_id, tail, timeout});
        auto answer = answer_for(node_id, task_id);
        if (hold_) {
            held_.emplace_back(std::move(done), std::move(answer));
            changed_.notify_all();
            return;
        }
        lock.unlock();
        done(std::move(answer));
    }

    void set_text(const std::string& node_id, std::string text) {
        text_[node_id] = std::move(text);
    }
    void set_error(const std::string& node_id, Error e) { errors_[node_id] = std::move(e); }
    void hold() { hold_ = true; }
    // Waits until n calls are held, then answers them all from another thread.
    bool release(std::size_t n) {
        std::unique_lock lock(mutex_);
        if (!changed_.wait_for(lock, std::chrono::seconds(5), [&] { return held_.size() >= n; }))
            return false;
        auto held = std::move(held_);
        lock.unlock();
        std::thread([held = std::move(held)]() mutable {
            for (auto& [done, answer] : held) done(std::move(answer));
        }).join();
        return true;
    }
    std::vector<Call> calls() {
        std::lock_guard lock(mutex_);
        return calls_;
    }

  private:
    Result<std::string> answer_for(const std::string& node_id, const std::string& task_id) {
        if (auto it = errors_.find(node_id); it != errors_.end()) return it->second;
        if (auto it = text_.find(node_id); it != text_.end()) return it->second;
        return "hello from " + task_id + "\n";
    }

    std::mutex mutex_;
    std::condition_variable changed_;
    std::vector<Call> calls_;
    std::vector<std::pair<LogsDone, Result<std::string>>> held_;
    std::map<std::string, std::string> text_;
    std::map<std::string, Error> errors_;
    bool hold_ = false;
};

struct Frame {
    int stream;
    std::string payload;
};

std::vector<Frame> frames_of(const std::string& body) {
    std::vector<Frame> out;
    std::size_t at = 0;
    while (at < body.size()) {
        EXPECT_GE(body.size() - at, 8u);
        if (body.size() - at < 8) break;
        auto b = [&](std::size_t i) { return static_cast<std::uint8_t>(body[at + i]); };
        EXPECT_EQ(b(1) | b(2) | b(3), 0);
        std::size_t n =
            (std::size_t{b(4)} << 24) | (std::size_t{b(5)} << 16) | (std::size_t{b(6)} << 8) | b(7);
        EXPECT_LE(at + 8 + n, body.size());
        out.push_back({b(0), body.substr(at + 8, n)});
        at += 8 + n;
    }
    return out;
}

bool wait_for(const std::function<bool()>& cond) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!cond()) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return true;
}

class Logs : public ::testing::Test {
  protected:
    void SetUp() override {
        crypto::init();
        auto pattern = (fs::temp_directory_path() / "coffer-logs-test-XXXXXX").string();
        ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
        dir_ = pattern;
        auto opened = Cluster::open({.data_dir = dir_ / "data"});
        ASSERT_TRUE(opened.ok()) << opened.error().message;
        manager_ = std::move(opened->cluster);
        api_ = &manager_->api();
        node_a_ = node("host-a");
        node_b_ = node("host-b");
    }
    void TearDown() override {
        if (manager_) manager_->set_node_transport(nullptr);
        api_ = nullptr;
        manager_.reset();
        fs::remove_all(dir_);
    }

    std::string node(const std::string& host) {
        NodeRegistration r;
        r.id = crypto::random_id();
        r.description.hostname = host;
        auto n = manager_->nodes().register_node(std::move(r));
        EXPECT_TRUE(n.ok());
        return n.ok() ? n->meta.id : "";
    }

    // A service of `replicas` tasks, placed by the orchestrator and reported running.
    std::string service(const std::string& name, int replicas) {
        json::object o{
            {"Name", name},
            {"TaskTemplate", json::object{{"ContainerSpec", json::object{{"Image", "busybox:1"}}}}},
            {"Mode", json::object{{"Replicated", json::object{{"Replicas", replicas}}}}}};
        auto spec = model::service_spec_from_json(o);
        EXPECT_TRUE(spec.ok());
        auto s = manager_->services().create(std::move(*spec));
        EXPECT_TRUE(s.ok()) << s.error().message;
        auto id = s->meta.id;
        EXPECT_TRUE(
            wait_for([&] { return placed(id).size() == static_cast<std::size_t>(replicas); }));
        for (const auto& t : placed(id)) {
            StatusReport r{t.meta.id, model::TaskState::running, "started", "",
                           model::ContainerStatus{"c", 1, 0}};
            EXPECT_TRUE(manager_->dispatcher().report(t.node_id, {r}).ok());
        }
        return id;
    }
    std::vector<model::Task> placed(const std::string& service_id) {
        return manager_->tasks().list(
            [&](const model::Task& t) { return t.service_id == service_id && !t.node_id.empty(); });
    }

    net::Response get(const std::string& target) {
        net::Request r;
        r.method = "GET";
        net::parse_target(target, r);
        EXPECT_TRUE(api_->asynchronous(r)) << target;
        std::promise<net::Response> p;
        api_->handle_async(r, [&](net::Response resp) { p.set_value(std::move(resp)); });
        auto f = p.get_future();
        EXPECT_EQ(f.wait_for(std::chrono::seconds(10)), std::future_status::ready) << target;
        return f.get();
    }
    std::string message(const net::Response& r) {
        return std::string(json::parse(r.body).at("message").as_string());
    }

    fs::path dir_;
    std::unique_ptr<Cluster> manager_;
    Api* api_ = nullptr;  // the cluster's
    std::string node_a_, node_b_;
    TestTransport transport_;
};

}  // namespace

TEST(LogsFraming, FrameHeaderIsStreamThenBigEndianSize) {
    std::string out;
    append_frame(out, LogStream::stdout_, std::string(0x0102, 'x'));
    append_frame(out, LogStream::system, "e\n");
    ASSERT_EQ(out.size(), 8u + 0x0102 + 8 + 2);
    EXPECT_EQ(out.substr(0, 8), std::string("\x01\0\0\0\0\0\x01\x02", 8));
    EXPECT_EQ(out.substr(8 + 0x0102, 8), std::string("\x03\0\0\0\0\0\0\x02", 8));
    EXPECT_EQ(out.substr(out.size() - 2), "e\n");
}

TEST(LogsFraming, DetailsAreSortedAndQueryEscaped) {
    EXPECT_EQ(
        log_details("n1", "s1", "t1"),
        "com.docker.swarm.node.id=n1,com.docker.swarm.service.id=s1,com.docker.swarm.task.id=t1");
    EXPECT_EQ(log_details("a b", "x,y", "p=q"),
              "com.docker.swarm.node.id=a+b,com.docker.swarm.service.id=x%2Cy,com.docker.swarm."
              "task.id=p%3Dq");
}

TEST_F(Logs, ServiceLogsAreOneFramePerLineWithSwarmDetails) {
    manager_->set_node_transport(&transport_);
    auto svc = service("web", 2);
    transport_.set_text(node_a_, "one\ntwo\n");
    transport_.set_text(node_b_, "three\nno newline at the end");
    auto r = get("/v1.41/services/web/logs?stdout=1&stderr=1&details=1");
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.content_type, "application/vnd.docker.multiplexed-stream");
    auto frames = frames_of(r.body);
    ASSERT_EQ(frames.size(), 4u);
    std::map<std::string, std::vector<std::string>> by_task;
    for (const auto& f : frames) {
        EXPECT_EQ(f.stream, 1);
        auto sp = f.payload.find(' ');
        ASSERT_NE(sp, std::string::npos);
        by_task[f.payload.substr(0, sp)].push_back(f.payload.substr(sp + 1));
    }
    for (const auto& t : placed(svc)) {
        auto key = log_details(t.node_id, svc, t.meta.id);
        ASSERT_TRUE(by_task.count(key)) << key;
        if (t.node_id == node_a_)
            EXPECT_EQ(by_task[key], (std::vector<std::string>{"one\n", "two\n"}));
        else
            EXPECT_EQ(by_task[key],
                      (std::vector<std::string>{"three\n", "no newline at the end\n"}));
    }
    for (const auto& c : transport_.calls()) {
        EXPECT_EQ(c.tail, 0u);  // all
        EXPECT_GT(c.timeout.count(), 0);
    }
}

TEST_F(Logs, WithoutDetailsLinesAreBareAndTailIsPerTask) {
    manager_->set_node_transport(&transport_);
    service("web", 1);
    // A node that sends more than it was asked for is trimmed here.
    transport_.set_text(node_a_, "1\n2\n3\n4\n");
    transport_.set_text(node_b_, "1\n2\n3\n4\n");
    auto r = get("/services/web/logs?stdout=true&tail=2");
    ASSERT_EQ(r.status, 200) << r.body;
    auto frames = frames_of(r.body);
    ASSERT_EQ(frames.size(), 2u);
    EXPECT_EQ(frames[0].payload, "3\n");
    EXPECT_EQ(frames[1].payload, "4\n");
    ASSERT_EQ(transport_.calls().size(), 1u);
    EXPECT_EQ(transport_.calls()[0].tail, 2u);
}

TEST_F(Logs, TaskLogsComeFromItsNodeAndTailZeroAsksNoNode) {
    manager_->set_node_transport(&transport_);
    auto svc = service("web", 2);
    auto task = placed(svc).at(0);
    auto r = get("/v1.41/tasks/" + task.meta.id + "/logs?stdout=1&details=1");
    ASSERT_EQ(r.status, 200) << r.body;
    auto frames = frames_of(r.body);
    ASSERT_EQ(frames.size(), 1u);
    EXPECT_EQ(frames[0].payload,
              log_details(task.node_id, svc, task.meta.id) + " hello from " + task.meta.id + "\n");
    ASSERT_EQ(transport_.calls().size(), 1u);
    EXPECT_EQ(transport_.calls()[0].node_id, task.node_id);

    auto none = get("/tasks/" + task.meta.id + "/logs?stdout=1&tail=0");
    EXPECT_EQ(none.status, 200);
    EXPECT_TRUE(none.body.empty());
    EXPECT_EQ(transport_.calls().size(), 1u);
}

TEST_F(Logs, UnreachableNodeIsSkippedAndNamedAtTheEnd) {
    manager_->set_node_transport(&transport_);
    auto svc = service("web", 2);
    transport_.set_error(node_b_, make_error(Errc::unavailable, "node is not connected"));
    auto r = get("/services/" + svc + "/logs?stdout=1&stderr=1");
    ASSERT_EQ(r.status, 200) << r.body;
    auto frames = frames_of(r.body);
    ASSERT_EQ(frames.size(), 2u);
    EXPECT_EQ(frames[0].stream, 1);
    EXPECT_EQ(frames[0].payload.rfind("hello from ", 0), 0u) << frames[0].payload;
    EXPECT_EQ(frames[1].stream, 3);
    EXPECT_EQ(frames[1].payload,
              "Error grabbing logs: warning: incomplete log stream. some logs could not be "
              "retrieved for the "
              "following reasons: node " +
                  node_b_ + " is not available\n");
}

TEST_F(Logs, WithoutANodePortEveryNodeIsUnavailable) {
    service("web", 1);
    auto r = get("/services/web/logs?stdout=1");
    ASSERT_EQ(r.status, 200) << r.body;
    auto frames = frames_of(r.body);
    ASSERT_EQ(frames.size(), 1u);
    EXPECT_EQ(frames[0].stream, 3);
    EXPECT_NE(frames[0].payload.find(" is not available"), std::string::npos) << frames[0].payload;
}

TEST_F(Logs, NodesAreAskedTogetherAndTheAnswerWaitsForAll) {
    manager_->set_node_transport(&transport_);
    service("web", 2);
    transport_.hold();
    net::Request r;
    r.method = "GET";
    net::parse_target("/services/web/logs?stdout=1", r);
    std::promise<net::Response> p;
    api_->handle_async(r, [&](net::Response resp) { p.set_value(std::move(resp)); });
    auto f = p.get_future();
    // handle_async returned with both nodes asked and neither answered: no thread waits.
    EXPECT_EQ(transport_.calls().size(), 2u);
    EXPECT_EQ(f.wait_for(std::chrono::milliseconds(0)), std::future_status::timeout);
    ASSERT_TRUE(transport_.release(2));
    ASSERT_EQ(f.wait_for(std::chrono::seconds(10)), std::future_status::ready);
    auto resp = f.get();
    EXPECT_EQ(resp.status, 200);
    EXPECT_EQ(frames_of(resp.body).size(), 2u);
}

TEST_F(Logs, QueryIsValidatedAsDockerDoes) {
    manager_->set_node_transport(&transport_);
    auto svc = service("web", 1);
    struct Case {
        std::string query;
        int status;
        std::string message;
    };
    for (const auto& c : std::vector<Case>{
             {"", 400, "Bad parameters: you must choose at least one stream"},
             {"stdout=0&stderr=false", 400, "Bad parameters: you must choose at least one stream"},
             {"stdout=1&tail=-1", 400, "negative tail values not supported"},
             {"stdout=1&tail=ten", 400, R"(tail value must be a positive integer or "all")"},
             {"stdout=1&tail=99999999999999999999999", 400,
              R"(tail value must be a positive integer or "all")"},
             {"stdout=1&timestamps=1", 400,
              "timestamps are not supported: coffer agents record task output without the time of "
              "each line"},
             {"stdout=1&since=yesterday", 400,
              "could not parse since timestamp: invalid value \"yesterday\""},
             {"stdout=1&follow=1", 400,
              "follow is not supported: coffer answers with the output the tasks have written so "
              "far; run without --follow (-f)"},
             {"stdout=1&since=1700000000.000000001", 400,
              "since is not supported: coffer agents record task output without the time of each "
              "line"},
         }) {
        auto r = get("/services/web/logs?" + c.query);
        EXPECT_EQ(r.status, c.status) << c.query;
        EXPECT_EQ(message(r), c.message) << c.query;
    }
    EXPECT_TRUE(transport_.calls().empty());
    for (const auto& ok : {"stdout=1&tail=all", "stdout=1&since=0", "stdout=1&since=0.000000000",
                           "stdout=1&tail=%2B3", "stdout=1&follow=0&timestamps=0"})
        EXPECT_EQ(get(std::string("/services/web/logs?") + ok).status, 200) << ok;
    // stderr alone: the combined output is the stdout stream, so there is nothing to send.
    auto err_only = get("/services/web/logs?stderr=1");
    EXPECT_EQ(err_only.status, 200);
    EXPECT_TRUE(err_only.body.empty());

    auto missing = get("/services/nosuch/logs?stdout=1");
    EXPECT_EQ(missing.status, 404);
    EXPECT_EQ(message(missing), "service nosuch not found");
    auto no_task = get("/v1.41/tasks/nosuch/logs?stdout=1");
    EXPECT_EQ(no_task.status, 404);
    EXPECT_EQ(message(no_task), "task nosuch not found");
}
