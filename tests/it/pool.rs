//! Checkouts sharing files through the pool (`STORAGE/pool/`, src/store/pool.rs): what
//! one image's checkout shares with another's, that no write in a container or by hand
//! spreads through a shared file, and that the pool empties when its checkouts go.

use crate::common::{busybox_rootfs, fails, ok, sh, tool, Scratch};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Busybox plus `data/` of `n` small files, at `s/name`.
fn tree(s: &Scratch, name: &str, n: usize) -> PathBuf {
    let dst = s.join(name);
    sh(&format!(
        "cp -a '{}' '{d}' && mkdir '{d}/data' && cd '{d}/data' && \
         i=0; while [ $i -lt {n} ]; do echo \"file $i\" > f$i; i=$((i+1)); done && \
         touch -d '2020-01-02 03:04:05' f* .",
        busybox_rootfs().display(),
        d = dst.display()
    ));
    dst
}

fn import(st: &Path, dir: &Path, name: &str) {
    ok(tool("ch-image")
        .arg("-s")
        .arg(st)
        .arg("import")
        .arg(dir)
        .arg(name));
}

/// `ch-run -v NAME -- true`; returns its standard error.
fn run_v(st: &Path, name: &str) -> String {
    let out = crate::common::output(
        tool("ch-run")
            .arg("-v")
            .arg("-s")
            .arg(st)
            .args([name, "--", "true"]),
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "ch-run {name}: {err}");
    err
}

fn checkout(st: &Path, name: &str) -> PathBuf {
    st.join("img")
        .join(format!("{name}+latest"))
        .canonicalize()
        .expect("checkout")
}

/// Inode of every regular file of a tree, by relative path.
fn inodes(dir: &Path) -> BTreeMap<String, u64> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.expect("walk"))
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(dir).expect("prefix");
            (
                rel.to_string_lossy().into_owned(),
                e.metadata().expect("stat").ino(),
            )
        })
        .collect()
}

fn pool_files(st: &Path) -> usize {
    let pool = st.join("pool");
    if !pool.exists() {
        return 0;
    }
    walkdir::WalkDir::new(pool)
        .into_iter()
        .filter(|e| e.as_ref().expect("walk").file_type().is_file())
        .count()
}

/// Storage with `a` (busybox + 200 files) and `b` (the same but one changed file), both
/// checked out, `a` first.
fn two_images(s: &Scratch) -> PathBuf {
    let st = s.storage();
    let a = tree(s, "a", 200);
    import(&st, &a, "a");
    let b = s.join("b");
    sh(&format!(
        "cp -a '{}' '{b}' && echo changed > '{b}/data/f7' && touch -d '2020-01-02 03:04:05' \
         '{b}/data/f7' '{b}/data'",
        a.display(),
        b = b.display()
    ));
    import(&st, &b, "b");
    let err = run_v(&st, "a");
    assert!(err.contains("linked 0 from the pool"), "{err}");
    st
}

#[test]
fn checkout_of_an_image_one_file_apart_writes_one_file_and_links_the_rest() {
    let s = Scratch::new("pool-k");
    let st = two_images(&s);
    let err = run_v(&st, "b");
    // 200 data files and busybox's 6 files; one differs.
    assert!(
        err.contains("wrote 1 files, linked 205 from the pool"),
        "{err}"
    );
    let (ia, ib) = (inodes(&checkout(&st, "a")), inodes(&checkout(&st, "b")));
    assert_eq!(ia.len(), ib.len());
    for (path, ino) in &ib {
        if path == "data/f7" {
            assert_ne!(ia[path], *ino, "the changed file has an inode of its own");
        } else {
            assert_eq!(ia[path], *ino, "{path} is shared");
        }
    }
    // No two paths of one checkout share an inode: the image has no hard links.
    let mut seen = std::collections::HashSet::new();
    assert!(ib.values().all(|i| seen.insert(*i)));
    // The first checkout's stamp holds although b's links moved its inodes' ctimes.
    run_v(&st, "a");
    assert_eq!(
        std::fs::read_to_string(checkout(&st, "b").join("data/f7")).expect("read"),
        "changed\n"
    );
    ok(tool("ch-image").arg("-s").arg(&st).arg("fsck"));
}

#[test]
fn writes_in_containers_never_reach_a_shared_file() {
    let s = Scratch::new("pool-w");
    let st = two_images(&s);
    run_v(&st, "b");
    // An overlay on a checkout (-W) and a build's RUN both write to a shared file.
    ok(tool("ch-run").arg("-W").arg("-s").arg(&st).args([
        "b",
        "--",
        "sh",
        "-c",
        "echo pwned >> /data/f1 && cat /data/f1",
    ]));
    let ctx = s.join("ctx");
    sh(&format!(
        "mkdir '{0}' && printf 'FROM a\\nRUN echo pwned >> /data/f2\\n' > '{0}/Dockerfile'",
        ctx.display()
    ));
    ok(tool("ch-image")
        .arg("-s")
        .arg(&st)
        .args(["build", "-t", "c"])
        .arg(&ctx));
    let out = ok(tool("ch-run")
        .arg("-s")
        .arg(&st)
        .args(["c", "--", "cat", "/data/f2"]));
    assert_eq!(out, "file 2\npwned\n");
    for name in ["a", "b"] {
        let co = checkout(&st, name);
        for (f, want) in [("f1", "file 1\n"), ("f2", "file 2\n")] {
            assert_eq!(
                std::fs::read_to_string(co.join("data").join(f)).expect("read"),
                want,
                "{name}:{f}"
            );
        }
        run_v(&st, name);
    }
    ok(tool("ch-image").arg("-s").arg(&st).arg("fsck"));
}

#[test]
fn a_shared_file_edited_by_hand_is_refused_everywhere_and_never_linked_again() {
    let s = Scratch::new("pool-e");
    let st = two_images(&s);
    run_v(&st, "b");
    let co_a = checkout(&st, "a");
    sh(&format!("echo edited > '{}/data/f3'", co_a.display()));
    for name in ["a", "b"] {
        let (_, err) = fails(tool("ch-run").arg("-s").arg(&st).args([name, "--", "true"]));
        assert!(err.contains("was changed outside grove"), "{name}: {err}");
    }
    let out = crate::common::output(tool("ch-image").arg("-s").arg(&st).arg("fsck"));
    let problems = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        problems.contains("/pool/") && problems.contains("shared file differs from blob"),
        "{problems}"
    );
    // The repair the hint gives, for a only: its next checkout must not link the edited
    // pool entry (its time moved), but write the file from the git objects.
    sh(&format!(
        "rm -rf '{}' '{}/stamps/checkouts-{}'",
        co_a.display(),
        st.display(),
        co_a.file_name().expect("name").to_string_lossy()
    ));
    let err = run_v(&st, "a");
    assert!(
        err.contains("wrote 1 files, linked 205 from the pool"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(checkout(&st, "a").join("data/f3")).expect("read"),
        "file 3\n"
    );
    // b still holds the edited inode and is still refused.
    let (_, err) = fails(tool("ch-run").arg("-s").arg(&st).args(["b", "--", "true"]));
    assert!(err.contains("was changed outside grove"), "{err}");
}

#[test]
fn pool_files_go_when_no_checkout_links_them() {
    let s = Scratch::new("pool-gc");
    let st = two_images(&s);
    run_v(&st, "b");
    // 206 files of a, plus b's changed one.
    assert_eq!(pool_files(&st), 207);
    ok(tool("ch-image").arg("-s").arg(&st).args(["delete", "b"]));
    ok(tool("ch-image")
        .arg("-s")
        .arg(&st)
        .args(["build-cache", "--gc"]));
    assert_eq!(pool_files(&st), 206, "b's own file is gone, a's are kept");
    run_v(&st, "a");
    ok(tool("ch-image").arg("-s").arg(&st).args(["delete", "a"]));
    ok(tool("ch-image")
        .arg("-s")
        .arg(&st)
        .args(["build-cache", "--gc"]));
    assert_eq!(pool_files(&st), 0);
    ok(tool("ch-image").arg("-s").arg(&st).arg("fsck"));
}
