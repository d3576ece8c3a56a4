#!/bin/sh
# ch-image pull: Grove vs Charliecloud 0.31 (/usr/bin/ch-image) from the same local registry,
# in one run, as an unprivileged user. Prints times and the ratio (Charliecloud / Grove).
#
# Image: a one-layer Debian bookworm (mmdebstrap tarball -> umoci -> skopeo) in Debian's
# docker-registry on 127.0.0.1 with TLS (the test CA of fixtures/registry.sh). Grove trusts
# the CA through SSL_CERT_FILE, Charliecloud (Python requests) through REQUESTS_CA_BUNDLE
# (its --tls-no-verify does not cover every request in 0.31).
# Scenarios: cold pull into an empty storage directory; pull again (up to date); pull and
# first run (against rootless Podman and skopeo + umoci); an update (a second tag, the
# same layer plus one holding one changed file, pulled and run where the first tag was
# already run).
#
# Needs (as root for setup): docker-registry skopeo umoci mmdebstrap openssl.
# Usage: sh bench/pull.sh
set -eu
cd "$(dirname "$0")/.."
. bench/lib.sh
root=$(pwd)
# GROVE_BIN: a directory of other Grove binaries to measure (e.g. an older build), else
# this checkout's release build.
if [ -n "${GROVE_BIN:-}" ]; then
    bin=$GROVE_BIN
else
    cargo build --release --bins >&2
    bin=$root/target/release
fi
fix=${GROVE_FIXTURE_CACHE:-/var/tmp/grove-fixtures}
deb=$fix/debian-bookworm.tar
if [ -f fixtures/debian.sh ]; then
    sh fixtures/debian.sh "$deb"
elif [ ! -e "$deb.complete" ]; then
    mmdebstrap --variant=minbase bookworm "$deb.tmp" >&2 && mv "$deb.tmp" "$deb" && touch "$deb.complete"
fi
sh fixtures/busybox.sh "$fix/busybox"
sh fixtures/registry.sh "$fix/registry" "$fix/busybox"
work=$(mktemp -d /var/tmp/grove-bench-pull.XXXXXX)
chmod 755 "$work"
if [ "$(id -u)" = 0 ]; then
    as="setpriv --reuid=65534 --regid=65534 --clear-groups env USER=nobody HOME=$work/home"
else
    as="env HOME=$work/home"
fi
mkdir -p "$work/home" "$work/u"
[ "$(id -u)" = 0 ] && chown 65534:65534 "$work/home" "$work/u"
regpid=
cleanup() {
    [ -n "$regpid" ] && kill "$regpid" 2>/dev/null
    chmod -R u+rwx "$work" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# Registry on a free port.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/data"
cat > "$work/config.yml" <<EOC
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/data
http:
  addr: 127.0.0.1:$port
  tls:
    certificate: $fix/registry/cert.pem
    key: $fix/registry/key.pem
EOC
docker-registry serve "$work/config.yml" >/dev/null 2>&1 &
regpid=$!
i=0
until python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),1)" 2>/dev/null; do
    i=$((i+1)); [ $i -lt 100 ] || { echo "bench: registry did not start" >&2; exit 1; }
    sleep 0.1
done
umoci init --layout "$work/oci"
umoci new --image "$work/oci:bookworm"
umoci raw add-layer --image "$work/oci:bookworm" "$deb"
skopeo copy --quiet --dest-tls-verify=false "oci:$work/oci:bookworm" \
    "docker://127.0.0.1:$port/debian:bookworm"
rm -rf "$work/oci"
ref=127.0.0.1:$port/debian:bookworm

cc="$as $CC_ENV REQUESTS_CA_BUNDLE=$fix/registry/ca.pem /usr/bin/ch-image"
gr="$as SSL_CERT_FILE=$fix/registry/ca.pem $bin/ch-image"


echo "== cold pull of one-layer bookworm ($(du -h "$deb" | cut -f1) tar)"
g_cold=$(t $gr -s "$work/u/g" pull "$ref" bookworm)
# The pull compresses its packs in the background: let that end before another tool runs.
echo "grove: compaction after the pull went on $(t $gr -s "$work/u/g" build-cache --compact) s more"
c_cold=$(t $cc -s "$work/u/c" pull "$ref" bookworm)
echo "cold:        grove ${g_cold}s  charliecloud ${c_cold}s  ratio $(ratio "$c_cold" "$g_cold")x (target >= 5)"
echo "== pull again (up to date)"
g_again=$(t $gr -s "$work/u/g" pull "$ref" bookworm)
c_again=$(t $cc -s "$work/u/c" pull "$ref" bookworm)
echo "again:       grove ${g_again}s  charliecloud ${c_again}s  ratio $(ratio "$c_again" "$g_again")x"

# Pull and first run (issue 13): what a user waits for before a command runs in a fresh
# image. Grove: pull, then `ch-run NAME -- /bin/true` (which checks the image out).
# Rootless Podman (single-uid mapping, native overlay with ignore_chown_errors, runc,
# host network, private configuration as in tests/it/interop.rs): `podman pull`, then
# `podman run --rm`. skopeo + umoci: `skopeo copy` to an OCI layout, `umoci unpack
# --rootless` to a bundle (no run).
echo "== pull + first run (fresh storage each)"
g_pull=$(t $gr -s "$work/u/g2" pull "$ref" bookworm)
g_run=$(t $as $bin/ch-run -s "$work/u/g2" bookworm -- /bin/true)
echo "grove:        pull ${g_pull}s + first ch-run ${g_run}s = $(python3 -c "print(f'{$g_pull+$g_run:.3f}')")s"
echo "grove: compaction after the pull went on $(t $gr -s "$work/u/g2" build-cache --compact) s more"
if command -v podman >/dev/null; then
    podman_setup "$work/u/pm"
    p_pull=$(t $as env $pmenv podman pull --tls-verify=false "$ref")
    p_run=$(t $as env $pmenv podman run --rm "$ref" /bin/true)
    echo "podman:       pull ${p_pull}s + first run ${p_run}s = $(python3 -c "print(f'{$p_pull+$p_run:.3f}')")s  ratio $(ratio "($p_pull+$p_run)" "($g_pull+$g_run)")x (target > 1)"
fi
if command -v skopeo >/dev/null && command -v umoci >/dev/null; then
    s_copy=$(t $as skopeo copy --quiet --src-tls-verify=false "docker://$ref" "oci:$work/u/sk:bookworm")
    s_unpack=$(t $as umoci unpack --rootless --image "$work/u/sk:bookworm" "$work/u/bundle")
    echo "skopeo+umoci: copy ${s_copy}s + unpack ${s_unpack}s = $(python3 -c "print(f'{$s_copy+$s_unpack:.3f}')")s  ratio $(ratio "($s_copy+$s_unpack)" "($g_pull+$g_run)")x (target > 1)"
fi

# An update (issue 13): debian:v2 is bookworm's layer plus a layer with one changed file
# (/etc/motd). Where bookworm was pulled and run before, pull v2 and run it: Grove checks
# v2 out linking the files it shares with bookworm's checkout (the pool); Podman pulls the
# new layer and stacks it; umoci unpacks the whole image again.
echo "== update: pull + first run of a tag one changed file apart from one already run"
mkdir -p "$work/upd/etc"
echo "updated motd" > "$work/upd/etc/motd"
tar -C "$work/upd" -cf "$work/upd.tar" etc
umoci init --layout "$work/oci"
umoci new --image "$work/oci:v2"
umoci raw add-layer --image "$work/oci:v2" "$deb"
umoci raw add-layer --image "$work/oci:v2" "$work/upd.tar"
skopeo copy --quiet --dest-tls-verify=false "oci:$work/oci:v2" \
    "docker://127.0.0.1:$port/debian:v2"
rm -rf "$work/oci"
ref2=127.0.0.1:$port/debian:v2
g_upull=$(t $gr -s "$work/u/g2" pull "$ref2" v2)
g_urun=$(t $as $bin/ch-run -v -s "$work/u/g2" v2 -- /bin/true)
linked=$(grep -o 'wrote [0-9]* files, linked [0-9]* from the pool' "$work/last.log" || echo "no pool line: an older build")
echo "grove:        pull ${g_upull}s + first ch-run ${g_urun}s = $(python3 -c "print(f'{$g_upull+$g_urun:.3f}')")s  ($linked)"
if [ -n "${pmenv:-}" ]; then
    p_upull=$(t $as env $pmenv podman pull --tls-verify=false "$ref2")
    p_urun=$(t $as env $pmenv podman run --rm "$ref2" /bin/true)
    echo "podman:       pull ${p_upull}s + first run ${p_urun}s = $(python3 -c "print(f'{$p_upull+$p_urun:.3f}')")s  ratio $(ratio "($p_upull+$p_urun)" "($g_upull+$g_urun)")x"
fi
if command -v skopeo >/dev/null && command -v umoci >/dev/null; then
    s_ucopy=$(t $as skopeo copy --quiet --src-tls-verify=false "docker://$ref2" "oci:$work/u/sk:v2")
    s_uunpack=$(t $as umoci unpack --rootless --image "$work/u/sk:v2" "$work/u/bundle2")
    echo "skopeo+umoci: copy ${s_ucopy}s + unpack ${s_uunpack}s = $(python3 -c "print(f'{$s_ucopy+$s_uunpack:.3f}')")s  ratio $(ratio "($s_ucopy+$s_uunpack)" "($g_upull+$g_urun)")x"
fi
# The first tag's checkout now shares inodes whose ctimes v2's links moved: its next run
# reads those files against its commit once (stamps, docs/store-format.md), then no more.
g_again1=$(t $as $bin/ch-run -s "$work/u/g2" bookworm -- /bin/true)
g_again2=$(t $as $bin/ch-run -s "$work/u/g2" bookworm -- /bin/true)
echo "grove:        ch-run of the first tag after the update ${g_again1}s (content check of shared files), then ${g_again2}s"
du_g=$(du -sm "$work/u/g2" | cut -f1)
echo "grove storage after both tags: ${du_g} MiB (du, hard links once)"
