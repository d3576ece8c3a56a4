//! ch-run as Charliecloud's (issue 12, points 3, 17 and 18): mount points for images that
//! lack them, the `-v` lines scripts parse, exit statuses, argument errors, and the
//! behaviour of Charliecloud 0.38's ch-run. The real binaries, as the unprivileged test user.

use crate::common::{busybox_rootfs, fails, ok, output, sh, tool, Scratch};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A scratch directory with a storage directory and a context `ctx`.
struct World {
    s: Scratch,
}

impl World {
    fn new(tag: &str) -> World {
        World {
            s: Scratch::new(&format!("runconf-{tag}")),
        }
    }

    fn image(&self) -> Command {
        let mut c = tool("ch-image");
        c.arg("-s").arg(self.s.storage());
        for v in ["CH_IMAGE_CACHE", "CH_LOG_FILE", "CH_LOG_FESTOON"] {
            c.env_remove(v);
        }
        c
    }

    fn run(&self) -> Command {
        let mut c = tool("ch-run");
        c.arg("-s").arg(self.s.storage());
        c
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.s.join(rel)
    }
}

/// The busybox fixture as a tarball without `dev`, `proc`, `sys` and `tmp` (as a `FROM
/// scratch` image or a Debian layer without `dev/`).
fn tarball_without_mount_points(w: &World) -> PathBuf {
    let tar = w.path("nodev.tar");
    sh(&format!(
        "tar -C '{}' -cf '{}' --exclude=./dev --exclude=./proc --exclude=./sys --exclude=./tmp .",
        busybox_rootfs().display(),
        tar.display()
    ));
    tar
}

/// Top-level names in a tar listing (`./x/y` and `x/y` give `x`).
fn top_level(listing: &str) -> Vec<String> {
    let mut v: Vec<String> = listing
        .lines()
        .filter_map(|l| {
            l.trim_start_matches("./")
                .split('/')
                .next()
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

// ---- point 3: mount points ----

#[test]
fn named_image_imported_without_dev_proc_sys_runs() {
    let w = World::new("nodev");
    let tar = tarball_without_mount_points(&w);
    ok(w.image().arg("import").arg(&tar).arg("nodev"));
    let out = ok(w.run().args([
        "nodev",
        "--",
        "/bin/sh",
        "-c",
        "/bin/true && test -d /dev && test -d /proc/self && ls /sys >/dev/null && echo ran",
    ]));
    assert_eq!(out, "ran\n");
    // Nothing was added to the image: an export has no mount points.
    let exported = w.path("out.tar");
    ok(tool("ch-convert")
        .arg("-s")
        .arg(w.s.storage())
        .arg("nodev")
        .arg(&exported));
    let names = top_level(&ok(Command::new("tar").arg("tf").arg(&exported)));
    for d in ["dev", "proc", "sys", "tmp"] {
        assert!(!names.contains(&d.to_string()), "{d} in {names:?}");
    }
}

#[test]
fn run_in_a_from_scratch_stage_works_and_adds_no_mount_points_to_the_image() {
    let w = World::new("scratch");
    let ctx = w.path("ctx");
    sh(&format!(
        "mkdir '{0}' && cp '{1}' '{0}/busybox' && cat > '{0}/Dockerfile' <<'EOF'
FROM scratch
COPY busybox /bin/
RUN [\"/bin/busybox\", \"true\"]
RUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo made > /made && test -d /dev/ && test -d /proc/self\"]
EOF",
        ctx.display(),
        busybox_rootfs().join("bin/busybox").display()
    ));
    ok(w.image().args(["build", "-t", "scr"]).arg(&ctx));
    let exported = w.path("scr.tar");
    ok(tool("ch-convert")
        .arg("-s")
        .arg(w.s.storage())
        .arg("scr")
        .arg(&exported));
    let names = top_level(&ok(Command::new("tar").arg("tf").arg(&exported)));
    assert_eq!(names, vec!["bin", "made"], "only what the Dockerfile made");
    // And the image runs by name from its layers.
    let out = ok(w.run().args(["scr", "--", "/bin/busybox", "cat", "/made"]));
    assert_eq!(out, "made\n");
}

#[test]
fn directory_image_without_dev_names_the_missing_mount_point() {
    let w = World::new("dirnodev");
    let img = w.path("img");
    let tar = tarball_without_mount_points(&w);
    sh(&format!(
        "mkdir '{0}' && tar -C '{0}' -xf '{1}'",
        img.display(),
        tar.display()
    ));
    let img = img.canonicalize().expect("realpath");
    let (code, err) = fails(w.run().arg(&img).args(["--", "/bin/true"]));
    assert_eq!(code, 31, "{err}");
    assert!(
        err.contains(&format!(
            "can't bind: destination not found: {}",
            img.join("dev").display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "hint: the image has no /dev to mount on: create it (mkdir {})",
            img.join("dev").display()
        )),
        "{err}"
    );
    // -W provides them in its throwaway layer.
    assert_eq!(
        ok(w.run().arg("-W").arg(&img).args([
            "--",
            "/bin/sh",
            "-c",
            "test -d /proc/self && echo ok"
        ])),
        "ok\n"
    );
    assert!(!img.join("dev").exists() && !Path::new(&img.join("proc")).exists());
}
