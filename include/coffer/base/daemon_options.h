// Command line and config file of the daemons (cofferd, coffer-agent): what they refuse says
// where, and a usage error ends the program with status 2 (LSB: invalid arguments). Included by
// the daemons' main files only: it brings CLI11 in.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdio>
#include <iterator>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace coffer::daemon {

// The exit status of a usage error: an unknown option, a bad value, a config file refused.
inline constexpr int usage_error = 2;

// The config file's `name = value` lines, each name checked against the app's options: an
// unknown name, a line that is not `name = value`, a section or an option the file may not
// give is refused with the file's name and the line's number.
class CheckedConfig : public CLI::ConfigBase {
  public:
    CheckedConfig(const CLI::App& app, std::string_view program) : app_(&app), program_(program) {}

    std::vector<CLI::ConfigItem> from_config(std::istream& input) const override {
        std::string text(std::istreambuf_iterator<char>(input), {});
        std::istringstream again(text);
        auto read = CLI::ConfigBase::from_config(again);
        for (const auto& item : read) {
            auto full = item.fullname();
            if (full.find_first_of(" \t") != std::string::npos)
                refuse(text, item.parents.empty() ? item.name : item.parents.front(),
                       "expected `name = value`");
            if (item.name == "++" || item.name == "--" || !item.parents.empty())
                refuse(text, item.parents.empty() ? item.name : item.parents.front(),
                       "sections are not used: every line is `name = value`");
            const auto* option = app_->get_option_no_throw("--" + item.name);
            if (option == nullptr && item.name.size() == 1)
                option = app_->get_option_no_throw("-" + item.name);
            if (option == nullptr)
                refuse(text, item.name,
                       "`" + item.name + "` is not an option of " + program_ +
                           " (the names are the long options without their dashes)");
            if (!option->get_configurable())
                refuse(text, item.name,
                       "`" + item.name +
                           "` may be given on the command line or in the "
                           "environment only");
        }
        return read;
    }

  private:
    // Throws the refusal, located at the first line that begins with what.
    [[noreturn]] void refuse(const std::string& text, const std::string& what,
                             const std::string& why) const {
        std::string where = "the config file";
        if (const auto* file = app_->get_config_ptr(); file != nullptr && file->count() > 0)
            where = file->results().back();
        std::istringstream lines(text);
        std::string line;
        for (int number = 1; std::getline(lines, line); ++number) {
            auto begin = line.find_first_not_of(" \t[");
            if (begin != std::string::npos && line.compare(begin, what.size(), what) == 0) {
                where += ":" + std::to_string(number);
                break;
            }
        }
        throw CLI::ConfigError(where + ": " + why);
    }

    const CLI::App* app_;
    std::string program_;
};

// Parses the command line (and the config file of --config) of a daemon named program. nullopt:
// go on; otherwise the exit status (0 after --help, usage_error after a usage error, which is
// printed as "program: message").
inline std::optional<int> parse_daemon_arguments(CLI::App& app, int argc, char** argv,
                                                 std::string_view program) {
    app.config_formatter(std::make_shared<CheckedConfig>(app, program));
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        std::fprintf(stderr, "%.*s: %s\n(%.*s --help lists the options)\n",
                     static_cast<int>(program.size()), program.data(), e.what(),
                     static_cast<int>(program.size()), program.data());
        return usage_error;
    }
    return std::nullopt;
}

}  // namespace coffer::daemon
