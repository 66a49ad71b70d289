// The bash completion (dist/completion/coffer.bash) as bash runs it: the script is sourced, the
// line typed so far is handed to its function as bash does (COMP_LINE, COMP_POINT), and what it
// leaves in COMPREPLY is compared with the commands, flags and names there are. The names come
// from a cofferd-test with two nodes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "harness.h"
#include "hooked_daemon.h"

namespace coffer::test {
namespace {

using Set = std::set<std::string>;

class Completion : public HookedDaemonTest {
  protected:
    void SetUp() override {
        start_daemon();
        if (IsSkipped() || HasFatalFailure()) return;
        ASSERT_EQ(cli({"secret", "create", "db_pass", "-"}, "hunter2").status, 0);
        ASSERT_EQ(cli({"secret", "create", "api_key", "-"}, "k").status, 0);
        ASSERT_EQ(cli({"network", "create", "backend"}).status, 0);
        ASSERT_EQ(cli({"service", "create", "--detach", "--name", "web", "--secret", "db_pass",
                       "busybox", "sleep", "1000"})
                      .status,
                  0);
    }

    // What the completion offers for `line` (the cursor at its end), with COFFER_HOST=host.
    Set offered(const std::string& line, const std::string& host) {
        auto script = env_or("COFFER_COMPLETION", "");
        EXPECT_FALSE(script.empty()) << "COFFER_COMPLETION is not set";
        auto coffer_dir = std::filesystem::path(coffer_path()).parent_path().string();
        const std::string program =
            "source \"$1\"\n"
            "COMP_LINE=$2; COMP_POINT=${#COMP_LINE}\n"
            "_coffer\n"
            "printf '%s\\n' \"${COMPREPLY[@]}\"\n";
        auto r = run_program(
            {"bash", "--norc", "-c", program, "bash", script, line}, "",
            {"PATH=" + coffer_dir + ":" + env_or("PATH", "/usr/bin"), "COFFER_HOST=" + host});
        EXPECT_EQ(r.status, 0) << r.err;
        Set out;
        for (auto& l : lines_of(r.out))
            if (!l.empty()) out.insert(l);
        return out;
    }
    Set offered(const std::string& line) { return offered(line, daemon_->host()); }

    // The subcommands `coffer ARGS... --help` lists.
    Set help_subcommands(std::vector<std::string> args) {
        args.push_back("--help");
        auto r = coffer_cli(daemon_->host(), args);
        Set out;
        bool in = false;
        for (auto& l : lines_of(r.out)) {
            if (l.starts_with("Subcommands:")) {
                in = true;
                continue;
            }
            if (in && l.starts_with("  ") && l.size() > 2 && l[2] != ' ')
                out.insert(l.substr(2, l.find_first_of(", ", 2) - 2));  // "ls, list"
            else if (in && !l.empty() && !l.starts_with(" "))
                in = false;
        }
        return out;
    }
};

// The flags `coffer ARGS... --help` lists ("-q,--quiet" gives both names).
Set help_flags(const std::string& host, std::vector<std::string> args) {
    args.push_back("--help");
    auto r = coffer_cli(host, args);
    Set out;
    bool in = false;
    for (auto& l : lines_of(r.out)) {
        if (l.starts_with("Options:")) {
            in = true;
            continue;
        }
        if (in && l.starts_with("  -")) {
            auto names = l.substr(2, l.find(' ', 2) - 2);
            for (std::size_t at = 0; at < names.size();) {
                auto comma = names.find(',', at);
                out.insert(names.substr(at, comma - at));
                at = comma == std::string::npos ? names.size() : comma + 1;
            }
        } else if (in && !l.empty() && !l.starts_with(" ")) {
            in = false;
        }
    }
    return out;
}

bool contains_all(const Set& set, const Set& wanted) {
    return std::includes(set.begin(), set.end(), wanted.begin(), wanted.end());
}

TEST_F(Completion, OffersEveryCommandTheHelpLists) {
    auto top = help_subcommands({});
    ASSERT_TRUE(contains_all(top, {"secret", "service", "node", "network", "stack", "cluster"}));
    EXPECT_EQ(offered("coffer "), top);
    for (const auto& group :
         {"secret", "config", "service", "node", "network", "stack", "cluster"}) {
        auto listed = help_subcommands({group});
        ASSERT_FALSE(listed.empty()) << group;
        // The aliases (ls/list, rm/remove) come on top of what the help lists.
        EXPECT_TRUE(contains_all(offered(std::string("coffer ") + group + " "), listed)) << group;
    }
    EXPECT_FALSE(offered("coffer ").contains("__complete"));
}

TEST_F(Completion, OffersEveryFlagTheHelpListsForEveryCommand) {
    std::vector<std::vector<std::string>> paths = {{}};
    int checked = 0;
    while (!paths.empty()) {
        auto path = paths.back();
        paths.pop_back();
        for (const auto& sub : help_subcommands(path)) {
            auto deeper = path;
            deeper.push_back(sub);
            paths.push_back(deeper);
        }
        auto listed = help_flags(daemon_->host(), path);
        ASSERT_FALSE(listed.empty()) << testing::PrintToString(path);
        std::string line = "coffer";
        for (const auto& w : path) line += " " + w;
        auto flags = offered(line + " -");
        for (const auto& f : listed)
            EXPECT_TRUE(flags.contains(f)) << line << ": " << f << " not offered";
        ++checked;
    }
    EXPECT_GT(checked, 40);  // every command, not only the groups
}

TEST_F(Completion, OffersWhatStartsWithTheWordTyped) {
    EXPECT_EQ(offered("coffer se"), (Set{"secret", "service"}));
    EXPECT_EQ(offered("coffer secret r"), (Set{"rm", "remove", "rotate", "rollback"}));
}

TEST_F(Completion, OffersTheFlagsOfASubcommand) {
    auto flags = offered("coffer service update --");
    EXPECT_TRUE(contains_all(flags, {"--secret-add", "--secret-rm", "--image", "--replicas",
                                     "--env-add", "--force", "--help"}));
    for (const auto& f : flags) EXPECT_TRUE(f.starts_with("--")) << f;
    EXPECT_FALSE(flags.contains("--name"));  // create's, not update's
    EXPECT_EQ(offered("coffer service update --secret-a"), (Set{"--secret-add"}));
    EXPECT_TRUE(contains_all(offered("coffer secret ls -"), {"-q", "--quiet", "--format"}));
    // The global flag belongs before the command.
    EXPECT_TRUE(contains_all(offered("coffer -"), {"-H", "--host"}));
}

TEST_F(Completion, OffersTheFixedChoicesOfAnArgument) {
    EXPECT_EQ(offered("coffer cluster join-token "), (Set{"worker", "manager"}));
    EXPECT_EQ(offered("coffer node update --availability d"), (Set{"drain"}));
    EXPECT_EQ(offered("coffer service create --mode "), (Set{"replicated", "global"}));
}

TEST_F(Completion, OffersTheNamesTheManagerHas) {
    EXPECT_EQ(offered("coffer secret rm "), (Set{"api_key", "db_pass"}));
    EXPECT_EQ(offered("coffer secret inspect d"), (Set{"db_pass"}));
    EXPECT_EQ(offered("coffer service update --secret-add a"), (Set{"api_key"}));
    EXPECT_EQ(offered("coffer service update --secret-rm db_pass "), (Set{"web"}));
    EXPECT_EQ(offered("coffer service rm "), (Set{"web"}));
    EXPECT_EQ(offered("coffer service logs w"), (Set{"web"}));
    // The manager's host is a node too.
    EXPECT_TRUE(contains_all(offered("coffer node inspect "), {"node-a", "node-b"}));
    EXPECT_EQ(offered("coffer node inspect node-"), (Set{"node-a", "node-b"}));
    EXPECT_TRUE(offered("coffer network rm ").contains("backend"));
    // A new name is the user's to make up.
    EXPECT_TRUE(offered("coffer secret create ").empty());
}

TEST_F(Completion, CompletesAValueInTheFlagsWord) {
    // Bash replaces the part after '=' only: the script hands it the name alone.
    EXPECT_EQ(offered("coffer service update --secret-add=d"), (Set{"db_pass"}));
    EXPECT_EQ(offered("coffer service create --mode=g"), (Set{"global"}));
}

TEST_F(Completion, AsksTheManagerTheCommandLineNames) {
    auto nowhere = "unix://" + (dir_.path() / "nothing.sock").string();
    EXPECT_TRUE(offered("coffer secret rm ", nowhere).empty());
    EXPECT_EQ(offered("coffer -H " + daemon_->host() + " secret rm ", nowhere),
              (Set{"api_key", "db_pass"}));
    EXPECT_EQ(offered("coffer --host=" + daemon_->host() + " service rm ", nowhere), (Set{"web"}));
}

TEST_F(Completion, OffersCommandsWithoutAManager) {
    auto nowhere = "unix://" + (dir_.path() / "nothing.sock").string();
    EXPECT_EQ(offered("coffer secret ", nowhere), offered("coffer secret "));
    EXPECT_EQ(offered("coffer service update --secret-a", nowhere), (Set{"--secret-add"}));
}

}  // namespace
}  // namespace coffer::test
