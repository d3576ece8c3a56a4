//! ch-run under a batch system, simulated with the launcher's environment variables (no
//! Slurm daemons): job-scoped `--join` groups, per-node peer counts, `scancel`'s signal and
//! `srun --export=NONE`'s empty environment (docs/hpc.md).

use crate::common::*;
use crate::run::{mount_point, squash_image};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Launcher variables of the test's own environment (a test run under Slurm or mpirun)
/// that would change the defaults.
const LAUNCHER_VARS: [&str; 10] = [
    "SLURM_JOB_ID",
    "SLURM_STEP_ID",
    "SLURM_NODEID",
    "SLURM_STEP_TASKS_PER_NODE",
    "SLURM_CPUS_ON_NODE",
    "OMPI_COMM_WORLD_LOCAL_SIZE",
    "OMPI_MCA_ess_base_jobid",
    "PMIX_NAMESPACE",
    "CH_RUN_JOIN_TIMEOUT",
    "TMPDIR",
];

/// ch-run with a clean launcher environment plus `vars`.
fn ch_run_with(vars: &[(&str, &str)]) -> Command {
    let mut c = tool("ch-run");
    for v in LAUNCHER_VARS {
        c.env_remove(v);
    }
    for (k, v) in vars {
        c.env(k, v);
    }
    c
}

/// A copy of the busybox image whose /etc/motd says `motd`.
fn other_image(s: &Scratch, motd: &str) -> PathBuf {
    let img = s.join("other");
    sh(&format!(
        "cp -a '{}' '{}' && chmod u+w '{}/etc' && echo '{motd}' > '{}/etc/motd'",
        busybox_rootfs().display(),
        img.display(),
        img.display(),
        img.display()
    ));
    img
}

/// Start a `--join` winner printing `ready` once its container is published, then
/// sleeping; returns it once it has printed. The winners sleep until the test ends them
/// (killed with the returned value): a winner of `sleep 6` was gone when a peer came
/// more than 4 s after the 2 s a test waits, on a loaded machine, and that peer won.
fn winner(mut c: Command) -> Reaped {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn winner");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read winner");
    let child = Reaped(child);
    assert_eq!(line, "ready\n", "winner did not start");
    child
}

/// Remove a group's state file left by a killed winner.
fn forget_tag(tag: &str) {
    for d in ["/dev/shm", "/tmp"] {
        let _ = std::fs::remove_file(Path::new(d).join(format!("ch-run_shm-{tag}")));
    }
}

/// The default tag is the job id with the step id, and the count the entry of
/// `SLURM_STEP_TASKS_PER_NODE` for this node (`2(x3),1` on node 3 is 1).
#[test]
fn slurm_default_tag_is_job_and_step_and_count_is_this_nodes() {
    let job = format!("9{}", std::process::id());
    let out = output(
        ch_run_with(&[
            ("SLURM_JOB_ID", &job),
            ("SLURM_STEP_ID", "0"),
            ("SLURM_STEP_TASKS_PER_NODE", "2(x3),1"),
            ("SLURM_NODEID", "3"),
        ])
        .args(["-v", "--join"])
        .arg(busybox_rootfs())
        .args(["--", "true"]),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&format!("join: 1 1 {job}.0 0")), "{err}");
    assert!(
        err.contains("join: peer group tag from SLURM_JOB_ID and SLURM_STEP_ID"),
        "{err}"
    );
    // A node past the end of the list is an error naming the list.
    let (code, err) = fails(
        ch_run_with(&[
            ("SLURM_JOB_ID", &job),
            ("SLURM_STEP_ID", "1"),
            ("SLURM_STEP_TASKS_PER_NODE", "2(x3),1"),
            ("SLURM_NODEID", "4"),
        ])
        .arg("--join")
        .arg(busybox_rootfs())
        .args(["--", "true"]),
    );
    assert_eq!(code, 31, "{err}");
    assert!(
        err.contains("SLURM_STEP_TASKS_PER_NODE=\"2(x3),1\": no entry for node 4"),
        "{err}"
    );
}

/// Every separate `srun` is step 0: two jobs on one node, each with its own image, must
/// each get their own container.
#[test]
fn two_slurm_jobs_with_the_same_step_never_share_a_container() {
    let s = Scratch::new("join-jobs");
    let other = other_image(&s, "job b");
    let base = std::process::id();
    let job = |id: u32| {
        let id = id.to_string();
        let mut c = ch_run_with(&[
            ("SLURM_JOB_ID", &id),
            ("SLURM_STEP_ID", "0"),
            ("SLURM_STEP_TASKS_PER_NODE", "2"),
            ("SLURM_NODEID", "0"),
        ]);
        c.arg("--join");
        c
    };
    let mut a = job(base * 10 + 1);
    a.arg(busybox_rootfs())
        .args(["--", "sh", "-c", "echo ready; exec sleep 600"]);
    let _a = winner(a);
    let out = ok(job(base * 10 + 2)
        .arg(&other)
        .args(["--", "cat", "/etc/motd"]));
    assert_eq!(out, "job b\n");
    forget_tag(&format!("{}.0", base * 10 + 1));
    forget_tag(&format!("{}.0", base * 10 + 2));
}

/// A peer given the same tag but another image, or other container options, refuses to
/// join, naming what differs.
#[test]
fn a_peer_refuses_a_winner_running_another_image_or_other_options() {
    let s = Scratch::new("join-refuse");
    let other = other_image(&s, "other");
    let tag = format!("grove-refuse-{}", std::process::id());
    let peer = || {
        let mut c = ch_run_with(&[]);
        c.args(["--join-ct=3", &format!("--join-tag={tag}")]);
        c
    };
    let mut w = peer();
    w.arg(busybox_rootfs())
        .args(["--", "sh", "-c", "echo ready; exec sleep 600"]);
    let _w = winner(w);
    let (code, err) = fails(peer().arg(&other).args(["--", "true"]));
    assert_eq!(code, 31, "{err}");
    let want = format!(
        "runs image {}, not {}",
        busybox_rootfs().canonicalize().expect("image").display(),
        other.canonicalize().expect("image").display()
    );
    assert!(err.contains(&want), "{err}");
    let (code, err) = fails(
        peer()
            .arg("--private-tmp")
            .arg(busybox_rootfs())
            .args(["--", "true"]),
    );
    assert_eq!(code, 31, "{err}");
    assert!(err.contains("with different options"), "{err}");
    // The same image and options still join.
    ok(peer().arg(busybox_rootfs()).args(["--", "true"]));
    forget_tag(&tag);
}

/// A peer arriving after the group's timeout is refused with the expected and found
/// counts, instead of joining a group that may belong to another job.
#[test]
fn a_late_peer_times_out_naming_expected_and_found_counts() {
    let tag = format!("grove-late-{}", std::process::id());
    let peer = || {
        let mut c = ch_run_with(&[("CH_RUN_JOIN_TIMEOUT", "1")]);
        c.args(["--join-ct=3", &format!("--join-tag={tag}")])
            .arg(busybox_rootfs());
        c
    };
    let mut w = peer();
    w.args(["--", "sh", "-c", "echo ready; exec sleep 600"]);
    let _w = winner(w);
    // The group times out once two whole seconds have passed since the start its state
    // file records (the timeout is 1 s, compared in whole seconds).
    let started: u64 = ["/dev/shm", "/tmp"]
        .iter()
        .find_map(|d| std::fs::read_to_string(Path::new(d).join(format!("ch-run_shm-{tag}"))).ok())
        .expect("read state file")
        .split(' ')
        .nth(2)
        .and_then(|t| t.parse().ok())
        .expect("start time in the state file");
    wait_for("the group's timeout", 60, || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        now >= started + 2
    });
    let (code, err) = fails(peer().args(["--", "true"]));
    assert_eq!(code, 31, "{err}");
    assert!(
        err.contains(&format!(
            "peer group {tag} timed out: expected 3 peers, found 1"
        )),
        "{err}"
    );
    forget_tag(&tag);
}

/// `scancel` sends SIGTERM to every process of the step: ch-run's process group and the
/// SquashFS daemon (its own group). The job ends with the command's status, 143, not
/// with a lost filesystem (84).
#[test]
fn squashfs_scancel_gives_the_commands_signal_status() {
    let s = Scratch::new("join-scancel");
    let Some(sq) = squash_image(&s) else { return };
    let mnt = mount_point(&s);
    let mut c = ch_run_with(&[]);
    c.arg("-m")
        .arg(&mnt)
        .arg(&sq)
        .args(["--", "sleep", "300"])
        .stderr(Stdio::piped());
    // Its own process group, as srun gives each task.
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    let mut child = Reaped(c.spawn().expect("spawn"));
    // setpriv execs ch-run: the spawned PID is ch-run's. Wait for the command to be
    // `sleep` and find the daemon.
    let pid = child.0.id() as i32;
    let comm = |p: i32| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
    let t0 = Instant::now();
    let (daemon, cmd) = loop {
        let kids: Vec<i32> = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        let d = kids.iter().find(|&&k| comm(k).trim() == "squashfuse_ll");
        let c = kids.iter().find(|&&k| comm(k).trim() == "sleep");
        if let (Some(d), Some(c)) = (d, c) {
            break (*d, *c);
        }
        // A bound on a hang (the mount on a loaded machine), not a timing claim.
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no daemon and sleep under ch-run: {kids:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_ne!(daemon, cmd);
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    // The daemon first, so that it would be gone before the command ends.
    kill(Pid::from_raw(daemon), Signal::SIGTERM).expect("signal daemon");
    // Delivered (or dropped, being ignored) once no longer pending.
    wait_for("SIGTERM to reach the daemon", 60, || {
        let status = std::fs::read_to_string(format!("/proc/{daemon}/status")).unwrap_or_default();
        let term = 1u64 << (Signal::SIGTERM as u32 - 1);
        status
            .lines()
            .filter_map(|l| {
                l.strip_prefix("SigPnd:")
                    .or_else(|| l.strip_prefix("ShdPnd:"))
            })
            .all(|v| u64::from_str_radix(v.trim(), 16).map_or(true, |m| m & term == 0))
    });
    kill(Pid::from_raw(-pid), Signal::SIGTERM).expect("signal process group");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().expect("stderr"), &mut err)
        .expect("read stderr");
    let st = child.0.wait().expect("wait");
    assert_eq!(st.code(), Some(143), "{err}");
    assert!(!err.contains("squashfuse_ll exited"), "{err}");
}

/// `srun --export=NONE` (or `env -i`): no $USER, no $HOME. ch-run uses the passwd entry
/// of the invoking uid: `--home` binds at /home/NAME.
#[test]
fn empty_environment_uses_the_passwd_name_and_home() {
    let s = Scratch::new("join-noenv");
    let uid = if is_root() {
        TEST_UID
    } else {
        nix::unistd::getuid().as_raw()
    };
    let pw = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .expect("getpwuid")
        .expect("a passwd entry for the test user");
    let home = s.join("home");
    sh(&format!("mkdir '{}'", home.display()));
    let mut c = tool("ch-run");
    c.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", &home)
        .arg("--home")
        .arg(busybox_rootfs())
        .args(["--", "sh", "-c", "echo $HOME; test -d \"$HOME\""]);
    assert_eq!(ok(&mut c), format!("/home/{}\n", pw.name));
    // No $HOME either: the passwd entry's home directory is bound (or named if missing).
    let mut c = tool("ch-run");
    c.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .arg("--home")
        .arg(busybox_rootfs())
        .args(["--", "sh", "-c", "echo $HOME"]);
    let out = output(&mut c);
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("/home/{}\n", pw.name)
        );
    } else {
        assert!(
            err.contains(&*pw.dir.to_string_lossy()),
            "neither ran nor named the passwd home {}: {err}",
            pw.dir.display()
        );
    }
}

/// Rounds of `ranks` ranks of `true` in one `--join` group each, run with `image_args`
/// (the image and its options): what went wrong, if anything (a failed rank, other than
/// one winner in a round, a state file left behind).
fn rounds_of_true(image_args: &[std::ffi::OsString], ranks: usize, rounds: usize) -> Vec<String> {
    let mut failures = Vec::new();
    for round in 0..rounds {
        let tag = format!("grove-short-{}-{round}", std::process::id());
        let children: Vec<_> = (0..ranks)
            .map(|_| {
                let mut c = ch_run_with(&[]);
                c.args([
                    "-v",
                    &format!("--join-ct={ranks}"),
                    &format!("--join-tag={tag}"),
                ])
                .args(image_args)
                .args(["--", "true"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
                c.spawn().expect("spawn rank")
            })
            .collect();
        let mut winners = 0;
        for r in children {
            let out = r.wait_with_output().expect("wait rank");
            let err = String::from_utf8_lossy(&out.stderr);
            winners += err.matches("join: I won").count();
            if !out.status.success() {
                let last = err.lines().last().unwrap_or_default();
                failures.push(format!("round {round}: {}: {last}", out.status));
            }
        }
        // One container per round: no peer found the group gone and started its own.
        if winners != 1 {
            failures.push(format!("round {round}: {winners} winners"));
        }
        let state = Path::new("/dev/shm").join(format!("ch-run_shm-{tag}"));
        if state.exists() {
            failures.push(format!("round {round}: {} left behind", state.display()));
        }
        forget_tag(&tag);
    }
    failures
}

/// Issue 14.3: eight ranks of a command that ends at once (`true`) used to find the
/// winner gone ("join: no PID N: /proc/N/ns/mnt not found") in most rounds with a
/// directory image. The winner's namespaces are held until every peer has joined: every
/// rank of every round succeeds, all in one container (one winner), and the last peer
/// removes the group's state file.
#[test]
fn short_command_ranks_never_find_the_winner_gone() {
    let failures = rounds_of_true(&[busybox_rootfs().into()], 8, 20);
    assert!(
        failures.is_empty(),
        "of 20 rounds of 8 ranks:\n{}",
        failures.join("\n")
    );
}

/// The same with a SquashFS image (fewer rounds: each mounts the image).
#[test]
fn short_command_ranks_on_squashfs_never_find_the_winner_gone() {
    let s = Scratch::new("join-short-sq");
    let Some(sq) = squash_image(&s) else { return };
    let mnt = mount_point(&s);
    let failures = rounds_of_true(&["-m".into(), mnt.into(), sq.into()], 8, 5);
    assert!(
        failures.is_empty(),
        "of 5 rounds of 8 ranks:\n{}",
        failures.join("\n")
    );
}

/// A peer that arrives after the winner's command has ended still joins the winner's
/// container (the same mount namespace), not a new one of its own.
#[test]
fn a_peer_joins_after_the_winners_command_has_ended() {
    let tag = format!("grove-after-{}", std::process::id());
    let peer = || {
        let mut c = ch_run_with(&[]);
        c.args(["-v", "--join-ct=2", &format!("--join-tag={tag}")])
            .arg(busybox_rootfs())
            .args(["--", "readlink", "/proc/self/ns/mnt"]);
        c
    };
    // `output` waits for the winner's exit.
    let out = output(&mut peer());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("join: I won"), "{err}");
    let winner_ns = String::from_utf8_lossy(&out.stdout).into_owned();
    let out = output(&mut peer());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("join: I lost"), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), winner_ns, "{err}");
    assert!(err.contains("join: cleaning up IPC resources"), "{err}");
    forget_tag(&tag);
}
