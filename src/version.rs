//! What this build is: the version line every command prints for `--version`, and the
//! detail `ch-image -v --version` adds (git commit, build profile, gix version, and the
//! optional external tools found on `$PATH`). The build facts come from `build.rs`.

use std::path::PathBuf;

/// The version, as Charliecloud's commands print it for `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// `git rev-parse HEAD` of the checkout built (release builds), or `unknown ...`.
pub const GIT_COMMIT: &str = env!("GROVE_GIT_COMMIT");
/// Cargo's build profile (`release`, `debug`).
pub const BUILD_PROFILE: &str = env!("GROVE_BUILD_PROFILE");
/// The gix version in Cargo.lock.
pub const GIX_VERSION: &str = env!("GROVE_GIX_VERSION");

/// Optional programs Grove uses when present, with what for.
pub const OPTIONAL_TOOLS: [(&str, &str); 9] = [
    ("tar2sqfs", "SquashFS export, squashfs-tools-ng"),
    ("sqfstar", "SquashFS export, squashfs-tools"),
    ("mksquashfs", "SquashFS export, squashfs-tools"),
    ("sqfs2tar", "SquashFS import, squashfs-tools-ng"),
    ("unsquashfs", "SquashFS import, squashfs-tools"),
    ("squashfuse_ll", "ch-run of SquashFS images"),
    ("squashfuse", "ch-run of SquashFS images"),
    ("fakeroot", "ch-image build --force=fakeroot"),
    ("git", "build-cache --gc, push and fetch"),
];

/// The detail lines (`key: value`), each tool's path from `find` or `not found`.
pub fn detail(find: impl Fn(&str) -> Option<PathBuf>) -> String {
    let mut s = format!(
        "version: {VERSION}\ngit commit: {GIT_COMMIT}\nbuild profile: {BUILD_PROFILE}\ngix: {GIX_VERSION}\n"
    );
    for (tool, what) in OPTIONAL_TOOLS {
        let at = find(tool).map_or_else(|| "not found".into(), |p| p.display().to_string());
        s.push_str(&format!("{tool}: {at} ({what})\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detail_names_every_optional_tool_found_or_not() {
        let d = detail(|t| (t == "fakeroot").then(|| PathBuf::from("/usr/bin/fakeroot")));
        assert!(d.starts_with(&format!("version: {VERSION}\n")), "{d}");
        assert!(d.contains("\ngix: 0."), "{d}");
        assert!(d.contains("\nfakeroot: /usr/bin/fakeroot ("), "{d}");
        assert!(d.contains("\ntar2sqfs: not found ("), "{d}");
        for (t, _) in OPTIONAL_TOOLS {
            assert!(d.contains(&format!("\n{t}: ")), "{t}: {d}");
        }
    }
}
