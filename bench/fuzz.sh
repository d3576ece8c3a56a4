#!/bin/sh
# Run each store fuzz target (fuzz/fuzz_targets: import_tar, apply_layer, and the
# Dockerfile parser's parse) for a fixed time, seeded with fuzz/seeds/TARGET (the hostile
# inputs of issue 11, written by fuzz/make_corpus.py). Not part of CI: it needs a nightly
# toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
#
#   bench/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 300 s, all targets)
#
# New inputs go to a scratch corpus under $TMPDIR; crashes to fuzz/artifacts/TARGET/.
set -eu
cd "$(dirname "$0")/.."
secs=${1:-300}
[ $# -gt 0 ] && shift
targets=${*:-import_tar apply_layer parse}
if ! cargo +nightly fuzz --help >/dev/null 2>&1; then
    echo "fuzz.sh: needs cargo-fuzz and a nightly toolchain (cargo install cargo-fuzz)" >&2
    exit 1
fi
python3 fuzz/make_corpus.py
status=0
for t in $targets; do
    work=$(mktemp -d "${TMPDIR:-/tmp}/grove-fuzz-$t.XXXXXX")
    seeds=fuzz/seeds/$t
    [ -d "$seeds" ] || seeds=
    echo "fuzz.sh: $t for ${secs}s (corpus $work${seeds:+, seeds $seeds})" >&2
    # -rss_limit_mb: an input must not make Grove hold a whole big member in memory.
    if ! cargo +nightly fuzz run "$t" "$work" $seeds -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=30; then
        echo "fuzz.sh: $t found a failure (see fuzz/artifacts/$t/)" >&2
        status=1
    fi
    rm -rf "$work"
done
exit $status
