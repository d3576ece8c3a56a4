//! Integration tests for provenance and the shared build cache (issue 7): `history`,
//! `diff`, `inspect`, `build-cache` (tree, dot, summary, gc, reset, push, fetch), `fsck`,
//! and concurrency of builds and readers. The real binaries, run as the unprivileged test
//! user, on small Dockerfiles FROM an imported busybox.

use crate::common::{
    busybox_rootfs, fails, ok, output, own, sh, tool, unpriv, wait_for, Reaped, Scratch,
};
use crate::registry::output_within;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A scratch dir with storage (busybox imported) and context directories.
struct W {
    s: Scratch,
}

impl W {
    fn new(tag: &str) -> W {
        let w = W {
            s: Scratch::new(&format!("prov-{tag}")),
        };
        ok(w.image().arg("import").arg(busybox_rootfs()).arg("busybox"));
        w
    }

    fn storage(&self) -> PathBuf {
        self.s.storage()
    }

    fn image_in(&self, storage: &Path) -> Command {
        let mut c = tool("ch-image");
        c.arg("-s").arg(storage);
        c.env_remove("CH_IMAGE_CACHE");
        c.env("HOME", &self.s.path);
        c
    }

    fn image(&self) -> Command {
        self.image_in(&self.storage())
    }

    fn ci(&self, args: &[&str]) -> String {
        ok(self.image().args(args))
    }

    /// Write `ctx-NAME/Dockerfile` (and extra files), owned by the test user.
    fn ctx(&self, name: &str, df: &str, files: &[(&str, &str)]) -> PathBuf {
        let d = self.s.join(format!("ctx-{name}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("Dockerfile"), df).unwrap();
        for (p, c) in files {
            std::fs::write(d.join(p), c).unwrap();
        }
        own(&d);
        d
    }

    /// Build TAG from context `ctx` into `storage`; returns stderr (progress log).
    fn build_in(&self, storage: &Path, tag: &str, ctx: &Path, extra: &[&str]) -> String {
        let mut c = self.image_in(storage);
        c.args(["build", "-t", tag]).args(extra).arg(ctx);
        let out = output(&mut c);
        assert!(
            out.status.success(),
            "build failed: {c:?}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn build(&self, tag: &str, ctx: &Path, extra: &[&str]) -> String {
        self.build_in(&self.storage(), tag, ctx, extra)
    }

    fn git(&self, args: &[&str]) -> String {
        git_in(&self.storage().join("repo.git"), &self.s.path, args)
    }

    fn summary(&self) -> Summary {
        Summary::parse(&self.ci(&["build-cache"]))
    }
}

fn git_in(dir: &Path, home: &Path, args: &[&str]) -> String {
    let mut c = unpriv("git");
    c.arg("-C")
        .arg(dir)
        .args(args)
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1");
    ok(&mut c)
}

/// Hit marks of a build log's progress lines (`  N* ...` hit, `  N. ...` run), in order.
fn marks(log: &str) -> String {
    log.lines()
        .filter_map(|l| {
            let t = l.trim_start();
            let end = t.find(|c: char| !c.is_ascii_digit())?;
            if end == 0 {
                return None;
            }
            match t[end..].chars().next()? {
                '*' => Some('*'),
                '.' => Some('.'),
                _ => None,
            }
        })
        .collect()
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Summary {
    images: u64,
    cache_entries: u64,
    commits: u64,
    objects: u64,
    mib: f64,
}

impl Summary {
    fn parse(out: &str) -> Summary {
        let mut s = Summary::default();
        let mut seen = 0;
        for l in out.lines() {
            let Some((k, v)) = l.split_once(':') else {
                continue;
            };
            let v = v.trim();
            let n = || {
                v.parse::<u64>()
                    .unwrap_or_else(|_| panic!("bad number in {l:?}"))
            };
            match k.trim() {
                "images" => s.images = n(),
                "cache entries" => s.cache_entries = n(),
                "commits" => s.commits = n(),
                "objects" => s.objects = n(),
                "disk used" => s.mib = v.trim_end_matches("MiB").trim().parse().expect("disk used"),
                _ => continue,
            }
            seen += 1;
        }
        assert_eq!(seen, 5, "summary incomplete:\n{out}");
        s
    }
}

/// A Dockerfile with every kind of change: additions, a deletion by RUN rm, and a
/// chmod-only change (which lives in the metadata blob, not the rootfs tree).
const DF_A: &str = "FROM busybox
ARG V=1
ENV GREETING=hello
WORKDIR /app
RUN echo one > /app/one && echo two > /app/two && echo three > /app/three
COPY data.txt /app/data.txt
RUN rm /app/two
RUN chmod 600 /app/one
LABEL org.example.team=grove
ENTRYPOINT [\"/bin/sh\", \"-c\"]
CMD [\"echo hi\"]
";

/// Same first five lines as DF_A (a shared prefix), then different.
const DF_B: &str = "FROM busybox
ARG V=1
ENV GREETING=hello
WORKDIR /app
RUN echo one > /app/one && echo two > /app/two && echo three > /app/three
RUN head -c 200000 /dev/urandom > /app/random && echo b > /app/b
";

const DATA: &str = "some data\n";

/// The lines of `history` after its header.
fn history_lines(w: &W, spec: &str) -> Vec<String> {
    let out = w.ci(&["history", spec]);
    let mut lines = out.lines();
    let header = lines.next().unwrap_or_default();
    assert!(header.starts_with("COMMIT       KEY"), "header: {out}");
    lines.map(str::to_string).collect()
}

fn history_json(w: &W, spec: &str) -> Vec<serde_json::Value> {
    let out = w.ci(&["history", "--json", spec]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("history --json parses");
    v.as_array().expect("history --json is an array").clone()
}

/// The last line of `history` for the step whose instruction starts with `prefix`.
fn step<'a>(json: &'a [serde_json::Value], prefix: &str) -> &'a serde_json::Value {
    json.iter()
        .rev()
        .find(|s| s["instruction"].as_str().unwrap().starts_with(prefix))
        .unwrap_or_else(|| panic!("no step {prefix} in {json:?}"))
}

// ---- history ----

#[test]
fn history_one_line_per_instruction_oldest_first_with_hits_after_rebuild() {
    let w = W::new("history");
    let ctx = w.ctx("a", DF_A, &[("data.txt", DATA)]);
    let log = w.build("a", &ctx, &[]);
    assert_eq!(marks(&log), "*..........", "{log}");
    let commit = w.ci(&["list", "-l"]);
    let commit = commit
        .lines()
        .find_map(|l| l.strip_prefix("a:latest\t"))
        .expect("a in list -l")
        .to_string();

    // First build: everything after FROM ran.
    let lines = history_lines(&w, "a");
    let instrs: Vec<&str> = DF_A.lines().skip(1).collect();
    assert_eq!(lines.len(), 1 + instrs.len(), "{lines:#?}");
    // The base's import, and where it came from (its import note).
    assert!(
        lines[0].ends_with(&format!(
            "IMPORT (directory {})",
            busybox_rootfs().display()
        )),
        "{}",
        lines[0]
    );
    for (l, i) in lines[1..].iter().zip(&instrs) {
        assert!(l.ends_with(i), "{l:?} should end with {i:?}");
        assert!(l.contains(" run "), "first build, {l:?}");
    }
    // The last line is the image's commit.
    assert!(commit.starts_with(lines.last().unwrap().split(' ').next().unwrap()));

    let j = history_json(&w, "a");
    assert_eq!(j.len(), lines.len());
    for s in &j {
        for f in [
            "instruction",
            "commit",
            "key",
            "added",
            "modified",
            "removed",
            "size_delta",
            "hit",
        ] {
            assert!(s.get(f).is_some(), "field {f} missing in {s}");
        }
    }
    assert_eq!(j.last().unwrap()["commit"], commit.as_str());
    assert!(j[0]["key"].is_null(), "an import has no cache key");
    for s in &j[1..] {
        assert_eq!(s["key"].as_str().unwrap().len(), 64, "{s}");
        assert_eq!(s["hit"], false, "{s}");
    }
    // Commits are distinct and chain oldest first (the parent of N+1 is N).
    for pair in j.windows(2) {
        let parent = w.git(&[
            "rev-parse",
            &format!("{}^", pair[1]["commit"].as_str().unwrap()),
        ]);
        assert_eq!(parent.trim(), pair[0]["commit"].as_str().unwrap());
    }
    let run = step(&j, "RUN echo one");
    assert_eq!(
        (
            run["added"].as_u64(),
            run["modified"].as_u64(),
            run["removed"].as_u64()
        ),
        (Some(3), Some(0), Some(0))
    );
    assert_eq!(run["size_delta"], 4 + 4 + 6);
    let copy = step(&j, "COPY");
    assert_eq!(
        (copy["added"].as_u64(), copy["size_delta"].as_i64()),
        (Some(1), Some(DATA.len() as i64))
    );
    let rm = step(&j, "RUN rm");
    assert_eq!(
        (
            rm["added"].as_u64(),
            rm["modified"].as_u64(),
            rm["removed"].as_u64()
        ),
        (Some(0), Some(0), Some(1))
    );
    assert_eq!(rm["size_delta"], -4);
    let chmod = step(&j, "RUN chmod");
    assert_eq!(
        (
            chmod["added"].as_u64(),
            chmod["modified"].as_u64(),
            chmod["removed"].as_u64()
        ),
        (Some(0), Some(1), Some(0)),
        "a chmod is a modification"
    );
    assert_eq!(chmod["size_delta"], 0);
    let env = step(&j, "ENV");
    assert_eq!(
        (
            env["added"].as_u64(),
            env["modified"].as_u64(),
            env["removed"].as_u64()
        ),
        (Some(1), Some(0), Some(0)),
        "ENV adds /ch/environment"
    );
    // Text columns match JSON: +A ~M -R, each under its column's name.
    let rm_line = lines
        .iter()
        .find(|l| l.ends_with("RUN rm /app/two"))
        .unwrap();
    let out = w.ci(&["history", "a"]);
    let header = out.lines().next().unwrap();
    let column = |l: &str, what: &str| {
        let at = header.find(what).unwrap();
        l[at..].split_whitespace().next().unwrap().to_string()
    };
    assert_eq!(
        (
            column(rm_line, "+ADDED"),
            column(rm_line, "~CHANGED"),
            column(rm_line, "-REMOVED")
        ),
        ("+0".into(), "~0".into(), "-1".into()),
        "{header}\n{rm_line}"
    );
    assert!(
        rm_line.contains(&rm["key"].as_str().unwrap()[..12]),
        "{rm_line}"
    );

    // Rebuild: all hits, and history says so.
    let log = w.build("a", &ctx, &[]);
    assert_eq!(marks(&log), "***********", "{log}");
    let j2 = history_json(&w, "a");
    assert_eq!(
        j2.iter().map(|s| s["commit"].clone()).collect::<Vec<_>>(),
        j.iter().map(|s| s["commit"].clone()).collect::<Vec<_>>(),
        "a rebuild with all hits gives the same commits"
    );
    for s in &j2[1..] {
        assert_eq!(s["hit"], true, "{s}");
    }
    for l in &history_lines(&w, "a")[1..] {
        assert!(l.contains(" hit "), "{l}");
    }
    // History of an earlier state and by commit id.
    assert_eq!(history_lines(&w, "a~2").len(), lines.len() - 2);
    let by_id = history_json(&w, &commit[..12]);
    assert_eq!(by_id.len(), j.len());
    let (_, err) = fails(w.image().args(["history", "a~99"]));
    assert!(err.contains("shorter"), "{err}");
    let (_, err) = fails(w.image().args(["history", "nosuch"]));
    assert!(err.contains("nosuch"), "{err}");
}

// ---- diff ----

fn diff_lines(w: &W, a: &str, b: &str) -> Vec<String> {
    let mut v: Vec<String> = w.ci(&["diff", a, b]).lines().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn diff_between_images_and_history_states() {
    let w = W::new("diff");
    let a = w.ctx("a", DF_A, &[("data.txt", DATA)]);
    let b = w.ctx("b", DF_B, &[]);
    w.build("a", &a, &[]);
    w.build("b", &b, &[]);

    // History states of one image. a~3 is before RUN rm, RUN chmod, LABEL... (a~0 is CMD).
    // DF_A from the end: CMD(0) ENTRYPOINT(1) LABEL(2) chmod(3) rm(4) COPY(5) RUN echo(6).
    assert_eq!(
        diff_lines(&w, "a~4", "a~3"),
        vec!["M /app/one"],
        "chmod only"
    );
    assert_eq!(diff_lines(&w, "a~5", "a~4"), vec!["D /app/two"], "RUN rm");
    assert_eq!(diff_lines(&w, "a~6", "a~5"), vec!["A /app/data.txt"]);
    assert_eq!(
        diff_lines(&w, "a~6", "a"),
        vec!["A /app/data.txt", "D /app/two", "M /app/one"]
    );
    assert_eq!(
        diff_lines(&w, "a~2", "a"),
        Vec::<String>::new(),
        "config only"
    );
    // Reverse direction.
    assert_eq!(
        diff_lines(&w, "a", "a~6"),
        vec!["A /app/two", "D /app/data.txt", "M /app/one"]
    );
    assert_eq!(
        w.ci(&["diff", "--stat", "a~6", "a"]).trim(),
        format!("1 added, 1 changed, 1 removed, size +{}", DATA.len() - 4)
    );

    // Two images with a shared prefix.
    assert_eq!(
        diff_lines(&w, "a", "b"),
        vec![
            "A /app/b",
            "A /app/random",
            "A /app/two",
            "D /app/data.txt",
            "M /app/one"
        ]
    );
    assert_eq!(
        w.ci(&["diff", "--stat", "a", "b"]).trim(),
        "3 added, 1 changed, 1 removed, size +200.0k"
    );
    // Same image: empty. Busybox to a: the new directory's files.
    assert_eq!(w.ci(&["diff", "a", "a"]), "");
    assert_eq!(
        diff_lines(&w, "busybox", "a"),
        vec![
            "A /app/data.txt",
            "A /app/one",
            "A /app/three",
            "A /ch/environment"
        ]
    );
    // By commit id.
    let j = history_json(&w, "a");
    let rm = step(&j, "RUN rm")["commit"].as_str().unwrap().to_string();
    let chmod = step(&j, "RUN chmod")["commit"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(diff_lines(&w, &rm, &chmod[..10]), vec!["M /app/one"]);
    let (_, err) = fails(w.image().args(["diff", "a", "nosuch"]));
    assert!(err.contains("nosuch"), "{err}");
}

// ---- inspect ----

#[test]
fn inspect_shows_config_base_dockerfile_args_context_and_commit() {
    let w = W::new("inspect");
    let a = w.ctx("a", DF_A, &[("data.txt", DATA)]);
    w.build("a", &a, &["--build-arg", "V=7"]);
    let list = w.ci(&["list", "-l"]);
    let commit = list
        .lines()
        .find_map(|l| l.strip_prefix("a:latest\t"))
        .unwrap();
    let base = list
        .lines()
        .find_map(|l| l.strip_prefix("busybox:latest\t"))
        .unwrap();

    let out = w.ci(&["inspect", "a"]);
    for want in [
        format!("commit:       {commit}"),
        "cwd:          /app".to_string(),
        "env:          GREETING=hello".to_string(),
        "cmd:          [\"echo hi\"]".to_string(),
        "entrypoint:   [\"/bin/sh\",\"-c\"]".to_string(),
        "label:        org.example.team=grove".to_string(),
        format!("base:         busybox ({base})"),
        "build arg:    V=7".to_string(),
        "  RUN rm /app/two".to_string(),
        "  FROM busybox".to_string(),
    ] {
        assert!(
            out.lines().any(|l| l == want),
            "missing {want:?} in:\n{out}"
        );
    }
    assert!(out.contains("context hash: "), "{out}");

    let v: serde_json::Value =
        serde_json::from_str(&w.ci(&["inspect", "--json", "a"])).expect("inspect --json");
    assert_eq!(v["commit"], commit);
    let c = &v["config"];
    assert_eq!(c["cwd"], "/app");
    assert!(c["env"].to_string().contains("GREETING"), "{c}");
    assert_eq!(c["cmd"], serde_json::json!(["echo hi"]));
    assert_eq!(c["entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(c["labels"]["org.example.team"], "grove", "{c}");
    let p = &v["provenance"];
    assert_eq!(p["commit"], commit);
    assert_eq!(p["dockerfile"], DF_A);
    assert_eq!(p["build_args"]["V"], "7");
    assert_eq!(
        p["bases"][0]["image"]
            .as_str()
            .unwrap()
            .trim_end_matches(":latest"),
        "busybox"
    );
    assert_eq!(p["bases"][0]["commit"], base);
    assert_eq!(p["context_hash"].as_str().unwrap().len(), 64);

    // An imported image has a config but no provenance.
    let b: serde_json::Value =
        serde_json::from_str(&w.ci(&["inspect", "--json", "busybox"])).unwrap();
    assert_eq!(b["commit"], base);
    assert!(b["provenance"].is_null());
    // The note is a plain git note.
    let note = w.git(&["notes", "--ref=grove", "show", commit]);
    assert!(note.contains("\"dockerfile\""), "{note}");
}

/// Put `prov/base:1` into registry `r`: its reference and its manifest digest, as skopeo
/// reads it from the registry (not as Grove computes it).
fn put_base(r: &crate::registry::Registry) -> (String, String) {
    r.put("two", "prov/base:1", &[]);
    let reference = format!("{}/prov/base:1", r.host());
    let inspected: serde_json::Value = serde_json::from_str(&ok(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ])))
    .expect("skopeo inspect json");
    let manifest = inspected["Digest"].as_str().expect("Digest").to_string();
    (reference, manifest)
}

/// Regression: text `inspect` left out what the store records of where an image came from
/// and how it was built: a pulled image's registry source and manifest digest (its
/// config's annotations, which `--json` had), a pulled base's, the builder's version, the
/// build's times and invocation id, `SOURCE_DATE_EPOCH`, `--force` and the Dockerfile's
/// digest.
#[test]
fn inspect_text_shows_sources_digests_builder_and_times() {
    let Some(r) = crate::registry::Registry::start() else {
        return;
    };
    let w = W::new("inspect-pulled");
    let (reference, manifest) = put_base(&r);
    ok(r.ch_image(&w.storage()).args(["pull", &reference]));
    let out = w.ci(&["inspect", &reference]);
    for want in [
        format!("annotation:   registry.source={reference}"),
        format!("annotation:   registry.manifest={manifest}"),
    ] {
        assert!(
            out.lines().any(|l| l == want),
            "missing {want:?} in:\n{out}"
        );
    }
    let ctx = w.ctx("on", &format!("FROM {reference}\nRUN true\n"), &[]);
    ok(r.ch_image(&w.storage())
        .args([
            "build",
            "--force=none",
            "--build-arg",
            "SOURCE_DATE_EPOCH=1700000000",
            "-t",
            "app",
        ])
        .arg(&ctx));
    let base = w.git(&["rev-parse", "refs/grove/img/app+latest~1"]);
    let out = w.ci(&["inspect", "app"]);
    for want in [
        format!(
            "base:         {reference} ({}) pulled from {reference} manifest {manifest}",
            base.trim()
        ),
        format!("builder:      grove {}", env!("CARGO_PKG_VERSION")),
        "SOURCE_DATE_EPOCH: 1700000000".to_string(),
        "force:        none".to_string(),
        format!(
            "dockerfile:   sha256:{}",
            sha256_of(&ctx.join("Dockerfile"))
        ),
    ] {
        assert!(
            out.lines().any(|l| l == want),
            "missing {want:?} in:\n{out}"
        );
    }
    let built = out
        .lines()
        .find_map(|l| l.strip_prefix("built:        "))
        .unwrap_or_else(|| panic!("no built line in:\n{out}"));
    let (times, invocation) = built.split_once(" (invocation ").expect("invocation");
    assert_eq!(
        times.len(),
        "2026-12-06T07:20:47Z to 2026-12-06T07:20:48Z".len(),
        "{built}"
    );
    assert_eq!(invocation.trim_end_matches(')').len(), 32, "{built}");
}

/// The context hash of the note follows the COPY sources' content.
#[test]
fn inspect_context_hash_follows_copy_sources() {
    let w = W::new("ctxhash");
    let a = w.ctx("a", DF_A, &[("data.txt", DATA)]);
    w.build("a", &a, &[]);
    let get = || -> String {
        let v: serde_json::Value =
            serde_json::from_str(&w.ci(&["inspect", "--json", "a"])).unwrap();
        v["provenance"]["context_hash"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let h1 = get();
    assert_ne!(
        h1,
        blake3::hash(b"").to_hex().to_string(),
        "hash of nothing"
    );
    std::fs::write(a.join("data.txt"), "other data\n").unwrap();
    own(&a);
    w.build("a", &a, &[]);
    assert_ne!(get(), h1);
}

// ---- build-cache: tree, dot, summary ----

#[test]
fn build_cache_tree_dot_and_summary() {
    let w = W::new("tree");
    let s0 = w.summary();
    assert_eq!((s0.images, s0.cache_entries, s0.commits), (1, 0, 1));
    let a = w.ctx("a", DF_A, &[("data.txt", DATA)]);
    let b = w.ctx("b", DF_B, &[]);
    w.build("a", &a, &[]);
    w.build("b", &b, &[]);
    let nb = DF_B.lines().count() as u64;
    let na = DF_A.lines().count() as u64;
    // Shared: FROM + 4 lines. Commits: import + (na-1) + (nb-1) - 4 shared.
    let s = w.summary();
    assert_eq!(s.images, 3);
    assert_eq!(s.commits, 1 + (na - 1) + (nb - 1) - 4, "{s:?}");
    assert_eq!(s.cache_entries, (na - 1) + (nb - 1) - 4, "{s:?}");
    assert!(s.objects > s0.objects && s.mib > 0.0, "{s:?} vs {s0:?}");

    let tree = w.ci(&["build-cache", "--tree"]);
    let lines: Vec<&str> = tree
        .lines()
        .take_while(|l| !l.starts_with("images:"))
        .collect();
    assert_eq!(lines.len() as u64, s.commits, "{tree}");
    let depth = |l: &str| (l.len() - l.trim_start().len()) / 2;
    assert_eq!(depth(lines[0]), 0);
    assert!(
        lines[0].contains("IMPORT") && lines[0].contains("busybox:latest"),
        "{tree}"
    );
    // The shared RUN has two children, one per image.
    let shared = lines
        .iter()
        .position(|l| l.contains("RUN echo one"))
        .expect("shared RUN");
    let kids: Vec<&&str> = lines
        .iter()
        .filter(|l| depth(l) == depth(lines[shared]) + 1)
        .collect();
    assert_eq!(kids.len(), 2, "{tree}");
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("(a:latest)") && l.contains("CMD")),
        "{tree}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("(b:latest)") && l.contains("RUN head")),
        "{tree}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.contains("RUN echo one")).count(),
        1,
        "{tree}"
    );

    let dot = w.ci(&["build-cache", "--dot"]);
    let dot = &dot[..dot.find("images:").unwrap()];
    assert!(dot.starts_with("digraph "), "{dot}");
    assert_eq!(dot.trim_end().chars().last(), Some('}'));
    assert_eq!(dot.matches('{').count(), 1);
    assert_eq!(
        dot.matches('"').count() % 2,
        0,
        "quotes balanced (escaped ones aside)"
    );
    let edges = dot.lines().filter(|l| l.contains(" -> ")).count() as u64;
    assert_eq!(edges, (s.commits - 1) + s.images, "{dot}");
    assert!(
        dot.contains("\\\"echo hi\\\""),
        "quotes in labels escaped: {dot}"
    );
    // If graphviz is installed, it must accept the output.
    if let Ok(mut ch) = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
    {
        use std::io::Write;
        ch.stdin.take().unwrap().write_all(dot.as_bytes()).unwrap();
        assert!(ch.wait().unwrap().success(), "dot rejects:\n{dot}");
    }
}

// ---- gc, reset ----

fn convert(w: &W, storage: &Path, image: &str, out: &str) -> Vec<u8> {
    let p = w.s.join(out);
    ok(tool("ch-convert").arg("-s").arg(storage).arg(image).arg(&p));
    std::fs::read(&p).unwrap()
}

fn objects(w: &W) -> std::collections::BTreeSet<String> {
    w.git(&[
        "cat-file",
        "--batch-all-objects",
        "--batch-check=%(objectname)",
    ])
    .lines()
    .map(str::to_string)
    .collect()
}

#[test]
fn gc_after_delete_frees_unshared_objects_only() {
    // RUN keeps real file times: a bit-identical rebuild needs SOURCE_DATE_EPOCH.
    const SDE: &[&str] = &["--build-arg", "SOURCE_DATE_EPOCH=1700000000"];
    let w = W::new("gc");
    let a = w.ctx("a", DF_A, &[("data.txt", DATA)]);
    let b = w.ctx("b", DF_B, &[]);
    w.build("a", &a, SDE);
    w.build("b", &b, SDE);
    let a_tar = convert(&w, &w.storage(), "a", "a1.tar");
    // gc with nothing deleted removes no image object.
    w.ci(&["build-cache", "--gc"]);
    let before = w.summary();
    let objs_before = objects(&w);
    let hist_a = history_json(&w, "a");
    let hist_b = history_json(&w, "b");
    let random_blob = w.git(&["rev-parse", "refs/grove/img/b+latest:rootfs/app/random"]);
    let random_blob = random_blob.trim().to_string();
    assert!(objs_before.contains(&random_blob));

    w.ci(&["delete", "b"]);
    let out = w.ci(&["build-cache", "--gc"]);
    let after = Summary::parse(&out);
    let objs_after = objects(&w);
    assert_eq!(after.images, before.images - 1);
    assert!(after.objects < before.objects, "{before:?} -> {after:?}");
    assert!(after.mib < before.mib, "{before:?} -> {after:?}");
    // Nothing an image reaches went away (gc rewrites the notes, whose objects are new).
    let reach = |r: &str| -> std::collections::BTreeSet<String> {
        w.git(&["rev-list", "--objects", r])
            .lines()
            .map(|l| l.split(' ').next().unwrap().to_string())
            .collect()
    };
    let a_objs = reach("refs/grove/img/a+latest");
    assert!(a_objs.is_subset(&objs_after));
    assert!(reach("refs/grove/img/busybox+latest").is_subset(&objs_after));
    // Everything else that went away was b's or old notes: no new image objects appear.
    let gone: Vec<&String> = objs_before.difference(&objs_after).collect();
    assert!(!gone.is_empty());
    assert!(!objs_after.contains(&random_blob), "b's own blob is gone");
    // b's own commit is gone; everything a reaches stays.
    let b_own = step(&hist_b, "RUN head")["commit"].as_str().unwrap();
    assert!(!objs_after.contains(b_own));
    for s in &hist_a {
        assert!(objs_after.contains(s["commit"].as_str().unwrap()), "{s}");
    }
    // The shared prefix still holds its cache entries: the first 5 lines of b hit.
    assert_eq!(after.cache_entries, (DF_A.lines().count() - 1) as u64);
    assert_eq!(after.commits, DF_A.lines().count() as u64);
    // a is intact: same export, same history, and the provenance note survived.
    assert_eq!(
        convert(&w, &w.storage(), "a", "a2.tar"),
        a_tar,
        "a exports identically"
    );
    assert_eq!(history_json(&w, "a"), hist_a);
    let v: serde_json::Value = serde_json::from_str(&w.ci(&["inspect", "--json", "a"])).unwrap();
    assert_eq!(v["provenance"]["dockerfile"], DF_A);
    // The notes kept a's note and dropped b's, in one parentless notes commit.
    let noted = w.git(&["notes", "--ref=grove", "list"]);
    let a_commit = hist_a.last().unwrap()["commit"].as_str().unwrap();
    assert!(noted.contains(a_commit), "{noted}");
    let b_commit = hist_b.last().unwrap()["commit"].as_str().unwrap();
    assert!(!noted.contains(b_commit), "{noted}");
    assert_eq!(
        w.git(&["rev-list", "--count", "refs/notes/grove"]).trim(),
        "1"
    );
    let fsck = output(w.image().arg("fsck"));
    assert!(fsck.status.success(), "{fsck:?}");
    // Rebuilding b: the shared prefix hits, its own line runs.
    assert_eq!(marks(&w.build("b", &b, SDE)), "*****.");

    // reset: no cache entries; images stay and work; a rebuild runs everything.
    let out = w.ci(&["build-cache", "--reset"]);
    let r = Summary::parse(&out);
    assert_eq!((r.images, r.cache_entries), (3, 0));
    assert_eq!(convert(&w, &w.storage(), "a", "a3.tar"), a_tar);
    assert_eq!(marks(&w.build("a", &a, SDE)), "*..........");
    assert_eq!(
        convert(&w, &w.storage(), "a", "a4.tar"),
        a_tar,
        "deterministic rebuild"
    );
}

// ---- sharing ----

fn bare_repo(w: &W, rel: &str) -> PathBuf {
    let p = w.s.join(rel);
    ok(unpriv("git")
        .args(["init", "-q", "--bare"])
        .arg(&p)
        .env("HOME", &w.s.path));
    p
}

#[test]
fn push_and_fetch_through_a_bare_repository_give_all_hits() {
    let w = W::new("share");
    let a = w.ctx("a", DF_A, &[("data.txt", DATA)]);
    let b = w.ctx("b", DF_B, &[]);
    w.build("a", &a, &[]);
    w.build("b", &b, &[]);
    let a_tar = convert(&w, &w.storage(), "a", "a1.tar");
    let remote = bare_repo(&w, "cache.git");
    let remote_s = remote.to_str().unwrap();
    w.ci(&["build-cache", "push", remote_s]);

    // A fresh store fetches and builds with all hits.
    let s2 = w.s.join("storage2");
    ok(w.image_in(&s2).args(["build-cache", "fetch", remote_s]));
    let log = w.build_in(&s2, "a", &a, &[]);
    assert_eq!(marks(&log), "*".repeat(DF_A.lines().count()), "{log}");
    let log = w.build_in(&s2, "b", &b, &[]);
    assert_eq!(marks(&log), "*".repeat(DF_B.lines().count()), "{log}");
    assert_eq!(convert(&w, &s2, "a", "a2.tar"), a_tar);
    // History and provenance travelled with the commits.
    let h = ok(w.image_in(&s2).args(["history", "--json", "a"]));
    let h: Vec<serde_json::Value> = serde_json::from_str(&h).unwrap();
    assert!(h[1..].iter().all(|s| s["hit"] == true), "{h:?}");
    let v: serde_json::Value =
        serde_json::from_str(&ok(w.image_in(&s2).args(["inspect", "--json", "a"]))).unwrap();
    assert_eq!(v["provenance"]["dockerfile"], DF_A);
    ok(tool("ch-run")
        .arg("-s")
        .arg(&s2)
        .args(["a", "--", "/bin/cat", "/app/data.txt"]));
    ok(w.image_in(&s2).arg("fsck"));

    // A store that already has a different image of its own keeps it and its notes.
    let s3 = w.s.join("storage3");
    ok(w.image_in(&s3)
        .arg("import")
        .arg(busybox_rootfs())
        .arg("busybox"));
    let c = w.ctx("c", "FROM busybox\nRUN echo c > /c\n", &[]);
    w.build_in(&s3, "c", &c, &[]);
    ok(w.image_in(&s3).args(["build-cache", "fetch", remote_s]));
    let list = ok(w.image_in(&s3).arg("list"));
    for i in ["a", "b", "busybox", "c"] {
        assert!(list.lines().any(|l| l == i), "{i} in {list}");
    }
    let v: serde_json::Value =
        serde_json::from_str(&ok(w.image_in(&s3).args(["inspect", "--json", "c"]))).unwrap();
    assert!(
        v["provenance"]["dockerfile"].as_str().is_some(),
        "fetch must not drop local provenance notes: {v}"
    );
    // ... and pushing from it does not drop the notes others pushed.
    ok(w.image_in(&s3).args(["build-cache", "push", remote_s]));
    let s4 = w.s.join("storage4");
    ok(w.image_in(&s4).args(["build-cache", "fetch", remote_s]));
    for img in ["a", "c"] {
        let v: serde_json::Value =
            serde_json::from_str(&ok(w.image_in(&s4).args(["inspect", "--json", img]))).unwrap();
        assert!(
            v["provenance"]["dockerfile"].as_str().is_some(),
            "remote lost the note of {img}: {v}"
        );
    }
}

/// `git daemon` runs `git-daemon` as a child: kill its whole process group.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

#[test]
fn push_and_fetch_through_git_daemon() {
    let w = W::new("daemon");
    let a = w.ctx("a", DF_A, &[("data.txt", DATA)]);
    w.build("a", &a, &[]);
    let base = w.s.join("served");
    std::fs::create_dir_all(&base).unwrap();
    own(&base);
    bare_repo(&w, "served/cache.git");
    // Started again on another port if one was taken before it listened.
    let (child, port) = crate::common::listening_on_a_free_port("git daemon", |port| {
        unpriv("git")
            .arg("daemon")
            .arg("--export-all")
            .arg("--enable=receive-pack")
            .arg(format!("--base-path={}", base.display()))
            .arg(format!("--port={port}"))
            .arg("--listen=127.0.0.1")
            .arg("--reuseaddr")
            .env("HOME", &w.s.path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start git daemon")
    });
    let daemon = Daemon(child);
    let url = format!("git://127.0.0.1:{port}/cache.git");
    w.ci(&["build-cache", "push", &url]);
    let s2 = w.s.join("storage2");
    ok(w.image_in(&s2).args(["build-cache", "fetch", &url]));
    let log = w.build_in(&s2, "a", &a, &[]);
    assert_eq!(marks(&log), "*".repeat(DF_A.lines().count()), "{log}");
    drop(daemon);
    crate::common::wait_for("git daemon to stop", 120, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
    });
    // The daemon is gone: a fetch fails cleanly.
    let (_, err) = fails(w.image_in(&s2).args(["build-cache", "fetch", &url]));
    assert!(err.contains("fetch"), "{err}");
}

// ---- concurrency ----

#[test]
fn two_concurrent_builds_into_one_storage_both_succeed() {
    let w = W::new("conc");
    let c1 = w.ctx(
        "c1",
        "FROM busybox\nRUN sleep 2 && echo 1 > /one\nRUN echo x > /x\n",
        &[],
    );
    let c2 = w.ctx(
        "c2",
        "FROM busybox\nRUN sleep 2 && echo 2 > /two\nENV Y=2\n",
        &[],
    );
    let start = |tag: &str, ctx: &Path| {
        w.image()
            .args(["build", "-t", tag])
            .arg(ctx)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn build")
    };
    let t = Instant::now();
    let p1 = start("c1", &c1);
    let p2 = start("c2", &c2);
    let o1 = p1.wait_with_output().unwrap();
    let t1 = t.elapsed();
    let o2 = p2.wait_with_output().unwrap();
    let t2 = t.elapsed();
    eprintln!("concurrent builds: first done after {t1:?}, second after {t2:?}");
    assert!(
        o1.status.success(),
        "{}",
        String::from_utf8_lossy(&o1.stderr)
    );
    assert!(
        o2.status.success(),
        "{}",
        String::from_utf8_lossy(&o2.stderr)
    );
    let list = w.ci(&["list"]);
    assert!(
        list.lines().any(|l| l == "c1") && list.lines().any(|l| l == "c2"),
        "{list}"
    );
    // Both provenance notes are there (no lost update of the notes ref).
    for i in ["c1", "c2"] {
        let v: serde_json::Value = serde_json::from_str(&w.ci(&["inspect", "--json", i])).unwrap();
        assert!(v["provenance"]["dockerfile"].is_string(), "{i}: {v}");
        let h = history_json(&w, i);
        assert!(h[1..].iter().all(|s| s["hit"] == false), "{h:?}");
    }
    ok(tool("ch-run")
        .arg("-s")
        .arg(w.storage())
        .args(["c1", "--", "/bin/cat", "/one"]));
    ok(tool("ch-run")
        .arg("-s")
        .arg(w.storage())
        .args(["c2", "--", "/bin/cat", "/two"]));
    ok(w.image().arg("fsck"));
}

#[test]
fn readers_do_not_wait_for_a_running_build() {
    let w = W::new("readers");
    let a = w.ctx("a", DF_A, &[("data.txt", DATA)]);
    w.build("a", &a, &[]);
    // The build's RUN says it has started, then waits for the test's go-ahead: every
    // reader below runs while the build is under way, and a reader that waited for the
    // build would wait for ever (the build waits for the readers), not merely be slow.
    let sync = w.s.join("sync");
    sh(&format!("mkdir '{}'", sync.display()));
    let slow = w.ctx(
        "slow",
        "FROM busybox\nRUN touch /mnt/started; i=0; \
         while [ ! -e /mnt/go ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done; \
         test -e /mnt/go\n",
        &[],
    );
    let mut build = Reaped(
        w.image()
            .args(["build", "--no-cache", "-t", "slow", "-b"])
            .arg(format!("{}:/mnt", sync.display()))
            .arg(&slow)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_for("the build's RUN to start", 120, || {
        sync.join("started").exists()
    });
    let reader = |what: &str, c: &mut Command| {
        let out = output_within(c, Duration::from_secs(120))
            .unwrap_or_else(|| panic!("{what} waited for the running build"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{what}: {err}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let list = reader("list", w.image().arg("list"));
    assert!(list.lines().any(|l| l == "a"), "{list}");
    let h = reader("history", w.image().args(["history", "a"]));
    assert_eq!(
        h.lines().count(),
        1 + DF_A.lines().count(),
        "header and one line a step"
    );
    reader("diff", w.image().args(["diff", "--stat", "busybox", "a"]));
    reader("inspect", w.image().args(["inspect", "a"]));
    let out = reader(
        "ch-run",
        tool("ch-run")
            .arg("-s")
            .arg(w.storage())
            .args(["a", "--", "/bin/cat", "/app/data.txt"]),
    );
    assert_eq!(out, DATA);
    assert!(
        build.0.try_wait().unwrap().is_none(),
        "the build ended before the readers ran"
    );
    std::fs::write(sync.join("go"), "").unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut build.0.stderr.take().unwrap(), &mut err).unwrap();
    assert!(build.0.wait().unwrap().success(), "{err}");
}

// ---- fsck ----

#[test]
fn fsck_passes_a_healthy_store_and_reports_corrupt_checkouts() {
    let w = W::new("fsck");
    let a = w.ctx("a", DF_A, &[("data.txt", DATA)]);
    w.build("a", &a, &[]);
    let out = output(w.image().arg("fsck"));
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("store ok"),
        "{out:?}"
    );

    // Check busybox out (an import leaves that to first use): corrupt one of its files'
    // content.
    w.ci(&["checkout", "busybox"]);
    let list = w.ci(&["list", "-l"]);
    let base = list
        .lines()
        .find_map(|l| l.strip_prefix("busybox:latest\t"))
        .unwrap();
    let co = w.storage().join("checkouts").join(base);
    assert!(co.is_dir(), "{} missing", co.display());
    let motd = co.join("etc/motd");
    crate::common::sh(&format!("echo corrupt >> '{}'", motd.display()));
    let (_, err) = fails(w.image().arg("fsck"));
    let out = output(w.image().arg("fsck"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("etc/motd"), "{stdout}\n{err}");
    assert!(err.contains("problem"), "{err}");
}

#[test]
fn fsck_reports_a_chmod_in_a_checkout() {
    let w = W::new("fsck-mode");
    w.ci(&["checkout", "busybox"]);
    let list = w.ci(&["list", "-l"]);
    let base = list
        .lines()
        .find_map(|l| l.strip_prefix("busybox:latest\t"))
        .unwrap();
    let co = w.storage().join("checkouts").join(base);
    crate::common::sh(&format!("chmod 777 '{}'", co.join("etc/passwd").display()));
    let out = output(w.image().arg("fsck"));
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("etc/passwd"),
        "{out:?}"
    );
}

#[test]
fn fsck_reports_refs_to_non_image_commits_and_bad_metadata() {
    let w = W::new("fsck-ref");
    let a = w.ctx("a", DF_A, &[("data.txt", DATA)]);
    w.build("a", &a, &[]);
    ok(w.image().arg("fsck"));
    let home = w.s.path.clone();
    let repo = w.storage().join("repo.git");
    let env = |c: &mut Command| {
        c.env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t")
            .env("HOME", &home)
            .env("GIT_CONFIG_NOSYSTEM", "1");
    };
    let git_stdin = |args: &[&str], input: &str| -> String {
        use std::io::Write;
        let mut c = unpriv("git");
        c.arg("-C").arg(&repo).args(args);
        env(&mut c);
        let mut ch = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        ch.stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let o = ch.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };

    // 1. A ref to a commit whose tree is not an image (a plain file tree).
    let blob = git_stdin(&["hash-object", "-w", "--stdin"], "hello\n");
    let tree = git_stdin(&["mktree"], &format!("100644 blob {blob}\tREADME\n"));
    let c = git_stdin(&["commit-tree", &tree, "-m", "not an image"], "");
    w.git(&["update-ref", "refs/grove/img/bogus+latest", &c]);
    let out = output(w.image().arg("fsck"));
    assert!(!out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("bogus"), "{stdout}");
    w.git(&["update-ref", "-d", "refs/grove/img/bogus+latest"]);
    ok(w.image().arg("fsck"));

    // 2. An image commit whose metadata blob is garbage (same rootfs and config).
    let head = w
        .git(&["rev-parse", "refs/grove/img/a+latest"])
        .trim()
        .to_string();
    let ls = w.git(&["ls-tree", &head]);
    let bad = git_stdin(
        &["hash-object", "-w", "--stdin"],
        "\u{1}garbage\u{ff}not metadata",
    );
    let new_tree: String = ls
        .lines()
        .map(|l| {
            if l.ends_with("\tmeta") {
                format!("100644 blob {bad}\tmeta\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let tree = git_stdin(&["mktree"], &new_tree);
    let c = git_stdin(
        &["commit-tree", &tree, "-p", &head, "-m", "RUN corrupt"],
        "",
    );
    w.git(&["update-ref", "refs/grove/img/badmeta+latest", &c]);
    let out = output(w.image().arg("fsck"));
    assert!(!out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("badmeta"), "{stdout}");
    // The other commands refuse it cleanly (no panic).
    let o = output(w.image().args(["history", "badmeta"]));
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("panicked"),
        "{o:?}"
    );
    let o = output(w.image().args(["diff", "a", "badmeta"]));
    assert!(
        !o.status.success() && !String::from_utf8_lossy(&o.stderr).contains("panicked"),
        "{o:?}"
    );
    let o = output(w.image().args(["build-cache", "--tree"]));
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("panicked"),
        "{o:?}"
    );
}

// ---- output into a closed pipe ----

/// `ch-image history | head -1` and the like: the reader goes away; the command must not
/// panic ("failed printing to stdout").
#[test]
fn output_into_a_closed_pipe_does_not_panic() {
    let w = W::new("pipe");
    let a = w.ctx("a", DF_A, &[("data.txt", DATA)]);
    w.build("a", &a, &[]);
    for args in [
        &["history", "a"][..],
        &["history", "--json", "a"],
        &["diff", "busybox", "a"],
        &["diff", "--stat", "busybox", "a"],
        &["inspect", "a"],
        &["inspect", "--json", "a"],
        &["build-cache", "--tree", "--dot"],
    ] {
        let mut ch = w
            .image()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(ch.stdout.take()); // closed before the command writes
        let o = ch.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.is_empty(), "{args:?}: {err}");
        // Quiet either way: 0 if the output fit in the pipe before it closed, else 141
        // (docs/compatibility.md).
        assert!(
            o.status.success() || o.status.code() == Some(141),
            "{args:?}: {err}"
        );
    }
}

// ---- diff: directories that become empty, modes of directories, links, FIFOs ----

const DF_EDGE: &str = "FROM busybox
RUN mkdir -p /e/empty /e/full && echo a > /e/full/a && echo x > /x && ln /x /hl && ln -s /x /sl && mkfifo /ff
RUN chmod 600 /x
RUN rm -r /e/empty && ln -sf /hl /sl && rm /ff
RUN rm /e/full/a
RUN rm /hl
RUN rm /x && mkdir /x && echo in > /x/in
RUN chmod 700 /e
";

/// Regression: a directory whose last file goes away leaves the git tree and becomes a
/// `dir` record in the metadata; it was reported as added ("A /e", "A /e/full") although
/// it was there all along; and a directory's chmod was lost when it also changed from
/// empty to non-empty or back.
#[test]
fn diff_of_directories_that_become_empty_and_of_directory_modes() {
    let w = W::new("diff-edge");
    let c = w.ctx("edge", DF_EDGE, &[]);
    w.build("t", &c, &[]);
    let d = |i: usize| diff_lines(&w, &format!("t~{i}"), &format!("t~{}", i - 1));
    assert_eq!(
        d(7),
        vec![
            "A /e/empty",
            "A /e/full/a",
            "A /ff",
            "A /hl",
            "A /sl",
            "A /x"
        ]
    );
    assert_eq!(d(6), vec!["M /x"]);
    assert_eq!(d(5), vec!["D /e/empty", "D /ff", "M /sl"]);
    assert_eq!(d(4), vec!["D /e/full/a"], "/e and /e/full are still there");
    assert_eq!(d(3), vec!["D /hl"]);
    assert_eq!(d(2), vec!["A /x/in", "D /x"]);
    assert_eq!(d(1), vec!["M /e"]);
    assert_eq!(
        diff_lines(&w, "t~6", "t"),
        vec![
            "A /x/in",
            "D /e/empty",
            "D /e/full/a",
            "D /ff",
            "D /hl",
            "D /x",
            "M /e",
            "M /sl"
        ]
    );
    assert_eq!(
        diff_lines(&w, "t", "t~6"),
        vec![
            "A /e/empty",
            "A /e/full/a",
            "A /ff",
            "A /hl",
            "A /x",
            "D /x/in",
            "M /e",
            "M /sl"
        ]
    );
    let j = history_json(&w, "t");
    let rm = step(&j, "RUN rm /e/full/a");
    assert_eq!(
        (
            rm["added"].as_u64(),
            rm["modified"].as_u64(),
            rm["removed"].as_u64()
        ),
        (Some(0), Some(0), Some(1))
    );
}

/// Regression: a new (or deleted) directory with a non-default mode was also reported as
/// changed ("M /d") next to its files.
#[test]
fn diff_of_new_and_deleted_directories_with_modes() {
    let w = W::new("diff-newdir");
    let c = w.ctx(
        "nd",
        "FROM busybox\nRUN mkdir -m 700 /d && echo f > /d/f && mkdir -m 711 /d/sub && echo g > /d/sub/g && echo s > /s && chmod 600 /s\nRUN rm -r /d /s\n",
        &[],
    );
    w.build("t", &c, &[]);
    assert_eq!(
        diff_lines(&w, "t~2", "t~1"),
        vec!["A /d/f", "A /d/sub/g", "A /s"]
    );
    assert_eq!(
        diff_lines(&w, "t~1", "t"),
        vec!["D /d/f", "D /d/sub/g", "D /s"]
    );
    let j = history_json(&w, "t");
    assert_eq!(j[1]["modified"], 0, "{}", j[1]);
    assert_eq!(j[2]["modified"], 0, "{}", j[2]);
}

/// Regression: a path that changed type between a FIFO or an empty directory (held in
/// `meta`) and a file (in the tree) was reported as added ("A /p") or removed ("D /f")
/// alone, though it was there before and after, and `history` counted it so.
#[test]
fn diff_of_a_path_that_changes_type_to_or_from_a_fifo_or_an_empty_directory() {
    let w = W::new("diff-type");
    let c = w.ctx(
        "ty",
        "FROM busybox\nRUN mkfifo /p && mkdir /e && echo f > /f && echo g > /g\n\
         RUN rm /p && echo now > /p && rmdir /e && echo now > /e\n\
         RUN rm /f /g && mkfifo /f && mkdir /g\n",
        &[],
    );
    w.build("t", &c, &[]);
    assert_eq!(diff_lines(&w, "t~2", "t~1"), vec!["M /e", "M /p"]);
    assert_eq!(diff_lines(&w, "t~1", "t"), vec!["M /f", "M /g"]);
    assert_eq!(diff_lines(&w, "t", "t~1"), vec!["M /f", "M /g"]);
    assert_eq!(
        diff_lines(&w, "t~2", "t"),
        vec!["M /e", "M /f", "M /g", "M /p"]
    );
    let j = history_json(&w, "t");
    for i in [2, 3] {
        assert_eq!(
            (&j[i]["added"], &j[i]["modified"], &j[i]["removed"]),
            (&0.into(), &2.into(), &0.into()),
            "{}",
            j[i]
        );
    }
}

/// Regression: `diff` printed names lossily, one per line: a name holding a newline
/// split into two lines (the second read as an entry of its own) and two names that differ
/// in a byte that is not UTF-8 printed alike (`/x\u{fffd}y`), in text and in JSON.
#[test]
fn diff_prints_every_name_on_one_line_and_distinct_names_distinctly() {
    let w = W::new("diff-names");
    let c = w.ctx(
        "names",
        "FROM busybox\nRUN touch \"$(printf '/x\\377y')\" \"$(printf '/x\\376y')\" \
         \"$(printf '/nl\\nname')\" '/back\\slash' '/sp ace' '/\u{fc}n\u{ef}'\n",
        &[],
    );
    w.build("t", &c, &[]);
    let want = [
        "A /back\\\\slash",
        "A /nl\\nname",
        "A /sp ace",
        "A /x\\xfey",
        "A /x\\xffy",
        "A /\u{fc}n\u{ef}",
    ];
    assert_eq!(diff_lines(&w, "t~1", "t"), want);
    let json: serde_json::Value =
        serde_json::from_str(&w.ci(&["diff", "--json", "t~1", "t"])).expect("diff --json");
    let mut paths: Vec<String> = json
        .as_array()
        .expect("array")
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["change"].as_str().unwrap(),
                e["path"].as_str().unwrap()
            )
        })
        .collect();
    paths.sort();
    assert_eq!(paths, want);
}

/// Regression: a step that missed was compared with the closest cache entry on its parent
/// whatever its instruction, so the first build of a `RUN` on a base where an `ARG` had
/// been built said "instruction text changed (cached: ARG V=1)", "build argument changed:
/// V" and "build option changed: --force", none of which the user changed.
#[test]
fn why_compares_a_step_only_with_entries_of_the_same_instruction() {
    let w = W::new("why-kind");
    let a = w.ctx("a", "FROM busybox\nARG V=1\n", &[]);
    w.build("a", &a, &[]);
    let r = w.ctx("r", "FROM busybox\nRUN echo hi > /f\n", &[]);
    let log = w.build("r", &r, &["--explain"]);
    let why = w.ci(&["history", "--why", "r"]);
    for out in [&log, &why] {
        // (Since 2026-12-07 a first build says so: ci_rebuild::explain_of_a_first_build_...)
        assert!(out.contains("why: first build"), "{out}");
        assert!(
            !out.contains("ARG V=1") && !out.contains("argument") && !out.contains("option"),
            "{out}"
        );
    }
    // An entry of the same instruction on that parent is still the one compared.
    let r2 = w.ctx("r2", "FROM busybox\nRUN echo ho > /f\n", &[]);
    w.build("r", &r2, &[]);
    let why = w.ci(&["history", "--why", "r"]);
    assert!(
        why.contains("why: instruction text changed (cached: RUN echo hi > /f)"),
        "{why}"
    );
    // Nor do entries of other instructions on a busy parent hide the one to compare with:
    // more RUN entries on busybox than a miss compares (8), then the ARG again.
    for i in 0..9 {
        let r = w.ctx(
            &format!("run{i}"),
            &format!("FROM busybox\nRUN echo {i} > /f{i}\n"),
            &[],
        );
        w.build(&format!("run{i}"), &r, &[]);
    }
    let log = w.build("a", &a, &["--explain", "--build-arg", "V=2"]);
    assert!(log.contains("why: build argument changed: V"), "{log}");
    // So in the comparison made afterwards for a build that did not record it (a note
    // without `cache`, as an earlier Grove wrote for a --no-cache build).
    let wd = w.ctx("wd", "FROM busybox\nWORKDIR /w\n", &[]);
    w.build("wd", &wd, &["--no-cache"]);
    let (commit, mut note) = note_of(&w, "wd");
    note.as_object_mut().unwrap().remove("cache");
    set_note(&w, &commit, &note);
    let why = w.ci(&["history", "--why", "wd"]);
    assert!(why.contains("why: no other entry for this parent"), "{why}");
    assert!(!why.contains("cached:"), "{why}");
}

/// Replace the note of `commit` with `v`, as stock git would (an edit behind Grove's back,
/// or a note as an earlier Grove wrote it).
fn set_note(w: &W, commit: &str, v: &serde_json::Value) {
    let p = write_statement(w, "edited-note.json", v);
    w.git(&[
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "notes",
        "--ref=grove",
        "add",
        "-f",
        "-F",
        p.to_str().unwrap(),
        commit,
    ]);
}

/// The note of image `tag`, and its commit.
fn note_of(w: &W, tag: &str) -> (String, serde_json::Value) {
    let commit = w
        .git(&["rev-parse", &format!("refs/grove/img/{tag}+latest")])
        .trim()
        .to_string();
    let note = w.git(&["notes", "--ref=grove", "show", &commit]);
    (commit, serde_json::from_str(&note).expect("note parses"))
}

/// Regression: `history --why` of a `--no-cache` rebuild, whose step has a cache entry
/// with its own key (the build did not read it), said "same key inputs, different key (an
/// entry from another Grove version)". The note now records the cache mode; a note
/// without it (an earlier Grove's) still gets the comparison made now.
#[test]
fn history_why_of_a_no_cache_rebuild_says_the_cache_was_not_read() {
    let w = W::new("why-nocache");
    let c = w.ctx(
        "nc",
        "FROM busybox\nRUN cat /proc/sys/kernel/random/uuid > /a\n",
        &[],
    );
    w.build("t", &c, &[]);
    let first = w.git(&["rev-parse", "refs/grove/img/t+latest"]);
    w.build("t", &c, &["--no-cache"]);
    let why = w.ci(&["history", "--why", "t"]);
    assert!(why.contains("why: cache not used (--no-cache)"), "{why}");
    assert!(!why.contains("compared now"), "{why}");
    let (commit, mut note) = note_of(&w, "t");
    assert_eq!(note["cache"], "no-cache", "{note}");
    note.as_object_mut().unwrap().remove("cache");
    set_note(&w, &commit, &note);
    let why = w.ci(&["history", "--why", "t"]);
    assert!(
        why.contains(&format!(
            "why: cache entry {} has the same key: the build did not read the cache \
             (--no-cache or --rebuild) (compared now)",
            &first[..12]
        )),
        "{why}"
    );
    assert!(!why.contains("another Grove version"), "{why}");
}

/// Regression: `history --why` of a `--rebuild` build compared each step, afterwards,
/// with the other entries on its parent and named a difference that did not make it run
/// ("instruction text changed (cached: RUN echo ho > /f) (compared now)", another image's
/// step) when the rebuilt step gave the same commit as before.
#[test]
fn history_why_of_a_rebuild_says_rebuild_not_a_difference_with_another_entry() {
    let w = W::new("why-rebuild");
    let a = w.ctx("a", "FROM busybox\nRUN echo hi > /f\n", &[]);
    let b = w.ctx("b", "FROM busybox\nRUN echo ho > /f\n", &[]);
    let sde = ["--build-arg", "SOURCE_DATE_EPOCH=1700000000"];
    w.build("a", &a, &sde);
    w.build("b", &b, &sde);
    let log = w.build("a", &a, &[&sde[..], &["--rebuild", "--explain"]].concat());
    assert!(log.contains("why: cache not read (--rebuild)"), "{log}");
    let why = w.ci(&["history", "--why", "a"]);
    assert!(why.contains("why: cache not read (--rebuild)"), "{why}");
    assert!(
        !why.contains("cached:") && !why.contains("compared now"),
        "{why}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&w.ci(&["history", "--why", "--json", "a"])).unwrap();
    assert_eq!(json[0]["why"][0], "cache not read (--rebuild)", "{json}");
    assert_eq!(note_of(&w, "a").1["cache"], "rebuild");
    // A build that read the cache records no mode.
    w.build("b", &b, &sde);
    assert!(note_of(&w, "b").1.get("cache").is_none());
}

/// Regression: a RUN whose heredoc body changed was explained only as "key input
/// changed" (its record hashes the bodies only inside the key input). Now the heredoc and
/// its first differing line are named, from the Dockerfile in the cached step's build note,
/// at build time and in `history --why` (also compared afterwards, for a note without
/// `why`).
#[test]
fn a_changed_run_heredoc_body_is_named_with_its_first_differing_line() {
    let w = W::new("why-heredoc");
    let df = |second: &str| {
        format!("FROM busybox\nRUN <<EOF\necho one > /a\n{second}\nEOF\nRUN cat /a\n")
    };
    let sde = ["--build-arg", "SOURCE_DATE_EPOCH=1700000000"];
    let c1 = w.ctx("h1", &df("echo two > /b"), &[]);
    w.build("h", &c1, &sde);
    let c2 = w.ctx("h2", &df("echo TWO > /b"), &[]);
    let log = w.build("h", &c2, &[&sde[..], &["--explain"]].concat());
    let want =
        r#"why: heredoc EOF body changed at line 2: cached "echo two > /b", now "echo TWO > /b""#;
    assert!(log.contains(want), "{log}");
    assert!(!log.contains("key input changed"), "{log}");
    let why = w.ci(&["history", "--why", "h"]);
    assert!(why.contains(want), "{why}");
    // A note without `why` (an earlier Grove's): the comparison made now says the same.
    let (commit, mut note) = note_of(&w, "h");
    for st in note["steps"].as_array_mut().unwrap() {
        st.as_object_mut().unwrap().remove("why");
    }
    set_note(&w, &commit, &note);
    let why = w.ci(&["history", "--why", "h"]);
    assert!(why.contains(&format!("{want} (compared now)")), "{why}");
}

/// The id of a git object of `kind` holding `data`.
fn object_id(kind: gix::objs::Kind, data: &str) -> String {
    gix::objs::compute_hash(gix::hash::Kind::Sha1, kind, data.as_bytes())
        .expect("sha1")
        .to_string()
}

/// Write `data` into the store's repository as an object of `kind` (`git hash-object`);
/// returns its id.
fn write_object(w: &W, name: &str, kind: &str, data: &str) -> String {
    let f = w.s.join(name);
    std::fs::write(&f, data).unwrap();
    own(&f);
    let f = f.to_str().expect("UTF-8 scratch path").to_string();
    w.git(&["hash-object", "-t", kind, "-w", &f])
        .trim()
        .to_string()
}

/// A commit id prefix names a state as git names a commit (`git log PREFIX`): objects of
/// other kinds sharing it don't count; one that names only such objects, or several
/// commits, is an error saying so. Regression: a blob's prefix failed with "can't find
/// commit …: supposed to be of kind commit, but was kind blob", a blob sharing an image
/// commit's prefix made it unusable, and an ambiguous prefix read "no image or commit: …
/// caused by: Validation"; a deleted image was only "no image or commit".
#[test]
fn a_commit_id_prefix_names_one_commit_and_errors_say_what_else_it_names() {
    use gix::objs::Kind;
    let w = W::new("prefix");
    let c = w.git(&["rev-parse", "refs/grove/img/busybox+latest"]);
    let c = c.trim();
    let p4 = &c[..4];
    let blob = (0..)
        .map(|i| format!("blob {i}\n"))
        .find(|d| object_id(Kind::Blob, d).starts_with(p4))
        .expect("some content has the prefix");
    let blob = write_object(&w, "blob", "blob", &blob);
    assert!(blob.starts_with(p4), "{blob}");
    assert!(w.ci(&["history", p4]).contains("IMPORT"));
    assert_eq!(w.ci(&["diff", p4, "busybox"]), "");
    let (_, err) = fails(w.image().args(["history", &blob[..12]]));
    assert!(
        err.contains(&format!(
            "error: {} is not an image commit: it names {blob} (blob)",
            &blob[..12]
        )),
        "{err}"
    );
    let tree = w.git(&["rev-parse", &format!("{c}^{{tree}}")]);
    let other = (0..)
        .map(|i| {
            format!(
                "tree {}\nauthor X <x@localhost> 0 +0000\ncommitter X <x@localhost> 0 +0000\n\nother {i}\n",
                tree.trim()
            )
        })
        .find(|d| object_id(Kind::Commit, d).starts_with(p4))
        .expect("some commit has the prefix");
    let other = write_object(&w, "commit", "commit", &other);
    let (_, err) = fails(w.image().args(["history", p4]));
    let (first, second) = if c < other.as_str() {
        (c, other.as_str())
    } else {
        (other.as_str(), c)
    };
    assert!(
        err.contains(&format!("error: commit id prefix {p4} is ambiguous: "))
            && err.contains(&format!("{} IMPORT", &c[..12]))
            && err.contains(&format!("{} other", &other[..12]))
            && err.find(&first[..12]) < err.find(&second[..12])
            && err.contains("hint: give more digits of the commit id")
            && !err.contains("Validation"),
        "{err}"
    );
    assert!(w.ci(&["history", &c[..12]]).contains("IMPORT"));
    ok(w.image().args(["delete", "busybox"]));
    let (_, err) = fails(w.image().args(["history", "busybox"]));
    assert!(
        err.contains("error: no image or commit: busybox")
            && err.contains("hint: busybox was deleted; `ch-image undelete busybox` restores it"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// In-toto / SLSA provenance statements (issue 16 point 4): `inspect --provenance`, `verify`.

/// A context with a Dockerfile that copies a file and a directory, takes build arguments
/// (one of them secret-looking) and runs a command.
fn attest_ctx(w: &W, name: &str) -> PathBuf {
    let d = w.ctx(
        name,
        "FROM busybox\nARG V=1\nARG API_TOKEN\nCOPY a.txt sub /d/\nRUN echo $V > /v\n",
        &[("a.txt", "hello\n")],
    );
    std::fs::create_dir_all(d.join("sub")).unwrap();
    std::fs::write(d.join("sub/b"), "bee\n").unwrap();
    own(&d);
    d
}

const ATTEST_ARGS: &[&str] = &[
    "--build-arg",
    "V=2",
    "--build-arg",
    "API_TOKEN=hunter2",
    "--build-arg",
    "SOURCE_DATE_EPOCH=1700000000",
];

fn statement_in(w: &W, storage: &Path, image: &str) -> serde_json::Value {
    let out = ok(w.image_in(storage).args(["inspect", "--provenance", image]));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("statement is not JSON: {e}\n{out}"))
}

/// The statement without what differs between two builds of the same inputs.
fn without_run_metadata(mut v: serde_json::Value) -> serde_json::Value {
    v["predicate"]["runDetails"]
        .as_object_mut()
        .expect("runDetails")
        .remove("metadata");
    v
}

/// The context-file entries of a statement: name -> sha256.
fn context_files(v: &serde_json::Value) -> Vec<(String, String)> {
    v["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .expect("resolvedDependencies")
        .iter()
        .filter(|d| d["annotations"]["grove.kind"] == "context")
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_string(),
                d["digest"]["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn sha256_of(p: &Path) -> String {
    let out = ok(Command::new("sha256sum").arg(p));
    out.split_whitespace().next().unwrap().to_string()
}

#[test]
fn provenance_statement_names_inputs_and_is_the_same_from_two_stores_but_for_times() {
    let w = W::new("attest-two");
    let ctx = attest_ctx(&w, "a");
    let other = w.s.join("storage2");
    ok(w.image_in(&other)
        .arg("import")
        .arg(busybox_rootfs())
        .arg("busybox"));
    w.build("app", &ctx, ATTEST_ARGS);
    w.build_in(&other, "app", &ctx, ATTEST_ARGS);
    let one = statement_in(&w, &w.storage(), "app");
    let two = statement_in(&w, &other, "app");
    // Times and invocation id are there, and they are all that differs.
    let meta = &one["predicate"]["runDetails"]["metadata"];
    for k in ["invocationId", "startedOn", "finishedOn"] {
        assert!(meta[k].is_string(), "{k} missing: {one:#}");
    }
    assert_ne!(
        meta["invocationId"],
        two["predicate"]["runDetails"]["metadata"]["invocationId"]
    );
    assert_eq!(without_run_metadata(one.clone()), without_run_metadata(two));

    assert_eq!(one["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(one["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(one["subject"][0]["name"], "app:latest");
    let def = &one["predicate"]["buildDefinition"];
    let ext = &def["externalParameters"];
    assert_eq!(ext["dockerfile"]["path"], "Dockerfile");
    assert_eq!(
        ext["dockerfile"]["digest"]["sha256"],
        sha256_of(&ctx.join("Dockerfile")).as_str()
    );
    assert_eq!(ext["buildArgs"]["V"], "2");
    // A secret-looking build argument is left out, its value nowhere.
    assert!(ext["buildArgs"].get("API_TOKEN").is_none(), "{ext:#}");
    assert_eq!(ext["buildArgsRedacted"], serde_json::json!(["API_TOKEN"]));
    assert!(!one.to_string().contains("hunter2"));
    // Every context file COPY read, with the digests sha256sum and git give.
    assert_eq!(
        context_files(&one),
        [
            ("a.txt".to_string(), sha256_of(&ctx.join("a.txt"))),
            ("sub/b".to_string(), sha256_of(&ctx.join("sub/b"))),
        ]
    );
    let blob = ok(unpriv("git")
        .args(["hash-object", "--no-filters"])
        .arg(ctx.join("a.txt")));
    let deps = def["resolvedDependencies"].as_array().unwrap();
    let a = deps.iter().find(|d| d["name"] == "a.txt").unwrap();
    assert_eq!(a["digest"]["gitBlob"], blob.trim());
    // The base, by name, with its commit and the manifest digest of its OCI form.
    let base = deps.iter().find(|d| d["name"] == "busybox").unwrap();
    let base_commit = w.git(&["rev-parse", "refs/grove/img/busybox+latest"]);
    assert_eq!(base["digest"]["gitCommit"], base_commit.trim());
    let oci = w.s.join("busybox.oci");
    ok(tool("ch-convert")
        .arg("-s")
        .arg(w.storage())
        .args(["-o", "oci", "busybox"])
        .arg(&oci));
    assert_eq!(
        format!("sha256:{}", base["digest"]["sha256"].as_str().unwrap()),
        oci_manifest_digest(&oci)
    );
    let b = &one["predicate"]["runDetails"]["builder"];
    assert_eq!(b["version"]["grove"], env!("CARGO_PKG_VERSION"));
}

/// The manifest digest an OCI layout's index.json names.
fn oci_manifest_digest(layout: &Path) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn provenance_subject_is_the_manifest_digest_ch_convert_writes() {
    let w = W::new("attest-subject");
    let ctx = attest_ctx(&w, "s");
    w.build("app", &ctx, ATTEST_ARGS);
    let st = statement_in(&w, &w.storage(), "app");
    let oci = w.s.join("app.oci");
    ok(tool("ch-convert")
        .arg("-s")
        .arg(w.storage())
        .args(["-o", "oci", "app"])
        .arg(&oci));
    assert_eq!(
        format!(
            "sha256:{}",
            st["subject"][0]["digest"]["sha256"].as_str().unwrap()
        ),
        oci_manifest_digest(&oci)
    );
    // The commit is a byproduct.
    let commit = w.git(&["rev-parse", "refs/grove/img/app+latest"]);
    assert_eq!(
        st["predicate"]["runDetails"]["byproducts"][0]["digest"]["gitCommit"],
        commit.trim()
    );
}

fn verify(w: &W, image: &str, statement: &Path) -> (bool, String, String) {
    let out = output(w.image().arg("verify").arg(image).arg(statement));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_statement(w: &W, name: &str, v: &serde_json::Value) -> PathBuf {
    let p = w.s.join(name);
    std::fs::write(&p, serde_json::to_string_pretty(v).unwrap()).unwrap();
    own(&p);
    p
}

#[test]
fn verify_passes_on_a_fresh_statement_and_names_each_edited_field() {
    let w = W::new("attest-verify");
    let ctx = attest_ctx(&w, "v");
    w.build("app", &ctx, ATTEST_ARGS);
    let st = statement_in(&w, &w.storage(), "app");
    let fresh = write_statement(&w, "fresh.json", &st);
    let (pass, out, err) = verify(&w, "app", &fresh);
    assert!(pass, "{out}\n{err}");
    assert!(!out.contains("mismatch"), "{out}");
    assert!(out.lines().all(|l| l.starts_with("match ")), "{out}");
    assert!(out.contains("match          subject[0].digest"), "{out}");

    // A changed context-file digest: fails, naming the dependency and the digest.
    let mut edited = st.clone();
    let deps = edited["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array_mut()
        .unwrap();
    let a = deps.iter_mut().find(|d| d["name"] == "a.txt").unwrap();
    a["digest"]["sha256"] = serde_json::json!("0".repeat(64));
    let p = write_statement(&w, "edited.json", &edited);
    let (pass, out, err) = verify(&w, "app", &p);
    assert!(!pass, "{out}");
    let bad: Vec<&str> = out.lines().filter(|l| l.starts_with("mismatch")).collect();
    assert_eq!(bad.len(), 1, "{out}");
    assert!(
        bad[0].contains("context file a.txt (instruction 4)"),
        "{out}"
    );
    assert!(bad[0].contains("sha256: statement has \"000"), "{out}");
    assert!(
        err.contains("does not match app: 1 claim(s) differ"),
        "{err}"
    );

    // A changed subject digest, a changed build argument, an added parameter.
    let mut edited = st.clone();
    edited["subject"][0]["digest"]["sha256"] = serde_json::json!("1".repeat(64));
    edited["predicate"]["buildDefinition"]["externalParameters"]["buildArgs"]["V"] =
        serde_json::json!("3");
    edited["predicate"]["buildDefinition"]["externalParameters"]["extra"] = serde_json::json!("x");
    let p = write_statement(&w, "edited2.json", &edited);
    let (pass, out, _) = verify(&w, "app", &p);
    assert!(!pass);
    for f in [
        "mismatch       subject[0].digest: sha256",
        "mismatch       predicate.buildDefinition.externalParameters.buildArgs:",
        "mismatch       predicate.buildDefinition.externalParameters.extra:",
    ] {
        assert!(out.contains(f), "{f} not in:\n{out}");
    }

    // A dependency the build did not have, and one left out.
    let mut edited = st.clone();
    let deps = edited["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array_mut()
        .unwrap();
    deps.retain(|d| d["name"] != "sub/b");
    deps.push(
        serde_json::json!({"name": "evil", "digest": {"sha256": "00"},
        "annotations": {"grove.kind": "context", "grove.instruction": 4}}),
    );
    let p = write_statement(&w, "edited3.json", &edited);
    let (pass, out, _) = verify(&w, "app", &p);
    assert!(!pass);
    assert!(
        out.contains("(context file sub/b (instruction 4)): missing from the statement"),
        "{out}"
    );
    assert!(
        out.contains("(context file evil (instruction 4)): not in the image's build record"),
        "{out}"
    );

    // Not JSON: a clear error naming the file.
    let p = w.s.join("garbage.json");
    std::fs::write(&p, "not json").unwrap();
    let (code, err) = fails(w.image().arg("verify").arg("app").arg(&p));
    assert_eq!(code, 1);
    assert!(err.contains("garbage.json: not a JSON statement"), "{err}");
}

#[test]
fn verify_fails_after_a_rebuild_with_a_changed_context_file() {
    let w = W::new("attest-rebuild");
    let ctx = attest_ctx(&w, "r");
    w.build("app", &ctx, ATTEST_ARGS);
    let st = statement_in(&w, &w.storage(), "app");
    let p = write_statement(&w, "st.json", &st);
    // An all-hit rebuild: another build of the same image; its times can't be checked,
    // everything else matches.
    w.build("app", &ctx, ATTEST_ARGS);
    let (pass, out, err) = verify(&w, "app", &p);
    assert!(pass, "{out}\n{err}");
    assert!(
        out.contains("not checkable  predicate.runDetails.metadata.startedOn: the store's record is of another build"),
        "{out}"
    );
    std::fs::write(ctx.join("a.txt"), "changed\n").unwrap();
    w.build("app", &ctx, ATTEST_ARGS);
    let (pass, out, err) = verify(&w, "app", &p);
    assert!(!pass, "{out}");
    assert!(
        out.contains("mismatch       subject[0].digest: sha256"),
        "{out}"
    );
    assert!(
        out.contains("(context file a.txt (instruction 4)): gitBlob: statement has"),
        "{out}"
    );
    assert!(
        out.contains(
            "match          predicate.buildDefinition.resolvedDependencies[2] (context file sub/b"
        ),
        "{out}"
    );
    assert!(err.contains("subject[0].digest"), "{err}");
}

#[test]
fn verify_checks_the_build_record_against_the_step_commit() {
    // A note edited behind Grove's back (a context file's recorded digests replaced by
    // another file's) no longer agrees with the step's commit, and verify says so.
    let w = W::new("attest-tamper");
    let ctx = attest_ctx(&w, "t");
    w.build("app", &ctx, ATTEST_ARGS);
    let commit = w.git(&["rev-parse", "refs/grove/img/app+latest"]);
    let commit = commit.trim();
    let note = w.git(&["notes", "--ref=grove", "show", commit]);
    let mut v: serde_json::Value = serde_json::from_str(&note).unwrap();
    let fake_blob = "a".repeat(40);
    for s in v["steps"].as_array_mut().unwrap() {
        for f in s["files"].as_array_mut().into_iter().flatten() {
            if f["path"] == "a.txt" {
                f["git_blob"] = serde_json::json!(fake_blob);
            }
        }
    }
    let p = write_statement(&w, "note.json", &v);
    w.git(&[
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "notes",
        "--ref=grove",
        "add",
        "-f",
        "-F",
        p.to_str().unwrap(),
        commit,
    ]);
    let st = statement_in(&w, &w.storage(), "app");
    let p = write_statement(&w, "st.json", &st);
    let (pass, out, _) = verify(&w, "app", &p);
    assert!(!pass, "{out}");
    assert!(
        out.contains("(context file a.txt (instruction 4)): the step's commit"),
        "{out}"
    );
    assert!(
        out.contains(&format!("holds no file with blob {fake_blob}")),
        "{out}"
    );
}

#[test]
fn version_1_notes_still_give_a_statement_with_what_they_hold() {
    let w = W::new("attest-v1");
    let ctx = attest_ctx(&w, "v1");
    w.build("app", &ctx, ATTEST_ARGS);
    let commit = w.git(&["rev-parse", "refs/grove/img/app+latest"]);
    let commit = commit.trim();
    // Rewrite the note as Grove 0.1 of the first notes wrote it: version 1 fields only.
    let note = w.git(&["notes", "--ref=grove", "show", commit]);
    let mut v: serde_json::Value = serde_json::from_str(&note).unwrap();
    let o = v.as_object_mut().unwrap();
    for k in [
        "builder_version",
        "dockerfile_path",
        "dockerfile_sha256",
        "finished",
        "force",
        "invocation",
        "source_date_epoch",
        "started",
        "xattrs",
    ] {
        o.remove(k);
    }
    o.insert("version".into(), serde_json::json!(1));
    for s in o["steps"].as_array_mut().unwrap() {
        s.as_object_mut().unwrap().remove("files");
    }
    for b in o["bases"].as_array_mut().unwrap() {
        b.as_object_mut().unwrap().remove("digest");
    }
    let p = write_statement(&w, "note.json", &v);
    w.git(&[
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "notes",
        "--ref=grove",
        "add",
        "-f",
        "-F",
        p.to_str().unwrap(),
        commit,
    ]);
    // history and inspect still read it.
    let text = w.ci(&["inspect", "app"]);
    assert!(text.contains("build arg:    V=2"), "{text}");
    let st = statement_in(&w, &w.storage(), "app");
    let ext = &st["predicate"]["buildDefinition"]["externalParameters"];
    assert_eq!(
        ext["dockerfile"]["digest"]["sha256"],
        sha256_of(&ctx.join("Dockerfile")).as_str()
    );
    assert!(context_files(&st).is_empty());
    assert_eq!(
        st["predicate"]["buildDefinition"]["internalParameters"]["noteVersion"],
        1
    );
    let p = write_statement(&w, "st.json", &st);
    let (pass, out, err) = verify(&w, "app", &p);
    assert!(pass, "{out}\n{err}");
    assert!(
        out.contains("not checkable  predicate.runDetails.builder.version"),
        "{out}"
    );
}

#[test]
fn inspect_provenance_of_an_image_not_built_is_a_clear_error() {
    let w = W::new("attest-import");
    let (code, err) = fails(w.image().args(["inspect", "--provenance", "busybox"]));
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "error: busybox: no build provenance note: it was imported, not built (directory \
             {} as busybox:latest at 20",
            busybox_rootfs().display()
        )),
        "{err}"
    );
    assert!(
        err.contains("hint: `ch-image inspect busybox` shows its import note"),
        "{err}"
    );
}

/// Regression: `inspect --provenance` of a build whose Dockerfile is only `FROM app` said
/// there was no note without saying why (such a build gives app's commit and writes no
/// note, so as not to replace app's). It now says so and points to the note the commit
/// has: app's import note, or app's build note, whose statement it gives, saying whose.
/// An intermediate state names the build whose note records it.
#[test]
fn inspect_provenance_of_a_from_only_build_says_why_and_points_to_the_base_s_note() {
    let w = W::new("from-only-why");
    let only = w.ctx("only", "FROM busybox\n", &[]);
    w.build("bb2", &only, &[]);
    let bb = w.git(&["rev-parse", "refs/grove/img/busybox+latest"]);
    let (_, err) = fails(w.image().args(["inspect", "--provenance", "bb2"]));
    assert!(
        err.contains(&format!(
            "error: bb2: no build provenance note: its commit ({}) is busybox's, which a build \
             of only `FROM busybox` gives, and such a build writes no note, so as not to \
             replace its base's; that commit has an import note (directory {} as \
             busybox:latest at 20",
            &bb[..12],
            busybox_rootfs().display()
        )),
        "{err}"
    );
    assert!(
        err.contains("hint: `ch-image inspect bb2` shows the import note"),
        "{err}"
    );
    // history --why says the same (it said "no build provenance note readable here").
    let (_, why) = fails(w.image().args(["history", "--why", "bb2"]));
    assert!(
        why.contains(&format!(
            "error: bb2: no build provenance note: its commit ({}) is busybox's",
            &bb[..12]
        )),
        "{why}"
    );
    // On a built image: its statement, saying on stderr whose build it is.
    let app = w.ctx("app", "FROM busybox\nRUN echo hi > /f\n", &[]);
    w.build("app", &app, &[]);
    let only = w.ctx("only2", "FROM app\n", &[]);
    w.build("app2", &only, &[]);
    let out = output(w.image().args(["inspect", "--provenance", "app2"]));
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["subject"][0]["name"], "app:latest", "{v}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "app2: the statement is of the build of app:latest (app2:latest has no note of its \
             own: a build of only `FROM app` gives its base's commit and writes no note)"
        ),
        "{err}"
    );
    // An intermediate state: which build's note records it.
    let app = w.ctx(
        "app3",
        "FROM busybox\nRUN echo hey > /f\nRUN echo ho > /g\n",
        &[],
    );
    w.build("app3", &app, &[]);
    let app3 = w.git(&["rev-parse", "refs/grove/img/app3+latest"]);
    let (_, err) = fails(w.image().args(["inspect", "--provenance", "app3~1"]));
    assert!(
        err.contains(&format!(
            "error: app3~1: no build provenance note: it is an intermediate state, step 2 \
             (RUN echo hey > /f) of the build of app3:latest (commit {}), whose note is on \
             that image's commit only",
            &app3[..12]
        )),
        "{err}"
    );
    assert!(
        err.contains("hint: `ch-image inspect --provenance app3` gives that build's statement"),
        "{err}"
    );
}

/// Regression: `ch-image import FILE NAME` recorded nowhere what it read; `inspect` now
/// shows the path as given and the file's sha256 (a directory: its path), from the
/// import note on the image's commit, per name when one content is imported twice.
#[test]
fn import_records_the_path_and_the_tarball_s_digest_and_inspect_shows_them() {
    let w = W::new("import-note");
    let tarball = w.s.join("bb.tar");
    let st = sh(&format!(
        "tar -C {} -cf {} . && chown 65534:65534 {}",
        busybox_rootfs().display(),
        tarball.display(),
        tarball.display()
    ));
    assert!(st.status.success(), "{st:?}");
    ok(w.image().arg("import").arg(&tarball).arg("fromtar"));
    let digest = sha256_of(&tarball);
    let text = w.ci(&["inspect", "fromtar"]);
    let line = text
        .lines()
        .find(|l| l.starts_with("imported:"))
        .unwrap_or_else(|| panic!("no imported line:\n{text}"));
    assert!(
        line.starts_with(&format!(
            "imported:     tarball {}, sha256:{digest} as fromtar:latest at 20",
            tarball.display()
        )),
        "{line}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&w.ci(&["inspect", "--json", "fromtar"])).unwrap();
    let i = &v["imported"][0];
    assert_eq!(i["path"], tarball.to_str().unwrap(), "{v}");
    assert_eq!(i["sha256"], digest.as_str(), "{v}");
    assert_eq!(i["kind"], "tarball", "{v}");
    // W::new imported the busybox directory as `busybox`; a tarball of the same tree is
    // the same commit, so that commit's note names both, and each name shows its own.
    let text = w.ci(&["inspect", "busybox"]);
    assert!(
        text.contains(&format!(
            "imported:     directory {} as busybox:latest at",
            busybox_rootfs().display()
        )),
        "{text}"
    );
    assert!(!text.contains("sha256:"), "{text}");
    let commit = w.git(&["rev-parse", "refs/grove/img/fromtar+latest"]);
    let note: serde_json::Value =
        serde_json::from_str(&w.git(&["notes", "--ref=grove", "show", commit.trim()])).unwrap();
    assert_eq!(note["kind"], "import", "{note}");
    assert_eq!(note["imports"].as_array().unwrap().len(), 2, "{note}");
    // By commit id: every import of it.
    let text = w.ci(&["inspect", commit.trim()]);
    assert_eq!(text.matches("imported:").count(), 2, "{text}");
    // history says it too: in full in --json, the digest's first 12 digits in text.
    let h = history_json(&w, "fromtar");
    assert_eq!(h[0]["imported"].as_array().unwrap().len(), 2, "{h:?}");
    let line = &history_lines(&w, "fromtar")[0];
    assert!(
        line.contains(&format!(
            "IMPORT (directory {}; tarball {} sha256:{})",
            busybox_rootfs().display(),
            tarball.display(),
            &digest[..12]
        )),
        "{line}"
    );
    // It is no build provenance.
    let (_, err) = fails(w.image().args(["inspect", "--provenance", "fromtar"]));
    assert!(err.contains("no build provenance note"), "{err}");
}

/// Regression: a Dockerfile that only names its base (`FROM app`) gives the base's own
/// commit, and its build replaced that commit's note with its own: `inspect app` then
/// showed `FROM app` as app's Dockerfile, `history --why app` listed no step, and
/// `inspect --provenance app` claimed app was built from it (so for an imported base, whose
/// import note it replaced). Such a build now writes no note.
#[test]
fn a_build_of_only_from_keeps_the_base_s_own_note() {
    let w = W::new("from-only");
    let app = w.ctx("app", "FROM busybox\nRUN echo hi > /f\n", &[]);
    w.build("app", &app, &[]);
    let before = note_of(&w, "app");
    let only = w.ctx("only", "FROM app\n", &[]);
    w.build("app2", &only, &[]);
    let imp = w.ctx("imp", "FROM busybox\n", &[]);
    w.build("bb2", &imp, &[]);
    assert_eq!(note_of(&w, "app"), before);
    let text = w.ci(&["inspect", "app"]);
    assert!(text.contains("  RUN echo hi > /f"), "{text}");
    assert!(!text.contains("  FROM app"), "{text}");
    let why = w.ci(&["history", "--why", "app"]);
    assert!(why.contains("RUN echo hi > /f"), "{why}");
    let text = w.ci(&["inspect", "busybox"]);
    assert!(text.contains("imported:     directory"), "{text}");
    assert!(!text.contains("dockerfile"), "{text}");
}

/// Regression: an ENV (or an ARG default) with a secret-looking name was not warned about,
/// though its value is stored in the image's config and the note's Dockerfile (BuildKit's
/// SecretsUsedInArgOrEnv warns). The value is kept: the image needs it.
#[test]
fn secret_looking_env_and_arg_default_warn_with_their_line_and_env_is_kept() {
    let w = W::new("secret-env");
    let c = w.ctx(
        "se",
        "FROM busybox\nARG DB_PASSWORD=hunter2\nENV API_TOKEN=abc123 PUBLIC_KEY=k\n",
        &[],
    );
    let log = w.build("se", &c, &[]);
    let df = c.join("Dockerfile");
    assert!(
        log.contains(&format!(
            "warning: {}:2: ARG DB_PASSWORD: its default is stored",
            df.display()
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "warning: {}:3: ENV API_TOKEN: its value is stored in the image's config",
            df.display()
        )),
        "{log}"
    );
    let warnings: Vec<&str> = log.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 2, "{log}");
    assert!(
        warnings
            .iter()
            .all(|l| !l.contains("PUBLIC_KEY") && !l.contains("abc123") && !l.contains("hunter2")),
        "{log}"
    );
    assert!(w
        .ci(&["inspect", "se"])
        .contains("env:          API_TOKEN=abc123"));
}

/// Regression: text `inspect` of a multi-stage build listed one `base:` line per stage
/// without saying which stage each was of, nor which is the image's.
#[test]
fn inspect_labels_each_base_with_its_stage_in_a_multi_stage_build() {
    let w = W::new("inspect-stages");
    let c = w.ctx(
        "ms",
        "FROM busybox AS build\nRUN echo hi > /x\nFROM build AS two\nRUN echo ho > /z\n\
         FROM busybox\nCOPY --from=two /x /y\n",
        &[],
    );
    w.build("ms", &c, &[]);
    let busybox = w.git(&["rev-parse", "refs/grove/img/busybox+latest"]);
    let build = w.git(&["rev-parse", "refs/grove/img/ms_stage0+latest"]);
    let text = w.ci(&["inspect", "ms"]);
    let bases: Vec<&str> = text.lines().filter(|l| l.starts_with("base:")).collect();
    assert_eq!(
        bases,
        [
            format!(
                "base:         stage 0 (AS build): busybox ({})",
                busybox.trim()
            ),
            format!("base:         stage 1 (AS two): build ({})", build.trim()),
            format!(
                "base:         stage 2 (the image): busybox ({})",
                busybox.trim()
            ),
        ],
        "{text}"
    );
}

/// Regression: a stage whose base became another image (`FROM ${BASE}` with another
/// `--build-arg BASE`) was explained only as "no entry for this parent", though the note
/// of the image's last build names the base it had.
#[test]
fn why_names_the_other_image_a_stage_s_base_became() {
    let w = W::new("why-base-arg");
    let other = crate::common::busybox_copy(&w.s, "other-root");
    std::fs::write(other.join("extra"), "x\n").unwrap();
    own(&other);
    ok(w.image().arg("import").arg(&other).arg("other"));
    let c = w.ctx(
        "ba",
        "ARG BASE=busybox\nFROM ${BASE}\nWORKDIR /src\nRUN true\n",
        &[],
    );
    w.build("ba", &c, &[]);
    let log = w.build("ba", &c, &["--explain", "--build-arg", "BASE=other"]);
    let bb = w.git(&["rev-parse", "refs/grove/img/busybox+latest"]);
    let ot = w.git(&["rev-parse", "refs/grove/img/other+latest"]);
    let want = format!(
        "why: no entry for this parent: the stage's base is another image (was busybox \
         (commit {}), now other (commit {}))",
        &bb[..12],
        &ot[..12]
    );
    assert!(log.contains(&want), "{log}");
    assert!(w.ci(&["history", "--why", "ba"]).contains(&want));
}

/// Regression: `history --why` of a stage's image (`TAG_stage0`) or an earlier state
/// (`TAG~1`) failed ("no build provenance note readable here"), though the final image's
/// note records their steps. It now shows that build's steps up to the state's.
#[test]
fn history_why_of_a_stage_image_or_an_earlier_state_reads_the_build_s_note() {
    let w = W::new("why-stage");
    let c = w.ctx(
        "st",
        "FROM busybox AS a\nRUN echo a > /a\nRUN echo b > /b\nFROM busybox\n\
         COPY --from=a /a /a\nENV X=1\n",
        &[],
    );
    w.build("st", &c, &[]);
    let out = output(w.image().args(["history", "--why", "st_stage0"]));
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let steps: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("why:") && !l.starts_with("stage "))
        .collect();
    assert_eq!(
        steps,
        ["  2 run RUN echo a > /a", "  3 run RUN echo b > /b"],
        "{text}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("st_stage0: from the build note of st:latest ("),
        "{err}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&w.ci(&["history", "--why", "--json", "st~1"])).unwrap();
    let ns: Vec<u64> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, [2, 3, 5], "{json}");
    // A state no note names is still an error that says so.
    let (_, err) = fails(w.image().args(["history", "--why", "busybox"]));
    assert!(err.contains("busybox: no build provenance note"), "{err}");
    // A COPY --from whose stage changed names the stage (it said "--from stage").
    let c = w.ctx(
        "st",
        "FROM busybox AS a\nRUN echo a > /a\nRUN echo B > /b\nFROM busybox\n\
         COPY --from=a /a /a\nENV X=1\n",
        &[],
    );
    let log = w.build("st", &c, &["--explain"]);
    assert!(
        log.contains("why: sources changed: --from=a (its result is another commit)"),
        "{log}"
    );
}

/// Regression: a changed RUN of a multi-stage build was explained against another stage's
/// RUN on the same base ("instruction text changed (cached: RUN echo other > /o)"): every
/// RUN entry on busybox differs from it in text alike, and the newest won the tie. The
/// step's own entry in the image's last build now does.
#[test]
fn why_of_a_changed_run_names_its_own_earlier_text_not_another_stage_s() {
    let w = W::new("why-own");
    let df = |v: &str| {
        format!(
            "FROM busybox AS a\nRUN echo {v} > /x\nFROM busybox\nRUN echo other > /o\n\
             COPY --from=a /x /x\n"
        )
    };
    let c = w.ctx("own", &df("one"), &[]);
    w.build("own", &c, &[]);
    let c = w.ctx("own", &df("two"), &[]);
    let log = w.build("own", &c, &["--explain"]);
    assert!(
        log.contains("why: instruction text changed (cached: RUN echo one > /x)"),
        "{log}"
    );
    assert!(!log.contains("cached: RUN echo other"), "{log}");
}

/// A small JSON Schema checker for the keywords fixtures/provenance/grove-statement-schema.json
/// uses (no JSON Schema crate builds offline with the MSRV here); an unknown keyword is a
/// test failure, not silently ignored. Returns the problems found, each with its path.
mod schema {
    use serde_json::Value;

    const KNOWN: &[&str] = &[
        "$schema",
        "$id",
        "$comment",
        "$defs",
        "$ref",
        "title",
        "type",
        "required",
        "properties",
        "additionalProperties",
        "items",
        "const",
        "minItems",
        "minProperties",
        "minLength",
        "anyOf",
        "allOf",
        "format",
    ];

    pub fn check(root: &Value, schema: &Value, v: &Value, path: &str, out: &mut Vec<String>) {
        let s = schema.as_object().expect("schema is an object");
        for k in s.keys() {
            assert!(
                KNOWN.contains(&k.as_str()),
                "schema keyword {k} not supported"
            );
        }
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let name = r.strip_prefix("#/$defs/").expect("local $ref");
            check(root, &root["$defs"][name], v, path, out);
        }
        if let Some(t) = s.get("type").and_then(Value::as_str) {
            let ok = match t {
                "object" => v.is_object(),
                "array" => v.is_array(),
                "string" => v.is_string(),
                "integer" => v.is_i64() || v.is_u64(),
                "number" => v.is_number(),
                "boolean" => v.is_boolean(),
                other => panic!("type {other} not supported"),
            };
            if !ok {
                out.push(format!("{path}: not of type {t}: {v}"));
                return;
            }
        }
        if let Some(c) = s.get("const") {
            if v != c {
                out.push(format!("{path}: {v} is not {c}"));
            }
        }
        if let Some(n) = s.get("minLength").and_then(Value::as_u64) {
            if v.as_str().is_some_and(|x| (x.chars().count() as u64) < n) {
                out.push(format!("{path}: shorter than {n}"));
            }
        }
        if s.get("format").and_then(Value::as_str) == Some("date-time") {
            if let Some(x) = v.as_str() {
                if !is_rfc3339(x) {
                    out.push(format!("{path}: not an RFC 3339 date-time: {x}"));
                }
            }
        }
        for sub in s
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            check(root, sub, v, path, out);
        }
        if let Some(any) = s.get("anyOf").and_then(Value::as_array) {
            let fits = any.iter().any(|sub| {
                let mut o = Vec::new();
                check(root, sub, v, path, &mut o);
                o.is_empty()
            });
            if !fits {
                out.push(format!("{path}: matches none of anyOf"));
            }
        }
        if let Some(o) = v.as_object() {
            for r in s
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let r = r.as_str().expect("required names");
                if !o.contains_key(r) {
                    out.push(format!("{path}: missing required {r}"));
                }
            }
            if let Some(n) = s.get("minProperties").and_then(Value::as_u64) {
                if (o.len() as u64) < n {
                    out.push(format!("{path}: fewer than {n} properties"));
                }
            }
            let props = s.get("properties").and_then(Value::as_object);
            for (k, x) in o {
                match props.and_then(|p| p.get(k)) {
                    Some(sub) => check(root, sub, x, &format!("{path}.{k}"), out),
                    None => match s.get("additionalProperties") {
                        Some(Value::Bool(false)) => {
                            out.push(format!("{path}: unexpected property {k}"))
                        }
                        Some(sub @ Value::Object(_)) => {
                            check(root, sub, x, &format!("{path}.{k}"), out)
                        }
                        _ => {}
                    },
                }
            }
        }
        if let Some(a) = v.as_array() {
            if let Some(n) = s.get("minItems").and_then(Value::as_u64) {
                if (a.len() as u64) < n {
                    out.push(format!("{path}: fewer than {n} items"));
                }
            }
            if let Some(sub) = s.get("items") {
                for (i, x) in a.iter().enumerate() {
                    check(root, sub, x, &format!("{path}[{i}]"), out);
                }
            }
        }
    }

    /// `YYYY-MM-DDThh:mm:ss[.frac](Z|+hh:mm|-hh:mm)`, fields in range.
    fn is_rfc3339(s: &str) -> bool {
        let b = s.as_bytes();
        let digits = |r: std::ops::Range<usize>| {
            b.get(r.clone())
                .is_some_and(|x| x.iter().all(u8::is_ascii_digit))
                .then(|| s[r].parse::<u32>().unwrap_or(99))
        };
        let (Some(_), Some(mo), Some(d), Some(h), Some(mi), Some(se)) = (
            digits(0..4),
            digits(5..7),
            digits(8..10),
            digits(11..13),
            digits(14..16),
            digits(17..19),
        ) else {
            return false;
        };
        if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') || b.get(10) != Some(&b'T') {
            return false;
        }
        if b.get(13) != Some(&b':') || b.get(16) != Some(&b':') {
            return false;
        }
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
            return false;
        }
        let mut rest = &s[19..];
        if let Some(frac) = rest.strip_prefix('.') {
            let n = frac.bytes().take_while(u8::is_ascii_digit).count();
            if n == 0 {
                return false;
            }
            rest = &frac[n..];
        }
        rest == "Z"
            || (rest.len() == 6
                && (rest.starts_with('+') || rest.starts_with('-'))
                && rest.as_bytes()[3] == b':')
    }

    /// The JSON field names of each message of a .proto file (lowerCamelCase, or the
    /// `json_name` given).
    pub fn proto_fields(text: &str) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for line in text.lines().map(str::trim) {
            if let Some(m) = line.strip_prefix("message ") {
                out.push((m.trim_end_matches('{').trim().to_string(), Vec::new()));
                continue;
            }
            if line.starts_with("//") || !line.contains(" = ") || !line.ends_with(';') {
                continue;
            }
            let Some((_, fields)) = out.last_mut() else {
                continue;
            };
            let before_eq = line.split(" = ").next().unwrap();
            let name = before_eq.split_whitespace().last().unwrap();
            let json = match line.split("json_name = \"").nth(1) {
                Some(j) => j.split('"').next().unwrap().to_string(),
                None => {
                    let mut s = String::new();
                    let mut up = false;
                    for c in name.chars() {
                        if c == '_' {
                            up = true;
                        } else if up {
                            s.push(c.to_ascii_uppercase());
                            up = false;
                        } else {
                            s.push(c);
                        }
                    }
                    s
                }
            };
            fields.push(json);
        }
        out
    }
}

#[test]
fn provenance_statement_has_the_shape_the_published_schemas_give() {
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/provenance");
    let schema: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fx.join("grove-statement-schema.json")).unwrap())
            .unwrap();
    // Our schema names exactly the fields of the published protos.
    for (file, messages) in [
        ("statement.proto", vec![("Statement", "")]),
        (
            "resource_descriptor.proto",
            vec![("ResourceDescriptor", "ResourceDescriptor")],
        ),
        (
            "provenance.proto",
            vec![
                ("Provenance", "Provenance"),
                ("BuildDefinition", "BuildDefinition"),
                ("RunDetails", "RunDetails"),
                ("Builder", "Builder"),
                ("BuildMetadata", "BuildMetadata"),
            ],
        ),
    ] {
        let fields = schema::proto_fields(&std::fs::read_to_string(fx.join(file)).unwrap());
        for (message, def) in messages {
            let (_, want) = fields
                .iter()
                .find(|(m, _)| m == message)
                .unwrap_or_else(|| panic!("{file}: no message {message}"));
            let node = if def.is_empty() {
                &schema
            } else {
                &schema["$defs"][def]
            };
            let mut have: Vec<String> = node["properties"]
                .as_object()
                .unwrap_or_else(|| panic!("schema has no properties for {message}"))
                .keys()
                .cloned()
                .collect();
            let mut want = want.clone();
            have.sort();
            want.sort();
            assert_eq!(have, want, "{file}: {message}");
        }
    }

    let w = W::new("attest-schema");
    let ctx = attest_ctx(&w, "sc");
    w.build("app", &ctx, ATTEST_ARGS);
    let st = statement_in(&w, &w.storage(), "app");
    let mut problems = Vec::new();
    schema::check(&schema, &schema, &st, "$", &mut problems);
    assert!(problems.is_empty(), "{problems:#?}\n{st:#}");
    // The checker does fail: a statement without a build type, with a bad time and a
    // subject without a digest.
    let mut bad = st.clone();
    bad["predicate"]["buildDefinition"]
        .as_object_mut()
        .unwrap()
        .remove("buildType");
    bad["predicate"]["runDetails"]["metadata"]["startedOn"] = serde_json::json!("yesterday");
    bad["subject"][0].as_object_mut().unwrap().remove("digest");
    let mut problems = Vec::new();
    schema::check(&schema, &schema, &bad, "$", &mut problems);
    for want in [
        "$.predicate.buildDefinition: missing required buildType",
        "$.predicate.runDetails.metadata.startedOn: not an RFC 3339 date-time: yesterday",
        "$.subject[0]: missing required digest",
    ] {
        assert!(problems.iter().any(|p| p == want), "{want}: {problems:#?}");
    }
}

#[test]
fn push_ch_convert_and_the_statement_give_one_manifest_digest() {
    // Push used another gzip level and history than `ch-convert -o oci`, so a pushed image
    // had another digest than the layout and the statement named.
    let Some(r) = crate::registry::Registry::start() else {
        return;
    };
    let w = W::new("attest-push");
    let ctx = attest_ctx(&w, "p");
    w.build("app", &ctx, ATTEST_ARGS);
    let st = statement_in(&w, &w.storage(), "app");
    let dest = format!("{}/prov/app:v1", r.host());
    ok(r.ch_image(&w.storage()).args(["push", "app", &dest]));
    let pushed: serde_json::Value = serde_json::from_str(&ok(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{dest}"),
    ])))
    .expect("skopeo inspect json");
    let oci = w.s.join("app.oci");
    ok(tool("ch-convert")
        .arg("-s")
        .arg(w.storage())
        .args(["-o", "oci", "app"])
        .arg(&oci));
    let subject = format!(
        "sha256:{}",
        st["subject"][0]["digest"]["sha256"].as_str().unwrap()
    );
    assert_eq!(pushed["Digest"], subject.as_str(), "{pushed:#}");
    assert_eq!(oci_manifest_digest(&oci), subject);

    // Built on the pushed image (pulled by FROM into another store), the base is named
    // with the registry's manifest digest, which is the first image's subject.
    let other = w.s.join("storage2");
    let ctx2 = w.ctx("p2", &format!("FROM {dest}\nRUN true\n"), &[]);
    ok(r.ch_image(&other)
        .args(["build", "--force=none", "-t", "app2"])
        .arg(&ctx2));
    let st2 = statement_in(&w, &other, "app2");
    let base = &st2["predicate"]["buildDefinition"]["resolvedDependencies"][0];
    assert_eq!(base["name"], dest.as_str(), "{st2:#}");
    assert_eq!(base["annotations"]["grove.kind"], "base");
    assert_eq!(
        format!("sha256:{}", base["digest"]["sha256"].as_str().unwrap()),
        subject
    );
    let p = write_statement(&w, "st2.json", &st2);
    let out = output(w.image_in(&other).arg("verify").arg("app2").arg(&p));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_pulled_base_is_named_by_its_registry_reference_and_manifest_digest() {
    // A base pulled from a registry had only its name and digests: not where it came from.
    let Some(r) = crate::registry::Registry::start() else {
        return;
    };
    let w = W::new("attest-pulled");
    let (reference, manifest) = put_base(&r);
    let ctx = w.ctx("pulled", &format!("FROM {reference}\nRUN true\n"), &[]);
    ok(r.ch_image(&w.storage())
        .args(["build", "--force=none", "-t", "app"])
        .arg(&ctx));
    let st = statement_in(&w, &w.storage(), "app");
    let base = &st["predicate"]["buildDefinition"]["resolvedDependencies"][0];
    assert_eq!(base["name"], reference.as_str(), "{st:#}");
    assert_eq!(
        base["uri"],
        format!("pkg:docker/{}/prov/base@1", r.host()).as_str(),
        "{st:#}"
    );
    assert_eq!(
        format!("sha256:{}", base["digest"]["sha256"].as_str().unwrap()),
        manifest
    );
    assert_eq!(
        base["annotations"]["grove.reference"],
        format!("{reference}@{manifest}").as_str()
    );
    let base_commit = base["digest"]["gitCommit"].as_str().unwrap().to_string();
    let p = write_statement(&w, "pulled.json", &st);
    let (pass, out, err) = verify(&w, "app", &p);
    assert!(pass, "{out}{err}");
    assert!(
        out.contains("match          predicate.buildDefinition.resolvedDependencies[0].uri"),
        "{out}"
    );
    // An edited uri is a mismatch naming the field.
    let mut edited = st.clone();
    edited["predicate"]["buildDefinition"]["resolvedDependencies"][0]["uri"] =
        "pkg:docker/evil/base@1".into();
    let p = write_statement(&w, "pulled-edited.json", &edited);
    let (pass, out, _) = verify(&w, "app", &p);
    assert!(!pass, "{out}");
    assert!(
        out.contains("mismatch       predicate.buildDefinition.resolvedDependencies[0].uri"),
        "{out}"
    );

    // An image built on the pulled base starts from its config, annotations and all: built
    // on in turn, it is not a pulled image (no uri; its own OCI digest, not the registry's).
    let ctx2 = w.ctx("on-app", "FROM app\nRUN true\n", &[]);
    ok(r.ch_image(&w.storage())
        .args(["build", "--force=none", "-t", "app2"])
        .arg(&ctx2));
    let st2 = statement_in(&w, &w.storage(), "app2");
    let base2 = &st2["predicate"]["buildDefinition"]["resolvedDependencies"][0];
    assert_eq!(base2["name"], "app", "{st2:#}");
    assert!(base2.get("uri").is_none(), "{st2:#}");
    assert!(
        base2["annotations"].get("grove.reference").is_none(),
        "{st2:#}"
    );
    let oci = w.s.join("app.oci");
    ok(tool("ch-convert")
        .arg("-s")
        .arg(w.storage())
        .args(["-o", "oci", "app"])
        .arg(&oci));
    assert_eq!(
        format!("sha256:{}", base2["digest"]["sha256"].as_str().unwrap()),
        oci_manifest_digest(&oci),
        "{st2:#}"
    );
    // Nor is it taken for the pulled image by a later pull of the same manifest.
    ok(w.image().args(["delete", &reference]));
    ok(r.ch_image(&w.storage()).args(["pull", &reference]));
    let list: serde_json::Value =
        serde_json::from_str(&w.ci(&["list", "--json"])).expect("list json");
    let pulled = list
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == reference.as_str())
        .unwrap_or_else(|| panic!("{reference} not listed: {list:#}"));
    assert_eq!(pulled["commit"], base_commit.as_str(), "{list:#}");
}

/// Regression: build arguments named as BuildKit's `SecretsUsedInArgOrEnv` check names
/// secrets but without the words Grove looked for (`API_KEY`, `NPM_AUTH`) had their values
/// stored in the build's note (pushed with the cache) and printed by `inspect`, with no
/// warning. `PUBLIC_KEY` is not a secret (BuildKit's exception) and keeps its value.
#[test]
fn api_key_and_auth_build_args_are_stored_nowhere_but_public_key_is_kept() {
    let w = W::new("arg-key");
    let ctx = w.ctx(
        "argkey",
        "FROM busybox\nARG API_KEY\nARG NPM_AUTH\nARG PUBLIC_KEY\nRUN echo $PUBLIC_KEY > /pk\n",
        &[],
    );
    let (key, auth) = ("key-7f3a91", "auth-c02d4e");
    let log = w.build(
        "app",
        &ctx,
        &[
            "--build-arg",
            &format!("API_KEY={key}"),
            "--build-arg",
            &format!("NPM_AUTH={auth}"),
            "--build-arg",
            "PUBLIC_KEY=pk-1",
        ],
    );
    for n in ["API_KEY", "NPM_AUTH"] {
        assert!(
            log.contains(&format!(
                "warning: --build-arg {n}: its value is not stored"
            )),
            "{log}"
        );
    }
    assert!(!log.contains("--build-arg PUBLIC_KEY"), "{log}");
    let inspect = w.ci(&["inspect", "app"]);
    for want in [
        "build arg:    API_KEY (value not stored: it may be a secret)",
        "build arg:    NPM_AUTH (value not stored: it may be a secret)",
        "build arg:    PUBLIC_KEY=pk-1",
    ] {
        assert!(
            inspect.lines().any(|l| l == want),
            "missing {want:?} in:\n{inspect}"
        );
    }
    let note = w.git(&["log", "--notes=grove", "-1", "refs/grove/img/app+latest"]);
    assert!(note.contains("\"PUBLIC_KEY\": \"pk-1\""), "{note}");
    let statement = w.ci(&["inspect", "--provenance", "app"]);
    for v in [key, auth] {
        for o in [&log, &inspect, &note, &statement] {
            assert!(!o.contains(v), "{v} shown:\n{o}");
        }
        let found = crate::mount::files_containing(&w.storage(), v);
        assert!(found.is_empty(), "{v} in {found:?}");
    }
}

#[test]
fn secret_looking_build_arg_values_are_shown_nowhere_and_stored_nowhere() {
    // `inspect` printed every build argument's value, and the build's note (which
    // `build-cache push` sends) stored them.
    let w = W::new("arg-secret");
    let ctx = w.ctx(
        "argsecret",
        "FROM busybox\nARG V=1\nARG API_TOKEN\nRUN test -n \"$API_TOKEN\" && echo $V > /v\n",
        &[],
    );
    let (first, second) = ("first-9d1c5a", "second-4b7e02");
    let log1 = w.build(
        "app",
        &ctx,
        &[
            "-v",
            "--build-arg",
            "V=2",
            "--build-arg",
            &format!("API_TOKEN={first}"),
        ],
    );
    // Another value still changes the cache key, and --explain names the argument only.
    let log2 = w.build(
        "app",
        &ctx,
        &[
            "-v",
            "--explain",
            "--build-arg",
            "V=2",
            "--build-arg",
            &format!("API_TOKEN={second}"),
        ],
    );
    assert_eq!(marks(&log2), "**..", "{log2}");
    assert!(
        log2.contains("warning: --build-arg API_TOKEN: its value is not stored"),
        "{log2}"
    );
    assert!(
        log2.contains("why: build argument changed: API_TOKEN"),
        "{log2}"
    );
    let inspect = w.ci(&["inspect", "app"]);
    assert!(inspect.contains("build arg:    V=2"), "{inspect}");
    assert!(
        inspect.contains("build arg:    API_TOKEN (value not stored"),
        "{inspect}"
    );
    let inspect_json: serde_json::Value =
        serde_json::from_str(&w.ci(&["inspect", "--json", "app"])).expect("inspect json");
    assert_eq!(
        inspect_json["provenance"]["build_args_redacted"],
        serde_json::json!(["API_TOKEN"]),
        "{inspect_json:#}"
    );
    let outputs = [
        log1,
        log2,
        inspect,
        inspect_json.to_string(),
        w.ci(&["inspect", "--provenance", "app"]),
        w.ci(&["history", "app"]),
        w.ci(&["history", "--json", "app"]),
        w.ci(&["history", "--why", "app"]),
        w.ci(&["history", "--why", "--json", "app"]),
        w.ci(&["build-cache", "--tree"]),
    ];
    let objects = {
        let mut c = unpriv("git");
        c.arg("-C")
            .arg(w.storage().join("repo.git"))
            .args(["cat-file", "--batch-all-objects", "--batch"])
            .env("HOME", &w.s.path)
            .env("GIT_CONFIG_NOSYSTEM", "1");
        let out = output(&mut c);
        assert!(out.status.success() && !out.stdout.is_empty());
        out.stdout
    };
    for v in [first, second] {
        for o in &outputs {
            assert!(!o.contains(v), "{v} shown:\n{o}");
        }
        assert!(!crate::mount::contains(&objects, v), "{v} in a git object");
        let found = crate::mount::files_containing(&w.storage(), v);
        assert!(found.is_empty(), "{v} in {found:?}");
    }
}

#[test]
fn verify_pairs_a_file_one_copy_names_twice() {
    let w = W::new("attest-twice");
    let ctx = w.ctx(
        "twice",
        "FROM busybox\nCOPY a.txt a.txt /d/\n",
        &[("a.txt", "hello\n")],
    );
    w.build("app", &ctx, &[]);
    let st = statement_in(&w, &w.storage(), "app");
    assert_eq!(context_files(&st).len(), 2, "{st:#}");
    let p = write_statement(&w, "st.json", &st);
    let (pass, out, err) = verify(&w, "app", &p);
    assert!(pass, "{out}\n{err}");
}

#[test]
fn files_a_run_bind_mounts_are_named_in_the_statement_and_verify() {
    let w = W::new("attest-mount");
    let d = w.ctx(
        "m",
        "FROM busybox\nRUN --mount=type=bind,source=req.txt,target=/tmp/req.txt cp /tmp/req.txt /got\n",
        &[("req.txt", "numpy==2.1\n")],
    );
    w.build("app", &d, &[]);
    let st = statement_in(&w, &w.storage(), "app");
    let deps = st["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .expect("resolvedDependencies");
    let bound: Vec<_> = deps
        .iter()
        .filter(|d| d["annotations"]["grove.kind"] == "mount")
        .collect();
    assert_eq!(bound.len(), 1, "{deps:?}");
    let b = bound[0];
    assert_eq!(b["name"], "req.txt");
    assert_eq!(b["annotations"]["grove.mount"], "/tmp/req.txt");
    assert_eq!(b["annotations"]["grove.instruction"], 2);
    assert_eq!(
        b["digest"]["sha256"].as_str(),
        Some(sha256_of(&d.join("req.txt")).as_str())
    );
    // Not copied: the bound file is no context file of a COPY.
    assert!(context_files(&st).is_empty(), "{st}");
    let p = write_statement(&w, "st.json", &st);
    let (pass, out, err) = verify(&w, "app", &p);
    assert!(pass, "{out}\n{err}");
    assert!(
        out.contains("match          predicate.buildDefinition.resolvedDependencies[1] (bind-mounted context file req.txt (instruction 2))"),
        "{out}"
    );
    // A changed bound file: the step runs again, and the old statement no longer verifies.
    std::fs::write(d.join("req.txt"), "numpy==2.2\n").unwrap();
    w.build("app", &d, &[]);
    let (pass, out, _) = verify(&w, "app", &p);
    assert!(!pass, "{out}");
    assert!(
        out.contains("(bind-mounted context file req.txt (instruction 2)): gitBlob: statement has"),
        "{out}"
    );
}

/// Regression: `history --why` of a multi-stage build listed the steps of every stage in
/// one run, so a reader couldn't tell which belonged to which stage. A line before each
/// stage's steps labels it as `inspect` labels its base line, with its base; a last stage
/// with no step of its own is shown too, and `--json` gives each step's stage.
#[test]
fn history_why_of_a_multi_stage_build_marks_each_stage() {
    let w = W::new("why-stages");
    let c = w.ctx(
        "ms",
        "FROM busybox AS build\nRUN echo hi > /x\nFROM build AS two\nRUN echo ho > /z\n\
         FROM busybox\nCOPY --from=two /x /y\n",
        &[],
    );
    w.build("ms", &c, &[]);
    let bb = w.git(&["rev-parse", "refs/grove/img/busybox+latest"]);
    let build = w.git(&["rev-parse", "refs/grove/img/ms_stage0+latest"]);
    let text = w.ci(&["history", "--why", "ms"]);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("why:"))
        .collect();
    assert_eq!(
        lines,
        [
            format!("stage 0 (AS build): busybox ({})", &bb[..12]),
            "  2 run RUN echo hi > /x".to_string(),
            format!("stage 1 (AS two): build ({})", &build[..12]),
            "  4 run RUN echo ho > /z".to_string(),
            format!("stage 2 (the image): busybox ({})", &bb[..12]),
            "  6 run COPY --from=two /x /y".to_string(),
        ],
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&w.ci(&["history", "--why", "--json", "ms"])).unwrap();
    let stages: Vec<(u64, u64)> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["n"].as_u64().unwrap(), s["stage"].as_u64().unwrap()))
        .collect();
    assert_eq!(stages, [(2, 0), (4, 1), (6, 2)], "{json}");
    // A last stage that only names an earlier one still shows, after the steps; a single
    // stage has no such line.
    let c = w.ctx("last", "FROM busybox AS b\nRUN echo b > /b\nFROM b\n", &[]);
    w.build("last", &c, &[]);
    let b = w.git(&["rev-parse", "refs/grove/img/last+latest"]);
    let text = w.ci(&["history", "--why", "last"]);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("why:"))
        .collect();
    assert_eq!(
        lines,
        [
            format!("stage 0 (AS b): busybox ({})", &bb[..12]),
            "  2 run RUN echo b > /b".to_string(),
            format!("stage 1 (the image): b ({})", &b[..12]),
        ],
        "{text}"
    );
    let c = w.ctx("one", "FROM busybox\nRUN echo one > /o\n", &[]);
    w.build("one", &c, &[]);
    let text = w.ci(&["history", "--why", "one"]);
    assert!(text.starts_with("  2 run RUN echo one > /o\n"), "{text}");
}

/// Regression: a pull and `ch-convert` into the store recorded no import source. A pull
/// now records the reference, the manifest digest, the index digest when it went through
/// one, and the time (import note version 2); a conversion its input's kind, path, the
/// file's sha256 and an OCI layout's manifest digest. `inspect` and `history` show them.
#[test]
fn pulls_and_conversions_into_the_store_record_where_the_image_came_from() {
    let Some(r) = crate::registry::Registry::start() else {
        return;
    };
    if std::env::consts::ARCH != "x86_64" {
        crate::common::skip("the fixture image's index entry is amd64");
        return;
    }
    let w = W::new("pull-note");
    let (reference, manifest) = put_base(&r);
    ok(r.ch_image(&w.storage()).args(["pull", &reference, "p1"]));
    let imported = |name: &str| -> String {
        let text = w.ci(&["inspect", name]);
        text.lines()
            .find_map(|l| l.strip_prefix("imported:     "))
            .unwrap_or_else(|| panic!("no imported line:\n{text}"))
            .to_string()
    };
    let line = imported("p1");
    assert!(
        line.starts_with(&format!(
            "registry {reference}, manifest {manifest} as p1:latest at 20"
        )) && line.ends_with(" by ch-image pull"),
        "{line}"
    );
    let h = &history_lines(&w, "p1")[0];
    assert!(
        h.ends_with(&format!(
            "PULL {reference} (registry {reference} manifest {})",
            &manifest[..19]
        )),
        "{h}"
    );
    // Through an index (a multi-architecture tag): its digest too. The same manifest is
    // already stored, so the pull reuses the commit and adds its entry.
    let body = r.curl(&[
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json",
        &format!("https://{}/v2/prov/base/manifests/1", r.host()),
    ]);
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
        body.len()
    );
    std::fs::write(w.s.join("index.json"), &index).unwrap();
    let index_digest = format!("sha256:{}", sha256_of(&w.s.join("index.json")));
    r.curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/vnd.oci.image.index.v1+json",
        "--data-binary",
        &index,
        &format!("https://{}/v2/prov/base/manifests/multi", r.host()),
    ]);
    let multi = format!("{}/prov/base:multi", r.host());
    ok(r.ch_image(&w.storage()).args(["pull", &multi, "p2"]));
    let line = imported("p2");
    assert!(
        line.starts_with(&format!(
            "registry {multi}, manifest {manifest}, index {index_digest} as p2:latest at 20"
        )),
        "{line}"
    );
    let commit = w.git(&["rev-parse", "refs/grove/img/p1+latest"]);
    let note: serde_json::Value =
        serde_json::from_str(&w.git(&["notes", "--ref=grove", "show", commit.trim()])).unwrap();
    assert_eq!(note["version"], 2, "{note}");
    assert_eq!(note["imports"].as_array().unwrap().len(), 2, "{note}");
    assert_eq!(note["imports"][1]["index"], index_digest.as_str(), "{note}");
    // An image built on it says where its base came from.
    let c = w.ctx("on-p2", "FROM p2\nRUN true\n", &[]);
    ok(r.ch_image(&w.storage())
        .args(["build", "--force=none", "-t", "on"])
        .arg(&c));
    let text = w.ci(&["inspect", "on"]);
    assert!(
        text.lines().any(|l| l.starts_with(&format!(
            "base from:    registry {multi}, manifest {manifest}, index {index_digest} as \
             p2:latest at 20"
        ))),
        "{text}"
    );
    let (_, err) = fails(w.image().args(["inspect", "--provenance", "p1"]));
    assert!(
        err.contains(&format!(
            "error: p1: no build provenance note: it was pulled, not built (registry {reference}"
        )),
        "{err}"
    );
    // Pulling again, up to date, writes nothing.
    let notes_before = w.git(&["rev-parse", "refs/notes/grove"]);
    ok(r.ch_image(&w.storage()).args(["pull", &reference, "p1"]));
    assert_eq!(w.git(&["rev-parse", "refs/notes/grove"]), notes_before);
    // ch-convert into the store: a tarball (its sha256) and an OCI layout (its manifest).
    let tar = w.s.join("p1.tar");
    convert(&w, &w.storage(), "p1", "p1.tar");
    ok(tool("ch-convert")
        .arg("-s")
        .arg(w.storage())
        .arg(&tar)
        .arg("fromtar"));
    let line = imported("fromtar");
    assert!(
        line.starts_with(&format!(
            "tarball {}, sha256:{} as fromtar:latest at 20",
            tar.display(),
            sha256_of(&tar)
        )) && line.ends_with(" by ch-convert"),
        "{line}"
    );
    let oci = w.s.join("p1.oci");
    ok(tool("ch-convert")
        .args(["-s"])
        .arg(w.storage())
        .args(["-o", "oci", "p1"])
        .arg(&oci));
    own(&oci);
    ok(tool("ch-convert")
        .arg("-s")
        .arg(w.storage())
        .args(["-i", "oci"])
        .arg(&oci)
        .arg("fromoci"));
    let line = imported("fromoci");
    assert!(
        line.starts_with(&format!(
            "oci {}, manifest {} as fromoci:latest at 20",
            oci.display(),
            oci_manifest_digest(&oci)
        )),
        "{line}"
    );
}

/// Regression: the note of an earlier state (`NAME~N`, `TAG_stageN`) was looked up by
/// reading every note until one named the state's commit (by commit id order): slow on
/// a store of many builds (200 builds: 181 ms of CPU against 16 ms, debug build), and
/// when two images share the state, the first note found could be the other image's.
/// The note of the image the name gives is read first.
#[test]
fn an_earlier_state_shared_by_two_images_reads_the_note_of_the_image_named() {
    let w = W::new("note-hint");
    for t in ["a", "b"] {
        let c = w.ctx(
            t,
            &format!("FROM busybox\nRUN echo x > /x\nRUN echo {t} > /t\n"),
            &[],
        );
        w.build(t, &c, &[]);
    }
    assert_eq!(
        w.git(&["rev-parse", "refs/grove/img/a+latest~1"]),
        w.git(&["rev-parse", "refs/grove/img/b+latest~1"])
    );
    for t in ["a", "b"] {
        let out = output(w.image().args(["history", "--why", &format!("{t}~1")]));
        assert!(out.status.success(), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{t}~1: from the build note of {t}:latest (")),
            "{err}"
        );
        let (_, err) = fails(
            w.image()
                .args(["inspect", "--provenance", &format!("{t}~1")]),
        );
        assert!(
            err.contains(&format!(
                "hint: `ch-image inspect --provenance {t}` gives that build's statement"
            )),
            "{err}"
        );
    }
}

/// Regression: `inspect` of a built image named its base and the base's commit only; where
/// an imported or pulled base came from (its import note) took a second `inspect` of a
/// name that may have moved since. A `base from:` line now follows each such base.
#[test]
fn inspect_says_where_an_imported_base_came_from() {
    let w = W::new("base-from");
    let c = w.ctx(
        "app",
        "FROM busybox AS b\nRUN echo x > /x\nFROM b\nRUN true\n",
        &[],
    );
    w.build("app", &c, &[]);
    let text = w.ci(&["inspect", "app"]);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("base")).collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("base:         stage 0 (AS b): busybox ("),
        "{text}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "base from:    directory {} as busybox:latest at 20",
            busybox_rootfs().display()
        )),
        "{text}"
    );
    assert!(
        lines[2].starts_with("base:         stage 1 (the image): b ("),
        "{text}"
    );
    let v: serde_json::Value = serde_json::from_str(&w.ci(&["inspect", "--json", "app"])).unwrap();
    assert_eq!(v["bases_imported"][0]["stage"], 0, "{v}");
    assert_eq!(
        v["bases_imported"][0]["imported"][0]["kind"], "directory",
        "{v}"
    );
}

/// Regression: `inspect` and `history` printed a note's strings as they were, and notes
/// come from others (`build-cache fetch` merges a remote's): an escape sequence in an
/// import path reached the terminal, and a newline forged an `imported:` line. Control
/// characters are now shown as `\u{..}` escapes, in notes and configs alike.
#[test]
fn control_characters_in_a_fetched_note_are_escaped_not_printed() {
    let w = W::new("note-escape");
    let bb = w.git(&["rev-parse", "refs/grove/img/busybox+latest"]);
    let evil = "/a\u{1b}[31mRED\nimported:     tarball /fake";
    set_note(
        &w,
        bb.trim(),
        &serde_json::json!({
            "imports": [{ "image": "busybox:latest", "imported": "t", "kind": "directory",
                          "path": evil }],
            "kind": "import", "version": 2
        }),
    );
    let c = w.ctx("app", "FROM busybox\nRUN true\n", &[]);
    w.build("app", &c, &[]);
    let (commit, mut note) = note_of(&w, "app");
    note["build_args"] = serde_json::json!({ "X\u{1b}]0;title\u{7}": "v\rw" });
    note["dockerfile"] = serde_json::json!("FROM busybox\nRUN true \u{1b}[2J\n");
    set_note(&w, &commit, &note);
    for args in [
        &["inspect", "busybox"][..],
        &["inspect", "app"],
        &["history", "busybox"],
        &["history", "app"],
    ] {
        let out = output(w.image().args(args));
        assert!(out.status.success(), "{args:?}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !text.contains(['\u{1b}', '\u{7}', '\r']),
            "{args:?}: {text:?}"
        );
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("imported:     tarball /fake")),
            "{args:?}: {text}"
        );
        assert!(
            text.contains("/a\\u{1b}[31mRED\\u{a}imported:"),
            "{args:?}: {text}"
        );
    }
    let text = w.ci(&["inspect", "app"]);
    assert!(
        text.contains("build arg:    X\\u{1b}]0;title\\u{7}=v\\u{d}w"),
        "{text}"
    );
    assert!(text.contains("  RUN true \\u{1b}[2J"), "{text}");
    let (_, err) = fails(w.image().args(["inspect", "--provenance", "busybox"]));
    assert!(!err.contains('\u{1b}'), "{err:?}");
}

/// Characters no read command may print as they are: C0 controls but tab (ESC starts a
/// terminal sequence, a newline or CR forges a line), DEL, C1 controls (U+009B is CSI on
/// some terminals) and the bidirectional overrides (U+202E reverses what follows).
const RAW: [char; 6] = ['\u{1b}', '\u{7}', '\r', '\u{7f}', '\u{9b}', '\u{202e}'];

/// Assert that `text` (the output of `what`) holds none of [`RAW`], and no line that starts
/// with `forged`.
fn assert_escaped(what: &str, text: &str, forged: &str) {
    assert!(!text.contains(RAW), "{what}: printed raw: {text:?}");
    assert!(
        !text.lines().any(|l| l.starts_with(forged)),
        "{what}: forged line {forged:?}: {text}"
    );
}

/// Regression: `build-cache --tree` and `--dot` printed each commit's subject (the
/// instruction as written) as it was, `inspect` the config's working directory, and
/// `build` its progress lines and `--parse-only` its listing: an escape sequence in a
/// Dockerfile line (or a fetched commit's message) reached the terminal (`\e[2K\r` could
/// hide what a RUN line runs). They are now shown as `\u{..}` escapes, as `history` already showed them;
/// `--dot` stays a valid Graphviz string (the escape's backslash doubled).
#[test]
fn a_dockerfiles_control_characters_are_escaped_by_every_read_command() {
    let w = W::new("df-escape");
    let c = w.ctx(
        "esc",
        "FROM busybox\nWORKDIR /w\u{1b}[1mX\u{202e}\n\
         RUN true # \u{1b}[31mred\rover\u{7f}\u{9b}2J\n\
         LABEL l=\"a\u{9b}b\"\n",
        &[],
    );
    // The build's own progress lines, and `--parse-only`'s listing.
    let log = w.build("t", &c, &[]);
    assert_escaped("build", &log, "over");
    assert!(
        log.contains("  3. RUN.S true # \\u{1b}[31mred\\u{d}over\\u{7f}\\u{9b}2J\n"),
        "{log}"
    );
    for args in [
        &["history", "t"][..],
        &["history", "--why", "t"],
        &["inspect", "t"],
        &["build-cache", "--tree"],
        &["build-cache", "--dot"],
        &["list"],
        &["list", "-l"],
    ] {
        let out = output(w.image().args(args));
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert_escaped(
            &format!("{args:?}"),
            &String::from_utf8_lossy(&out.stdout),
            "over",
        );
    }
    let out = output(w.image().args(["build", "--parse-only", "-t", "p"]).arg(&c));
    assert!(out.status.success(), "{out:?}");
    let parsed = String::from_utf8_lossy(&out.stdout);
    assert_escaped("build --parse-only", &parsed, "over");
    assert!(
        parsed.contains("  3 RUN true # \\u{1b}[31mred\\u{d}over"),
        "{parsed}"
    );
    let tree = w.ci(&["build-cache", "--tree"]);
    assert!(
        tree.contains(" RUN true # \\u{1b}[31mred\\u{d}over\\u{7f}\\u{9b}2J"),
        "{tree}"
    );
    let dot = w.ci(&["build-cache", "--dot"]);
    assert!(
        dot.contains("RUN true # \\\\u{1b}[31mred\\\\u{d}over"),
        "{dot}"
    );
    let inspect = w.ci(&["inspect", "t"]);
    assert!(
        inspect.contains("cwd:          /w\\u{1b}[1mX\\u{202e}\n"),
        "{inspect}"
    );
}

/// Regression: strings of a fetched note or commit that are not what Grove writes made
/// read commands panic or print them raw: `history` cut an import note's digest and a
/// commit message's cache key at byte 12 (inside a character: a panic), as `history --why`
/// a base's commit; `history` printed the key as it was, and `inspect` the note's
/// context hash, builder version, times, force mode and Dockerfile digest.
#[test]
fn odd_strings_in_a_fetched_note_or_commit_neither_panic_nor_reach_the_terminal() {
    let w = W::new("note-odd");
    let bb = w.git(&["rev-parse", "refs/grove/img/busybox+latest"]);
    set_note(
        &w,
        bb.trim(),
        &serde_json::json!({
            "imports": [{ "image": "busybox:latest", "imported": "t", "kind": "tarball",
                          "path": "/p", "sha256": "sha256:a\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{1b}[2J" }],
            "kind": "import", "version": 2
        }),
    );
    let out = output(w.image().args(["history", "busybox"]));
    assert!(out.status.success(), "{out:?}");
    assert_escaped(
        "history busybox",
        &String::from_utf8_lossy(&out.stdout),
        "forged",
    );

    let c = w.ctx(
        "two",
        "FROM busybox AS one\nRUN true\nFROM one\nRUN true\n",
        &[],
    );
    w.build("app", &c, &[]);
    let (commit, mut note) = note_of(&w, "app");
    let evil = "\u{1b}]0;x\u{7}\u{9b}1m\nbuilt:        forged";
    note["bases"][0]["commit"] = serde_json::json!("a\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}");
    for k in [
        "context_hash",
        "builder_version",
        "started",
        "finished",
        "invocation",
        "force",
        "dockerfile_sha256",
    ] {
        note[k] = serde_json::json!(evil);
    }
    set_note(&w, &commit, &note);
    for args in [&["inspect", "app"][..], &["history", "--why", "app"]] {
        let out = output(w.image().args(args));
        assert!(out.status.success(), "{args:?}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_escaped(&format!("{args:?}"), &text, "built:        forged");
    }
    let why = w.ci(&["history", "--why", "app"]);
    assert!(
        why.starts_with(
            "stage 0 (AS one): busybox (a\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9})\n"
        ),
        "{why}"
    );

    // A commit whose message says anything after `grove-cache-key: `.
    let raw = w.git(&["cat-file", "commit", commit.trim()]);
    let (head, _) = raw
        .split_once("grove-cache-key: ")
        .expect("a built step has a key");
    let odd = format!("{head}grove-cache-key: a\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{1b}[2J\n");
    let f = w.s.join("odd-commit");
    std::fs::write(&f, odd).unwrap();
    own(&f);
    let id = w.git(&["hash-object", "-t", "commit", "-w", f.to_str().unwrap()]);
    w.git(&["update-ref", "refs/grove/img/odd+latest", id.trim()]);
    let out = output(w.image().args(["history", "odd"]));
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_escaped("history odd", &text, "forged");
    assert!(
        text.lines()
            .any(|l| l.contains(" a\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\\u{1b}[2J ")),
        "{text}"
    );
}

/// Regression: `diff` printed a name holding a bidirectional override (U+202E, which
/// reverses what follows it on the screen: `/evil\u{202e}txt.sh` shows as `/evilhs.txt`)
/// as it was; such a name is now written in the escaped form, as control characters.
#[test]
fn diff_escapes_a_bidirectional_override_in_a_name() {
    let w = W::new("diff-bidi");
    let c = w.ctx(
        "bidi",
        "FROM busybox\nRUN touch \"/evil\u{202e}txt.sh\"\n",
        &[],
    );
    w.build("t", &c, &[]);
    assert_eq!(diff_lines(&w, "t~1", "t"), ["A /evil\\xe2\\x80\\xaetxt.sh"]);
}

/// Regression: `verify` printed the statement's keys and dependency names (it is any
/// file) and the values it quotes as they were: an escape sequence reached the terminal,
/// a newline forged a `match` line, a C1 control in a JSON value (which JSON keeps) was
/// printed raw; the error's list of differing fields too. All are now `\u{..}` escapes.
#[test]
fn verify_escapes_what_a_statement_says() {
    let w = W::new("verify-escape");
    let c = w.ctx("v", "FROM busybox\nRUN true\n", &[]);
    w.build("app", &c, &[]);
    let mut st = statement_in(&w, &w.storage(), "app");
    let ext = &mut st["predicate"]["buildDefinition"]["externalParameters"];
    ext["x\u{1b}[2J\nmatch          forged.key"] = serde_json::json!({ "v": "\u{9b}31m\u{202e}" });
    ext["y"] = serde_json::json!("\u{7f}\u{9b}");
    st["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array_mut()
        .expect("dependencies")
        .push(serde_json::json!({
            "name": "evil\u{1b}]0;t\u{7}\nmatch          forged.dep",
            "digest": { "sha256": "00" },
            "annotations": { "grove.kind": "context", "grove.instruction": 2 }
        }));
    let p = write_statement(&w, "evil.json", &st);
    let (pass, out, err) = verify(&w, "app", &p);
    assert!(!pass, "{out}");
    assert_escaped("verify stdout", &out, "match          forged");
    assert_escaped("verify stderr", &err, "match          forged");
    assert!(
        out.contains("mismatch       predicate.buildDefinition.externalParameters.x\\u{1b}[2J\\u{a}match          forged.key: statement has {\"v\":\"\\u{9b}31m\\u{202e}\"}"),
        "{out}"
    );
    assert!(
        out.contains("context file evil\\u{1b}]0;t\\u{7}\\u{a}match"),
        "{out}"
    );
}

/// Regression: `build --explain` of an image whose last build note (fetched with
/// `build-cache fetch`, so any text) names its base's commit with a multi-byte character
/// in its first 12 bytes panicked when the base had changed (the commit was cut at byte
/// 12 for the "base image changed (was commit …)" line), and printed the note's strings
/// in its why lines as they were.
#[test]
fn explain_of_a_changed_base_with_an_odd_commit_in_the_last_note_neither_panics_nor_prints_it_raw()
{
    let w = W::new("explain-odd");
    let c = w.ctx("e", "FROM busybox\nRUN true\n", &[]);
    w.build("e", &c, &[]);
    let (commit, mut note) = note_of(&w, "e");
    note["bases"][0]["commit"] =
        serde_json::json!("a\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{1b}[31m");
    set_note(&w, &commit, &note);
    // Another busybox: the base changed, and no entry has it as parent.
    let other = w.s.join("bb2");
    sh(&format!(
        "cp -a '{}' '{o}' && echo x > '{o}/new'",
        busybox_rootfs().display(),
        o = other.display()
    ));
    own(&other);
    ok(w.image().arg("import").arg(&other).arg("busybox"));
    let log = w.build("e", &c, &["--explain"]);
    assert!(
        log.contains(
            "why: no entry for this parent: base image busybox changed (was commit \
             a\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\\u{1b}[31m, now commit "
        ),
        "{log}"
    );
    assert!(!log.contains('\u{1b}'), "{log:?}");
}
