//! Store maintenance: the build graph, garbage collection, integrity checks, and sharing
//! the cache with a git remote. Uses stock git(1) for object packing, pruning and
//! transport (none of these is on a hot path).

use crate::error::{IoError, IoResultExt};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use gix::ObjectId;

use super::git::{self, Expect};
use super::model::{Dir, Node};
use super::{checkout, notes, Store, StoreError, WriteLock, CACHE_REFS, DELETED_REFS, IMAGE_REFS};

/// Run git on the store's repository.
fn git_cmd(store: &Store) -> Command {
    let mut c = Command::new("git");
    c.arg("-C").arg(store.layout().repo());
    c.env("GIT_CONFIG_NOSYSTEM", "1");
    crate::interrupt::unblocked(&mut c);
    c
}

fn run_git(store: &Store, args: &[&str]) -> Result<String, StoreError> {
    let out = git_cmd(store)
        .args(args)
        .output()
        .at("run git", store.layout().repo())?;
    if !out.status.success() {
        return Err(StoreError::Io(IoError {
            action: "run git",
            path: store.layout().repo(),
            source: std::io::Error::other(format!(
                "git {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        }));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Run a git transfer (push, fetch) with `--progress` among `args`: its objects and
/// bytes count toward the active progress phase ([`crate::progress::follow_git`]).
fn run_git_progress(store: &Store, args: &[&str]) -> Result<String, StoreError> {
    let mut cmd = git_cmd(store);
    cmd.stderr(std::process::Stdio::piped());
    run_followed(store, cmd, args, None, None)
}

/// Run git maintenance (repack, gc) with its standard error on a pseudo-terminal: git
/// reports the progress of these commands only to a terminal, and has no option to
/// force it. Its objects count toward the active progress phase, as a transfer's do.
/// Without a pseudo-terminal (none available), quietly through pipes.
///
/// git and the processes it starts inherit the store's `lock`, so that when this process
/// is killed (kill -9) a git that goes on (repack, `prune --expire=now`) still excludes
/// writers until it ends, instead of deleting objects a writer has not referenced yet.
/// They do not inherit the terminal's master side: a git left alone then writes its
/// progress to a terminal nobody reads, which fails (EIO) instead of filling the
/// terminal's buffer and blocking git, and with it the lock, for ever.
fn run_git_maintenance(
    store: &Store,
    lock: &WriteLock,
    args: &[&str],
) -> Result<String, StoreError> {
    let inherited = lock.inheritable().at("lock", store.layout().lock_file())?;
    let Ok(pty) = nix::pty::openpty(None, None) else {
        let mut quiet = args.to_vec();
        quiet.push("-q");
        let out = run_git(store, &quiet);
        drop(inherited);
        return out;
    };
    for fd in [&pty.master, &pty.slave] {
        set_cloexec(fd).at("open pseudo-terminal", store.layout().repo())?;
    }
    let mut cmd = git_cmd(store);
    // From the start, not after two seconds: the counts make the phase's line.
    cmd.env("GIT_PROGRESS_DELAY", "0")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(pty.slave));
    run_followed(
        store,
        cmd,
        args,
        Some(std::fs::File::from(pty.master)),
        Some(inherited),
    )
}

/// Mark `fd` close-on-exec (openpty(3) leaves its descriptors inheritable).
fn set_cloexec(fd: &impl std::os::fd::AsRawFd) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map(drop)
        .map_err(std::io::Error::from)
}

/// Run `cmd` (git, its standard error chosen) with `args`, following its progress on
/// `progress` (the terminal its standard error goes to), else on its standard error
/// pipe; its standard output, or an error with its messages.
fn run_followed(
    store: &Store,
    mut cmd: Command,
    args: &[&str],
    progress: Option<std::fs::File>,
    inherited: Option<std::os::fd::OwnedFd>,
) -> Result<String, StoreError> {
    let repo = store.layout().repo();
    // Where SIGINT and SIGTERM end the command through its error path (gc), git and
    // what it starts (pack-objects, writing a temporary pack) are a process group that
    // the signal is passed on to; the error path then removes their temporary files.
    // Elsewhere git stays in this process's group, which a terminal's ^C reaches.
    let group = crate::interrupt::own_group(&mut cmd);
    let mut child = cmd
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .at("run git", &repo)?;
    // Drop the command, and with it this process's copy of a terminal's slave side:
    // reading the master side then ends when git and its children have exited. The
    // lock's inheritable copy is git's now: close ours.
    drop(cmd);
    drop(inherited);
    let mut so = child.stdout.take().expect("stdout is piped");
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = std::io::Read::read_to_end(&mut so, &mut s);
        s
    });
    let messages = match progress {
        Some(f) => crate::progress::follow_git(f),
        None => crate::progress::follow_git(child.stderr.take().expect("stderr is piped")),
    };
    let status =
        crate::interrupt::wait_watched_maybe_group(&mut child, group).at("run git", &repo)?;
    let out = out.join().unwrap_or_default();
    crate::interrupt::check().at("run git", &repo)?;
    if !status.success() {
        return Err(StoreError::Io(IoError {
            action: "run git",
            path: repo,
            source: std::io::Error::other(format!(
                "git {} failed: {}",
                args.join(" "),
                messages.trim()
            )),
        }));
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A node of the build graph: a commit with its first line and the names pointing at it.
#[derive(Debug, Clone)]
pub struct GraphNode {
    pub commit: ObjectId,
    pub parent: Option<ObjectId>,
    pub subject: String,
    pub images: Vec<String>,
}

/// Every commit reachable from images and cache entries.
pub fn graph(store: &Store) -> Result<BTreeMap<ObjectId, GraphNode>, StoreError> {
    let repo = store.repo();
    let mut names: BTreeMap<ObjectId, Vec<String>> = BTreeMap::new();
    for (name, id) in store.list()? {
        names.entry(id).or_default().push(name);
    }
    let mut todo: Vec<ObjectId> = names.keys().copied().collect();
    for (_, id) in git::list_refs(&repo, CACHE_REFS)? {
        todo.push(id);
    }
    let mut out = BTreeMap::new();
    while let Some(c) = todo.pop() {
        if out.contains_key(&c) {
            continue;
        }
        let t = git::image_trees(&repo, c)?;
        if let Some(p) = t.parent {
            todo.push(p);
        }
        out.insert(
            c,
            GraphNode {
                commit: c,
                parent: t.parent,
                subject: t.message.lines().next().unwrap_or("").to_string(),
                images: names.get(&c).cloned().unwrap_or_default(),
            },
        );
    }
    Ok(out)
}

/// The build graph as an indented text tree (roots first, children sorted).
pub fn render_tree(g: &BTreeMap<ObjectId, GraphNode>) -> String {
    let mut children: BTreeMap<Option<ObjectId>, Vec<ObjectId>> = BTreeMap::new();
    for n in g.values() {
        children.entry(n.parent).or_default().push(n.commit);
    }
    fn go(
        g: &BTreeMap<ObjectId, GraphNode>,
        ch: &BTreeMap<Option<ObjectId>, Vec<ObjectId>>,
        at: Option<ObjectId>,
        depth: usize,
        out: &mut String,
    ) {
        let Some(kids) = ch.get(&at) else { return };
        for k in kids {
            let n = &g[k];
            let names = if n.images.is_empty() {
                String::new()
            } else {
                format!(" ({})", n.images.join(", "))
            };
            out.push_str(&format!(
                "{}{} {}{}\n",
                "  ".repeat(depth),
                &k.to_string()[..12],
                n.subject,
                names
            ));
            go(g, ch, Some(*k), depth + 1, out);
        }
    }
    let mut out = String::new();
    go(g, &children, None, 0, &mut out);
    out
}

/// The build graph in Graphviz dot.
pub fn render_dot(g: &BTreeMap<ObjectId, GraphNode>) -> String {
    let mut out = String::from("digraph build_cache {\n  rankdir=TB;\n");
    for n in g.values() {
        let label = n.subject.replace('\\', "\\\\").replace('"', "\\\"");
        let short = &n.commit.to_string()[..12];
        out.push_str(&format!("  \"{short}\" [label=\"{short}\\n{label}\"];\n"));
        if let Some(p) = n.parent {
            out.push_str(&format!("  \"{}\" -> \"{short}\";\n", &p.to_string()[..12]));
        }
        for i in &n.images {
            // A ref name may hold `"` (git allows it).
            let i = i.replace('\\', "\\\\").replace('"', "\\\"");
            out.push_str(&format!(
                "  \"{i}\" [shape=box];\n  \"{i}\" -> \"{short}\";\n"
            ));
        }
    }
    out.push_str("}\n");
    out
}

/// Summary numbers of the store.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub images: usize,
    pub cache_entries: usize,
    pub commits: usize,
    pub objects: u64,
    pub bytes: u64,
}

/// Disk use of `path` and what is below it (blocks allocated), each inode counted once
/// (checkouts share files with each other and with the pool through hard links).
fn du(path: &Path) -> u64 {
    let mut seen = HashSet::new();
    inodes(path, &mut |key, bytes, shared| {
        if !shared || seen.insert(key) {
            bytes
        } else {
            0
        }
    })
}

/// Walk `path` (not following symlinks), calling `f` with each entry's (device, inode),
/// its allocated bytes and whether other names may link it (not a directory, link count
/// above 1: only those need remembering to be counted once); the sum of what `f` returns.
fn inodes(path: &Path, f: &mut dyn FnMut((u64, u64), u64, bool) -> u64) -> u64 {
    let Ok(md) = fs::symlink_metadata(path) else {
        return 0;
    };
    let shared = !md.is_dir() && md.nlink() > 1;
    let mut total = f((md.dev(), md.ino()), md.blocks() * 512, shared);
    if md.is_dir() {
        if let Ok(rd) = fs::read_dir(path) {
            for e in rd.flatten() {
                total += inodes(&e.path(), f);
            }
        }
    }
    total
}

pub fn summary(store: &Store) -> Result<Summary, StoreError> {
    let repo = store.repo();
    let g = graph(store)?;
    let counts = run_git(store, &["count-objects", "-v"]).unwrap_or_default();
    let num = |k: &str| {
        counts
            .lines()
            .find_map(|l| l.strip_prefix(k).and_then(|v| v.trim().parse::<u64>().ok()))
            .unwrap_or(0)
    };
    Ok(Summary {
        images: store.list()?.len(),
        cache_entries: git::list_refs(&repo, CACHE_REFS)?.len(),
        commits: g.len(),
        objects: num("count:") + num("in-pack:"),
        bytes: du(store.root()),
    })
}

/// Garbage collection: drop deleted images, cache entries no image reaches, layers of
/// unreachable commits and unused checkouts, then let git pack what is left and prune the
/// rest. Requires the lock.
pub fn gc(store: &Store, lock: &WriteLock) -> Result<(), StoreError> {
    let repo = store.repo();
    let mut live: HashSet<ObjectId> = HashSet::new();
    let mut todo: Vec<ObjectId> = store.list()?.into_iter().map(|(_, c)| c).collect();
    while let Some(c) = todo.pop() {
        if live.insert(c) {
            if let Some(p) = git::image_trees(&repo, c)?.parent {
                todo.push(p);
            }
        }
    }
    // The commits of the base layers of kept delta layers, with the cache entries that
    // made them: where a base layer's stamp can't vouch for it (a copy of the store, or
    // one made read-only with chmod) it is checked against its commit, and without it the
    // image could not run there (at most layer::MAX_DELTA_BASES per delta layer; their
    // parent is the delta layer's, live already).
    let layer_dir = store.layout().layers();
    let bases: Vec<ObjectId> = live
        .iter()
        .flat_map(|c| super::layer::read_bases(&layer_dir, *c).unwrap_or_default())
        .collect();
    for b in bases {
        if store.layout().layer(&b).is_dir() && repo.find_header(b).is_ok() {
            live.insert(b);
        }
    }
    let mut edits = Vec::new();
    for (name, id) in git::list_refs(&repo, CACHE_REFS)? {
        if !live.contains(&id) {
            edits.push((format!("{CACHE_REFS}{name}"), None, Expect::Is(id)));
        }
    }
    for (name, id) in git::list_refs(&repo, DELETED_REFS)? {
        edits.push((format!("{DELETED_REFS}{name}"), None, Expect::Is(id)));
    }
    if !edits.is_empty() {
        git::update_refs(&repo, &edits)?;
    }
    // Notes of commits that are gone would keep them alive: rewrite the notes without them.
    prune_notes(store, &live)?;
    let layers = store.layout().layers();
    // Layers of live commits, the base layers of their delta layers, and their bases files
    // (a delta layer without its bases file would show the wrong tree).
    let mut keep_layers = live.clone();
    for c in &live {
        keep_layers.extend(super::layer::read_bases(&layers, *c).unwrap_or_default());
    }
    if let Ok(rd) = fs::read_dir(&layers) {
        for e in rd.flatten() {
            let name = e.file_name();
            let keep = name
                .to_str()
                .map(|n| n.strip_suffix(".base").unwrap_or(n))
                .and_then(|n| ObjectId::from_hex(n.as_bytes()).ok())
                .is_some_and(|id| keep_layers.contains(&id));
            if !keep {
                let tmp = store.scratch_path("gc");
                if fs::rename(e.path(), &tmp).is_ok() {
                    let _ = checkout::remove_tree(&tmp);
                }
            }
        }
    }
    // Checkouts at the bottom of views of unreachable commits are pruned with the others.
    store.unmark_views(lock, &live)?;
    store.prune_checkouts(lock)?;
    // Files of the pool no checkout links any more (a checkout removed by hand, or one a
    // killed writer left in tmp/).
    if lock.exclusive {
        super::pool::Pool::new(store.layout().pool()).prune()?;
    }
    // What failed or killed writers left: temporary packs and object files, quarantine
    // refs of fetches that did not finish (no fetch runs while gc holds the lock).
    for (p, _) in store.leftovers(0) {
        let _ = fs::remove_file(p);
    }
    delete_refs_under(store, QUARANTINE)?;
    // Packs an import or pull wrote uncompressed (pack.rs) are recompressed, and only
    // they: git reuses packed entries as they are unless told not to (-F), and the other
    // packs are kept out of that repack. Their names leave the marker only once that
    // worked (a killed gc, or its killed git, leaves them for the next one). No pack is
    // stored meanwhile: writers and compaction wait for this exclusive lock.
    let objects = store.layout().objects();
    let stored = super::pack::stored_packs(
        &fs::read_to_string(super::pack::stored_marker(&objects)).unwrap_or_default(),
    );
    // Stored packs none of whose objects any ref reaches go first (an import or pull
    // killed or interrupted before it set its ref; a failed one removes its own): the
    // repack below writes what it keeps before it removes anything, and on a disk they
    // fill it had no room to (a gc after a killed import on a full disk failed).
    let stored = drop_unreachable_packs(store, lock, stored)?;
    // git gc writes a new commit-graph only when some commit is reachable: with every
    // image deleted, the old one would name pruned commits and fail `git fsck`.
    let info = objects.join("info");
    let _ = fs::remove_file(info.join("commit-graph"));
    let _ = checkout::remove_tree(&info.join("commit-graphs"));
    // A git that failed (a full disk) leaves its temporary pack, as big as what it had
    // written: remove it, as any temporary file, while this process holds the lock alone.
    let repacked = crate::interrupt::check()
        .at("collect garbage in", store.root())
        .map_err(StoreError::from)
        .and_then(|()| recompress(store, lock, &stored))
        .and_then(|_| {
            run_git_maintenance(
                store,
                lock,
                &["-c", "pack.compression=1", "gc", "--prune=now"],
            )
        });
    if let Err(e) = repacked {
        if lock.exclusive {
            for (p, _) in store.leftovers(0) {
                let _ = fs::remove_file(p);
            }
        }
        return Err(e);
    }
    if !stored.is_empty() {
        super::pack::unmark_stored(&objects, &stored)
            .at("write", super::pack::stored_marker(&objects))?;
    }
    Ok(())
}

/// Remove the packs named in `stored` that exist and hold no object any ref reaches
/// (`git rev-list --objects --all`), index first, and their names from the marker;
/// returns the other names. Needs the lock exclusively (no writer is between writing
/// objects and setting the ref that reaches them); does nothing otherwise.
fn drop_unreachable_packs(
    store: &Store,
    lock: &WriteLock,
    stored: Vec<String>,
) -> Result<Vec<String>, StoreError> {
    let dir = store.layout().objects().join("pack");
    let present: Vec<&String> = stored
        .iter()
        .filter(|n| dir.join(format!("{n}.idx")).exists())
        .collect();
    if !lock.exclusive || present.is_empty() {
        return Ok(stored);
    }
    let listing = run_git(store, &["rev-list", "--objects", "--all"])?;
    let reachable: HashSet<ObjectId> = listing
        .lines()
        .filter_map(|l| l.get(..40))
        .filter_map(|h| ObjectId::from_hex(h.as_bytes()).ok())
        .collect();
    let mut dropped = Vec::new();
    for name in present {
        let idx = dir.join(format!("{name}.idx"));
        let ids = super::pack::index_ids(&fs::read(&idx).at("read", &idx)?).at("read", &idx)?;
        if ids.iter().any(|id| reachable.contains(id)) {
            continue;
        }
        fs::remove_file(&idx).at("remove", &idx)?;
        let pack = idx.with_extension("pack");
        fs::remove_file(&pack).at("remove", &pack)?;
        crate::verbose!("removed {name}: no ref reaches its {} objects", ids.len());
        dropped.push(name.clone());
    }
    if dropped.is_empty() {
        return Ok(stored);
    }
    let objects = store.layout().objects();
    super::pack::unmark_stored(&objects, &dropped)
        .at("write", super::pack::stored_marker(&objects))?;
    Ok(stored
        .into_iter()
        .filter(|n| !dropped.contains(n))
        .collect())
}

/// Repack the objects of the packs named in `stored` that still exist (and loose objects)
/// at zlib level 1, keeping every other pack as it is.
fn recompress(store: &Store, lock: &WriteLock, stored: &[String]) -> Result<String, StoreError> {
    let dir = store.layout().objects().join("pack");
    let exists = |n: &str| dir.join(format!("{n}.pack")).exists();
    if !stored.iter().any(|n| exists(n)) {
        return Ok(String::new());
    }
    let mut args: Vec<String> = ["-c", "pack.compression=1", "repack", "-a", "-d", "-F"]
        .map(String::from)
        .to_vec();
    for e in fs::read_dir(&dir).at("read directory", &dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".pack") {
            if stem.starts_with("pack-") && !stored.iter().any(|s| s == stem) {
                args.push(format!("--keep-pack={name}"));
            }
        }
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    run_git_maintenance(store, lock, &a)
}

/// Delete every ref under `prefix`.
fn delete_refs_under(store: &Store, prefix: &str) -> Result<(), StoreError> {
    let repo = store.repo();
    let edits: Vec<_> = git::list_refs(&repo, prefix)?
        .into_iter()
        .map(|(n, id)| (format!("{prefix}{n}"), None, Expect::Is(id)))
        .collect();
    if !edits.is_empty() {
        git::update_refs(&repo, &edits)?;
    }
    Ok(())
}

fn prune_notes(store: &Store, live: &HashSet<ObjectId>) -> Result<(), StoreError> {
    notes::retain(&store.repo(), |id| live.contains(&id))?;
    Ok(())
}

/// What [`gc_storage`] did with cache mounts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheMountsGc {
    pub removed: usize,
    pub removed_bytes: u64,
    pub kept: usize,
    pub kept_bytes: u64,
}

/// What [`gc_storage`] did: cache mounts, downloaded layers, and materialized trees
/// (checkouts and layers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageGc {
    pub mounts: CacheMountsGc,
    pub downloads: CacheMountsGc,
    pub trees: CacheMountsGc,
}

/// What `--keep-storage` may remove: what the store can make again or do without.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// `cachemounts/HASH`: a `RUN --mount=type=cache` directory (its content is lost).
    Mount,
    /// `dlcache/sha256-HEX`: a registry layer kept after its pull (the git objects hold
    /// what it unpacked to; a later pull of the layer downloads it again).
    Download,
    /// `layers/C`: a build's kept layer (a view falls back to a checkout without it).
    Layer,
    /// `checkouts/C`: made again from the git objects on next use.
    Checkout,
}

/// One removable directory: its kind, name (a hash or commit id), last use, the bytes of
/// its inodes no other name links (`own`), and its other inodes with their bytes (files
/// shared with other trees or the pool through hard links, counted once in all).
struct Removable {
    kind: Kind,
    name: String,
    used: std::time::SystemTime,
    own: u64,
    shared: Vec<((u64, u64), u64)>,
}

impl Removable {
    fn path(&self, l: &super::Layout) -> std::path::PathBuf {
        match self.kind {
            Kind::Mount => l.cache_mount(&self.name),
            Kind::Download => l.dlcache().join(&self.name),
            Kind::Layer => l.layers().join(&self.name),
            Kind::Checkout => l.checkouts().join(&self.name),
        }
    }
}

/// Which of `items` (most recently used first) to keep within `keep` bytes: each in
/// turn, unless `out(i)`, if the bytes of its inodes not counted yet (for the items kept
/// before it) fit in what is left. Returns, per item, those bytes and whether it is kept.
/// Without `keep`, none is kept.
fn choose(items: &[Removable], keep: Option<u64>, out: &dyn Fn(usize) -> bool) -> Vec<(u64, bool)> {
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut kept_bytes = 0u64;
    let mut res = Vec::with_capacity(items.len());
    for (i, it) in items.iter().enumerate() {
        let mut mine = HashSet::new();
        let cost: u64 = it.own
            + it.shared
                .iter()
                .filter(|(k, _)| !seen.contains(k) && mine.insert(*k))
                .map(|(_, b)| b)
                .sum::<u64>();
        let keep_it = !out(i) && keep.is_some_and(|k| kept_bytes + cost <= k);
        if keep_it {
            kept_bytes += cost;
            seen.extend(it.shared.iter().map(|(k, _)| *k));
        }
        res.push((cost, keep_it));
    }
    res
}

/// Modification time of `p`, or the epoch (the oldest use: removed first).
fn mtime(p: &Path) -> std::time::SystemTime {
    fs::symlink_metadata(p)
        .and_then(|m| m.modified())
        .unwrap_or(std::time::UNIX_EPOCH)
}

fn removable(kind: Kind, name: String, path: &Path, used: std::time::SystemTime) -> Removable {
    let mut shared = Vec::new();
    let own = inodes(path, &mut |key, bytes, is_shared| {
        if is_shared {
            shared.push((key, bytes));
            0
        } else {
            bytes
        }
    });
    Removable {
        kind,
        name,
        used,
        own,
        shared,
    }
}

/// Entries of directory `dir` (none if it does not exist).
fn entries(dir: &Path) -> Result<Vec<fs::DirEntry>, StoreError> {
    match fs::read_dir(dir) {
        Ok(rd) => Ok(rd.flatten().collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(IoError::new("read directory", dir, e).into()),
    }
}

/// Remove what `--keep-storage` governs (docs/store-format.md, "Keeping storage").
/// Without `keep`, removes every `RUN --mount=type=cache` directory (`cachemounts/`) and
/// every downloaded layer (`dlcache/`), and keeps materialized trees. With `keep`, cache
/// mounts, downloaded layers and materialized trees (checkouts and kept layers: copies of
/// what the git objects hold) are kept most recently used
/// first while together they take at most `keep` bytes (an inode counted once, so files
/// checkouts share through the pool count once), and the rest is removed; a delta layer
/// goes with any of its base layers. Use is the modification time of a mount's lock file
/// (touched by each RUN that mounts it) and of a tree's stamp (touched by each check: a
/// RUN's lower directories, `ch-run NAME`). Each directory is renamed into `tmp/` before
/// it is removed, then its stamp goes, so a kill leaves whole trees and scratch entries
/// (which the next writer removes). Then the pool's files no checkout links any more,
/// and stamps of trees that do not exist. Requires the exclusive lock: no build and no
/// container by name is using a tree meanwhile.
pub fn gc_storage(
    store: &Store,
    lock: &WriteLock,
    keep: Option<u64>,
) -> Result<StorageGc, StoreError> {
    let l = store.layout();
    let mut items: Vec<Removable> = Vec::new();
    for e in entries(&l.cache_mounts())? {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".lock") {
            let hash = name.trim_end_matches(".lock");
            if !l.cache_mount(hash).exists() {
                let _ = fs::remove_file(e.path());
            }
            continue;
        }
        let used = mtime(&l.cache_mount_lock(&name));
        items.push(removable(Kind::Mount, name, &e.path(), used));
    }
    for e in entries(&l.dlcache())? {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.contains(".partial.") {
            // No pull runs while this process holds the lock alone: a killed one's.
            let _ = fs::remove_file(e.path());
            continue;
        }
        let used = mtime(&e.path());
        items.push(removable(Kind::Download, name, &e.path(), used));
    }
    if keep.is_some() {
        for (kind, dir) in [(Kind::Checkout, l.checkouts()), (Kind::Layer, l.layers())] {
            for e in entries(&dir)? {
                let name = e.file_name().to_string_lossy().into_owned();
                // Trees only (not `layers/C.base`, which goes with its layer).
                if ObjectId::from_hex(name.as_bytes()).is_err()
                    || !e.file_type().is_ok_and(|t| t.is_dir())
                {
                    continue;
                }
                let used = super::stamp::last_use(&e.path()).unwrap_or(std::time::UNIX_EPOCH);
                items.push(removable(kind, name, &e.path(), used));
            }
        }
    }
    // Most recently used first; ties in a fixed order.
    items.sort_by(|a, b| {
        b.used
            .cmp(&a.used)
            .then_with(|| a.kind.cmp(&b.kind))
            .then_with(|| a.name.cmp(&b.name))
    });
    // A delta layer without all its base layers is never part of a view: it goes too,
    // and the choice is made again without it, so that the bytes it would have taken go
    // to the next trees in line.
    let bases: Vec<Vec<String>> = items
        .iter()
        .map(
            |it| match (it.kind, ObjectId::from_hex(it.name.as_bytes())) {
                (Kind::Layer, Ok(id)) => super::layer::read_bases(&l.layers(), id)
                    .unwrap_or_default()
                    .iter()
                    .map(ObjectId::to_string)
                    .collect(),
                _ => Vec::new(),
            },
        )
        .collect();
    let mut out: HashSet<usize> = HashSet::new();
    let choice = loop {
        let choice = choose(&items, keep, &|i| out.contains(&i));
        let kept_layers: HashSet<&str> = items
            .iter()
            .zip(&choice)
            .filter(|(it, (_, k))| *k && it.kind == Kind::Layer)
            .map(|(it, _)| it.name.as_str())
            .collect();
        let orphans: Vec<usize> = (0..items.len())
            .filter(|&i| choice[i].1 && bases[i].iter().any(|b| !kept_layers.contains(b.as_str())))
            .collect();
        if orphans.is_empty() {
            break choice;
        }
        out.extend(orphans);
    };
    // (item, bytes it alone holds among those kept before it, kept)
    let decided: Vec<(Removable, u64, bool)> = items
        .into_iter()
        .zip(choice)
        .map(|(it, (cost, k))| (it, cost, k))
        .collect();
    let mut r = StorageGc::default();
    let mut dropped_checkout = false;
    for (it, cost, k) in &decided {
        let counts = match it.kind {
            Kind::Mount => &mut r.mounts,
            Kind::Download => &mut r.downloads,
            Kind::Layer | Kind::Checkout => &mut r.trees,
        };
        if *k {
            counts.kept += 1;
            counts.kept_bytes += cost;
            continue;
        }
        let path = it.path(l);
        if it.kind == Kind::Download {
            fs::remove_file(&path).at("remove downloaded layer", &path)?;
            crate::verbose!("removed {} ({cost} bytes)", path.display());
            counts.removed += 1;
            counts.removed_bytes += cost;
            continue;
        }
        let tmp = store.scratch_path("drop");
        let what = match it.kind {
            Kind::Mount => "remove cache mount",
            _ => "remove tree",
        };
        fs::rename(&path, &tmp).at(what, &path)?;
        match it.kind {
            Kind::Mount => {
                let _ = fs::remove_file(l.cache_mount_lock(&it.name));
            }
            Kind::Download => {}
            Kind::Layer => {
                if let Ok(id) = ObjectId::from_hex(it.name.as_bytes()) {
                    let _ = fs::remove_file(l.layer_bases(&id));
                }
                let _ = fs::remove_file(l.stamp("layers", &it.name));
            }
            Kind::Checkout => {
                let _ = fs::remove_file(l.stamp("checkouts", &it.name));
                if let Ok(id) = ObjectId::from_hex(it.name.as_bytes()) {
                    let _ = fs::remove_file(l.view_mark(&id));
                }
                dropped_checkout = true;
            }
        }
        checkout::remove_tree(&tmp).at("remove", &tmp)?;
        crate::verbose!("removed {} ({cost} bytes)", path.display());
        counts.removed += 1;
        counts.removed_bytes += cost;
    }
    // The pool's files only the removed checkouts linked.
    if dropped_checkout && lock.exclusive {
        super::pool::Pool::new(l.pool()).prune()?;
    }
    // Stamps of trees that are gone (removed by gc, or by hand).
    for e in entries(&l.stamps())? {
        let name = e.file_name().to_string_lossy().into_owned();
        let tree = match name.split_once('-') {
            Some(("checkouts", c)) if ObjectId::from_hex(c.as_bytes()).is_ok() => {
                l.checkouts().join(c)
            }
            Some(("layers", c)) if ObjectId::from_hex(c.as_bytes()).is_ok() => l.layers().join(c),
            _ => continue,
        };
        if !tree.exists() {
            let _ = fs::remove_file(e.path());
        }
    }
    Ok(r)
}

/// Delete every cache entry, layer and cache mount (images stay). Requires the lock.
pub fn reset_cache(store: &Store, lock: &WriteLock) -> Result<(), StoreError> {
    let repo = store.repo();
    let edits: Vec<_> = git::list_refs(&repo, CACHE_REFS)?
        .into_iter()
        .map(|(n, id)| (format!("{CACHE_REFS}{n}"), None, Expect::Is(id)))
        .collect();
    if !edits.is_empty() {
        git::update_refs(&repo, &edits)?;
    }
    for dir in [store.layout().layers(), store.layout().cache_mounts()] {
        if dir.exists() {
            let tmp = store.scratch_path("reset");
            fs::rename(&dir, &tmp).at("remove", &dir)?;
            let _ = checkout::remove_tree(&tmp);
        }
    }
    gc(store, lock)
}

/// What [`fsck`] found.
#[derive(Debug, Default)]
pub struct FsckReport {
    /// Damage: each a line naming what is wrong (empty: the store is whole).
    pub problems: Vec<String>,
    /// What writers that are gone (killed, kill -9) left, which is not damage: the next
    /// writer that locks alone removes it, as `build-cache --gc` does. Each the path
    /// (or ref) and what it is. Leftovers of live writers are never listed.
    pub leftovers: Vec<(String, &'static str)>,
}

/// Check the store (reading only: it takes no lock, and removes nothing, so it runs
/// beside writers and on a read-only storage directory).
pub fn fsck(store: &Store) -> Result<FsckReport, StoreError> {
    let mut problems = Vec::new();
    let mut leftovers = Vec::new();
    // A compaction running removes packs git fsck may have listed: wait for it (best
    // effort: a read-only store has no compaction and may refuse the lock file).
    let _compaction = super::compaction::lock(&store.layout().objects(), false, true);
    let repo = store.repo();
    match git_cmd(store)
        .args(["fsck", "--no-dangling", "--no-progress"])
        .output()
    {
        Ok(o) if !o.status.success() => {
            problems.push(format!(
                "git fsck failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        Ok(_) => {}
        Err(e) => problems.push(format!("can't run git fsck: {e}")),
    }
    let mut refs: Vec<(String, ObjectId)> = Vec::new();
    for prefix in [IMAGE_REFS, CACHE_REFS, DELETED_REFS] {
        for (n, id) in git::list_refs(&repo, prefix)? {
            refs.push((format!("{prefix}{n}"), id));
        }
    }
    let mut checked: BTreeSet<ObjectId> = BTreeSet::new();
    for (name, id) in &refs {
        let mut c = Some(*id);
        while let Some(cur) = c {
            if !checked.insert(cur) {
                break;
            }
            match git::read_image(&repo, cur) {
                Ok(_) => c = git::image_trees(&repo, cur).ok().and_then(|t| t.parent),
                Err(e) => {
                    problems.push(match e.commit() {
                        Some(c) if c == cur => format!("{name}: {e}"),
                        _ => format!("{name}: commit {cur}: {e}"),
                    });
                    break;
                }
            }
        }
    }
    // What dead writers left behind (the next writer alone, or gc, removes it).
    for (p, why) in store.leftovers(600) {
        leftovers.push((p.display().to_string(), why));
    }
    for (n, _) in git::list_refs(&repo, QUARANTINE)? {
        let pid_alive = n
            .split('/')
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !pid_alive {
            leftovers.push((format!("{QUARANTINE}{n}"), "ref of an unfinished fetch"));
        }
    }
    let tmp = store.layout().tmp();
    if let Ok(rd) = fs::read_dir(&tmp) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !super::scratch_writer_alive(&name) {
                leftovers.push((
                    e.path().display().to_string(),
                    "scratch file of a writer that is gone",
                ));
            }
        }
    }
    // Checkouts against their commits.
    let co = store.layout().checkouts();
    if let Ok(rd) = fs::read_dir(&co) {
        for e in rd.flatten() {
            let Some(id) = e
                .file_name()
                .to_str()
                .and_then(|n| ObjectId::from_hex(n.as_bytes()).ok())
            else {
                problems.push(format!(
                    "checkouts/{}: not named by a commit id",
                    e.file_name().to_string_lossy()
                ));
                continue;
            };
            match git::read_image(&repo, id) {
                Ok((model, _)) => check_checkout(&model, &e.path(), &mut problems),
                Err(err) => problems.push(format!("checkouts/{id}: {err}")),
            }
        }
    }
    check_pool(store, &mut problems)?;
    Ok(FsckReport {
        problems,
        leftovers,
    })
}

/// The pool's files against the object ids their names hold (a file shared by checkouts
/// that was written in place with its time set back is found here, not by the stamps).
fn check_pool(store: &Store, problems: &mut Vec<String>) -> Result<(), StoreError> {
    let pool = super::pool::Pool::new(store.layout().pool());
    for (path, md) in pool.entries()? {
        let Some(oid) = super::pool::entry_oid(&path) else {
            problems.push(format!("{}: not a pool entry name", path.display()));
            continue;
        };
        let same = md.is_file()
            && super::git::file_blob_id(&path)
                .ok()
                .is_some_and(|h| h == oid);
        if !same {
            problems.push(format!(
                "{}: shared file differs from blob {oid} (every checkout linking it shows the \
                 change; remove them and it, and grove checks them out again)",
                path.display()
            ));
        }
    }
    Ok(())
}

fn check_checkout(model: &Dir, dir: &Path, problems: &mut Vec<String>) {
    use std::os::unix::fs::PermissionsExt;
    let policy = checkout::Policy::Checkout;
    let mut expected: BTreeSet<Vec<u8>> = BTreeSet::new();
    // Entries that lost only write permissions (`chmod -R a-w` of a storage directory
    // made read-only): not a problem, since the tree holds its commit's files (ch-run
    // runs it where it can't be replaced, and it is made again where it can); said once.
    let mut read_only = 0usize;
    let mut mode_is = |mode: u32, want: u32| {
        let lost = mode != want && super::stamp::lost_write_bits_only(want, mode);
        read_only += usize::from(lost);
        mode == want || lost
    };
    model.walk(&mut |rel, node| {
        expected.insert(rel.to_vec());
        let p = dir.join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(rel));
        let show = String::from_utf8_lossy(rel);
        let md = match fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(_) => return problems.push(format!("{}: missing: {show}", dir.display())),
        };
        let mode = md.permissions().mode() & 0o7777;
        let ok = match node {
            Node::Dir(d) => md.is_dir() && mode_is(mode, policy.dir_mode(d.mode)),
            Node::Symlink { target } => {
                md.file_type().is_symlink()
                    && fs::read_link(&p).is_ok_and(|t| {
                        <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::as_bytes(t.as_os_str())
                            == target.as_slice()
                    })
            }
            Node::Fifo { mode: m } => {
                md.file_type().is_fifo() && mode_is(mode, policy.file_mode(*m))
            }
            Node::File(f) => {
                md.is_file()
                    && mode_is(mode, policy.file_mode(f.mode))
                    && super::git::file_blob_id(&p)
                        .ok()
                        .is_some_and(|h| h == f.oid)
            }
        };
        if !ok {
            problems.push(format!(
                "{}: differs from its commit: {show}",
                dir.display()
            ));
        }
    });
    if read_only > 0 {
        crate::info!(
            "{}: {read_only} entries without the write permissions their commit gives \
             (chmod a-w): run as they are where the storage directory is read-only",
            dir.display()
        );
    }
    // Entries the commit does not have.
    fn extra(
        base: &Path,
        rel: &mut Vec<u8>,
        expected: &BTreeSet<Vec<u8>>,
        problems: &mut Vec<String>,
    ) {
        use std::os::unix::ffi::OsStrExt;
        let Ok(rd) = fs::read_dir(base.join(std::ffi::OsStr::from_bytes(rel))) else {
            return;
        };
        for e in rd.flatten() {
            let len = rel.len();
            if len > 0 {
                rel.push(b'/');
            }
            rel.extend_from_slice(e.file_name().as_bytes());
            if !expected.contains(rel.as_slice()) {
                problems.push(format!(
                    "{}: not in its commit: {}",
                    base.display(),
                    String::from_utf8_lossy(rel)
                ));
            } else if e.file_type().is_ok_and(|t| t.is_dir()) {
                extra(base, rel, expected, problems);
            }
            rel.truncate(len);
        }
    }
    extra(dir, &mut Vec::new(), &expected, problems);
}

/// Where a remote's notes are fetched to before being merged into the local ones.
const REMOTE_NOTES: &str = "refs/grove/remote-notes/";

/// Where a fetch puts the remote's refs (`QUARANTINE<pid>/img/…`, `…/cache/…`) until every
/// commit they bring is validated; only then do the real refs move.
pub const QUARANTINE: &str = "refs/grove/quarantine/";

/// Refuse a remote that git would take as an option (`--upload-pack=CMD` runs CMD).
/// Callers also put `--end-of-options` before it.
pub fn check_remote(remote: &str) -> Result<(), StoreError> {
    if remote.is_empty() || remote.starts_with('-') {
        return Err(StoreError::BadRemote(remote.to_string()));
    }
    Ok(())
}

/// A remote that is an existing relative path, made absolute: git runs in the
/// repository, where a relative path would mean something else.
fn remote_arg(remote: &str) -> String {
    let p = Path::new(remote);
    if p.is_relative() && p.exists() {
        if let Ok(cwd) = std::env::current_dir() {
            return cwd.join(p).to_string_lossy().into_owned();
        }
    }
    remote.to_string()
}

/// `git fetch` arguments with object checking on, the remote after `--end-of-options`.
fn fetch_args(remote: &str, refspecs: &[String]) -> Vec<String> {
    let mut a: Vec<String> = [
        "-c",
        "fetch.fsckObjects=true",
        "-c",
        "transfer.fsckObjects=true",
        "fetch",
        "--progress",
        "--no-tags",
        "--no-write-fetch-head",
        "--end-of-options",
        remote,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(refspecs.iter().cloned());
    a
}

fn run_git_owned(store: &Store, args: &[String]) -> Result<String, StoreError> {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    run_git_progress(store, &a)
}

/// Fetch the remote's notes (if any) and merge them into the local notes, so that
/// neither side's notes are lost (a forced fetch or push of the notes ref would drop
/// the notes of the images only the other side built). Returns the remote's notes tip.
fn fetch_notes(store: &Store, remote: &str) -> Result<Option<ObjectId>, StoreError> {
    check_remote(remote)?;
    delete_refs_under(store, REMOTE_NOTES)?;
    // A pattern refspec: no error when the remote has no notes yet.
    run_git_owned(
        store,
        &fetch_args(
            remote,
            &[format!("+refs/notes/grove*:{REMOTE_NOTES}grove*")],
        ),
    )?;
    let repo = store.repo();
    let tip = git::get_ref(&repo, &format!("{REMOTE_NOTES}grove"))?;
    if let Some(t) = tip {
        notes::check_fetched(&repo, t)?;
        notes::merge(&repo, t)?;
    }
    for (n, id) in git::list_refs(&repo, REMOTE_NOTES)? {
        git::update_refs(
            &repo,
            &[(format!("{REMOTE_NOTES}{n}"), None, Expect::Is(id))],
        )?;
    }
    Ok(tip)
}

/// Push images, cache entries and provenance notes to a git remote. The remote's notes
/// are merged first, and the notes push only succeeds if nobody pushed notes meanwhile
/// (else it starts over). Requires the lock: the notes merge writes objects that a
/// concurrent gc (`--prune=now`) could otherwise remove before they are referenced.
pub fn push(store: &Store, _lock: &WriteLock, remote: &str) -> Result<(), StoreError> {
    check_remote(remote)?;
    let remote = &remote_arg(remote);
    let mut tries = 0;
    loop {
        let remote_tip = fetch_notes(store, remote)?;
        let lease = format!(
            "--force-with-lease=refs/notes/grove:{}",
            remote_tip.map(|t| t.to_string()).unwrap_or_default()
        );
        let has_notes = git::get_ref(&store.repo(), notes::NOTES_REF)?.is_some();
        let mut args = vec![
            "push",
            "--progress",
            &lease,
            "--end-of-options",
            remote,
            "+refs/grove/img/*:refs/grove/img/*",
            "+refs/grove/cache/*:refs/grove/cache/*",
        ];
        if has_notes {
            args.push("refs/notes/grove:refs/notes/grove");
        }
        match run_git_progress(store, &args) {
            Ok(_) => return Ok(()),
            Err(e) if tries < 3 => {
                tries += 1;
                crate::verbose!("push failed, retrying after a notes merge: {e}");
            }
            Err(e) => return Err(e),
        }
    }
}

/// An error and its causes on one line.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Why the name of a fetched ref (without its namespace) is unacceptable: image names
/// must be the ref form of a valid image reference (so that `img/NAME` stays inside the
/// storage directory), cache keys lowercase hex.
fn bad_fetched_name(kind: &str, name: &str) -> Option<String> {
    if kind == "cache" {
        let hex = !name.is_empty()
            && name.len() <= 128
            && name
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        return (!hex).then(|| "cache key is not lowercase hex".to_string());
    }
    if name.contains('/') {
        return Some("image name contains '/'".into());
    }
    let text = super::from_ref_component(name)
        .replace('%', "/")
        .replace('+', ":");
    match crate::reference::Reference::parse(&text) {
        Err(e) => Some(format!("not an image name: {e}")),
        Ok(r) if super::ref_component(&r.for_path()) != name => {
            Some("image name is not in canonical form".into())
        }
        Ok(_) => None,
    }
}

/// Validate every commit reachable from `tip` that is not in `known` (commits already
/// in the store): each must be a Grove image whose trees and metadata pass
/// [`git::read_image`]'s checks, with at most one parent. Iterative.
fn validate_history(
    repo: &gix::Repository,
    tip: ObjectId,
    known: &HashSet<ObjectId>,
    validated: &mut HashSet<ObjectId>,
) -> Result<(), git::ReadError> {
    let mut todo = vec![tip];
    while let Some(c) = todo.pop() {
        if known.contains(&c) || !validated.insert(c) {
            continue;
        }
        git::read_image(repo, c)?;
        if let Some(p) = git::image_trees(repo, c)?.parent {
            todo.push(p);
        }
    }
    Ok(())
}

/// Fetch images, cache entries and notes from a git remote. Local images of the same
/// name are replaced (the remote is the source of truth for what it shares); notes are
/// merged (local and remote images both keep their provenance).
///
/// Nothing from the remote is trusted: git checks the objects as they arrive
/// (`transfer.fsckObjects`), the remote's refs land in a quarantine namespace
/// ([`QUARANTINE`]), and every new commit they reach is validated ([`git::read_image`]:
/// entry names, depth, symlinks, metadata paths) before any of our refs moves. One bad
/// commit refuses the whole fetch.
pub fn fetch(store: &Store, _lock: &WriteLock, remote: &str) -> Result<(), StoreError> {
    check_remote(remote)?;
    let remote = &remote_arg(remote);
    let q = format!("{QUARANTINE}{}/", std::process::id());
    delete_refs_under(store, &q)?;
    let moved = (|| -> Result<(), StoreError> {
        run_git_owned(
            store,
            &fetch_args(
                remote,
                &[
                    format!("+refs/grove/img/*:{q}img/*"),
                    format!("+refs/grove/cache/*:{q}cache/*"),
                    format!("+refs/notes/grove*:{q}notes/grove*"),
                ],
            ),
        )?;
        let repo = store.repo();
        // Commits already in the store were validated when they came in.
        let mut known: HashSet<ObjectId> = HashSet::new();
        let mut todo: Vec<ObjectId> = Vec::new();
        for prefix in [IMAGE_REFS, CACHE_REFS, DELETED_REFS] {
            todo.extend(git::list_refs(&repo, prefix)?.into_iter().map(|(_, id)| id));
        }
        while let Some(c) = todo.pop() {
            if known.insert(c) {
                if let Ok(t) = git::image_trees(&repo, c) {
                    todo.extend(t.parent);
                }
            }
        }
        // The notes too, before any ref moves (they are merged after, by fetch_notes).
        if let Some(tip) = git::get_ref(&repo, &format!("{q}notes/grove"))? {
            notes::check_fetched(&repo, tip).map_err(|e| StoreError::Refused {
                remote: remote.to_string(),
                refname: notes::NOTES_REF.to_string(),
                reason: chain(&e),
            })?;
        }
        let mut validated = HashSet::new();
        let mut edits = Vec::new();
        for (kind, ns) in [("img", IMAGE_REFS), ("cache", CACHE_REFS)] {
            for (name, tip) in git::list_refs(&repo, &format!("{q}{kind}/"))? {
                let refname = format!("{ns}{name}");
                let refuse = |reason: String| StoreError::Refused {
                    remote: remote.to_string(),
                    refname: refname.clone(),
                    reason,
                };
                if let Some(why) = bad_fetched_name(kind, &name) {
                    return Err(refuse(why));
                }
                validate_history(&repo, tip, &known, &mut validated)
                    .map_err(|e| refuse(chain(&e)))?;
                edits.push((refname, Some(tip), Expect::Any));
            }
        }
        if !edits.is_empty() {
            git::update_refs(&repo, &edits)?;
        }
        Ok(())
    })();
    let cleared = delete_refs_under(store, &q);
    moved?;
    cleared?;
    fetch_notes(store, remote)?;
    // Fetched images get checkout links (made lazily by runners).
    for (name, commit) in store.list()? {
        let r = crate::reference::Reference::parse(&name).map_err(|e| {
            StoreError::Io(IoError {
                action: "read fetched image name",
                path: store.layout().repo(),
                source: std::io::Error::other(e.to_string()),
            })
        })?;
        let link = store.checkout_link(&r);
        let target = super::Layout::image_link_target(commit.to_string().as_ref());
        if fs::read_link(&link).ok().as_deref() != Some(target.as_path()) {
            let tmp = store.scratch_path("link");
            std::os::unix::fs::symlink(&target, &tmp).at("create symlink", &tmp)?;
            fs::rename(&tmp, &link).at("rename symlink into place", &link)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_like_remotes_are_refused() {
        for r in ["--upload-pack=touch x", "-u", ""] {
            assert!(check_remote(r).is_err(), "{r}");
        }
        for r in ["origin", "/srv/cache.git", "git://host/x", "a-b"] {
            assert!(check_remote(r).is_ok(), "{r}");
        }
    }

    fn item(inodes: &[(u64, u64)]) -> Removable {
        Removable {
            kind: Kind::Checkout,
            name: String::new(),
            used: std::time::UNIX_EPOCH,
            own: 0,
            shared: inodes.iter().map(|&(ino, b)| ((1, ino), b)).collect(),
        }
    }

    #[test]
    fn keep_storage_keeps_the_newest_that_fit_counting_shared_inodes_once() {
        // Newest first: a (100), b sharing a's inode 1 plus 50 of its own, c (500), d (30).
        let items = [
            item(&[(1, 100)]),
            item(&[(1, 100), (2, 50)]),
            item(&[(3, 500)]),
            item(&[(4, 30), (4, 30)]),
        ];
        let none = |_: usize| false;
        assert_eq!(
            choose(&items, Some(200), &none),
            vec![(100, true), (50, true), (500, false), (30, true)]
        );
        assert_eq!(
            choose(&items, Some(0), &none),
            vec![(100, false), (150, false), (500, false), (30, false)]
        );
        assert!(choose(&items, None, &none).iter().all(|(_, k)| !k));
        assert!(choose(&items, Some(u64::MAX / 2), &none)
            .iter()
            .all(|(_, k)| *k));
        // An item taken out (a delta layer whose base goes) uses no budget: the next in
        // line fits instead. Bytes no other name links count as they are.
        let mut items = items;
        items[2].shared.clear();
        items[2].own = 120;
        assert_eq!(
            choose(&items, Some(150), &none),
            vec![(100, true), (50, true), (120, false), (30, false)]
        );
        assert_eq!(
            choose(&items, Some(150), &|i| i == 1),
            vec![(100, true), (50, false), (120, false), (30, true)]
        );
    }

    #[test]
    fn fetched_ref_names_must_be_image_names_or_hex_keys() {
        assert_eq!(bad_fetched_name("img", "alpine+3.17"), None);
        assert_eq!(bad_fetched_name("img", "localhost+5000%a%b+1.0"), None);
        assert!(bad_fetched_name("img", "a/b").is_some());
        assert!(bad_fetched_name("img", "").is_some());
        assert_eq!(bad_fetched_name("cache", "0123abcdef"), None);
        assert!(bad_fetched_name("cache", "0123ABCDEF").is_some());
        assert!(bad_fetched_name("cache", "../x").is_some());
    }
}
