//! Stamps of checkouts and kept layers: detect a tree changed behind the store's back
//! (a `ch-run -w` on it, an editor, a stray `chmod`) before it is run by name or used as
//! a build's lower directory.
//!
//! A stamp is a blake3 digest over every entry of the tree (names sorted per directory):
//! its relative path, inode number, type and mode, size, mtime and ctime (nanoseconds);
//! for a character device (an overlay whiteout in a kept layer) only its path, mode and
//! device number.
//! The kernel sets an inode's ctime to the current time on every change of its content
//! or metadata (write, truncate, chmod, chown, xattr, link count, rename), and a user
//! cannot set it back; an added, removed or renamed entry changes the list and its
//! directory's times. Checking re-reads only inode metadata (one `lstat` per entry, no
//! file content): far cheaper than re-hashing, but proportional to the number of entries.
//!
//! Stamps live in `STORAGE/stamps/<kind>-<commit>` ("grove-stamp 3 HEX SEC.NSEC ROOT
//! LISTING", ROOT the top directory's `INO`, or `INO/SEC.NSEC` with its birth time),
//! outside the trees, so that stamping does not change what it stamps. A tree without a
//! stamp (made by an older Grove) is stamped as it is when first checked (trust on first
//! use).
//!
//! Checkouts share inodes (version 2): a checkout's regular file may be one inode with
//! other checkouts' files through the pool ([`super::pool`]), and another checkout
//! linking or unlinking it moves its ctime without changing it. So in a checkout's stamp
//! a regular file contributes its inode number, mode, size and mtime but not its ctime;
//! the stamp also records the latest ctime of its regular files (`T`). A check that finds
//! a regular file whose ctime is later than `T` hashes that file's content against the
//! checkout's commit: every file whose inode changed in any way since the stamp is
//! content-checked, and the others cost one `lstat`, as before. When all match, the stamp
//! is recorded again (a new `T`). A file that differs is a change, and its pool entry, if
//! it is this inode, is removed so that no later checkout links it. Layers are not
//! pooled: their stamps keep every ctime in the digest. Version 1 stamps (ctime of every
//! entry) are still checked as they were and rewritten as version 2 when they match.
//!
//! A copied or restored storage directory has new inodes and ctimes everywhere: a tree
//! whose top directory is another than the stamp's `ROOT` (inode, birth time) is a copy, checked as a
//! whole against the stamp's listing digest (what a faithful copy keeps: paths, types,
//! modes, sizes, mtimes, device numbers, `user.` xattrs) and its commit (every file read),
//! then stamped again; one that fails is [`StampError::Unfaithful`], which the store
//! answers by making the tree again (docs/store-format.md, "A copied storage directory").
//!
//! A tree that fails its check but holds only its commit's files (every entry that is
//! there read and found the commit's) is not an edit: one that lost only write
//! permissions (`chmod -R a-w` of a storage directory made read-only) is used as it is
//! where it can't be replaced, else made again; one that lost times or modes in place is
//! [`StampError::Altered`], made again where it can be. A version 1 or 2 stamp (no
//! listing) that fails has a checkout checked entry by entry against its commit (mode,
//! time, content, every entry), and a layer laid over its parent commit's tree, which
//! must then show its commit's ([`layer_against`]). Where the storage directory can't be written, a stamp
//! goes to the user's cache directory ([`side_path`]).
//!
//! Limits: a change made while the stamp is being recorded is not seen; a tree replaced
//! by root with forged ctimes (setting the clock back) is not seen.

use crate::error::{IoError, IoResultExt};
use std::fs;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const HEADER: &str = "grove-stamp 3";
const HEADER_V2: &str = "grove-stamp 2";
const HEADER_V1: &str = "grove-stamp 1";

/// A tree whose stamp does not match.
#[derive(Debug, thiserror::Error)]
pub enum StampError {
    #[error("{} was changed outside grove since it was checked out", dir.display())]
    Changed { dir: PathBuf, stamp: PathBuf },
    #[error("{} is a copy that differs from the tree grove made (the storage directory was copied or restored without keeping {what})", dir.display())]
    Unfaithful {
        dir: PathBuf,
        stamp: PathBuf,
        what: &'static str,
    },
    #[error("{} holds only its commit's files, but {what}{}", dir.display(),
        first.as_ref().map(|f| format!(" (first: {f})")).unwrap_or_default())]
    Altered {
        dir: PathBuf,
        stamp: PathBuf,
        what: &'static str,
        /// The first entry found not as Grove made it, and how, where one was checked.
        first: Option<String>,
    },
    #[error("can't read the commit of {}: {msg}", dir.display())]
    Commit { dir: PathBuf, msg: String },
    #[error(transparent)]
    Io(#[from] IoError),
}

impl StampError {
    /// How to repair: remove the tree (and its stamp) so that Grove checks it out again
    /// from the git objects, which are unaffected. Only directories are opened up first:
    /// a checkout's files may be shared with other checkouts (the pool), and a `chmod`
    /// of a file would change them all.
    pub fn hint(&self) -> Option<String> {
        match self {
            StampError::Changed { dir, stamp }
            | StampError::Unfaithful { dir, stamp, .. }
            | StampError::Altered { dir, stamp, .. } => {
                let remove = format!(
                    "find '{0}' -type d -exec chmod u+rwx {{}} + && rm -rf '{0}' '{1}'",
                    dir.display(),
                    stamp.display()
                );
                // A read-only storage directory: Grove could not make the tree again.
                let writable = [dir.parent(), stamp.parent()].iter().all(|p| {
                    p.is_some_and(|p| {
                        nix::unistd::access(p, nix::unistd::AccessFlags::W_OK).is_ok()
                    })
                });
                Some(if writable {
                    format!(
                        "remove it and grove checks it out again from the store's git objects: {remove}"
                    )
                } else {
                    format!(
                        "the storage directory is read-only here, so grove can't make it again: \
                         where it is writable, remove it ({remove}), then run `ch-image checkout` \
                         of the image (or `ch-run` it once); or copy the storage directory again \
                         keeping times and modes (cp -a, rsync -aH)"
                    )
                })
            }
            StampError::Io(_) | StampError::Commit { .. } => None,
        }
    }
}

/// Path of the stamp of tree `dir` (`STORAGE/checkouts/C` or `STORAGE/layers/C`).
pub fn stamp_path(dir: &Path) -> PathBuf {
    super::Layout::stamp_of(dir)
}

/// When tree `dir` was last used: its stamp's modification time, which every successful
/// check sets (docs/store-format.md, "Keeping storage"), else the tree's own; `None` if
/// neither exists.
pub fn last_use(dir: &Path) -> Option<std::time::SystemTime> {
    [stamp_path(dir), dir.to_path_buf()]
        .iter()
        .find_map(|p| fs::symlink_metadata(p).and_then(|m| m.modified()).ok())
}

/// What one pass over a tree found.
struct Scan {
    digest: [u8; 32],
    /// The latest ctime (seconds, nanoseconds) of its regular files.
    latest: (i64, i64),
    /// Regular files whose ctime is later than the `after` of the scan, with their
    /// relative path (no leading `/`) and inode number.
    moved: Vec<(Vec<u8>, PathBuf, u64)>,
    /// Who the tree's top directory is ([`root_id`]): another one means the tree was
    /// copied or restored, not changed in place.
    root: String,
    /// With [`Full`]: the digest of what a faithful copy keeps ([`listing_entry`]), and
    /// every entry with its relative path, to be compared with the commit.
    full: Option<Full>,
}

/// What a pass over the tree found for a copy's check.
struct Full {
    listing: [u8; 32],
    entries: Vec<Entry>,
}

/// One entry of a tree as [`Full`] has it: its path relative to the tree (no leading
/// `/`), its host path, kind, mode (`st_mode`) and mtime.
struct Entry {
    rel: Vec<u8>,
    host: PathBuf,
    kind: Kind,
    mode: u32,
    mtime: (i64, i64),
}

impl Entry {
    fn new(rel: &[u8], host: &Path, kind: Kind, md: &fs::Metadata) -> Entry {
        Entry {
            rel: rel.to_vec(),
            host: host.to_path_buf(),
            kind,
            mode: md.mode(),
            mtime: (md.mtime(), md.mtime_nsec()),
        }
    }
}

/// The modes a tree's entries had before write permissions were taken away (`chmod -R
/// a-w` of a storage directory made read-only): each entry's mode with the write bits
/// its commit gives it added back. `exact`: the commit's modes as recorded (a layer);
/// else as a checkout makes them ([`super::checkout::Policy::Checkout`]).
struct Restore<'a> {
    model: &'a super::model::Dir,
    exact: bool,
}

impl Restore<'_> {
    /// The mode of the entry at `rel` (relative, no leading `/`) whose mode is `mode`,
    /// with its commit's write bits back (no change where the commit has no such entry).
    fn mode(&self, rel: &[u8], mode: u32) -> u32 {
        use super::checkout::Policy;
        use super::model::Node;
        let policy = if self.exact {
            Policy::Exact
        } else {
            Policy::Checkout
        };
        let want = if rel.is_empty() {
            policy.dir_mode(self.model.mode)
        } else {
            match self.model.get(rel) {
                Some(Node::Dir(d)) => policy.dir_mode(d.mode),
                Some(Node::File(f)) => policy.file_mode(f.mode),
                Some(Node::Fifo { mode }) => policy.file_mode(*mode),
                Some(Node::Symlink { .. }) | None => return mode,
            }
        };
        mode | (want & 0o222)
    }
}

/// Whether mode `now` is mode `was` with some write bits taken away, and nothing else
/// changed (the same type, permissions and special bits otherwise).
pub(crate) fn lost_write_bits_only(was: u32, now: u32) -> bool {
    now & !0o222 == was & !0o222 && now & 0o222 & !was == 0
}

/// An entry of a tree, as it is compared with its commit's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
    Fifo,
    /// An overlay whiteout (a 0:0 character device, or an empty file marked
    /// `user.overlay.whiteout`): the commit has nothing at this path.
    Whiteout,
    /// Anything else (another device, a socket): never a commit's.
    Other,
    /// A directory its owner can't list (a RUN left it 0000), after its [`Kind::Dir`]
    /// entry: in a copy, only an empty directory of the commit is known to be whole.
    Unlisted,
}

/// Whether regular files' ctimes count in the digest of `dir`: not in a checkout (its
/// files may be shared, see the module doc).
fn file_ctimes_count(dir: &Path) -> bool {
    dir.parent().and_then(Path::file_name) != Some(std::ffi::OsStr::new("checkouts"))
}

/// Digest of the tree's inode metadata (see the module doc), of stamp version 2 and 3.
pub fn digest(dir: &Path) -> Result<[u8; 32], StampError> {
    Ok(scan(dir, 2, None, false)?.digest)
}

/// One pass over the tree for digest `version` (1: every entry's ctime; 2: see the module
/// doc), noting regular files whose ctime is later than `after`, and with `full` what a
/// copy's check needs ([`Full`]: one more `llistxattr` per entry). Iterative: depth is
/// not bounded by the stack.
fn scan(
    dir: &Path,
    version: u8,
    after: Option<(i64, i64)>,
    full: bool,
) -> Result<Scan, StampError> {
    scan_as(dir, version, after, full, None)
}

/// [`scan`], with the listing digest of the modes `restore` gives (see [`Restore`]).
fn scan_as(
    dir: &Path,
    version: u8,
    after: Option<(i64, i64)>,
    full: bool,
    restore: Option<&Restore>,
) -> Result<Scan, StampError> {
    let mode_of = |rel: &[u8], md: &fs::Metadata| match restore {
        Some(r) => r.mode(rel, md.mode()),
        None => md.mode(),
    };
    let file_ctimes = version < 2 || file_ctimes_count(dir);
    let top = fs::symlink_metadata(dir).at("stat", dir)?;
    let mut out = Scan {
        digest: [0; 32],
        latest: (i64::MIN, 0),
        moved: Vec::new(),
        root: root_id(&top),
        full: None,
    };
    let mut h = blake3::Hasher::new();
    let mut listing = full.then(blake3::Hasher::new);
    let mut entries = Vec::new();
    entry(&mut h, b"", &top, file_ctimes);
    if let Some(l) = listing.as_mut() {
        let kind = listing_entry(l, b"", &top, dir, mode_of(b"", &top));
        entries.push(Entry::new(b"", dir, kind, &top));
    }
    // Pending directories: (relative path, host path), processed in sorted order.
    let mut todo: Vec<(Vec<u8>, PathBuf)> = vec![(Vec::new(), dir.to_path_buf())];
    while let Some((rel, path)) = todo.pop() {
        let mut kids: Vec<(Vec<u8>, fs::Metadata)> = Vec::new();
        let read = match super::checkout::read_dir_below(dir, &rel) {
            // A directory its owner can't list (a RUN left it 0000): its own entry, hashed
            // above, covers it, since nothing inside can change without a chmod first,
            // which changes its ctime.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied && !rel.is_empty() => {
                h.update(b"\0unlisted");
                if let Some(l) = listing.as_mut() {
                    l.update(b"\0unlisted");
                    // A copy's check can't see what it holds (a copy made by its owner
                    // could not read it either, and kept it empty).
                    let md = fs::symlink_metadata(&path).at("stat", &path)?;
                    entries.push(Entry::new(&rel[1..], &path, Kind::Unlisted, &md));
                }
                continue;
            }
            r => r.at("read directory", &path)?,
        };
        for e in read {
            let e = e.at("read directory", &path)?;
            let md = e.metadata().at("stat", e.path())?;
            kids.push((e.file_name().as_bytes().to_vec(), md));
        }
        kids.sort_by(|a, b| a.0.cmp(&b.0));
        let mut subdirs = Vec::new();
        for (name, md) in kids {
            let mut r = rel.clone();
            r.push(b'/');
            r.extend_from_slice(&name);
            entry(&mut h, &r, &md, file_ctimes);
            let host = path.join(std::ffi::OsStr::from_bytes(&name));
            if let Some(l) = listing.as_mut() {
                let kind = listing_entry(l, &r, &md, &host, mode_of(&r[1..], &md));
                entries.push(Entry::new(&r[1..], &host, kind, &md));
            }
            if md.is_file() {
                let c = (md.ctime(), md.ctime_nsec());
                out.latest = out.latest.max(c);
                if after.is_some_and(|a| c > a) {
                    out.moved.push((r[1..].to_vec(), host.clone(), md.ino()));
                }
            }
            if md.is_dir() {
                subdirs.push((r, host));
            }
        }
        // Reversed onto the stack: popped in sorted order (depth first).
        todo.extend(subdirs.into_iter().rev());
    }
    out.digest = *h.finalize().as_bytes();
    out.full = listing.map(|l| Full {
        listing: *l.finalize().as_bytes(),
        entries,
    });
    Ok(out)
}

fn entry(h: &mut blake3::Hasher, rel: &[u8], md: &fs::Metadata, file_ctimes: bool) {
    use std::os::unix::fs::FileTypeExt;
    h.update(&(rel.len() as u64).to_le_bytes());
    h.update(rel);
    if md.file_type().is_char_device() {
        // Overlay whiteouts (0:0) of a kept layer are hard links to one inode that the
        // kernel shares with the (later removed) work directory: its ctime and link count
        // change from outside. A device has no content: its type, mode and number say all.
        for n in [u64::from(md.mode()), md.rdev()] {
            h.update(&n.to_le_bytes());
        }
        return;
    }
    for n in [
        md.ino(),
        u64::from(md.mode()),
        md.size(),
        md.mtime() as u64,
        md.mtime_nsec() as u64,
    ] {
        h.update(&n.to_le_bytes());
    }
    if md.is_file() && !file_ctimes {
        // Possibly shared: its content is checked when its ctime moves (module doc).
        return;
    }
    for n in [md.ctime() as u64, md.ctime_nsec() as u64] {
        h.update(&n.to_le_bytes());
    }
}

/// Add an entry to the listing digest: what a faithful copy (`cp -a`, `rsync -aH`, `tar`
/// with `--xattrs`) keeps of it and the kernel does not renew: its relative path, type and
/// mode, size (not a directory's, which depends on the file system's history), mtime,
/// device number, and `user.` extended attributes (overlay's opaque and whiteout marks
/// among them). Not inode numbers, ctimes or link counts. Returns the entry's kind.
/// `mode` is the entry's mode as the listing takes it (its own, or [`Restore`]'s).
fn listing_entry(
    h: &mut blake3::Hasher,
    rel: &[u8],
    md: &fs::Metadata,
    host: &Path,
    mode: u32,
) -> Kind {
    use std::os::unix::fs::FileTypeExt;
    let ft = md.file_type();
    h.update(&(rel.len() as u64).to_le_bytes());
    h.update(rel);
    h.update(&u64::from(mode).to_le_bytes());
    if ft.is_char_device() || ft.is_block_device() {
        // A whiteout's times are its shared inode's (see `entry`).
        h.update(&md.rdev().to_le_bytes());
        return if ft.is_char_device() && md.rdev() == 0 {
            Kind::Whiteout
        } else {
            Kind::Other
        };
    }
    if !ft.is_dir() {
        h.update(&md.size().to_le_bytes());
    }
    for n in [md.mtime() as u64, md.mtime_nsec() as u64] {
        h.update(&n.to_le_bytes());
    }
    let mut names: Vec<std::ffi::OsString> = xattr::list(host)
        .map(|l| l.filter(|n| n.as_bytes().starts_with(b"user.")).collect())
        .unwrap_or_default();
    names.sort();
    let mut whiteout_mark = false;
    for n in &names {
        let v = xattr::get(host, n).ok().flatten().unwrap_or_default();
        whiteout_mark |= n.as_bytes() == b"user.overlay.whiteout";
        for b in [n.as_bytes(), v.as_slice()] {
            h.update(&(b.len() as u64).to_le_bytes());
            h.update(b);
        }
    }
    if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        if whiteout_mark && md.len() == 0 {
            Kind::Whiteout
        } else {
            Kind::File
        }
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        Kind::Other
    }
}

/// Who a tree's top directory is: its inode number, and its birth time where the file
/// system keeps one (`INO/SEC.NSEC`). Inode numbers alone repeat: a storage directory
/// saved, removed and restored in the same place (a CI cache) gets the numbers its last
/// restore had, with other ctimes everywhere, which would look like a change in place.
/// A birth time is not copied and never changes in place.
fn root_id(md: &fs::Metadata) -> String {
    match md
        .created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
    {
        Some(b) => format!("{}/{}.{:09}", md.ino(), b.as_secs(), b.subsec_nanos()),
        None => md.ino().to_string(),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Record the stamp of a complete tree (atomically: a temporary file renamed).
pub fn record(dir: &Path) -> Result<(), StampError> {
    let sc = scan(dir, 2, None, true)?;
    write(dir, &sc)
}

fn write(dir: &Path, sc: &Scan) -> Result<(), StampError> {
    let Some(text) = stamp_text(sc) else {
        return Ok(());
    };
    match put(&stamp_path(dir), &text, false) {
        Ok(()) => Ok(()),
        // A read-only storage directory: the stamp goes to the user's cache instead.
        Err(e) => write_side(dir, sc).map_err(|_| e),
    }
}

/// Write the stamp of tree `dir` (scanned as `sc`) in the user's cache only
/// ([`side_path`]), then remove the stale stamps there ([`prune_side`]). Without a cache
/// directory, says once per process why each run reads the tree again.
fn write_side(dir: &Path, sc: &Scan) -> Result<(), StampError> {
    let Some(text) = stamp_text(sc) else {
        return Ok(());
    };
    let side = match side_path(dir) {
        Some(p) => p,
        None => {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                if !first_to_say(dir) {
                    crate::verbose!(
                        "can't keep the stamp of {} (said by another process on this node)",
                        dir.display()
                    );
                    return;
                }
                crate::warn!(
                    "can't keep the stamp of {} (the storage directory is read-only, and {}): \
                     each run reads its files again; set XDG_CACHE_HOME to a directory of yours",
                    dir.display(),
                    side_dir()
                        .as_ref()
                        .err()
                        .map_or("no cache directory", String::as_str)
                )
            });
            return Err(IoError::new(
                "find a cache directory for the stamp of",
                dir,
                io::Error::from(io::ErrorKind::NotFound),
            )
            .into());
        }
    };
    let text = format!("{text}{}", side_tree_line(dir).unwrap_or_default());
    put(&side, &text, true)?;
    crate::verbose!("{}: stamped in {}", dir.display(), side.display());
    if let Some(d) = side.parent() {
        prune_side(d, &side);
    }
    Ok(())
}

/// How long a process that can't keep stamps stays quiet about it after another on the
/// same node said it for the same storage directory ([`first_to_say`]).
const SAID_FOR: std::time::Duration = std::time::Duration::from_secs(3600);

/// Whether this process is the one on this node to say that the stamps of the storage
/// directory holding tree `dir` can't be kept: the ranks of a job (32 `ch-run` on a node
/// at once) said it once each. The first to create the marker `said-KEY` (`O_EXCL`;
/// `KEY` the first 32 hex digits of the BLAKE3 hash of the storage directory's canonical
/// path) in `/tmp/grove-UID` says it; a marker older than [`SAID_FOR`] is taken over by
/// the one process whose rename of it works, which says it again. Only a directory of
/// the user's (not a symlink, no write bits for group or others) holds the marker; without
/// one (another user made `/tmp/grove-UID`, `/tmp` can't be written) each process says it.
/// Called only where no stamp can be kept, after a whole tree was read.
fn first_to_say(dir: &Path) -> bool {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let uid = nix::unistd::getuid();
    let top = PathBuf::from(format!("/tmp/grove-{uid}"));
    let _ = fs::DirBuilder::new().mode(0o700).create(&top);
    match fs::symlink_metadata(&top) {
        Ok(md) if md.is_dir() && md.uid() == uid.as_raw() && md.mode() & 0o022 == 0 => {}
        _ => return true,
    }
    let Some(store) = fs::canonicalize(dir)
        .ok()
        .and_then(|d| d.parent()?.parent().map(Path::to_path_buf))
    else {
        return true;
    };
    let key = hex(&blake3::hash(store.as_os_str().as_bytes()).as_bytes()[..16]);
    let marker = top.join(format!("said-{key}"));
    let create = || {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&marker)
            .is_ok()
    };
    if create() {
        return true;
    }
    let stale = fs::symlink_metadata(&marker)
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.elapsed().ok())
        .is_none_or(|age| age > SAID_FOR);
    if !stale {
        return false;
    }
    // One process takes a stale marker over: the one whose rename of it works.
    let gone = top.join(format!("said-{key}.{}", std::process::id()));
    if fs::rename(&marker, &gone).is_err() {
        return false;
    }
    let _ = fs::remove_file(&gone);
    let _ = create();
    true
}

/// The second line of a stamp in the user's cache: `tree HOST PATH`, the host's name and
/// the tree's canonical path, in hex, so that [`prune_side`] can tell a stamp of a tree
/// that is gone.
fn side_tree_line(dir: &Path) -> Option<String> {
    let abs = fs::canonicalize(dir).ok()?;
    Some(format!(
        "tree {} {}\n",
        hex(host().as_bytes()),
        hex(abs.as_os_str().as_bytes())
    ))
}

/// This host's name (empty if unknown).
fn host() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// How long a stamp in the user's cache written by a Grove before session 31 (no `tree`
/// line: its tree can't be told) is kept: 30 days.
const SIDE_UNNAMED_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

/// How long a stamp in the user's cache of another host's tree is kept after its last
/// use (its modification time, [`side_same`]): 30 days. This host can't tell whether the
/// tree is still there; a host that still runs it after that reads it once again.
const SIDE_OTHER_HOST_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

/// How old a stamp in the user's cache gets before a use that finds it matching sets its
/// modification time again (its last use, for [`SIDE_OTHER_HOST_MAX_AGE`]): a day, so
/// that a run writes there at most once a day per tree.
const SIDE_TOUCH_AFTER: std::time::Duration = std::time::Duration::from_secs(86_400);

/// Remove the stamps in the user's cache directory `stamps` (but `keep`, just written)
/// whose tree is gone: of this host, naming a path that no longer exists or whose top
/// directory is another than the stamp's (removed and made again, which stamps it
/// anew); a stamp without a `tree` line older than [`SIDE_UNNAMED_MAX_AGE`]; a stamp of
/// another host (a home directory shared by the nodes of a cluster) not used for
/// [`SIDE_OTHER_HOST_MAX_AGE`]; and their lock files (each while holding its flock, tried
/// once: a process checking that tree keeps it), and temporary files of processes that
/// are gone. Runs only after a
/// stamp was written there, which follows a read of a whole tree: one read and one
/// `lstat` per stamp is small next to that.
fn prune_side(stamps: &Path, keep: &Path) {
    let Ok(rd) = fs::read_dir(stamps) else {
        return;
    };
    let me = hex(host().as_bytes());
    let older_than = |e: &fs::DirEntry, max: std::time::Duration| {
        e.metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > max)
    };
    for e in rd.flatten() {
        let p = e.path();
        if p == keep {
            continue;
        }
        let name = e.file_name();
        let name = name.to_string_lossy();
        if let Some((_, pid)) = name.split_once(".tmp.") {
            if pid
                .parse::<u32>()
                .is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
            {
                let _ = fs::remove_file(&p);
            }
            continue;
        }
        if name.ends_with(".lock") {
            // Its stamp's turn removes it, unless the stamp is already gone.
            if !p.with_extension("").exists() {
                remove_side_lock(&p);
            }
            continue;
        }
        let Ok(text) = fs::read_to_string(&p) else {
            continue;
        };
        let mut lines = text.lines();
        let first = lines.next().unwrap_or("");
        let stale = match lines.next().and_then(|l| l.strip_prefix("tree ")) {
            Some(tree) => {
                let (h, path) = tree.split_once(' ').unwrap_or((tree, ""));
                let path = unhex(path).map(|b| PathBuf::from(std::ffi::OsString::from_vec(b)));
                if h != me {
                    older_than(&e, SIDE_OTHER_HOST_MAX_AGE)
                } else {
                    match (path, parse(first)) {
                        (Some(path), Recorded::V3 { root, .. }) => {
                            match fs::symlink_metadata(&path) {
                                Ok(md) => root_id(&md) != root,
                                Err(e) => e.kind() == io::ErrorKind::NotFound,
                            }
                        }
                        _ => true,
                    }
                }
            }
            None => older_than(&e, SIDE_UNNAMED_MAX_AGE),
        };
        if stale {
            crate::verbose!("removing the stamp of a tree that is gone: {}", p.display());
            let _ = fs::remove_file(&p);
            remove_side_lock(&p.with_extension("lock"));
        }
    }
}

/// Remove a stamp's lock file in the user's cache while holding its flock (tried once):
/// [`side_lock`] checks, once it holds one, that its path still names that file.
fn remove_side_lock(p: &Path) {
    use nix::fcntl::{Flock, FlockArg};
    use std::os::unix::fs::MetadataExt;
    let Ok(f) = fs::File::open(p) else {
        return;
    };
    let Ok(held) = Flock::lock(f, FlockArg::LockExclusiveNonblock) else {
        return;
    };
    if let (Ok(a), Ok(b)) = (held.metadata(), fs::symlink_metadata(p)) {
        if a.dev() == b.dev() && a.ino() == b.ino() {
            let _ = fs::remove_file(p);
        }
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (s.len() % 2 == 0)
        .then(|| {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
                .collect()
        })
        .flatten()
}

/// A stamp's text, for a scan with the listing (every caller's).
fn stamp_text(sc: &Scan) -> Option<String> {
    let full = sc.full.as_ref()?;
    Some(format!(
        "{HEADER} {} {}.{:09} {} {}\n",
        hex(&sc.digest),
        sc.latest.0,
        sc.latest.1,
        sc.root,
        hex(&full.listing)
    ))
}

/// Put a stamp's `text` at `p` (atomically: a temporary file renamed), making missing
/// directories (owner-only with `private`: the user's cache).
fn put(p: &Path, text: &str, private: bool) -> Result<(), StampError> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(parent) = p.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(if private { 0o700 } else { 0o777 })
            .create(parent)
            .at("create directory", parent)?;
    }
    let tmp = p.with_extension(format!("tmp.{}", std::process::id()));
    fs::write(&tmp, text).at("write", &tmp)?;
    Ok(fs::rename(&tmp, p).at("rename into place", p)?)
}

/// The directory of stamps in the user's cache, the first of these that is usable:
/// `$XDG_CACHE_HOME/grove/stamps`, `$HOME/.cache/grove/stamps` (a `HOME` that exists: a
/// node without it gets none made), and `/tmp/grove-UID/stamps` (`srun --export=NONE`
/// and batch systems that start jobs without `HOME`; node-local, shared by the ranks of
/// a job on the node), whose top directory must be a directory (not a symlink) owned by
/// the user with mode 0700, else another user could have made it first and would see or
/// forge the stamps. Made (owner-only) if missing. Decided once per process; the error
/// says why none is usable.
fn side_dir() -> &'static Result<PathBuf, String> {
    static DIR: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
        let usable = |d: &Path| {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
                .is_ok()
                && nix::unistd::access(d, nix::unistd::AccessFlags::W_OK).is_ok()
        };
        let mut why = Vec::new();
        match std::env::var_os("XDG_CACHE_HOME").and_then(absolute) {
            Some(x) => {
                let d = x.join("grove/stamps");
                if usable(&d) {
                    return Ok(d);
                }
                why.push(format!("{} is not writable", d.display()));
            }
            None => why.push("XDG_CACHE_HOME is not set".to_string()),
        }
        match std::env::var_os("HOME").and_then(absolute) {
            Some(h) if h.is_dir() => {
                let d = h.join(".cache/grove/stamps");
                if usable(&d) {
                    return Ok(d);
                }
                why.push(format!("{} is not writable", d.display()));
            }
            Some(h) => why.push(format!("HOME {} does not exist", h.display())),
            None => why.push("HOME is not set".to_string()),
        }
        let uid = nix::unistd::getuid();
        let top = PathBuf::from(format!("/tmp/grove-{uid}"));
        let _ = fs::DirBuilder::new().mode(0o700).create(&top);
        match fs::symlink_metadata(&top) {
            Ok(md) if md.is_dir() && md.uid() == uid.as_raw() && md.mode() & 0o077 == 0 => {
                let d = top.join("stamps");
                if usable(&d) {
                    return Ok(d);
                }
                why.push(format!("{} is not writable", d.display()));
            }
            Ok(_) => why.push(format!(
                "{} is not a directory of this user's with mode 0700",
                top.display()
            )),
            Err(e) => why.push(format!("can't make {}: {e}", top.display())),
        }
        Err(why.join(", "))
    })
}

/// Where the stamp of tree `dir` goes when the storage directory can't be written (made
/// read-only with `chmod -R a-w`, or on a read-only file system): `KIND-KEY` in the
/// user's cache directory ([`side_dir`]), `KEY` the first 32 hex digits of the BLAKE3
/// hash of the host's name, a NUL and the tree's canonical path (the nodes of a cluster
/// share a home directory, each with its own copy of a store at the same path). Only the
/// user writes there; a stamp there is used only when the tree's own stamp does not
/// match, and only if its top directory and digest are the tree's ([`side_same`]).
/// `None` without such a directory.
fn side_path(dir: &Path) -> Option<PathBuf> {
    let base = side_dir().as_ref().ok()?;
    let abs = fs::canonicalize(dir).ok()?;
    let kind = abs.parent()?.file_name()?.to_str()?.to_string();
    let mut h = blake3::Hasher::new();
    h.update(host().as_bytes());
    h.update(b"\0");
    h.update(abs.as_os_str().as_bytes());
    let key = hex(&h.finalize().as_bytes()[..16]);
    Some(base.join(format!("{kind}-{key}")))
}

/// An exclusive flock(2) of `KIND-KEY.lock` beside the stamp of tree `dir` in the user's
/// cache ([`side_path`]), waited for; `None` without a cache directory (best effort).
fn side_lock(dir: &Path) -> Option<nix::fcntl::Flock<fs::File>> {
    use std::os::unix::fs::MetadataExt;
    let p = side_path(dir)?.with_extension("lock");
    loop {
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p)
            .ok()?;
        let l = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).ok()?;
        // Removed by [`prune_side`] while this process waited: lock the file there now.
        let md = l.metadata().ok()?;
        match fs::symlink_metadata(&p) {
            Ok(now) if now.dev() == md.dev() && now.ino() == md.ino() => return Some(l),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(_) => return None,
        }
    }
}

/// Whether tree `dir` is as its stamp in the user's cache ([`side_path`]) recorded it:
/// a version 3 stamp of the same top directory, the same digest, and no regular file
/// whose inode changed since (one metadata pass, no content read).
fn side_same(dir: &Path) -> Result<bool, StampError> {
    let new = side_path(dir);
    // The text and modification time (the tree's last use on this host).
    let read = |p: &Path| -> Option<(String, Option<std::time::SystemTime>)> {
        use std::io::Read;
        let mut f = fs::File::open(p).ok()?;
        let mut t = String::new();
        f.read_to_string(&mut t).ok()?;
        Some((t, f.metadata().and_then(|m| m.modified()).ok()))
    };
    let ((text, modified), legacy) = match new.as_deref().and_then(read) {
        Some(t) => (t, None),
        None => match side_path_legacy(dir).and_then(|p| read(&p).map(|t| (t, p))) {
            Some((t, p)) => (t, Some(p)),
            None => return Ok(false),
        },
    };
    // The `tree` line after it is for [`prune_side`].
    let text = text.lines().next().unwrap_or("");
    let Recorded::V3 {
        digest,
        latest,
        root,
        ..
    } = parse(text)
    else {
        return Ok(false);
    };
    if root_id(&fs::symlink_metadata(dir).at("stat", dir)?) != root {
        return Ok(false);
    }
    let sc = scan(dir, 2, Some(latest), false)?;
    let same = hex(&sc.digest) == digest && sc.moved.is_empty();
    match (same, legacy, new) {
        (true, Some(old), Some(new)) => {
            // Moved to this version's name, with its `tree` line (best effort).
            let line = side_tree_line(dir).unwrap_or_default();
            if put(&new, &format!("{text}\n{line}"), true).is_ok() {
                let _ = fs::remove_file(&old);
                remove_side_lock(&old.with_extension("lock"));
            }
        }
        // Its last use, at most once a day: other hosts remove a stamp not used for
        // [`SIDE_OTHER_HOST_MAX_AGE`].
        (true, None, Some(new))
            if modified
                .and_then(|t| t.elapsed().ok())
                .is_none_or(|age| age > SIDE_TOUCH_AFTER) =>
        {
            touch(&new)
        }
        _ => {}
    }
    Ok(same)
}

/// Where a Grove before session 31 kept the stamp of tree `dir` in the user's cache: the
/// key was the hash of the tree's canonical path alone. Read when the stamp is not at
/// [`side_path`], so that a site's users don't read every tree again after an upgrade.
fn side_path_legacy(dir: &Path) -> Option<PathBuf> {
    let base = side_dir().as_ref().ok()?;
    let abs = fs::canonicalize(dir).ok()?;
    let kind = abs.parent()?.file_name()?.to_str()?.to_string();
    let key = hex(&blake3::hash(abs.as_os_str().as_bytes()).as_bytes()[..16]);
    Some(base.join(format!("{kind}-{key}")))
}

/// A recorded stamp: version 3 (version 2's fields, the top directory's inode number and
/// the listing digest), version 2 (digest, latest ctime of regular files) or version 1.
#[derive(Debug, PartialEq, Eq)]
enum Recorded {
    V3 {
        digest: String,
        latest: (i64, i64),
        root: String,
        listing: String,
    },
    V2 {
        digest: String,
        latest: (i64, i64),
    },
    V1 {
        digest: String,
    },
    Unreadable,
}

fn parse(text: &str) -> Recorded {
    let t = text.trim_end();
    if let Some(rest) = t.strip_prefix(HEADER_V1).and_then(|r| r.strip_prefix(' ')) {
        return Recorded::V1 {
            digest: rest.to_string(),
        };
    }
    let time = |l: &str| {
        l.split_once('.')
            .and_then(|(s, n)| Some((s.parse::<i64>().ok()?, n.parse::<i64>().ok()?)))
    };
    if let Some(rest) = t.strip_prefix(HEADER_V2).and_then(|r| r.strip_prefix(' ')) {
        let f: Vec<&str> = rest.split(' ').collect();
        return match f[..] {
            [d, l] => match time(l) {
                Some(latest) => Recorded::V2 {
                    digest: d.to_string(),
                    latest,
                },
                None => Recorded::Unreadable,
            },
            _ => Recorded::Unreadable,
        };
    }
    let Some(rest) = t.strip_prefix(HEADER).and_then(|r| r.strip_prefix(' ')) else {
        return Recorded::Unreadable;
    };
    let f: Vec<&str> = rest.split(' ').collect();
    match f[..] {
        [d, l, root, listing] => match (time(l), root.split('/').next().map(str::parse::<u64>)) {
            (Some(latest), Some(Ok(_))) => Recorded::V3 {
                digest: d.to_string(),
                latest,
                root: root.to_string(),
                listing: listing.to_string(),
            },
            _ => Recorded::Unreadable,
        },
        _ => Recorded::Unreadable,
    }
}

/// What the check of a tree's stamp found without reading file content.
pub enum Quick {
    /// The tree is as stamped.
    Same,
    /// Some of its regular files' inodes changed since the stamp (another checkout linked
    /// them, or someone wrote them), or the tree is a copy (the storage directory was
    /// copied or restored): [`verify`] must read them.
    NeedsContent,
}

/// What one metadata pass found: the tree as stamped; as stamped but with regular files
/// whose inodes changed since (the pass, listing them); changed (with the pass when the
/// stamp is version 2 or 3, so that the moved files can still be found); or a copy of
/// the tree stamped (another top directory), with the stamp's listing digest.
enum Checked {
    Same,
    Moved(Scan),
    /// With the stamp's listing digest when it is version 3: a tree restored in place
    /// (an archive extracted over the storage directory) keeps its top directory.
    Changed(Option<Scan>, Option<String>),
    Copied {
        listing: String,
    },
}

/// Set the stamp's modification time to now: the tree's last use, which `build-cache
/// --gc --keep-storage` keeps the most recent of (a read-only storage directory keeps
/// the old time).
fn touch(stamp: &Path) {
    let _ = fs::OpenOptions::new()
        .write(true)
        .open(stamp)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
}

/// One metadata pass over the tree against its stamp (read once). A tree without a stamp
/// is stamped now if the storage directory is writable (trust on first use), else
/// accepted as it is.
fn check(dir: &Path) -> Result<Checked, StampError> {
    let p = stamp_path(dir);
    let text = match fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Stamps came with this version; a read-only storage directory stays as it is.
            let _ = write(dir, &scan(dir, 2, None, true)?);
            return Ok(Checked::Same);
        }
        // Another user's storage directory whose stamps are private: checked as a tree
        // with an unreadable stamp (its stamp goes to this user's cache).
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => String::new(),
        Err(e) => return Err(IoError::new("read", &p, e).into()),
    };
    let (digest, latest, listing) = match parse(&text) {
        Recorded::V3 {
            digest,
            latest,
            root,
            listing,
        } => {
            if root_id(&fs::symlink_metadata(dir).at("stat", dir)?) != root {
                if side_same(dir)? {
                    return Ok(Checked::Same);
                }
                return Ok(Checked::Copied { listing });
            }
            (digest, latest, Some(listing))
        }
        // Version 2, written by an earlier Grove: checked as it was made (the same
        // digest), then upgraded below.
        Recorded::V2 { digest, latest } => (digest, latest, None),
        // Version 1: likewise.
        Recorded::V1 { digest } => {
            if hex(&scan(dir, 1, None, false)?.digest) != digest {
                if side_same(dir)? {
                    return Ok(Checked::Same);
                }
                return Ok(Checked::Changed(None, None));
            }
            let _ = write(dir, &scan(dir, 2, None, true)?);
            return Ok(Checked::Same);
        }
        Recorded::Unreadable if side_same(dir)? => return Ok(Checked::Same),
        Recorded::Unreadable => return Ok(Checked::Changed(None, None)),
    };
    let sc = scan(dir, 2, Some(latest), false)?;
    if hex(&sc.digest) != digest {
        // Checked and stamped where the user could write (a read-only storage
        // directory, [`side_path`]).
        if side_same(dir)? {
            return Ok(Checked::Same);
        }
        return Ok(Checked::Changed(Some(sc), listing));
    }
    match (&listing, sc.moved.is_empty()) {
        // Rewriting the stamp also marks the use.
        (None, true) => {
            let _ = write(dir, &scan(dir, 2, None, true)?);
        }
        // A version 2 stamp with moved files is rewritten once they are read (`verify`).
        (None, false) => {}
        (Some(_), _) => touch(&p),
    }
    Ok(if sc.moved.is_empty() {
        Checked::Same
    } else {
        Checked::Moved(sc)
    })
}

fn changed_error(dir: &Path) -> StampError {
    StampError::Changed {
        dir: dir.to_path_buf(),
        stamp: stamp_path(dir),
    }
}

/// Check a tree against its stamp reading inode metadata only. A tree without a stamp is
/// stamped now if the storage directory is writable (trust on first use), else accepted
/// as it is.
pub fn verify_quick(dir: &Path) -> Result<Quick, StampError> {
    match check(dir)? {
        Checked::Same => Ok(Quick::Same),
        Checked::Moved(_) | Checked::Copied { .. } => Ok(Quick::NeedsContent),
        Checked::Changed(..) => Err(changed_error(dir)),
    }
}

/// Check a tree against its stamp; where regular files' inodes changed since it was
/// recorded, hash their content against the commit's model (`model()`, called at most
/// once: a checkout's or a layer's regular file at a path is the commit's file at that
/// path). A file that differs makes the tree changed, and its entry in `pool` (if it is
/// that inode) is removed. A copy of the tree (its top directory is another inode: the
/// storage directory was copied or restored) is accepted and stamped again if it kept
/// everything the listing digest covers and every entry is its commit's (every file
/// read), else [`StampError::Unfaithful`]. A tree in place that fails the metadata check
/// gets the same check (a storage directory restored in place); one whose entries are
/// all its commit's but whose listing is not (times or modes lost, entries missing) is
/// [`StampError::Altered`], which the store answers as a copy's. A tree stamped by
/// version 1 or 2 (no listing) is a checkout checked entry by entry against its commit
/// (mode, time, content; [`against_commit`]), or a layer whose entries must all be its
/// commit's.
///
/// `read_only`: the caller can't replace the tree (a read-only storage directory). A
/// tree that is whole but for write permissions taken away (`chmod -R a-w` of the
/// storage directory) is then used as it is (each use reads its files again: no stamp
/// can be written); a caller that can replace it gets [`StampError::Altered`], since
/// the tree's modes are not the image's (a build's RUN would see them).
///
/// `below`: for a kept layer, what it lies on ([`Below`]: its parent commit's tree, and a
/// delta layer's base layers), read only when a layer stamped by version 1 or 2 must be
/// checked as a whole.
///
/// Uses threads: not for ch-run, which uses [`verify_quick`].
pub fn verify(
    dir: &Path,
    pool: &super::pool::Pool,
    model: impl FnOnce() -> Result<super::model::Dir, StampError>,
    below: impl FnOnce() -> Result<Option<Below>, StampError>,
    read_only: bool,
) -> Result<(), StampError> {
    // The ranks of a job checking the same tree of a read-only storage directory: one
    // reads it and stamps it in the user's cache, the others wait and find that stamp.
    let _one = read_only.then(|| side_lock(dir)).flatten();
    let write_bits = |copy: bool, sc: &Scan| {
        if read_only {
            crate::verbose!(
                "{}: its commit's, but for write permissions taken away: used as it is",
                dir.display()
            );
            // Never in the storage directory: where it is writable again, the tree is
            // made again with the image's modes.
            let _ = write_side(dir, sc);
            Ok(())
        } else {
            Err(match copy {
                true => unfaithful(dir, true, "write permissions"),
                false => unfaithful(dir, false, ALTERED_WRITE),
            })
        }
    };
    match check(dir)? {
        Checked::Same => Ok(()),
        Checked::Moved(sc) => {
            if differing(&sc.moved, &model()?, pool) {
                return Err(changed_error(dir));
            }
            // Every moved inode holds its commit's content: stamp again, so the next
            // check is metadata only (a read-only storage directory reads them each time).
            // The pass with the listing must find the tree as the checked one did.
            let again = scan(dir, 2, None, true)?;
            if again.digest == sc.digest && again.latest == sc.latest {
                let _ = write(dir, &again);
            }
            Ok(())
        }
        Checked::Changed(sc, listing) => {
            // A storage directory restored in place (an archive extracted over it: the
            // top directories stay, their entries are made again, so inodes and ctimes
            // moved) is a copy that kept the tree's top directory: used, and stamped
            // again, if it is whole as a copy must be (the listing digest, every entry
            // its commit's). One whose entries are all its commit's but that lost times
            // or modes is made again; anything else stays an error, as an edit.
            let m = match listing {
                Some(listing) => match check_whole(dir, &listing, model)? {
                    Whole::Kept => return Ok(()),
                    Whole::WriteBits(sc) => return write_bits(false, &sc),
                    Whole::Listing(_, None) => {
                        return Err(unfaithful(dir, false, ALTERED_LISTING));
                    }
                    Whole::Content(m) | Whole::Listing(m, Some(_)) => m,
                },
                None => {
                    let m = model()?;
                    let full = scan(dir, 2, None, true)?;
                    let entries = &full
                        .full
                        .as_ref()
                        .expect("scanned with the listing")
                        .entries;
                    let layer = file_ctimes_count(dir);
                    let against = match against_commit(entries, &m, layer) {
                        // A layer whose entries are its commit's: whole if it shows its
                        // commit over its parent's tree.
                        Against::Meta(rel, what) if rel.is_empty() && layer => match below()? {
                            Some(b) => layer_over(entries, &m, b)?,
                            None => Against::Meta(rel, what),
                        },
                        a => a,
                    };
                    match against {
                        Against::Same => {
                            let _ = write(dir, &full);
                            return Ok(());
                        }
                        Against::WriteBits => return write_bits(false, &full),
                        Against::Meta(rel, _) if rel.is_empty() && file_ctimes_count(dir) => {
                            return Err(unfaithful(dir, false, ALTERED_OLD_LAYER));
                        }
                        Against::Meta(rel, what) => {
                            let first = match rel.is_empty() {
                                true => what,
                                false => format!("/{}: {what}", String::from_utf8_lossy(&rel)),
                            };
                            crate::verbose!("{}: not as its commit has it: {first}", dir.display());
                            return Err(StampError::Altered {
                                dir: dir.to_path_buf(),
                                stamp: stamp_path(dir),
                                what: ALTERED_LISTING,
                                first: Some(first),
                            });
                        }
                        Against::Content(rel) => {
                            crate::verbose!(
                                "{}: differs from its commit: {}",
                                dir.display(),
                                String::from_utf8_lossy(&rel)
                            );
                            m
                        }
                    }
                }
            };
            // Still find which files differ, so that their pool entries are not linked
            // again.
            if let Some(sc) = sc {
                let _ = differing(&sc.moved, &m, pool);
            }
            Err(changed_error(dir))
        }
        Checked::Copied { listing } => {
            let what = match check_whole(dir, &listing, model)? {
                Whole::Kept => return Ok(()),
                Whole::WriteBits(sc) => return write_bits(true, &sc),
                Whole::Listing(..) => LISTING,
                Whole::Content(_) => "the files' content",
            };
            Err(unfaithful(dir, true, what))
        }
    }
}

/// What a listing digest covers.
const LISTING: &str = "every entry's name, type, mode, size, mtime and user. extended attributes";
/// Why a tree in place holding only its commit's files is not used
/// ([`StampError::Altered`]).
const ALTERED_LISTING: &str = "not with the names, types, modes, sizes, mtimes and user. extended attributes grove gave them (restored in place without them, or changed by chmod or touch)";
const ALTERED_WRITE: &str = "without the write permissions grove gave them (taken away by chmod)";
const ALTERED_OLD_LAYER: &str =
    "its stamp, by a grove older than stamps of version 3, can't tell whether any is missing";

/// The error for a tree that is not what Grove made but holds nothing else than its
/// commit's files (`copy`: a copy of the tree; else the tree in place), having lost
/// `what`.
fn unfaithful(dir: &Path, copy: bool, what: &'static str) -> StampError {
    let (dir, stamp) = (dir.to_path_buf(), stamp_path(dir));
    if copy {
        StampError::Unfaithful { dir, stamp, what }
    } else {
        StampError::Altered {
            dir,
            stamp,
            what,
            first: None,
        }
    }
}

/// What [`check_whole`] found.
enum Whole {
    /// The tree is whole, and stamped again.
    Kept,
    /// The tree is whole but for write permissions taken away (every file read), as
    /// this scan found it; not stamped.
    WriteBits(Scan),
    /// Its listing digest is not the stamp's, even with write permissions put back (the
    /// commit's model, read), and the first entry that is not the commit's if any
    /// (every file read).
    Listing(super::model::Dir, Option<Vec<u8>>),
    /// Its listing is the stamp's but an entry is not its commit's.
    Content(super::model::Dir),
}

/// The check of a tree as a copy: one pass with the listing, which must be the stamp's
/// `listing` (as the tree is, or with the write permissions its commit gives each entry
/// put back), then every entry against its commit's (`model()`); a whole tree is
/// stamped again.
fn check_whole(
    dir: &Path,
    listing: &str,
    model: impl FnOnce() -> Result<super::model::Dir, StampError>,
) -> Result<Whole, StampError> {
    let sc = scan(dir, 2, None, true)?;
    let full = sc.full.as_ref().expect("scanned with the listing");
    let m = model()?;
    let differs = |m: &super::model::Dir| {
        let rel = not_the_commits(&full.entries, m);
        if let Some(rel) = &rel {
            crate::verbose!(
                "{}: differs from its commit: {}",
                dir.display(),
                String::from_utf8_lossy(rel)
            );
        }
        rel
    };
    if hex(&full.listing) != listing {
        let restore = Restore {
            model: &m,
            exact: file_ctimes_count(dir),
        };
        let restored = scan_as(dir, 2, None, true, Some(&restore))?;
        let same = restored
            .full
            .as_ref()
            .is_some_and(|f| hex(&f.listing) == listing);
        let rel = differs(&m);
        return Ok(match (same, rel) {
            (true, None) => Whole::WriteBits(sc),
            (true, Some(_)) => Whole::Content(m),
            (false, rel) => Whole::Listing(m, rel),
        });
    }
    if differs(&m).is_some() {
        return Ok(Whole::Content(m));
    }
    let _ = write(dir, &sc);
    Ok(Whole::Kept)
}

/// What [`against_commit`] found.
#[derive(Debug, PartialEq, Eq)]
enum Against {
    Same,
    /// Every entry its commit's, but for write permissions taken away.
    WriteBits,
    /// Every entry present holds its commit's content, but the entry at this path has
    /// another mode, time or `user.` extended attributes (said by the text), or entries
    /// are missing (an empty path).
    Meta(Vec<u8>, String),
    /// The entry at this path is not its commit's (type, content, target), or is not in
    /// the commit.
    Content(Vec<u8>),
}

/// A checkout (`exact`: a layer) checked entry by entry against its commit's model,
/// without a listing (a tree stamped by version 1 or 2): every entry must be the
/// commit's (type, content, symlink target), with the mode a checkout gives it (write
/// bits may be missing: [`Against::WriteBits`]) and the recorded time; a checkout must
/// hold every entry of the commit, while a layer holds part of it and only
/// [`Against::Content`] or [`Against::Meta`] of its first entry can be told apart.
fn against_commit(entries: &[Entry], model: &super::model::Dir, exact: bool) -> Against {
    use super::checkout::Policy;
    use super::model::Node;
    if let Some(rel) = not_the_commits(entries, model) {
        return Against::Content(rel);
    }
    if exact {
        // A layer's entries are its commit's; what it lacks can't be told without a
        // listing.
        return Against::Meta(Vec::new(), "entries may be missing".into());
    }
    let policy = Policy::Checkout;
    let mut write_bits = false;
    let mut count = 0usize;
    for e in entries {
        let want = if e.rel.is_empty() {
            Some(policy.dir_mode(model.mode))
        } else {
            match model.get(&e.rel) {
                Some(Node::Dir(d)) => Some(policy.dir_mode(d.mode)),
                Some(Node::File(f)) => Some(policy.file_mode(f.mode)),
                Some(Node::Fifo { mode }) => Some(policy.file_mode(*mode)),
                _ => None,
            }
        };
        if e.kind == Kind::Unlisted {
            continue;
        }
        if !e.rel.is_empty() {
            count += 1;
        }
        if let Some(want) = want.map(|w| w & 0o7777) {
            let mode = e.mode & 0o7777;
            if mode != want {
                if !lost_write_bits_only(want, mode) {
                    return Against::Meta(e.rel.clone(), format!("mode {mode:o}, not {want:o}"));
                }
                write_bits = true;
            }
        }
        if let Some(t) = model.times.get(&e.rel) {
            if e.mtime != (t.sec, i64::from(t.nsec)) {
                return Against::Meta(e.rel.clone(), "another mtime".into());
            }
        }
        if let Some(what) = xattrs_differ(e, model, false) {
            return Against::Meta(e.rel.clone(), what);
        }
    }
    if count != model_entries(model) {
        return Against::Meta(
            Vec::new(),
            format!("{count} entries, not its commit's {}", model_entries(model)),
        );
    }
    if write_bits {
        Against::WriteBits
    } else {
        Against::Same
    }
}

/// What a kept layer lies on, for the check of one stamped by version 1 or 2 ([`verify`]).
pub struct Below {
    /// Its parent commit's tree.
    pub parent: super::model::Dir,
    /// A delta layer's base layers, top first (docs/store-format.md, "Delta layers"):
    /// the view puts them between it and its parent's tree. Empty for a full layer.
    pub bases: Vec<PathBuf>,
}

/// A kept layer checked as [`layer_against`] does, over what it lies on: a delta layer
/// together with its base layers (what the view shows of each: an entry no layer above
/// holds or hides), every base entry so shown read against the commit. Base layers that
/// hold whiteouts, opaque or unlisted directories, or a non-directory under a directory
/// of a layer above, are not told apart here ([`Against::Meta`]: COPY, the only step
/// that makes delta layers, writes none of them).
fn layer_over(
    entries: &[Entry],
    model: &super::model::Dir,
    below: Below,
) -> Result<Against, StampError> {
    if below.bases.is_empty() {
        return Ok(layer_against(
            &entries.iter().collect::<Vec<_>>(),
            model,
            below.parent,
        ));
    }
    let mut base_scans = Vec::with_capacity(below.bases.len());
    for b in &below.bases {
        // Removed meanwhile (a process that found it unusable: its view is made again).
        let sc = match scan(b, 2, None, true) {
            Err(StampError::Io(e)) if e.source.kind() == io::ErrorKind::NotFound => {
                return Ok(Against::Meta(Vec::new(), "a base layer is gone".into()));
            }
            r => r?,
        };
        base_scans.push(sc.full.expect("scanned with the listing").entries);
    }
    let mut shown: Vec<&Entry> = entries.iter().collect();
    // Paths whose lower entries no layer below shows (a non-directory, a whiteout, an
    // opaque directory), and the directories shown.
    let mut hides = std::collections::HashSet::new();
    let mut dirs = std::collections::HashSet::new();
    let opaque = |e: &Entry| {
        e.kind == Kind::Dir
            && xattr::get(&e.host, "user.overlay.opaque")
                .ok()
                .flatten()
                .is_some_and(|v| v == b"y")
    };
    for e in entries.iter().filter(|e| !e.rel.is_empty()) {
        if e.kind == Kind::Unlisted {
            return Ok(Against::Meta(
                e.rel.clone(),
                "a delta layer's directory can't be listed".into(),
            ));
        }
        if e.kind == Kind::Dir && !opaque(e) {
            dirs.insert(e.rel.clone());
        } else {
            hides.insert(e.rel.clone());
        }
    }
    let hidden = |rel: &[u8], hides: &std::collections::HashSet<Vec<u8>>| {
        rel.iter()
            .enumerate()
            .any(|(i, b)| *b == b'/' && hides.contains(&rel[..i]))
    };
    let mut from_bases = Vec::new();
    for layer in &base_scans {
        let mut added = Vec::new();
        for e in layer.iter().filter(|e| !e.rel.is_empty()) {
            if hidden(&e.rel, &hides) || hides.contains(&e.rel) {
                continue;
            }
            if matches!(e.kind, Kind::Whiteout | Kind::Unlisted | Kind::Other) || opaque(e) {
                return Ok(Against::Meta(
                    e.rel.clone(),
                    "a base layer of a delta layer holds what a COPY does not write".into(),
                ));
            }
            if dirs.contains(&e.rel) {
                if e.kind != Kind::Dir {
                    return Ok(Against::Meta(
                        e.rel.clone(),
                        "a directory of a delta layer over a base layer's non-directory".into(),
                    ));
                }
                continue;
            }
            added.push(e);
        }
        // Known to the layers below only once this one is done: its own entries do not
        // hide each other.
        for e in added {
            if e.kind == Kind::Dir {
                dirs.insert(e.rel.clone());
            } else {
                hides.insert(e.rel.clone());
            }
            shown.push(e);
            from_bases.push(e);
        }
    }
    // Not "changed": the base layer's own check says that of an edit, and a base layer
    // removed under this check (another process found it unusable) reads as missing.
    if let Some(rel) = not_the_commits(&from_bases, model) {
        return Ok(Against::Meta(
            rel,
            "a base layer's entry is not its commit's".into(),
        ));
    }
    Ok(layer_against(&shown, model, below.parent))
}

/// A kept layer (not a delta layer) checked without a listing (stamped by version 1 or
/// 2), its entries already found its commit's (content, type, target): each entry must
/// have its commit's mode as recorded (write bits may be missing:
/// [`Against::WriteBits`]) and time, and the layer laid over its parent commit's tree
/// (`below`, as overlayfs shows it: whiteouts remove, opaque directories hide what was
/// below) must show exactly its commit's tree: what a copy lost (a whiteout an
/// unprivileged `cp -a` can't make, a file) shows its parent's entry, or none, at its
/// path ([`Against::Meta`] of it).
fn layer_against(
    entries: &[&Entry],
    model: &super::model::Dir,
    below: super::model::Dir,
) -> Against {
    use super::checkout::Policy;
    use super::model::{Dir, Node};
    let policy = Policy::Exact;
    let mut view = below;
    // The top directory is the layer's own (an overlay's upper directory).
    view.mode = model.mode;
    match model.times.get(b"") {
        Some(t) => view.times.set(b"", t),
        None => {
            view.times.by_path.remove(&b""[..]);
        }
    }
    let mut write_bits = false;
    for e in entries.iter().filter(|e| !e.rel.is_empty()) {
        let rel = &e.rel;
        let node = model.get(rel);
        let want = match node {
            Some(Node::Dir(d)) => Some(policy.dir_mode(d.mode)),
            Some(Node::File(f)) => Some(policy.file_mode(f.mode)),
            Some(Node::Fifo { mode }) => Some(policy.file_mode(*mode)),
            _ => None,
        };
        if matches!(e.kind, Kind::Whiteout | Kind::Unlisted) {
            if e.kind == Kind::Whiteout && view.remove(rel).is_err() {
                return Against::Meta(rel.clone(), "a whiteout below a non-directory".into());
            }
            continue;
        }
        if let Some(want) = want.map(|w| w & 0o7777) {
            let mode = e.mode & 0o7777;
            if mode != want {
                if !lost_write_bits_only(want, mode) {
                    return Against::Meta(rel.clone(), format!("mode {mode:o}, not {want:o}"));
                }
                write_bits = true;
            }
        }
        let t = model.times.get(rel);
        if let Some(t) = t {
            if e.mtime != (t.sec, i64::from(t.nsec)) {
                return Against::Meta(rel.clone(), "another mtime".into());
            }
        }
        if let Some(what) = xattrs_differ(e, model, true) {
            return Against::Meta(rel.clone(), what);
        }
        let put = match node {
            Some(Node::Dir(d)) => {
                let opaque = xattr::get(&e.host, "user.overlay.opaque")
                    .ok()
                    .flatten()
                    .is_some_and(|v| v == b"y");
                if !opaque && matches!(view.get(rel), Some(Node::Dir(_))) {
                    // Merged with the directory below: only its mode and time change.
                    if let Some(Node::Dir(v)) = view.get_mut(rel) {
                        v.mode = d.mode;
                    }
                    None
                } else {
                    Some(Node::Dir(Dir::new(d.mode)))
                }
            }
            Some(n @ (Node::File(_) | Node::Symlink { .. } | Node::Fifo { .. })) => Some(n.clone()),
            None => return Against::Content(rel.clone()),
        };
        if let Some(n) = put {
            if view.remove(rel).is_err() || view.insert(rel, n).is_err() {
                return Against::Meta(rel.clone(), "not where its commit has it".into());
            }
        }
        if let Some(t) = t {
            view.times.set(rel, t);
        }
    }
    if let Some(rel) = first_difference(&view, model) {
        return Against::Meta(
            rel,
            "not its commit's over its parent's tree (the layer lacks an entry or a whiteout)"
                .into(),
        );
    }
    if write_bits {
        Against::WriteBits
    } else {
        Against::Same
    }
}

/// How entry `e`'s `user.` extended attributes differ from those its commit (`model`)
/// records for it, if they do (`layer`: overlayfs's own `user.overlay.*` left out).
/// Checkouts set the recorded ones (images imported or built with `--xattrs`); a copy
/// made without them (`rsync -a` without `-X`, `cp -r`) lost them.
fn xattrs_differ(e: &Entry, model: &super::model::Dir, layer: bool) -> Option<String> {
    if matches!(e.kind, Kind::Symlink | Kind::Whiteout | Kind::Unlisted) {
        return None;
    }
    let mut have = super::model::read_xattrs(&e.host);
    if layer {
        have.retain(|(n, _)| !n.starts_with(b"user.overlay."));
    }
    let mut want = model.xattrs.get(&e.rel).cloned().unwrap_or_default();
    want.sort();
    if have == want {
        return None;
    }
    let name = |n: &[u8]| String::from_utf8_lossy(n).into_owned();
    for (n, v) in &want {
        match have.iter().find(|(h, _)| h == n) {
            None => return Some(format!("its extended attribute {} is missing", name(n))),
            Some((_, hv)) if hv != v => {
                return Some(format!(
                    "its extended attribute {} has another value",
                    name(n)
                ))
            }
            Some(_) => {}
        }
    }
    let extra = have.iter().find(|(n, _)| !want.iter().any(|(w, _)| w == n));
    Some(match extra {
        Some((n, _)) => format!("extended attribute {} is not its commit's", name(n)),
        None => "other extended attributes".into(),
    })
}

/// The first path (depth first, in byte order) where tree `a` and tree `b` differ
/// (names, types, modes, contents, symlink targets, times); `None` if they are the same.
/// Iterative: depth is not bounded by the stack.
fn first_difference(a: &super::model::Dir, b: &super::model::Dir) -> Option<Vec<u8>> {
    use super::model::Node;
    let mut todo: Vec<(Vec<u8>, &super::model::Dir, &super::model::Dir)> = vec![(Vec::new(), a, b)];
    while let Some((rel, da, db)) = todo.pop() {
        if da.mode != db.mode || a.times.get(&rel) != b.times.get(&rel) {
            return Some(rel);
        }
        let names = da.children.keys().chain(db.children.keys());
        let mut names: Vec<&Vec<u8>> = names.collect();
        names.sort();
        names.dedup();
        let mut subdirs = Vec::new();
        for name in names {
            let r = if rel.is_empty() {
                name.clone()
            } else {
                [rel.as_slice(), b"/", name.as_slice()].concat()
            };
            let same = match (da.children.get(name), db.children.get(name)) {
                (Some(Node::Dir(x)), Some(Node::Dir(y))) => {
                    subdirs.push((r.clone(), x, y));
                    true
                }
                (Some(Node::File(x)), Some(Node::File(y))) => x.oid == y.oid && x.mode == y.mode,
                (Some(Node::Symlink { target: x }), Some(Node::Symlink { target: y })) => x == y,
                (Some(Node::Fifo { mode: x }), Some(Node::Fifo { mode: y })) => x == y,
                _ => false,
            };
            if !same
                || (!matches!(db.children.get(name), Some(Node::Dir(_)))
                    && a.times.get(&r) != b.times.get(&r))
            {
                return Some(r);
            }
        }
        todo.extend(subdirs.into_iter().rev());
    }
    None
}

/// How many entries a model holds below its top directory.
fn model_entries(model: &super::model::Dir) -> usize {
    use super::model::Node;
    let mut n = 0;
    let mut todo = vec![model];
    while let Some(d) = todo.pop() {
        n += d.children.len();
        todo.extend(d.children.values().filter_map(|c| match c {
            Node::Dir(d) => Some(d),
            _ => None,
        }));
    }
    n
}

/// The first of a tree's `entries` that is not what `model` has at its path (content
/// hashed; a whiteout: nothing there), if any.
fn not_the_commits<E: std::borrow::Borrow<Entry> + Sync>(
    entries: &[E],
    model: &super::model::Dir,
) -> Option<Vec<u8>> {
    use super::model::Node;
    use rayon::prelude::*;
    entries
        .par_iter()
        .find_first(|e| {
            let e: &Entry = (*e).borrow();
            let (rel, host, kind) = (&e.rel, &e.host, &e.kind);
            if rel.is_empty() {
                return *kind != Kind::Dir;
            }
            let node = model.get(rel);
            let same = match (kind, node) {
                (Kind::Whiteout, None) => true,
                (Kind::Dir, Some(Node::Dir(_))) | (Kind::Fifo, Some(Node::Fifo { .. })) => true,
                (Kind::Unlisted, Some(Node::Dir(d))) => d.children.is_empty(),
                (Kind::Symlink, Some(Node::Symlink { target })) => {
                    fs::read_link(host).is_ok_and(|t| t.as_os_str().as_bytes() == target.as_slice())
                }
                (Kind::File, Some(Node::File(f))) => super::git::file_blob_id(host)
                    .ok()
                    .is_some_and(|h| h == f.oid),
                _ => false,
            };
            !same
        })
        .map(|e| (*e).borrow().rel.clone())
}

/// Whether any of `files` differs from its commit's file; removes the pool entries of
/// those that do.
fn differing(
    files: &[(Vec<u8>, PathBuf, u64)],
    model: &super::model::Dir,
    pool: &super::pool::Pool,
) -> bool {
    use super::model::Node;
    use rayon::prelude::*;
    let bad: Vec<&(Vec<u8>, PathBuf, u64)> = files
        .par_iter()
        .filter(|(rel, host, _)| match model.get(rel) {
            Some(Node::File(f)) => super::git::file_blob_id(host)
                .ok()
                .is_none_or(|h| h != f.oid),
            _ => true,
        })
        .collect();
    for (rel, _, ino) in &bad {
        if let Some(Node::File(f)) = model.get(rel) {
            let mode = super::checkout::Policy::Checkout.file_mode(f.mode);
            let entry = pool.entry(rel, &f.oid, mode, model.times.get(rel));
            if fs::symlink_metadata(&entry).is_ok_and(|m| m.ino() == *ino) {
                crate::verbose!("removing a changed file from the pool: {}", entry.display());
                let _ = fs::remove_file(&entry);
            }
        }
    }
    !bad.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::{Dir, File, Node};
    use crate::store::pool::Pool;

    fn quick(dir: &Path) -> Result<bool, StampError> {
        verify_quick(dir).map(|q| matches!(q, Quick::Same))
    }

    fn changed<T>(r: Result<T, StampError>) -> bool {
        matches!(r, Err(StampError::Changed { .. }))
    }

    /// Write `content` at `dir/rel` and set its mtime back to what it was (an in-place
    /// edit only the ctime shows).
    fn edit_keeping_mtime(path: &Path, content: &[u8]) {
        let md = fs::metadata(path).expect("stat");
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(path, content).expect("write");
        fs::File::options()
            .write(true)
            .open(path)
            .expect("open")
            .set_modified(md.modified().expect("mtime"))
            .expect("set mtime");
    }

    #[test]
    fn layer_stamp_catches_content_mode_and_entry_changes_but_not_reads() {
        let t = tempfile::tempdir().expect("tempdir");
        let co = t.path().join("layers/abc");
        fs::create_dir_all(co.join("a/b")).expect("mkdir");
        fs::write(co.join("a/b/f"), b"one").expect("write");
        record(&co).expect("record");
        assert_eq!(stamp_path(&co), t.path().join("stamps/layers-abc"));
        assert!(quick(&co).expect("unchanged"));
        let _ = fs::read(co.join("a/b/f")).expect("read");
        assert!(quick(&co).expect("reading changes nothing"));
        // Same size, content rewritten in place, mtime set back: ctime still moves.
        edit_keeping_mtime(&co.join("a/b/f"), b"two");
        assert!(changed(verify_quick(&co)));
        record(&co).expect("record");
        fs::write(co.join("a/new"), b"").expect("write");
        assert!(changed(verify_quick(&co)));
    }

    fn blob_id(data: &[u8]) -> gix::ObjectId {
        gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::objs::Kind::Blob, data).expect("hash")
    }

    #[test]
    fn checkout_files_linked_elsewhere_are_content_checked_once_and_edits_leave_the_pool() {
        let t = tempfile::tempdir().expect("tempdir");
        let co = t.path().join("checkouts/abc");
        fs::create_dir_all(&co).expect("mkdir");
        let pool = Pool::new(t.path().join("pool"));
        let mut model = Dir::new(0o755);
        let file = File {
            mode: 0o644,
            oid: blob_id(b"one"),
            size: 3,
            link_group: None,
        };
        model.insert(b"f", Node::File(file)).expect("insert");
        fs::write(co.join("f"), b"one").expect("write");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &fs::metadata(co.join("f")).expect("stat").permissions(),
        ) & 0o7777;
        let entry = pool.entry(b"f", &blob_id(b"one"), mode | 0o600, None);
        fs::create_dir_all(entry.parent().expect("sub")).expect("mkdir");
        fs::hard_link(co.join("f"), &entry).expect("link into the pool");
        record(&co).expect("record");
        let expected = || Ok(model.clone());
        // Another checkout links the same inode: its ctime moves, its content is checked
        // once, then the stamp is metadata only again.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::hard_link(&entry, t.path().join("other")).expect("link");
        assert!(!quick(&co).expect("quick"), "content check needed");
        verify(&co, &pool, expected, || Ok(None), false).expect("same content");
        assert!(quick(&co).expect("restamped"));
        // An in-place write with the mtime set back: found by content, and the pool
        // entry (this inode) goes so that no later checkout links it.
        edit_keeping_mtime(&co.join("f"), b"two");
        assert!(!quick(&co).expect("quick"));
        assert!(changed(verify(&co, &pool, expected, || Ok(None), false)));
        assert!(!entry.exists());
        // A write that moves the mtime is a change without reading.
        record(&co).expect("record");
        fs::write(co.join("f"), b"three").expect("write");
        assert!(changed(verify_quick(&co)));
    }

    #[test]
    fn version_1_stamps_are_checked_and_upgraded() {
        let t = tempfile::tempdir().expect("tempdir");
        let co = t.path().join("layers/abc");
        fs::create_dir_all(&co).expect("mkdir");
        fs::write(co.join("f"), b"one").expect("write");
        fs::hard_link(co.join("f"), co.join("g")).expect("link");
        let v1 = format!(
            "{HEADER_V1} {}\n",
            hex(&scan(&co, 1, None, false).expect("scan").digest)
        );
        fs::create_dir_all(t.path().join("stamps")).expect("mkdir");
        fs::write(stamp_path(&co), &v1).expect("write");
        assert!(quick(&co).expect("a matching version 1 stamp"));
        let now = fs::read_to_string(stamp_path(&co)).expect("read");
        assert!(now.starts_with("grove-stamp 3 "), "{now}");
        assert!(quick(&co).expect("upgraded"));
        // A version 1 stamp that does not match is still a change.
        fs::write(stamp_path(&co), &v1).expect("write");
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(co.join("h"), b"").expect("write");
        assert!(changed(verify_quick(&co)));
        fs::write(stamp_path(&co), "grove-stamp 2 nonsense\n").expect("write");
        assert!(
            changed(verify_quick(&co)),
            "an unreadable stamp is a change"
        );
    }

    #[test]
    fn a_copy_is_read_against_the_commit_then_stamped_and_an_unfaithful_one_refused() {
        let t = tempfile::tempdir().expect("tempdir");
        let (a, b) = (t.path().join("layers/abc"), t.path().join("copy"));
        fs::create_dir_all(a.join("d")).expect("mkdir");
        fs::write(a.join("d/f"), b"one").expect("write");
        std::os::unix::fs::symlink("d/f", a.join("l")).expect("symlink");
        record(&a).expect("record");
        let text = fs::read_to_string(stamp_path(&a)).expect("read");
        assert!(matches!(parse(&text), Recorded::V3 { .. }), "{text}");
        // The copy, in the original's place (as a restored storage directory has it).
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(&a)
            .arg(&b)
            .status()
            .expect("cp");
        assert!(st.success());
        let orig = t.path().join("orig");
        fs::rename(&a, &orig).expect("keep the original");
        fs::rename(&b, &a).expect("copy in place");
        let mut model = Dir::new(0o755);
        let mut sub = Dir::new(0o755);
        sub.insert(
            b"f",
            Node::File(File {
                mode: 0o644,
                oid: blob_id(b"one"),
                size: 3,
                link_group: None,
            }),
        )
        .expect("insert");
        model.insert(b"d", Node::Dir(sub)).expect("insert");
        model
            .insert(
                b"l",
                Node::Symlink {
                    target: b"d/f".to_vec(),
                },
            )
            .expect("insert");
        let pool = Pool::new(t.path().join("pool"));
        let expected = || Ok(model.clone());
        assert!(!quick(&a).expect("quick"), "a copy needs reading");
        verify(&a, &pool, expected, || Ok(None), false).expect("a faithful copy");
        assert!(quick(&a).expect("stamped again for the copy"));
        // A copy with another mtime: its listing differs.
        fs::remove_dir_all(&a).expect("remove");
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(&orig)
            .arg(&a)
            .status()
            .expect("cp");
        assert!(st.success());
        fs::write(stamp_path(&a), &text).expect("the original's stamp");
        fs::File::options()
            .write(true)
            .open(a.join("d/f"))
            .expect("open")
            .set_modified(std::time::UNIX_EPOCH)
            .expect("set mtime");
        assert!(matches!(
            verify(&a, &pool, expected, || Ok(None), false),
            Err(StampError::Unfaithful { .. })
        ));
        // A copy whose listing is the original's but whose file is another commit's.
        fs::remove_dir_all(&a).expect("remove");
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(&orig)
            .arg(&a)
            .status()
            .expect("cp");
        assert!(st.success());
        fs::write(stamp_path(&a), &text).expect("the original's stamp");
        let mut other = model.clone();
        if let Some(Node::Dir(d)) = other.children.get_mut(b"d".as_slice()) {
            d.insert(
                b"f",
                Node::File(File {
                    mode: 0o644,
                    oid: blob_id(b"two"),
                    size: 3,
                    link_group: None,
                }),
            )
            .expect("insert");
        }
        assert!(matches!(
            verify(&a, &pool, || Ok(other), || Ok(None), false),
            Err(StampError::Unfaithful { .. })
        ));
    }

    #[test]
    fn a_tree_with_the_stamps_inode_number_but_born_later_is_a_copy() {
        let t = tempfile::tempdir().expect("tempdir");
        let co = t.path().join("layers/abc");
        fs::create_dir_all(&co).expect("mkdir");
        fs::write(co.join("f"), b"one").expect("write");
        record(&co).expect("record");
        let text = fs::read_to_string(stamp_path(&co)).expect("read");
        // "grove-stamp 3 DIGEST LATEST ROOT LISTING"
        let root = text
            .split(' ')
            .nth(4)
            .expect("a version 3 stamp")
            .to_string();
        let md = fs::symlink_metadata(&co).expect("stat");
        if md.created().is_err() {
            assert!(
                std::env::var_os("GROVE_NO_SKIP").is_none(),
                "SKIP not allowed (GROVE_NO_SKIP set): no birth times here"
            );
            eprintln!(
                "SKIP: the file system of {} keeps no birth times",
                co.display()
            );
            return;
        }
        // A storage directory saved, removed and restored in the same place: the file
        // system gave the restored directory the inode number of the one stamped (ext4
        // reuses freed numbers), with new ctimes everywhere. Before: refused as changed.
        let earlier = format!("{}/1.000000000", md.ino());
        fs::write(stamp_path(&co), text.replace(&root, &earlier)).expect("write");
        assert!(matches!(verify_quick(&co), Ok(Quick::NeedsContent)));
        let mut model = Dir::new(0o755);
        model
            .insert(
                b"f",
                Node::File(File {
                    mode: 0o644,
                    oid: blob_id(b"one"),
                    size: 3,
                    link_group: None,
                }),
            )
            .expect("insert");
        let pool = Pool::new(t.path().join("pool"));
        verify(&co, &pool, || Ok(model), || Ok(None), false)
            .expect("read against its commit and kept");
        assert!(quick(&co).expect("stamped again"));
        // The same directory changed in place is still a change.
        fs::write(co.join("g"), b"").expect("write");
        assert!(changed(verify_quick(&co)));
    }

    #[test]
    fn version_2_stamps_are_checked_and_upgraded() {
        let t = tempfile::tempdir().expect("tempdir");
        let co = t.path().join("checkouts/abc");
        fs::create_dir_all(&co).expect("mkdir");
        fs::write(co.join("f"), b"one").expect("write");
        let sc = scan(&co, 2, None, false).expect("scan");
        let v2 = format!(
            "{HEADER_V2} {} {}.{:09}\n",
            hex(&sc.digest),
            sc.latest.0,
            sc.latest.1
        );
        fs::create_dir_all(t.path().join("stamps")).expect("mkdir");
        fs::write(stamp_path(&co), &v2).expect("write");
        assert!(quick(&co).expect("a matching version 2 stamp"));
        let now = fs::read_to_string(stamp_path(&co)).expect("read");
        assert!(now.starts_with("grove-stamp 3 "), "{now}");
        assert!(quick(&co).expect("upgraded"));
        fs::write(stamp_path(&co), &v2).expect("write");
        fs::write(co.join("g"), b"").expect("write");
        assert!(
            changed(verify_quick(&co)),
            "a version 2 stamp that does not match"
        );
    }

    #[test]
    fn missing_stamp_is_written_on_first_check() {
        let t = tempfile::tempdir().expect("tempdir");
        let co = t.path().join("layers/abc");
        fs::create_dir_all(&co).expect("mkdir");
        assert!(quick(&co).expect("first check"));
        assert!(stamp_path(&co).is_file());
        assert!(quick(&co).expect("second check"));
    }
}
