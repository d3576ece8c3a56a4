//! `ch-image build-cache --gc --keep-storage SIZE` and materialized trees: checkouts and
//! kept layers are copies of what the git objects hold, and gc drops the least recently
//! used of them (docs/store-format.md, "Keeping storage"). What is dropped is made again
//! on use: images run with the same files and times, builds hit and rebuild to the same
//! commits, and a kill during the drop leaves a usable store.

use crate::common::{busybox_rootfs, fails, marks, ok, output, sh, tool, Bench, Scratch};
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Stdio;

impl Bench {
    /// Build `df` as `tag` with `extra` options and `-vv` (the log says what it checked
    /// out); returns the log.
    fn build_vv(&self, tag: &str, df: &str, extra: &[&str]) -> String {
        let extra: Vec<&str> = extra.iter().copied().chain(["-vv"]).collect();
        self.build(tag, df, &extra)
    }

    fn gc(&self, keep: Option<&str>) -> String {
        let mut c = self.image();
        c.args(["build-cache", "--gc"]);
        if let Some(k) = keep {
            c.args(["--keep-storage", k]);
        }
        let out = output(&mut c);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "gc failed:\n{err}");
        err
    }

    fn commit(&self, tag: &str) -> String {
        self.image_commit(tag)
            .unwrap_or_else(|| panic!("no image {tag}"))
    }

    /// `git fsck` and `ch-image fsck`, which must both pass.
    fn fsck_both(&self) {
        self.fsck();
        ok(self.image().arg("fsck"));
    }

    /// Names in `STORAGE/DIR` (none if it does not exist).
    fn names(&self, dir: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.storage().join(dir))
            .map(|rd| {
                rd.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// Blocks allocated under `dirs` (not following symlinks), each inode counted once, as
/// `du` counts: what the directories take on disk together.
fn disk_use<P: AsRef<Path>>(dirs: &[P]) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    for d in dirs {
        for e in walkdir::WalkDir::new(d.as_ref())
            .into_iter()
            .filter_map(Result::ok)
        {
            let md = e.metadata().expect("stat");
            if seen.insert((md.dev(), md.ino())) {
                total += md.blocks() * 512;
            }
        }
    }
    total
}

/// A RUN making 300 files, a COPY of a 40-file directory, a RUN after it. Times are
/// clamped to SOURCE_DATE_EPOCH, so equal inputs make equal commits in any store.
const DF: &str = "FROM busybox\n\
                  RUN mkdir /r && i=0; while [ $i -lt 300 ]; do echo $i > /r/f$i; i=$((i+1)); done\n\
                  COPY d /d/\n\
                  RUN cat /d/f* | wc -l > /lines && touch -d '2021-02-03 04:05:06' /lines\n";
const SDE: &[&str] = &["--build-arg", "SOURCE_DATE_EPOCH=1700000000"];

fn context(st: &Bench) {
    for i in 0..40 {
        st.write(&format!("d/f{i}"), &format!("file {i}\n"));
    }
}

/// Every file and directory the image's tests look at, with mode, size and time.
const LISTING: &str = "for f in / /r /r/f0 /r/f299 /d /d/f0 /d/f39 /lines /bin/busybox; do \
                       stat -c '%n %a %s %Y' $f; done; cat /lines /d/f7";

#[test]
fn keep_storage_0_drops_every_checkout_and_layer_and_images_still_run_and_hit() {
    let st = Bench::checked_out("compact-zero");
    context(&st);
    let log = st.build_vv("img", DF, SDE);
    assert_eq!(marks(&log), "...", "{log}");
    let before = st.run("img", LISTING);
    st.gc(None);
    let root = st.storage();
    let trees = [
        root.join("checkouts"),
        root.join("layers"),
        root.join("pool"),
    ];
    assert!(!st.names("layers").is_empty() && !st.names("checkouts").is_empty());
    let materialized = disk_use(&trees);
    let size_gc = disk_use(&[&root]);
    let err = st.gc(Some("0"));
    assert!(err.contains("materialized trees: removed 4"), "{err}");
    // Nothing materialized is left: no checkout, layer, stamp or pool file.
    assert_eq!(st.names("checkouts"), Vec::<String>::new());
    assert_eq!(st.names("layers"), Vec::<String>::new());
    assert_eq!(st.names("stamps"), Vec::<String>::new());
    assert_eq!(st.names("pool"), Vec::<String>::new());
    let size_dropped = disk_use(&[&root]);
    eprintln!(
        "store after gc: {size_gc} bytes, materialized {materialized}; after \
         --keep-storage 0: {size_dropped}"
    );
    assert!(
        size_dropped + materialized * 9 / 10 <= size_gc,
        "store after gc {size_gc}, after dropping {size_dropped}: the materialized \
         {materialized} bytes were not freed"
    );
    st.fsck_both();
    // The image runs with the same files and times (checked out again from the objects).
    assert_eq!(st.run("img", LISTING), before);
    assert_eq!(st.names("checkouts").len(), 1);
    // An all-hit build stays all hits, and needs no tree.
    let log = st.build_vv("img", DF, SDE);
    assert_eq!(marks(&log), "***", "{log}");
    st.fsck_both();
}

#[test]
fn rebuild_after_dropping_trees_checks_the_parent_out_and_gives_the_same_commit() {
    // One store drops its trees before the rebuild, the other keeps them; both build
    // from one context (its files' inodes and times are part of the key inputs).
    let (a, mut b) = (
        Bench::checked_out("compact-drop"),
        Bench::checked_out("compact-keep"),
    );
    b.ctx = a.ctx.clone();
    context(&a);
    a.build_vv("img", DF, SDE);
    b.build_vv("img", DF, SDE);
    assert_eq!(a.commit("img"), b.commit("img"));
    a.write("d/f3", "changed\n");
    a.gc(Some("0"));
    assert_eq!(a.names("layers"), Vec::<String>::new());
    let log_a = a.build_vv("img", DF, SDE);
    let log_b = b.build_vv("img", DF, SDE);
    assert_eq!(marks(&log_a), "*..", "{log_a}");
    assert_eq!(marks(&log_b), "*..", "{log_b}");
    // The last RUN's lower layers were gone: it ran on a checkout of its parent.
    assert!(log_a.contains("checked out "), "{log_a}");
    assert!(!log_b.contains("checked out "), "{log_b}");
    assert_eq!(a.commit("img"), b.commit("img"));
    assert_eq!(a.run("img", LISTING), b.run("img", LISTING));
    assert!(a.run("img", "cat /lines /d/f3").ends_with("changed\n"));
    a.fsck_both();
}

#[test]
fn keep_storage_keeps_the_most_recently_used_trees() {
    let st = Bench::checked_out("compact-lru");
    // Two images of 2 MiB layers each; `old` built first, `new` used last.
    for tag in ["old", "new"] {
        st.build_vv(
            tag,
            &format!(
                "FROM busybox\nRUN dd if=/dev/urandom of=/{tag} bs=1024 count=2048 2>/dev/null\n"
            ),
            &[],
        );
    }
    let layer_of = |tag: &str| st.storage().join("layers").join(st.commit(tag));
    let (old, new) = (layer_of("old"), layer_of("new"));
    assert!(old.is_dir() && new.is_dir());
    st.run("old", "true");
    st.run("new", "true");
    // Room for busybox's checkout and one layer, not two.
    let checkouts = st.storage().join("checkouts");
    let budget = disk_use(&[checkouts.clone(), new.clone()]) + 512 * 1024;
    let err = st.gc(Some(&budget.to_string()));
    assert!(err.contains("materialized trees: removed 1"), "{err}");
    assert!(new.is_dir(), "the most recently used layer was dropped");
    assert!(!old.exists(), "the least recently used layer was kept");
    assert_eq!(std::fs::read_dir(&checkouts).expect("ls").count(), 1);
    let size = disk_use(&[
        checkouts,
        st.storage().join("layers"),
        st.storage().join("pool"),
    ]);
    assert!(size <= budget, "{size} > {budget}");
    // Both still run; `old` from a checkout made again.
    assert_eq!(st.run("old", "wc -c < /old").trim(), "2097152");
    assert_eq!(st.run("new", "wc -c < /new").trim(), "2097152");
    st.fsck_both();
    // A size that is not one.
    let (_, err) = fails(
        st.image()
            .args(["build-cache", "--gc", "--keep-storage", "some"]),
    );
    assert!(err.contains("--keep-storage: invalid size: some"), "{err}");
}

// Regression: with the base image's checkout dropped and the build's layers kept, a run
// checked out the whole image (the layers' files written again) and a build on top did
// too; only the base's checkout is missing, and only it is made again.
#[test]
fn layers_kept_without_their_base_need_only_the_base_checked_out() {
    let st = Bench::checked_out("compact-base");
    st.build_vv("img", "FROM busybox\nRUN echo layer > /f\n", &[]);
    let img = st.commit("img");
    let layer = st.storage().join("layers").join(&img);
    assert!(layer.is_dir(), "the RUN kept no layer");
    let base = st.names("checkouts");
    assert_eq!(base.len(), 1, "{base:?}");
    assert_ne!(base[0], img);
    // Room for the layer, not for busybox's checkout.
    let err = st.gc(Some(&(disk_use(&[&layer]) + 1024).to_string()));
    assert!(err.contains("materialized trees: removed 1"), "{err}");
    assert!(layer.is_dir() && st.names("checkouts").is_empty());
    assert_eq!(st.run("img", "cat /f; ls /bin/sh"), "layer\n/bin/sh\n");
    assert_eq!(
        st.names("checkouts"),
        base,
        "not the base alone checked out"
    );
    // A build on top: the same, from the build's side.
    st.gc(Some(&(disk_use(&[&layer]) + 1024).to_string()));
    let log = st.build_vv("top", "FROM img\nRUN cat /f > /g\n", &[]);
    assert!(
        log.contains("checking out ") && log.contains(" below 1 kept layers of "),
        "{log}"
    );
    assert_eq!(st.names("checkouts"), base);
    assert_eq!(st.run("top", "cat /g"), "layer\n");
    st.fsck_both();
}

// Regression: with a big RUN's layer dropped and the small layer above it kept, `ch-run
// NAME` checked out the big RUN's commit below the kept layer: a checkout no image links,
// which the next writer alone removed, so that every run after it wrote the whole tree
// again. The image's own checkout lasts.
#[test]
fn run_over_kept_layers_whose_base_is_no_image_checks_out_the_image_once() {
    let st = Bench::checked_out("compact-mid");
    let df = "FROM busybox\n\
              RUN mkdir /r && i=0; while [ $i -lt 300 ]; do echo $i > /r/f$i; i=$((i+1)); done\n\
              RUN echo top > /t\n";
    st.build_vv("img", df, &[]);
    let img = st.commit("img");
    let top = st.storage().join("layers").join(&img);
    assert!(top.is_dir(), "the last RUN kept no layer");
    // Room for the last RUN's layer, not for the big one below it nor busybox's checkout.
    st.gc(Some(&(disk_use(&[&top]) + 1024).to_string()));
    assert_eq!(st.names("layers"), vec![img.clone()]);
    assert_eq!(st.names("checkouts"), Vec::<String>::new());
    assert_eq!(st.run("img", "cat /t; ls /r | wc -l"), "top\n300\n");
    assert_eq!(
        st.names("checkouts"),
        vec![img.clone()],
        "not the image checked out"
    );
    let co = st.storage().join("checkouts").join(&img);
    let ino = std::fs::metadata(&co).expect("stat").ino();
    // A writer alone removes the checkouts no image links; the next run writes nothing.
    let log = st.build_vv("img", df, &[]);
    assert_eq!(marks(&log), "**", "{log}");
    assert_eq!(st.run("img", "cat /t"), "top\n");
    assert_eq!(
        std::fs::metadata(&co).expect("stat").ino(),
        ino,
        "checked out again"
    );
    // A build on the image: the same, from the build's side.
    st.gc(Some(&(disk_use(&[&top]) + 1024).to_string()));
    assert_eq!(st.names("checkouts"), Vec::<String>::new());
    st.build_vv("next", "FROM img\nRUN cat /t > /u\n", &[]);
    assert_eq!(
        st.names("checkouts"),
        vec![img],
        "not the image checked out"
    );
    assert_eq!(st.run("next", "cat /u"), "top\n");
    st.fsck_both();
}

// Regression: an image whose last step changed no file (`RUN true`) ran from a checkout
// of its parent's commit once every tree was dropped: no image links that checkout, so
// the next writer alone removed it and the next run wrote it again.
#[test]
fn run_of_an_image_whose_last_step_changed_nothing_checks_out_the_image() {
    let st = Bench::checked_out("compact-same");
    let df = "FROM busybox\nRUN echo layer > /f\nRUN true\n";
    st.build_vv("img", df, &[]);
    let img = st.commit("img");
    st.gc(Some("0"));
    assert_eq!(st.run("img", "cat /f"), "layer\n");
    assert_eq!(
        st.names("checkouts"),
        vec![img.clone()],
        "not the image checked out"
    );
    let log = st.build_vv("img", df, &[]);
    assert_eq!(marks(&log), "**", "{log}");
    assert_eq!(
        st.names("checkouts"),
        vec![img],
        "the image's checkout removed"
    );
}

// Regression: `ch-run -w NAME`, refused with or without --unsafe, first had ch-image
// check the whole image out (the base's files and the kept layers' written again) only
// to print the refusal.
#[test]
fn write_by_name_is_refused_before_anything_is_checked_out() {
    let st = Bench::checked_out("compact-write");
    st.build_vv("img", "FROM busybox\nRUN echo layer > /f\n", &[]);
    st.gc(Some("0"));
    for extra in [&[][..], &["--unsafe"][..]] {
        let (_, err) = fails(
            tool("ch-run")
                .arg("-w")
                .args(extra)
                .arg("-s")
                .arg(st.storage())
                .args(["img", "--", "true"]),
        );
        assert!(
            err.contains("--write invalid when running by name"),
            "{extra:?}: {err}"
        );
        assert_eq!(
            st.names("checkouts"),
            Vec::<String>::new(),
            "{extra:?}: checked out for a refused run"
        );
    }
    assert_eq!(st.run("img", "cat /f"), "layer\n");
}

// Regression: in a storage directory whose path is not UTF-8 (ch-run takes any bytes, as
// Charliecloud does), every RUN failed with "can't overlay: No such file or directory",
// and so did `ch-run NAME` from kept layers: the overlay options held a lossy copy of the
// lower directories' paths. `ch-image checkout --view` hands the paths over as bytes.
#[test]
fn layers_in_a_storage_directory_whose_path_is_not_utf8_build_and_run() {
    use std::os::unix::ffi::OsStrExt;
    let s = Scratch::new("compact-bytes");
    let st = s.join(std::ffi::OsStr::from_bytes(b"st-\xff"));
    let image = || {
        let mut c = tool("ch-image");
        c.arg("-s").arg(&st).env_remove("CH_IMAGE_CACHE");
        c
    };
    ok(image().arg("import").arg(busybox_rootfs()).arg("busybox"));
    ok(image().args(["checkout", "busybox"]));
    let ctx = s.join("ctx");
    sh(&format!(
        "mkdir '{0}' && printf 'FROM busybox\\nRUN echo layer > /f\\n' > '{0}/Dockerfile'",
        ctx.display()
    ));
    ok(image().args(["build", "-t", "img"]).arg(&ctx));
    // The layer kept, busybox's checkout dropped.
    ok(image().args(["build-cache", "--gc", "--keep-storage", "256K"]));
    let names = |d: &str| std::fs::read_dir(st.join(d)).expect("read_dir").count();
    assert_eq!((names("checkouts"), names("layers")), (0, 1));
    let run = |args: &[&str]| ok(tool("ch-run").arg("-s").arg(&st).args(args));
    assert_eq!(run(&["img", "--", "cat", "/f"]), "layer\n");
    assert_eq!(
        run(&["-W", "img", "--", "sh", "-c", "echo x >> /f; cat /f"]),
        "layer\nx\n"
    );
    assert_eq!(names("checkouts"), 1, "not the base alone checked out");
    ok(image().arg("fsck"));
}

#[test]
fn kill_9_while_dropping_trees_leaves_a_usable_store() {
    let st = Bench::checked_out("compact-kill");
    // Busybox and 20,000 files in 100 directories: a checkout that takes a while to
    // remove.
    let big = st.s.join("big");
    sh(&format!(
        "cp -a '{1}' '{0}' && mkdir '{0}/data' && cd '{0}/data' && i=0; while [ $i -lt 100 ]; do mkdir d$i; \
         j=0; while [ $j -lt 200 ]; do echo \"$i $j\" > d$i/f$j; j=$((j+1)); done; i=$((i+1)); done",
        big.display(),
        busybox_rootfs().display()
    ));
    ok(st.image().arg("import").arg(&big).arg("big"));
    let tmp = st.storage().join("tmp");
    let mut killed = false;
    for _ in 0..5 {
        ok(st.image().args(["checkout", "big"]));
        st.gc(None);
        // Killed once the drop has begun: a tree renamed into tmp/ for removal.
        let mut child = crate::common::Reaped(
            st.image()
                .args(["build-cache", "--gc", "--keep-storage", "0"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn gc"),
        );
        let dropping = || {
            std::fs::read_dir(&tmp)
                .map(|rd| {
                    rd.flatten()
                        .any(|e| e.file_name().to_string_lossy().starts_with("drop."))
                })
                .unwrap_or(false)
        };
        let mut running = true;
        while !dropping() {
            if child.0.try_wait().expect("try_wait").is_some() {
                running = false;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        child.0.kill().ok();
        child.0.wait().expect("wait");
        if running && dropping() {
            killed = true;
            break;
        }
    }
    assert!(killed, "the drop always finished before the kill");
    // The repository is whole; what the store reports is the killed writer's scratch
    // entry and nothing else (no half tree among the checkouts and layers).
    let mut g = crate::common::unpriv("git");
    g.arg("-C")
        .arg(st.storage().join("repo.git"))
        .args(["fsck", "--no-progress", "--no-dangling"])
        .env("HOME", &st.s.path)
        .env("GIT_CONFIG_NOSYSTEM", "1");
    ok(&mut g);
    // (Said on standard error, and not damage: fsck passes.)
    let out = output(st.image().arg("fsck"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    for l in err.lines().filter(|l| l.contains("not damage")) {
        assert!(
            l.contains("/tmp/drop.") && l.contains("scratch file of a writer that is gone"),
            "{l}"
        );
    }
    // The images run (the next writer clears tmp/), and then the store checks clean.
    assert_eq!(st.run("big", "cat /data/d99/f199"), "99 199\n");
    assert_eq!(st.run("busybox", "echo ok"), "ok\n");
    assert!(st.names("tmp").is_empty(), "{:?}", st.names("tmp"));
    st.fsck_both();
    st.gc(Some("0"));
    st.fsck_both();
}

/// The store the bench measures, in small: `STORAGE` holds only the git objects and
/// what is in use after `--keep-storage 0`.
#[test]
fn keep_storage_0_leaves_the_repository_and_nothing_materialized() {
    let st = Bench::checked_out("compact-min");
    context(&st);
    st.build_vv("img", DF, SDE);
    st.gc(Some("0"));
    let root = st.storage();
    let all = disk_use(&[&root]);
    let repo = disk_use(&[root.join("repo.git")]);
    // Besides the repository: directories, links, the lock, locks/, stat cache.
    assert!(
        all - repo < 256 * 1024,
        "store {all} bytes, repository {repo}: {} bytes materialized",
        all - repo
    );
}

#[test]
fn keep_storage_waits_for_a_container_run_by_name_and_leaves_its_trees_alone() {
    let st = Bench::checked_out("compact-busy");
    context(&st);
    st.build_vv("img", DF, SDE);
    let sync = st.s.join("sync");
    sh(&format!("mkdir '{}'", sync.display()));
    // The container runs from img's layers over busybox's checkout until told to go on.
    let mut container = crate::common::Reaped(
        tool("ch-run")
            .arg("-s")
            .arg(st.storage())
            .arg("-b")
            .arg(format!("{}:/mnt", sync.display()))
            .args(["img", "--", "/bin/sh", "-c"])
            .arg("touch /mnt/started; while [ ! -e /mnt/go ]; do sleep 1; done; cat /r/f299 /lines")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn ch-run"),
    );
    crate::common::wait_for("the container to start", 120, || {
        sync.join("started").exists()
    });
    let mut gc = crate::common::Reaped(
        st.image()
            .args(["build-cache", "--gc", "--keep-storage", "0"])
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gc"),
    );
    let mut gc_err = std::io::BufReader::new(gc.0.stderr.take().expect("gc stderr"));
    let mut line = String::new();
    loop {
        line.clear();
        let n = std::io::BufRead::read_line(&mut gc_err, &mut line).expect("read gc stderr");
        assert!(n > 0, "gc did not wait for the running container");
        if line.contains("waiting for lock on storage directory") {
            break;
        }
    }
    assert!(
        gc.0.try_wait().expect("try_wait").is_none(),
        "gc finished early"
    );
    assert_eq!(st.names("layers").len(), 3);
    std::fs::write(sync.join("go"), "").expect("write go");
    let mut out = String::new();
    let stdout = container.0.stdout.as_mut().expect("piped stdout");
    std::io::Read::read_to_string(stdout, &mut out).expect("read container stdout");
    assert!(container.0.wait().expect("wait").success(), "{out}");
    assert_eq!(out, "299\n40\n");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut gc_err, &mut rest).expect("read gc stderr");
    assert!(gc.0.wait().expect("wait gc").success(), "{rest}");
    assert_eq!(st.names("layers"), Vec::<String>::new());
    st.fsck_both();
}

// Compaction of the packs imports store uncompressed (docs/store-format.md, "Stored packs
// and compaction").

/// A context directory `big`: busybox and 300 files of 40 KB of text (12 MB, about
/// 0.3 MB compressed): an import of it writes stored packs over the 8 MiB at which
/// compaction starts by itself.
fn big_tree(st: &Bench) -> std::path::PathBuf {
    ok(std::process::Command::new("cp")
        .arg("-a")
        .arg(busybox_rootfs())
        .arg(st.ctx.join("big")));
    for i in 0..300 {
        st.write(
            &format!("big/d{}/f{i}", i % 10),
            &format!("file {i} line\n").repeat(2600),
        );
    }
    st.ctx.join("big")
}

impl Bench {
    /// The stored packs the marker lists and that exist.
    fn stored_packs(&self) -> Vec<String> {
        let repo = self.storage().join("repo.git");
        let marker = std::fs::read_to_string(repo.join("objects/info/grove-stored-packs"))
            .unwrap_or_default();
        marker
            .lines()
            .filter(|n| repo.join(format!("objects/pack/{n}.pack")).exists())
            .map(str::to_string)
            .collect()
    }

    /// Every object id in the repository, sorted.
    fn object_ids(&self) -> Vec<String> {
        let out = self.git(&[
            "cat-file",
            "--batch-all-objects",
            "--batch-check=%(objectname)",
        ]);
        out.lines().map(str::to_string).collect()
    }

    fn import_big(&self, auto: bool) {
        let mut c = self.image();
        if !auto {
            c.env("CH_IMAGE_AUTO_COMPACT", "no");
        }
        ok(c.arg("import").arg(big_tree(self)).arg("big"));
    }
}

#[test]
fn build_cache_compact_compresses_the_packs_an_import_stored_and_keeps_every_object() {
    let st = Bench::new("compact-packs");
    st.import_big(false);
    let repo = st.storage().join("repo.git");
    let stored = st.stored_packs();
    assert!(!stored.is_empty(), "the import stored no pack");
    assert!(
        !repo.join("grove-compact.log").exists(),
        "compaction started though asked not to"
    );
    let objects = st.object_ids();
    let before = disk_use(&[&repo]);
    assert!(before > 12_000_000, "{before}");

    let err =
        String::from_utf8_lossy(&output(st.image().args(["build-cache", "--compact"])).stderr)
            .into_owned();
    assert!(
        err.contains(&format!("compacted {} stored pack", stored.len())),
        "{err}"
    );
    assert!(st.stored_packs().is_empty(), "{:?}", st.stored_packs());
    for n in &stored {
        assert!(!repo.join(format!("objects/pack/{n}.idx")).exists(), "{n}");
    }
    let after = disk_use(&[&repo]);
    assert!(after * 4 < before, "{before} -> {after}");
    assert_eq!(st.object_ids(), objects);
    st.fsck_both();
    assert_eq!(st.run("big", "tail -n 1 /d7/f257"), "file 257 line\n");
    // Nothing left: a second one says nothing.
    let again = ok(st.image().args(["build-cache", "--compact"]));
    assert!(again.contains("images:"), "{again}");
}

#[test]
fn an_import_of_8_mib_or_more_compresses_its_packs_in_the_background() {
    let st = Bench::new("compact-auto");
    let log = st.storage().join("repo.git/grove-compact.log");
    // busybox (Bench::new) stored too little to start one.
    assert!(!log.exists(), "compaction started after a small import");
    let objects_before = st.object_ids().len();
    st.import_big(true);
    // The compaction (nice 19) holds its lock from before the import returned to its
    // end, and `ch-image fsck` waits for it: once fsck is done, so is the compaction.
    ok(st.image().arg("fsck"));
    let said = std::fs::read_to_string(&log).expect("no compaction log");
    assert!(said.contains("compacted"), "{said}");
    assert!(said.contains("stored pack"), "{said}");
    assert!(st.stored_packs().is_empty(), "{:?}", st.stored_packs());
    assert!(st.object_ids().len() > objects_before + 300);
    st.fsck_both();
    assert_eq!(st.run("big", "head -n 1 /d3/f13"), "file 13 line\n");
}

/// In CI (`CI=true`) a command that starts a compaction waits for it, and one that finds
/// a compaction running waits too: the CI system saves the storage directory (zip, tar)
/// as soon as the script ends, and a compaction removing packs under the archiver left a
/// copy without objects (a GitLab-style zip of the store after an import and a build:
/// `git fsck` found missing blobs, and the next job's build failed, "can't find blob").
#[test]
fn in_ci_a_command_returns_only_when_its_compaction_is_done() {
    let st = Bench::new("compact-ci");
    let log = st.storage().join("repo.git/grove-compact.log");
    let big = big_tree(&st);
    ok(st
        .image()
        .env("CI", "true")
        .arg("import")
        .arg(&big)
        .arg("big"));
    assert!(
        background_compaction(&st.storage()).is_none(),
        "a compaction still runs after the command returned"
    );
    assert!(st.stored_packs().is_empty(), "{:?}", st.stored_packs());
    let said = std::fs::read_to_string(&log).expect("no compaction log");
    assert!(said.contains("compacted"), "{said}");
    // One started in the background by a command outside CI: the next command in CI
    // (a build storing too little to start one) waits for it.
    for i in 0..300 {
        st.write(
            &format!("big/d{}/f{i}", i % 10),
            &format!("file {i} second line\n").repeat(2600),
        );
    }
    ok(st.image().arg("import").arg(&big).arg("big2"));
    let running = background_compaction(&st.storage()).is_some();
    ok(st
        .build_cmd("t", "FROM big2\nRUN true\n", &[])
        .env("CI", "true"));
    assert!(background_compaction(&st.storage()).is_none());
    assert!(st.stored_packs().is_empty(), "running before: {running}");
    st.fsck_both();
    assert_eq!(st.run("big", "tail -n 1 /d7/f257"), "file 257 line\n");
}

/// kill -9 of a compaction at points through its work: the store stays whole (git fsck,
/// every object, the image runs), and a compaction after it finishes the job.
#[test]
fn a_compaction_killed_at_any_point_leaves_a_whole_store_that_compacts_later() {
    let st = Bench::new("compact-kill");
    st.import_big(false);
    let objects = st.object_ids();
    let mut killed = 0;
    for delay_ms in [0, 10, 30, 60, 100, 200, 400] {
        if st.stored_packs().is_empty() {
            break;
        }
        let mut child = st
            .image()
            .args(["build-cache", "--compact"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start compaction");
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        if child.try_wait().expect("wait").is_none() {
            killed += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        st.fsck();
        assert_eq!(st.object_ids(), objects, "after a kill at {delay_ms} ms");
        assert_eq!(st.run("big", "tail -n 1 /d5/f95"), "file 95 line\n");
    }
    assert!(killed > 0, "every compaction ended before its kill");
    ok(st.image().args(["build-cache", "--compact"]));
    assert!(st.stored_packs().is_empty(), "{:?}", st.stored_packs());
    assert_eq!(st.object_ids(), objects);
    st.fsck_both();
}

/// The process of the background compaction started by the last command on `storage`,
/// if it still runs (found by its command line).
fn background_compaction(storage: &Path) -> Option<u32> {
    let want = storage.to_string_lossy().into_owned();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        (args.iter().any(|a| a == "--background") && args.contains(&want)).then_some(pid)
    })
}

/// The background compaction holds the compaction lock it inherited, and no other
/// descriptor the command had (a script reading a pipe it gave the command would wait for
/// the compaction), and a store removed while it runs is not made again.
#[test]
fn the_background_compaction_keeps_only_its_lock_and_never_remakes_a_removed_store() {
    let st = Bench::new("compact-fds");
    let big = big_tree(&st);
    let handed = st.s.join("handed-to-import");
    std::fs::write(&handed, "").expect("write");
    crate::common::own(&handed);
    // Under load (the whole suite at once) the compaction may be over before the scan of
    // /proc sees it: import again into a new store, a few times, before failing.
    let mut pid = None;
    for _ in 0..5 {
        let _ = std::fs::remove_dir_all(st.storage());
        ok(crate::common::unpriv("sh").arg("-c").arg(format!(
            "exec {} -s {} import {} big 3>>{}",
            crate::common::bin("ch-image").display(),
            st.storage().display(),
            big.display(),
            handed.display()
        )));
        pid = background_compaction(&st.storage());
        if pid.is_some() {
            break;
        }
        let log = std::fs::read_to_string(st.storage().join("repo.git/grove-compact.log"))
            .unwrap_or_default();
        assert!(log.contains("compacted"), "no compaction started: {log}");
    }
    let pid = pid.expect("the compaction was over before it was seen, five times");
    let fds: Vec<std::path::PathBuf> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    if !fds.is_empty() {
        assert!(!fds.contains(&handed), "{fds:?}");
        assert!(
            fds.iter()
                .any(|f| f.ends_with("repo.git/objects/info/grove-compact.lock")),
            "{fds:?}"
        );
    }
    // Removed under it: the compaction ends, and the store stays removed.
    std::fs::remove_dir_all(st.storage()).expect("remove the store");
    crate::common::wait_for("the compaction to end", 120, || {
        background_compaction(&st.storage()).is_none()
    });
    assert!(!st.storage().exists(), "a removed store was made again");
}

/// `ch-convert` into the store compresses what it stored as an import does.
#[test]
fn ch_convert_into_the_store_compresses_its_packs_in_the_background() {
    let st = Bench::new("compact-convert");
    let big = big_tree(&st);
    ok(tool("ch-convert")
        .arg("-s")
        .arg(st.storage())
        .arg(&big)
        .arg("big"));
    ok(st.image().arg("fsck"));
    let log = std::fs::read_to_string(st.storage().join("repo.git/grove-compact.log"))
        .expect("no compaction log");
    assert!(log.contains("compacted"), "{log}");
    assert!(st.stored_packs().is_empty(), "{:?}", st.stored_packs());
    assert_eq!(st.run("big", "tail -n 1 /d1/f11"), "file 11 line\n");
}

/// An incompressible blob of 16 MiB or more fills a pack chunk alone, and compaction
/// writes it as the same stored blocks: the compressed pack comes out byte for byte the
/// stored one, under the same name. Compaction removed that name as a stored pack, and
/// with it the blob's only copy (git fsck: missing blob).
#[test]
fn compaction_keeps_a_blob_whose_compressed_pack_is_the_stored_one() {
    let st = Bench::new("compact-same-pack");
    // Enough files for the import to write packs; three incompressible blobs over 16 MiB,
    // of which at least one comes to a chunk alone, at import and at compaction.
    for i in 0..300 {
        st.write(&format!("rand/small/f{i}"), &format!("small {i}\n"));
    }
    crate::common::sh(&format!(
        "for n in 1 2 3; do head -c 17000000 /dev/urandom > '{}/rand/noise'$n; done",
        st.ctx.display()
    ));
    ok(st
        .image()
        .env("CH_IMAGE_AUTO_COMPACT", "no")
        .arg("import")
        .arg(st.ctx.join("rand"))
        .arg("noise"));
    let stored = st.stored_packs();
    assert!(!stored.is_empty(), "the import stored no pack");
    let objects = st.object_ids();
    ok(st.image().args(["build-cache", "--compact"]));
    assert!(st.stored_packs().is_empty(), "{:?}", st.stored_packs());
    let after = st.object_ids();
    let lost: Vec<&String> = objects.iter().filter(|o| !after.contains(o)).collect();
    assert!(lost.is_empty(), "compaction lost {lost:?}");
    st.fsck_both();
    let tar = st.s.join("noise.tar");
    ok(tool("ch-convert")
        .arg("-s")
        .arg(st.storage())
        .args(["-i", "ch-image", "noise"])
        .arg(&tar));
    for n in 1..=3 {
        crate::common::sh(&format!(
            "tar -xOf '{}' ./noise{n} | cmp - '{}/rand/noise{n}'",
            tar.display(),
            st.ctx.display()
        ));
    }
}

/// Exports to tar, tar.gz and SquashFS while the background compaction replaces the packs
/// under them (blobs read ahead on every core) give the bytes of
/// exports from a store that has none running, and the store stays whole.
#[test]
fn exports_during_a_background_compaction_equal_those_of_a_quiet_store() {
    let quiet = Bench::new("compact-export-quiet");
    let busy = Bench::new("compact-export-busy");
    let big = big_tree(&quiet);
    let convert = |st: &Bench, out: &str| -> Vec<u8> {
        let path = st.s.join(out);
        ok(tool("ch-convert")
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .arg("-s")
            .arg(st.storage())
            .args(["-i", "ch-image", "big"])
            .arg(&path));
        std::fs::read(&path).expect("read export")
    };
    ok(quiet
        .image()
        .env("CH_IMAGE_AUTO_COMPACT", "no")
        .arg("import")
        .arg(&big)
        .arg("big"));
    let formats = ["big.tar", "big.sqfs", "big.tar.gz"];
    let expected: Vec<Vec<u8>> = formats.iter().map(|f| convert(&quiet, f)).collect();
    ok(busy.image().arg("import").arg(&big).arg("big"));
    let mut overlapped = 0;
    for round in 0..2 {
        // tar.gz (slow in a debug build) once.
        for (out, want) in formats.iter().zip(&expected).take(3 - round) {
            let running = background_compaction(&busy.storage()).is_some();
            overlapped += usize::from(running);
            assert!(
                convert(&busy, out) == *want,
                "{out} (round {round}, compaction running: {running}) differs"
            );
        }
    }
    eprintln!("exports started while the compaction ran: {overlapped} of 5");
    busy.fsck_both();
    assert!(busy.stored_packs().is_empty(), "{:?}", busy.stored_packs());
}

// `ch-run NAME` resolves NAME under its run lease, then has `ch-image checkout` make and
// check the view; a build tagging NAME again in between must not make it run (or verify)
// another commit than the one it resolved: it passes the commit.
#[test]
fn checkout_for_ch_run_uses_the_commit_it_was_given_not_what_the_name_names_now() {
    let st = Bench::checked_out("compact-commit");
    st.build_vv("img", "FROM busybox\nRUN echo one > /f\n", &[]);
    let old = st.commit("img");
    st.build_vv("img", "FROM busybox\nRUN echo two > /f\n", &[]);
    assert_ne!(st.commit("img"), old);
    let view = |commit: &str| {
        let out = output(
            st.image()
                .args(["checkout", "--view"])
                .arg(format!("--commit={commit}"))
                .arg("img"),
        );
        (
            out.status.success(),
            out.stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (okay, stdout, err) = view(&old);
    assert!(okay, "{err}");
    let dirs: Vec<String> = stdout
        .split(|b| *b == 0)
        .filter(|d| !d.is_empty())
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .collect();
    assert!(dirs[0].ends_with(&old), "{dirs:?}");
    assert_eq!(
        std::fs::read_to_string(format!("{}/f", dirs[0])).expect("read"),
        "one\n"
    );
    // Not a commit of an image of this store.
    for bad in ["0123456789012345678901234567890123456789", "junk"] {
        let (okay, _, err) = view(bad);
        assert!(!okay);
        assert!(
            err.contains(&format!("no image named commit {bad} in storage")),
            "{err}"
        );
    }
}
