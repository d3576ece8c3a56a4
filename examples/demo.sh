#!/bin/sh
# The main job on a small built-in example: make a busybox root filesystem, import it
# into a fresh store, list it, build an image from a Dockerfile on it, and run commands
# in both, all as an unprivileged user.
set -eu
cd "$(dirname "$0")/.."
# GROVE_BIN: where the tools are (e.g. /usr/bin after installing the package).
bin=${GROVE_BIN:-$(pwd)/target/debug}
work=${GROVE_DEMO_DIR:-/var/tmp/grove-demo}
if [ "$(id -u)" = 0 ]; then
    # Run the tools unprivileged even when invoked as root.
    mkdir -p "$work" && chown 65534:65534 "$work"
    as_user="setpriv --reuid=65534 --regid=65534 --clear-groups env USER=nobody HOME=$work"
else
    mkdir -p "$work"
    as_user="env"
fi
storage="$work/storage"
$as_user sh fixtures/busybox.sh "$work/busybox"
$as_user "$bin/ch-image" -s "$storage" import "$work/busybox" busybox
$as_user "$bin/ch-image" -s "$storage" list
$as_user "$bin/ch-run" -s "$storage" busybox -- /bin/sh -c 'echo "hello from $(uname -s) in busybox, uid $(id -u)"'
if [ -x "$bin/ch-image" ] && "$bin/ch-image" build --help >/dev/null 2>&1; then
    ctx="$work/ctx"
    $as_user mkdir -p "$ctx"
    $as_user sh -c "printf 'FROM busybox\nRUN echo built by grove > /hello.txt\nENV GREETING=hi\n' > '$ctx/Dockerfile'"
    $as_user "$bin/ch-image" -s "$storage" build -t demo "$ctx"
    $as_user "$bin/ch-run" -s "$storage" demo -- /bin/cat /hello.txt
    # How the image came to be, instruction by instruction (stock git reads the store too).
    $as_user "$bin/ch-image" -s "$storage" history demo
    $as_user git -C "$storage/repo.git" log --oneline refs/grove/img/demo+latest
fi
