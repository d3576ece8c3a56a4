//! Resolve a container path to a host path inside the new root, following symlinks as the
//! container would see them: absolute links restart at the new root and `..` never climbs
//! above it (like openat2's `RESOLVE_IN_ROOT`). A bind destination therefore cannot escape
//! the image, whatever symlinks the image holds.
//!
//! Reads the filesystem (lstat, readlink) but changes nothing.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

/// Result of resolving a container path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// The path exists; its host path (symlinks resolved, inside the root).
    Exists(PathBuf),
    /// A prefix exists (host path, a directory) and these components are missing.
    Missing {
        existing: PathBuf,
        rest: Vec<OsString>,
    },
}

/// Errors from resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    TooManyLinks,
    /// A non-final component exists but is not a directory.
    NotDir(PathBuf),
    Io(PathBuf, i32),
}

const MAX_LINKS: usize = 40;

/// Resolve container path `path` inside host directory `root`.
pub fn resolve(root: &Path, path: &Path) -> Result<Resolved, ResolveError> {
    // Pending components, processed from the front.
    let mut pending: Vec<OsString> = comps(path);
    pending.reverse();
    let mut cur: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(c) = pending.pop() {
        if c == ".." {
            cur.pop();
            continue;
        }
        let host = join(root, &cur).join(&c);
        match std::fs::symlink_metadata(&host) {
            Ok(md) if md.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(ResolveError::TooManyLinks);
                }
                let target = std::fs::read_link(&host)
                    .map_err(|e| ResolveError::Io(host.clone(), e.raw_os_error().unwrap_or(0)))?;
                if target.is_absolute() {
                    cur.clear();
                }
                let mut t = comps(&target);
                t.reverse();
                pending.extend(t);
            }
            Ok(md) => {
                if !md.is_dir() && !pending.is_empty() {
                    return Err(ResolveError::NotDir(host));
                }
                cur.push(c);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut rest = vec![c];
                pending.reverse();
                rest.extend(pending);
                // `..` in a missing tail would need the missing directory: normalise it away.
                let mut norm: Vec<OsString> = Vec::new();
                for r in rest {
                    if r == ".." {
                        if norm.pop().is_none() {
                            cur.pop();
                        }
                    } else {
                        norm.push(r);
                    }
                }
                if norm.is_empty() {
                    return Ok(Resolved::Exists(join(root, &cur)));
                }
                return Ok(Resolved::Missing {
                    existing: join(root, &cur),
                    rest: norm,
                });
            }
            Err(e) => return Err(ResolveError::Io(host, e.raw_os_error().unwrap_or(0))),
        }
    }
    Ok(Resolved::Exists(join(root, &cur)))
}

fn comps(p: &Path) -> Vec<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

fn join(root: &Path, cur: &[OsString]) -> PathBuf {
    let mut p = root.to_path_buf();
    for c in cur {
        p.push(c);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_and_dotdot_stay_inside_root() {
        let t = tempfile::tempdir().expect("tempdir");
        let r = t.path();
        std::fs::create_dir_all(r.join("a/b")).expect("mkdir");
        symlink("/etc", r.join("abs")).expect("symlink");
        symlink("../../../../..", r.join("a/up")).expect("symlink");
        symlink("b", r.join("a/rel")).expect("symlink");
        assert_eq!(
            resolve(r, Path::new("/a/b")),
            Ok(Resolved::Exists(r.join("a/b")))
        );
        assert_eq!(
            resolve(r, Path::new("/a/rel")),
            Ok(Resolved::Exists(r.join("a/b")))
        );
        assert_eq!(
            resolve(r, Path::new("/a/up")),
            Ok(Resolved::Exists(r.to_path_buf()))
        );
        assert_eq!(
            resolve(r, Path::new("/../../..")),
            Ok(Resolved::Exists(r.to_path_buf()))
        );
        assert_eq!(
            resolve(r, Path::new("/abs/passwd")),
            Ok(Resolved::Missing {
                existing: r.to_path_buf(),
                rest: vec!["etc".into(), "passwd".into()]
            })
        );
        assert_eq!(
            resolve(r, Path::new("/a/up/x/../y")),
            Ok(Resolved::Missing {
                existing: r.to_path_buf(),
                rest: vec!["y".into()]
            })
        );
    }

    #[test]
    fn symlink_loops_are_refused() {
        let t = tempfile::tempdir().expect("tempdir");
        symlink("loop", t.path().join("loop")).expect("symlink");
        assert_eq!(
            resolve(t.path(), Path::new("/loop/x")),
            Err(ResolveError::TooManyLinks)
        );
    }
}
