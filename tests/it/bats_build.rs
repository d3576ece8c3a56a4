//! What Charliecloud 0.31's own test suite (`ch-test`, the build phase:
//! `build/50_dockerfile.bats`, `build/50_ch-image.bats`, `build/40_pull.bats`) expects of
//! `ch-image` and Grove did otherwise: the messages its tests (and scripts written against
//! it) compare. Each test names the bats test it comes from. The real binaries, run as the
//! unprivileged test user; no network.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::common::{busybox_rootfs, fails, output, Bench};

/// `cmd` with `input` on its standard input; returns its output.
fn with_stdin(cmd: &mut Command, input: &str) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

/// `build -t TAG -` (the Dockerfile on standard input, no context), which must fail;
/// returns its stderr.
fn build_stdin_fails(b: &Bench, df: &str) -> String {
    let out = with_stdin(b.image().args(["build", "-t", "tmpimg", "-"]), df);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    err
}

// ---- 40_pull.bats "image ref parsing", 50_ch-image.bats "ch-image import",
// ---- 50_dockerfile.bats "bad image reference"

#[test]
fn invalid_reference_gives_charliecloud_syntax_error_with_the_character() {
    let b = Bench::new("bats-ref");
    // `pull --parse-only`: exactly Charliecloud's line, then a hint with the FAQ's address
    // (which the bats test ignores) and the reason.
    for (bad, line) in [
        ("name*", "error: image ref syntax, char 5: name*"),
        (
            "example.com:/path1/name",
            "error: image ref syntax, char 13: example.com:/path1/name",
        ),
        (
            "/path1/name",
            "error: image ref syntax, char 1: /path1/name",
        ),
        ("path1/", "error: image ref syntax, at end: path1/"),
        (
            "name@sha512:feeddad",
            "error: image ref syntax, char 5: name@sha512:feeddad",
        ),
        (
            "name:tag@sha512:feeddad",
            "error: image ref syntax, char 9: name:tag@sha512:feeddad",
        ),
    ] {
        let (code, err) = fails(b.image().args(["pull", "--parse-only", bad]));
        assert_eq!(code, 1, "{bad}: {err}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 2, "{bad}: {err}");
        assert_eq!(lines[0], line, "{bad}");
        assert!(
            lines[1].starts_with(
                "hint: https://hpc.github.io/charliecloud/faq.html#how-do-i-specify-an-image-reference ("
            ),
            "{bad}: {err}"
        );
    }
    // import's destination and FROM say the same.
    let (code, err) = fails(
        b.image()
            .arg("import")
            .arg(busybox_rootfs())
            .arg("badchar*"),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("error: image ref syntax, char 8: badchar*"),
        "{err}"
    );
    let (code, err) = b.build_fails("tmpimg", "FROM /alpine:3.9\n", &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("image ref syntax, char 1: /alpine:3.9"),
        "{err}"
    );
}

// ---- 50_dockerfile.bats "ARG before FROM" (no default value)

#[test]
fn from_with_an_undefined_variable_says_so() {
    let b = Bench::new("bats-from-undef");
    let (code, err) = b.build_fails("tmpimg", "ARG os\nFROM $os\n", &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains(":2: image reference contains an undefined variable: $os"),
        "{err}"
    );
    // A variable that is unset but leaves a valid reference is Docker's empty expansion.
    b.build("tmpimg", "FROM busybox$suffix\nRUN true\n", &[]);
}

// ---- 50_dockerfile.bats "COPY errors" (Dockerfile on standard input)

#[test]
fn copy_without_context_says_there_is_no_context() {
    let b = Bench::new("bats-no-context");
    let err = build_stdin_fails(&b, "FROM busybox\nCOPY doesnotexist .\n");
    assert!(
        err.contains("-:2: COPY: no context because \"-\" given"),
        "{err}"
    );
    let err = build_stdin_fails(&b, "FROM busybox\nCOPY fixtures/README .\n");
    assert!(err.contains("no context because \"-\" given"), "{err}");
    // COPY --from needs no context (50_dockerfile.bats "COPY from previous stage, no
    // context", Charliecloud issue #1381).
    let out = with_stdin(
        b.image().args(["build", "-t", "fromstage", "-"]),
        "FROM busybox\nRUN echo x > /f\nFROM busybox\nCOPY --from=0 /f /g\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dash_file_with_dash_context_reads_the_dockerfile_from_standard_input() {
    // `build -t x -f - -` says twice that the Dockerfile is on standard input; Charliecloud
    // builds it, as it builds `build -t x -`.
    let b = Bench::new("stdin-dash-f");
    let out = with_stdin(
        b.image().args(["build", "-t", "dashf", "-f", "-", "-"]),
        "FROM busybox\nRUN echo from-stdin > /f\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(b.run("dashf", "cat /f"), "from-stdin\n");
    // Another file with context `-` is still refused: it would not be what is read.
    b.write("Dockerfile", "FROM busybox\n");
    let out = with_stdin(
        b.image()
            .args(["build", "-t", "dashf", "-f"])
            .arg(b.ctx.join("Dockerfile"))
            .arg("-"),
        "FROM busybox\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("-f FILE can't be used when the context is -"),
        "{err}"
    );
}

// ---- 50_dockerfile.bats "syntax errors" and "semantic errors"

#[test]
fn dockerfile_syntax_errors_use_charliecloud_words() {
    let b = Bench::new("bats-syntax");
    for (df, want) in [
        ("\n", "no instructions found: "),
        ("# foo\n", "no instructions found: "),
        ("\n# foo\n", "no instructions found: "),
        (
            "RUN echo uh oh\nFROM busybox\n",
            "first instruction must be ARG or FROM",
        ),
        (
            "FROM busybox\nCOPY --foo=foo a .\n",
            "COPY: invalid option --foo",
        ),
        ("FROM --foo=bar busybox\n", "FROM: invalid option --foo"),
        (
            "FROM busybox\nCOPY --chown=foo --chown=bar a .\n",
            "COPY: repeated option --chown",
        ),
    ] {
        let (code, err) = b.build_fails("tmpimg", df, &[]);
        assert_eq!(code, 1, "{df:?}: {err}");
        assert!(err.contains(want), "{df:?}: want {want:?} in {err}");
    }
    // The file is named: `-` for standard input (the bats test's `-f -`).
    let out = with_stdin(
        b.image()
            .args(["build", "-t", "tmpimg", "-f", "-"])
            .arg(b.storage().parent().expect("scratch")),
        "# foo\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no instructions found: -"), "{err}");
}

// ---- 50_dockerfile.bats "ARG and ENV values" (ARG not in environment)

#[test]
fn build_arg_without_value_or_environment_gives_charliecloud_message() {
    let b = Bench::new("bats-build-arg");
    let mut c = b.build_cmd(
        "tmpimg",
        "FROM busybox\nARG chse_arg1_df\n",
        &["--build-arg", "chse_arg1_df"],
    );
    c.env_remove("chse_arg1_df");
    let out = output(&mut c);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--build-arg: chse_arg1_df: no value and not in environment"),
        "{err}"
    );
}

// ---- 50_dockerfile.bats "COPY errors"

#[test]
fn copy_errors_say_not_found_and_not_a_directory() {
    let b = Bench::new("bats-copy-errors");
    b.write("README", "readme\n");
    b.write("common.bash", "x\n");
    b.mkdir("run");
    // Some sources found, one not: Charliecloud's "not found".
    let (code, err) = b.build_fails("tmpimg", "FROM busybox\nCOPY README doesnotexist .\n", &[]);
    assert_eq!(code, 1);
    assert!(err.contains("source file not found: doesnotexist"), "{err}");
    // A pattern matching nothing keeps its own words.
    let (_, err) = b.build_fails("tmpimg", "FROM busybox\nCOPY nope* .\n", &[]);
    assert!(err.contains("no source files match: nope*"), "{err}");
    // A file of the image where a directory is needed: "not a directory".
    for copy in [
        "COPY README common.bash /etc/motd/",
        "COPY README common.bash /etc/motd",
        "COPY run /etc/motd/",
        "COPY run /etc/motd",
    ] {
        let (code, err) = b.build_fails("tmpimg", &format!("FROM busybox\n{copy}\n"), &[]);
        assert_eq!(code, 1, "{copy}: {err}");
        assert!(err.contains("not a directory"), "{copy}: {err}");
    }
}

// ---- 50_dockerfile.bats "COPY --from errors"

#[test]
fn copy_from_errors_say_which_stage_does_not_exist() {
    let b = Bench::new("bats-copy-from");
    // A registry that is not there (no network in tests): the name is no image either.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let from_fails = |df: &str| {
        let mut c = b.build_cmd("tmpimg", df, &[]);
        c.env("CH_REGY_DEFAULT_HOST", "127.0.0.1")
            .env("CH_REGY_DEFAULT_PORT", port.to_string());
        let (code, err) = fails(&mut c);
        assert_eq!(code, 1, "{df}: {err}");
        err
    };
    let err = from_fails("FROM busybox\nCOPY --from=uhigtsbjmfps /etc/motd /\n");
    assert!(
        err.contains("COPY --from=uhigtsbjmfps: stage uhigtsbjmfps does not exist"),
        "{err}"
    );
    // A later stage's name: "does not exist", not "does not exist yet" (which Charliecloud
    // keeps for numbers).
    let err = from_fails(
        "FROM busybox\nCOPY --from=uhigtsbjmfps /etc/motd /\nFROM busybox AS uhigtsbjmfps\n",
    );
    assert!(err.contains("does not exist"), "{err}");
    assert!(!err.contains("does not exist yet"), "{err}");
    let err = from_fails("FROM busybox\nCOPY --from=1 /etc/motd /\nFROM busybox\n");
    assert!(err.contains("does not exist yet"), "{err}");
    let err = from_fails("FROM busybox\nCOPY --from=-1 /etc/motd /\nFROM busybox\n");
    assert!(
        err.contains("COPY --from=-1: invalid negative stage index"),
        "{err}"
    );
}

// ---- 50_dockerfile.bats "unsupported features"

#[test]
fn ignored_instructions_warn_in_charliecloud_words() {
    let b = Bench::new("bats-ignored");
    let log = b.build(
        "tmpimg",
        "FROM busybox\nEXPOSE foo\nMAINTAINER foo\nSTOPSIGNAL foo\nUSER foo\nVOLUME foo\n",
        &[],
    );
    for kw in ["EXPOSE", "MAINTAINER", "STOPSIGNAL", "USER", "VOLUME"] {
        assert!(
            log.contains(&format!("not supported, ignored: {kw} instruction")),
            "{kw}: {log}"
        );
    }
}

// ---- 50_localregistry.bats (a registry on localhost:5000 there; any port here)

#[test]
fn push_logs_source_destination_and_layer_check_as_charliecloud() {
    let Some(r) = crate::registry::Registry::start() else {
        return;
    };
    let b = Bench::new("bats-push");
    let dest = format!("{}/00_tiny", r.host());
    let out = output(r.ch_image(&b.storage()).args(["push", "busybox", &dest]));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    // The source first, then the destination (Grove printed the destination twice).
    let pushing = log
        .find("pushing image:   busybox")
        .unwrap_or_else(|| panic!("{log}"));
    let destination = log
        .find(&format!("destination:     {dest}"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(pushing < destination, "{log}");
    // The layer's check line, the same on a second push of the same image (the bats
    // test "consistent layer hash" compares them).
    let checking = |log: &str| -> Vec<String> {
        log.lines()
            .filter(|l| {
                l.starts_with("layer 1/1: ") && l.ends_with(": checking if already in repository")
            })
            .map(str::to_string)
            .collect()
    };
    let first = checking(&log);
    assert_eq!(first.len(), 1, "{log}");
    let again = output(r.ch_image(&b.storage()).args(["push", "busybox", &dest]));
    let log2 = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{log2}");
    assert_eq!(checking(&log2), first);
    assert!(log2.contains(": already present"), "{log2}");
}

// ---- 50_ch-image.bats "ch-image import" (an image with Charliecloud's metadata file)

#[test]
fn import_of_a_charliecloud_image_keeps_its_environment_and_workdir() {
    let b = Bench::new("bats-import-metadata");
    let img = b.storage().parent().expect("scratch").join("ccimg");
    crate::common::sh(&format!(
        "cp -a {}/. {img}/ && mkdir -p {img}/ch && cat > {img}/ch/metadata.json <<'EOF'\n\
         {{ \"arch\": \"amd64\", \"cwd\": \"/tmp\",\n  \"env\": {{\"FOO\": \"bar baz\"}},\n  \
         \"labels\": {{}}, \"shell\": [\"/bin/sh\", \"-c\"], \"volumes\": [] }}\nEOF\n\
         chmod -R a+rX {img}",
        busybox_rootfs().display(),
        img = img.display()
    ));
    crate::common::ok(b.image().arg("import").arg(&img).arg("ccimg"));
    // RUN's output is the build's standard output.
    let out = b.build_out(
        "fromcc",
        "FROM ccimg\nRUN echo \"FOO=$FOO\" && echo \"cwd=$(pwd)\"\n",
        &[],
    );
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(log.contains("FOO=bar baz"), "{log}");
    assert!(log.contains("cwd=/tmp"), "{log}");
}

// ---- 50_ch-image.bats "ch-image build: infer name", "ch-image build: context not a directory"

#[test]
fn build_without_a_tag_says_the_inferred_name_and_checks_the_context_first() {
    let b = Bench::new("bats-infer");
    b.write("Dockerfile", "FROM busybox\n");
    // The context is `ctx`: the image is named after it, and the build says so.
    let out = output(b.image().arg("build").arg(&b.ctx));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("inferred image name: ctx"), "{err}");
    let out = output(b.image().arg("list"));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l == "ctx"),
        "{out:?}"
    );
    // With -t, nothing is inferred.
    let out = output(b.image().args(["build", "-t", "named"]).arg(&b.ctx));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("inferred"));
    // A context that is not a directory is said so, before any Dockerfile is looked for.
    let missing = b.s.join("nonexistent");
    let (code, err) = fails(b.image().args(["build", "-t", "x"]).arg(&missing));
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "context must be a directory: {}",
            missing.display()
        )),
        "{err}"
    );
    let file = b.ctx.join("Dockerfile");
    let (_, err) = fails(b.image().args(["build", "-t", "x"]).arg(&file));
    assert!(err.contains("context must be a directory"), "{err}");
}
