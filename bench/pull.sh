#!/bin/sh
# ch-image pull: Grove vs Charliecloud 0.31 (/usr/bin/ch-image) from the same local registry,
# in one run, as an unprivileged user. Prints times and the ratio (Charliecloud / Grove).
#
# Image: a one-layer Debian bookworm (mmdebstrap tarball -> umoci -> skopeo) in Debian's
# docker-registry on 127.0.0.1 with TLS (the test CA of fixtures/registry.sh). Grove trusts
# the CA through SSL_CERT_FILE, Charliecloud (Python requests) through REQUESTS_CA_BUNDLE
# (its --tls-no-verify does not cover every request in 0.31).
# Scenarios: cold pull into an empty storage directory; pull again (up to date).
#
# Needs (as root for setup): docker-registry skopeo umoci mmdebstrap openssl.
# Usage: sh bench/pull.sh
set -eu
cd "$(dirname "$0")/.."
. bench/lib.sh
root=$(pwd)
cargo build --release --bins >&2
bin=$root/target/release
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
if command -v podman >/dev/null; then
    pm=$work/u/pm
    $as mkdir -p "$pm/config/containers" "$pm/data" "$pm/run"
    $as chmod 700 "$pm/run"
    $as sh -c "cat > '$pm/storage.conf'" <<EOC
[storage]
driver = "overlay"
graphroot = "$pm/storage"
runroot = "$pm/run/containers"
[storage.options.overlay]
ignore_chown_errors = "true"
EOC
    $as sh -c "cat > '$pm/containers.conf'" <<'EOC'
[containers]
netns = "host"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOC
    pmenv="XDG_CONFIG_HOME=$pm/config XDG_DATA_HOME=$pm/data XDG_RUNTIME_DIR=$pm/run CONTAINERS_STORAGE_CONF=$pm/storage.conf CONTAINERS_CONF=$pm/containers.conf"
    p_pull=$(t $as env $pmenv podman pull --tls-verify=false "$ref")
    p_run=$(t $as env $pmenv podman run --rm "$ref" /bin/true)
    echo "podman:       pull ${p_pull}s + first run ${p_run}s = $(python3 -c "print(f'{$p_pull+$p_run:.3f}')")s  ratio $(ratio "($p_pull+$p_run)" "($g_pull+$g_run)")x (target > 1)"
fi
if command -v skopeo >/dev/null && command -v umoci >/dev/null; then
    s_copy=$(t $as skopeo copy --quiet --src-tls-verify=false "docker://$ref" "oci:$work/u/sk:bookworm")
    s_unpack=$(t $as umoci unpack --rootless --image "$work/u/sk:bookworm" "$work/u/bundle")
    echo "skopeo+umoci: copy ${s_copy}s + unpack ${s_unpack}s = $(python3 -c "print(f'{$s_copy+$s_unpack:.3f}')")s  ratio $(ratio "($s_copy+$s_unpack)" "($g_pull+$g_run)")x (target > 1)"
fi
