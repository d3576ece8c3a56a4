//! docs/ci.md runs as written: its Dockerfile and the `script:` lines of its CI job, with
//! the example host names pointed at a local registry (Debian's `docker-registry`, see
//! `registry.rs`) and the cache remote at a local bare repository. Three jobs: a first
//! runner, a second runner with an empty store (all hits after the fetch), and the first
//! runner again after a change to one source file (the miss is explained, the cache
//! mount kept what the first job left).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::common::*;
use crate::registry::Registry;

const DOC: &str = include_str!("../../docs/ci.md");
const TOKEN: &str = "ci-doc-secret-7f3a91c2";
const EXAMPLE_REGISTRY: &str = "registry.example.org:5000";

/// The body of the first fenced block of kind `lang` in the doc.
fn block(lang: &str) -> String {
    let open = format!("```{lang}\n");
    let start = DOC
        .find(&open)
        .unwrap_or_else(|| panic!("docs/ci.md has no ```{lang} block"))
        + open.len();
    let end = DOC[start..].find("```").expect("unclosed block") + start;
    DOC[start..end].to_string()
}

/// The job's `script:` lines and the top-level `variables:` names, from the YAML block.
fn job() -> (Vec<String>, Vec<String>) {
    let yaml = block("yaml");
    let mut script = Vec::new();
    let mut vars = Vec::new();
    let mut section = "";
    for line in yaml.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            section = if line == "variables:" { "vars" } else { "" };
            continue;
        }
        let t = line.trim_start();
        if t == "script:" {
            section = "script";
            continue;
        }
        match section {
            "vars" if !t.starts_with('#') && t.contains(':') => {
                vars.push(t.split(':').next().unwrap().to_string());
            }
            "script" if t.starts_with("- ") => script.push(t[2..].to_string()),
            "script" if !t.is_empty() => section = "",
            _ => {}
        }
    }
    (script, vars)
}

#[derive(Clone)]
struct Runner<'a> {
    r: &'a Registry,
    s: &'a Scratch,
    storage: PathBuf,
    remote: PathBuf,
    ctx: PathBuf,
}

impl Runner<'_> {
    fn env(&self, sha: &str) -> BTreeMap<&'static str, String> {
        let bindir = bin("ch-image").parent().unwrap().to_path_buf();
        BTreeMap::from([
            ("CH_IMAGE_STORAGE", self.storage.display().to_string()),
            ("CACHE_REMOTE", self.remote.display().to_string()),
            ("IMAGE", format!("{}/ci/app", self.r.host())),
            ("CI_COMMIT_SHORT_SHA", sha.to_string()),
            ("TOKEN_FILE", self.s.join("token").display().to_string()),
            (
                "PATH",
                format!("{}:/usr/bin:/bin:/usr/sbin:/sbin", bindir.display()),
            ),
            ("HOME", self.s.path.display().to_string()),
            ("SSL_CERT_FILE", self.r.ca().display().to_string()),
        ])
    }

    /// Run every script line in the context directory, as the job would; returns each
    /// line's (stdout, stderr).
    fn job(&self, sha: &str) -> Vec<(String, String, String)> {
        let (script, vars) = job();
        let env = self.env(sha);
        for v in vars {
            assert!(
                env.contains_key(v.as_str()),
                "docs/ci.md sets variable {v} the test does not provide"
            );
        }
        let mut outs = Vec::new();
        for line in script {
            let mut c = unpriv("sh");
            c.args(["-ec", &line]).current_dir(&self.ctx).env_clear();
            c.env("USER", "nobody");
            for (k, v) in &env {
                c.env(k, v);
            }
            let out = output(&mut c);
            let so = String::from_utf8_lossy(&out.stdout).into_owned();
            let se = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(
                out.status.success(),
                "docs/ci.md line failed: {line}\nstdout: {so}\nstderr: {se}"
            );
            outs.push((line, so, se));
        }
        outs
    }
}

/// stderr of the first script line that starts with `prefix`.
fn err_of<'a>(outs: &'a [(String, String, String)], prefix: &str) -> &'a str {
    &outs
        .iter()
        .find(|(l, _, _)| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no script line starts with {prefix}"))
        .2
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn the_job_in_docs_ci_md_runs_as_written() {
    let Some(r) = Registry::start() else { return };
    r.put("two", "base/busybox:1.36", &[]);
    let s = Scratch::new("ci-doc");
    let dockerfile = block("dockerfile").replace(EXAMPLE_REGISTRY, &r.host());
    assert!(
        dockerfile.contains(&r.host()),
        "the Dockerfile names the example registry"
    );
    let ctx = s.join("project");
    write(&ctx.join("Dockerfile"), &dockerfile);
    write(&ctx.join("src/main.c"), "int main(void) { return 0; }\n");
    write(&ctx.join("src/README"), "an example project\n");
    write(&s.join("token"), TOKEN);
    own(&s.path);
    let remote = s.join("cache.git");
    ok(unpriv("git").args(["init", "-q", "--bare"]).arg(&remote));

    let a = Runner {
        r: &r,
        s: &s,
        storage: s.join("runner-a"),
        remote: remote.clone(),
        ctx: ctx.clone(),
    };
    let b = Runner {
        storage: s.join("runner-b"),
        ..a.clone()
    };

    // 1. First job on runner A: everything runs, is pushed, and verifies.
    let outs = a.job("c0ffee1");
    let build = err_of(&outs, "ch-image build ");
    assert!(
        build.contains("why:"),
        "a cold build explains its misses:\n{build}"
    );
    let prov = std::fs::read_to_string(ctx.join("provenance.intoto.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&prov).unwrap();
    assert_eq!(v["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(v["predicateType"], "https://slsa.dev/provenance/v1");
    assert!(!prov.contains(TOKEN), "the secret is in the statement");
    let image = format!("{}/ci/app:c0ffee1", r.host());
    let ran = ok(tool("ch-run")
        .env("CH_IMAGE_STORAGE", &a.storage)
        .arg(&image)
        .args(["--", "cat", "/src/deps.txt"]));
    assert_eq!(ran, "fetched-with-token\n");
    let objects = ok(unpriv("git")
        .arg("-C")
        .arg(a.storage.join("repo.git"))
        .args(["cat-file", "--batch-all-objects", "--batch"]));
    assert!(
        !objects.contains(TOKEN),
        "the secret is in the store's objects"
    );

    // 2. The same commit on runner B, whose store is empty: the fetch brings the cache,
    // every step hits, nothing needs explaining, and the pushed image is the same.
    let outs = b.job("c0ffee1");
    let build = err_of(&outs, "ch-image build ");
    assert!(
        !build.contains("why:"),
        "all hits explain nothing:\n{build}"
    );
    let steps: Vec<&str> = build
        .lines()
        .filter(|l| {
            l.split(['.', '*'])
                .next()
                .is_some_and(|n| n.trim().parse::<u32>().is_ok())
        })
        .collect();
    assert!(!steps.is_empty(), "no instruction lines:\n{build}");
    assert!(
        steps.iter().all(|l| l
            .trim_start()
            .split_once('*')
            .is_some_and(|(n, _)| n.parse::<u32>().is_ok())),
        "every step a hit on runner B after the fetch:\n{build}"
    );
    let prov_b = std::fs::read_to_string(ctx.join("provenance.intoto.json")).unwrap();
    let vb: serde_json::Value = serde_json::from_str(&prov_b).unwrap();
    assert_eq!(vb["subject"], v["subject"], "runner B's image differs");

    // 3. One source file changed, runner A again: the COPY says why it ran, and the RUN
    // with the cache mount finds what the first job left there.
    write(&ctx.join("src/main.c"), "int main(void) { return 1; }\n");
    own(&ctx);
    let outs = a.job("beef002");
    let build = err_of(&outs, "ch-image build ");
    assert!(
        build.contains("src/main.c"),
        "the miss names the changed file:\n{build}"
    );
    let image = format!("{}/ci/app:beef002", r.host());
    let seen = ok(tool("ch-run")
        .env("CH_IMAGE_STORAGE", &a.storage)
        .arg(&image)
        .args(["--", "cat", "/src/cache-seen.txt"]));
    assert!(
        seen.contains("last-build"),
        "the cache mount did not keep the first job's file: {seen:?}"
    );
    let v3: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ctx.join("provenance.intoto.json")).unwrap())
            .unwrap();
    assert_ne!(
        v3["subject"], v["subject"],
        "a changed source gives another image"
    );
}
