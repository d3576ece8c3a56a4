//! Settings resolved once by each binary and passed down (storage directory, `--xattrs`),
//! the storage layout they lead to, and hints that come from the library's error types.

use std::path::Path;
use std::process::Command;

use crate::common::{busybox_rootfs, fails, ok, output, sh, skip, tool, unpriv, Scratch};

fn image(st: &Path) -> Command {
    let mut c = tool("ch-image");
    c.arg("-s").arg(st);
    c.env_remove("CH_IMAGE_CACHE").env_remove("CH_XATTRS");
    c
}

/// The names in the listing of docs/store-format.md's "Paths under the storage directory"
/// (first component of each entry).
fn documented_top_level_names() -> Vec<String> {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/store-format.md"))
            .expect("read docs/store-format.md");
    let section = doc
        .split("### Paths under the storage directory")
        .nth(1)
        .and_then(|s| s.split("```").nth(1))
        .expect("paths section with a listing")
        .to_string();
    section
        .lines()
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .map(|p| p.split('/').next().unwrap_or(p).to_string())
        .collect()
}

#[test]
fn storage_directory_holds_only_documented_paths_after_import_build_and_run() {
    let s = Scratch::new("layout");
    let st = s.storage();
    ok(image(&st).arg("import").arg(busybox_rootfs()).arg("bb"));
    let ctx = s.join("ctx");
    sh(&format!(
        "mkdir {c} && echo hi > {c}/f && printf 'FROM bb\\nCOPY f /f\\nRUN echo x > /x\\n' > {c}/Dockerfile",
        c = ctx.display()
    ));
    ok(image(&st).args(["build", "-t", "derived"]).arg(&ctx));
    let got = ok(tool("ch-run")
        .arg("-s")
        .arg(&st)
        .args(["derived", "--", "/bin/cat", "/f", "/x"]));
    assert_eq!(got, "hi\nx\n");
    let documented = documented_top_level_names();
    let mut seen = Vec::new();
    for e in std::fs::read_dir(&st).expect("read storage directory") {
        let name = e.expect("entry").file_name().to_string_lossy().into_owned();
        assert!(
            documented.contains(&name),
            "{name} in the storage directory is not in docs/store-format.md: {documented:?}"
        );
        seen.push(name);
    }
    for want in [
        "version",
        "lock",
        "repo.git",
        "img",
        "checkouts",
        "tmp",
        "statcache",
    ] {
        assert!(seen.iter().any(|n| n == want), "no {want}: {seen:?}");
    }
    // The stat cache of the context: statcache/BLAKE3(canonical context path).txt.
    let canonical = std::fs::canonicalize(&ctx).expect("canonicalize context");
    let want = st.join("statcache").join(format!(
        "{}.txt",
        blake3::hash(canonical.as_os_str().as_encoded_bytes()).to_hex()
    ));
    assert!(want.is_file(), "no stat cache at {}", want.display());
}

#[test]
fn ch_run_takes_a_relative_storage_variable_from_its_directory() {
    let s = Scratch::new("relstorage");
    let st = s.join("st");
    ok(image(&st).arg("import").arg(busybox_rootfs()).arg("bb"));
    let mut c = tool("ch-run");
    c.current_dir(&s.path)
        .env("CH_IMAGE_STORAGE", "st")
        .args(["-v", "bb", "--", "/bin/true"]);
    let out = output(&mut c);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // Resolved once, to an absolute path.
    assert!(err.contains(&format!("storage: {}", st.display())), "{err}");
    // -s beats the variable, which may then name nothing.
    ok(tool("ch-run")
        .arg("-s")
        .arg(&st)
        .env("CH_IMAGE_STORAGE", "/nonexistent/grove-storage")
        .args(["bb", "--", "/bin/true"]));
    // An empty variable counts as unset: the default, where there is no such image.
    let (_, err) = fails(
        tool("ch-run")
            .current_dir(&s.path)
            .env("CH_IMAGE_STORAGE", "")
            .args(["grove-settings-test-none", "--", "/bin/true"]),
    );
    assert!(
        err.contains("can't find image: grove-settings-test-none"),
        "{err}"
    );
}

#[test]
fn ch_convert_refuses_a_relative_storage_variable_like_ch_image() {
    let s = Scratch::new("relconvert");
    let (_, err) = fails(
        tool("ch-convert")
            .current_dir(&s.path)
            .env("CH_IMAGE_STORAGE", "st")
            .arg(busybox_rootfs())
            .arg("bb"),
    );
    assert!(
        err.contains("$CH_IMAGE_STORAGE: not absolute path: st"),
        "{err}"
    );
    // A dry run needs no storage directory, so it does not look for one.
    ok(tool("ch-convert")
        .current_dir(&s.path)
        .env("CH_IMAGE_STORAGE", "st")
        .arg("-n")
        .arg(busybox_rootfs())
        .arg("bb"));
}

#[test]
fn conversion_error_keeps_the_hint_of_the_store_error_it_wraps() {
    let s = Scratch::new("converthint");
    let st = s.storage();
    ok(image(&st).arg("list"));
    let (code, err) = fails(
        tool("ch-convert")
            .arg("-s")
            .arg(&st)
            .args(["-i", "ch-image", "nosuch"])
            .arg(s.join("out.tar")),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("error: no image named nosuch:latest in storage"),
        "{err}"
    );
    assert!(
        err.contains("hint: `ch-image list` shows the images in storage"),
        "{err}"
    );
}

#[test]
fn ch_image_error_keeps_the_hint_of_the_store_error_it_wraps() {
    let s = Scratch::new("imagehint");
    let empty = s.join("empty");
    sh(&format!("mkdir {}", empty.display()));
    // Through ch-image's own error type (import, build) and straight from the store
    // (history): the same hint.
    for args in [&["import", "/etc", "x"][..], &["history", "x"]] {
        let (_, err) = fails(image(&empty).args(args));
        assert!(
            err.contains("error: storage directory seems invalid"),
            "{args:?}: {err}"
        );
        assert!(
            err.contains("hint: Grove creates its storage directory itself"),
            "{args:?}: {err}"
        );
    }
    // An error whose types have no hint gets none.
    let st = s.storage();
    let (_, err) = fails(image(&st).args(["delete", "nosuch"]));
    assert!(err.contains("unable to delete 1 invalid image(s)"), "{err}");
    assert!(!err.contains("hint:"), "{err}");
}

#[test]
fn ch_convert_records_extended_attributes_only_when_asked() {
    let s = Scratch::new("convertxattr");
    let st = s.storage();
    let src = s.join("src");
    let set = unpriv("/usr/bin/python3")
        .args([
            "-c",
            "import os, sys; os.makedirs(sys.argv[1]); p = sys.argv[1] + '/f'; \
             open(p, 'w').write('hi'); os.setxattr(p, 'user.color', b'blue')",
        ])
        .arg(&src)
        .status()
        .expect("spawn python3");
    if !set.success() {
        skip("the scratch file system does not take user.* extended attributes");
        return;
    }
    let meta = |name: &str| {
        ok(unpriv("git")
            .arg("-C")
            .arg(st.join("repo.git"))
            .args(["show", &format!("refs/grove/img/{name}+latest:meta")]))
    };
    let convert = |args: &[&str], name: &str, env: Option<&str>| {
        let mut c = tool("ch-convert");
        c.env_remove("CH_XATTRS").arg("-s").arg(&st).args(args);
        if let Some(v) = env {
            c.env("CH_XATTRS", v);
        }
        ok(c.arg(&src).arg(name));
    };
    convert(&["--xattrs"], "opt", None);
    convert(&[], "env", Some("1"));
    convert(&[], "plain", None);
    convert(&["--no-xattrs"], "off", Some("1"));
    for name in ["opt", "env"] {
        assert!(
            meta(name).contains("xattr user.color 626c7565 f"),
            "{name}: {}",
            meta(name)
        );
    }
    for name in ["plain", "off"] {
        assert!(!meta(name).contains("xattr"), "{name}: {}", meta(name));
    }
}
