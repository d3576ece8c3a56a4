//! ch-convert across formats: round trips keep the tree, exports are reproducible,
//! SquashFS runs under ch-run, OCI layouts are read by skopeo and umoci, bad input fails
//! cleanly.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use crate::store::tree;

/// What an image of a tree snapshotted by [`tree::of_dir`] holds: modes as every import
/// records them (FAQ 11.3.8: directories at least `rwx------`, files and FIFOs at least
/// `rw-------`, no setuid or setgid bits).
fn as_imported(mut want: tree::Map) -> tree::Map {
    for e in want.values_mut() {
        match e.kind {
            'd' => e.mode = (e.mode | 0o700) & !0o6000,
            'f' | 'p' => e.mode = (e.mode | 0o600) & !0o6000,
            _ => {}
        }
    }
    want
}

/// An awkward tree at `dest`: setuid and sticky bits, a 0000 directory (imports raise and
/// drop these, see [`as_imported`]), hard links, a
/// FIFO, empty directories and files, `.git` names, a `.wh.` name, long and non-UTF-8
/// names, symlinks (dangling too), and every mount point ch-run needs (so that SquashFS
/// output adds nothing and round trips compare exactly).
fn awkward_tree(dest: &Path) {
    let long = "n".repeat(200);
    sh(&format!(
        r#"
        mkdir -p {d} && cd {d}
        mkdir -p bin dev etc mnt/0 mnt/1 mnt/2 mnt/3 mnt/4 mnt/5 mnt/6 mnt/7 mnt/8 mnt/9 proc sys tmp usr/bin
        : > etc/hosts; : > etc/resolv.conf
        printf 'hello\n' > etc/motd
        head -c 300000 /dev/urandom > usr/bin/big
        cp /bin/busybox bin/busybox 2>/dev/null || printf 'x' > bin/busybox
        chmod 4755 bin/busybox
        chmod 1777 tmp
        ln usr/bin/big usr/bin/big-link
        ln etc/motd etc/motd2
        mkfifo usr/fifo
        mkdir -p empty/dir
        : > empty/file
        printf 'g' > .gitignore
        mkdir .git && printf 'x' > .git/HEAD
        printf 'w' > .wh.notawhiteout
        printf 'l' > {long}
        printf 'u' > "$(printf 'caf\351')"
        ln -s motd etc/motd-link
        ln -s /nowhere dangling
        mkdir secret && printf 's' > secret/file && chmod 0640 secret/file && chmod 0000 secret
        chmod 0600 etc/motd
        "#,
        d = dest.display(),
    ));
}

fn cvt(storage: &Path) -> Command {
    let mut c = tool("ch-convert");
    c.arg("-q").arg("-s").arg(storage);
    c
}

#[test]
fn round_trips_through_every_format_keep_the_tree() {
    let s = Scratch::new("cvf-rt");
    let st = s.storage();
    let src = s.join("src");
    awkward_tree(&src);
    let want = as_imported(tree::of_dir(&src));
    ok(cvt(&st).arg(&src).arg("orig"));
    let outputs: &[(&str, &[&str])] = &[
        ("img.tar", &[]),
        ("img.tar.gz", &[]),
        ("img.tar.zst", &[]),
        ("img.tar.xz", &[]),
        ("img.sqfs", &[]),
        ("img.oci", &["-o", "oci"]),
        ("img-oci.tar", &["-o", "oci"]),
    ];
    for (i, (name, opts)) in outputs.iter().enumerate() {
        let out = s.join(name);
        ok(cvt(&st).args(*opts).arg("orig").arg(&out));
        let back = format!("back{i}");
        // The OCI archive's format is recognized from its members, the layout's from its
        // oci-layout file.
        let in_opts: &[&str] = &[];
        ok(cvt(&st).args(in_opts).arg(&out).arg(&back));
        let dir = s.join(format!("dir{i}"));
        ok(cvt(&st).arg(&back).arg(&dir));
        let mut want = want.clone();
        if opts.contains(&"oci") {
            // A `.wh.` name is a whiteout in OCI layers: left out, with a warning.
            want.remove(&b".wh.notawhiteout"[..]);
        }
        tree::assert_same(
            &want,
            &tree::of_dir(&dir),
            &format!("round trip through {name}"),
        );
    }
    // Non-store paths straight to each other, too.
    let dir = s.join("dir-from-squash");
    ok(cvt(&st).arg(s.join("img.sqfs")).arg(&dir));
    tree::assert_same(&want, &tree::of_dir(&dir), "squash -> dir");
    let dir = s.join("dir-from-oci");
    ok(cvt(&st).arg(s.join("img.oci")).arg(&dir));
    let mut want = want;
    want.remove(&b".wh.notawhiteout"[..]);
    tree::assert_same(&want, &tree::of_dir(&dir), "oci -> dir");
    let out = output(
        tool("ch-convert")
            .arg("-s")
            .arg(&st)
            .args(["-o", "oci"])
            .arg("orig")
            .arg(s.join("again.oci")),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("leaving out .wh.notawhiteout"), "{err}");
}

#[test]
fn exports_are_byte_identical_across_runs_and_stores() {
    let s = Scratch::new("cvf-repro");
    let src = s.join("src");
    awkward_tree(&src);
    // Two stores stand for two machines.
    let (a, b) = (s.join("st-a"), s.join("st-b"));
    ok(cvt(&a).arg(&src).arg("img"));
    ok(cvt(&b).arg(&src).arg("img"));
    for (name, opts) in [
        ("x.tar", &[][..]),
        ("x.tar.gz", &[][..]),
        ("x.tar.zst", &[][..]),
        ("x.sqfs", &[][..]),
        ("x.sqfs", &["--compression", "gzip"][..]),
        ("x-oci.tar", &["-o", "oci"][..]),
    ] {
        let outs: Vec<PathBuf> = [(&a, "1"), (&a, "2"), (&b, "3")]
            .iter()
            .map(|(st, n)| {
                let out = s.join(format!("{n}-{name}"));
                ok(cvt(st).args(opts).arg("img").arg(&out).arg("--force"));
                out
            })
            .collect();
        let first = fs::read(&outs[0]).expect("read export");
        for o in &outs[1..] {
            assert!(
                first == fs::read(o).expect("read export"),
                "{name} {opts:?}: {} differs",
                o.display()
            );
        }
    }
    // The OCI directory form: every file the same.
    let d1 = s.join("oci1");
    let d2 = s.join("oci2");
    ok(cvt(&a).args(["-o", "oci"]).arg("img").arg(&d1));
    ok(cvt(&b).args(["-o", "oci"]).arg("img").arg(&d2));
    tree::assert_same(&tree::of_dir(&d1), &tree::of_dir(&d2), "oci layouts");
}

/// Parse `unsquashfs -lls` lines: (type char, permission bits, size, path, link target).
fn unsquash_listing(sqfs: &Path) -> BTreeMap<String, (char, u32, u64, Option<String>)> {
    let out = ok(Command::new("unsquashfs").arg("-lls").arg(sqfs));
    let mut m = BTreeMap::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || !f[5].starts_with("squashfs-root") {
            continue;
        }
        let perms = f[0];
        let kind = perms.chars().next().expect("type");
        let mut mode = 0u32;
        for (i, c) in perms[1..10].chars().enumerate() {
            let bit = 1 << (8 - i);
            match c {
                'r' | 'w' | 'x' => mode |= bit,
                's' | 't' => mode |= bit,
                _ => {}
            }
            match (i, c) {
                (2, 's' | 'S') => mode |= 0o4000,
                (5, 's' | 'S') => mode |= 0o2000,
                (8, 't' | 'T') => mode |= 0o1000,
                _ => {}
            }
        }
        let rest = line[line.find("squashfs-root").expect("path")..].to_string();
        let (path, target) = match rest.split_once(" -> ") {
            Some((p, t)) => (p.to_string(), Some(t.to_string())),
            None => (rest, None),
        };
        let path = path
            .trim_start_matches("squashfs-root")
            .trim_start_matches('/')
            .to_string();
        m.insert(path, (kind, mode, f[2].parse().unwrap_or(0), target));
        assert_eq!(f[1], "root/root", "{line}");
    }
    m
}

#[test]
fn unsquashfs_listing_agrees_with_the_source_tree() {
    let s = Scratch::new("cvf-lls");
    let st = s.storage();
    let src = s.join("src");
    awkward_tree(&src);
    let want = as_imported(tree::of_dir(&src));
    ok(cvt(&st).arg(&src).arg("img"));
    let sq = s.join("img.sqfs");
    ok(cvt(&st).arg("img").arg(&sq));
    let got = unsquash_listing(&sq);
    for (p, e) in &want {
        if !p.is_ascii() {
            continue; // unsquashfs prints non-UTF-8 names escaped
        }
        let p = String::from_utf8_lossy(p);
        let g = got
            .get(&*p)
            .unwrap_or_else(|| panic!("{p:?} missing from unsquashfs -lls"));
        let kind = match e.kind {
            'f' => '-',
            k => k,
        };
        assert_eq!(g.0, kind, "type of {p:?}");
        if e.kind != 'l' {
            // Snapshots record symlinks with mode 0: Linux has no symlink permissions.
            assert_eq!(g.1, e.mode, "mode of {p:?}");
        }
        if e.kind == 'f' {
            assert_eq!(g.2, e.size, "size of {p:?}");
        }
        if let Some(t) = &e.target {
            assert_eq!(
                g.3.as_deref().map(str::as_bytes),
                Some(&t[..]),
                "target of {p:?}"
            );
        }
    }
    assert_eq!(got.len(), want.len(), "entry count");
}

#[test]
fn squash_output_gets_the_mount_points_ch_run_needs() {
    let s = Scratch::new("cvf-mnt");
    let st = s.storage();
    let src = s.join("src");
    sh(&format!(
        "mkdir -p {0}/etc && printf x > {0}/etc/motd && ln -s /elsewhere {0}/tmp",
        src.display()
    ));
    ok(cvt(&st).arg(&src).arg("img"));
    let sq = s.join("img.sqfs");
    ok(cvt(&st).arg("img").arg(&sq));
    let got = unsquash_listing(&sq);
    for d in [
        "bin", "dev", "etc", "mnt", "mnt/0", "mnt/9", "proc", "sys", "usr",
    ] {
        assert_eq!(got.get(d).map(|e| (e.0, e.1)), Some(('d', 0o755)), "{d}");
    }
    for f in ["etc/hosts", "etc/resolv.conf"] {
        assert_eq!(
            got.get(f).map(|e| (e.0, e.1, e.2)),
            Some(('-', 0o644, 0)),
            "{f}"
        );
    }
    // An existing symlink is left alone.
    assert_eq!(got.get("tmp").map(|e| e.0), Some('l'));
    // Tar output is the image as it is.
    let tar = s.join("img.tar");
    ok(cvt(&st).arg("img").arg(&tar));
    let names = ok(Command::new("tar").arg("tf").arg(&tar));
    assert!(!names.contains("proc"), "{names}");
}

#[test]
fn ch_run_runs_the_squashfs_file_unprivileged() {
    if is_root() {
        // Test setup only: FUSE is root-only on these machines.
        let _ = Command::new("chmod").args(["0666", "/dev/fuse"]).status();
    }
    let fuse_ok = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .is_ok()
        || is_root();
    if !fuse_ok || !have("squashfuse_ll") && !have("squashfuse") {
        skip("squashfuse or /dev/fuse not usable");
        return;
    }
    let s = Scratch::new("cvf-run");
    let st = s.storage();
    ok(cvt(&st).arg(busybox_rootfs()).arg("bb"));
    let sq = s.join("bb.sqfs");
    ok(cvt(&st).arg("bb").arg(&sq));
    let out = ok(tool("ch-run").arg(&sq).args([
        "--",
        "sh",
        "-c",
        "cat /etc/motd; id -u; ls -d /proc/self",
    ]));
    assert!(out.contains("grove busybox fixture"), "{out}");
    assert!(out.contains("/proc/self"), "{out}");
    if is_root() {
        assert!(out.contains(&TEST_UID.to_string()), "{out}");
    }
}

#[test]
fn oci_layout_is_read_by_skopeo_and_umoci() {
    let s = Scratch::new("cvf-oci");
    let st = s.storage();
    ok(cvt(&st).arg(busybox_rootfs()).arg("bb:1.0"));
    let dir = s.join("bb.oci");
    ok(cvt(&st).args(["-o", "oci"]).arg("bb:1.0").arg(&dir));
    let arch = ok(cvt(&st)
        .args(["-o", "oci"])
        .arg("bb:1.0")
        .arg(s.join("bb-oci.tar")));
    let _ = arch;
    // The layout's own shape, checked without external tools.
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("index.json")).expect("index")).expect("json");
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "1.0"
    );
    assert!(dir.join("oci-layout").is_file());
    if !have("skopeo") || !have("umoci") {
        skip("skopeo or umoci not installed (apt-get install skopeo umoci)");
        return;
    }
    let inspect = ok(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:1.0", dir.display())));
    let v: serde_json::Value = serde_json::from_str(&inspect).expect("skopeo json");
    assert_eq!(v["Os"], "linux");
    assert_eq!(v["Layers"].as_array().map(|l| l.len()), Some(1));
    ok(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci-archive:{}", s.join("bb-oci.tar").display())));
    // skopeo copies it (verifying digests) to a new layout, which we read back.
    let copy = s.join("copy.oci");
    ok(Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci:{}:1.0", dir.display()))
        .arg(format!("oci:{}:x", copy.display())));
    ok(cvt(&st).arg(&copy).arg("from-skopeo"));
    let unpacked = s.join("umoci-bundle");
    ok(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:1.0", dir.display()))
        .arg(&unpacked));
    let want = tree::of_dir(&busybox_rootfs());
    let mut got = tree::of_dir(&unpacked.join("rootfs"));
    got.remove(&b""[..]);
    let mut want = want;
    want.remove(&b""[..]);
    tree::assert_same(&want, &got, "umoci unpack");
    let d = s.join("from-skopeo-dir");
    ok(cvt(&st).arg("from-skopeo").arg(&d));
    let mut back = tree::of_dir(&d);
    back.remove(&b""[..]);
    let want = crate::convert::with_mount_points(tree::of_dir(&busybox_rootfs()));
    let mut want = want;
    want.remove(&b""[..]);
    tree::assert_same(&want, &back, "skopeo copy -> ch-image");
}

#[test]
fn oci_whiteouts_across_layers_are_applied() {
    // Two hand-made layers: the second deletes a file and makes a directory opaque.
    let s = Scratch::new("cvf-wh");
    let st = s.storage();
    let script = format!(
        r#"
        cd {d}
        mkdir -p l1/a/keep l1/o && printf 1 > l1/a/gone && printf 2 > l1/a/keep/x && printf 3 > l1/o/old
        mkdir -p l2/a l2/o && : > l2/a/.wh.gone && : > l2/o/.wh..wh..opq && printf 4 > l2/o/new
        mkdir -p lay/blobs/sha256
        tar -C l1 -czf l1.tgz . && tar -C l2 -cf l2.tar .
        blob() {{ h=$(sha256sum "$1" | cut -d' ' -f1); cp "$1" lay/blobs/sha256/$h; echo $h; }}
        dig() {{ sha256sum "$1" | cut -d' ' -f1; }}
        L1=$(blob l1.tgz); L2=$(blob l2.tar)
        gunzip -c l1.tgz > l1.tar
        printf '{{"architecture":"amd64","os":"linux","config":{{"Env":["A=1"],"Cmd":["sh"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:%s","sha256:%s"]}}}}' $(dig l1.tar) $(dig l2.tar) > cfg.json
        C=$(blob cfg.json)
        printf '{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}},{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}}]}}' $C $(stat -c %s cfg.json) $L1 $(stat -c %s l1.tgz) $L2 $(stat -c %s l2.tar) > man.json
        M=$(blob man.json)
        printf '{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s}}]}}' $M $(stat -c %s man.json) > lay/index.json
        printf '{{"imageLayoutVersion":"1.0.0"}}' > lay/oci-layout
        "#,
        d = s.path.display()
    );
    sh(&script);
    ok(cvt(&st).arg(s.join("lay")).arg("wh"));
    let d = s.join("out");
    ok(cvt(&st).arg("wh").arg(&d));
    let l = tree::of_dir(&d);
    // Leave out the mount points `-o dir` adds (convert::with_mount_points); the image
    // has none of its own.
    let root_only = tree::Map::from([(Vec::new(), l[&Vec::new()].clone())]);
    let points = crate::convert::with_mount_points(root_only);
    let names: Vec<String> = l
        .keys()
        .filter(|k| k.is_empty() || !points.contains_key(*k))
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    // ch/environment: the config's Env, written as Charliecloud does.
    assert_eq!(
        names,
        [
            "",
            "a",
            "a/keep",
            "a/keep/x",
            "ch",
            "ch/environment",
            "o",
            "o/new"
        ]
    );
    assert_eq!(
        std::fs::read_to_string(d.join("ch/environment")).unwrap(),
        "A=1\n"
    );
    // The config came along: exporting to OCI again carries Env and Cmd.
    let o = s.join("again.oci");
    ok(cvt(&st).args(["-o", "oci"]).arg("wh").arg(&o));
    let all = ok(Command::new("sh")
        .args(["-c", &format!("cat {}/blobs/sha256/*", o.display())])
        .env("LC_ALL", "C"));
    let _ = all;
    let listing_cfg = ok(Command::new("grep")
        .args(["-rl", "A=1"])
        .arg(o.join("blobs/sha256")));
    assert!(
        !listing_cfg.is_empty(),
        "config with Env A=1 in the re-exported layout"
    );
}

#[test]
fn corrupt_or_unreadable_input_fails_without_output() {
    let s = Scratch::new("cvf-bad");
    let st = s.storage();
    ok(cvt(&st).arg(busybox_rootfs()).arg("bb"));
    // A truncated tar.gz.
    let good = s.join("bb.tar.gz");
    ok(cvt(&st).arg("bb").arg(&good));
    let data = fs::read(&good).expect("read");
    let bad = s.join("bad.tar.gz");
    sh(&format!(
        "head -c {} {} > {}",
        data.len() / 2,
        good.display(),
        bad.display()
    ));
    let (_, err) = fails(cvt(&st).arg(&bad).arg(s.join("out.sqfs")));
    assert!(err.contains("bad.tar.gz"), "{err}");
    // Garbage that claims to be SquashFS.
    let junk = s.join("junk.sqfs");
    sh(&format!(
        "printf 'not squashfs at all' > {}",
        junk.display()
    ));
    let (_, err) = fails(cvt(&st).arg(&junk).arg(s.join("out.tar")));
    assert!(err.contains("not a SquashFS file"), "{err}");
    // An OCI layout with a corrupted layer.
    let oci = s.join("bb.oci");
    ok(cvt(&st).args(["-o", "oci"]).arg("bb").arg(&oci));
    let manifest_layer = fs::read_dir(oci.join("blobs/sha256"))
        .expect("blobs")
        .map(|e| e.expect("entry").path())
        .max_by_key(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a layer");
    sh(&format!(
        "printf X | dd of={} bs=1 seek=100 conv=notrunc 2>/dev/null",
        manifest_layer.display()
    ));
    let (_, err) = fails(cvt(&st).arg(&oci).arg("broken"));
    assert!(err.contains("corrupt"), "{err}");
    // A missing input.
    let (_, err) = fails(cvt(&st).arg(s.join("nope.tar")).arg(s.join("out2.sqfs")));
    assert!(err.contains("nope.tar"), "{err}");
    // No outputs, no staging leftovers, no image.
    let left: Vec<_> = fs::read_dir(&s.path)
        .expect("scratch")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("out") || n.contains("ch-convert"))
        .collect();
    assert!(left.is_empty(), "partial output left: {left:?}");
    let list = ok(tool("ch-image").arg("-s").arg(&st).arg("list"));
    assert!(!list.contains("broken"), "{list}");
}

#[test]
fn existing_output_is_replaced_unless_no_clobber() {
    let s = Scratch::new("cvf-force");
    let st = s.storage();
    ok(cvt(&st).arg(busybox_rootfs()).arg("bb"));
    let out = s.join("bb.sqfs");
    sh(&format!("printf keep > {}", out.display()));
    let (_, err) = fails(cvt(&st).arg("--no-clobber").arg("bb").arg(&out));
    assert!(err.contains("exists"), "{err}");
    assert_eq!(fs::read(&out).expect("read"), b"keep");
    ok(cvt(&st).arg("bb").arg(&out));
    assert_eq!(&fs::read(&out).expect("read")[..4], b"hsqs");
}

#[test]
fn docker_and_podman_formats_name_the_missing_tool() {
    let s = Scratch::new("cvf-dock");
    let st = s.storage();
    // Missing from a $PATH of a directory holding only setpriv (which runs the tool as
    // the test user), whatever this machine has: the test asserted nothing where both
    // were installed (CI installs podman; this machine has docker too).
    let empty = s.join("empty-path");
    fs::create_dir(&empty).expect("mkdir");
    let setpriv = crate::common::sh("command -v setpriv").stdout;
    let setpriv = String::from_utf8_lossy(&setpriv).trim().to_string();
    std::os::unix::fs::symlink(&setpriv, empty.join("setpriv")).expect("symlink setpriv");
    for (fmt, prog) in [("docker", "docker"), ("podman", "podman")] {
        let (_, err) = fails(
            cvt(&st)
                .env("PATH", &empty)
                .args(["-i", fmt])
                .arg("foo")
                .arg(s.join("x.tar")),
        );
        assert!(
            err.contains(&format!(
                "format {prog}: the {prog} command is not installed (not found on $PATH)"
            )),
            "{err}"
        );
    }
    let (_, err) = fails(
        cvt(&st)
            .args(["-o", "tar", "--compression", "zstd"])
            .arg("foo")
            .arg(s.join("x.tar")),
    );
    assert!(err.contains("squash output only"), "{err}");
}

#[test]
fn squashfs_tools_alone_write_and_read_squash_too() {
    // Without squashfs-tools-ng: sqfstar writes, unsquashfs reads (modes patched back).
    if !have("sqfstar") || !have("unsquashfs") {
        skip("squashfs-tools (sqfstar, unsquashfs) not installed");
        return;
    }
    let s = Scratch::new("cvf-sqfstar");
    let st = s.storage();
    let src = s.join("src");
    awkward_tree(&src);
    let want = as_imported(tree::of_dir(&src));
    let bin = s.join("path");
    fs::create_dir(&bin).expect("mkdir");
    for p in ["setpriv", "sqfstar", "unsquashfs"] {
        let real = ok(Command::new("sh").args(["-c", &format!("command -v {p}")]));
        std::os::unix::fs::symlink(real.trim(), bin.join(p)).expect("symlink");
    }
    let path = bin.to_string_lossy().into_owned();
    ok(cvt(&st).env("PATH", &path).arg(&src).arg("img"));
    let sq = s.join("img.sqfs");
    ok(cvt(&st).env("PATH", &path).arg("img").arg(&sq));
    let sq2 = s.join("img2.sqfs");
    ok(cvt(&st).env("PATH", &path).arg("img").arg(&sq2));
    assert!(
        fs::read(&sq).expect("read") == fs::read(&sq2).expect("read"),
        "sqfstar output differs between runs"
    );
    let dir = s.join("back");
    ok(cvt(&st).env("PATH", &path).arg(&sq).arg(&dir));
    tree::assert_same(
        &want,
        &tree::of_dir(&dir),
        "sqfstar + unsquashfs round trip",
    );
}
