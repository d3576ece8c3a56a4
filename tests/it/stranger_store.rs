//! The store as a hostile world treats it: processes killed (kill -9) at chosen points,
//! lock files of killed programs left behind. Each test kills at a point made observable
//! (a marker file), never after a duration, and asserts the store's invariants: `ch-image
//! fsck` and `git fsck` pass and the next command succeeds.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::{ok, output, tool, unpriv, wait_for, Reaped, Scratch};

fn chi(st: &Path) -> Command {
    let mut c = tool("ch-image");
    c.arg("-s").arg(st);
    c
}

/// The real git, as found on `$PATH` now.
fn real_git() -> PathBuf {
    let out = output(Command::new("sh").args(["-c", "command -v git"]));
    assert!(out.status.success(), "git not found");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Whether the test user can take the storage lock (shared) right now, without waiting.
fn lock_is_free(st: &Path) -> bool {
    output(
        unpriv("flock")
            .args(["--nonblock", "--shared"])
            .arg(st.join("lock"))
            .arg("true"),
    )
    .status
    .success()
}

fn git_fsck(st: &Path) {
    ok(unpriv("git").arg("-C").arg(st.join("repo.git")).args([
        "fsck",
        "--no-dangling",
        "--no-progress",
    ]));
}

/// Regression: `build-cache --gc` killed (kill -9) while its `git gc --prune=now` ran left
/// that git running without the storage lock, free to delete the objects of a writer that
/// had not referenced them yet; and git had inherited the master side of the terminal its
/// progress went to, so once that terminal's buffer was full it blocked for ever (seen:
/// a `git gc` of a killed `ch-image` asleep in `wait_woken` ten minutes later, holding
/// `commit-graph.lock`). Now the git of a killed gc holds the lock until it ends, and it
/// ends.
#[test]
fn gc_killed_while_git_runs_leaves_git_holding_the_lock_until_it_finishes() {
    let s = Scratch::new("gc-kill");
    let st = s.storage();
    ok(chi(&st)
        .arg("import")
        .arg(crate::common::busybox_rootfs())
        .arg("bb"));
    // A `git` that, for `gc`, says it started, waits for the word (or for the scratch
    // directory to go, should the test fail), then writes much progress to its standard
    // error (more than a terminal buffers) before it becomes the real git.
    let bin = s.join("bin");
    std::fs::create_dir(&bin).expect("mkdir bin");
    let (started, go) = (s.join("started"), s.join("go"));
    let script = format!(
        "#!/bin/sh\n\
         case \" $* \" in *' gc '*)\n\
           : > '{started}'\n\
           while [ ! -e '{go}' ] && [ -e '{started}' ]; do sleep 0.02; done\n\
           i=0; while [ $i -lt 40000 ]; do\n\
             echo \"Counting objects: $i, progress that nobody reads\" >&2 || break\n\
             i=$((i+1)); done ;;\n\
         esac\n\
         exec '{git}' \"$@\"\n",
        started = started.display(),
        go = go.display(),
        git = real_git().display(),
    );
    let wrapper = bin.join("git");
    std::fs::write(&wrapper, script).expect("write git wrapper");
    crate::common::own(&bin);
    ok(Command::new("chmod").arg("0755").arg(&wrapper));
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut gc = Reaped(
        chi(&st)
            .args(["build-cache", "--gc"])
            .env("PATH", &path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn gc"),
    );
    wait_for("gc to start git gc", 120, || started.exists());
    assert!(!lock_is_free(&st), "gc holds the lock while it runs");
    gc.0.kill().expect("kill gc"); // SIGKILL
    gc.0.wait().expect("wait gc");
    // ch-image is gone; its git is not, and keeps writers out.
    assert!(
        !lock_is_free(&st),
        "the storage lock was released while the killed gc's git still runs"
    );
    std::fs::write(&go, "").expect("write go");
    // The git ends (it does not block on a terminal nobody reads), releasing the lock.
    wait_for(
        "the killed gc's git to end and release the lock",
        120,
        || lock_is_free(&st),
    );
    ok(chi(&st).arg("fsck"));
    git_fsck(&st);
    ok(chi(&st).args(["build-cache", "--gc"]));
    ok(chi(&st).arg("fsck"));
    git_fsck(&st);
    let out = ok(tool("ch-run")
        .arg("-s")
        .arg(&st)
        .args(["bb", "--", "/bin/echo", "still here"]));
    assert_eq!(out, "still here\n");
}

/// Regression: a git killed during gc (kill -9 of the whole job, as a batch system's
/// cancel does) leaves `objects/info/commit-graph.lock`, and every later `build-cache
/// --gc` failed ("Unable to create ... commit-graph.lock: File exists") while `fsck` said
/// the store was fine. Now fsck names the file once it is old (a leftover, not damage),
/// and the next command that locks the store alone removes it.
#[test]
fn lock_files_of_a_killed_git_gc_are_reported_and_do_not_fail_the_next_gc() {
    let s = Scratch::new("gc-locks");
    let st = s.storage();
    ok(chi(&st)
        .arg("import")
        .arg(crate::common::busybox_rootfs())
        .arg("bb"));
    ok(chi(&st).args(["build-cache", "--gc"]));
    let info = st.join("repo.git/objects/info");
    let graph_lock = info.join("commit-graph.lock");
    let gc_pid = st.join("repo.git/gc.pid");
    // As a killed git leaves them, an hour ago.
    ok(unpriv("sh").arg("-ec").arg(format!(
        "touch -d '1 hour ago' '{}' '{}'",
        graph_lock.display(),
        gc_pid.display()
    )));
    // A leftover, not damage (fsck passes), which the next writer alone removes.
    let o = output(chi(&st).arg("fsck"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.lines()
            .any(|l| l.contains(&graph_lock.display().to_string()) && l.contains("not damage")),
        "fsck should name {}:\n{err}",
        graph_lock.display()
    );
    ok(chi(&st).args(["build-cache", "--gc"]));
    assert!(!graph_lock.exists(), "gc left {}", graph_lock.display());
    ok(chi(&st).arg("fsck"));
    git_fsck(&st);
    // A fresh one (no age) is removed by the next writer that locks alone.
    ok(unpriv("touch").arg(&graph_lock));
    ok(chi(&st).args(["delete", "bb"]));
    assert!(!graph_lock.exists(), "delete left {}", graph_lock.display());
    ok(chi(&st).args(["undelete", "bb"]));
    ok(chi(&st).args(["build-cache", "--gc"]));
    ok(chi(&st).arg("fsck"));
    git_fsck(&st);
}

/// Regression: a tar export that ran out of space (here a file size limit: EFBIG) said
/// only "can't write tar stream", naming no file. Now the error names the output, no
/// partial output or temporary file is left, and the store is untouched.
#[test]
fn tar_export_that_runs_out_of_space_names_the_output_and_leaves_nothing() {
    let s = Scratch::new("export-efbig");
    let st = s.storage();
    let src = s.join("src");
    // 100 files of 32 KiB of random bytes: a tar of about 3.3 MB.
    crate::common::sh(&format!(
        "mkdir -p {d} && i=0 && while [ $i -lt 100 ]; do head -c 32768 /dev/urandom > {d}/f$i; i=$((i+1)); done",
        d = src.display()
    ));
    ok(chi(&st).arg("import").arg(&src).arg("img"));
    let out_dir = s.join("out");
    crate::common::sh(&format!("mkdir {}", out_dir.display()));
    for name in ["img.tar", "img.tar.gz"] {
        let target = out_dir.join(name);
        // SIGXFSZ ignored (inherited through exec): writes past the limit fail with EFBIG.
        let out = output(unpriv("sh").args([
            "-c",
            &format!(
                "trap '' XFSZ; exec prlimit --fsize=1000000 {} -s {} img {}",
                crate::common::bin("ch-convert").display(),
                st.display(),
                target.display()
            ),
        ]));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!("can't write {}", target.display())),
            "the error should name {}:\n{err}",
            target.display()
        );
        assert!(!err.contains("panicked"), "{err}");
        let left: Vec<_> = std::fs::read_dir(&out_dir)
            .expect("read out")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
    ok(chi(&st).arg("fsck"));
    let target = out_dir.join("img.tar");
    ok(tool("ch-convert")
        .arg("-s")
        .arg(&st)
        .arg("img")
        .arg(&target));
    assert!(std::fs::metadata(&target).expect("stat tar").len() > 3_000_000);
}

/// Regression: a conversion killed (kill -9) before its rename left its staging output
/// (`.NAME.ch-convert.PID`, as big as the image) beside the output for ever; converting
/// again did not remove it. Now the next conversion to that output removes staging
/// entries whose process is gone once they are ten minutes old, and keeps a live one's.
#[test]
fn conversion_removes_what_a_killed_conversion_to_the_same_output_left() {
    let s = Scratch::new("convert-stale");
    let st = s.storage();
    ok(chi(&st)
        .arg("import")
        .arg(crate::common::busybox_rootfs())
        .arg("bb"));
    let out_dir = s.join("out");
    let live = crate::common::unpriv_sleeper(600);
    let dead_tar = out_dir.join(".bb.tar.ch-convert.999999999");
    let dead_dir = out_dir.join(".bbdir.ch-convert.999999998");
    let live_tar = out_dir.join(format!(".bb.tar.ch-convert.{}", live.0.id()));
    let fresh_tar = out_dir.join(".bb.tar.ch-convert.999999997");
    // As a killed ch-convert leaves them (a tar file, a directory), an hour ago; and one
    // of a live process and one just left, which must stay.
    crate::common::sh(&format!(
        "mkdir -p '{dir}/x' && head -c 100000 /dev/zero > '{dt}' && echo part > '{dir}/x/f' \
         && echo live > '{lt}' && touch -d '1 hour ago' '{dt}' '{dir}' '{lt}' \
         && echo fresh > '{ft}'",
        dir = dead_dir.display(),
        dt = dead_tar.display(),
        lt = live_tar.display(),
        ft = fresh_tar.display(),
    ));
    let convert = |out: &Path| {
        ok(tool("ch-convert").arg("-s").arg(&st).arg("bb").arg(out));
    };
    convert(&out_dir.join("bb.tar"));
    assert!(!dead_tar.exists(), "{} left", dead_tar.display());
    assert!(live_tar.exists(), "a live conversion's output was removed");
    assert!(fresh_tar.exists(), "a fresh staging file was removed");
    assert!(dead_dir.exists(), "another output's staging was removed");
    convert(&out_dir.join("bbdir"));
    assert!(!dead_dir.exists(), "{} left", dead_dir.display());
    assert!(out_dir.join("bbdir/bin/sh").exists() || out_dir.join("bbdir/bin").exists());
    ok(chi(&st).arg("fsck"));
}

/// A pull killed (kill -9) at points of its progress (write system calls so far) leaves
/// a store that checks, and the next pull gives the image an uninterrupted pull gives.
#[test]
fn pull_killed_at_any_point_leaves_a_store_the_next_pull_completes() {
    let Some(r) = crate::registry::Registry::start() else {
        return;
    };
    r.put("two", "test/two:latest", &[]);
    let s = Scratch::new("pull-kill");
    let (st, reference) = (s.storage(), s.join("reference"));
    let name = format!("{}/test/two:latest", r.host());
    ok(r.ch_image(&reference).args(["pull", &name]));
    let want = ok(r.ch_image(&reference).args(["list", "-l"]));
    let mut killed = 0;
    for writes in [1u64, 3, 10, 30, 60, 100, 200, 400] {
        let mut c = r.ch_image(&st);
        c.args(["pull", &name]);
        if crate::common::kill_after(&mut c, "syscw", writes) {
            killed += 1;
        }
        // Nothing but the lock is needed for fsck to pass: what the kill left is either
        // cleaned up by the next writer or reported as such and removed by gc.
        if st.join("version").exists() {
            let out = output(chi(&st).arg("fsck"));
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success()
                    || err
                        .lines()
                        .filter(|l| l.contains(": "))
                        .filter(|l| !l.starts_with("error: store has"))
                        .all(|l| l.contains("writer that is gone")),
                "after a kill at {writes} writes:\n{err}"
            );
            git_fsck(&st);
        }
    }
    eprintln!("killed {killed} of 8 pulls part-way");
    ok(r.ch_image(&st).args(["pull", &name]));
    assert_eq!(ok(r.ch_image(&st).args(["list", "-l"])), want);
    ok(chi(&st).args(["build-cache", "--gc"]));
    ok(chi(&st).arg("fsck"));
    git_fsck(&st);
}
