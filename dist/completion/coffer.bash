# bash completion for coffer. The candidates come from coffer itself (`coffer __complete WORD...`,
# answered from its command tree, and names of secrets, services, nodes... from the manager it
# talks to), so this script knows no command or flag and cannot fall behind the program.

_coffer() {
    # The words up to the cursor, split at blanks only: bash's own COMP_WORDS also splits at
    # ':' and '=', which would cut `-H unix:///run/coffer/coffer.sock` and `--secret-add=NAME`.
    local line=${COMP_LINE:0:COMP_POINT}
    local -a words
    read -r -a words <<<"$line"
    if [[ ${#words[@]} -eq 0 || $line == *[[:blank:]] ]]; then
        words+=("")
    fi
    # Quotes are the shell's, not the words': `-H "unix:///x.sock"`, or a name begun with "db.
    local i
    for i in "${!words[@]}"; do
        words[i]=${words[i]//\"/}
        words[i]=${words[i]//\'/}
    done
    local cur=${words[${#words[@]} - 1]}

    local program=${words[0]}
    command -v -- "$program" >/dev/null 2>&1 || program=coffer

    local out
    out=$("$program" __complete "${words[@]:1}" 2>/dev/null) || return 0

    # Readline replaces only the part of the word after its last break character (':' and '='
    # among them, by default): hand it the candidates without what comes before.
    local tail=$cur
    [[ $COMP_WORDBREAKS == *:* ]] && tail=${tail##*:}
    [[ $COMP_WORDBREAKS == *=* ]] && tail=${tail##*=}
    local keep=${cur%"$tail"}

    COMPREPLY=()
    local candidate
    while IFS= read -r candidate; do
        [[ -n $candidate ]] || continue
        COMPREPLY+=("${candidate#"$keep"}")
    done <<<"$out"
}

# -o default: where coffer offers nothing (a FILE argument, a compose file), file names.
complete -o default -F _coffer coffer
