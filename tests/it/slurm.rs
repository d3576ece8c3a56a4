//! ch-run under a real Slurm (Debian's slurm-wlm and munge, one node on loopback, started
//! by `tests/slurm/cluster.sh`) and a real Open MPI, as FAQ 11.4.2 to 11.4.4 describe:
//! `srun ch-run IMAGE.sqfs`, `srun ch-run --join`, two jobs at once, and an MPI program
//! built by `ch-image build` run with `srun --mpi=pmix` and with the host's `mpirun`
//! (docs/hpc.md). The cluster needs root to start (slurmd runs jobs as their users); the
//! jobs themselves run as the unprivileged test user.

use crate::common::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running one-node cluster. Its daemons stop when the test process exits: the script
/// waits for EOF on the pipe that `_daemons` holds.
struct Cluster {
    conf: PathBuf,
    _daemons: Child,
}

/// Commands a test needs, or a loud skip naming the first missing one.
fn have_all(cmds: &[&str]) -> bool {
    for c in cmds {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {c}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            skip(&format!(
                "{c} not installed (Debian's slurm-wlm, munge, openmpi-bin)"
            ));
            return false;
        }
    }
    true
}

/// The cluster, started once per test process. What it needs is checked at every call,
/// so that each test that can't run says SKIP (a `None` kept from the first call made
/// the later tests pass silently).
fn cluster() -> Option<&'static Cluster> {
    if !is_root() {
        skip("starting slurmd needs root");
        return None;
    }
    if !have_all(&["srun", "sinfo", "slurmctld", "slurmd", "munged"]) {
        return None;
    }
    static ONCE: std::sync::OnceLock<Cluster> = std::sync::OnceLock::new();
    Some(ONCE.get_or_init(|| {
        // Not under /tmp: ch-run shares the host's /tmp with the container, and Slurm's
        // spool (where PMIx keeps its server directory) is not visible in images on real
        // systems either.
        let pid = std::process::id();
        let dir = PathBuf::from(format!("/var/tmp/grove-slurm-{pid}"));
        let _ = std::fs::remove_dir_all(&dir);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slurm/cluster.sh");
        let mut child = Command::new("sh")
            .arg(&script)
            .arg(&dir)
            .env("GROVE_SLURM_PORT", (17000 + (pid % 500) * 2).to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start tests/slurm/cluster.sh");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read cluster.sh");
        if line != "ready\n" {
            let logs = sh_logs(&dir.join("log"));
            panic!("Slurm did not start (cluster.sh said {line:?})\n{logs}");
        }
        Cluster {
            conf: dir.join("slurm.conf"),
            _daemons: child,
        }
    }))
}

/// The daemons' logs, for a failure message.
fn sh_logs(dir: &Path) -> String {
    let mut s = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        s += &format!("--- {}\n", e.path().display());
        for l in tail.into_iter().rev() {
            s += l;
            s.push('\n');
        }
    }
    s
}

/// `srun ARGS` as the test user in `cwd`, with a time limit so that a hung job ends.
fn srun(c: &Cluster, cwd: &Path, args: &[&str]) -> Command {
    let mut cmd = unpriv("srun");
    cmd.env("SLURM_CONF", &c.conf)
        .env("HOME", cwd)
        .current_dir(cwd)
        .arg("--time=5")
        .args(args);
    cmd
}

fn ch_run() -> String {
    bin("ch-run").display().to_string()
}

/// Lines of `out`, sorted.
fn sorted_lines(out: &str) -> Vec<String> {
    let mut v: Vec<String> = out.lines().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn srun_runs_a_squashfs_image_in_every_task() {
    let Some(c) = cluster() else { return };
    let s = Scratch::new("slurm-sqfs");
    let Some(sq) = crate::run::squash_image(&s) else {
        return;
    };
    let out =
        ok(srun(c, &s.path, &["-n", "4", &ch_run()])
            .arg(&sq)
            .args(["--", "cat", "/etc/motd"]));
    let motd = std::fs::read_to_string(busybox_rootfs().join("etc/motd")).expect("motd");
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(out.lines().all(|l| format!("{l}\n") == motd), "{out}");
}

/// The namespaces of each task, one line per task.
const NAMESPACES: &str = "echo $(readlink /proc/self/ns/user) $(readlink /proc/self/ns/mnt)";

#[test]
fn srun_join_gives_all_tasks_one_user_and_one_mount_namespace() {
    let Some(c) = cluster() else { return };
    let s = Scratch::new("slurm-join");
    let img = busybox_rootfs().display().to_string();
    let joined = ok(srun(c, &s.path, &["-n", "4", &ch_run(), "--join", &img])
        .args(["--", "sh", "-c", NAMESPACES]));
    let mut lines = sorted_lines(&joined);
    assert_eq!(lines.len(), 4, "{joined}");
    lines.dedup();
    assert_eq!(
        lines.len(),
        1,
        "tasks in more than one container:\n{joined}"
    );
    // Without --join every task has its own (so the check above can fail).
    let apart =
        ok(srun(c, &s.path, &["-n", "4", &ch_run(), &img]).args(["--", "sh", "-c", NAMESPACES]));
    let mut lines = sorted_lines(&apart);
    lines.dedup();
    assert_eq!(lines.len(), 4, "{apart}");
}

/// Issue 14.1: every job is step 0, so tags that are not job-scoped put two jobs' tasks
/// in one container.
#[test]
fn concurrent_jobs_with_different_images_never_share_a_container() {
    let Some(c) = cluster() else { return };
    let s = Scratch::new("slurm-2jobs");
    let a = busybox_rootfs();
    let b = s.join("other");
    sh(&format!(
        "cp -a '{}' '{}' && chmod u+w '{}/etc' && echo other-image > '{}/etc/motd'",
        a.display(),
        b.display(),
        b.display(),
        b.display()
    ));
    let motd_a = std::fs::read_to_string(a.join("etc/motd")).expect("motd");
    for round in 0..3 {
        let start = |img: &Path| {
            srun(c, &s.path, &["-n", "4", &ch_run(), "--join"])
                .arg(img)
                .args(["--", "sh", "-c", "sleep 0.5; cat /etc/motd"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn srun")
        };
        let (ja, jb) = (start(&a), start(&b));
        let (oa, ob) = (
            ja.wait_with_output().expect("job a"),
            jb.wait_with_output().expect("job b"),
        );
        for (o, want) in [(&oa, motd_a.as_str()), (&ob, "other-image\n")] {
            let out = String::from_utf8_lossy(&o.stdout);
            assert!(
                o.status.success(),
                "round {round}: {out}{}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert_eq!(out.lines().count(), 4, "round {round}: {out}");
            assert!(
                out.lines().all(|l| format!("{l}\n") == want),
                "round {round}: a job ran in the other job's container:\n{out}"
            );
        }
    }
}

/// Storage holding `mpi`, the Open MPI hello world of fixtures/mpi built by `ch-image build`
/// on the Debian fixture. Kept in the fixture cache: later runs are all cache hits.
fn mpi_storage() -> Option<PathBuf> {
    static ONCE: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let tarball = crate::build::debian_tarball()?;
        let cache = tarball.parent().expect("fixture cache").to_path_buf();
        let base = cache.join("mpi");
        let (storage, ctx) = (base.join("storage"), base.join("context"));
        if !base.exists() {
            std::fs::create_dir_all(&base).expect("create mpi fixture dir");
            if is_root() {
                let st = Command::new("chown")
                    .arg(format!("{TEST_UID}:{TEST_UID}"))
                    .arg(&base)
                    .status()
                    .expect("chown");
                assert!(st.success());
            }
        }
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/mpi");
        sh(&format!(
            "mkdir -p '{ctx}' && cp '{src}/Dockerfile' '{src}/hello.c' '{ctx}/'",
            ctx = ctx.display(),
            src = src.display()
        ));
        let image = || {
            let mut c = tool("ch-image");
            c.arg("-s").arg(&storage);
            c
        };
        if !ok(image().arg("list")).lines().any(|l| l == "debian") {
            ok(image().arg("import").arg(&tarball).arg("debian"));
        }
        ok(image().args(["build", "-t", "mpi"]).arg(&ctx));
        Some(storage)
    })
    .clone()
}

/// The checks of an MPI run: four ranks, right results, one container, and none of the
/// messages of FAQ 11.4.2 (no cross-memory attach) or of issue 14.6 (PMIx's data store).
fn check_mpi_run(how: &str, out: &std::process::Output) {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{how}: {stdout}{stderr}");
    let lines = sorted_lines(&stdout);
    assert_eq!(lines.len(), 4, "{how}: {stdout}{stderr}");
    for (i, l) in lines.iter().enumerate() {
        assert!(
            l.starts_with(&format!("rank {i} of 4: sum 4 big ok mnt:")),
            "{how}: {stdout}{stderr}"
        );
    }
    let mut ns: Vec<&str> = lines
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap_or(""))
        .collect();
    ns.dedup();
    assert_eq!(ns.len(), 1, "{how}: ranks in several containers: {stdout}");
    for bad in ["PMIX ERROR", "Read -1", "CMA is", "not available"] {
        assert!(!stderr.contains(bad), "{how}: {bad:?} in\n{stderr}");
    }
}

#[test]
fn mpi_allreduce_and_cross_memory_attach_under_srun_pmix_and_host_mpirun() {
    let Some(c) = cluster() else { return };
    if !have_all(&["mpirun"]) {
        return;
    }
    let mpi_list = output(&mut srun(c, Path::new("/"), &["--mpi=list"]));
    let list = String::from_utf8_lossy(&mpi_list.stdout).to_string()
        + &String::from_utf8_lossy(&mpi_list.stderr);
    if !list.contains("pmix") {
        skip(&format!("Slurm has no PMIx plugin: {list}"));
        return;
    }
    let Some(storage) = mpi_storage() else { return };
    let s = Scratch::new("slurm-mpi");
    let st = storage.display().to_string();
    let ch_run = ch_run();
    // Four ranks of the program in one container.
    let hello = [&ch_run, "-s", &st, "--join", "mpi", "--", "/hello"];
    let out = output(srun(c, &s.path, &["--mpi=pmix", "-n", "4"]).args(hello));
    check_mpi_run("srun --mpi=pmix", &out);
    // The host's mpirun (Open MPI's own launcher) starting ch-run --join.
    let out = output(
        unpriv("mpirun")
            .env("HOME", &s.path)
            .current_dir(&s.path)
            .args(["--oversubscribe", "-n", "4"])
            .args(hello),
    );
    check_mpi_run("mpirun", &out);
}
