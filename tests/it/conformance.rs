//! Conformance: Dockerfiles parsed as Docker (BuildKit) parses them, and the command line,
//! logging and output conventions of Charliecloud's man page and FAQ (issue 12). The real
//! binaries, run as the unprivileged test user.

use crate::common::{busybox_rootfs, fails, ok, output, own, tool, Scratch};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A storage directory with busybox imported, and a context directory `ctx`.
struct World {
    s: Scratch,
    ctx: PathBuf,
}

impl World {
    fn new(tag: &str) -> World {
        let w = World::bare(tag);
        ok(w.image().arg("import").arg(busybox_rootfs()).arg("busybox"));
        w
    }

    /// No image imported.
    fn bare(tag: &str) -> World {
        let s = Scratch::new(&format!("conf-{tag}"));
        let ctx = s.join("ctx");
        let w = World { s, ctx };
        w.write("keep", "");
        w
    }

    /// `ch-image -s STORAGE`, with no cache or logging settings from the environment.
    fn image(&self) -> Command {
        let mut c = tool("ch-image");
        c.arg("-s").arg(self.s.storage());
        for v in ["CH_IMAGE_CACHE", "CH_LOG_FILE", "CH_LOG_FESTOON"] {
            c.env_remove(v);
        }
        c
    }

    /// Write a context file, owned by the test user.
    fn write(&self, rel: &str, content: &str) {
        let p = self.ctx.join(rel);
        std::fs::create_dir_all(p.parent().expect("has parent")).expect("mkdir");
        std::fs::write(&p, content).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        own(&self.ctx);
    }

    /// `ch-image build -t TAG EXTRA CTX` with `df` as the Dockerfile.
    fn build_cmd(&self, tag: &str, df: &str, extra: &[&str]) -> Command {
        self.write("Dockerfile", df);
        let mut c = self.image();
        c.args(["build", "-t", tag]).args(extra).arg(&self.ctx);
        c
    }

    /// A build that must succeed; returns its stderr.
    fn build(&self, tag: &str, df: &str, extra: &[&str]) -> String {
        let out = output(&mut self.build_cmd(tag, df, extra));
        assert!(
            out.status.success(),
            "build failed\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `ch-run -s STORAGE TAG -- /bin/sh -c SCRIPT`; returns stdout.
    fn run(&self, tag: &str, script: &str) -> String {
        ok(tool("ch-run")
            .arg("-s")
            .arg(self.s.storage())
            .arg(tag)
            .args(["--", "/bin/sh", "-c", script]))
    }

    /// `ch-image --parse-only` of `df`: the instruction lines it prints.
    fn parse_only(&self, df: &str) -> Vec<String> {
        let out = ok(&mut self.build_cmd("p", df, &["--parse-only"]));
        out.lines().map(|l| l.trim().to_string()).collect()
    }

    /// The `env:` lines of `ch-image inspect TAG`.
    fn env(&self, tag: &str) -> Vec<String> {
        ok(self.image().args(["inspect", tag]))
            .lines()
            .filter_map(|l| l.strip_prefix("env:").map(|v| v.trim().to_string()))
            .collect()
    }
}

fn stderr_of(c: &mut Command) -> (i32, String, String) {
    let out = output(c);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---- Dockerfile syntax as BuildKit parses it ----

#[test]
fn escaped_backslash_at_end_of_line_ends_the_instruction() {
    let w = World::new("escbs");
    let df = "FROM busybox\nRUN echo hello \\\\\nRUN echo world > /w\n";
    assert_eq!(
        w.parse_only(df),
        [
            "1 FROM busybox",
            "2 RUN echo hello \\\\",
            "3 RUN echo world > /w"
        ]
    );
    w.build("e", df, &[]);
    assert_eq!(w.run("e", "cat /w"), "world\n");
}

#[test]
fn heredoc_with_blanks_after_the_operator_runs_its_body() {
    let w = World::new("heredoc");
    w.build(
        "h",
        "FROM busybox\nRUN << EOF\necho one > /one\nEOF\nRUN cat <<  EOF  > /two\ntwo\nEOF\n",
        &[],
    );
    assert_eq!(w.run("h", "cat /one /two"), "one\ntwo\n");
}

#[test]
fn copy_shell_form_splits_sources_on_whitespace_as_docker_does() {
    let w = World::new("copysplit");
    w.write("a", "A\n");
    w.write("b", "B\n");
    // In Docker, `a\ b` is two words, `a\` (the trailing escape dropped) and `b`.
    w.build("c", "FROM busybox\nCOPY a\\ b /dst/\n", &[]);
    assert_eq!(w.run("c", "cat /dst/a /dst/b"), "A\nB\n");
    // A quoted name with a space is two words with unbalanced quotes: an error.
    let (_, err) = fails(&mut w.build_cmd("q", "FROM busybox\nCOPY \"a b\" /dst/\n", &[]));
    assert!(err.contains("double-quote"), "{err}");
}

#[test]
fn pattern_expansions_in_env_give_dockers_results() {
    let w = World::new("patterns");
    w.build(
        "p",
        "FROM busybox\nARG P=/usr/local/share/ca.tar.gz\nENV B=${P##*/} D=${P%/*} E=${P%%.*} F=${P#*/} R=${P//\\//-} O=${P/a/A}\n",
        &[],
    );
    let env = w.env("p");
    for want in [
        "B=ca.tar.gz",
        "D=/usr/local/share",
        "E=/usr/local/share/ca",
        "F=usr/local/share/ca.tar.gz",
        "R=-usr-local-share-ca.tar.gz",
        "O=/usr/locAl/share/ca.tar.gz",
    ] {
        assert!(env.iter().any(|e| e == want), "{want} in {env:?}");
    }
}

#[test]
fn copy_wildcards_do_not_match_a_leading_dot() {
    let w = World::new("glob");
    w.write("d/a", "a\n");
    w.write("d/.hidden", "h\n");
    w.build(
        "g",
        "FROM busybox\nCOPY d/* /x/\nCOPY d/.h* /y/\nCOPY d /z/\n",
        &[],
    );
    assert_eq!(w.run("g", "ls -A /x"), "a\n");
    assert_eq!(w.run("g", "ls -A /y"), ".hidden\n");
    // A directory source still copies everything in it.
    assert_eq!(w.run("g", "ls -A /z"), ".hidden\na\n");
}

#[test]
fn from_arg_sets_an_arg_for_the_stage_as_charliecloud_does() {
    let w = World::new("fromarg");
    w.build(
        "f",
        "FROM --arg=GREETING=hi --arg=WHO=there busybox\nRUN echo \"$GREETING $WHO\" > /g\n",
        &[],
    );
    assert_eq!(w.run("f", "cat /g"), "hi there\n");
}

// ---- the command line ----

#[test]
fn build_reads_the_dockerfile_from_stdin_with_no_context() {
    let w = World::new("stdin");
    let mut c = w.image();
    c.args(["build", "-t", "foo", "-"]).stdin(Stdio::piped());
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write;
        let mut i = child.stdin.take().expect("stdin");
        i.write_all(b"FROM busybox\nRUN echo hi > /hi\n")
            .expect("write");
    }
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(w.run("foo", "cat /hi"), "hi\n");
    // No context: a COPY finds nothing.
    let mut c = w.image();
    c.args(["build", "-t", "bar", "-"]).stdin(Stdio::piped());
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write;
        let mut i = child.stdin.take().expect("stdin");
        i.write_all(b"FROM busybox\nCOPY keep /\n").expect("write");
    }
    let out = child.wait_with_output().expect("wait");
    assert!(!out.status.success());
    // No name can be inferred from standard input.
    let (_, err) = fails(w.image().args(["build", "-"]).stdin(Stdio::null()));
    assert!(err.contains("-t NAME"), "{err}");
}

/// Run `cmd` with its stdout a pipe whose reading end is already closed.
fn with_closed_stdout(cmd: &mut Command) -> (std::process::ExitStatus, String) {
    let (reader, writer) = nix::unistd::pipe().expect("pipe");
    drop(reader);
    let out = cmd
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("spawn");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn tools_exit_quietly_with_141_when_stdout_is_a_closed_pipe() {
    let w = World::new("pipe");
    ok(w.image()
        .args(["import"])
        .arg(busybox_rootfs())
        .arg("other"));
    for args in [
        &["list"][..],
        &["list", "-l"],
        &["storage-path"],
        &["history", "busybox"],
        &["--version"],
    ] {
        let (st, err) = with_closed_stdout(w.image().args(args));
        assert_eq!(st.code(), Some(141), "ch-image {args:?}: {err}");
        assert!(err.is_empty(), "ch-image {args:?}: {err}");
    }
    let (st, err) = with_closed_stdout(tool("ch-run").arg("--usage"));
    assert_eq!((st.code(), err.as_str()), (Some(141), ""));
    let (st, err) = with_closed_stdout(tool("ch-ssh").arg("--version"));
    assert_eq!((st.code(), err.as_str()), (Some(141), ""));
    // A command in a container gets SIGPIPE's default action, as in a shell: `yes` ends
    // quietly, killed by SIGPIPE (or 128 + 13 where ch-run waits for it), instead of
    // failing with "Broken pipe".
    use std::os::unix::process::ExitStatusExt;
    let mut c = tool("ch-run");
    c.arg("-s")
        .arg(w.s.storage())
        .args(["busybox", "--", "yes"]);
    let (st, err) = with_closed_stdout(&mut c);
    assert!(
        st.signal() == Some(13) || st.code() == Some(141),
        "{st:?}: {err}"
    );
    assert_eq!(err, "");
}

/// `ch-image delete` globs as Charliecloud 0.31 and 0.38 match them (Python's glob over
/// the storage directory; each case run with both, as uid 65534, side by side): `^` and a
/// leading `]` are class members, `!` negates, an empty range is dropped, and `?` matches
/// an image as `list` shows it (`a`), stages (`a_stage0`) going along. Grove read `[^a]*`
/// as "not a" (deleting b, ba, c and x/y, and keeping what was asked) and `[]a]*` and `?`
/// as matching nothing.
#[test]
fn delete_globs_match_as_charliecloud_s_python_glob() {
    let names = ["a", "a:1.0", "a_stage0", "ab", "b", "ba", "c", "x/y"];
    let cases: &[(&str, &[&str])] = &[
        ("[^a]*", &["a", "a:1.0", "a_stage0", "ab"]),
        ("[]a]*", &["a", "a:1.0", "a_stage0", "ab"]),
        ("[!a]*", &["b", "ba", "c", "x/y"]),
        ("?", &["a", "a_stage0", "b", "c"]),
        ("x?y", &["x/y"]),
        ("[z-ab]*", &["b", "ba"]),
    ];
    for (i, (glob, gone)) in cases.iter().enumerate() {
        let w = World::bare(&format!("delete-glob-{i}"));
        for n in names {
            ok(w.image().arg("import").arg(&w.ctx).arg(n));
        }
        let (code, out, err) = stderr_of(w.image().args(["delete", glob]));
        assert_eq!((code, out.as_str()), (0, ""), "{glob}: {err}");
        let mut said: Vec<&str> = err
            .lines()
            .map(|l| l.strip_prefix("deleting image: ").unwrap_or(l))
            .collect();
        said.sort();
        assert_eq!(said, *gone, "{glob}: {err}");
        let left: Vec<&str> = names.into_iter().filter(|n| !gone.contains(n)).collect();
        assert_eq!(
            ok(w.image().arg("list")),
            format!("{}\n", left.join("\n")),
            "{glob}"
        );
    }
    // A glob matching nothing, as Charliecloud 0.38 words it (with an ASCII apostrophe).
    let w = World::bare("delete-glob-none");
    ok(w.image().arg("import").arg(&w.ctx).arg("b"));
    let (code, _, err) = stderr_of(w.image().args(["delete", "[z-a]"]));
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        err,
        "error: no matching image, can't delete: [z-a]\nerror: unable to delete 1 invalid image(s)\n"
    );
}

#[test]
fn common_options_are_accepted_before_the_subcommand() {
    let w = World::new("common");
    let df = "FROM busybox\nENV A=1\n";
    for opts in [
        &["--no-cache"][..],
        &["--rebuild"],
        &["--cache"],
        &["--cache-large", "0"],
    ] {
        w.write("Dockerfile", df);
        let mut c = w.image();
        c.args(opts).args(["build", "-t", "x"]).arg(&w.ctx);
        let (code, _, err) = stderr_of(&mut c);
        assert_eq!(code, 0, "{opts:?}: {err}");
    }
    // `--rebuild` before the subcommand still executes everything.
    let mut c = tool("ch-image");
    c.arg("-s")
        .arg(w.s.storage())
        .args(["--cache-large", "0", "--rebuild", "build", "-t", "x"])
        .arg(&w.ctx);
    let (code, _, err) = stderr_of(&mut c);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("  2. ENV A=1"), "{err}");
    // And after it too.
    let (code, _, err) = stderr_of(
        w.image()
            .args(["build", "--no-cache", "-t", "y"])
            .arg(&w.ctx),
    );
    assert_eq!(code, 0, "{err}");
}

#[test]
fn tools_without_arguments_print_usage_and_exit_1() {
    for t in ["ch-image", "ch-run", "ch-convert"] {
        let (code, out, err) = stderr_of(&mut tool(t));
        assert_eq!(code, 1, "{t}: {err}");
        assert!(out.is_empty(), "{t}: {out}");
        assert!(err.to_lowercase().contains("usage"), "{t}: {err}");
    }
}

#[test]
fn an_image_built_with_a_bare_name_lists_under_that_name() {
    let w = World::new("listname");
    w.build("foo", "FROM busybox\n", &[]);
    let list = ok(w.image().arg("list"));
    assert_eq!(list.lines().collect::<Vec<_>>(), ["busybox", "foo"]);
    w.build("bar:2", "FROM busybox\n", &[]);
    let list = ok(w.image().arg("list"));
    assert!(list.lines().any(|l| l == "bar:2"), "{list}");
    // The listed name works as a reference.
    assert_eq!(w.run("foo", "echo ok"), "ok\n");
}

#[test]
fn version_is_printed_bare_where_charliecloud_prints_it() {
    let v = format!("{}\n", env!("CARGO_PKG_VERSION"));
    let (code, out, err) = stderr_of(tool("ch-image").arg("--version"));
    assert_eq!((code, out.as_str(), err.as_str()), (0, v.as_str(), ""));
    // ch-grow, Charliecloud's earlier name, is installed beside ch-image and is ch-image.
    let (code, out, err) = stderr_of(tool("ch-grow").arg("--version"));
    assert_eq!((code, out.as_str(), err.as_str()), (0, v.as_str(), ""));
    let (code, _, err) = stderr_of(tool("ch-grow").args(["build", "--help"]));
    assert_eq!(code, 0, "{err}");
    for t in ["ch-run", "ch-convert"] {
        let (code, out, err) = stderr_of(tool(t).arg("--version"));
        assert_eq!(
            (code, out.as_str(), err.as_str()),
            (0, "", v.as_str()),
            "{t}"
        );
    }
}

// ---- logging ----

#[test]
fn quiet_levels_follow_the_faq_table() {
    let w = World::new("quiet");
    let df = "FROM busybox\nRUN echo to-stdout; echo to-stderr >&2\n";
    // Default: RUN output passes through.
    let (_, out, err) = stderr_of(&mut w.build_cmd("a", df, &["--no-cache"]));
    assert!(
        out.contains("to-stdout") && err.contains("to-stderr"),
        "{out}{err}"
    );
    // -q: no chatter, RUN output still there.
    let mut c = w.image();
    c.args(["-q", "build", "--no-cache", "-t", "a"]).arg(&w.ctx);
    let (code, out, err) = stderr_of(&mut c);
    assert_eq!(code, 0);
    assert!(!err.contains("grown in"), "{err}");
    assert!(
        out.contains("to-stdout") && err.contains("to-stderr"),
        "{out}{err}"
    );
    // -qq: program stdout and RUN stdout gone; -qqq: RUN stderr too.
    let mut c = w.image();
    c.args(["-qq", "build", "--no-cache", "-t", "a"])
        .arg(&w.ctx);
    let (code, out, err) = stderr_of(&mut c);
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    assert!(err.contains("to-stderr"), "{err}");
    let mut c = w.image();
    c.args(["-qqq", "build", "--no-cache", "-t", "a"])
        .arg(&w.ctx);
    assert_eq!(stderr_of(&mut c), (0, String::new(), String::new()));
    // -qq list prints nothing; -q still prints the list.
    assert_eq!(ok(w.image().args(["-qq", "list"])), "");
    assert!(ok(w.image().args(["-q", "list"])).contains("busybox"));
}

#[test]
fn each_verbose_level_adds_lines() {
    let w = World::new("verbose");
    w.write("Dockerfile", "FROM busybox\nENV A=1\n");
    let lines = |v: &str| -> String {
        let mut c = w.image();
        if !v.is_empty() {
            c.arg(v);
        }
        c.args(["build", "-t", "a"]).arg(&w.ctx);
        let (code, _, err) = stderr_of(&mut c);
        assert_eq!(code, 0, "{err}");
        err
    };
    let (l0, l1, l2, l3) = (lines(""), lines("-v"), lines("-vv"), lines("-vvv"));
    assert!(!l0.contains("version:") && l1.contains("version:"), "{l1}");
    assert!(
        !l1.contains("host architecture") && l2.contains("host architecture"),
        "{l2}"
    );
    assert!(
        !l2.contains("parse tree") && l3.contains("parse tree"),
        "{l3}"
    );
}

#[test]
fn log_file_takes_chatter_and_turns_verbose_on() {
    let w = World::new("logfile");
    let log = w.s.join("log.txt");
    let mut c = w.image();
    c.env("CH_LOG_FILE", &log).arg("list");
    let (code, out, err) = stderr_of(&mut c);
    assert_eq!((code, err.as_str()), (0, ""));
    assert!(out.contains("busybox"));
    let text = std::fs::read_to_string(&log).expect("log file written");
    assert!(text.contains("version:"), "{text}");
    // Appended, errors included.
    let mut c = w.image();
    c.env("CH_LOG_FILE", &log).args(["inspect", "nope"]);
    let (code, _, err) = stderr_of(&mut c);
    assert_eq!((code, err.as_str()), (1, ""));
    let text2 = std::fs::read_to_string(&log).expect("log file");
    assert!(
        text2.starts_with(&text) && text2.contains("error:"),
        "{text2}"
    );
}

#[test]
fn festoon_prefixes_pid_and_timestamp() {
    let w = World::new("festoon");
    let mut c = w.image();
    c.env("CH_LOG_FESTOON", "1")
        .args(["import"])
        .arg(busybox_rootfs())
        .arg("again");
    let (code, _, err) = stderr_of(&mut c);
    assert_eq!(code, 0, "{err}");
    let line = err.lines().next().expect("a log line");
    let mut f = line.split_whitespace();
    let pid = f.next().expect("pid");
    let ts = f.next().expect("timestamp");
    assert!(pid.parse::<u32>().is_ok(), "{line}");
    assert!(ts.len() == 23 && ts.as_bytes()[10] == b'T', "{line}");
}

// ---- messages ----

#[test]
fn dry_run_does_not_claim_execution_and_summary_counts_from() {
    let w = World::new("dryrun");
    let df = "FROM busybox\nRUN touch /x\n";
    let err = w.build("d", df, &["--dry-run"]);
    assert!(!err.contains("grown in"), "{err}");
    assert!(
        err.contains("dry run") && err.contains("not executed"),
        "{err}"
    );
    let list = ok(w.image().arg("list"));
    assert_eq!(list, "busybox\n", "a dry run writes no image");
    // FROM of a stored base is a hit in the summary, as its `*` mark says.
    let err = w.build("d", df, &[]);
    assert!(err.contains("(1 hits, 1 executed"), "{err}");
    let err = w.build("d", df, &[]);
    assert!(err.contains("(2 hits, 0 executed"), "{err}");
}

#[test]
fn requests_ca_bundle_is_honoured() {
    let w = World::bare("cabundle");
    let mut c = w.image();
    c.env("REQUESTS_CA_BUNDLE", "/nonexistent/grove-ca.pem")
        .env_remove("SSL_CERT_FILE")
        .args(["pull", "registry.example.invalid/x:1"]);
    let (code, _, err) = stderr_of(&mut c);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/grove-ca.pem"), "{err}");
}

#[test]
fn from_an_invalid_reference_is_logged_as_not_run() {
    // Charliecloud 0.31 and 0.38 log `  1  FROM BusyBox` (a blank mark) before the
    // error; Grove logged `  1* FROM BusyBox`, a step done. `FROM ""` is a parse error in
    // both (no step line); Grove says the reference is empty, with no step line either.
    let w = World::new("from-bad-ref");
    for (df, line, error) in [
        (
            "FROM BusyBox\n",
            Some("  1  FROM BusyBox"),
            "image ref syntax",
        ),
        ("FROM a::b\n", Some("  1  FROM a::b"), "image ref syntax"),
        (
            "FROM $NOPE\n",
            Some("  1  FROM $NOPE"),
            "Dockerfile:1: image reference contains an undefined variable: $NOPE",
        ),
        (
            "FROM \"\"\n",
            None,
            "Dockerfile:1: image reference is empty: \"\"",
        ),
        (
            "ARG E=\nFROM $E\n",
            Some("  1. ARG E="),
            "Dockerfile:2: image reference is empty: $E",
        ),
    ] {
        let (code, stdout, stderr) = stderr_of(&mut w.build_cmd("x", df, &[]));
        assert_eq!(code, 1, "{df}: {stderr}");
        assert_eq!(stdout, "", "{df}");
        let lines: Vec<&str> = stderr.lines().collect();
        match line {
            Some(l) => {
                assert_eq!(lines[0], l, "{df}: {stderr}");
                assert!(lines[1].starts_with("error: "), "{df}: {stderr}");
            }
            None => assert!(lines[0].starts_with("error: "), "{df}: {stderr}"),
        }
        assert!(stderr.contains(error), "{df}: {stderr}");
        assert!(!stderr.contains("* FROM"), "{df}: {stderr}");
    }
}

#[test]
fn malformed_references_are_refused_at_charlieclouds_position_with_a_fitting_hint() {
    // Positions as Charliecloud 0.31 and 0.38 give them (`ch-image pull --parse-only`).
    // Grove split the tag at the last colon: `a::b` and `a:b:c` were refused at char 2
    // with the hint for path components, where the fault is a second `:`.
    let w = World::bare("ref-positions");
    for (r, at, reason) in [
        (
            "a::b",
            "char 3",
            "(one ':' separates name and tag; a tag has no ':')",
        ),
        (
            "a:b:c",
            "char 4",
            "(one ':' separates name and tag; a tag has no ':')",
        ),
        ("a:", "at end", "(empty tag after ':')"),
        ("a/b:", "at end", "(empty tag after ':')"),
        (":a", "char 1", "(empty name or path component)"),
        ("a//b", "char 3", "(empty name or path component)"),
        ("a@", "char 2", "(digest must start with sha256:)"),
        ("a@sha256:xyz", "char 10", "(digest is not hexadecimal)"),
        ("a:b!", "char 4", "(a tag must match [A-Za-z0-9_.-]+)"),
        // Charliecloud takes port 99999; no port is above 65535.
        ("host:99999/x", "char 6", "(a port is a number up to 65535)"),
    ] {
        let mut c = w.image();
        c.args(["pull", "--parse-only", r]);
        let (code, stdout, err) = stderr_of(&mut c);
        assert_eq!(code, 1, "{r}: {err}");
        assert_eq!(stdout, "", "{r}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(
            lines[0],
            format!("error: image ref syntax, {at}: {r}"),
            "{err}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("hint: https://") && l.ends_with(reason)),
            "{r}: {err}"
        );
    }
}

#[test]
fn from_a_base_to_pull_is_logged_as_a_miss() {
    // Charliecloud 0.31 and 0.38 log a base they must pull `  1. FROM X` (a miss), one in
    // storage `  1* FROM X`; Grove logged `*` for both. Port 1 refuses at once.
    let w = World::new("from-pull-mark");
    let (code, _, stderr) = stderr_of(&mut w.build_cmd("x", "FROM localhost:1/x\n", &[]));
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        stderr.lines().next(),
        Some("  1. FROM localhost:1/x"),
        "{stderr}"
    );
    let err = w.build("y", "FROM busybox\n", &[]);
    assert_eq!(err.lines().next(), Some("  1* FROM busybox"), "{err}");
}
