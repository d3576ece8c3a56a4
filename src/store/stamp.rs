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
//! Stamps live in `STORAGE/stamps/<kind>-<commit>` ("grove-stamp 1 HEX"), outside the
//! trees, so that stamping does not change what it stamps. A tree without a stamp (made
//! by an older Grove) is stamped as it is when first checked (trust on first use).
//!
//! Shared inodes (version 2): a regular file with more than one link (a checkout's file
//! shared through the pool, [`super::pool`], or an image's own hard links) contributes no
//! ctime, since making or removing another link to it (another checkout) moves its ctime
//! without changing it; its inode number, mode, size and mtime still count, so a write
//! (which moves the mtime) or a replacement (a new inode) is seen, and a pool entry whose
//! mtime moved is never linked again. An in-place write that also sets the mtime back is
//! not seen by the stamp for such a file; `ch-image fsck` hashes the pool's files.
//! Version 1 stamps (ctime of every entry) are still checked as they were and rewritten
//! as version 2 when they match.
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
    #[error(transparent)]
    Io(#[from] IoError),
}

impl StampError {
    /// How to repair: remove the tree (and its stamp) so that Grove checks it out again
    /// from the git objects, which are unaffected.
    pub fn hint(&self) -> Option<String> {
        match self {
            StampError::Changed { dir, stamp } => Some(format!(
                "remove it and grove checks it out again from the store's git objects: \
                 chmod -R u+rwx '{0}' && rm -rf '{0}' '{1}'",
                dir.display(),
                stamp.display()
            )),
            StampError::Io(_) => None,
        }
    }
}

/// Path of the stamp of tree `dir` (`STORAGE/checkouts/C` or `STORAGE/layers/C`).
pub fn stamp_path(dir: &Path) -> PathBuf {
    super::Layout::stamp_of(dir)
}

/// Digest of the tree's inode metadata (see the module doc), of stamp version 2.
pub fn digest(dir: &Path) -> Result<[u8; 32], StampError> {
    digest_v(dir, 2)
}

/// Digest of stamp `version` (1: every entry's ctime; 2: not for files with more than one
/// link). Iterative: depth is not bounded by the stack.
fn digest_v(dir: &Path, version: u8) -> Result<[u8; 32], StampError> {
    let mut h = blake3::Hasher::new();
    let top = fs::symlink_metadata(dir).at("stat", dir)?;
    entry(&mut h, b"", &top, version);
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
            entry(&mut h, &r, &md, version);
            if md.is_dir() {
                subdirs.push((r, path.join(std::ffi::OsStr::from_bytes(&name))));
            }
        }
        // Reversed onto the stack: popped in sorted order (depth first).
        todo.extend(subdirs.into_iter().rev());
    }
    Ok(*h.finalize().as_bytes())
}

fn entry(h: &mut blake3::Hasher, rel: &[u8], md: &fs::Metadata, version: u8) {
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
    if version >= 2 && md.file_type().is_file() && md.nlink() > 1 {
        // A shared inode: other trees' links move its ctime (module doc).
        h.update(b"\0shared");
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
    let d = digest(dir)?;
    write(dir, &d)
}

fn write(dir: &Path, d: &[u8; 32]) -> Result<(), StampError> {
    let p = stamp_path(dir);
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).at("create directory", parent)?;
    }
    let tmp = p.with_extension(format!("tmp.{}", std::process::id()));
    fs::write(&tmp, format!("{HEADER} {}\n", hex(d))).at("write", &tmp)?;
    Ok(fs::rename(&tmp, &p).at("rename into place", &p)?)
}

/// Check a tree against its stamp. A tree without a stamp is stamped now if the storage
/// directory is writable (trust on first use), else accepted as it is.
pub fn verify(dir: &Path) -> Result<(), StampError> {
    let p = stamp_path(dir);
    let recorded = match fs::read_to_string(&p) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(IoError::new("read", &p, e).into()),
    };
    let d = digest(dir)?;
    match recorded {
        None => {
            // Stamps came with this version; a read-only storage directory stays as it is.
            let _ = write(dir, &d);
            Ok(())
        }
        Some(t) if t.trim_end() == format!("{HEADER} {}", hex(&d)) => Ok(()),
        // Version 1, written by an earlier Grove: checked as it was made, then upgraded.
        Some(t)
            if t.starts_with(HEADER_V1)
                && t.trim_end() == format!("{HEADER_V1} {}", hex(&digest_v(dir, 1)?)) =>
        {
            let _ = write(dir, &d);
            Ok(())
        }
        Some(_) => Err(StampError::Changed {
            dir: dir.to_path_buf(),
            stamp: p,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_catches_content_mode_and_entry_changes_but_not_reads() {
        let t = tempfile::tempdir().expect("tempdir");
        let co = t.path().join("checkouts/abc");
        fs::create_dir_all(co.join("a/b")).expect("mkdir");
        fs::write(co.join("a/b/f"), b"one").expect("write");
        record(&co).expect("record");
        assert_eq!(stamp_path(&co), t.path().join("stamps/checkouts-abc"));
        verify(&co).expect("unchanged");
        let _ = fs::read(co.join("a/b/f")).expect("read");
        verify(&co).expect("reading changes nothing");
        // Same size, content rewritten in place, mtime set back: ctime still moves.
        let md = fs::metadata(co.join("a/b/f")).expect("stat");
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(co.join("a/b/f"), b"two").expect("write");
        fs::File::options()
            .write(true)
            .open(co.join("a/b/f"))
            .expect("open")
            .set_modified(md.modified().expect("mtime"))
            .expect("set mtime");
        assert!(matches!(verify(&co), Err(StampError::Changed { .. })));
        record(&co).expect("record");
        fs::write(co.join("a/new"), b"").expect("write");
        assert!(matches!(verify(&co), Err(StampError::Changed { .. })));
    }

    #[test]
    fn links_made_by_other_trees_keep_a_stamp_but_writes_to_a_shared_file_do_not() {
        let t = tempfile::tempdir().expect("tempdir");
        let co = t.path().join("checkouts/abc");
        fs::create_dir_all(&co).expect("mkdir");
        let pool = t.path().join("pool-entry");
        fs::write(co.join("f"), b"one").expect("write");
        fs::hard_link(co.join("f"), &pool).expect("link into the pool");
        record(&co).expect("record");
        // Another checkout links the same inode (its ctime moves), then goes away.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::hard_link(&pool, t.path().join("other")).expect("link");
        verify(&co).expect("another tree's link changes nothing");
        fs::remove_file(t.path().join("other")).expect("rm");
        verify(&co).expect("another tree's unlink changes nothing");
        // A write through any link moves the mtime.
        fs::write(&pool, b"two").expect("write");
        assert!(matches!(verify(&co), Err(StampError::Changed { .. })));
    }

    #[test]
    fn version_1_stamps_are_checked_and_upgraded() {
        let t = tempfile::tempdir().expect("tempdir");
        let co = t.path().join("layers/abc");
        fs::create_dir_all(&co).expect("mkdir");
        fs::write(co.join("f"), b"one").expect("write");
        fs::hard_link(co.join("f"), co.join("g")).expect("link");
        let v1 = format!("{HEADER_V1} {}\n", hex(&digest_v(&co, 1).expect("digest")));
        fs::create_dir_all(t.path().join("stamps")).expect("mkdir");
        fs::write(stamp_path(&co), &v1).expect("write");
        verify(&co).expect("a matching version 1 stamp");
        let now = fs::read_to_string(stamp_path(&co)).expect("read");
        assert!(now.starts_with("grove-stamp 2 "), "{now}");
        verify(&co).expect("upgraded");
        // A version 1 stamp that does not match is still a change.
        fs::write(stamp_path(&co), &v1).expect("write");
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(co.join("h"), b"").expect("write");
        assert!(matches!(verify(&co), Err(StampError::Changed { .. })));
    }

    #[test]
    fn missing_stamp_is_written_on_first_check() {
        let t = tempfile::tempdir().expect("tempdir");
        let co = t.path().join("layers/abc");
        fs::create_dir_all(&co).expect("mkdir");
        verify(&co).expect("first check");
        assert!(stamp_path(&co).is_file());
        verify(&co).expect("second check");
    }
}
