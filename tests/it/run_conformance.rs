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

// ---- point 17: -v lines, IPC names, exit statuses, argument errors ----

/// `ch-run OPTS BUSYBOX -- /bin/sh -c SCRIPT`.
fn in_bb(opts: &[&str], script: &str) -> Command {
    let mut c = tool("ch-run");
    c.args(opts)
        .arg(busybox_rootfs())
        .args(["--", "/bin/sh", "-c", script]);
    c
}

fn stderr_of(c: &mut Command) -> String {
    let out = output(c);
    assert!(
        out.status.success(),
        "failed: {c:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_lines(err: &str, wanted: &[&str]) {
    for w in wanted {
        assert!(
            err.lines().any(|l| l.contains(&format!("]: {w} ("))),
            "no line `{w}` in:\n{err}"
        );
    }
}

#[test]
fn verbose_lines_keep_charliecloud_forms() {
    let err = stderr_of(
        in_bb(&["-v", "--set-env=FOO=bar:$", "--unset-env=HOSTV"], "true").env("HOSTV", "x"),
    );
    assert_lines(
        &err,
        &[
            "join: 0 0 (null) 0",
            "environment: FOO=bar:$",
            "environment: unset HOSTV",
            &format!("newroot: {}", busybox_rootfs().display()),
        ],
    );
    let tag = format!("grove-v-{}", std::process::id());
    let err = stderr_of(&mut in_bb(
        &["-v", "--join-ct=1", &format!("--join-tag={tag}")],
        "true",
    ));
    assert_lines(
        &err,
        &[
            "join: peer group size from command line",
            "join: peer group tag from command line",
            &format!("join: 1 1 {tag} 0"),
            "join: I won",
            "join: winner initializing shared data",
            "join: 0 peers left excluding myself",
            "join: cleaning up IPC resources",
            "join: done",
        ],
    );
}

#[test]
fn join_ipc_uses_charliecloud_names_and_the_last_peer_cleans_up() {
    let tag = format!("grove-ipc-{}", std::process::id());
    let shm = PathBuf::from(format!("/dev/shm/ch-run_shm-{tag}"));
    if !Path::new("/dev/shm").is_dir() {
        return crate::common::skip("no /dev/shm");
    }
    let opts = ["-v", "--join-ct=2", &format!("--join-tag={tag}")];
    // The winner lives until the test ends it (`sleep 30` bounded how long the peer may
    // take on a loaded machine).
    let winner = crate::common::Reaped(
        in_bb(&opts, "exec sleep 600")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn winner"),
    );
    // Wait for the winner to publish itself, then join (the waits bound a hang only: the
    // join used to go ahead after 20 s whatever the state file said).
    crate::common::wait_for(
        &format!("the winner to make {}", shm.display()),
        120,
        || shm.exists(),
    );
    crate::common::wait_for("the winner to publish itself", 120, || {
        !std::fs::read_to_string(&shm).unwrap_or_default().is_empty()
    });
    let err = stderr_of(&mut in_bb(&opts, "true"));
    drop(winner);
    assert_lines(
        &err,
        &[
            "join: I lost",
            "join: 0 peers left excluding myself",
            "join: cleaning up IPC resources",
        ],
    );
    assert!(!shm.exists(), "{} left behind", shm.display());
}

#[test]
fn exit_statuses_are_the_documented_codes() {
    let (code, err) = fails(tool("ch-run").args(["/nonexistent-image", "--", "/bin/true"]));
    assert_eq!(code, 31, "{err}");
    let (code, err) = fails(
        tool("ch-run")
            .arg(busybox_rootfs())
            .args(["--", "/no/such/command"]),
    );
    assert_eq!(code, 49, "{err}");
    // A feature that is not available: 87 (squash, with no squashfuse_ll to find: $PATH
    // holds only setpriv, which runs the tools as the test user).
    let s = Scratch::new("runconf-exit");
    let bin = s.join("bin");
    sh(&format!(
        "mkdir '{0}' && ln -s \"$(command -v setpriv)\" '{0}/setpriv'",
        bin.display()
    ));
    let out = output(tool("ch-run").arg("--feature=squash").env("PATH", &bin));
    assert_eq!(out.status.code(), Some(87));
}

#[test]
fn argument_errors_use_charliecloud_words() {
    for (args, want) in [
        (&["-b"][..], "ch-run: option requires an argument -- 'b'"),
        (
            &["--bind"][..],
            "ch-run: option '--bind' requires an argument",
        ),
        (&["-c"][..], "ch-run: option requires an argument -- 'c'"),
        // An option ch-run does not have: getopt's words, as Charliecloud 0.31 prints
        // (clap's "unexpected argument" before).
        (
            &["--test", "/x", "--", "true"][..],
            "ch-run: unrecognized option '--test'",
        ),
        (
            &["-Z", "/x", "--", "true"][..],
            "ch-run: invalid option -- 'Z'",
        ),
    ] {
        let (code, err) = fails(tool("ch-run").args(args));
        assert_eq!(code, 64, "{args:?}: {err}");
        assert!(err.starts_with(want), "{args:?}: {err}");
        assert!(
            err.contains("Try `ch-run --help' or `ch-run --usage'"),
            "{err}"
        );
    }
    let (code, err) = fails(&mut in_bb(&["-m", ""], "true"));
    assert_eq!(code, 31);
    assert!(
        err.contains("error: mount point can't be empty string"),
        "{err}"
    );
}

// ---- point 18: Charliecloud 0.38's ch-run ----

#[test]
fn quiet_and_verbose_exclude_each_other_and_count_to_three() {
    for (opts, want) in [
        (&["-v", "-q"][..], "--quiet incompatible with --verbose"),
        (&["-q", "-v"][..], "--verbose incompatible with --quiet"),
        (&["-vvvv"][..], "--verbose can be specified at most thrice"),
        (&["-qqqq"][..], "--quiet can be specified at most thrice"),
    ] {
        let (code, err) = fails(&mut in_bb(opts, "true"));
        assert_eq!(code, 31, "{opts:?}");
        assert!(err.contains(&format!("error: {want}")), "{opts:?}: {err}");
    }
    // --quiet is -q: -qq silences the command's stdout.
    assert_eq!(ok(&mut in_bb(&["--quiet", "--quiet"], "echo hi")), "");
}

#[test]
fn warnings_are_reprinted_at_exit() {
    let out = output(tool("ch-run").arg("--warnings=2"));
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 5, "{err}");
    assert!(
        lines[0].contains("]: warning: this is warning 1! ("),
        "{err}"
    );
    assert!(
        lines[1].contains("]: warning: this is warning 2! ("),
        "{err}"
    );
    assert!(
        lines[2].ends_with("]: warning: reprinting first 2 warning(s)"),
        "{err}"
    );
    assert_eq!(&lines[3..], &lines[..2]);
    // A run that fails re-prints its warnings after the error.
    let (_, err) = fails(tool("ch-run").args(["--no-home", "/nonexistent-image", "--", "true"]));
    let lines: Vec<&str> = err.lines().collect();
    let n = lines.len();
    assert!(n >= 4, "{err}");
    assert!(
        lines[n - 2].ends_with("reprinting first 1 warning(s)"),
        "{err}"
    );
    assert!(lines[n - 1].contains("deprecated --no-home"), "{err}");
}

#[test]
fn empty_join_tag_is_refused() {
    let (code, err) = fails(&mut in_bb(&["--join-ct=2", "--join-tag="], "true"));
    assert_eq!(code, 31);
    assert!(
        err.contains("error: join: peer group tag cannot be empty string"),
        "{err}"
    );
}

#[test]
fn set_env_keeps_a_lone_dollar_and_set_env0_strips_quotes() {
    let w = World::new("env0");
    let f = w.path("env0");
    sh(&format!("printf \"Q='a b'\\0R=x\\0\" > '{}'", f.display()));
    let out = ok(&mut in_bb(
        &[
            "--set-env=FOO=bar:$",
            &format!("--set-env0={}", f.display()),
        ],
        "printf '%s|%s|%s' \"$FOO\" \"$Q\" \"$R\"",
    ));
    assert_eq!(out, "bar:$|a b|x");
}

#[test]
fn unknown_ids_get_dummy_info_and_say_so() {
    // Ids no host account has (checked below), as Charliecloud words it at -v.
    let id = "54321";
    let known = Command::new("getent")
        .args(["passwd", id])
        .output()
        .is_ok_and(|o| o.status.success());
    if known {
        return crate::common::skip("uid 54321 exists on this host");
    }
    let err = stderr_of(&mut in_bb(
        &["-v", &format!("--uid={id}"), &format!("--gid={id}")],
        "grep -q '^charlie:x:54321:54321:' /etc/passwd",
    ));
    assert_lines(
        &err,
        &[
            "UID 54321 not found; using dummy info",
            "GID 54321 not found; using dummy info",
        ],
    );
}

#[test]
fn missing_image_environment_error_names_the_guest_path() {
    let (code, err) = fails(&mut in_bb(&["--set-env"], "true"));
    assert_eq!(code, 31);
    assert!(
        err.contains("error: can't open: /ch/environment: No such file or directory ("),
        "{err}"
    );
}

#[test]
fn squashfs_image_mounts_with_path_unset() {
    let s = Scratch::new("runconf-sq");
    let Some(sq) = crate::run::squash_image(&s) else {
        return;
    };
    let mnt = crate::run::mount_point(&s);
    let out = output(
        tool("ch-run")
            .arg("-m")
            .arg(&mnt)
            .arg(&sq)
            .args(["--", "/bin/echo", "mounted"])
            .env_remove("PATH"),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "mounted\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());
}

/// The builder passes ENV to RUN through `--set-env0`, which strips one pair of single
/// quotes as `--set-env` does: a value that is itself quoted must still arrive unchanged.
#[test]
fn run_sees_quoted_env_values_unchanged() {
    let w = World::new("quoted");
    ok(w.image().arg("import").arg(busybox_rootfs()).arg("bb"));
    let ctx = w.path("ctx");
    sh(&format!(
        "mkdir '{0}' && cat > '{0}/Dockerfile' <<'EOF'
FROM bb
ENV Q=\"'x'\" P=plain
RUN test \"$Q\" = \"'x'\" && test \"$P\" = plain
EOF",
        ctx.display()
    ));
    ok(w.image().args(["build", "-t", "q"]).arg(&ctx));
}
