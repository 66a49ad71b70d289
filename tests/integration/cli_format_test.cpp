// The coffer CLI's list and inspect output flags (-q, -f, --no-trunc, --format) against a real
// cofferd built with test hooks (two registered nodes, fake agents that run every task), and,
// where the docker CLI is installed, the same verbs of the docker CLI against the same daemon:
// both must print the same bytes.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <algorithm>
#include <cstdlib>
#include <sstream>

#include "harness.h"
#include "hooked_daemon.h"

using namespace coffer::test;
namespace json = boost::json;

namespace {

class CliFormat : public HookedDaemonTest {
  protected:
    void SetUp() override { start_daemon(); }

    // A service "web" with two running tasks, one of them replaced once (a history line).
    void start_web() {
        ASSERT_EQ(
            cli({"secret", "create", "--label", "team=b", "--label", "env=prod", "db", "-"}, "pw")
                .status,
            0);
        auto created =
            cli({"service", "create", "--name", "web", "--secret", "db", "--replicas", "2",
                 "--detach=false", "--timeout", "30", "busybox:1", "sleep", "3600"});
        ASSERT_EQ(created.status, 0) << created.err;
        auto updated =
            cli({"service", "update", "--force", "--detach=false", "--timeout", "30", "web"});
        ASSERT_EQ(updated.status, 0) << updated.err;
    }
    // Both CLIs print the same for the same arguments. Outputs with ages ("5 seconds ago") may
    // straddle a second, so a difference is retried a few times.
    void same_as_docker(const std::vector<std::string>& args) {
        CliResult ours, theirs;
        for (int i = 0; i < 5; ++i) {
            ours = cli(args);
            theirs = docker(args);
            if (ours.out == theirs.out) break;
        }
        std::string shown;
        for (const auto& a : args) shown += " " + a;
        EXPECT_EQ(ours.status, 0) << shown << ": " << ours.err;
        EXPECT_EQ(theirs.status, 0) << shown << ": " << theirs.err;
        EXPECT_EQ(ours.out, theirs.out) << "coffer" << shown;
    }
};

}  // namespace

TEST_F(CliFormat, ServicePsTakesDockersFlags) {
    start_web();
    auto ps = cli({"service", "ps", "web"});
    ASSERT_EQ(ps.status, 0) << ps.err;
    auto rows = lines_of(ps.out);
    ASSERT_EQ(rows.size(), 5u) << ps.out;  // header, two slots with one replaced task each
    EXPECT_EQ(rows[0].rfind("ID ", 0), 0u) << ps.out;
    for (auto title : {"NAME", "IMAGE", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR", "PORTS"})
        EXPECT_NE(rows[0].find(title), std::string::npos) << title;
    EXPECT_NE(rows[1].find("web.1"), std::string::npos) << ps.out;
    EXPECT_NE(rows[2].find(" \\_ web.1"), std::string::npos) << ps.out;
    EXPECT_NE(rows[1].find("Running"), std::string::npos) << ps.out;
    EXPECT_NE(rows[2].find("Shutdown"), std::string::npos) << ps.out;

    // -q prints whole IDs; a template truncates them unless --no-trunc, and indents no names.
    auto quiet = lines_of(cli({"service", "ps", "-q", "web"}).out);
    ASSERT_EQ(quiet.size(), 4u);
    for (const auto& id : quiet) EXPECT_EQ(id.size(), 25u) << id;
    auto short_ids = lines_of(cli({"service", "ps", "--format", "{{.ID}}", "web"}).out);
    ASSERT_EQ(short_ids.size(), 4u);
    for (const auto& id : short_ids) EXPECT_EQ(id.size(), 12u) << id;
    auto full = lines_of(cli({"service", "ps", "--format", "{{.ID}}", "--no-trunc", "web"}).out);
    ASSERT_EQ(full.size(), 4u);
    for (const auto& id : full) EXPECT_EQ(id.size(), 25u) << id;
    EXPECT_EQ(cli({"service", "ps", "--format", "{{.Name}}", "web"}).out,
              "web.1\nweb.1\nweb.2\nweb.2\n");

    auto running = cli({"service", "ps", "--filter", "desired-state=running", "--format",
                        "{{.Name}} {{.DesiredState}}", "web"});
    ASSERT_EQ(running.status, 0) << running.err;
    EXPECT_EQ(running.out, "web.1 Running\nweb.2 Running\n");
    auto by_name =
        cli({"service", "ps", "-f", "name=web.2", "-f", "desired-state=running", "-q", "web"});
    EXPECT_EQ(lines_of(by_name.out).size(), 1u) << by_name.out;

    auto table = cli({"service", "ps", "-f", "desired-state=running", "--format",
                      "table {{.Name}}\\t{{.Node}}", "web"});
    ASSERT_EQ(table.status, 0) << table.err;
    auto t = lines_of(table.out);
    ASSERT_EQ(t.size(), 3u) << table.out;
    EXPECT_EQ(t[0], "NAME      NODE");
    EXPECT_NE(t[1].find("node-"), std::string::npos) << table.out;

    auto json_rows = lines_of(cli({"service", "ps", "--format", "json", "web"}).out);
    ASSERT_EQ(json_rows.size(), 4u);
    auto first = json::parse(json_rows[0]).as_object();
    std::vector<std::string> keys;
    for (const auto& [k, v] : first) keys.emplace_back(k);
    EXPECT_EQ(keys, (std::vector<std::string>{"CurrentState", "DesiredState", "Error", "ID",
                                              "Image", "Name", "Node", "Ports"}));

    auto unknown = cli({"service", "ps", "--format", "{{.Foo}}", "web"});
    EXPECT_EQ(unknown.status, 1);
    EXPECT_EQ(unknown.out, "");
    EXPECT_NE(
        unknown.err.find("template: field .Foo is not known for service ps; known: .CurrentState"),
        std::string::npos)
        << unknown.err;
    auto bad_filter = cli({"service", "ps", "--filter", "nosuch=1", "web"});
    EXPECT_EQ(bad_filter.status, 1);
    EXPECT_NE(bad_filter.err.find("nosuch"), std::string::npos) << bad_filter.err;
    auto no_equals = cli({"service", "ps", "--filter", "desired-state", "web"});
    EXPECT_EQ(no_equals.status, 1);
    EXPECT_NE(no_equals.err.find("bad format of filter (expected name=value)"), std::string::npos)
        << no_equals.err;
    auto unknown_flag = cli({"service", "ps", "--nosuch", "web"});
    EXPECT_NE(unknown_flag.status, 0);
    EXPECT_NE(unknown_flag.err.find("--nosuch"), std::string::npos) << unknown_flag.err;
}

TEST_F(CliFormat, ListsTakeFormatQuietAndFilter) {
    start_web();
    auto ls = lines_of(cli({"service", "ls"}).out);
    ASSERT_EQ(ls.size(), 2u);
    EXPECT_EQ(ls[0].substr(0, ls[0].find_last_not_of(' ') + 1),
              "ID             NAME      MODE         REPLICAS   IMAGE       PORTS");
    EXPECT_EQ(
        cli({"service", "ls", "--format", "{{.Name}} {{.Mode}} {{.Replicas}} {{.Image}}"}).out,
        "web replicated 2/2 busybox:1\n");
    EXPECT_EQ(lines_of(cli({"service", "ls", "-q"}).out).at(0).size(), 12u);
    EXPECT_EQ(cli({"service", "ls", "-q", "--filter", "name=nosuch"}).out, "");
    EXPECT_EQ(cli({"service", "ls", "--format", "{{.Name}}", "--filter", "mode=replicated"}).out,
              "web\n");

    auto nodes = lines_of(cli({"node", "ls"}).out);
    ASSERT_EQ(nodes.size(), 4u);  // cofferd's own entry too
    for (auto title :
         {"ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS", "ENGINE VERSION"})
        EXPECT_NE(nodes[0].find(title), std::string::npos) << title;
    EXPECT_EQ(cli({"node", "ls", "-f", "role=worker", "--format",
                   "{{.Hostname}} {{.Status}} {{.Availability}} {{.Role}}"})
                  .out,
              "node-a Ready Active worker\nnode-b Ready Active worker\n");
    EXPECT_EQ(cli({"node", "ls", "-f", "role=manager", "--format",
                   "{{.Status}} {{.Availability}} {{.Role}} {{.ManagerStatus}} {{.Self}}"})
                  .out,
              "Ready Drain manager Leader true\n");
    EXPECT_EQ(cli({"node", "ls", "-f", "name=node-b", "--format", "{{.Hostname}}"}).out,
              "node-b\n");
    auto node_json =
        json::parse(
            lines_of(cli({"node", "ls", "-f", "name=node-a", "--format", "json"}).out).at(0))
            .as_object();
    EXPECT_FALSE(node_json.contains("Role"));  // coffer's own fields are for templates only
    EXPECT_EQ(node_json.at("Self"), false);

    EXPECT_EQ(cli({"secret", "ls", "--format", "{{.Name}} {{.Labels}}"}).out,
              "db env=prod,team=b\n");
    EXPECT_EQ(cli({"secret", "ls", "--format", "table {{.Name}}\\t{{.Driver}}|"}).out,
              "NAME      DRIVER|\ndb        |\n");
    EXPECT_EQ(cli({"secret", "ls", "-q", "-f", "label=team=b"}).out.size(), 26u);
    auto unknown = cli({"secret", "ls", "--format", "{{.Nmae}}"});
    EXPECT_EQ(unknown.status, 1);
    EXPECT_NE(unknown.err.find(
                  "template: field .Nmae is not known for secret ls; known: .CreatedAt .Driver .ID "
                  ".Labels .Name .UpdatedAt"),
              std::string::npos)
        << unknown.err;
    auto unsupported = cli({"node", "ls", "--format", "{{if .Self}}*{{end}}"});
    EXPECT_EQ(unsupported.status, 1);
    EXPECT_NE(unsupported.err.find("unsupported action"), std::string::npos) << unsupported.err;
}

TEST_F(CliFormat, InspectTakesFormat) {
    start_web();
    EXPECT_EQ(cli({"service", "inspect", "--format",
                   "{{.Spec.Name}} {{.Spec.Mode.Replicated.Replicas}}", "web"})
                  .out,
              "web 2\n");
    EXPECT_EQ(cli({"secret", "inspect", "-f", "{{.Spec.Name}} {{json .Spec.Labels}}", "db"}).out,
              "db {\"env\":\"prod\",\"team\":\"b\"}\n");
    auto node = cli({"node", "inspect", "-f", "json", "node-a"});
    ASSERT_EQ(node.status, 0) << node.err;
    EXPECT_EQ(json::parse(node.out).at("Description").at("Hostname"), "node-a");
    auto missing = cli({"service", "inspect", "-f", "{{.Spec.Nmae}}", "web"});
    EXPECT_EQ(missing.status, 1);
    EXPECT_NE(
        missing.err.find("template: field .Spec.Nmae is not known for service inspect in .Spec"),
        std::string::npos)
        << missing.err;
}

// The docker CLI formats what cofferd answers; the coffer CLI must print the same.
TEST_F(CliFormat, PrintsWhatTheDockerCliPrints) {
    if (!have_docker()) GTEST_SKIP() << "no docker CLI on this machine";
    start_web();
    same_as_docker({"service", "ls"});
    same_as_docker({"service", "ls", "-q"});
    same_as_docker({"service", "ls", "--format", "json"});
    same_as_docker({"service", "ls", "--format", "table {{.Name}}\\t{{.Replicas}}"});
    same_as_docker({"service", "ps", "web"});
    same_as_docker({"service", "ps", "--no-trunc", "web"});
    same_as_docker({"service", "ps", "-q", "web"});
    same_as_docker({"service", "ps", "--format", "{{json .}}", "web"});
    same_as_docker({"service", "ps", "--format", "{{.Name}}", "web"});
    same_as_docker({"service", "ps", "--format", "table {{.Name}}", "web"});
    same_as_docker({"service", "ps", "-q", "--format", "{{.ID}}", "web"});
    same_as_docker({"service", "ps", "--format", "table", "web"});
    same_as_docker({"service", "ps", "-f", "desired-state=running", "--format",
                    "table {{.Name}}\\t{{.Node}}", "web"});
    same_as_docker({"node", "ls"});
    same_as_docker({"node", "ls", "-q"});
    same_as_docker({"node", "ls", "--format", "json"});
    same_as_docker({"secret", "ls"});
    same_as_docker({"secret", "ls", "--format", "json"});
    same_as_docker({"secret", "inspect", "--format", "{{.Spec.Name}}", "db"});
    same_as_docker({"service", "inspect", "-f", "{{json .Spec.Labels}}", "web"});
}
