#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

#include "coffer/net/http.h"
#include "coffer/net/http_client.h"
#include "coffer/net/http_server.h"

using namespace coffer;
using namespace coffer::net;
namespace fs = std::filesystem;

TEST(Target, DecodesPathAndQuery) {
    Request r;
    parse_target("/secrets/a%20b?filters=%7B%22name%22%3A%7B%22s%22%3Atrue%7D%7D&x=1+2&flag", r);
    EXPECT_EQ(r.path, "/secrets/a b");
    EXPECT_EQ(r.param("filters"), R"({"name":{"s":true}})");
    EXPECT_EQ(r.param("x"), "1 2");
    EXPECT_EQ(r.param("flag"), "");
    EXPECT_EQ(r.param("missing"), "");
    // A name given twice means its first value (Go's Query().Get()).
    Request twice;
    parse_target("/services/x/update?version=1&version=7", twice);
    EXPECT_EQ(twice.param("version"), "1");
    EXPECT_EQ(percent_decode("%zz%4", false), "%zz%4");
    EXPECT_EQ(percent_encode(R"({"a":1})"), "%7B%22a%22%3A1%7D");
}

TEST(Response, ErrorIsDockerShaped) {
    auto r = Response::error(Error{Errc::not_found, "secret \"x\" not found"});
    EXPECT_EQ(r.status, 404);
    EXPECT_EQ(r.body, R"({"message":"secret \"x\" not found"})");
    EXPECT_EQ(r.content_type, "application/json");
}

namespace {

class Echo : public Service {
  public:
    bool blocking(const Request& r) const override { return r.method == "POST"; }
    Response handle(Request& r) override {
        if (r.path == "/slow") std::this_thread::sleep_for(std::chrono::milliseconds(1));
        on_worker = std::this_thread::get_id() != io_thread_hint;
        if (r.path == "/secure") {
            auto resp =
                Response::secure_json(200, crypto::SecureBuffer::copy_of(R"({"Key":"k1"})"));
            resp.headers.emplace_back("X-Extra", "1");
            return resp;
        }
        return Response::json(
            200, std::string(r.method) + " " + r.path + " " + std::string(r.body_view()));
    }
    std::thread::id io_thread_hint;
    std::atomic<bool> on_worker{false};
};

struct Server {
    fs::path dir = fs::temp_directory_path() / ("coffer-net-" + std::to_string(::getpid()));
    Echo echo;
    std::unique_ptr<HttpServer> server;
    std::thread thread;

    Server() {
        fs::create_directories(dir);
        server = std::make_unique<HttpServer>(ServerOptions{.socket_path = dir / "s.sock",
                                                            .body_limit = 1024,
                                                            .io_threads = 1,
                                                            .worker_threads = 2,
                                                            .headers = {{"Api-Version", "1.41"}}},
                                              echo);
        thread = std::thread([this] { server->run(false); });
    }
    ~Server() {
        server->stop();
        thread.join();
        server.reset();
        fs::remove_all(dir);
    }
    std::string host() const { return "unix://" + (dir / "s.sock").string(); }
};

std::span<const std::uint8_t> bytes(std::string_view s) {
    return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

}  // namespace

TEST(HttpServer, ServesKeepAliveRequestsWithHeaders) {
    Server s;
    auto c = HttpClient::connect(s.host());
    ASSERT_TRUE(c.ok()) << c.error().message;
    for (int i = 0; i < 3; ++i) {
        auto r = (*c)->request("GET", "/x?y=1");
        ASSERT_TRUE(r.ok());
        EXPECT_EQ(r->status, 200);
        EXPECT_EQ(r->body, "GET /x ");
        EXPECT_EQ(r->headers["api-version"], "1.41");
    }
    auto p = (*c)->request("POST", "/y", bytes("body"));
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(p->body, "POST /y body");
}

TEST(HttpServer, SendsASecureBodyWithItsLengthAndHeaders) {
    Server s;
    auto c = HttpClient::connect(s.host());
    ASSERT_TRUE(c.ok()) << c.error().message;
    for (int i = 0; i < 2; ++i) {  // the connection stays usable after a secure body
        auto r = (*c)->request("GET", "/secure");
        ASSERT_TRUE(r.ok()) << r.error().message;
        EXPECT_EQ(r->status, 200);
        EXPECT_EQ(r->body, R"({"Key":"k1"})");
        EXPECT_EQ(r->headers["content-length"], "12");
        EXPECT_EQ(r->headers["content-type"], "application/json");
        EXPECT_EQ(r->headers["api-version"], "1.41");
        EXPECT_EQ(r->headers["x-extra"], "1");
    }
    auto head = (*c)->request("HEAD", "/secure");
    ASSERT_TRUE(head.ok()) << head.error().message;
    EXPECT_EQ(head->status, 200);
    EXPECT_EQ(head->body, "");
    auto after = (*c)->request("GET", "/x");
    ASSERT_TRUE(after.ok());
    EXPECT_EQ(after->body, "GET /x ");
}

TEST(HttpServer, RefusesBodiesOverTheLimit) {
    Server s;
    auto c = HttpClient::connect(s.host());
    ASSERT_TRUE(c.ok());
    std::string big(2048, 'x');
    auto r = (*c)->request("POST", "/y", bytes(big));
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->status, 413);
    EXPECT_NE(r->body.find("exceeds the limit of 1024 bytes"), std::string::npos) << r->body;
}

TEST(HttpServer, AnswersMalformedRequestsWith400AndKeepsServing) {
    Server s;
    auto c = HttpClient::connect(s.host());
    ASSERT_TRUE(c.ok());
    // A raw garbage request on its own connection.
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    auto path = (s.dir / "s.sock").string();
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    std::string garbage = "\x01\x02 NOT HTTP\r\n\r\n";
    ASSERT_GT(::write(fd, garbage.data(), garbage.size()), 0);
    char buf[512] = {};
    ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    ASSERT_GT(n, 0);
    EXPECT_NE(std::string(buf).find("400"), std::string::npos) << buf;
    auto r = (*c)->request("GET", "/still");
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->status, 200);
}

TEST(HttpServer, RefusesToStealALiveSocket) {
    Server s;
    Echo other;
    EXPECT_THROW(HttpServer(ServerOptions{.socket_path = s.dir / "s.sock"}, other),
                 std::runtime_error);
}

TEST(HttpClient, ReportsNothingListening) {
    auto c = HttpClient::connect("unix:///nonexistent/coffer.sock");
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.error().code, Errc::unavailable);
    EXPECT_FALSE(HttpClient::connect("tcp://1.2.3.4:1").ok());
}
