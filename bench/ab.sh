#!/bin/sh
# What a change costs: two sets of Grove binaries (OLD and NEW directories holding
# ch-image and ch-run, e.g. release builds of two commits) on the same steps, alternating
# OLD, NEW in each round, as an unprivileged user, on a tmpfs when run as root (no disk
# allocator effects; bench/lib.sh). Each round: import of the bookworm tarball, a cold
# build (FROM bookworm, COPY of 2,000 files, ENV, RUN), two all-hit rebuilds, a rebuild
# with one file changed, three `ch-run b -- true`. Prints seconds per step and round.
#
# Usage: sh bench/ab.sh OLD_BIN_DIR NEW_BIN_DIR [ROUNDS]   (ROUNDS default 3)
# e.g.   git worktree add /var/tmp/old REV && (cd /var/tmp/old &&
#          CARGO_TARGET_DIR=/var/tmp/old-target cargo build --release --bins)
#        sh bench/ab.sh /var/tmp/old-target/release target/release
# The tarball is made once by fixtures/debian.sh and cached in $GROVE_BENCH_CACHE
# (default /work/bench-cache), as bench/import.sh does.
set -eu
cd "$(dirname "$0")/.."
old=${1:?usage: bench/ab.sh OLD_BIN_DIR NEW_BIN_DIR [ROUNDS]}
new=${2:?usage: bench/ab.sh OLD_BIN_DIR NEW_BIN_DIR [ROUNDS]}
rounds=${3:-3}
cache=${GROVE_BENCH_CACHE:-/work/bench-cache}
tarball=$cache/debian-bookworm.tar
mkdir -p "$cache"
sh fixtures/debian.sh "$tarball" >&2
if [ "$(id -u)" = 0 ]; then
    w=$(mktemp -d /tmp/grove-ab.XXXXXX)
    mount -t tmpfs -o size=6g tmpfs "$w"
    chown 65534:65534 "$w"
    chmod 755 "$old" "$new"
    trap 'umount "$w"; rmdir "$w"' EXIT
    as_user="setpriv --reuid=65534 --regid=65534 --clear-groups env -u CI USER=nobody HOME=$w"
else
    w=$(mktemp -d "${TMPDIR:-/tmp}/grove-ab.XXXXXX")
    trap 'chmod -R u+rwx "$w"; rm -rf "$w"' EXIT
    as_user="env -u CI HOME=$w"
fi
# Wall seconds of a command (its output dropped; a failure is said).
t() {
    s=$(date +%s.%N)
    "$@" >/dev/null 2>&1 || echo "failed: $*" >&2
    e=$(date +%s.%N)
    echo "$e - $s" | bc
}
for r in $(seq 1 "$rounds"); do
    for v in old new; do
        eval bin=\$$v
        st=$w/st-$v
        ctx=$w/ctx-$v
        rm -rf "$st" "$ctx"
        $as_user mkdir -p "$ctx/src"
        $as_user sh -c "cd '$ctx/src' && for i in \$(seq 1 2000); do echo \$i > f\$i; done"
        $as_user sh -c "printf 'FROM bookworm\nCOPY src /src/\nENV A=1\nRUN echo hi > /hi\n' > '$ctx/Dockerfile'"
        imp=$(t $as_user "$bin/ch-image" -s "$st" import "$tarball" bookworm)
        sleep 2 # a background compaction, if the import started one
        cold=$(t $as_user "$bin/ch-image" -s "$st" build -t b "$ctx")
        hit1=$(t $as_user "$bin/ch-image" -s "$st" build -t b "$ctx")
        hit2=$(t $as_user "$bin/ch-image" -s "$st" build -t b "$ctx")
        $as_user sh -c "echo changed$r > '$ctx/src/f7'"
        one=$(t $as_user "$bin/ch-image" -s "$st" build -t b "$ctx")
        run1=$(t $as_user "$bin/ch-run" -s "$st" b -- true)
        run2=$(t $as_user "$bin/ch-run" -s "$st" b -- true)
        run3=$(t $as_user "$bin/ch-run" -s "$st" b -- true)
        echo "round $r $v: import $imp cold $cold all-hit $hit1 $hit2 one-changed $one ch-run $run1 $run2 $run3"
    done
done
