//! Divergences found by running Charliecloud 0.31's own test suite (`ch-test run`: the
//! run/*.bats files, run_first.bats and the generated unpack tests) against Grove's
//! ch-run, ch-convert and ch-fromhost. Each test repeats what the Charliecloud test checks,
//! through the real binaries as the unprivileged test user; the bats file and test it
//! comes from are named above it.

use crate::common::{busybox_copy, busybox_rootfs, fails, have, ok, sh, skip, tool, Scratch};
use std::path::Path;
use std::process::Command;

/// ch-run with no launcher variables that would pick a peer group size or tag.
fn ch_run_unlaunched() -> Command {
    let mut c = tool("ch-run");
    for v in [
        "OMPI_COMM_WORLD_LOCAL_SIZE",
        "SLURM_STEP_TASKS_PER_NODE",
        "SLURM_CPUS_ON_NODE",
        "SLURM_NODEID",
        "SLURM_JOB_ID",
        "SLURM_STEP_ID",
        "PMIX_NAMESPACE",
        "OMPI_MCA_ess_base_jobid",
    ] {
        c.env_remove(v);
    }
    c
}

/// unpack.bats.in ("unpack chtest": `ch-convert -o dir TARBALL DIR`), then
/// ch-run_misc.bats "ch-run --bind": `-b SRC:/mnt/9` on the unpacked image. Charliecloud's
/// ch-convert adds the mount points ch-run needs (`dir_fixup`), so /mnt/0-9 exist.
#[test]
fn convert_to_a_directory_adds_the_mount_points_ch_run_binds_onto() {
    let s = Scratch::new("bats-unpack");
    let tarball = s.join("bb.tar.gz");
    // A tarball of an image that has no /mnt/N, no /etc/hosts (as a docker export may).
    sh(&format!(
        "cd '{}' && tar -czf '{}' --exclude=./mnt --exclude=./etc/hosts .",
        busybox_rootfs().display(),
        tarball.display()
    ));
    let img = s.join("img");
    ok(tool("ch-convert")
        .env("CH_IMAGE_STORAGE", s.storage())
        .arg(&tarball)
        .arg(&img));
    for p in [
        "mnt/0",
        "mnt/9",
        "dev",
        "proc",
        "etc/hosts",
        "etc/resolv.conf",
    ] {
        assert!(img.join(p).exists(), "ch-convert -o dir: no {p}");
    }
    let src = s.join("bind1");
    sh(&format!(
        "mkdir '{0}' && echo one > '{0}/file1'",
        src.display()
    ));
    let out = ok(tool("ch-run")
        .arg("-b")
        .arg(format!("{}:/mnt/9", src.display()))
        .arg(&img)
        .args(["--", "cat", "/mnt/9/file1"]));
    assert_eq!(out, "one\n");
}

/// ch-run_misc.bats "ch-run --bind errors": a destination that climbs out of the image
/// with `..`, or through a symlink to `../..`, is refused; ch-run used to bind over the
/// whole image root instead.
#[test]
fn bind_destination_outside_the_image_is_refused_in_charliecloud_words() {
    let s = Scratch::new("bats-bind-out");
    let img = busybox_copy(&s, "img");
    sh(&format!("ln -s ../.. '{}/mnt/link-bad-rel'", img.display()));
    let src = s.join("bind1");
    sh(&format!("mkdir '{}'", src.display()));
    let parent = s.path.display().to_string();
    let img_s = img.display().to_string();
    let bind = |dst: &str| {
        let mut c = tool("ch-run");
        c.arg("-b")
            .arg(format!("{}:{dst}", src.display()))
            .arg(&img)
            .args(["--", "true"]);
        fails(&mut c).1
    };
    let err = bind("/..");
    assert!(
        err.contains(&format!("can't bind: {parent} not subdirectory of {img_s}")),
        "{err}"
    );
    let err = bind("/../doesnotexist/a");
    assert!(
        err.contains(&format!(
            "can't mkdir: {parent}/doesnotexist not subdirectory of {img_s}"
        )),
        "{err}"
    );
    assert!(!Path::new(&format!("{parent}/doesnotexist")).exists());
    let err = bind("/mnt/link-bad-rel");
    assert!(
        err.contains(&format!("can't bind: {parent} not subdirectory of {img_s}")),
        "{err}"
    );
    // A `..` that stays inside the image is fine.
    let out = ok(tool("ch-run")
        .arg("-b")
        .arg(format!("{}:/mnt/../tmp", src.display()))
        .arg(&img)
        .args(["--", "sh", "-c", "test -d /tmp && echo ok"]));
    assert_eq!(out, "ok\n");
}

/// ch-run_join.bats "one peer, direct launch" and "peer group size errors": a count from
/// $SLURM_CPUS_ON_NODE is read as Charliecloud's strtol does (digits then anything), with
/// its error words.
#[test]
fn join_count_from_the_environment_is_read_as_charliecloud_reads_it() {
    let img = busybox_rootfs();
    let out = ok(ch_run_unlaunched()
        .env("SLURM_CPUS_ON_NODE", "1foo")
        .args(["-v", "--join"])
        .arg(format!("--join-tag=bats-run-{}", std::process::id()))
        .arg(&img)
        .args(["--", "echo", "joined"]));
    assert_eq!(out, "joined\n");
    for (value, want) in [
        ("a", "SLURM_CPUS_ON_NODE: no digits found"),
        ("-1", "join: no valid peer group size found"),
        ("2147483648", "SLURM_CPUS_ON_NODE: out of range"),
        ("-2147483649", "SLURM_CPUS_ON_NODE: out of range"),
        ("9223372036854775808", "SLURM_CPUS_ON_NODE: out of range"),
    ] {
        let (_, err) = fails(
            ch_run_unlaunched()
                .env("SLURM_CPUS_ON_NODE", value)
                .arg("--join")
                .arg(&img)
                .args(["--", "true"]),
        );
        assert!(err.contains(want), "{value}: {err}");
        // The source location names Grove's line, not the standard library's
        // ("(function.rs:250)" before: a `map_err(RunError::msg)` took the location of
        // the closure's caller inside core).
        assert!(
            err.contains("(ch-run.rs:") || err.contains("(join.rs:"),
            "{value}: {err}"
        );
    }
    for value in ["-2147483649", "-9223372036854775809"] {
        let (_, err) = fails(
            ch_run_unlaunched()
                .arg(format!("--join-ct={value}"))
                .arg(&img)
                .args(["--", "true"]),
        );
        assert!(err.contains("--join-ct: out of range"), "{value}: {err}");
    }
}

/// ch-run_join.bats "ch-run --join-pid: errors": the namespaces of a process we don't own.
#[test]
fn join_pid_of_a_process_not_ours_says_join_cant_open() {
    let (_, err) = fails(
        ch_run_unlaunched()
            .args(["-v", "--join-pid=1"])
            .arg(busybox_rootfs())
            .args(["--", "true"]),
    );
    if err.contains("join: PID 1 is not in a container") {
        skip("PID 1 is ours here: can't test a process we don't own");
        return;
    }
    assert!(
        err.contains("join: can't open /proc/1/ns/user: Permission denied"),
        "{err}"
    );
}

/// ch-fromhost.bats "ch-fromhost --cray-mpi not on a Cray".
#[test]
fn fromhost_cray_mpi_off_a_cray_asks_are_you_on_a_cray() {
    if Path::new("/etc/opt/cray/release/cle-release").exists() {
        skip("this host is a Cray");
        return;
    }
    let s = Scratch::new("bats-cray");
    let img = busybox_copy(&s, "img");
    let (code, err) = fails(tool("ch-fromhost").arg("--cray-mpi").arg(&img));
    assert_eq!(code, 1);
    assert!(
        err.contains("not found: /etc/opt/cray/release/cle-release: are you on a Cray?"),
        "{err}"
    );
}

/// ch-fromhost.bats "ch-fromhost --nvidia without GPU" (nvidia-container-cli not in $PATH).
#[test]
fn fromhost_nvidia_without_the_cli_says_command_not_found() {
    if have("nvidia-container-cli") {
        skip("nvidia-container-cli is installed");
        return;
    }
    let s = Scratch::new("bats-nvidia");
    let img = busybox_copy(&s, "img");
    let (code, err) = fails(tool("ch-fromhost").args(["-v", "--nvidia"]).arg(&img));
    assert_eq!(code, 1);
    assert!(err.contains("nvidia-container-cli failed"), "{err}");
    assert!(
        err.contains("nvidia-container-cli: command not found"),
        "{err}"
    );
    assert!(err.contains("does this host have GPUs?"), "{err}");
}

/// ch-fromhost.bats "ch-fromhost errors" and "ch-fromhost (Debian)": the messages its
/// checks grep, and 0.31's `--lib-path` (Grove's `--print-lib`).
#[test]
fn fromhost_errors_use_charliecloud_words() {
    let s = Scratch::new("bats-fromhost");
    let img = busybox_copy(&s, "img");
    let f = s.join("f.txt");
    sh(&format!("echo hi > '{}'", f.display()));
    let err = |args: &[&str]| fails(tool("ch-fromhost").args(args)).1;
    let img_s = img.display().to_string();
    let e = err(&["--path", &f.display().to_string(), "/etc/motd"]);
    assert!(e.contains("image not a directory: /etc/motd"), "{e}");
    let e = err(&["--file", "/doesnotexist", &img_s]);
    assert!(e.contains("cannot read file: /doesnotexist"), "{e}");
    assert!(e.contains("No such file or directory"), "{e}");
    let e = err(&["--dest", "/mnt", "--path", "/doesnotexist", &img_s]);
    assert!(e.contains("cannot inject: /doesnotexist"), "{e}");
    assert!(e.contains("No such file or directory"), "{e}");
    // --lib-path is an option (busybox has no ldconfig to ask, so it fails later).
    let e = err(&["--lib-path", &img_s]);
    assert!(!e.contains("invalid option"), "{e}");
    assert!(e.contains("shared library destination"), "{e}");
}

/// ch-run_join.bats "ch-run --join: peer group tag errors": an empty $SLURM_STEP_ID is an
/// empty tag, refused (it used to fall back to the parent's PID).
#[test]
fn join_tag_from_an_empty_slurm_step_id_is_refused() {
    let (_, err) = fails(
        ch_run_unlaunched()
            .env("SLURM_CPUS_ON_NODE", "1")
            .env("SLURM_STEP_ID", "")
            .arg("--join")
            .arg(busybox_rootfs())
            .args(["--", "true"]),
    );
    assert!(
        err.contains("join: peer group tag cannot be empty string"),
        "{err}"
    );
}

/// ch-run_join.bats "ch-run --join-pid: with prior --join": the peer that loses says
/// "joining namespaces of pid WINNER", the PID the winner logged, which a later
/// `--join-pid` takes and names the same way (Grove's namespace holder is named on a line
/// of its own).
#[test]
fn join_loser_names_the_winner_pid() {
    let s = Scratch::new("bats-join-pid");
    let tag = format!("bats-run-winner-{}", std::process::id());
    let log1 = s.join("winner.err");
    let mut winner = ch_run_unlaunched();
    winner
        .args(["-v", "--join-ct=2"])
        .arg(format!("--join-tag={tag}"))
        .arg(busybox_rootfs())
        .args(["--", "sleep", "600"])
        .stderr(std::fs::File::create(&log1).expect("create log"));
    // The winner lives until the test ends it: with `sleep 5`, the `--join-pid` of it
    // after two other ch-runs found it gone on a loaded machine.
    let child = crate::common::Reaped(winner.spawn().expect("spawn winner"));
    crate::common::wait_for("the winner to initialize", 120, || {
        std::fs::read_to_string(&log1)
            .map(|t| t.contains("join: winner initializing") && t.contains("executing:"))
            .unwrap_or(false)
    });
    let text = std::fs::read_to_string(&log1).expect("read log");
    let pid = text
        .lines()
        .find(|l| l.contains("join: winner initializing"))
        .and_then(|l| l.strip_prefix("ch-run["))
        .and_then(|l| l.split(']').next())
        .expect("winner pid")
        .to_string();
    let out = crate::common::output(
        ch_run_unlaunched()
            .args(["-v", "--join-ct=2"])
            .arg(format!("--join-tag={tag}"))
            .arg(busybox_rootfs())
            .args(["--", "true"]),
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    // A later --join-pid of the winner says the same.
    let third = crate::common::output(
        ch_run_unlaunched()
            .args(["-v", &format!("--join-pid={pid}")])
            .arg(busybox_rootfs())
            .args(["--", "true"]),
    );
    let third_err = String::from_utf8_lossy(&third.stderr);
    drop(child);
    assert!(third.status.success(), "{third_err}");
    assert!(
        third_err.contains(&format!("joining namespaces of pid {pid} (")),
        "{third_err}"
    );
    assert!(out.status.success(), "{err}");
    assert!(err.contains("join: I lost"), "{err}");
    assert!(
        err.contains(&format!("joining namespaces of pid {pid}\n"))
            || err.contains(&format!("joining namespaces of pid {pid} (")),
        "winner {pid}: {err}"
    );
}

/// ch-fromhost.bats "ch-fromhost (CentOS)": `--dest /lib` in an image where /lib is a
/// symlink (`lib -> usr/lib`, merged /usr) injects through it, as the container sees the
/// path; an absolute link restarts at the image, never reaching the host's directory.
#[test]
fn fromhost_dest_through_an_image_symlink_lands_inside_the_image() {
    let s = Scratch::new("bats-fromhost-link");
    let img = busybox_copy(&s, "img");
    sh(&format!(
        "cd '{}' && mkdir -p usr/lib && ln -s usr/lib lib2 && ln -s /usr/lib lib3",
        img.display()
    ));
    let f = s.join("grove-bats-injected.txt");
    sh(&format!("echo hi > '{}'", f.display()));
    for dest in ["/lib2", "/lib3"] {
        ok(tool("ch-fromhost")
            .args(["--dest", dest, "--path"])
            .arg(&f)
            .arg(&img));
        let got = img.join("usr/lib/grove-bats-injected.txt");
        assert!(got.is_file(), "{dest}: not injected at {}", got.display());
        std::fs::remove_file(&got).expect("remove");
    }
    assert!(!Path::new("/usr/lib/grove-bats-injected.txt").exists());
}

/// ch-run_misc.bats "ch-run: internal SquashFUSE errors": a missing `-m` mount point is
/// "can't stat mount point: PATH: No such file or directory"; with `-v` a file image's
/// magic is shown as Charliecloud shows it.
#[test]
fn squash_mount_point_and_magic_errors_use_charliecloud_words() {
    let s = Scratch::new("bats-squash-errors");
    // Only the magic makes it a SquashFS image; the error comes before any mount.
    let sq = s.join("fake.sqfs");
    let not = s.join("README");
    sh(&format!(
        "printf 'hsqs-not-really' > '{}' && printf 'You are reading' > '{}'",
        sq.display(),
        not.display()
    ));
    let (_, err) = fails(
        tool("ch-run")
            .args(["-m", "/doesnotexist"])
            .arg(&sq)
            .args(["--", "true"]),
    );
    assert!(
        err.contains("can't stat mount point: /doesnotexist: No such file or directory"),
        "{err}"
    );
    let (_, err) = fails(tool("ch-run").arg("-vv").arg(&not).args(["--", "true"]));
    assert!(
        err.contains("image file magic expected: 6873 7173; actual: 596f 7520"),
        "{err}"
    );
    assert!(err.contains("unknown image type: "), "{err}");
}

/// ch-convert.bats "ch-convert: errors" (Charliecloud's upstream file): an existing output
/// directory that is not an image is never replaced, even with --force (it used to be
/// deleted with --force: `ch-convert -f IMG ~/` would remove a home directory).
#[test]
fn convert_never_replaces_a_directory_that_is_not_an_image() {
    let s = Scratch::new("bats-convert-notimage");
    let tarball = s.join("bb.tar");
    sh(&format!(
        "cd '{}' && tar -cf '{}' .",
        busybox_rootfs().display(),
        tarball.display()
    ));
    let dir = s.join("mine");
    sh(&format!(
        "mkdir '{0}' && echo keep > '{0}/notes'",
        dir.display()
    ));
    for force in [false, true] {
        let mut c = tool("ch-convert");
        c.env("CH_IMAGE_STORAGE", s.storage());
        if force {
            c.arg("--force");
        }
        let (code, err) = fails(c.arg(&tarball).arg(&dir));
        assert_eq!(code, 1);
        assert!(
            err.contains(&format!(
                "exists but does not appear to be an image: {}",
                dir.display()
            )),
            "force {force}: {err}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("notes")).expect("notes kept"),
            "keep\n"
        );
    }
}

/// ch-convert.bats "ch-convert: pathological tarballs" (Charliecloud's issue #157): what a
/// tarball holds under /dev is left out of the image; /mnt/dev is not /dev.
#[test]
fn convert_from_a_tarball_leaves_out_what_is_under_dev() {
    let s = Scratch::new("bats-convert-dev");
    let tarball = s.join("img.tar.gz");
    sh(&format!(
        "cd '{d}' && cp -a '{bb}' img && touch img/dev/deleteme && mkdir -p img/mnt/dev \
         && touch img/mnt/dev/dontdeleteme && tar -czf '{t}' img",
        d = s.path.display(),
        bb = busybox_rootfs().display(),
        t = tarball.display()
    ));
    let out = s.join("out");
    ok(tool("ch-convert")
        .env("CH_IMAGE_STORAGE", s.storage())
        .arg(&tarball)
        .arg(&out));
    let dev: Vec<_> = std::fs::read_dir(out.join("dev"))
        .expect("dev kept")
        .collect();
    assert!(dev.is_empty(), "{dev:?}");
    assert!(out.join("mnt/dev/dontdeleteme").exists());
}

/// ch-convert.bats "ch-convert: --no-clobber" (Charliecloud's upstream file): with
/// `--no-clobber` an existing output is refused in Charliecloud's words.
#[test]
fn convert_no_clobber_refuses_in_charliecloud_words() {
    let s = Scratch::new("bats-convert-noclobber");
    let st = s.storage();
    let out = s.join("out.tar.gz");
    sh(&format!("touch '{}'", out.display()));
    let chc = || {
        let mut c = tool("ch-convert");
        c.env("CH_IMAGE_STORAGE", &st);
        c
    };
    ok(chc().arg(busybox_rootfs()).arg("tmpimg"));
    let (code, err) = fails(
        chc()
            .arg("--no-clobber")
            .arg(busybox_rootfs())
            .arg("tmpimg"),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("error: exists in ch-image storage, not deleting per --no-clobber: tmpimg"),
        "{err}"
    );
    let (_, err) = fails(chc().args(["--no-clobber", "tmpimg"]).arg(&out));
    assert!(
        err.contains(&format!(
            "error: exists, not deleting per --no-clobber: {}",
            out.display()
        )),
        "{err}"
    );
}
