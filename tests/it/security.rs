//! Security checks modelled on the ones Charliecloud ships in examples/chtest: escaping the
//! new root, making device files, changing IDs and groups, binding privileged ports,
//! reaching host-only files in /dev, /proc, /sys and on bind mounts, signalling host
//! processes, gaining privilege through setuid binaries, and which namespaces are new.
//!
//! Every test runs the real ch-run as the unprivileged test user, mostly as container uid 0
//! (which holds every capability inside its user namespace: the strongest case), and
//! asserts the exact safe outcome (an errno name, an unchanged ID, a different namespace),
//! so that it fails if the protection were missing. Probes are small static C programs
//! compiled per test into a copy of the busybox fixture (which has no libc).
//!
//! At the end: names that hostile input gives (a tarball's members) reach the messages of
//! ch-image and ch-convert escaped, never as terminal sequences or forged lines.

use crate::common::{
    busybox_copy, busybox_rootfs, is_root, ok, sh, skip, tool, unpriv, unpriv_sleeper, Reaped,
    Scratch, TEST_UID,
};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

// ---- C probes ----

/// Shared by every probe: errno names, so that outcomes can be compared exactly.
const PRELUDE: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

__attribute__((unused)) static const char *ename(int e)
{
    static char other[32];
    switch (e) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case ESRCH: return "ESRCH";
    case EACCES: return "EACCES";
    case EEXIST: return "EEXIST";
    case ENOTDIR: return "ENOTDIR";
    case EISDIR: return "EISDIR";
    case EINVAL: return "EINVAL";
    case EROFS: return "EROFS";
    case EADDRINUSE: return "EADDRINUSE";
    case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
    }
    snprintf(other, sizeof other, "errno-%d", e);
    return other;
}

/* "ok" when a call returned >= 0, else the name of its errno. */
__attribute__((unused)) static const char *res(long rc)
{
    return rc < 0 ? ename(errno) : "ok";
}

/* A failure of the probe itself (not of the call under test): exit 2. */
__attribute__((unused)) static void fail(const char *what)
{
    printf("probe error: %s: %s\n", what, strerror(errno));
    exit(2);
}
"#;

/// argv[1] is a host path outside the image. Chroots into /mnt with a directory fd kept
/// outside it, climbs with `..` from there, chroots to where it got, and reports whether
/// `/` is still the same inode and whether the host path became reachable.
const ESCAPE_C: &str = r#"
#include <sys/stat.h>

int main(int argc, char **argv)
{
    struct stat before, after;
    int outside, rc;

    if (argc != 2)
        return 2;
    if (stat("/", &before) != 0)
        fail("stat / before");
    printf("marker before: %s\n", res(access(argv[1], F_OK)));
    outside = open(".", O_RDONLY | O_DIRECTORY);
    if (outside < 0)
        fail("open .");
    rc = chroot("/mnt");
    printf("chroot /mnt: %s\n", res(rc));
    if (rc == 0) {
        if (fchdir(outside) != 0)
            fail("fchdir");
        for (int i = 0; i < 256; i++)
            if (chdir("..") != 0)
                fail("chdir ..");
        printf("chroot .: %s\n", res(chroot(".")));
    }
    if (stat("/", &after) != 0)
        fail("stat / after");
    printf("root: %s\n", before.st_dev == after.st_dev && before.st_ino == after.st_ino
                         ? "same" : "changed");
    printf("marker after: %s\n", res(access(argv[1], F_OK)));
    return 0;
}
"#;

/// Arguments TYPE:PATH, TYPE `c` (character device 1:1, the kind of /dev/mem) or `b`
/// (block device 8:0, the kind of /dev/sda). Reports mknod's outcome and what is at PATH
/// afterwards. Nothing is ever opened.
const MKNOD_C: &str = r#"
#include <sys/stat.h>
#include <sys/sysmacros.h>

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *path = argv[i] + 2;
        int block = argv[i][0] == 'b';
        struct stat st;

        printf("mknod %s: %s, then ", path,
               res(mknod(path, (block ? S_IFBLK : S_IFCHR) | 0666,
                         block ? makedev(8, 0) : makedev(1, 1))));
        if (lstat(path, &st) != 0)
            printf("%s\n", ename(errno));
        else if (S_ISCHR(st.st_mode))
            printf("char device\n");
        else if (S_ISBLK(st.st_mode))
            printf("block device\n");
        else
            printf("other file\n");
    }
    return 0;
}
"#;

/// Tries every way of changing the real/effective/saved user and group IDs to an ID that
/// is not ours (65534, or 65533 if that is ours) and prints the IDs before and after.
const SETID_C: &str = r#"
static void ids(const char *when)
{
    uid_t r, e, s;
    gid_t gr, ge, gs;

    if (getresuid(&r, &e, &s) != 0 || getresgid(&gr, &ge, &gs) != 0)
        fail("getresuid/getresgid");
    printf("%s: uid %u %u %u gid %u %u %u\n", when, r, e, s, gr, ge, gs);
}

int main(void)
{
    uid_t u = geteuid() == 65534 ? 65533 : 65534;
    gid_t g = getegid() == 65534 ? 65533 : 65534;

    ids("before");
    printf("setuid(%u): %s\n", u, res(setuid(u)));
    printf("seteuid: %s\n", res(seteuid(u)));
    printf("setreuid: %s\n", res(setreuid(u, u)));
    printf("setresuid: %s\n", res(setresuid(u, u, u)));
    printf("setgid(%u): %s\n", g, res(setgid(g)));
    printf("setegid: %s\n", res(setegid(g)));
    printf("setregid: %s\n", res(setregid(g, g)));
    printf("setresgid: %s\n", res(setresgid(g, g, g)));
    ids("after");
    return 0;
}
"#;

/// Tries to clear the supplementary groups and to set them to our own gid; prints the list
/// before and after and the namespace's /proc/self/setgroups.
const SETGROUPS_C: &str = r#"
#include <grp.h>

static void groups(const char *when)
{
    gid_t list[1024];
    int n = getgroups(1024, list);

    if (n < 0)
        fail("getgroups");
    printf("groups %s:", when);
    for (int i = 0; i < n; i++)
        printf(" %u", list[i]);
    printf("\n");
}

int main(void)
{
    gid_t mine = getegid();
    char policy[32] = "";
    FILE *f;

    groups("before");
    printf("setgroups(none): %s\n", res(setgroups(0, NULL)));
    printf("setgroups(egid): %s\n", res(setgroups(1, &mine)));
    groups("after");
    f = fopen("/proc/self/setgroups", "r");
    if (f == NULL || fgets(policy, sizeof policy, f) == NULL)
        fail("read /proc/self/setgroups");
    printf("/proc/self/setgroups: %s", policy);
    return 0;
}
"#;

/// Each argument is a TCP port to bind on 127.0.0.1 (0: any free port).
const BIND_C: &str = r#"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        struct sockaddr_in addr;
        int fd = socket(AF_INET, SOCK_STREAM, 0);

        if (fd < 0)
            fail("socket");
        memset(&addr, 0, sizeof addr);
        addr.sin_family = AF_INET;
        addr.sin_port = htons((unsigned short)atoi(argv[i]));
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        printf("bind 127.0.0.1:%s: %s\n", argv[i],
               res(bind(fd, (struct sockaddr *)&addr, sizeof addr)));
        close(fd);
    }
    return 0;
}
"#;

/// Each argument is OP:PATH. OP `r` opens read-only, `w` opens write-only (nothing is
/// written: the permission check is at open), `n` creates a new file (removed again), `l`
/// opens a directory for listing. Prints each argument and its outcome.
const OPEN_C: &str = r#"
#include <dirent.h>

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *path = argv[i] + 2;
        DIR *dir = NULL;
        int rc;

        switch (argv[i][0]) {
        case 'r':
            rc = open(path, O_RDONLY);
            break;
        case 'w':
            rc = open(path, O_WRONLY);
            break;
        case 'n':
            rc = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
            if (rc >= 0)
                unlink(path);
            break;
        case 'l':
            dir = opendir(path);
            rc = dir == NULL ? -1 : 0;
            break;
        default:
            fprintf(stderr, "bad argument: %s\n", argv[i]);
            return 2;
        }
        printf("%s %s\n", argv[i], res(rc));
        if (argv[i][0] == 'l' && rc == 0)
            closedir(dir);
        else if (rc >= 0)
            close(rc);
    }
    return 0;
}
"#;

/// Each argument is a PID: sends it signal 0 (the permission check alone) and SIGCONT
/// (harmless to a running process).
const KILL_C: &str = r#"
#include <signal.h>

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        pid_t pid = (pid_t)atoi(argv[i]);

        printf("kill %d 0: %s\n", (int)pid, res(kill(pid, 0)));
        printf("kill %d CONT: %s\n", (int)pid, res(kill(pid, SIGCONT)));
    }
    return 0;
}
"#;

/// Prints the real and effective uid and the CapEff and NoNewPrivs lines of
/// /proc/self/status.
const WHOAMI_C: &str = r#"
int main(void)
{
    char line[256];
    FILE *f = fopen("/proc/self/status", "r");

    if (f == NULL)
        fail("open /proc/self/status");
    printf("ruid %u euid %u\n", getuid(), geteuid());
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, "CapEff:", 7) == 0 || strncmp(line, "NoNewPrivs:", 11) == 0)
            fputs(line, stdout);
    return 0;
}
"#;

/// chown32(2) through the i386 system-call entry point (`int $0x80`), as a 32-bit
/// program would make it, from this 64-bit probe. The path must lie below 4 GiB: static,
/// non-PIE data does.
#[cfg(target_arch = "x86_64")]
const I386_CHOWN_C: &str = r#"
static char path[4096];

int main(int argc, char **argv)
{
    long ret;
    if (argc != 2)
        return 2;
    strncpy(path, argv[1], sizeof(path) - 1);
    __asm__ volatile("int $0x80"
                     : "=a"(ret)
                     : "a"(212L), "b"(path), "c"(99L), "d"(99L)
                     : "memory");
    printf("chown32: %s\n", ret == 0 ? "ok" : ename((int)-ret));
    return 0;
}
"#;

// ---- helpers ----

/// The C compiler on PATH, if any.
fn find_cc() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("cc"))
        .find(|p| p.is_file())
}

/// A copy of the busybox fixture owned by the test user, with each probe `(NAME, SOURCE)`
/// compiled statically (by the test user) to `/grove-t/NAME`. None (after `skip`, which
/// fails under GROVE_NO_SKIP) when there is no C compiler or static libc.
fn image_with_probes(s: &Scratch, probes: &[(&str, &str)]) -> Option<PathBuf> {
    let Some(cc) = find_cc() else {
        skip("no C compiler: the security probes need cc and a static libc (gcc libc6-dev)");
        return None;
    };
    let img = s.join("img");
    sh(&format!(
        "cp -a '{0}' '{1}' && mkdir '{1}/grove-t'",
        busybox_rootfs().display(),
        img.display()
    ));
    for (name, body) in probes {
        let src = s.join(format!("{name}.c"));
        std::fs::write(&src, format!("{PRELUDE}{body}")).expect("write probe source");
        let out = unpriv(&cc)
            .args(["-static", "-O1", "-Wall", "-Werror", "-o"])
            .arg(img.join("grove-t").join(name))
            .arg(&src)
            .output()
            .expect("spawn cc");
        let err = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && err.contains("cannot find -lc") {
            skip("no static libc (libc.a): install libc6-dev");
            return None;
        }
        assert!(out.status.success(), "cc {name}.c failed:\n{err}");
    }
    Some(img)
}

/// `ch-run OPTS IMG -- CMD...` as the test user; must exit 0; returns stdout.
fn run_in(opts: &[&str], img: &Path, cmd: &[&str]) -> String {
    ok(tool("ch-run").args(opts).arg(img).arg("--").args(cmd))
}

/// Host uid and gid of the test user (the invoker of ch-run).
fn invoker() -> (u32, u32) {
    if is_root() {
        (TEST_UID, TEST_UID)
    } else {
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    }
}

// ---- tests ----

/// chroot-escape.c: container root may chroot, but climbing out of the chroot through a
/// directory fd ends at the container's root, which pivot_root made the namespace's root.
#[test]
fn chroot_escape_stays_in_the_image() {
    let s = Scratch::new("sec-chroot");
    let Some(img) = image_with_probes(&s, &[("escape", ESCAPE_C)]) else {
        return;
    };
    // Only on the host, outside the image.
    let marker = s.join("host-only-marker");
    std::fs::write(&marker, "host\n").expect("write marker");
    let marker = marker.to_str().expect("utf-8 path");
    let out = run_in(&["-u0"], &img, &["/grove-t/escape", marker]);
    assert_eq!(
        out,
        "marker before: ENOENT\nchroot /mnt: ok\nchroot .: ok\nroot: same\nmarker after: ENOENT\n"
    );
    // Control: under a plain chroot (what a pivot_root-less runtime would give) the same
    // probe does escape, so the assertion above can tell the difference.
    // chroot(8) is in /usr/sbin, often not on a non-root user's PATH.
    let chroot = ["/usr/sbin/chroot", "/sbin/chroot"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("chroot");
    let mut c = unpriv("unshare");
    c.args(["-r", "-m", chroot])
        .arg(&img)
        .args(["/grove-t/escape", marker]);
    assert_eq!(
        ok(&mut c),
        "marker before: ENOENT\nchroot /mnt: ok\nchroot .: ok\nroot: changed\nmarker after: ok\n"
    );
}

/// mknods.c: device files need CAP_MKNOD in the initial user namespace. With --seccomp the
/// call is faked (returns success) but still makes nothing.
#[test]
fn mknod_devices_fails_and_seccomp_only_pretends() {
    let s = Scratch::new("sec-mknod");
    let Some(img) = image_with_probes(&s, &[("mknod", MKNOD_C)]) else {
        return;
    };
    let out = run_in(
        &["-w", "-u0"],
        &img,
        &["/grove-t/mknod", "c:/grove-chr", "b:/grove-blk"],
    );
    assert_eq!(
        out,
        "mknod /grove-chr: EPERM, then ENOENT\nmknod /grove-blk: EPERM, then ENOENT\n"
    );
    let out = run_in(
        &["-w", "-u0", "--seccomp"],
        &img,
        &[
            "/bin/sh",
            "-c",
            "/grove-t/mknod c:/grove-chr b:/grove-blk; \
             test -c /grove-chr || echo no-char; test -b /grove-blk || echo no-block",
        ],
    );
    assert_eq!(
        out,
        "mknod /grove-chr: ok, then ENOENT\nmknod /grove-blk: ok, then ENOENT\nno-char\nno-block\n"
    );
    for name in ["grove-chr", "grove-blk"] {
        assert!(
            std::fs::symlink_metadata(img.join(name)).is_err(),
            "{name} exists on the host"
        );
    }
}

/// The seccomp filter knows i386 numbers too: a 32-bit program's chown32 is faked under
/// `--seccomp` (and changes nothing), and refused (EINVAL: uid 99 is unmapped) without it.
#[cfg(target_arch = "x86_64")]
#[test]
fn seccomp_covers_32_bit_calls_on_x86_64() {
    let s = Scratch::new("sec-i386");
    let Some(img) = image_with_probes(&s, &[("i386chown", I386_CHOWN_C)]) else {
        return;
    };
    // Kernels built or booted without IA32 emulation kill int $0x80 callers.
    let probe = img.join("grove-t/i386chown");
    let host_try = unpriv(&probe).arg(&probe).output().expect("run probe");
    if !host_try.status.success() {
        return skip("the kernel has no IA32 emulation (int $0x80 killed the probe)");
    }
    sh(&format!("touch '{}/grove-t/target'", img.display()));
    let out = run_in(
        &["-w", "-u0"],
        &img,
        &["/grove-t/i386chown", "/grove-t/target"],
    );
    assert_eq!(out, "chown32: EINVAL\n");
    let out = run_in(
        &["-w", "-u0", "--seccomp"],
        &img,
        &["/grove-t/i386chown", "/grove-t/target"],
    );
    assert_eq!(out, "chown32: ok\n");
    let md = std::fs::metadata(img.join("grove-t/target")).expect("stat target");
    assert_eq!(
        (md.uid(), md.gid()),
        invoker(),
        "the faked chown changed the file"
    );
}

/// The probe's expected output when every ID change gives `outcome` and the IDs stay
/// (uid, gid).
fn setid_expected(uid: u32, gid: u32, outcome: &str) -> String {
    let other = |id: u32| if id == 65534 { 65533 } else { 65534 };
    let ids = format!("uid {uid} {uid} {uid} gid {gid} {gid} {gid}");
    format!(
        "before: {ids}\nsetuid({}): {outcome}\nseteuid: {outcome}\nsetreuid: {outcome}\n\
         setresuid: {outcome}\nsetgid({}): {outcome}\nsetegid: {outcome}\nsetregid: {outcome}\n\
         setresgid: {outcome}\nafter: {ids}\n",
        other(uid),
        other(gid)
    )
}

/// setuid.c: only one uid and one gid are mapped, so changing to any other fails with
/// EINVAL (the ID has no mapping), for container root and for the default user alike.
/// --seccomp fakes success, but the IDs still do not change.
#[test]
fn setuid_and_setgid_to_unmapped_ids_fail() {
    let s = Scratch::new("sec-setid");
    let Some(img) = image_with_probes(&s, &[("setid", SETID_C)]) else {
        return;
    };
    let (uid, gid) = invoker();
    assert_eq!(
        run_in(&["-u0", "-g0"], &img, &["/grove-t/setid"]),
        setid_expected(0, 0, "EINVAL")
    );
    assert_eq!(
        run_in(&[], &img, &["/grove-t/setid"]),
        setid_expected(uid, gid, "EINVAL")
    );
    assert_eq!(
        run_in(&["-u0", "-g0", "--seccomp"], &img, &["/grove-t/setid"]),
        setid_expected(0, 0, "ok")
    );
}

/// setgroups.c: ch-run writes "deny" to /proc/self/setgroups before the gid map, so even
/// container root (which holds CAP_SETGID there) cannot drop or set supplementary groups.
#[test]
fn setgroups_is_denied() {
    let s = Scratch::new("sec-setgroups");
    let Some(img) = image_with_probes(&s, &[("setgroups", SETGROUPS_C)]) else {
        return;
    };
    for opts in [&["-u0", "-g0"][..], &[]] {
        let out = run_in(opts, &img, &["/grove-t/setgroups"]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 5, "{opts:?}: {out}");
        let before = lines[0].strip_prefix("groups before:").expect(&out);
        assert_eq!(lines[1], "setgroups(none): EPERM", "{opts:?}");
        assert_eq!(lines[2], "setgroups(egid): EPERM", "{opts:?}");
        assert_eq!(lines[3], format!("groups after:{before}"), "{opts:?}");
        assert_eq!(lines[4], "/proc/self/setgroups: deny", "{opts:?}");
    }
}

/// bind_priv.py: the network namespace is the host's, owned by the initial user namespace,
/// so container root's CAP_NET_BIND_SERVICE does not apply to it. (A C probe rather than
/// busybox nc: nc would sit listening if the bind succeeded, hanging instead of failing.)
#[test]
fn binding_a_privileged_port_fails() {
    let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(1024);
    if start <= 7 {
        return skip("net.ipv4.ip_unprivileged_port_start <= 7: anyone may bind port 7 here");
    }
    let s = Scratch::new("sec-bind");
    let Some(img) = image_with_probes(&s, &[("bind", BIND_C)]) else {
        return;
    };
    // Port 0 (any free port) shows that binding as such works.
    assert_eq!(
        run_in(&["-u0"], &img, &["/grove-t/bind", "7", "0"]),
        "bind 127.0.0.1:7: EACCES\nbind 127.0.0.1:0: ok\n"
    );
}

/// The first of `candidates` that exists on the host (the container sees the same /dev,
/// /proc and /sys).
fn first_existing(candidates: &[&'static str]) -> Option<&'static str> {
    candidates.iter().copied().find(|p| Path::new(p).exists())
}

/// dev_proc_sys.py: /dev, /proc and /sys are the host's; their root-only files stay closed
/// to container root, whose capabilities do not cover files owned by unmapped IDs.
#[test]
fn root_only_dev_proc_sys_files_stay_closed() {
    let s = Scratch::new("sec-dps");
    let Some(img) = image_with_probes(&s, &[("open", OPEN_C)]) else {
        return;
    };
    // Root-owned and closed to others; the later candidates stand in when a kernel lacks
    // the earlier ones (e.g. no /dev/mem or /proc/kcore in some VMs).
    let wanted = [
        (
            'r',
            &["/dev/mem", "/dev/kmem", "/dev/port", "/dev/cpu_dma_latency"][..],
        ),
        (
            'r',
            &["/proc/kcore", "/proc/kpagecount", "/proc/kpageflags"],
        ),
        ('w', &["/proc/sys/vm/drop_caches"]),
        (
            'w',
            &[
                "/sys/kernel/mm/transparent_hugepage/enabled",
                "/sys/kernel/profiling",
                "/sys/power/state",
            ],
        ),
    ];
    let mut args = Vec::new();
    for (op, candidates) in wanted {
        match first_existing(candidates) {
            Some(p) => args.push(format!("{op}:{p}")),
            None => skip(&format!("none of {candidates:?} exists")),
        }
    }
    if args.is_empty() {
        return;
    }
    let mut cmd = vec!["/grove-t/open"];
    cmd.extend(args.iter().map(String::as_str));
    let expected: String = args.iter().map(|a| format!("{a} EACCES\n")).collect();
    assert_eq!(run_in(&["-u0"], &img, &cmd), expected);
}

/// fs_perms.py: a bind-mounted host directory keeps host permissions; container root gains
/// nothing on files owned by IDs that are not mapped (FAQ 11.3.2), while files owned by the
/// invoker are open to it (which shows container root's capabilities are real).
#[test]
fn bound_host_files_keep_their_permissions() {
    if !is_root() {
        return skip("fs_perms needs root-owned files, which only a root test suite can make");
    }
    let s = Scratch::new("sec-perms");
    let Some(img) = image_with_probes(&s, &[("open", OPEN_C)]) else {
        return;
    };
    sh(&format!("mkdir '{}/mnt/x'", img.display()));
    let d = s.join("perms");
    let (uid, gid) = invoker();
    // As root (the test process): root-owned entries, plus one owned by the invoker.
    let st = Command::new("sh")
        .arg("-ec")
        .arg(format!(
            "d='{}'; mkdir -m 0755 \"$d\" \"$d/d755\"; mkdir -m 0700 \"$d/d700\"; \
             for f in f644 f600 f000 d700/inner mine000; do echo secret > \"$d/$f\"; done; \
             chmod 0644 \"$d/f644\" \"$d/d700/inner\"; chmod 0600 \"$d/f600\"; \
             chmod 0000 \"$d/f000\" \"$d/mine000\"; chown -R 0:0 \"$d\"; \
             chown {uid}:{gid} \"$d/mine000\"",
            d.display()
        ))
        .status()
        .expect("sh");
    assert!(st.success());
    let expect = [
        ("r:/mnt/x/f644", "ok"),
        ("w:/mnt/x/f644", "EACCES"),
        ("r:/mnt/x/f600", "EACCES"),
        ("w:/mnt/x/f600", "EACCES"),
        ("r:/mnt/x/f000", "EACCES"),
        ("w:/mnt/x/f000", "EACCES"),
        ("l:/mnt/x/d700", "EACCES"),
        ("r:/mnt/x/d700/inner", "EACCES"),
        ("n:/mnt/x/d700/new", "EACCES"),
        ("l:/mnt/x/d755", "ok"),
        ("n:/mnt/x/d755/new", "EACCES"),
        ("n:/mnt/x/new", "EACCES"),
        ("r:/mnt/x/mine000", "ok"),
        ("w:/mnt/x/mine000", "ok"),
    ];
    let mut cmd = vec!["/grove-t/open"];
    cmd.extend(expect.iter().map(|(a, _)| *a));
    let bind = format!("{}:/mnt/x", d.display());
    let out = run_in(&["-u0", "-b", &bind], &img, &cmd);
    let want: String = expect.iter().map(|(a, r)| format!("{a} {r}\n")).collect();
    assert_eq!(out, want);
    assert!(!d.join("new").exists() && !d.join("d755/new").exists());
}

/// signal_out.py: the PID namespace is the host's, but signalling another user's process
/// needs CAP_KILL in the initial user namespace, so container root cannot. A process of the
/// invoker can be signalled (a control: the targets are visible and the probe works).
#[test]
fn signals_to_other_users_host_processes_fail() {
    let s = Scratch::new("sec-signal");
    let Some(img) = image_with_probes(&s, &[("kill", KILL_C)]) else {
        return;
    };
    let (uid, _) = invoker();
    let pid1_uid = std::fs::metadata("/proc/1").expect("stat /proc/1").uid();
    let mut denied = Vec::new();
    if pid1_uid != uid {
        denied.push(1);
    } else {
        skip("PID 1 belongs to the test user");
    }
    let _root_sleep = if is_root() {
        let child = Command::new("sleep")
            .args(["60"])
            .spawn()
            .expect("spawn sleep");
        denied.push(child.id());
        Some(Reaped(child))
    } else {
        skip("no process of another user to target besides PID 1 (suite not root)");
        None
    };
    // setpriv execs sleep, so this pid is the sleep's.
    let mine = unpriv_sleeper(60);
    let mut cmd = vec!["/grove-t/kill".to_string()];
    cmd.extend(denied.iter().map(u32::to_string));
    cmd.push(mine.0.id().to_string());
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let mut want = String::new();
    for p in &denied {
        want += &format!("kill {p} 0: EPERM\nkill {p} CONT: EPERM\n");
    }
    want += &format!("kill {0} 0: ok\nkill {0} CONT: ok\n", mine.0.id());
    // ch-run runs in a session of its own: the kernel lets SIGCONT through to any process in
    // the sender's session (job control), and in a CI container PID 1 may share the test's
    // session, as the root sleep here does.
    let ch_run = tool("ch-run");
    let mut in_new_session = Command::new("setsid");
    in_new_session
        .arg("--wait")
        .arg(ch_run.get_program())
        .args(ch_run.get_args())
        .args(["-u0"])
        .arg(&img)
        .arg("--")
        .args(&cmd);
    for (k, v) in ch_run.get_envs() {
        match v {
            Some(v) => in_new_session.env(k, v),
            None => in_new_session.env_remove(k),
        };
    }
    assert_eq!(ok(&mut in_new_session), want);
}

/// setuid binaries: a setuid-root program run in the container keeps the invoker's euid,
/// has no capabilities, and runs with no_new_privs set.
#[test]
fn setuid_root_binary_gives_nothing() {
    if !is_root() {
        return skip("a setuid-root binary can only be made by a root test suite");
    }
    let s = Scratch::new("sec-suid");
    let Some(img) = image_with_probes(&s, &[("whoami", WHOAMI_C)]) else {
        return;
    };
    let probe = img.join("grove-t/whoami");
    let st = Command::new("sh")
        .arg("-ec")
        .arg(format!(
            "chown 0:0 '{0}' && chmod 4755 '{0}'",
            probe.display()
        ))
        .status()
        .expect("sh");
    assert!(st.success());
    assert_eq!(
        std::fs::metadata(&probe).expect("stat").mode() & 0o7777,
        0o4755
    );
    let (uid, _) = invoker();
    assert_eq!(
        run_in(&[], &img, &["/grove-t/whoami"]),
        format!("ruid {uid} euid {uid}\nCapEff:\t0000000000000000\nNoNewPrivs:\t1\n")
    );
}

/// printns: ch-run makes new user and mount namespaces only; network, PID, IPC and UTS are
/// the host's (as the same user sees them outside).
#[test]
fn only_user_and_mount_namespaces_are_new() {
    let script = "for n in net pid ipc uts user mnt; do echo $n $(readlink /proc/self/ns/$n); done";
    let outside = String::from_utf8(sh(script).stdout).expect("utf-8");
    let inside = run_in(&["-u0"], &busybox_rootfs(), &["/bin/sh", "-c", script]);
    let parse = |s: &str| -> Vec<(String, String)> {
        s.lines()
            .map(|l| {
                let (n, id) = l.split_once(' ').expect(l);
                assert!(id.starts_with(&format!("{n}:[")), "{l}");
                (n.to_string(), id.to_string())
            })
            .collect()
    };
    let (outside, inside) = (parse(&outside), parse(&inside));
    assert_eq!(outside.len(), 6);
    assert_eq!(inside.len(), 6);
    for ((n, out_id), (_, in_id)) in outside.iter().zip(&inside) {
        match n.as_str() {
            "user" | "mnt" => assert_ne!(out_id, in_id, "{n} namespace is the host's"),
            _ => assert_eq!(out_id, in_id, "{n} namespace differs from the host's"),
        }
    }
}

// ---- hardening of ch-run's inputs and of the store's checkouts (issue 11) ----

/// ch-run killed after 60 s: a test of a fixed hang fails instead of hanging.
fn ch_run_bounded() -> Command {
    let mut c = unpriv("timeout");
    c.args(["-s", "KILL", "60"])
        .arg(crate::common::bin("ch-run"));
    c
}

/// A storage directory with busybox imported as `bb` and checked out; returns the
/// storage path and the checkout directory.
fn store_with_bb(s: &Scratch) -> (PathBuf, PathBuf) {
    let st = s.storage();
    ok(tool("ch-image")
        .arg("-s")
        .arg(&st)
        .arg("import")
        .arg(busybox_rootfs())
        .arg("bb"));
    ok(tool("ch-run").arg("-s").arg(&st).args(["bb", "--", "true"]));
    let link = std::fs::read_link(st.join("img/bb+latest")).expect("img link");
    let co = st.join("img").join(link).canonicalize().expect("checkout");
    (st, co)
}

#[test]
fn set_env_image_file_is_resolved_inside_the_image_and_must_be_regular() {
    let s = Scratch::new("sec-env");
    let img = busybox_copy(&s, "img");
    let secret = s.join("secret");
    sh(&format!("echo SECRET=host-file > '{}'", secret.display()));
    let run = |img: &Path| {
        let mut c = ch_run_bounded();
        c.arg("--set-env")
            .arg(img)
            .args(["--", "/bin/sh", "-c", "echo \"$SECRET$IN\""]);
        crate::common::output(&mut c)
    };
    // A link to a host path that the image does not have: not followed on the host.
    sh(&format!(
        "mkdir '{0}/ch' && ln -s '{1}' '{0}/ch/environment'",
        img.display(),
        secret.display()
    ));
    let out = run(&img);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success(), "{stdout}");
    assert!(!stdout.contains("host-file") && !stderr.contains("host-file"));
    assert!(stderr.contains("can't open: /ch/environment"), "{stderr}");
    // /dev/zero of the host is not read until memory runs out.
    sh(&format!(
        "ln -sfn /dev/zero '{}/ch/environment'",
        img.display()
    ));
    let out = run(&img);
    assert_eq!(out.status.code(), Some(31), "{out:?}");
    // A FIFO in the image is refused, not waited on.
    sh(&format!(
        "rm '{0}/ch/environment' && mkfifo '{0}/ch/environment'",
        img.display()
    ));
    let out = run(&img);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/ch/environment: not a regular file"),
        "{out:?}"
    );
    // A link that resolves inside the image is followed there.
    sh(&format!(
        "rm '{0}/ch/environment' && echo IN=image > '{0}/etc/envfile' \
         && ln -s ../etc/envfile '{0}/ch/environment'",
        img.display()
    ));
    let out = run(&img);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "image\n", "{out:?}");
    // An explicit host file must not be a device either.
    let mut c = ch_run_bounded();
    c.arg("--set-env=/dev/zero")
        .arg(busybox_rootfs())
        .args(["--", "true"]);
    let out = crate::common::output(&mut c);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/dev/zero: not a regular file"),
        "{out:?}"
    );
}

#[test]
fn write_is_refused_anywhere_in_the_storage_directory() {
    let s = Scratch::new("sec-w");
    let (st, co) = store_with_bb(&s);
    for path in [st.join("img/bb+latest"), co.clone(), co.join("etc/..")] {
        for extra in [&[][..], &["--unsafe"][..]] {
            let mut c = tool("ch-run");
            c.arg("-w").args(extra).arg("-s").arg(&st).arg(&path).args([
                "--",
                "/bin/touch",
                "/pwned",
            ]);
            let (_, err) = crate::common::fails(&mut c);
            assert!(
                err.contains("can't write to the storage directory"),
                "{path:?} {extra:?}: {err}"
            );
        }
    }
    let mut c = tool("ch-run");
    c.args(["-w", "--unsafe", "-s"])
        .arg(&st)
        .args(["bb", "--", "/bin/touch", "/pwned"]);
    let (_, err) = crate::common::fails(&mut c);
    assert!(
        err.contains("--write invalid when running by name"),
        "{err}"
    );
    assert!(!co.join("pwned").exists());
}

#[test]
fn changed_checkout_is_refused_by_run_and_build_until_removed() {
    let s = Scratch::new("sec-co");
    let (st, co) = store_with_bb(&s);
    let motd = || {
        ok(tool("ch-run")
            .arg("-s")
            .arg(&st)
            .args(["bb", "--", "cat", "/etc/motd"]))
    };
    let before = motd();
    // Edited in place, with its mtime set back: only the ctime tells.
    sh(&format!(
        "cd '{}' && touch -r etc/motd /tmp/.grove-ref-$$ && echo poisoned >> etc/motd \
         && touch -r /tmp/.grove-ref-$$ etc/motd && rm /tmp/.grove-ref-$$",
        co.display()
    ));
    let (_, err) = crate::common::fails(tool("ch-run").arg("-s").arg(&st).args([
        "bb",
        "--",
        "cat",
        "/etc/motd",
    ]));
    assert!(err.contains("was changed outside grove"), "{err}");
    let ctx = s.join("ctx");
    sh(&format!(
        "mkdir '{0}' && printf 'FROM bb\\nRUN true\\n' > '{0}/Dockerfile'",
        ctx.display()
    ));
    let (_, err) = crate::common::fails(
        tool("ch-image")
            .arg("-s")
            .arg(&st)
            .args(["build", "-t", "x"])
            .arg(&ctx),
    );
    assert!(err.contains("was changed outside grove"), "{err}");
    // The hint's command repairs it: the checkout is made again from git.
    sh(&crate::common::repair_hint(&err));
    assert_eq!(motd(), before);
    ok(tool("ch-image")
        .arg("-s")
        .arg(&st)
        .args(["build", "-t", "x"])
        .arg(&ctx));
}

#[test]
fn image_names_never_read_as_relative_paths() {
    let s = Scratch::new("sec-names");
    let st = s.storage();
    for bad in ["../x", "./x", "a/../b", ".x", "x/.y"] {
        let (_, err) = crate::common::fails(
            tool("ch-image")
                .arg("-s")
                .arg(&st)
                .arg("import")
                .arg(busybox_rootfs())
                .arg(bad),
        );
        assert!(err.contains("image ref syntax"), "{bad}: {err}");
        let (_, err) = crate::common::fails(
            tool("ch-convert")
                .arg("-s")
                .arg(&st)
                .args(["-o", "ch-image"])
                .arg(busybox_rootfs())
                .arg(bad),
        );
        assert!(err.contains("image ref syntax"), "{bad}: {err}");
    }
    // `../img` is the directory, relative to the working directory.
    let img = busybox_copy(&s, "img");
    sh(&format!(
        "mkdir '{0}/sub' && echo relative > '{1}/etc/motd'",
        s.path.display(),
        img.display()
    ));
    let out = ok(tool("ch-run")
        .current_dir(s.join("sub"))
        .arg("-s")
        .arg(&st)
        .args(["../img", "--", "cat", "/etc/motd"]));
    assert_eq!(out, "relative\n");
}

/// Modes and ctimes of `paths`: a mode changed and set back still moves the ctime.
fn modes(paths: &[PathBuf]) -> Vec<(PathBuf, u32, i64, i64)> {
    paths
        .iter()
        .filter_map(|p| {
            std::fs::symlink_metadata(p)
                .ok()
                .map(|m| (p.clone(), m.mode() & 0o7777, m.ctime(), m.ctime_nsec()))
        })
        .collect()
}

#[test]
fn import_reads_0000_entries_without_changing_the_source() {
    let s = Scratch::new("sec-import");
    let src = busybox_copy(&s, "src");
    sh(&format!(
        "cd '{}' && mkdir locked && echo inner > locked/f && echo zero > zero \
         && chmod 0000 locked zero",
        src.display()
    ));
    let watched = [src.join("locked"), src.join("zero"), src.clone()];
    let before = modes(&watched);
    assert_eq!(before[0].1, 0);
    let st = s.storage();
    ok(tool("ch-image")
        .arg("-s")
        .arg(&st)
        .arg("import")
        .arg(&src)
        .arg("locked"));
    assert_eq!(modes(&watched), before);
    let out =
        ok(tool("ch-run")
            .arg("-s")
            .arg(&st)
            .args(["locked", "--", "cat", "/zero", "/locked/f"]));
    assert_eq!(out, "zero\ninner\n");

    // Killed at any point (here: once it has started), the source is unchanged: it is
    // never changed at all.
    let big = s.join("big");
    sh(&format!(
        "mkdir '{0}' && cd '{0}' && for d in 1 2 3 4 5 6 7 8; do mkdir d$d; \
         for f in $(seq 1 400); do echo $d$f > d$d/f$f; done; chmod 0000 d$d; done",
        big.display()
    ));
    let dirs: Vec<PathBuf> = (1..=8).map(|d| big.join(format!("d{d}"))).collect();
    let before = modes(&dirs);
    let mut child = Reaped(
        tool("ch-image")
            .arg("-s")
            .arg(&st)
            .arg("import")
            .arg(&big)
            .arg("big")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn import"),
    );
    let mut first = String::new();
    use std::io::BufRead;
    let _ = std::io::BufReader::new(child.0.stderr.take().expect("stderr")).read_line(&mut first);
    let _ = child.0.kill();
    let _ = child.0.wait();
    assert_eq!(modes(&dirs), before, "after a killed import ({first})");
}

// ---- what hostile input names is never printed raw ----

/// A tar stream of `members` (name, type, link target), each of size 0 but regular files
/// (`x`), written with raw headers (the tar crate refuses `..` and such names).
fn raw_tar(members: &[(&[u8], tar::EntryType, &[u8])]) -> Vec<u8> {
    let with_data: Vec<crate::common::Member> = members
        .iter()
        .map(|(name, kind, link)| {
            let data: &[u8] = if *kind == tar::EntryType::Regular {
                b"x"
            } else {
                b""
            };
            (*name, *kind, *link, data)
        })
        .collect();
    crate::common::raw_tar(&with_data)
}

/// Regression: `ch-image import` and `ch-convert` named a tarball's members in their
/// errors and warnings as they were: a member `../x ESC[31m\nforged` printed an escape
/// sequence and a line of its own (`forged`), a device file's name in the "skipping"
/// warning and a hard link's target likewise; so did `ADD` of such a tarball. They are
/// now `\u{..}` escapes.
#[test]
fn a_tarballs_member_names_reach_messages_escaped() {
    use tar::EntryType as T;
    let s = Scratch::new("tar-names-escaped");
    let raw = ['\u{1b}', '\u{7}', '\u{9b}', '\u{202e}'];
    let cases: [(&str, Vec<u8>, &str); 3] = [
        (
            "dotdot",
            raw_tar(&[(b"../x\x1b[31m\nforged", T::Regular, b"")]),
            "member ../x\\u{1b}[31m\\u{a}forged",
        ),
        (
            "link",
            raw_tar(&[(b"hl\x1b]0;t\x07", T::Link, b"none\xc2\x9b\nforged")]),
            "member hl\\u{1b}]0;t\\u{7}: hard link target is not an earlier regular file: \
             none\\u{9b}\\u{a}forged",
        ),
        (
            "device",
            raw_tar(&[
                (b"dev\xe2\x80\xae\x1b[1m", T::Char, b""),
                (b"f", T::Regular, b""),
            ]),
            "skipping device file member dev\\u{202e}\\u{1b}[1m",
        ),
    ];
    for (name, tar, want) in cases {
        let path = s.join(format!("{name}.tar"));
        std::fs::write(&path, tar).unwrap();
        crate::common::own(&s.path);
        for mut cmd in [
            {
                let mut c = tool("ch-image");
                c.arg("-s")
                    .arg(s.storage())
                    .arg("import")
                    .arg(&path)
                    .arg(name);
                c
            },
            {
                let mut c = tool("ch-convert");
                c.arg("-s")
                    .arg(s.storage())
                    .args(["-i", "tar", "-o", "dir"])
                    .arg(&path)
                    .arg(s.join(format!("{name}.dir")));
                c
            },
        ] {
            let out = cmd.output().expect("run");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.success(), name == "device", "{cmd:?}: {err}");
            assert!(!err.contains(raw), "{cmd:?}: printed raw: {err:?}");
            assert!(
                !err.lines().any(|l| l.starts_with("forged")),
                "{cmd:?}: a forged line: {err}"
            );
            assert!(err.contains(want), "{cmd:?}: {want:?} not in: {err}");
        }
    }
    // `ADD` of the same tarballs: its own messages, the names escaped alike (hard links:
    // hostile_input::add_refuses_hard_links_to_anything_but_an_earlier_file_...).
    ok(tool("ch-image")
        .arg("-s")
        .arg(s.storage())
        .arg("import")
        .arg(busybox_rootfs())
        .arg("busybox"));
    let ctx = s.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    for (name, want) in [
        ("dotdot", "../x\\u{1b}[31m\\u{a}forged: its path has a `..`"),
        (
            "device",
            "skipping device file member dev\\u{202e}\\u{1b}[1m",
        ),
    ] {
        std::fs::copy(
            s.join(format!("{name}.tar")),
            ctx.join(format!("{name}.tar")),
        )
        .unwrap();
        std::fs::write(
            ctx.join(format!("{name}.df")),
            format!("FROM busybox\nADD {name}.tar /d/\n"),
        )
        .unwrap();
        crate::common::own(&ctx);
        let mut cmd = tool("ch-image");
        cmd.arg("-s")
            .arg(s.storage())
            .args(["build", "-t", name, "-f"])
            .arg(ctx.join(format!("{name}.df")))
            .arg(&ctx);
        let out = cmd.output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), name == "device", "ADD {name}: {err}");
        assert!(!err.contains(raw), "ADD {name}: printed raw: {err:?}");
        assert!(
            !err.lines().any(|l| l.starts_with("forged")),
            "ADD {name}: a forged line: {err}"
        );
        assert!(err.contains(want), "ADD {name}: {want:?} not in: {err}");
    }
}

/// Regression: `ch-image import DIR` warned of a socket it skips naming it as it was: a
/// socket named with an escape sequence drove the terminal. The name is now escaped.
#[test]
fn a_directorys_skipped_socket_is_named_escaped() {
    let s = Scratch::new("dir-socket-escaped");
    let root = busybox_copy(&s, "root");
    let _sock = std::os::unix::net::UnixListener::bind(root.join("so\u{1b}[31mck\u{9b}"))
        .expect("bind a socket");
    crate::common::own(&root);
    let out = tool("ch-image")
        .arg("-s")
        .arg(s.storage())
        .arg("import")
        .arg(&root)
        .arg("sock")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains(['\u{1b}', '\u{9b}']), "printed raw: {err:?}");
    assert!(
        err.contains("warning: skipping socket: ") && err.contains("/so\\u{1b}[31mck\\u{9b}\n"),
        "{err}"
    );
}
