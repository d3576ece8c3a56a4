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

/// A conversion of a directory into the store stores the directory's files in the
/// store's objects, which no ref reaches until the image is made: it holds the writer
/// lock, so that a `build-cache --gc` (which takes the lock alone and removes packs no ref
/// reaches) waits for it. Here a holder of the lock alone (flock(2), as gc) makes the
/// conversion wait until it lets go. A conversion of the directory to a tarball, which
/// reads it into a store of its own (session 32; before, into the store's objects under
/// the same lock), does not wait.
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
    // Held alone by this test process (flock(2), as gc takes it) until it lets go: a
    // `flock -x -o LOCK sleep 120` let go by itself after 120 s, and its killed flock
    // left the sleep behind.
    let holder = std::fs::File::open(&lock).expect("open lock file");
    holder.lock().expect("lock");
    let src = small_tree(&s);
    let out = s.join("out.tar");
    ok(chc(&st).arg(&src).arg(&out));
    let mut conv = chc(&st);
    conv.arg(&src)
        .arg("copy")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut conv = crate::common::Reaped(conv.spawn().expect("spawn ch-convert"));
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        conv.0.try_wait().expect("try_wait").is_none(),
        "ch-convert finished while another process held the store's lock alone"
    );
    drop(holder);
    let st_conv = conv.0.wait().expect("wait ch-convert");
    assert!(
        st_conv.success(),
        "ch-convert failed after the lock was released"
    );
    assert_eq!(
        ok(crate::store::chi(&st).arg("list")),
        "copy\n",
        "no image made"
    );
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
    // As ch-image: where the reference goes wrong, then the FAQ entry and why. Charliecloud
    // 0.31 and 0.38 stop at the second `:` (char 8), in the tag.
    let (code, err) = fails(chc(&st).arg("bad:ref:x").arg(s.join("out.tar")));
    assert_eq!(code, 1);
    assert!(
        err.contains("error: image ref syntax, char 8: bad:ref:x"),
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
    } else {
        crate::common::skip("no tar2sqfs or mksquashfs: the SquashFS output not checked");
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
    } else {
        crate::common::skip("no sqfs2tar and tar2sqfs: a SquashFS input not checked");
    }
    ok(crate::store::chi(&st).arg("fsck"));
}

/// Found as a stranger: `ch-convert -i dir IMG` with a storage directory made read-only
/// (`chmod -R a-w`, as a site does for its compute nodes) failed with only "can't open:
/// STORE/lock: Permission denied": nothing said that the storage directory is the reason,
/// as ch-image says. No image is made. (Until session 32 `ch-convert DIR OUT.tar` failed
/// so too: see the next test.)
#[test]
fn convert_into_a_read_only_storage_directory_says_so() {
    let s = Scratch::new("convert-ro-store");
    let st = s.storage();
    import(&st, &busybox_rootfs(), "bb");
    let state = store_state(&st);
    sh(&format!("chmod -R a-w '{}'", st.display()));
    let (code, err) = fails(chc(&st).arg(busybox_rootfs()).arg("copy"));
    sh(&format!("chmod -R u+w '{}'", st.display()));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "error: storage directory is read-only (not writable by you): {}",
            st.display()
        )),
        "{err}"
    );
    assert_eq!(store_state(&st), state);
}

/// Regression: every conversion went through the store's objects, so `ch-convert DIR
/// OUT.tar` (and tar to dir, SquashFS to tar, dir to OCI, ...) needed a writable storage
/// directory, and made one where there was none: with the storage directory read-only it
/// failed ("storage directory is read-only"), with `$USER` unset ("can't find storage
/// directory"), where Charliecloud's ch-convert needs no storage for them. Now only a
/// conversion from or to the `ch-image` format touches the storage directory; the others
/// read their input into a store of their own in a temporary directory (`--tmp`, else
/// `$TMPDIR`, else /var/tmp) that is gone when they end. Each direction runs with the
/// storage directory read-only, absent (under a read-only directory, so that it can't be
/// made either), and unknown (`$USER` unset, `$HOME` not writable), and gives the same
/// output.
#[test]
fn conversions_outside_the_store_need_no_storage_directory() {
    let s = Scratch::new("convert-nostore");
    let src = small_tree(&s);
    let want = as_image(tree::of_dir(&src));
    let st = s.storage();
    import(&st, &src, "img");
    let state = store_state(&st);
    sh(&format!("chmod -R a-w '{}'", st.display()));
    let ro = s.join("ro");
    sh(&format!("mkdir '{0}' && chmod 555 '{0}'", ro.display()));
    let absent = ro.join("storage");
    let temp = s.join("temp");
    sh(&format!("mkdir '{}'", temp.display()));
    crate::common::own(&temp);
    let squash = crate::common::have("tar2sqfs") || crate::common::have("mksquashfs");
    for (case, storage) in [
        ("read-only", Some(&st)),
        ("absent", Some(&absent)),
        ("unknown", None),
    ] {
        let out = s.join(case);
        sh(&format!("mkdir '{}'", out.display()));
        crate::common::own(&out);
        let o = |n: &str| out.join(n).display().to_string();
        let chc = |args: &[&str]| {
            let mut c = crate::common::tool("ch-convert");
            match storage {
                Some(st) => {
                    c.arg("-s").arg(st);
                }
                None => {
                    c.env_remove("USER").env("HOME", "/nonexistent");
                }
            }
            // The temporary directory: from $TMPDIR, or --tmp.
            if case == "read-only" {
                c.env("TMPDIR", &temp);
            } else {
                c.arg("--tmp").arg(&temp);
            }
            c.args(args);
            c
        };
        let src = src.display().to_string();
        let mut steps = vec![
            vec![src.as_str(), "t.tar"],
            vec!["t.tar", "./d-from-tar"],
            vec!["-o", "oci", src.as_str(), "o"],
            vec!["-i", "oci", "o", "./d-from-oci"],
            vec!["-o", "oci", "t.tar", "o.tar"],
        ];
        if squash {
            steps.extend([
                vec![src.as_str(), "s.sqfs"],
                vec!["t.tar", "s2.sqfs"],
                vec!["s.sqfs", "./d-from-squash"],
                vec!["s2.sqfs", "t2.tar"],
            ]);
        }
        for step in &steps {
            let args: Vec<String> = step
                .iter()
                .map(|a| match *a {
                    "-o" | "-i" | "oci" => a.to_string(),
                    a if a.starts_with('/') => a.to_string(),
                    a => o(a.trim_start_matches("./")),
                })
                .collect();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = crate::common::output(&mut chc(&args));
            assert!(
                out.status.success(),
                "{case}: ch-convert {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tree::assert_same(&want, &tree::of_tar(&out.join("t.tar")), case);
        for d in ["d-from-tar", "d-from-oci"] {
            tree::assert_same(
                &with_mount_points(want.clone()),
                &tree::of_dir(&out.join(d)),
                &format!("{case}: {d}"),
            );
        }
        if squash {
            assert_eq!(
                tree::of_dir(&out.join("d-from-squash")),
                tree::of_dir(&out.join("d-from-tar")),
                "{case}"
            );
            assert!(out.join("t2.tar").is_file(), "{case}");
        }
        assert_eq!(staging_leftovers(&out), Vec::<String>::new(), "{case}");
        let left: Vec<_> = std::fs::read_dir(&temp).expect("temp").flatten().collect();
        assert!(
            left.is_empty(),
            "{case}: temporary directory left: {left:?}"
        );
    }
    assert!(!absent.exists(), "a storage directory was made");
    // A temporary directory that can't be made says where, and what to do.
    let out = s.join("no-temp.tar");
    let (code, err) = fails(
        crate::common::tool("ch-convert")
            .arg("--tmp")
            .arg(&ro)
            .arg(&src)
            .arg(&out),
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "error: can't create temporary directory {}/ch-convert.",
            ro.display()
        )),
        "{err}"
    );
    assert!(
        err.contains("hint: give ch-convert another directory with --tmp DIR"),
        "{err}"
    );
    assert!(!out.exists());
    // Nor inside a directory input, which would be read while it is written.
    let inside = src.join("a");
    let (code, err) = fails(
        crate::common::tool("ch-convert")
            .env("TMPDIR", &inside)
            .arg(&src)
            .arg(&out),
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "error: temporary directory {} is inside the input {}",
            inside.display(),
            src.display()
        )),
        "{err}"
    );
    assert!(!out.exists());
    assert_eq!(as_image(tree::of_dir(&src)), want, "input changed");
    // What reads or writes the store still does: an export from the read-only one.
    let tar = s.join("img.tar");
    ok(chc(&st).arg("img").arg(&tar));
    tree::assert_same(&want, &tree::of_tar(&tar), "export");
    sh(&format!("chmod -R u+w '{}'", st.display()));
    assert_eq!(store_state(&st), state);
}

/// Regression: an output that could not be written (a read-only or full output
/// directory) was named only by its staging path: "can't create:
/// DIR/.out.tar.ch-convert.PID: Permission denied", a name the user never gave. Now the
/// error names the output, then the staging path ("can't write DIR/out.tar (staged as
/// DIR/.out.tar.ch-convert.PID)"), with the cause below; nothing is left, from a
/// directory or an image in storage, to every path format.
#[test]
fn an_output_that_can_t_be_written_is_named_in_the_error() {
    let s = Scratch::new("convert-ro-out");
    let st = s.storage();
    let src = small_tree(&s);
    import(&st, &src, "img");
    let ro = s.join("ro");
    sh(&format!("mkdir '{0}' && chmod 555 '{0}'", ro.display()));
    let mut outputs = vec!["out.tar", "out.tar.gz", "outdir", "out.oci"];
    if crate::common::have("tar2sqfs") || crate::common::have("mksquashfs") {
        outputs.push("out.sqfs");
    } else {
        crate::common::skip("no tar2sqfs or mksquashfs: the SquashFS output not checked");
    }
    for input in [src.display().to_string(), "img".to_string()] {
        for name in &outputs {
            if *name == "outdir" && input != "img" {
                continue;
            }
            let out = ro.join(name);
            let mut c = chc(&st);
            if name.ends_with(".oci") {
                c.args(["-o", "oci"]);
            }
            let (code, err) = fails(c.arg(&input).arg(&out));
            assert_eq!(code, 1, "{err}");
            let want = format!(
                "error: can't write {} (staged as {}/.{name}.ch-convert.",
                out.display(),
                ro.display()
            );
            assert!(
                err.lines().any(|l| l.starts_with(&want)),
                "{input} -> {name}: {err}"
            );
            assert!(
                err.contains("Permission denied"),
                "{input} -> {name}: {err}"
            );
            assert!(!out.exists());
        }
    }
    assert_eq!(staging_leftovers(&ro), Vec::<String>::new());
}

/// A directory for `$PATH` holding `env` and `setpriv` (how the tests start a tool) and
/// the scripts `scripts` (name, text): the tools a conversion finds there are these only.
fn fake_path(s: &Scratch, scripts: &[(&str, String)]) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = s.join("bin");
    std::fs::create_dir(&dir).expect("mkdir bin");
    for tool in ["env", "setpriv"] {
        let real = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .expect("env and setpriv are installed");
        std::os::unix::fs::symlink(real, dir.join(tool)).expect("symlink");
    }
    for (name, text) in scripts {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write script");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    dir
}

/// Send SIGINT to the conversion `cmd` once `started` holds, and wait (at most a minute)
/// for it to die of it; then check that the process whose PID is in `pid_file` (a
/// `sleep` that the tool it waited for started) is gone too. Returns the standard error.
fn interrupted_while_a_tool_runs(
    cmd: std::process::Command,
    pid_file: &Path,
    what: &str,
) -> String {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let mut c = crate::common::with_default_signals(&cmd);
    c.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = crate::common::Reaped(c.spawn().expect("spawn ch-convert"));
    crate::common::wait_for(&format!("{what} to start"), 300, || {
        std::fs::read_to_string(pid_file).is_ok_and(|p| p.ends_with('\n'))
            || child.0.try_wait().expect("try_wait").is_some()
    });
    assert!(
        child.0.try_wait().expect("try_wait").is_none(),
        "the conversion ended before {what} started"
    );
    let sleeper: u32 = std::fs::read_to_string(pid_file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("a pid");
    let _kill_sleeper = Killed(sleeper);
    crate::common::send("INT", child.0.id());
    let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.0.try_wait().expect("try_wait") {
            break st;
        }
        assert!(
            std::time::Instant::now() < end,
            "ch-convert still waits for {what} a minute after SIGINT (the tool did not get it)"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    let _ = child
        .0
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err);
    assert_eq!(status.signal(), Some(2), "{status}\n{err}");
    assert!(err.contains("interrupted by SIGINT"), "{err}");
    crate::common::wait_for(&format!("what {what} started to end"), 30, || {
        !Path::new(&format!("/proc/{sleeper}")).exists()
            || std::fs::read_to_string(format!("/proc/{sleeper}/stat"))
                .is_ok_and(|st| st.contains(") Z "))
    });
    err
}

/// Kills a process (SIGKILL) when dropped: a test that fails leaves no sleeper.
struct Killed(u32);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0 as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Regression: a SIGINT or SIGTERM to `ch-convert -i docker NAME OUT` (or podman) while
/// `docker save` ran was noted and not passed on: ch-convert waited for the save to end
/// however long it took. Now the save runs in a process group of its own, which gets the
/// signal (with what it started): the conversion ends at once, its partial archive and
/// temporary directory are removed, and the existing output stays as it was. The
/// `docker` here is a script that writes part of the archive, then waits on a `sleep`.
#[test]
fn docker_save_gets_the_signal_that_stops_the_conversion() {
    let s = Scratch::new("convert-sig-docker");
    let pid_file = s.join("sleep.pid");
    let docker = format!(
        "#!/bin/sh\n\
         while [ $# -gt 0 ]; do case $1 in -o) out=$2; shift;; esac; shift; done\n\
         echo partial > \"$out\"\n\
         /bin/sleep 120 &\n\
         echo $! > {}\n\
         wait\n",
        pid_file.display()
    );
    let bin = fake_path(&s, &[("docker", docker)]);
    let temp = s.join("temp");
    let out = s.join("out.tar");
    sh(&format!(
        "mkdir '{}' && echo old > '{}'",
        temp.display(),
        out.display()
    ));
    crate::common::own(&s.path);
    let mut c = crate::common::tool("ch-convert");
    c.env("PATH", &bin)
        .env("TMPDIR", &temp)
        .args(["-i", "docker", "app"])
        .arg(&out);
    interrupted_while_a_tool_runs(c, &pid_file, "docker save");
    assert_eq!(std::fs::read_to_string(&out).expect("out.tar"), "old\n");
    let left: Vec<_> = std::fs::read_dir(&temp).expect("temp").flatten().collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(staging_leftovers(&s.path), Vec::<String>::new());
}

/// Regression: where sqfs2tar is not installed, a SquashFS input is extracted by
/// `unsquashfs`, which a SIGINT or SIGTERM to the conversion did not reach: ch-convert
/// waited for the extraction to end. Now unsquashfs runs in a process group of its own,
/// which gets the signal: the conversion ends at once, the extracted tree is removed and
/// the existing output stays. Here `unsquashfs` is the real one, run by a script that
/// then waits on a `sleep` (as a slow extraction would), and sqfs2tar is not on `$PATH`;
/// once into a directory (scratch in the temporary directory), once into the store
/// (scratch in the store).
#[test]
fn unsquashfs_gets_the_signal_that_stops_the_conversion() {
    if !crate::common::have("unsquashfs")
        || !(crate::common::have("tar2sqfs") || crate::common::have("mksquashfs"))
    {
        return crate::common::skip("unsquashfs and tar2sqfs or mksquashfs needed");
    }
    let s = Scratch::new("convert-sig-unsquashfs");
    let st = s.storage();
    import(&st, &small_tree(&s), "img");
    let state = store_state(&st);
    let sqfs = s.join("img.sqfs");
    ok(chc(&st).arg("img").arg(&sqfs));
    let real = [
        "/usr/bin/unsquashfs",
        "/usr/sbin/unsquashfs",
        "/bin/unsquashfs",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("unsquashfs");
    let pid_file = s.join("sleep.pid");
    let unsquashfs = format!(
        "#!/bin/sh\n\
         case $1 in -lln) exec {real} \"$@\";; esac\n\
         {real} \"$@\" || exit $?\n\
         /bin/sleep 120 &\n\
         echo $! > {}\n\
         wait\n",
        pid_file.display()
    );
    let bin = fake_path(&s, &[("unsquashfs", unsquashfs)]);
    let temp = s.join("temp");
    let out = s.join("out");
    sh(&format!(
        "mkdir -p '{}' '{o}/bin' '{o}/dev' '{o}/usr' && echo mine > '{o}/mine'",
        temp.display(),
        o = out.display()
    ));
    crate::common::own(&s.path);
    let before = tree::of_dir(&out);
    let mut c = chc(&st);
    c.env("PATH", &bin)
        .env("TMPDIR", &temp)
        .arg(&sqfs)
        .arg(&out);
    let err = interrupted_while_a_tool_runs(c, &pid_file, "unsquashfs");
    assert!(!err.contains("unsquashfs failed"), "{err}");
    assert_eq!(tree::of_dir(&out), before);
    let left: Vec<_> = std::fs::read_dir(&temp).expect("temp").flatten().collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(staging_leftovers(&s.path), Vec::<String>::new());
    // Into the store: its scratch goes.
    std::fs::remove_file(&pid_file).expect("rm pid file");
    let mut c = chc(&st);
    c.env("PATH", &bin).arg(&sqfs).arg("copy");
    let err = interrupted_while_a_tool_runs(c, &pid_file, "unsquashfs");
    assert!(!err.contains("unsquashfs failed"), "{err}");
    let tmp: Vec<_> = std::fs::read_dir(st.join("tmp")).expect("tmp").collect();
    assert!(tmp.is_empty(), "{tmp:?}");
    assert_eq!(store_state(&st), state, "{err}");
}

/// Regression: an input's warnings reached the terminal raw: unsquashfs's message about
/// files it skipped quotes their names, which a SquashFS file from elsewhere chooses (an
/// ESC sequence, a carriage return that hides the line). Now escaped, as every read
/// command's output (docs/security.md).
#[test]
fn an_input_tool_s_warning_is_shown_escaped() {
    if !crate::common::have("unsquashfs")
        || !(crate::common::have("tar2sqfs") || crate::common::have("mksquashfs"))
    {
        return crate::common::skip("unsquashfs and tar2sqfs or mksquashfs needed");
    }
    let s = Scratch::new("convert-warn-escaped");
    let st = s.storage();
    import(&st, &small_tree(&s), "img");
    let sqfs = s.join("img.sqfs");
    ok(chc(&st).arg("img").arg(&sqfs));
    let real = [
        "/usr/bin/unsquashfs",
        "/usr/sbin/unsquashfs",
        "/bin/unsquashfs",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("unsquashfs");
    // Extracts, then says it skipped a device whose name holds ESC [2K and CR (exit 2:
    // unsquashfs's non-fatal errors).
    let unsquashfs = format!(
        "#!/bin/sh\n\
         case $1 in -lln) exec {real} \"$@\";; esac\n\
         {real} \"$@\" >/dev/null || exit $?\n\
         printf 'create_inode: could not create character device /x\\033[2K\\rforged\\n' >&2\n\
         exit 2\n"
    );
    let bin = fake_path(&s, &[("unsquashfs", unsquashfs)]);
    crate::common::own(&s.path);
    let out = s.join("out.tar");
    let mut c = chc(&st);
    c.env("PATH", &bin).arg(&sqfs).arg(&out);
    let o = crate::common::output(&mut c);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("device /x\\u{1b}[2K\\u{d}forged"), "{err:?}");
    assert!(!err.contains('\x1b') && !err.contains('\r'), "{err:?}");
}

/// Regression: a conversion killed by kill -9 left its temporary directory
/// (`ch-convert.PID` under `$TMPDIR`) for ever, as Charliecloud's does. It now holds a
/// lock there while it works, and the next conversion that makes one removes those whose
/// lock is free: the killed one's goes, a live one's stays, and so does anything that is
/// not such a directory (Charliecloud's `ch-convert.XXXXXX`, one without a lock, one
/// locked by another host). The conversions killed and kept alive read from a `docker`
/// that waits on a `sleep`, in the middle of the conversion (its temporary directory made).
#[test]
fn a_killed_conversion_s_temporary_directory_is_removed_by_the_next_not_a_live_one_s() {
    let s = Scratch::new("convert-temp-dead");
    let docker = "#!/bin/sh\n\
                  while [ $# -gt 0 ]; do case $1 in -o) out=$2; shift;; esac; shift; done\n\
                  echo partial > \"$out\"\n\
                  echo $$ > \"$PID_FILE\"\n\
                  exec /bin/sleep 120\n"
        .to_string();
    let bin = fake_path(&s, &[("docker", docker)]);
    let temp = s.join("temp");
    let src = small_tree(&s);
    // What is not a dead conversion's directory: kept.
    let decoys = [
        "ch-convert.Ab12Cd",
        "ch-convert.999999999",
        "ch-convert.999999998",
        // Without a lock, and too recent to be a dead conversion's: perhaps one that
        // is about to take its lock.
        "ch-convert.999999997",
        "ch-convert.999999996",
        // Without a lock, old, but holding something else besides `lock.new`.
        "ch-convert.999999995",
    ];
    // Killed between making the directory and locking it, two hours ago: removed.
    let unborn = ["ch-convert.999999994", "ch-convert.999999993"];
    sh(&format!(
        "mkdir {0} && cd {0} && mkdir {1} {2} {3} && echo keep > {1}/f && echo keep > {2}/f \
         && echo 'grove-ch-convert-lock 1 another-host 999999998' > {3}/lock \
         && mkdir {4} {5} {6} {7} {8} && : > {5}/lock.new \
         && : > {6}/lock.new && echo keep > {6}/f && : > {8}/lock.new \
         && touch -d '-2 hours' {6}/lock.new {6}/f {6} {7} {8}/lock.new {8}",
        temp.display(),
        decoys[0],
        decoys[1],
        decoys[2],
        decoys[3],
        decoys[4],
        decoys[5],
        unborn[0],
        unborn[1],
    ));
    crate::common::own(&s.path);
    let in_docker_save = |tag: &str| {
        let pid_file = s.join(format!("{tag}.pid"));
        let mut c = crate::common::tool("ch-convert");
        c.env("PATH", &bin)
            .env("TMPDIR", &temp)
            .env("PID_FILE", &pid_file)
            .args(["-i", "docker", "app"])
            .arg(s.join(format!("{tag}.tar")))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = crate::common::Reaped(c.spawn().expect("spawn ch-convert"));
        crate::common::wait_for(
            &format!("conversion {tag} to reach docker save"),
            300,
            || {
                std::fs::read_to_string(&pid_file).is_ok_and(|p| p.ends_with('\n'))
                    || child.0.try_wait().expect("try_wait").is_some()
            },
        );
        assert!(
            child.0.try_wait().expect("try_wait").is_none(),
            "conversion {tag} ended before docker save"
        );
        let sleeper: u32 = std::fs::read_to_string(&pid_file)
            .expect("pid file")
            .trim()
            .parse()
            .expect("a pid");
        let dir = temp.join(format!("ch-convert.{}", child.0.id()));
        assert!(dir.is_dir(), "{}", dir.display());
        (child, Killed(sleeper), dir)
    };
    let (mut killed, _sleeper, left) = in_docker_save("killed");
    killed.0.kill().expect("kill -9"); // SIGKILL
    killed.0.wait().expect("wait");
    assert!(left.is_dir(), "kill -9 leaves {}", left.display());
    let (_live, _live_sleeper, live) = in_docker_save("live");

    ok(crate::common::tool("ch-convert")
        .env("TMPDIR", &temp)
        .args(["-i", "dir", "-o", "tar"])
        .arg(&src)
        .arg(s.join("next.tar")));
    let mut now: Vec<String> = std::fs::read_dir(&temp)
        .expect("temp")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    now.sort();
    let mut want: Vec<String> = decoys.iter().map(|d| d.to_string()).collect();
    want.push(live.file_name().unwrap().to_string_lossy().into_owned());
    want.sort();
    assert_eq!(
        now,
        want,
        "the killed conversion's {} or an unborn one ({unborn:?}) stays, or a decoy went",
        left.display()
    );
    assert!(live.join("lock").is_file());
    for d in &decoys[..2] {
        assert_eq!(
            std::fs::read_to_string(temp.join(d).join("f")).expect("decoy"),
            "keep\n"
        );
    }
}

/// Regression: when unsquashfs or sqfs2tar failed, its standard error (which quotes the
/// names of the SquashFS file's members) was printed raw as a warning. Now escaped, as
/// its warnings are.
#[test]
fn a_failed_input_tool_s_message_is_shown_escaped() {
    let s = Scratch::new("convert-fail-escaped");
    let st = s.storage();
    // Only the magic number is read before the tool runs.
    let sqfs = s.join("img.sqfs");
    std::fs::write(&sqfs, b"hsqs and not much else").unwrap();
    let fail = "#!/bin/sh\nprintf 'reading /x\\033[2K\\rforged: \\302\\233bad\\n' >&2\nexit 1\n";
    for tool in ["sqfs2tar", "unsquashfs"] {
        let bin = fake_path(&s, &[(tool, fail.to_string())]);
        crate::common::own(&s.path);
        let mut c = chc(&st);
        c.env("PATH", &bin)
            .args(["-o", "dir"])
            .arg(&sqfs)
            .arg(s.join("out"));
        let o = crate::common::output(&mut c);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{tool}: {err}");
        assert!(
            err.contains("warning: reading /x\\u{1b}[2K\\u{d}forged: \\u{9b}bad"),
            "{tool}: {err:?}"
        );
        assert!(
            !err.contains(['\x1b', '\r', '\u{9b}']),
            "{tool}: printed raw: {err:?}"
        );
        std::fs::remove_dir_all(&bin).unwrap();
    }
}
