//! Integration tests for run: the real ch-run binary, as the unprivileged test user.

use crate::common::{
    busybox_rootfs, fails, is_root, ok, output, sh, skip, tool, unpriv_sleeper, Reaped, Scratch,
    TEST_UID,
};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn ch_run() -> Command {
    tool("ch-run")
}

/// `ch-run [opts] BUSYBOX -- sh -c SCRIPT`.
fn in_bb(opts: &[&str], script: &str) -> Command {
    let mut c = ch_run();
    c.args(opts)
        .arg(busybox_rootfs())
        .args(["--", "/bin/sh", "-c", script]);
    c
}

/// A copy of the busybox fixture owned by the test user (for -w and -W tests).
fn writable_copy(s: &Scratch) -> PathBuf {
    let dst = s.join("img");
    sh(&format!(
        "cp -a '{}' '{}'",
        busybox_rootfs().display(),
        dst.display()
    ));
    dst
}

fn invoker_uid() -> u32 {
    if is_root() {
        TEST_UID
    } else {
        std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .expect("stat /proc/self")
    }
}

fn stdout_of(c: &mut Command) -> String {
    ok(c)
}

// ---- core ----

#[test]
fn runs_command_and_passes_exit_status() {
    assert_eq!(stdout_of(&mut in_bb(&[], "echo hello")), "hello\n");
    let out = output(&mut in_bb(&[], "exit 7"));
    assert_eq!(out.status.code(), Some(7));
}

#[test]
fn command_without_double_dash_runs_too() {
    let mut c = ch_run();
    c.arg(busybox_rootfs()).args(["echo", "hi"]);
    assert_eq!(stdout_of(&mut c), "hi\n");
}

/// A relative IMAGE (`.`, `./`, `../x/.`) names the same image as its absolute path, for
/// read-only and -w runs; messages then show the absolute path.
#[test]
fn relative_image_paths_work() {
    let s = Scratch::new("run-relimg");
    // Messages show the realpath (the scratch directory may be under a symlink).
    let img = writable_copy(&s).canonicalize().expect("realpath image");
    let name = img.file_name().expect("name").to_str().expect("utf-8");
    for (dir, arg) in [
        (img.clone(), "."),
        (img.clone(), "./"),
        (img.join("etc"), ".."),
        (s.join("."), name),
    ] {
        for opts in [&[][..], &["-w"][..], &["-t"][..]] {
            let mut c = ch_run();
            c.current_dir(&dir)
                .args(opts)
                .args([arg, "--", "cat", "/etc/motd"]);
            assert_eq!(
                stdout_of(&mut c),
                "grove busybox fixture\n",
                "{arg} {opts:?}"
            );
        }
    }
    let mut c = ch_run();
    c.current_dir(&img)
        .args(["-b", "/nonexistent-src", ".", "--", "true"]);
    let (_, err) = fails(&mut c);
    assert!(
        err.contains("can't bind: source not found: /nonexistent-src"),
        "{err}"
    );
    std::fs::remove_dir(img.join("proc")).expect("rmdir proc");
    let mut c = ch_run();
    c.current_dir(&img).args([".", "--", "true"]);
    let (_, err) = fails(&mut c);
    assert!(
        err.contains(&format!(
            "can't bind: destination not found: {}/proc",
            img.display()
        )),
        "{err}"
    );
}

/// As with Charliecloud's argp, a repeated option's last value wins; -b and --set-env add up.
#[test]
fn repeated_options_last_one_wins() {
    let out = stdout_of(&mut in_bb(
        &[
            "-u",
            "5",
            "-u",
            "6",
            "--cd",
            "/etc",
            "--cd",
            "/bin",
            "-t",
            "-t",
            "--set-env=A=1",
            "--set-env=B=2",
        ],
        "id -u; pwd; echo $A$B",
    ));
    assert_eq!(out, "6\n/bin\n12\n");
}

#[test]
fn bad_numbers_are_clear_errors() {
    for (opts, want) in [
        (&["-u", "abc"][..], "--uid: no digits found"),
        (&["-u", "-5"][..], "--uid: must be non-negative"),
        (&["-g", "4294967295"][..], "--gid: out of range"),
        (
            &["--join-pid=12x"][..],
            "--join-pid: extra characters after digits",
        ),
        (&["--join-ct=-1"][..], "--join-ct: must be non-negative"),
    ] {
        let (code, err) = fails(&mut in_bb(opts, "true"));
        assert_eq!(code, 31, "{opts:?}");
        assert!(err.contains(&format!("error: {want} (")), "{opts:?}: {err}");
    }
    // --join-pid=0: no PID to join, as in Charliecloud.
    assert_eq!(
        stdout_of(&mut in_bb(&["--join-pid=0"], "echo ran")),
        "ran\n"
    );
}

#[test]
fn bare_ch_run_prints_help_on_stderr_and_fails() {
    let out = output(&mut ch_run());
    // As Charliecloud's ch-run (0.38): exit 1.
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Usage: ch-run [OPTION...] IMAGE -- CMD") && err.contains("--bind"),
        "{err}"
    );
}

#[test]
fn missing_command_is_an_error_with_status_31() {
    let mut c = ch_run();
    c.arg(busybox_rootfs());
    let (code, err) = fails(&mut c);
    assert_eq!(code, 31);
    assert!(
        err.contains("error: IMAGE and/or CMD not specified"),
        "{err}"
    );
}

#[test]
fn error_message_follows_charliecloud_format() {
    let mut c = ch_run();
    c.args(["/nonexistent-image", "--", "true"]);
    let (code, err) = fails(&mut c);
    assert_eq!(code, 31);
    let line = err.lines().next().expect("a line");
    // ch-run[PID]: error: MESSAGE: strerror (file:line errno)
    let rest = line.strip_prefix("ch-run[").expect("prefix");
    let (pid, rest) = rest.split_once("]: error: ").expect("pid");
    assert!(pid.parse::<u32>().is_ok(), "{line}");
    assert!(
        rest.starts_with("can't stat: /nonexistent-image: No such file or directory ("),
        "{line}"
    );
    assert!(rest.ends_with(" 2)"), "{line}");
}

#[test]
fn unexecutable_command_exits_49() {
    let mut c = ch_run();
    c.arg(busybox_rootfs()).args(["--", "/etc/motd"]);
    let (code, err) = fails(&mut c);
    assert_eq!(code, 49);
    assert!(
        err.contains("error: can't execve(2): /etc/motd: Permission denied"),
        "{err}"
    );
    let mut c = ch_run();
    c.arg(busybox_rootfs()).args(["--", "/no/such/cmd"]);
    let (code, err) = fails(&mut c);
    assert_eq!(code, 49);
    assert!(
        err.contains("can't execve(2): /no/such/cmd: No such file or directory"),
        "{err}"
    );
}

#[test]
fn command_replaces_ch_run_for_directory_images() {
    // As in Charliecloud: the command is ch-run's process (setpriv execs ch-run, so the
    // spawned pid is ch-run's), and a signal that kills it is what the caller sees.
    use std::os::unix::process::ExitStatusExt;
    let mut c = in_bb(&[], "echo $$");
    let child = c.stdout(Stdio::piped()).spawn().expect("spawn");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait");
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{pid}\n"));
    let out = output(&mut in_bb(&[], "kill -TERM $$"));
    assert_eq!(out.status.signal(), Some(libc::SIGTERM));
    let out = output(&mut in_bb(&[], "kill -KILL $$"));
    assert_eq!(out.status.signal(), Some(libc::SIGKILL));
}

/// Send each signal to ch-run (setpriv execs it, so the spawned pid is ch-run's) running
/// `sh -c SCRIPT` from `command`; the command's trap must see it and set the exit status.
fn assert_signals_reach_the_command(command: impl Fn(&str) -> Command, sigs: &[&str]) {
    for name in sigs {
        let script = format!("trap 'echo got; exit 3' {name}; echo ready; i=0; while [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; exit 9");
        // Signals the test runner ignores (`nohup` ignores HUP) stay ignored across exec,
        // and a shell can't trap a signal ignored on entry: start from the defaults, as a
        // login session does (`env` execs in place, so the pid is still ch-run's).
        let inner = command(&script);
        let mut wrapped = Command::new("env");
        wrapped
            .arg("--default-signal")
            .arg(inner.get_program())
            .args(inner.get_args());
        for (k, v) in inner.get_envs() {
            match v {
                Some(v) => wrapped.env(k, v),
                None => wrapped.env_remove(k),
            };
        }
        if let Some(d) = inner.get_current_dir() {
            wrapped.current_dir(d);
        }
        let mut child = wrapped.stdout(Stdio::piped()).spawn().expect("spawn");
        let mut out = child.stdout.take().expect("stdout");
        let mut buf = [0u8; 6];
        std::io::Read::read_exact(&mut out, &mut buf).expect("ready");
        assert_eq!(&buf, b"ready\n");
        let sig: nix::sys::signal::Signal = format!("SIG{name}").parse().expect("signal name");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).expect("kill");
        let st = child.wait().expect("wait");
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut out, &mut rest).expect("read");
        assert_eq!(rest, "got\n", "{name}");
        assert_eq!(st.code(), Some(3), "{name}");
    }
}

#[test]
fn signals_are_forwarded_to_the_command() {
    assert_signals_reach_the_command(|script| in_bb(&[], script), &["USR1", "TERM", "HUP", "INT"]);
}

/// With SquashFS the command is ch-run's child: ch-run forwards what it is sent.
#[test]
fn squashfs_signals_are_forwarded_to_the_command() {
    let s = Scratch::new("run-sqfwd");
    let Some(sq) = squash_image(&s) else { return };
    let mnt = mount_point(&s);
    assert_signals_reach_the_command(
        |script| {
            let mut c = ch_run();
            c.arg("-m")
                .arg(&mnt)
                .arg(&sq)
                .args(["--", "/bin/sh", "-c", script]);
            c
        },
        &[
            "TERM", "INT", "HUP", "QUIT", "USR1", "USR2", "ALRM", "CONT", "WINCH", "XCPU", "PWR",
        ],
    );
}

#[test]
fn image_is_read_only_by_default() {
    let out = output(&mut in_bb(&[], "touch /newfile"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Read-only file system"));
}

#[test]
fn read_only_remount_keeps_locked_flags_of_nosuid_mount() {
    // /dev/shm is usually nosuid,nodev: an image there keeps those flags when made read-only.
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        return skip("/dev/shm missing");
    }
    let dir = shm.join(format!("grove-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).expect("mkdir");
    if is_root() {
        assert!(Command::new("chown")
            .arg(format!("{TEST_UID}:{TEST_UID}"))
            .arg(&dir)
            .status()
            .expect("chown")
            .success());
    }
    sh(&format!(
        "cp -a '{}' '{}/img'",
        busybox_rootfs().display(),
        dir.display()
    ));
    let mut c = ch_run();
    c.arg(dir.join("img"))
        .args(["--", "sh", "-c", "touch /x || echo ro"]);
    let out = stdout_of(&mut c);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out, "ro\n");
}

#[test]
fn write_makes_image_writable_and_files_belong_to_invoker() {
    let s = Scratch::new("run-w");
    let img = writable_copy(&s);
    let mut c = ch_run();
    c.arg("-w")
        .arg(&img)
        .args(["--", "sh", "-c", "echo data > /created; id -u"]);
    assert_eq!(stdout_of(&mut c).trim(), invoker_uid().to_string());
    let md = std::fs::metadata(img.join("created")).expect("created on host");
    assert_eq!(md.uid(), invoker_uid());
}

#[test]
fn write_fake_changes_vanish_at_exit() {
    let s = Scratch::new("run-wf");
    let img = writable_copy(&s);
    let mut c = ch_run();
    c.arg("-W").arg(&img).args([
        "--",
        "sh",
        "-c",
        "echo x > /etc/motd; mkdir /newdir; cat /etc/motd",
    ]);
    assert_eq!(stdout_of(&mut c), "x\n");
    assert_eq!(
        std::fs::read_to_string(img.join("etc/motd")).expect("motd"),
        "grove busybox fixture\n"
    );
    assert!(!img.join("newdir").exists());
    // With size.
    let mut c = ch_run();
    c.arg("--write-fake=16m")
        .arg(&img)
        .args(["--", "sh", "-c", "echo y > /z && cat /z"]);
    assert_eq!(stdout_of(&mut c), "y\n");
}

#[test]
fn write_and_write_fake_together_are_refused() {
    let (code, err) = fails(&mut in_bb(&["-w", "-W"], "true"));
    assert_eq!(code, 31);
    assert!(err.contains("incompatible"), "{err}");
}

// ---- identity ----

#[test]
fn uid_and_gid_map_to_invoker_only() {
    let out = stdout_of(&mut in_bb(
        &["-u", "0", "-g", "0"],
        "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups",
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0");
    assert_eq!(lines[1], "0");
    let inv = invoker_uid();
    let fields = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(fields(lines[2]), ["0", &inv.to_string(), "1"]);
    assert_eq!(fields(lines[3])[2], "1");
    assert_eq!(lines[4], "deny");
    let out = stdout_of(&mut in_bb(&["--uid=1234"], "id -u"));
    assert_eq!(out, "1234\n");
}

#[test]
fn passwd_and_group_are_generated_unless_no_passwd() {
    let out = stdout_of(&mut in_bb(
        &["-u", "1234", "-g", "4321"],
        "cat /etc/passwd /etc/group",
    ));
    assert!(out.contains("root:x:0:0:root:/root:/bin/sh\n"), "{out}");
    assert!(
        out.contains("nobody:x:65534:65534:nobody:/:/bin/false\n"),
        "{out}"
    );
    // The user's entry: home `/`, as Charliecloud writes it.
    let user = out
        .lines()
        .find(|l| l.contains(":x:1234:4321:"))
        .unwrap_or_else(|| panic!("no entry for 1234:4321 in\n{out}"));
    assert!(user.ends_with(":/:/bin/sh"), "{user}");
    assert!(out.contains(":x:4321:\n"), "{out}");
    let out = stdout_of(&mut in_bb(&["--no-passwd"], "cat /etc/passwd"));
    assert_eq!(
        out,
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
    );
}

// ---- mounts ----

#[test]
fn host_dev_proc_sys_are_bound() {
    let out = stdout_of(&mut in_bb(
        &[],
        "test -c /dev/null && test -d /proc/self && test -d /sys/kernel && echo ok",
    ));
    assert_eq!(out, "ok\n");
}

#[test]
fn hosts_and_resolv_conf_come_from_the_host() {
    // The fixture's own files are empty, so host content inside proves the binds.
    let want: String = ["/etc/hosts", "/etc/resolv.conf"]
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap_or_default())
        .collect();
    assert!(
        !want.is_empty(),
        "the host has no /etc/hosts or /etc/resolv.conf"
    );
    let got = stdout_of(&mut in_bb(&[], "cat /etc/hosts /etc/resolv.conf"));
    assert_eq!(got, want);
}

#[test]
fn tmp_is_host_tmp_unless_private_tmp() {
    let name = format!("grove-run-tmp-{}", std::process::id());
    let host = Path::new("/tmp").join(&name);
    std::fs::write(&host, "shared\n").expect("write /tmp file");
    let mut c = in_bb(&[], &format!("cat /tmp/{name}"));
    c.env_remove("TMPDIR");
    let out = stdout_of(&mut c);
    let mut c = in_bb(
        &["-t"],
        &format!("test -e /tmp/{name} || echo private; touch /tmp/x && echo writable"),
    );
    c.env_remove("TMPDIR");
    let private = stdout_of(&mut c);
    let _ = std::fs::remove_file(&host);
    assert_eq!(out, "shared\n");
    assert_eq!(private, "private\nwritable\n");
}

#[test]
fn temporary_passwd_files_are_removed_from_tmpdir() {
    // Regression: the files were unlinked after pivot_root, when $TMPDIR (or, with -t, the
    // host /tmp) was no longer visible at that path, and leaked.
    let s = Scratch::new("run-tmpdir");
    for opts in [&[][..], &["-t"][..]] {
        let mut c = in_bb(opts, "grep -c nobody /etc/passwd");
        c.env("TMPDIR", &s.path);
        assert_eq!(stdout_of(&mut c), "1\n");
        let left: Vec<_> = std::fs::read_dir(&s.path).expect("scratch").collect();
        assert!(left.is_empty(), "{opts:?}: {left:?}");
    }
}

#[test]
fn home_binds_host_home_and_sets_home() {
    let s = Scratch::new("run-home");
    std::fs::write(s.join("marker"), "home\n").expect("write");
    let mut c = in_bb(&["--home"], "echo $HOME; cat /home/$USER/marker");
    c.env("HOME", &s.path);
    let out = stdout_of(&mut c);
    let user = if is_root() {
        "nobody".to_string()
    } else {
        std::env::var("USER").unwrap_or("grove-test".into())
    };
    assert_eq!(out, format!("/home/{user}\nhome\n"));
    for unset in [true, false] {
        let mut c = in_bb(&["--home"], "true");
        if unset {
            c.env_remove("HOME");
        } else {
            c.env("HOME", "");
        }
        // Unset or empty: the passwd entry's home directory (join_slurm tests it).
        let out = output(&mut c);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("$HOME not set"), "{err}");
    }
}

#[test]
fn bind_default_and_explicit_destinations() {
    let s = Scratch::new("run-bind");
    std::fs::write(s.join("f"), "bound\n").expect("write");
    let src = s.path.display().to_string();
    let out = stdout_of(&mut in_bb(&["-b", &format!("{src}:/mnt")], "cat /mnt/f"));
    assert_eq!(out, "bound\n");
    let out = stdout_of(&mut in_bb(
        &[
            "--bind",
            &format!("{src}:/mnt"),
            "--bind",
            &format!("{src}:/home"),
        ],
        "cat /home/f",
    ));
    assert_eq!(out, "bound\n");
    // DST defaults to SRC (created by -W in a copy the user owns: overlayfs cannot copy up
    // directories owned by IDs unmapped in the namespace, EOVERFLOW).
    let img = writable_copy(&s);
    let mut c = ch_run();
    c.args(["-W", "-b", &src])
        .arg(&img)
        .args(["--", "cat", &format!("{src}/f")]);
    assert_eq!(stdout_of(&mut c), "bound\n");
}

#[test]
fn bind_errors_match_charliecloud() {
    let (code, err) = fails(&mut in_bb(&["-b", "/nonexistent-x"], "true"));
    assert_eq!(code, 31);
    assert!(
        err.contains("can't bind: source not found: /nonexistent-x"),
        "{err}"
    );
    let (_, err) = fails(&mut in_bb(&["-b", "/tmp:/"], "true"));
    assert!(err.contains("--bind: destination can't be /"), "{err}");
    let (_, err) = fails(&mut in_bb(&["-b", "/tmp:mnt"], "true"));
    assert!(
        err.contains("--bind: destination must be absolute"),
        "{err}"
    );
    let (_, err) = fails(&mut in_bb(&["-b", "/tmp:/nonexistent-dst"], "true"));
    assert!(
        err.contains("can't mkdir: ") && err.contains("nonexistent-dst: Read-only file system"),
        "{err}"
    );
}

#[test]
fn bind_destination_created_with_write_and_write_fake() {
    let s = Scratch::new("run-bindw");
    let img = writable_copy(&s);
    let data = s.join("data");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::write(data.join("f"), "d\n").expect("write");
    std::fs::write(s.join("file"), "file\n").expect("write");
    for mode in ["-w", "-W"] {
        let mut c = ch_run();
        c.args([
            mode,
            "-b",
            &format!("{}:/new/deep/dir", data.display()),
            "-b",
            &format!("{}:/etc/newfile", s.join("file").display()),
        ])
        .arg(&img)
        .args(["--", "sh", "-c", "cat /new/deep/dir/f /etc/newfile"]);
        assert_eq!(stdout_of(&mut c), "d\nfile\n", "{mode}");
    }
}

#[test]
fn write_fake_binds_into_unwritable_directories_via_symlink_ranch() {
    // The shared fixture is owned by root (when the suite is root): its /mnt and /var/tmp
    // are not writable by the test user even through the overlay (FAQ 11.3.3).
    let s = Scratch::new("run-ranch");
    std::fs::write(s.join("f"), "r\n").expect("write");
    let src = s.path.display().to_string();
    let out = stdout_of(&mut in_bb(
        &[
            "-W",
            "-b",
            &format!("{src}:/mnt/new/dir"),
            "-b",
            &format!("{src}:/var/tmp/x"),
        ],
        "cat /mnt/new/dir/f /var/tmp/x/f; stat -c %a /var/tmp; ls -a /mnt | grep -c orig || true",
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..3], ["r", "r", "1777"], "{out}");
    if is_root() {
        assert_eq!(lines[3], "1", "ranch expected: {out}");
    }
}

#[test]
fn bind_cannot_create_mount_point_inside_earlier_bind() {
    let s = Scratch::new("run-bindin");
    let img = writable_copy(&s);
    let name = format!("grove-run-nope-{}", std::process::id());
    let mut c = ch_run();
    c.env_remove("TMPDIR")
        .args(["-w", "-b", &format!("{}:/tmp/{name}", s.path.display())])
        .arg(&img)
        .args(["--", "true"]);
    let (_, err) = fails(&mut c);
    assert!(err.contains("under existing bind-mount"), "{err}");
    assert!(!Path::new("/tmp").join(&name).exists());
}

#[test]
fn bind_destination_symlinks_cannot_escape_image() {
    let s = Scratch::new("run-esc");
    let img = writable_copy(&s);
    let outside = s.join("outside");
    sh(&format!(
        "mkdir '{o}' && ln -s ../../../../../../../../{o_rel} '{img}/mnt/up' && ln -s '{o}' '{img}/mnt/abs'",
        o = outside.display(),
        o_rel = outside.strip_prefix("/").expect("absolute").display(),
        img = img.display()
    ));
    let data = s.join("data");
    std::fs::create_dir(&data).expect("mkdir");
    for link in ["up", "abs"] {
        let mut c = ch_run();
        c.args(["-w", "-b", &format!("{}:/mnt/{link}", data.display())])
            .arg(&img)
            .args(["--", "true"]);
        let _ = output(&mut c);
        // Whatever happened, nothing was created or mounted outside the image.
        assert_eq!(
            std::fs::read_dir(&outside).expect("outside").count(),
            0,
            "{link}"
        );
    }
    // The path followed the link inside the image instead.
    assert!(img.join(outside.strip_prefix("/").expect("abs")).is_dir());
}

#[test]
fn cd_sets_working_directory() {
    assert_eq!(stdout_of(&mut in_bb(&["-c", "/etc"], "pwd")), "/etc\n");
    assert_eq!(stdout_of(&mut in_bb(&[], "pwd")), "/\n");
    let (code, err) = fails(&mut in_bb(&["--cd=/nonexistent"], "pwd"));
    assert_eq!(code, 31);
    assert!(
        err.contains("can't cd to /nonexistent: No such file or directory"),
        "{err}"
    );
}

// ---- environment ----

#[test]
fn environment_defaults() {
    let mut c = in_bb(
        &[],
        "echo $CH_RUNNING; echo ${TMPDIR-unset}; echo $PATH; echo ${HOME-unset}; echo $FOO",
    );
    c.env("TMPDIR", "/tmp")
        .env("PATH", "/usr/bin")
        .env("FOO", "passed");
    assert_eq!(
        stdout_of(&mut c),
        "Weird Al Yankovic\nunset\n/usr/bin:/bin\nunset\npassed\n"
    );
}

#[test]
fn unset_path_is_warned_about() {
    let mut c = in_bb(&[], "echo ran");
    c.env_remove("PATH");
    let out = output(&mut c);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ran\n");
    // Charliecloud's format: ch-run[PID]: warning: MESSAGE (file:line).
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("ch-run[") && err.contains("]: warning: $PATH not set (mod.rs:"),
        "{err}"
    );
    let out = output(&mut in_bb(&[], "true"));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("PATH"));
}

/// -v tells what ch-run is about to do, each line in the ch-run[PID]: … (file:line) form;
/// -vv adds the mount steps.
#[test]
fn verbose_shows_image_ids_newroot_and_command() {
    let out = output(&mut in_bb(&["-v", "-t"], "true"));
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // ch-run shows the image as its realpath.
    let bb = busybox_rootfs().canonicalize().expect("realpath fixture");
    for want in [
        "verbosity: 1".to_string(),
        format!("image: {}", bb.display()),
        format!("container uid: {}", invoker_uid()),
        "private /tmp: yes".to_string(),
        format!("newroot: {}", bb.display()),
        "executing: /bin/sh -c true".to_string(),
    ] {
        assert!(
            err.lines()
                .any(|l| l.starts_with("ch-run[") && l.contains(&format!("]: {want} ("))),
            "{want}: {err}"
        );
    }
    assert!(!err.contains("mount:"), "{err}");
    let err = String::from_utf8_lossy(&output(&mut in_bb(&["-vv"], "true")).stderr).to_string();
    assert!(err.contains("]: mount: pivot_root to "), "{err}");
    assert!(output(&mut in_bb(&[], "true")).stderr.is_empty());
}

#[test]
fn set_env_forms_and_order() {
    let s = Scratch::new("run-env");
    let f = s.join("env");
    std::fs::write(&f, "A=from_file\nB='quoted'\n\nC=$HOSTV:x\n").expect("write");
    let f0 = s.join("env0");
    std::fs::write(&f0, b"Z=with\nnewline\0").expect("write");
    let mut c = in_bb(
        &[
            &format!("--set-env={}", f.display()),
            "--set-env=D=direct",
            "--set-env=A=override",
            &format!("--set-env0={}", f0.display()),
        ],
        "echo $A $B $C $D; printf '%s|' \"$Z\"",
    );
    c.env("HOSTV", "h");
    assert_eq!(
        stdout_of(&mut c),
        "override quoted h:x direct\nwith\nnewline|"
    );
    // Default file /ch/environment in the image.
    let s2 = Scratch::new("run-envd");
    let img = writable_copy(&s2);
    sh(&format!(
        "mkdir -p '{0}/ch' && echo 'IMGVAR=yes' > '{0}/ch/environment'",
        img.display()
    ));
    let mut c = ch_run();
    c.arg("--set-env")
        .arg(&img)
        .args(["--", "sh", "-c", "echo $IMGVAR"]);
    assert_eq!(stdout_of(&mut c), "yes\n");
    let (_, err) = fails(&mut in_bb(&["--set-env"], "true"));
    assert!(
        err.contains("can't open: ") && err.contains("ch/environment"),
        "{err}"
    );
}

#[test]
fn set_env_parse_errors() {
    let s = Scratch::new("run-envbad");
    let f = s.join("env");
    std::fs::write(&f, "A=1\nnodelim\n").expect("write");
    let (code, err) = fails(&mut in_bb(&[&format!("--set-env={}", f.display())], "true"));
    assert_eq!(code, 31);
    assert!(
        err.contains(&format!(
            "can't parse variable: no delimiter: {}:2",
            f.display()
        )),
        "{err}"
    );
    std::fs::write(&f, "=x\n").expect("write");
    let (_, err) = fails(&mut in_bb(&[&format!("--set-env={}", f.display())], "true"));
    assert!(err.contains("empty name"), "{err}");
}

#[test]
fn env_no_expand_applies_to_later_set_env() {
    let mut c = in_bb(
        &["--set-env=A=$V", "--env-no-expand", "--set-env=B=$V"],
        "echo \"$A $B\"",
    );
    c.env("V", "v");
    assert_eq!(stdout_of(&mut c), "v $V\n");
}

#[test]
fn unset_env_globs_including_extglob_and_star() {
    let mut c = in_bb(
        &["--unset-env=GROVE_A*"],
        "echo ${GROVE_A1-u} ${GROVE_B1-u}",
    );
    c.env("GROVE_A1", "a").env("GROVE_B1", "b");
    assert_eq!(stdout_of(&mut c), "u b\n");
    let mut c = ch_run();
    c.env("WANTED_1", "yes")
        .env("ALSO_WANTED_2", "yes")
        .env("NOT_WANTED", "no");
    c.arg("--unset-env=!(WANTED_*|ALSO_WANTED_*)")
        .arg(busybox_rootfs())
        .args(["--", "/bin/env"]);
    let mut lines: Vec<String> = stdout_of(&mut c).lines().map(String::from).collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "ALSO_WANTED_2=yes",
            "CH_RUNNING=Weird Al Yankovic",
            "WANTED_1=yes"
        ]
    );
    let mut c = ch_run();
    c.arg("--unset-env=*")
        .arg(busybox_rootfs())
        .args(["--", "/bin/env"]);
    assert_eq!(stdout_of(&mut c), "CH_RUNNING=Weird Al Yankovic\n");
    let (_, err) = fails(&mut in_bb(&["--unset-env="], "true"));
    assert!(
        err.contains("--unset-env: GLOB must have non-zero length"),
        "{err}"
    );
}

#[test]
fn unset_then_set_in_command_line_order() {
    let mut c = in_bb(
        &["--set-env=X=1", "--unset-env=X", "--set-env=Y=2"],
        "echo ${X-unset} $Y",
    );
    assert_eq!(stdout_of(&mut c), "unset 2\n");
}

// ---- verbosity, informational options ----

#[test]
fn quiet_twice_silences_command_stdout() {
    let out = output(&mut in_bb(&["-qq"], "echo out; echo err >&2"));
    assert!(out.status.success());
    assert_eq!(out.stdout, b"");
    assert_eq!(out.stderr, b"err\n");
    let out = output(&mut in_bb(&["-qqq"], "echo out; echo err >&2"));
    assert_eq!(out.stderr, b"");
}

#[test]
fn version_help_and_features() {
    // As Charliecloud's ch-run (argp): the version on stderr.
    let v = output(ch_run().arg("--version"));
    assert!(v.status.success() && v.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&v.stderr).trim(),
        env!("CARGO_PKG_VERSION")
    );
    let h = stdout_of(ch_run().arg("--help"));
    assert!(h.contains("--set-env") && h.contains("--write-fake"), "{h}");
    for f in ["extglob", "seccomp", "overlayfs"] {
        assert!(
            output(ch_run().arg(format!("--feature={f}")))
                .status
                .success(),
            "{f}"
        );
    }
    let (code, err) = fails(ch_run().arg("--feature=bogus"));
    assert_eq!(code, 31);
    assert!(err.contains("unknown feature: bogus"), "{err}");
    let (code, _) = fails(ch_run().arg("--bogus"));
    assert_eq!(code, 64);
    let u = stdout_of(ch_run().arg("--usage"));
    assert!(
        u.starts_with("Usage: ch-run [OPTION...] IMAGE -- CMD"),
        "{u}"
    );
    // Charliecloud 0.31 scripts may still pass --no-home: a warning, then the run.
    let out = output(&mut in_bb(&["--no-home"], "echo ran"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ran\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("deprecated --no-home is now default"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--ch-ssh` binds the ch-ssh next to ch-run read-only at /usr/bin/ch-ssh; a read-only
/// image must have the file, `-W` creates it in the overlay only.
#[test]
fn ch_ssh_is_bound_read_only_at_usr_bin() {
    let (code, err) = fails(&mut in_bb(&["--ch-ssh"], "true"));
    assert_eq!(code, 31);
    assert!(
        err.contains("error: --ch-ssh: /usr/bin/ch-ssh not in image ("),
        "{err}"
    );
    let s = Scratch::new("run-ch-ssh");
    let img = writable_copy(&s);
    let host_size = std::fs::metadata(crate::common::bin("ch-ssh"))
        .expect("stat ch-ssh")
        .len();
    let mut c = ch_run();
    c.args(["-W", "--ch-ssh"]).arg(&img).args([
        "--",
        "/bin/sh",
        "-c",
        "test -x /usr/bin/ch-ssh && wc -c < /usr/bin/ch-ssh; \
         if : > /usr/bin/ch-ssh; then echo writable; fi",
    ]);
    let out = output(&mut c);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.trim(), host_size.to_string(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Read-only file system"),
        "{out:?}"
    );
    assert!(!img.join("usr/bin/ch-ssh").exists());
    // An image that has the file gets it covered, read-only, in the default mode too.
    std::fs::write(img.join("usr/bin/ch-ssh"), "placeholder\n").expect("write placeholder");
    let mut c = ch_run();
    c.arg("--ch-ssh")
        .arg(&img)
        .args(["--", "/bin/sh", "-c", "wc -c < /usr/bin/ch-ssh"]);
    assert_eq!(stdout_of(&mut c).trim(), host_size.to_string());
    // A layered image (how stored images run) has it when a lower layer does.
    let top = s.join("top");
    let merged = s.join("merged");
    std::fs::create_dir_all(top.join("etc")).expect("mkdir top");
    std::fs::create_dir(&merged).expect("mkdir merged");
    let mut c = ch_run();
    c.arg("--ch-ssh")
        .arg(format!("--lower={}", top.display()))
        .arg(format!("--lower={}", img.display()))
        .arg(&merged)
        .args(["--", "/bin/sh", "-c", "wc -c < /usr/bin/ch-ssh"]);
    assert_eq!(stdout_of(&mut c).trim(), host_size.to_string());
}

/// ch-ssh runs `ssh [OPTIONS] HOST ch-run $CH_RUN_ARGS CMD...` (a stand-in ssh prints
/// its arguments).
#[test]
fn ch_ssh_runs_ssh_with_ch_run_and_the_image_arguments() {
    let s = Scratch::new("ch-ssh-argv");
    let fake = s.join("bin");
    std::fs::create_dir(&fake).expect("mkdir");
    std::fs::write(fake.join("ssh"), "#!/bin/sh\nprintf '[%s]' \"$@\"\necho\n")
        .expect("write fake ssh");
    std::fs::set_permissions(fake.join("ssh"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod fake ssh");
    // Only setpriv (used to drop root) and the stand-in ssh can be found.
    let setpriv = Command::new("sh")
        .args(["-c", "command -v setpriv"])
        .output()
        .expect("sh");
    let setpriv = String::from_utf8_lossy(&setpriv.stdout).trim().to_string();
    if !setpriv.is_empty() {
        std::os::unix::fs::symlink(&setpriv, fake.join("setpriv")).expect("symlink setpriv");
    }
    let ch_ssh = || {
        let mut c = tool("ch-ssh");
        c.env("PATH", &fake);
        c
    };
    let out = stdout_of(ch_ssh().env("CH_RUN_ARGS", "--cd /work  /data/img").args([
        "-p",
        "2222",
        "-o",
        "BatchMode=yes",
        "node7",
        "--",
        "echo",
        "a b",
    ]));
    assert_eq!(
        out,
        "[-p][2222][-o][BatchMode=yes][node7][ch-run][--cd][/work][/data/img][--][echo][a b]\n"
    );
    let mut c = ch_ssh();
    c.env_remove("CH_RUN_ARGS").args(["node7", "true"]);
    let (code, err) = fails(&mut c);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("ch-ssh[") && err.contains("]: error: CH_RUN_ARGS not set"),
        "{err}"
    );
    std::fs::remove_file(fake.join("ssh")).expect("rm fake ssh");
    let mut c = ch_ssh();
    c.env("CH_RUN_ARGS", "/img").args(["node7", "true"]);
    let (code, err) = fails(&mut c);
    assert_eq!(code, 1);
    assert!(err.contains("error: can't execute ssh:"), "{err}");
    assert!(stdout_of(tool("ch-ssh").arg("--help")).contains("CH_RUN_ARGS"));
}

#[test]
fn user_must_be_set() {
    // Unset: the invoking uid's passwd name (srun --export=NONE).
    let mut c = in_bb(&[], "echo ran");
    c.env_remove("USER");
    assert_eq!(stdout_of(&mut c), "ran\n");
    // $USER names /home/$USER: it cannot climb out of /home.
    for bad in ["../../etc", "x/y", ".."] {
        let mut c = in_bb(&["--home"], "ls /etc");
        c.env("USER", bad);
        let (code, err) = fails(&mut c);
        assert_eq!(code, 31);
        assert!(err.contains("$USER not a valid user name"), "{err}");
    }
    // Where $USER names nothing, any value does, as in Charliecloud.
    let mut c = in_bb(&[], "echo ran");
    c.env("USER", "");
    assert_eq!(stdout_of(&mut c), "ran\n");
}

// ---- storage ----

#[test]
fn named_image_runs_from_storage_read_only() {
    let s = Scratch::new("run-name");
    let storage = s.storage();
    let img = writable_copy(&s);
    sh(&format!(
        "mkdir -p '{0}/img' && ln -s '{1}' '{0}/img/example.com+5050%foo+latest'",
        storage.display(),
        img.display()
    ));
    let mut c = ch_run();
    c.arg("-s")
        .arg(&storage)
        .args(["example.com:5050/foo:latest", "--", "cat", "/etc/motd"]);
    assert_eq!(stdout_of(&mut c), "grove busybox fixture\n");
    let mut c = ch_run();
    c.env("CH_IMAGE_STORAGE", &storage)
        .args(["example.com:5050/foo:latest", "--", "touch", "/x"]);
    assert!(!output(&mut c).status.success());
    let mut c = ch_run();
    c.arg("-w")
        .arg("-s")
        .arg(&storage)
        .args(["example.com:5050/foo:latest", "--", "true"]);
    let (_, err) = fails(&mut c);
    assert!(
        err.contains("--write invalid when running by name"),
        "{err}"
    );
    // A storage directory by path is refused.
    sh(&format!("mv '{0}/img/example.com+5050%foo+latest' /dev/null 2>/dev/null || rm '{0}/img/example.com+5050%foo+latest'; cp -a '{1}' '{0}/img/bar'", storage.display(), img.display()));
    let mut c = ch_run();
    c.arg("-s")
        .arg(&storage)
        .arg(storage.join("img/bar"))
        .args(["--", "true"]);
    let (_, err) = fails(&mut c);
    assert!(
        err.contains("can't run directory images from storage"),
        "{err}"
    );
}

// ---- seccomp and security ----

#[test]
fn seccomp_fakes_chown_setuid_setgroups_and_device_mknod() {
    let s = Scratch::new("run-sec");
    let img = writable_copy(&s);
    let script =
        "chown 1234:1234 /etc/motd && echo chown; mknod /dev/grove-x c 1 3 && echo mknod; \
                  su -s /bin/true nobody && echo su; mkfifo /fifo && test -p /fifo && echo fifo; \
                  test -e /dev/grove-x || echo nodev";
    let mut c = ch_run();
    c.args(["-w", "-u0", "-g0", "--seccomp"])
        .arg(&img)
        .args(["--", "sh", "-c", script]);
    assert_eq!(stdout_of(&mut c), "chown\nmknod\nsu\nfifo\nnodev\n");
    // The fake chown did nothing on the host.
    assert_eq!(
        std::fs::metadata(img.join("etc/motd")).expect("motd").uid(),
        invoker_uid()
    );
}

#[test]
fn without_seccomp_privileged_calls_fail() {
    let s = Scratch::new("run-nosec");
    let img = writable_copy(&s);
    let script = "chown 1234 /etc/motd 2>/dev/null || echo chown-fails; \
                  mknod /dev/grove-x c 1 3 2>/dev/null || echo mknod-fails; \
                  mknod /grove-x c 1 3 2>/dev/null || echo mknod-fails; \
                  su -s /bin/true nobody 2>/dev/null || echo su-fails";
    let mut c = ch_run();
    c.args(["-w", "-u0"])
        .arg(&img)
        .args(["--", "sh", "-c", script]);
    assert_eq!(
        stdout_of(&mut c),
        "chown-fails\nmknod-fails\nmknod-fails\nsu-fails\n"
    );
}

#[test]
fn no_new_privs_is_set_so_setuid_binaries_gain_nothing() {
    let out = stdout_of(&mut in_bb(&[], "grep NoNewPrivs /proc/self/status"));
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["NoNewPrivs:", "1"]
    );
    let s = Scratch::new("run-suid");
    let img = writable_copy(&s);
    sh(&format!(
        "mkdir '{0}/suid' && cp '{0}/bin/busybox' '{0}/suid/id' && chmod 4755 '{0}/suid/id'",
        img.display()
    ));
    let mut c = ch_run();
    c.arg("-w").arg(&img).args(["--", "/suid/id", "-u"]);
    assert_eq!(stdout_of(&mut c).trim(), invoker_uid().to_string());
}

#[test]
fn builder_invocation_writes_as_root_owned_by_invoker() {
    let s = Scratch::new("run-build");
    let img = writable_copy(&s);
    sh(&format!("mkdir -p '{0}/work'", img.display()));
    let envf = s.join("env");
    std::fs::write(&envf, "PATH=/bin:/usr/bin\nBUILD=1\n").expect("write");
    let ctx = s.join("ctx");
    std::fs::create_dir(&ctx).expect("mkdir");
    std::fs::write(ctx.join("input"), "ctx\n").expect("write");
    let mut c = ch_run();
    c.args([
        "-w",
        "-u0",
        "-g0",
        "--no-passwd",
        "--seccomp",
        "--cd",
        "/work",
        "--unset-env=*",
    ])
    .arg(format!("--set-env={}", envf.display()))
    .arg("-b")
    .arg(format!("{}:/ctx", ctx.display()))
    .arg(&img)
    .args([
        "--",
        "/bin/sh",
        "-c",
        "id -u; pwd; env | sort; cat /ctx/input > out; chown 99 out; mkdir -p /usr/local/x",
    ]);
    let out = stdout_of(&mut c);
    assert_eq!(
        out,
        "0\n/work\nBUILD=1\nCH_RUNNING=Weird Al Yankovic\nPATH=/bin:/usr/bin\nPWD=/work\nSHLVL=1\n"
    );
    let md = std::fs::metadata(img.join("work/out")).expect("out");
    assert_eq!(md.uid(), invoker_uid());
    assert_eq!(
        std::fs::read_to_string(img.join("work/out")).expect("read"),
        "ctx\n"
    );
    assert!(img.join("usr/local/x").is_dir());
    // The bind's mount point was created in the image (empty there on the host).
    assert!(img.join("ctx").is_dir());
}

// ---- join ----

#[test]
fn join_pid_enters_existing_container() {
    // The first container lives until the test ends it (a fixed `sleep 10` was a bound
    // on how long the second ch-run may take to start on a loaded machine).
    let mut first = Reaped(
        in_bb(
            &["-t"],
            "echo here > /tmp/marker; echo ready; exec sleep 600",
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn"),
    );
    let mut out = first.0.stdout.take().expect("stdout");
    let mut buf = [0u8; 6];
    std::io::Read::read_exact(&mut out, &mut buf).expect("ready");
    let pid = first.0.id();
    let got = output(&mut in_bb(
        &[&format!("--join-pid={pid}")],
        "cat /tmp/marker",
    ));
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = first.0.wait();
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        "here\n",
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
}

#[test]
fn join_pid_errors_say_what_is_wrong_with_the_pid() {
    // A PID that does not exist (pid_max is at most 2^22).
    let (code, err) = fails(&mut in_bb(&["--join-pid=4194305"], "true"));
    assert_eq!(code, 31);
    assert!(
        err.contains("error: join: no PID 4194305: /proc/4194305/ns/user not found"),
        "{err}"
    );
    // A process of the invoker that is not in a container.
    // setpriv execs sleep, so the pid is the sleep's.
    let sleeper = unpriv_sleeper(30);
    let (_, err) = fails(&mut in_bb(
        &[&format!("--join-pid={}", sleeper.0.id())],
        "true",
    ));
    assert!(
        err.contains(&format!(
            "error: join: PID {} is not in a container (its user namespace is ours)",
            sleeper.0.id()
        )),
        "{err}"
    );
}

/// A state file naming a PID that a host process reused is stale: the next peer wins.
#[test]
fn join_state_naming_a_host_process_is_stale() {
    let tag = format!("grove-stale-{}", std::process::id());
    let state = PathBuf::from(format!("/dev/shm/ch-run_shm-{tag}"));
    if !Path::new("/dev/shm").is_dir() {
        return skip("no /dev/shm");
    }
    // setpriv execs sleep, so the pid is the sleep's: a live process not in a container.
    let host = unpriv_sleeper(30);
    sh(&format!("echo '{} 1' > '{}'", host.0.id(), state.display()));
    let out = output(&mut in_bb(
        &["--join-ct=2", &format!("--join-tag={tag}")],
        "echo won",
    ));
    let _ = std::fs::remove_file(&state);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "won\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());
}

#[test]
fn join_peers_share_one_container() {
    let tag = format!("grove-test-{}", std::process::id());
    // Each peer writes its marker in the (private, hence shared only if joined) /tmp and
    // waits for the other's, for at most 120 s: a bound on a hang, not on how fast the
    // second peer starts on a loaded machine (10 s before).
    let script = |me: &str, other: &str| {
        format!("touch /tmp/{me}; i=0; while [ ! -e /tmp/{other} ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done; test -e /tmp/{other} && echo joined-{me}")
    };
    let spawn = |me: &str, other: &str| {
        in_bb(
            &["-t", "--join-ct=2", &format!("--join-tag={tag}")],
            &script(me, other),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
    };
    let a = spawn("a", "b");
    let b = spawn("b", "a");
    let oa = a.wait_with_output().expect("a");
    let ob = b.wait_with_output().expect("b");
    assert_eq!(
        String::from_utf8_lossy(&oa.stdout),
        "joined-a\n",
        "{}",
        String::from_utf8_lossy(&oa.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&ob.stdout),
        "joined-b\n",
        "{}",
        String::from_utf8_lossy(&ob.stderr)
    );
}

#[test]
fn join_without_peer_count_is_an_error() {
    let mut c = in_bb(&["-j"], "true");
    for v in [
        "OMPI_COMM_WORLD_LOCAL_SIZE",
        "SLURM_STEP_TASKS_PER_NODE",
        "SLURM_CPUS_ON_NODE",
    ] {
        c.env_remove(v);
    }
    let (_, err) = fails(&mut c);
    assert!(
        err.contains("join: no valid peer group size found"),
        "{err}"
    );
}

// ---- SquashFS ----

pub(crate) fn squash_image(s: &Scratch) -> Option<PathBuf> {
    if Command::new("mksquashfs").arg("-version").output().is_err() {
        skip("mksquashfs not installed");
        return None;
    }
    if !Path::new("/usr/bin/squashfuse_ll").exists()
        && !output(ch_run().arg("--feature=squash")).status.success()
    {
        skip("squashfuse_ll not installed");
        return None;
    }
    if is_root() {
        // Setup only: let the unprivileged test user open /dev/fuse.
        let _ = Command::new("chmod").args(["0666", "/dev/fuse"]).status();
    }
    let Ok(md) = std::fs::metadata("/dev/fuse") else {
        skip("/dev/fuse missing");
        return None;
    };
    if md.mode() & 0o006 != 0o006 && !is_root() {
        skip("/dev/fuse not accessible to the test user");
        return None;
    }
    Some(mksquashfs(s, &busybox_rootfs(), "img.sqfs"))
}

/// An empty directory for `ch-run -m`, made by the test user.
pub(crate) fn mount_point(s: &Scratch) -> PathBuf {
    let mnt = s.join("mnt");
    sh(&format!("mkdir '{}'", mnt.display()));
    mnt
}

/// `mksquashfs SRC` into the scratch directory as NAME.
fn mksquashfs(s: &Scratch, src: &Path, name: &str) -> PathBuf {
    let sq = s.join(name);
    sh(&format!(
        "mksquashfs '{}' '{}' -quiet -noappend -no-progress >/dev/null",
        src.display(),
        sq.display()
    ));
    sq
}

/// A mount point that would hide the image or the generated passwd files is refused at
/// once (the daemon would otherwise wait on its own unserved mount forever).
#[test]
fn squashfs_mount_point_hiding_the_image_or_tmpdir_is_refused() {
    let s = Scratch::new("run-sqmnt");
    let Some(sq) = squash_image(&s) else { return };
    let mnt = mount_point(&s);
    let inner = mnt.join("img");
    sh(&format!(
        "mkdir '{0}' && cp '{1}' '{0}/'",
        inner.display(),
        sq.display()
    ));
    let mut c = ch_run();
    c.arg("-m")
        .arg(&mnt)
        .arg(inner.join(sq.file_name().expect("name")));
    c.args(["--", "true"]);
    // A mount over the image would hang (the daemon waiting on its own mount): the
    // limit catches that, it claims no duration.
    let err = crate::registry::fails_within(&mut c, Duration::from_secs(120));
    assert!(
        err.contains("contains the image; choose a mount point outside it"),
        "{err}"
    );
    let mut c = ch_run();
    c.env("TMPDIR", &mnt)
        .arg("-m")
        .arg(&mnt)
        .arg(&sq)
        .args(["--", "true"]);
    let (_, err) = fails(&mut c);
    assert!(err.contains("would hide $TMPDIR"), "{err}");
    // Nothing was left in it.
    let left: Vec<_> = std::fs::read_dir(&mnt)
        .expect("ls mount point")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("img")]);
    let mut c = ch_run();
    c.arg("-m").arg(&sq).arg(&sq).args(["--", "true"]);
    let (_, err) = fails(&mut c);
    assert!(err.contains("mount point not a directory: "), "{err}");
}

/// --join on a SquashFS image: the winner keeps the mount served until the peers are done,
/// even when its own command ends first.
#[test]
fn squashfs_join_peers_keep_the_image_until_the_last_ends() {
    let s = Scratch::new("run-sqjoin");
    let Some(sq) = squash_image(&s) else { return };
    let tag = format!("grove-sqjoin-{}", std::process::id());
    let mnt = mount_point(&s);
    let sync = s.join("sync");
    sh(&format!("mkdir '{}'", sync.display()));
    let peer = |script: &str| {
        let mut c = ch_run();
        c.args(["--join-ct=2", &format!("--join-tag={tag}")])
            .arg("-b")
            .arg(format!("{}:/mnt", sync.display()))
            .arg("-m")
            .arg(&mnt)
            .arg(&sq)
            .args(["--", "/bin/sh", "-c", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Reaped(c.spawn().expect("spawn peer"))
    };
    // The first command publishes its PID and ends; the second reads the image only once
    // that process is gone (no PID namespace: the PID is the host's).
    let mut first = peer("echo $$ > /mnt/pid.tmp && mv /mnt/pid.tmp /mnt/pid; echo first");
    let mut second = peer(
        "i=0; while [ ! -e /mnt/pid ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done; \
         p=$(cat /mnt/pid); while kill -0 $p 2>/dev/null && [ $i -lt 2400 ]; do sleep 0.05; \
         i=$((i+1)); done; kill -0 $p 2>/dev/null && echo first still running; cat /etc/motd",
    );
    let read = |c: &mut Reaped| {
        let (mut out, mut err) = (String::new(), String::new());
        std::io::Read::read_to_string(&mut c.0.stdout.take().expect("stdout"), &mut out)
            .expect("read stdout");
        std::io::Read::read_to_string(&mut c.0.stderr.take().expect("stderr"), &mut err)
            .expect("read stderr");
        (c.0.wait().expect("wait"), out, err)
    };
    let (st, out, err) = read(&mut first);
    assert!(st.success(), "{err}");
    assert_eq!(out, "first\n");
    let (st, out, err) = read(&mut second);
    assert_eq!(out, "grove busybox fixture\n", "{err}");
    assert!(st.success(), "{err}");
}

/// A SquashFS winner whose peers never come (a batch script's `ch-run --join` outside
/// `srun`, the count taken from `SLURM_CPUS_ON_NODE`) returns when its command ends, not
/// after the group's timeout (60 s): with no peer in the container it closes the group,
/// and a peer that comes later runs in a container of its own.
#[test]
fn squashfs_join_winner_without_peers_returns_when_its_command_ends() {
    let s = Scratch::new("run-sqjoin1");
    let Some(sq) = squash_image(&s) else { return };
    let tag = format!("grove-sqjoin1-{}", std::process::id());
    let mnt = mount_point(&s);
    let run = || {
        let mut c = ch_run();
        c.args(["-v", "--join-ct=2", &format!("--join-tag={tag}")])
            .arg("-m")
            .arg(&mnt)
            .arg(&sq)
            .args(["--", "cat", "/etc/motd"])
            .env("CH_RUN_JOIN_TIMEOUT", "600");
        let out = crate::registry::output_within(&mut c, Duration::from_secs(60))
            .unwrap_or_else(|| panic!("still running after 60 s: {c:?}"));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "grove busybox fixture\n"
        );
        err
    };
    let first = run();
    assert!(first.contains("join: I won"), "{first}");
    assert!(first.contains("join: closing the group"), "{first}");
    let state = PathBuf::from(format!("/dev/shm/ch-run_shm-{tag}"));
    assert!(
        !state.exists(),
        "state file left behind: {}",
        state.display()
    );
    let second = run();
    assert!(second.contains("join: I won"), "{second}");
}

/// An image file its user can't read says so (as Charliecloud 0.38: "can't open: IMG:
/// Permission denied"), not "unknown image type", which sent a batch job's user looking
/// at the file's format; a FIFO is no image and does not block ch-run.
#[test]
fn squashfs_image_the_user_cant_read_says_cant_open() {
    let s = Scratch::new("run-sqperm");
    let Some(sq) = squash_image(&s) else { return };
    sh(&format!("chmod 0 '{}'", sq.display()));
    let mut c = ch_run();
    c.arg(&sq).args(["--", "true"]);
    let (code, err) = fails(&mut c);
    assert_eq!(code, 31, "{err}");
    assert!(
        err.contains(&format!(
            "error: can't open: {}: Permission denied",
            sq.display()
        )),
        "{err}"
    );
    let fifo = s.join("fifo.sqfs");
    sh(&format!("mkfifo '{}'", fifo.display()));
    let mut c = ch_run();
    c.arg(&fifo).args(["--", "true"]);
    let err = crate::registry::fails_within(&mut c, Duration::from_secs(60));
    assert!(err.contains("unknown image type: "), "{err}");
}

/// `--join-pid` of a SquashFS image's squashfuse_ll (found by `pgrep -f IMG`, like
/// ch-run) is refused: it runs in the namespace made to mount the image, before the
/// container pivots, so joining it ran the command on the host's files as namespace root
/// (exit 0). ch-run's own PID joins the container.
#[test]
fn squashfs_join_pid_of_the_daemon_is_refused() {
    let s = Scratch::new("run-sqjpid");
    let Some(sq) = squash_image(&s) else { return };
    let mut c = ch_run();
    c.arg(&sq)
        .args(["--", "sleep", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let run = Reaped(c.spawn().expect("spawn ch-run"));
    let ch_run_pid = run.0.id();
    let daemon_of = || {
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // PID (COMM) STATE PPID ...
            let (comm, rest) = stat.split_once(") ")?;
            let ppid: u32 = rest.split(' ').nth(1)?.parse().ok()?;
            (comm.ends_with("(squashfuse_ll") && ppid == ch_run_pid)
                .then(|| e.file_name().to_string_lossy().into_owned())
        })
    };
    let mut daemon = None;
    crate::common::wait_for("the image's squashfuse_ll to start", 30, || {
        daemon = daemon_of();
        daemon.is_some()
    });
    let daemon = daemon.expect("daemon");
    let mut c = ch_run();
    c.arg(format!("--join-pid={daemon}"))
        .arg(&sq)
        .args(["--", "cat", "/etc/motd"]);
    let (code, err) = fails(&mut c);
    assert_eq!(code, 31, "{err}");
    assert!(
        err.contains(&format!(
            "error: join: PID {daemon} is not in a container (its root directory is the host's)"
        )),
        "{err}"
    );
    let mut c = ch_run();
    c.arg(format!("--join-pid={ch_run_pid}"))
        .arg(&sq)
        .args(["--", "cat", "/etc/motd"]);
    assert_eq!(stdout_of(&mut c), "grove busybox fixture\n");
}

#[test]
fn squashfs_image_runs_and_unmounts() {
    let s = Scratch::new("run-sq");
    let Some(sq) = squash_image(&s) else { return };
    let mnt = mount_point(&s);
    let mut c = ch_run();
    c.arg("-m").arg(&mnt).arg(&sq).args([
        "--",
        "sh",
        "-c",
        "cat /etc/motd; touch /x 2>/dev/null || echo ro",
    ]);
    assert_eq!(stdout_of(&mut c), "grove busybox fixture\nro\n");
    let mut c = ch_run();
    c.arg("-W")
        .arg(&sq)
        .args(["--", "sh", "-c", "echo w > /x && cat /x"]);
    assert_eq!(stdout_of(&mut c), "w\n");
    // The mount lived only in the container's namespace.
    assert_eq!(std::fs::read_dir(&mnt).expect("mnt").count(), 0);
    // No squashfuse_ll daemon left behind for this image.
    let ps = String::from_utf8_lossy(
        &Command::new("ps")
            .args(["-eo", "args"])
            .output()
            .expect("ps")
            .stdout,
    )
    .into_owned();
    assert!(
        !ps.lines()
            .any(|l| l.contains("squashfuse_ll") && l.contains(&*sq.to_string_lossy())),
        "{ps}"
    );
}

/// The archive's files, root's as mksquashfs writes them, are the container user's (as a
/// directory image unpacked by the user is), whatever `--uid`/`--gid`: the FUSE mount is
/// made in a user namespace where the invoking user is root and the container nests in
/// it, as in Charliecloud 0.38. So `-W` writes into image directories. Before, root was
/// unmapped and every file nobody's (65534, which only happens to be the test user).
#[test]
fn squashfs_files_are_the_container_users_and_w_writes_image_directories() {
    let s = Scratch::new("run-sqown");
    let Some(sq) = squash_image(&s) else { return };
    let mut c = ch_run();
    c.args(["--uid", "5", "--gid", "6"]).arg(&sq).args([
        "--",
        "stat",
        "-c",
        "%u %g",
        "/bin",
        "/etc/motd",
    ]);
    assert_eq!(stdout_of(&mut c), "5 6\n5 6\n");
    let mut c = ch_run();
    c.args(["--uid", "0"])
        .arg(&sq)
        .args(["--", "stat", "-c", "%u", "/"]);
    assert_eq!(stdout_of(&mut c), "0\n");
    let mut c = ch_run();
    c.args(["--uid", "5", "-W"])
        .arg(&sq)
        .args(["--", "sh", "-c", "echo w > /bin/x && cat /bin/x"]);
    assert_eq!(stdout_of(&mut c), "w\n");
}

#[test]
fn squashfs_commands_of_every_kind_start() {
    // ch-run reads the command (and its interpreter) ahead of execve on SquashFS images;
    // whatever the command is, that must neither change what runs nor hang.
    let s = Scratch::new("run-sqwarm");
    if squash_image(&s).is_none() {
        return;
    }
    let src = writable_copy(&s);
    sh(&format!(
        "set -e; cd '{0}'; mkdir -p opt/tools
         printf '#!/bin/sh -e\\necho script \"$@\"\\n' > opt/tools/hello; chmod 755 opt/tools/hello
         printf '#!/opt/tools/hello from-shebang\\n' > opt/tools/nested; chmod 755 opt/tools/nested
         mkfifo opt/tools/fifo; chmod 755 opt/tools/fifo
         {{ printf '#!/bin/sh\\necho big\\nexit 0\\n'; head -c 20000000 /dev/zero; }} > opt/tools/big
         chmod 755 opt/tools/big
         ln -s /opt/tools/hello bin/hello-link",
        src.display()
    ));
    let sq = mksquashfs(&s, &src, "tools.sqfs");
    let mnt = mount_point(&s);
    let run = |args: &[&str]| {
        let mut c = ch_run();
        c.arg("-m").arg(&mnt).arg(&sq).arg("--").args(args);
        c
    };
    // Found through $PATH (--set-env), by absolute path, through an absolute symlink,
    // and a script whose interpreter is itself a script.
    let mut c2 = ch_run();
    c2.arg("-m")
        .arg(&mnt)
        .arg("--set-env=PATH=/nonexistent:/opt/tools:/bin")
        .arg(&sq)
        .args(["--", "hello", "a"]);
    assert_eq!(stdout_of(&mut c2), "script a\n");
    assert_eq!(stdout_of(&mut run(&["/bin/hello-link", "b"])), "script b\n");
    assert_eq!(
        stdout_of(&mut run(&["/opt/tools/nested", "c"])),
        "script from-shebang /opt/tools/nested c\n"
    );
    // A file too big to read ahead runs; a FIFO fails as usual, promptly.
    assert_eq!(stdout_of(&mut run(&["/opt/tools/big"])), "big\n");
    // Reading a FIFO ahead would block for ever: the limit catches a hang, nothing more.
    let out =
        crate::registry::output_within(&mut run(&["/opt/tools/fifo"]), Duration::from_secs(120))
            .expect("running a FIFO hung");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(49), "{err}");
    assert!(err.contains("can't execve(2): /opt/tools/fifo"), "{err}");
}

#[test]
fn squashfs_command_killed_by_signal_exits_128_plus_signal() {
    let s = Scratch::new("run-sqsig");
    let Some(sq) = squash_image(&s) else { return };
    let mnt = mount_point(&s);
    for (sig, code) in [("TERM", 143), ("KILL", 137)] {
        let mut c = ch_run();
        c.arg("-m")
            .arg(&mnt)
            .arg(&sq)
            .args(["--", "sh", "-c", &format!("kill -{sig} $$")]);
        assert_eq!(output(&mut c).status.code(), Some(code), "{sig}");
    }
}

#[test]
fn squashfs_command_and_daemon_die_with_a_killed_ch_run() {
    let s = Scratch::new("run-sqkill");
    let Some(sq) = squash_image(&s) else { return };
    let mnt = mount_point(&s);
    let mut child = ch_run()
        .arg("-m")
        .arg(&mnt)
        .arg(&sq)
        .args(["--", "sh", "-c", "echo ready; sleep 300; exit 0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = child.stdout.take().expect("stdout");
    let mut buf = [0u8; 6];
    std::io::Read::read_exact(&mut out, &mut buf).expect("ready");
    // setpriv execs ch-run, so the spawned pid is ch-run's; its children are the daemon
    // and the command.
    let pid = child.id();
    let kids: Vec<i32> = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .expect("children")
        .split_whitespace()
        .map(|p| p.parse().expect("pid"))
        .collect();
    /// Kills what is left if the test fails half-way.
    struct Reap(Vec<i32>);
    impl Drop for Reap {
        fn drop(&mut self) {
            for p in &self.0 {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    let _reap = Reap(kids.clone());
    assert_eq!(kids.len(), 2, "{kids:?}");
    // Alive: in /proc and not a zombie.
    let alive = |p: i32| {
        std::fs::read_to_string(format!("/proc/{p}/stat"))
            .map(|st| {
                !st.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(false)
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    let _ = child.wait();
    let t0 = Instant::now();
    // 60 s: a bound on a hang, the daemon unmounting on a loaded machine.
    while kids.iter().any(|&p| alive(p)) && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left: Vec<i32> = kids.iter().copied().filter(|&p| alive(p)).collect();
    assert!(
        left.is_empty(),
        "left behind after ch-run was killed: {left:?}"
    );
}

#[test]
fn squashfs_without_fuse_or_squashfuse_says_why_and_suggests_a_directory() {
    let s = Scratch::new("run-sqnofuse");
    let Some(sq) = squash_image(&s) else { return };
    let mnt = mount_point(&s);
    let ch_run_bin = crate::common::bin("ch-run");
    // No /dev/fuse: hide it under an empty /dev in a namespace of the test user's own
    // (ch-run then nests its namespace inside; uid 0 there is the test user).
    let mut c = crate::common::unpriv("unshare");
    c.args([
        "-Urm",
        "sh",
        "-c",
        "mount -t tmpfs none /dev && exec \"$0\" \"$@\"",
    ])
    .arg(&ch_run_bin)
    .arg("-m")
    .arg(&mnt)
    .arg(&sq)
    .args(["--", "true"]);
    let (code, err) = fails(&mut c);
    assert_eq!(code, 31, "{err}");
    assert!(
        err.contains("can't open /dev/fuse: No such file or directory"),
        "{err}"
    );
    assert!(err.contains("SquashFS images need FUSE"), "{err}");
    assert!(err.contains("ch-convert"), "{err}");
    // /dev/fuse that is not FUSE: the mount itself fails, with the same advice.
    let mut c = crate::common::unpriv("unshare");
    c.args([
        "-Urm",
        "sh",
        "-c",
        "mount --bind /dev/null /dev/fuse && exec \"$0\" \"$@\"",
    ])
    .arg(&ch_run_bin)
    .arg("-m")
    .arg(&mnt)
    .arg(&sq)
    .args(["--", "true"]);
    let (code, err) = fails(&mut c);
    assert_eq!(code, 31, "{err}");
    assert!(err.contains("can't mount FUSE at"), "{err}");
    assert!(err.contains("ch-convert"), "{err}");
    // Before: "this kernel or system does not let unprivileged users mount FUSE".
    assert!(err.contains("/dev/fuse is not the FUSE device"), "{err}");
    // No squashfuse_ll on $PATH.
    let mut c = crate::common::unpriv("env");
    c.arg("PATH=/nonexistent")
        .arg(&ch_run_bin)
        .arg("-m")
        .arg(&mnt)
        .arg(&sq)
        .args(["--", "true"]);
    let (code, err) = fails(&mut c);
    assert_eq!(code, 31, "{err}");
    assert!(err.contains("can't start squashfuse_ll"), "{err}");
    assert!(err.contains("install squashfuse"), "{err}");
}

#[test]
fn squashfs_daemon_dying_early_exits_84() {
    let s = Scratch::new("run-sqdie");
    let Some(sq) = squash_image(&s) else { return };
    let mnt = mount_point(&s);
    // Kill our own daemon: the other child of ch-run (this shell's parent).
    let mut c = ch_run();
    c.arg("-m").arg(&mnt).arg(&sq).args([
        "--",
        "/bin/sh",
        "-c",
        "for p in $(cat /proc/$PPID/task/$PPID/children); do [ $p != $$ ] && kill -KILL $p && \
         while read -r a b c rest < /proc/$p/stat && [ \"$c\" != Z ]; do :; done; done; exit 0",
    ]);
    let out = output(&mut c);
    assert_eq!(
        out.status.code(),
        Some(84),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("squashfuse_ll exited before the command")
    );
}

#[test]
fn corrupt_squashfs_fails_cleanly() {
    let s = Scratch::new("run-sqbad");
    if squash_image(&s).is_none() {
        return;
    }
    let bad = s.join("bad.sqfs");
    std::fs::write(&bad, "hsqs-not-really").expect("write");
    let mnt = mount_point(&s);
    let mut c = ch_run();
    c.arg("-m").arg(&mnt).arg(&bad).args(["--", "true"]);
    let (code, err) = fails(&mut c);
    assert_eq!(code, 31);
    assert!(err.contains("Transport endpoint is not connected"), "{err}");
}

#[test]
fn unknown_image_type_is_an_error() {
    let s = Scratch::new("run-unk");
    let f = s.join("notimage");
    std::fs::write(&f, "junk").expect("write");
    let mut c = ch_run();
    c.arg(&f).args(["--", "true"]);
    let (code, err) = fails(&mut c);
    assert_eq!(code, 31);
    assert!(err.contains("unknown image type"), "{err}");
}

#[test]
fn layer_union_run_writes_into_upper_only() {
    // The builder's RUN mode: --lower (top first) + --upper/--work on a scratch mount point.
    let s = Scratch::new("run-layers");
    sh(&format!(
        "cd '{0}' && mkdir -p top/etc upper work merged && echo top > top/etc/top",
        s.path.display()
    ));
    let mut c = ch_run();
    c.args([
        "-w",
        "-u0",
        "-g0",
        "--no-passwd",
        "--seccomp",
        "--unset-env=*",
    ])
    .arg(format!("--lower={}", s.join("top").display()))
    .arg(format!("--lower={}", busybox_rootfs().display()))
    .arg(format!("--upper={}", s.join("upper").display()))
    .arg(format!("--work={}", s.join("work").display()))
    .arg(s.join("merged"))
    .args([
        "--",
        "/bin/sh",
        "-c",
        "cat /etc/top /etc/motd; echo new > /made; chown 5 /made; id -u",
    ]);
    assert_eq!(stdout_of(&mut c), "top\ngrove busybox fixture\n0\n");
    let made = s.join("upper/made");
    assert_eq!(
        std::fs::read_to_string(&made).expect("made in upper"),
        "new\n"
    );
    assert_eq!(std::fs::metadata(&made).expect("made").uid(), invoker_uid());
    assert!(!busybox_rootfs().join("made").exists());
    assert_eq!(
        std::fs::read_dir(s.join("merged")).expect("merged").count(),
        0
    );
}

/// A compute node whose /tmp (here TMPDIR) can't be written: the
/// container's /etc/passwd and /etc/group are made in /dev/shm. Before: "can't create
/// temporary file: …/ch-run_passwd…" and no container (Charliecloud 0.31: "please report
/// this bug").
#[test]
fn an_unwritable_tmpdir_still_gives_a_container_with_its_user() {
    let s = Scratch::new("run-rotmp");
    let tmp = s.join("tmp");
    sh(&format!("mkdir '{0}' && chmod 555 '{0}'", tmp.display()));
    // The container says which files its /etc/passwd and /etc/group are (the mounts'
    // roots in mountinfo): this run's own, not whatever other tests' ch-runs have in
    // /dev/shm at the time (counting every ch-run_passwd.* there was a race).
    let mut c = in_bb(
        &[],
        "id -un; grep -c . /etc/passwd; \
         grep -E ' /etc/(passwd|group) ' /proc/self/mountinfo | cut -d' ' -f3,4",
    );
    c.env("TMPDIR", &tmp);
    let out = stdout_of(&mut c);
    let mut lines = out.lines();
    assert!(lines.next().is_some_and(|u| !u.is_empty()), "{out}");
    assert_eq!(lines.next(), Some("2"), "root and the user: {out}");
    let shm = sh("stat -c '%Hd:%Ld' /dev/shm");
    let shm_dev = String::from_utf8_lossy(&shm.stdout).trim().to_string();
    let files: Vec<(&str, &str)> = lines.filter_map(|l| l.split_once(' ')).collect();
    assert_eq!(files.len(), 2, "/etc/passwd and /etc/group mounts: {out}");
    for (dev, root) in files {
        assert_eq!(dev, shm_dev, "not made in /dev/shm: {out}");
        let name = root.trim_end_matches("//deleted");
        assert!(
            name.starts_with("/ch-run_passwd.") || name.starts_with("/ch-run_group."),
            "{out}"
        );
        let path = format!("/dev/shm{name}");
        assert!(!Path::new(&path).exists(), "temporary file left: {path}");
    }
}
