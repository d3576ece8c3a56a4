#!/bin/sh
# Import of the Debian bookworm minbase tarball (issue 13): Grove's `ch-image import`
# against `tar -x` of the same tarball into the same file system (the floor) and
# Charliecloud 0.31's `ch-image import`, in one run, as an unprivileged user. Prints
# each run's wall time, Grove's peak memory and -vv phase times, and the ratios
# Grove / tar -x (target <= 1.5) and Charliecloud / Grove (target >= 10).
#
# Usage: sh bench/import.sh [RUNS]   (as root: tools run as uid 65534 via setpriv)
# The tarball is made once by fixtures/debian.sh (mmdebstrap) and cached in
# $GROVE_BENCH_CACHE (default /work/bench-cache). Set CARGO_TARGET_DIR to use another
# release build directory.
set -eu
cd "$(dirname "$0")/.."
root=$(pwd)
runs=${1:-3}
target=${CARGO_TARGET_DIR:-$root/target}
cargo build --locked --release --bins >&2
bin=$target/release
cache=${GROVE_BENCH_CACHE:-/work/bench-cache}
deb=$cache/debian-bookworm.tar
sh fixtures/debian.sh "$deb"
chmod a+r "$deb"
work=$(mktemp -d /var/tmp/grove-bench-import.XXXXXX)
chmod 755 "$work"
if [ "$(id -u)" = 0 ]; then
    chown 65534:65534 "$work"
    as="setpriv --reuid=65534 --regid=65534 --clear-groups env USER=nobody HOME=$work"
else
    as="env HOME=$work"
fi
trap 'chmod -R u+rwx "$work" 2>/dev/null; rm -rf "$work"' EXIT
. bench/lib.sh
ccenv="$as $CC_ENV"

# m CMD...: run CMD, print "WALL MAXRSS_KB"; its stderr is kept in $work/last.log.
m() {
    if ! /usr/bin/time -f "%e %M" -o "$work/time" "$@" >"$work/last.log" 2>&1; then
        cat "$work/last.log" >&2
        echo "bench: command failed: $*" >&2
        exit 1
    fi
    cat "$work/time"
}
min() { python3 -c "import sys; print(min(float(x) for x in sys.argv[1:]))" "$@"; }

cat "$deb" > /dev/null  # page cache, for every tool alike
echo "== import of $(basename "$deb") ($(stat -c %s "$deb") bytes), $(nproc) cores, $runs runs"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
tars= groves= ccs= rss=
i=0
while [ $i -lt "$runs" ]; do
    i=$((i+1))
    $as mkdir "$work/x$i"
    # Device files: an unprivileged tar can't make them; Grove skips them too.
    set -- $(m $as tar -C "$work/x$i" --exclude='./dev/*' -xf "$deb"); tars="$tars $1"
    set -- $(m $as "$bin/ch-image" -vv -s "$work/g$i" import "$deb" bookworm); groves="$groves $1"; rss="$rss $2"
    phases=$(grep -E "read and stored|committed" "$work/last.log" | tr '\n' ';')
    # Pack entries are stored uncompressed at import, and compressed by the compaction
    # the import starts in the background: wait for it (`build-cache --compact` waits for
    # the one running) before the next tool's timing, and say how long it went on.
    gdisk="$(du -sm "$work/g$i" | cut -f1) MiB"
    set -- $(m $as "$bin/ch-image" -s "$work/g$i" build-cache --compact); cwait=$1
    gdisk="$gdisk, $(du -sm "$work/g$i" | cut -f1) MiB once compacted (${cwait} s more)"
    set -- $(m $ccenv CH_IMAGE_STORAGE="$work/c$i" /usr/bin/ch-image import "$deb" bookworm); ccs="$ccs $1"
    echo "run $i: tar -x $(echo $tars | awk '{print $NF}') s, grove $(echo $groves | awk '{print $NF}') s (max RSS $(echo $rss | awk '{print $NF}') KiB, store ${gdisk}; $phases), charliecloud $(echo $ccs | awk '{print $NF}') s"
    if [ $i -eq "$runs" ]; then
        # The compression the import leaves to gc, once: its time and the store after.
        set -- $(m $as "$bin/ch-image" -s "$work/g$i" build-cache --gc)
        echo "grove build-cache --gc after run $i: $1 s (max RSS $2 KiB), store $(du -sm "$work/g$i" | cut -f1) MiB"
    fi
    # Keep the file system from filling up: one run's trees at a time.
    chmod -R u+rwx "$work/x$i" "$work/c$i" 2>/dev/null || true
    rm -rf "$work/x$i" "$work/g$i" "$work/c$i"
done
t_=$(min $tars); g_=$(min $groves); c_=$(min $ccs)
echo "best: tar -x ${t_} s, grove ${g_} s, charliecloud ${c_} s"
echo "grove / tar -x: $(ratio "$g_" "$t_")x (target <= 1.5)"
echo "charliecloud / grove: $(ratio "$c_" "$g_")x (target >= 10)"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
