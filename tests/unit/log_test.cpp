#include <unistd.h>

#include <string>

#include <gtest/gtest.h>

#include "coffer/base/log.h"

using namespace coffer::log;

TEST(LogFormat, TextLineHasTimeLevelCategoryAndMessage) {
    auto line = format_line(Format::text, "2024-05-01T12:00:00.000001Z", "store", Level::warn,
                            "slow write");
    EXPECT_EQ(line, "2024-05-01T12:00:00.000001Z WARN store: slow write");
}

TEST(LogFormat, TextKeepsOneEventOnOneLine) {
    auto line = format_line(Format::text, "T", "api", Level::info, "a\nb\rc");
    EXPECT_EQ(line, "T INFO api: a\\nb\\rc");
}

TEST(LogFormat, JsonLineIsOneObject) {
    auto line = format_line(Format::json, "2024-05-01T12:00:00.000001Z", "dispatcher", Level::error,
                            "node n1 \"gone\"\\ now\n\ttab");
    EXPECT_EQ(line,
              R"({"time":"2024-05-01T12:00:00.000001Z","level":"error","category":"dispatcher",)"
              R"("message":"node n1 \"gone\"\\ now\n\ttab"})");
}

TEST(LogFormat, JsonEscapesControlBytesAndInvalidUtf8) {
    EXPECT_EQ(json_escape(std::string("a\x01z\x7f", 4)), "a\\u0001z\\u007f");
    EXPECT_EQ(json_escape("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x91"),
              "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x91");
    EXPECT_EQ(json_escape("\xff"), "\\ufffd");
    EXPECT_EQ(json_escape("\xc3"), "\\ufffd");                        // truncated
    EXPECT_EQ(json_escape("\xc0\xaf"), "\\ufffd\\ufffd");             // overlong
    EXPECT_EQ(json_escape("\xed\xa0\x80"), "\\ufffd\\ufffd\\ufffd");  // a surrogate
    EXPECT_EQ(json_escape(std::string("nul\0", 4)), "nul\\u0000");
}

TEST(LogFormat, FormatNamesAreChecked) {
    EXPECT_TRUE(set_format("json"));
    EXPECT_TRUE(set_format("text"));
    EXPECT_FALSE(set_format("xml"));
}

TEST(LogLevels, ASpecThatIsNotOneIsRefusedAndChangesNothing) {
    ASSERT_EQ(configure("warn,store=debug"), "");
    EXPECT_TRUE(enabled("store", Level::debug));
    EXPECT_FALSE(enabled("api", Level::info));
    for (const char* bad : {"bogus", "DEBUG", "debg", "info,store", "info,store=verbose",
                            "info,=debug", "info,", "", ",info"}) {
        auto why = configure(bad);
        EXPECT_NE(why, "") << bad;
        EXPECT_NE(why.find("levels: debug, info, warn, error, off"), std::string::npos) << why;
        // What was set before still holds.
        EXPECT_TRUE(enabled("store", Level::debug)) << bad;
        EXPECT_FALSE(enabled("api", Level::info)) << bad;
    }
    EXPECT_EQ(configure("info"), "");
    EXPECT_TRUE(enabled("api", Level::info));
    EXPECT_FALSE(enabled("store", Level::debug));
}

namespace {

// What fn writes to standard error.
template <typename Fn>
std::string stderr_of(Fn fn) {
    int fds[2];
    if (::pipe(fds) != 0) return "pipe failed";
    int saved = ::dup(STDERR_FILENO);
    ::dup2(fds[1], STDERR_FILENO);
    ::close(fds[1]);
    fn();
    ::dup2(saved, STDERR_FILENO);
    ::close(saved);
    std::string out;
    char buf[512];
    for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) out.append(buf, n);
    ::close(fds[0]);
    return out;
}

}  // namespace

TEST(LogFormat, WhyTheProgramEndsFollowsTheFormat) {
    EXPECT_EQ(stderr_of([] { fatal("cofferd", "node port: in use"); }),
              "cofferd: node port: in use\n");
    set_format(Format::json);
    auto line = stderr_of([] { fatal("cofferd", "node port: in use"); });
    set_format(Format::text);
    EXPECT_TRUE(line.starts_with(R"({"time":")")) << line;
    EXPECT_TRUE(
        line.ends_with(R"(","level":"error","category":"main","message":"node port: in use"})"
                       "\n"))
        << line;
}
