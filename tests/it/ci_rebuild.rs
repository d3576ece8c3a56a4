//! CI systems that rebuild images incrementally, through the real binaries: repeated
//! builds of one Dockerfile with small changes between runs (a checkout touching the
//! context), where each rebuild must run exactly the steps whose result changes.

use crate::common::{marks, ok, output, sh, unpriv, Bench};

/// The context directory's modification time, in seconds, as `stat` reads it.
fn mtime_of(p: &std::path::Path) -> String {
    let out = sh(&format!("stat -c %Y '{}'", p.display()));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn copy_of_the_context_into_a_directory_the_image_has_ignores_the_context_directory_s_time() {
    let b = Bench::checked_out("ci-ctxtime");
    b.write("src/main.c", "int main(void) { return 0; }\n");
    // Bench::build writes the Dockerfile on every build (a new mtime): left out.
    b.write(".dockerignore", "*.log\nDockerfile\n");
    // The destinations exist in the image: /app (WORKDIR made it), /empty (a directory
    // with no file below it, which only the image's metadata records), /link (a symlink to
    // /app); /new is created by its COPY, which gives it the context directory's mode and
    // time, so that one must run again.
    let df = "FROM busybox\n\
              WORKDIR /app\n\
              RUN mkdir /empty && ln -s /app /link\n\
              COPY . /app/\n\
              COPY . /empty/\n\
              COPY . /link/\n\
              RUN ls /app > /listing\n\
              COPY . /new/\n";
    let ctx = b.ctx.display().to_string();
    sh(&format!("touch -d '2001-02-03 04:05:06' '{ctx}'"));
    assert_eq!(marks(&b.build("app", df, &[])), ".......");
    // What a CI checkout does at the context's top: a file excluded by .dockerignore
    // added, one replaced by rename; the context directory's time changes each time.
    for (i, script) in [
        "echo x > build.log",
        "echo y > .tmp && mv .tmp build.log",
        "rm build.log",
    ]
    .iter()
    .enumerate()
    {
        sh(&format!(
            "cd '{ctx}' && {script} && touch -d '2002-0{}-03 04:05:06' .",
            i + 1
        ));
        let log = b.build("app", df, &[]);
        assert_eq!(marks(&log), "******.", "after `{script}`:\n{log}");
        assert_eq!(
            b.run("app", "stat -c %Y /new"),
            format!("{}\n", mtime_of(&b.ctx)),
            "after `{script}`"
        );
    }
    assert_eq!(
        b.run("app", "stat -c %Y /app"),
        b.run("app", "stat -c %Y /link/.")
    );
    assert_eq!(b.run("app", "cat /listing"), "src\n");
    // A file the copy takes changes the key, as always.
    b.write("src/main.c", "int main(void) { return 1; }\n");
    assert_eq!(marks(&b.build("app", df, &[])), "**.....");
    b.fsck();
}

#[test]
fn copy_parents_runs_again_when_a_directory_it_makes_changed() {
    // `COPY --parents a/b/c.txt /d/` makes /d/a and /d/a/b with the context's modes and
    // times, so those are inputs: a cache hit gave the image the old time of a/b.
    let b = Bench::checked_out("ci-parents");
    b.write("a/b/c.txt", "c\n");
    let df = "FROM busybox\nCOPY --parents a/b/c.txt /d/\n";
    let ab = b.ctx.join("a/b");
    sh(&format!(
        "touch -d '2001-02-03 04:05:06' '{}'",
        ab.display()
    ));
    assert_eq!(marks(&b.build("p", df, &[])), ".");
    assert_eq!(marks(&b.build("p", df, &[])), "*");
    sh(&format!(
        "touch '{}/new' && touch -d '2002-02-03 04:05:06' '{}'",
        ab.display(),
        ab.display()
    ));
    let log = b.build("p", df, &["--explain"]);
    assert_eq!(marks(&log), ".", "{log}");
    assert!(log.contains("why: context file changed: a/b"), "{log}");
    assert_eq!(
        b.run("p", "stat -c %Y /d/a/b"),
        format!("{}\n", mtime_of(&ab))
    );
    sh(&format!("chmod 0700 '{}'", b.ctx.join("a").display()));
    assert_eq!(marks(&b.build("p", df, &[])), ".");
    assert_eq!(b.run("p", "stat -c %a /d/a"), "700\n");
    assert_eq!(marks(&b.build("p", df, &[])), "*");
}

#[test]
fn copy_from_a_stage_hits_after_a_stage_that_copied_the_context_into_its_workdir() {
    // The second stage's `COPY --from` took the first stage's last COPY's note that its
    // key left a directory's time out, and so got another key on every all-hit rebuild.
    let b = Bench::checked_out("ci-fromstage");
    b.write("src/f", "f\n");
    b.write(".dockerignore", "Dockerfile\n");
    let df = "FROM busybox AS build\n\
              WORKDIR /src\n\
              COPY . /src/\n\
              FROM busybox\n\
              COPY --from=build /src/src/f /opt/\n";
    assert_eq!(marks(&b.build("two", df, &[])), "...");
    assert_eq!(marks(&b.build("two", df, &[])), "***");
    assert_eq!(b.run("two", "cat /opt/f"), "f\n");
}

#[test]
fn a_second_runner_s_own_checkout_hits_the_fetched_cache_with_source_date_epoch() {
    // Runner B fetches runner A's cache, and builds its own clone of the same commit,
    // whose files have the time of that clone. With SOURCE_DATE_EPOCH (the commit's
    // time) every time later than it is clamped to it in the image, so the key holds the
    // clamped time and the COPY is a hit; it ran again on every runner before.
    let sde = ["--build-arg", "SOURCE_DATE_EPOCH=1500000000"];
    let df = "FROM busybox\nWORKDIR /src\nCOPY src/ /src/\nRUN cat /src/main.c > /out\n";
    let a = Bench::checked_out("ci-runner-a");
    a.write("src/main.c", "int main(void) { return 0; }\n");
    a.write("src/README", "a project\n");
    let checkout = |ctx: &std::path::Path, when: &str| {
        sh(&format!(
            "find '{}' -exec touch -h -d '{when}' {{}} +",
            ctx.join("src").display()
        ));
    };
    checkout(&a.ctx, "2020-01-01 10:00:00.25");
    assert_eq!(marks(&a.build("app", df, &sde)), "...");
    assert_eq!(marks(&a.build("plain", df, &[])), "...");
    let remote = a.s.join("cache.git");
    ok(unpriv("git").args(["init", "-q", "--bare"]).arg(&remote));
    ok(a.image().args(["build-cache", "push"]).arg(&remote));

    let b = Bench::new("ci-runner-b");
    b.write("src/main.c", "int main(void) { return 0; }\n");
    b.write("src/README", "a project\n");
    checkout(&b.ctx, "2021-06-01 12:00:00.75");
    ok(b.image().args(["build-cache", "fetch"]).arg(&remote));
    let log = b.build("app", df, &sde);
    assert_eq!(marks(&log), "***", "{log}");
    assert_eq!(b.image_commit("app"), a.image_commit("app"));
    assert_eq!(b.run("app", "stat -c %Y /src/main.c"), "1500000000\n");
    // Without it the files' own times are the image's (as in Charliecloud): the COPY
    // of the later checkout runs again.
    assert_eq!(marks(&b.build("plain", df, &[])), "*..");
    b.fsck();
}

#[test]
fn run_with_a_context_bind_mount_ignores_the_context_directory_s_time() {
    // With a .dockerignore the mount is a copy without the excluded files; its top
    // directory took the context directory's time, which every file added at the top
    // changes (even an excluded one), and the key held it: the RUN ran again.
    let b = Bench::checked_out("ci-bindtime");
    b.write("src/main.c", "int main(void) { return 0; }\n");
    b.write(".dockerignore", "*.log\nDockerfile\n");
    let df = "FROM busybox\n\
              RUN --mount=type=bind,target=/ctx ls -a /ctx > /default\n\
              RUN --mount=type=bind,source=.,target=/ctx stat -c %Y /ctx > /top\n\
              RUN --mount=type=bind,source=.,target=/ctx,rw ls /ctx > /rw\n";
    let ctx = b.ctx.display().to_string();
    sh(&format!(
        "cd '{ctx}' && touch -d @946684800 .dockerignore && \
         touch -d @959817600 src && touch -d '2001-02-03 04:05:06' ."
    ));
    assert_eq!(marks(&b.build("bind", df, &[])), "...");
    let top = b.run("bind", "cat /top");
    for (i, script) in ["echo x > build.log", "rm build.log"].iter().enumerate() {
        sh(&format!(
            "cd '{ctx}' && {script} && touch -d '2002-0{}-03 04:05:06' .",
            i + 1
        ));
        let log = b.build("bind", df, &["--explain"]);
        assert_eq!(marks(&log), "***", "after `{script}`:\n{log}");
    }
    // What the RUN saw of the top is no longer the context's time but its newest entry's.
    assert_eq!(top, "959817600\n");
    assert_eq!(b.run("bind", "cat /default"), ".\n..\n.dockerignore\nsrc\n");
    // A file the mount shows changes the key, as always.
    b.write("src/main.c", "int main(void) { return 1; }\n");
    assert_eq!(marks(&b.build("bind", df, &[])), "...");
    // So does the top's mode, which the RUN sees.
    sh(&format!("chmod 0750 '{ctx}'"));
    assert_eq!(marks(&b.build("bind", df, &[])), "...");
    b.fsck();
}

#[test]
fn explain_of_a_first_build_says_so_and_cites_only_the_image_s_own_entries() {
    // A first build was compared with whatever entry of the same keyword another image had
    // made on the parent ("instruction text changed (cached: RUN echo a > /f)").
    let b = Bench::new("ci-firstwhy");
    let first = "why: first build (no earlier build of app or of this Dockerfile)";
    b.build("other", "FROM busybox\nRUN echo a > /f\n", &[]);
    let log = b.build(
        "app",
        "FROM busybox\nRUN echo b0 > /f\nRUN echo x\n",
        &["--explain"],
    );
    assert_eq!(marks(&log), "..", "{log}");
    assert_eq!(log.matches(first).count(), 2, "{log}");
    assert!(!log.contains("cached:"), "{log}");
    // More entries on the same parent by other images than a miss compares (8), newer
    // than the image's own: the one compared is still the image's, under another tag.
    for i in 0..9 {
        b.build(
            &format!("o{i}"),
            &format!("FROM busybox\nRUN echo {i} > /f\n"),
            &[],
        );
    }
    let df = "FROM busybox\nRUN echo b1 > /f\nRUN echo x\n";
    let log = b.build("app:v2", df, &["--explain"]);
    assert!(
        log.contains("why: instruction text changed (cached: RUN echo b0 > /f)"),
        "{log}"
    );
    // The same Dockerfile under a new name is that Dockerfile's earlier state too.
    let log = b.build("renamed", df, &["--explain", "--force=none"]);
    assert!(log.contains("why: build option changed: --force"), "{log}");
    assert!(!log.contains("first build"), "{log}");
}

#[test]
fn two_builds_missing_the_same_step_at_once_run_it_once() {
    // Two CI jobs of one commit on one runner: both missed the RUN, both ran it, and the
    // entry of one of them was replaced by the other's (an orphaned result).
    let b = Bench::new("ci-concurrent");
    // The RUN's /tmp is the host's: a release file there ends the RUN that runs.
    let release = format!("/tmp/grove-ci-concurrent-{}", std::process::id());
    let _ = std::fs::remove_file(&release);
    let df = format!(
        "FROM busybox\nRUN while [ ! -e {release} ]; do sleep 0.05; done; date +%s%N > /made\nRUN echo next\n"
    );
    b.write("Dockerfile", &df);
    let spawn = |tag: &str| {
        let err = b.s.join(format!("{tag}.log"));
        let mut c = b.image();
        c.args(["build", "-t", tag])
            .arg(&b.ctx)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&err).expect("create log"));
        (crate::common::Reaped(c.spawn().expect("spawn build")), err)
    };
    let (mut one, one_log) = spawn("one");
    let (mut two, two_log) = spawn("two");
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    let waiting = "  2  waiting for another build running this step";
    crate::common::wait_for("one build to wait for the other's step", 60, || {
        read(&one_log).contains(waiting) || read(&two_log).contains(waiting)
    });
    std::fs::write(&release, "").expect("release");
    assert!(one.0.wait().expect("wait").success(), "{}", read(&one_log));
    assert!(two.0.wait().expect("wait").success(), "{}", read(&two_log));
    let _ = std::fs::remove_file(&release);
    // Each step ran in exactly one of the two builds and was a hit in the other. Which
    // build runs the last RUN is a race once the waiting one has its hit: either
    // (`..` and `**`, or `.*` and `*.`).
    let m = [marks(&read(&one_log)), marks(&read(&two_log))];
    let ran: Vec<usize> = (0..2)
        .map(|step| {
            m.iter()
                .filter(|x| x.as_bytes().get(step) == Some(&b'.'))
                .count()
        })
        .collect();
    assert!(
        m.iter().all(|x| x.len() == 2) && ran == [1, 1],
        "{m:?}\n{}\n{}",
        read(&one_log),
        read(&two_log)
    );
    assert_eq!(b.image_commit("one"), b.image_commit("two"));
    // One entry per step: the two RUNs'.
    let refs = b.git(&["for-each-ref", "refs/grove/cache/"]);
    assert_eq!(refs.lines().count(), 2, "{refs}");
    // The key locks are files in locks/; a writer alone removes them.
    let key_locks = || {
        std::fs::read_dir(b.storage().join("locks"))
            .expect("locks/")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("=key="))
            .count()
    };
    assert_eq!(key_locks(), 2);
    let log = b.build("three", &df, &[]);
    assert_eq!(marks(&log), "**", "{log}");
    assert_eq!(key_locks(), 0);
    b.fsck();
}

#[test]
fn a_second_runner_s_own_checkout_hits_a_run_with_a_context_bind_mount_with_source_date_epoch() {
    // The bind mount's key held its files' own times, not clamped as COPY's are: the RUN
    // ran again on every runner whose checkout was made later (found in a CI loop of two
    // runners sharing the cache, SOURCE_DATE_EPOCH set from the commit).
    let sde = ["--build-arg", "SOURCE_DATE_EPOCH=1500000000"];
    let df = "FROM busybox\n\
              RUN --mount=type=bind,source=t,target=/t stat -c '%n %Y' /t /t/a.t > /seen\n";
    let checkout = |b: &Bench, when: &str| {
        b.write("t/a.t", "ok 1\n");
        sh(&format!(
            "find '{}' -exec touch -h -d '{when}' {{}} +",
            b.ctx.display()
        ));
    };
    let a = Bench::checked_out("ci-bind-runner-a");
    checkout(&a, "2020-01-01 10:00:00.25");
    assert_eq!(marks(&a.build("app", df, &sde)), ".");
    // What the RUN saw is what the key holds: the times clamped.
    assert_eq!(
        a.run("app", "cat /seen"),
        "/t 1500000000\n/t/a.t 1500000000\n"
    );
    let remote = a.s.join("cache.git");
    ok(unpriv("git").args(["init", "-q", "--bare"]).arg(&remote));
    ok(a.image().args(["build-cache", "push"]).arg(&remote));

    let b = Bench::new("ci-bind-runner-b");
    checkout(&b, "2021-06-01 12:00:00.75");
    ok(b.image().args(["build-cache", "fetch"]).arg(&remote));
    let log = b.build("app", df, &sde);
    assert_eq!(marks(&log), "*", "{log}");
    assert_eq!(b.image_commit("app"), a.image_commit("app"));
    // A file whose content changed still misses.
    b.write("t/a.t", "ok 2\n");
    assert_eq!(marks(&b.build("app", df, &sde)), ".");
}

#[test]
fn a_fetched_runner_keeps_the_checkout_its_builds_start_from() {
    // Runner B's steps come from `build-cache fetch`: none has a kept layer, so a RUN's
    // view is a checkout of the step below it (the WORKDIR's commit here), which no
    // image's link names. The next build's writer, alone on the store, removed it, and
    // each build that ran a step checked it out again (15 s for a Debian base).
    let df = "FROM busybox\nWORKDIR /x\nCOPY f /x/\nRUN true\n";
    let a = Bench::checked_out("ci-fetchview-a");
    a.write("f", "one\n");
    assert_eq!(marks(&a.build("app", df, &[])), "...");
    let remote = a.s.join("cache.git");
    ok(unpriv("git").args(["init", "-q", "--bare"]).arg(&remote));
    ok(a.image().args(["build-cache", "push"]).arg(&remote));

    let b = Bench::new("ci-fetchview-b");
    ok(b.image().args(["build-cache", "fetch"]).arg(&remote));
    let checkouts = b.storage().join("checkouts");
    let inodes = || -> std::collections::BTreeMap<String, u64> {
        use std::os::unix::fs::MetadataExt;
        std::fs::read_dir(&checkouts)
            .expect("read checkouts/")
            .map(|e| {
                let e = e.expect("entry");
                let ino = e.metadata().expect("stat checkout").ino();
                (e.file_name().to_string_lossy().into_owned(), ino)
            })
            .collect()
    };
    // A fresh clone each time: the file's time changes, the COPY and the RUN run.
    let build = |when: &str| {
        b.write("f", "one\n");
        sh(&format!(
            "touch -d '{when}' '{}'",
            b.ctx.join("f").display()
        ));
        b.write("Dockerfile", df);
        let out = output(b.image().args(["-v", "build", "-t", "app"]).arg(&b.ctx));
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let first = build("2021-06-01 12:00:00");
    assert_eq!(marks(&first), "*..", "{first}");
    assert!(first.contains("checked out"), "{first}");
    let before = inodes();
    let second = build("2021-06-02 12:00:00");
    assert_eq!(marks(&second), "*..", "{second}");
    assert!(
        !second.contains("checked out"),
        "the second build checked out again:\n{second}"
    );
    let after = inodes();
    for (name, ino) in &before {
        assert_eq!(
            after.get(name),
            Some(ino),
            "checkouts/{name} was removed or made again: {before:?} -> {after:?}"
        );
    }
    assert_eq!(b.run("app", "cat /x/f"), "one\n");
    b.fsck();
    // Once no image reaches the commit, gc drops its mark and its checkout.
    let views = b.storage().join("views");
    assert!(std::fs::read_dir(&views).expect("read views/").count() > 0);
    ok(b.image().args(["delete", "app"]));
    ok(b.image().args(["build-cache", "--gc"]));
    assert_eq!(std::fs::read_dir(&views).expect("read views/").count(), 0);
    for name in inodes().keys() {
        assert!(!before.contains_key(name), "checkouts/{name} outlived gc");
    }
}
