//! Progress of long operations (src/progress.rs): one line a phase on standard error when
//! it is not a terminal, a bar on a terminal (a pseudo-terminal through `script`), nothing
//! with `-q`, standard output left alone, and a closed pipe never breaking the work.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::common::*;
use crate::registry::{gzip, tar_with_member, Fake, Registry};

/// A directory of 1,200 small files (distinct contents, 4 bytes each) and one of 1 MiB:
/// 1,201 files; returns it and their bytes.
fn tree(s: &Scratch) -> (PathBuf, u64) {
    let d = s.join("tree");
    sh(&format!(
        "mkdir -p '{d}/sub' && cd '{d}/sub' && i=0; while [ $i -lt 1200 ]; do printf '%04d' $i > f$i; i=$((i+1)); done; head -c 1048576 /dev/zero > '{d}/big'",
        d = d.display()
    ));
    (d, 1200 * 4 + 1048576)
}

/// Run, require success; (stdout, stderr).
fn run(cmd: &mut Command) -> (String, String) {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "command failed: {cmd:?}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The one line of `stderr` starting with `start`.
#[track_caller]
fn line<'a>(stderr: &'a str, start: &str) -> &'a str {
    let found: Vec<&str> = stderr.lines().filter(|l| l.starts_with(start)).collect();
    assert_eq!(found.len(), 1, "one line starting {start:?} in:\n{stderr}");
    found[0]
}

/// The documented size format (binary units, one decimal), to check lines against.
fn size(n: u64) -> String {
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while (v * 10.0).round() / 10.0 >= 1024.0 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", ["KiB", "MiB", "GiB"][u])
}

/// A phase line's tail: ` in D s` with an optional `(RATE/s)`.
#[track_caller]
fn timed(l: &str, prefix: &str) {
    let rest = l
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{l:?} does not start with {prefix:?}"));
    let rest = rest
        .strip_prefix(" in ")
        .unwrap_or_else(|| panic!("no duration in {l:?}"));
    let (secs, rate) = rest.split_once(" s").expect("seconds");
    // `0.61 s`, or from a minute on (a loaded machine) `1 min 05 s`, as
    // progress::duration writes them.
    let minutes = secs.split_once(" min ").is_some_and(|(m, s)| {
        m.parse::<u64>().is_ok() && s.len() == 2 && s.parse::<u64>().is_ok_and(|s| s < 60)
    });
    assert!(minutes || secs.parse::<f64>().is_ok(), "{l:?}");
    assert!(
        rate.is_empty() || (rate.starts_with(" (") && rate.ends_with("/s)")),
        "{l:?}"
    );
}

fn image(st: &Path) -> Command {
    let mut c = tool("ch-image");
    c.arg("-s").arg(st);
    c
}

fn convert(st: &Path) -> Command {
    let mut c = tool("ch-convert");
    c.arg("-s").arg(st);
    c
}

/// No phase line of any operation.
#[track_caller]
fn no_phase_lines(stderr: &str) {
    for p in [
        "import:",
        "convert:",
        "pull:",
        "push:",
        "build-cache push:",
        "build-cache fetch:",
        "build-cache gc:",
    ] {
        assert!(!stderr.contains(p), "{p} with -q:\n{stderr}");
    }
}

#[test]
fn import_prints_one_line_with_files_and_bytes_when_stderr_is_not_a_terminal() {
    let s = Scratch::new("progress-import");
    let st = s.storage();
    let (dir, bytes) = tree(&s);
    let (out, err) = run(image(&st).arg("import").arg(&dir).arg("t"));
    assert_eq!(out, "", "nothing on standard output");
    timed(
        line(&err, "import: read"),
        &format!("import: read 1,201 files, {}", size(bytes)),
    );
    assert!(!err.contains('\r') && !err.contains('\x1b'), "{err:?}");

    // A tarball: its members, and the bytes of the archive read.
    let tar = s.join("t.tar");
    sh(&format!(
        "tar -C '{}' -cf '{}' .",
        dir.display(),
        tar.display()
    ));
    let tar_size = std::fs::metadata(&tar).unwrap().len();
    let (out, err) = run(image(&st).arg("import").arg(&tar).arg("t2"));
    assert_eq!(out, "");
    timed(
        line(&err, "import: read"),
        &format!("import: read 1,201 files, {}", size(tar_size)),
    );

    let (out, err) = run(image(&st).arg("-q").arg("import").arg(&dir).arg("t3"));
    assert_eq!((out.as_str(), err.as_str()), ("", ""), "-q prints nothing");
}

#[test]
fn convert_to_every_format_prints_its_read_and_write_lines() {
    let s = Scratch::new("progress-convert");
    let st = s.storage();
    let (dir, bytes) = tree(&s);
    run(image(&st).arg("-q").arg("import").arg(&dir).arg("t"));
    let mut outputs = vec!["t.tar", "t.tar.gz", "t.dir", "t.oci", "t.oci.tar"];
    if have("tar2sqfs") || have("mksquashfs") {
        outputs.push("t.sqfs");
    } else {
        skip("no tar2sqfs or mksquashfs: SquashFS export not checked");
    }
    for o in &outputs {
        let dest = s.join(o);
        let mut c = convert(&st);
        if o.ends_with(".oci") {
            c.args(["-o", "oci"]);
        }
        let (out, err) = run(c.arg("t").arg(&dest));
        assert_eq!(out, "", "{o}: nothing on standard output");
        // From storage: only looked up, no read phase.
        assert!(!err.contains("convert: read"), "{o}: {err}");
        // SquashFS images get empty /etc/hosts and /etc/resolv.conf as mount points.
        let files = if o.ends_with(".sqfs") {
            "1,203"
        } else {
            "1,201"
        };
        let l = line(&err, "convert: wrote");
        assert!(l.starts_with("convert: wrote "), "{o}: {l}");
        timed(l, &format!("convert: wrote {files} files, {}", size(bytes)));
        let mut c = convert(&st);
        if o.ends_with(".oci") {
            c.args(["-o", "oci"]);
        }
        let (out, err) = run(c.arg("-q").arg("t").arg(s.join(format!("q.{o}"))));
        assert_eq!((out.as_str(), err.as_str()), ("", ""), "{o} with -q");
    }
    // Back from OCI and SquashFS: their files read.
    let mut inputs = vec![("oci", "t.oci", "1,201")];
    if outputs.contains(&"t.sqfs") {
        inputs.push(("squash", "t.sqfs", "1,203"));
    }
    for (fmt, name, files) in inputs {
        let (out, err) = run(convert(&st)
            .args(["-i", fmt])
            .arg(s.join(name))
            .arg(s.join(format!("{name}.back.tar"))));
        assert_eq!(out, "");
        let l = line(&err, "convert: read");
        assert!(
            l.starts_with(&format!("convert: read {files} files, ")),
            "{fmt}: {l}"
        );
    }
    // From a directory: a read phase too.
    let (out, err) = run(convert(&st).arg(&dir).arg(s.join("again.tar")));
    assert_eq!(out, "");
    timed(
        line(&err, "convert: read"),
        &format!("convert: read 1,201 files, {}", size(bytes)),
    );
    timed(
        line(&err, "convert: wrote"),
        &format!("convert: wrote 1,201 files, {}", size(bytes)),
    );
}

#[test]
fn pull_prints_its_download_and_unpack_lines() {
    let layer = gzip(&tar_with_member("hello", &[7u8; 3000]));
    let fake = Fake::start(layer.clone(), None);
    let s = Scratch::new("progress-pull");
    let st = s.storage();
    let pull = |quiet: bool, dest: &str| {
        let mut c = image(&st);
        c.env("CH_IMAGE_REGY_INSECURE", format!("127.0.0.1:{}", fake.port))
            .env_remove("CH_IMAGE_AUTH");
        if quiet {
            c.arg("-q");
        }
        c.args(["pull", &format!("127.0.0.1:{}/fake/img", fake.port), dest]);
        run(&mut c)
    };
    let (out, err) = pull(false, "img");
    assert_eq!(out, "");
    timed(
        line(&err, "pull: downloaded"),
        &format!("pull: downloaded 1 layer, {}", size(layer.len() as u64)),
    );
    timed(
        line(&err, "pull: unpacked"),
        &format!(
            "pull: unpacked 1 layer, 1 file, {}",
            size(layer.len() as u64)
        ),
    );
    // Into a directory: the files written too.
    let (out, err) = pull(false, s.join("unpacked").to_str().unwrap());
    assert_eq!(out, "");
    timed(line(&err, "pull: wrote"), "pull: wrote 1 file, 2.9 KiB");
    let (out, err) = pull(true, "img2");
    assert_eq!((out.as_str(), err.as_str()), ("", ""), "-q prints nothing");

    // On a terminal: the same bar as the other operations, replaced by the same lines.
    let Some(out) = on_terminal(&format!(
        "env CH_IMAGE_REGY_INSECURE=127.0.0.1:{port} {} -s {} pull 127.0.0.1:{port}/fake/img img3",
        quote(&bin("ch-image")),
        quote(&s.join("fresh")),
        port = fake.port
    )) else {
        return;
    };
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(raw.contains("\x1b[2K"), "no bar drawn: {raw:?}");
    let screen = final_screen(&raw);
    for start in [
        "pull: downloaded 1 layer, ",
        "pull: unpacked 1 layer, 1 file, ",
    ] {
        assert_eq!(
            screen.iter().filter(|l| l.starts_with(start)).count(),
            1,
            "{start}: {screen:?}"
        );
    }
}

#[test]
fn push_prints_its_pack_and_upload_lines() {
    let Some(r) = Registry::start() else { return };
    let s = Scratch::new("progress-push");
    let st = s.storage();
    let (dir, bytes) = tree(&s);
    run(r.ch_image(&st).arg("-q").arg("import").arg(&dir).arg("t"));
    let dest = format!("{}/progress/t:v1", r.host());
    let (out, err) = run(r.ch_image(&st).args(["push", "t", &dest]));
    assert_eq!(out, "");
    timed(
        line(&err, "push: packed"),
        &format!("push: packed 1,201 files, {}", size(bytes)),
    );
    // The layer and the config are uploaded (then the manifest, counted in the bytes).
    let up = line(&err, "push: uploaded");
    assert!(up.starts_with("push: uploaded 2 blobs, "), "{up}");
    // Again: nothing new to upload.
    let (_, err) = run(r.ch_image(&st).args(["push", "t", &dest]));
    assert!(
        line(&err, "push: uploaded").starts_with("push: uploaded 0 blobs, "),
        "{err}"
    );
    let (out, err) = run(r.ch_image(&st).args(["-q", "push", "t", &dest]));
    assert_eq!(out, "");
    no_phase_lines(&err);
}

/// The number after `start` in `l`: `build-cache push: transferred 12 objects` -> 12.
fn number_after(l: &str, start: &str) -> u64 {
    l.strip_prefix(start)
        .and_then(|r| r.split_whitespace().next())
        .map(|n| n.replace(',', ""))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {start:?} in {l:?}"))
}

#[test]
fn build_cache_push_fetch_and_gc_print_their_lines() {
    let s = Scratch::new("progress-bucache");
    let st = s.storage();
    let (dir, _) = tree(&s);
    run(image(&st).arg("-q").arg("import").arg(&dir).arg("t"));
    let remote = s.join("remote.git");
    sh(&format!("git init -q --bare '{}'", remote.display()));
    let (out, err) = run(image(&st).args(["build-cache", "push"]).arg(&remote));
    assert_eq!(out, "", "push prints no data");
    let l = line(&err, "build-cache push:");
    let sent = number_after(l, "build-cache push: transferred ");
    // 1,201 files (1,200 distinct contents and one big), trees, the commit.
    assert!(sent >= 1201, "{l}");
    assert!(l.contains(" objects, "), "{l}");

    let st2 = s.join("storage2");
    let (out, err) = run(image(&st2).args(["build-cache", "fetch"]).arg(&remote));
    assert_eq!(out, "");
    let l = line(&err, "build-cache fetch:");
    assert_eq!(
        number_after(l, "build-cache fetch: transferred "),
        sent,
        "what was pushed is what is fetched: {l}"
    );

    // gc after deleting the only image: its commit and objects go.
    run(image(&st2).args(["-q", "delete", "t"]));
    let (out, err) = run(image(&st2).args(["build-cache", "--gc"]));
    assert!(
        out.contains("images:"),
        "the summary stays on stdout: {out}"
    );
    assert!(!out.contains("gc:"), "{out}");
    let l = line(&err, "build-cache gc:");
    assert!(
        l.starts_with("build-cache gc: removed 0 cache entries, 1 deleted image, "),
        "{l}"
    );
    assert!(
        number_after(
            l,
            "build-cache gc: removed 0 cache entries, 1 deleted image, "
        ) >= 1201,
        "{l}"
    );
    assert!(l.contains(", freed "), "{l}");

    // gc of the first store, whose import left its pack uncompressed: git's repack runs
    // on a pseudo-terminal (it reports progress only to one), and the objects it wrote
    // make the line (and the bar on a terminal).
    let (_, err) = run(image(&st).args(["build-cache", "--gc"]));
    let l = line(&err, "build-cache gc:");
    let repacked = number_after(
        l.split(", repacked ")
            .nth(1)
            .unwrap_or_else(|| panic!("{l}")),
        "",
    );
    assert!(repacked >= 1201, "{l}");

    for args in [
        vec!["-q", "build-cache", "push", remote.to_str().unwrap()],
        vec!["-q", "build-cache", "fetch", remote.to_str().unwrap()],
        vec!["-q", "build-cache", "--gc"],
    ] {
        let (_, err) = run(image(&st).args(&args));
        no_phase_lines(&err);
    }
}

/// `script` runs `cmd` (a shell command line) on a pseudo-terminal: what it printed.
fn on_terminal(cmd: &str) -> Option<Output> {
    if !have("script") {
        skip("script (util-linux) not installed: no pseudo-terminal");
        return None;
    }
    let out = unpriv("script")
        .args(["-qfec", cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("run script");
    assert!(
        out.status.success(),
        "{cmd} failed on a terminal:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    Some(out)
}

fn quote(p: &Path) -> String {
    format!("'{}'", p.display())
}

/// What a terminal would show at the end: each line as last redrawn (after its last
/// carriage return), escape sequences left out.
fn final_screen(raw: &str) -> Vec<String> {
    let mut plain = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters final-byte.
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        plain.push(c);
    }
    plain
        .split('\n')
        .map(|l| l.rsplit('\r').find(|p| !p.trim().is_empty()).unwrap_or(""))
        .map(|l| l.trim_end().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn a_bar_is_drawn_on_a_terminal_and_replaced_by_the_phase_line() {
    let s = Scratch::new("progress-tty");
    let st = s.storage();
    let (dir, bytes) = tree(&s);
    let ch_image = bin("ch-image");
    let Some(out) = on_terminal(&format!(
        "{} -s {} import {} t",
        quote(&ch_image),
        quote(&st),
        quote(&dir)
    )) else {
        return;
    };
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    // indicatif draws the bar, and erases it (ESC [ 2K) before the line replaces it.
    assert!(raw.contains("\x1b[2K"), "no bar drawn: {raw:?}");
    assert!(raw.contains("import: read ["), "no bar drawn: {raw:?}");
    let screen = final_screen(&raw);
    let l = screen
        .iter()
        .find(|l| l.starts_with("import: "))
        .unwrap_or_else(|| panic!("no import line on the screen: {screen:?}"));
    timed(l, &format!("import: read 1,201 files, {}", size(bytes)));
    assert!(
        screen.iter().filter(|l| l.starts_with("import: ")).count() == 1,
        "the bar leaves nothing behind: {screen:?}"
    );
    assert_eq!(ok(image(&st).arg("list")), "t\n");

    // ch-convert too.
    let ch_convert = bin("ch-convert");
    let Some(out) = on_terminal(&format!(
        "{} -s {} t {}",
        quote(&ch_convert),
        quote(&st),
        quote(&s.join("t.tar"))
    )) else {
        return;
    };
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(raw.contains("\x1b[2K"), "no bar drawn: {raw:?}");
    let screen = final_screen(&raw);
    assert!(
        screen
            .iter()
            .any(|l| l.starts_with("convert: wrote 1,201 files, ")),
        "{screen:?}"
    );

    // Never in verbose mode: lines only.
    let Some(out) = on_terminal(&format!(
        "{} -v -s {} import {} t2",
        quote(&ch_image),
        quote(&st),
        quote(&dir)
    )) else {
        return;
    };
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!raw.contains("\x1b[2K"), "a bar in verbose mode: {raw:?}");
    assert!(raw.contains("import: read 1,201 files, "), "{raw:?}");
    // Nor with -q: nothing at all.
    let Some(out) = on_terminal(&format!(
        "{} -q -s {} import {} t3",
        quote(&ch_image),
        quote(&st),
        quote(&dir)
    )) else {
        return;
    };
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
}

/// Run `cmd` with standard error (or output) a pipe whose reading end is already closed.
fn with_closed(cmd: &mut Command, stderr: bool) -> std::process::ExitStatus {
    if stderr {
        cmd.stderr(Stdio::piped()).stdout(Stdio::null());
    } else {
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    }
    let mut child = cmd.spawn().expect("spawn");
    drop(child.stderr.take());
    drop(child.stdout.take());
    child.wait().expect("wait")
}

#[test]
fn a_closed_pipe_on_stderr_or_stdout_does_not_break_the_operation() {
    let s = Scratch::new("progress-pipe");
    let st = s.storage();
    let (dir, _) = tree(&s);
    let st_ok = with_closed(image(&st).arg("import").arg(&dir).arg("t"), true);
    assert!(st_ok.success(), "import with stderr closed: {st_ok}");
    assert_eq!(ok(image(&st).arg("list")), "t\n");
    let tar = s.join("t.tar.gz");
    let st_ok = with_closed(convert(&st).arg("t").arg(&tar), true);
    assert!(st_ok.success(), "convert with stderr closed: {st_ok}");
    assert!(tar.is_file());
    // Standard output closed: the gc is done before its summary is written, and the
    // program ends quietly (141, as a program killed by SIGPIPE), never with a panic.
    run(image(&st).args(["-q", "delete", "t"]));
    let status = with_closed(image(&st).args(["build-cache", "--gc"]), false);
    assert!(
        status.success() || status.code() == Some(141),
        "gc with stdout closed: {status}"
    );
    let (out, _) = run(image(&st).args(["build-cache", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["commits"], 0, "the gc ran: {v}");
}

#[test]
fn build_keeps_its_instruction_lines_and_the_output_of_run_with_no_bar() {
    let s = Scratch::new("progress-build");
    let st = s.storage();
    run(image(&st)
        .arg("-q")
        .arg("import")
        .arg(busybox_rootfs())
        .arg("bb"));
    let ctx = s.join("ctx");
    sh(&format!(
        "mkdir '{c}' && printf 'FROM bb\\nRUN echo to-stdout; echo to-stderr >&2\\n' > '{c}/Dockerfile'",
        c = ctx.display()
    ));
    let (out, err) = run(image(&st)
        .args(["build", "--no-cache", "-t", "app"])
        .arg(&ctx));
    assert_eq!(out, "to-stdout\n", "RUN's stdout, untouched");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines[0], "  1* FROM bb", "{err}");
    assert!(lines[1].starts_with("  2. RUN"), "{err}");
    assert_eq!(lines[2], "to-stderr", "{err}");
    assert!(
        lines[3].starts_with("grown in 2 instructions: app"),
        "{err}"
    );
    assert_eq!(lines.len(), 4, "{err}");

    // On a terminal: the same lines, no bar (nothing here is a long phase).
    let Some(out) = on_terminal(&format!(
        "{} -s {} build --no-cache -t app {}",
        quote(&bin("ch-image")),
        quote(&st),
        quote(&ctx)
    )) else {
        return;
    };
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!raw.contains('\x1b'), "{raw:?}");
    let screen = final_screen(&raw);
    assert_eq!(screen[0], "  1* FROM bb", "{screen:?}");
    assert!(screen.contains(&"to-stdout".to_string()), "{screen:?}");
    assert!(screen.contains(&"to-stderr".to_string()), "{screen:?}");
}
