#!/bin/sh
# ch-convert exports: Grove vs Charliecloud 0.31 (/usr/bin/ch-convert) on the same image,
# in one run, as an unprivileged user. Prints times and ratios (Charliecloud / Grove).
#
# Image: Debian bookworm (mmdebstrap --variant=minbase), imported into each tool's
# storage with its own ch-image. Exports: ch-image -> SquashFS, ch-image -> tar.gz.
# Charliecloud's squash is mksquashfs (gzip) of its storage directory; Grove's is its
# deterministic tar stream from the git store into tar2sqfs (zstd level 3), and with
# squashfs-tools only (last line) mksquashfs 4.6 -tar on that stream, or mksquashfs 4.5
# on a temporary checkout on a tmpfs (ch-convert -v names the tool). Both use all cores.
#
# Usage: sh bench/convert.sh   (as root: tools run as uid 65534 via setpriv)
set -eu
cd "$(dirname "$0")/.."
root=$(pwd)
cargo build --locked --release --bins >&2
bin=${CARGO_TARGET_DIR:-$root/target}/release
fix=${GROVE_FIXTURE_CACHE:-/var/tmp/grove-fixtures}
deb=$fix/debian-bookworm.tar
sh fixtures/debian.sh "$deb"
chmod a+r "$deb"
work=$(mktemp -d /var/tmp/grove-bench-convert.XXXXXX)
chmod 755 "$work"
if [ "$(id -u)" = 0 ]; then
    chown 65534:65534 "$work"
    as="setpriv --reuid=65534 --regid=65534 --clear-groups env USER=nobody HOME=$work"
else
    as="env HOME=$work"
fi
trap 'chmod -R u+rwx "$work" 2>/dev/null; rm -rf "$work"' EXIT
ccenv="$as PATH=/usr/bin:$PATH GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@localhost GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@localhost"

# t CMD...: run CMD quietly, print wall seconds taken; CPU seconds (user + sys of the
# command and its children) go to $work/cpu. On a loaded machine the CPU ratio is the
# steadier one: parallelism buys wall time only when cores are free.
t() {
    if ! /usr/bin/time -f "%e %U %S" -o "$work/time" "$@" >"$work/last.log" 2>&1; then
        cat "$work/last.log" >&2
        echo "bench: command failed: $*" >&2
        exit 1
    fi
    read -r e u s < "$work/time"
    python3 -c "print(f'{$u+$s:.3f}')" > "$work/cpu"
    echo "$e"
}
ratio() { python3 -c "print(f'{$1/$2:.1f}')"; }
size() { stat -c %s "$1" | python3 -c "import sys; print(f'{int(sys.stdin.read())/1e6:.0f} MB')"; }

echo "== setup: import bookworm ($(nproc) cores)"
echo "grove import:        $(t $as $bin/ch-image -s "$work/g" import "$deb" bookworm) s"
echo "grove compaction:    $(t $as $bin/ch-image -s "$work/g" build-cache --compact) s more (the import started it in the background)"
echo "charliecloud import: $(t $ccenv CH_IMAGE_STORAGE="$work/c" /usr/bin/ch-image import "$deb" bookworm) s"
# Warm the page cache for both stores equally.
cat "$deb" > /dev/null
tar -C "$work/c" -cf - . > /dev/null 2>&1 || true

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for fmt in sqfs tar.gz; do
    g=$(t $as $bin/ch-convert -s "$work/g" bookworm "$work/g.$fmt"); gc=$(cat "$work/cpu")
    c=$(t $ccenv CH_IMAGE_STORAGE="$work/c" /usr/bin/ch-convert -i ch-image bookworm "$work/c.$fmt"); cc=$(cat "$work/cpu")
    case $fmt in sqfs) target=5 ;; *) target=2 ;; esac
    echo "$fmt: grove ${g}s (cpu ${gc}s, $(size "$work/g.$fmt"))  charliecloud ${c}s (cpu ${cc}s, $(size "$work/c.$fmt"))  ratio $(ratio "$c" "$g")x wall, $(ratio "$cc" "$gc")x cpu (target >= $target)"
    [ "$fmt" = sqfs ] && { c_sqfs=$c; cc_sqfs=$cc; }
done
# Reproducible: a second export is byte-identical.
$as $bin/ch-convert -q -s "$work/g" bookworm "$work/g2.sqfs"
cmp -s "$work/g.sqfs" "$work/g2.sqfs" && echo "sqfs: second export byte-identical" || echo "sqfs: second export DIFFERS"
# SquashFS with squashfs-tools only (no squashfs-tools-ng, as on a machine with Debian's
# charliecloud package alone): a PATH holding mksquashfs and sqfstar but not tar2sqfs.
# Charliecloud's ch-convert runs mksquashfs either way, so its figure above stands.
nong=$work/squashfs-tools-only
mkdir "$nong"
for p in mksquashfs sqfstar; do
    command -v $p >/dev/null && ln -s "$(command -v $p)" "$nong/$p"
done
rm -f "$work/g.sqfs"
g=$(t $as PATH="$nong" $bin/ch-convert -v -s "$work/g" bookworm "$work/g.sqfs"); gc=$(cat "$work/cpu")
tool=$(grep "squashfs:" "$work/last.log" || echo "squashfs: (tool not reported)")
echo "sqfs, squashfs-tools only: grove ${g}s (cpu ${gc}s, $(size "$work/g.sqfs"); $tool)  charliecloud ${c_sqfs}s (cpu ${cc_sqfs}s)  ratio $(ratio "$c_sqfs" "$g")x wall, $(ratio "$cc_sqfs" "$gc")x cpu (target >= 5)"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
