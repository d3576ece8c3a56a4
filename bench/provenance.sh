#!/bin/sh
# Provenance and shared cache (issue 7), as an unprivileged user:
#  1. history and diff on two 50,000-file images (A imported; B = A with 1,000 files
#     changed and 1,000 added, imported) and on a built image with a few instructions,
#     timed with hyperfine. Target: < 100 ms each.
#  2. the issue-4 bench build (bench/build.sh's Dockerfile FROM Debian bookworm) on store 1,
#     `build-cache push` to a bare repository, `build-cache fetch` into a fresh store 2,
#     build there: must be all hits. Target: < 1 s.
#
# Usage: sh bench/provenance.sh   (as root: tools run as uid 65534 via setpriv)
set -eu
cd "$(dirname "$0")/.."
. bench/lib.sh
root=$(pwd)
cargo build --release --bins >&2
bin=$root/target/release
fix=${GROVE_FIXTURE_CACHE:-/var/tmp/grove-fixtures}
deb=$fix/debian-bookworm.tar
sh fixtures/debian.sh "$deb" >&2
sh fixtures/busybox.sh "$fix/busybox" >&2
work=$(mktemp -d /var/tmp/grove-bench-prov.XXXXXX)
if [ "$(id -u)" = 0 ]; then
    chown 65534:65534 "$work"
    as="setpriv --reuid=65534 --regid=65534 --clear-groups env USER=nobody HOME=$work"
else
    as="env HOME=$work"
fi
trap 'chmod -R u+rwx "$work" 2>/dev/null; rm -rf "$work"' EXIT
gr="$bin/ch-image -s $work/s1"
runs=${RUNS:-20}

# hf NAME CMD: hyperfine CMD as the test user; prints "NAME: mean ± sd ms".
hf() {
    name=$1
    shift
    $as hyperfine -N --warmup 3 --runs "$runs" --export-json "$work/hf.json" "$*" >/dev/null 2>&1 ||
        $as hyperfine --warmup 3 --runs "$runs" --export-json "$work/hf.json" "$*" >/dev/null
    python3 - "$work/hf.json" "$name" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"][0]
m, s = r["mean"] * 1000, (r["stddev"] or 0) * 1000
print(f"{sys.argv[2]:<34} {m:8.1f} ms ± {s:5.1f}  {'ok' if m < 100 else 'OVER TARGET'} (target < 100 ms)")
PY
}

echo "== setup: 50,000-file images A and B, a built image" >&2
$as sh -c "mkdir -p '$work/a' && cp -a '$fix/busybox/.' '$work/a/' && mkdir '$work/a/many' && cd '$work/a/many' && i=0; while [ \$i -lt 50 ]; do mkdir d\$i; j=0; while [ \$j -lt 1000 ]; do echo \$i.\$j > d\$i/f\$j; j=\$((j+1)); done; i=\$((i+1)); done"
$as cp -a "$work/a" "$work/b"
# B: 1,000 files changed (d0..d9, f0..f99) and 1,000 added (d10..d19, n0..n99).
$as sh -c "cd '$work/b/many' && i=0; while [ \$i -lt 10 ]; do j=0; while [ \$j -lt 100 ]; do echo changed > d\$i/f\$j; echo new > d\$((i+10))/n\$j; j=\$((j+1)); done; i=\$((i+1)); done"
echo "import A:  $(t $as $gr import "$work/a" big-a) s" >&2
echo "import B:  $(t $as $gr import "$work/b" big-b) s" >&2
$as mkdir -p "$work/ctx"
$as sh -c "echo hello > '$work/ctx/hello.txt'"
$as sh -c "cat > '$work/ctx/Dockerfile'" <<'DF'
FROM big-a
ENV STAGE=1
RUN echo one > /one && rm /many/d0/f0
COPY hello.txt /hello.txt
RUN chmod 600 /one && mkdir /many/x && echo x > /many/x/f
WORKDIR /many
DF
echo "build:     $(t $as $gr build -t built "$work/ctx") s" >&2
$as $gr history built >&2
echo "diff --stat big-a big-b: $($as $gr diff --stat big-a big-b)" >&2
[ "$($as $gr diff big-a big-b | wc -l)" = 2000 ] || { echo "bench: expected 2000 changes" >&2; exit 1; }

echo "== history and diff (hyperfine, $runs runs)"
hf "history big-a (50k-file import)" $gr history big-a
hf "history built (6 instructions)" $gr history built
hf "history --json built" $gr history --json built
hf "diff big-a big-b" $gr diff big-a big-b
hf "diff --stat big-a big-b" $gr diff --stat big-a big-b
hf "diff built~4 built" $gr diff built~4 built
hf "diff --stat big-a built" $gr diff --stat big-a built
hf "inspect built" $gr inspect built

echo "== shared cache: build on store 1, push, fetch into fresh store 2, build there"
issue4_context "$work/ctx4"
g1="$bin/ch-image -s $work/s4a"
g2="$bin/ch-image -s $work/s4b"
echo "import bookworm (store 1): $(t $as $g1 import "$deb" bookworm) s"
echo "cold build (store 1):      $(t $as $g1 build -t bench "$work/ctx4") s"
$as git init -q --bare "$work/cache.git"
echo "build-cache push:          $(t $as $g1 build-cache push "$work/cache.git") s"
echo "build-cache fetch (fresh): $(t $as $g2 build-cache fetch "$work/cache.git") s"
hit=$(t $as $g2 build -t bench "$work/ctx4")
cp "$work/last.log" "$work/hit.log"
cat "$work/hit.log"
if grep -Eq '^ *[0-9]+\. ' "$work/hit.log"; then
    echo "bench: build on store 2 was not all hits" >&2
    exit 1
fi
echo "all-hit build (store 2, after fetch): ${hit} s  $(python3 -c "print('ok' if $hit < 1 else 'OVER TARGET')") (target < 1 s)"
hit2=$(t $as $g2 build -t bench "$work/ctx4")
echo "all-hit rebuild (store 2, warm stat cache): ${hit2} s"
echo "store 2: $($as $g2 build-cache | tr '\n' ' ')"
