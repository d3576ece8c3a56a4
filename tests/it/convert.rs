//! Integration tests for convert: `ch-convert` between the store (`ch-image`), directories
//! and tarballs, run as the unprivileged test user. Tree snapshots and store helpers come
//! from the store tests.

use std::path::Path;

use crate::common::{busybox_rootfs, fails, ok, sh, Scratch};
use crate::store::{
    as_image, awkward, chc, commit_of, hostile_tar, import, list_long, store_state, tree,
};

/// Names in `dir` that look like ch-convert staging paths (`.NAME.ch-convert.PID`).
fn staging_leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".ch-convert."))
        .collect()
}

/// The snapshot `ch-convert -o dir` gives of an image whose snapshot is `want`: the mount
/// points ch-run needs are added where nothing is at that path (directories mode 0755,
/// empty files mode 0644), as Charliecloud's `dir_fixup` does.
pub fn with_mount_points(mut want: tree::Map) -> tree::Map {
    let dirs = [
        "bin", "dev", "etc", "mnt", "mnt/0", "mnt/1", "mnt/2", "mnt/3", "mnt/4", "mnt/5", "mnt/6",
        "mnt/7", "mnt/8", "mnt/9", "proc", "sys", "tmp", "usr",
    ];
    let files = ["etc/hosts", "etc/resolv.conf"];
    let empty = blake3::hash(b"").to_hex()[..20].to_string();
    for (p, is_dir) in dirs
        .iter()
        .map(|p| (p, true))
        .chain(files.iter().map(|p| (p, false)))
    {
        let key = p.as_bytes().to_vec();
        let parent = match p.rfind('/') {
            Some(i) => p.as_bytes()[..i].to_vec(),
            None => Vec::new(),
        };
        if want.contains_key(&key) || want.get(&parent).map(|e| e.kind) != Some('d') {
            continue;
        }
        let e = tree::Entry {
            kind: if is_dir { 'd' } else { 'f' },
            mode: if is_dir { 0o755 } else { 0o644 },
            size: 0,
            hash: (!is_dir).then(|| empty.clone()),
            target: None,
            group: None,
        };
        want.insert(key, e);
    }
    want
}

fn small_tree(s: &Scratch) -> std::path::PathBuf {
    let src = s.join("small");
    sh(&format!(
        "mkdir -p {0}/a/b && echo one > {0}/a/b/f && ln -s a/b/f {0}/l && mkfifo {0}/p \
         && chmod 4755 {0}/a/b/f && ln {0}/a/b/f {0}/hard",
        src.display()
    ));
    src
}

#[test]
fn formats_are_inferred_from_the_arguments() {
    let s = Scratch::new("infer");
    let st = s.storage();
    let src = awkward(&s.join("src"));
    let want = as_image(tree::of_dir(&src));

    // dir -> ch-image (absolute path in, image name out).
    ok(chc(&st).arg(&src).arg("img"));
    let commit = commit_of(&st, "img:latest");

    // ch-image -> dir and -> tar of every compression, by extension.
    let out = s.join("out");
    ok(chc(&st).arg("img").arg(&out));
    tree::assert_same(
        &with_mount_points(want.clone()),
        &tree::of_dir(&out),
        "ch-image -> dir",
    );
    let magic: [(&str, &[u8]); 9] = [
        ("x.tar", b""),
        ("x.tar.gz", &[0x1f, 0x8b]),
        ("x.tgz", &[0x1f, 0x8b]),
        ("x.tar.zst", &[0x28, 0xb5, 0x2f, 0xfd]),
        ("x.tzst", &[0x28, 0xb5, 0x2f, 0xfd]),
        ("x.tar.xz", &[0xfd, b'7', b'z', b'X', b'Z', 0]),
        ("x.txz", &[0xfd, b'7', b'z', b'X', b'Z', 0]),
        ("x.tar.bz2", b"BZh9"),
        ("x.tbz2", b"BZh9"),
    ];
    for (i, (name, m)) in magic.iter().enumerate() {
        let t = s.join(name);
        ok(chc(&st).arg("img").arg(&t));
        let data = std::fs::read(&t).expect("read export");
        assert!(data.starts_with(m), "{name}: wrong compression");
        tree::assert_same(&want, &tree::of_tar(&t), name);
        // tar -> ch-image gives the same commit; tar -> dir the same tree.
        let img = format!("back{i}");
        ok(chc(&st).arg(&t).arg(&img));
        assert_eq!(commit_of(&st, &format!("{img}:latest")), commit, "{name}");
        let d = s.join(format!("dir{i}"));
        ok(chc(&st).arg(&t).arg(&d));
        tree::assert_same(
            &with_mount_points(want.clone()),
            &tree::of_dir(&d),
            &format!("{name} -> dir"),
        );
    }

    // dir -> tar, without the store.
    let t = s.join("direct.tar");
    ok(chc(&st).arg(&src).arg(&t));
    tree::assert_same(&want, &tree::of_tar(&t), "dir -> tar");

    // Explicit formats override inference: a relative name is a directory with -o dir.
    let mut c = chc(&st);
    c.current_dir(&s.path)
        .args(["-o", "dir", "img", "relative-out"]);
    ok(&mut c);
    tree::assert_same(
        &with_mount_points(want.clone()),
        &tree::of_dir(&s.join("relative-out")),
        "-o dir",
    );

    // Same format on both sides is refused; a dry run does nothing.
    let (_, err) = fails(chc(&st).args(["img", "other"]));
    assert!(err.contains("must be different"), "{err}");
    let dry = s.join("dry");
    ok(chc(&st).arg("-n").arg("img").arg(&dry));
    assert!(!dry.exists());
}

/// A conversion of a directory to a tarball stores the directory's files in the store's
/// objects, which no ref reaches until the tarball is written: it holds the writer lock,
/// so that a `build-cache --gc` (which takes the lock alone and removes packs no ref
/// reaches) waits for it. Before, it took no lock, and a gc meanwhile could remove its
/// objects under it (the reviewer's finding). Here a holder of the lock alone (`flock
/// -x`, as gc) makes the conversion wait until it lets go.
#[test]
fn a_conversion_into_the_store_s_objects_waits_for_a_gc_holding_the_lock() {
    let s = Scratch::new("convlock");
    let st = s.storage();
    ok(crate::common::tool("ch-image")
        .arg("-s")
        .arg(&st)
        .arg("list"));
    let lock = st.join("lock");
    assert!(lock.exists(), "no lock file at {}", lock.display());
    let mut holder = crate::common::Reaped(
        // -o: flock itself holds the lock (not its child), so killing it lets go.
        std::process::Command::new("flock")
            .args(["-x", "-o"])
            .arg(&lock)
            .args(["sleep", "120"])
            .spawn()
            .expect("spawn flock"),
    );
    // flock has the lock once the lock file is held: wait for that.
    let held = || {
        !std::process::Command::new("flock")
            .args(["-n", "-s"])
            .arg(&lock)
            .arg("true")
            .status()
            .expect("flock -n")
            .success()
    };
    let start = std::time::Instant::now();
    while !held() && start.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(held(), "flock did not take the lock");
    let src = small_tree(&s);
    let out = s.join("out.tar");
    let mut conv = chc(&st);
    conv.arg(&src)
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut conv = crate::common::Reaped(conv.spawn().expect("spawn ch-convert"));
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        conv.0.try_wait().expect("try_wait").is_none() && !out.exists(),
        "ch-convert finished while another process held the store's lock alone"
    );
    let _ = holder.0.kill();
    let _ = holder.0.wait();
    let st_conv = conv.0.wait().expect("wait ch-convert");
    assert!(
        st_conv.success(),
        "ch-convert failed after the lock was released"
    );
    assert!(out.exists());
}

#[test]
fn existing_output_is_replaced_unless_no_clobber() {
    let s = Scratch::new("force");
    let st = s.storage();
    let src = small_tree(&s);
    let want = as_image(tree::of_dir(&src));
    ok(chc(&st).arg(&src).arg("img"));

    // An existing directory that looks like an image (bin, dev, usr), as Charliecloud's
    // ch-convert requires before it replaces one, and an existing tarball: refused with
    // --no-clobber and left as they were; replaced without it, as by Charliecloud.
    let out = s.join("out");
    let t = s.join("out.tar");
    sh(&format!(
        "mkdir -p {0}/bin {0}/dev {0}/usr && echo keep > {0}/mine && echo keep > {1}",
        out.display(),
        t.display()
    ));
    for dest in [&out, &t] {
        let before = tree::of_dir(dest);
        let (_, err) = fails(chc(&st).arg("--no-clobber").arg("img").arg(dest));
        assert!(
            err.contains("exists, not deleting per --no-clobber"),
            "{err}"
        );
        assert_eq!(tree::of_dir(dest), before, "refused output was touched");
        ok(chc(&st).arg("img").arg(dest));
    }
    tree::assert_same(
        &with_mount_points(want.clone()),
        &tree::of_dir(&out),
        "replaced dir",
    );
    tree::assert_same(&want, &tree::of_tar(&t), "replaced tar");
    // `--force`, Grove's earlier way to ask for it, still replaces.
    ok(chc(&st).arg("--force").arg("img").arg(&t));
    tree::assert_same(&want, &tree::of_tar(&t), "forced tar");

    // An existing image likewise.
    let other = s.join("other");
    sh(&format!("mkdir {0} && echo other > {0}/f", other.display()));
    let commit = commit_of(&st, "img:latest");
    let (_, err) = fails(chc(&st).arg("--no-clobber").arg(&other).arg("img"));
    assert!(err.contains("not deleting per --no-clobber"), "{err}");
    assert_eq!(commit_of(&st, "img:latest"), commit);
    ok(chc(&st).arg(&other).arg("img"));
    assert_ne!(commit_of(&st, "img:latest"), commit);
    assert!(staging_leftovers(&s.path).is_empty());
}

#[test]
fn failed_conversion_leaves_no_partial_output() {
    let s = Scratch::new("partial");
    let st = s.storage();
    let src = small_tree(&s);
    ok(chc(&st).arg(&src).arg("img"));
    let state = store_state(&st);

    // Export of an image that does not exist.
    for name in ["out", "out.tar", "out.tar.gz"] {
        let dest = s.join(name);
        let (_, err) = fails(chc(&st).arg("nonexistent").arg(&dest));
        assert!(err.contains("nonexistent"), "{err}");
        assert!(!dest.exists(), "{name} left behind");
    }

    // A corrupt tarball into a directory and into the store.
    let big = s.join("big.tar");
    hostile_tar(&s, "big", &big);
    sh(&format!(
        "cd {} && head -c 100000 big.tar > cut.tar",
        s.path.display()
    ));
    let cut = s.join("cut.tar");
    let dest = s.join("from-cut");
    let (_, err) = fails(chc(&st).arg(&cut).arg(&dest));
    assert!(err.contains("ok/big"), "{err}");
    assert!(!dest.exists(), "partial directory left behind");
    let (_, err) = fails(chc(&st).arg(&cut).arg("cut"));
    assert!(err.contains("ok/big"), "{err}");

    // With --force, a failed conversion keeps the existing output.
    let keep = s.join("keep");
    sh(&format!(
        "mkdir {0} && echo keep > {0}/mine",
        keep.display()
    ));
    let before = tree::of_dir(&keep);
    fails(chc(&st).arg("--force").arg(&cut).arg(&keep));
    assert_eq!(tree::of_dir(&keep), before);

    assert!(
        staging_leftovers(&s.path).is_empty(),
        "{:?}",
        staging_leftovers(&s.path)
    );
    assert_eq!(
        store_state(&st),
        state,
        "store changed by failed conversions"
    );
}

#[test]
fn a_bad_image_reference_says_where_and_hints_at_the_syntax() {
    let s = Scratch::new("badref");
    let st = s.storage();
    let src = small_tree(&s);
    ok(chc(&st).arg(&src).arg("img"));
    // As ch-image: where the reference goes wrong, then the FAQ entry and why.
    let (code, err) = fails(chc(&st).arg("bad:ref:x").arg(s.join("out.tar")));
    assert_eq!(code, 1);
    assert!(
        err.contains("error: image ref syntax, char 4: bad:ref:x"),
        "{err}"
    );
    assert!(
        err.contains(
            "hint: https://hpc.github.io/charliecloud/faq.html#how-do-i-specify-an-image-reference"
        ),
        "{err}"
    );
    let (_, err) = fails(chc(&st).arg(&src).arg("Bad*Name"));
    assert!(err.contains("image ref syntax"), "{err}");
    assert!(err.contains("hint: "), "{err}");
}

#[test]
fn tar_to_image_and_dir_go_through_import_checks() {
    let s = Scratch::new("convchecks");
    let st = s.storage();
    let src = small_tree(&s);
    ok(chc(&st).arg(&src).arg("existing"));
    let state = store_state(&st);
    for (kind, text) in [
        ("through-symlink", "member link/passwd"),
        ("dotdot", "member ok/../../escape"),
        ("absolute", "member /etc/evil"),
    ] {
        let t = s.join(format!("{kind}.tar"));
        hostile_tar(&s, kind, &t);
        for img in ["fresh", "existing"] {
            let (_, err) = fails(chc(&st).arg("--force").arg(&t).arg(img));
            assert!(err.contains(text), "{kind} -> {img}: {err}");
        }
        let d = s.join(format!("{kind}-dir"));
        let (_, err) = fails(chc(&st).arg(&t).arg(&d));
        assert!(err.contains(text), "{kind} -> dir: {err}");
        assert!(!d.exists());
        assert_eq!(store_state(&st), state, "{kind}: store changed");
    }
    // A device member is skipped with a warning, as in ch-image import.
    let t = s.join("dev.tar");
    hostile_tar(&s, "device", &t);
    ok(chc(&st).arg(&t).arg("dev"));
    let d = s.join("dev-dir");
    let o = crate::common::output(chc(&st).arg(&t).arg(&d));
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("dev/null"));
    assert!(!tree::of_dir(&d).contains_key(&b"dev/null"[..]));
    assert!(list_long(&st).contains("dev:latest\t"));
}

#[test]
fn tar_export_is_byte_for_byte_reproducible() {
    let s = Scratch::new("repro");
    let st = s.storage();
    let src = awkward(&s.join("src"));
    import(&st, &src, "img");
    for ext in ["tar", "tar.gz", "tar.zst", "tar.xz", "tar.bz2"] {
        let a = s.join(format!("a.{ext}"));
        let b = s.join(format!("b.{ext}"));
        ok(chc(&st).arg("img").arg(&a));
        ok(chc(&st).arg(&src).arg(&b));
        let (da, db) = (std::fs::read(&a).expect("a"), std::fs::read(&b).expect("b"));
        assert!(da == db, "{ext}: exports of the same tree differ");
    }
}

#[test]
fn tar_export_names_every_member_as_tar_of_the_image_directory_does() {
    // Charliecloud's ch-convert packs an image with `tar cf - .` in its directory:
    // members `./`, `./bin`, `./bin/sh`, hard link targets `./...`. Grove's tar exports
    // named the root `./` and every other member without it, one archive in two styles.
    let s = Scratch::new("dotnames");
    let st = s.storage();
    let src = awkward(&s.join("src"));
    import(&st, &src, "img");
    let out = s.join("img.tar.gz");
    ok(chc(&st).arg("img").arg(&out));
    let listing = |script: &str| -> Vec<String> {
        let o = sh(script);
        let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    let q = "--quoting-style=escape";
    let ours = listing(&format!("tar tzf '{}' {q}", out.display()));
    // What GNU tar names (`./`, `./bin/`, `./bin/script`), but for what it can't read as
    // the test user (the tree has 0000 files and directories), which the store has.
    let tars = listing(&format!(
        "tar cf - -C '{}' . 2>/dev/null | tar tf - {q}",
        src.display()
    ));
    assert!(
        tars.iter().any(|n| n.len() > 200),
        "long names are in the test"
    );
    let missing: Vec<_> = tars.iter().filter(|n| !ours.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "named otherwise than by tar: {missing:?}"
    );
    assert!(ours.iter().all(|n| n.starts_with("./")), "{ours:?}");
    let dirs = listing(&format!(
        "tar tvzf '{}' {q} | sed -n 's/^d.* \\(\\.\\/.*\\)$/\\1/p'",
        out.display()
    ));
    assert!(
        dirs.len() > 10 && dirs.iter().all(|d| d.ends_with('/')),
        "{dirs:?}"
    );
    let links = listing(&format!(
        "tar tvzf '{}' {q} | sed -n 's/.* link to //p'",
        out.display()
    ));
    assert!(!links.is_empty(), "hard links are in the test");
    assert!(links.iter().all(|l| l.starts_with("./")), "{links:?}");
    // And the archive reads back as the same image: its export is the same bytes.
    import(&st, &out, "back");
    let again = s.join("back.tar.gz");
    ok(chc(&st).arg("back").arg(&again));
    assert!(std::fs::read(&again).expect("again") == std::fs::read(&out).expect("out"));
}

#[test]
fn tar_output_with_a_compression_grove_does_not_write_is_refused() {
    // Written as a plain tar, `img.tar.lz4` would be a name that lies about the content.
    let s = Scratch::new("tar-suffix");
    let st = s.storage();
    import(&st, &busybox_rootfs(), "img");
    let out = s.join("img.tar.lz4");
    let (code, err) = fails(chc(&st).arg("img").arg(&out));
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains(
            "tar output: unknown compression .lz4 (.tar, .tar.gz, .tar.zst, .tar.xz or .tar.bz2)"
        ),
        "{err}"
    );
    assert!(!out.exists(), "nothing is written");
}

/// Digest hex of the (single) layer of OCI layout `dir`, from its index and manifest.
fn oci_layer_hex(dir: &Path) -> String {
    let read = |p: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).expect("read layout json")).expect("json")
    };
    let index = read(&dir.join("index.json"));
    let m = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest = read(&dir.join("blobs/sha256").join(&m["sha256:".len()..]));
    manifest["layers"][0]["digest"].as_str().unwrap()["sha256:".len()..].to_string()
}

#[test]
fn oci_layout_with_special_files_or_symlinks_is_refused_without_hanging() {
    let s = Scratch::new("oci-special");
    let st = s.storage();
    let src = s.join("src");
    sh(&format!(
        "mkdir -p {0} && echo hi > {0}/hello",
        src.display()
    ));
    import(&st, &src, "img");
    let good = s.join("good.oci");
    ok(chc(&st).args(["-o", "oci", "img"]).arg(&good));
    let hex = oci_layer_hex(&good);
    let state = store_state(&st);
    // Each case: a shell script run in a fresh copy of the layout (as the test user), and
    // what the error must say.
    let cases = [
        (
            "ln -sf /dev/zero blobs/sha256/$L",
            ": a symlink, not a regular file",
        ),
        (
            "rm blobs/sha256/$L && mkfifo blobs/sha256/$L",
            "a FIFO, not a regular file",
        ),
        // A host file with the right digest: still not the layout's file.
        (
            "mv blobs/sha256/$L ../outside-$L && ln -s $PWD/../outside-$L blobs/sha256/$L",
            ": a symlink, not a regular file",
        ),
        (
            "mv index.json ../index-$L.json && ln -s ../index-$L.json index.json",
            ": a symlink, not a regular file",
        ),
        (
            "mv blobs ../blobs-$L && ln -s ../blobs-$L blobs",
            "blobs: not a directory but a symlink",
        ),
        (
            "mv blobs/sha256 ../sha-$L && ln -s $PWD/../sha-$L blobs/sha256",
            "blobs/sha256: not a directory but a symlink",
        ),
        ("rm index.json && mkfifo index.json", "index.json: a FIFO"),
        (
            "head -c 17000000 /dev/zero | tr '\\0' ' ' >> index.json",
            "index.json: larger than 16777216 bytes",
        ),
    ];
    for (i, (script, want)) in cases.iter().enumerate() {
        let d = s.join(format!("case{i}.oci"));
        sh(&format!(
            "cp -a {} {d} && cd {d} && L={hex} && {script}",
            good.display(),
            d = d.display()
        ));
        let name = format!("case{i}");
        let err = crate::registry::fails_within(
            chc(&st).args(["-i", "oci"]).arg(&d).arg(&name),
            std::time::Duration::from_secs(60),
        );
        assert!(err.contains(want), "{script}: {err}");
        assert_eq!(store_state(&st), state, "{script}: store changed");
    }
    // The layout itself converts.
    ok(chc(&st).args(["-i", "oci"]).arg(&good).arg("back"));
}

/// Start `cmd` with default signal dispositions, wait until `started` holds (its output
/// begun), stop it, send `sig` (`INT`, `TERM`) and let it go on: it must end through its
/// error path, dying of the signal with an error saying so. Returns its standard error.
fn stopped_by(cmd: &mut std::process::Command, sig: &str, started: impl Fn(u32) -> bool) -> String {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let mut c = crate::common::with_default_signals(cmd);
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn ch-convert");
    let pid = child.id();
    crate::common::wait_for("the conversion's output", 600, || {
        started(pid) || child.try_wait().expect("try_wait").is_some()
    });
    crate::common::send("STOP", pid);
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "the conversion finished before the signal; make the image bigger"
    );
    crate::common::send(sig, pid);
    crate::common::send("CONT", pid);
    let out = child.wait_with_output().expect("wait for ch-convert");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let n = if sig == "INT" { 2 } else { 15 };
    assert_eq!(
        out.status.signal(),
        Some(n),
        "SIG{sig}: {}\n{err}",
        out.status
    );
    assert!(err.contains(&format!("interrupted by SIG{sig}")), "{err}");
    err
}

/// Regression: ^C (SIGINT) or SIGTERM killed ch-convert where it was: a half-written
/// `.OUT.ch-convert.PID` (tarball, directory, SquashFS file, OCI layout) stayed beside
/// the output until a conversion to the same output ten minutes later, and an input
/// read into the store stayed in its scratch space. Now each ends through its error
/// path: the partial output goes, an existing output is left as it was, the store is as
/// before, and the process dies of the signal (exit 130 or 143).
#[test]
fn convert_stopped_by_sigint_or_sigterm_removes_its_partial_output() {
    let s = Scratch::new("sigconvert");
    let st = s.storage();
    // 64 files of 1 MiB of random bytes: an export checks for a signal between entries.
    let big = s.join("big");
    sh(&format!(
        "mkdir -p {0}/bin {0}/dev {0}/usr {0}/data && cd {0}/data && head -c 64M /dev/urandom \
         | split -b 1M - f",
        big.display()
    ));
    import(&st, &big, "big");
    let state = store_state(&st);
    let out = s.join("out");
    // Existing outputs the conversions would replace: left as they are.
    sh(&format!(
        "mkdir {0} && cd {0} && echo old > old.tar && mkdir -p olddir/bin olddir/dev \
         olddir/usr && echo mine > olddir/usr/keep",
        out.display()
    ));
    crate::common::own(&out);
    let before = tree::of_dir(&out);
    let staging_begun = |name: &str| {
        let prefix = format!(".{name}.ch-convert.");
        let out = out.clone();
        move |_| {
            std::fs::read_dir(&out).is_ok_and(|rd| {
                rd.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            })
        }
    };
    let mut outputs = vec!["old.tar", "new.tar.gz", "olddir", "newdir", "new.oci"];
    if crate::common::have("tar2sqfs") || crate::common::have("mksquashfs") {
        outputs.push("new.sqfs");
    }
    for (i, name) in outputs.iter().enumerate() {
        let sig = ["INT", "TERM"][i % 2];
        let mut c = chc(&st);
        if name.ends_with(".oci") {
            c.args(["-o", "oci"]);
        }
        let err = stopped_by(c.arg("big").arg(out.join(name)), sig, staging_begun(name));
        assert_eq!(
            staging_leftovers(&out),
            Vec::<String>::new(),
            "{name}: {err}"
        );
        assert_eq!(tree::of_dir(&out), before, "{name}: {err}");
        assert_eq!(store_state(&st), state, "{name}: {err}");
    }
    // Into the store: a tarball read part-way, its objects gone again.
    let tarball = s.join("big.tar");
    sh(&format!(
        "tar -C {} -cf {} .",
        big.display(),
        tarball.display()
    ));
    let packs = crate::store::pack_files(&st);
    let err = stopped_by(chc(&st).arg(&tarball).arg("copy"), "INT", |pid| {
        // A quarter of the tarball read (/proc/PID/io).
        std::fs::read_to_string(format!("/proc/{pid}/io"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("rchar:"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 16 << 20)
    });
    assert!(!err.contains("truncated or corrupt"), "{err}");
    assert_eq!(crate::store::pack_files(&st), packs, "{err}");
    let tmp: Vec<_> = std::fs::read_dir(st.join("tmp")).expect("tmp").collect();
    assert!(tmp.is_empty(), "{tmp:?}");
    assert_eq!(store_state(&st), state, "{err}");
    // A directory: its reading stops at the file it was at (it went on to the end, then
    // stopped writing).
    let err = stopped_by(
        chc(&st).arg(&big).arg(out.join("fromdir.tar")),
        "INT",
        |pid| {
            std::fs::read_to_string(format!("/proc/{pid}/io"))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("rchar:"))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .is_some_and(|n| n > 16 << 20)
        },
    );
    assert!(
        err.contains(&format!("can't read: {}/data/f", big.display())),
        "{err}"
    );
    assert_eq!(staging_leftovers(&out), Vec::<String>::new(), "{err}");
    assert_eq!(tree::of_dir(&out), before, "{err}");
    assert_eq!(crate::store::pack_files(&st), packs, "{err}");
    assert_eq!(store_state(&st), state, "{err}");
    // A SquashFS file read through sqfs2tar: its failure once its reader is gone is not
    // the error.
    if crate::common::have("sqfs2tar") && crate::common::have("tar2sqfs") {
        let sqfs = s.join("big.sqfs");
        ok(chc(&st).arg("big").arg(&sqfs));
        let err = stopped_by(chc(&st).arg(&sqfs).arg("copy"), "TERM", |pid| {
            std::fs::read_to_string(format!("/proc/{pid}/io"))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("rchar:"))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .is_some_and(|n| n > 16 << 20)
        });
        assert!(!err.contains("sqfs2tar failed"), "{err}");
        assert_eq!(crate::store::pack_files(&st), packs, "{err}");
        assert_eq!(store_state(&st), state, "{err}");
    }
    ok(crate::store::chi(&st).arg("fsck"));
}

/// Found as a stranger: `ch-convert DIR OUT.tar` with a storage directory made
/// read-only (`chmod -R a-w`, as a site does for its compute nodes) failed with only
/// "can't open: STORE/lock: Permission denied": nothing said that the storage directory
/// is the reason (a directory input goes through the store's objects), as ch-image says.
/// No output is left.
#[test]
fn convert_with_a_read_only_storage_directory_says_so() {
    let s = Scratch::new("convert-ro-store");
    let st = s.storage();
    import(&st, &busybox_rootfs(), "bb");
    sh(&format!("chmod -R a-w '{}'", st.display()));
    let out = s.join("out.tar");
    let (code, err) = fails(chc(&st).arg(busybox_rootfs()).arg(&out));
    sh(&format!("chmod -R u+w '{}'", st.display()));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "error: storage directory is read-only (not writable by you): {}",
            st.display()
        )),
        "{err}"
    );
    assert!(!out.exists());
    assert_eq!(staging_leftovers(&s.path), Vec::<String>::new());
}
