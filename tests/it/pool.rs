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
    // fsck finds the shared file by its content.
    let out = crate::common::output(tool("ch-image").arg("-s").arg(&st).arg("fsck"));
    let problems = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        problems.contains("/pool/") && problems.contains("shared file differs from blob"),
        "{problems}"
    );
    let mut hint = String::new();
    for name in ["a", "b"] {
        let (_, err) = fails(tool("ch-run").arg("-s").arg(&st).args([name, "--", "true"]));
        assert!(err.contains("was changed outside grove"), "{name}: {err}");
        if name == "a" {
            hint = crate::common::repair_hint(&err);
        }
    }
    // The repair the hint gives, for a only: it must not change the files a shares with
    // b (a `chmod -R` would), and a's next checkout must not link the edited pool entry
    // (its time moved) but write the file from the git objects.
    let mode = |p: PathBuf| std::fs::metadata(p).expect("stat").mode() & 0o7777;
    let co_b = checkout(&st, "b");
    let before = mode(co_b.join("data/f4"));
    sh(&hint);
    assert!(!co_a.exists());
    assert_eq!(
        mode(co_b.join("data/f4")),
        before,
        "the hint changed a shared file"
    );
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

#[test]
fn kill_9_during_checkouts_leaves_only_whole_pool_files() {
    let s = Scratch::new("pool-kill");
    let st = s.storage();
    // 20,000 files in 200 directories.
    let big = s.join("big");
    sh(&format!(
        "mkdir '{0}' && cd '{0}' && i=0; while [ $i -lt 200 ]; do mkdir d$i; \
         j=0; while [ $j -lt 100 ]; do echo \"$i $j\" > d$i/f$j; j=$((j+1)); done; i=$((i+1)); done",
        big.display()
    ));
    import(&st, &big, "big");
    let mut killed = 0;
    // Killed at points of its progress (files written so far: write system calls).
    for writes in [200u64, 2_000, 8_000, 15_000] {
        let mut c = tool("ch-image");
        c.arg("-s").arg(&st).args(["checkout", "--", "big"]);
        if crate::common::kill_after(&mut c, "syscw", writes) {
            killed += 1;
        }
        // Every pool file that exists is whole: its content is its blob. (A finished
        // checkout is removed so the next round checks out again.)
        for (p, md) in walkdir::WalkDir::new(st.join("pool"))
            .into_iter()
            .map(|e| e.expect("walk"))
            .filter(|e| e.file_type().is_file())
            .map(|e| (e.path().to_path_buf(), e.metadata().expect("stat")))
        {
            let content = std::fs::read_to_string(&p).expect("read pool file");
            assert!(
                content.ends_with('\n') && md.len() > 3,
                "partial pool file {}: {content:?}",
                p.display()
            );
        }
        // (Not `chmod -R`: that would change the shared inodes' modes.)
        sh(&format!("rm -rf '{}/checkouts/'*", st.display()));
    }
    eprintln!("killed {killed} of 4 checkouts part-way");
    assert!(killed > 0, "the checkout always finished before the kill");
    // The next checkout completes, linking what the killed ones left, and the store checks.
    let out = crate::common::output(
        tool("ch-image")
            .arg("-v")
            .arg("-s")
            .arg(&st)
            .args(["checkout", "--", "big"]),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("linked 0 from"), "{err}");
    assert!(!err.contains("pool entry changed"), "{err}");
    let co = checkout(&st, "big");
    assert_eq!(
        std::fs::read_to_string(co.join("d199/f99")).expect("read"),
        "199 99\n"
    );
    ok(tool("ch-image")
        .arg("-s")
        .arg(&st)
        .args(["build-cache", "--gc"]));
    ok(tool("ch-image").arg("-s").arg(&st).arg("fsck"));
}

#[test]
fn a_same_size_edit_with_its_time_set_back_is_found_by_content_and_leaves_the_pool() {
    let s = Scratch::new("pool-t");
    let st = two_images(&s);
    run_v(&st, "b");
    let co_a = checkout(&st, "a");
    // "file 5" becomes "FILE 5": same size, mtime put back; only the ctime moved, and b's
    // checkout moved it too.
    sh(&format!(
        "cd '{}/data' && touch -r f5 /tmp/.grove-ref-$$ && printf 'FILE 5\\n' > f5.new && \
         cat f5.new > f5 && rm f5.new && touch -r /tmp/.grove-ref-$$ f5 && rm /tmp/.grove-ref-$$",
        co_a.display()
    ));
    let (_, err) = fails(tool("ch-run").arg("-s").arg(&st).args(["a", "--", "true"]));
    assert!(err.contains("was changed outside grove"), "{err}");
    sh(&crate::common::repair_hint(&err));
    let err = run_v(&st, "a");
    assert!(
        err.contains("wrote 1 files, linked 205 from the pool"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(checkout(&st, "a").join("data/f5")).expect("read"),
        "file 5\n"
    );
}

#[test]
fn a_checkout_imported_as_a_directory_is_the_same_image() {
    let s = Scratch::new("pool-imp");
    let st = two_images(&s);
    // a's checkout: every file has a second link (its pool entry), outside the tree.
    // Importing it gives a's commit again (same files, modes, times, no hard-link group
    // made of a file's outside link), so it is a's checkout that z runs.
    let co_a = checkout(&st, "a");
    import(&st, &co_a, "z");
    let commit = |name: &str| {
        ok(crate::common::unpriv("git")
            .arg("-C")
            .arg(st.join("repo.git"))
            .args(["rev-parse", &format!("refs/grove/img/{name}+latest")]))
    };
    assert_eq!(commit("z"), commit("a"));
    assert_eq!(checkout(&st, "z"), co_a);
}

/// `ch-run -w` of a checkout through a path the storage directory in use does not hold
/// (a symlink elsewhere, another store than `-s`'s, or no `-s` at all): refused, since
/// its files are other images' too. Before: the write went through the pool into image
/// b's checkout and the store's pool file.
#[test]
fn write_to_a_checkout_of_another_storage_directory_is_refused() {
    let s = Scratch::new("pool-other-w");
    let st = two_images(&s);
    run_v(&st, "b");
    let link = s.join("img-link");
    std::os::unix::fs::symlink(checkout(&st, "a"), &link).expect("symlink");
    let other = s.join("other-store");
    for (storage, image) in [(&other, &link), (&other, &checkout(&st, "a"))] {
        let (_, err) = fails(
            tool("ch-run")
                .arg("-w")
                .arg("-s")
                .arg(storage)
                .arg(image)
                .args(["--", "sh", "-c", "echo pwned >> /data/f1"]),
        );
        assert!(
            err.contains("--write: can't write to the storage directory"),
            "{err}"
        );
    }
    let f1 = std::fs::read_to_string(checkout(&st, "b").join("data/f1")).expect("read");
    assert_eq!(f1, "file 1\n");
    ok(tool("ch-image").arg("-s").arg(&st).arg("fsck"));
    // An image directory outside any storage directory is still writable.
    let dir = s.join("a");
    ok(tool("ch-run")
        .arg("-w")
        .arg("-s")
        .arg(&other)
        .arg(&dir)
        .args(["--", "sh", "-c", "echo mine >> /data/f1"]));
}
