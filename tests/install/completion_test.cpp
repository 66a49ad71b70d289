// The shell completions as the shells run them, compared with the commands, flags and names there
// are. bash (dist/completion/coffer.bash): the script is sourced, the line typed so far is handed
// to its function as bash does (COMP_LINE, COMP_POINT), and what it leaves in COMPREPLY is what
// it offers. zsh (dist/completion/_coffer): an interactive zsh finds the script through $fpath,
// Tab is pressed at the end of the line, and the matches zsh takes are what it offers
// (tests/install/zsh-complete). Every behaviour is checked in both shells. The names come from a
// cofferd-test with two nodes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <ostream>
#include <set>
#include <string>
#include <vector>

#include "harness.h"
#include "hooked_daemon.h"

namespace coffer::test {
namespace {

using Set = std::set<std::string>;

enum class Shell { bash, zsh };

const char* name_of(Shell shell) {
    return shell == Shell::bash ? "bash" : "zsh";
}
void PrintTo(Shell shell, std::ostream* os) {
    *os << name_of(shell);
}
// Test names: Shells/Completion.OffersWhatStartsWithTheWordTyped/zsh.
std::string shell_name(const testing::TestParamInfo<Shell>& info) {
    return name_of(info.param);
}

bool have_zsh() {
    return run_program({"sh", "-c", "command -v zsh"}).status == 0;
}

class CompletionTest : public HookedDaemonTest {
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

    // What `shell`'s completion offers for `line` (the cursor at its end), with
    // COFFER_HOST=host and, unless told otherwise, coffer's directory first in PATH. Each
    // candidate is what replaces the part of the word completed: after a "--option=", the value.
    Set offered(Shell shell, const std::string& line, const std::string& host,
                bool coffer_in_path = true) {
        std::vector<std::string> argv;
        if (shell == Shell::bash) {
            auto script = env_or("COFFER_BASH_COMPLETION", "");
            EXPECT_FALSE(script.empty()) << "COFFER_BASH_COMPLETION is not set";
            const std::string program =
                "source \"$1\"\n"
                "COMP_LINE=$2; COMP_POINT=${#COMP_LINE}\n"
                "_coffer\n"
                "printf '%s\\n' \"${COMPREPLY[@]}\"\n";
            argv = {"bash", "--norc", "-c", program, "bash", script, line};
        } else {
            auto script = env_or("COFFER_ZSH_COMPLETION", "");
            auto driver = env_or("ZSH_COMPLETE", "");
            EXPECT_FALSE(script.empty()) << "COFFER_ZSH_COMPLETION is not set";
            EXPECT_FALSE(driver.empty()) << "ZSH_COMPLETE is not set";
            // compinit's findings, kept for the test's later runs.
            auto dump = "ZSH_COMPLETE_DUMP=" + (dir_.path() / "zcompdump").string();
            argv = {dump, "zsh", "-f", driver, script, line};
        }
        auto path = env_or("PATH", "/usr/bin");
        if (coffer_in_path)
            path = std::filesystem::path(coffer_path()).parent_path().string() + ":" + path;
        // Through env(1): run_program's variables come after the inherited ones, and zsh takes
        // the first PATH of an environment.
        argv.insert(argv.begin(), {"env", "PATH=" + path, "COFFER_HOST=" + host});
        auto r = run_program(argv);
        EXPECT_EQ(r.status, 0) << line << ": " << r.err;
        Set out;
        for (auto& l : lines_of(r.out))
            if (!l.empty()) out.insert(l);
        return out;
    }

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

class Completion : public CompletionTest, public testing::WithParamInterface<Shell> {
  protected:
    void SetUp() override {
        if (GetParam() == Shell::zsh && !have_zsh())
            GTEST_SKIP() << "zsh is not installed (Debian package zsh, scripts/setup)";
        CompletionTest::SetUp();
    }

    Set offered(const std::string& line, const std::string& host) {
        return CompletionTest::offered(GetParam(), line, host);
    }
    Set offered(const std::string& line) { return offered(line, daemon_->host()); }
};

INSTANTIATE_TEST_SUITE_P(Shells, Completion, testing::Values(Shell::bash, Shell::zsh), shell_name);

TEST_P(Completion, OffersEveryCommandTheHelpLists) {
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

TEST_P(Completion, OffersEveryFlagTheHelpListsForEveryCommand) {
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

TEST_P(Completion, OffersWhatStartsWithTheWordTyped) {
    EXPECT_EQ(offered("coffer se"), (Set{"secret", "service"}));
    EXPECT_EQ(offered("coffer secret r"), (Set{"rm", "remove", "rotate", "rollback"}));
}

TEST_P(Completion, OffersTheFlagsOfASubcommand) {
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

TEST_P(Completion, OffersTheFixedChoicesOfAnArgument) {
    EXPECT_EQ(offered("coffer cluster join-token "), (Set{"worker", "manager"}));
    EXPECT_EQ(offered("coffer node update --availability d"), (Set{"drain"}));
    EXPECT_EQ(offered("coffer service create --mode "), (Set{"replicated", "global"}));
    EXPECT_EQ(offered("coffer service update --resolve-image n"), (Set{"never"}));
    EXPECT_EQ(offered("coffer network create --driver "), (Set{"overlay", "bridge"}));
}

TEST_P(Completion, OffersTheNamesTheManagerHas) {
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

TEST_P(Completion, CompletesAValueInTheFlagsWord) {
    // Bash replaces the part after '=' only: the script hands it the name alone. zsh keeps the
    // "--option=" (the script moves it to zsh's ignored prefix) and lists the names alone.
    EXPECT_EQ(offered("coffer service update --secret-add=d"), (Set{"db_pass"}));
    EXPECT_EQ(offered("coffer service create --mode=g"), (Set{"global"}));
}

TEST_P(Completion, AsksTheManagerTheCommandLineNames) {
    auto nowhere = "unix://" + (dir_.path() / "nothing.sock").string();
    EXPECT_TRUE(offered("coffer secret rm ", nowhere).empty());
    EXPECT_EQ(offered("coffer -H " + daemon_->host() + " secret rm ", nowhere),
              (Set{"api_key", "db_pass"}));
    EXPECT_EQ(offered("coffer --host=" + daemon_->host() + " service rm ", nowhere), (Set{"web"}));
}

TEST_P(Completion, OffersCommandsWithoutAManager) {
    auto nowhere = "unix://" + (dir_.path() / "nothing.sock").string();
    EXPECT_EQ(offered("coffer secret ", nowhere), offered("coffer secret "));
    EXPECT_EQ(offered("coffer service update --secret-a", nowhere), (Set{"--secret-add"}));
}

TEST_P(Completion, CompletesWordsTypedInQuotes) {
    EXPECT_EQ(offered("coffer secret inspect 'd"), (Set{"db_pass"}));
    EXPECT_EQ(offered("coffer 'secret' rm \"a"), (Set{"api_key"}));
    auto nowhere = "unix://" + (dir_.path() / "nothing.sock").string();
    EXPECT_EQ(offered("coffer -H \"" + daemon_->host() + "\" secret rm ", nowhere),
              (Set{"api_key", "db_pass"}));
}

TEST_P(Completion, AsksTheCofferTyped) {
    // Not found through PATH: the program named on the line answers.
    EXPECT_EQ(
        CompletionTest::offered(GetParam(), coffer_path() + " secret rm ", daemon_->host(), false),
        (Set{"api_key", "db_pass"}));
}

// What only zsh does by the script: bash's file names come from readline (`complete -o default`),
// after the script has offered nothing.
class ZshCompletion : public CompletionTest {
  protected:
    void SetUp() override {
        if (!have_zsh()) GTEST_SKIP() << "zsh is not installed (Debian package zsh, scripts/setup)";
        CompletionTest::SetUp();
    }
    Set offered(const std::string& line) {
        return CompletionTest::offered(Shell::zsh, line, daemon_->host());
    }
};

TEST_F(ZshCompletion, OffersFileNamesWhereCofferOffersNothing) {
    auto compose = dir_.path() / "compose.yml";
    ASSERT_EQ(run_program({"touch", compose.string()}).status, 0);
    auto typed = (dir_.path() / "comp").string();
    EXPECT_EQ(offered("coffer stack deploy -c " + typed), (Set{compose.string()}));
    EXPECT_EQ(offered("coffer secret create db " + typed), (Set{compose.string()}));
}

}  // namespace
}  // namespace coffer::test
