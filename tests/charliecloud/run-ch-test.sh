#!/bin/bash
# Run Charliecloud 0.31's own test suite (Debian's charliecloud-tests: ch-test and the
# bats files under /usr/libexec/installed-tests/charliecloud) against Grove's ch-run,
# ch-convert, ch-fromhost and ch-image, unprivileged and offline. As root:
#
#   tests/charliecloud/run-ch-test.sh [BIN_DIR [WORK_DIR]]
#
# BIN_DIR: Grove's binaries (default target/debug), or /usr/bin to run Charliecloud
# itself on the same images for comparison. WORK_DIR (default /var/tmp/grove-ch-test, or
# /var/tmp/grove-ch-test-cc for /usr/bin) gets the test prefix, images and logs:
# build.log, run.log (ch-test build and run phases) and uidgid.log (the ch-run_uidgid.bats
# loop ch-test does only when every earlier run test passed).
#
# Needs: charliecloud-tests, bats, mmdebstrap and a Debian mirror (for the chtest base:
# bookworm with python3, gcc, make, libc6-dev), the busybox fixture
# (fixtures/busybox.sh), uid 65534. What differs from a real `ch-test all` (and why) is
# in docs/compatibility.md, "Charliecloud's test suite".
set -eu
here=$(cd "$(dirname "$0")/../.." && pwd)
bin=$(readlink -f "${1:-$here/target/debug}")
if [[ $bin == /usr/bin ]]; then def=/var/tmp/grove-ch-test-cc; else def=/var/tmp/grove-ch-test; fi
work=${2:-$def}
tests=/usr/libexec/installed-tests/charliecloud
examples=/usr/share/doc/charliecloud/examples
fixtures=${GROVE_FIXTURE_CACHE:-/var/tmp/grove-fixtures}
[[ $(id -u) = 0 ]] || { echo "run as root (the tests run as uid 65534)" >&2; exit 1; }
[[ -x /usr/bin/ch-test ]] || { echo "apt-get install charliecloud-tests bats" >&2; exit 1; }

P=$work/prefix W=$work/w
rm -rf "$P" "$W"
mkdir -p "$P/bin" "$P/lib" "$P/libexec/installed-tests" "$P/share/doc/charliecloud/examples" \
         "$W/home"
# ch-test finds everything from its own directory (ch_bin): copy it, with the image tag of
# the installed tree's directory ("charliecloud") computed as for the source tree's
# "test", so Dockerfile.argenv's "FROM 00_tiny" and the run tests' names agree.
sed 's/                \.|test|examples)  # dot is directory "test"/                .|test|examples|charliecloud)/' \
    /usr/bin/ch-test > "$P/bin/ch-test"
chmod 755 "$P/bin/ch-test"
for b in ch-run ch-convert ch-fromhost ch-image ch-ssh; do cp "$bin/$b" "$P/bin/$b"; done
cp /usr/bin/ch-checkns /usr/bin/ch-run-oci "$P/bin/"
ln -s /usr/lib/charliecloud "$P/lib/charliecloud"
cp -a "$tests" "$P/libexec/installed-tests/"
# build/*.bats test ch-image (not run here); ch-test needs one file there.
rm -f "$P/libexec/installed-tests/charliecloud/build/"*.bats
printf '@test "build/*.bats not run here" {\n    skip "ch-image has its own run"\n}\n' \
    > "$P/libexec/installed-tests/charliecloud/build/00_placeholder.bats"
ex=$P/share/doc/charliecloud/examples
cp -a "$examples/chtest" "$ex/"
# chtest/Build bootstraps Alpine 3.9 from the network: the same steps from a Debian base.
cat > "$ex/chtest/Build" <<'EOF'
#!/bin/bash
# ch-test-scope: quick
set -ex
srcdir=$1; tarball_uncompressed=${2}.tar; workdir=$3
[[ -f $CHTEST_BASE_TAR ]] || exit 65
cd "$workdir"
ch_run="ch-run -u0 -g0 -w --no-home ${workdir}/img"
mkdir img
tar -x -f "$CHTEST_BASE_TAR" -C img --exclude='./dev/*' --no-same-owner --no-same-permissions || true
mkdir -p img/{dev,etc,proc,sys,tmp,home,mnt}
chmod -R u+rw,ug-s img
touch img/etc/{group,hosts,passwd,resolv.conf}
echo "tmpfs and host home are not overmounted" > img/home/overmount-me
touch img/usr/bin/ch-ssh
cp -r "$srcdir" img/test
$ch_run --cd /test -- sh -c 'make clean && make'
touch img/dev/deleteme
mkdir -p img/mnt/dev
touch img/mnt/dev/dontdeleteme
touch img/.hiddenfile1 img/..hiddenfile2 img/...hiddenfile3
ln -s ../bind4 img/mnt/bind4
ln -s ./doesnotexist img/mnt/link-b0rken-rel
ln -s /doesnotexist img/mnt/link-b0rken-abs
ln -s /tmp img/mnt/link-bad-abs
ln -s ../.. img/mnt/link-bad-rel
mv img/etc/resolv.conf img/etc/resolv.conf.real
ln -s /etc/resolv.conf.real img/etc/resolv.conf
touch img/maxperms_file; chmod 0777 img/maxperms_file
mkdir img/maxperms_dir; chmod 1777 img/maxperms_dir
tar cf "$tarball_uncompressed" -- img
gzip -f "$tarball_uncompressed"
EOF
chmod 755 "$ex/chtest/Build"

base=$fixtures/chtest-base.tar
if [[ ! -f $base ]]; then
    mmdebstrap --variant=minbase --mode=root --include=python3,gcc,make,libc6-dev \
               bookworm "$base.tmp" "${GROVE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
    chmod 644 "$base.tmp"
    mv "$base.tmp" "$base"
fi
sh "$here/fixtures/busybox.sh" "$fixtures/busybox"
chown -R 65534:65534 "$W"

as_nobody () {
    setpriv --reuid=65534 --regid=65534 --clear-groups -- \
      env -i PATH="$P/bin:/usr/local/bin:/usr/bin:/bin" USER=nobody LOGNAME=nobody \
          HOME="$W/home" TERM=dumb LANG=C.UTF-8 CHTEST_BASE_TAR="$base" \
          CH_TEST_IMGDIR="$W/img" CH_TEST_TARDIR="$W/tar" CH_IMAGE_STORAGE="$W/storage" \
          CH_TEST_PERMDIRS=skip CH_TEST_SCOPE=full CH_TEST_PACK_FMT=tar-unpack \
          CH_TEST_BUILDER=ch-image "$@"
}
cd /tmp
# Dockerfile.00_tiny is FROM alpine:3.9: the busybox tree stands in for it.
as_nobody "$P/bin/ch-image" import "$fixtures/busybox" alpine:3.9 > "$work/build.log" 2>&1
as_nobody "$P/bin/ch-test" build >> "$work/build.log" 2>&1 || true
# ch-fromhost.bats wants almalinux_8ch and debian_9ch (glibc images, built from the
# network): chtest is one. Their Dockerfiles come after the build phase (which would try
# to pull their bases), so that the run phase finds the images by tag.
cp "$examples/Dockerfile.debian_9ch" "$examples/Dockerfile.almalinux_8ch" "$ex/"
for t in almalinux_8ch debian_9ch; do
    as_nobody cp "$W/tar/chtest.tar.gz" "$W/tar/$t.tar.gz"
done
as_nobody "$P/bin/ch-test" run > "$work/run.log" 2>&1 || true
: > "$work/uidgid.log"
for u in nobody root; do for g in nogroup root; do
    echo "testing as $u $g" >> "$work/uidgid.log"
    as_nobody env GUEST_USER=$u GUEST_GROUP=$g "$P/bin/ch-test" \
        -f "$P/libexec/installed-tests/charliecloud/run/ch-run_uidgid.bats" \
        >> "$work/uidgid.log" 2>&1 || true
done; done
for f in build run uidgid; do
    printf '%s: %s ok, %s not ok\n' "$f" "$(grep -c '^ok' "$work/$f.log")" \
           "$(grep -c '^not ok' "$work/$f.log")"
done
grep -h '^not ok' "$work/build.log" "$work/run.log" "$work/uidgid.log" || true
