//! Differences between image states, computed from git trees without checking anything
//! out: only subtrees whose ids differ are read.

use gix::bstr::ByteSlice;
use gix::objs::tree::{EntryKind, EntryMode};
use gix::ObjectId;

use super::git::{self, git_err, unescape_name, GitError, ReadError};
use super::meta::{self, Record};

/// How a path changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    Added,
    Removed,
    Modified,
}

impl Change {
    pub fn letter(self) -> char {
        match self {
            Change::Added => 'A',
            Change::Removed => 'D',
            Change::Modified => 'M',
        }
    }
}

/// One changed path (a file, symlink or directory entry; directories that appear or
/// vanish are listed once, with the files below them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: Vec<u8>,
    pub change: Change,
    /// Size before and after, for blobs (0 if absent or not a blob).
    pub old_size: u64,
    pub new_size: u64,
}

/// Totals of a diff.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stat {
    pub added: usize,
    pub removed: usize,
    pub modified: usize,
    pub size_delta: i64,
}

pub fn stat(entries: &[Entry]) -> Stat {
    let mut s = Stat::default();
    for e in entries {
        match e.change {
            Change::Added => s.added += 1,
            Change::Removed => s.removed += 1,
            Change::Modified => s.modified += 1,
        }
        s.size_delta += e.new_size as i64 - e.old_size as i64;
    }
    s
}

type Entries = Vec<(Vec<u8>, EntryMode, ObjectId)>;

fn tree_entries(repo: &gix::Repository, id: Option<ObjectId>) -> Result<Entries, GitError> {
    let Some(id) = id else { return Ok(Vec::new()) };
    git::with_tree(repo, id, |t| {
        let mut out = Vec::with_capacity(t.entries.len());
        for e in &t.entries {
            let raw = e.filename.as_bytes();
            if let Some(why) = git::bad_entry_name(raw) {
                return Err(git_err(format!(
                    "read tree {id}: unsafe entry \"{}\"",
                    super::model::show(raw)
                ))(why));
            }
            out.push((unescape_name(raw), e.mode, e.oid.to_owned()));
        }
        Ok(out)
    })?
}

fn blob_size(repo: &gix::Repository, mode: EntryMode, id: ObjectId) -> Result<u64, GitError> {
    if mode.is_tree() {
        return Ok(0);
    }
    Ok(repo
        .find_header(id)
        .map_err(git_err(format!("find blob {id}")))?
        .size())
}

fn join(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = prefix.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Diff two rootfs trees.
pub fn diff_trees(
    repo: &gix::Repository,
    a: Option<ObjectId>,
    b: Option<ObjectId>,
    sizes: bool,
    out: &mut Vec<Entry>,
) -> Result<(), GitError> {
    // Iterative: a stack of tasks, pushed in reverse so that they run (and entries come
    // out) in the order a depth-first walk would give.
    enum Task {
        Trees(Option<ObjectId>, Option<ObjectId>, Vec<u8>, usize),
        Emit(Entry),
    }
    let mut stack = vec![Task::Trees(a, b, Vec::new(), 0)];
    while let Some(task) = stack.pop() {
        let (a, b, prefix, depth) = match task {
            Task::Emit(e) => {
                out.push(e);
                continue;
            }
            Task::Trees(a, b, prefix, depth) => (a, b, prefix, depth),
        };
        if a == b {
            continue;
        }
        if depth > super::model::MAX_DEPTH {
            return Err(git_err(format!(
                "diff trees at \"{}\"",
                super::model::show(&prefix)
            ))("path is too deep"));
        }
        let ea = tree_entries(repo, a)?;
        let eb = tree_entries(repo, b)?;
        let mut tasks = Vec::new();
        let one_side = |tasks: &mut Vec<Task>,
                        path: Vec<u8>,
                        mode: EntryMode,
                        id: ObjectId,
                        change: Change|
         -> Result<(), GitError> {
            if mode.kind() == EntryKind::Tree {
                let (a, b) = if change == Change::Added {
                    (None, Some(id))
                } else {
                    (Some(id), None)
                };
                tasks.push(Task::Trees(a, b, path, depth + 1));
                return Ok(());
            }
            let size = if sizes { blob_size(repo, mode, id)? } else { 0 };
            let (old_size, new_size) = if change == Change::Added {
                (0, size)
            } else {
                (size, 0)
            };
            tasks.push(Task::Emit(Entry {
                path,
                change,
                old_size,
                new_size,
            }));
            Ok(())
        };
        let (mut i, mut j) = (0, 0);
        while i < ea.len() || j < eb.len() {
            let ord = match (ea.get(i), eb.get(j)) {
                (Some(x), Some(y)) => x.0.cmp(&y.0),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => break,
            };
            match ord {
                std::cmp::Ordering::Less => {
                    let (n, m, id) = &ea[i];
                    one_side(&mut tasks, join(&prefix, n), *m, *id, Change::Removed)?;
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    let (n, m, id) = &eb[j];
                    one_side(&mut tasks, join(&prefix, n), *m, *id, Change::Added)?;
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    let (n, ma, ida) = &ea[i];
                    let (_, mb, idb) = &eb[j];
                    let p = join(&prefix, n);
                    match (ma.is_tree(), mb.is_tree()) {
                        (true, true) => {
                            tasks.push(Task::Trees(Some(*ida), Some(*idb), p, depth + 1))
                        }
                        (false, false) => {
                            if ida != idb || ma != mb {
                                let (os, ns) = if sizes {
                                    (blob_size(repo, *ma, *ida)?, blob_size(repo, *mb, *idb)?)
                                } else {
                                    (0, 0)
                                };
                                tasks.push(Task::Emit(Entry {
                                    path: p,
                                    change: Change::Modified,
                                    old_size: os,
                                    new_size: ns,
                                }));
                            }
                        }
                        _ => {
                            one_side(&mut tasks, p.clone(), *ma, *ida, Change::Removed)?;
                            one_side(&mut tasks, p, *mb, *idb, Change::Added)?;
                        }
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        stack.extend(tasks.into_iter().rev());
    }
    Ok(())
}

/// Diff two image commits: files from the trees, plus metadata changes (modes, empty
/// directories, FIFOs, hard links) reported as modifications of their paths.
pub fn diff_commits(
    repo: &gix::Repository,
    a: Option<ObjectId>,
    b: ObjectId,
    sizes: bool,
) -> Result<Vec<Entry>, ReadError> {
    let tb = git::image_trees(repo, b)?;
    let ta = match a {
        Some(a) => Some((a, git::image_trees(repo, a)?)),
        None => None,
    };
    let mut out = Vec::new();
    diff_trees(
        repo,
        ta.as_ref().map(|(_, t)| t.rootfs),
        Some(tb.rootfs),
        sizes,
        &mut out,
    )?;
    let meta_a = match &ta {
        Some((a, t)) if t.meta != tb.meta => Some(read_meta(repo, *a, t.meta)?),
        Some(_) => None,
        None => Some(Vec::new()),
    };
    if let Some(ma) = meta_a {
        let mb = read_meta(repo, b, tb.meta)?;
        // Extended attributes: a path whose set changed is modified.
        let xattrs = |m: &[Record]| {
            let mut x: super::model::Xattrs = Default::default();
            for r in m {
                if let Record::Xattr { name, value, path } = r {
                    x.entry(path.clone())
                        .or_default()
                        .push((name.clone(), value.clone()));
                }
            }
            x
        };
        let (xa, xb) = (xattrs(&ma), xattrs(&mb));
        // Times are not shown: a diff lists what changed in content and modes.
        let ma: Vec<Record> = ma
            .into_iter()
            .filter(|r| !matches!(r, Record::Xattr { .. } | Record::Time { .. }))
            .collect();
        let mb: Vec<Record> = mb
            .into_iter()
            .filter(|r| !matches!(r, Record::Xattr { .. } | Record::Time { .. }))
            .collect();
        let key = |r: &Record| match r {
            Record::Mode { path, .. }
            | Record::Dir { path, .. }
            | Record::Fifo { path, .. }
            | Record::Link { path, .. }
            | Record::Xattr { path, .. }
            | Record::Time { path, .. } => path.clone(),
        };
        let sa: std::collections::BTreeMap<Vec<u8>, &Record> =
            ma.iter().map(|r| (key(r), r)).collect();
        let sb: std::collections::BTreeMap<Vec<u8>, &Record> =
            mb.iter().map(|r| (key(r), r)).collect();
        // A path the trees show added or removed that the other side's metadata holds as a
        // FIFO or an empty directory changed type: it was there before and is there after.
        for e in out.iter_mut() {
            let other = match e.change {
                Change::Added => sa.get(&e.path),
                Change::Removed => sb.get(&e.path),
                Change::Modified => None,
            };
            if matches!(other, Some(Record::Dir { .. } | Record::Fifo { .. })) {
                e.change = Change::Modified;
            }
        }
        let seen: std::collections::HashSet<Vec<u8>> = out.iter().map(|e| e.path.clone()).collect();
        // A directory's mode: its `dir` record (empty directory) or `mode` record, else
        // what a tree implies.
        let dir_mode = |r: Option<&&Record>| match r {
            Some(Record::Dir { mode, .. }) | Some(Record::Mode { mode, .. }) => *mode,
            _ => DIR_MODE,
        };
        for (p, r) in &sb {
            if seen.contains(p) {
                continue;
            }
            match sa.get(p) {
                Some(old) if old == r => {}
                // A directory that became empty or got content: only its mode matters.
                Some(old @ Record::Mode { .. }) | Some(old @ Record::Dir { .. })
                    if matches!(
                        (old, r),
                        (Record::Mode { .. }, Record::Dir { .. })
                            | (Record::Dir { .. }, Record::Mode { .. })
                    ) && dir_mode(Some(old)) == dir_mode(Some(r)) => {}
                Some(_) => out.push(Entry {
                    path: p.clone(),
                    change: Change::Modified,
                    old_size: 0,
                    new_size: 0,
                }),
                None => {
                    let change = match r {
                        // An empty directory that had content before (it was in the tree).
                        Record::Dir { mode, .. }
                            if ta.as_ref().is_some_and(|(_, t)| {
                                tree_has(repo, t.rootfs, p).unwrap_or(false)
                            }) =>
                        {
                            if *mode == DIR_MODE {
                                continue;
                            }
                            Change::Modified
                        }
                        Record::Dir { .. } | Record::Fifo { .. } => Change::Added,
                        // The mode of a directory that is new: its files are listed.
                        Record::Mode { .. }
                            if !ta.as_ref().is_some_and(|(_, t)| {
                                tree_has(repo, t.rootfs, p).unwrap_or(true)
                            }) =>
                        {
                            continue
                        }
                        _ => Change::Modified,
                    };
                    out.push(Entry {
                        path: p.clone(),
                        change,
                        old_size: 0,
                        new_size: 0,
                    });
                }
            }
        }
        for (p, r) in &sa {
            // An empty directory that got content is still there: changed only if its
            // mode did (a `mode` record in b is handled above).
            if let Record::Dir { mode, .. } = r {
                if tree_has(repo, tb.rootfs, p)? {
                    if *mode != DIR_MODE && !sb.contains_key(p) && !seen.contains(p) {
                        out.push(Entry {
                            path: p.clone(),
                            change: Change::Modified,
                            old_size: 0,
                            new_size: 0,
                        });
                    }
                    continue;
                }
            }
            // The mode of a directory that is gone: its files are listed.
            if matches!(r, Record::Mode { .. }) && !tree_has(repo, tb.rootfs, p)? {
                continue;
            }
            if !sb.contains_key(p) && !seen.contains(p) {
                let change = if matches!(r, Record::Dir { .. } | Record::Fifo { .. }) {
                    Change::Removed
                } else {
                    Change::Modified
                };
                out.push(Entry {
                    path: p.clone(),
                    change,
                    old_size: 0,
                    new_size: 0,
                });
            }
        }
        let seen: std::collections::HashSet<Vec<u8>> = out.iter().map(|e| e.path.clone()).collect();
        for p in xa.keys().chain(xb.keys()) {
            if xa.get(p) != xb.get(p) && !seen.contains(p) {
                out.push(Entry {
                    path: p.clone(),
                    change: Change::Modified,
                    old_size: 0,
                    new_size: 0,
                });
            }
        }
        out.sort_by(|x, y| x.path.cmp(&y.path));
        out.dedup_by(|x, y| x.path == y.path);
    }
    Ok(out)
}

/// The mode a git tree implies for a directory (others have a `mode` record).
const DIR_MODE: u32 = 0o755;

/// Whether `path` exists in the rootfs tree `root`.
fn tree_has(repo: &gix::Repository, root: ObjectId, path: &[u8]) -> Result<bool, GitError> {
    let mut id = root;
    let comps: Vec<&[u8]> = path
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    for (i, c) in comps.iter().enumerate() {
        let entries = tree_entries(repo, Some(id))?;
        match entries.iter().find(|(n, _, _)| n.as_slice() == *c) {
            Some(_) if i + 1 == comps.len() => return Ok(true),
            Some((_, m, oid)) if m.is_tree() => id = *oid,
            _ => return Ok(false),
        }
    }
    Ok(true)
}

/// Commit `commit`'s metadata blob `id`, size-bounded ([`git::MAX_META`]).
fn read_meta(
    repo: &gix::Repository,
    commit: ObjectId,
    id: ObjectId,
) -> Result<Vec<Record>, ReadError> {
    let blob = git::read_bounded(repo, commit, "meta blob", id, git::MAX_META)?;
    Ok(meta::decode(&blob)?)
}
