//! SquashFS export on a machine with squashfs-tools only (no squashfs-tools-ng): the tool
//! in use is named at `-v`, zstd runs at a low level (not sqfstar's fixed 15), and the file
//! lists the same entries, owners, modes, sizes, links and times as tar2sqfs's.

use std::path::Path;
use std::process::Command;

use crate::common::*;

fn have(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// `sqfs2tar`'s tar listing (second-precision times, numeric owners) and `unsquashfs
/// -lln`'s listing (the root included) of `sqfs`.
fn listings(sqfs: &Path) -> (String, String) {
    let out = sh(&format!(
        "sqfs2tar '{}' | tar --full-time --numeric-owner -tvf -",
        sqfs.display()
    ));
    let tar = String::from_utf8_lossy(&out.stdout).into_owned();
    let lln = ok(Command::new("unsquashfs").args(["-UTC", "-lln"]).arg(sqfs));
    (tar, lln)
}

/// The PID in the temporary checkout's path that `-vv` names
/// (`.../grove-sqfs.PID.N/tree`).
fn out_pid(log: &str) -> String {
    log.split("grove-sqfs.")
        .nth(1)
        .and_then(|r| r.split('.').next())
        .unwrap_or("none")
        .to_string()
}

#[test]
fn squash_export_without_tar2sqfs_uses_mksquashfs_at_a_low_level_and_matches_tar2sqfs() {
    for prog in ["tar2sqfs", "sqfs2tar", "mksquashfs", "unsquashfs"] {
        if !have(prog) {
            skip(&format!("{prog} not installed"));
            return;
        }
    }
    let s = Scratch::new("sqx-tools");
    let st = s.storage();
    let src = s.join("src");
    sh(&format!(
        "cp -a '{bb}/.' '{src}' && cd '{src}' && mkdir -p d/e sticky && echo hi > d/f \
         && ln d/f d/hard && ln -s f d/ln && mkfifo d/fifo && echo x > 'sp ace' \
         && chmod 1777 sticky && touch -d '2001-02-03 04:05:06' d/f 'sp ace' \
         && touch -d '1999-01-01 00:00:00' d",
        bb = busybox_rootfs().display(),
        src = src.display()
    ));
    ok(tool("ch-image")
        .arg("-s")
        .arg(&st)
        .arg("import")
        .arg(&src)
        .arg("base"));
    // Modes a checkout raises or drops (setuid, setgid, below rw-------/rwx------), which
    // mksquashfs on a checkout must get back from its pseudo file.
    let ctx = s.join("ctx");
    sh(&format!(
        "mkdir '{0}' && printf '%s\\n' 'FROM base' \
         'RUN chmod 4755 /d/f && chmod 444 \"/sp ace\" && chmod 2750 /sticky && chmod 500 /d/e' \
         > '{0}/Dockerfile'",
        ctx.display()
    ));
    ok(tool("ch-image")
        .arg("-s")
        .arg(&st)
        .args(["build", "-t", "img"])
        .arg(&ctx));
    // A PATH with squashfs-tools only (and setpriv, which runs the tool unprivileged).
    let bin = s.join("bin");
    std::fs::create_dir(&bin).expect("mkdir bin");
    for prog in ["mksquashfs", "sqfstar", "setpriv"] {
        let found = String::from_utf8_lossy(
            &Command::new("sh")
                .args(["-c", &format!("command -v {prog}")])
                .output()
                .expect("sh")
                .stdout,
        )
        .trim()
        .to_string();
        if !found.is_empty() {
            std::os::unix::fs::symlink(&found, bin.join(prog)).expect("symlink");
        }
    }
    let with_ng = s.join("ng.sqfs");
    ok(tool("ch-convert")
        .arg("-s")
        .arg(&st)
        .arg("img")
        .arg(&with_ng));
    // The temporary checkout goes to /dev/shm when it is a tmpfs (ext4 inode allocation
    // made it slow); the leftover of an export killed there is removed.
    let shm_tmpfs = String::from_utf8_lossy(&sh("stat -f -c %T /dev/shm").stdout).trim() == "tmpfs";
    let stale = Path::new("/dev/shm/grove-sqfs.999999999.0");
    if shm_tmpfs {
        sh(&format!(
            "mkdir -p {}/tree/d && chmod 0 {}/tree/d",
            stale.display(),
            stale.display()
        ));
    }
    let without = s.join("tools.sqfs");
    let out = output(
        tool("ch-convert")
            .env("PATH", &bin)
            .env("XDG_RUNTIME_DIR", "")
            .arg("-vv")
            .arg("-s")
            .arg(&st)
            .arg("img")
            .arg(&without),
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("squashfs: mksquashfs") && log.contains("zstd level 3"),
        "tool and level not named at -v: {log}"
    );
    if shm_tmpfs {
        assert!(
            log.contains("checked out for mksquashfs into /dev/shm/grove-sqfs."),
            "temporary checkout not on /dev/shm: {log}"
        );
        assert!(!stale.exists(), "leftover of a killed export kept");
        let pid_dirs: Vec<String> = std::fs::read_dir("/dev/shm")
            .expect("read /dev/shm")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&format!("grove-sqfs.{}.", out_pid(&log))))
            .collect();
        assert!(pid_dirs.is_empty(), "temporary checkout left: {pid_dirs:?}");
    } else {
        skip("/dev/shm is not a tmpfs: the tmpfs checkout is not tested");
    }
    let sb = ok(Command::new("unsquashfs").arg("-s").arg(&without));
    assert!(sb.contains("compression-level 3"), "{sb}");
    let (tar_ng, lln_ng) = listings(&with_ng);
    let (tar, lln) = listings(&without);
    assert!(tar.contains("-rwsr-xr-x 0/0"), "setuid bit kept: {tar}");
    assert!(tar.contains("dr-x------ 0/0"), "0500 directory kept: {tar}");
    assert!(tar.contains("2001-02-03 04:05:06 d/f"), "time kept: {tar}");
    assert_eq!(tar, tar_ng, "sqfs2tar listings differ");
    assert_eq!(lln, lln_ng, "unsquashfs -lln listings differ");
    let left: Vec<String> = std::fs::read_dir(&s.path)
        .expect("scratch")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tree") || n.ends_with(".pseudo"))
        .collect();
    assert!(left.is_empty(), "temporary checkout left: {left:?}");
    // Reproducible: a second export is byte-identical.
    let again = s.join("tools2.sqfs");
    ok(tool("ch-convert")
        .env("PATH", &bin)
        .arg("-s")
        .arg(&st)
        .arg("img")
        .arg(&again));
    assert!(
        std::fs::read(&without).expect("read") == std::fs::read(&again).expect("read"),
        "second export differs"
    );
}
