//! Modes, special files and extended attributes as the FAQ (11.3.8) and the man page give
//! them: archive members are treated alike by `import` and `ADD` (device files skipped
//! with a warning naming the member, FIFOs kept), imported and `ADD`-ed entries are raised
//! to at least `rwx------` (directories) and `rw-------` (files) with setuid and setgid
//! bits dropped, whatever the output; `--xattrs` keeps `user.*` attributes through COPY.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{ok, output, sh, skip, tool, unpriv, Scratch};

fn image(st: &Path) -> Command {
    let mut c = tool("ch-image");
    c.arg("-s").arg(st);
    c.env_remove("CH_IMAGE_CACHE");
    c.env_remove("CH_XATTRS");
    c
}

fn convert(st: &Path) -> Command {
    let mut c = tool("ch-convert");
    c.arg("-q").arg("-s").arg(st);
    c.env_remove("CH_XATTRS");
    c
}

/// Run `cmd`, which must succeed; returns its stderr.
fn stderr_ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "command failed: {cmd:?}\nstdout: {}\nstderr: {err}",
        String::from_utf8_lossy(&out.stdout)
    );
    err
}

/// Write a tarball with Python's tarfile (which writes device members without
/// privileges): `spec` is Python source for a list of `(name, type, mode, data)`.
fn python_tar(dest: &Path, spec: &str) {
    sh(&format!(
        r#"/usr/bin/python3 - <<'EOF'
import io, tarfile
with tarfile.open("{dest}", "w", format=tarfile.PAX_FORMAT) as t:
    for (name, kind, mode, data) in {spec}:
        ti = tarfile.TarInfo(name)
        ti.type = kind
        ti.mode = mode
        ti.mtime = 1000000000
        if kind == tarfile.CHRTYPE:
            ti.devmajor, ti.devminor = 1, 3
        ti.size = len(data)
        t.addfile(ti, io.BytesIO(data) if data else None)
EOF"#,
        dest = dest.display()
    ));
}

/// Type letter and permission bits (setuid, setgid and sticky included) of every entry
/// below `root`, by path (a directory that can't be read lists as itself only).
fn modes(root: &Path) -> BTreeMap<String, (char, u32)> {
    let mut out = BTreeMap::new();
    fn go(abs: &Path, rel: &str, out: &mut BTreeMap<String, (char, u32)>) {
        let Ok(rd) = std::fs::read_dir(abs) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let r = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let md = std::fs::symlink_metadata(e.path()).expect("lstat");
            let ft = md.file_type();
            let kind = if ft.is_dir() {
                'd'
            } else if ft.is_symlink() {
                'l'
            } else if ft.is_fifo() {
                'p'
            } else if ft.is_char_device() {
                'c'
            } else if ft.is_file() {
                'f'
            } else {
                '?'
            };
            out.insert(r.clone(), (kind, md.mode() & 0o7777));
            if ft.is_dir() {
                go(&e.path(), &r, out);
            }
        }
    }
    go(root, "", &mut out);
    out
}

const DEVICE_TAR: &str = r#"[
    ("rootfs/dev", tarfile.DIRTYPE, 0o755, b""),
    ("rootfs/dev/null", tarfile.CHRTYPE, 0o666, b""),
    ("rootfs/etc", tarfile.DIRTYPE, 0o755, b""),
    ("rootfs/etc/motd", tarfile.REGTYPE, 0o644, b"hello\n"),
    ("rootfs/pipe", tarfile.FIFOTYPE, 0o644, b""),
]"#;

/// Build `df` in `ctx` as `tag`, returning stderr.
fn build(st: &Path, ctx: &Path, tag: &str, df: &str, extra: &[&str]) -> String {
    let dockerfile = ctx.join("Dockerfile");
    std::fs::write(&dockerfile, df).expect("write Dockerfile");
    stderr_ok(
        image(st)
            .arg("build")
            .args(extra)
            .args(["-t", tag])
            .arg(ctx),
    )
}

/// A scratch context directory owned by the test user.
fn context(s: &Scratch) -> PathBuf {
    let ctx = s.join("ctx");
    sh(&format!("mkdir -p {}", ctx.display()));
    ctx
}

#[test]
fn add_and_import_of_a_tarball_skip_device_members_with_a_warning_and_keep_fifos() {
    let s = Scratch::new("modes-dev");
    let st = s.storage();
    let ctx = context(&s);
    let tarball = ctx.join("rootfs.tar");
    python_tar(&tarball, DEVICE_TAR);

    let err = stderr_ok(image(&st).arg("import").arg(&tarball).arg("imp"));
    assert!(
        err.contains("skipping device file member rootfs/dev/null"),
        "import: {err}"
    );
    let imp = s.join("imp");
    ok(convert(&st).arg("imp").arg(&imp));

    let err = build(&st, &ctx, "add", "FROM scratch\nADD rootfs.tar /\n", &[]);
    assert!(
        err.contains("skipping device file member rootfs/dev/null"),
        "ADD: {err}"
    );
    let add = s.join("add");
    ok(convert(&st).arg("add").arg(&add));

    // import strips the single top directory, ADD extracts the archive as it is.
    for (what, root) in [("import", imp.clone()), ("ADD", add.join("rootfs"))] {
        let m = modes(&root);
        assert_eq!(m.get("dev"), Some(&('d', 0o755)), "{what}: {m:?}");
        assert_eq!(
            m.get("dev/null"),
            None,
            "{what}: device member not skipped: {m:?}"
        );
        assert_eq!(m.get("etc/motd"), Some(&('f', 0o644)), "{what}: {m:?}");
        assert_eq!(m.get("pipe"), Some(&('p', 0o644)), "{what}: {m:?}");
    }
}

const MODES_TAR: &str = r##"[
    ("locked", tarfile.DIRTYPE, 0o000, b""),
    ("locked/f", tarfile.REGTYPE, 0o000, b"secret\n"),
    ("suid", tarfile.REGTYPE, 0o4755, b"#!/bin/sh\n"),
    ("sgid", tarfile.REGTYPE, 0o2711, b"#!/bin/sh\n"),
    ("sgiddir", tarfile.DIRTYPE, 0o2775, b""),
    ("sticky", tarfile.DIRTYPE, 0o1777, b""),
    ("ro", tarfile.REGTYPE, 0o444, b"ro\n"),
    ("wo", tarfile.REGTYPE, 0o200, b"wo\n"),
]"##;

/// What every output shows for [`MODES_TAR`] (FAQ 11.3.8).
fn assert_faq_modes(what: &str, m: &BTreeMap<String, (char, u32)>) {
    for (path, want) in [
        ("locked", ('d', 0o700)),
        ("locked/f", ('f', 0o600)),
        ("suid", ('f', 0o755)),
        ("sgid", ('f', 0o711)),
        ("sgiddir", ('d', 0o775)),
        ("sticky", ('d', 0o1777)),
        ("ro", ('f', 0o644)),
        ("wo", ('f', 0o600)),
    ] {
        assert_eq!(m.get(path), Some(&want), "{what}: mode of {path}: {m:?}");
    }
}

#[test]
fn imported_and_added_entries_get_the_faq_minimum_modes_without_setid_bits() {
    let s = Scratch::new("modes-faq");
    let st = s.storage();
    let ctx = context(&s);
    let tarball = ctx.join("modes.tar");
    python_tar(&tarball, MODES_TAR);

    // Tarball import: the directory export (exact modes), a checkout through ch-run's
    // store path, and the tar export all agree.
    ok(image(&st).arg("import").arg(&tarball).arg("t"));
    let dir = s.join("t-dir");
    ok(convert(&st).arg("t").arg(&dir));
    assert_faq_modes("tar import -> dir", &modes(&dir));
    let tar = s.join("t.tar");
    ok(convert(&st).arg("t").arg(&tar));
    let mut ar = tar::Archive::new(std::fs::File::open(&tar).expect("open export"));
    let mut in_tar = BTreeMap::new();
    for e in ar.entries().expect("entries") {
        let e = e.expect("entry");
        let p = e.path().expect("path").to_string_lossy().into_owned();
        let p = p.trim_start_matches("./").trim_end_matches('/').to_string();
        let kind = if e.header().entry_type().is_dir() {
            'd'
        } else {
            'f'
        };
        in_tar.insert(p, (kind, e.header().mode().expect("mode") & 0o7777));
    }
    assert_faq_modes("tar import -> tar", &in_tar);

    // Directory import (the user's own tree, 0000 directory and setuid file included).
    let src = s.join("src");
    sh(&format!(
        "mkdir -p {d} && cd {d} && tar -xf {t} && chmod 4755 suid && chmod 2711 sgid \
         && chmod 2775 sgiddir && chmod 1777 sticky && chmod 0444 ro && chmod 0200 wo \
         && chmod 0700 locked && chmod 0000 locked/f locked",
        d = src.display(),
        t = tarball.display()
    ));
    ok(image(&st).arg("import").arg(&src).arg("d"));
    sh(&format!("chmod 0700 {}", src.join("locked").display()));
    let dir = s.join("d-dir");
    ok(convert(&st).arg("d").arg(&dir));
    assert_faq_modes("directory import -> dir", &modes(&dir));

    // ADD of the same tarball: the same modes.
    build(&st, &ctx, "a", "FROM scratch\nADD modes.tar /x/\n", &[]);
    let dir = s.join("a-dir");
    ok(convert(&st).arg("a").arg(&dir));
    assert_faq_modes("ADD -> dir", &modes(&dir.join("x")));
}

/// Whether the file system under `dir` takes `user.*` attributes from the test user.
fn user_xattrs_work(dir: &Path) -> bool {
    let probe = dir.join("xattr-probe");
    let st = unpriv("/usr/bin/python3")
        .args([
            "-c",
            "import os, sys; open(sys.argv[1], 'w').close(); \
             os.setxattr(sys.argv[1], 'user.probe', b'1')",
        ])
        .arg(&probe)
        .status()
        .expect("spawn python3");
    st.success()
}

/// `user.test` of `p` as the test user sees it, or `None`.
fn user_test(p: &Path) -> Option<String> {
    let out = output(
        unpriv("/usr/bin/python3")
            .args([
                "-c",
                "import os, sys; print(os.getxattr(sys.argv[1], 'user.test').decode())",
            ])
            .arg(p),
    );
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A context directory on a file system that takes `user.*` extended attributes, or a
/// loud skip.
fn xattr_context(s: &Scratch) -> Option<PathBuf> {
    let ctx = context(s);
    if !user_xattrs_work(&ctx) {
        skip("the scratch file system does not take user.* extended attributes");
        return None;
    }
    Some(ctx)
}

/// A read-only file and a directory with attributes (the file inside the directory), and
/// a top-level file with one: `d/f` (`file`), `d` (`dir`), `top` (`top`).
fn xattr_tree(ctx: &Path) {
    sh(&format!(
        "cd {c} && mkdir d && echo hi > d/f && echo top > top && \
         /usr/bin/python3 -c \"import os; os.setxattr('d/f', 'user.test', b'file'); \
         os.setxattr('d', 'user.test', b'dir'); os.setxattr('top', 'user.test', b'top')\" \
         && chmod 0444 d/f",
        c = ctx.display()
    ));
}

#[test]
fn copy_keeps_user_xattrs_with_the_xattrs_option_or_ch_xattrs() {
    let s = Scratch::new("modes-xattr");
    let st = s.storage();
    let Some(ctx) = xattr_context(&s) else {
        return;
    };
    xattr_tree(&ctx);
    let df = "FROM scratch\nCOPY d /d/\nCOPY top /top\n";
    build(&st, &ctx, "opt", df, &["--xattrs"]);
    // Built again, not taken from the cache.
    let mut c = image(&st);
    c.env("CH_XATTRS", "1");
    stderr_ok(c.args(["build", "--no-cache", "-t", "env"]).arg(&ctx));
    for tag in ["opt", "env"] {
        let out = s.join(format!("{tag}-dir"));
        ok(convert(&st).arg("--xattrs").arg(tag).arg(&out));
        assert_eq!(
            user_test(&out.join("d/f")).as_deref(),
            Some("file"),
            "{tag}"
        );
        assert_eq!(user_test(&out.join("d")).as_deref(), Some("dir"), "{tag}");
        assert_eq!(user_test(&out.join("top")).as_deref(), Some("top"), "{tag}");
    }
    // Without the option nothing is recorded.
    build(&st, &ctx, "none", df, &["--no-cache"]);
    let out = s.join("none-dir");
    ok(convert(&st).arg("--xattrs").arg("none").arg(&out));
    assert_eq!(user_test(&out.join("d/f")), None);
}

#[test]
fn copy_from_a_stage_keeps_user_xattrs_with_the_xattrs_option() {
    let s = Scratch::new("modes-xattr-from");
    let st = s.storage();
    let Some(ctx) = xattr_context(&s) else {
        return;
    };
    xattr_tree(&ctx);
    let df = "FROM scratch AS a\nCOPY d /d/\nCOPY top /top\n\
              FROM scratch\nCOPY --from=a /d /e/\nCOPY --from=a /top /t\nCOPY --from=a /d/f /g\n";
    build(&st, &ctx, "from", df, &["--xattrs"]);
    let out = s.join("from-dir");
    ok(convert(&st).arg("--xattrs").arg("from").arg(&out));
    assert_eq!(user_test(&out.join("e/f")).as_deref(), Some("file"));
    assert_eq!(user_test(&out.join("e")).as_deref(), Some("dir"));
    assert_eq!(user_test(&out.join("t")).as_deref(), Some("top"));
    assert_eq!(user_test(&out.join("g")).as_deref(), Some("file"));
}

#[test]
fn add_of_a_local_archive_keeps_user_xattrs_with_the_xattrs_option() {
    let s = Scratch::new("modes-xattr-add");
    let st = s.storage();
    let Some(ctx) = xattr_context(&s) else {
        return;
    };
    // PAX `SCHILY.xattr.*` records, as GNU tar --xattrs writes them; a `trusted.*` one is
    // not the user's to set and is left out.
    sh(&format!(
        r#"/usr/bin/python3 - <<'EOF'
import io, tarfile
with tarfile.open("{t}", "w", format=tarfile.PAX_FORMAT) as t:
    d = tarfile.TarInfo("d")
    d.type, d.mode = tarfile.DIRTYPE, 0o755
    d.pax_headers = {{"SCHILY.xattr.user.test": "dir"}}
    t.addfile(d)
    f = tarfile.TarInfo("d/f")
    f.mode, f.size = 0o444, 3
    f.pax_headers = {{"SCHILY.xattr.user.test": "file", "SCHILY.xattr.trusted.x": "no"}}
    t.addfile(f, io.BytesIO(b"hi\n"))
EOF
chmod a+r {t}"#,
        t = ctx.join("x.tar").display()
    ));
    build(
        &st,
        &ctx,
        "add",
        "FROM scratch\nADD x.tar /x/\n",
        &["--xattrs"],
    );
    let out = s.join("add-dir");
    ok(convert(&st).arg("--xattrs").arg("add").arg(&out));
    assert_eq!(user_test(&out.join("x/d/f")).as_deref(), Some("file"));
    assert_eq!(user_test(&out.join("x/d")).as_deref(), Some("dir"));
    // Without the option nothing is recorded.
    build(&st, &ctx, "plain", "FROM scratch\nADD x.tar /x/\n", &[]);
    let out = s.join("plain-dir");
    ok(convert(&st).arg("--xattrs").arg("plain").arg(&out));
    assert_eq!(user_test(&out.join("x/d/f")), None);
}

#[test]
fn copy_cached_without_xattrs_is_not_reused_by_an_xattrs_build() {
    let s = Scratch::new("modes-xattr-cache");
    let st = s.storage();
    let Some(ctx) = xattr_context(&s) else {
        return;
    };
    let set = |v: &str| {
        sh(&format!(
            "cd {c} && /usr/bin/python3 -c \"import os; os.setxattr('top', 'user.test', b'{v}')\"",
            c = ctx.display()
        ));
    };
    sh(&format!("echo top > {}", ctx.join("top").display()));
    set("one");
    let df = "FROM scratch\nCOPY top /top\n";
    build(&st, &ctx, "plain", df, &[]);
    build(&st, &ctx, "x", df, &["--xattrs"]);
    let out = s.join("x-dir");
    ok(convert(&st).arg("--xattrs").arg("x").arg(&out));
    assert_eq!(user_test(&out.join("top")).as_deref(), Some("one"));
    // An attribute changed in the context is a miss too (with --xattrs, COPY keeps it).
    set("two");
    build(&st, &ctx, "y", df, &["--xattrs"]);
    let out = s.join("y-dir");
    ok(convert(&st).arg("--xattrs").arg("y").arg(&out));
    assert_eq!(user_test(&out.join("top")).as_deref(), Some("two"));
}

/// A RUN may leave files and directories its user can't read (RHEL's `/etc/shadow` is
/// mode 0000; `useradd` rewrites it): the build commits them with their modes, and later
/// instructions see their contents.
#[test]
fn run_leaving_mode_0000_files_and_directories_commits_them() {
    let s = Scratch::new("modes-0000");
    let st = s.storage();
    let ctx = context(&s);
    ok(image(&st)
        .arg("import")
        .arg(crate::common::busybox_rootfs())
        .arg("bb"));
    let df = "FROM bb\n\
              RUN mkdir -p /d/e && echo secret > /d/e/f && echo s > /shadow \
                  && chmod 0 /d/e/f /d/e /shadow\n\
              RUN chmod 0 /d\n";
    build(&st, &ctx, "locked", df, &[]);
    let tar = s.join("locked.tar");
    ok(convert(&st).arg("locked").arg(&tar));
    let listing = ok(unpriv("tar").arg("-tvf").arg(&tar));
    for (mode, path) in [
        ("d---------", "./d/"),
        ("d---------", "./d/e/"),
        ("----------", "./d/e/f"),
        ("----------", "./shadow"),
    ] {
        assert!(
            listing
                .lines()
                .any(|l| l.starts_with(mode) && l.trim_end().ends_with(&format!(" {path}"))),
            "{mode} {path} not in:\n{listing}"
        );
    }
    // Later instructions see the contents.
    let df2 = "FROM locked\nRUN chmod 755 /d /d/e && chmod 644 /d/e/f && cat /d/e/f > /copy\n";
    build(&st, &ctx, "unlocked", df2, &[]);
    let out = ok(tool("ch-run")
        .arg("-s")
        .arg(&st)
        .args(["unlocked", "--", "cat", "/copy"]));
    assert_eq!(out, "secret\n");
    ok(image(&st).arg("fsck"));
}
