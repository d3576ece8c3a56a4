//! `RUN --mount` (cache, bind, secret, tmpfs) and `ch-image build --secret`, through the
//! real binaries as the unprivileged test user (docs/dockerfile.md, "RUN --mount").

use crate::common::{fails, marks, ok, output, own, sh, skip, Bench};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

impl Bench {
    /// A build that must fail; returns its stderr.
    fn build_fails_text(&self, tag: &str, df: &str, extra: &[&str]) -> String {
        self.build_fails(tag, df, extra).1
    }

    /// `ch-image diff A B`: what B's files add, remove and change over A's.
    fn diff(&self, a: &str, b: &str) -> String {
        ok(self.image().args(["diff", a, b]))
    }

    /// Every object in the store's repository, as `git cat-file --batch` prints them.
    fn all_objects(&self) -> Vec<u8> {
        let mut c = crate::common::unpriv("git");
        c.arg("-C")
            .arg(self.storage().join("repo.git"))
            .args(["cat-file", "--batch-all-objects", "--batch"])
            .env("HOME", &self.s.path)
            .env("GIT_CONFIG_NOSYSTEM", "1");
        let out = output(&mut c);
        assert!(out.status.success(), "git cat-file failed");
        assert!(!out.stdout.is_empty());
        out.stdout
    }

    /// The cache mount directories under the storage directory.
    fn cache_mounts(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.storage().join("cachemounts"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.ends_with(".lock"))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

pub(crate) fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Every regular file under `dir` whose content contains `needle`.
pub(crate) fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
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
            } else if md.is_file() {
                if let Ok(data) = std::fs::read(&p) {
                    if contains(&data, needle) {
                        found.push(p);
                    }
                }
            }
        }
    }
    found
}

/// SHA-256 of `data` in hex, by the host's sha256sum.
fn sha256(data: &str) -> String {
    use std::io::Write;
    let mut c = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    c.stdin
        .take()
        .expect("stdin")
        .write_all(data.as_bytes())
        .expect("write");
    let out = c.wait_with_output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a hash")
        .to_string()
}

#[test]
fn cache_mount_persists_across_builds_and_images_and_stays_out_of_them() {
    let b = Bench::new("mount-cache");
    // The content is made by the command, so that it is in no Dockerfile.
    let df = "FROM busybox\nRUN --mount=type=cache,id=shared,target=/cache,sharing=locked printf '%s-%s\\n' cache payload >> /cache/f\n";
    let log = b.build("a", df, &[]);
    assert_eq!(marks(&log), ".", "{log}");
    assert_eq!(
        b.run("a", "test -e /cache && echo present || echo absent"),
        "absent\n"
    );
    assert_eq!(
        b.diff("busybox", "a"),
        "",
        "the RUN wrote only to the cache"
    );
    assert_eq!(b.cache_mounts().len(), 1);
    // Not in any object: the image, the layer, the key-input record, the note.
    assert!(!contains(&b.all_objects(), "cache-payload"));
    assert!(files_containing(&b.storage().join("repo.git"), "cache-payload").is_empty());
    assert!(files_containing(&b.storage().join("layers"), "cache-payload").is_empty());
    // Not a key input: the same step is a hit although the cache changed since.
    let log = b.build("a", df, &[]);
    assert_eq!(marks(&log), "*", "{log}");
    // A second build of another image with another target sees what the first wrote.
    let df2 =
        "FROM busybox\nRUN --mount=type=cache,id=shared,target=/var/c wc -l < /var/c/f > /count\n";
    b.build("b", df2, &[]);
    assert_eq!(b.run("b", "cat /count").trim(), "1");
    // The mount point is not in the image, and /var above it kept its mode and time.
    assert_eq!(
        b.run("b", "test -e /var/c && echo present || echo absent"),
        "absent\n"
    );
    let var = "stat -c '%a %Y' /var";
    assert_eq!(b.run("b", var), b.run("busybox", var));
    // A changed step runs again with the cache as the last run left it.
    let df3 = df.replace(">> /cache/f", ">> /cache/f; wc -l < /cache/f > /count");
    b.build("a", &df3, &[]);
    assert_eq!(b.run("a", "cat /count").trim(), "2");
    // The id defaults to the target: another target is another cache.
    let df4 = "FROM busybox\nRUN --mount=type=cache,target=/other ls -A /other | wc -l > /count\n";
    b.build("c", df4, &[]);
    assert_eq!(b.run("c", "cat /count").trim(), "0");
    assert_eq!(b.cache_mounts().len(), 2);
}

#[test]
fn read_only_cache_mount_refuses_writes() {
    let b = Bench::new("mount-cache-ro");
    let df = "FROM busybox\nRUN --mount=type=cache,target=/c,ro touch /c/x\n";
    let err = b.build_fails_text("a", df, &[]);
    assert!(err.contains("Read-only file system"), "{err}");
}

#[test]
fn cache_mount_from_a_stage_starts_with_its_files() {
    let b = Bench::new("mount-cache-from");
    let df = "FROM busybox AS seed\nRUN mkdir /s && echo seeded > /s/f\nFROM busybox\nRUN --mount=type=cache,id=c,target=/c,from=seed,source=/s,mode=0700 cat /c/f > /got && stat -c %a /c > /mode && echo more >> /c/f\n";
    b.build("a", df, &[]);
    assert_eq!(b.run("a", "cat /got"), "seeded\n");
    assert_eq!(b.run("a", "cat /mode"), "700\n");
    // Only a new cache is filled: the next use sees what the last one left.
    b.build("a", &df.replace("> /got", "> /got2"), &[]);
    assert_eq!(b.run("a", "cat /got2"), "seeded\nmore\n");
}

#[test]
fn bind_mount_of_a_context_file_is_not_copied_and_its_content_is_a_key_input() {
    let b = Bench::new("mount-bind");
    b.write("data.txt", "v1\n");
    let df = "FROM busybox\nRUN --mount=type=bind,source=data.txt,target=/mnt/in/data.txt cat /mnt/in/data.txt > /out\n";
    let log = b.build("a", df, &[]);
    assert_eq!(marks(&log), ".", "{log}");
    assert_eq!(b.run("a", "cat /out"), "v1\n");
    assert_eq!(
        b.run("a", "test -e /mnt/in && echo present || echo absent"),
        "absent\n"
    );
    assert_eq!(b.diff("busybox", "a"), "A /out\n");
    // Unchanged: a hit. Changed: a miss that sees the new content.
    let log = b.build("a", df, &[]);
    assert_eq!(marks(&log), "*", "{log}");
    b.write("data.txt", "v2\n");
    let log = b.build("a", df, &["--explain"]);
    assert_eq!(marks(&log), ".", "{log}");
    assert!(log.contains("data.txt"), "--explain names the file: {log}");
    assert_eq!(b.run("a", "cat /out"), "v2\n");
    // Another context file changing does not matter.
    b.write("other.txt", "x\n");
    let log = b.build("a", df, &[]);
    assert_eq!(marks(&log), "*", "{log}");
}

#[test]
fn bind_mount_into_tmp_works_as_in_the_usual_requirements_pattern() {
    let b = Bench::new("mount-bind-tmp");
    b.write("requirements.txt", "pkg==1\n");
    let df = "FROM busybox\nRUN --mount=type=bind,source=requirements.txt,target=/tmp/requirements.txt cp /tmp/requirements.txt /got\n";
    b.build("a", df, &[]);
    assert_eq!(b.run("a", "cat /got"), "pkg==1\n");
    // The image's only change is the command's file (the RUN's /tmp is not the image's).
    assert_eq!(b.diff("busybox", "a"), "A /got\n");
}

#[test]
fn bind_mount_of_the_context_is_read_only_unless_rw_and_rw_writes_are_discarded() {
    let b = Bench::new("mount-bind-rw");
    b.write("src/main.c", "int main;\n");
    let df = "FROM busybox\nRUN --mount=type=bind,target=/src touch /src/new\n";
    let err = b.build_fails_text("a", df, &[]);
    assert!(err.contains("Read-only file system"), "{err}");
    let df = "FROM busybox\nWORKDIR /w\nRUN --mount=type=bind,target=ctx,rw touch ctx/src/new && ls ctx/src > /seen\n";
    b.build("a", df, &[]);
    assert_eq!(b.run("a", "cat /seen"), "main.c\nnew\n");
    assert!(
        !b.ctx.join("src/new").exists(),
        "rw writes reached the context"
    );
    assert_eq!(
        b.run("a", "ls -A /w"),
        "",
        "the mount point stayed out of the image"
    );
}

#[test]
fn bind_mount_from_a_stage_binds_its_files_without_copying_them() {
    let b = Bench::new("mount-bind-from");
    let df = "FROM busybox AS build\nRUN mkdir /out && echo built > /out/artifact\nFROM busybox\nRUN --mount=type=bind,from=build,source=/out,target=/in cat /in/artifact > /got\n";
    b.build("a", df, &[]);
    assert_eq!(b.run("a", "cat /got"), "built\n");
    assert_eq!(
        b.run("a", "test -e /in && echo present || echo absent"),
        "absent\n"
    );
    let log = b.build("a", df, &[]);
    assert_eq!(marks(&log), "**", "{log}");
    // The stage changing changes the step's key.
    let log = b.build("a", &df.replace("echo built", "echo rebuilt"), &[]);
    assert_eq!(marks(&log), "..", "{log}");
    assert_eq!(b.run("a", "cat /got"), "rebuilt\n");
}

#[test]
fn bind_mount_source_outside_the_context_is_refused_naming_the_line() {
    let b = Bench::new("mount-bind-out");
    let err = b.build_fails_text(
        "a",
        "FROM busybox\n\nRUN --mount=type=bind,source=../etc,target=/x true\n",
        &[],
    );
    assert!(err.contains("Dockerfile:3"), "{err}");
    assert!(err.contains("climbs out of the context"), "{err}");
    std::os::unix::fs::symlink("/etc", b.ctx.join("hostetc")).expect("symlink");
    let err = b.build_fails_text(
        "a",
        "FROM busybox\nRUN --mount=type=bind,source=hostetc,target=/x true\n",
        &[],
    );
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(err.contains("outside"), "{err}");
}

#[test]
fn secret_is_readable_in_its_run_and_leaves_no_trace() {
    let b = Bench::new("mount-secret");
    let secret = "s3cr3t-VALUE-7e1f0c";
    let env_secret = "env-S3CR3T-91aa4d";
    let file = b.s.join("token");
    std::fs::write(&file, secret).expect("write secret");
    own(&file);
    let df = "FROM busybox\n\
              RUN --mount=type=secret,id=tok sha256sum /run/secrets/tok > /sum && ls -l /run/secrets/tok > /mode && grep ' /run/secrets/tok ' /proc/self/mountinfo > /where\n\
              RUN --mount=type=secret,id=envtok,target=/etc/app/key,mode=0440 sha256sum < /etc/app/key > /sum2\n\
              RUN --mount=type=secret,id=absent test ! -s /run/secrets/absent && echo empty > /absent\n";
    let mut c = b.build_cmd(
        "a",
        df,
        &[
            "-v",
            "--secret",
            &format!("id=tok,src={}", file.display()),
            "--secret",
            "id=envtok,env=GROVE_TEST_SECRET",
        ],
    );
    c.env("GROVE_TEST_SECRET", env_secret);
    let out = output(&mut c);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        b.run("a", "cat /sum").starts_with(&sha256(secret)),
        "the RUN read the secret"
    );
    assert!(b.run("a", "cat /mode").starts_with("-r--------"));
    // Held in memory, never on disk: the file the RUN saw is on a tmpfs (/dev/shm here).
    let where_ = b.run("a", "cat /where");
    if String::from_utf8_lossy(&sh("stat -f -c %T /dev/shm").stdout).trim() == "tmpfs" {
        assert!(where_.contains(" - tmpfs "), "{where_}");
    } else {
        skip("/dev/shm is not a tmpfs: where a secret is held is not tested");
    }
    assert!(b.run("a", "cat /sum2").starts_with(&sha256(env_secret)));
    assert_eq!(b.run("a", "cat /absent"), "empty\n");
    assert_eq!(
        b.diff("busybox", "a"),
        "A /absent\nA /mode\nA /sum\nA /sum2\nA /where\n",
        "nothing but the commands' files, no mount point"
    );
    assert_eq!(
        b.run(
            "a",
            "ls -A /run 2>/dev/null; ls -A /etc/app 2>/dev/null; true"
        ),
        "",
        "no mount point in the image"
    );
    for s in [secret, env_secret] {
        assert!(
            !contains(&out.stdout, s) && !contains(&out.stderr, s),
            "{s} in the build log"
        );
        assert!(!contains(&b.all_objects(), s), "{s} in a git object");
        let found = files_containing(&b.storage(), s);
        assert!(found.is_empty(), "{s} in {found:?}");
    }
    // A --secret that can't be parsed, or whose file is missing: clear errors.
    let err = b.build_fails_text("b", "FROM busybox\n", &["--secret", "id=a,colour=red"]);
    assert!(err.contains("--secret: unknown option: colour"), "{err}");
    let err = b.build_fails_text(
        "b",
        "FROM busybox\nRUN --mount=type=secret,id=a true\n",
        &["--secret", "id=a,src=/nonexistent/token"],
    );
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(err.contains("/nonexistent/token"), "{err}");
    // A required secret that is not given: an error naming the line.
    let err = b.build_fails_text(
        "b",
        "FROM busybox\nRUN --mount=type=secret,id=nope,required true\n",
        &[],
    );
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(err.contains("id=nope: required"), "{err}");
}

#[test]
fn tmpfs_mount_is_empty_writable_and_leaves_nothing() {
    let b = Bench::new("mount-tmpfs");
    let df = "FROM busybox\nRUN --mount=type=tmpfs,target=/scratch,size=1m ls -A /scratch | wc -l > /count && echo x > /scratch/f && cat /scratch/f > /got && grep ' /scratch tmpfs' /proc/mounts > /mounts\n";
    b.build("a", df, &[]);
    assert_eq!(b.run("a", "cat /count").trim(), "0");
    assert_eq!(b.run("a", "cat /got"), "x\n");
    assert!(b.run("a", "cat /mounts").contains("size=1024k"));
    assert_eq!(
        b.run("a", "test -e /scratch && echo present || echo absent"),
        "absent\n"
    );
    assert_eq!(b.diff("busybox", "a"), "A /count\nA /got\nA /mounts\n");
}

#[test]
fn unknown_mount_types_and_options_are_errors_naming_the_line() {
    let b = Bench::new("mount-mount-bad");
    let err = b.build_fails_text("a", "FROM busybox\nRUN --mount=type=ssh true\n", &[]);
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(err.contains("unknown type: ssh"), "{err}");
    let err = b.build_fails_text(
        "a",
        "FROM busybox\nRUN true\nRUN --mount=type=cache,target=/c,colour=red true\n",
        &[],
    );
    assert!(err.contains("Dockerfile:3"), "{err}");
    assert!(err.contains("unknown option: colour"), "{err}");
}

#[test]
fn gc_with_keep_storage_removes_least_recently_used_cache_mounts() {
    let b = Bench::new("mount-gc");
    // Two caches of 256 KiB each; `old` used first.
    for id in ["old", "new"] {
        let df = format!(
            "FROM busybox\nRUN --mount=type=cache,id={id},target=/c dd if=/dev/zero of=/c/f bs=1024 count=256 2>/dev/null\n"
        );
        b.build(id, &df, &[]);
    }
    assert_eq!(b.cache_mounts().len(), 2);
    ok(b.image()
        .args(["build-cache", "--gc", "--keep-storage", "400k"]));
    assert_eq!(b.cache_mounts().len(), 1);
    // The one kept is the most recently used.
    let df = "FROM busybox\nRUN --mount=type=cache,id=new,target=/c ls /c > /l\n";
    b.build("check", df, &[]);
    assert_eq!(b.run("check", "cat /l"), "f\n");
    ok(b.image().args(["build-cache", "--gc"]));
    assert!(b.cache_mounts().is_empty());
    // --reset removes them too.
    b.build(
        "new",
        "FROM busybox\nRUN --mount=type=cache,id=x,target=/c touch /c/f\n",
        &[],
    );
    assert_eq!(b.cache_mounts().len(), 1);
    ok(b.image().args(["build-cache", "--reset"]));
    assert!(b.cache_mounts().is_empty());
    // So does `ch-image reset`.
    b.build(
        "new",
        "FROM busybox\nRUN --mount=type=cache,id=x,target=/c touch /c/f\n",
        &[],
    );
    assert_eq!(b.cache_mounts().len(), 1);
    ok(b.image().arg("reset"));
    assert!(b.cache_mounts().is_empty());
    let (_, err) = fails(
        b.image()
            .args(["build-cache", "--gc", "--keep-storage", "lots"]),
    );
    assert!(err.contains("--keep-storage: invalid size: lots"), "{err}");
}

#[test]
fn locked_cache_mount_makes_a_second_build_wait_and_private_gets_its_own() {
    let b = Bench::new("mount-locked");
    // The RUN's /tmp is the host's: a release file there ends the first build's RUN.
    let release = PathBuf::from(format!("/tmp/grove-mount-release-{}", std::process::id()));
    let _ = std::fs::remove_file(&release);
    let df_a = format!(
        "FROM busybox\nRUN --mount=type=cache,id=L,target=/c,sharing=locked touch /c/a-in && while [ ! -e {} ]; do sleep 0.05; done; test ! -e /c/b-in && touch /c/a-ok\n",
        release.display()
    );
    b.write("a/Dockerfile", &df_a);
    b.write(
        "b/Dockerfile",
        "FROM busybox\nRUN --mount=type=cache,id=L,target=/c,sharing=locked touch /c/b-in\n",
    );
    let spawn = |tag: &str, dir: &str, err: &Path| {
        let mut c = b.image();
        c.args(["-v", "build", "-t", tag])
            .arg(b.ctx.join(dir))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(err).expect("create log"));
        crate::common::Reaped(c.spawn().expect("spawn build"))
    };
    let cache = b.storage().join("cachemounts");
    let mut a = spawn("a", "a", &b.s.join("a.log"));
    crate::common::wait_for("the first build's RUN", 120, || {
        std::fs::read_dir(&cache)
            .map(|rd| rd.flatten().any(|e| e.path().join("a-in").exists()))
            .unwrap_or(false)
    });
    // sharing=private does not wait: a fresh, empty directory while the cache is in use.
    let log = b.build(
        "p",
        "FROM busybox\nRUN --mount=type=cache,id=L,target=/c,sharing=private ls -A /c | wc -l > /n\n",
        &[],
    );
    assert!(log.contains("in use: a private directory"), "{log}");
    assert_eq!(b.run("p", "cat /n").trim(), "0");
    let b_log = b.s.join("b.log");
    let mut second = spawn("b", "b", &b_log);
    crate::common::wait_for("the second build to reach the lock", 120, || {
        std::fs::read_to_string(&b_log).is_ok_and(|l| l.contains("waiting for other builds"))
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    std::fs::write(&release, "").expect("release");
    assert!(a.0.wait().expect("wait").success(), "first build failed");
    assert!(
        second.0.wait().expect("wait").success(),
        "second build failed"
    );
    let _ = std::fs::remove_file(&release);
    let entries: Vec<String> = std::fs::read_dir(&cache)
        .expect("cachemounts")
        .flatten()
        .filter(|e| e.path().is_dir())
        .flat_map(|e| std::fs::read_dir(e.path()).expect("cache dir").flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(entries.contains(&"a-ok".to_string()), "{entries:?}");
    assert!(entries.contains(&"b-in".to_string()), "{entries:?}");
}

#[test]
fn apt_cache_mount_makes_a_changed_step_skip_the_downloads() {
    let Some(tarball) = crate::build::debian_tarball() else {
        return;
    };
    let b = Bench::new("mount-apt");
    ok(b.image().arg("import").arg(&tarball).arg("debian"));
    let step = "RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \
                --mount=type=cache,target=/var/lib/apt/lists,sharing=locked \
                apt-get -o Binary::apt::APT::Keep-Downloaded-Packages=true update \
                && apt-get -o Binary::apt::APT::Keep-Downloaded-Packages=true install -y hello";
    let all = |o: &Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let first = all(&b.build_out("h", &format!("FROM debian\n{step}\n"), &[]));
    assert!(
        first
            .lines()
            .any(|l| l.starts_with("Get:") && l.contains(" hello ")),
        "the first build downloads hello: {first}"
    );
    // A changed step runs again: the .deb comes from the cache mount.
    let second = all(&b.build_out("h", &format!("FROM debian\n{step} && hello\n"), &[]));
    assert!(second.contains("Hello, world!"), "{second}");
    assert!(second.contains("Need to get 0 B"), "{second}");
    assert!(
        !second
            .lines()
            .any(|l| l.starts_with("Get:") && l.contains(" hello ")),
        "{second}"
    );
    // Neither the archives nor the lists are in the image.
    assert_eq!(
        b.run("h", "ls /var/cache/apt/archives/ | grep -c deb || true")
            .trim(),
        "0"
    );
}
