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
//! Stamps live in `STORAGE/stamps/<kind>-<commit>` ("grove-stamp 2 HEX SEC.NSEC"), outside the
//! trees, so that stamping does not change what it stamps. A tree without a stamp (made
//! by an older Grove) is stamped as it is when first checked (trust on first use).
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
//! Limits: a change made while the stamp is being recorded is not seen; a tree replaced
//! by root with forged ctimes (setting the clock back) is not seen.

use crate::error::{IoError, IoResultExt};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const HEADER: &str = "grove-stamp 2";
const HEADER_V1: &str = "grove-stamp 1";

/// A tree whose stamp does not match.
#[derive(Debug, thiserror::Error)]
pub enum StampError {
    #[error("{} was changed outside grove since it was checked out", dir.display())]
    Changed { dir: PathBuf, stamp: PathBuf },
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
            StampError::Changed { dir, stamp } => Some(format!(
                "remove it and grove checks it out again from the store's git objects: \
                 find '{0}' -type d -exec chmod u+rwx {{}} + && rm -rf '{0}' '{1}'",
                dir.display(),
                stamp.display()
            )),
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
}

/// Whether regular files' ctimes count in the digest of `dir`: not in a checkout (its
/// files may be shared, see the module doc).
fn file_ctimes_count(dir: &Path) -> bool {
    dir.parent().and_then(Path::file_name) != Some(std::ffi::OsStr::new("checkouts"))
}

/// Digest of the tree's inode metadata (see the module doc), of stamp version 2.
pub fn digest(dir: &Path) -> Result<[u8; 32], StampError> {
    Ok(scan(dir, 2, None)?.digest)
}

/// One pass over the tree for stamp `version` (1: every entry's ctime; 2: see the module
/// doc), noting regular files whose ctime is later than `after`. Iterative: depth is not
/// bounded by the stack.
fn scan(dir: &Path, version: u8, after: Option<(i64, i64)>) -> Result<Scan, StampError> {
    let file_ctimes = version < 2 || file_ctimes_count(dir);
    let mut out = Scan {
        digest: [0; 32],
        latest: (i64::MIN, 0),
        moved: Vec::new(),
    };
    let mut h = blake3::Hasher::new();
    let top = fs::symlink_metadata(dir).at("stat", dir)?;
    entry(&mut h, b"", &top, file_ctimes);
    // Pending directories: (relative path, host path), processed in sorted order.
    let mut todo: Vec<(Vec<u8>, PathBuf)> = vec![(Vec::new(), dir.to_path_buf())];
    while let Some((rel, path)) = todo.pop() {
        let mut kids: Vec<(Vec<u8>, fs::Metadata)> = Vec::new();
        let entries = match fs::read_dir(&path) {
            // A directory its owner can't list (a RUN left it 0000): its own entry, hashed
            // above, covers it, since nothing inside can change without a chmod first,
            // which changes its ctime.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied && !rel.is_empty() => {
                h.update(b"\0unlisted");
                continue;
            }
            r => r.at("read directory", &path)?,
        };
        for e in entries {
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

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Record the stamp of a complete tree (atomically: a temporary file renamed).
pub fn record(dir: &Path) -> Result<(), StampError> {
    let sc = scan(dir, 2, None)?;
    write(dir, &sc)
}

fn stamp_text(sc: &Scan) -> String {
    format!(
        "{HEADER} {} {}.{:09}",
        hex(&sc.digest),
        sc.latest.0,
        sc.latest.1
    )
}

fn write(dir: &Path, sc: &Scan) -> Result<(), StampError> {
    let p = stamp_path(dir);
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).at("create directory", parent)?;
    }
    let tmp = p.with_extension(format!("tmp.{}", std::process::id()));
    fs::write(&tmp, format!("{}\n", stamp_text(sc))).at("write", &tmp)?;
    Ok(fs::rename(&tmp, &p).at("rename into place", &p)?)
}

/// A recorded stamp: version 2 (digest, latest ctime of regular files) or version 1.
enum Recorded {
    V2 { digest: String, latest: (i64, i64) },
    V1 { digest: String },
    Unreadable,
}

fn parse(text: &str) -> Recorded {
    let t = text.trim_end();
    if let Some(rest) = t.strip_prefix(HEADER_V1).and_then(|r| r.strip_prefix(' ')) {
        return Recorded::V1 {
            digest: rest.to_string(),
        };
    }
    let Some(rest) = t.strip_prefix(HEADER).and_then(|r| r.strip_prefix(' ')) else {
        return Recorded::Unreadable;
    };
    let mut parts = rest.split(' ');
    let (Some(d), Some(l), None) = (parts.next(), parts.next(), parts.next()) else {
        return Recorded::Unreadable;
    };
    let latest = l
        .split_once('.')
        .and_then(|(s, n)| Some((s.parse::<i64>().ok()?, n.parse::<i64>().ok()?)));
    match latest {
        Some(latest) => Recorded::V2 {
            digest: d.to_string(),
            latest,
        },
        None => Recorded::Unreadable,
    }
}

/// What the check of a tree's stamp found without reading file content.
pub enum Quick {
    /// The tree is as stamped.
    Same,
    /// Some of its regular files' inodes changed since the stamp (another checkout linked
    /// them, or someone wrote them): [`verify`] must read them.
    NeedsContent,
}

/// What one metadata pass found: the tree as stamped; as stamped but with regular files
/// whose inodes changed since (the pass, listing them); or changed (with the pass when
/// the stamp is version 2, so that the moved files can still be found).
enum Checked {
    Same,
    Moved(Scan),
    Changed(Option<Scan>),
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
            let _ = write(dir, &scan(dir, 2, None)?);
            return Ok(Checked::Same);
        }
        Err(e) => return Err(IoError::new("read", &p, e).into()),
    };
    match parse(&text) {
        Recorded::V2 { digest, latest } => {
            let sc = scan(dir, 2, Some(latest))?;
            if hex(&sc.digest) != digest {
                return Ok(Checked::Changed(Some(sc)));
            }
            // The stamp's modification time is the tree's last use, which `build-cache
            // --gc --keep-storage` keeps the most recent of (a read-only storage
            // directory keeps the old time).
            let _ = fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()));
            Ok(if sc.moved.is_empty() {
                Checked::Same
            } else {
                Checked::Moved(sc)
            })
        }
        // Version 1, written by an earlier Grove: checked as it was made, then upgraded.
        Recorded::V1 { digest } => {
            if hex(&scan(dir, 1, None)?.digest) != digest {
                return Ok(Checked::Changed(None));
            }
            let _ = write(dir, &scan(dir, 2, None)?);
            Ok(Checked::Same)
        }
        Recorded::Unreadable => Ok(Checked::Changed(None)),
    }
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
        Checked::Moved(_) => Ok(Quick::NeedsContent),
        Checked::Changed(_) => Err(changed_error(dir)),
    }
}

/// Check a tree against its stamp; where regular files' inodes changed since it was
/// recorded, hash their content against the commit's model (`model()`, called at most
/// once: a checkout's or a layer's regular file at a path is the commit's file at that
/// path). A file that differs makes the tree changed, and its entry in `pool` (if it is
/// that inode) is removed. Uses threads: not for ch-run, which uses [`verify_quick`].
pub fn verify(
    dir: &Path,
    pool: &super::pool::Pool,
    model: impl FnOnce() -> Result<super::model::Dir, StampError>,
) -> Result<(), StampError> {
    match check(dir)? {
        Checked::Same => Ok(()),
        Checked::Moved(sc) => {
            if differing(&sc.moved, &model()?, pool) {
                return Err(changed_error(dir));
            }
            // Every moved inode holds its commit's content: stamp again, so the next
            // check is metadata only (a read-only storage directory reads them each time).
            let _ = write(dir, &sc);
            Ok(())
        }
        Checked::Changed(sc) => {
            // Still find which files differ, so that their pool entries are not linked
            // again.
            if let (Some(sc), Ok(m)) = (sc, model()) {
                let _ = differing(&sc.moved, &m, pool);
            }
            Err(changed_error(dir))
        }
    }
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
            Some(Node::File(f)) => fs::read(host)
                .ok()
                .and_then(|d| {
                    gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::objs::Kind::Blob, &d).ok()
                })
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
        verify(&co, &pool, expected).expect("same content");
        assert!(quick(&co).expect("restamped"));
        // An in-place write with the mtime set back: found by content, and the pool
        // entry (this inode) goes so that no later checkout links it.
        edit_keeping_mtime(&co.join("f"), b"two");
        assert!(!quick(&co).expect("quick"));
        assert!(changed(verify(&co, &pool, expected)));
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
            hex(&scan(&co, 1, None).expect("scan").digest)
        );
        fs::create_dir_all(t.path().join("stamps")).expect("mkdir");
        fs::write(stamp_path(&co), &v1).expect("write");
        assert!(quick(&co).expect("a matching version 1 stamp"));
        let now = fs::read_to_string(stamp_path(&co)).expect("read");
        assert!(now.starts_with("grove-stamp 2 "), "{now}");
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
    fn missing_stamp_is_written_on_first_check() {
        let t = tempfile::tempdir().expect("tempdir");
        let co = t.path().join("layers/abc");
        fs::create_dir_all(&co).expect("mkdir");
        assert!(quick(&co).expect("first check"));
        assert!(stamp_path(&co).is_file());
        assert!(quick(&co).expect("second check"));
    }
}
