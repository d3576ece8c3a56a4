#!/bin/sh
# Every benchmark in one run, then one summary of the figures the issues set targets on
# (import, build, pull and first run, conversion, ch-run start), each line as its script
# printed it, with the machine's load before and after. Each script runs Grove and
# Charliecloud 0.31 on the same input; see docs/performance.md.
#
# Usage: sh bench/all.sh [RUNS]   (as root: the tools run as uid 65534 via setpriv;
#        RUNS is bench/run.sh's hyperfine count, default 100)
set -eu
cd "$(dirname "$0")/.."
runs=${1:-100}
# What the benches need beyond .ci/setup's packages: Charliecloud 0.31's commands (the
# reference; .ci/setup installs only its documentation) and hyperfine. Said before an
# hour of benchmarks, not after.
missing=
[ -x /usr/bin/ch-image ] && [ -x /usr/bin/ch-run ] || missing="$missing charliecloud-builders charliecloud-runtime"
command -v hyperfine >/dev/null || missing="$missing hyperfine"
if [ -n "$missing" ]; then
    echo "bench/all.sh: missing; as root: sh .ci/setup && apt-get install -y$missing" >&2
    exit 1
fi
cargo build --release --bins >&2
out=$(mktemp -d /var/tmp/grove-bench-all.XXXXXX)
trap 'rm -rf "$out"' EXIT
load() { cut -d' ' -f1-3 /proc/loadavg; }
start=$(date -u '+%Y-%m-%d %H:%M UTC')
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
failed=
for b in import build pull convert run; do
    echo "== bench/$b.sh (load $(load))" >&2
    if [ "$b" = run ]; then
        set -- "$runs"
    else
        set --
    fi
    if ! sh "bench/$b.sh" "$@" >"$out/$b.txt" 2>"$out/$b.err"; then
        failed="$failed $b"
        tail -5 "$out/$b.err" >&2
    fi
    cat "$out/$b.txt"
done
echo
echo "== summary ($start, commit $commit, load now $(load))"
grep -h -E 'ratio|target|linked|storage after|grove / tar|charliecloud / grove' \
    "$out"/import.txt "$out"/build.txt "$out"/pull.txt "$out"/convert.txt "$out"/run.txt \
    2>/dev/null || true
if [ -n "$failed" ]; then
    echo "bench/all.sh: failed:$failed" >&2
    exit 1
fi
