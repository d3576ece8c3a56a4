#!/bin/sh
# ch-image build: Grove vs Charliecloud 0.31 (/usr/bin/ch-image) on the same input, in
# one run, as an unprivileged user. Prints times and ratios (Charliecloud / Grove).
#
# Context: a 50 MB file and a directory of 2,000 small files. Dockerfile: FROM a Debian
# bookworm import, a RUN that creates 20,000 files, COPY of each, an ENV, a RUN.
# Scenarios: cold (empty cache), all hits (rebuild), one context file changed.
# Also: a no-op RUN on a 50,000-file image, minus the command's own time (ch-run).
#
# Usage: sh bench/build.sh   (as root: tools run as uid 65534 via setpriv)
set -eu
cd "$(dirname "$0")/.."
. bench/lib.sh
root=$(pwd)
cargo build --release --bins >&2
bin=$root/target/release
fix=${GROVE_FIXTURE_CACHE:-/var/tmp/grove-fixtures}
deb=$fix/debian-bookworm.tar
sh fixtures/debian.sh "$deb"
sh fixtures/busybox.sh "$fix/busybox"
work=$(mktemp -d /var/tmp/grove-bench-build.XXXXXX)
if [ "$(id -u)" = 0 ]; then
    chown 65534:65534 "$work"
    as="setpriv --reuid=65534 --regid=65534 --clear-groups env USER=nobody HOME=$work"
else
    as="env HOME=$work"
fi
trap 'chmod -R u+rwx "$work" 2>/dev/null; rm -rf "$work"' EXIT
# Charliecloud's ch-image is Python and keeps its cache with git: identity and PATH.
cc="$as $CC_ENV /usr/bin/ch-image"
gr="$as $bin/ch-image"


issue4_context "$work/ctx"

echo "== import bookworm (setup, not compared)" >&2
echo "grove import:        $(t $gr -s "$work/g" import "$deb" bookworm) s"
echo "charliecloud import: $(t $cc -s "$work/c" import "$deb" bookworm) s"

echo "== cold build"
g_cold=$(t $gr -s "$work/g" build -t bench "$work/ctx")
c_cold=$(t $cc -s "$work/c" build -t bench "$work/ctx")
echo "cold:        grove ${g_cold}s  charliecloud ${c_cold}s  ratio $(ratio "$c_cold" "$g_cold")x (target >= 3)"

echo "== all hits"
g_hit=$(t $gr -s "$work/g" build -t bench "$work/ctx")
c_hit=$(t $cc -s "$work/c" build -t bench "$work/ctx")
echo "all hits:    grove ${g_hit}s  charliecloud ${c_hit}s  ratio $(ratio "$c_hit" "$g_hit")x (target >= 30)"

echo "== one context file changed"
$as sh -c "echo changed >> '$work/ctx/small/f1000'"
g_one=$(t $gr -s "$work/g" build -t bench "$work/ctx")
c_one=$(t $cc -s "$work/c" build -t bench "$work/ctx")
echo "one changed: grove ${g_one}s  charliecloud ${c_one}s  ratio $(ratio "$c_one" "$g_one")x (target >= 10)"

echo "== no-op RUN on a 50,000-file image (grove)"
$as sh -c "mkdir -p '$work/big' && cp -a '$fix/busybox/.' '$work/big/' && mkdir '$work/big/many' && cd '$work/big/many' && i=0; while [ \$i -lt 50 ]; do mkdir d\$i; j=0; while [ \$j -lt 1000 ]; do echo \$i.\$j > d\$i/f\$j; j=\$((j+1)); done; i=\$((i+1)); done"
t $gr -s "$work/g" import "$work/big" big50k >/dev/null
$as mkdir -p "$work/noop"
$as sh -c "printf 'FROM big50k\nRUN true\n' > '$work/noop/Dockerfile'"
run_t=$(t $as $bin/ch-run -s "$work/g" big50k -- /bin/true)
noop_t=$(t $gr -s "$work/g" build --no-cache -t noop "$work/noop")
echo "no-op RUN:   build ${noop_t}s, ch-run alone ${run_t}s, added $(python3 -c "print(f'{($noop_t-$run_t)*1000:.0f}')") ms (target < 100 ms)"
