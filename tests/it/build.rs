//! Integration tests for `ch-image build`: the real binaries (ch-image, and ch-run for RUN
//! and for looking into results), run as the unprivileged test user, each test in its own
//! storage directory with the busybox fixture imported as `busybox`.

use crate::common::{fails, marks, ok, output, own, sh, skip, steps, tool, Bench};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn stderr_ok(c: &mut Command) -> String {
    let out = output(c);
    assert!(
        out.status.success(),
        "command failed: {c:?}\nstatus: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// ---- 1. output and cache ----

const FOUR: &str =
    "FROM busybox\nRUN echo one > /one\nENV A=1\nCOPY f /f\nRUN cat /f /one > /both\n";

#[test]
fn first_build_executes_rebuild_hits_and_history_has_one_commit_per_instruction() {
    let b = Bench::checked_out("build-output");
    b.write("f", "eff\n");
    let first = b.build("four", FOUR, &[]);
    let st = steps(&first);
    let texts: Vec<&str> = st.iter().map(|(_, _, t)| t.as_str()).collect();
    assert_eq!(
        texts,
        [
            "FROM busybox",
            "RUN.S echo one > /one",
            "ENV A=1",
            "COPY f /f",
            "RUN.S cat /f /one > /both"
        ],
        "{first}"
    );
    assert_eq!(
        st.iter().map(|(n, _, _)| *n).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(marks(&first), "....", "{first}");
    assert!(first.contains("grown in 5 instructions: four"), "{first}");

    let second = b.build("four", FOUR, &[]);
    assert_eq!(marks(&second), "****", "{second}");
    let last = second.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("grown in 5 instructions: four"),
        "{second}"
    );
    assert!(steps(&second).iter().all(|(_, hit, _)| *hit));

    let log = b.log("four");
    assert_eq!(
        log,
        [
            "IMPORT",
            "RUN echo one > /one",
            "ENV A=1",
            "COPY f /f",
            "RUN cat /f /one > /both"
        ]
    );
    // Parents are chained: a linear history of 5 commits.
    let revs = b.git(&["rev-list", "--parents", "refs/grove/img/four+latest"]);
    let rows: Vec<Vec<&str>> = revs.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(rows.len(), 5);
    for w in rows.windows(2) {
        assert_eq!(w[0].len(), 2, "one parent: {revs}");
        assert_eq!(w[0][1], w[1][0], "chained: {revs}");
    }
    assert_eq!(rows[4].len(), 1, "the import has no parent");
    assert_eq!(b.run("four", "cat /both"), "eff\none\n");
    b.fsck();
}

// ---- 2. cache behaviour ----

const CACHED: &str = "FROM busybox\nRUN echo a > /a\nCOPY f /f\nRUN echo b > /b\n";

#[test]
fn cache_hit_when_only_a_comment_or_blank_line_changes() {
    let b = Bench::checked_out("build-comment");
    b.write("f", "1\n");
    b.build("c", CACHED, &[]);
    let df =
        "# a comment\nFROM busybox\n\nRUN echo a > /a\n# another\n\nCOPY f /f\nRUN echo b > /b\n";
    assert_eq!(marks(&b.build("c", df, &[])), "***");
}

#[test]
fn cache_miss_from_a_copy_whose_source_content_changed() {
    let b = Bench::checked_out("build-copysrc");
    b.write("f", "1\n");
    b.build("c", CACHED, &[]);
    b.write("f", "2\n");
    assert_eq!(marks(&b.build("c", CACHED, &[])), "*..");
    assert_eq!(b.run("c", "cat /f"), "2\n");
}

#[test]
fn cache_miss_when_a_file_is_edited_and_its_mtime_set_back() {
    let b = Bench::checked_out("build-mtime");
    b.write("f", "aaaa\n");
    sh(&format!(
        "touch -d '2001-02-03 04:05:06' '{}'",
        b.ctx.join("f").display()
    ));
    b.build("c", CACHED, &[]);
    b.write("f", "bbbb\n");
    sh(&format!(
        "touch -d '2001-02-03 04:05:06' '{}'",
        b.ctx.join("f").display()
    ));
    assert_eq!(marks(&b.build("c", CACHED, &[])), "*..");
    assert_eq!(b.run("c", "cat /f"), "bbbb\n");
}

#[test]
fn cache_hit_when_an_unreferenced_context_file_changes() {
    let b = Bench::checked_out("build-unref");
    b.write("f", "1\n");
    b.write("other", "x\n");
    b.build("c", CACHED, &[]);
    b.write("other", "y\n");
    b.write("new-file", "z\n");
    assert_eq!(marks(&b.build("c", CACHED, &[])), "***");
}

#[test]
fn no_cache_executes_everything_and_writes_no_cache() {
    let b = Bench::checked_out("build-nocache");
    b.write("f", "1\n");
    assert_eq!(marks(&b.build("c", CACHED, &["--no-cache"])), "...");
    assert_eq!(marks(&b.build("c", CACHED, &["--no-cache"])), "...");
    // Nothing was cached by the --no-cache builds.
    assert_eq!(marks(&b.build("c", CACHED, &[])), "...");
    assert_eq!(marks(&b.build("c", CACHED, &[])), "***");
}

#[test]
fn rebuild_executes_everything_and_still_writes_the_cache() {
    let b = Bench::checked_out("build-rebuild");
    b.write("f", "1\n");
    assert_eq!(marks(&b.build("c", CACHED, &["--rebuild"])), "...");
    assert_eq!(marks(&b.build("c", CACHED, &["--rebuild"])), "...");
    assert_eq!(marks(&b.build("c", CACHED, &[])), "***");
}

#[test]
fn cache_disabled_by_environment_variable() {
    let b = Bench::checked_out("build-envcache");
    b.write("f", "1\n");
    b.build("c", CACHED, &[]);
    let mut c = b.build_cmd("c", CACHED, &[]);
    c.env("CH_IMAGE_CACHE", "disabled");
    assert_eq!(marks(&stderr_ok(&mut c)), "...");
    let mut c = b.build_cmd("c", CACHED, &[]);
    c.env("CH_IMAGE_CACHE", "bogus");
    let (_, err) = fails(&mut c);
    assert!(err.contains("CH_IMAGE_CACHE"), "{err}");
}

#[test]
fn build_arg_value_change_misses_at_that_arg() {
    let b = Bench::checked_out("build-argval");
    let df = "FROM busybox\nRUN echo a > /a\nARG V=default\nRUN echo $V > /v\n";
    assert_eq!(marks(&b.build("c", df, &["--build-arg", "V=one"])), "...");
    assert_eq!(marks(&b.build("c", df, &["--build-arg", "V=one"])), "***");
    assert_eq!(marks(&b.build("c", df, &["--build-arg", "V=two"])), "*..");
    assert_eq!(b.run("c", "cat /v"), "two\n");
    assert_eq!(marks(&b.build("c", df, &[])), "*..");
    assert_eq!(b.run("c", "cat /v"), "default\n");
}

#[test]
fn proxy_arg_from_the_environment_never_misses() {
    let b = Bench::checked_out("build-proxy");
    let df = "FROM busybox\nARG HTTP_PROXY\nRUN echo \"p=$HTTP_PROXY\" > /p\n";
    let mut c = b.build_cmd("c", df, &[]);
    c.env("HTTP_PROXY", "http://proxy-one:3128");
    assert_eq!(marks(&stderr_ok(&mut c)), "..");
    assert_eq!(b.run("c", "cat /p"), "p=http://proxy-one:3128\n");
    let mut c = b.build_cmd("c", df, &[]);
    c.env("HTTP_PROXY", "http://proxy-two:3128");
    assert_eq!(marks(&stderr_ok(&mut c)), "**");
    assert_eq!(marks(&b.build("c", df, &[])), "**");
}

// ---- 3. RUN ----

#[test]
fn failing_run_reports_status_and_leaves_the_image_alone() {
    let b = Bench::checked_out("build-runfail");
    b.build("img", "FROM busybox\nRUN echo good > /state\n", &[]);
    let before = b.image_commit("img").expect("img exists");
    let list_before = ok(b.image().args(["list", "-l"]));
    let (code, err) = b.build_fails(
        "img",
        "FROM busybox\nRUN echo bad > /state\nRUN exit 7\n",
        &[],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("build failed: RUN command exited with 7"),
        "{err}"
    );
    assert_eq!(b.image_commit("img").as_deref(), Some(before.as_str()));
    assert_eq!(ok(b.image().args(["list", "-l"])), list_before);
    assert_eq!(b.run("img", "cat /state"), "good\n");
    b.fsck();
    // Fixed Dockerfile: builds, and reuses the step that succeeded before.
    let log = b.build(
        "img",
        "FROM busybox\nRUN echo bad > /state\nRUN echo fixed >> /state\n",
        &[],
    );
    assert_eq!(marks(&log), "*.");
    assert_eq!(b.run("img", "cat /state"), "bad\nfixed\n");
}

#[test]
fn run_is_root_with_seccomp_emulation_and_its_changes_land_in_the_image() {
    let b = Bench::checked_out("build-runroot");
    let df = "FROM busybox\n\
              RUN echo keep > /keep && echo gone > /gone && mkdir -p /d/e && echo x > /d/e/x\n\
              RUN id -u > /uid && touch /owned && chown 1234:1234 /owned && mknod /dev/null2 c 1 3 || true\n\
              RUN rm /gone && rm -r /d/e && echo more >> /keep\n";
    b.build("r", df, &[]);
    assert_eq!(b.run("r", "cat /uid"), "0\n");
    assert_eq!(b.run("r", "cat /keep"), "keep\nmore\n");
    assert_eq!(
        b.run(
            "r",
            "test ! -e /gone && test -d /d && test ! -e /d/e && echo ok"
        ),
        "ok\n"
    );
    assert_eq!(b.run("r", "test -f /owned && echo ok"), "ok\n");
}

#[test]
fn run_chown_succeeds_under_seccomp_and_fails_without() {
    let b = Bench::checked_out("build-chown");
    b.build("r", "FROM busybox\nRUN touch /f && chown 1234 /f\n", &[]);
    let (_, err) = b.build_fails(
        "r2",
        "FROM busybox\nRUN touch /f && chown 1234 /f\n",
        &["--force=none"],
    );
    assert!(err.contains("RUN command exited with"), "{err}");
}

#[test]
fn run_sees_env_arg_and_path() {
    let b = Bench::checked_out("build-runenv");
    let df = "FROM busybox\nARG A1=arg-value\nENV E1=env-value E2=\"${A1}-x\"\n\
              RUN echo \"$A1 $E1 $E2\" > /vars && echo \"$PATH\" > /path\n";
    b.build("e", df, &[]);
    assert_eq!(b.run("e", "cat /vars"), "arg-value env-value arg-value-x\n");
    let path = b.run("e", "cat /path");
    assert!(path.contains("/usr/bin") && path.contains("/bin"), "{path}");
    // ENV persists in the image; ARG does not.
    let cfg = b.git(&["show", "refs/grove/img/e+latest:config.json"]);
    assert!(cfg.contains("env-value"), "{cfg}");
    assert!(!cfg.contains("\"A1\""), "{cfg}");
}

// Regression: the RUN after ~40 file-changing steps failed with ch-run's "can't overlay:
// too many layers", because the view stacked every layer of the chain.
#[test]
fn long_build_with_more_layers_than_one_overlay_mount_takes() {
    let b = Bench::checked_out("build-longchain");
    let mut df = String::from("FROM busybox\n");
    for i in 0..60 {
        df.push_str(&format!("RUN echo {i} > /f{i}\n"));
    }
    df.push_str("RUN cat /f0 /f59 > /ends\n");
    b.build("long", &df, &[]);
    assert_eq!(
        b.run("long", "cat /ends; ls / | grep -c '^f'"),
        "0\n59\n60\n"
    );
}

#[test]
fn run_replacing_a_directory_hides_its_old_contents() {
    let b = Bench::checked_out("build-opaque");
    let df = "FROM busybox\n\
              RUN mkdir -p /d/sub && echo old > /d/old && echo old > /d/sub/x\n\
              RUN rm -rf /d && mkdir /d && echo new > /d/new\n\
              RUN ln -s /d /link && rm /link && mkdir /link && echo l > /link/f\n";
    b.build("o", df, &[]);
    assert_eq!(b.run("o", "ls -A /d"), "new\n");
    assert_eq!(
        b.run("o", "test -d /link && test ! -L /link && cat /link/f"),
        "l\n"
    );
}

#[test]
fn run_keeps_modes_hard_links_and_special_bits() {
    let b = Bench::checked_out("build-modes");
    let df = "FROM busybox\n\
              RUN echo x > /a && ln /a /b && chmod 4755 /a && mkdir -m 0555 /ro && mkfifo /fifo\n\
              RUN echo y > /c\n";
    b.build("m", df, &[]);
    assert_eq!(
        b.run("m", "stat -c '%a %h' /a /b /ro; test -p /fifo && echo fifo"),
        "4755 2\n4755 2\n555 2\nfifo\n"
    );
    assert_eq!(b.run("m", "echo z >> /a; cat /b"), "x\n");
}

#[test]
fn from_a_stage_alias_and_an_arg_before_from() {
    let b = Bench::checked_out("build-stagefrom");
    let df = "ARG BASE=busybox\nFROM $BASE AS first\nRUN echo 1 > /one\n\
              FROM first\nENV PATH=/opt/bin:$PATH\nRUN mkdir -p /opt/bin && printf '#!/bin/sh\\necho mine\\n' > /opt/bin/mycmd && chmod +x /opt/bin/mycmd\nRUN mycmd > /out && cat /one >> /out\n";
    b.build("s", df, &[]);
    assert_eq!(b.run("s", "cat /out"), "mine\n1\n");
}

#[test]
fn add_extracts_a_local_tarball_and_copies_other_files() {
    let b = Bench::checked_out("build-add");
    b.write("src/inner/file", "in tar\n");
    b.write("plain", "plain\n");
    sh(&format!(
        "cd '{}' && tar -czf t.tar.gz -C src inner",
        b.ctx.display()
    ));
    b.build("a", "FROM busybox\nADD t.tar.gz /x/\nADD plain /y\n", &[]);
    assert_eq!(b.run("a", "cat /x/inner/file /y"), "in tar\nplain\n");
}

// ---- 4. COPY ----

#[test]
fn copy_of_directory_copies_its_contents() {
    let b = Bench::checked_out("build-copydir");
    b.write("d/a", "A\n");
    b.write("d/sub/b", "B\n");
    b.build(
        "c",
        "FROM busybox\nCOPY d /dst\nCOPY d /existing-tmp/\n",
        &[],
    );
    assert_eq!(b.run("c", "cat /dst/a /dst/sub/b"), "A\nB\n");
    assert_eq!(b.run("c", "test ! -e /dst/d && echo ok"), "ok\n");
    assert_eq!(b.run("c", "ls /existing-tmp"), "a\nsub\n");
}

#[test]
fn copy_destination_shapes() {
    let b = Bench::checked_out("build-copydest");
    b.write("f1", "1\n");
    b.write("f2", "2\n");
    let df = "FROM busybox\n\
              COPY f1 /newfile\n\
              COPY f1 /newdir/\n\
              COPY f1 f2 /multi\n\
              COPY f* /globbed\n\
              COPY /f2 /abs-src\n\
              WORKDIR /wd\n\
              COPY f1 rel\n";
    b.build("c", df, &[]);
    assert_eq!(b.run("c", "cat /newfile"), "1\n");
    assert_eq!(b.run("c", "cat /newdir/f1"), "1\n");
    assert_eq!(b.run("c", "cat /multi/f1 /multi/f2"), "1\n2\n");
    assert_eq!(b.run("c", "ls /globbed"), "f1\nf2\n");
    assert_eq!(b.run("c", "cat /abs-src"), "2\n");
    assert_eq!(b.run("c", "cat /wd/rel"), "1\n");
}

#[test]
fn copy_sources_outside_the_context_are_refused() {
    let b = Bench::checked_out("build-outside");
    b.write("f", "1\n");
    std::os::unix::fs::symlink("/etc/passwd", b.ctx.join("escape")).expect("symlink");
    // A file beside the context, and one of the same name inside it: `..` must not be
    // clamped to the context root.
    std::fs::write(b.s.join("outside"), "o\n").expect("write");
    b.write("outside", "inside\n");
    for src in ["../outside", "/../outside", "sub/../../outside"] {
        let (_, err) = b.build_fails("c", &format!("FROM busybox\nCOPY {src} /x\n"), &[]);
        assert!(err.contains(&format!("outside context: {src}")), "{err}");
    }
    let (_, err) = b.build_fails("c", "FROM busybox\nCOPY escape /x\n", &[]);
    assert!(err.contains("escape"), "{err}");
    let (_, err) = b.build_fails("c", "FROM busybox\nCOPY nonexistent /x\n", &[]);
    assert!(err.contains("nonexistent"), "{err}");
}

#[test]
fn copy_dereferences_top_level_symlinks_and_keeps_deeper_ones() {
    let b = Bench::checked_out("build-symlinks");
    b.write("real", "R\n");
    b.write("dir/inner", "I\n");
    b.mkdir("dir/sub");
    std::os::unix::fs::symlink("real", b.ctx.join("top-link")).expect("symlink");
    std::os::unix::fs::symlink("inner", b.ctx.join("dir/deep-link")).expect("symlink");
    std::os::unix::fs::symlink("sub", b.ctx.join("dir/dir-link")).expect("symlink");
    b.build("c", "FROM busybox\nCOPY top-link /t\nCOPY dir /d/\n", &[]);
    assert_eq!(b.run("c", "test ! -L /t && cat /t"), "R\n");
    assert_eq!(b.run("c", "readlink /d/deep-link"), "inner\n");
    assert_eq!(b.run("c", "readlink /d/dir-link"), "sub\n");
    assert_eq!(b.run("c", "cat /d/deep-link"), "I\n");
}

#[test]
fn copy_destination_through_an_image_symlink_lands_in_the_real_directory() {
    let b = Bench::checked_out("build-destlink");
    b.write("f", "F\n");
    let df = "FROM busybox\n\
              RUN mkdir -p /usr/real && ln -s usr/real /rel-link && ln -s /usr/real /abs-link\n\
              COPY f /rel-link/\n\
              COPY f /abs-link/g\n";
    b.build("c", df, &[]);
    assert_eq!(
        b.run("c", "readlink /rel-link; readlink /abs-link"),
        "usr/real\n/usr/real\n"
    );
    assert_eq!(b.run("c", "cat /usr/real/f /usr/real/g"), "F\nF\n");
}

#[test]
fn copy_from_a_previous_stage() {
    let b = Bench::checked_out("build-multistage");
    let df = "FROM busybox AS builder\n\
              RUN mkdir -p /out/sub && echo built > /out/sub/artifact && ln -s sub/artifact /out/link\n\
              FROM busybox\n\
              COPY --from=builder /out /opt/\n\
              COPY --from=0 /out/sub/artifact /single\n";
    b.build("m", df, &[]);
    assert_eq!(
        b.run("m", "cat /opt/sub/artifact /single"),
        "built\nbuilt\n"
    );
    assert_eq!(b.run("m", "readlink /opt/link"), "sub/artifact\n");
    // The builder stage's files are not in the final image.
    assert_eq!(b.run("m", "test ! -e /out && echo ok"), "ok\n");
    let (_, err) = b.build_fails("m2", "FROM busybox\nCOPY --from=nope /x /y\n", &[]);
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn copy_heredoc_writes_the_file() {
    let b = Bench::checked_out("build-heredoc");
    let df = "FROM busybox\nCOPY <<EOF /etc/greeting\nhello\nworld\nEOF\nRUN cat /etc/greeting > /copied\n";
    b.build("h", df, &[]);
    assert_eq!(b.run("h", "cat /copied"), "hello\nworld\n");
}

#[test]
fn copy_into_an_existing_directory_keeps_its_mode() {
    let b = Bench::checked_out("build-copymode");
    b.write("f", "F\n");
    let df =
        "FROM busybox\nRUN mkdir -m 0555 /ro && mkdir -m 0750 /priv && mkdir -m 1777 /sticky\n\
              COPY f /ro/\nCOPY f /priv/sub/\nCOPY f /sticky/\n";
    b.build("c", df, &[]);
    assert_eq!(
        b.run(
            "c",
            "stat -c '%a' /ro /priv /priv/sub /sticky; cat /ro/f /priv/sub/f /sticky/f"
        ),
        "555\n750\n755\n1777\nF\nF\nF\n"
    );
}

// Issue 13: a big file no compressor can shrink (an archive, media, random bytes) is
// stored as it is: zlib level 1 spent 0.5 s of a cold build's COPY on a 50 MB file and
// made its object 5% bigger. A big compressible file is still compressed.
#[test]
fn copy_stores_a_big_incompressible_file_as_it_is_and_compresses_a_text_one() {
    let b = Bench::checked_out("build-incompressible");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..3 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let text: String = (0..150_000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(b.ctx.join("noise.bin"), &noise).expect("write noise.bin");
    b.write("text.txt", &text);
    b.build("big", "FROM busybox\nCOPY noise.bin text.txt /d/\n", &[]);
    let objects = b.storage().join("repo.git/objects");
    for (name, len) in [("noise.bin", noise.len()), ("text.txt", text.len())] {
        let id = b.git(&[
            "rev-parse",
            &format!("refs/grove/img/big+latest:rootfs/d/{name}"),
        ]);
        let id = id.trim();
        // The object holds the file's content (same id as git gives the context file).
        let want = b.git(&["hash-object", &b.ctx.join(name).to_string_lossy()]);
        assert_eq!(id, want.trim(), "{name}");
        let object = objects.join(&id[..2]).join(&id[2..]);
        let size = std::fs::metadata(&object)
            .unwrap_or_else(|e| panic!("{name}: loose object {}: {e}", object.display()))
            .len() as usize;
        if name == "noise.bin" {
            assert!(
                size < len + len / 1000,
                "{name}: object of {size} bytes for {len}"
            );
        } else {
            assert!(size < len / 2, "{name}: object of {size} bytes for {len}");
        }
    }
    b.fsck();
    assert_eq!(
        b.run("big", "wc -c < /d/noise.bin; wc -l < /d/text.txt"),
        "3145728\n150000\n"
    );
}

// Regression: COPY made every file owner-writable (a 0444 file became 0644).
#[test]
fn copy_keeps_file_permission_bits() {
    let b = Bench::checked_out("build-filemode");
    b.write("ro", "r\n");
    b.write("x", "#!/bin/sh\necho x\n");
    sh(&format!(
        "chmod 0444 '{0}/ro' && chmod 0750 '{0}/x'",
        b.ctx.display()
    ));
    b.build("c", "FROM busybox\nCOPY ro x /d/\n", &[]);
    assert_eq!(b.run("c", "stat -c '%a' /d/ro /d/x; /d/x"), "444\n750\nx\n");
}

#[test]
fn copy_chown_warns_and_continues() {
    let b = Bench::checked_out("build-copychown");
    b.write("f", "F\n");
    let log = b.build("c", "FROM busybox\nCOPY --chown=1:1 f /f\n", &[]);
    assert!(log.contains("warning") && log.contains("--chown"), "{log}");
    assert_eq!(b.run("c", "cat /f"), "F\n");
}

#[test]
fn dockerignore_excludes_files_from_copy_and_the_cache_key() {
    let b = Bench::checked_out("build-ignore");
    // Patterns are anchored at the context root, as Docker's are.
    b.write(".dockerignore", "d/*.log\n**/secret\n");
    b.write("d/keep", "K\n");
    b.write("d/x.log", "L\n");
    b.write("d/secret", "S\n");
    let df = "FROM busybox\nCOPY d /d\n";
    b.build("c", df, &[]);
    assert_eq!(b.run("c", "ls -A /d"), "keep\n");
    // Changing an ignored file doesn't miss.
    b.write("d/x.log", "changed\n");
    assert_eq!(marks(&b.build("c", df, &[])), "*");
}

/// Charliecloud's `examples/copy`, with the busybox base instead of `00_tiny` and without
/// the final apk/find steps; the expected trees are those of its test.bats.
#[test]
fn charliecloud_copy_example_gives_the_tree_its_tests_expect() {
    let example = ["/usr/share/doc/charliecloud/examples/copy"]
        .into_iter()
        .map(PathBuf::from)
        .chain(
            std::fs::read_dir("/usr/share/doc")
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("charliecloud"))
                .map(|e| e.path().join("examples/copy")),
        )
        .find(|p| p.join("Dockerfile").is_file());
    let Some(example) = example else {
        skip("charliecloud-doc examples/copy not installed (apt-get install charliecloud-doc)");
        return;
    };
    let b = Bench::checked_out("build-chcopy");
    // Copy the example context (with its symlinks) and adapt the Dockerfile.
    sh(&format!(
        "cp -a '{}/.' '{}/'",
        example.display(),
        b.ctx.display()
    ));
    crate::common::own(&b.ctx);
    let df = std::fs::read_to_string(example.join("Dockerfile")).expect("read example");
    let df = df.replace("FROM 00_tiny", "FROM busybox");
    let cut = df
        .find("# Need GNU find")
        .expect("example has its wrap-up section");
    let df = &df[..cut];
    b.build("copy", df, &[]);
    let bats = std::fs::read_to_string(example.join("test.bats")).expect("read test.bats");
    let expected: Vec<&str> = bats
        .split("<<EOF\n")
        .skip(1)
        .map(|s| s.split("EOF\n").next().unwrap_or_default())
        .collect();
    assert_eq!(expected.len(), 3, "test.bats has three expected trees");
    // Look at the tree from the host, with GNU tools, in a checkout of the image.
    let dir = ok(b.image().args(["checkout", "copy"]));
    let test = PathBuf::from(dir.trim()).join("test");
    let got_ls = ok(crate::common::unpriv("sh")
        .current_dir(&test)
        .args(["-c", "ls -1FR ."]));
    let got_files = ok(crate::common::unpriv("sh").current_dir(&test).args([
        "-c",
        "find . -type f -printf '%y: %p: ' -a -exec cat {} \\; | LC_ALL=C sort",
    ]));
    let got_links = ok(crate::common::unpriv("sh").current_dir(&test).args([
        "-c",
        "find . -type l -printf '%y: %p -> %l\\n' | LC_ALL=C sort",
    ]));
    assert_eq!(got_ls, expected[0], "ls -1FR differs");
    assert_eq!(got_files, expected[1], "regular file contents differ");
    assert_eq!(got_links, expected[2], "symlink targets differ");
}

// ---- 5. other instructions ----

#[test]
fn workdir_is_created_and_run_runs_there() {
    let b = Bench::checked_out("build-workdir");
    let df = "FROM busybox\nWORKDIR /a/b\nRUN pwd > here\nWORKDIR c\nRUN pwd > here\n";
    b.build("w", df, &[]);
    assert_eq!(b.run("w", "cat /a/b/here /a/b/c/here"), "/a/b\n/a/b/c\n");
}

#[test]
fn config_instructions_are_kept_in_the_image_config() {
    let b = Bench::checked_out("build-config");
    let df = "FROM busybox\n\
              ENV GREETING=hello\n\
              LABEL org.example.label=\"a value\"\n\
              SHELL [\"/bin/sh\", \"-ec\"]\n\
              RUN echo \"$0 $GREETING\" > /shell\n\
              CMD [\"echo\", \"cmd\"]\n\
              ENTRYPOINT [\"/bin/sh\", \"-c\"]\n";
    b.build("cfg", df, &[]);
    let cfg = b.git(&["show", "refs/grove/img/cfg+latest:config.json"]);
    let v: serde_json::Value = serde_json::from_str(&cfg).expect("config is JSON");
    assert_eq!(v["cmd"], serde_json::json!(["echo", "cmd"]), "{cfg}");
    assert_eq!(
        v["entrypoint"],
        serde_json::json!(["/bin/sh", "-c"]),
        "{cfg}"
    );
    assert_eq!(v["shell"], serde_json::json!(["/bin/sh", "-ec"]), "{cfg}");
    assert_eq!(v["labels"]["org.example.label"], "a value", "{cfg}");
    assert!(cfg.contains("GREETING") && cfg.contains("hello"), "{cfg}");
    assert_eq!(b.run("cfg", "cat /shell"), "/bin/sh hello\n");
}

#[test]
fn unsupported_instructions_warn_and_continue() {
    let b = Bench::checked_out("build-unsupported");
    let df = "FROM busybox\nUSER nobody\nEXPOSE 80\nVOLUME /data\nSTOPSIGNAL SIGKILL\nRUN id -u > /uid\n";
    let log = b.build("u", df, &[]);
    for kw in ["USER", "EXPOSE", "VOLUME", "STOPSIGNAL"] {
        assert!(
            log.lines()
                .any(|l| l.starts_with("warning") && l.contains(kw)),
            "no warning for {kw}: {log}"
        );
    }
    assert_eq!(b.run("u", "cat /uid"), "0\n");
}

#[test]
fn dockerfile_from_stdin_and_from_a_file() {
    let b = Bench::checked_out("build-dffile");
    b.mkdir("");
    let mut c = b.image();
    c.args(["build", "-t", "stdin", "-f", "-"])
        .arg(&b.ctx)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn build");
    {
        use std::io::Write;
        let mut si = child.stdin.take().expect("stdin");
        si.write_all(b"FROM busybox\nRUN echo from-stdin > /src\n")
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(b.run("stdin", "cat /src"), "from-stdin\n");

    b.write("other/My.df", "FROM busybox\nRUN echo from-file > /src\n");
    let f = b.ctx.join("other/My.df");
    let mut c = b.image();
    c.args(["build", "-t", "file", "-f"]).arg(&f).arg(&b.ctx);
    stderr_ok(&mut c);
    assert_eq!(b.run("file", "cat /src"), "from-file\n");
}

#[test]
fn parse_only_and_dry_run_create_no_image() {
    let b = Bench::checked_out("build-dryrun");
    let df = "FROM busybox\nRUN echo x > /x\n";
    let before = ok(b.image().args(["list"]));
    let mut c = b.build_cmd("p", df, &["--parse-only"]);
    stderr_ok(&mut c);
    let mut c = b.build_cmd("d", df, &["-n"]);
    let log = stderr_ok(&mut c);
    assert!(log.contains("RUN"), "{log}");
    let mut c = b.build_cmd("d", df, &["--dry-run"]);
    stderr_ok(&mut c);
    assert_eq!(ok(b.image().args(["list"])), before);
    // Nothing was cached either: a real build executes.
    assert_eq!(marks(&b.build("d", df, &[])), ".");
}

#[test]
fn tag_is_inferred_from_dockerfile_extension_or_context_name() {
    let b = Bench::checked_out("build-infer");
    b.write("Dockerfile.Fancy", "FROM busybox\nRUN true\n");
    let mut c = b.image();
    c.args(["build", "-f"])
        .arg(b.ctx.join("Dockerfile.Fancy"))
        .arg(&b.ctx);
    let log = stderr_ok(&mut c);
    assert!(log.contains("grown in 2 instructions: fancy"), "{log}");
    assert!(b.image_commit("fancy").is_some());

    let named = b.ctx.join("MyProject");
    std::fs::create_dir_all(&named).expect("mkdir");
    std::fs::write(named.join("Dockerfile"), "FROM busybox\nRUN true\n").expect("write");
    crate::common::own(&named);
    let mut c = b.image();
    c.arg("build").arg(&named);
    let log = stderr_ok(&mut c);
    assert!(log.contains("grown in 2 instructions: myproject"), "{log}");
    assert!(b.image_commit("myproject").is_some());
}

#[test]
fn parse_error_shows_file_line_column_once_and_fails() {
    let b = Bench::checked_out("build-parseerr");
    let (code, err) = b.build_fails("p", "FROM busybox\nRUN true\nFROBNICATE x\n", &[]);
    assert_ne!(code, 0);
    assert!(err.contains("Dockerfile:3:1"), "{err}");
    assert!(err.contains("FROBNICATE"), "{err}");
    assert_eq!(
        err.matches("unknown instruction").count(),
        1,
        "message repeated: {err}"
    );
    assert!(b.image_commit("p").is_none());
}

#[test]
fn unconsumed_build_arg_is_an_error() {
    let b = Bench::checked_out("build-unconsumed");
    let (_, err) = b.build_fails("u", "FROM busybox\nRUN true\n", &["--build-arg", "NOPE=1"]);
    assert!(err.contains("NOPE"), "{err}");
    assert!(b.image_commit("u").is_none());
}

#[test]
fn from_an_unknown_image_names_it() {
    let b = Bench::checked_out("build-nofrom");
    let (_, err) = b.build_fails("u", "FROM no-such-image\nRUN true\n", &[]);
    assert!(err.contains("no-such-image"), "{err}");
    assert!(err.contains("Dockerfile:1"), "{err}");
}

// ---- 6. interrupted builds ----

#[test]
fn build_killed_during_run_leaves_a_usable_store() {
    let b = Bench::checked_out("build-kill9");
    b.build("img", "FROM busybox\nRUN echo v1 > /v\n", &[]);
    let marker = b.s.join("started");
    // A sleep of a length no other test uses marks the RUN's processes.
    let nap = format!("sleep 9{}", std::process::id());
    let df = format!(
        "FROM busybox\nRUN echo v1 > /v\nRUN touch /mnt/started && echo v2 > /v && {nap}\n"
    );
    let bind = format!("{}:/mnt", b.s.path.display());
    let mut c = b.build_cmd("img", &df, &["-b", &bind]);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = c.spawn().expect("spawn build");
    let t = Instant::now();
    while !marker.exists() {
        assert!(t.elapsed() < Duration::from_secs(60), "RUN never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    // kill -9 the build (ch-image itself; setpriv exec'd it, so this pid is ch-image).
    let st = Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    let _ = child.wait();
    b.fsck();
    let list = ok(b.image().args(["list"]));
    assert!(list.lines().any(|l| l == "img"), "{list}");
    assert_eq!(b.run("img", "cat /v"), "v1\n");
    // The RUN ends with the build (its parent-death signal); the next build succeeds once
    // it is gone.
    assert!(
        eventually(60, || processes_with(&nap).is_empty()),
        "the killed build's RUN is still running: {:?}",
        processes_with(&nap)
    );
    let log = b.build("img", &df.replace(&nap, "true"), &["-b", &bind]);
    assert_eq!(marks(&log), "*.");
    assert_eq!(b.run("img", "cat /v"), "v2\n");
    b.fsck();
}

// Issue 13: the files of the COPYs after a RUN are hashed while its command runs (a
// core is free then); a file the command changes afterwards is hashed again, so the COPY
// copies, and its key and provenance follow, what the file holds when the COPY comes.
#[test]
fn copy_after_a_run_that_changes_its_source_copies_and_keys_the_new_content() {
    let b = Bench::checked_out("build-warm");
    b.write("f", "old\n");
    b.write("g", "gee\n");
    let bind = format!("{}:/ctx", b.ctx.display());
    // The sleep gives the build's hashing of f and g time to come first.
    let df = "FROM busybox\nRUN sleep 2 && echo new > /ctx/f\nCOPY f g /d/\n";
    let log = stderr_ok(b.build_cmd("img", df, &["-b", &bind]).arg("-vv"));
    assert!(
        log.contains("read 2 files of the COPYs after this RUN while it ran"),
        "{log}"
    );
    assert_eq!(b.run("img", "cat /d/f /d/g"), "new\ngee\n");
    // The COPY's key was the new content's (and time's): a rebuild, whose RUN hits and
    // leaves f as the first build's RUN left it, hits all.
    let again = b.build("img", df, &["-b", &bind]);
    assert_eq!(marks(&again), "**", "{again}");
    b.fsck();
}

// ---- 7. a real build ----

/// The Debian fixture: `fixtures/debian.sh` makes a minbase bookworm tarball once per
/// machine. `None` (after a loud skip) when the mirror can't be reached.
pub(crate) fn debian_tarball() -> Option<PathBuf> {
    let cache = PathBuf::from(
        std::env::var_os("GROVE_FIXTURE_CACHE").unwrap_or_else(|| "/var/tmp/grove-fixtures".into()),
    );
    let dest = cache.join("debian-bookworm.tar");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/debian.sh");
    // One maker at a time in this process: two tests that started together each ran
    // mmdebstrap (minutes, both writing the same log); the second now finds it made.
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _making = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    let st = Command::new("sh")
        .arg(&script)
        .arg(&dest)
        .status()
        .expect("run fixtures/debian.sh");
    if st.code() == Some(77) {
        skip("fixtures/debian.sh: Debian mirror not reachable");
        return None;
    }
    assert!(st.success(), "fixtures/debian.sh failed");
    Some(dest)
}

#[test]
fn debian_apt_get_install_hello_unprivileged() {
    let Some(tarball) = debian_tarball() else {
        return;
    };
    let b = Bench::checked_out("build-debian");
    ok(b.image().arg("import").arg(&tarball).arg("debian"));
    let df = "FROM debian\nRUN apt-get update && apt-get install -y hello\n";
    let log = b.build("hello", df, &[]);
    assert!(log.contains("grown in 2 instructions: hello"), "{log}");
    let out = ok(tool("ch-run")
        .arg("-s")
        .arg(b.storage())
        .args(["hello", "--", "hello"]));
    assert_eq!(out, "Hello, world!\n");
    // ch-ssh, bound by --ch-ssh, runs in a glibc image (and finds no ssh there).
    let out = crate::common::output(
        tool("ch-run")
            .arg("-s")
            .arg(b.storage())
            .args(["-W", "--ch-ssh", "hello", "--", "sh", "-c"])
            .arg("/usr/bin/ch-ssh --help | head -1; CH_RUN_ARGS=/img /usr/bin/ch-ssh node1 true"),
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        stdout.starts_with("Usage: CH_RUN_ARGS="),
        "{stdout}{stderr}"
    );
    assert!(
        stderr.contains("]: error: can't execute ssh: No such file or directory"),
        "{stderr}"
    );
    // --force=fakeroot: RUN under fakeroot(1); on Debian, installed first when missing.
    let df = "FROM hello\nRUN touch /x && chown 1234:1234 /x && stat -c %u /x > /owner\n";
    let log = b.build("fr", df, &["--force=fakeroot"]);
    assert!(log.contains("RUN.F"), "{log}");
    assert!(log.contains("installing it with apt-get"), "{log}");
    assert_eq!(b.run("fr", "cat /owner"), "1234\n");
    assert_eq!(b.run("fr", "command -v fakeroot"), "/usr/bin/fakeroot\n");
    b.fsck();
}

/// `ch-run --set-env` (no file) reads /ch/environment from whichever layer of a built
/// image holds it.
#[test]
fn set_env_default_file_comes_from_a_lower_layer() {
    let b = Bench::checked_out("build-envlayer");
    b.build(
        "base",
        "FROM busybox\nRUN mkdir -p /ch && echo FROMIMG=yes > /ch/environment\n",
        &[],
    );
    b.build("lay", "FROM base\nRUN echo hi > /hi\n", &[]);
    let out = ok(tool("ch-run").arg("-s").arg(b.storage()).args([
        "--set-env",
        "lay",
        "--",
        "/bin/sh",
        "-c",
        "echo $FROMIMG; cat /hi",
    ]));
    assert_eq!(out, "yes\nhi\n");
}

/// A bad `-b` is refused before building, even when every instruction would hit the cache.
#[test]
fn bad_bind_is_refused_before_the_build() {
    let b = Bench::checked_out("build-badbind");
    let df = "FROM busybox\nRUN echo hi > /hi\n";
    b.build("img", df, &[]);
    for (bind, want) in [
        ("/tmp:mnt", "--bind: destination must be absolute"),
        ("/tmp:/", "--bind: destination can't be /"),
    ] {
        let (_, err) = b.build_fails("img", df, &["-b", bind]);
        assert!(err.contains(want), "{bind}: {err}");
    }
}

#[test]
fn force_fakeroot_without_fakeroot_in_the_image_says_how_to_get_it() {
    let b = Bench::checked_out("build-nofakeroot");
    let (_, err) = b.build_fails("f", "FROM busybox\nRUN true\n", &["--force=fakeroot"]);
    assert!(err.contains("fakeroot not found in the image"), "{err}");
    assert!(err.contains("Dockerfile:2"), "{err}");
}

#[test]
fn add_fetches_a_url_and_its_content_decides_the_cache() {
    let b = Bench::checked_out("build-addurl");
    b.mkdir("www");
    b.write("www/data.txt", "first\n");
    let srv = crate::common::HttpServer::start(&b.ctx.join("www"));
    let df = format!(
        "FROM busybox\nADD http://127.0.0.1:{}/data.txt /dl/\nRUN cat /dl/data.txt > /copy\n",
        srv.port
    );
    b.build("u", &df, &[]);
    assert_eq!(b.run("u", "cat /dl/data.txt /copy"), "first\nfirst\n");
    // Downloaded files are 0600 (as in Docker).
    assert_eq!(b.run("u", "stat -c %a /dl/data.txt"), "600\n");
    // Same content: all hits; changed content: a miss from the ADD on.
    assert_eq!(marks(&b.build("u", &df, &[])), "**");
    b.write("www/data.txt", "second\n");
    assert_eq!(marks(&b.build("u", &df, &[])), "..");
    assert_eq!(b.run("u", "cat /copy"), "second\n");
    // COPY does not fetch URLs.
    let (_, err) = b.build_fails("c", &df.replace("ADD", "COPY"), &[]);
    assert!(err.contains("COPY can't fetch URLs"), "{err}");
}

#[test]
fn built_image_runs_by_name_from_its_layers_read_only_and_with_write_fake() {
    let b = Bench::checked_out("build-layersrun");
    b.build(
        "l",
        "FROM busybox\nRUN echo one > /one\nRUN echo two > /two\n",
        &[],
    );
    // Read-only by default, from the layer union.
    assert_eq!(b.run("l", "cat /one /two"), "one\ntwo\n");
    let (_, _) = fails(
        tool("ch-run")
            .arg("-s")
            .arg(b.storage())
            .args(["l", "--", "touch", "/x"]),
    );
    // -W: a throwaway writable layer over the layers themselves (no checkout of the
    // image is made); a file a RUN removed stays removed, new directories and files are
    // written, and the image is unchanged afterwards.
    b.build(
        "w",
        "FROM l\nRUN rm /one && mkdir /d && echo three > /d/three\n",
        &[],
    );
    let checkouts = || -> Vec<String> {
        std::fs::read_dir(b.storage().join("checkouts"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let before = checkouts();
    let out = ok(tool("ch-run").arg("-W").arg("-s").arg(b.storage()).args([
        "w",
        "--",
        "/bin/sh",
        "-c",
        "echo x > /new && mkdir -p /e/f && echo y > /e/f/g && echo z >> /d/three \
         && cat /new /e/f/g /d/three /two && test ! -e /one && echo no-one",
    ]));
    assert_eq!(out, "x\ny\nthree\nz\ntwo\nno-one\n");
    assert_eq!(checkouts(), before, "-W over layers made a checkout");
    assert_eq!(
        b.run("w", "test ! -e /new && test ! -e /e && cat /d/three"),
        "three\n"
    );
    // A checkout with -W as before (an image stored as one directory).
    let out = ok(tool("ch-run").arg("-W").arg("-s").arg(b.storage()).args([
        "busybox",
        "--",
        "/bin/sh",
        "-c",
        "echo x > /new && cat /new",
    ]));
    assert_eq!(out, "x\n");
    // The layers are as stamped (a later build on them checks them).
    b.build("w2", "FROM w\nRUN cat /d/three /two\n", &[]);
    ok(tool("ch-image").arg("-s").arg(b.storage()).arg("fsck"));
}

// ---- hardening (issue 11) ----

/// `ch-image -s STORAGE` killed after 120 s: a test of a fixed hang fails, not hangs.
fn bounded_image(b: &Bench) -> Command {
    let mut c = crate::common::unpriv("timeout");
    c.args(["-s", "KILL", "120"])
        .arg(crate::common::bin("ch-image"))
        .arg("-s")
        .arg(b.storage());
    c
}

#[test]
fn dockerignore_that_is_not_utf8_or_unreadable_fails_the_build_naming_it() {
    let b = Bench::checked_out("build-ignore-bad");
    b.write("secret", "s\n");
    b.write(".dockerignore", "");
    std::fs::write(b.ctx.join(".dockerignore"), b"# caf\xe9\nsecret\n").expect("write");
    let (_, err) = b.build_fails("i", "FROM busybox\nCOPY . /x/\n", &[]);
    assert!(
        err.contains(&format!(
            "{}:1: not valid UTF-8",
            b.ctx.join(".dockerignore").display()
        )),
        "{err}"
    );
    std::fs::write(b.ctx.join(".dockerignore"), b"secret\n").expect("write");
    sh(&format!(
        "chmod 0000 '{}'",
        b.ctx.join(".dockerignore").display()
    ));
    let (_, err) = b.build_fails("i", "FROM busybox\nCOPY . /x/\n", &[]);
    assert!(
        err.contains(&format!(
            "can't read: {}",
            b.ctx.join(".dockerignore").display()
        )),
        "{err}"
    );
}

#[test]
fn copy_of_a_top_level_fifo_is_skipped_with_a_warning() {
    let b = Bench::checked_out("build-fifo");
    sh(&format!("mkfifo '{}'", b.ctx.join("fifo").display()));
    b.write(
        "Dockerfile",
        "FROM busybox\nCOPY fifo /x\nRUN test ! -e /x && echo not-there\n",
    );
    let mut c = bounded_image(&b);
    c.args(["build", "-t", "f"]).arg(&b.ctx);
    let err = stderr_ok(&mut c);
    assert!(err.contains("not copying FIFO: "), "{err}");
    assert!(err.contains("not-there"), "{err}");
    // ADD skips it the same way, and its warning does not call the step a COPY.
    b.write(
        "Dockerfile",
        "FROM busybox\nADD fifo /y\nRUN test ! -e /y && echo not-there\n",
    );
    let mut c = bounded_image(&b);
    c.args(["build", "-t", "f"]).arg(&b.ctx);
    let err = stderr_ok(&mut c);
    assert!(err.contains("warning: not copying FIFO: "), "{err}");
    assert!(!err.contains("COPY"), "{err}");
    assert!(err.contains("not-there"), "{err}");
}

#[test]
fn renaming_a_non_utf8_context_file_is_a_cache_miss() {
    use std::os::unix::ffi::OsStrExt;
    let b = Bench::checked_out("build-nonutf8");
    let name = |last: u8| b.ctx.join(std::ffi::OsStr::from_bytes(&[b'a', last]));
    std::fs::write(name(0xff), b"same\n").expect("write");
    crate::common::own(&b.ctx);
    let df = "FROM busybox\nCOPY . /x/\n";
    b.build("n", df, &[]);
    std::fs::rename(name(0xff), name(0xfe)).expect("rename");
    let log = b.build("n", df, &[]);
    assert_eq!(marks(&log), ".", "{log}");
    assert_eq!(
        b.run("n", "test -e \"/x/$(printf 'a\\376')\" && test ! -e \"/x/$(printf 'a\\377')\" && echo renamed"),
        "renamed\n"
    );
}

/// PIDs of processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.contains(marker)
                .then(|| format!("{}: {cmd}", e.file_name().to_string_lossy()))
        })
        .collect()
}

/// Poll `f` until it holds, for at most `secs` seconds (a bound, not a timing claim).
fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if f() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The build is started with default signal dispositions: run from a shell's background
/// job without job control (`cargo test ... &` in a script), the suite, and the build
/// with it, inherited SIGINT ignored, the SIGINT did nothing and the test hung. SIGINT
/// and SIGTERM end the build through its error path, the RUN with it, and it dies of the
/// signal (a shell's `$?` is 130, 143) with no scratch directory left; SIGKILL ends the
/// RUN through ch-run's parent-death signal.
#[test]
fn killed_build_leaves_no_run_process_behind() {
    use std::os::unix::process::ExitStatusExt;
    let b = Bench::checked_out("build-kill");
    for (i, (sig, n)) in [("TERM", 15), ("INT", 2), ("KILL", 9)].iter().enumerate() {
        // Unique sleep lengths mark this test's processes: a detached one, a background
        // one and the command itself, which ignores SIGINT and SIGTERM.
        let m = format!("7{}{i}", std::process::id());
        let df = format!(
            "FROM busybox\nRUN (sleep {m}1 &); sleep {m}2 & trap '' INT TERM; sleep {m}3\n"
        );
        let mut c = crate::common::with_default_signals(&b.build_cmd(&format!("k{i}"), &df, &[]));
        c.stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = crate::common::Reaped(c.spawn().expect("spawn build"));
        assert!(
            eventually(120, || {
                let p = processes_with(&format!("sleep {m}"));
                (1..=3).all(|n| p.iter().any(|l| l.contains(&format!(": sleep {m}{n}"))))
            }),
            "RUN did not start: {:?}",
            processes_with(&m)
        );
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(child.0.id().to_string())
            .status()
            .expect("kill");
        assert!(st.success());
        let status = child.0.wait().expect("wait for the build");
        assert_eq!(status.signal(), Some(*n), "after SIG{sig}: {status}");
        assert!(
            eventually(30, || processes_with(&m).is_empty()),
            "after SIG{sig}, still running: {:?}",
            processes_with(&m)
        );
        if *sig != "KILL" {
            let tmp: Vec<_> = std::fs::read_dir(b.storage().join("tmp"))
                .expect("read tmp")
                .collect();
            assert!(tmp.is_empty(), "after SIG{sig}: {tmp:?}");
        }
    }
    b.build("after", "FROM busybox\nRUN echo ok > /ok\n", &[]);
    b.fsck();
}

/// A build started with SIGINT ignored (by a shell, for a background job without job
/// control) keeps it ignored, as Charliecloud's ch-image (Python) does: the SIGINT that
/// a ^C on the terminal would send is not the job's.
#[test]
fn build_started_with_sigint_ignored_is_not_stopped_by_it() {
    let b = Bench::checked_out("build-sigign");
    let m = format!("6{}", std::process::id());
    let df = format!("FROM busybox\nRUN sh -c 'sleep 2; echo done > /done' x{m}\n");
    let mut c = crate::common::with_signals(&b.build_cmd("ign", &df, &[]), "--ignore-signal=INT");
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = crate::common::Reaped(c.spawn().expect("spawn build"));
    let pid = child.0.id();
    assert!(
        eventually(120, || processes_with(&format!("x{m}")).len() > 1),
        "RUN did not start"
    );
    crate::common::send("INT", pid);
    let status = child.0.wait().expect("wait for the build");
    assert!(status.success(), "{status}");
    assert_eq!(b.run("ign", "cat /done"), "done\n");
}

/// Regression: a COPY whose source is missing was reported before its step's line (the
/// line comes once the cache key is known, which needs the sources), so the log did not
/// show which step failed but through the error's `Dockerfile:N`.
#[test]
fn missing_copy_source_is_reported_after_its_step_s_line() {
    let b = Bench::checked_out("build-copy-missing");
    let (_, err) = b.build_fails("m", "FROM busybox\nCOPY nothere /x\n", &[]);
    let line = err.find("2. COPY nothere /x");
    let error = err.find("Dockerfile:2: COPY");
    assert!(line.is_some() && error.is_some() && line < error, "{err}");
}

#[test]
fn add_archive_member_with_dotdot_is_refused_naming_it() {
    let b = Bench::checked_out("build-add-evil");
    let mut h = tar::Header::new_ustar();
    h.as_ustar_mut().expect("ustar").name[..10].copy_from_slice(b"../escaped");
    h.set_size(4);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut data = h.as_bytes().to_vec();
    data.extend_from_slice(b"evil");
    data.resize(data.len() + 508 + 1024, 0);
    std::fs::write(b.ctx.join("evil.tar"), &data).expect("write");
    crate::common::own(&b.ctx);
    let (_, err) = b.build_fails("a", "FROM busybox\nADD evil.tar /d/\n", &[]);
    assert!(
        err.contains("unsafe member in archive") && err.contains("../escaped: its path has a `..`"),
        "{err}"
    );
}

#[test]
fn run_line_too_long_for_execve_says_so() {
    let b = Bench::checked_out("build-e2big");
    let df = format!(
        "FROM busybox\nRUN echo {} > /dev/null\n",
        "x".repeat(200_000)
    );
    let (_, err) = b.build_fails("e", &df, &[]);
    assert!(err.contains("too long for execve"), "{err}");
    assert!(err.contains("script"), "{err}");
}

#[test]
fn dockerfile_that_is_a_device_is_refused() {
    let b = Bench::checked_out("build-devzero");
    let mut c = bounded_image(&b);
    c.args(["build", "-t", "z", "-f", "/dev/zero"]).arg(&b.ctx);
    let (_, err) = fails(&mut c);
    assert!(err.contains("/dev/zero: not a regular file"), "{err}");
}

#[test]
fn read_only_storage_is_named_in_the_error() {
    let b = Bench::checked_out("build-rostore");
    sh(&format!("chmod -R a-w '{}'", b.storage().display()));
    let (_, err) = b.build_fails("r", "FROM busybox\nRUN true\n", &[]);
    sh(&format!("chmod -R u+w '{}'", b.storage().display()));
    assert!(
        err.contains(&format!(
            "storage directory is read-only (not writable by you): {}",
            b.storage().display()
        )),
        "{err}"
    );
}

#[test]
fn dry_run_prints_the_plan_with_keys_on_stdout_and_executes_nothing() {
    let b = Bench::checked_out("build-plan");
    let df = "ARG V=1\nFROM busybox\nRUN echo $V > /x\nUSER nobody\nENV A=b\n";
    b.build("d", df, &[]);
    let history = ok(b.image().args(["history", "--json", "d"]));
    let history: serde_json::Value = serde_json::from_str(&history).expect("history JSON");
    let key_of = |ins: &str| {
        history
            .as_array()
            .expect("history is a list")
            .iter()
            .find(|s| s["instruction"] == ins)
            .and_then(|s| s["key"].as_str())
            .unwrap_or_else(|| panic!("no key for {ins}: {history}"))
            .to_string()
    };
    let (run_key, env_key) = (key_of("RUN echo $V > /x"), key_of("ENV A=b"));
    // The same RUN (a hit), then an ENV that differs (a miss).
    let df2 = "ARG V=1\nFROM busybox\nRUN echo $V > /x\nUSER nobody\nENV A=c\n";
    let out = output(&mut b.build_cmd("e", df2, &["--dry-run"]));
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Vec<&str>> = stdout.lines().map(|l| l.splitn(4, ' ').collect()).collect();
    let shape: Vec<(&str, &str, &str)> = lines.iter().map(|l| (l[0], l[1], l[3])).collect();
    assert_eq!(
        shape,
        [
            ("1", "global", "ARG V=1"),
            ("2", "base", "FROM busybox"),
            ("3", "hit", "RUN echo $V > /x"),
            ("4", "ignored", "USER nobody"),
            ("5", "miss", "ENV A=c"),
        ],
        "{stdout}"
    );
    assert_eq!(lines[0][2], "-");
    assert_eq!(
        lines[2][2], run_key,
        "the hit's key is the one the build recorded"
    );
    assert_eq!(lines[3][2], run_key, "an ignored instruction keeps the key");
    assert_ne!(lines[4][2], env_key);
    assert_eq!(lines[4][2].len(), 64);
    let list = ok(b.image().arg("list"));
    assert!(
        !list.lines().any(|l| l == "e"),
        "a dry run writes no image: {list}"
    );
}

#[test]
fn a_failed_instruction_reports_its_line_and_then_its_cause() {
    let b = Bench::checked_out("build-cause");
    let (_, err) = b.build_fails("c", "FROM busybox\nCOPY missing /x\n", &[]);
    let lines: Vec<&str> = err.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("error: ") && l.ends_with("Dockerfile:2: COPY"))
        .unwrap_or_else(|| panic!("no error line naming the instruction: {err}"));
    let cause = lines.get(at + 1).copied().unwrap_or("");
    assert!(
        cause.starts_with("  caused by: ") && cause.contains("missing"),
        "{err}"
    );
}

// ---- why a step missed (`--explain`, `history --why`) ----

/// The `why:` lines of a build log.
fn whys(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.trim_start().strip_prefix("why: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn explain_names_the_changed_context_file() {
    let b = Bench::checked_out("build-why-file");
    b.write("f", "1\n");
    b.write("g", "1\n");
    let df = "FROM busybox\nRUN echo a > /a\nCOPY f g /d/\nRUN echo b > /b\n";
    b.build("c", df, &[]);
    b.write("g", "2\n");
    let log = b.build("c", df, &["--explain"]);
    assert_eq!(marks(&log), "*..");
    assert_eq!(
        whys(&log),
        [
            "context file changed: g",
            "no entry for this parent (an earlier step of this stage was not in the cache)"
        ],
        "{log}"
    );
    // An all-hit rebuild has nothing to explain.
    let log = b.build("c", df, &["--explain"]);
    assert_eq!(marks(&log), "***");
    assert!(whys(&log).is_empty(), "{log}");
}

#[test]
fn explain_counts_changed_files_beyond_the_first_three() {
    let b = Bench::checked_out("build-why-many");
    for f in ["a", "b", "c", "d", "e"] {
        b.write(&format!("dir/{f}"), "1\n");
    }
    let df = "FROM busybox\nCOPY dir /dir\n";
    b.build("c", df, &[]);
    for f in ["a", "b", "c", "d", "e"] {
        b.write(&format!("dir/{f}"), "2\n");
    }
    let log = b.build("c", df, &["--explain"]);
    // The directory's own mtime may change too: count at least the five files.
    let w = whys(&log);
    assert_eq!(w.len(), 1, "{log}");
    assert!(w[0].starts_with("context files changed: "), "{log}");
    assert!(w[0].contains(" more"), "{log}");
}

#[test]
fn explain_names_a_changed_build_argument() {
    let b = Bench::checked_out("build-why-arg");
    let df = "FROM busybox\nARG V\nRUN echo $V > /v\n";
    b.build("c", df, &["--build-arg", "V=1"]);
    let log = b.build("c", df, &["--build-arg", "V=2", "--explain"]);
    assert_eq!(marks(&log), "..");
    assert_eq!(whys(&log)[0], "build argument changed: V", "{log}");
}

#[test]
fn explain_says_the_instruction_text_changed_and_verbose_says_it_too() {
    let b = Bench::checked_out("build-why-text");
    b.build("c", "FROM busybox\nRUN echo a > /a\n", &[]);
    let log = b.build("c", "FROM busybox\nRUN echo c > /a\n", &["-v"]);
    assert_eq!(
        whys(&log),
        ["instruction text changed (cached: RUN echo a > /a)"],
        "{log}"
    );
    // Without --explain or -v, no reasons are printed.
    let log = b.build("c", "FROM busybox\nRUN echo d > /a\n", &[]);
    assert!(whys(&log).is_empty(), "{log}");
}

#[test]
fn explain_says_no_entry_for_a_new_parent_and_names_a_changed_base() {
    let b = Bench::checked_out("build-why-parent");
    b.build("base", "FROM busybox\nRUN echo 1 > /base\n", &[]);
    let df = "FROM base\nRUN echo x > /x\n";
    let log = b.build("c", df, &["--explain"]);
    assert_eq!(
        whys(&log),
        ["first build (no earlier build of c or of this Dockerfile)"],
        "{log}"
    );
    b.build("base", "FROM busybox\nRUN echo 2 > /base\n", &[]);
    let log = b.build("c", df, &["--explain"]);
    let w = whys(&log);
    assert_eq!(w.len(), 1, "{log}");
    assert!(
        w[0].starts_with("no entry for this parent: base image base changed (was commit "),
        "{log}"
    );
}

#[test]
fn history_why_says_afterwards_why_each_step_ran() {
    let b = Bench::checked_out("build-why-history");
    b.write("f", "1\n");
    b.build("c", CACHED, &[]);
    b.write("f", "2\n");
    b.build("c", CACHED, &[]);
    let out = ok(b.image().args(["history", "--why", "c"]));
    let want = "  2 hit RUN echo a > /a\n  3 run COPY f /f\n        why: context file changed: f\n  4 run RUN echo b > /b\n        why: no entry for this parent (an earlier step of this stage was not in the cache)\n";
    assert_eq!(out, want);
    let json = ok(b.image().args(["history", "--why", "--json", "c"]));
    assert!(json.contains("\"context file changed: f\""), "{json}");
}

/// A CI loop: one file changed per rebuild, more rebuilds than a miss compares entries
/// (why::MAX_COMPARED). The closest entry is the last build's (one file apart), and it is
/// among those compared: the most recently used (commit times are fixed, so they cannot
/// tell entries apart).
#[test]
fn explain_after_many_rebuilds_compares_the_latest_entry() {
    let b = Bench::checked_out("build-why-many");
    let df = "FROM busybox\nCOPY d /d/\n";
    for i in 0..24 {
        b.write(&format!("d/f{i}"), "0\n");
    }
    b.build("c", df, &[]);
    for i in 0..24 {
        b.write(&format!("d/f{i}"), "1\n");
        let log = b.build("c", df, &["--explain"]);
        assert_eq!(
            whys(&log),
            [format!("context file changed: d/f{i}")],
            "rebuild {i}: {log}"
        );
    }
}

#[test]
fn history_why_compares_afterwards_when_the_build_did_not_record_why() {
    let b = Bench::checked_out("build-why-rebuild");
    let df = "FROM busybox\nCOPY f /f\nRUN echo b > /b\n";
    b.write("f", "1\n");
    b.build("c", df, &[]);
    b.write("f", "2\n");
    // --rebuild reads no cache, so the build records no reasons, but its note records
    // the mode, which history --why gives as the build log did.
    let log = b.build("c", df, &["--rebuild", "--explain"]);
    assert_eq!(whys(&log), ["cache not read (--rebuild)"; 2], "{log}");
    let out = ok(b.image().args(["history", "--why", "c"]));
    let want = "  2 run COPY f /f\n        why: cache not read (--rebuild)\n  3 run RUN echo b > /b\n        why: cache not read (--rebuild)\n";
    assert_eq!(out, want);
    // A note without the mode (an earlier Grove's): compared afterwards.
    let commit = b.git(&["rev-parse", "refs/grove/img/c+latest"]);
    let commit = commit.trim();
    let mut note: serde_json::Value =
        serde_json::from_str(&b.git(&["notes", "--ref=grove", "show", commit])).unwrap();
    note.as_object_mut().unwrap().remove("cache");
    let path = b.s.join("note.json");
    std::fs::write(&path, note.to_string()).unwrap();
    own(&path);
    b.git(&[
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "notes",
        "--ref=grove",
        "add",
        "-f",
        "-F",
        path.to_str().unwrap(),
        commit,
    ]);
    let out = ok(b.image().args(["history", "--why", "c"]));
    // The RUN's parent is the new COPY commit: nothing else starts from it.
    let want = "  2 run COPY f /f\n        why: context file changed: f (compared now)\n  3 run RUN echo b > /b\n        why: no other entry for this parent\n";
    assert_eq!(out, want);
}

// ---- COPY after a change: only what changed is written (issue 13) ----

/// The commit of the step of image `tag` whose instruction is `text`.
fn step_commit(b: &Bench, tag: &str, text: &str) -> String {
    let log = b.git(&[
        "log",
        "--format=%H %s",
        &format!("refs/grove/img/{tag}+latest"),
    ]);
    log.lines()
        .find_map(|l| {
            l.split_once(' ')
                .filter(|(_, s)| *s == text)
                .map(|(c, _)| c.to_string())
        })
        .unwrap_or_else(|| panic!("no step {text:?} in {log}"))
}

#[test]
fn copy_after_one_changed_file_writes_that_file_alone_and_gives_the_full_copys_tree() {
    let b = Bench::checked_out("build-copy-delta");
    for i in 0..200 {
        b.write(&format!("d/f{i}"), &format!("file {i}\n"));
    }
    b.write("d/sub/g", "g\n");
    std::os::unix::fs::symlink("f1", b.ctx.join("d/ln")).expect("symlink");
    let df = "FROM busybox\nCOPY d /dst/\nRUN cat /dst/f7 /dst/sub/g > /both\n";
    let cold = b.build("t", df, &["-vv"]);
    assert!(
        cold.contains("COPY: wrote 204 entries (full copy)"),
        "{cold}"
    );

    // One changed file: the layer holds it and the directory above it, over the first
    // build's layer; RUN and `ch-run NAME` see the union.
    b.write("d/f7", "changed\n");
    let log = b.build("t", df, &["-vv"]);
    assert!(
        log.contains("COPY: wrote 2 entries (1 changed) over layer"),
        "{log}"
    );
    assert_eq!(b.run("t", "cat /both"), "changed\ng\n");
    assert_eq!(b.run("t", "cat /dst/f8; ls /dst | wc -l"), "file 8\n202\n");
    // A second change and a new file (its directory's time changes too): a delta over
    // the delta (two base layers).
    std::thread::sleep(Duration::from_millis(1100));
    b.write("d/sub/g", "g2\n");
    b.write("d/sub/h", "h\n");
    let log = b.build("t", df, &["-vv"]);
    assert!(
        log.contains("COPY: wrote 4 entries (3 changed) over layer"),
        "{log}"
    );
    assert_eq!(b.run("t", "cat /both /dst/sub/h"), "changed\ng2\nh\n");
    // A symlink's target, a file's mode: a third delta.
    std::fs::remove_file(b.ctx.join("d/ln")).expect("remove symlink");
    std::os::unix::fs::symlink("f2", b.ctx.join("d/ln")).expect("symlink");
    let mut perm = std::fs::metadata(b.ctx.join("d/f9"))
        .expect("stat")
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o751);
    std::fs::set_permissions(b.ctx.join("d/f9"), perm).expect("chmod");
    let log = b.build("t", df, &["-vv"]);
    assert!(log.contains(" changed) over layer"), "{log}");
    assert_eq!(
        b.run("t", "readlink /dst/ln; stat -c %a /dst/f9 /dst/f8"),
        "f2\n751\n644\n"
    );
    let delta = step_commit(&b, "t", "COPY d /dst/");

    // The same commit (tree, modes, times, metadata) as a full copy of the same context.
    b.build("t", df, &["--rebuild", "-vv"]);
    assert_eq!(step_commit(&b, "t", "COPY d /dst/"), delta);

    // Garbage collection keeps the base layers a kept delta layer needs.
    ok(b.image().args(["build-cache", "--gc"]));
    assert_eq!(
        b.run("t", "cat /dst/f7 /dst/f8 /dst/sub/g"),
        "changed\nfile 8\ng2\n"
    );
    let fsck = ok(b.image().arg("fsck"));
    assert!(!fsck.contains("problem"), "{fsck}");
    b.fsck();
}

/// Regression: the entry a COPY's delta layer goes over was looked for among the 8 most
/// recently used entries on its parent of any instruction, so RUN entries made on the same
/// base since hid it and the COPY wrote every file again.
#[test]
fn copy_finds_its_delta_base_behind_newer_entries_of_other_instructions() {
    let b = Bench::checked_out("build-copy-delta-busy");
    for i in 0..50 {
        b.write(&format!("d/f{i}"), &format!("file {i}\n"));
    }
    let df = "FROM busybox\nCOPY d /dst/\n";
    let cold = b.build("t", df, &["-vv"]);
    assert!(
        cold.contains("COPY: wrote 51 entries (full copy)"),
        "{cold}"
    );
    // More RUN entries on busybox than a miss compares (8), each used after the COPY's.
    for i in 0..9 {
        b.build(
            &format!("r{i}"),
            &format!("FROM busybox\nRUN echo {i} > /f\n"),
            &[],
        );
    }
    b.write("d/f7", "changed\n");
    let log = b.build("t", df, &["-vv"]);
    assert!(
        log.contains("COPY: wrote 2 entries (1 changed) over layer"),
        "{log}"
    );
    assert_eq!(b.run("t", "cat /dst/f7 /dst/f8"), "changed\nfile 8\n");
}

#[test]
fn copy_after_a_context_file_is_removed_copies_everything_again() {
    let b = Bench::checked_out("build-copy-delta-gone");
    for i in 0..20 {
        b.write(&format!("d/f{i}"), &format!("file {i}\n"));
    }
    let df = "FROM busybox\nCOPY d /dst/\nRUN ls /dst | wc -l > /n\n";
    b.build("t", df, &[]);
    std::fs::remove_file(b.ctx.join("d/f3")).expect("remove context file");
    let log = b.build("t", df, &["-vv"]);
    // A layer over the first one would still show f3.
    assert!(log.contains("COPY: wrote 20 entries (full copy)"), "{log}");
    assert_eq!(
        b.run("t", "cat /n; test ! -e /dst/f3 && echo gone"),
        "19\ngone\n"
    );
}

/// `COPY --from` read each file's blob whole into memory: a big file in the other stage
/// cost its size in memory. It is streamed now, as a checkout streams it.
#[test]
fn copy_from_an_image_streams_a_big_file_with_bounded_memory() {
    let b = Bench::checked_out("build-copy-from-big");
    let tar = b.s.join("sparse.tar");
    sh(&format!(
        "cd {d} && mkdir src && truncate -s 160M src/big && printf end >> src/big && \
         tar -C src --sparse -cf {t} .",
        d = b.s.path.display(),
        t = tar.display()
    ));
    ok(b.image().arg("import").arg(&tar).arg("sparse"));
    b.write(
        "Dockerfile",
        "FROM sparse AS big\nFROM busybox\nCOPY --from=big /big /big\n",
    );
    let st = b.storage();
    let (kb, _) = crate::common::max_rss_kib(
        "ch-image",
        &[
            "-s".as_ref(),
            st.as_os_str(),
            "build".as_ref(),
            "-t".as_ref(),
            "copied".as_ref(),
            b.ctx.as_os_str(),
        ],
    );
    eprintln!("COPY --from of a 160 MiB sparse file: max RSS {kb} KiB");
    assert!(
        kb < 100 * 1024,
        "COPY --from of a 160 MiB file used {kb} KiB"
    );
    assert_eq!(
        b.run("copied", "wc -c < /big; tail -c 3 /big"),
        "167772163\nend"
    );
}

/// Regression: a RUN's command started with SIGINT and SIGTERM blocked (the build blocks
/// them to end through its error path, and the standard library passes a child the
/// spawning thread's mask): `timeout 1 sleep 4` ran four seconds and exited 0, and
/// `kill $pid` of a background job did nothing. Charliecloud's RUN (Python's subprocess)
/// starts with nothing blocked; so does Grove's now.
#[test]
fn run_command_gets_signals_as_a_shell_s_would() {
    let b = Bench::new("run-sigmask");
    let df = "FROM busybox\n\
              RUN grep SigBlk /proc/self/status > /blocked; \
              sleep 20 & kill -TERM $!; wait $!; echo $? > /killed; \
              timeout 1 sleep 20; echo $? > /timeout\n";
    b.build("m", df, &[]);
    assert_eq!(
        b.run("m", "cat /blocked /killed /timeout"),
        "SigBlk:\t0000000000000000\n143\n143\n"
    );
}
