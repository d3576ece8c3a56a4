//! Build facts for `ch-image -v --version`: the git commit of the checkout (release
//! builds; `unknown` outside a checkout or without git), the build profile and the gix
//! version from Cargo.lock.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// The version of package `name` in Cargo.lock's text (the first entry of that name).
fn locked_version(lock: &str, name: &str) -> Option<String> {
    let mut lines = lock.lines();
    while let Some(l) = lines.next() {
        if l.trim() == format!("name = \"{name}\"") {
            let v = lines.next()?.trim().strip_prefix("version = \"")?;
            return Some(v.trim_end_matches('"').to_string());
        }
    }
    None
}

fn main() {
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=GROVE_BUILD_PROFILE={profile}");
    // The commit, in release builds only: a debug build would otherwise recompile the
    // whole package after every commit.
    let commit = if profile == "release" {
        // Rebuild when HEAD moves: HEAD itself and the branch it names (paths as git
        // sees them, so that worktrees work too). Only existing paths: a missing one
        // would make cargo run this script on every build.
        let mut watch = vec!["HEAD".to_string()];
        if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watch.push(r);
        }
        watch.push("packed-refs".into());
        for w in watch {
            if let Some(p) = git(&["rev-parse", "--git-path", &w]) {
                if Path::new(&p).exists() {
                    println!("cargo:rerun-if-changed={p}");
                }
            }
        }
        git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into())
    } else {
        "unknown (recorded in release builds only)".into()
    };
    println!("cargo:rustc-env=GROVE_GIT_COMMIT={commit}");
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    let gix = locked_version(&lock, "gix").unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=GROVE_GIX_VERSION={gix}");
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-changed=build.rs");
}
