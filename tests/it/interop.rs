//! Images go both ways between Grove and the OCI tools users have, for real and as the
//! unprivileged test user: rootless Podman loads and runs what `ch-convert` writes,
//! Buildah builds on a Grove-made base (and on what it built from it), and Grove reads
//! back what Podman saves (`podman:`, oci-archive, docker-archive) and runs it.
//!
//! Podman and Buildah get their own configuration and storage under the test's scratch
//! directory (`HOME`, `XDG_*`, `CONTAINERS_STORAGE_CONF`, `CONTAINERS_CONF`), so nothing
//! global is read or changed: native overlay with `ignore_chown_errors` (vfs if overlay
//! does not work), runc, host networking, no cgroups manager, and the single-uid mapping
//! rootless Podman falls back to when the user has no `/etc/subuid` range. Rootless
//! Podman keeps a pause process holding its user namespace; it is killed (by the pid
//! Podman recorded) when the test ends.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// A private Podman/Buildah setup in a scratch directory.
struct Containers {
    s: Scratch,
    home: PathBuf,
}

impl Containers {
    /// None (after a skip) when the tools are not installed.
    fn new(tag: &str) -> Option<Containers> {
        for t in ["podman", "buildah", "skopeo", "runc"] {
            if !have(t) {
                skip(&format!(
                    "{t} not installed (apt-get install podman buildah skopeo runc; .ci/setup)"
                ));
                return None;
            }
        }
        let s = Scratch::new(tag);
        let home = s.join("home");
        let c = Containers { s, home };
        c.configure("overlay");
        // Native overlay needs a kernel that allows it in a user namespace; else vfs.
        let info = output(
            c.podman()
                .args(["info", "--format", "{{.Store.GraphDriverName}}"]),
        );
        if !info.status.success() {
            eprintln!(
                "podman info with overlay failed, using vfs: {}",
                String::from_utf8_lossy(&info.stderr)
            );
            c.configure("vfs");
            ok(c.podman().arg("info"));
        }
        Some(c)
    }

    fn configure(&self, driver: &str) {
        let h = self.home.display();
        let overlay = if driver == "overlay" {
            "[storage.options.overlay]\nignore_chown_errors = \"true\"\n"
        } else {
            "[storage.options.vfs]\nignore_chown_errors = \"true\"\n"
        };
        sh(&format!(
            r#"mkdir -p {h}/config/containers {h}/data {h}/run
chmod 700 {h}/run
rm -rf {h}/storage {h}/run/containers
cat > {h}/storage.conf <<'EOF'
[storage]
driver = "{driver}"
graphroot = "{h}/storage"
runroot = "{h}/run/containers"
{overlay}EOF
cat > {h}/containers.conf <<'EOF'
[containers]
netns = "host"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
"#
        ));
    }

    /// `prog` (podman, buildah, skopeo, or one of ours) run unprivileged in this setup.
    fn cmd(&self, prog: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = unpriv(prog);
        let h = &self.home;
        c.env("HOME", h)
            .env("USER", "nobody")
            .env("XDG_CONFIG_HOME", h.join("config"))
            .env("XDG_DATA_HOME", h.join("data"))
            .env("XDG_RUNTIME_DIR", h.join("run"))
            .env("CONTAINERS_STORAGE_CONF", h.join("storage.conf"))
            .env("CONTAINERS_CONF", h.join("containers.conf"))
            .env_remove("REGISTRY_AUTH_FILE")
            .current_dir(&self.s.path);
        c
    }

    fn podman(&self) -> Command {
        self.cmd("podman")
    }

    fn buildah(&self) -> Command {
        let mut c = self.cmd("buildah");
        c.env("BUILDAH_ISOLATION", "oci");
        c
    }

    fn grove(&self, name: &str) -> Command {
        let mut c = self.cmd(bin(name));
        c.arg("-s").arg(self.s.storage());
        c
    }

    fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.s.join(p)
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        // The pause process rootless Podman left holding its namespaces: ours, by its pid.
        let pidfile = self.home.join("run/libpod/tmp/pause.pid");
        if let Some(pid) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

/// A Grove image `bb2` built by ch-image on the busybox fixture: ENV, a RUN that writes
/// `/hi`, CMD (Grove's history: import, ENV, RUN, CMD; only import and RUN made files).
fn grove_image(c: &Containers) {
    ok(c.grove("ch-convert")
        .arg("-q")
        .arg(busybox_rootfs())
        .arg("bb:1.0"));
    let ctx = c.join("ctx");
    sh(&format!(
        "mkdir -p {ctx} && printf '%s\\n' 'FROM bb:1.0' 'ENV FOO=bar' 'RUN echo hi > /hi' 'CMD [\"/bin/sh\"]' > {ctx}/Dockerfile",
        ctx = ctx.display()
    ));
    ok(c.grove("ch-image")
        .args(["build", "-q", "-t", "bb2"])
        .arg(&ctx));
}

/// Non-empty history entries and layers of an image config document.
fn count(cfg: &serde_json::Value, history: &str, layers: &str) -> (usize, usize) {
    let non_empty = cfg[history]
        .as_array()
        .map(|h| h.iter().filter(|e| e["empty_layer"] != true).count())
        .unwrap_or(0);
    (
        non_empty,
        cfg["RootFS"][layers]
            .as_array()
            .or(cfg["rootfs"][layers].as_array())
            .map_or(0, |l| l.len()),
    )
}

/// Non-empty history entries and layers of the config of archive `reference` (a skopeo
/// transport reference).
fn archive_history(c: &Containers, reference: &str) -> (usize, usize) {
    let cfg = ok(c.cmd("skopeo").args(["inspect", "--config", reference]));
    let v: serde_json::Value = serde_json::from_str(&cfg).expect("skopeo config json");
    count(&v, "history", "diff_ids")
}

/// Non-empty history entries and layers of image `name` in Podman's storage.
fn podman_history(c: &Containers, name: &str) -> (usize, usize) {
    let out = ok(c.podman().args(["image", "inspect", name]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("podman inspect json");
    count(&v[0], "History", "Layers")
}

#[test]
fn oci_archive_written_by_grove_loads_and_runs_in_podman() {
    let Some(c) = Containers::new("interop-podman") else {
        return;
    };
    grove_image(&c);
    let archive = c.join("bb2.tar");
    ok(c.grove("ch-convert")
        .args(["-q", "-o", "oci", "bb2"])
        .arg(&archive));
    // The config's history accounts for the one layer written.
    assert_eq!(
        archive_history(&c, &format!("oci-archive:{}", archive.display())),
        (1, 1)
    );
    // Podman names the image after Grove's name, not after the tag.
    let out = ok(c.podman().arg("load").arg("-i").arg(&archive));
    assert!(out.contains("Loaded image: localhost/bb2:latest"), "{out}");
    let out = ok(c.podman().args([
        "run",
        "--rm",
        "localhost/bb2:latest",
        "sh",
        "-c",
        "cat /hi; echo $FOO",
    ]));
    assert_eq!(out, "hi\nbar\n");
    // The `podman` output format (podman import) runs too.
    ok(c.grove("ch-convert")
        .args(["-q", "-o", "podman", "bb2", "bb2-import:x"]));
    let out = ok(c.podman().args([
        "run",
        "--rm",
        "bb2-import:x",
        "sh",
        "-c",
        "cat /hi; echo $FOO",
    ]));
    assert_eq!(out, "hi\nbar\n");
}

#[test]
fn buildah_builds_on_a_grove_base_and_on_what_it_built() {
    let Some(c) = Containers::new("interop-buildah") else {
        return;
    };
    grove_image(&c);
    let archive = c.join("bb2.tar");
    ok(c.grove("ch-convert")
        .args(["-q", "-o", "oci", "bb2"])
        .arg(&archive));
    // Buildah keeps the base's history and adds its own; building on the result failed
    // with "history lists 2 non-empty layers, but we have 3 layers on disk" when the
    // base had no history.
    sh(&format!(
        "printf '%s\\n' 'FROM oci-archive:{}' 'RUN echo one > /one' 'RUN echo two > /two' > {}",
        archive.display(),
        c.join("Containerfile.1").display()
    ));
    sh(&format!(
        "printf '%s\\n' 'FROM localhost/first' 'RUN echo three > /three' > {}",
        c.join("Containerfile.2").display()
    ));
    ok(c.buildah()
        .args(["bud", "-q", "-t", "first", "-f"])
        .arg(c.join("Containerfile.1"))
        .arg(c.join("ctx")));
    ok(c.buildah()
        .args(["bud", "-q", "-t", "second", "-f"])
        .arg(c.join("Containerfile.2"))
        .arg(c.join("ctx")));
    for name in ["localhost/first", "localhost/second"] {
        let (non_empty, layers) = podman_history(&c, name);
        assert_eq!(non_empty, layers, "history of {name}");
    }
    let out = ok(c.podman().args([
        "run",
        "--rm",
        "localhost/second",
        "cat",
        "/hi",
        "/one",
        "/two",
        "/three",
    ]));
    assert_eq!(out, "hi\none\ntwo\nthree\n");
    // buildah from / run / commit on the archive directly.
    let ctr = ok(c
        .buildah()
        .args(["from", "-q", &format!("oci-archive:{}", archive.display())]));
    ok(c.buildah()
        .args(["run", ctr.trim(), "--", "sh", "-c", "echo four > /four"]));
    ok(c.buildah().args(["commit", "-q", ctr.trim(), "third"]));
    let out = ok(c
        .podman()
        .args(["run", "--rm", "localhost/third", "cat", "/hi", "/four"]));
    assert_eq!(out, "hi\nfour\n");
}

#[test]
fn images_podman_saves_convert_into_grove_and_run() {
    let Some(c) = Containers::new("interop-save") else {
        return;
    };
    grove_image(&c);
    let archive = c.join("bb2.tar");
    ok(c.grove("ch-convert")
        .args(["-q", "-o", "oci", "bb2"])
        .arg(&archive));
    ok(c.podman().arg("load").arg("-q").arg("-i").arg(&archive));
    // A Podman-built image of two layers, with its own ENV and WORKDIR.
    sh(&format!(
        "printf '%s\\n' 'FROM localhost/bb2' 'ENV POD=made' 'WORKDIR /w' 'RUN echo podman > /w/p' > {}",
        c.join("Containerfile").display()
    ));
    ok(c.podman()
        .args(["build", "-q", "-t", "podimg", "-f"])
        .arg(c.join("Containerfile"))
        .arg(c.join("ctx")));
    let check = |image: &str| {
        let out = ok(c.grove("ch-run").args([
            "--set-env",
            image,
            "--",
            "sh",
            "-c",
            "cat /hi /w/p; echo $FOO $POD",
        ]));
        assert_eq!(out, "hi\npodman\nbar made\n", "{image}");
    };
    // From Podman's storage.
    ok(c.grove("ch-convert")
        .args(["-q", "-i", "podman", "localhost/podimg", "from-podman"]));
    check("from-podman");
    // From the archives `podman save` writes, inferred from their content.
    for (fmt, name) in [
        ("oci-archive", "from-oci-archive"),
        ("docker-archive", "from-docker-archive"),
    ] {
        let saved = c.join(format!("{fmt}.tar"));
        ok(c.podman()
            .args(["save", "-q", "--format", fmt, "-o"])
            .arg(&saved)
            .arg("localhost/podimg"));
        ok(c.grove("ch-convert").arg("-q").arg(&saved).arg(name));
        check(name);
    }
}
