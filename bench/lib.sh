# Shared helpers of the bench/ scripts (sourced, not run). Each script sets $work (its
# scratch directory) before calling t.

# Git identity Charliecloud's ch-image needs for its build cache, and its PATH (Debian's
# Python ch-image needs /usr/bin first).
CC_ENV="PATH=/usr/bin:$PATH GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@localhost GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@localhost"

now() { date +%s.%N; }

# t CMD...: run CMD quietly, print the wall seconds taken; on failure show its output
# and stop.
t() {
    s=$(now)
    if ! "$@" >"$work/last.log" 2>&1; then
        cat "$work/last.log" >&2
        echo "bench: command failed: $*" >&2
        exit 1
    fi
    e=$(now)
    python3 -c "print(f'{$e-$s:.3f}')"
}

# ratio A B: A/B with one decimal.
ratio() { python3 -c "print(f'{$1/$2:.1f}')"; }
