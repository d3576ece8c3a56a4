# Shared helpers of the bench/ scripts (sourced, not run). Each script sets $work (its
# scratch directory) before calling t.

# Git identity Charliecloud's ch-image needs for its build cache, and its PATH (Debian's
# Python ch-image needs /usr/bin first).
CC_ENV="PATH=/usr/bin:$PATH GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@localhost GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@localhost"

now() { date +%s.%N; }

# settle: flush dirty pages and wait (at most 30 s) until no task waited on I/O for a
# whole second (/proc/pressure/io, "some" total), so that one command's writeback and
# discards (the root file system here is mounted with online `discard`; freeing a big
# tree stalls the journal for seconds afterwards) are not charged to the next command,
# whichever tool it is. The wait is printed to stderr when it is longer than 2 s.
settle() {
    sync
    [ -r /proc/pressure/io ] || return 0
    waited=0
    prev=$(sed -n 's/^some .*total=//p' /proc/pressure/io)
    while [ "$waited" -lt 30 ]; do
        sleep 1
        waited=$((waited + 1))
        cur=$(sed -n 's/^some .*total=//p' /proc/pressure/io)
        # Microseconds of stall in the last second.
        if [ $((cur - prev)) -lt 5000 ]; then
            break
        fi
        prev=$cur
    done
    if [ "$waited" -gt 2 ]; then
        echo "bench: waited ${waited}s for the disk to settle" >&2
    fi
}

# timed CMD...: run CMD quietly, print the wall seconds taken; on failure show its
# output and stop.
timed() {
    s=$(now)
    if ! "$@" >"$work/last.log" 2>&1; then
        cat "$work/last.log" >&2
        echo "bench: command failed: $*" >&2
        exit 1
    fi
    e=$(now)
    python3 -c "print(f'{$e-$s:.3f}')"
}

# t CMD...: timed, starting on a settled disk (settle).
t() {
    settle
    timed "$@"
}

# tmed N CMD...: run CMD N times in a row after one settle, print the median wall
# seconds. For commands of a few tens of milliseconds: the first run after settle's
# idle second pays the idle machine's wake-up (15 to 40 ms here, measured by alternating
# runs after `sleep 2` and runs right after another), which a run in a series does not.
tmed() {
    n=$1
    shift
    settle
    i=0
    while [ "$i" -lt "$n" ]; do
        timed "$@" || exit 1
        i=$((i + 1))
    done | python3 -c "
import statistics, sys
d = [float(l) for l in sys.stdin]
sys.exit(1) if len(d) < $n else print(f'{statistics.median(d):.3f}')"
}

# ratio A B: A/B with one decimal.
ratio() { python3 -c "print(f'{$1/$2:.1f}')"; }

# issue4_context DIR [N]: the issue-4 build bench input, made as the user in $as: a 50 MB
# file, a directory of N (default 2,000) small files, and a Dockerfile FROM bookworm with
# a RUN that creates 20,000 files, COPY of each, an ENV and a RUN.
issue4_context() {
    $as mkdir -p "$1/small"
    $as sh -c "head -c 50000000 /dev/urandom > '$1/big.bin'"
    $as sh -c "cd '$1/small' && i=0; while [ \$i -lt ${2:-2000} ]; do echo \"file \$i\" > f\$i; i=\$((i+1)); done"
    $as sh -c "cat > '$1/Dockerfile'" <<'DF'
FROM bookworm
RUN mkdir /many && cd /many && i=0; while [ $i -lt 20000 ]; do echo $i > f$i; i=$((i+1)); done
COPY big.bin /big.bin
COPY small /small/
ENV BENCH=1
RUN echo done > /done
DF
}

# fresh_fs NAME: print a new scratch directory for a benchmark's stores. As root with
# mkfs.ext4 and loop devices (and unless GROVE_BENCH_FS=same), it is the root of a fresh
# ext4 file system in a sparse image under /var/tmp (mounted at /var/tmp/NAME.mnt.XXXX);
# else a directory under /var/tmp. Why: on a long-lived ext4 that just freed many inodes
# (the benches before, a test suite), creating files is 3 to 10 times slower for minutes
# (perf: the time goes to ext4's inode allocator), which made a cold build of the same
# input take 1.3 s or 3.9 s depending on what ran before it; both tools write to the same
# file system, so a fresh one measures them, not the history of the disk. Undo with
# fresh_fs_cleanup DIR.
fresh_fs() {
    d=$(mktemp -d "/var/tmp/$1.XXXXXX")
    if [ "$(id -u)" = 0 ] && [ "${GROVE_BENCH_FS:-fresh}" != same ] \
        && command -v mkfs.ext4 >/dev/null \
        && truncate -s 16G "$d.img" 2>/dev/null \
        && mkfs.ext4 -q -F "$d.img" >/dev/null 2>&1 \
        && mount -o loop "$d.img" "$d" 2>/dev/null; then
        chmod 755 "$d"
        echo "bench: stores on a fresh ext4 file system ($d.img, loop-mounted at $d)" >&2
    else
        rm -f "$d.img"
        echo "bench: stores in $d (GROVE_BENCH_FS=same, or no mkfs.ext4 / loop mount)" >&2
    fi
    echo "$d"
}

fresh_fs_cleanup() {
    chmod -R u+rwx "$1" 2>/dev/null
    if mountpoint -q "$1" 2>/dev/null; then
        rm -rf "${1:?}"/* 2>/dev/null
        umount "$1"
        rm -f "$1.img"
    fi
    rm -rf "$1"
}

# podman_setup DIR: private configuration for rootless Podman under DIR, made as the user
# in $as (single-uid mapping, native overlay with ignore_chown_errors, runc, host
# network, cgroupfs, as in tests/it/interop.rs); sets pmenv, the environment that
# selects it (`$as env $pmenv podman ...`).
podman_setup() {
    pm=$1
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
}
