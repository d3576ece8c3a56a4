//! Hostile inputs other than a build-cache remote (those are in `hostile.rs`): archives an
//! `ADD` extracts, OCI layouts and SquashFS files given to `ch-convert`. Each is refused
//! with an error naming the input and the member or path, escaped (`log::shown`), and
//! nothing is written outside the image.

use std::path::Path;

use crate::common::{busybox_rootfs, ok, output, own, Scratch};
use crate::store::{chi, import};

/// A tar member: name, type, link target, data.
type Member<'a> = (&'a [u8], tar::EntryType, &'a [u8], &'a [u8]);

/// A tar stream of `members` (name, type, link target, data), written with raw headers
/// (the tar crate refuses some of these names).
fn raw_tar(members: &[Member]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, link, data) in members {
        let mut h = tar::Header::new_ustar();
        let u = h.as_ustar_mut().expect("ustar");
        u.name[..name.len()].copy_from_slice(name);
        u.linkname[..link.len()].copy_from_slice(link);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_000_000);
        h.set_entry_type(*kind);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// `ch-image build` of `FROM busybox` then `ADD NAME.tar /d/` (and `RUN` lines
/// `run`) in context `ctx`, tagged `NAME`: its output.
fn build_add(st: &Path, ctx: &Path, name: &str, tar: &[u8], run: &str) -> std::process::Output {
    std::fs::write(ctx.join(format!("{name}.tar")), tar).expect("write tarball");
    std::fs::write(
        ctx.join(format!("{name}.df")),
        format!("FROM busybox\nADD {name}.tar /d/\n{run}"),
    )
    .expect("write Dockerfile");
    own(ctx);
    output(
        chi(st)
            .args(["build", "-t", name, "-f"])
            .arg(ctx.join(format!("{name}.df")))
            .arg(ctx),
    )
}

/// Regression: an `ADD`ed tarball's hard link was left to the tar crate, which linked a
/// directory's name (failing with `Operation not permitted ... when hard linking A to
/// B`), a symlink (the image got a second name of the symlink) and failed on a missing
/// or later target with its own error naming the temporary layer paths and the member's
/// name as they were: `h ESC[31m` and a target `nope\nforged` drove the terminal and forged
/// a line. A hard link must now name an earlier regular file of the archive, as import
/// requires, or the step fails naming the archive, the member and the target, escaped;
/// other extraction errors give the system error without the tar crate's raw paths.
#[test]
fn add_refuses_hard_links_to_anything_but_an_earlier_file_naming_them_escaped() {
    use tar::EntryType as T;
    let s = Scratch::new("add-hard-links");
    let st = s.storage();
    import(&st, &busybox_rootfs(), "busybox");
    let ctx = s.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let raw = ['\u{1b}', '\u{7}', '\u{9b}'];
    let cases: [(&str, Vec<u8>, &str); 6] = [
        (
            "missing",
            raw_tar(&[(b"h\x1b[31m", T::Link, b"nope\x1b[1m\nforged", b"")]),
            "h\\u{1b}[31m: hard link target is not an earlier regular file: \
             nope\\u{1b}[1m\\u{a}forged",
        ),
        (
            "later",
            raw_tar(&[(b"h", T::Link, b"f", b""), (b"f", T::Regular, b"", b"x")]),
            "h: hard link target is not an earlier regular file: f",
        ),
        (
            "directory",
            raw_tar(&[
                (b"dir", T::Directory, b"", b""),
                (b"h", T::Link, b"dir", b""),
            ]),
            "h: hard link target is not an earlier regular file: dir",
        ),
        (
            "symlink",
            raw_tar(&[
                (b"f", T::Regular, b"", b"x"),
                (b"s", T::Symlink, b"f", b""),
                (b"h", T::Link, b"s", b""),
            ]),
            "h: hard link target is not an earlier regular file: s",
        ),
        (
            "replaced",
            raw_tar(&[
                (b"f", T::Regular, b"", b"x"),
                (b"f", T::Symlink, b"/etc/passwd", b""),
                (b"h", T::Link, b"f", b""),
            ]),
            "h: hard link target is not an earlier regular file: f",
        ),
        (
            "through",
            raw_tar(&[
                (b"e", T::Symlink, b"/etc", b""),
                (b"h", T::Link, b"e/passwd", b""),
            ]),
            "h: hard link target is not an earlier regular file: e/passwd",
        ),
    ];
    for (name, tar, want) in cases {
        let out = build_add(&st, &ctx, name, &tar, "");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: {err}");
        assert!(!err.contains(raw), "{name}: printed raw: {err:?}");
        assert!(
            !err.lines().any(|l| l.starts_with("forged")),
            "{name}: a forged line: {err}"
        );
        let full = format!(
            "unsafe member in archive {}: {want}",
            ctx.join(format!("{name}.tar")).display()
        );
        assert!(err.contains(&full), "{name}: {full:?} not in: {err}");
    }
    // A member whose parent is a file fails with the system's error, without the tar
    // crate's paths below the storage directory.
    let out = build_add(
        &st,
        &ctx,
        "notdir",
        &raw_tar(&[
            (b"x", T::Regular, b"", b"x"),
            (b"x/y\x1b[2m", T::Regular, b"", b"y"),
        ]),
        "",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(!err.contains(raw), "printed raw: {err:?}");
    assert!(
        err.contains("can't extract x/y\\u{1b}[2m from archive ")
            && err.contains("caused by: Not a directory (os error 20)")
            && !err.contains(&*st.to_string_lossy()),
        "{err}"
    );
    // Hard links to earlier files (by any spelling of the name) still extract as links.
    let out = build_add(
        &st,
        &ctx,
        "fine",
        &raw_tar(&[
            (b"./a/f", T::Regular, b"", b"x"),
            (b"h1", T::Link, b"a/f", b""),
            (b"h2", T::Link, b"./a//f", b""),
            (b"h3", T::Link, b"h1", b""),
        ]),
        "RUN stat -c '%n %h' /d/a/f /d/h1 /d/h2 /d/h3\n",
    );
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    for n in ["/d/a/f 4", "/d/h1 4", "/d/h2 4", "/d/h3 4"] {
        assert!(log.contains(n), "{n:?} not in {log}");
    }
    ok(chi(&st).arg("fsck"));
}
