#!/bin/sh
# Large files (session 35): `ch-image import` of a plain tarball of one 256 MiB file of
# random bytes and one 256 MiB file of zeros, and of a gzip tarball of one 2 GiB file of
# zeros, with two sets of Grove binaries (OLD and NEW directories holding ch-image),
# alternating OLD, NEW in each round, against `tar -x` of the same tarball into the same
# file system and Charliecloud 0.31's `ch-image import`, as an unprivileged user. Prints
# each run's wall, user and system seconds and peak memory, the load average before each
# run, the best of each, and the ratios.
#
# Usage: sh bench/bigfile.sh OLD_BIN_DIR NEW_BIN_DIR [ROUNDS]   (ROUNDS default 5)
# The tarballs are made once (random bytes from /dev/urandom) and cached in
# $GROVE_BENCH_CACHE (default /work/bench-cache). The scratch directory is on /var/tmp
# (the root disk, no tmpfs), as Grove's store usually is.
set -eu
cd "$(dirname "$0")/.."
old=${1:?usage: bench/bigfile.sh OLD_BIN_DIR NEW_BIN_DIR [ROUNDS]}
new=${2:?usage: bench/bigfile.sh OLD_BIN_DIR NEW_BIN_DIR [ROUNDS]}
rounds=${3:-5}
cache=${GROVE_BENCH_CACHE:-/work/bench-cache}
mkdir -p "$cache"
big=$cache/bigfile-512m.tar
zeros=$cache/bigfile-zeros-2g.tar.gz
if [ ! -e "$big" ]; then
    d=$(mktemp -d /var/tmp/grove-bigfile-src.XXXXXX)
    head -c 256M /dev/urandom > "$d/random.bin"
    head -c 256M /dev/zero > "$d/zeros.bin"
    tar -cf "$big.tmp" -C "$d" . && mv "$big.tmp" "$big"
    rm -rf "$d"
fi
if [ ! -e "$zeros" ]; then
    d=$(mktemp -d /var/tmp/grove-bigfile-src.XXXXXX)
    head -c 2G /dev/zero > "$d/zeros.bin"
    tar -cf - -C "$d" . | gzip -1 > "$zeros.tmp" && mv "$zeros.tmp" "$zeros"
    rm -rf "$d"
fi
chmod a+r "$big" "$zeros"
work=$(mktemp -d /var/tmp/grove-bench-bigfile.XXXXXX)
chmod 755 "$work"
if [ "$(id -u)" = 0 ]; then
    chown 65534:65534 "$work"
    chmod 755 "$old" "$new"
    as="setpriv --reuid=65534 --regid=65534 --clear-groups env -u CI USER=nobody HOME=$work"
else
    as="env -u CI HOME=$work"
fi
trap 'chmod -R u+rwx "$work" 2>/dev/null; rm -rf "$work"' EXIT
. bench/lib.sh
ccenv="$as $CC_ENV"

# m CMD...: run CMD, print "WALL USER SYS MAXRSS_KB".
m() {
    if ! /usr/bin/time -f "%e %U %S %M" -o "$work/time" "$@" >"$work/last.log" 2>&1; then
        cat "$work/last.log" >&2
        echo "bench: command failed: $*" >&2
        exit 1
    fi
    cat "$work/time"
}
min() { python3 -c "import sys; print(min(float(x) for x in sys.argv[1:]))" "$@"; }
load() { cut -d' ' -f1 /proc/loadavg; }

for tb in "$big" "$zeros"; do
    cat "$tb" > /dev/null # page cache, for every tool alike
    echo "== import of $(basename "$tb") ($(stat -c %s "$tb") bytes), $(nproc) cores, $rounds rounds"
    olds= news= tars= ccs=
    for r in $(seq 1 "$rounds"); do
        for v in old new tar cc; do
            dest=$work/$v
            settle
            l=$(load)
            case $v in
                old | new)
                    eval bin=\$$v
                    set -- $(m $as "$bin/ch-image" -s "$dest" import "$tb" big)
                    eval "${v}s=\"\$${v}s $1\""
                    ;;
                tar)
                    $as mkdir "$dest"
                    set -- $(m $as tar -C "$dest" -xf "$tb")
                    tars="$tars $1"
                    ;;
                cc)
                    set -- $(m $ccenv CH_IMAGE_STORAGE="$dest" /usr/bin/ch-image import "$tb" big)
                    ccs="$ccs $1"
                    ;;
            esac
            echo "round $r $v: $1 s wall, $2 s user, $3 s sys, max RSS $4 KiB (load $l)"
            chmod -R u+rwx "$dest" 2>/dev/null || true
            rm -rf "$dest"
        done
    done
    o=$(min $olds); n=$(min $news); t_=$(min $tars); c_=$(min $ccs)
    echo "best: old ${o} s, new ${n} s, tar -x ${t_} s, charliecloud ${c_} s"
    echo "old / new: $(ratio "$o" "$n")x; new / tar -x: $(ratio "$n" "$t_")x;" \
        "charliecloud / new: $(ratio "$c_" "$n")x"
done
