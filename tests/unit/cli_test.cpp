// The CLI's reading of Docker's log stream: demultiplexing, the details of each line, and the
// "name.slot.taskid@node" label the docker CLI prints before it.
#include <gtest/gtest.h>

#include <string>

#include "logs_cmd.h"

using namespace coffer;
using namespace coffer::cli;

namespace {

std::string frame(char stream, const std::string& payload) {
    auto n = payload.size();
    std::string h{stream,
                  0,
                  0,
                  0,
                  static_cast<char>(n >> 24),
                  static_cast<char>(n >> 16),
                  static_cast<char>(n >> 8),
                  static_cast<char>(n)};
    return h + payload;
}

}  // namespace

TEST(LogStream, DemuxSplitsFramesByStream) {
    auto body =
        frame(1, "out\n") + frame(2, std::string(300, 'e')) + frame(3, "Error grabbing logs: x\n");
    auto frames = demux(body);
    ASSERT_TRUE(frames.ok()) << frames.error().message;
    ASSERT_EQ(frames->size(), 3u);
    EXPECT_EQ((*frames)[0].stream, 1);
    EXPECT_EQ((*frames)[0].payload, "out\n");
    EXPECT_EQ((*frames)[1].stream, 2);
    EXPECT_EQ((*frames)[1].payload.size(), 300u);
    EXPECT_EQ((*frames)[2].stream, 3);
    EXPECT_TRUE(demux("")->empty());
}

TEST(LogStream, DemuxRefusesCutOrUnknownFrames) {
    auto whole = frame(1, "hello\n");
    EXPECT_FALSE(demux(whole.substr(0, 5)).ok());
    EXPECT_FALSE(demux(whole.substr(0, whole.size() - 1)).ok());
    EXPECT_FALSE(demux(frame(7, "x")).ok());
}

TEST(LogStream, LineDetailsNameNodeServiceAndTask) {
    auto line = parse_log_line(
        "com.docker.swarm.node.id=n1,com.docker.swarm.service.id=s1,com.docker.swarm.task.id=t1,x="
        "a+b%2C hi there\n",
        false);
    ASSERT_TRUE(line.ok()) << line.error().message;
    EXPECT_EQ(line->node_id, "n1");
    EXPECT_EQ(line->service_id, "s1");
    EXPECT_EQ(line->task_id, "t1");
    EXPECT_EQ(line->extra.at("x"), "a b,");
    EXPECT_EQ(line->text, "hi there\n");

    auto stamped = parse_log_line(
        "2024-01-02T03:04:05.000000000Z "
        "com.docker.swarm.node.id=n,com.docker.swarm.service.id=s,com.docker.swarm.task.id=t x\n",
        true);
    ASSERT_TRUE(stamped.ok());
    EXPECT_EQ(stamped->timestamp, "2024-01-02T03:04:05.000000000Z");
    EXPECT_EQ(stamped->text, "x\n");

    EXPECT_FALSE(parse_log_line("no-details-here\n", false).ok());
    EXPECT_FALSE(parse_log_line("com.docker.swarm.node.id=n line\n", false).ok());
    EXPECT_FALSE(parse_log_line("k=%zz,com.docker.swarm.node.id=n line\n", false).ok());
}

TEST(LogStream, TaskLabelAsTheDockerCliPrintsIt) {
    const std::string id = "abcdefghijklmnopqrstuvwxy";
    EXPECT_EQ(task_label({}, "web", 1, id, "node-a"), "web.1.abcdefghijkl@node-a");
    EXPECT_EQ(task_label({.no_trunc = true}, "web", 1, id, "node-a"), "web.1." + id + "@node-a");
    EXPECT_EQ(task_label({.no_task_ids = true}, "web", 1, id, "node-a"), "web.1@node-a");
    // Slots line up: 10 replicas pad one-digit slots by one space.
    EXPECT_EQ(task_label({.width = 2}, "web", 3, id, "n"), "web.3.abcdefghijkl@n ");
    EXPECT_EQ(task_label({.width = 2}, "web", 10, id, "n"), "web.10.abcdefghijkl@n");
}
