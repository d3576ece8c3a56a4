//! The in-memory model of an image's file tree: what import produces, what a commit is
//! written from and read back into, and what checkout and export walk.
//!
//! Names are raw bytes (non-UTF-8 names are kept exactly). Modes are permission bits only
//! (`0o7777`); the file type is the variant. Ownership is not modelled: images belong to the
//! user who runs them and export as root. Children are kept in byte order, so every walk is
//! deterministic.
//!
//! Modification times ([`Times`]) are kept on the image root by path, like extended
//! attributes: a side table keeps `Node` small and its many constructors unchanged.
//! [`Dir::insert`] and [`Dir::remove`] drop the times of what they replace or remove.

use std::collections::BTreeMap;

use gix::ObjectId;

/// One entry of an image tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir(Dir),
    File(File),
    Symlink { target: Vec<u8> },
    Fifo { mode: u32 },
}

/// A regular file whose content is the blob `oid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub mode: u32,
    pub oid: ObjectId,
    /// Size in bytes, where known (0 for files read back from a commit: reading every
    /// blob header would cost a lookup per file).
    pub size: u64,
    /// Files sharing a group are hard links to one inode.
    pub link_group: Option<u32>,
}

/// A directory. `Clone` and `PartialEq` are iterative (a derived one recurses once per
/// level of depth).
#[derive(Debug, Default)]
pub struct Dir {
    pub mode: u32,
    pub children: BTreeMap<Vec<u8>, Node>,
    /// The git tree this directory was read from, while it is unchanged: writing a
    /// commit reuses it instead of writing the subtree again. Cleared along the path by
    /// every change made through [`Dir::insert`] and [`Dir::remove`]; code that changes
    /// `children` directly must clear it too.
    pub tree: Option<ObjectId>,
    /// Extended attributes by path (relative to this directory), each a list of (name,
    /// value). Kept on the image root only; recorded when the user asks (`--xattrs`).
    pub xattrs: Xattrs,
    /// Modification times by path (relative to this directory, `b""` for itself). Kept on
    /// the image root only.
    pub times: Times,
}

/// A modification time: seconds since the epoch and nanoseconds (0..1e9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mtime {
    pub sec: i64,
    pub nsec: u32,
}

impl Mtime {
    pub fn new(sec: i64, nsec: u32) -> Mtime {
        Mtime {
            sec,
            nsec: nsec.min(999_999_999),
        }
    }

    /// The modification time of `md`, in whole seconds: images keep seconds (what tar,
    /// SquashFS and Python's `.pyc` check hold), so that a directory and its tarball
    /// import as the same image.
    pub fn of(md: &std::fs::Metadata) -> Mtime {
        use std::os::unix::fs::MetadataExt;
        Mtime::new(md.mtime(), 0)
    }

    /// This time, or `max` seconds if it is later (reproducible-builds.org "clamp").
    pub fn clamped(self, max: i64) -> Mtime {
        if self > Mtime::new(max, 0) {
            Mtime::new(max, 0)
        } else {
            self
        }
    }
}

/// Modification times of an image's entries by path (`b""` is the root directory). An
/// entry without its own time has `default`; with neither, its time is unknown (an image
/// from a metadata blob of version 1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Times {
    pub default: Option<Mtime>,
    pub by_path: BTreeMap<Vec<u8>, Mtime>,
}

impl Times {
    /// The time of `path`, if known.
    pub fn get(&self, path: &[u8]) -> Option<Mtime> {
        self.by_path.get(path).copied().or(self.default)
    }

    pub fn set(&mut self, path: &[u8], t: Mtime) {
        self.by_path.insert(path.to_vec(), t);
    }

    /// Forget the times of `path` and everything below it.
    pub fn remove_tree(&mut self, path: &[u8]) {
        if path.is_empty() {
            self.by_path.clear();
            return;
        }
        self.by_path.remove(path);
        let mut lo = path.to_vec();
        lo.push(b'/');
        let mut hi = path.to_vec();
        hi.push(b'/' + 1);
        let below: Vec<Vec<u8>> = self.by_path.range(lo..hi).map(|(k, _)| k.clone()).collect();
        for k in below {
            self.by_path.remove(&k);
        }
    }

    /// The times of `prefix` and below, with paths relative to `prefix` (`prefix` itself
    /// becomes `b""`).
    pub fn subtree(&self, prefix: &[u8]) -> Times {
        if prefix.is_empty() {
            return self.clone();
        }
        let mut lo = prefix.to_vec();
        lo.push(b'/');
        let mut hi = prefix.to_vec();
        hi.push(b'/' + 1);
        let mut by_path: BTreeMap<Vec<u8>, Mtime> = self
            .by_path
            .range(lo.clone()..hi)
            .map(|(k, t)| (k[lo.len()..].to_vec(), *t))
            .collect();
        if let Some(t) = self.by_path.get(prefix) {
            by_path.insert(Vec::new(), *t);
        }
        Times {
            default: self.default,
            by_path,
        }
    }
}

impl Clone for Dir {
    fn clone(&self) -> Dir {
        // Directories breadth-first (parents before children), each with its parent's
        // index and its name; then copies are attached to their parents from the end.
        let mut order: Vec<(&Dir, usize, &[u8])> = vec![(self, 0, b"")];
        let mut i = 0;
        while i < order.len() {
            let d = order[i].0;
            for (name, n) in &d.children {
                if let Node::Dir(sub) = n {
                    order.push((sub, i, name));
                }
            }
            i += 1;
        }
        let mut built: Vec<Option<Dir>> = order
            .iter()
            .map(|(src, _, _)| {
                Some(Dir {
                    mode: src.mode,
                    tree: src.tree,
                    xattrs: src.xattrs.clone(),
                    times: src.times.clone(),
                    children: src
                        .children
                        .iter()
                        .filter(|(_, n)| !matches!(n, Node::Dir(_)))
                        .map(|(k, n)| (k.clone(), n.clone()))
                        .collect(),
                })
            })
            .collect();
        for k in (1..order.len()).rev() {
            let d = built[k].take().expect("each directory is attached once");
            let (_, parent, name) = order[k];
            built[parent]
                .as_mut()
                .expect("parents are attached after their children")
                .children
                .insert(name.to_vec(), Node::Dir(d));
        }
        built[0].take().expect("the root")
    }
}

impl PartialEq for Dir {
    fn eq(&self, other: &Dir) -> bool {
        let mut todo = vec![(self, other)];
        while let Some((a, b)) = todo.pop() {
            if a.mode != b.mode
                || a.tree != b.tree
                || a.xattrs != b.xattrs
                || a.times != b.times
                || a.children.len() != b.children.len()
            {
                return false;
            }
            for ((ka, na), (kb, nb)) in a.children.iter().zip(&b.children) {
                if ka != kb {
                    return false;
                }
                match (na, nb) {
                    (Node::Dir(x), Node::Dir(y)) => todo.push((x, y)),
                    (Node::Dir(_), _) | (_, Node::Dir(_)) => return false,
                    (x, y) => {
                        if x != y {
                            return false;
                        }
                    }
                }
            }
        }
        true
    }
}

impl Eq for Dir {}

/// Extended attributes by path: (name, value) pairs, sorted by name.
pub type Xattrs = BTreeMap<Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>>;

/// Whether imports, builds and conversions record extended attributes (`--xattrs`,
/// `$CH_XATTRS`): a setting the binary resolves once and passes down (a [`super::Store`]
/// carries it for the operations that go through it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum XattrPolicy {
    /// Extended attributes are not read (the default, as Charliecloud's `--no-xattrs`).
    #[default]
    Ignore,
    /// `user.*` extended attributes are read and recorded.
    Record,
}

impl XattrPolicy {
    pub fn from_flag(record: bool) -> XattrPolicy {
        if record {
            XattrPolicy::Record
        } else {
            XattrPolicy::Ignore
        }
    }

    pub fn record(self) -> bool {
        self == XattrPolicy::Record
    }
}

/// Whether extended attribute `name` is image content that an input may bring: `user.*`
/// but not `user.overlay.*`, which is overlayfs's bookkeeping (a whiteout, an opaque
/// directory) under the `userxattr` mount option that builds use. An archive member or a
/// host file carrying one is not allowed to delete or hide other files of the image when
/// its layer is read back ([`super::layer`]), nor to reach a checkout that an overlay
/// reads as a lower directory.
pub fn is_image_xattr(name: &[u8]) -> bool {
    name.starts_with(b"user.") && !name.starts_with(b"user.overlay.")
}

/// The `user.*` extended attributes of `path` (not following symlinks), sorted by name.
pub fn read_xattrs(path: &std::path::Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    use std::os::unix::ffi::OsStrExt;
    let Ok(names) = xattr::list(path) else {
        return Vec::new();
    };
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = names
        .filter(|n| n.as_bytes().starts_with(b"user."))
        .filter_map(|n| {
            xattr::get(path, &n)
                .ok()
                .flatten()
                .map(|v| (n.as_bytes().to_vec(), v))
        })
        .collect();
    out.sort();
    out
}

/// Why a path could not be placed in the tree.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("path is empty")]
    Empty,
    #[error("path contains '..'")]
    DotDot,
    #[error("path is absolute")]
    Absolute,
    #[error("path goes through symlink {0}")]
    ThroughSymlink(String),
    #[error("path goes through non-directory {0}")]
    ThroughNonDir(String),
    #[error("path contains a NUL byte")]
    Nul,
    #[error("path is deeper than {MAX_DEPTH} components")]
    TooDeep,
}

/// Longest name of a file in an image, in bytes (Linux's NAME_MAX): no file system an
/// image is checked out on can hold a longer one, so inputs that name one are refused
/// where they are read instead of storing an image no checkout can write. (A layer's
/// whiteout member `.wh.NAME` may be 4 bytes longer: it names NAME, it is not a file.)
pub const MAX_NAME: usize = 255;

/// Longest path of a file in an image, in bytes, as the image's processes name it (`/`
/// then the path): Linux's PATH_MAX (4096) less its NUL byte. Inputs naming a longer one
/// are refused where they are read (see [`too_long`]), as for [`MAX_NAME`].
pub const MAX_PATH: usize = 4095;

/// Why the path of components `comps` (as [`components`] gives them) names a file no
/// checkout can write, if it does: a name longer than [`MAX_NAME`] (NAME_MAX), or a path
/// longer than [`MAX_PATH`] (PATH_MAX). A layer's whiteout (`whiteout`: the last
/// component is `.wh.NAME`) names NAME, so its prefix's 4 bytes are not counted. The one
/// check of tarball members for import, pull, ch-convert and `ADD`.
pub fn too_long(comps: &[&[u8]], whiteout: bool) -> Option<String> {
    let extra = if whiteout { b".wh.".len() } else { 0 };
    let last = comps.len().saturating_sub(1);
    let long_name = comps
        .iter()
        .enumerate()
        .any(|(i, c)| c.len() > MAX_NAME + if i == last { extra } else { 0 });
    if long_name {
        return Some(format!(
            "a name in its path is longer than {MAX_NAME} bytes (NAME_MAX)"
        ));
    }
    let len = comps.iter().map(|c| c.len() + 1).sum::<usize>() - extra;
    (len > MAX_PATH).then(|| {
        format!("its path is {len} bytes with its leading /, longer than {MAX_PATH} (PATH_MAX)")
    })
}

/// `path` as an error about its length quotes it ([`crate::log::short`]): escaped as
/// [`show`] does, whole up to [`crate::log::QUOTED_MAX`] characters, else its first ones
/// and its length in bytes (a name refused for its length may be kilobytes).
pub fn show_short(path: &[u8]) -> String {
    crate::log::short(
        &String::from_utf8_lossy(path),
        |s| crate::log::shown(s).into_owned(),
        |_| format!("({} bytes)", path.len()),
    )
}

/// Most components a path in an image may have. Every input (tarball members, directory
/// imports, overlay upper directories, trees read from the repository) is held to it, so
/// that no walk over a tree recurses deeper than this (Linux's PATH_MAX of 4096 bytes
/// allows at most 2048 components in a path anyway).
pub const MAX_DEPTH: usize = 1024;

/// Why a single file name (one path component, or one git tree entry) is unsafe.
pub fn bad_name(name: &[u8]) -> Option<&'static str> {
    match name {
        b"" => Some("empty name"),
        b"." => Some("name is '.'"),
        b".." => Some("name is '..'"),
        n if n.contains(&b'/') => Some("name contains '/'"),
        n if n.contains(&0) => Some("name contains a NUL byte"),
        n if n.len() > MAX_NAME => Some("name is longer than 255 bytes (NAME_MAX)"),
        _ => None,
    }
}

/// Why `path` is not a canonical relative path (components joined by single `/`, none
/// empty, `.` or `..`, no NUL, at most [`MAX_DEPTH`] of them), as metadata records hold.
pub fn bad_canonical_path(path: &[u8]) -> Option<&'static str> {
    if path.first() == Some(&b'/') {
        return Some("path is absolute");
    }
    let mut n = 0;
    for c in path.split(|b| *b == b'/') {
        n += 1;
        if n > MAX_DEPTH {
            return Some("path is too deep");
        }
        if let Some(why) = bad_name(c) {
            return Some(why);
        }
    }
    None
}

/// The first entry of `root` (path, reason) whose name is unsafe (see [`bad_name`]) or
/// that lies deeper than [`MAX_DEPTH`]. Iterative: a hostile depth cannot overflow it.
pub fn find_bad_entry(root: &Dir) -> Option<(Vec<u8>, &'static str)> {
    let mut stack: Vec<(Vec<u8>, usize, &Dir)> = vec![(Vec::new(), 0, root)];
    while let Some((prefix, depth, dir)) = stack.pop() {
        for (name, node) in &dir.children {
            let mut p = prefix.clone();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(name);
            if let Some(why) = bad_name(name) {
                return Some((p, why));
            }
            if depth + 1 > MAX_DEPTH {
                return Some((p, "path is too deep"));
            }
            if let Node::Dir(d) = node {
                stack.push((p, depth + 1, d));
            }
        }
    }
    None
}

/// Split a relative path into components, dropping `.` and empty components. Refuses
/// absolute paths, `..`, NUL bytes and more than [`MAX_DEPTH`] components.
pub fn components(path: &[u8]) -> Result<Vec<&[u8]>, PathError> {
    if path.first() == Some(&b'/') {
        return Err(PathError::Absolute);
    }
    if path.contains(&0) {
        return Err(PathError::Nul);
    }
    let mut out = Vec::new();
    for c in path.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(PathError::DotDot),
            c => out.push(c),
        }
        if out.len() > MAX_DEPTH {
            return Err(PathError::TooDeep);
        }
    }
    if out.is_empty() {
        return Err(PathError::Empty);
    }
    Ok(out)
}

/// The names in directory `dir`, sorted bytewise (walks are deterministic).
pub fn read_dir_sorted(dir: &std::path::Path) -> std::io::Result<Vec<std::ffi::OsString>> {
    let mut names = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<Vec<_>, _>>()?;
    names.sort();
    Ok(names)
}

/// `rel/name` as bytes (just `name` at the top).
pub fn join_rel(rel: &[u8], name: &std::ffi::OsStr) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let mut r = Vec::with_capacity(rel.len() + name.len() + 1);
    r.extend_from_slice(rel);
    if !r.is_empty() {
        r.push(b'/');
    }
    r.extend_from_slice(name.as_bytes());
    r
}

/// Lossy display of a byte path for messages, escaped as [`crate::log::shown`] escapes
/// (a path comes from an archive, a layer or a remote: its control characters must not
/// reach the terminal nor forge a line).
pub fn show(path: &[u8]) -> String {
    crate::log::shown(&String::from_utf8_lossy(path)).into_owned()
}

impl Dir {
    pub fn new(mode: u32) -> Dir {
        Dir {
            mode,
            children: BTreeMap::new(),
            tree: None,
            xattrs: BTreeMap::new(),
            times: Times::default(),
        }
    }

    /// The directory that will hold `comps` (all but the last), creating missing
    /// directories with mode 0755. Refuses to go through symlinks or files.
    fn parent_mut(&mut self, comps: &[&[u8]], invalidate: bool) -> Result<&mut Dir, PathError> {
        let mut dir = self;
        let mut walked: Vec<u8> = Vec::new();
        for c in &comps[..comps.len() - 1] {
            if invalidate {
                dir.tree = None;
            }
            if !walked.is_empty() {
                walked.push(b'/');
            }
            walked.extend_from_slice(c);
            let child = dir
                .children
                .entry(c.to_vec())
                .or_insert_with(|| Node::Dir(Dir::new(0o755)));
            dir = match child {
                Node::Dir(d) => d,
                Node::Symlink { .. } => return Err(PathError::ThroughSymlink(show(&walked))),
                _ => return Err(PathError::ThroughNonDir(show(&walked))),
            };
        }
        if invalidate {
            dir.tree = None;
        }
        Ok(dir)
    }

    /// Place `node` at `path`, replacing what was there (as a later tar member replaces an
    /// earlier one). A directory replacing a directory keeps the old children and takes the
    /// new mode.
    pub fn insert(&mut self, path: &[u8], node: Node) -> Result<(), PathError> {
        self.insert_inner(path, node, true)
    }

    /// Like [`Dir::insert`], but keeps cached tree ids: for entries that are not part of
    /// git trees (metadata records applied while reading a commit).
    pub fn insert_untracked(&mut self, path: &[u8], node: Node) -> Result<(), PathError> {
        self.insert_inner(path, node, false)
    }

    fn insert_inner(&mut self, path: &[u8], node: Node, invalidate: bool) -> Result<(), PathError> {
        let comps = components(path)?;
        let canonical = comps.join(&b'/');
        let parent = self.parent_mut(&comps, invalidate)?;
        let name = comps[comps.len() - 1].to_vec();
        let replaced_dir = match (parent.children.get_mut(&name), node) {
            (Some(Node::Dir(old)), Node::Dir(new)) if new.children.is_empty() => {
                old.mode = new.mode;
                false
            }
            (_, node) => matches!(parent.children.insert(name, node), Some(Node::Dir(_))),
        };
        if replaced_dir {
            // What was below the replaced directory is gone; its times go too.
            self.times.remove_tree(&canonical);
        }
        Ok(())
    }

    /// Remove the entry at `path`, if any; returns whether something was removed.
    pub fn remove(&mut self, path: &[u8]) -> Result<bool, PathError> {
        let comps = components(path)?;
        if self.get(path).is_none() {
            return Ok(false);
        }
        let mut dir = &mut *self;
        for c in &comps[..comps.len() - 1] {
            dir.tree = None;
            dir = match dir.children.get_mut(*c) {
                Some(Node::Dir(d)) => d,
                _ => return Ok(false),
            };
        }
        dir.tree = None;
        let removed = dir.children.remove(comps[comps.len() - 1]).is_some();
        self.times.remove_tree(&comps.join(&b'/'));
        Ok(removed)
    }

    /// The entry at `path`.
    pub fn get(&self, path: &[u8]) -> Option<&Node> {
        let comps = components(path).ok()?;
        let mut dir = self;
        for c in &comps[..comps.len() - 1] {
            dir = match dir.children.get(*c) {
                Some(Node::Dir(d)) => d,
                _ => return None,
            };
        }
        dir.children.get(comps[comps.len() - 1])
    }

    /// The entry at `path`, mutably.
    pub fn get_mut(&mut self, path: &[u8]) -> Option<&mut Node> {
        let comps = components(path).ok()?;
        let mut dir = self;
        for c in &comps[..comps.len() - 1] {
            dir = match dir.children.get_mut(*c) {
                Some(Node::Dir(d)) => d,
                _ => return None,
            };
        }
        dir.children.get_mut(comps[comps.len() - 1])
    }

    /// Visit every entry depth-first in byte order, parents before children, with its path
    /// relative to this directory.
    pub fn walk<'a>(&'a self, f: &mut dyn FnMut(&[u8], &'a Node)) {
        fn go<'a>(dir: &'a Dir, prefix: &mut Vec<u8>, f: &mut dyn FnMut(&[u8], &'a Node)) {
            for (name, node) in &dir.children {
                let len = prefix.len();
                if len > 0 {
                    prefix.push(b'/');
                }
                prefix.extend_from_slice(name);
                f(prefix, node);
                if let Node::Dir(d) = node {
                    go(d, prefix, f);
                }
                prefix.truncate(len);
            }
        }
        go(self, &mut Vec::new(), f);
    }

    /// Number of entries below this directory.
    pub fn count(&self) -> usize {
        let mut n = 0;
        self.walk(&mut |_, _| n += 1);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(mode: u32) -> Node {
        Node::File(File {
            mode,
            oid: ObjectId::null(gix::hash::Kind::Sha1),
            size: 0,
            link_group: None,
        })
    }

    #[test]
    fn insert_creates_missing_parents() {
        let mut d = Dir::new(0o755);
        d.insert(b"a/b/c", file(0o644)).unwrap();
        assert!(matches!(d.get(b"a/b"), Some(Node::Dir(_))));
        assert!(matches!(d.get(b"./a//b/c"), Some(Node::File(_))));
    }

    #[test]
    fn insert_through_symlink_is_refused() {
        let mut d = Dir::new(0o755);
        d.insert(
            b"etc",
            Node::Symlink {
                target: b"/etc".to_vec(),
            },
        )
        .unwrap();
        assert_eq!(
            d.insert(b"etc/passwd", file(0o644)),
            Err(PathError::ThroughSymlink("etc".into()))
        );
    }

    #[test]
    fn dotdot_and_absolute_paths_are_refused() {
        let mut d = Dir::new(0o755);
        assert_eq!(d.insert(b"a/../../x", file(0o644)), Err(PathError::DotDot));
        assert_eq!(d.insert(b"/x", file(0o644)), Err(PathError::Absolute));
    }

    #[test]
    fn paths_deeper_than_the_limit_or_with_nul_are_refused() {
        let ok = "d/".repeat(MAX_DEPTH - 1) + "f";
        assert_eq!(components(ok.as_bytes()).unwrap().len(), MAX_DEPTH);
        let deep = "d/".repeat(MAX_DEPTH) + "f";
        assert_eq!(components(deep.as_bytes()), Err(PathError::TooDeep));
        assert_eq!(components(b"a\0b"), Err(PathError::Nul));
    }

    #[test]
    fn canonical_paths_have_only_safe_names() {
        assert_eq!(bad_canonical_path(b"a/b c/\xff"), None);
        for p in [&b"/a"[..], b"", b"a//b", b"./a", b"a/..", b"a/\0"] {
            assert!(bad_canonical_path(p).is_some(), "{}", show(p));
        }
        let mut d = Dir::new(0o755);
        d.children
            .insert(b"a/b".to_vec(), Node::Dir(Dir::new(0o755)));
        assert_eq!(
            find_bad_entry(&d),
            Some((b"a/b".to_vec(), "name contains '/'"))
        );
    }

    #[test]
    fn directory_member_again_keeps_children_and_takes_mode() {
        let mut d = Dir::new(0o755);
        d.insert(b"a/x", file(0o644)).unwrap();
        d.insert(b"a", Node::Dir(Dir::new(0o700))).unwrap();
        match d.get(b"a") {
            Some(Node::Dir(a)) => {
                assert_eq!(a.mode, 0o700);
                assert_eq!(a.children.len(), 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn replacing_or_removing_an_entry_drops_the_times_below_it() {
        let mut d = Dir::new(0o755);
        d.insert(b"a/x", file(0o644)).unwrap();
        d.insert(b"ab", file(0o644)).unwrap();
        for (p, s) in [(&b"a"[..], 1), (b"a/x", 2), (b"ab", 3)] {
            d.times.set(p, Mtime::new(s, 0));
        }
        assert_eq!(d.times.subtree(b"a").by_path.len(), 2);
        assert_eq!(d.times.subtree(b"a").get(b"x"), Some(Mtime::new(2, 0)));
        // A directory again keeps its children and their times.
        d.insert(b"a", Node::Dir(Dir::new(0o700))).unwrap();
        assert_eq!(d.times.get(b"a/x"), Some(Mtime::new(2, 0)));
        // A file replacing the directory: a/ and a/x lose their times, ab keeps its own.
        d.insert(b"a", file(0o644)).unwrap();
        assert_eq!(d.times.get(b"a/x"), None);
        assert_eq!(d.times.get(b"a"), None);
        assert_eq!(d.times.get(b"ab"), Some(Mtime::new(3, 0)));
        d.remove(b"ab").unwrap();
        assert!(d.times.by_path.is_empty());
        assert_eq!(Mtime::new(10, 5).clamped(10), Mtime::new(10, 0));
        assert_eq!(Mtime::new(9, 5).clamped(10), Mtime::new(9, 5));
    }

    #[test]
    fn walk_is_depth_first_in_byte_order() {
        let mut d = Dir::new(0o755);
        for p in ["b", "a/z", "a/b", "a.c"] {
            d.insert(p.as_bytes(), file(0o644)).unwrap();
        }
        let mut seen = Vec::new();
        d.walk(&mut |p, _| seen.push(show(p)));
        assert_eq!(seen, ["a", "a/b", "a/z", "a.c", "b"]);
    }
}
