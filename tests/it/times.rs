//! Integration tests for file times (docs/store-format.md, `meta` version 2): imports,
//! COPY, ADD and RUN keep modification times; checkouts, directory, tar, SquashFS and OCI
//! exports give them back; `SOURCE_DATE_EPOCH` goes into RUN and clamps what a build writes,
//! so two builds in two stores give the same commit and the same export bytes.

use crate::common::{busybox_rootfs, ok, output, sh, skip, tool, Scratch};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Times used below, with their UTC spellings (tar and unsquashfs print these).
const T_FILE: i64 = 123456789; // 1973-11-29 21:33:09
const T_DIR: i64 = 200000000; // 1976-05-03 19:33:20
const T_INNER: i64 = 150000000; // 1974-10-03 02:40:00
const T_LINK: i64 = 300000000; // 1979-07-05 05:20:00

fn image(st: &Path) -> Command {
    let mut c = tool("ch-image");
    c.arg("-s").arg(st);
    c.env_remove("CH_IMAGE_CACHE");
    c.env_remove("SOURCE_DATE_EPOCH");
    c
}

fn convert(st: &Path) -> Command {
    let mut c = tool("ch-convert");
    c.arg("-q").arg("-s").arg(st);
    c.env_remove("SOURCE_DATE_EPOCH");
    c
}

/// `ch-run -s ST NAME -- /bin/sh -c SCRIPT`; returns stdout.
fn run(st: &Path, name: &str, script: &str) -> String {
    ok(tool("ch-run")
        .arg("-s")
        .arg(st)
        .arg(name)
        .args(["--", "/bin/sh", "-c", script]))
}

/// lstat mtime (seconds) of `p`.
fn mtime(p: &Path) -> i64 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
        .mtime()
}

/// The busybox rootfs copied to `dir` with old times on `old`, `d/`, `d/f` and the
/// symlink `l`.
fn tree_with_old_times(dir: &Path) {
    sh(&format!(
        "cp -a {bb} {d}
         cd {d}
         echo old > old && touch -d @{T_FILE} old
         mkdir d && echo f > d/f && touch -d @{T_INNER} d/f && touch -d @{T_DIR} d
         ln -s old l && touch -h -d @{T_LINK} l",
        bb = busybox_rootfs().display(),
        d = dir.display()
    ));
}

fn assert_old_times(root: &Path, what: &str) {
    for (p, t) in [
        ("old", T_FILE),
        ("d", T_DIR),
        ("d/f", T_INNER),
        ("l", T_LINK),
    ] {
        assert_eq!(mtime(&root.join(p)), t, "{what}: time of {p}");
    }
}

#[test]
fn tar_import_keeps_times_through_checkout_exports_and_ch_run() {
    let s = Scratch::new("times-tar");
    let st = s.storage();
    let src = s.join("src");
    tree_with_old_times(&src);
    let tarball = s.join("img.tar");
    sh(&format!(
        "tar -C {} --format=gnu -cf {} .",
        src.display(),
        tarball.display()
    ));
    ok(image(&st).arg("import").arg(&tarball).arg("old"));
    // Inside the container (the first run makes the checkout).
    assert_eq!(
        run(&st, "old", "stat -c %Y /old /d /d/f /l"),
        format!("{T_FILE}\n{T_DIR}\n{T_INNER}\n{T_LINK}\n")
    );
    // The checkout ch-run runs.
    assert_old_times(&st.join("img/old+latest"), "checkout");
    // Directory export.
    let dir = s.join("out-dir");
    ok(convert(&st).arg("old").arg(&dir));
    assert_old_times(&dir, "directory export");
    // Tar export: the headers hold the times.
    let tar_out = s.join("out.tar");
    ok(convert(&st).arg("old").arg(&tar_out));
    let listing = ok(Command::new("tar")
        .env("TZ", "UTC")
        .args(["--full-time", "-tvf"])
        .arg(&tar_out));
    for when in [
        "1973-11-29 21:33:09 ./old",
        "1976-05-03 19:33:20 ./d",
        "1974-10-03 02:40:00 ./d/f",
        "1979-07-05 05:20:00 ./l -> old",
    ] {
        assert!(
            listing
                .lines()
                .any(|l| l.ends_with(when) || l.ends_with(&format!("{when}/"))),
            "tar export: {when}:\n{listing}"
        );
    }
    // OCI export, read back into a directory (the layer path of pulls).
    let oci = s.join("out.oci");
    ok(convert(&st).args(["-o", "oci"]).arg("old").arg(&oci));
    let back = s.join("from-oci");
    ok(convert(&st).arg(&oci).arg(&back));
    assert_old_times(&back, "OCI export read back");
    // SquashFS, through the tar stream.
    if Command::new("sh")
        .args(["-c", "command -v unsquashfs"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let sq = s.join("out.sqfs");
        ok(convert(&st).arg("old").arg(&sq));
        let l = ok(Command::new("unsquashfs")
            .env("TZ", "UTC")
            .arg("-lls")
            .arg(&sq));
        assert!(
            l.lines()
                .any(|x| x.contains("1973-11-29 21:33") && x.ends_with("squashfs-root/old")),
            "squash export keeps the time of /old:\n{l}"
        );
    } else {
        skip("unsquashfs not installed: SquashFS times not checked");
    }
    // A directory import keeps them too, in whole seconds (as the tarball of it does).
    sh(&format!("touch -d '@{T_FILE}.5' {}/old", src.display()));
    ok(image(&st).arg("import").arg(&src).arg("fromdir"));
    let md = std::fs::metadata(st.join("img/fromdir+latest/old")).expect("stat");
    assert_eq!((md.mtime(), md.mtime_nsec()), (T_FILE, 0));
}

/// A context directory with the Dockerfile `df` and a file `f` dated `T_FILE`, and a
/// directory `dir` (holding `g`, dated `T_INNER`) dated `T_DIR`.
fn context(s: &Scratch, df: &str) -> PathBuf {
    let ctx = s.join("ctx");
    sh(&format!(
        "mkdir -p {c}/dir && cd {c}
         echo f > f && touch -d @{T_FILE} f
         echo g > dir/g && touch -d @{T_INNER} dir/g && touch -d @{T_DIR} dir",
        c = ctx.display()
    ));
    std::fs::write(ctx.join("Dockerfile"), df).expect("write Dockerfile");
    ctx
}

fn build(st: &Path, tag: &str, ctx: &Path, extra: &[&str]) -> String {
    let out = output(image(st).args(["build", "-t", tag]).args(extra).arg(ctx));
    assert!(
        out.status.success(),
        "build failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn commit_of(st: &Path, tag: &str) -> String {
    let list = ok(image(st).args(["list", "-l"]));
    list.lines()
        .find_map(|l| {
            let (n, c) = l.split_once('\t')?;
            (n == tag || n == format!("{tag}:latest")).then(|| c.to_string())
        })
        .unwrap_or_else(|| panic!("no image {tag} in:\n{list}"))
}

#[test]
fn copy_keeps_the_times_of_context_files_and_of_other_stages() {
    let s = Scratch::new("times-copy");
    let st = s.storage();
    ok(image(&st)
        .arg("import")
        .arg(busybox_rootfs())
        .arg("busybox"));
    let ctx = context(
        &s,
        "FROM busybox AS one\nCOPY f /f\nCOPY dir /dir/\n\
         FROM busybox\nCOPY --from=one /f /copied\nCOPY --from=one /dir /dir2\n",
    );
    build(&st, "copy", &ctx, &[]);
    assert_eq!(
        run(&st, "copy", "stat -c %Y /copied /dir2 /dir2/g"),
        format!("{T_FILE}\n{T_DIR}\n{T_INNER}\n")
    );
    // The first stage, as COPY from the context left it.
    let ctx1 = s.join("ctx1");
    sh(&format!("cp -a {} {}", ctx.display(), ctx1.display()));
    std::fs::write(
        ctx1.join("Dockerfile"),
        "FROM busybox\nCOPY f /f\nCOPY dir /dir/\n",
    )
    .expect("write");
    build(&st, "one", &ctx1, &[]);
    assert_eq!(
        run(&st, "one", "stat -c %Y /f /dir /dir/g"),
        format!("{T_FILE}\n{T_DIR}\n{T_INNER}\n")
    );
    // Touching a copied file changes what COPY makes, so it misses the cache.
    sh(&format!("touch -d @{T_LINK} {}/f", ctx1.display()));
    let log = build(&st, "one", &ctx1, &[]);
    assert!(
        log.contains("  2. COPY f /f"),
        "a touched source misses:\n{log}"
    );
    assert_eq!(run(&st, "one", "stat -c %Y /f"), format!("{T_LINK}\n"));
}

#[test]
fn run_keeps_the_times_its_commands_set() {
    let s = Scratch::new("times-run");
    let st = s.storage();
    ok(image(&st)
        .arg("import")
        .arg(busybox_rootfs())
        .arg("busybox"));
    let ctx = context(
        &s,
        &format!(
            "FROM busybox\nRUN touch -d @{T_FILE} /f && mkdir /d && touch /d/x && touch -d @{T_DIR} /d\n\
             RUN echo \"sde=$SOURCE_DATE_EPOCH\" > /sde\n"
        ),
    );
    build(&st, "run", &ctx, &[]);
    assert_eq!(
        run(&st, "run", "stat -c %Y /f /d"),
        format!("{T_FILE}\n{T_DIR}\n")
    );
    // Without SOURCE_DATE_EPOCH, files a RUN writes have their real time.
    let t: i64 = run(&st, "run", "stat -c %Y /d/x")
        .trim()
        .parse()
        .expect("time");
    assert!(t > 1_700_000_000, "real time of /d/x: {t}");
    assert_eq!(run(&st, "run", "cat /sde"), "sde=\n");
}

#[test]
fn source_date_epoch_makes_builds_in_two_stores_identical() {
    let s = Scratch::new("times-sde");
    let sde = 1_000_000_000i64;
    let df = format!(
        "FROM busybox\nRUN echo hi > /f && mkdir -p /d/e && touch /d/e/g && touch -d @{T_FILE} /old\n\
         RUN echo \"$SOURCE_DATE_EPOCH\" > /sde\nENV A=b\nCOPY f /copied\n"
    );
    let ctx = context(&s, &df);
    let mut commits = Vec::new();
    let mut exports = Vec::new();
    for (n, how) in ["arg", "env"].iter().enumerate() {
        let st = s.join(format!("st{n}"));
        ok(image(&st)
            .arg("import")
            .arg(busybox_rootfs())
            .arg("busybox"));
        // Builds a second apart at least, so that unclamped times would differ.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let arg = format!("SOURCE_DATE_EPOCH={sde}");
        let mut c = image(&st);
        c.args(["build", "-t", "r"]);
        if *how == "arg" {
            c.args(["--build-arg", &arg]);
        } else {
            c.env("SOURCE_DATE_EPOCH", sde.to_string());
        }
        c.arg(&ctx);
        let out = output(&mut c);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        commits.push(commit_of(&st, "r"));
        let tar_out = s.join(format!("r{n}.tar"));
        ok(convert(&st).arg("r").arg(&tar_out));
        exports.push(std::fs::read(&tar_out).expect("read export"));
        assert_eq!(run(&st, "r", "cat /sde"), format!("{sde}\n"));
        // Clamped: new files get SOURCE_DATE_EPOCH, older times stay.
        assert_eq!(
            run(
                &st,
                "r",
                "stat -c %Y /f /d/e/g /d /old /copied /ch/environment"
            ),
            format!("{sde}\n{sde}\n{sde}\n{T_FILE}\n{T_FILE}\n{sde}\n")
        );
    }
    assert_eq!(commits[0], commits[1], "same commit in both stores");
    assert!(exports[0] == exports[1], "tar exports differ");
}

/// What `python3 -v -c 'import json'` says about json's bytecode: importlib prints
/// "code object from '…/__pycache__/….pyc'" when it uses the cached bytecode, "code object
/// from '….py'" when it compiles the source again, then "created '….pyc'" or "could not
/// create …" when it tries to write the new bytecode.
fn assert_json_imports_from_cache(stderr: &str, what: &str) {
    let used = stderr.lines().any(|l| {
        l.starts_with("# code object from") && l.contains("/json/__pycache__/__init__.cpython-")
    });
    let rewritten = stderr
        .lines()
        .filter(|l| {
            (l.starts_with("# code object from") && l.contains(".py'"))
                || l.starts_with("# created '")
                || l.contains("could not create")
        })
        .collect::<Vec<_>>();
    assert!(
        used && rewritten.is_empty(),
        "{what}: json not imported from its .pyc as it is (recompiled: {rewritten:?}):\n{stderr}"
    );
}

/// `.pyc` files below `root/usr/lib` with their mtimes and sizes.
fn pyc_files(root: &Path) -> std::collections::BTreeMap<PathBuf, (i64, i64, u64)> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![root.join("usr/lib")];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(md) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if md.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "pyc") {
                out.insert(p, (md.mtime(), md.mtime_nsec(), md.len()));
            }
        }
    }
    out
}

/// The issue's test: Python installed by RUN in a Debian image imports from the `.pyc`
/// files `apt-get install` compiled, read-only (nothing recompiled) and writable (nothing
/// written), with and without `SOURCE_DATE_EPOCH` (then the `.pyc` are hash-checked).
#[test]
fn python_installed_by_run_starts_without_recompiling() {
    let Some(tarball) = crate::build::debian_tarball() else {
        return;
    };
    let s = Scratch::new("times-python");
    let ctx = s.join("ctx");
    sh(&format!(
        "mkdir {c} && printf '%s\\n' 'FROM debian' \
         'RUN apt-get update && apt-get install -y --no-install-recommends python3' \
         > {c}/Dockerfile",
        c = ctx.display()
    ));
    for sde in [None, Some("1700000000")] {
        let what = match sde {
            None => "without SOURCE_DATE_EPOCH".to_string(),
            Some(t) => format!("SOURCE_DATE_EPOCH={t}"),
        };
        let st = s.join(format!("st-{}", sde.unwrap_or("none")));
        ok(image(&st).arg("import").arg(&tarball).arg("debian"));
        ok(image(&st).arg("checkout").arg("debian"));
        // The base keeps the tarball's times (the issue's /usr/bin/ls of 2022-09-20).
        assert_eq!(
            mtime(&st.join("img/debian+latest/usr/bin/ls")),
            {
                let l = ok(Command::new("tar")
                    .args(["--full-time", "-tvf"])
                    .arg(&tarball)
                    .arg("./usr/bin/ls")
                    .env("TZ", "UTC"));
                let f: Vec<&str> = l.split_whitespace().collect();
                let t = format!("{} {}", f[3], f[4]);
                ok(Command::new("date")
                    .env("TZ", "UTC")
                    .args(["-d", &t, "+%s"]))
                .trim()
                .parse::<i64>()
                .expect("seconds")
            },
            "{what}: /usr/bin/ls keeps the tarball's time"
        );
        let mut c = image(&st);
        c.args(["build", "-t", "py"]);
        if let Some(t) = sde {
            c.args(["--build-arg", &format!("SOURCE_DATE_EPOCH={t}")]);
        }
        let out = output(c.arg(&ctx));
        assert!(
            out.status.success(),
            "{what}: build failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Read-only, by name.
        let out = output(tool("ch-run").arg("-s").arg(&st).args([
            "py",
            "--",
            "python3",
            "-v",
            "-c",
            "import json",
        ]));
        assert!(out.status.success(), "{what}: {out:?}");
        assert_json_imports_from_cache(
            &String::from_utf8_lossy(&out.stderr),
            &format!("{what}, read-only"),
        );
        // Writable, from a directory export: no .pyc written or rewritten.
        let dir = s.join(format!("dir-{}", sde.unwrap_or("none")));
        ok(convert(&st).arg("py").arg(&dir));
        let before = pyc_files(&dir);
        assert!(!before.is_empty(), "{what}: no .pyc in the image");
        let out = output(tool("ch-run").arg("-w").arg(&dir).args([
            "--",
            "python3",
            "-v",
            "-c",
            "import json",
        ]));
        assert!(out.status.success(), "{what}: {out:?}");
        assert_json_imports_from_cache(
            &String::from_utf8_lossy(&out.stderr),
            &format!("{what}, writable"),
        );
        assert_eq!(
            pyc_files(&dir),
            before,
            "{what}: .pyc files changed under -w"
        );
    }
}

#[test]
fn add_keeps_the_times_of_archive_members() {
    let s = Scratch::new("times-add");
    let st = s.storage();
    ok(image(&st)
        .arg("import")
        .arg(busybox_rootfs())
        .arg("busybox"));
    let ctx = context(&s, "FROM busybox\nADD t.tar /x/\n");
    sh(&format!(
        "cd {c} && mkdir -p m/d && echo a > m/d/a && ln -s a m/d/l
         touch -d @{T_INNER} m/d/a && touch -h -d @{T_LINK} m/d/l && touch -d @{T_DIR} m/d
         tar -C m --format=gnu -cf t.tar d && rm -r m",
        c = ctx.display()
    ));
    build(&st, "add", &ctx, &[]);
    assert_eq!(
        run(&st, "add", "stat -c %Y /x/d /x/d/a /x/d/l"),
        format!("{T_DIR}\n{T_INNER}\n{T_LINK}\n")
    );
}
