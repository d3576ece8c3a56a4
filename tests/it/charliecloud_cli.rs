//! Charliecloud's command line as its man pages and FAQ give it (issue 12, points 13, 16
//! and 19): `pull IMAGE_REF IMAGE_DIR`, `pull --parse-only`, `--dependencies`,
//! `--always-download` and `pull --no-cache`, `pull scratch` and `FROM scratch` under any
//! registry settings, `gestalt` selectors, intermediate stages named `NAME_stageN`, and
//! ch-run's `can't find image`. The real binaries, run as the unprivileged test user; the
//! registry is the fake one of `registry.rs` (no network).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{fails, ok, output, tool, Scratch};
use crate::registry::{gzip, tar_with_member, Fake};

/// `ch-image -s STORAGE` with no settings from the environment that would change output.
fn image(storage: &Path) -> Command {
    let mut c = tool("ch-image");
    c.arg("-s").arg(storage);
    for v in [
        "CH_IMAGE_CACHE",
        "CH_LOG_FILE",
        "CH_LOG_FESTOON",
        "CH_REGY_DEFAULT_HOST",
        "CH_IMAGE_AUTH",
    ] {
        c.env_remove(v);
    }
    c
}

/// A fake registry serving `fake/img:latest` with one file, `hello`.
fn fake() -> Fake {
    Fake::start(
        gzip(&tar_with_member("hello", b"hello from the layer\n")),
        None,
    )
}

/// `ch-image -s STORAGE pull 127.0.0.1:PORT/fake/img ARGS...` against `fake`.
fn pull(fake: &Fake, storage: &Path, args: &[&str]) -> Command {
    let mut c = image(storage);
    c.env("CH_IMAGE_REGY_INSECURE", format!("127.0.0.1:{}", fake.port))
        .arg("pull")
        .arg(format!("127.0.0.1:{}/fake/img", fake.port))
        .args(args);
    c
}

/// How many times the fake registry was asked for a layer or config blob.
fn blob_requests(fake: &Fake) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.contains("/blobs/"))
        .count()
}

fn names(storage: &Path) -> Vec<String> {
    ok(image(storage).arg("list"))
        .lines()
        .map(str::to_string)
        .collect()
}

fn stderr(c: &mut Command) -> (bool, String, String) {
    let out = output(c);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---- pull ----

#[test]
fn pull_parse_only_prints_charliecloud_parse_report_and_touches_no_storage() {
    let s = Scratch::new("cli-parse-only");
    let st = s.storage();
    let out = ok(image(&st).args(["pull", "--parse-only", "example.com:5000/foo/bar/baz:1.0"]));
    // Charliecloud 0.38's `Reference.as_verbose_str`, byte for byte.
    assert_eq!(
        out,
        "as string:    example.com:5000/foo/bar/baz:1.0\n\
         for filename: example.com+5000%foo%bar%baz+1.0\n\
         fields:\n  \
           host    'example.com'\n  \
           port    5000\n  \
           path    ['foo', 'bar']\n  \
           name    'baz'\n  \
           tag     '1.0'\n  \
           digest  None\n"
    );
    let out = ok(image(&st).args(["pull", "--parse-only", "alpine"]));
    assert_eq!(
        out,
        "as string:    alpine\nfor filename: alpine\nfields:\n  host    None\n  port    None\n  path    []\n  name    'alpine'\n  tag     None\n  digest  None\n"
    );
    assert!(!st.exists(), "--parse-only created the storage directory");
    // A bad reference is an error, still without storage.
    fails(image(&st).args(["pull", "--parse-only", "Foo/../x"]));
    assert!(!st.exists());
}

#[test]
fn pull_into_a_directory_unpacks_there_and_keeps_no_copy_in_storage() {
    let fake = fake();
    let s = Scratch::new("cli-pull-dir");
    let st = s.storage();
    let dest = s.join("unpacked");
    let (ok_, _, err) = stderr(&mut pull(&fake, &st, &[dest.to_str().unwrap()]));
    assert!(ok_, "{err}");
    assert_eq!(
        std::fs::read_to_string(dest.join("hello")).unwrap(),
        "hello from the layer\n"
    );
    assert!(!st.exists(), "the storage directory was created");
    // Nothing left beside it (the temporary store is gone).
    let mut left: Vec<String> = std::fs::read_dir(&s.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["unpacked"]);

    // A relative directory, written as a path (`./x`), is a directory too; a bare word
    // stays a destination reference (Charliecloud 0.38's DEST_REF).
    let mut c = pull(&fake, &st, &["./rel"]);
    c.current_dir(&s.path);
    ok(&mut c);
    assert!(s.join("rel/hello").is_file());
    assert!(!st.exists());
    ok(&mut pull(&fake, &st, &["named"]));
    assert_eq!(names(&st), ["named"]);
    assert!(!s.join("named").exists());

    // A directory that holds something other than an image is not replaced.
    let other = s.join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("precious"), "keep me").unwrap();
    let mut c = pull(&fake, &st, &[other.to_str().unwrap()]);
    let (_, err) = fails(&mut c);
    assert!(err.contains("does not appear to be an image"), "{err}");
    assert_eq!(
        std::fs::read_to_string(other.join("precious")).unwrap(),
        "keep me"
    );
}

#[test]
fn always_download_and_pull_no_cache_download_everything_again() {
    let fake = fake();
    let s = Scratch::new("cli-always");
    let st = s.storage();
    ok(&mut pull(&fake, &st, &["img"]));
    let first = blob_requests(&fake);
    assert_eq!(first, 2, "config and layer: {:?}", fake.requests());
    // Pulling again asks for no blob: the image is up to date.
    ok(&mut pull(&fake, &st, &["img"]));
    assert_eq!(blob_requests(&fake), first);
    // --always-download (after or before the subcommand) and pull --no-cache download
    // the config and the layer again, although the layer is in the download cache.
    ok(&mut pull(&fake, &st, &["img", "--always-download"]));
    assert_eq!(blob_requests(&fake), first + 2, "{:?}", fake.requests());
    let mut c = image(&st);
    c.env("CH_IMAGE_REGY_INSECURE", format!("127.0.0.1:{}", fake.port))
        .args(["--always-download", "pull"])
        .arg(format!("127.0.0.1:{}/fake/img", fake.port))
        .arg("img");
    ok(&mut c);
    assert_eq!(blob_requests(&fake), first + 4);
    ok(&mut pull(&fake, &st, &["img", "--no-cache"]));
    assert_eq!(blob_requests(&fake), first + 6);
    assert_eq!(names(&st), ["img"]);
}

#[test]
fn dependencies_exits_zero_silently_when_all_is_well() {
    let s = Scratch::new("cli-deps");
    let out = output(image(&s.storage()).arg("--dependencies"));
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
}

// ---- scratch under registry settings ----

#[test]
fn scratch_is_built_in_whatever_the_registry_settings() {
    let s = Scratch::new("cli-scratch");
    let st = s.storage();
    // A default registry that does not answer: scratch must never be asked of it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let regy = |c: &mut Command| {
        c.env("CH_REGY_DEFAULT_HOST", "127.0.0.1")
            .env("CH_REGY_DEFAULT_PORT", port.to_string())
            .env("CH_IMAGE_REGY_INSECURE", format!("127.0.0.1:{port}"));
    };
    let mut c = image(&st);
    regy(&mut c);
    ok(c.args(["pull", "scratch"]));
    assert_eq!(names(&st), ["scratch"]);
    let ctx = s.join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nLABEL a=1\n").unwrap();
    let mut c = image(&st);
    regy(&mut c);
    ok(c.args(["build", "-t", "empty"]).arg(&ctx));
    assert!(names(&st).contains(&"empty".to_string()));
}

// ---- gestalt ----

#[test]
fn gestalt_answers_charliecloud_selectors() {
    let s = Scratch::new("cli-gestalt");
    let st = s.storage();
    for sel in [
        &["gestalt"][..],
        &["gestalt", "bucache"],
        &["gestalt", "bucache-dot"],
    ] {
        let out = output(image(&st).args(sel));
        assert!(out.status.success(), "{sel:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{sel:?}: {out:?}");
    }
    assert_eq!(
        ok(image(&st).args(["gestalt", "storage-path"])).trim_end(),
        st.to_str().unwrap()
    );
    let exe = ok(image(&st).args(["gestalt", "python-path"]));
    assert!(Path::new(exe.trim_end()).is_file(), "{exe}");
    let (okay, _, err) = stderr(image(&st).args(["-vvv", "gestalt", "logging"]));
    assert!(okay, "{err}");
    let lines: Vec<&str> = err.lines().collect();
    for l in [
        "trace",
        "debug",
        "verbose",
        "info",
        "warning: warning",
        "error: error",
    ] {
        assert!(lines.contains(&l), "no {l:?} in {err}");
    }
    let (_, _, err) = stderr(image(&st).args(["gestalt", "logging"]));
    assert!(!err.lines().any(|l| l == "debug"), "{err}");
    let (code, err) = fails(image(&st).args(["gestalt", "logging", "--fail"]));
    assert_eq!(code, 1);
    assert!(
        err.contains("error: the program failed inexplicably"),
        "{err}"
    );
    // Charliecloud 0.31's build option is accepted.
    let ctx = s.join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\n").unwrap();
    ok(image(&st)
        .args(["build", "--no-force-detect", "--parse-only", "-t", "x"])
        .arg(&ctx));
}

// ---- multi-stage names ----

#[test]
fn intermediate_stages_are_images_named_stage_n_and_delete_removes_them() {
    let s = Scratch::new("cli-stages");
    let st = s.storage();
    let ctx = s.join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch AS a\nLABEL a=1\nFROM scratch\nLABEL b=2\nFROM a\nLABEL c=3\n",
    )
    .unwrap();
    ok(image(&st).args(["build", "-t", "ms"]).arg(&ctx));
    ok(image(&st).args(["build", "-t", "ms2:v1"]).arg(&ctx));
    assert_eq!(
        names(&st),
        [
            "ms",
            "ms2:v1",
            "ms2:v1_stage0",
            "ms2:v1_stage1",
            "ms_stage0",
            "ms_stage1"
        ]
    );
    // Stage 0 is the image with only a=1.
    let info = ok(image(&st).args(["inspect", "ms_stage0"]));
    assert!(info.contains("a=1") && !info.contains("c=3"), "{info}");
    ok(image(&st).args(["delete", "ms"]));
    assert_eq!(names(&st), ["ms2:v1", "ms2:v1_stage0", "ms2:v1_stage1"]);
    ok(image(&st).args(["delete", "ms2:v1"]));
    assert_eq!(names(&st), Vec::<String>::new());
}

// ---- ch-run ----

#[test]
fn ch_run_of_a_name_not_stored_says_cant_find_image() {
    let s = Scratch::new("cli-run-missing");
    let st: PathBuf = s.storage();
    ok(image(&st).arg("list"));
    let (_, err) = fails(
        tool("ch-run")
            .arg("-s")
            .arg(&st)
            .args(["foo", "--", "true"]),
    );
    assert!(
        err.contains("can't find image: foo: No such file or directory"),
        "{err}"
    );
    // A path keeps the stat error.
    let (_, err) = fails(
        tool("ch-run")
            .arg("-s")
            .arg(&st)
            .args(["./foo", "--", "true"]),
    );
    assert!(err.contains("can't stat: ./foo"), "{err}");
}
