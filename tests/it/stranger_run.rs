//! `ch-run` as users outside the project call it, compared with what Charliecloud 0.31's
//! ch-run does with the same arguments. Each test is a regression test for a divergence
//! found that way: the real binary, run as the unprivileged test user.

use crate::common::{busybox_copy, ok, output, sh, tool, Scratch};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

#[test]
fn image_and_bind_paths_need_not_be_utf8() {
    // Charliecloud takes paths as bytes; a clap `String` refused them ("invalid UTF-8 was
    // detected", exit 64).
    let s = Scratch::new("stranger-utf8");
    let img = busybox_copy(&s, "img");
    let odd_img = s.path.join(OsStr::from_bytes(b"img\xff"));
    std::os::unix::fs::symlink(&img, &odd_img).expect("symlink");
    let data = s.path.join(OsStr::from_bytes(b"data\xfe"));
    sh(&format!("mkdir '{}'", s.join("d").display()));
    std::fs::rename(s.join("d"), &data).expect("rename");
    std::fs::write(data.join("f"), "in data\n").expect("write");
    let mut bind = data.clone().into_os_string();
    bind.push(":/mnt");
    let out = ok(tool("ch-run")
        .arg("-b")
        .arg(&bind)
        .arg(&odd_img)
        .args(["--", "cat", "/mnt/f"]));
    assert_eq!(out, "in data\n");

    // A missing one is ch-run's error naming it, not a usage error.
    let out = output(
        tool("ch-run")
            .arg(s.path.join(OsStr::from_bytes(b"nope\xff")))
            .args(["--", "true"]),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(31), "{err}");
    assert!(err.contains("error: can't stat: "), "{err}");
    assert!(err.contains("nope"), "{err}");
}

/// A site's `-b /scratch:/scratch` into a read-only image without `/scratch` fails as
/// Charliecloud 0.31 fails ("can't mkdir: IMG/scratch: Read-only file system", which
/// for an image run by name names a checkout the user never made), and then says what
/// to do: bind where the image has a directory, make it in the image, or `-W`.
#[test]
fn a_bind_to_a_path_a_read_only_image_lacks_says_what_to_do() {
    let s = Scratch::new("stranger-bind-ro");
    let img = busybox_copy(&s, "img");
    let data = s.join("scratch");
    sh(&format!("mkdir '{}'", data.display()));
    let mut bind = data.clone().into_os_string();
    bind.push(":/scratch");
    let out = output(
        tool("ch-run")
            .arg("-b")
            .arg(&bind)
            .arg(&img)
            .args(["--", "true"]),
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("can't mkdir: ")
            && err.contains("scratch: Read-only file system")
            && err.contains(
                "hint: the image is read-only and has no /scratch: bind to a directory it has"
            ),
        "{err}"
    );
    assert!(!img.join("scratch").exists());
    let out = ok(tool("ch-run")
        .arg("-W")
        .arg("-b")
        .arg(&bind)
        .arg(&img)
        .args(["--", "ls", "-d", "/scratch"]));
    assert_eq!(out, "/scratch\n");
}
