// Shell completion, answered from the command tree itself so that it cannot drift from it:
// `coffer __complete WORD...` prints what may stand in place of the last WORD of
// `coffer WORD...`, one candidate per line. The bash script (dist/completion/coffer.bash) only
// passes the words and shows the answer.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

namespace coffer::cli {

// Objects whose names the manager can list.
enum class NameKind { none, secret, config, service, node, network, stack };

struct CompletionRequest {
    // Commands, flags, aliases or fixed choices that start with the current word.
    std::vector<std::string> candidates;
    // When the current word is an argument naming an object: which kind, to be asked of the
    // manager at `host`. A name is offered as `name_prefix` + name ("--secret-add=" when the
    // value is in the option's word) when that starts with `current`.
    NameKind names = NameKind::none;
    std::string name_prefix;
    std::string host;
    std::string current;
};

// What may replace the last of `words` (the words after `coffer`; the last one is being typed
// and may be empty) in the command line `app` parses. `host` is the manager to ask for names
// unless the words give -H/--host.
CompletionRequest completion_for(CLI::App& app, const std::vector<std::string>& words,
                                 std::string host);

// The names of objects of `kind` at the manager `host`; none when it does not answer.
std::vector<std::string> object_names(NameKind kind, const std::string& host);

// `coffer __complete WORD...`: prints the candidates, one per line; always returns 0.
int print_completions(CLI::App& app, const std::vector<std::string>& words,
                      const std::string& host);

}  // namespace coffer::cli
